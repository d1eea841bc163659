#!/usr/bin/python3
"""tests/reference/onnx/make_fixtures.py: PyTorch reference fixtures for ONNX import (issue 18,
"Per-sample gradients against PyTorch"). Run by hand, not in CI, with Debian's python3-torch
(1.13) and python3-onnx (1.12):

    /usr/bin/python3 tests/reference/onnx/make_fixtures.py [OUT_DIR [NAME ...]]   (default: every model)

OUT_DIR defaults to the folder of this script. For each model below it writes

  <name>.onnx              torch.onnx.export(..., opset_version=17, training=TRAINING,
                           do_constant_folding=False, input "input", output "logits",
                           dimension 0 dynamic ("batch")); initializers keep state_dict names
  <name>.x.npy             the batch: float32 [B, ...], or int64 token ids [B, T]
  <name>.y.npy             int64 [B] labels
  <name>.logits.npy        float64 [B, K]: the forward pass of the float64 copy (see below)
  <name>.norms.npy         float64 [B]: ||g_i||, g_i = grad of CE(model(x_i), y_i), one sample at a time
  <name>.sq_norms.npy      float64 [B, P]: ||g_i[p]||^2 per parameter tensor p, in param_order
  <name>.clipped_sum.safetensors  F64: sum_i min(1, C / (||g_i|| + 1e-6)) g_i, C = 0.5, state_dict names
  <name>.init.safetensors  F32: the initial state_dict (the weights in the .onnx), for --init
  <name>.json              description, shapes, param_order, ONNX op types, export settings, versions

Per-sample gradients: the float32 model (the one exported) is copied and cast to float64; each
sample is run alone (a microbatch of 1, loss = cross-entropy of that sample, no averaging over the
batch) in train mode, with every dropout at p = 0, so the result is deterministic and exact to
~1e-12 relative. The float32 copy's norms are computed too and their largest relative difference
to the float64 ones is recorded in <name>.json (float32_norms_max_rel_diff).

Checks before it ends: onnx.checker (full_check) on each export; every file reads back; the
.onnx initializers equal the init file; a small numpy evaluator of the exported graph reproduces
the logits at batch 8, 3 and 1; functorch's vmap(grad) reproduces sq_norms and the clipped sum.
It also exports each model the default way (training=EVAL, do_constant_folding=True) and records
in <name>.json which state_dict names that loses and where they went (README.md).

Everything is seeded (torch.manual_seed per model); running it again writes identical files.
Uses only torch, onnx and numpy; the `safetensors` package is used when installed, otherwise
the small writer below (the format: 8-byte little-endian header size, a JSON header, the data).
"""
import copy
import io
import json
import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

B = 8
C = 0.5
OPSET = 17
SEED = 1234
EXPORT = dict(
    opset_version=OPSET,
    training=torch.onnx.TrainingMode.TRAINING,
    do_constant_folding=False,
    input_names=["input"],
    output_names=["logits"],
    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
)
EXPORT_TEXT = ('torch.onnx.export(model, x, f, opset_version=17, '
               'training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, '
               'input_names=["input"], output_names=["logits"], '
               'dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})')


# ---- the models ------------------------------------------------------------------------------

def mlp():
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn_gn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2), nn.GroupNorm(4, 16), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock with GroupNorm: conv3x3-GN-ReLU-conv3x3-GN, plus the identity or
    a 1x1 strided conv + GN shortcut, then ReLU. Convolutions without bias (a norm follows)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.gn1 = nn.GroupNorm(4, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(4, cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.GroupNorm(4, cout))

    def forward(self, x):
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNetGN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.GroupNorm(4, 8), nn.ReLU())
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class EncoderBlock(nn.Module):
    """Post-norm encoder block (as nn.TransformerEncoderLayer / BERT): x = LN1(x + MHA(x)),
    x = LN2(x + W2 GELU(W1 x)); dropouts at p = 0 (train mode stays deterministic)."""

    def __init__(self, d=16, heads=2, ffn=32, p=0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ffn)
        self.act = nn.GELU()
        self.ff2 = nn.Linear(ffn, d)
        self.drop = nn.Dropout(p)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, x):
        a, _ = self.attn(x, x, x, need_weights=False)
        x = self.ln1(x + self.drop(a))
        return self.ln2(x + self.drop(self.ff2(self.act(self.ff1(x)))))


