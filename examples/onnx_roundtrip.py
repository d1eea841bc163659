#!/usr/bin/python3
"""A residual CNN with GroupNorm, from PyTorch to dpsgd and back (issue 18, ONNX import).

    /usr/bin/python3 examples/onnx_roundtrip.py WORKDIR [--dpsgd build/dpsgd] [--epochs N] ...

1. reads Fashion-MNIST from Debian's dataset-fashion-mnist (gzip'd IDX files) and writes
   WORKDIR/{train,test}_{x,y}.npy: float32 [N, 1, 28, 28] scaled as dpsgd's default run scales
   the IDX data (pixel / 255, then (v - 0.2860) / 0.3530), int64 labels [N];
2. builds a small residual CNN with nn.GroupNorm (no BatchNorm) and exports it untrained to
   WORKDIR/m.onnx (opset 17, training mode, no constant folding: the initializers keep their
   state_dict names);
3. runs `dpsgd train --model m.onnx --data-x ... --epsilon 3 ... --save-weights w.safetensors
   --save-model trained.onnx` and prints what dpsgd prints;
4. loads w.safetensors back into the same PyTorch module (every state_dict tensor, same name and
   shape), measures the test accuracy with model.eval() and compares it with dpsgd's;
5. checks trained.onnx: onnx.checker, the same graph as m.onnx, and initializers equal to
   w.safetensors bit for bit (and runs it through onnx.reference when this onnx has it).

The recipe (expected batch 1024, SGD lr 8 momentum 0.9, C 0.1, 8 epochs, epsilon 3 at delta
1e-5) was picked from a few runs of this model (docs/onnx.md, "Worked example"): ~81% test
accuracy in about 3 minutes of training on 2 cores.

Standard library, numpy, torch and onnx only (Debian 12: python3-torch, python3-onnx). Run by
hand, not in CI. Exits non-zero, with a message, when any step fails.
"""

import argparse
import gzip
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import onnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # dpsgd's defaults for IDX data (tools/cli.h)


