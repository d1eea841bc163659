"""Random arguments at the package's public functions: random shapes, dtypes (every NumPy kind,
non-contiguous views, torch-like objects, Python objects), values (NaN, Inf, -0, huge, negative)
and types. Every call must return or raise a dpsgd.Error: any other exception is a gap in the
argument checks, and a crash (a signal) kills this process, which test_fuzz.py reports.

    python3 tests/python/fuzz_boundary.py SEED ITERATIONS
"""

import os
import sys
import tempfile
import traceback

import numpy as np

np.seterr(all="ignore")
import warnings  # noqa: E402

warnings.simplefilter("ignore")  # the casts that make the random arrays overflow, on purpose
warnings.simplefilter("error", np.ComplexWarning)  # a complex array silently losing its imaginary part is a gap

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import dpsgd  # noqa: E402

R = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
TMP = tempfile.mkdtemp(prefix="dpsgd-fuzz-")

NUMBERS = [0, 1, -1, 2, 3, 7, 0.5, -0.0, 1e-300, 1e300, float("nan"), float("inf"), -float("inf"), 2**31, 2**63,
           2**64, -(2**63) - 1, 10**30, 1e-5, 0.01, 0.1, 0.999, 1.0, 1.0000001, np.float32(0.3), np.int64(5),
           np.uint64(2**64 - 1), True, False, None, "3", "abc", b"x", [1], (2,), {}, object(), complex(1, 1)]

SPEC_TOKENS = ["linear", "conv2d", "relu", "tanh", "maxpool", "avgpool", "flatten", "dropout", "embedding",
               "posembed", "layernorm", "rmsnorm", "groupnorm", "gelu", "add", "attention", "meanpool", "firsttoken",
               "scale", "bias", "sigmoid", "globalavgpool", "softmax", "bogus", "", "(", ")", ",", "@", "@x"]
SPEC_ARGS = ["0", "-1", "1", "2", "3", "4", "8", "s2", "p1", "p9", "nobias", "exclude", "0.5", "1.5", "abc",
             "2147483648", "99999999999999999999", "", "s0", "p-1"]

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32,
          np.uint64, np.bool_, np.complex64, object, "U3"]


# plausible values: half the time an argument gets one, so that calls get past the first check
PLAUSIBLE = {"sample_rate": [0.01, 0.2, 1.0], "noise_multiplier": [0.8, 1.0, 3.0], "steps": [1, 10, 100],
             "delta": [1e-5, 1e-3], "epochs": [1, 2], "dataset_size": [100, 1000], "batch_size": [1, 2, 10],
             "target_epsilon": [1.0, 3.0, 8.0], "eps_tolerance": [0.01, 0.1], "epsilon": [1.0, 3.0, 50.0],
             "max_grad_norm": [0.1, 1.0], "lr": [0.01, 0.5], "momentum": [0.0, 0.9], "physical_batch": [0, 1, 2],
             "mem_budget": [0, "1MiB", 1000], "ema": [0.0, 0.5], "no_dp": [False, True], "noise_seed": [None, 3],
             "seed": [0, 1], "report_nonprivate": [True, False], "test_private": [True, False],
             "eval_batch_size": [1, 7], "threads": [1, 2], "clipping": ["auto", "bk", "ghost", "fast", "vanilla"],
             "optimizer": ["sgd", "adam", "adamw"], "nesterov": [False], "weight_decay": [0.0, 0.1],
             "beta1": [0.9], "beta2": [0.999], "data_id": ["d"], "force": [False], "eps_error": [0.01, 0.1],
             "delta_error": [0.0, 1e-9], "max_points": [1 << 12, 1 << 20], "loss": ["xent", "mse"]}


def number():
    return NUMBERS[R.integers(len(NUMBERS))]


def value(name):
    if name in PLAUSIBLE and R.random() < 0.6:
        v = PLAUSIBLE[name]
        return v[R.integers(len(v))]
    return number()


def small_int():
    return [0, 1, 2, 3, 4, 5, 8, -1, 16][R.integers(9)]


def spec():
    parts = []
    for _ in range(R.integers(0, 6)):
        t = SPEC_TOKENS[R.integers(len(SPEC_TOKENS))]
        if R.random() < 0.6:
            t += "(" + ",".join(SPEC_ARGS[R.integers(len(SPEC_ARGS))] for _ in range(R.integers(0, 4))) + ")"
        parts.append(t)
    return " ".join(parts)


