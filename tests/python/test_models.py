"""dpsgd.Model: building (spec, built-in name, ONNX file, transformer), state_dict with PyTorch's
names and shapes (copies and views), load_state_dict, safetensors files, inference, freezing."""

import os

import numpy as np
import pytest

import dpsgd

SPEC = "conv2d(4,3,p1) relu maxpool(2) flatten linear(16) tanh linear(5)"


def small():
    return dpsgd.Model(SPEC, input_shape=(2, 8, 8), classes=5, seed=3)


def test_builtin_cnn():
    m = dpsgd.Model("cnn", input_shape=(1, 28, 28), classes=10)
    assert m.num_params == 26010 == m.num_trainable  # the Tramer-Boneh CNN (README)
    assert [l.kind for l in m.layers][:3] == ["conv2d", "tanh", "maxpool"]
    assert m.classes == 10 and m.input_size == 784 and not m.is_tokens
    assert "26010" in m.describe().replace(",", "")


def test_state_dict_names_shapes_and_copies():
    m = small()
    sd = m.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "4.weight", "4.bias", "6.weight", "6.bias"]
    assert sd["0.weight"].shape == (4, 2, 3, 3) and sd["4.weight"].shape == (16, 64) and sd["6.bias"].shape == (5,)
    assert all(v.dtype == np.float32 for v in sd.values())
    assert sum(v.size for v in sd.values()) == m.num_params
    # copies: changing them changes nothing
    sd["0.weight"][...] = 7
    assert not np.any(m.state_dict()["0.weight"] == 7)
    # views: they alias the model's parameters and keep the model alive
    views = m.state_dict(copy=False)
    views["6.bias"][...] = 0.25
    assert np.all(m.state_dict()["6.bias"] == 0.25)
    flat = m.parameters()
    assert flat.shape == (m.num_params,) and flat[-1] == 0.25
    del m
    assert np.all(views["6.bias"] == 0.25)  # the block is still alive


def test_init_is_the_cli_seeded_init():
    a, b, c = small(), small(), dpsgd.Model(SPEC, input_shape=(2, 8, 8), classes=5, seed=4)
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k])
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def test_state_dict_round_trip_and_logits():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 2, 8, 8)).astype(np.float32)
    a = small()
    b = dpsgd.Model(SPEC, input_shape=(2, 8, 8), seed=99)
    assert not np.array_equal(a.logits(x), b.logits(x))
    missing, unexpected = b.load_state_dict(a.state_dict())
    assert missing == [] and unexpected == []
    assert np.array_equal(a.logits(x), b.logits(x))
    # float64 values are converted; [N, D] rows work as well as [N, C, H, W]
    b.load_state_dict({k: v.astype(np.float64) for k, v in a.state_dict().items()})
    assert np.array_equal(a.logits(x.reshape(7, -1)), b.logits(x))
    assert np.array_equal(b.predict(x), a.logits(x).argmax(1))
    assert b.logits(x, batch_size=3).shape == (7, 5)


def test_load_state_dict_refusals_leave_the_model_unchanged():
    m = small()
    before = m.state_dict()

    def unchanged():
        for k, v in m.state_dict().items():
            assert np.array_equal(v, before[k]), k

    bad = dict(before)
    bad["4.weight"] = np.zeros((16, 65), np.float32)
    with pytest.raises(dpsgd.InvalidArgument, match=r"state\['4.weight'\]: shape \(16, 65\), the model's is \(16, 64\)"):
        m.load_state_dict(bad)
    unchanged()
    bad = dict(before)
    bad["0.bias"] = np.array([1, np.nan, 0, 0], np.float32)
    bad["0.weight"] = np.ones((4, 2, 3, 3), np.float32)  # checked before anything is copied
    with pytest.raises(dpsgd.NonFiniteError, match=r"state\['0.bias'\]"):
        m.load_state_dict(bad)
    unchanged()
    with pytest.raises(dpsgd.InvalidArgument, match="missing 6.bias; unexpected extra"):
        m.load_state_dict({**{k: v for k, v in before.items() if k != "6.bias"}, "extra": np.zeros(1)})
    unchanged()
    with pytest.raises(dpsgd.DTypeError, match=r"state\['0.bias'\]: dtype complex"):
        m.load_state_dict({**before, "0.weight": np.ones((4, 2, 3, 3)), "0.bias": np.zeros(4, np.complex64)})
    unchanged()
    # strict=False: a subset, and names the model lacks are reported
    missing, unexpected = m.load_state_dict({"6.bias": np.ones(5), "x": 1}, strict=False)
    assert "6.bias" not in missing and "0.weight" in missing and unexpected == ["x"]
    assert np.all(m.state_dict()["6.bias"] == 1)


def test_safetensors_round_trip(tmp_path):
    a, b = small(), dpsgd.Model(SPEC, input_shape=(2, 8, 8), seed=5)
    path = tmp_path / "w.safetensors"
    a.save(path)
    b.load(str(path))
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k])
    other = dpsgd.Model("flatten linear(5)", input_shape=(2, 8, 8))
    with pytest.raises(dpsgd.Error, match="w.safetensors"):
        other.load(path)
    with pytest.raises(dpsgd.IOFailure, match="nowhere"):
        a.load(tmp_path / "nowhere.safetensors")
    with pytest.raises(dpsgd.IOFailure):
        a.save(tmp_path / "no" / "dir" / "w.safetensors")


