#!/usr/bin/python3
"""PyTorch's non-private training step on `dpsgd bench`'s workloads, for comparison (issue 20).

Run by hand with Debian's PyTorch (python3-torch); not part of CI:

    /usr/bin/python3 bench/pytorch_reference.py                       # both workloads
    /usr/bin/python3 bench/pytorch_reference.py --workload cnn --compare ./build/dpsgd
    /usr/bin/python3 bench/pytorch_reference.py --workload synthetic --batch-sizes 32,217 \
        --threads 2 --json pt.json

A step is what `dpsgd bench`'s no-DP column times (`dp_step_run`, src/train/step.c): forward,
cross-entropy (mean over the batch), backward, SGD (lr 0.01, momentum 0.9) step and zero_grad,
over the whole batch; inputs are N(0,1), labels uniform. The workloads are those of
tools/bench_workloads.c:

  synthetic  flatten linear(2560) relu linear(1280) on 5120 features (16,387,840 parameters),
             1280 classes; batches 32,217,512,1024; 1 warm-up + 5 timed steps
  cnn        the default CNN on 1x28x28 images: conv2d(16,8,s2,p2) tanh maxpool(2,1)
             conv2d(32,4,s2) tanh maxpool(2,1) flatten linear(32) tanh linear(10)
             (26,010 parameters), 10 classes; batches 256,1024,2048; 2 warm-up + 10 timed

Same threads, same BLAS core: the threads default to all cores (OMP_NUM_THREADS when set), as
`dpsgd` does, and are set with torch.set_num_threads. Debian 12's OpenBLAS 0.3.21 falls back to
its generic "Prescott" kernels on CPUs it does not know (some virtual CPUs), 2-4x slower; every
`dpsgd` command then restarts itself with OPENBLAS_CORETYPE set (tools/tool_setup.h). This script
does the same before importing torch: when OPENBLAS_CORETYPE and DPSGD_NO_BLAS_FIX are unset and
OpenBLAS picks Prescott, it re-executes itself with OPENBLAS_CORETYPE=SkylakeX (AVX-512 F, BW,
VL, DQ) or Haswell (AVX2 + FMA). Without that the comparison would flatter dpsgd.

--compare PATH runs `PATH bench WORKLOAD --modes no-dp,auto` with the same batches, steps and
threads right after the PyTorch timings and prints PyTorch's no-DP step beside dpsgd's no-DP
and auto steps, with the ratios of issue 20's goals (auto / PyTorch no-DP <= 0.7; auto / dpsgd
no-DP <= 1.05, and <= 1.15 for synthetic at batch 32).

Times are medians and minima of the timed steps (perf_counter around each whole step). The
report also gives the share of the cores other processes kept busy during the timing (from
/proc/stat minus this process's CPU time, as `dpsgd bench` reports it): with every core in use
by the step, any other busy process slows it several-fold; compare only quiet runs.
"""
import argparse
import ctypes
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOADS = {
    "synthetic": {"batches": [32, 217, 512, 1024], "reps": 5, "warmup": 1, "params": 16387840,
                  "description": "flatten linear(2560) relu linear(1280) on 5120 N(0,1) features, 1280 classes"},
    "cnn": {"batches": [256, 1024, 2048], "reps": 10, "warmup": 2, "params": 26010,
            "description": "conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh maxpool(2,1) flatten "
                           "linear(32) tanh linear(10) on 1x28x28 N(0,1) images, 10 classes"},
}
LR, MOMENTUM = 0.01, 0.9
_MARK = "PYTORCH_REFERENCE_BLAS_CORE_SET"  # set on our re-execution only


# ---------------------------------------------------------------- before torch is imported
def _openblas_corename():
    try:
        f = ctypes.CDLL("libopenblas.so.0").openblas_get_corename
    except (OSError, AttributeError):
        return None
    f.restype = ctypes.c_char_p
    f.argtypes = []
    name = f()
    return name.decode() if name else None


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((l for l in f if l.startswith("flags")), "").split()
    except OSError:
        return []


