"""Privacy accounting: the epsilon of DP-SGD runs, sigma calibration, and the Accountant.

The numbers are the library's (dpsgd/accounting.h), computed by the same calls as
`dpsgd epsilon` and `dpsgd noise`: for the same arguments they agree to the last digit.

Units: sample_rate q is the per-example probability of Poisson sampling, noise_multiplier sigma
the noise std divided by the clipping norm, delta a probability, epsilon in nats, steps the
number of optimizer steps. The neighbouring relation is add/remove one example.
"""

import collections
import ctypes
import math

import numpy as np

from . import _capi, _check
from ._capi import lib
from .errors import InvalidArgument, check

KINDS = _capi.ACCOUNTANT_KINDS
"""Every accountant kind: "rdp", "prv", "pld" (upper bounds) and "gdp" (an approximation)."""

BOUNDS = tuple(k for i, k in enumerate(KINDS) if lib.dp_accountant_kind_is_bound(i))
"""The kinds whose epsilon is a guarantee (they may calibrate sigma)."""

EpsilonReport = collections.namedtuple(
    "EpsilonReport", "epsilon estimate lower upper eps_error approximate order accountant delta")
EpsilonReport.__doc__ = """What an accountant reads off a history at delta.

epsilon: the value to quote (RDP: its bound; PRV, PLD: the upper bound; GDP: the approximation).
estimate: the best point estimate. lower, upper: bounds on the true epsilon where the method
has them (NaN where not: RDP's lower, GDP's both). eps_error: the half-width of the error
allowance used. approximate: True for GDP (it can underestimate; not a guarantee). order: the
RDP order that attains epsilon (NaN for the other kinds)."""


def _kind(accountant, name="accountant"):
    return _check.choice(name, accountant, KINDS)


def _params(eps_error, delta_error, max_points):
    if eps_error is None and delta_error is None and max_points is None:
        return None
    p = lib.dp_accounting_default_params()
    if eps_error is not None:
        p.eps_error = _check.real("eps_error", eps_error)
    if delta_error is not None:
        p.delta_error = _check.real("delta_error", delta_error)
    if max_points is not None:
        p.max_points = _check.integer("max_points", max_points, 1, _check.SIZE_MAX)
    return p


