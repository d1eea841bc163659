#!/usr/bin/env bash
# scripts/sweep.sh [--inputs-only|--faults-only] [DPSGD-BINARY]: the reliability sweep of
# docs/reliability.md ("Sweeps"), reproducible.
#
# Bad inputs: starts from valid files (a 1000-image IDX set cut from the installed
# Fashion-MNIST, .npy features and labels, token ids, --init weights, a checkpoint, the ONNX
# exports of tests/reference/onnx/, model specs) and mutates each systematically (truncations
# at many offsets, bit flips in headers, wrong magic, absurd sizes, NaN/Inf values, wrong
# dtypes, mismatched counts, empty files, directories, unreadable and missing paths), and
# gives every flag of `dpsgd train|norms|epsilon|noise --help` bad values (negative, zero,
# non-numeric, huge, empty, missing, unknown flags, contradictions). Each case is one small
# run under `timeout 60` (and a 4 GiB address-space limit; with a sanitizer build, ASan's own
# 4 GiB limits and allocator_may_return_null), in an empty working directory, with its
# outputs (--out, --save-weights; norms: --json, --per-sample-out) in that directory.
# A case is
#   handled             exit status 1 or 2, stderr names the file or the flag, no sanitizer
#                       report, and nothing left in the output directory (a --checkpoint-dir
#                       the case names, and its .lock, are allowed: they are documented);
#   accepted (valid)    exit 0 for an input that is still valid: a value the help allows, or
#                       a mutated file an independent check (Python, numpy, onnx) finds valid,
#                       or an encoding of the very data of the base case (other dtype, byte
#                       order, header version), whose weights must then equal the base run's
#                       byte for byte;
#   not handled         anything else (a signal, a timeout, another exit status, exit 0 on
#                       an invalid input, a message naming neither file nor flag, an output
#                       left behind), listed with its command, exit status and stderr's first
#                       line.
# Faults: checkpointing runs with --noise-seed (four configurations: the CNN with SGD, an MLP
# with Adam and --physical-batch, a dropout CNN with AdamW and --ema, a small transformer on
# the synthetic task with dropout) are SIGKILLed, SIGTERMed or SIGINTed at random points (a
# random step, a random time, during a checkpoint write, twice, before the first checkpoint),
# stopped and continued, or hit by a full disk (the file-size limit lowered on the running
# process with prlimit, SIGXFSZ ignored: writes fail with EFBIG as they would with ENOSPC),
# then resumed to the end; survived = final weights (cmp) and epsilon equal to the
# uninterrupted run's. Needs the test build dpsgd-testhooks next to the binary.
#
# Last lines: "sweep: bad inputs N tried, H handled, V accepted as still valid, X not handled"
# and "sweep: faults N tried, S survived". Exit status 0 when everything was handled/survived.
# Environment: SWEEP_JOBS (parallel input cases, default 2, at most 2 advised on a shared
# machine), SWEEP_KEEP=1 keeps the work directory, SWEEP_KINDS a regex of case kinds to run.
set -u
MODE=all
BIN=
for a in "$@"; do
    case $a in
        --inputs-only) MODE=inputs ;;
        --faults-only) MODE=faults ;;
        -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "sweep.sh: unknown option $a" >&2; exit 2 ;;
        *) BIN=$a ;;
    esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z $BIN ]]; then
    for b in "$ROOT/build-sweep/dpsgd" "$ROOT/build/dpsgd"; do [[ -x $b ]] && { BIN=$b; break; }; done
fi
[[ -n $BIN && -x $BIN ]] || { echo "sweep.sh: no dpsgd binary (build it, or give its path)" >&2; exit 2; }
BIN=$(realpath "$BIN")
HOOKS=$(dirname "$BIN")/dpsgd-testhooks
PY=/usr/bin/python3
DATA=/usr/share/datasets/fashion-mnist
JOBS=${SWEEP_JOBS:-2}
KINDS=${SWEEP_KINDS:-.*}
export OMP_NUM_THREADS=1
W=$(mktemp -d "${TMPDIR:-/tmp}/dpsgd-sweep.XXXXXX") || exit 1
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    chmod -R u+rwX "$W" 2>/dev/null
    if [[ -n ${SWEEP_KEEP:-} ]]; then echo "sweep: work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
T0=$EPOCHREALTIME
echo "sweep: $BIN, work directory $W, $(date -u '+%Y-%m-%d %H:%M UTC')"
[[ $(id -u) -eq 0 ]] && IS_ROOT=1 || IS_ROOT=0
# a sanitizer build (-DDP_SANITIZE=ON): its reports are looked for in every case's stderr
grep -q __asan_init "$BIN" 2>/dev/null && SANITIZED=1 || SANITIZED=0
[[ $SANITIZED -eq 1 ]] && echo "sweep: $BIN is a sanitizer build (AddressSanitizer, UBSan, LeakSanitizer)"

# ---------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------

