"""dpsgd.train against `dpsgd train`: the same flags give bit-identical weights (--noise-seed,
the same thread count and BLAS kernels), the same epsilon, sigma, steps and accuracy; the
held-out split, the non-private report, no_dp; the callback, Ctrl-C, checkpoints and resume;
the error paths."""

import json
import os
import signal
import threading

import numpy as np
import pytest

import dpsgd

SPEC = "conv2d(8,8,s2,p2) tanh maxpool(2,1) flatten linear(10)"


def same_file(a, b):
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()


def test_fashion_mnist_bit_identical_to_cli(fmnist, run_cli, tmp_path):
    """2,000 rows of Fashion-MNIST, 2 epochs: the CLI's weights file and the package's are the
    same bytes, and every figure of its summary agrees."""
    out, wc, wp = tmp_path / "run.json", tmp_path / "cli.safetensors", tmp_path / "py.safetensors"
    run_cli("train", "--data", fmnist, "--model", SPEC, "--train-limit", 2000, "--test-limit", 1000, "--epochs", 2,
            "--batch-size", 256, "--noise-seed", 7, "--seed", 3, "--threads", 2, "--save-weights", wc, "--out", out,
            "--quiet")
    x, y = dpsgd.data.fashion_mnist(train=True, directory=fmnist, limit=2000)
    xt, yt = dpsgd.data.fashion_mnist(train=False, directory=fmnist, limit=1000)
    assert x.shape == (2000, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int32
    model = dpsgd.Model(SPEC, input_shape=(1, 28, 28), classes=10, seed=3)
    r = dpsgd.train(model, x, y, x_test=xt, y_test=yt, epochs=2, batch_size=256, noise_seed=7, threads=2)
    model.save(wp)
    assert same_file(wc, wp), "the weights differ from `dpsgd train`'s"
    cli = json.loads(out.read_text())
    assert r.epsilon == cli["epsilon"] and r.sigma == cli["noise_multiplier"] and r.steps == cli["steps"]
    assert r.test_accuracy == cli["test_accuracy"] and r.test_loss == cli["test_loss"]
    assert r.sample_rate == cli["sample_rate"] and r.noise == "seeded" and r.noise_seed == 7
    assert r.private and not r.stopped and r.test_split == "public" and r.accountant == "prv"
    assert [h.epoch for h in r.history] == [1, 2] and r.history[-1].epsilon == r.epsilon
    assert r.history[-1].test_accuracy == r.test_accuracy and r.history[0].non_private is None
    assert set(r.non_private) == {"note", "seconds", "peak_tracked_bytes"}  # nothing of the data
    assert "epsilon 3.000" in repr(r) and "noise_seed stays secret" in repr(r)
    json.loads(r.to_json())


def test_augmult_bit_identical_to_cli(fmnist, run_cli, tmp_path):
    """augmult=2 (crops of up to 3 pixels, no flips) is `dpsgd train --augmult 2 --augment-pad 3
    --no-flip`: the same weights, bytes for bytes, and the epsilon of the run without it."""
    out, wc, wp = tmp_path / "run.json", tmp_path / "cli.safetensors", tmp_path / "py.safetensors"
    run_cli("train", "--data", fmnist, "--model", SPEC, "--train-limit", 1000, "--test-limit", 100, "--epochs", 1,
            "--batch-size", 250, "--noise-seed", 7, "--seed", 3, "--threads", 2, "--augmult", 2, "--augment-pad", 3,
            "--no-flip", "--save-weights", wc, "--out", out, "--quiet")
    x, y = dpsgd.data.fashion_mnist(train=True, directory=fmnist, limit=1000)
    model = dpsgd.Model(SPEC, input_shape=(1, 28, 28), classes=10, seed=3)
    r = dpsgd.train(model, x, y, epochs=1, batch_size=250, noise_seed=7, threads=2, augmult=2, augment_pad=3,
                    augment_flip=False)
    model.save(wp)
    assert same_file(wc, wp), "the weights differ from `dpsgd train --augmult 2`'s"
    cli = json.loads(out.read_text())
    assert r.epsilon == cli["epsilon"] and cli["augmult"] == 2
    r0 = dpsgd.train(dpsgd.Model(SPEC, input_shape=(1, 28, 28), classes=10, seed=3), x, y, epochs=1, batch_size=250,
                     noise_seed=7, threads=2)
    assert r0.epsilon == r.epsilon and r0.sigma == r.sigma and r0.steps == r.steps


def test_augmult_refusals():
    x, y = small_data()
    model = dpsgd.Model("linear(8) relu linear(3)", input_shape=(12,), classes=3)
    with pytest.raises(dpsgd.InvalidArgument, match="augmult 2: the training data is 12 x 1 x 1, not images"):
        dpsgd.train(model, x, y, epochs=1, batch_size=40, noise_multiplier=1.0, delta=1e-3, augmult=2)
    with pytest.raises(dpsgd.RangeError, match="augmult 65: must be in 0..64"):
        dpsgd.train(model, x, y, epochs=1, batch_size=40, noise_multiplier=1.0, delta=1e-3, augmult=65)


def small_data(n=240, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n).astype(np.int64)
    centers = rng.standard_normal((k, d)) * 2
    x = (centers[y] + rng.standard_normal((n, d))).astype(np.float64)
    return x, y


def test_holdout_report_nonprivate_equal_cli(run_cli, tmp_path):
    """--data-x with --holdout and --report-nonprivate: holdout_split gives the same split, the
    held-out accuracy and the non-private counters come back labelled, as the CLI writes them."""
    x, y = small_data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out, wc, wp = tmp_path / "run.json", tmp_path / "cli.safetensors", tmp_path / "py.safetensors"
    run_cli("train", "--data-x", tmp_path / "x.npy", "--data-labels", tmp_path / "y.npy", "--classes", 3,
            "--holdout", 0.2, "--model", "linear(16) relu linear(3)", "--epochs", 3, "--batch-size", 48,
            "--noise-multiplier", 1.0, "--accountant", "rdp", "--lr", 0.5, "--max-grad-norm", 1, "--noise-seed", 11,
            "--report-nonprivate", "--threads", 2, "--save-weights", wc, "--out", out, "--quiet")
    xtr, ytr, xte, yte = dpsgd.holdout_split(x, y, 0.2)
    assert len(xtr) == 192 and len(xte) == 48
    model = dpsgd.Model("linear(16) relu linear(3)", input_shape=(12,), classes=3)
    r = dpsgd.train(model, xtr, ytr, x_test=xte, y_test=yte, test_private=True, report_nonprivate=True, epochs=3,
                    batch_size=48, noise_multiplier=1.0, accountant="rdp", lr=0.5, max_grad_norm=1, noise_seed=11,
                    threads=2)
    model.save(wp)
    assert same_file(wc, wp)
    cli = json.loads(out.read_text())
    assert cli["test_accuracy"] is None and r.test_accuracy is None  # held out of the private data
    assert r.test_split == cli["test_split"] == "held out from the private data"
    for k in ("mean_batch", "empty_batches", "nonfinite_samples", "heldout_test_accuracy", "heldout_test_loss"):
        assert r.non_private[k] == pytest.approx(cli["non_private"][k], rel=0, abs=1e-3 if k == "mean_batch" else 0), k
    assert r.epsilon == cli["epsilon"] and r.sigma == 1.0
    h = r.history[-1]
    assert h.test_accuracy is None and h.non_private["heldout_test_accuracy"] == r.non_private["heldout_test_accuracy"]
    assert np.isfinite(h.non_private["train_loss"])
    assert "not shown (held out of the private data" in repr(r)


def test_no_dp_equals_cli(run_cli, tmp_path):
    x, y = small_data(seed=2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "xt.npy", x[:30])
    np.save(tmp_path / "yt.npy", y[:30])
    wc, wp = tmp_path / "cli.safetensors", tmp_path / "py.safetensors"
    run_cli("train", "--data-x", tmp_path / "x.npy", "--data-labels", tmp_path / "y.npy", "--test-x",
            tmp_path / "xt.npy", "--test-labels", tmp_path / "yt.npy", "--classes", 3, "--model", "mlp", "--no-dp",
            "--epochs", 2, "--batch-size", 32, "--lr", 0.1, "--seed", 5, "--threads", 2, "--save-weights", wc,
            "--quiet")
    model = dpsgd.Model("mlp", input_shape=(12,), classes=3, seed=5)
    r = dpsgd.train(model, x, y, x_test=x[:30], y_test=y[:30], no_dp=True, epochs=2, batch_size=32, lr=0.1, threads=2)
    model.save(wp)
    assert same_file(wc, wp)
    assert not r.private and r.noise == "none" and r.epsilon == 0.0 and r.sigma is None
    assert "non-private: no privacy guarantee" in repr(r)


def test_adaptive_clipping_equals_cli(run_cli, tmp_path):
    """clip_quantile= is --clip-quantile and lr_schedule= --lr-schedule: the same weights, the same final C
    and multipliers."""
    x, y = small_data(seed=4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    wc, wp, out = tmp_path / "cli.safetensors", tmp_path / "py.safetensors", tmp_path / "run.json"
    np.save(tmp_path / "xt.npy", x[:30])
    np.save(tmp_path / "yt.npy", y[:30])
    run_cli("train", "--data-x", tmp_path / "x.npy", "--data-labels", tmp_path / "y.npy", "--test-x",
            tmp_path / "xt.npy", "--test-labels", tmp_path / "yt.npy", "--classes", 3, "--model", "mlp", "--epochs", 3, "--batch-size", 32, "--lr", 0.1, "--noise-seed", 2, "--threads", 2,
            "--clip-quantile", 0.6, "--clip-lr", 0.3, "--clip-count-noise", 4, "--lr-schedule", "cosine",
            "--save-weights", wc, "--out", out, "--quiet")
    model = dpsgd.Model("mlp", input_shape=(12,), classes=3, seed=0)
    r = dpsgd.train(model, x, y, x_test=x[:30], y_test=y[:30], epochs=3, batch_size=32, lr=0.1, noise_seed=2,
                    threads=2, lr_schedule="cosine", clip_quantile=0.6,
                    clip_lr=0.3, clip_count_noise=4)
    model.save(wp)
    assert same_file(wc, wp)
    cli = json.loads(out.read_text())
    assert r.max_grad_norm_final == cli["max_grad_norm_final"] != 0.1
    assert r.noise_multiplier_gradient == cli["noise_multiplier_gradient"] > r.sigma == cli["noise_multiplier"]
    with pytest.raises(dpsgd.InvalidArgument, match="lr_schedule 'linear'"):
        dpsgd.train(model, x, y, epochs=1, batch_size=32, lr_schedule="linear")
    with pytest.raises(dpsgd.InvalidArgument, match="clip_quantile"):
        dpsgd.train(model, x, y, epochs=1, batch_size=32, clip_lr=0.3)
    with pytest.raises(dpsgd.RangeError, match="clip_count_noise 0.1"):
        dpsgd.train(model, x, y, epochs=1, batch_size=32, clip_quantile=0.5, clip_count_noise=0.1)


def test_secret_noise_by_default():
    x, y = small_data(n=120)
    w = []
    for _ in range(2):
        m = dpsgd.Model("linear(3)", input_shape=(12,), classes=3)
        r = dpsgd.train(m, x, y, epochs=1, batch_size=40, noise_multiplier=1.0, accountant="rdp", lr=0.1)
        assert r.noise == "os-csprng" and r.noise_seed is None
        w.append(m.state_dict()["0.weight"])
    assert not np.array_equal(w[0], w[1])  # fresh secret noise each run
    assert "noise_seed" not in repr(r)


def test_callback_stops_early_with_the_epsilon_spent():
    x, y = small_data(n=200)
    seen = []

    def cb(rec):
        seen.append(rec)
        return rec.epoch < 2  # stop after the second epoch

    m = dpsgd.Model("linear(3)", input_shape=(12,), classes=3)
    r = dpsgd.train(m, x, y, x_test=x[:50], y_test=y[:50], epochs=5, batch_size=50, epsilon=2.0, delta=1e-3,
                    accountant="rdp", lr=0.1, callback=cb)
    assert r.stopped and [s.epoch for s in seen] == [1, 2] and r.steps == 8 and r.steps_per_epoch == 4
    # the epsilon of the steps done, with the sigma calibrated for the 5 epochs
    assert r.sigma == dpsgd.noise_multiplier(target_epsilon=2.0, delta=1e-3, dataset_size=200, batch_size=50,
                                              epochs=5, accountant="rdp")
    assert r.epsilon == dpsgd.epsilon(sample_rate=0.25, noise_multiplier=r.sigma, steps=8, delta=1e-3,
                                      accountant="rdp")
    assert r.epsilon < 2.0 and "stopped early after 2 of 5 epochs" in repr(r)
    assert r.test_accuracy == seen[-1].test_accuracy is not None


def test_callback_exception_is_raised():
    x, y = small_data(n=100)

    def cb(rec):
        raise ValueError("from the callback")

    m = dpsgd.Model("linear(3)", input_shape=(12,), classes=3)
    with pytest.raises(ValueError, match="from the callback") as e:
        dpsgd.train(m, x, y, epochs=3, batch_size=50, noise_multiplier=1.0, accountant="rdp", callback=cb)
    assert isinstance(e.value.__cause__, dpsgd.Interrupted)
    assert "stopped on request after 2 of 6 steps" in str(e.value.__cause__)


@pytest.fixture
def sigint_default():
    """Python's own SIGINT handler for the test: a suite started in the background (nohup, `&`)
    inherits an ignored SIGINT, which dpsgd.train rightly leaves ignored, and the test would then
    see no interruption (DID NOT RAISE)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_checkpoint_and_resume_bit_identical(tmp_path, sigint_default):
    """SIGINT while dp_train runs: it stops at a step boundary with the checkpoint written and
    raises Interrupted (a KeyboardInterrupt); resuming gives the weights and epsilon of a run never
    interrupted."""
    x, y = small_data(n=400, d=30)
    kw = dict(epochs=60, batch_size=40, noise_multiplier=1.0, accountant="rdp", lr=0.2, noise_seed=5, threads=1)
    ref = dpsgd.Model("linear(32) tanh linear(3)", input_shape=(30,), classes=3, seed=1)
    full = dpsgd.train(ref, x, y, **kw)
    ck = tmp_path / "ck"
    m = dpsgd.Model("linear(32) tanh linear(3)", input_shape=(30,), classes=3, seed=1)
    fired = []

    def kick(rec):  # the first epoch's end: a timer sends SIGINT while the C loop runs
        if not fired:
            fired.append(threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)))
            fired[0].start()

    with pytest.raises(dpsgd.Interrupted) as e:
        dpsgd.train(m, x, y, checkpoint_dir=ck, checkpoint_every=3, callback=kick, **kw)
    fired[0].join()
    assert isinstance(e.value, KeyboardInterrupt)
    msg = str(e.value)
    assert "stopped on request after" in msg and "checkpoint" in msg and e.value.checkpoint == ck
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert (ck / "checkpoint.safetensors").exists()
    resumed = dpsgd.Model("linear(32) tanh linear(3)", input_shape=(30,), classes=3, seed=1)
    r = dpsgd.train(resumed, x, y, resume=ck, checkpoint_dir=ck, **kw)
    assert r.history[0].epoch > 1  # it went on from the checkpoint
    assert r.steps == full.steps and r.epsilon == full.epsilon
    for k, v in ref.state_dict().items():
        assert np.array_equal(v, resumed.state_dict()[k]), k


def test_train_errors(tmp_path):
    x, y = small_data(n=100)
    m = dpsgd.Model("linear(3)", input_shape=(12,), classes=3)
    kw = dict(epochs=1, batch_size=20, noise_multiplier=1.0, accountant="rdp")
    bad = y.copy()
    bad[17] = 41
    with pytest.raises(dpsgd.RangeError, match="x, y: a label is outside 0..2") as e:
        dpsgd.train(m, x, bad, **kw)
    assert "41" not in str(e.value) and "17" not in str(e.value)  # no private value, no row
    nan = x.copy()
    nan[3, 4] = np.nan
    with pytest.raises(dpsgd.NonFiniteError, match="x, y: a value is not finite"):
        dpsgd.train(m, nan, y, **kw)
    with pytest.raises(dpsgd.InvalidArgument, match=r"x: shape \(100, 13\): the model takes \[N, 12\]"):
        dpsgd.train(m, np.zeros((100, 13)), y, **kw)
    with pytest.raises(dpsgd.DTypeError, match="y: dtype float64: labels must be integers"):
        dpsgd.train(m, x, y.astype(float), **kw)
    with pytest.raises(dpsgd.InvalidArgument, match=r"y: shape \(99,\)"):
        dpsgd.train(m, x, y[:99], **kw)
    with pytest.raises(dpsgd.RangeError, match="batch_size 500: must be in 1..100"):
        dpsgd.train(m, x, y, epochs=1, batch_size=500, noise_multiplier=1.0)
    with pytest.raises(dpsgd.RangeError, match="delta 0.1: must be below 1/n"):
        dpsgd.train(m, x, y, delta=0.1, **kw)
    with pytest.raises(dpsgd.RangeError, match="unreachable"):
        dpsgd.train(m, x, y, epsilon=1e-4, delta=1e-3, epochs=1, batch_size=50)
    with pytest.raises(dpsgd.InvalidArgument, match="accountant gdp"):
        dpsgd.train(m, x, y, epochs=1, batch_size=20, accountant="gdp")
    with pytest.raises(dpsgd.RangeError, match="ema 1.5"):
        dpsgd.train(m, x, y, ema=1.5, **kw)
    with pytest.raises(dpsgd.RangeError, match="momentum 1.5"):
        dpsgd.train(m, x, y, momentum=1.5, **kw)
    # a noise std (sigma x C) that is not finite: dp_train would stop on an internal invariant
    # (an abort; `dpsgd train --noise-multiplier 1e300 --max-grad-norm 1e300` does), found by the fuzz
    with pytest.raises(dpsgd.RangeError, match="noise std .* must be a finite number"):
        dpsgd.train(m, x, y, epochs=1, batch_size=20, noise_multiplier=float("inf"))
    with pytest.raises(dpsgd.RangeError, match="noise_multiplier 1e\\+300, max_grad_norm 1e\\+300"):
        dpsgd.train(m, x, y, epochs=1, batch_size=20, noise_multiplier=1e300, max_grad_norm=1e300)
    with pytest.raises(dpsgd.RangeError, match="noise std"):
        dpsgd.PrivateTrainer(m, x, y, epochs=1, batch_size=20, noise_multiplier=1e300, max_grad_norm=1e300)
    with pytest.raises(dpsgd.InvalidArgument, match="noise_seed: contradicts no_dp"):
        dpsgd.train(m, x, y, no_dp=True, noise_seed=3, epochs=1, batch_size=20)
    with pytest.raises(dpsgd.InvalidArgument, match="checkpoint_every: needs checkpoint_dir"):
        dpsgd.train(m, x, y, checkpoint_every=2, **kw)
    with pytest.raises(dpsgd.InvalidArgument, match="x_test and y_test go together"):
        dpsgd.train(m, x, y, x_test=x, **kw)
    with pytest.raises(dpsgd.Error, match="nothere"):
        dpsgd.train(m, x, y, resume=tmp_path / "nothere", **kw)
    with pytest.raises(dpsgd.DTypeError, match="model: expected a dpsgd.Model"):
        dpsgd.train("cnn", x, y, **kw)
    with pytest.raises(dpsgd.InvalidArgument, match="clipping 'fastest'"):
        dpsgd.train(m, x, y, clipping="fastest", **kw)
    with pytest.raises(dpsgd.InvalidArgument, match="mem_budget '2 parsecs'"):
        dpsgd.train(m, x, y, mem_budget="2 parsecs", **kw)
    t = dpsgd.Model("embedding(10,4) meanpool linear(2)", input_shape=(5,))
    ids = np.zeros((30, 5), np.int64)
    ids[4, 2] = 10
    with pytest.raises(dpsgd.RangeError, match=r"x \(token ids\)") as e:
        dpsgd.train(t, ids, np.zeros(30, np.int64), **kw)
    # the failed calls changed nothing: a good run still works
    r = dpsgd.train(m, x, y, **kw)
    assert r.steps == 5


def test_options_reach_the_library():
    """Options of `dpsgd train` the loop exposes: physical batches give the same result; Adam; EMA;
    frozen layers stay; mem_budget strings."""
    x, y = small_data(n=160)
    base = dict(epochs=2, batch_size=40, noise_multiplier=1.0, accountant="rdp", noise_seed=3, threads=1)
    a = dpsgd.Model("linear(8) relu linear(3)", input_shape=(12,), classes=3)
    b = dpsgd.Model("linear(8) relu linear(3)", input_shape=(12,), classes=3)
    dpsgd.train(a, x, y, **base)
    dpsgd.train(b, x, y, physical_batch=7, clipping="ghost", mem_budget="64MiB", **base)
    for k, v in a.state_dict().items():
        assert np.allclose(v, b.state_dict()[k], atol=1e-5), k
    c = dpsgd.Model("linear(8) relu linear(3)", input_shape=(12,), classes=3)
    c.freeze(0)
    w0 = c.state_dict()["0.weight"]
    r = dpsgd.train(c, x, y, optimizer="adam", lr=1e-2, ema=0.9, **base)
    assert np.array_equal(c.state_dict()["0.weight"], w0) and r.steps == 8
    assert dpsgd.training._size("mem_budget", "2GiB") == 2 << 30 and dpsgd.training._size("m", "5MB") == 5 * 10**6