class TinyTransformer(nn.Module):
    def __init__(self, vocab=50, seq=12, d=16, classes=4):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.1 * torch.randn(1, seq, d))   # learned positions, [1, T, d]
        self.block = EncoderBlock(d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        h = self.block(self.tok(ids) + self.pos)
        return self.head(h.mean(dim=1))


class EmbBag(nn.Module):
    """nn.EmbeddingBag(mode='mean') written as Embedding + mean over the tokens (EmbeddingBag's
    own export is ATen-fallback/Loop territory)."""

    def __init__(self, vocab=60, d=12, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.fc = nn.Linear(d, classes)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(dim=1))


def cnn_in():
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.InstanceNorm2d(6, affine=True), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def cnn_dw():
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8), nn.GroupNorm(4, 8), nn.ReLU(),
        nn.Conv2d(8, 12, 1), nn.Conv2d(12, 12, 3, stride=2, groups=3, bias=False), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))


class TinyViT(nn.Module):
    """ViT with a class token: Conv2d patch embedding (4x4 patches of 3x8x8: 4 tokens), a learned
    class token nn.Parameter [1,1,16] expanded over the batch and concatenated in front, learned
    positions [1,5,16], one pre-norm block (LayerNorm - MultiheadAttention(batch_first) - residual,
    LayerNorm - Linear - GELU - Linear - residual), LayerNorm, the class token's row, Linear."""

    def __init__(self, d=16, heads=2, classes=5):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.cls = nn.Parameter(0.1 * torch.randn(1, 1, d))
        self.pos = nn.Parameter(0.1 * torch.randn(1, 5, d))
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))
        return self.head(self.ln(x)[:, 0])


# name -> (constructor, input kind, per-sample input shape, classes, description)
MODELS = {
    "mlp": (mlp, "float", (20,), 10,
            "Sequential: Linear(20,32) - ReLU - Linear(32,10)"),
    "cnn_gn": (cnn_gn, "float", (1, 12, 12), 10,
               "Sequential: Conv2d(1,8,3,padding=1) - GroupNorm(4,8) - ReLU - MaxPool2d(2) - "
               "Conv2d(8,16,3,stride=2) - GroupNorm(4,16) - Tanh - AdaptiveAvgPool2d(1) - Flatten - "
               "Linear(16,10)"),
    "resnet_gn": (ResNetGN, "float", (3, 16, 16), 10,
                  "tiny ResNet with GroupNorm(4, c): stem Conv2d(3,8,3,p1,no bias)-GN-ReLU; layer1 = "
                  "BasicBlock(8->8, identity shortcut); layer2 = BasicBlock(8->16, stride 2, shortcut "
                  "Conv2d(8,16,1,stride 2,no bias)-GN); each block conv3x3-GN-ReLU-conv3x3-GN, "
                  "+ shortcut, ReLU; AdaptiveAvgPool2d((1,1)) - flatten - Linear(16,10)"),
    "transformer": (TinyTransformer, "ids", (12,), 4,
                    "Embedding(50,16) + learned positions nn.Parameter [1,12,16]; one post-norm "
                    "encoder block: nn.MultiheadAttention(16, 2 heads, batch_first=True, dropout 0, "
                    "need_weights=False) + residual, LayerNorm(16), Linear(16,32)-GELU(erf)-"
                    "Linear(32,16) + residual (Dropout(p=0) on both branches), LayerNorm(16); mean "
                    "over the 12 tokens; Linear(16,4). No padding."),
    "embbag": (EmbBag, "ids", (10,), 3,
               "EmbeddingBag(mean) as Embedding(60,12) then mean over the 10 tokens, Linear(12,3)"),
    "cnn_in": (cnn_in, "float", (2, 6, 6), 4,
               "Sequential: Conv2d(2,6,3,padding=1) - InstanceNorm2d(6, affine=True) - ReLU - "
               "AdaptiveAvgPool2d(1) - Flatten - Linear(6,4)"),
    "cnn_dw": (cnn_dw, "float", (2, 10, 10), 5,
               "MobileNet-like: Conv2d(2,8,3,padding=1) - GroupNorm(4,8) - ReLU - depthwise "
               "Conv2d(8,8,3,padding=2,dilation=2,groups=8) - GroupNorm(4,8) - ReLU - pointwise "
               "Conv2d(8,12,1) - grouped Conv2d(12,12,3,stride=2,groups=3,bias=False) - Tanh - "
               "AdaptiveAvgPool2d(1) - Flatten - Linear(12,5)"),
    "vit": (TinyViT, "float", (3, 8, 8), 5,
            "ViT: Conv2d(3,16,4,stride 4) patches, flatten(2).transpose(1,2); class token "
            "nn.Parameter [1,1,16] expanded over the batch and concatenated first; learned positions "
            "[1,5,16]; pre-norm block LayerNorm-MultiheadAttention(16, 2 heads, batch_first)+residual, "
            "LayerNorm-Linear(16,32)-GELU-Linear(32,16)+residual; LayerNorm; token 0; Linear(16,5)"),
}