def fix_blas_core():
    """tools/tool_setup.h's dp_tool_fix_blas_core, for this process: returns only when no
    restart is needed (or it failed)."""
    if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("DPSGD_NO_BLAS_FIX"):
        return
    if _openblas_corename() != "Prescott":  # loads OpenBLAS; torch will use the same library
        return
    flags = _cpu_flags()
    want = None
    if all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        want = "SkylakeX"
    elif "avx2" in flags and "fma" in flags:
        want = "Haswell"
    if not want:
        return
    env = dict(os.environ, OPENBLAS_CORETYPE=want, **{_MARK: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    except OSError as e:
        print("pytorch_reference: could not restart with OPENBLAS_CORETYPE=%s (%s); going on" % (want, e),
              file=sys.stderr)


def default_threads():
    v = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if v.isdigit() and int(v) > 0:
        return int(v)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time PyTorch's non-private step on dpsgd bench's workloads (issue 20).",
        epilog="Run with Debian's /usr/bin/python3 (python3-torch). See the module docstring.")
    p.add_argument("--workload", choices=["synthetic", "cnn", "all"], default="all")
    p.add_argument("--batch-sizes", help="comma-separated [the workload's]")
    p.add_argument("--reps", type=int, help="timed steps per batch size [synthetic 5, cnn 10]")
    p.add_argument("--warmup", type=int, help="untimed steps first [synthetic 1, cnn 2]")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads [all cores, or OMP_NUM_THREADS]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-mkldnn", action="store_true",
                   help="torch.backends.mkldnn.enabled = False: convolutions through im2col + BLAS "
                        "(as dpsgd) instead of oneDNN")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--compare", metavar="DPSGD",
                   help="path of the dpsgd binary: run `DPSGD bench WORKLOAD --modes no-dp,auto` "
                        "with the same batches, steps and threads and print the three side by side")
    a = p.parse_args(argv)
    if a.batch_sizes:
        try:
            a.batch_sizes = [int(x) for x in a.batch_sizes.split(",") if x.strip()]
        except ValueError:
            p.error("--batch-sizes: comma-separated positive integers")
        if not a.batch_sizes or min(a.batch_sizes) < 1:
            p.error("--batch-sizes: comma-separated positive integers")
    for name in ("reps", "warmup", "threads"):
        v = getattr(a, name)
        if v is not None and v < (1 if name != "warmup" else 0):
            p.error("--%s: must be >= %d" % (name, 1 if name != "warmup" else 0))
    if a.threads is None:
        a.threads = default_threads()
    if a.compare and not os.access(a.compare, os.X_OK):
        p.error("--compare: %s is not an executable" % a.compare)
    return a


args = parse_args(sys.argv[1:])
# libgomp reads this when it is loaded (by OpenBLAS or torch); torch.set_num_threads sets it again
os.environ["OMP_NUM_THREADS"] = str(args.threads)
fix_blas_core()

import torch  # noqa: E402
from torch import nn  # noqa: E402


# ---------------------------------------------------------------- machine
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for l in f:
                if l.startswith("model name"):
                    return l.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loaded_blas_libraries():
    """Shared objects in this process that look like a BLAS (after torch is imported)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for l in f:
                path = l.split()[-1] if len(l.split()) >= 6 else ""
                base = os.path.basename(path)
                if any(k in base for k in ("openblas", "libblas", "mkl", "blis", "libcblas")):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs)


def blas_info():
    cfg = torch.__config__.show()
    info = {"torch_config_blas": None, "mkl": torch.backends.mkl.is_available(),
            "libraries": loaded_blas_libraries(), "openblas_core": None, "kind": "unknown"}
    m = re.search(r"\bBLAS_INFO=([^,\s]*)", cfg)
    if m:
        info["torch_config_blas"] = m.group(1)
    if info["mkl"] or any("mkl" in os.path.basename(x) for x in info["libraries"]):
        info["kind"] = "MKL"
    elif any("openblas" in os.path.basename(x) for x in info["libraries"]):
        info["kind"] = "OpenBLAS"
        info["openblas_core"] = _openblas_corename()  # the instance torch loaded
    return info


def busy_cpu_s():
    """CPU seconds all processes spent busy (/proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s():
    t = os.times()
    return t.user + t.system


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- workloads
def make_model(workload):
    if workload == "synthetic":
        return nn.Sequential(nn.Flatten(), nn.Linear(5120, 2560), nn.ReLU(), nn.Linear(2560, 1280)), (5120,), 1280
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=2), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, 10)), (1, 28, 28), 10


