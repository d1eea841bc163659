"""dpsgd.train: DP-SGD training of a Model on NumPy arrays through dp_train (dpsgd/train.h),
the loop behind `dpsgd train`, with the same defaults and the same result for the same
settings (bit-identical weights with the same noise_seed and thread count).
"""

import collections
import ctypes
import math
import re
import signal
import threading

import numpy as np

from . import _capi, _check
from ._capi import lib
from .errors import Interrupted, InvalidArgument, check, error_for

# The library names a parameter by its dp_train_params field; the package by its keyword.
_NAMES = {"expected_batch": "batch_size", "target_epsilon": "epsilon", "ema_decay": "ema",
          "noise_seeded": "noise_seed", "optim.kind": "optimizer", "eval_batch": "eval_batch_size"}
_NAMES_RE = re.compile(r"(?<![\w.-])(%s)(?![\w-])" % "|".join(re.escape(k) for k in sorted(_NAMES, key=len,
                                                                                            reverse=True)))


def _names(msg):
    return _NAMES_RE.sub(lambda m: _NAMES[m.group(1)], msg)


# the loss argument of train(), PrivateTrainer and Model.evaluate: cross-entropy against class
# labels, or the mean squared error against float regression targets (`dpsgd train --loss`)
LOSSES = ("xent", "mse")


def _loss(loss):
    """True for loss="mse" (regression), False for "xent"; anything else is refused."""
    return _check.choice("loss", loss, LOSSES) == 1


# DP_CLI_HOLDOUT_SEED of tools/cli.h: the held-out rows of `dpsgd train --data-x ... --holdout F`
HOLDOUT_SEED = 0x401D0075


class _Data:
    """A dp_dataset over NumPy arrays (no copy when x is float32 and y int32, or with mse the
    targets float32, C-contiguous), checked: dtypes and shapes in Python, then the content by the
    library (finite values, labels in 0..K-1, finite targets, token ids in -1..V-1), whose
    messages name the argument and the rule, never a value or its row. mse: y holds regression
    targets [n, K] (or [n] for K = 1), K the model's outputs; the dataset's labels are then all 0
    and its t the targets (include/dpsgd/data.h)."""

    def __init__(self, model, x, y, xname, yname, min_rows, mse=False):
        self.x = model._rows(xname, x)
        n = self.x.shape[0]
        self.t = None
        if mse:
            self.t = _check.targets(yname, y, n, model.classes)
            self.y = np.zeros(n, dtype=np.int32)
        else:
            self.y = _check.labels(yname, y, n)
        if n < min_rows:
            raise InvalidArgument("%s: %d rows, need at least %d" % (xname, n, min_rows))
        self._fill(model)
        what = ("%s, %s" % (xname, yname)).encode()
        if model.is_tokens:
            # ids in -1..V-1 (and at least one real token per row), then the labels
            check(lib.dp_dataset_validate_tokens(ctypes.byref(self.ds), b"%s (token ids)" % xname.encode(),
                                                 model.vocab))
        check(lib.dp_dataset_validate(ctypes.byref(self.ds), what, min_rows, model.classes))

    def _fill(self, model):
        n, dim = self.x.shape
        ds = _capi.dp_dataset()
        ds.n = n
        ds.dim = dim
        if model.is_tokens:
            ds.c, ds.h, ds.w = 1, 1, dim
        else:
            ds.c, ds.h, ds.w = dim, 1, 1
        ds.x = self.x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        ds.y = self.y.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        ds.n_classes = model.classes
        if self.t is not None:
            ds.t = self.t.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            ds.n_targets = model.classes
        self.ds = ds

    @property
    def n(self):
        return self.x.shape[0]


def holdout_split(x, y, fraction=0.1):
    """Splits (x, y) as `dpsgd train --data-x X --data-labels Y --holdout F` does: a fixed random
    set of round(F n) rows (the library's generator, a fixed seed: the split does not depend on
    any secret or on the data) goes to the test split, both keep their order. y: labels [n], or
    regression targets [n] or [n, K] (loss="mse"; the rows of `--loss mse --holdout F`). Returns
    (x_train, y_train, x_test, y_test). The test split is private data too: an accuracy or a
    mean squared error measured on it is not covered by epsilon."""
    x = _check.array("x", x)
    y = _check.array("y", y)
    f = _check.real("fraction", fraction)
    n = x.shape[0] if x.ndim else 0
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise InvalidArgument("y: shape %s: expected [%d] (one label or regression target per row of x) or [%d, K] "
                              "(K regression targets per row)" % (tuple(y.shape), n, n))
    if not 0 < f < 1:
        raise InvalidArgument("fraction %g: must be in (0, 1)" % f)
    nt = max(1, int(_round_half_away(f * n)))
    if n < 3 or nt > n - 2:
        raise InvalidArgument("fraction %g: x has %d rows; need at least 2 for training and 1 to hold out" % (f, n))
    idx = np.arange(n, dtype=np.uintp)
    r = _capi.dp_rng()
    lib.dp_rng_seed(ctypes.byref(r), HOLDOUT_SEED)
    _shuffle_prefix(ctypes.byref(r), idx.ctypes.data_as(ctypes.POINTER(ctypes.c_size_t)), n, nt)
    mark = np.zeros(n, dtype=bool)
    mark[idx[:nt]] = True
    return x[~mark], y[~mark], x[mark], y[mark]