# ---- safetensors -------------------------------------------------------------------------------

ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int64"): "I64"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: an ordered dict name -> numpy array (C order, little-endian). Uses the
    safetensors package when present, else writes the format directly: tensors in the given
    order, contiguous, header padded with spaces to a multiple of 8 bytes."""
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    try:
        from safetensors.numpy import save_file  # not in Debian 12: normally absent
        save_file(tensors, path, metadata=metadata)
        return "safetensors package"
    except ImportError:
        pass
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, a in tensors.items():
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": ST_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return "built-in writer"


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base, out, pos = 8 + n, {}, 0
    inv = {v: k for k, v in ST_DTYPES.items()}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        assert a == pos, (path, name, "not contiguous")
        pos = b
        out[name] = np.frombuffer(raw[base + a:base + b], dtype=inv[t["dtype"]].newbyteorder("<")).reshape(t["shape"])
    assert base + pos == len(raw), (path, "trailing bytes")
    return out


# ---- ONNX helpers -------------------------------------------------------------------------------

def export_bytes(model, x, **kw):
    f = io.BytesIO()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.onnx.export(model, x, f, **kw)
    return f.getvalue(), sorted({str(m.message).strip().split("\n")[0] for m in w})


def op_types(graph):
    counts = {}
    for n in graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
        for a in n.attribute:  # subgraphs (If/Loop): none expected, counted if present
            for g in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                for k, v in op_types(g).items():
                    counts[k] = counts.get(k, 0) + v
    return counts


def dims(vi):
    return [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]


def describe_initializers(m):
    return {t.name: {"dtype": onnx.TensorProto.DataType.Name(t.data_type), "shape": list(t.dims)}
            for t in m.graph.initializer}


def name_changes(state, inits):
    """initializer names of an export against the state_dict: kept, missing, generated."""
    return {
        "kept": [k for k in state if k in inits],
        "missing": [k for k in state if k not in inits],
        "generated": {k: v for k, v in inits.items() if k not in state},
    }


LAYOUT = {"Transpose", "Unsqueeze", "Reshape", "Squeeze", "Identity", "Flatten"}


def where_it_went(ref, other, missing):
    """For each state_dict name missing from the initializers of `other` (the default export):
    follow it in `ref` (the export that keeps names) through layout ops to the first compute node,
    find the node of the same name in `other`, and say what feeds that input there: a generated
    initializer (constant folding of the layout ops) or another parameter's initializer through an
    Identity (initializers deduplicated by value)."""
    def consumers(g, name):
        return [(n, j) for n in g.node for j, i in enumerate(n.input) if i == name]

    o_inits = {t.name for t in other.graph.initializer}
    o_nodes = {n.name: n for n in other.graph.node}
    o_prod = {o: n for n in other.graph.node for o in n.output}
    out = {}
    for k in missing:
        seen, front = [], [k]
        while front:
            v = front.pop()
            for n, j in consumers(ref.graph, v):
                if n.op_type in LAYOUT and j == 0:
                    seen.append(n.op_type)
                    front.extend(n.output)
                elif n.name in o_nodes and j < len(o_nodes[n.name].input):
                    src = o_nodes[n.name].input[j]
                    p = o_prod.get(src)
                    if src in o_inits:
                        how = f"initializer '{src}' (constant folding of {'+'.join(seen) or 'nothing'})"
                    elif p is not None and p.op_type == "Identity" and p.input[0] in o_inits:
                        how = f"'{src}' = Identity('{p.input[0]}'): deduplicated with an equal-valued initializer"
                    else:
                        how = f"'{src}' (produced by {p.op_type if p is not None else '?'})"
                    out.setdefault(k, []).append(f"{n.op_type} {n.name} input {j} <- {how}")
        out.setdefault(k, ["not found"])
    return out


def debian_version(pkg):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ---- per-sample gradients -------------------------------------------------------------------------

def per_sample(model, x, y, dtype):
    """One sample at a time: g_i = grad of CE(model(x_i), y_i). Returns logits [B,K], the
    per-sample squared norms [B,P] and the gradients as a list of dicts (state_dict order)."""
    m = copy.deepcopy(model).to(dtype)
    m.train()
    params = dict(m.named_parameters())
    names = list(m.state_dict().keys())
    xin = x.to(dtype) if x.is_floating_point() else x
    logits, sq, grads = [], [], []
    for i in range(x.shape[0]):
        m.zero_grad(set_to_none=True)
        out = m(xin[i:i + 1])
        loss = F.cross_entropy(out, y[i:i + 1])
        loss.backward()
        g = {k: params[k].grad.detach().clone() for k in names}
        logits.append(out.detach()[0])
        sq.append([float((g[k].double() ** 2).sum()) for k in names])
        grads.append(g)
    return torch.stack(logits), np.array(sq, dtype=np.float64), grads


def build(name, out_dir, versions):
    ctor, kind, shape, classes, desc = MODELS[name]
    torch.manual_seed(SEED)
    model = ctor().float()
    model.train()
    state = model.state_dict()
    pnames = list(state.keys())
    assert pnames == [k for k, _ in model.named_parameters()], (name, "state_dict holds buffers")
    g = torch.Generator().manual_seed(SEED + 1)
    vocab = None
    if kind == "float":
        x = torch.randn((B,) + shape, generator=g)
    else:
        vocab = model.tok.num_embeddings if hasattr(model, "tok") else model.emb.num_embeddings
        x = torch.randint(0, vocab, (B,) + shape, generator=g, dtype=torch.int64)
    y = torch.randint(0, classes, (B,), generator=g, dtype=torch.int64)

    # the export under test (settings of the issue) ...
    blob, warns = export_bytes(model, x, **EXPORT)
    path = os.path.join(out_dir, name + ".onnx")
    with open(path, "wb") as f:
        f.write(blob)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    inits = describe_initializers(m)
    kept = name_changes(state, inits)
    # ... and the default export (training=EVAL, do_constant_folding=True): which names change
    dblob, dwarns = export_bytes(model, x, opset_version=OPSET, input_names=["input"], output_names=["logits"],
                                 dynamic_axes=EXPORT["dynamic_axes"])
    dm = onnx.load_from_string(dblob)
    dflt = name_changes(state, describe_initializers(dm))
    # how each missing parameter is reached in the default export
    users = {}
    for n in dm.graph.node:
        for i in n.input:
            if i in dflt["generated"]:
                users.setdefault(i, []).append(f"{n.op_type} {n.name}")
    for k, v in dflt["generated"].items():
        v["used_by"] = users.get(k, [])
    went = where_it_went(m, dm, dflt["missing"])

    # per-sample gradients: float64 reference, float32 for comparison
    logits, sq, grads = per_sample(model, x, y, torch.float64)
    _, sq32, _ = per_sample(model, x, y, torch.float32)
    norms = np.sqrt(sq.sum(axis=1))
    norms32 = np.sqrt(sq32.sum(axis=1))
    coef = np.minimum(1.0, C / (norms + 1e-6))
    clipped = {k: sum(coef[i] * grads[i][k].numpy() for i in range(B)).astype(np.float64) for k in pnames}

    base = os.path.join(out_dir, name)
    np.save(base + ".x.npy", x.numpy().astype(np.float32 if kind == "float" else np.int64))
    np.save(base + ".y.npy", y.numpy().astype(np.int64))
    np.save(base + ".logits.npy", logits.numpy().astype(np.float64))
    np.save(base + ".norms.npy", norms)
    np.save(base + ".sq_norms.npy", sq)
    meta = {"model": name, "format": "pt"}
    writer = write_safetensors(base + ".clipped_sum.safetensors", clipped, meta)
    write_safetensors(base + ".init.safetensors", {k: v.detach().numpy().astype(np.float32) for k, v in state.items()},
                      meta)

    ops = op_types(m.graph)
    info = {
        "model": name,
        "description": desc,
        "input": {"name": "input", "dtype": "float32" if kind == "float" else "int64",
                  "shape": [B] + list(shape), "onnx_shape": dims(m.graph.input[0]),
                  "values": "N(0,1)" if kind == "float" else f"token ids uniform in [0, {vocab}), no padding"},
        "output": {"name": "logits", "shape": [B, classes], "onnx_shape": dims(m.graph.output[0])},
        "classes": classes,
        "batch_size": B,
        "seed": SEED,
        "loss": "per sample: CrossEntropy(logits_i, y_i) (a microbatch of 1; no averaging over the batch)",
        "per_sample_method": "one sample at a time, float64 copy of the float32 model, train mode, dropout p = 0",
        "max_grad_norm": C,
        "clip_rule": "R_i = min(1, C / (||g_i|| + 1e-6)); clipped_sum = sum_i R_i g_i",
        "clipped_samples": int((coef < 1).sum()),
        "float32_norms_max_rel_diff": float(np.max(np.abs(norms32 - norms) / norms)),
        "param_order": pnames,
        "param_shapes": {k: list(v.shape) for k, v in state.items()},
        "n_parameters": int(sum(v.numel() for v in state.values())),
        "files": {
            "onnx": name + ".onnx", "x": name + ".x.npy", "y": name + ".y.npy",
            "logits": name + ".logits.npy (float64 [B,K], the float64 copy's forward)",
            "norms": name + ".norms.npy (float64 [B])",
            "sq_norms": name + ".sq_norms.npy (float64 [B,P], column k = param_order[k])",
            "clipped_sum": name + ".clipped_sum.safetensors (F64, state_dict names)",
            "init": name + ".init.safetensors (F32, state_dict names: the .onnx initializers)",
        },
        "safetensors_writer": writer,
        "onnx": {
            "opset": OPSET,
            "opset_import": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
            "ir_version": m.ir_version,
            "producer": f"{m.producer_name} {m.producer_version}",
            "export_call": EXPORT_TEXT,
            "op_types": sorted(ops),
            "op_counts": dict(sorted(ops.items())),
            "n_nodes": len(m.graph.node),
            "initializers": inits,
            "initializer_names_vs_state_dict": {"missing": kept["missing"], "extra": sorted(kept["generated"])},
            "checker": "onnx.checker.check_model(full_check=True) passed",
            "export_warnings": warns,
        },
        "default_export": {
            "call": 'torch.onnx.export(model, x, f, opset_version=17, input_names=["input"], '
                    'output_names=["logits"], dynamic_axes=...)  (training=EVAL, do_constant_folding=True)',
            "op_types": sorted(op_types(dm.graph)),
            "missing_state_dict_names": dflt["missing"],
            "where_missing_names_went": went,
            "generated_initializers": dflt["generated"],
            "export_warnings": dwarns,
        },
        "versions": versions,
    }
    with open(base + ".json", "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return info


def run_onnx(m, x):
    """A small evaluator for the ops these exports use (no ONNX runtime in Debian 12), in
    float64: it checks that the exported graph computes what PyTorch computed, at any batch size.
    Conv, MaxPool and Erf go through torch's functional ops; the rest is numpy."""
    from onnx import numpy_helper
    env = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    env = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in env.items()}
    env[m.graph.input[0].name] = x.astype(np.float64) if x.dtype == np.float32 else x
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    for n in m.graph.node:
        a = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
        i = [env[v] if v else None for v in n.input]
        op = n.op_type
        if op == "Constant":
            r = numpy_helper.to_array(a["value"])
            r = r.astype(np.float64) if r.dtype == np.float32 else r
        elif op == "Gemm":
            A = i[0].T if a.get("transA") else i[0]
            Bm = i[1].T if a.get("transB") else i[1]
            r = a.get("alpha", 1.0) * A @ Bm + (a.get("beta", 1.0) * i[2] if len(i) > 2 else 0)
        elif op == "MatMul":
            r = np.matmul(i[0], i[1])
        elif op in ("Add", "Sub", "Mul"):
            r = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](i[0], i[1])
        elif op == "Div":
            r = i[0] // i[1] if i[0].dtype.kind == "i" else i[0] / i[1]
        elif op == "Relu":
            r = np.maximum(i[0], 0)
        elif op == "Tanh":
            r = np.tanh(i[0])
        elif op == "Erf":
            r = torch.erf(T(i[0])).numpy()
        elif op == "Softmax":
            e = np.exp(i[0] - i[0].max(axis=a["axis"], keepdims=True))
            r = e / e.sum(axis=a["axis"], keepdims=True)
        elif op == "Conv":
            assert len(set(a["pads"])) == 1
            r = F.conv2d(T(i[0]), T(i[1]), T(i[2]) if len(i) > 2 else None, stride=a["strides"],
                         padding=a["pads"][0], dilation=a["dilations"], groups=a.get("group", 1)).numpy()
        elif op == "MaxPool":
            assert len(set(a.get("pads", [0]))) == 1 and not a.get("ceil_mode", 0)
            r = F.max_pool2d(T(i[0]), a["kernel_shape"], a["strides"], a.get("pads", [0])[0]).numpy()
        elif op == "GlobalAveragePool":
            r = i[0].mean(axis=tuple(range(2, i[0].ndim)), keepdims=True)
        elif op == "InstanceNormalization":
            ax = tuple(range(2, i[0].ndim))
            mu, var = i[0].mean(axis=ax, keepdims=True), i[0].var(axis=ax, keepdims=True)
            sh = (1, -1) + (1,) * len(ax)
            r = (i[0] - mu) / np.sqrt(var + a["epsilon"]) * i[1].reshape(sh) + i[2].reshape(sh)
        elif op == "LayerNormalization":
            ax = tuple(range(a.get("axis", -1) % i[0].ndim, i[0].ndim))
            mu, var = i[0].mean(axis=ax, keepdims=True), i[0].var(axis=ax, keepdims=True)
            r = (i[0] - mu) / np.sqrt(var + a["epsilon"]) * i[1] + i[2]
        elif op == "ReduceMean":
            r = i[0].mean(axis=tuple(a["axes"]), keepdims=bool(a.get("keepdims", 1)))
        elif op == "Flatten":
            r = i[0].reshape(int(np.prod(i[0].shape[:a.get("axis", 1)])), -1)
        elif op == "Reshape":
            sh = [i[0].shape[k] if d == 0 and not a.get("allowzero", 0) else d for k, d in enumerate(i[1].tolist())]
            r = i[0].reshape(sh)
        elif op == "Transpose":
            r = np.transpose(i[0], a["perm"])
        elif op == "Unsqueeze":
            r = i[0]
            for ax in sorted(int(v) % (i[0].ndim + len(i[1])) for v in i[1].reshape(-1)):
                r = np.expand_dims(r, ax)
        elif op == "Shape":
            r = np.array(i[0].shape, dtype=np.int64)
        elif op == "Gather":
            r = np.take(i[0], i[1], axis=a.get("axis", 0))
        elif op == "Concat":
            r = np.concatenate(i, axis=a["axis"])
        elif op == "Cast":
            r = i[0].astype({1: np.float64, 7: np.int64, 11: np.float64}[a["to"]])
        elif op == "Slice":
            sl = [slice(None)] * i[0].ndim
            axes = i[3] if len(i) > 3 and i[3] is not None else range(len(i[1]))
            steps = i[4] if len(i) > 4 and i[4] is not None else [1] * len(i[1])
            for st, en, ax, sp in zip(i[1], i[2], axes, steps):
                sl[int(ax)] = slice(int(st), int(en), int(sp))
            r = i[0][tuple(sl)]
        elif op == "Dropout":
            ratio = float(i[1]) if len(i) > 1 and i[1] is not None else 0.5
            assert ratio == 0.0, "dropout with p > 0 is random"
            r, env[n.output[1]] = i[0], np.ones(i[0].shape, dtype=bool) if len(n.output) > 1 else None
        elif op == "Identity":
            r = i[0]
        elif op == "ConstantOfShape":
            v = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, dtype=np.float32)
            r = np.full(tuple(int(d) for d in i[0]), v.reshape(-1)[0], dtype=v.dtype)
        elif op == "Equal":
            r = np.equal(i[0], i[1])
        elif op == "Where":
            r = np.where(i[0], i[1], i[2])
        elif op == "Expand":
            r = i[0] * np.ones(tuple(int(d) for d in i[1]), dtype=i[0].dtype)
        else:
            raise NotImplementedError(op)
        env[n.output[0]] = np.asarray(r)
    return env[m.graph.output[0].name]