# The generator: phase "base" writes the valid starting files, phase "cases" the mutated
# files and the case list ($W/cases.tsv: id, kind, expectation, reference, needles,
# description; the arguments of case ID in $W/cases/ID.args, NUL-separated, @O@ standing for
# the case's output directory). Expectations: bad (must be refused), either (a legal edge
# value: exit 0 is fine), same:REF (the base case's data encoded otherwise: exit 0 must give
# the weights of base run REF), check:KIND:ARGS (exit 0 only if the validator finds it valid).
write_generator() {
cat >"$W/gen.py" <<'PY'
import gzip, json, os, random, struct, sys, shutil
import numpy as np

W = sys.argv[2]
PHASE = sys.argv[1]
IS_ROOT = sys.argv[3] == "1" if len(sys.argv) > 3 else False
IN = os.path.join(W, "in")
DATA = "/usr/share/datasets/fashion-mnist"
rng = random.Random(20261207)
nrng = np.random.default_rng(20261207)

def wr(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path

def rd(path):
    with open(path, "rb") as f:
        return f.read()

def npy_bytes(arr, version=(1, 0), descr=None, fortran=None, shape=None, header=None, order="C"):
    """a .npy file; descr/fortran/shape override the header fields (the data stays arr's)."""
    d = descr if descr is not None else np.lib.format.dtype_to_descr(arr.dtype)
    fo = fortran if fortran is not None else False
    sh = shape if shape is not None else arr.shape
    if header is None:
        header = "{'descr': %r, 'fortran_order': %r, 'shape': %s, }" % (d, fo, repr(tuple(sh)) if isinstance(sh, (tuple, list)) else sh)
    hb = header.encode("latin1")
    lenbytes = 2 if version[0] == 1 else 4
    pad = (64 - (6 + 2 + lenbytes + len(hb) + 1) % 64) % 64
    hb = hb + b" " * pad + b"\n"
    fmt = "<H" if lenbytes == 2 else "<I"
    body = arr.tobytes(order=order)
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(hb)) + hb + body

def npy_hlen(b):
    if b[6] == 1:
        return 10 + struct.unpack("<H", b[8:10])[0]
    return 12 + struct.unpack("<I", b[8:12])[0]

def st_bytes(tensors, meta=None, header_obj=None, header_raw=None, data=None, hsize=None, dtype="F32"):
    """safetensors from {name: array} stored as dtype (F32 or F64); header_obj/header_raw/data/hsize override."""
    hdr = {}
    blobs = []
    off = 0
    for name, a in tensors.items():
        b = a.astype({"F32": "<f4", "F64": "<f8"}[dtype]).tobytes()
        hdr[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta is not None:
        hdr["__metadata__"] = meta
    if header_obj is not None:
        hdr = header_obj
    raw = header_raw if header_raw is not None else json.dumps(hdr, separators=(",", ":")).encode()
    body = data if data is not None else b"".join(blobs)
    return struct.pack("<Q", len(raw) if hsize is None else hsize) + raw + body

def st_parse(b):
    (n,) = struct.unpack("<Q", b[:8])
    hdr = json.loads(b[8:8 + n])
    return n, hdr, b[8 + n:]

def st_tensors(b):
    n, hdr, data = st_parse(b)
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, e = v["data_offsets"]
        out[k] = np.frombuffer(data[a:e], dtype="<f4").reshape(v["shape"]).copy()
    return out, hdr.get("__metadata__")

def st_rebuild(b, edit):
    """parses b, lets edit(hdr) change the header dict, re-serialises with the same data."""
    n, hdr, data = st_parse(b)
    edit(hdr)
    raw = json.dumps(hdr, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + data

def flip(b, pos, bit):
    b = bytearray(b)
    b[pos] ^= 1 << bit
    return bytes(b)

def put(b, pos, new):
    b = bytearray(b)
    b[pos:pos + len(new)] = new
    return bytes(b)

IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
IDX_SPEC = "conv2d(4,5,s3) tanh flatten linear(10)"
COMMON = ["--epochs", "1", "--noise-multiplier", "1", "--noise-seed", "1", "--seed", "1", "--threads", "1", "--quiet"]
OUTS = ["--out", "@O@/out.json", "--save-weights", "@O@/w.st"]

def idx_args(d, extra=()):
    return ["train", "--data", d, "--model", IDX_SPEC, "--batch-size", "100"] + COMMON + list(extra) + OUTS

def npy_args(x, y, extra=()):
    return (["train", "--data-x", x, "--data-labels", y, "--classes", "10", "--model", "linear(16) relu linear(10)",
             "--batch-size", "16"] + COMMON + list(extra) + OUTS)

def ids_args(x, y, extra=()):
    return (["train", "--data-ids", x, "--data-labels", y, "--classes", "4", "--model", "embedding(50,8) meanpool linear(4)",
             "--batch-size", "16"] + COMMON + list(extra) + OUTS)

ONNX_BASES = {
    "mlp": dict(x="mlp.x.npy", y="mlp.y.npy", flag="--data-x", test="--test-x", extra=["--classes", "10"]),
    "cnn_gn": dict(x="cnn_gn.x.npy", y="cnn_gn.y.npy", flag="--data-x", test="--test-x", extra=["--classes", "10"]),
    "transformer": dict(x="transformer.x.npy", y="transformer.y.npy", flag="--data-ids", test="--test-ids",
                        extra=["--classes", "4", "--vocab", "50"]),
}

def onnx_args(name, model, extra=()):
    b = ONNX_BASES[name]
    d = os.path.join(IN, "onnx", "base")
    x, y = os.path.join(d, b["x"]), os.path.join(d, b["y"])
    return (["train", "--model", model, b["flag"], x, "--data-labels", y, b["test"], x, "--test-labels", y]
            + b["extra"] + ["--batch-size", "4"] + COMMON + list(extra) + OUTS)

# ------------------------------------------------------------------ phase base
if PHASE == "base":
    ref_onnx = sys.argv[4]
    # IDX: the first 1000 training and 200 test images of Fashion-MNIST, uncompressed and gz
    d = os.path.join(IN, "idx", "base")
    dg = os.path.join(IN, "idx", "base_gz")
    os.makedirs(d, exist_ok=True)
    os.makedirs(dg, exist_ok=True)
    for f, n in [("train", 1000), ("t10k", 200)]:
        im = gzip.open(os.path.join(DATA, f + "-images-idx3-ubyte.gz")).read()
        lb = gzip.open(os.path.join(DATA, f + "-labels-idx1-ubyte.gz")).read()
        im = struct.pack(">IIII", 0x803, n, 28, 28) + im[16:16 + n * 784]
        lb = struct.pack(">II", 0x801, n) + lb[8:8 + n]
        for name, data in [(f + "-images-idx3-ubyte", im), (f + "-labels-idx1-ubyte", lb)]:
            wr(os.path.join(d, name), data)
            wr(os.path.join(dg, name + ".gz"), gzip.compress(data, mtime=0))
    # .npy features [64, 20] float32 and labels [64] int64 in 0..9
    x = nrng.standard_normal((64, 20)).astype("<f4")
    y = (np.arange(64) % 10).astype("<i8")
    nrng.shuffle(y)
    wr(os.path.join(IN, "npy", "base", "x.npy"), npy_bytes(x))
    wr(os.path.join(IN, "npy", "base", "y.npy"), npy_bytes(y))
    # token ids [64, 8] int64 in 0..49 (a few -1 padding) and labels [64] in 0..3
    ids = nrng.integers(0, 50, size=(64, 8)).astype("<i8")
    ids[::7, 6:] = -1
    lab = (np.arange(64) % 4).astype("<i8")
    wr(os.path.join(IN, "ids", "base", "ids.npy"), npy_bytes(ids))
    wr(os.path.join(IN, "ids", "base", "y.npy"), npy_bytes(lab))
    # ONNX exports and their data
    od = os.path.join(IN, "onnx", "base")
    os.makedirs(od, exist_ok=True)
    for name, b in ONNX_BASES.items():
        for f in [name + ".onnx", b["x"], b["y"]]:
            shutil.copy(os.path.join(ref_onnx, f), os.path.join(od, f))
    # the base runs (the shell runs them, they must succeed): name, args
    runs = [("idx", idx_args(d)), ("idx_gz", idx_args(dg)),
            ("npy", npy_args(os.path.join(IN, "npy", "base", "x.npy"), os.path.join(IN, "npy", "base", "y.npy"))),
            ("ids", ids_args(os.path.join(IN, "ids", "base", "ids.npy"), os.path.join(IN, "ids", "base", "y.npy"))),
            ("ck", idx_args(d, ["--checkpoint-dir", os.path.join(IN, "ck", "base")]))]
    for name in ONNX_BASES:
        runs.append(("onnx_" + name, onnx_args(name, os.path.join(od, name + ".onnx"))))
    os.makedirs(os.path.join(W, "base"), exist_ok=True)
    os.makedirs(os.path.join(IN, "ck"), exist_ok=True)
    for name, args in runs:
        with open(os.path.join(W, "base", name + ".args"), "wb") as f:
            f.write(b"".join(a.encode() + b"\0" for a in args))
    sys.exit(0)

# ------------------------------------------------------------------ phase cases
CASES = []
os.makedirs(os.path.join(W, "cases"), exist_ok=True)

def case(kind, desc, args, expect="bad", needles=()):
    cid = "%04d" % (len(CASES) + 1)
    with open(os.path.join(W, "cases", cid + ".args"), "wb") as f:
        f.write(b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in args))
    for s in (desc, *needles, expect):
        assert "\t" not in s and "\n" not in s and "\x1f" not in s, desc
    CASES.append((cid, kind, expect, "\x1f".join(needles), desc))

def xflags(extra):
    return tuple(a for a in extra if a.startswith("--"))

def newdir(*parts):
    d = os.path.join(IN, *parts)
    os.makedirs(d, exist_ok=True)
    return d

SKIPPED = []

def special_paths(where, name):
    """(description, path) pairs of paths that are no regular readable file with NAME."""
    d = newdir(*where)
    out = []
    p = os.path.join(d, "empty", name)
    wr(p, b"")
    out.append(("empty file", p))
    p = os.path.join(d, "isdir", name)
    os.makedirs(p, exist_ok=True)
    out.append(("a directory", p))
    out.append(("missing file", os.path.join(d, "missing", name)))
    p = os.path.join(d, "zero", name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.symlink("/dev/zero", p)
    out.append(("/dev/zero (endless zeros)", p))
    p = os.path.join(d, "null", name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.symlink("/dev/null", p)
    out.append(("/dev/null", p))
    p = os.path.join(d, "loop", name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.symlink(p, p)
    out.append(("a symlink to itself", p))
    p = os.path.join(d, "text", name)
    wr(p, b"this is not the file you are looking for\n" * 3)
    out.append(("a text file", p))
    if IS_ROOT:
        SKIPPED.append("unreadable file (chmod 000) for " + "/".join(where) + ": running as root, permissions do not apply")
    else:
        p = os.path.join(d, "noperm", name)
        wr(p, b"\0" * 64)
        os.chmod(p, 0)
        out.append(("unreadable file (chmod 000)", p))
    return out

# ---------------- IDX
IDXB = os.path.join(IN, "idx", "base")
IDXG = os.path.join(IN, "idx", "base_gz")
idx_n = [0]

def idx_case(desc, files, expect=None, gz=False, extra=(), needles=None):
    """a data directory with FILES (name -> bytes, or ('link', target), or ('dir',), or None
    for missing) and the base's other files (symlinked)."""
    idx_n[0] += 1
    d = newdir("idx", "m%03d" % idx_n[0])
    base = IDXG if gz else IDXB
    for f in IDX_FILES:
        name = f + (".gz" if gz else "")
        if name in files:
            v = files[name]
            p = os.path.join(d, name)
            if v is None:
                continue
            if isinstance(v, tuple) and v[0] == "link":
                os.symlink(v[1], p)
            elif isinstance(v, tuple) and v[0] == "dir":
                os.makedirs(p)
            else:
                wr(p, v)
        else:
            os.symlink(os.path.join(base, name), os.path.join(d, name))
    mutated = list(files)[0] if files else d
    if expect is None:
        expect = "check:idx:" + d
    case("idx", desc, idx_args(d, extra), expect, (needles or (mutated.replace(".gz", ""), "--data")) + xflags(extra))
    return d

TI, TL, EI, EL = IDX_FILES
ti = rd(os.path.join(IDXB, TI))
tl = rd(os.path.join(IDXB, TL))
ei = rd(os.path.join(IDXB, EI))
el = rd(os.path.join(IDXB, EL))
for off in [0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 17, 16 + 783, 16 + 784, 16 + 784 * 500 + 3, len(ti) - 1]:
    idx_case("train images truncated to %d bytes" % off, {TI: ti[:off]})
for pos in range(16):
    bit = rng.randrange(8)
    idx_case("train images: header byte %d bit %d flipped" % (pos, bit), {TI: flip(ti, pos, bit)})
for v in [0x00, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0xFF]:
    idx_case("train images: type byte 0x%02x" % v, {TI: put(ti, 2, bytes([v]))})
for v in [0, 1, 2, 4, 255]:
    idx_case("train images: %d dimensions in the magic" % v, {TI: put(ti, 3, bytes([v]))})
idx_case("train images: wrong magic (labels' 0x801)", {TI: put(ti, 0, struct.pack(">I", 0x801))})
idx_case("train images: wrong magic (gzip's bytes)", {TI: put(ti, 0, b"\x1f\x8b\x08\x00")})
for v in [0, 1, 999, 1001, 2**31, 2**31 - 1, 2**32 - 1]:
    idx_case("train images: count %d (file holds 1000)" % v, {TI: put(ti, 4, struct.pack(">I", v))})
for which, pos in [("rows", 8), ("cols", 12)]:
    for v in [0, 1, 27, 29, 2**16, 2**31 - 1, 2**32 - 1]:
        idx_case("train images: %s %d" % (which, v), {TI: put(ti, pos, struct.pack(">I", v))})
idx_case("train images: 4000 images of 14x14 (same bytes; test set 28x28)",
         {TI: put(ti, 4, struct.pack(">III", 4000, 14, 14))}, expect="bad")
idx_case("train images: one trailing byte", {TI: ti + b"\0"})
idx_case("train images: one extra image beyond the count", {TI: ti + ti[16:16 + 784]})
for off in [0, 4, 7, 8, 9, len(tl) - 1]:
    idx_case("train labels truncated to %d bytes" % off, {TL: tl[:off]})
for pos in range(8):
    bit = rng.randrange(8)
    idx_case("train labels: header byte %d bit %d flipped" % (pos, bit), {TL: flip(tl, pos, bit)})
for v in [0, 999, 1001, 2**31, 2**32 - 1]:
    idx_case("train labels: count %d (file holds 1000)" % v, {TL: put(tl, 4, struct.pack(">I", v))})
for v, where in [(10, 0), (255, 500), (10, 999)]:
    idx_case("train labels: label %d at index %d" % (v, where), {TL: put(tl, 8 + where, bytes([v]))}, expect="bad")
for v in [0x0D, 0x0C, 0x09]:
    idx_case("train labels: type byte 0x%02x" % v, {TL: put(tl, 2, bytes([v]))})
idx_case("train labels: images' magic 0x803", {TL: put(tl, 0, struct.pack(">I", 0x803))})
idx_case("train labels: one trailing byte", {TL: tl + b"\0"})
idx_case("train labels are the images file", {TL: ti}, expect="bad")
idx_case("train images are the labels file", {TI: tl}, expect="bad")
idx_case("test images 27x27 (train 28x28)",
         {EI: struct.pack(">IIII", 0x803, 200, 27, 27) + ei[16:16 + 200 * 27 * 27]}, expect="bad")
idx_case("test images truncated to 100 bytes", {EI: ei[:100]})
idx_case("test images count 201", {EI: put(ei, 4, struct.pack(">I", 201))})
idx_case("test labels: label 10", {EL: put(el, 8 + 7, bytes([10]))}, expect="bad")
idx_case("test labels count 199 (images 200)", {EL: struct.pack(">II", 0x801, 199) + el[8:8 + 199]}, expect="bad")
idx_case("test labels truncated to 8 bytes", {EL: el[:8]})
for f in IDX_FILES:
    idx_case(f + " missing", {f: None}, expect="bad")
    idx_case(f + " is a directory", {f: ("dir",)}, expect="bad")
    idx_case(f + " empty", {f: b""}, expect="bad")
idx_case("train images -> /dev/zero", {TI: ("link", "/dev/zero")}, expect="bad")
idx_case("train images -> /dev/null", {TI: ("link", "/dev/null")}, expect="bad")
idx_case("train labels -> /dev/urandom", {TL: ("link", "/dev/urandom")}, expect="bad")
idx_case("train images: a symlink to itself", {TI: ("link", TI)}, expect="bad")
if IS_ROOT:
    SKIPPED.append("unreadable IDX file (chmod 000): running as root, permissions do not apply")
else:
    d = idx_case("train images unreadable (chmod 000)", {TI: ti}, expect="bad")
    os.chmod(os.path.join(d, TI), 0)
# gzip-level damage
tig = rd(os.path.join(IDXG, TI + ".gz"))
for off in [0, 2, 10, 20, len(tig) // 2, len(tig) - 8, len(tig) - 4, len(tig) - 1]:
    idx_case("train images .gz truncated to %d bytes" % off, {TI + ".gz": tig[:off]}, gz=True)
for pos in [30, len(tig) // 3, len(tig) // 2, len(tig) - 6]:
    idx_case("train images .gz: byte %d flipped" % pos, {TI + ".gz": flip(tig, pos, 3)}, gz=True)
idx_case("train images .gz: gzip of an empty file", {TI + ".gz": gzip.compress(b"", mtime=0)}, gz=True, expect="bad")
idx_case("train images .gz: gzip of the header only", {TI + ".gz": gzip.compress(ti[:16], mtime=0)}, gz=True, expect="bad")
idx_case("train images .gz: garbage after the gzip member", {TI + ".gz": tig + b"garbage!"}, gz=True)
idx_case("train images .gz: a second gzip member (trailing data)", {TI + ".gz": tig + gzip.compress(b"xyz", mtime=0)}, gz=True)
idx_case("train images .gz: plain IDX bytes named .gz (same data)", {TI + ".gz": ti}, gz=True, expect="same:idx_gz")
# 16 GB of zeros declared: a gzip bomb of the header 0x803, 2^31-1 images of 28x28
bomb = gzip.compress(struct.pack(">IIII", 0x803, 2**31 - 1, 28, 28) + b"\0" * (8 << 20), mtime=0)
idx_case("train images .gz: header claims 2^31-1 images, 8 MiB of zeros follow", {TI + ".gz": bomb}, gz=True, expect="bad")
case("idx", "--data names a file (not a directory)", idx_args(os.path.join(IDXB, TI)), "bad", ("--data", TI))
case("idx", "--data names a missing directory", idx_args(os.path.join(IN, "idx", "nowhere")), "bad", ("--data", "nowhere"))
case("idx", "--data names an empty directory", idx_args(newdir("idx", "emptydir")), "bad", ("--data", "emptydir"))
case("idx", "--train-limit 1001 (more than the 1000 there)", idx_args(IDXB, ["--train-limit", "1001"]), "either", ("--train-limit",))
case("idx", "--test-limit 5000 (more than the 200 there)", idx_args(IDXB, ["--test-limit", "5000"]), "either", ("--test-limit",))

# ---------------- .npy features and labels
NB = os.path.join(IN, "npy", "base")
XB, YB = os.path.join(NB, "x.npy"), os.path.join(NB, "y.npy")
xb, yb = rd(XB), rd(YB)
X = np.load(XB)
Y = np.load(YB)
npy_n = [0]

def npy_case(desc, which, data, expect=None, extra=(), name=None):
    npy_n[0] += 1
    d = newdir("npy", "m%03d" % npy_n[0])
    p = wr(os.path.join(d, name or ("x.npy" if which == "x" else "y.npy")), data)
    x, y = (p, YB) if which == "x" else (XB, p)
    if expect is None:
        expect = "check:npy:%s:%s" % (x, y)
    flag = "--data-x" if which == "x" else "--data-labels"
    case("npy", desc, npy_args(x, y, extra), expect, (os.path.basename(p), flag) + xflags(extra))

xh = npy_hlen(xb)
for off in [0, 1, 5, 6, 7, 8, 9, 10, 20, xh - 1, xh, xh + 1, xh + 79, len(xb) - 1]:
    npy_case("features truncated to %d bytes" % off, "x", xb[:off])
for i in range(30):
    pos = rng.randrange(xh)
    bit = rng.randrange(8)
    npy_case("features: header byte %d bit %d flipped" % (pos, bit), "x", flip(xb, pos, bit))
npy_case("features: magic \\x93NUMPZ", "x", put(xb, 5, b"Z"), "bad")
npy_case("features: a zip (npz) file", "x", b"PK\x03\x04" + xb[4:], "bad")
for v in [(0, 0), (9, 0), (1, 9)]:
    npy_case("features: version %d.%d" % v, "x", put(xb, 6, bytes(v)))
npy_case("features: version 2.0 header (same data)", "x", npy_bytes(X, version=(2, 0)), "same:npy")
npy_case("features: version 3.0 header (same data)", "x", npy_bytes(X, version=(3, 0)), "same:npy")
for v in [0, 1, 65535, len(xb)]:
    npy_case("features: header length %d" % v, "x", put(xb, 8, struct.pack("<H", v)))
npy_case("features: float64 (same values)", "x", npy_bytes(X.astype("<f8")), "same:npy")
npy_case("features: big-endian float32 (same values)", "x", npy_bytes(X.astype(">f4")), "same:npy")
npy_case("features: Fortran order (same values)", "x", npy_bytes(X, fortran=True, order="F"), "same:npy")
npy_case("features: Fortran order flag on C-order data", "x", npy_bytes(X, fortran=True))
for descr in ["<f2", "<i4", "<i8", "|u1", "|b1", "<c8", "|O", "<U5", "|V4", "<f16", "garbage", ">i2"]:
    npy_case("features: descr %r over the float32 bytes" % descr, "x", npy_bytes(X, descr=descr))
for shape in [(63, 20), (65, 20), (64, 21), (64,), (1280,), (64, 20, 1, 1, 1), (0, 20), (64, 0), (-1, 20), (64, -20),
              (2**31, 20), (2**62, 20), (2**63, 20), (2**64 + 64, 20), (2**32 + 64, 20), (64, 2**62), (2**31, 2**31), ()]:
    npy_case("features: header shape %r (data 64x20)" % (shape,), "x", npy_bytes(X, shape=shape))
npy_case("features: [64,1,4,5] image layout (same values)", "x", npy_bytes(X.reshape(64, 1, 4, 5)), "same:npy")
npy_case("features: [64,4,5] layout (same values)", "x", npy_bytes(X.reshape(64, 4, 5)), "same:npy")
for hdr in ["{'descr': '<f4', 'fortran_order': False, 'shape': (64.0, 20), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': '64,20', }",
            "{'descr': '<f4', 'fortran_order': False, }",
            "{'fortran_order': False, 'shape': (64, 20), }",
            "{'descr': '<f4', 'shape': (64, 20), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (64, 20), 'extra': 1, }",
            "{'descr': '<f4', 'fortran_order': 'no', 'shape': (64, 20), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (64, 20), 'shape': (64, 20), }",
            "['<f4', False, (64, 20)]",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (64, 20)",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (64, 20, }",
            "{'descr': '<f4' 'fortran_order': False, 'shape': (64, 20), }",
            "{'descr': \"<f4\", 'fortran_order': False, 'shape': (64, 20), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0x40, 20), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 20), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "(" * 2000 + ")" * 2000 + "), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (64, 20), }\0\0\0\0"]:
    npy_case("features: header %s" % (hdr[:70] + ("..." if len(hdr) > 70 else "")).replace("\0", "\\0"), "x",
             npy_bytes(X, header=hdr))
for what, i, v in [("NaN", 0, np.nan), ("NaN", 64 * 20 - 1, np.nan), ("+Inf", 300, np.inf), ("-Inf", 777, -np.inf)]:
    Xm = X.copy().reshape(-1)
    Xm[i] = v
    npy_case("features: %s at element %d" % (what, i), "x", npy_bytes(Xm.reshape(64, 20)), "bad")
Xm = X.copy().reshape(-1)
Xm[5] = 3e38
npy_case("features: 3e38 at element 5 (finite)", "x", npy_bytes(Xm.reshape(64, 20)), "either")
npy_case("features: one trailing byte", "x", xb + b"\0")
npy_case("features: 80 trailing bytes (a 65th row not in the shape)", "x", xb + xb[-80:])
npy_case("features are the labels file", "x", yb, "bad")
for desc, p in special_paths(["npy", "sp_x"], "x.npy"):
    case("npy", "features: " + desc, npy_args(p, YB), "bad", ("x.npy", "--data-x"))
# labels
yh = npy_hlen(yb)
for off in [0, 8, yh - 1, yh, yh + 1, len(yb) - 1]:
    npy_case("labels truncated to %d bytes" % off, "y", yb[:off])
for i in range(12):
    pos = rng.randrange(yh)
    bit = rng.randrange(8)
    npy_case("labels: header byte %d bit %d flipped" % (pos, bit), "y", flip(yb, pos, bit))
npy_case("labels: int32 (same values)", "y", npy_bytes(Y.astype("<i4")), "same:npy")
npy_case("labels: uint8 (same values)", "y", npy_bytes(Y.astype("|u1")), "same:npy")
npy_case("labels: int16 (same values)", "y", npy_bytes(Y.astype("<i2")), "same:npy")
npy_case("labels: big-endian int64 (same values)", "y", npy_bytes(Y.astype(">i8")), "same:npy")
npy_case("labels: float32 holding integers", "y", npy_bytes(Y.astype("<f4")), "same:npy")
npy_case("labels: [64,1] (same values)", "y", npy_bytes(Y.reshape(64, 1)), "same:npy")
npy_case("labels: float32 with 0.5", "y", npy_bytes((Y + 0.5).astype("<f4")), "bad")
npy_case("labels: float64 with a NaN", "y", npy_bytes(np.where(np.arange(64) == 3, np.nan, Y).astype("<f8")), "bad")
for v, i in [(-1, 0), (10, 5), (2**31, 63), (-2**63, 1), (2**40, 2)]:
    Ym = Y.copy()
    Ym[i] = v
    npy_case("labels: %d at index %d (--classes 10)" % (v, i), "y", npy_bytes(Ym), "bad")
for n in [63, 65, 0, 1]:
    npy_case("labels: %d rows (features 64)" % n, "y", npy_bytes(np.resize(Y, n).astype("<i8")), "bad")
npy_case("labels: [64,2]", "y", npy_bytes(np.stack([Y, Y], 1)), "bad")
npy_case("labels: bool", "y", npy_bytes((Y > 4)), "either")
npy_case("labels are the features file", "y", xb, "bad")
npy_case("labels: header shape (2^62,)", "y", npy_bytes(Y, shape=(2**62,)))
npy_case("labels: header shape (-64,)", "y", npy_bytes(Y, shape=(-64,)))
for desc, p in special_paths(["npy", "sp_y"], "y.npy"):
    case("npy", "labels: " + desc, npy_args(XB, p), "bad", ("y.npy", "--data-labels"))
# test split files
d = newdir("npy", "test")
t21 = wr(os.path.join(d, "tx21.npy"), npy_bytes(nrng.standard_normal((16, 21)).astype("<f4")))
ty16 = wr(os.path.join(d, "ty16.npy"), npy_bytes((np.arange(16) % 10).astype("<i8")))
ty15 = wr(os.path.join(d, "ty15.npy"), npy_bytes((np.arange(15) % 10).astype("<i8")))
tx16 = wr(os.path.join(d, "tx16.npy"), npy_bytes(nrng.standard_normal((16, 20)).astype("<f4")))
txn = nrng.standard_normal((16, 20)).astype("<f4")
txn[3, 3] = np.nan
txn = wr(os.path.join(d, "txnan.npy"), npy_bytes(txn))
case("npy", "--test-x with 21 features (train 20)", npy_args(XB, YB, ["--test-x", t21, "--test-labels", ty16]), "bad", ("tx21.npy", "--test-x"))
case("npy", "--test-labels 15 rows, --test-x 16", npy_args(XB, YB, ["--test-x", tx16, "--test-labels", ty15]), "bad", ("ty15.npy", "tx16.npy", "--test-labels", "--test-x"))
case("npy", "--test-x holding a NaN", npy_args(XB, YB, ["--test-x", txn, "--test-labels", ty16]), "bad", ("txnan.npy", "--test-x"))
case("npy", "--test-x without --test-labels", npy_args(XB, YB, ["--test-x", tx16]), "bad", ("--test-x", "--test-labels"))
case("npy", "--test-labels without --test-x", npy_args(XB, YB, ["--test-labels", ty16]), "bad", ("--test-x", "--test-labels"))
case("npy", "--data-x without --data-labels", ["train", "--data-x", XB, "--classes", "10", "--model", "linear(10)"] + COMMON + OUTS, "bad", ("--data-labels", "--data-x"))
case("npy", "--data-labels without --data-x or --data-ids", ["train", "--data-labels", YB, "--classes", "10", "--model", "linear(10)"] + COMMON + OUTS, "bad", ("--data-labels",))
case("npy", "--data-x without --classes", [a for a in npy_args(XB, YB) if a not in ("--classes",)][:0] +
     ["train", "--data-x", XB, "--data-labels", YB, "--model", "linear(10)", "--batch-size", "16"] + COMMON + OUTS, "bad", ("--classes",))
case("npy", "--data-x with --classes 5 (labels up to 9)", npy_args(XB, YB, ["--classes", "5"]), "bad", ("--classes", "y.npy"))
case("npy", "--data-x and --data-ids together", npy_args(XB, YB, ["--data-ids", os.path.join(IN, "ids", "base", "ids.npy")]), "bad", ("--data-x", "--data-ids"))
case("npy", "--data-x with a model for 21 features (conv2d on a vector)", npy_args(XB, YB, ["--model", "conv2d(4,3) flatten linear(10)"]), "bad", ("--model", "conv2d", "layer 0"))

# ---------------- token ids
IB = os.path.join(IN, "ids", "base")
IDS, IY = os.path.join(IB, "ids.npy"), os.path.join(IB, "y.npy")
ib = rd(IDS)
I = np.load(IDS)
IL = np.load(IY)
ids_n = [0]

def ids_case(desc, which, data, expect=None, extra=()):
    ids_n[0] += 1
    d = newdir("ids", "m%03d" % ids_n[0])
    p = wr(os.path.join(d, "ids.npy" if which == "x" else "y.npy"), data)
    x, y = (p, IY) if which == "x" else (IDS, p)
    if expect is None:
        expect = "check:ids:%s:%s" % (x, y)
    flag = "--data-ids" if which == "x" else "--data-labels"
    case("ids", desc, ids_args(x, y, extra), expect, (os.path.basename(p), flag) + xflags(extra))

ih = npy_hlen(ib)
for off in [0, 9, ih - 1, ih, ih + 3, ih + 8 * 8, len(ib) - 1]:
    ids_case("ids truncated to %d bytes" % off, "x", ib[:off])
for i in range(12):
    pos = rng.randrange(ih)
    bit = rng.randrange(8)
    ids_case("ids: header byte %d bit %d flipped" % (pos, bit), "x", flip(ib, pos, bit))
for v, i in [(50, 0), (2**31, 9), (2**63 - 1, 100), (-2**63, 33), (1000, 511)]:
    Im = I.copy().reshape(-1)
    Im[i] = v
    ids_case("ids: %d at element %d (vocabulary 50)" % (v, i), "x", npy_bytes(Im.reshape(64, 8)),
             "either" if v < 0 else "bad")
Im = I.copy()
Im[5, :] = -1
ids_case("ids: row 5 all padding", "x", npy_bytes(Im), "either")
ids_case("ids: every row all padding", "x", npy_bytes(np.full((64, 8), -1, "<i8")), "either")
ids_case("ids: int32 (same values)", "x", npy_bytes(I.astype("<i4")), "same:ids")
ids_case("ids: float32 holding integers", "x", npy_bytes(I.astype("<f4")), "same:ids")
ids_case("ids: float32 with 1.5", "x", npy_bytes((I + 0.5).astype("<f4")), "bad")
ids_case("ids: uint16", "x", npy_bytes(np.where(I < 0, 0, I).astype("<u2")), "either")
ids_case("ids: 1-D [512]", "x", npy_bytes(I.reshape(-1)), "bad")
ids_case("ids: 3-D [64,8,1]", "x", npy_bytes(I.reshape(64, 8, 1)), "either")
ids_case("ids: [64,0]", "x", npy_bytes(np.zeros((64, 0), "<i8")), "bad")
ids_case("ids: header shape (64, 2^62)", "x", npy_bytes(I, shape=(64, 2**62)))
ids_case("ids: header shape (2^33+64, 8)", "x", npy_bytes(I, shape=(2**33 + 64, 8)))
ids_case("ids: 63 rows (labels 64)", "x", npy_bytes(I[:63]), "bad")
ids_case("ids: --seq-len 7 (data 8)", "x", ib, "bad", ["--seq-len", "7"])
ids_case("ids: --vocab 49 (the model's embedding has 50)", "x", ib, "bad", ["--vocab", "49"])
ids_case("ids: --pad-id 50 (outside the vocabulary)", "x", ib, "either", ["--pad-id", "50"])
ids_case("ids: --pad-id -5", "x", ib, "either", ["--pad-id", "-5"])
for v in [4, -1, 2**40]:
    Lm = IL.copy()
    Lm[7] = v
    ids_case("labels: %d at index 7 (--classes 4)" % v, "y", npy_bytes(Lm), "bad")
ids_case("labels: 65 rows (ids 64)", "y", npy_bytes(np.resize(IL, 65).astype("<i8")), "bad")
ids_case("labels truncated", "y", rd(IY)[:100])
for desc, p in special_paths(["ids", "sp"], "ids.npy"):
    case("ids", "ids: " + desc, ids_args(p, IY), "bad", ("ids.npy", "--data-ids"))
d = newdir("ids", "test")
t9 = wr(os.path.join(d, "tid9.npy"), npy_bytes(nrng.integers(0, 50, (16, 9)).astype("<i8")))
ty = wr(os.path.join(d, "ty.npy"), npy_bytes((np.arange(16) % 4).astype("<i8")))
t99 = wr(os.path.join(d, "tid99.npy"), npy_bytes(np.full((16, 8), 99, "<i8")))
case("ids", "--test-ids with 9 tokens (train 8)", ids_args(IDS, IY, ["--test-ids", t9, "--test-labels", ty]), "bad", ("tid9.npy", "--test-ids"))
case("ids", "--test-ids holding id 99 (vocabulary 50)", ids_args(IDS, IY, ["--test-ids", t99, "--test-labels", ty]), "bad", ("tid99.npy", "--test-ids"))
case("ids", "--data-ids with an image model", ids_args(IDS, IY, ["--model", "conv2d(4,3) flatten linear(4)"]), "bad", ("--model", "--data-ids", "conv2d"))
case("ids", "--data-ids with --model transformer without --vocab", ids_args(IDS, IY, ["--model", "transformer", "--layers", "1", "--width", "8", "--heads", "2"]), "bad", ("--vocab",))

# ---------------- safetensors (--init)
WB = rd(os.path.join(W, "base", "idx.w.st"))
WT, WMETA = st_tensors(WB)
wn, whdr, wdata = st_parse(WB)
st_n = [0]
INIT_CHECK = os.path.join(W, "base", "idx.w.st")

def st_case(desc, data, expect=None, extra=(), name="w.safetensors"):
    st_n[0] += 1
    d = newdir("st", "m%03d" % st_n[0])
    p = wr(os.path.join(d, name), data)
    if expect is None:
        expect = "check:st:%s:%s" % (p, INIT_CHECK)
    case("safetensors", desc, idx_args(IDXB, ["--init", p] + list(extra)), expect, (name, "--init") + xflags(extra))

L = len(WB)
for off in [0, 1, 7, 8, 9, 8 + wn // 2, 8 + wn - 1, 8 + wn, 8 + wn + 1, 8 + wn + len(wdata) // 2, L - 1]:
    st_case("truncated to %d bytes" % off, WB[:off])
for v in [0, 1, 2, wn - 1, wn + 1, L, 2**31, 2**62, 2**63, 2**64 - 1]:
    st_case("header size %d (is %d)" % (v, wn), put(WB, 0, struct.pack("<Q", v)))
for i in range(40):
    pos = 8 + rng.randrange(wn)
    bit = rng.randrange(8)
    st_case("header byte %d bit %d flipped" % (pos, bit), flip(WB, pos, bit))
names = [k for k in whdr if k != "__metadata__"]
first, last = names[0], names[-1]

def hdr_case(desc, edit, expect="bad"):
    def f(h):
        edit(h)
    st_case(desc, st_rebuild(WB, f), expect)

hdr_case("tensor %s missing" % last, lambda h: h.pop(last))
hdr_case("tensor %s renamed to %s.x" % (first, first), lambda h: h.__setitem__(first + ".x", h.pop(first)))
hdr_case("an extra tensor (sharing %s's bytes)" % first, lambda h: h.__setitem__("extra", dict(h[first])))
for dt in ["F16", "BF16", "F64", "I32", "I64", "U8", "BOOL", "f32", "F32 ", "XYZ", ""]:
    hdr_case("%s dtype %r" % (first, dt), lambda h, dt=dt: h[first].__setitem__("dtype", dt))
shape0 = whdr[first]["shape"]
for sh in [shape0 + [1], [1] + shape0, shape0[:-1], [-shape0[0]] + shape0[1:], [2**31] + shape0[1:], [2**62] + shape0[1:],
           [2**64] + shape0[1:], [2**32 + shape0[0]] + shape0[1:], [0] + shape0[1:], [1] * 9, [], [4.5], ["4"], [shape0[0] * 2] + shape0[1:]]:
    hdr_case("%s shape %s" % (first, json.dumps(sh)), lambda h, sh=sh: h[first].__setitem__("shape", sh))
a0, e0 = whdr[first]["data_offsets"]
for offs in [[e0, a0], [a0, e0 + 4], [a0, len(wdata) + 4], [a0 + 4, e0 + 4], [-4, e0 - 4], [a0, e0, e0], [a0], [float(a0), float(e0)],
             [a0, 2**64], [a0, 2**63 + e0], "0-%d" % e0]:
    hdr_case("%s data_offsets %s" % (first, json.dumps(offs)), lambda h, o=offs: h[first].__setitem__("data_offsets", o))
hdr_case("%s without dtype" % first, lambda h: h[first].pop("dtype"))
hdr_case("%s without shape" % first, lambda h: h[first].pop("shape"))
hdr_case("%s without data_offsets" % first, lambda h: h[first].pop("data_offsets"))
hdr_case("%s with an unknown field" % first, lambda h: h[first].__setitem__("extra", 1))
hdr_case("%s is a string" % first, lambda h: h.__setitem__(first, "F32"))
hdr_case("__metadata__ with a number value", lambda h: h.__setitem__("__metadata__", {"format": 1}))
hdr_case("__metadata__ is an array", lambda h: h.__setitem__("__metadata__", ["pt"]))
hdr_case("__metadata__ with string values (allowed)", lambda h: h.__setitem__("__metadata__", {"format": "pt"}), "same:idx_init")
raw = json.dumps(whdr, separators=(",", ":"))
for desc, r in [("header is a JSON array", b"[]"), ("header is {}", b"{}"), ("header is empty", b""),
                ("header with a duplicate key", raw.replace("{", '{"%s":%s,' % (first, json.dumps(whdr[first])), 1).encode()),
                ("header padded with spaces (allowed by the format)", (raw + "    ").encode()),
                ("header followed by a NUL", (raw + "\0").encode()),
                ("header with invalid UTF-8", raw.replace(first, first + "\udcff", 1).encode("utf-8", "surrogateescape")),
                ("header nested 100000 deep", ("[" * 100000 + "]" * 100000).encode()),
                ("header with a 1 MB key", ('{"' + "k" * (1 << 20) + '":1}').encode()),
                ("header with an escaped name (\\u0030 for 0)", raw.replace('"0.weight"', '"\\u0030.weight"', 1).encode())]:
    exp = "bad"
    if "padded" in desc:
        exp = "same:idx_init"
    elif "escaped" in desc:
        exp = "either"
    st_case(desc, st_bytes({}, header_raw=r, data=wdata), exp)
for what, name, v in [("NaN", first, np.nan), ("+Inf", last, np.inf), ("-Inf", names[len(names) // 2], -np.inf)]:
    T = {k: v2.copy() for k, v2 in WT.items()}
    T[name].reshape(-1)[T[name].size // 2] = v
    st_case("%s in tensor %s" % (what, name), st_rebuild(st_bytes(T), lambda h: None), "bad")
T = {k: v2.copy() for k, v2 in WT.items()}
T[first].reshape(-1)[0] = 1e-42
st_case("a denormal in %s (finite)" % first, st_rebuild(st_bytes(T), lambda h: None), "either")
st_case("one trailing byte", WB + b"\0")
st_case("every tensor F64 with offsets [0,0] and no data", st_bytes({}, header_obj={k: {"dtype": "F64", "shape": list(v.shape), "data_offsets": [0, 0]} for k, v in WT.items()}, data=b""), None)
st_case("the tensors stored as F64 with exact values", st_bytes(WT, dtype="F64"), "either")
st_case("weights of another model (mlp)", rd(os.path.join(W, "base", "mlp.w.st")), "bad")
st_case("a checkpoint given as --init", rd(os.path.join(IN, "ck", "base", "checkpoint.safetensors")), "either")
st_case("an .npy file given as --init", xb, "bad")
st_case("an ONNX file given as --init", rd(os.path.join(IN, "onnx", "base", "mlp.onnx")), "bad")
for desc, p in special_paths(["st", "sp"], "w.safetensors"):
    case("safetensors", "--init " + desc, idx_args(IDXB, ["--init", p]), "bad", ("w.safetensors", "--init"))
st_case("--init with --resume of a checkpoint", WB, "either", ["--resume", os.path.join(IN, "ck", "base")])

# ---------------- checkpoints (--resume)
CKB = os.path.join(IN, "ck", "base", "checkpoint.safetensors")
cb = rd(CKB)
cn, chdr, cdata = st_parse(cb)
ck_n = [0]

def ck_case(desc, data, expect=None, extra=(), as_dir=False):
    ck_n[0] += 1
    d = newdir("ck", "m%03d" % ck_n[0])
    p = wr(os.path.join(d, "checkpoint.safetensors"), data)
    if expect is None:
        expect = "check:ck:%s:%s" % (p, CKB)
    case("checkpoint", desc, idx_args(IDXB, ["--resume", d if as_dir else p] + list(extra)), expect,
         ("checkpoint.safetensors", "--resume", d) + xflags(extra))

L = len(cb)
for off in [0, 4, 8, 9, 8 + cn // 4, 8 + cn // 2, 8 + cn - 1, 8 + cn, 8 + cn + 1, 8 + cn + len(cdata) // 2, L - 4, L - 1]:
    ck_case("truncated to %d bytes" % off, cb[:off], as_dir=off % 2 == 0)
for v in [0, cn - 1, cn + 1, L, 2**40, 2**63]:
    ck_case("header size %d (is %d)" % (v, cn), put(cb, 0, struct.pack("<Q", v)))
for i in range(40):
    pos = 8 + rng.randrange(cn)
    bit = rng.randrange(8)
    ck_case("header byte %d bit %d flipped" % (pos, bit), flip(cb, pos, bit))
tn = [k for k in chdr if k != "__metadata__"]
for name in tn:
    a, e = chdr[name]["data_offsets"]
    if e > a:
        pos = 8 + cn + a + rng.randrange(e - a)
        ck_case("data byte %d of tensor %s flipped" % (pos, name), flip(cb, pos, 0))
meta = chdr["__metadata__"]

def meta_case(desc, edit):
    def f(h):
        edit(h["__metadata__"])
    ck_case(desc + " (checksum not updated)", st_rebuild(cb, f), "bad")

for key in sorted(meta):
    if key == "checksum":
        continue
    v = meta[key]
    if key in ("step", "version", "epochs", "data_n"):
        for nv in ["-1", "99999999999999999999", "x"]:
            meta_case("metadata %s %s" % (key, nv), lambda m, k=key, nv=nv: m.__setitem__(k, nv))
    else:
        nv = v[:-1] + ("0" if v[-1:] != "0" else "1") if v else "x"
        meta_case("metadata %s: last character changed" % key, lambda m, k=key, nv=nv: m.__setitem__(k, nv))
meta_case("metadata checksum removed", lambda m: m.pop("checksum"))
meta_case("metadata checksum altered", lambda m: m.__setitem__("checksum", "0" * len(m["checksum"])))
meta_case("metadata: an unknown field", lambda m: m.__setitem__("zzz", "1"))
ck_case("the checkpoint's metadata keys sorted (same content, another order)",
        st_rebuild(cb, lambda h: h.__setitem__("__metadata__", dict(sorted(h["__metadata__"].items())))), "either")
ck_case("a weights file given as --resume", WB, "bad")
ck_case("an .npy file given as --resume", xb, "bad")
ck_case("one trailing byte", cb + b"\0")
d = newdir("ck", "emptydir")
case("checkpoint", "--resume an empty directory", idx_args(IDXB, ["--resume", d]), "bad", ("--resume", "emptydir"))
d = newdir("ck", "tmponly")
wr(os.path.join(d, "checkpoint.safetensors.tmpABCDEF"), cb[:1000])
case("checkpoint", "--resume a directory holding only a half-written temporary", idx_args(IDXB, ["--resume", d]), "bad", ("--resume", "tmponly"))
d = newdir("ck", "ckdir")
os.makedirs(os.path.join(d, "checkpoint.safetensors"))
case("checkpoint", "--resume DIR whose checkpoint.safetensors is a directory", idx_args(IDXB, ["--resume", d]), "bad", ("--resume", "checkpoint.safetensors", "ckdir"))
for desc, p in special_paths(["ck", "sp"], "checkpoint.safetensors"):
    case("checkpoint", "--resume " + desc, idx_args(IDXB, ["--resume", p]), "bad", ("checkpoint.safetensors", "--resume"))
# a valid checkpoint resumed with a different configuration
CKD = os.path.join(IN, "ck", "base")
for desc, extra, needles in [
        ("--model of another shape", ["--model", "conv2d(4,5,s3) relu flatten linear(10)"], ("--resume", "model")),
        ("--noise-multiplier 2", ["--noise-multiplier", "2"], ("--noise-multiplier", "--resume")),
        ("--batch-size 50", ["--batch-size", "50"], ("--batch-size", "--resume")),
        ("--max-grad-norm 0.5", ["--max-grad-norm", "0.5"], ("--max-grad-norm", "--resume")),
        ("--delta 1e-6", ["--delta", "1e-6"], ("--delta", "--resume")),
        ("--epochs 2 without --force", ["--epochs", "2"], ("--epochs", "--resume")),
        ("--lr 1 without --force", ["--lr", "1"], ("--lr", "--resume")),
        ("--optimizer adam with --force", ["--optimizer", "adam", "--force"], ("--optimizer", "--resume")),
        ("--no-dp", ["--no-dp"], ("--no-dp", "--resume", "--noise-multiplier")),
        ("--data of another size (the gz copy is the same data: allowed with --force only)", ["--data", IDXG], ("--data", "--resume")),
        ("--train-limit 500 (another n)", ["--train-limit", "500", "--force"], ("--resume", "n ", "--train-limit"))]:
    case("checkpoint", "a valid checkpoint resumed with " + desc, idx_args(IDXB, ["--resume", CKD] + extra), "bad", needles)
no_seed = [a for a in idx_args(IDXB, ["--resume", CKD])]
i = no_seed.index("--noise-seed")
del no_seed[i:i + 2]
case("checkpoint", "a valid checkpoint resumed without --noise-seed (the OS noise)", no_seed, "bad", ("--noise-seed", "--resume", "noise"))
case("checkpoint", "a valid checkpoint resumed with --force --epochs 2", idx_args(IDXB, ["--resume", CKD, "--force", "--epochs", "2"]), "either", ("--resume",))

# ---------------- ONNX models
import onnx
from onnx import numpy_helper, TensorProto, helper
OD = os.path.join(IN, "onnx", "base")
onnx_n = [0]

def onnx_case(base, desc, data, expect=None, extra=(), needles=()):
    onnx_n[0] += 1
    d = newdir("onnx", "m%03d" % onnx_n[0])
    p = wr(os.path.join(d, base + ".onnx"), data)
    if expect is None:
        expect = "check:onnx:%s:%s" % (p, os.path.join(OD, base + ".onnx"))
    case("onnx", "%s.onnx: %s" % (base, desc), onnx_args(base, p, extra), expect, (base + ".onnx", "--model") + xflags(extra) + tuple(needles))

for base in ONNX_BASES:
    ob = rd(os.path.join(OD, base + ".onnx"))
    for off in [0, 1, 2, 10, 50, len(ob) // 4, len(ob) // 2, len(ob) - 100, len(ob) - 10, len(ob) - 1]:
        onnx_case(base, "truncated to %d bytes" % off, ob[:off])
    for i in range(20):
        pos = rng.randrange(len(ob))
        bit = rng.randrange(8)
        onnx_case(base, "byte %d bit %d flipped" % (pos, bit), flip(ob, pos, bit))
    onnx_case(base, "one trailing zero byte", ob + b"\0")
    onnx_case(base, "trailing garbage", ob + b"\xff\xff\xff\xff\x0f")

def mod(base, desc, edit, expect="bad", extra=(), needles=()):
    m = onnx.load(os.path.join(OD, base + ".onnx"))
    edit(m)
    onnx_case(base, desc, m.SerializeToString(), expect, extra, needles)

def init(m, name):
    return [t for t in m.graph.initializer if t.name == name][0]

def node(m, op, k=0):
    return [n for n in m.graph.node if n.op_type == op][k]

def attr(n, name):
    return [a for a in n.attribute if a.name == name][0]

def set_init(m, name, arr):
    t = init(m, name)
    t.CopyFrom(numpy_helper.from_array(arr, name))

mlp0 = onnx.load(os.path.join(OD, "mlp.onnx"))
W0 = numpy_helper.to_array(init(mlp0, "0.weight"))
mod("mlp", "Gemm transB 5", lambda m: setattr(attr(node(m, "Gemm"), "transB"), "i", 5), "either")
mod("mlp", "Gemm alpha NaN", lambda m: setattr(attr(node(m, "Gemm"), "alpha"), "f", float("nan")))
mod("mlp", "Gemm alpha 2 (not what the weights mean unless applied)", lambda m: setattr(attr(node(m, "Gemm"), "alpha"), "f", 2.0), "either")
mod("mlp", "the Relu node removed (its output undefined)", lambda m: m.graph.node.remove(node(m, "Relu")))
mod("mlp", "a node reads an undefined name", lambda m: node(m, "Relu").input.__setitem__(0, "nowhere"))
mod("mlp", "a cycle (the first Gemm reads the logits)", lambda m: node(m, "Gemm").input.__setitem__(0, "logits"))
mod("mlp", "two nodes write one name", lambda m: node(m, "Relu").output.__setitem__(0, "/0/Gemm_output_0"))
mod("mlp", "no nodes", lambda m: m.graph.ClearField("node"))
mod("mlp", "op_type empty", lambda m: setattr(node(m, "Relu"), "op_type", ""))
mod("mlp", "Relu in domain ai.custom", lambda m: setattr(node(m, "Relu"), "domain", "ai.custom"))
mod("mlp", "Gemm with 1 input", lambda m: node(m, "Gemm").input.__delitem__(slice(1, 3)))
mod("mlp", "Gemm with 5 inputs", lambda m: node(m, "Gemm").input.extend(["0.bias", "0.bias"]))
mod("mlp", "Gemm with an unknown attribute", lambda m: node(m, "Gemm").attribute.append(helper.make_attribute("foo", 1)), "either")
for dims in [[32, 21], [32, 20, 1], [-32, 20], [2**31, 20], [2**62, 20], [2**62, 2**62], [0, 20]]:
    def e(m, dims=dims):
        t = init(m, "0.weight")
        del t.dims[:]
        t.dims.extend(dims)
    mod("mlp", "0.weight dims %s" % dims, e)
mod("mlp", "0.weight raw_data 4 bytes short", lambda m: setattr(init(m, "0.weight"), "raw_data", init(m, "0.weight").raw_data[:-4]))
mod("mlp", "0.weight raw_data empty", lambda m: setattr(init(m, "0.weight"), "raw_data", b""))
for dt in [TensorProto.DOUBLE, TensorProto.INT64, TensorProto.FLOAT16, TensorProto.STRING, TensorProto.UNDEFINED, 999]:
    mod("mlp", "0.weight data_type %d over the float bytes" % dt, lambda m, dt=dt: setattr(init(m, "0.weight"), "data_type", dt))
mod("mlp", "0.weight stored as DOUBLE (same values)", lambda m: set_init(m, "0.weight", W0.astype(np.float64)), "same:onnx_mlp")
mod("mlp", "0.weight stored as float_data, not raw_data (same values)",
    lambda m: init(m, "0.weight").CopyFrom(helper.make_tensor("0.weight", TensorProto.FLOAT, W0.shape, W0.reshape(-1).tolist())), "same:onnx_mlp")

def ext(m, loc):
    t = init(m, "0.weight")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    t.external_data.add(key="location", value=loc)

mod("mlp", "0.weight external data in /etc/passwd", lambda m: ext(m, "/etc/passwd"))
mod("mlp", "0.weight external data in ../../../etc/hostname", lambda m: ext(m, "../../../etc/hostname"))
mod("mlp", "0.weight external data in a missing file", lambda m: ext(m, "weights.bin"))
Wn = W0.copy()
Wn[3, 4] = np.nan
mod("mlp", "NaN in 0.weight", lambda m: set_init(m, "0.weight", Wn))
B2 = numpy_helper.to_array(init(mlp0, "2.bias")).copy()
B2[1] = np.inf
mod("mlp", "Inf in 2.bias", lambda m: set_init(m, "2.bias", B2))
def indim(m, v):
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = v
mod("mlp", "graph input [batch, 21] (data 20)", lambda m: indim(m, 21))
mod("mlp", "graph input [batch, 0]", lambda m: indim(m, 0))
mod("mlp", "graph input [batch, 2^62]", lambda m: indim(m, 2**62))
mod("mlp", "graph input of type INT64", lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", TensorProto.INT64))
mod("mlp", "graph input removed", lambda m: m.graph.ClearField("input"))
mod("mlp", "graph output removed", lambda m: m.graph.ClearField("output"))
mod("mlp", "a second graph output", lambda m: m.graph.output.append(helper.make_tensor_value_info("/1/Relu_output_0", TensorProto.FLOAT, None)), "either")
mod("mlp", "opset 1", lambda m: setattr(m.opset_import[0], "version", 1), "either")
mod("mlp", "opset 99", lambda m: setattr(m.opset_import[0], "version", 99), "either")
mod("mlp", "only the opset of domain com.foo", lambda m: setattr(m.opset_import[0], "domain", "com.foo"))
mod("mlp", "ir_version 0", lambda m: setattr(m, "ir_version", 0), "either")
mod("mlp", "ir_version 99", lambda m: setattr(m, "ir_version", 99), "either")
mod("mlp", "a duplicate initializer 0.weight", lambda m: m.graph.initializer.append(init(m, "0.weight")))
mod("mlp", "producer and doc strings changed (same model)", lambda m: (setattr(m, "producer_name", "x" * 1000), setattr(m, "doc_string", "\u00e9" * 100)), "same:onnx_mlp")
mod("mlp", "--classes 12 (graph outputs 10)", lambda m: None, "bad", ["--classes", "12"])
cnn0 = onnx.load(os.path.join(OD, "cnn_gn.onnx"))
for name, val in [("strides", [0, 0]), ("strides", [-1, -1]), ("pads", [-1, -1, -1, -1]), ("pads", [2**31, 0, 0, 0]),
                  ("kernel_shape", [5, 5]), ("kernel_shape", [0, 0]), ("dilations", [0, 0]), ("dilations", [2**40, 1])]:
    mod("cnn_gn", "Conv %s %s" % (name, val), lambda m, name=name, val=val: (attr(node(m, "Conv"), name).ClearField("ints"), attr(node(m, "Conv"), name).ints.extend(val)))
mod("cnn_gn", "Conv group 3 (1 input channel)", lambda m: setattr(attr(node(m, "Conv"), "group"), "i", 3))
mod("cnn_gn", "Conv group 0", lambda m: setattr(attr(node(m, "Conv"), "group"), "i", 0))
mod("cnn_gn", "MaxPool kernel_shape [0, 0]", lambda m: (attr(node(m, "MaxPool"), "kernel_shape").ClearField("ints"), attr(node(m, "MaxPool"), "kernel_shape").ints.extend([0, 0])))
mod("cnn_gn", "MaxPool kernel_shape [99, 99]", lambda m: (attr(node(m, "MaxPool"), "kernel_shape").ClearField("ints"), attr(node(m, "MaxPool"), "kernel_shape").ints.extend([99, 99])))
mod("cnn_gn", "InstanceNormalization epsilon -1", lambda m: setattr(attr(node(m, "InstanceNormalization"), "epsilon"), "f", -1.0))
mod("cnn_gn", "InstanceNormalization epsilon NaN", lambda m: setattr(attr(node(m, "InstanceNormalization"), "epsilon"), "f", float("nan")))
def reshape_const(m, vals):
    c = node(m, "Constant")
    attr(c, "value").t.CopyFrom(numpy_helper.from_array(np.array(vals, dtype=np.int64)))
mod("cnn_gn", "the GroupNorm Reshape to [0, -1, -1]", lambda m: reshape_const(m, [0, -1, -1]))
mod("cnn_gn", "the GroupNorm Reshape to [0, 3, -1] (3 groups of 8 channels)", lambda m: reshape_const(m, [0, 3, -1]))
mod("cnn_gn", "the GroupNorm Reshape to [2^62, -1]", lambda m: reshape_const(m, [2**62, -1]))
mod("cnn_gn", "a Constant of type STRING", lambda m: attr(node(m, "Constant"), "value").t.CopyFrom(helper.make_tensor("s", TensorProto.STRING, [1], [b"x"])))
def in_hw(m, h, w):
    d = m.graph.input[0].type.tensor_type.shape.dim
    d[2].dim_value = h
    d[3].dim_value = w
mod("cnn_gn", "graph input 1x13x12 (data 1x12x12)", lambda m: in_hw(m, 13, 12))
mod("cnn_gn", "0.weight dims [8,2,3,3] (1 input channel)", lambda m: (init(m, "0.weight").ClearField("dims"), init(m, "0.weight").dims.extend([8, 2, 3, 3])))
tr0 = onnx.load(os.path.join(OD, "transformer.onnx"))
mod("transformer", "tok.weight [49,16] (--vocab 50)", lambda m: set_init(m, "tok.weight", numpy_helper.to_array(init(m, "tok.weight"))[:49].copy()), needles=("--vocab",))
mod("transformer", "pos [1,11,16] (sequences of 12)", lambda m: set_init(m, "pos", numpy_helper.to_array(init(m, "pos"))[:, :11].copy()))
mod("transformer", "a Transpose perm [0, 0, 1]", lambda m: (attr(node(m, "Transpose"), "perm").ClearField("ints"), attr(node(m, "Transpose"), "perm").ints.extend([0, 0, 1])))
mod("transformer", "a Transpose perm [0, 1, 7]", lambda m: (attr(node(m, "Transpose"), "perm").ClearField("ints"), attr(node(m, "Transpose"), "perm").ints.extend([0, 1, 7])))
mod("transformer", "a Gather axis 5", lambda m: setattr(attr(node(m, "Gather", 1), "axis"), "i", 5))
mod("transformer", "a Cast of a shape value to STRING (and back: legal ONNX)", lambda m: setattr(attr(node(m, "Cast"), "to"), "i", TensorProto.STRING), "either")
mod("transformer", "--vocab 40 (the embedding holds 50)", lambda m: None, "bad", ["--vocab", "40"])
for base in ONNX_BASES:
    for desc, p in special_paths(["onnx", "sp_" + base], base + ".onnx"):
        case("onnx", "--model " + desc, onnx_args(base, p), "bad", (base + ".onnx", "--model"))
case("onnx", "--model names a .onnx that is an .npy file", onnx_args("mlp", os.path.join(OD, "mlp.x.npy").replace("mlp.x.npy", "mlp.x.npy")), "bad", ("--model", "mlp.x.npy"))
d = newdir("onnx", "npyasonnx")
p = wr(os.path.join(d, "model.onnx"), xb)
case("onnx", "--model FILE.onnx holding .npy bytes", onnx_args("mlp", p), "bad", ("--model", "model.onnx"))
case("onnx", "--model mlp.onnx on the transformer's token data", onnx_args("transformer", os.path.join(OD, "mlp.onnx")), "bad", ("--model", "mlp.onnx", "--data-ids"))
case("onnx", "--model cnn_gn.onnx on the mlp's 20 features", onnx_args("mlp", os.path.join(OD, "cnn_gn.onnx")), "bad", ("--model", "cnn_gn.onnx", "--data-x", "mlp.x.npy"))
case("onnx", "--save-model with a spec model", idx_args(IDXB, ["--save-model", "@O@/m.onnx"]), "bad", ("--save-model",))
case("onnx", "--save-model to a missing directory", onnx_args("mlp", os.path.join(OD, "mlp.onnx"), ["--save-model", "/nonexistent/m.onnx"]), "bad", ("--save-model",))
case("onnx", "--init weights of another model on mlp.onnx", onnx_args("mlp", os.path.join(OD, "mlp.onnx"), ["--init", os.path.join(W, "base", "idx.w.st")]), "bad", ("--init", "idx.w.st"))

# ---------------- model specs
specs = [
    ("", "bad"), (" ", "bad"), ("foo", "bad"), ("linear", "bad"), ("linear()", "bad"), ("linear(", "bad"), ("linear(10", "bad"),
    ("linear(10))", "bad"), ("linear(10,)", "bad"), ("linear(,10)", "bad"), ("linear(0)", "bad"), ("linear(-10)", "bad"),
    ("linear(abc)", "bad"), ("linear(1e1)", "bad"), ("linear(10.5)", "bad"), ("linear(2147483648)", "bad"),
    ("linear(4611686018427387904)", "bad"), ("linear(99999999999999999999)", "bad"), ("linear(10,nobias,extra)", "bad"),
    ("linear(10,bias)", "bad"), ("linear(7)", "bad"), ("linear(11)", "bad"), ("flatten", "bad"), ("tanh", "bad"),
    ("conv2d(4,5,s3) tanh", "bad"), ("conv2d(4)", "bad"), ("conv2d(0,5) flatten linear(10)", "bad"),
    ("conv2d(4,0) flatten linear(10)", "bad"), ("conv2d(4,29) flatten linear(10)", "bad"), ("conv2d(4,5,s0) flatten linear(10)", "bad"),
    ("conv2d(4,5,s-1) flatten linear(10)", "bad"), ("conv2d(4,5,p-1) flatten linear(10)", "bad"),
    ("conv2d(4,5,p2147483647) flatten linear(10)", "bad"), ("conv2d(4,5,g3) flatten linear(10)", "bad"),
    ("conv2d(4,5,g0) flatten linear(10)", "bad"), ("conv2d(4,5,d0) flatten linear(10)", "bad"), ("conv2d(4,5,d10) flatten linear(10)", "bad"),
    ("conv2d(4,5,x3) flatten linear(10)", "bad"), ("conv2d(4,5,s2,s2) flatten linear(10)", "either"), ("conv2d(65536,28) flatten linear(10)", "either"),
    ("conv2d(4,5) maxpool(0) flatten linear(10)", "bad"), ("conv2d(4,5) maxpool(30) flatten linear(10)", "bad"),
    ("conv2d(4,5) maxpool(2,0) flatten linear(10)", "bad"), ("conv2d(4,5) maxpool(3,1,p2) flatten linear(10)", "bad"),
    ("conv2d(4,5) avgpool(2,2,p1,exclude,x) flatten linear(10)", "bad"), ("dropout(1) linear(10)", "bad"), ("dropout(-0.1) linear(10)", "bad"),
    ("dropout(nan) linear(10)", "bad"), ("dropout(inf) linear(10)", "bad"), ("dropout() linear(10)", "bad"), ("groupnorm(3) linear(10)", "bad"),
    ("conv2d(4,5) groupnorm(3) flatten linear(10)", "bad"), ("conv2d(4,5) groupnorm(0) flatten linear(10)", "bad"),
    ("embedding(50,8) meanpool linear(10)", "bad"), ("linear(10) embedding(50,8)", "bad"), ("posembed linear(10)", "bad"),
    ("layernorm linear(10)", "either"), ("layernorm(-1) linear(10)", "bad"), ("layernorm(nan) linear(10)", "bad"), ("meanpool linear(10)", "bad"),
    ("linear(10)@", "bad"), ("linear(10)@a@b", "bad"), ("linear(10)@" + "n" * 10000, "either"), ("linear(10)@a b", "bad"),
    ("linear(16)@x linear(10)@x", "bad"), ("linear(10) linear(10)", "either"), ("LINEAR(10)", "either"), ("linear (10)", "bad"),
    ("linear(10)\tlinear(10)", "either"), ("linear(\u00e9)", "bad"), ("linear(10)\u00a0", "bad"),
    ("flatten " * 15000 + "linear(10)", "either"), ("tanh " * 2000 + "linear(10)", "either"), ("linear(10)" * 3, "bad"),
    ("conv2d(4,5,s3)tanh flatten linear(10)", "bad"), ("scale bias sigmoid globalavgpool linear(10)", "either"),
    ("globalavgpool globalavgpool linear(10)", "either"),
]
for s, exp in specs:
    shown = s if len(s) < 60 else s[:40] + "... (%d chars)" % len(s)
    case("spec", "--model %r" % shown, idx_args(IDXB, ["--model", s]), exp, ("--model", "model spec", "layer"))
case("spec", "--freeze 1 (tanh: no parameters)", idx_args(IDXB, ["--freeze", "1"]), "bad", ("--freeze",))
case("spec", "--freeze 99", idx_args(IDXB, ["--freeze", "99"]), "bad", ("--freeze", "99"))
case("spec", "--freeze every layer", idx_args(IDXB, ["--freeze", "0", "--freeze", "3"]), "bad", ("--freeze",))
case("spec", "--freeze nosuchname", idx_args(IDXB, ["--freeze", "nosuchname"]), "bad", ("--freeze", "nosuchname"))

# ---------------- flags
def flag_set(args, flag, value, missing=False):
    """args with FLAG's value replaced (or appended), or FLAG moved to the end without a value."""
    out = list(args)
    while flag in out:
        i = out.index(flag)
        nv = 2 if i + 1 < len(out) and not out[i + 1].startswith("--") or (i + 1 < len(out) and out[i + 1] == "") else 1
        del out[i:i + nv]
    if missing:
        return out + [flag]
    # before the outputs, so that the outputs stay in place
    return out + [flag, value]

SYN = ["train", "--data", "synthetic-text", "--synthetic-n", "200", "--synthetic-test-n", "50",
       "--model", "embedding(100,8) meanpool linear(2)", "--batch-size", "50"] + COMMON + OUTS
TRF = ["train", "--data-ids", IDS, "--data-labels", IY, "--classes", "4", "--model", "transformer", "--vocab", "50",
       "--layers", "1", "--width", "8", "--heads", "2", "--batch-size", "16"] + COMMON + OUTS
TRAIN_IDX = idx_args(IDXB)
TRAIN_NPY = npy_args(XB, YB)
TRAIN_IDS = ids_args(IDS, IY)
NORMS = ["norms", "--data", IDXB, "--model", IDX_SPEC, "--limit", "100", "--batch-size", "50", "--threads", "1", "--quiet",
         "--json", "@O@/n.json", "--per-sample-out", "@O@/n.npy"]
NORMS_NPY = ["norms", "--data-x", XB, "--data-labels", YB, "--classes", "10", "--model", "linear(10)", "--threads", "1", "--quiet",
             "--json", "@O@/n.json", "--per-sample-out", "@O@/n.npy"]
NORMS_IDS = ["norms", "--data-ids", IDS, "--data-labels", IY, "--classes", "4", "--model", "transformer", "--vocab", "50",
             "--layers", "1", "--width", "8", "--heads", "2", "--threads", "1", "--quiet", "--json", "@O@/n.json"]
NORMS_SYN = ["norms", "--data", "synthetic-text", "--synthetic-n", "100", "--synthetic-test-n", "20", "--model",
             "embedding(100,8) meanpool linear(2)", "--threads", "1", "--quiet", "--json", "@O@/n.json"]
EPS = ["epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1", "--steps", "100", "--delta", "1e-5"]
EPS_N = ["epsilon", "--dataset-size", "1000", "--batch-size", "10", "--noise-multiplier", "1", "--epochs", "2", "--delta", "1e-5"]
NOISE = ["noise", "--target-epsilon", "3", "--delta", "1e-5", "--sample-rate", "0.01", "--steps", "100"]
NOISE_N = ["noise", "--target-epsilon", "3", "--delta", "1e-5", "--dataset-size", "1000", "--batch-size", "10", "--epochs", "2"]
NODP = ["train", "--data", IDXB, "--model", IDX_SPEC, "--batch-size", "100", "--epochs", "1", "--no-dp", "--seed", "1",
        "--threads", "1", "--quiet"] + OUTS

HUGE = "4611686018427387904"  # 2^62
OVER = "99999999999999999999"  # > 2^64
def V_int(zero="bad", neg="bad", huge="bad", frac="bad"):
    return [("-1", neg), ("0", zero), ("abc", "bad"), ("", "bad"), ("3x", "bad"), ("1.5", frac), (OVER, "bad"), (HUGE, huge), (None, "bad")]
def V_float(zero="bad", neg="bad", big="either"):
    return [("-1", neg), ("0", zero), ("abc", "bad"), ("", "bad"), ("3x", "bad"), ("nan", "bad"), ("inf", "bad"), ("-inf", "bad"),
            ("1e999", "bad"), ("1e300", big), (None, "bad")]
def V_prob(zero="bad", one="bad"):
    return [("-0.5", "bad"), ("0", zero), ("1", one), ("1.5", "bad"), ("nan", "bad"), ("inf", "bad"), ("abc", "bad"), ("", "bad"), (None, "bad")]
V_enum = [("", "bad"), ("xyz", "bad"), ("a,b", "bad"), (None, "bad")]
V_in = [("", "bad"), ("/nonexistent/file", "bad"), ("/", "bad"), (None, "bad")]
V_out = [("", "bad"), ("/nonexistent/dir/f", "bad"), ("/", "bad"), ("/proc/self/status", "bad"), (None, "bad")]
V_bool = [("=1", "either"), ("=", "bad"), ("=no", "bad")]

TRAIN_FLAGS = [
    ("--recipe", V_enum + [("CNN", "bad")], TRAIN_IDX),
    ("--data", [("", "bad"), ("/nonexistent", "bad"), (None, "bad"), ("synthetic-textx", "bad")], TRAIN_IDX),
    ("--normalize", [("abc", "bad"), ("1", "bad"), ("1,2,3", "bad"), ("0.5,0", "bad"), ("0.5,-1", "bad"), ("nan,1", "bad"),
                     ("0.5,inf", "bad"), ("", "bad"), (",", "bad"), (None, "bad")], TRAIN_IDX),
    ("--train-limit", V_int(huge="either"), TRAIN_IDX),
    ("--test-limit", V_int(zero="either", huge="either"), TRAIN_IDX),
    ("--model", [("", "bad"), (None, "bad"), ("cnnx", "bad"), ("/nonexistent/m.onnx", "bad")], TRAIN_IDX),
    ("--freeze", [("", "bad"), ("-1", "bad"), ("99", "bad"), (HUGE, "bad"), ("zz", "bad"), (None, "bad")], TRAIN_IDX),
    ("--classes", V_int(), TRAIN_NPY),
    ("--classes", [("1", "bad"), ("9", "bad"), ("11", "bad")], TRAIN_IDX),
    ("--synthetic-n", V_int(), SYN),
    ("--synthetic-test-n", V_int(zero="either"), SYN),
    ("--synthetic-seed", V_int(zero="either", neg="either", huge="either"), SYN),
    ("--data-ids", V_in, TRAIN_IDS),
    ("--data-labels", V_in, TRAIN_IDS),
    ("--test-ids", V_in, TRAIN_IDS),
    ("--test-labels", V_in, TRAIN_IDS),
    ("--pad-id", V_int(zero="either", neg="either"), TRAIN_IDS),
    ("--seq-len", V_int(), TRAIN_IDS),
    ("--vocab", V_int(), TRF),
    ("--data-x", V_in, TRAIN_NPY),
    ("--test-x", V_in, TRAIN_NPY),
    ("--holdout", V_prob(zero="either"), TRAIN_NPY),
    ("--layers", V_int(zero="either"), TRF),
    ("--width", V_int() + [("7", "bad")], TRF),
    ("--heads", V_int() + [("3", "bad"), ("16", "bad")], TRF),
    ("--ffn", V_int(zero="either"), TRF),
    ("--pre-norm", V_bool, TRF),
    ("--activation", V_enum, TRF),
    ("--pool", V_enum, TRF),
    ("--dropout", V_prob(zero="either"), TRF),
    ("--train-last-blocks", V_int(zero="either") + [("2", "bad")], TRF),
    ("--no-dp", V_bool, NODP),
    ("--clipping", V_enum + [("VANILLA", "bad")], TRAIN_IDX),
    ("--max-grad-norm", V_float(big="either"), TRAIN_IDX),
    ("--mem-budget", [("-1", "bad"), ("0", "either"), ("abc", "bad"), ("1XB", "bad"), ("1", "bad"), (OVER + "GiB", "bad"),
                      ("16EiB", "either"), ("1.5GiB", "either"), ("", "bad"), (None, "bad")], TRAIN_IDX + ["--clipping", "auto"]),
    ("--epsilon", V_float(big="bad"), [a for a in TRAIN_IDX if a != "--noise-multiplier"][:0] + flag_set(TRAIN_IDX, "--noise-multiplier", None, missing=True)[:-1]),
    ("--delta", V_prob() + [("0.01", "bad")], TRAIN_IDX),
    ("--accountant", V_enum + [("gdp", "bad")], TRAIN_IDX),
    ("--noise-multiplier", V_float(zero="bad", big="either"), TRAIN_IDX),
    ("--epochs", V_int(), TRAIN_IDX),
    ("--batch-size", V_int() + [("1001", "bad")], TRAIN_IDX),
    ("--physical-batch", V_int(huge="either"), TRAIN_IDX),
    ("--optimizer", V_enum + [("SGD", "either")], TRAIN_IDX),
    ("--lr", V_float(zero="either", big="either"), TRAIN_IDX),
    ("--momentum", V_prob(zero="either"), TRAIN_IDX),
    ("--nesterov", V_bool, TRAIN_IDX),
    ("--weight-decay", V_float(zero="either", big="either"), TRAIN_IDX),
    ("--beta1", V_prob(zero="either"), TRAIN_IDX + ["--optimizer", "adam"]),
    ("--beta2", V_prob(zero="either"), TRAIN_IDX + ["--optimizer", "adam"]),
    ("--ema", V_prob(zero="either"), TRAIN_IDX),
    ("--seed", V_int(zero="either", neg="either", huge="either"), TRAIN_IDX),
    ("--threads", V_int(), TRAIN_IDX),
    ("--noise-seed", V_int(zero="either", neg="either", huge="either"), TRAIN_IDX),
    ("--report-nonprivate", V_bool, TRAIN_IDX),
    ("--checkpoint-dir", [(v, e) if v != "/" else ("/proc", "bad") for v, e in V_out], TRAIN_IDX),
    ("--checkpoint-every", V_int(zero="either", huge="either"), TRAIN_IDX + ["--checkpoint-dir", "@O@/ck"]),
    ("--resume", V_in, TRAIN_IDX),
    ("--force", V_bool, TRAIN_IDX),
    ("--init", V_in, TRAIN_IDX),
    ("--save-weights", V_out, TRAIN_IDX),
    ("--save-model", V_out, onnx_args("mlp", os.path.join(OD, "mlp.onnx"))),
    ("--out", V_out, TRAIN_IDX),
    ("--quiet", V_bool, TRAIN_IDX),
    ("--verbose", V_bool, TRAIN_IDX),
    ("--mpi-timeout", V_float(zero="either", big="either"), TRAIN_IDX),
]
NORMS_FLAGS = [
    ("--init", V_in, NORMS), ("--seed", V_int(zero="either", neg="either", huge="either"), NORMS),
    ("--data", [("", "bad"), ("/nonexistent", "bad"), (None, "bad")], NORMS),
    ("--normalize", [("abc", "bad"), ("0.5,0", "bad"), ("nan,1", "bad"), ("", "bad"), (None, "bad")], NORMS),
    ("--split", V_enum + [("validation", "bad")], NORMS), ("--limit", V_int(huge="either"), NORMS),
    ("--model", [("", "bad"), (None, "bad"), ("cnnx", "bad"), ("linear(0)", "bad")], NORMS),
    ("--freeze", [("", "bad"), ("99", "bad"), ("zz", "bad"), (None, "bad")], NORMS),
    ("--classes", V_int(), NORMS_NPY), ("--synthetic-n", V_int(), NORMS_SYN), ("--synthetic-test-n", V_int(zero="either"), NORMS_SYN),
    ("--synthetic-seed", V_int(zero="either", neg="either", huge="either"), NORMS_SYN),
    ("--data-ids", V_in, NORMS_IDS), ("--data-labels", V_in, NORMS_IDS), ("--test-ids", V_in, NORMS_IDS), ("--test-labels", V_in, NORMS_IDS),
    ("--pad-id", V_int(zero="either", neg="either"), NORMS_IDS), ("--seq-len", V_int(), NORMS_IDS), ("--vocab", V_int(), NORMS_IDS),
    ("--data-x", V_in, NORMS_NPY), ("--test-x", V_in, NORMS_NPY), ("--holdout", V_prob(zero="either"), NORMS_NPY),
    ("--layers", V_int(zero="either"), NORMS_IDS), ("--width", V_int(), NORMS_IDS), ("--heads", V_int() + [("3", "bad")], NORMS_IDS),
    ("--ffn", V_int(zero="either"), NORMS_IDS), ("--pre-norm", V_bool, NORMS_IDS), ("--activation", V_enum, NORMS_IDS),
    ("--pool", V_enum, NORMS_IDS), ("--dropout", V_prob(zero="either"), NORMS_IDS),
    ("--train-last-blocks", V_int(zero="either") + [("2", "bad")], NORMS_IDS),
    ("--clipping", V_enum, NORMS), ("--batch-size", V_int(huge="either"), NORMS), ("--threads", V_int(), NORMS),
    ("--clip-values", [("", "bad"), ("abc", "bad"), ("-1", "bad"), ("0", "bad"), ("1,,2", "bad"), ("nan", "bad"), ("inf", "bad"),
                       ("1,", "bad"), ("3,1", "either"), (None, "bad")], NORMS),
    ("--bins", V_int(huge="bad"), NORMS),
    ("--per-sample-out", V_out, NORMS), ("--json", V_out, NORMS), ("--quiet", V_bool, NORMS),
]
EPS_FLAGS = [
    ("--sample-rate", V_prob(one="either"), EPS), ("--dataset-size", V_int(), EPS_N), ("--batch-size", V_int() + [("1001", "bad")], EPS_N),
    ("--noise-multiplier", V_float(big="either"), EPS), ("--steps", V_int(), EPS), ("--epochs", V_float(big="bad"), EPS_N),
    ("--epochs", V_float(big="bad"), EPS + ["--epochs", "2"]), ("--delta", V_prob(), EPS),
    ("--accountant", V_enum + [("PRV", "bad")], EPS), ("--json", V_bool, EPS),
]
NOISE_FLAGS = [
    ("--target-epsilon", V_float(big="bad"), NOISE), ("--delta", V_prob() + [("0.9999", "bad")], NOISE),
    ("--sample-rate", V_prob(one="either"), NOISE), ("--dataset-size", V_int(), NOISE_N), ("--batch-size", V_int() + [("1001", "bad")], NOISE_N),
    ("--steps", V_int(), NOISE), ("--epochs", V_float(big="bad"), NOISE_N), ("--accountant", V_enum + [("gdp", "bad")], NOISE),
    ("--json", V_bool, NOISE),
]
# --epochs with --sample-rate: the base has --steps; drop it
EPS_FLAGS[6] = ("--epochs", V_float(big="bad"), [a for a in EPS if a not in ("--steps", "100")])

PATH_FLAGS = {"--data", "--data-x", "--data-labels", "--data-ids", "--test-x", "--test-ids", "--test-labels", "--init",
              "--resume", "--model", "--out", "--save-weights", "--save-model", "--checkpoint-dir", "--json", "--per-sample-out"}
for cmd, table in [("train", TRAIN_FLAGS), ("norms", NORMS_FLAGS), ("epsilon", EPS_FLAGS), ("noise", NOISE_FLAGS)]:
    for flag, values, base in table:
        for v, exp in values:
            if values is V_bool:
                out = flag_set(base, flag, None, missing=True)[:-1] + [flag + v]
                desc = "%s %s%s" % (cmd, flag, v)
            elif v is None:
                out = flag_set(base, flag, None, missing=True)
                desc = "%s %s without a value (last)" % (cmd, flag)
            else:
                out = flag_set(base, flag, v)
                desc = "%s %s %r" % (cmd, flag, v)
            if flag == "--epsilon" and "--noise-multiplier" in out:
                out = flag_set(out, "--noise-multiplier", None, missing=True)[:-1]
            # the flag, or its name with the value ("accountant 'xyz'"), or a path value
            needles = (flag,)
            if v is not None and values is not V_bool:
                needles += ("%s '%s'" % (flag[2:], v),)
                if flag in PATH_FLAGS and len(v) >= 3:  # the message names the path
                    needles += (v + ":", "'%s'" % v)
                elif flag in PATH_FLAGS and v == "/":
                    needles += (" /: ",)
            case("flag", desc, out, exp, needles)
# unknown flags and stray arguments, per command
for cmd, base in [("train", TRAIN_IDX), ("norms", NORMS), ("epsilon", EPS), ("noise", NOISE)]:
    for extra, needle in [(["--nonsense"], "--nonsense"), (["--nonsense", "1"], "--nonsense"), (["-x"], "-x"), (["stray"], "stray"),
                          (["-"], "-"), (["--"], "--"), (["--EPOCHS", "1"], "--EPOCHS"), (["--epoch", "1"], "--epoch"),
                          (["---quiet"], "---quiet"), (["--=1"], "--=1"), (["--json=1=2"], "--json"), (["--\u00e9"], "--\u00e9")]:
        # norms --json=1=2 names the file "1=2": legal
        case("flag", "%s with %s" % (cmd, " ".join(extra)), base + extra, "either" if cmd == "norms" and "=1=2" in extra[0] else "bad", (needle,))
    case("flag", "%s with a flag given twice" % cmd, base + [base[1], base[2]], "either", (base[1],))
case("flag", "bad command", ["trian", "--epochs", "1"], "bad", ("trian",))
case("flag", "no command, only a flag", ["--epochs", "1"], "bad", ("--epochs",))
case("flag", "empty command", [""], "bad", ("command",))
# contradictions and impossible requests
for desc, args, exp, needles in [
        ("--no-dp with --epsilon", NODP + ["--epsilon", "3"], "bad", ("--no-dp", "--epsilon")),
        ("--no-dp with --noise-multiplier", NODP + ["--noise-multiplier", "1"], "bad", ("--no-dp", "--noise-multiplier")),
        ("--no-dp with --noise-seed", NODP + ["--noise-seed", "1"], "bad", ("--no-dp", "--noise-seed")),
        ("--no-dp with --max-grad-norm", NODP + ["--max-grad-norm", "1"], "bad", ("--no-dp", "--max-grad-norm")),
        ("--no-dp with --report-nonprivate", NODP + ["--report-nonprivate"], "bad", ("--no-dp", "--report-nonprivate")),
        ("--no-dp with --clipping ghost", NODP + ["--clipping", "ghost"], "bad", ("--no-dp", "--clipping")),
        ("--epsilon with --noise-multiplier", TRAIN_IDX + ["--epsilon", "3"], "either", ("--epsilon", "--noise-multiplier")),
        ("--epsilon 1e9 (unreachable)", flag_set(TRAIN_IDX, "--noise-multiplier", None, True)[:-1] + ["--epsilon", "1e9"], "bad", ("--epsilon",)),
        ("--epsilon 1e-4 (unreachable)", flag_set(TRAIN_IDX, "--noise-multiplier", None, True)[:-1] + ["--epsilon", "1e-4"], "bad", ("--epsilon",)),
        ("--delta 0.5", TRAIN_IDX + ["--delta", "0.5"], "bad", ("--delta",)),
        ("--batch-size 5000 > n 1000", flag_set(TRAIN_IDX, "--batch-size", "5000"), "bad", ("--batch-size",)),
        ("--train-limit 50 with --batch-size 100", TRAIN_IDX + ["--train-limit", "50"], "bad", ("--batch-size", "--train-limit")),
        ("--physical-batch 500 > --batch-size 100", TRAIN_IDX + ["--physical-batch", "500"], "either", ("--physical-batch",)),
        ("--nesterov with --momentum 0", TRAIN_IDX + ["--nesterov", "--momentum", "0"], "bad", ("--nesterov",)),
        ("--nesterov with --optimizer adam", TRAIN_IDX + ["--nesterov", "--optimizer", "adam"], "either", ("--nesterov",)),
        ("--beta1 with --optimizer sgd", TRAIN_IDX + ["--beta1", "0.5"], "either", ("--beta1",)),
        ("--momentum with --optimizer adam", TRAIN_IDX + ["--optimizer", "adam", "--momentum", "0.5"], "either", ("--momentum",)),
        ("--out and --save-weights one file", flag_set(TRAIN_IDX, "--save-weights", "@O@/out.json"), "bad", ("--out", "--save-weights")),
        ("--out the checkpoint file", TRAIN_IDX + ["--checkpoint-dir", "@O@/ck", "--out", "@O@/ck/checkpoint.safetensors"], "bad", ("--out", "--checkpoint-dir")),
        ("--checkpoint-dir an existing file", TRAIN_IDX + ["--checkpoint-dir", os.path.join(IDXB, TI)], "bad", ("--checkpoint-dir",)),
        ("--checkpoint-dir holding another run's checkpoint, no --resume", TRAIN_IDX + ["--checkpoint-dir", os.path.join(IN, "ck", "base")], "bad", ("--checkpoint-dir", "--resume", "--force")),
        ("--checkpoint-every without --checkpoint-dir", TRAIN_IDX + ["--checkpoint-every", "2"], "either", ("--checkpoint-every",)),
        ("--model transformer on IDX images", TRAIN_IDX + ["--model", "transformer"], "bad", ("--model", "transformer", "--data")),
        ("--recipe transformer on IDX images", flag_set(TRAIN_IDX, "--model", None, True)[:-1] + ["--recipe", "transformer"], "bad", ("--recipe", "--model", "--data", "transformer")),
        ("--recipe scatternet with --model mlp", TRAIN_IDX + ["--recipe", "scatternet", "--model", "mlp"], "either", ("--recipe",)),
        ("--train-last-blocks with a spec model", TRAIN_IDX + ["--train-last-blocks", "1"], "bad", ("--train-last-blocks",)),
        ("--pre-norm with a spec model", TRAIN_IDX + ["--pre-norm"], "bad", ("--pre-norm",)),
        ("--layers with a spec model", TRAIN_IDX + ["--layers", "3"], "bad", ("--layers",)),
        ("--vocab with IDX data", TRAIN_IDX + ["--vocab", "30"], "bad", ("--vocab",)),
        ("--data-x with --data DIR", TRAIN_NPY + ["--data", IDXB], "bad", ("--data", "--data-x")),
        ("--holdout with --test-x", TRAIN_NPY + ["--holdout", "0.5", "--test-x", tx16, "--test-labels", ty16], "either", ("--holdout",)),
        ("--holdout 0.99 of 64 rows (no training rows left for batch 16)", TRAIN_NPY + ["--holdout", "0.99"], "bad", ("--holdout", "--batch-size")),
        ("--synthetic-n with IDX data", TRAIN_IDX + ["--synthetic-n", "100"], "bad", ("--synthetic-n",)),
        ("--mem-budget 1KiB (no plan fits)", TRAIN_IDX + ["--mem-budget", "1KiB"], "bad", ("--mem-budget",)),
        ("--threads 1000000", flag_set(TRAIN_IDX, "--threads", "1000000"), "bad", ("--threads",)),
        ("--resume with --no-dp of a private checkpoint", NODP + ["--resume", os.path.join(IN, "ck", "base")], "bad", ("--resume", "--no-dp")),
        ("norms --json and --per-sample-out one file", flag_set(NORMS, "--per-sample-out", "@O@/n.json"), "bad", ("--json", "--per-sample-out")),
        ("norms --split test with --limit 0", NORMS + ["--split", "test", "--limit", "0"], "bad", ("--limit",)),
        ("norms --data-x without --data-labels", ["norms", "--data-x", XB, "--classes", "10", "--model", "linear(10)"], "bad", ("--data-labels", "--data-x")),
        ("epsilon --sample-rate with --dataset-size", EPS + ["--dataset-size", "1000"], "bad", ("--sample-rate", "--dataset-size")),
        ("epsilon --steps with --epochs", EPS + ["--epochs", "2"], "bad", ("--steps", "--epochs")),
        ("epsilon --dataset-size without --batch-size", [a for a in EPS_N if a not in ("--batch-size", "10")], "bad", ("--batch-size", "--dataset-size")),
        ("epsilon --batch-size without --dataset-size", EPS + ["--batch-size", "10"], "bad", ("--batch-size", "--dataset-size")),
        ("epsilon without --delta", EPS[:-2], "bad", ("--delta",)),
        ("epsilon without --noise-multiplier", [a for a in EPS if a not in ("--noise-multiplier", "1")], "bad", ("--noise-multiplier",)),
        ("epsilon without --steps or --epochs", [a for a in EPS if a not in ("--steps", "100")], "bad", ("--steps", "--epochs")),
        ("epsilon --sample-rate 1e-300", flag_set(EPS, "--sample-rate", "1e-300"), "either", ("--sample-rate",)),
        ("epsilon --steps 2^40 (long accounting)", flag_set(EPS, "--steps", "1099511627776"), "either", ("--steps",)),
        ("epsilon --noise-multiplier 1e-6", flag_set(EPS, "--noise-multiplier", "1e-6"), "either", ("--noise-multiplier", "noise multiplier")),
        ("noise --target-epsilon 1e9 (unreachable)", flag_set(NOISE, "--target-epsilon", "1e9"), "bad", ("--target-epsilon", "epsilon")),
        ("noise --target-epsilon 1e-9 (unreachable)", flag_set(NOISE, "--target-epsilon", "1e-9"), "bad", ("--target-epsilon", "epsilon")),
        ("noise --accountant gdp", NOISE + ["--accountant", "gdp"], "bad", ("gdp", "--accountant")),
        ("noise --sample-rate with --dataset-size", NOISE + ["--dataset-size", "1000"], "bad", ("--sample-rate", "--dataset-size")),
        ("noise without --target-epsilon", NOISE[:1] + NOISE[3:], "bad", ("--target-epsilon",)),
        ("noise --steps 2^40", flag_set(NOISE, "--steps", "1099511627776"), "either", ("--steps",)),
]:
    case("flag", "contradiction: " + desc, args, exp, needles)

with open(os.path.join(W, "cases.tsv"), "w") as f:
    for c in CASES:
        f.write("\t".join(c) + "\n")
with open(os.path.join(W, "skipped.txt"), "w") as f:
    for s in SKIPPED:
        f.write(s + "\n")
print("generated %d cases" % len(CASES))
PY
}

# The validator: exit 0 when the mutated input is still valid, else 1 with the reason.
write_validator() {
cat >"$W/validate.py" <<'PY'
import gzip, json, math, os, struct, sys
import numpy as np

kind = sys.argv[1]
args = sys.argv[2:]

def fail(msg):
    print(msg)
    sys.exit(1)

def strict_npy(p):
    """numpy's reader, plus: no bytes after the data."""
    with open(p, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = np.lib.format._read_array_header(f, version)
        start = f.tell()
    n = int(np.prod(shape)) if shape else 1
    if os.path.getsize(p) != start + n * dtype.itemsize:
        fail("%s: %d bytes, header says %d" % (p, os.path.getsize(p), start + n * dtype.itemsize))
    a = np.load(p, allow_pickle=False)
    return a

def idx_file(p, magic_nd):
    raw = open(p, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except Exception as e:
            fail("%s: gzip: %s" % (p, e))
    if len(raw) < 4 + 4 * magic_nd:
        fail("%s: short" % p)
    if raw[0:2] != b"\0\0" or raw[2] != 8 or raw[3] != magic_nd:
        fail("%s: magic %s" % (p, raw[:4].hex()))
    dims = struct.unpack(">" + "I" * magic_nd, raw[4:4 + 4 * magic_nd])
    n = int(np.prod(dims))
    if len(raw) != 4 + 4 * magic_nd + n or n == 0:
        fail("%s: %d data bytes for dims %s" % (p, len(raw) - 4 - 4 * magic_nd, dims))
    return dims, np.frombuffer(raw[4 + 4 * magic_nd:], np.uint8)

try:
    if kind == "idx":
        d = args[0]
        def find(name):
            for s in ("", ".gz"):
                if os.path.exists(os.path.join(d, name + s)):
                    return os.path.join(d, name + s)
            fail("%s missing" % name)
        tri, _ = idx_file(find("train-images-idx3-ubyte"), 3)
        trl, l1 = idx_file(find("train-labels-idx1-ubyte"), 1)
        tei, _ = idx_file(find("t10k-images-idx3-ubyte"), 3)
        tel, l2 = idx_file(find("t10k-labels-idx1-ubyte"), 1)
        if tri[0] != trl[0] or tei[0] != tel[0]:
            fail("image and label counts differ")
        if tri[1:] != tei[1:]:
            fail("train and test image sizes differ")
        if l1.max() > 9 or l2.max() > 9:
            fail("a label above 9")
    elif kind in ("npy", "ids"):
        x = strict_npy(args[0])
        y = strict_npy(args[1])
        if y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            fail("shapes %s %s" % (x.shape, y.shape))
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= (10 if kind == "npy" else 4):
            fail("labels")
        if kind == "npy":
            if x.dtype.kind not in "fiu" or x.ndim not in (2, 3, 4) or x.size == 0 or not np.isfinite(x).all():
                fail("features: %s %s" % (x.dtype, x.shape))
            if int(np.prod(x.shape[1:])) != 20:
                fail("features: %d per row, the model reads 20" % int(np.prod(x.shape[1:])))
        else:
            if x.dtype.kind not in "iu" or x.ndim != 2 or x.shape[1] != 8 or x.max() >= 50:
                fail("ids: %s %s" % (x.dtype, x.shape))
    elif kind in ("st", "ck"):
        def parse(p):
            raw = open(p, "rb").read()
            (n,) = struct.unpack("<Q", raw[:8])
            if 8 + n > len(raw):
                fail("header past the end")
            pairs = []
            hdr = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=lambda kv: (pairs.append([k for k, _ in kv]), dict(kv))[1])
            for ks in pairs:
                if len(ks) != len(set(ks)):
                    fail("duplicate key")
            if not isinstance(hdr, dict):
                fail("header not an object")
            return hdr, raw[8 + n:]
        h, data = parse(args[0])
        hb, datab = parse(args[1])
        if kind == "ck":
            if h != hb or data != datab:
                fail("content differs from the valid checkpoint")
        else:
            names = sorted(k for k in h if k != "__metadata__")
            if names != sorted(k for k in hb if k != "__metadata__"):
                fail("tensor names differ")
            spans = []
            for k in names:
                t = h[k]
                if set(t) != {"dtype", "shape", "data_offsets"} or t["dtype"] != "F32" or t["shape"] != hb[k]["shape"]:
                    fail("tensor %s: %s" % (k, t))
                a, e = t["data_offsets"]
                if not (isinstance(a, int) and isinstance(e, int) and 0 <= a <= e <= len(data)) or e - a != 4 * int(np.prod(t["shape"])):
                    fail("tensor %s offsets" % k)
                if not np.isfinite(np.frombuffer(data[a:e], "<f4")).all():
                    fail("tensor %s not finite" % k)
                spans.append((a, e))
            spans.sort()
            pos = 0
            for a, e in spans:
                if a != pos:
                    fail("tensors do not tile the data")
                pos = e
            if pos != len(data):
                fail("trailing data")
            m = h.get("__metadata__")
            if m is not None and (not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values())):
                fail("metadata")
    elif kind == "onnx":
        import onnx
        from onnx import numpy_helper
        m = onnx.load(args[0])
        onnx.checker.check_model(m, full_check=True)
        for t in m.graph.initializer:
            a = numpy_helper.to_array(t)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                fail("initializer %s not finite" % t.name)
        b = onnx.load(args[1])
        def strip(m):
            m.ClearField("doc_string"); m.ClearField("producer_name"); m.ClearField("producer_version")
            m.graph.ClearField("doc_string"); m.graph.ClearField("name")
            for n in m.graph.node:
                n.ClearField("name"); n.ClearField("doc_string")
            for v in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
                for d in v.type.tensor_type.shape.dim:
                    if d.HasField("dim_param"):
                        d.dim_param = "N"
            for t in m.graph.initializer:
                if t.data_type == 1:
                    t.ClearField("raw_data"); t.ClearField("float_data")
            return m.SerializeToString(deterministic=True)
        if strip(m) != strip(b):
            fail("the graph differs from the valid one beyond weight values, names and doc strings")
    else:
        fail("unknown kind " + kind)
except SystemExit:
    raise
except Exception as e:
    fail("%s: %s" % (type(e).__name__, str(e).splitlines()[0][:200] if str(e) else ""))
print("valid")
PY
}

# run_case ID KIND EXPECT NEEDLES DESC: runs one case, appends its result to $RESULTS:
# ID, kind, class (handled | accepted | NOT), exit status, reason, description, command
run_case() {
    local id=$1 kind=$2 expect=$3 needles=$4 desc=$5
    local o=$W/o/$id err=$W/log/$id.err out=$W/log/$id.out rc class reason="" args=() n left
    mkdir -p "$o"
    mapfile -d '' -t args <"$W/cases/$id.args"
    args=("${args[@]//@O@/$o}")
    if [[ $SANITIZED -eq 1 ]]; then
        # ASan reserves terabytes of address space: its own limits instead of ulimit -v
        (cd "$o" && ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=4096:hard_rss_limit_mb=4096:detect_leaks=1 \
            UBSAN_OPTIONS=print_stacktrace=1 exec timeout -k 5 60 "$BIN" "${args[@]}" >"$out" 2>"$err" </dev/null)
    else
        (cd "$o" && ulimit -v 4194304 && exec timeout -k 5 60 "$BIN" "${args[@]}" >"$out" 2>"$err" </dev/null)
    fi
    rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        class=NOT reason="timeout (60 s)"
    elif [[ $rc -ge 128 ]]; then
        class=NOT reason="killed by signal $((rc - 128))"
    elif grep -qE 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:' "$err"; then
        class=NOT reason="sanitizer report"
    elif [[ $rc -eq 0 ]]; then
        case $expect in
            bad) class=NOT reason="exit 0 on a bad input" ;;
            either) class=accepted reason="a legal value" ;;
            same:*)
                if cmp -s "$o/w.st" "$W/base/${expect#same:}.w.st"; then
                    class=accepted reason="same data, same weights"
                else
                    class=NOT reason="read differently: weights differ from the base run's on the same data"
                fi ;;
            check:*)
                local v
                IFS=: read -r -a v <<<"${expect#check:}"
                if reason=$("$PY" "$W/validate.py" "${v[@]}" 2>&1); then
                    class=accepted reason="validator: still valid"
                else
                    class=NOT reason="exit 0 on an invalid input (validator: ${reason:0:150})"
                    local r
                    for r in "$W"/base/*.w.st; do
                        cmp -s "$o/w.st" "$r" && { reason+="; the data read was intact: weights equal the base run's"; break; }
                    done
                fi ;;
        esac
    elif [[ $rc -eq 1 || $rc -eq 2 ]]; then
        local named=0 nd
        IFS=$'\x1f' read -r -a nd <<<"$needles"
        for n in "${nd[@]}"; do
            [[ -n $n ]] && grep -qF -- "$n" "$err" && { named=1; break; }
        done
        # what the run left in its output directory (the documented checkpoint directory and
        # its lock are allowed)
        left=$(cd "$o" && find . -mindepth 1 ! -path ./ck ! -path ./ck/.lock -print | head -3 | tr '\n' ' ')
        if [[ ! -s $err ]]; then
            class=NOT reason="exit $rc with nothing on stderr"
        elif [[ -n $left ]]; then
            class=NOT reason="left behind: $left"
        elif [[ $named -eq 0 ]]; then
            class=NOT reason="the message names none of: ${needles//$'\x1f'/, }"
            if [[ $expect == check:* ]]; then
                local v
                IFS=: read -r -a v <<<"${expect#check:}"
                "$PY" "$W/validate.py" "${v[@]}" >/dev/null 2>&1 && class=handled reason="valid input, refused with a message"
            fi
        else
            class=handled
        fi
    else
        class=NOT reason="exit status $rc"
    fi
    local cmd
    cmd=$(printf '%q ' dpsgd "${args[@]}")
    [[ ${#cmd} -gt 600 ]] && cmd="${cmd:0:600}... (${#cmd} chars)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$kind" "$class" "$rc" "$reason" "$desc" "$cmd" \
        "$(head -c 300 "$err" | head -1 | tr '\t' ' ')" >>"$RESULTS"
    [[ $class == NOT ]] || rm -rf "$o"
}

sweep_inputs() {
    [[ -e $DATA/train-images-idx3-ubyte.gz ]] || { echo "sweep: no Fashion-MNIST in $DATA" >&2; return 1; }
    "$PY" -c 'import numpy, onnx' 2>/dev/null || { echo "sweep: $PY lacks numpy or onnx" >&2; return 1; }
    mkdir -p "$W/o" "$W/log"
    write_generator
    write_validator
    "$PY" "$W/gen.py" base "$W" "$IS_ROOT" "$ROOT/tests/reference/onnx" || return 1
    # the base runs: valid inputs, must succeed (their weights are the references of the
    # "same" cases and the --init file)
    local f name args=()
    for f in "$W"/base/*.args; do
        name=$(basename "$f" .args)
        mapfile -d '' -t args <"$f"
        mkdir -p "$W/o/base_$name"
        args=("${args[@]//@O@/$W/o/base_$name}")
        if ! "$BIN" "${args[@]}" >"$W/log/base_$name.out" 2>"$W/log/base_$name.err"; then
            echo "sweep: the valid base run $name failed: $(cat "$W/log/base_$name.err")" >&2
            return 1
        fi
        cp "$W/o/base_$name/w.st" "$W/base/$name.w.st"
    done
    cp "$W/base/idx.w.st" "$W/base/idx_init.w.st"
    # weights of the mlp on IDX (another model, for --init)
    "$BIN" train --data "$W/in/idx/base" --model mlp --epochs 1 --batch-size 100 --noise-multiplier 1 --noise-seed 1 \
        --threads 1 --quiet --save-weights "$W/base/mlp.w.st" >/dev/null 2>&1 || { echo "sweep: mlp base run failed" >&2; return 1; }
    "$PY" "$W/gen.py" cases "$W" "$IS_ROOT" || return 1
    # the "same" reference of a valid --init: training from the base weights
    mapfile -d '' -t args <"$W/base/idx.args"
    mkdir -p "$W/o/base_init"
    args=("${args[@]//@O@/$W/o/base_init}")
    "$BIN" "${args[@]}" --init "$W/base/idx.w.st" >/dev/null 2>&1 && cp "$W/o/base_init/w.st" "$W/base/idx_init.w.st"
    local ncases
    ncases=$(grep -cE "^[0-9]+	($KINDS)	" "$W/cases.tsv")
    echo "sweep: bad inputs: $ncases cases, $JOBS at a time"
    local j
    for ((j = 0; j < JOBS; j++)); do
        (
            RESULTS=$W/results.$j
            : >"$RESULTS"
            local i=0 id kind expect needles desc
            while IFS=$'\t' read -r id kind expect needles desc; do
                [[ $kind =~ ^($KINDS)$ ]] || continue
                ((i++ % JOBS == j)) || continue
                run_case "$id" "$kind" "$expect" "$needles" "$desc"
            done <"$W/cases.tsv"
        ) &
    done
    wait
    cat "$W"/results.* | sort >"$W/results.tsv"
    local tried handled accepted nh
    tried=$(wc -l <"$W/results.tsv")
    handled=$(awk -F'\t' '$3 == "handled"' "$W/results.tsv" | wc -l)
    accepted=$(awk -F'\t' '$3 == "accepted"' "$W/results.tsv" | wc -l)
    nh=$(awk -F'\t' '$3 == "NOT"' "$W/results.tsv" | wc -l)
    echo "sweep: bad inputs by kind (tried / handled / accepted as still valid / not handled):"
    awk -F'\t' '{ t[$2]++; c[$2, $3]++ } END { for (k in t) printf "  %-12s %4d %4d %4d %4d\n", k, t[k], c[k, "handled"], c[k, "accepted"], c[k, "NOT"] }' \
        "$W/results.tsv" | sort
    if [[ -s $W/skipped.txt ]]; then
        echo "sweep: not tried:"
        sed 's/^/  /' "$W/skipped.txt"
    fi
    echo "sweep: accepted as still valid:"
    awk -F'\t' '$3 == "accepted" { printf "  [%s] %s: %s\n", $2, $6, $5 }' "$W/results.tsv"
    if [[ $nh -gt 0 ]]; then
        echo "sweep: NOT HANDLED:"
        awk -F'\t' '$3 == "NOT" { printf "  [%s] %s\n    reason: %s\n    exit %s; stderr: %s\n    command: %s\n", $2, $6, $5, $4, $8, $7 }' "$W/results.tsv"
    fi
    INPUTS_LINE="sweep: bad inputs $tried tried, $handled handled, $accepted accepted as still valid, $nh not handled"
    INPUTS_BAD=$nh
}

# ---------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------
# cfg_args N: configuration N's arguments in CFG, its name in CFGNAME
NCONFIGS=4
cfg_args() {
    local idx=(--train-limit 3000 --test-limit 300 --epochs 3 --batch-size 256)
    case $1 in
        0) CFGNAME=cnn-sgd CFG=("${idx[@]}") ;;
        1) CFGNAME=mlp-adam CFG=("${idx[@]}" --model mlp --optimizer adam --lr 0.01 --physical-batch 100) ;;
        2) CFGNAME=dropout-adamw-ema
           CFG=("${idx[@]}" --model "conv2d(8,5,s2) relu dropout(0.3) flatten linear(10)" --optimizer adamw --lr 0.01 --ema 0.9) ;;
        3) CFGNAME=transformer
           CFG=(--data synthetic-text --synthetic-n 1500 --synthetic-test-n 200 --model transformer --layers 1 --width 16
                --heads 2 --dropout 0.1 --epochs 3 --batch-size 256) ;;
    esac
    CFG=(train "${CFG[@]}" --seed 11 --noise-seed 11 --noise-multiplier 1 --threads 1 --quiet)
}

epsilon_of() { grep -o '"epsilon": [^,]*' "$1" 2>/dev/null; }
step_of() {
    local f=$1/checkpoint.safetensors s
    [[ -f $f ]] || { echo 0; return; }
    s=$(head -c 8192 "$f" | grep -ao '"step":"[0-9]*"' | grep -o '[0-9]\+')
    echo "${s:-0}"
}

# start DIR SLOWMS [EVERY]: starts a run of CFG checkpointing into DIR every EVERY steps
# (default 1; 0: at epoch ends only), resuming if DIR holds a checkpoint, in the background
# with job control (SIGINT not ignored); each checkpoint write slowed by SLOWMS ms; pid in PID
start() {
    local dir=$1 ms=$2 every=(--checkpoint-every "${3:-1}") resume=()
    [[ ${3:-1} -eq 0 ]] && every=()
    [[ -f $dir/checkpoint.safetensors ]] && resume=(--resume "$dir")
    set -m
    DPSGD_TEST_SLOW_CHECKPOINT=$ms "$HOOKS" "${CFG[@]}" --checkpoint-dir "$dir" "${every[@]}" "${resume[@]}" >>"$dir.log" 2>&1 &
    PID=$!
    set +m
}
# wait_step DIR TARGET: until DIR's checkpoint reaches step TARGET or the run ends
wait_step() {
    local i
    for ((i = 0; i < 3000; i++)); do
        kill -0 "$PID" 2>/dev/null || return 1
        [[ $(step_of "$1") -ge $2 ]] && return 0
        sleep 0.01
    done
    return 1
}
wait_tmp() {
    local i
    for ((i = 0; i < 3000; i++)); do
        kill -0 "$PID" 2>/dev/null || return 1
        compgen -G "$1/checkpoint.safetensors.tmp*" >/dev/null && [[ $(step_of "$1") -ge $2 ]] && return 0
        sleep 0.005
    done
    return 1
}
# hit SIG: sends SIG to PID; returns 1 when the run had already ended (the fault missed)
hit() {
    if kill -"$1" "$PID" 2>/dev/null; then
        wait "$PID" 2>/dev/null
        LASTRC=$?
        return 0
    fi
    wait "$PID" 2>/dev/null
    return 1
}

# scenario TYPE DIR: one interruption of a run of CFG in DIR; returns 1 when it missed
scenario() {
    local type=$1 dir=$2 t
    case $type in
        kill-step)
            start "$dir" 0
            t=$((1 + RANDOM % (TOTAL - 2)))
            wait_step "$dir" "$t"
            sleep "0.$(printf '%03d' $((RANDOM % 100)))"
            NOTE="SIGKILL at step >= $t + $((RANDOM % 100)) ms"
            hit KILL ;;
        kill-time)
            start "$dir" 0
            t=$((RANDOM % (REFMS > 50 ? REFMS : 50)))
            sleep "$(printf '%d.%03d' $((t / 1000)) $((t % 1000)))"
            NOTE="SIGKILL ${t} ms after the start"
            hit KILL ;;
        kill-early)
            start "$dir" 0
            t=$((RANDOM % 60))
            sleep "0.$(printf '%03d' "$t")"
            NOTE="SIGKILL ${t} ms after the start (before the first checkpoint or during the load)"
            hit KILL ;;
        kill-write)
            start "$dir" 400
            t=$((1 + RANDOM % (TOTAL - 3)))
            wait_tmp "$dir" "$t" || { hit KILL; return 1; }
            NOTE="SIGKILL during a checkpoint write (temporary file pending, after step $(step_of "$dir"))"
            hit KILL ;;
        kill-last)
            start "$dir" 0
            wait_step "$dir" $((TOTAL - 1))
            NOTE="SIGKILL after the checkpoint of step $((TOTAL - 1)) (of $TOTAL)"
            hit KILL ;;
        kill-twice)
            start "$dir" 0
            t=$((1 + RANDOM % (TOTAL / 2)))
            wait_step "$dir" "$t"
            hit KILL || return 1
            start "$dir" 0
            t=$((t + 2 + RANDOM % (TOTAL / 3)))
            wait_step "$dir" "$t"
            NOTE="SIGKILL twice (the resumed run again, at step >= $t)"
            hit KILL ;;
        term)
            start "$dir" 30
            t=$((1 + RANDOM % (TOTAL - 3)))
            wait_step "$dir" "$t"
            NOTE="SIGTERM at step >= $t (checkpoints every step)"
            hit TERM || return 1
            [[ $LASTRC -eq 0 ]] && return 1 # after the last step: the run completes (documented)
            [[ $LASTRC -eq 143 ]] || NOTE+=" (exit $LASTRC, expected 143)" ;;
        int)
            # checkpoints at epoch ends only: a stop mid-epoch writes one of the steps done
            start "$dir" 30 0
            wait_step "$dir" 1
            t=$((RANDOM % 80))
            sleep "0.$(printf '%03d' "$t")"
            NOTE="SIGINT $t ms after the first epoch's checkpoint (epoch-end checkpoints only)"
            hit INT || return 1
            [[ $LASTRC -eq 0 ]] && return 1 # after the last step: the run completes (documented)
            [[ $LASTRC -eq 130 ]] || NOTE+=" (exit $LASTRC, expected 130)" ;;
        int-twice)
            # the stop's own checkpoint write (slowed to 400 ms) is cut by a second SIGINT
            start "$dir" 400 0
            wait_step "$dir" 1
            t=$((RANDOM % 200))
            sleep "0.$(printf '%03d' "$t")"
            kill -INT "$PID" 2>/dev/null
            wait_tmp "$dir" 0 || { hit KILL; return 1; }
            NOTE="SIGINT $t ms after the first epoch's checkpoint, a second SIGINT during the stop's checkpoint write"
            hit INT || return 1
            [[ $LASTRC -eq 130 ]] || NOTE+=" (exit $LASTRC, expected 130)" ;;
        stop-cont)
            start "$dir" 10
            t=$((1 + RANDOM % (TOTAL - 2)))
            wait_step "$dir" "$t"
            kill -STOP "$PID" 2>/dev/null || { wait "$PID"; return 1; }
            sleep 1
            kill -CONT "$PID"
            NOTE="SIGSTOP for 1 s at step >= $t, then SIGCONT"
            wait "$PID"
            LASTRC=$? ;;
        disk-full)
            # the file-size limit lowered on the running process: the next checkpoint write
            # fails (EFBIG, SIGXFSZ ignored), as with a full disk
            local resume=()
            [[ -f $dir/checkpoint.safetensors ]] && resume=(--resume "$dir")
            (trap '' XFSZ; exec env DPSGD_TEST_SLOW_CHECKPOINT=20 "$HOOKS" "${CFG[@]}" --checkpoint-dir "$dir" --checkpoint-every 1 "${resume[@]}" >>"$dir.log" 2>&1) &
            PID=$!
            t=$((1 + RANDOM % (TOTAL - 3)))
            wait_step "$dir" "$t"
            prlimit --pid "$PID" --fsize=4096: 2>/dev/null || { hit KILL; return 1; }
            wait "$PID"
            LASTRC=$?
            NOTE="disk full (file-size limit 4 KiB) from step >= $t: exit $LASTRC, $(grep -m1 -o 'dpsgd: .*' "$dir.log" | head -c 200)" ;;
    esac
}

sweep_faults() {
    [[ -x $HOOKS ]] || { echo "sweep: no $HOOKS (build the test build: dpsgd-testhooks)" >&2; FAULTS_LINE="sweep: faults 0 tried, 0 survived"; return 1; }
    command -v prlimit >/dev/null || echo "sweep: no prlimit: the disk-full scenarios are skipped"
    local F=$W/faults c type dir n=0 s=0 missed=0 try REFEPS
    mkdir -p "$F"
    local types=(kill-step kill-step kill-time kill-early kill-write kill-last kill-twice term int int-twice stop-cont disk-full)
    command -v prlimit >/dev/null || types=("${types[@]/disk-full/kill-step}")
    RANDOM=20261207
    FAULT_FAILS=()
    for ((c = 0; c < NCONFIGS; c++)); do
        cfg_args "$c"
        local name=$CFGNAME
        local t0=$EPOCHREALTIME
        if ! "$BIN" "${CFG[@]}" --save-weights "$F/$name.ref.st" --out "$F/$name.ref.json" >"$F/$name.ref.log" 2>&1; then
            echo "sweep: the uninterrupted run $name failed: $(cat "$F/$name.ref.log")" >&2
            continue
        fi
        REFMS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", (b - a) * 1000 }')
        REFEPS=$(epsilon_of "$F/$name.ref.json")
        TOTAL=$(grep -o '"steps": [0-9]*' "$F/$name.ref.json" | grep -o '[0-9]*$')
        echo "sweep: faults, $name: $TOTAL steps, $REFMS ms uninterrupted, $REFEPS"
        for type in "${types[@]}"; do
            local ok=0
            for try in 1 2 3; do
                dir=$F/$name.$type.$n.$try
                rm -rf "$dir" "$dir.log"
                mkdir -p "$dir"
                NOTE=""
                if scenario "$type" "$dir"; then ok=1; break; fi
                echo "  $name $type: the run ended before the fault (try $try)"
            done
            if [[ $ok -eq 0 ]]; then
                missed=$((missed + 1))
                continue
            fi
            n=$((n + 1))
            # resume to the end (a fresh start when no checkpoint was written)
            local resume=()
            [[ -f $dir/checkpoint.safetensors ]] && resume=(--resume "$dir")
            local rrc=0
            if [[ $type != stop-cont ]]; then
                "$BIN" "${CFG[@]}" --checkpoint-dir "$dir" --checkpoint-every 1 "${resume[@]}" --save-weights "$dir/w.st" --out "$dir/out.json" \
                    >>"$dir.log" 2>&1 || rrc=$?
            else
                # the stopped run went on to the end itself; write its outputs by resuming
                # the finished checkpoint
                "$BIN" "${CFG[@]}" --checkpoint-dir "$dir" --checkpoint-every 1 --resume "$dir" --save-weights "$dir/w.st" --out "$dir/out.json" \
                    >>"$dir.log" 2>&1 || rrc=$?
            fi
            local why=""
            if [[ $rrc -ne 0 ]]; then
                why="the resume failed (exit $rrc): $(tail -1 "$dir.log")"
            elif ! cmp -s "$dir/w.st" "$F/$name.ref.st"; then
                why="final weights differ from the uninterrupted run's"
            elif [[ "$(epsilon_of "$dir/out.json")" != "$REFEPS" ]]; then
                why="$(epsilon_of "$dir/out.json"), uninterrupted $REFEPS"
            elif compgen -G "$dir/checkpoint.safetensors.tmp*" >/dev/null; then
                why="a stale temporary checkpoint file is left"
            fi
            if [[ -z $why ]]; then
                s=$((s + 1))
                echo "  survived  $name $type: $NOTE"
            else
                echo "  FAILED    $name $type: $NOTE: $why"
                FAULT_FAILS+=("$name $type: $NOTE: $why")
            fi
        done
    done
    [[ $missed -gt 0 ]] && echo "sweep: faults: $missed scenarios missed their run three times (not counted)"
    FAULTS_LINE="sweep: faults $n tried, $s survived"
    FAULTS_BAD=$((n - s))
}

# main: the whole run, called on the script's last line (bash then has parsed everything
# before it starts, so the script can be edited while it runs)
main() {
    # the cases must write only below $W: a listing of / before and after shows any slip
    ls -A / >"$W/root.before" 2>/dev/null
    INPUTS_LINE=""
    FAULTS_LINE=""
    INPUTS_BAD=0
    FAULTS_BAD=0
    local t
    t=$EPOCHREALTIME
    [[ $MODE != faults ]] && { sweep_inputs || INPUTS_BAD=1; }
    [[ $MODE != faults ]] && awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "sweep: bad inputs took %.0f s\n", b - a }'
    t=$EPOCHREALTIME
    [[ $MODE != inputs ]] && { sweep_faults || FAULTS_BAD=1; }
    [[ $MODE != inputs ]] && awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "sweep: faults took %.0f s\n", b - a }'

    ls -A / 2>/dev/null | diff "$W/root.before" - | grep '^>' | sed 's/^> /sweep: WARNING: new in \/: /'
    awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "sweep: %.0f s\n", b - a }'
    [[ -n $INPUTS_LINE ]] && echo "$INPUTS_LINE"
    [[ -n $FAULTS_LINE ]] && echo "$FAULTS_LINE"
    [[ $INPUTS_BAD -eq 0 && $FAULTS_BAD -eq 0 ]]
}
main; exit $?