def array(like=None):
    """A random array: 0-5 dimensions of sizes 0-6, any dtype, values from edge cases, sometimes a
    non-contiguous view or a read-only one; sometimes not an array at all. like: a shape and dtype
    to use (perturbed) half the time, so that calls get past the shape checks."""
    if like is not None and R.random() < 0.5:
        shape, dt = like
        if R.random() < 0.25:  # the right shape, any dtype
            dt = DTYPES[R.integers(len(DTYPES))]
        a = R.choice([0.0, 1.0, -1.0, 2.0, 0.5, 3.0], size=shape).astype(dt)
        if R.random() < 0.15 and a.size:
            a.flat[R.integers(a.size)] = R.choice([np.nan, np.inf, 1e38, -7, 99]) if a.dtype.kind == "f" else 99
        return a
    u = R.random()
    if u < 0.07:
        return number()
    if u < 0.1:
        return [[1, 2], [3]]  # ragged
    shape = tuple(int(R.integers(0, 7)) for _ in range(R.integers(0, 6)))
    dt = DTYPES[R.integers(len(DTYPES))]
    vals = R.choice([0.0, 1.0, -1.0, 2.5, 1e30, -1e30, np.nan, np.inf, 3.0, 9.0], size=shape)
    try:
        a = vals.astype(dt)
    except (ValueError, OverflowError, TypeError):
        a = vals.astype(np.float32)
    if a.ndim >= 1 and a.shape[0] > 1 and R.random() < 0.2:
        a = a[::2]
    if R.random() < 0.1:
        a.flags.writeable = False
    return a


def model():
    choices = [
        lambda: dpsgd.Model("linear(3)", input_shape=(4,), classes=3),
        lambda: dpsgd.Model("conv2d(2,3,p1) relu flatten linear(2)", input_shape=(1, 4, 4)),
        lambda: dpsgd.Model("embedding(6,4) meanpool linear(2)", input_shape=(5,)),
        lambda: dpsgd.Model.transformer(vocab=8, seq_len=4, width=8, heads=2, layers=1, classes=2),
        lambda: dpsgd.Model(spec(), input_shape=tuple(small_int() for _ in range(R.integers(0, 4))),
                            classes=number() if R.random() < 0.3 else None),
    ]
    return choices[R.integers(len(choices) - 1) if R.random() < 0.8 else -1]()


def rows(m):
    n = n_rows()
    if m.is_tokens:
        return array(((n, m.input_size), [np.int64, np.int32, np.float32][R.integers(3)]))
    return array(((n,) + tuple(m.input_shape), [np.float32, np.float64, np.int16][R.integers(3)]))


def labels(m, x):
    n = x.shape[0] if isinstance(x, np.ndarray) and x.ndim else int(R.integers(0, 9))
    if R.random() < 0.5:
        return R.integers(0, max(1, m.classes) + (R.random() < 0.1), size=n).astype([np.int64, np.int32,
                                                                                      np.uint8][R.integers(3)])
    return array()


def targets(m, x):
    """Regression targets for loss="mse": [N, K] floats (K the model's outputs) or [N], perturbed
    by array()'s edge cases half the time."""
    n = x.shape[0] if isinstance(x, np.ndarray) and x.ndim else int(R.integers(0, 9))
    k = max(1, m.classes)
    shape = (n,) if k == 1 and R.random() < 0.5 else (n, k)
    return array((shape, [np.float32, np.float64, np.int16][R.integers(3)]))


def labels_or_targets(m, x, loss):
    return targets(m, x) if loss == "mse" and R.random() < 0.8 else labels(m, x)


def kwargs(names):
    return {n: value(n) for n in names if R.random() < 0.5}


def n_rows():
    return int(R.integers(0, 9)) if R.random() < 0.3 else int(R.integers(2, 9))


KIND = [0]


