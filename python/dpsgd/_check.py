"""Argument checks made in Python before any C call: each message names the argument.

A value that would not fit its C type (an int beyond a C int, a string with a NUL, an array of
the wrong dtype or shape) never reaches ctypes, which would otherwise truncate it silently or
fail with a message that names no argument.
"""

import numbers
import os

import numpy as np

from .errors import DTypeError, InvalidArgument, RangeError

INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1
SIZE_MAX = 2**64 - 1
U64_MAX = 2**64 - 1


def _type_name(v):
    return type(v).__name__


def real(name, v):
    """A real number (int or float, NumPy scalars included; not bool) as a Python float."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise DTypeError("%s: expected a real number, got %s" % (name, _type_name(v)))
    try:
        return float(v)
    except OverflowError:  # an int beyond a double's range
        raise RangeError("%s %s: too large for a double" % (name, v)) from None


def integer(name, v, lo=-LONG_MAX - 1, hi=LONG_MAX):
    """An integer (not bool) within [lo, hi], as a Python int."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and float(v).is_integer():
            v = int(v)  # 3.0 is accepted for an integer argument
        else:
            raise DTypeError("%s: expected an integer, got %s" % (name, _type_name(v)))
    v = int(v)
    if v < lo or v > hi:
        raise RangeError("%s %d: must be in %d..%d" % (name, v, lo, hi))
    return v


def flag(name, v):
    """A boolean (or 0/1)."""
    if isinstance(v, (bool, np.bool_)):
        return int(bool(v))
    if isinstance(v, numbers.Integral) and int(v) in (0, 1):
        return int(v)
    raise DTypeError("%s: expected True or False, got %r" % (name, v))


def text(name, v):
    """A str as UTF-8 bytes for a C string (no NUL inside)."""
    if not isinstance(v, str):
        raise DTypeError("%s: expected a string, got %s" % (name, _type_name(v)))
    if "\0" in v:
        raise InvalidArgument("%s: contains a NUL character" % name)
    return v.encode("utf-8", "surrogateescape")


def path(name, v):
    """A str, bytes or os.PathLike file name as bytes for a C string."""
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if isinstance(v, str):
        v = os.fsencode(v)
    if not isinstance(v, bytes):
        raise DTypeError("%s: expected a path (str or os.PathLike), got %s" % (name, _type_name(v)))
    if b"\0" in v:
        raise InvalidArgument("%s: contains a NUL character" % name)
    if not v:
        raise InvalidArgument("%s: empty path" % name)
    return v


def choice(name, v, choices):
    """One of the strings in choices; returns its index."""
    if not isinstance(v, str):
        raise DTypeError("%s: expected one of %s, got %s" % (name, ", ".join(choices), _type_name(v)))
    try:
        return choices.index(v)
    except ValueError:
        raise InvalidArgument("%s %r: must be one of %s" % (name, v, ", ".join(choices))) from None


def array(name, v):
    """v as a NumPy array (torch tensors and sequences included) without copying when possible."""
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor
        v = v.detach().cpu().numpy()
        return v
    try:
        a = np.asarray(v)
    except Exception as e:  # ragged lists and the like
        raise DTypeError("%s: cannot be read as an array (%s)" % (name, e)) from None
    if a.dtype == object:
        raise DTypeError("%s: cannot be read as a numeric array (it holds Python objects)" % name)
    return a


def float_rows(name, v, n_features, shape=None):
    """Features as a C-contiguous float32 array [N, n_features] (a view when v already is one).
    v may be [N, n_features] or [N, *shape]; any real dtype (integers and floats, converted);
    bool, complex and object arrays are refused."""
    a = array(name, v)
    if a.dtype.kind not in "fiu":
        raise DTypeError("%s: dtype %s: expected real numbers (float32 best; other float and integer types are "
                         "converted)" % (name, a.dtype))
    if a.ndim < 1:
        raise InvalidArgument("%s: expected an array of examples [N, ...], got a scalar" % name)
    per = int(np.prod(a.shape[1:], dtype=np.int64)) if a.ndim > 1 else 1
    if a.ndim == 1 or per != n_features or (a.ndim > 2 and shape is not None and tuple(a.shape[1:]) != tuple(shape)):
        want = "[N, %d]" % n_features
        if shape is not None and len(shape) > 1:
            want += " or [N, %s]" % ", ".join(str(s) for s in shape)
        raise InvalidArgument("%s: shape %s: the model takes %s" % (name, tuple(a.shape), want))
    if a.shape[0] > INT_MAX:
        raise RangeError("%s: %d rows: at most %d" % (name, a.shape[0], INT_MAX))
    return np.ascontiguousarray(a.reshape(a.shape[0], n_features), dtype=np.float32)


def labels(name, v, n):
    """Class labels as a C-contiguous int32 array [n] (a view when v already is one); integer
    dtypes only (a float array of labels is refused: it is almost always a mistake). Their range
    is checked by the library (dp_dataset_validate), whose message names no value or row."""
    a = array(name, v)
    if a.dtype.kind not in "iu":
        raise DTypeError("%s: dtype %s: labels must be integers (int32 best; int64, uint8, ... are converted)%s"
                         % (name, a.dtype, "; for regression targets pass loss='mse'" if a.dtype.kind == "f" else ""))
    if a.ndim != 1 or a.shape[0] != n:
        raise InvalidArgument("%s: shape %s: expected [%d] (one label per row)%s" % (
            name, tuple(a.shape), n, "; for regression targets [N, K] pass loss='mse'" if a.ndim == 2 else ""))
    if a.dtype != np.int32:
        lo, hi = (int(a.min()), int(a.max())) if n else (0, 0)
        if lo < -(2**31) or hi > INT_MAX:
            # a label outside int32 is outside every class range: refuse it as the library would
            raise RangeError("%s: a label is outside 0..%d; labels must lie in 0..K-1 for K classes" % (name, INT_MAX - 1))
    return np.ascontiguousarray(a, dtype=np.int32)


def targets(name, v, n, k):
    """Regression targets as a C-contiguous float32 array [n, k] (a view when v already is a
    C-contiguous float32 [n, k], or [n] for k = 1): v is [n, k], or [n] when the model has one
    output (k = 1); any real dtype (floats and integers, converted); bool, complex and object
    arrays are refused. Their values (finite) are checked by the library (dp_dataset_validate),
    whose message names no value or row."""
    a = array(name, v)
    if a.dtype.kind not in "fiu":
        raise DTypeError("%s: dtype %s: regression targets must be real numbers (float32 best; other float and "
                         "integer types are converted)" % (name, a.dtype))
    if not ((a.ndim == 2 and a.shape == (n, k)) or (a.ndim == 1 and k == 1 and a.shape[0] == n)):
        want = "[%d, %d] or [%d]" % (n, k, n) if k == 1 else "[%d, %d]" % (n, k)
        raise InvalidArgument("%s: shape %s: expected %s (regression targets: one row per example, one column per "
                              "output of the model, which has %d)" % (name, tuple(a.shape), want, k))
    return np.ascontiguousarray(a.reshape(n, k), dtype=np.float32)
