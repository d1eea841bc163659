#!/usr/bin/env python3
"""Builds tests/reference/ from the full Opacus reference output set (a folder with
accountant.json and cases/<case>/, as the reference generator writes it).

Usage: python3 tests/reference/shrink.py FULL_REFERENCE_DIR tests/reference

Keeps only what tests/test_reference.c, test_data.c, test_privacy.c and test_accounting.c
read, and cuts the per-sample gradients to the first K samples of each batch (see README.md).
Pure standard library: .npy files are copied byte for byte, or cut on a row boundary with a
rewritten header; no value is recomputed."""
import ast
import os
import shutil
import struct
import sys

# case -> how many samples' per-sample gradients to keep (the batch keeps its full size)
CASES = {"mlp": 2, "cnn": 4, "cnn_f64": 4, "seq": 8, "seq_f64": 8}
PLAIN = ["case.json", "input_x.npy", "target_y.npy", "logits.npy", "loss_per_sample.npy",
         "naive/norms.npy", "naive/clip_coef.npy", "naive/param_norms.npy", "ghost/norms.npy"]
FOLDERS = ["weights", "naive/clipped_sum"]


def read_npy(path):
    b = open(path, "rb").read()
    if b[:6] != b"\x93NUMPY":
        sys.exit(f"{path}: not a .npy file")
    if b[6] == 1:
        n, off = struct.unpack("<H", b[8:10])[0], 10
    else:
        n, off = struct.unpack("<I", b[8:12])[0], 12
    return ast.literal_eval(b[off:off + n].decode("latin1")), b[off + n:]


def write_npy(path, header, data):
    dims = header["shape"]
    shape = f"{dims[0]}," if len(dims) == 1 else ", ".join(str(d) for d in dims)
    text = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (header["descr"], shape)
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * (pad % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1") + data)


def first_rows(src, dst, k):
    h, data = read_npy(src)
    if h["fortran_order"]:
        sys.exit(f"{src}: fortran order")
    shape = list(h["shape"])
    row = len(data) // shape[0]
    shape[0] = min(k, shape[0])
    write_npy(dst, {"descr": h["descr"], "shape": tuple(shape)}, data[:row * shape[0]])


def main(src, dst):
    shutil.copyfile(os.path.join(src, "accountant.json"), os.path.join(dst, "accountant.json"))
    for case, k in CASES.items():
        s, d = os.path.join(src, "cases", case), os.path.join(dst, "cases", case)
        for rel in PLAIN:
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            shutil.copyfile(os.path.join(s, rel), os.path.join(d, rel))
        for folder in FOLDERS:
            os.makedirs(os.path.join(d, folder), exist_ok=True)
            for name in sorted(os.listdir(os.path.join(s, folder))):
                shutil.copyfile(os.path.join(s, folder, name), os.path.join(d, folder, name))
        ps = "naive/per_sample_grads"
        os.makedirs(os.path.join(d, ps), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(s, ps))):
            first_rows(os.path.join(s, ps, name), os.path.join(d, ps, name), k)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
