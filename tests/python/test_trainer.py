"""dpsgd.PrivateTrainer (the step API, dp_trainer_*): a loop of steps gives dpsgd.train's weights
bit for bit with the same noise_seed, and so the CLI's; its own sample, chosen indices, the
learning rate, the non-private report, the errors."""

import numpy as np
import pytest

import dpsgd

SPEC = "linear(16) tanh linear(3)"


def data(n=300, d=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = (rng.standard_normal((3, d))[y] * 2 + rng.standard_normal((n, d))).astype(np.float32)
    return x, y.astype(np.int32)


KW = dict(epochs=3, batch_size=50, epsilon=4.0, delta=1e-4, accountant="rdp", lr=0.5, max_grad_norm=1.0,
          noise_seed=9, threads=2)


@pytest.mark.parametrize("extra", [{}, {"no_dp": True}, {"clip_quantile": 0.5, "clip_lr": 0.3, "clip_count_noise": 5}])
def test_steps_equal_train_bit_for_bit(extra):
    x, y = data()
    kw = dict(KW, **extra)
    if extra.get("no_dp"):
        for k in ("epsilon", "delta", "accountant", "max_grad_norm", "noise_seed"):
            kw.pop(k)
    a = dpsgd.Model(SPEC, input_shape=(10,), classes=3, seed=2)
    r = dpsgd.train(a, x, y, **kw)
    b = dpsgd.Model(SPEC, input_shape=(10,), classes=3, seed=2)
    t = dpsgd.PrivateTrainer(b, x, y, **{k: v for k, v in kw.items() if k != "ema"})
    assert t.steps_per_epoch == r.steps_per_epoch == 6
    for _ in range(3):
        t.epoch()
    assert t.steps == r.steps == 18
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k]), k
    assert t.epsilon() == r.epsilon and t.sigma == r.sigma
    if not extra:
        assert t.noise == "seeded" and "noise_seed stays secret" in repr(t)


def test_sample_then_step_indices_equals_step():
    x, y = data()
    a = dpsgd.Model(SPEC, input_shape=(10,), classes=3, seed=2)
    b = dpsgd.Model(SPEC, input_shape=(10,), classes=3, seed=2)
    ta = dpsgd.PrivateTrainer(a, x, y, **KW)
    tb = dpsgd.PrivateTrainer(b, x, y, **KW)
    for _ in range(4):
        ta.step()
        idx = tb.sample()
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0) and (len(idx) == 0 or idx.max() < len(x))
        tb.step(idx)
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k]), k
    assert ta.epsilon() == tb.epsilon()


def test_secret_source_report_and_lr():
    x, y = data()
    m = dpsgd.Model(SPEC, input_shape=(10,), classes=3)
    t = dpsgd.PrivateTrainer(m, x, y, epochs=2, batch_size=60, noise_multiplier=1.2, accountant="rdp",
                             report_nonprivate=True)
    assert t.noise == "os-csprng" and t.sigma == 1.2 and t.sample_rate == 0.2
    s = t.step()
    assert s.step == 1 and s.non_private["note"] == "not covered by epsilon" and s.non_private["batch"] > 0
    assert np.isfinite(s.non_private["loss"])
    e1 = t.epsilon()
    t.lr = 0.0  # a zero learning rate: the weights stay, epsilon still grows
    w = m.state_dict()
    t.step(np.arange(10))
    assert all(np.array_equal(v, m.state_dict()[k]) for k, v in w.items())
    assert t.epsilon() > e1 and t.steps == 2
    quiet = dpsgd.PrivateTrainer(m, x, y, epochs=1, batch_size=60, noise_multiplier=1.2, accountant="rdp")
    assert quiet.step().non_private is None


def test_trainer_errors():
    x, y = data()
    m = dpsgd.Model(SPEC, input_shape=(10,), classes=3)
    t = dpsgd.PrivateTrainer(m, x, y, epochs=1, batch_size=60, noise_multiplier=1.0, accountant="rdp")
    with pytest.raises(dpsgd.RangeError, match="indices: an index is outside 0..299"):
        t.step([0, 300])
    with pytest.raises(dpsgd.DTypeError, match="indices: expected a 1-d array of integers"):
        t.step(np.zeros(3))
    with pytest.raises(dpsgd.RangeError, match="lr -1: must be >= 0"):
        t.lr = -1
    assert t.steps == 0
    with pytest.raises(dpsgd.RangeError, match="batch_size 400: must be in 1..300"):
        dpsgd.PrivateTrainer(m, x, y, batch_size=400, noise_multiplier=1.0)
    with pytest.raises(dpsgd.RangeError, match="x, y: a label is outside 0..2"):
        dpsgd.PrivateTrainer(m, x, np.full(300, 5), batch_size=40, noise_multiplier=1.0)
    with pytest.raises(dpsgd.InvalidArgument, match="accountant gdp"):
        dpsgd.PrivateTrainer(m, x, y, batch_size=40, accountant="gdp")
    with pytest.raises(dpsgd.RangeError, match="unreachable"):
        dpsgd.PrivateTrainer(m, x, y, batch_size=40, epsilon=1e-4, delta=1e-3)
