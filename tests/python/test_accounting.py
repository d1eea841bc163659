"""dpsgd.epsilon, dpsgd.noise_multiplier and dpsgd.Accountant against `dpsgd epsilon` and
`dpsgd noise` of the build: the same numbers to the last digit the CLI prints (its JSON's
%.10g and its text's %.4f)."""

import json
import math

import pytest

import dpsgd

# (flags of the CLI, the same as keyword arguments, noise multiplier, delta)
SETTINGS = [
    (["--dataset-size", 60000, "--batch-size", 2048, "--epochs", 40],
     dict(dataset_size=60000, batch_size=2048, epochs=40), 1.8, 1e-5),
    (["--sample-rate", 0.01, "--steps", 1000], dict(sample_rate=0.01, steps=1000), 0.9, 1e-6),
    (["--sample-rate", 0.004, "--epochs", 3.5], dict(sample_rate=0.004, epochs=3.5), 1.3, 1e-5),  # floor(E / q) steps
    (["--dataset-size", 2000, "--batch-size", 256, "--steps", 16], dict(dataset_size=2000, batch_size=256, steps=16),
     1.0, 1e-5),
]

# (flags, keyword arguments, target epsilon, delta, the kinds compared); PLD's calibration takes
# seconds on the second setting, so that one compares RDP and PRV
NOISE = [
    (SETTINGS[0][0], SETTINGS[0][1], 3.0, 1e-5, ("rdp", "prv", "pld")),
    (SETTINGS[1][0], SETTINGS[1][1], 8.0, 1e-6, ("rdp", "prv")),
    (SETTINGS[3][0], SETTINGS[3][1], 3.0, 1e-5, ("rdp", "prv", "pld")),
]


def g10(v):
    return "null" if v is None or not math.isfinite(v) else "%.10g" % v


@pytest.mark.parametrize("flags,kw,sigma,delta", SETTINGS)
def test_epsilon_equals_cli(run_cli, flags, kw, sigma, delta):
    out = json.loads(run_cli("epsilon", *flags, "--noise-multiplier", sigma, "--delta", delta, "--accountant", "all",
                             "--json").stdout)
    assert set(out["accountants"]) == set(dpsgd.ACCOUNTANTS)
    for kind, want in out["accountants"].items():
        r = dpsgd.epsilon_report(noise_multiplier=sigma, delta=delta, accountant=kind, **kw)
        assert g10(r.epsilon) == g10(want["epsilon"]), (kind, kw)
        assert g10(r.estimate) == g10(want["estimate"]), (kind, kw)
        assert g10(r.lower) == g10(want["lower"]), (kind, kw)
        assert g10(r.upper) == g10(want["upper"]), (kind, kw)
        assert r.approximate == want["approximate"]
        assert dpsgd.epsilon(noise_multiplier=sigma, delta=delta, accountant=kind, **kw) == r.epsilon
    assert out["steps"] == dpsgd.accounting._rate_and_steps(kw.get("sample_rate"), kw.get("dataset_size"),
                                                             kw.get("batch_size"), kw.get("steps"),
                                                             kw.get("epochs"))[1]


def test_epsilon_text_output(run_cli):
    """The text output's four decimals too (what a user compares by eye)."""
    text = run_cli("epsilon", "--sample-rate", 0.02, "--noise-multiplier", 1.1, "--steps", 500, "--delta", 1e-5,
                   "--accountant", "all").stdout
    for kind in ("rdp", "prv", "pld", "gdp"):
        line = next(l for l in text.splitlines() if l.strip().startswith(kind + ":"))
        e = dpsgd.epsilon(sample_rate=0.02, noise_multiplier=1.1, steps=500, delta=1e-5, accountant=kind)
        assert ("epsilon %.4f" % e) in line, (kind, line)


@pytest.mark.parametrize("flags,kw,target,delta,kinds", NOISE)
def test_noise_multiplier_equals_cli(run_cli, flags, kw, target, delta, kinds):
    for kind in kinds:
        out = json.loads(run_cli("noise", *flags, "--target-epsilon", target, "--delta", delta, "--accountant", kind,
                                 "--json").stdout)
        want = out["accountants"][kind]
        s = dpsgd.noise_multiplier(target_epsilon=target, delta=delta, accountant=kind, **kw)
        assert g10(s) == g10(want["noise_multiplier"]), (kind, kw)
        e = dpsgd.epsilon(noise_multiplier=s, delta=delta, accountant=kind, **kw)
        assert g10(e) == g10(want["epsilon"])
        assert target - 0.01 <= e <= target