def _round_half_away(v):  # C's llround
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


_shuffle_prefix = lib.dp_rng_shuffle_prefix

EpochRecord = collections.namedtuple("EpochRecord", "epoch step epsilon test_accuracy test_loss elapsed non_private")
EpochRecord.__doc__ = """One epoch's end: epoch (1-based), step (steps done so far), epsilon spent so
far (0 with no_dp), test_accuracy and test_loss on a public test set (None without one, or when the
test set was held out of the private data; with loss="mse" test_loss is the mean squared error
and test_accuracy None), elapsed seconds. non_private: None unless report_nonprivate (or no_dp);
then a dict of statistics of the private data that epsilon does NOT cover: train_loss (mean over
the epoch) and, for a test set held out of the private data, heldout_test_accuracy (not with
loss="mse") and heldout_test_loss."""


class TrainResult:
    """What a run returns. Covered by epsilon (or public): epsilon, delta, accountant, sigma,
    sample_rate, steps, steps_per_epoch, epochs, test_accuracy/test_loss on a public test set,
    history. `non_private` holds what epsilon does not cover: wall time, peak memory and, only with
    report_nonprivate, the mean drawn batch size, empty batches, non-finite samples and the
    accuracy on a test split held out of the private data.

    loss: "xent" (class labels, cross-entropy) or "mse" (regression: test_accuracy is None, and
    test_loss, also readable as test_mse, is the test set's mean squared error).

    noise: "os-csprng" (the default: secret, never reproducible), "seeded" (noise_seed given:
    reproducible, and epsilon then holds only while that seed stays secret) or "none" (no_dp)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def test_mse(self):
        """loss="mse": the mean squared error on a public test set (test_loss); else None."""
        return self.test_loss if getattr(self, "loss", "xent") == "mse" else None

    def as_dict(self):
        d = dict(self.__dict__)
        d["history"] = [r._asdict() for r in self.history]
        return d

    def to_json(self, path=None):
        """The result as JSON text (written to path when given): covered figures at the top, the
        rest under "non_private", as `dpsgd train --out` writes its summary."""
        import json
        text = json.dumps(_finite(self.as_dict()), indent=2, allow_nan=False) + "\n"
        if path is not None:
            import os
            import tempfile
            d = os.path.dirname(os.path.abspath(os.fspath(path)))
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".dpsgd-", suffix=".json")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return text

    def __repr__(self):
        mse = getattr(self, "loss", "xent") == "mse"
        figure = "mse" if mse else "accuracy"
        acc = "not measured"
        if mse and self.test_mse is not None:
            acc = "%.6g" % self.test_mse
        elif not mse and self.test_accuracy is not None:
            acc = "%.2f%%" % (100 * self.test_accuracy)
        elif self.test_split == "held out from the private data":
            acc = "not shown (held out of the private data; report_nonprivate=True shows it, labelled)"
        stop = " (stopped early after %d of %d epochs)" % (self.history[-1].epoch if self.history else 0,
                                                          self.epochs) if self.stopped else ""
        if not self.private:
            return "TrainResult(test %s %s, non-private: no privacy guarantee, %d steps%s)" % (
                figure, acc, self.steps, stop)
        seeded = "; epsilon holds only while noise_seed stays secret" if self.noise == "seeded" else ""
        return "TrainResult(test %s %s at epsilon %.3f (delta %g, %s), sigma %.4f, %d steps%s%s)" % (
            figure, acc, self.epsilon, self.delta, self.accountant, self.sigma, self.steps, stop, seeded)


def _finite(v):
    """v with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


_gomp = None


