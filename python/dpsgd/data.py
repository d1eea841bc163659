"""Datasets as `dpsgd train` reads them: IDX directories (Fashion-MNIST), the normalisation with
public constants, and the built-in synthetic text task.
"""

import ctypes

import numpy as np

from . import _capi, _check
from ._capi import lib
from .errors import check

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Debian's dataset-fashion-mnist, the default of `dpsgd train --data`."""

FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
"""Published Fashion-MNIST pixel statistics (public constants: normalising with them spends no
privacy budget), the default of `dpsgd train --normalize` for IDX data."""


def _take(ds, shape):
    """Copies a library dp_dataset into NumPy arrays and frees it."""
    try:
        n, dim = ds.n, ds.dim
        x = np.ctypeslib.as_array(ds.x, shape=(n * dim,)).copy().reshape((n,) + shape) if n * dim else \
            np.zeros((n,) + shape, np.float32)
        y = np.ctypeslib.as_array(ds.y, shape=(n,)).copy() if n else np.zeros(0, np.int32)
    finally:
        lib.dp_dataset_free(ctypes.byref(ds))
    return x, y


def load_idx(directory=FASHION_MNIST_DIR, train=True, normalize=(FASHION_MNIST_MEAN, FASHION_MNIST_STD), limit=None):
    """An MNIST-style IDX directory (train/t10k-images-idx3-ubyte[.gz], -labels-idx1-ubyte[.gz]),
    read and checked by the library as `dpsgd train --data DIR` reads it: x float32 [N, 1, H, W]
    (pixels / 255, then (x - mean) / std when normalize = (mean, std) is given; None: none),
    y int32 [N]. limit: keep the first rows (`--train-limit` / `--test-limit`)."""
    d = _check.path("directory", directory)
    ds = _capi.dp_dataset()
    check(lib.dp_dataset_load_mnist_dir(d, 1 if _check.flag("train", train) else 0, ctypes.byref(ds)))
    x, y = _take(ds, (1, ds.h, ds.w))
    if limit is not None:
        k = _check.integer("limit", limit, 1, _check.LONG_MAX)
        x, y = x[:k], y[:k]
    if normalize is not None:
        if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
            raise _check.InvalidArgument("normalize: expected (mean, std) or None, got %r" % (normalize,))
        x = standardize(x, normalize[0], normalize[1], copy=False)
    return x, y


def fashion_mnist(train=True, directory=FASHION_MNIST_DIR, normalize=True, limit=None):
    """Fashion-MNIST from Debian's dataset-fashion-mnist (read in place): x float32
    [N, 1, 28, 28], normalised with the published constants (normalize=False: pixels in [0, 1]),
    y int32 [N]: exactly the arrays `dpsgd train` trains and evaluates on."""
    return load_idx(directory, train, (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if normalize else None, limit)


def standardize(x, mean, std, copy=True):
    """(x - mean) / std in double, rounded once to float32: the library's dp_dataset_normalize,
    so the result is bit for bit what `dpsgd train --normalize MEAN,STD` trains on. A std that is
    not > 0 and finite is taken as 1. Returns a float32 array (in place when copy=False and x is
    already a C-contiguous float32 array)."""
    a = _check.array("x", x)
    if a.dtype.kind not in "fiu":
        raise _check.DTypeError("x: dtype %s: expected real numbers" % a.dtype)
    m = _check.real("mean", mean)
    s = _check.real("std", std)
    out = np.array(a, dtype=np.float32, order="C", copy=True) if copy or a.dtype != np.float32 or \
        not a.flags.c_contiguous or not a.flags.writeable else a
    ds = _capi.dp_dataset()
    ds.n, ds.dim, ds.c, ds.h, ds.w = 1, out.size, out.size, 1, 1
    ds.x = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    lib.dp_dataset_normalize(ctypes.byref(ds), m, s)
    return out


def synthetic_text(n, seq_len=32, vocab=100, seed=1):
    """The built-in synthetic text task (dp_text_synthetic; `dpsgd train --data synthetic-text`):
    token ids int32 [n, seq_len] (-1: padding) whose ORDER decides the label, labels int32 [n]
    (2 classes). Deterministic for a seed; the CLI's test split uses seed + 1000003."""
    n = _check.integer("n", n, 1, _check.LONG_MAX)
    T = _check.integer("seq_len", seq_len, 4, 65536)
    v = _check.integer("vocab", vocab, 4, 1 << 24)
    s = _check.integer("seed", seed, 0, _check.U64_MAX)
    ds = _capi.dp_dataset()
    check(lib.dp_text_synthetic(n, T, v, s, ctypes.byref(ds)))
    x, y = _take(ds, (T,))
    return x.astype(np.int32), y
