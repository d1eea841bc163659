"""Regression (loss="mse"): float targets [N, K] or [N], K the model's outputs, trained with the
per-example mean squared error by dpsgd.train and PrivateTrainer and evaluated by
Model.evaluate; the CLI's `--loss mse` gives the same weights; the results say mse, not
accuracy; holdout_split carries 2-D targets; bad targets and bad loss names are refused."""

import json

import numpy as np
import pytest

import dpsgd

# y = A x + b (+ a little noise), as tests/test_train.c test_regression
A = np.array([[0.8, -0.5, 0.3, 0.0], [-0.2, 0.6, 0.0, 0.9]])
B = np.array([0.5, -0.3])


def linear_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    t = (x @ A.T + B + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)
    return x, t


def zero_model():
    m = dpsgd.Model("linear(2)", input_shape=(4,))
    m.parameters()[:] = 0
    return m


KW = dict(batch_size=40, epochs=8, momentum=0.9, threads=2)


@pytest.mark.parametrize("private", [False, True])
def test_learns_a_linear_map(private):
    """400 rows, 8 epochs of expected batch 40: the test MSE falls from > 0.5 (zero weights) to
    < 0.02 without DP and < 0.1 with sigma 0.5, C 1; every figure says mse, none accuracy."""
    x, t = linear_data(400, 5)
    xt, tt = linear_data(200, 6)
    m = zero_model()
    acc0, mse0 = m.evaluate(xt, tt, loss="mse")
    assert acc0 is None and mse0 > 0.5
    seen = []
    if private:
        r = dpsgd.train(m, x, t, x_test=xt, y_test=tt, loss="mse", noise_multiplier=0.5, max_grad_norm=1.0, lr=0.5,
                        noise_seed=7, accountant="rdp", callback=seen.append, **KW)
    else:
        r = dpsgd.train(m, x, t, x_test=xt, y_test=tt, loss="mse", no_dp=True, lr=0.1, callback=seen.append, **KW)
    acc, mse = m.evaluate(xt, tt, loss="mse")
    print("test mse %s: %.6g -> %.6g" % ("private" if private else "no_dp", mse0, mse))
    assert mse == pytest.approx(np.mean((m.logits(xt).astype(np.float64) - tt) ** 2), rel=1e-5)
    assert mse0 == pytest.approx(np.mean(tt.astype(np.float64) ** 2), rel=1e-6)  # zero weights: outputs 0
    assert acc is None and mse < (0.1 if private else 0.02)
    assert r.loss == "mse" and r.test_accuracy is None and r.test_mse == r.test_loss == mse
    assert r.private == private and (r.epsilon > 0) == private
    assert len(seen) == 8 and seen == r.history
    assert all(h.test_accuracy is None and h.test_loss is not None and np.isfinite(h.test_loss) for h in seen)
    assert seen[-1].test_loss == mse and seen[0].test_loss < mse0
    assert "test mse %.6g" % mse in repr(r) and "accuracy" not in repr(r)
    j = json.loads(r.to_json())
    assert j["loss"] == "mse" and j["test_accuracy"] is None and j["test_loss"] == mse
    assert all(h["test_accuracy"] is None and h["test_loss"] is not None for h in j["history"])


def test_one_output_targets_1d_and_2d_no_copy():
    """K = 1: targets [N] or [N, 1], any real dtype (integers too); a C-contiguous float32 array
    is used in place; the two shapes train to the same weights."""
    from dpsgd.training import _Data
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 3)).astype(np.float32)
    t = (x @ np.array([1.0, -2.0, 0.5]) + 0.25).astype(np.float32)
    m = dpsgd.Model("linear(1)", input_shape=(3,))
    d = _Data(m, x, t, "x", "y", min_rows=2, mse=True)
    assert d.t.shape == (200, 1) and np.shares_memory(d.t, t)
    assert d.ds.n_targets == 1 and d.ds.n_classes == 1 and not d.y.any()
    d = _Data(m, x, np.round(t).astype(np.int64), "x", "y", min_rows=2, mse=True)
    assert d.t.dtype == np.float32 and np.array_equal(d.t[:, 0], np.round(t))
    w = []
    for y in (t.astype(np.float64), t[:, None]):
        m = dpsgd.Model("linear(1)", input_shape=(3,), seed=4)
        _, mse0 = m.evaluate(x[:50], y[:50], loss="mse")
        r = dpsgd.train(m, x, y, x_test=x[:50], y_test=y[:50], loss="mse", no_dp=True, lr=0.1, **KW)
        w.append(m.parameters().copy())
        assert mse0 > 1 and r.test_mse < 0.05
    assert np.array_equal(w[0], w[1])