def fail(msg):
    print(f"onnx_roundtrip: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- 1. data ------------------------------------------------------------------------------------

def read_idx_gz(path, want_ndim):
    """An IDX file (the MNIST format), gzip'd: magic 0x0000 0x08 (ubyte) ndim, then ndim
    big-endian uint32 sizes, then the bytes."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        fail(f"{path}: {e} (install Debian's dataset-fashion-mnist, or give --fmnist DIR)")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != want_ndim:
        fail(f"{path}: not an IDX file of unsigned bytes with {want_ndim} dimensions")
    dims = struct.unpack(">" + "I" * want_ndim, raw[4:4 + 4 * want_ndim])
    body = raw[4 + 4 * want_ndim:]
    if len(body) != int(np.prod(dims)):
        fail(f"{path}: {len(body)} bytes of data, dims {dims} need {int(np.prod(dims))}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def write_data(fmnist, work):
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = read_idx_gz(os.path.join(fmnist, f"{prefix}-images-idx3-ubyte.gz"), 3)
        lab = read_idx_gz(os.path.join(fmnist, f"{prefix}-labels-idx1-ubyte.gz"), 1)
        if img.shape[0] != lab.shape[0]:
            fail(f"{split}: {img.shape[0]} images but {lab.shape[0]} labels")
        # dpsgd: byte / 255 in float, then (v - mean) / std in double, stored as float
        x = img.astype(np.float32) / np.float32(255.0)
        x = ((x.astype(np.float64) - FMNIST_MEAN) / FMNIST_STD).astype(np.float32)
        x = x.reshape(-1, 1, 28, 28)
        y = lab.astype(np.int64)
        np.save(os.path.join(work, f"{split}_x.npy"), x)
        np.save(os.path.join(work, f"{split}_y.npy"), y)
        out[split] = (x, y)
        print(f"data: {split}: x {list(x.shape)} float32 (mean {x.mean():.4f}, std {x.std():.4f}), "
              f"y {list(y.shape)} int64 -> {split}_x.npy, {split}_y.npy")
    return out


# ---- 2. the model -------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """conv3x3-GN-ReLU-conv3x3-GN, plus the identity or a 1x1 (strided) conv + GN shortcut, then
    ReLU. Convolutions without bias: a GroupNorm follows each."""

    def __init__(self, cin, cout, stride=1, groups=4):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.gn1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(groups, cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.GroupNorm(groups, cout))

    def forward(self, x):
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNetGN(nn.Module):
    """28x28x1 -> stem conv 1->16 3x3 stride 2 (14x14) + GN + ReLU -> block 16->16 (identity
    shortcut, 14x14) -> block 16->32 stride 2 (1x1 conv shortcut, 7x7) -> global average pool
    -> linear 32->10."""

    def __init__(self, classes=10, width=16):
        super().__init__()
        c = width
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, stride=2, padding=1, bias=False),
                                  nn.GroupNorm(4, c), nn.ReLU())
        self.layer1 = BasicBlock(c, c)
        self.layer2 = BasicBlock(c, 2 * c, stride=2)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def export(model, path):
    x = torch.zeros(2, 1, 28, 28)
    model.train()
    torch.onnx.export(model, x, path, opset_version=17,
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    state = {k: list(v.shape) for k, v in model.state_dict().items()}
    if inits != state:
        fail(f"{path}: the initializers are not the state_dict: "
             f"missing {sorted(set(state) - set(inits))}, extra {sorted(set(inits) - set(state))}, "
             f"shapes differ for {sorted(k for k in state if k in inits and inits[k] != state[k])}")
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"export: {path}: opset 17, {len(inits)} initializers = the state_dict's names and shapes; "
          f"ops " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    return m


# ---- 4. safetensors -----------------------------------------------------------------------------

ST_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}
    (and __metadata__), then the data; offsets are relative to the end of the header."""
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        fail(f"{path}: {e}")
    if len(raw) < 8:
        fail(f"{path}: {len(raw)} bytes, not a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        fail(f"{path}: header of {n} bytes, but the file has {len(raw)}")
    header = json.loads(raw[8:8 + n])
    base, out = 8 + n, {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] not in ST_DTYPES:
            fail(f"{path}: tensor '{name}': dtype {t['dtype']} not handled here")
        a, b = t["data_offsets"]
        dt = np.dtype(ST_DTYPES[t["dtype"]]).newbyteorder("<")
        if not (0 <= a <= b <= len(raw) - base) or (b - a) != dt.itemsize * int(np.prod(t["shape"], dtype=np.int64)):
            fail(f"{path}: tensor '{name}': data_offsets {t['data_offsets']} do not fit shape {t['shape']}")
        out[name] = np.frombuffer(raw[base + a:base + b], dtype=dt).reshape(t["shape"]).astype(dt.newbyteorder("="))
    return out, header.get("__metadata__", {})


def load_back(model, tensors, path):
    state = model.state_dict()
    missing = [k for k in state if k not in tensors]
    extra = [k for k in tensors if k not in state]
    shapes = [f"{k}: state_dict {list(state[k].shape)}, file {list(tensors[k].shape)}"
              for k in state if k in tensors and list(state[k].shape) != list(tensors[k].shape)]
    if missing or extra or shapes:
        fail(f"{path} does not match the module's state_dict: missing {missing}, extra {extra}, "
             f"shapes {shapes}")
    for k, v in state.items():
        if not v.is_floating_point():
            fail(f"state_dict '{k}' is {v.dtype}, not a float tensor")
        if tensors[k].dtype != np.float32:
            fail(f"{path}: '{k}' is {tensors[k].dtype}, expected float32")
        if not np.all(np.isfinite(tensors[k])):
            fail(f"{path}: '{k}' has non-finite values")
    new = {k: torch.from_numpy(np.ascontiguousarray(tensors[k])) for k in state}
    model.load_state_dict(new, strict=True)
    gn = [f"{name}.{p}" for name, mod in model.named_modules() if isinstance(mod, nn.GroupNorm)
          for p in ("weight", "bias")]
    if any(k not in new for k in gn):
        fail(f"GroupNorm parameters missing from {path}: {[k for k in gn if k not in new]}")
    print(f"load: {len(state)} state_dict tensors from {os.path.basename(path)} (strict), "
          f"{len(gn)} of them GroupNorm weights/biases; "
          f"{sum(v.numel() for v in new.values())} values")


@torch.no_grad()
def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        logits = model(torch.from_numpy(x[i:i + batch]))
        correct += int((logits.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct


# ---- 5. trained.onnx ----------------------------------------------------------------------------

def check_trained_onnx(path, orig, tensors, x, y):
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    from onnx import numpy_helper
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    if set(inits) != set(tensors):
        fail(f"{path}: initializers {sorted(inits)} are not w.safetensors' tensors {sorted(tensors)}")
    for k, v in inits.items():
        if v.shape != tensors[k].shape or v.dtype != np.float32 or v.tobytes() != tensors[k].tobytes():
            fail(f"{path}: initializer '{k}' differs from w.safetensors")
    # the graph itself must be the one exported: compare it with the initializers cleared
    g1, g2 = onnx.GraphProto(), onnx.GraphProto()
    g1.CopyFrom(orig.graph)
    g2.CopyFrom(m.graph)
    del g1.initializer[:]
    del g2.initializer[:]
    if g1.SerializeToString() != g2.SerializeToString():
        fail(f"{path}: the graph (nodes, inputs, outputs) is not m.onnx's")
    changed = sum(1 for t in orig.graph.initializer
                  if numpy_helper.to_array(t).tobytes() != inits[t.name].tobytes())
    print(f"trained.onnx: onnx.checker passes (full_check); same graph as m.onnx; its {len(inits)} "
          f"initializers equal w.safetensors bit for bit ({changed} changed by training)")
    try:
        from onnx.reference import ReferenceEvaluator  # onnx >= 1.13
    except ImportError:
        print(f"trained.onnx: onnx {onnx.__version__} has no onnx.reference: not evaluated "
              f"(its weights are w.safetensors', whose accuracy PyTorch measured above)")
        return None
    sess = ReferenceEvaluator(m)
    correct = 0
    for i in range(0, len(x), 500):
        (logits,) = sess.run(None, {"input": x[i:i + 500]})
        correct += int((np.argmax(logits, 1) == y[i:i + 500]).sum())
    print(f"trained.onnx: onnx.reference: {correct}/{len(x)} = {100.0 * correct / len(x):.2f}%")
    return correct


# ---- main ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", help="work directory (created): the .npy data, m.onnx, w.safetensors, trained.onnx")
    ap.add_argument("--dpsgd", default=os.path.join(REPO, "build", "dpsgd"),
                    help="the dpsgd binary [build/dpsgd of this repository]")
    ap.add_argument("--fmnist", default=FMNIST_DIR, help=f"Fashion-MNIST IDX .gz files [{FMNIST_DIR}]")
    ap.add_argument("--epsilon", type=float, default=3.0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=8.0)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--max-grad-norm", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0, help="PyTorch's initialisation seed (public)")
    ap.add_argument("--extra", default="",
                    help='more arguments for dpsgd train, one string, e.g. --extra="--train-limit 6000"')
    a = ap.parse_args()

    t_start = time.time()
    os.makedirs(a.work, exist_ok=True)
    # a relative --dpsgd: from the current directory if it is there, else from the repository root
    dpsgd = os.path.abspath(a.dpsgd) if os.path.isabs(a.dpsgd) or os.path.exists(a.dpsgd) \
        else os.path.join(REPO, a.dpsgd)
    if not os.access(dpsgd, os.X_OK):
        fail(f"{dpsgd}: no dpsgd binary there (build it: cmake -S . -B build && cmake --build build; "
             f"or give --dpsgd PATH)")
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, numpy {np.__version__}; dpsgd {dpsgd}")

    # 1. data
    data = write_data(a.fmnist, a.work)
    xt, yt = data["test"]

    # 2. model and export
    torch.manual_seed(a.seed)
    model = ResNetGN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: ResNetGN, {n_params} parameters in {len(model.state_dict())} tensors")
    m_path = os.path.join(a.work, "m.onnx")
    try:
        orig = export(model, m_path)
    except Exception as e:  # noqa: BLE001 - report any export failure plainly
        fail(f"torch.onnx.export / onnx.checker: {type(e).__name__}: {e}")
    init_acc = accuracy(model, xt, yt)
    print(f"untrained: PyTorch test accuracy {init_acc}/{len(yt)} = {100.0 * init_acc / len(yt):.2f}%")

    # 3. dpsgd
    w_path = os.path.join(a.work, "w.safetensors")
    t_path = os.path.join(a.work, "trained.onnx")
    for p in (w_path, t_path):
        if os.path.exists(p):
            os.remove(p)
    cmd = [dpsgd, "train", "--model", m_path,
           "--data-x", os.path.join(a.work, "train_x.npy"), "--data-labels", os.path.join(a.work, "train_y.npy"),
           "--test-x", os.path.join(a.work, "test_x.npy"), "--test-labels", os.path.join(a.work, "test_y.npy"),
           "--classes", "10", "--epsilon", f"{a.epsilon:g}", "--epochs", str(a.epochs),
           "--batch-size", str(a.batch_size), "--lr", f"{a.lr:g}", "--momentum", f"{a.momentum:g}",
           "--max-grad-norm", f"{a.max_grad_norm:g}",
           "--save-weights", w_path, "--save-model", t_path] + shlex.split(a.extra)
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        sys.stdout.write("  | " + line)
        sys.stdout.flush()
        lines.append(line.rstrip("\n"))
    rc = proc.wait()
    t_dpsgd = time.time() - t0
    if rc != 0:
        fail(f"dpsgd train exited with status {rc}" + (f": {lines[-1]}" if lines else ""))
    print(f"dpsgd train: {t_dpsgd:.1f} s (wall, this script's clock)")
    # the final line: "final: test accuracy 81.23% at epsilon 3.000 ...": its first percentage
    final = next((l for l in reversed(lines) if l.startswith("final:")), None) or \
        next((l for l in reversed(lines) if l.strip()), "")
    m = re.search(r"(\d+(?:\.\d+)?)%", final)
    if not m:
        fail(f"no accuracy (a percentage) in dpsgd's final line: {final!r}")
    dpsgd_acc = float(m.group(1))
    # dpsgd evaluates on its test split: all of test_x.npy unless --test-limit N cut it to the
    # first N; its "data:" line says how many ("... (60000 train, 10000 test, ...)")
    n_test = len(yt)
    m = next((re.search(r"(\d+) test\b", l) for l in lines if l.startswith("data:")), None)
    if m and int(m.group(1)) < n_test:
        n_test = int(m.group(1))
        xt, yt = xt[:n_test], yt[:n_test]
        print(f"dpsgd evaluated on the first {n_test} test images: so does PyTorch below")
    for p in (w_path, t_path):
        if not os.path.isfile(p):
            fail(f"dpsgd exited 0 but did not write {p}")

    # 4. the weights back into PyTorch
    tensors, meta = read_safetensors(w_path)
    if meta:
        print(f"w.safetensors metadata: {json.dumps(meta)[:300]}")
    load_back(model, tensors, w_path)
    correct = accuracy(model, xt, yt)
    pt_acc = 100.0 * correct / len(yt)
    diff_images = abs(pt_acc - dpsgd_acc) * len(yt) / 100.0
    print(f"PyTorch (model.eval(), the loaded weights): test accuracy {correct}/{len(yt)} = {pt_acc:.2f}%")
    print(f"dpsgd's final line: {dpsgd_acc:.2f}%; PyTorch: {pt_acc:.2f}% "
          f"(difference {abs(pt_acc - dpsgd_acc):.2f} points, {diff_images:.1f} test images)")
    # dpsgd prints two decimals (0.01% = 1 image of 10,000); float32 summation order differs
    # between the two, so an image whose top two logits are within rounding may flip
    tol_images = 5
    if diff_images > tol_images + 0.5:
        fail(f"PyTorch's accuracy {pt_acc:.2f}% and dpsgd's {dpsgd_acc:.2f}% differ by "
             f"{diff_images:.0f} test images (more than {tol_images})")

    # 5. trained.onnx
    ref = check_trained_onnx(t_path, orig, tensors, xt, yt)
    if ref is not None and abs(ref - correct) > tol_images:
        fail(f"onnx.reference's accuracy on trained.onnx ({ref}) differs from PyTorch's ({correct})")

    print(f"OK: dpsgd {dpsgd_acc:.2f}%, PyTorch {pt_acc:.2f}%; total {time.time() - t_start:.1f} s "
          f"(dpsgd train {t_dpsgd:.1f} s)")


if __name__ == "__main__":
    main()