def test_accountant_object():
    a = dpsgd.Accountant()
    assert a.accountant == "prv" and a.steps == 0 and a.history == []
    assert a.epsilon(1e-5) == 0.0  # nothing at risk yet
    a.step(0.01, 1.0, 100).step(0.01, 1.0, 50).step(0.02, 2.0, 10)
    assert a.history == [(0.01, 1.0, 150), (0.02, 2.0, 10)]  # equal entries merged, as Opacus
    assert a.steps == 160
    for kind in dpsgd.ACCOUNTANTS:
        e = a.epsilon(1e-5, accountant=kind)
        assert 0 < e < 50
        r = a.report(1e-5, kind)
        assert r.epsilon == e and r.accountant == kind and r.approximate == (kind == "gdp")
        # delta at the epsilon just found is at most (about) the delta asked for
        d = a.delta(e, accountant=kind)
        assert 0 < d <= 1.01e-5, (kind, d)
        many = a.delta([e, e + 1.0, 0.5], accountant=kind)
        assert many.shape == (3,) and many[1] < many[0] < many[2]
        assert abs(many[0] - d) <= 1e-12
    # one entry equals the one-call function
    b = dpsgd.Accountant("rdp").step(0.01, 1.0, 150)
    assert b.epsilon(1e-5) == dpsgd.epsilon(sample_rate=0.01, noise_multiplier=1.0, steps=150, delta=1e-5,
                                            accountant="rdp")
    assert "rdp" in repr(b)


def test_accuracy_settings():
    coarse = dpsgd.epsilon_report(sample_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5, eps_error=0.1)
    fine = dpsgd.epsilon_report(sample_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5)
    assert coarse.eps_error == pytest.approx(0.1) and fine.eps_error == pytest.approx(0.01)
    assert coarse.lower <= fine.upper and fine.lower <= coarse.upper


def test_errors():
    with pytest.raises(dpsgd.RangeError, match="delta"):
        dpsgd.epsilon(sample_rate=0.01, noise_multiplier=1.0, steps=10, delta=1.5)
    with pytest.raises(dpsgd.RangeError, match="noise multiplier"):
        dpsgd.epsilon(sample_rate=0.01, noise_multiplier=-1.0, steps=10, delta=1e-5)
    with pytest.raises(dpsgd.RangeError, match="sample rate"):
        dpsgd.Accountant().step(1.5, 1.0, 1)
    with pytest.raises(dpsgd.InvalidArgument, match="accountant 'foo': must be one of rdp, prv, pld, gdp"):
        dpsgd.epsilon(sample_rate=0.01, noise_multiplier=1.0, steps=10, delta=1e-5, accountant="foo")
    with pytest.raises(dpsgd.InvalidArgument, match="gdp.*not a bound"):
        dpsgd.noise_multiplier(target_epsilon=3, delta=1e-5, sample_rate=0.01, steps=100, accountant="gdp")
    with pytest.raises(dpsgd.RangeError, match="unreachable"):
        dpsgd.noise_multiplier(target_epsilon=1e-4, delta=1e-5, sample_rate=0.5, steps=10000)
    with pytest.raises(dpsgd.InvalidArgument, match="exactly one of steps and epochs"):
        dpsgd.epsilon(sample_rate=0.01, noise_multiplier=1.0, delta=1e-5)
    with pytest.raises(dpsgd.InvalidArgument, match="dataset_size and batch_size go together"):
        dpsgd.epsilon(dataset_size=100, noise_multiplier=1.0, steps=3, delta=1e-5)
    with pytest.raises(dpsgd.DTypeError, match="steps: expected an integer"):
        dpsgd.epsilon(sample_rate=0.01, noise_multiplier=1.0, steps="10", delta=1e-5)
    with pytest.raises(dpsgd.DTypeError, match="noise_multiplier: expected a real number"):
        dpsgd.epsilon(sample_rate=0.01, noise_multiplier=None or "x", steps=10, delta=1e-5)
    with pytest.raises(dpsgd.RangeError, match="n -1"):
        dpsgd.Accountant().step(0.1, 1.0, -1)
    # every error is a dpsgd.Error and the built-in kind a caller would catch
    assert issubclass(dpsgd.RangeError, ValueError) and issubclass(dpsgd.RangeError, dpsgd.Error)
    e = pytest.raises(dpsgd.Error, dpsgd.epsilon, sample_rate=0.01, noise_multiplier=1.0, steps=10, delta=2.0).value
    assert e.status == "DP_ERR_RANGE" and e.code == 5 and e.message == str(e)
