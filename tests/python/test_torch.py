"""dpsgd.torch: a residual CNN with GroupNorm defined in PyTorch trains through dpsgd, and its
accuracy measured by PyTorch once the weights are back equals dpsgd's own evaluation; modules
dpsgd cannot train are refused with the engine's message.

torch is the thing under test: scripts/install-deps.sh installs python3-torch and its absence is
a failure (DPSGD_SKIP_TORCH=1 skips these tests where torch cannot be installed)."""

import os

import numpy as np
import pytest

import dpsgd

if os.environ.get("DPSGD_SKIP_TORCH") == "1":
    pytest.skip("DPSGD_SKIP_TORCH=1", allow_module_level=True)
try:
    import torch
    import torch.nn as nn
except ImportError:
    pytest.fail("torch is not installed (Debian: python3-torch; scripts/install-deps.sh installs it; "
                "DPSGD_SKIP_TORCH=1 skips these tests)", pytrace=False)

import dpsgd.torch  # noqa: E402


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.gn1 = nn.GroupNorm(2, c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(2, c)

    def forward(self, x):
        return torch.relu(x + self.gn2(self.conv2(torch.relu(self.gn1(self.conv1(x))))))


class ResNetGN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.GroupNorm(2, 8), nn.ReLU())
        self.block = Block(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def test_resnet_groupnorm_round_trip(fmnist):
    torch.manual_seed(0)
    x, y = dpsgd.data.fashion_mnist(train=True, directory=fmnist, limit=2000)
    xt, yt = dpsgd.data.fashion_mnist(train=False, directory=fmnist, limit=1000)
    net = ResNetGN()
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        assert np.allclose(dpsgd.torch.to_dpsgd(net, torch.zeros(2, 1, 28, 28)).logits(xt[:50]),
                           net(torch.from_numpy(xt[:50])).numpy(), atol=1e-5)  # the export is the module
    r = dpsgd.torch.train(net, torch.from_numpy(x[:2]), torch.from_numpy(x), torch.from_numpy(y).long(),
                          x_test=xt, y_test=yt, epochs=2, batch_size=250, lr=2.0, max_grad_norm=1.0, epsilon=3.0,
                          noise_seed=2, threads=2)
    assert r.epsilon <= 3.0 and r.steps == 16 and r.test_accuracy is not None
    sd = r.model.state_dict()
    assert set(sd) == {k for k, _ in net.named_parameters()}
    for k, v in net.named_parameters():
        assert np.array_equal(v.detach().numpy(), sd[k]), k  # the trained weights are in the module
        assert not torch.equal(v.detach(), before[k]), k  # and they moved
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(xt)).numpy()
    assert np.allclose(logits, r.model.logits(xt), atol=1e-4)
    torch_acc = float((logits.argmax(1) == yt).mean())
    assert abs(torch_acc - r.test_accuracy) <= 1.0 / len(yt), (torch_acc, r.test_accuracy)
    assert r.test_accuracy > 0.2  # it learned something in 16 noisy steps


def test_refusals_name_the_node():
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(dpsgd.InvalidArgument, match="BatchNormalization mixes the samples of a batch.*GroupNorm"):
        dpsgd.torch.to_dpsgd(bn, torch.zeros(2, 1, 8, 8))

    class CumSum(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(torch.cumsum(x, dim=1))

    with pytest.raises(dpsgd.Error, match="CumSum"):
        dpsgd.torch.to_dpsgd(CumSum(), torch.zeros(2, 5))
    with pytest.raises(dpsgd.DTypeError, match="module: expected a torch.nn.Module"):
        dpsgd.torch.to_dpsgd("net", torch.zeros(2, 5))
    with pytest.raises(dpsgd.DTypeError, match="example_input: expected a torch.Tensor"):
        dpsgd.torch.to_dpsgd(nn.Linear(5, 2), np.zeros((2, 5)))

    class WithBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 2)
            self.register_buffer("offset", torch.ones(1, 5))

        def forward(self, x):
            return self.fc(x + self.offset)

    with pytest.raises(dpsgd.InvalidArgument, match="not parameters of the module: offset"):
        dpsgd.torch.to_dpsgd(WithBuffer(), torch.zeros(2, 5))


def test_frozen_parameters_stay(tmp_path):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    for p in net[0].parameters():
        p.requires_grad_(False)
    w0 = net[0].weight.detach().clone()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    r = dpsgd.torch.train(net, torch.zeros(2, 6), x, y, epochs=1, batch_size=30, noise_multiplier=1.0,
                          accountant="rdp", lr=0.5, onnx_path=tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").exists() and r.model.num_trainable == 8 * 3 + 3
    assert torch.equal(net[0].weight, w0) and not net[0].weight.requires_grad
    net[0].bias.requires_grad_(True)  # half a layer: dpsgd freezes whole layers
    with pytest.raises(dpsgd.InvalidArgument, match="layer 0 has parameters that require grad and others that do not \\(0.weight False, 0.bias True\\)"):
        dpsgd.torch.to_dpsgd(net, torch.zeros(2, 6))


def test_regression_step_equals_torch_mse():
    """loss="mse" is nn.MSELoss: one non-private step on the whole batch moves the weights as
    torch.optim.SGD on nn.MSELoss() does (the mean over the K outputs, then over the examples),
    and the test mse dpsgd reports is nn.MSELoss on the test set with the weights brought back."""
    import copy
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = np.stack([np.tanh(x[:, 0]), x[:, 1] * x[:, 2], x[:, 3]], 1).astype(np.float32)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    ref = copy.deepcopy(net)
    r = dpsgd.torch.train(net, torch.zeros(2, 4), x, torch.from_numpy(y), x_test=x[:16], y_test=y[:16], loss="mse",
                          no_dp=True, batch_size=64, epochs=1, lr=0.1, momentum=0.0)
    assert r.steps == 1 and r.loss == "mse" and r.test_accuracy is None
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    nn.MSELoss()(ref(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    opt.step()
    for (k, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), k
    with torch.no_grad():
        mse = float(nn.MSELoss()(net(torch.from_numpy(x[:16])), torch.from_numpy(y[:16])))
    assert r.test_mse == pytest.approx(mse, rel=1e-5)