def _omp():
    global _gomp
    if _gomp is None:
        _gomp = ctypes.CDLL("libgomp.so.1")  # the OpenMP runtime libdpsgd.so already loaded
        _gomp.omp_get_max_threads.restype = ctypes.c_int
        _gomp.omp_set_num_threads.argtypes = [ctypes.c_int]
    return _gomp


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GIB": 1 << 30,
          "T": 1 << 40, "TIB": 1 << 40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def _size(name, v):
    """Bytes: an int, or a string as `dpsgd train --mem-budget` takes it: a number with a unit
    K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000); "none" is 0."""
    if isinstance(v, str):
        if v.strip().lower() == "none":
            return 0
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", v)
        if not m or m.group(2).upper() not in _UNITS:
            raise InvalidArgument("%s %r: expected bytes, e.g. 2GiB, 500MB or 1048576" % (name, v))
        v = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    return _check.integer(name, v, 0, _check.SIZE_MAX)


def _core_params(model, *, epsilon, delta, noise_multiplier, accountant, batch_size, physical_batch, epochs,
                 clipping, max_grad_norm, mem_budget, optimizer, lr, momentum, nesterov, weight_decay, beta1, beta2,
                 no_dp, noise_seed, seed, report_nonprivate):
    """The dp_train_params of the settings a step uses (train() and PrivateTrainer), checked."""
    p = lib.dp_train_default_params()
    no_dp = _check.flag("no_dp", no_dp)
    p.no_dp = no_dp
    if no_dp:
        given = [k for k, v, d in (("noise_multiplier", noise_multiplier, None), ("noise_seed", noise_seed, None),
                                   ("report_nonprivate", report_nonprivate, False), ("mem_budget", mem_budget, None))
                 if v is not d and v != d]
        if given:
            raise InvalidArgument("%s: contradicts no_dp (a non-private run has no clipping, noise or privacy "
                                  "accounting)" % given[0])
    p.clipping = _check.choice("clipping", clipping, _capi.CLIP_MODES)
    if mem_budget is not None:
        p.mem_budget = _size("mem_budget", mem_budget)
    p.max_grad_norm = _check.real("max_grad_norm", max_grad_norm)
    p.target_epsilon = _check.real("epsilon", epsilon)
    p.delta = _check.real("delta", delta)
    if noise_multiplier is not None:
        p.noise_multiplier = _check.real("noise_multiplier", noise_multiplier)
        if not p.noise_multiplier > 0:
            raise InvalidArgument("noise_multiplier %g: must be > 0 (None: calibrate for epsilon)" % p.noise_multiplier)
    if not no_dp:
        # The noise std is sigma x C (sigma at most 1e6 when calibrated): a std that is not a finite
        # number would stop dp_train on an internal invariant (an abort, not an error), so refuse it
        sig = p.noise_multiplier if p.noise_multiplier > 0 else 1e6
        if not math.isfinite(sig * p.max_grad_norm):
            raise _check.RangeError("noise_multiplier %g, max_grad_norm %g: the noise std (their product) must be a "
                                    "finite number" % (sig, p.max_grad_norm))
    p.accountant = _check.choice("accountant", accountant, _capi.ACCOUNTANT_KINDS)
    p.expected_batch = _check.integer("batch_size", batch_size, 1, _check.INT_MAX)
    if physical_batch is not None:
        p.physical_batch = _check.integer("physical_batch", physical_batch, 0, _check.INT_MAX)
    p.epochs = _check.integer("epochs", epochs, 1, _check.INT_MAX)
    # optimizer: for SGD the recipe's lr 4 and momentum 0.9 (dp_train_default_params), PyTorch's
    # defaults for Adam/AdamW; then the arguments given (as `dpsgd train`)
    okind = _check.choice("optimizer", optimizer, _capi.OPTIMIZERS)
    if okind != 0:
        p.optim = lib.dp_optim_default_params(okind)
    for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay), ("beta1", beta1),
                    ("beta2", beta2)):
        if v is not None:
            setattr(p.optim, name, _check.real(name, v))
    p.optim.nesterov = _check.flag("nesterov", nesterov)
    probe = ctypes.c_void_p()  # the optimizer's ranges, said before the data is read
    check(lib.dp_optim_create(ctypes.byref(p.optim), 1, ctypes.byref(probe)), mapper=_names)
    lib.dp_optim_destroy(probe)
    if noise_seed is not None:
        p.noise_seeded = 1
        p.noise_seed = _check.integer("noise_seed", noise_seed, 0, _check.U64_MAX)
    p.seed = _check.integer("seed", model.seed if seed is None else seed, 0, _check.U64_MAX)
    p.report_nonprivate = _check.flag("report_nonprivate", report_nonprivate)
    return p