class Accountant:
    """The history of (sample rate, noise multiplier, steps) of a run, read by any kind.

        acc = dpsgd.Accountant()            # the default kind for epsilon() and delta(): "prv"
        acc.step(0.0341, 1.8, 1160)         # 1160 steps at q = 0.0341, sigma = 1.8
        acc.epsilon(1e-5)                   # PRV's upper bound
        acc.epsilon(1e-5, accountant="rdp")
        acc.delta(3.0)

    Entries with the same q and sigma as the last one are merged (as Opacus). PRV and PLD
    compose the whole history on every call (tens of ms to about a second)."""

    def __init__(self, accountant="prv", eps_error=None, delta_error=None, max_points=None):
        self._kind = _kind(accountant)
        self._params = _params(eps_error, delta_error, max_points)
        h = ctypes.c_void_p()
        check(lib.dp_accountant_create(ctypes.byref(h)))
        self._h = h

    def __del__(self):
        h = getattr(self, "_h", None)
        if h:
            lib.dp_accountant_destroy(h)
            self._h = None

    @property
    def accountant(self):
        """The default kind of epsilon() and delta()."""
        return KINDS[self._kind]

    def step(self, q, sigma, n=1):
        """Records n steps at sample rate q (in [0, 1]) with noise multiplier sigma (> 0)."""
        q = _check.real("q", q)
        sigma = _check.real("sigma", sigma)
        n = _check.integer("n", n, 0, _check.LONG_MAX)
        check(lib.dp_accountant_step(self._h, q, sigma, n))
        return self

    @property
    def steps(self):
        """Total number of steps recorded."""
        return int(lib.dp_accountant_total_steps(self._h))

    @property
    def history(self):
        """The entries [(q, sigma, steps), ...] in order."""
        out = []
        q, s, n = ctypes.c_double(), ctypes.c_double(), ctypes.c_long()
        for i in range(lib.dp_accountant_history_len(self._h)):
            lib.dp_accountant_history_get(self._h, i, ctypes.byref(q), ctypes.byref(s), ctypes.byref(n))
            out.append((q.value, s.value, n.value))
        return out

    def report(self, delta, accountant=None):
        """The EpsilonReport at delta (bounds, estimate, error) of the chosen kind."""
        k = self._kind if accountant is None else _kind(accountant)
        delta = _check.real("delta", delta)
        r = _capi.dp_epsilon_report()
        pp = ctypes.byref(self._params) if self._params is not None else None
        check(lib.dp_accountant_epsilon(self._h, k, delta, pp, ctypes.byref(r)))
        return EpsilonReport(r.epsilon, r.estimate, r.lower, r.upper, r.eps_error, bool(r.approximate), r.order,
                             KINDS[k], delta)

    def epsilon(self, delta, accountant=None):
        """Epsilon at delta of everything recorded (a float; see report() for the bounds)."""
        return self.report(delta, accountant).epsilon

    def delta(self, epsilon, accountant=None):
        """Delta at epsilon (a float), or at each of an array of epsilons (an array, one pass)."""
        k = self._kind if accountant is None else _kind(accountant)
        pp = ctypes.byref(self._params) if self._params is not None else None
        if isinstance(epsilon, (list, tuple, np.ndarray)):
            e = _check.array("epsilon", epsilon)
            if e.dtype.kind not in "fiu" or e.ndim != 1:
                raise _check.DTypeError("epsilon: expected a number or a 1-d array of real numbers")
            e = np.ascontiguousarray(e, dtype=np.float64)
            out = np.empty_like(e)
            if e.size:
                check(lib.dp_accountant_delta_many(self._h, k, e.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                                                   e.size, pp, out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
            return out
        eps = _check.real("epsilon", epsilon)
        d = ctypes.c_double()
        check(lib.dp_accountant_delta(self._h, k, eps, pp, ctypes.byref(d)))
        return d.value

    def __repr__(self):
        return "Accountant(%s, %d entries, %d steps)" % (self.accountant, len(self.history), self.steps)


def _rate_and_steps(sample_rate, dataset_size, batch_size, steps, epochs):
    """(q, steps) from the arguments as `dpsgd epsilon` reads its flags: sample_rate or
    dataset_size with batch_size (q = batch_size / dataset_size); steps or epochs (with the sizes:
    epochs x round(dataset_size / batch_size), as `dpsgd train`; with a sample rate: floor(epochs
    / q), as Opacus)."""
    have_n = dataset_size is not None or batch_size is not None
    if have_n and (dataset_size is None or batch_size is None):
        raise InvalidArgument("dataset_size and batch_size go together (sample rate = batch_size / dataset_size)")
    if have_n and sample_rate is not None:
        raise InvalidArgument("give either sample_rate or dataset_size with batch_size, not both")
    if not have_n and sample_rate is None:
        raise InvalidArgument("sample_rate (or dataset_size with batch_size) is required")
    if (steps is None) == (epochs is None):
        raise InvalidArgument("give exactly one of steps and epochs")
    spe = None
    if have_n:
        n = _check.integer("dataset_size", dataset_size, 1, 10**12)
        b = _check.integer("batch_size", batch_size, 1, _check.INT_MAX)
        if b > n:
            raise InvalidArgument("batch_size %d: must be at most dataset_size %d" % (b, n))
        q = b / n  # as dp_train: (double)expected_batch / (double)n
        spe = int(lib.dp_train_steps_per_epoch(n, b))
    else:
        q = _check.real("sample_rate", sample_rate)
    if steps is not None:
        t = _check.integer("steps", steps, 0, 10**12)
    else:
        e = _check.real("epochs", epochs)
        if not (e > 0 and math.isfinite(e)):
            raise InvalidArgument("epochs %g: must be a positive finite number" % e)
        if spe is not None:
            if e != math.floor(e) or e > 1e12 / spe:
                raise InvalidArgument("epochs %g: must be a whole number with dataset_size (as `dpsgd train`), "
                                      "at most 1e12 steps" % e)
            s = e * spe
        else:
            if not q > 0:
                raise InvalidArgument("sample_rate %g: must be > 0 to count steps from epochs" % q)
            s = e / q
            s = math.floor(s) if math.isfinite(s) else s
        if not 1 <= s <= 1e12:
            raise InvalidArgument("epochs %g gives %g steps: must be 1..1e12" % (e, s))
        t = int(s)
    return q, t


def epsilon_report(noise_multiplier, delta, sample_rate=None, steps=None, accountant="prv", dataset_size=None,
                   batch_size=None, epochs=None, eps_error=None, delta_error=None, max_points=None):
    """The EpsilonReport of `steps` DP-SGD steps at (sample_rate, noise_multiplier)."""
    k = _kind(accountant)
    q, t = _rate_and_steps(sample_rate, dataset_size, batch_size, steps, epochs)
    sigma = _check.real("noise_multiplier", noise_multiplier)
    acc = Accountant(KINDS[k], eps_error, delta_error, max_points)
    acc.step(q, sigma, t)
    return acc.report(delta)


def epsilon(sample_rate=None, noise_multiplier=None, steps=None, delta=None, accountant="prv", *, dataset_size=None,
            batch_size=None, epochs=None, eps_error=None, delta_error=None, max_points=None):
    """The epsilon (at delta) spent by `steps` steps of DP-SGD with Poisson sampling at rate
    sample_rate and noise multiplier noise_multiplier: a float, as `dpsgd epsilon` prints it.

        dpsgd.epsilon(sample_rate=2048/60000, noise_multiplier=1.8, steps=1160, delta=1e-5)
        dpsgd.epsilon(dataset_size=60000, batch_size=2048, epochs=40, noise_multiplier=1.8, delta=1e-5)

    accountant: "prv" (the upper bound of its error interval), "rdp", "pld", or "gdp" (an
    approximation that can underestimate: not a guarantee)."""
    if noise_multiplier is None or delta is None:
        raise InvalidArgument("noise_multiplier and delta are required")
    return epsilon_report(noise_multiplier, delta, sample_rate, steps, accountant, dataset_size, batch_size, epochs,
                          eps_error, delta_error, max_points).epsilon


def noise_multiplier(target_epsilon=None, delta=None, sample_rate=None, steps=None, accountant="prv", *,
                     dataset_size=None, batch_size=None, epochs=None, eps_tolerance=None):
    """The smallest noise multiplier whose epsilon at delta is within eps_tolerance (0.01) below
    target_epsilon, for `steps` steps at sample_rate: what `dpsgd noise` prints and `dpsgd train`
    uses. A target no noise multiplier reaches raises RangeError with the reachable range;
    "gdp" (not a bound) is refused."""
    if target_epsilon is None or delta is None:
        raise InvalidArgument("target_epsilon and delta are required")
    k = _kind(accountant)
    q, t = _rate_and_steps(sample_rate, dataset_size, batch_size, steps, epochs)
    target = _check.real("target_epsilon", target_epsilon)
    delta = _check.real("delta", delta)
    tol = 0.0 if eps_tolerance is None else _check.real("eps_tolerance", eps_tolerance)
    sigma = ctypes.c_double()
    check(lib.dp_calibrate_sigma_kind(k, target, delta, q, t, tol, ctypes.byref(sigma)))
    return sigma.value