def test_equals_cli_loss_mse_with_holdout(run_cli, tmp_path):
    """`dpsgd train --data-x X --data-labels T --loss mse --holdout 0.2 --report-nonprivate`:
    holdout_split with 2-D targets holds out the same rows, the weights are the same bytes and the
    held-out test mse is the CLI's (labelled, under non_private; no accuracy anywhere)."""
    x, t = linear_data(400, 11)
    x64 = x.astype(np.float64)
    np.save(tmp_path / "x.npy", x64)
    np.save(tmp_path / "t.npy", t.astype(np.float64))
    out, wc, wp = tmp_path / "run.json", tmp_path / "cli.safetensors", tmp_path / "py.safetensors"
    run_cli("train", "--data-x", tmp_path / "x.npy", "--data-labels", tmp_path / "t.npy", "--loss", "mse",
            "--holdout", 0.2, "--model", "linear(8) tanh linear(2)", "--epochs", 3, "--batch-size", 40,
            "--noise-multiplier", 0.8, "--accountant", "rdp", "--lr", 0.3, "--max-grad-norm", 1, "--noise-seed", 5,
            "--seed", 2, "--report-nonprivate", "--threads", 2, "--save-weights", wc, "--out", out, "--quiet")
    xtr, ttr, xte, tte = dpsgd.holdout_split(x64, t.astype(np.float64), 0.2)
    assert xtr.shape == (320, 4) and ttr.shape == (320, 2) and xte.shape == (80, 4) and tte.shape == (80, 2)
    model = dpsgd.Model("linear(8) tanh linear(2)", input_shape=(4,), seed=2)
    r = dpsgd.train(model, xtr, ttr, x_test=xte, y_test=tte, test_private=True, loss="mse", report_nonprivate=True,
                    epochs=3, batch_size=40, noise_multiplier=0.8, accountant="rdp", lr=0.3, max_grad_norm=1,
                    noise_seed=5, threads=2)
    model.save(wp)
    assert wp.read_bytes() == wc.read_bytes(), "the weights differ from `dpsgd train --loss mse`'s"
    cli = json.loads(out.read_text())
    assert cli["loss"] == r.loss == "mse"
    assert r.test_accuracy is None and r.test_loss is None and r.test_mse is None  # held out: not at the top
    assert r.non_private["heldout_test_loss"] == cli["non_private"]["heldout_test_loss"]
    assert "heldout_test_accuracy" not in r.non_private and "heldout_test_accuracy" not in cli["non_private"]
    assert r.epsilon == cli["epsilon"] and r.steps == cli["steps"]
    h = r.history[-1]
    assert h.test_accuracy is None and h.test_loss is None
    assert h.non_private["heldout_test_loss"] == r.non_private["heldout_test_loss"]
    assert "heldout_test_accuracy" not in h.non_private
    assert model.evaluate(xte, tte, loss="mse") == (None, r.non_private["heldout_test_loss"])
    assert "test mse not shown (held out of the private data" in repr(r)


def test_holdout_split_2d_targets():
    """The held-out rows of 2-D targets are those of 1-D labels of the same length, and each
    target row stays with its feature row."""
    x, t = linear_data(97, 3)
    xtr, ttr, xte, tte = dpsgd.holdout_split(x, t, 0.25)
    _, ltr, _, lte = dpsgd.holdout_split(x, np.arange(97), 0.25)
    assert ttr.shape == (97 - 24, 2) and tte.shape == (24, 2)
    assert np.array_equal(ttr, t[ltr]) and np.array_equal(tte, t[lte])
    assert np.array_equal(xtr, x[ltr]) and np.array_equal(xte, x[lte])
    _, t1, _, t1e = dpsgd.holdout_split(x, t[:, 0], 0.25)  # [N] targets too
    assert np.array_equal(t1, t[ltr, 0]) and np.array_equal(t1e, t[lte, 0])
    with pytest.raises(dpsgd.InvalidArgument, match=r"y: shape \(96, 2\): expected \[97\]"):
        dpsgd.holdout_split(x, t[:96], 0.25)
    with pytest.raises(dpsgd.InvalidArgument, match=r"y: shape \(97, 2, 1\)"):
        dpsgd.holdout_split(x, t[:, :, None], 0.25)