def _adaptive(p, clip_quantile, clip_lr, clip_count_noise):
    """adaptive clipping's settings into p (the library checks their ranges)"""
    for name, value in (("clip_quantile", clip_quantile), ("clip_lr", clip_lr), ("clip_count_noise", clip_count_noise)):
        if value is not None:
            setattr(p, name, _check.real(name, value))
    if (clip_lr is not None or clip_count_noise is not None) and clip_quantile is None:
        raise InvalidArgument("clip_lr, clip_count_noise: adaptive clipping's settings need clip_quantile")


def _augment(p, model, data, augmult, augment_pad, augment_flip):
    """augmult, augment_pad, augment_flip into p; the training rows then have the model's image shape
    (the library checks that it is one: not token ids, height and width >= 2)"""
    p.augmult = _check.integer("augmult", augmult, 0, 64)
    p.augment_pad = _check.integer("augment_pad", augment_pad, 0, _check.INT_MAX)
    p.augment_flip = _check.flag("augment_flip", augment_flip)
    if p.augmult and not model.is_tokens:
        from .models import _input_chw
        data.ds.c, data.ds.h, data.ds.w = _input_chw(model.input_shape, False)


def train(model, x, y, *, x_test=None, y_test=None, loss="xent", epsilon=3.0, delta=1e-5, noise_multiplier=None,
          accountant="prv", batch_size=2048, physical_batch=None, epochs=40, clipping="auto", max_grad_norm=0.1,
          mem_budget=None, optimizer="sgd", lr=None, momentum=None, nesterov=False, weight_decay=None, beta1=None,
          beta2=None, ema=0.0, no_dp=False, noise_seed=None, seed=None, report_nonprivate=False, test_private=False,
          eval_batch_size=1000, checkpoint_dir=None, checkpoint_every=None, resume=None, force=False, data_id=None,
          threads=None, callback=None, handle_sigint=True, clip_quantile=None, clip_lr=None, clip_count_noise=None,
          lr_schedule="constant", augmult=0, augment_pad=4, augment_flip=True):
    """Trains `model` in place with DP-SGD on (x, y) (dp_train; the defaults are `dpsgd train`'s)
    and returns a TrainResult.

    x: [N, ...] features (float32 without a copy; other real dtypes are converted) or token ids
    [N, T] for a token model; y: [N] integer labels in 0..model.classes-1. x_test/y_test: a test
    set evaluated after every epoch (public data: its accuracy is reported; test_private=True if
    it was held out of the private data, see holdout_split()).

    loss: "xent" (the default: class labels, cross-entropy) or "mse" (regression, `dpsgd train
    --loss mse`): y and y_test are then float targets [N, K] (or [N] when K = 1), K =
    model.classes (the model's outputs), any real dtype (float32 C-contiguous without a copy), all
    finite; each example's loss is the mean over its K outputs of the squared error (nn.MSELoss on
    one example). Clipping, noise and accounting do not depend on it. The result's test_accuracy
    is then None and test_loss (test_mse) the test set's mean squared error.

    Privacy: epsilon (target, sigma calibrated to it by `accountant`: prv | rdp | pld) at delta,
    or noise_multiplier to fix sigma (epsilon is then reported); max_grad_norm C; clipping
    auto | bk | ghost | fast | vanilla; mem_budget (auto: bytes or "2GiB"); no_dp: the
    non-private baseline. The noise, the Poisson sample and dropout come from the operating
    system's CSPRNG (secret; no two runs alike) unless noise_seed is given: then the run is
    reproducible, and its epsilon holds ONLY while noise_seed stays secret.

    Training: batch_size (expected; q = batch_size / N), physical_batch (chunks: same result,
    less memory), epochs, optimizer sgd | adam | adamw with lr, momentum, nesterov, weight_decay,
    beta1, beta2 (SGD defaults: lr 4, momentum 0.9; Adam/AdamW: PyTorch's), ema (a decay in [0, 1):
    evaluate and keep an average of the weights), seed (the data order of no_dp runs; default
    model.seed, as `dpsgd train --seed` sets both), threads (OpenMP threads; the result is
    reproducible for a given count).

    Adaptive clipping (`dpsgd train --clip-quantile`, Andrew et al. 2021): clip_quantile Q in (0, 1)
    moves C (starting at max_grad_norm) each step toward the Q-quantile of the per-sample norms,
    counted with Gaussian noise of std clip_count_noise (default batch_size / 20) at the geometric
    rate clip_lr (default 0.2); the gradient's noise multiplier is raised so that epsilon is that
    of sigma alone. result.max_grad_norm_final is C at the end, result.noise_multiplier_gradient
    the gradient's multiplier.

    lr_schedule: "constant" (the default) or "cosine" (`--lr-schedule cosine`: lr (1 + cos(pi t / T)) / 2 at
    step t of T).

    augmult: augmentation multiplicity (De et al. 2022; `dpsgd train --augmult`): 0 (off) or K in
    1..64, each sampled example becomes K random crops (a shift by up to augment_pad pixels each
    way, the pixels shifted in 0 in the model's input space) and, with augment_flip, horizontal
    flips of itself; its gradient is their average, clipped as one, so epsilon is unchanged. The
    model's input_shape must be an image (C, H, W) or (H, W); physical_batch then counts examples.

    report_nonprivate: also compute the training loss, the drawn batch sizes, the count of
    non-finite samples and the accuracy on a test split held out of the private data: statistics
    of the private data that epsilon does NOT cover, returned only under result.non_private and
    each history record's non_private.

    callback(record): called at each epoch's end with an EpochRecord; returning False stops the
    run there (result.stopped is True, its epsilon what was spent); an exception stops it at the
    next step boundary and is raised again. checkpoint_dir (every epoch end, and every
    checkpoint_every steps), resume (a checkpoint directory or file: continues exactly where it
    stopped; with noise_seed bit-identical to an uninterrupted run), force (resume although
    settings that do not touch the guarantee changed), data_id (the training data's identity
    recorded in checkpoints, e.g. its path).

    Ctrl-C (SIGINT, main thread, handle_sigint=True) stops at the next step boundary, writes the
    checkpoint when checkpoint_dir is given, and raises dpsgd.Interrupted (a KeyboardInterrupt)
    whose message says the steps done, the epsilon spent so far and where the checkpoint is.
    """
    from .models import Model
    if not isinstance(model, Model):
        raise _check.DTypeError("model: expected a dpsgd.Model, got %s" % type(model).__name__)
    mse = _loss(loss)
    p = _core_params(model, epsilon=epsilon, delta=delta, noise_multiplier=noise_multiplier, accountant=accountant,
                     batch_size=batch_size, physical_batch=physical_batch, epochs=epochs, clipping=clipping,
                     max_grad_norm=max_grad_norm, mem_budget=mem_budget, optimizer=optimizer, lr=lr,
                     momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, beta1=beta1, beta2=beta2,
                     no_dp=no_dp, noise_seed=noise_seed, seed=seed, report_nonprivate=report_nonprivate)
    no_dp = p.no_dp
    p.ema_decay = _check.real("ema", ema)
    _adaptive(p, clip_quantile, clip_lr, clip_count_noise)
    if lr_schedule not in ("constant", "cosine"):
        raise InvalidArgument("lr_schedule %r: unknown (constant, cosine)" % (lr_schedule,))
    p.lr_schedule = 1 if lr_schedule == "cosine" else 0
    p.test_private = _check.flag("test_private", test_private)
    p.eval_batch = _check.integer("eval_batch_size", eval_batch_size, 1, _check.INT_MAX)
    keep = []  # the C strings must outlive dp_train
    if checkpoint_dir is not None:
        keep.append(_check.path("checkpoint_dir", checkpoint_dir))
        p.checkpoint_dir = keep[-1]
    if checkpoint_every is not None:
        if checkpoint_dir is None:
            raise InvalidArgument("checkpoint_every: needs checkpoint_dir")
        p.checkpoint_every = _check.integer("checkpoint_every", checkpoint_every, 1, 1 << 40)
    if resume is not None:
        keep.append(_check.path("resume", resume))
        p.resume = keep[-1]
    p.force = _check.flag("force", force)
    if data_id is not None:
        keep.append(_check.text("data_id", data_id))
        p.data_id = keep[-1]
    if threads is not None:
        p.threads = _check.integer("threads", threads, 1, 4096)
    if callback is not None and not callable(callback):
        raise _check.DTypeError("callback: expected a function of one EpochRecord, got %s" % type(callback).__name__)

    tr = _Data(model, x, y, "x", "y", min_rows=2, mse=mse)
    _augment(p, model, tr, augmult, augment_pad, augment_flip)
    if (x_test is None) != (y_test is None):
        raise InvalidArgument("x_test and y_test go together")
    te = _Data(model, x_test, y_test, "x_test", "y_test", min_rows=1, mse=mse) if x_test is not None else None

    advice = _capi.blas_fallback_advice()
    if advice:
        import warnings
        warnings.warn(advice, RuntimeWarning, stacklevel=2)

    # ---- the run ----
    stop = ctypes.c_int(0)
    p.stop = ctypes.pointer(stop)
    state = {"history": [], "exc": None, "stopped": False, "signal": False}
    report = bool(p.report_nonprivate) or bool(no_dp)
    show_test = te is not None and not p.test_private  # a held-out private split: only under non_private

    def on_progress(user, pp):
        try:
            pr = pp.contents
            if not pr.epoch_end:
                return
            # evaluated at every epoch's end; a regression test set has no accuracy (-1 there)
            tested = te is not None and (mse or pr.test_accuracy >= 0)
            public = tested and not p.test_private
            extra = None
            if report:
                extra = {"note": "not covered by epsilon", "train_loss": float(pr.train_loss)}
                if tested and p.test_private:
                    if not mse:
                        extra["heldout_test_accuracy"] = float(pr.test_accuracy)
                    extra["heldout_test_loss"] = float(pr.test_loss)
            rec = EpochRecord(pr.epoch, int(pr.step), float(pr.epsilon) if not no_dp else 0.0,
                              float(pr.test_accuracy) if public and not mse else None,
                              float(pr.test_loss) if public else None, float(pr.elapsed), extra)
            state["history"].append(rec)
            if callback is not None and callback(rec) is False and pr.epoch < pr.epochs:
                state["stopped"] = True
                stop.value = 1
        except BaseException as e:  # never let an exception cross the C frames
            state["exc"] = e
            stop.value = 1

    cb = _capi.dp_progress_fn(on_progress)
    p.progress = cb
    old_handler, installed = None, False
    if handle_sigint and threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):
            if stop.value:  # the second: raise now (caught at the step's end; the run stops there)
                raise KeyboardInterrupt
            state["signal"] = True
            stop.value = 1
        cur = signal.getsignal(signal.SIGINT)
        # a handler Python does not manage (None) could not be put back; an ignored SIGINT stays
        # ignored (a background job is meant to survive the terminal's Ctrl-C), as in the CLI
        if cur is not None and cur is not signal.SIG_IGN:
            old_handler = signal.signal(signal.SIGINT, on_sigint)
            installed = True
    omp = _omp()
    old_threads = omp.omp_get_max_threads()
    if threads is not None:
        omp.omp_set_num_threads(p.threads)
    res = _capi.dp_train_result()
    try:
        st = lib.dp_train(model._h, ctypes.byref(tr.ds), ctypes.byref(te.ds) if te else None, ctypes.byref(p),
                          ctypes.byref(res))
    finally:
        if threads is not None:
            omp.omp_set_num_threads(old_threads)
        if installed:
            signal.signal(signal.SIGINT, old_handler)
    msg = _capi.last_error()
    used_threads = p.threads if threads is not None else old_threads

    common = dict(loss=LOSSES[mse], private=not no_dp, accountant=None if no_dp else _capi.ACCOUNTANT_KINDS[p.accountant],
                  delta=None if no_dp else p.delta, noise="none" if no_dp else "seeded" if p.noise_seeded else
                  "os-csprng", noise_seed=int(p.noise_seed) if p.noise_seeded and not no_dp else None,
                  epochs=p.epochs, clipping=None if no_dp else _capi.CLIP_MODES[p.clipping],
                  max_grad_norm=None if no_dp else p.max_grad_norm, batch_size=p.expected_batch,
                  test_split=None if te is None else "held out from the private data" if p.test_private else "public",
                  history=state["history"], threads=used_threads, seed=p.seed)
    if st == Interrupted.code:
        if state["exc"] is not None:  # the callback raised (or a second Ctrl-C): raise that
            raise state["exc"] from error_for(st, msg, _names)
        if state["stopped"] and not state["signal"]:  # the callback returned False at an epoch's end
            last = state["history"][-1]
            sigma = p.noise_multiplier
            spe = int(lib.dp_train_steps_per_epoch(tr.n, p.expected_batch))
            if not no_dp and not sigma > 0:  # as dp_train calibrated it
                s = ctypes.c_double()
                check(lib.dp_calibrate_sigma_kind(p.accountant, p.target_epsilon, p.delta, p.expected_batch / tr.n,
                                                  spe * p.epochs, 0.01, ctypes.byref(s)), mapper=_names)
                sigma = s.value
            return TrainResult(epsilon=0.0 if no_dp else last.epsilon, sigma=None if no_dp else sigma,
                               sample_rate=p.expected_batch / tr.n, steps=last.step, steps_per_epoch=spe,
                               test_accuracy=last.test_accuracy, test_loss=last.test_loss, stopped=True,
                               max_grad_norm_final=None, noise_multiplier_gradient=None, non_private=_non_private(None, report, te, p, state, mse), **common)
        err = error_for(st, msg, _names)
        err.checkpoint = checkpoint_dir
        raise err
    if state["exc"] is not None:  # raised at the last epoch's end: the run completed; still raise it
        raise state["exc"]
    check(st, mapper=_names)
    return TrainResult(epsilon=0.0 if no_dp else res.epsilon, sigma=None if no_dp else res.sigma,
                       sample_rate=res.q, steps=int(res.steps), steps_per_epoch=int(res.steps_per_epoch),
                       test_accuracy=res.test_accuracy if show_test and not mse else None,
                       test_loss=res.test_loss if show_test else None, stopped=False,
                       max_grad_norm_final=None if no_dp else res.max_grad_norm,
                       noise_multiplier_gradient=None if no_dp else res.noise_multiplier_gradient, non_private=_non_private(res, report, te, p, state, mse), **common)