def test_onnx_model_matches_pytorch_logits(root, tmp_path):
    ref = os.path.join(root, "tests", "reference", "onnx")
    m = dpsgd.Model(os.path.join(ref, "cnn_gn.onnx"))
    x = np.load(os.path.join(ref, "cnn_gn.x.npy"))
    logits = np.load(os.path.join(ref, "cnn_gn.logits.npy"))
    assert m.classes == 10 and m.input_size == 144
    assert np.allclose(m.logits(x), logits, atol=1e-5)  # PyTorch's own logits for the file's weights
    assert "0.weight" in m.state_dict()  # the state_dict's names
    # the graph written back with changed weights reads back with them
    sd = m.state_dict()
    sd["0.weight"] *= 0.5
    m.load_state_dict(sd)
    out = tmp_path / "back.onnx"
    m.save_onnx(out)
    back = dpsgd.Model(str(out))
    assert np.array_equal(back.state_dict()["0.weight"], sd["0.weight"])
    with pytest.raises(dpsgd.InvalidArgument, match="input_shape"):
        dpsgd.Model(os.path.join(ref, "cnn_gn.onnx"), input_shape=(1, 28, 28))
    with pytest.raises(dpsgd.Error, match="BatchNormalization"):
        dpsgd.Model(os.path.join(ref, "batchnorm.onnx"))
    with pytest.raises(dpsgd.InvalidArgument, match="only for a model loaded from an ONNX file"):
        small().save_onnx(tmp_path / "x.onnx")


def test_transformer_and_tokens():
    m = dpsgd.Model.transformer(vocab=50, seq_len=12, classes=3, width=16, heads=2, layers=1, seed=1)
    names = list(m.state_dict())
    assert names[0].startswith("bert.embeddings.") and "classifier.weight" in names
    assert "bert.encoder.layer.0.attention.self.query.weight" in names
    assert m.is_tokens and m.vocab == 50 and m.classes == 3
    ids = np.random.default_rng(1).integers(-1, 50, size=(4, 12))
    ids[:, 0] = 0
    assert m.logits(ids).shape == (4, 3)
    with pytest.raises(dpsgd.RangeError, match="ids must be integers in -1..49"):
        m.logits(np.full((1, 12), 50))
    with pytest.raises(dpsgd.InvalidArgument, match="heads"):
        dpsgd.Model.transformer(vocab=50, seq_len=12, width=15, heads=2)
    n = m.freeze("bert.embeddings")
    assert n >= 1 and m.num_trainable < m.num_params
    assert all(l.frozen for l in m.layers if l.name.startswith("bert.embeddings") and l.parameters)
    m.unfreeze("bert.embeddings")
    assert m.num_trainable == m.num_params
    # a spec that starts with an embedding takes token ids [N, T]
    t = dpsgd.Model("embedding(20,8) meanpool linear(2)", input_shape=(6,))
    assert t.is_tokens and t.logits(np.zeros((2, 6), np.int64)).shape == (2, 2)


def test_plan_and_freeze_by_index():
    m = small()
    plan = m.plan(64, clipping="auto")
    assert "conv2d" in plan or "linear" in plan
    m.freeze(0)
    assert m.layers[0].frozen and m.num_trainable == m.num_params - 4 * 2 * 9 - 4
    with pytest.raises(dpsgd.InvalidArgument, match="has no parameters"):
        m.freeze(1)


def test_model_errors():
    with pytest.raises(dpsgd.InvalidArgument, match="spec: model spec: layer 1: unknown layer 'relux'"):
        dpsgd.Model("linear(3) relux", input_shape=(4,))
    with pytest.raises(dpsgd.InvalidArgument, match="input_shape: required"):
        dpsgd.Model("linear(3)")
    with pytest.raises(dpsgd.InvalidArgument, match="classes: required for the built-in model 'cnn'"):
        dpsgd.Model("cnn", input_shape=(1, 28, 28))
    with pytest.raises(dpsgd.InvalidArgument, match="classes 4: the model outputs 3 values"):
        dpsgd.Model("linear(3)", input_shape=(4,), classes=4)
    with pytest.raises(dpsgd.DTypeError, match="input_shape\\[1\\]: expected an integer"):
        dpsgd.Model("linear(3)", input_shape=(4, "a"))
    with pytest.raises(dpsgd.IOFailure, match="missing.onnx"):
        dpsgd.Model("/nonexistent/missing.onnx")
    with pytest.raises(dpsgd.InvalidArgument, match="Model.transformer"):
        dpsgd.Model("transformer", input_shape=(8,))
    m = dpsgd.Model("linear(3)", input_shape=(4,))
    with pytest.raises(dpsgd.InvalidArgument, match=r"x: shape \(2, 5\): the model takes \[N, 4\]"):
        m.logits(np.zeros((2, 5), np.float32))
    with pytest.raises(dpsgd.DTypeError, match="x: dtype bool"):
        m.logits(np.zeros((2, 4), bool))