def vmap_check(name, init, x, y, order):
    """A second, independent computation of the per-sample gradients: functorch's vmap(grad)
    over the batch (shipped with Debian's torch 1.13), from the saved weights and batch.
    Returns (sq_norms [B,P], per-sample gradients by name), or None without functorch."""
    try:
        from functorch import grad, make_functional, vmap
    except ImportError:
        return None
    torch.manual_seed(SEED)
    model = MODELS[name][0]().double().train()
    model.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in init.items()})
    fm, params = make_functional(model)
    names = [k for k, _ in model.named_parameters()]
    xt = torch.from_numpy(x.astype(np.float64) if x.dtype == np.float32 else x)

    def loss(p, xi, yi):
        return F.cross_entropy(fm(p, xi[None]), yi[None])

    g = [t.detach().numpy() for t in vmap(grad(loss), (None, 0, 0))(params, xt, torch.from_numpy(y))]
    g = dict(zip(names, g))
    return np.stack([(g[k].reshape(len(x), -1) ** 2).sum(1) for k in order], 1), g


def check(name, out_dir):
    """Reads everything back: onnx, npy, safetensors; shapes and names agree."""
    base = os.path.join(out_dir, name)
    info = json.load(open(base + ".json"))
    m = onnx.load(base + ".onnx")
    onnx.checker.check_model(m)
    x, y = np.load(base + ".x.npy"), np.load(base + ".y.npy")
    norms, sq = np.load(base + ".norms.npy"), np.load(base + ".sq_norms.npy")
    init = read_safetensors(base + ".init.safetensors")
    cs = read_safetensors(base + ".clipped_sum.safetensors")
    order = info["param_order"]
    assert list(init) == order and list(cs) == order, name
    assert x.shape == tuple(info["input"]["shape"]) and y.shape == (B,) and y.dtype == np.int64
    assert norms.shape == (B,) and sq.shape == (B, len(order)) and norms.dtype == sq.dtype == np.float64
    assert np.allclose(np.sqrt(sq.sum(1)), norms, rtol=1e-14)
    logits = np.load(base + ".logits.npy")
    err = 0.0
    for b in (B, 3, 1):  # the batch dimension is dynamic: the graph at other batch sizes
        got = run_onnx(m, x[:b])
        assert got.shape == logits[:b].shape, (name, b, got.shape)
        err = max(err, float(np.max(np.abs(got - logits[:b])) / np.abs(logits[:b]).max()))
        assert err < 1e-6, (name, b, err)
    v = vmap_check(name, init, x, y, order)
    if v is not None:
        vsq, vg = v
        coef = np.minimum(1.0, C / (np.sqrt(vsq.sum(1)) + 1e-6))
        e1 = float(np.max(np.abs(vsq - sq) / sq))
        e2 = max(float(np.max(np.abs(np.tensordot(coef, vg[k], 1) - cs[k])) / np.abs(cs[k]).max()) for k in order)
        assert e1 < 1e-12 and e2 < 1e-12, (name, e1, e2)
        info["vmap_check"] = (f"functorch vmap(grad) over the batch agrees: sq_norms to {e1:.1e}, "
                              f"clipped_sum to {e2:.1e} (relative)")
    info["onnx_forward_check"] = f"a numpy evaluation of {name}.onnx (float64) at batch {B}, 3 and 1 matches logits to {err:.1e}"
    from onnx import numpy_helper
    onnx_w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for k in order:
        assert init[k].dtype == np.float32 and cs[k].dtype == np.float64
        assert list(init[k].shape) == info["param_shapes"][k] == list(cs[k].shape), k
        assert np.array_equal(onnx_w[k], init[k]), (name, k, "the .onnx and the init file differ")
    with open(base + ".json", "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir) if f.startswith(name + "."))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
                "python": sys.version.split()[0],
                "debian_python3-torch": debian_version("python3-torch"),
                "debian_python3-onnx": debian_version("python3-onnx")}
    total = 0
    for name in (sys.argv[2:] or MODELS):
        info = build(name, out_dir, versions)
        size = check(name, out_dir)
        total += size
        d = info["default_export"]
        print(f"{name}: {info['n_parameters']} parameters, {size} bytes, clipped {info['clipped_samples']}/{B}, "
              f"norms {np.load(os.path.join(out_dir, name + '.norms.npy')).round(4).tolist()}")
        print(f"  ops: {' '.join(info['onnx']['op_types'])}")
        j = json.load(open(os.path.join(out_dir, name + ".json")))
        print(f"  {j['onnx_forward_check']}\n  {j.get('vmap_check', 'functorch absent: no vmap check')}")
        print(f"  names vs state_dict: {info['onnx']['initializer_names_vs_state_dict']}")
        print(f"  default export: {len(d['missing_state_dict_names'])} names missing")
        for k, v in d["where_missing_names_went"].items():
            print(f"    {k}: {'; '.join(v)}")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