def _non_private(res, report, te, p, state, mse):
    """What epsilon does not cover: wall time and peak memory always; the data-dependent counters
    only when report_nonprivate (or no_dp)."""
    d = {"note": "not covered by epsilon"}
    if res is not None:
        d["seconds"] = res.seconds
        d["peak_tracked_bytes"] = int(res.peak_bytes)
        if report:
            d.update(mean_batch=res.mean_batch, empty_batches=int(res.empty_batches),
                     nonfinite_samples=int(res.nonfinite_samples))
            if te is not None and p.test_private:
                if not mse:
                    d["heldout_test_accuracy"] = res.test_accuracy
                d["heldout_test_loss"] = res.test_loss
    return d


StepStats = collections.namedtuple("StepStats", "step non_private")
StepStats.__doc__ = """One step: step (steps done, this one included); non_private: None unless
report_nonprivate (or no_dp), else a dict of what epsilon does NOT cover: batch (examples drawn),
loss (their mean loss: the mean squared error with loss="mse"), nonfinite (samples that
contributed nothing)."""


class PrivateTrainer:
    """DP-SGD one step at a time, for a loop of your own (dp_trainer_*, include/dpsgd/train.h):

        t = dpsgd.PrivateTrainer(model, x, y, epsilon=3, epochs=10, batch_size=256, lr=2)
        for epoch in range(10):
            t.epoch()                              # steps_per_epoch steps
            print(t.epsilon(), model.evaluate(xt, yt))
        t.lr = 0.5                                 # a schedule of your own

    The settings are train()'s (the same defaults; sigma calibrated for epsilon over `epochs`
    epochs unless noise_multiplier is given), loss="mse" included (y: regression targets [N, K];
    then model.evaluate(xt, yt, loss="mse")). step() draws the Poisson sample itself, from the
    run's secret source (or the noise_seed stream): steps_per_epoch x epochs calls give exactly
    what train() gives (bit-identical weights with noise_seed). step(indices) runs the step on a
    batch you chose: the epsilon reported then holds only if those indices ARE a Poisson sample at
    rate sample_rate drawn independently of the data from a secret source (sample() draws one).
    Ctrl-C between steps is an ordinary KeyboardInterrupt: each step is whole. Adaptive clipping
    (clip_quantile, clip_lr, clip_count_noise) as in train(). Not here (train() has them): ema,
    lr_schedule (set t.lr yourself), augmult, checkpoints, test evaluation inside the loop (call
    model.evaluate)."""

    def __init__(self, model, x, y, *, loss="xent", epsilon=3.0, delta=1e-5, noise_multiplier=None, accountant="prv",
                 batch_size=2048, physical_batch=None, epochs=40, clipping="auto", max_grad_norm=0.1,
                 mem_budget=None, optimizer="sgd", lr=None, momentum=None, nesterov=False, weight_decay=None,
                 beta1=None, beta2=None, no_dp=False, noise_seed=None, seed=None, report_nonprivate=False,
                 threads=None, clip_quantile=None, clip_lr=None, clip_count_noise=None):
        from .models import Model
        self._h = None
        if not isinstance(model, Model):
            raise _check.DTypeError("model: expected a dpsgd.Model, got %s" % type(model).__name__)
        mse = _loss(loss)
        p = _core_params(model, epsilon=epsilon, delta=delta, noise_multiplier=noise_multiplier,
                         accountant=accountant, batch_size=batch_size, physical_batch=physical_batch, epochs=epochs,
                         clipping=clipping, max_grad_norm=max_grad_norm, mem_budget=mem_budget,
                         optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, beta1=beta1, beta2=beta2, no_dp=no_dp, noise_seed=noise_seed,
                         seed=seed, report_nonprivate=report_nonprivate)
        _adaptive(p, clip_quantile, clip_lr, clip_count_noise)
        self._threads = None if threads is None else _check.integer("threads", threads, 1, 4096)
        self._data = _Data(model, x, y, "x", "y", min_rows=2, mse=mse)  # borrowed by the trainer: kept alive here
        self.model = model  # likewise
        self.loss = LOSSES[mse]
        self._report = bool(p.report_nonprivate or p.no_dp)
        self.private = not p.no_dp
        self.accountant = None if p.no_dp else _capi.ACCOUNTANT_KINDS[p.accountant]
        self.delta = None if p.no_dp else p.delta
        self.noise_seed = int(p.noise_seed) if p.noise_seeded and not p.no_dp else None
        self._lr = p.optim.lr
        h = ctypes.c_void_p()
        check(lib.dp_trainer_create(model._h, ctypes.byref(self._data.ds), ctypes.byref(p), ctypes.byref(h)),
              mapper=_names)
        self._h = h
        self._buf = np.empty(self._data.n, dtype=np.uintp)

    def __del__(self):
        h = getattr(self, "_h", None)
        if h:
            lib.dp_trainer_destroy(h)
            self._h = None

    def _info(self):
        i = _capi.dp_trainer_info()
        lib.dp_trainer_get_info(self._h, ctypes.byref(i))
        return i

    @property
    def sample_rate(self):
        return self._info().q

    @property
    def sigma(self):
        """The noise multiplier (None with no_dp)."""
        return self._info().sigma if self.private else None

    @property
    def steps(self):
        """Steps done."""
        return int(self._info().steps)

    @property
    def steps_per_epoch(self):
        return int(self._info().steps_per_epoch)

    @property
    def noise(self):
        """"os-csprng" (secret), "seeded" (noise_seed: epsilon holds only while it stays secret) or "none"."""
        return "none" if not self.private else "os-csprng" if self._info().secret_noise else "seeded"

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, v):
        v = _check.real("lr", v)
        check(lib.dp_trainer_set_lr(self._h, v))
        self._lr = v

    def epsilon(self):
        """Epsilon spent so far, at the run's delta by its accountant (0 with no_dp)."""
        e = ctypes.c_double()
        check(lib.dp_trainer_epsilon(self._h, ctypes.byref(e)))
        return e.value

    def _stats(self, st):
        if not self._report:
            return StepStats(int(st.step), None)
        return StepStats(int(st.step), {"note": "not covered by epsilon", "batch": int(st.batch),
                                        "loss": float(st.loss), "nonfinite": int(st.nonfinite)})

    def _call(self, f, *args):
        omp = _omp()
        old = omp.omp_get_max_threads()
        if self._threads is not None:
            omp.omp_set_num_threads(self._threads)
        try:
            return f(self._h, *args)
        finally:
            if self._threads is not None:
                omp.omp_set_num_threads(old)

    def sample(self):
        """The next Poisson sample (int64 indices into x), drawn as step() would draw it. Who is in
        the batch is as secret as the noise: keep it so."""
        c = ctypes.c_size_t()
        check(lib.dp_trainer_sample(self._h, self._buf.ctypes.data_as(ctypes.POINTER(ctypes.c_size_t)),
                                    ctypes.byref(c)))
        return self._buf[:c.value].astype(np.int64)

    def step(self, indices=None):
        """One step on the trainer's own sample, or on `indices` (see the class); returns StepStats."""
        st = _capi.dp_trainer_stats()
        if indices is None:
            check(self._call(lib.dp_trainer_step, ctypes.byref(st)), mapper=_names)
            return self._stats(st)
        a = _check.array("indices", indices)
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise _check.DTypeError("indices: expected a 1-d array of integers, got %s %s" % (a.dtype, a.shape))
        if a.size and (int(a.min()) < 0 or int(a.max()) >= self._data.n):
            raise _check.RangeError("indices: an index is outside 0..%d (the rows of x)" % (self._data.n - 1))
        idx = np.ascontiguousarray(a, dtype=np.uintp)
        check(self._call(lib.dp_trainer_step_indices, idx.ctypes.data_as(ctypes.POINTER(ctypes.c_size_t)), idx.size,
                         ctypes.byref(st)), mapper=_names)
        return self._stats(st)

    def epoch(self):
        """steps_per_epoch steps; returns the last step's StepStats."""
        last = None
        for _ in range(self.steps_per_epoch):
            last = self.step()
        return last

    def __repr__(self):
        if not self.private:
            return "PrivateTrainer(non-private, %d steps)" % self.steps
        return "PrivateTrainer(sigma %.4f, sample rate %g, %d steps, epsilon %.3f (delta %g, %s)%s)" % (
            self.sigma, self.sample_rate, self.steps, self.epsilon(), self.delta, self.accountant,
            "; epsilon holds only while noise_seed stays secret" if self.noise == "seeded" else "")