def test_private_trainer_mse():
    """The step API with loss="mse": steps and epsilon as train()'s, bit-identical weights with
    the same noise_seed, the non-private step loss is the MSE, and the model learns."""
    x, t = linear_data(400, 5)
    xt, tt = linear_data(200, 6)
    kw = dict(noise_multiplier=0.5, max_grad_norm=1.0, lr=0.5, noise_seed=3, accountant="rdp", **KW)
    a = zero_model()
    r = dpsgd.train(a, x, t, loss="mse", **kw)
    b = zero_model()
    tr = dpsgd.PrivateTrainer(b, x, t, loss="mse", report_nonprivate=True, **kw)
    assert tr.loss == "mse" and tr.private and tr.steps_per_epoch == 10
    _, mse0 = b.evaluate(xt, tt, loss="mse")
    losses = []
    for _ in range(8):
        s = tr.epoch()
        losses.append(s.non_private["loss"])
    assert tr.steps == r.steps == 80
    assert tr.epsilon() == r.epsilon > 0 and "epsilon %.3f" % r.epsilon in repr(tr)
    assert np.array_equal(a.parameters(), b.parameters())
    acc, mse = b.evaluate(xt, tt, loss="mse")
    print("PrivateTrainer test mse: %.6g -> %.6g" % (mse0, mse))
    assert mse == pytest.approx(np.mean((b.logits(xt).astype(np.float64) - tt) ** 2), rel=1e-5)
    assert acc is None and mse0 > 0.5 and mse < 0.1
    assert all(np.isfinite(losses)) and losses[-1] < 0.2


