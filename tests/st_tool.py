#!/usr/bin/env python3
"""tests/st_tool.py: small safetensors (F32) checks for tests/mpi_test.sh, standard library only.

  st_tool.py maxdiff A B [NAME]   largest |a - b| over all tensors (same names and shapes), or
                                  over tensor NAME only
  st_tool.py var A B SCALE        variance of (b - a) / SCALE over all coordinates
  st_tool.py offgrid RAW STD SCALE  how many float32 values g of the raw file are not
                                  float32(k * Lambda * SCALE) for an integer k, where Lambda is
                                  the noise grid of dp_secure_noise_grid(STD)
"""
import math
import json
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name}: dtype {t['dtype']}, expected F32")
        a, b = t["data_offsets"]
        n = (b - a) // 4
        out[name] = struct.unpack(f"<{n}f", raw[base + a:base + b])
    return out


def pairs(pa, pb, only=None):
    a, b = load(pa), load(pb)
    if sorted(a) != sorted(b):
        raise SystemExit("tensor names differ")
    if only is not None and only not in a:
        raise SystemExit(f"no tensor {only}")
    for k in sorted(a) if only is None else [only]:
        if len(a[k]) != len(b[k]):
            raise SystemExit(f"tensor {k}: sizes differ")
        yield from zip(a[k], b[k])


def main():
    cmd = sys.argv[1]
    if cmd == "maxdiff":
        print(max(abs(x - y) for x, y in pairs(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)))
    elif cmd == "var":
        s = float(sys.argv[4])
        d = [(y - x) / s for x, y in pairs(sys.argv[2], sys.argv[3])]
        m = sum(d) / len(d)
        print(sum((v - m) ** 2 for v in d) / (len(d) - 1), len(d))
    elif cmd == "offgrid":
        with open(sys.argv[2], "rb") as f:
            raw = f.read()
        std, scale = float(sys.argv[3]), float(sys.argv[4])
        m, e = math.frexp(std)  # std = m 2^e, m in [0.5, 1)
        if m == 0.5:
            e -= 1
        lam = math.ldexp(1.0, e - 20)
        f32 = lambda v: struct.unpack("<f", struct.pack("<f", v))[0]
        g = struct.unpack(f"<{len(raw) // 4}f", raw)
        print(sum(1 for v in g if f32(round(v / (lam * scale)) * lam * scale) != v))
    else:
        raise SystemExit(__doc__)


main()
