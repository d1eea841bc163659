#!/usr/bin/python3
"""transformer_folded.onnx: the `transformer` fixture's model (same seed, same weights) exported
with constant folding on (`do_constant_folding=True`, still TrainingMode.TRAINING, so nothing is
deduplicated): nn.Linear's weights on sequences become transposed copies [in, out] with
generated names (`onnx::MatMul_*`), read by `MatMul(x, W)`. tests/test_onnx.c checks that dpsgd
trains it as the same function: logits and per-sample norms equal transformer's references.
Run by hand with Debian's python3-torch and python3-onnx (see README.md):

    /usr/bin/python3 tests/reference/onnx/make_folded.py [OUT_DIR]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    ctor, kind, shape, classes, _ = mf.MODELS["transformer"]
    torch.manual_seed(mf.SEED)
    model = ctor().float()
    model.train()
    g = torch.Generator().manual_seed(mf.SEED + 1)
    vocab = model.tok.num_embeddings
    x = torch.randint(0, vocab, (mf.B,) + shape, generator=g, dtype=torch.int64)
    kw = dict(mf.EXPORT)
    kw["do_constant_folding"] = True
    blob, _ = mf.export_bytes(model, x, **kw)
    path = os.path.join(out, "transformer_folded.onnx")
    with open(path, "wb") as f:
        f.write(blob)
    import onnx
    m = onnx.load_from_string(blob)
    print(path, len(blob), "bytes; initializers:", [i.name for i in m.graph.initializer if i.name.startswith("onnx::")])


if __name__ == "__main__":
    main()