def test_refusals():
    x, t = linear_data(60, 2)
    m = dpsgd.Model("linear(2)", input_shape=(4,))
    m3 = dpsgd.Model("linear(3)", input_shape=(4,))
    # the targets' width is not the model's outputs
    with pytest.raises(dpsgd.InvalidArgument, match=r"y: shape \(60, 2\): expected \[60, 3\].*which has 3"):
        dpsgd.train(m3, x, t, loss="mse", no_dp=True, epochs=1, batch_size=10)
    with pytest.raises(dpsgd.InvalidArgument, match=r"y: shape \(60,\): expected \[60, 2\]"):
        dpsgd.train(m, x, t[:, 0], loss="mse", no_dp=True, epochs=1, batch_size=10)
    with pytest.raises(dpsgd.InvalidArgument, match=r"y_test: shape \(10, 3\)"):
        dpsgd.train(m, x, t, x_test=x[:10], y_test=np.zeros((10, 3)), loss="mse", no_dp=True, epochs=1,
                    batch_size=10)
    with pytest.raises(dpsgd.InvalidArgument, match=r"y: shape \(60, 2\): expected \[60, 3\]"):
        dpsgd.PrivateTrainer(m3, x, t, loss="mse", noise_multiplier=1.0, epochs=1, batch_size=10)
    with pytest.raises(dpsgd.InvalidArgument, match=r"y: shape \(60, 2\): expected \[60, 3\]"):
        m3.evaluate(x, t, loss="mse")
    # non-finite targets: the library's check, naming the argument and the rule, never the value
    for bad, name in ((np.nan, "y"), (np.inf, "y"), (1e39, "y")):
        tb = t.astype(np.float64)
        tb[17, 1] = bad
        with pytest.raises(dpsgd.NonFiniteError, match="regression target is not finite") as e:
            with np.errstate(over="ignore"):
                dpsgd.train(m, x, tb, loss="mse", no_dp=True, epochs=1, batch_size=10)
        assert str(e.value).startswith("x, y:") and "17" not in str(e.value)
    tb = t.copy()
    tb[3, 0] = np.nan
    with pytest.raises(dpsgd.NonFiniteError, match=r"^x_test, y_test: a regression target is not finite"):
        dpsgd.train(m, x, t, x_test=x, y_test=tb, loss="mse", no_dp=True, epochs=1, batch_size=10)
    with pytest.raises(dpsgd.NonFiniteError, match="regression target is not finite"):
        dpsgd.PrivateTrainer(m, x, tb, loss="mse", noise_multiplier=1.0, epochs=1, batch_size=10)
    with pytest.raises(dpsgd.NonFiniteError, match="regression target is not finite"):
        m.evaluate(x, tb, loss="mse")
    # dtypes: real numbers only
    for bad in (t.astype(np.complex64), t.astype(bool), t.astype(object), t.astype("U8")):
        with pytest.raises(dpsgd.DTypeError, match=r"y: dtype .*: regression targets must be real numbers"):
            dpsgd.train(m, x, bad, loss="mse", no_dp=True, epochs=1, batch_size=10)
    # float targets without loss="mse": refused, pointing at it
    for call in (lambda: dpsgd.train(m, x, t, no_dp=True, epochs=1, batch_size=10),
                 lambda: dpsgd.train(m, x, t[:, 0], no_dp=True, epochs=1, batch_size=10),
                 lambda: dpsgd.PrivateTrainer(m, x, t[:, 0], noise_multiplier=1.0, epochs=1, batch_size=10),
                 lambda: m.evaluate(x, t[:, 0])):
        with pytest.raises(dpsgd.InvalidArgument, match=r"labels must be integers.*for regression targets pass "
                                                        r"loss='mse'|for regression targets \[N, K\] pass loss='mse'"):
            call()
    with pytest.raises(dpsgd.InvalidArgument, match=r"for regression targets \[N, K\] pass loss='mse'"):
        dpsgd.train(m, x, np.zeros((60, 2), np.int64), no_dp=True, epochs=1, batch_size=10)
    # the loss's name
    for call in (lambda v: dpsgd.train(m, x, t, loss=v, no_dp=True, epochs=1, batch_size=10),
                 lambda v: dpsgd.PrivateTrainer(m, x, t, loss=v, noise_multiplier=1.0, epochs=1, batch_size=10),
                 lambda v: m.evaluate(x, t, loss=v)):
        with pytest.raises(dpsgd.InvalidArgument, match=r"^loss 'l2': must be one of xent, mse$"):
            call("l2")
        with pytest.raises(dpsgd.DTypeError, match=r"^loss: expected one of xent, mse"):
            call(2)
    # a mixed pair is impossible: loss applies to both sets; and the model is unchanged by refusals
    w = m.parameters().copy()
    with pytest.raises(dpsgd.InvalidArgument, match=r"y_test: shape \(60,\): expected \[60, 2\]"):
        dpsgd.train(m, x, t, x_test=x, y_test=np.zeros(60, np.int64), loss="mse", no_dp=True, epochs=1, batch_size=10)
    assert np.array_equal(w, m.parameters())


def test_callback_stop_and_xent_unchanged():
    """A callback that stops a regression run early: the result has no accuracy and the last
    epoch's mse; a classification run still reports its accuracy and says so."""
    x, t = linear_data(200, 8)
    m = zero_model()
    r = dpsgd.train(m, x, t, x_test=x[:50], y_test=t[:50], loss="mse", noise_multiplier=1.0, max_grad_norm=1.0,
                    lr=0.5, noise_seed=1, callback=lambda rec: rec.epoch < 2, **KW)
    assert r.stopped and len(r.history) == 2 and r.test_accuracy is None
    assert r.test_mse == r.history[-1].test_loss and r.test_mse is not None
    assert "test mse" in repr(r) and "stopped early after 2 of 8 epochs" in repr(r)
    y = (x[:, 0] > 0).astype(np.int64)
    c = dpsgd.Model("linear(2)", input_shape=(4,))
    r = dpsgd.train(c, x, y, x_test=x[:50], y_test=y[:50], no_dp=True, lr=0.1, **KW)
    assert r.loss == "xent" and r.test_mse is None and 0 <= r.test_accuracy <= 1
    assert r.history[-1].test_accuracy == r.test_accuracy and "test accuracy" in repr(r)
    acc, xent = c.evaluate(x[:50], y[:50])
    assert acc == r.test_accuracy and xent == r.test_loss
