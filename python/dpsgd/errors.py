"""dpsgd.Error and its subclasses: one per dp_status of the C library.

Every failing library call raises the subclass of its status with dp_last_error()'s message
(which names the file, field or parameter and the reason). Arguments that are wrong before any
C call (a dtype, a shape, a type) raise InvalidArgument (or DTypeError, also a TypeError) with
a message that names the argument. Each class also derives from the built-in exception a
Python user would expect (MemoryError, ValueError, OSError, ...), so `except ValueError` works.
"""

from . import _capi


class Error(Exception):
    """A failure reported by dpsgd. `status` is the dp_status name ("DP_ERR_RANGE"), `code` its
    number, `message` the library's (or the package's) message."""

    status = None
    code = None

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class OutOfMemory(Error, MemoryError):
    status, code = "DP_ERR_NOMEM", 1


class InvalidArgument(Error, ValueError):
    status, code = "DP_ERR_INVALID", 2


class DTypeError(InvalidArgument, TypeError):
    """An array of the wrong dtype, or an argument of the wrong type (raised before any C call)."""


class IOFailure(Error, OSError):
    status, code = "DP_ERR_IO", 3


class FormatError(Error, ValueError):
    status, code = "DP_ERR_FORMAT", 4


class RangeError(Error, ValueError):
    status, code = "DP_ERR_RANGE", 5


class NonFiniteError(Error, ArithmeticError):
    status, code = "DP_ERR_NONFINITE", 6


class Unsupported(Error, NotImplementedError):
    status, code = "DP_ERR_UNSUPPORTED", 7


class Interrupted(Error, KeyboardInterrupt):
    """Training stopped at a step boundary on request (Ctrl-C, or a callback that raised or
    returned False); the message says after which step, the epsilon spent so far and where the
    checkpoint is. `cause` holds the callback's exception, if that is what stopped it."""

    status, code = "DP_ERR_INTERRUPTED", 8
    cause = None


_BY_CODE = {c.code: c for c in (OutOfMemory, InvalidArgument, IOFailure, FormatError, RangeError, NonFiniteError,
                                Unsupported, Interrupted)}


def error_for(code, message=None, mapper=None, prefix=None):
    """The exception for a status code: message is dp_last_error() unless given; mapper rewrites
    the library's parameter names into the package's keyword names; prefix goes in front."""
    if message is None:
        message = _capi.last_error() or _capi.strerror(code)
    if mapper is not None:
        message = mapper(message)
    if prefix:
        message = "%s: %s" % (prefix, message)
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    err = Error(message)
    err.code, err.status = code, _capi.status_name(code)
    return err


def check(code, mapper=None, prefix=None):
    """Raises the exception of a failed status; returns None for DP_OK (0)."""
    if code != 0:
        raise error_for(code, mapper=mapper, prefix=prefix)