def time_batch(workload, batch, reps, warmup, seed):
    torch.manual_seed(seed)
    model, shape, classes = make_model(workload)
    nparams = sum(p.numel() for p in model.parameters())
    assert nparams == WORKLOADS[workload]["params"], nparams
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()  # mean over the batch
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))

    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # keep the gradient buffers, as dpsgd does
        return loss

    for _ in range(warmup):
        step()
    times = []
    busy0, own0, t0 = busy_cpu_s(), own_cpu_s(), time.perf_counter()
    for _ in range(reps):
        s = time.perf_counter()
        loss = step()
        times.append(1e3 * (time.perf_counter() - s))
    wall = time.perf_counter() - t0
    busy1, own1 = busy_cpu_s(), own_cpu_s()
    other = None
    if busy0 is not None and busy1 is not None and wall > 0:
        other = max(0.0, ((busy1 - busy0) - (own1 - own0)) / (wall * os.cpu_count()))
    if not torch.isfinite(loss):
        raise RuntimeError("non-finite loss at batch %d" % batch)
    return {"batch": batch, "median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
            "other_processes_cpu_share": other}


# ---------------------------------------------------------------- dpsgd bench, for --compare
def run_dpsgd(path, workload, batches, reps, warmup, threads):
    env = {k: v for k, v in os.environ.items() if k != _MARK}
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "dpsgd.json")
        cmd = [path, "bench", workload, "--modes", "no-dp,auto", "--batch-sizes", ",".join(map(str, batches)),
               "--reps", str(reps), "--warmup", str(warmup), "--threads", str(threads), "--json", out]
        print("\n$ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        if r.returncode != 0 or not os.path.exists(out):
            sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
            raise RuntimeError("%s exited with status %d" % (" ".join(cmd), r.returncode))
        with open(out) as f:
            return cmd, json.load(f)


def dpsgd_ms(res, mode):
    m = res["modes"].get(mode)
    if not m or m.get("status") != "ok":
        return None, None
    return m["time"]["median_ms"], m["time"]["min_ms"]


def goal_own(workload, batch):
    return 1.15 if workload == "synthetic" and batch < 217 else 1.05


def fmt(v, spec="%.2f"):
    return "–" if v is None else spec % v


def verdict(v, goal):
    return "" if v is None else (" ok" if v <= goal else " MISS")


def compare_table(workload, ours, dp):
    by_b = {r["batch"]: r for r in dp["results"]}
    rows = []
    print("\n%s: PyTorch no-DP against dpsgd (medians, ms; goals of issue 20: auto / PyTorch no-DP <= 0.7, "
          "auto / dpsgd no-DP <= 1.05, <= 1.15 for synthetic at batch 32)\n" % workload)
    print("| batch | PyTorch no-DP | dpsgd no-DP | dpsgd auto | dpsgd no-DP / PyTorch | auto / PyTorch no-DP "
          "(<= 0.7) | auto / dpsgd no-DP (goal) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in ours:
        b = r["batch"]
        nodp, nodp_min = dpsgd_ms(by_b[b], "no-DP") if b in by_b else (None, None)
        auto, auto_min = dpsgd_ms(by_b[b], "auto") if b in by_b else (None, None)
        pt = r["median_ms"]
        r_np = nodp / pt if nodp else None
        r_ap = auto / pt if auto else None
        r_an = auto / nodp if auto and nodp else None
        g = goal_own(workload, b)
        print("| %d | %s | %s | %s | %s | %s%s | %s (<= %.2f)%s |" % (
            b, fmt(pt), fmt(nodp), fmt(auto), fmt(r_np, "%.3f"), fmt(r_ap, "%.3f"), verdict(r_ap, 0.7),
            fmt(r_an, "%.3f"), g, verdict(r_an, g)))
        rows.append({"batch": b, "pytorch_nodp_ms": pt, "pytorch_nodp_min_ms": r["min_ms"],
                     "dpsgd_nodp_ms": nodp, "dpsgd_nodp_min_ms": nodp_min, "dpsgd_auto_ms": auto,
                     "dpsgd_auto_min_ms": auto_min, "dpsgd_nodp_over_pytorch": r_np,
                     "auto_over_pytorch_nodp": r_ap, "auto_over_pytorch_goal": 0.7,
                     "auto_over_dpsgd_nodp": r_an, "auto_over_dpsgd_nodp_goal": g})
    m = dp.get("machine", {})
    print("\n(dpsgd: %s, core %s, %s threads; other processes kept %s of the cores busy during its run)" % (
        m.get("blas"), m.get("blas_core"), m.get("threads"),
        fmt(None if m.get("other_processes_cpu_share") is None else 100 * m["other_processes_cpu_share"], "%.0f%%")))
    return rows, m


# ---------------------------------------------------------------- main
def main():
    torch.set_num_threads(args.threads)
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    blas = blas_info()
    core_env = os.environ.get("OPENBLAS_CORETYPE")
    set_here = os.environ.get(_MARK) == "1"
    machine = {
        "cpu": cpu_model(), "nproc": os.cpu_count(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "blas": blas["kind"],
        "blas_libraries": blas["libraries"], "torch_config_blas_info": blas["torch_config_blas"],
        "mkl_available": blas["mkl"], "blas_core": blas["openblas_core"], "openblas_coretype_env": core_env,
        "openblas_coretype_set_by_this_script": set_here,
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "parallel_backend": next((l.split(":", 1)[1].strip() for l in torch.__config__.parallel_info().splitlines()
                                  if l.startswith("ATen parallel backend")), None),
        "loadavg_start": loadavg(),
    }
    print("# PyTorch's non-private step (bench/pytorch_reference.py)\n")
    print("- CPU: %s; online cores: %d; torch %s (Python %s), torch.get_num_threads() = %d, %s backend" % (
        machine["cpu"], machine["nproc"], machine["torch"], machine["python"], machine["threads"],
        machine["parallel_backend"]))
    print("- BLAS: %s%s (BLAS_INFO=%s, MKL %s; %s); OPENBLAS_CORETYPE=%s%s" % (
        blas["kind"], ", core %s" % blas["openblas_core"] if blas["openblas_core"] else "",
        blas["torch_config_blas"], "available" if blas["mkl"] else "not available",
        ", ".join(blas["libraries"]) or "no BLAS library found in the process",
        core_env or "unset", " (set by this script: OpenBLAS had picked Prescott)" if set_here else ""))
    print("- convolutions: %s; load average %s at the start" % (
        "oneDNN (torch.backends.mkldnn enabled)" if machine["mkldnn_enabled"] else "PyTorch's own (im2col + BLAS)",
        fmt(machine["loadavg_start"])))
    print("- step: forward, cross-entropy (mean), backward, SGD lr %g momentum %g step, zero_grad; "
          "N(0,1) inputs, uniform labels, seed %d" % (LR, MOMENTUM, args.seed))
    if blas["kind"] == "OpenBLAS" and blas["openblas_core"] == "Prescott":
        print("- WARNING: OpenBLAS runs its generic Prescott kernels (2-4x slow); set OPENBLAS_CORETYPE")

    out = {"machine": machine, "settings": {"seed": args.seed, "lr": LR, "momentum": MOMENTUM,
                                            "no_mkldnn": args.no_mkldnn}, "workloads": {}}
    names = ["synthetic", "cnn"] if args.workload == "all" else [args.workload]
    for w in names:
        spec = WORKLOADS[w]
        batches = args.batch_sizes or spec["batches"]
        reps = args.reps if args.reps is not None else spec["reps"]
        warmup = args.warmup if args.warmup is not None else spec["warmup"]
        print("\n## %s: %s (%d parameters); %d warm-up + %d timed steps\n" % (w, spec["description"], spec["params"],
                                                                             warmup, reps))
        print("| batch | median ms | min ms | ms / example | other processes |")
        print("|---:|---:|---:|---:|---:|")
        ours = []
        for b in batches:
            r = time_batch(w, b, reps, warmup, args.seed)
            ours.append(r)
            print("| %d | %.2f | %.2f | %.4f | %s |" % (b, r["median_ms"], r["min_ms"], r["median_ms"] / b,
                                                        fmt(None if r["other_processes_cpu_share"] is None
                                                            else 100 * r["other_processes_cpu_share"], "%.0f%%")),
                  flush=True)
        entry = {"description": spec["description"], "parameters": spec["params"], "reps": reps, "warmup": warmup,
                 "results": ours}
        if args.compare:
            cmd, dp = run_dpsgd(args.compare, w, batches, reps, warmup, args.threads)
            rows, m = compare_table(w, ours, dp)
            entry["compare"] = {"command": cmd, "dpsgd_machine": m, "rows": rows}
            if blas["openblas_core"] and m.get("blas_core") and m["blas_core"] != blas["openblas_core"]:
                print("- WARNING: different BLAS cores: PyTorch %s, dpsgd %s" % (blas["openblas_core"],
                                                                                 m["blas_core"]))
        out["workloads"][w] = entry
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