def case():
    k = KIND[0] = int(os.environ.get("FUZZ_KIND", R.integers(0, 13)))
    if k == 0:
        dpsgd.epsilon(noise_multiplier=value("noise_multiplier"), delta=value("delta"),
                      **kwargs(["sample_rate", "steps", "accountant", "dataset_size", "batch_size", "epochs"]))
    elif k == 1:
        dpsgd.noise_multiplier(target_epsilon=value("target_epsilon"), delta=value("delta"), accountant="rdp",
                               **kwargs(["sample_rate", "steps", "dataset_size", "batch_size", "epochs",
                                         "eps_tolerance"]))
    elif k == 2:
        a = dpsgd.Accountant(["rdp", "prv", "pld", "gdp", "x", 3][R.integers(6)],
                             **kwargs(["eps_error", "delta_error", "max_points"]))
        for _ in range(3):
            a.step(value("sample_rate"), value("noise_multiplier"), value("steps"))
        [a.epsilon, a.delta, a.report][R.integers(3)](number() if R.random() < 0.8 else array())
    elif k == 3:
        model()
    elif k == 4:
        m = model()
        [m.logits, m.predict][R.integers(2)](rows(m), **kwargs(["batch_size"]))
    elif k == 5:
        m = model()
        sd = m.state_dict(copy=bool(R.integers(2)))
        for name in list(sd):
            if R.random() < 0.5:
                sd[name] = array()
        if R.random() < 0.2:
            sd[[3, 0.5, None, "extra", b"x", (1,)][R.integers(6)]] = array()
        m.load_state_dict(sd if R.random() < 0.9 else number(), strict=bool(R.integers(2)))
    elif k == 6:
        m = model()
        x = rows(m)
        kw = kwargs(["batch_size", "loss"])
        m.evaluate(x, labels_or_targets(m, x, kw.get("loss")), **kw)
    elif k == 7:
        m = model()
        x = rows(m)
        loss = value("loss") if R.random() < 0.5 else None
        y = labels_or_targets(m, x, loss)
        # a valid configuration with up to three arguments replaced by random ones
        names = ["x_test", "y_test", "epsilon", "delta", "noise_multiplier", "physical_batch", "max_grad_norm",
                 "mem_budget", "lr", "momentum", "nesterov", "weight_decay", "beta1", "beta2", "ema", "no_dp",
                 "noise_seed", "seed", "report_nonprivate", "test_private", "eval_batch_size", "threads", "clipping",
                 "optimizer", "callback", "data_id", "force", "epochs", "batch_size", "accountant", "loss"]
        kw = dict(epochs=1, batch_size=2, accountant="rdp", noise_multiplier=1.0, delta=1e-3)
        if loss is not None:
            kw["loss"] = loss
        for name in R.choice(names, size=R.integers(0, 4), replace=False):
            kw[str(name)] = value(str(name)) if R.random() < 0.5 else number()
        if "x_test" in kw and R.random() < 0.7:
            kw["x_test"] = rows(m)
        if "y_test" in kw and R.random() < 0.7:
            kw["y_test"] = labels_or_targets(m, kw["x_test"] if isinstance(kw.get("x_test"), np.ndarray) else x, loss)
        if kw.get("no_dp") is True:
            kw.pop("noise_multiplier", None)
            kw.pop("noise_seed", None)
        if R.random() < 0.2:
            kw["callback"] = [lambda r: False, lambda r: 1 / 0, lambda r: None][R.integers(3)]
        try:
            dpsgd.train(m, x, y, **kw)
        except ZeroDivisionError:
            pass  # the callback's own exception, raised again as documented
    elif k == 8:
        m = model()
        [m.freeze, m.unfreeze][R.integers(2)](number() if R.random() < 0.7 else spec())
        m.plan(number(), clipping=["auto", "bk", "ghost", "x"][R.integers(4)], max_grad_norm=number())
    elif k == 9:
        m = model()
        # only paths inside TMP, or ones that cannot be written: nothing lands outside it
        path = [os.path.join(TMP, "w.safetensors"), TMP, "/nonexistent/x", "", os.path.join(TMP, "a\0b"),
                b"", 3, None, 2.5, object()][R.integers(10)]
        [m.save, m.load][R.integers(2)](path)
    elif k == 10:
        dpsgd.data.standardize(array(), number(), number(), copy=bool(R.integers(2)))
        dpsgd.holdout_split(array(), array(), number())
    elif k == 12:
        m = model()
        x = rows(m)
        kw = dict(epochs=1, batch_size=2, accountant="rdp", noise_multiplier=1.0, delta=1e-3)
        for name in R.choice(["epochs", "batch_size", "accountant", "noise_multiplier", "delta", "no_dp", "lr",
                              "clipping", "physical_batch", "noise_seed", "report_nonprivate", "threads", "loss"],
                             size=R.integers(0, 3), replace=False):
            kw[str(name)] = value(str(name)) if R.random() < 0.5 else number()
        if kw.get("no_dp") is True:
            kw.pop("noise_multiplier", None)
            kw.pop("noise_seed", None)
        t = dpsgd.PrivateTrainer(m, x, labels_or_targets(m, x, kw.get("loss")), **kw)
        for _ in range(3):
            u = R.random()
            if u < 0.4:
                t.step()
            elif u < 0.7:
                t.step(array() if R.random() < 0.5 else R.integers(-1, 10, size=R.integers(0, 5)))
            elif u < 0.8:
                t.sample()
            elif u < 0.9:
                t.lr = number()
            else:
                t.epsilon()
    else:
        dpsgd.data.synthetic_text(*[number() if R.random() < 0.5 else v for v in (5, 8, 10, 1)])


def main():
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    os.chdir(TMP)  # whatever a call writes by a relative name stays in TMP
    counts = {"ok": 0, "dpsgd.Error": 0}
    ok_by_kind = [0] * 13
    for i in range(n):
        try:
            case()
            counts["ok"] += 1
            ok_by_kind[KIND[0]] += 1
        except dpsgd.Error as e:
            counts["dpsgd.Error"] += 1
            if os.environ.get("FUZZ_VERBOSE"):
                print("%s: %s" % (type(e).__name__, str(e)[:150]))
        except BaseException:
            print("iteration %d: not a dpsgd.Error:" % i)
            traceback.print_exc()
            sys.exit(1)
    print("fuzz: %d calls: %d returned (by kind of call: %s), %d raised dpsgd.Error"
          % (n, counts["ok"], " ".join(map(str, ok_by_kind)), counts["dpsgd.Error"]))


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        os.chdir("/")
        shutil.rmtree(TMP, ignore_errors=True)
