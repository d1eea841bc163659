"""The PyTorch bridge: train an nn.Module privately with dpsgd, and get the weights back into it.

    import dpsgd.torch
    result = dpsgd.torch.train(net, torch.zeros(1, 1, 28, 28), x, y, x_test=xt, y_test=yt,
                               epsilon=3, epochs=4, batch_size=512)
    net.eval(); net(xt)          # the module now holds the privately trained weights

The module is exported to ONNX as docs/onnx.md says (opset 17, training mode, no constant
folding: every parameter an initializer under its state_dict name, the batch dimension dynamic),
loaded by the library's importer (which refuses, naming the node, what it cannot train privately:
BatchNorm mixes the samples of a batch, unsupported operators), trained by dpsgd.train, and
every trained tensor copied back into the module's parameter of the same name.

Imported only on request (`import dpsgd.torch`), and only where torch is installed (Debian:
python3-torch).
"""

import os
import tempfile

import numpy as np
import torch as _torch

from . import _check
from .errors import DTypeError, InvalidArgument
from .models import Model
from .training import train as _train

__all__ = ["export", "to_dpsgd", "load_weights", "train"]

OPSET = 17


def export(module, example_input, path, opset=OPSET):
    """Writes `module` as ONNX to path, the way dpsgd imports it (docs/onnx.md): opset 17,
    TrainingMode.TRAINING, do_constant_folding=False, input "input", output "logits", dimension 0
    dynamic. example_input: one batch (a tensor [B, ...]; float features or int64 token ids).
    The module's train/eval mode is left as it was."""
    if not isinstance(module, _torch.nn.Module):
        raise DTypeError("module: expected a torch.nn.Module, got %s" % type(module).__name__)
    if not isinstance(example_input, _torch.Tensor):
        raise DTypeError("example_input: expected a torch.Tensor (one batch, [B, ...]), got %s"
                         % type(example_input).__name__)
    if example_input.dim() < 2:
        raise InvalidArgument("example_input: shape %s: expected a batch [B, ...]" % tuple(example_input.shape))
    was_training = module.training
    try:
        _torch.onnx.export(module, example_input, os.fspath(path), opset_version=opset,
                           training=_torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                           input_names=["input"], output_names=["logits"],
                           dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        module.train(was_training)


def _layer_of(name):
    return name.rsplit(".", 1)[0] if "." in name else name


def to_dpsgd(module, example_input, onnx_path=None):
    """A dpsgd.Model of `module` (exported by export(), to onnx_path or to a temporary file kept as
    long as the model), starting from the module's current weights. Checked: every tensor dpsgd
    trains is a parameter of the module with the same shape (a buffer the graph reads as a tensor
    is refused: dpsgd would train it); parameters with requires_grad=False are frozen (whole
    layers: a layer whose weight is frozen but bias is not is refused)."""
    tmp = None
    if onnx_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="dpsgd-torch-")
        onnx_path = os.path.join(tmp.name, "model.onnx")
    export(module, example_input, onnx_path)
    model = Model(os.fspath(onnx_path))
    model._tmpdir = tmp  # the graph file lives as long as the model (save_onnx reads it)
    params = dict(module.named_parameters())
    sd = model.state_dict(copy=False)
    strangers = [n for n in sd if n not in params]
    if strangers:
        raise InvalidArgument("module: the exported graph reads tensors that are not parameters of the module: %s "
                              "(buffers or constants stored as initializers; dpsgd would train them). Make them "
                              "parameters, or compute them in forward()" % ", ".join(strangers[:8]))
    for n, v in sd.items():
        if tuple(params[n].shape) != v.shape:
            raise InvalidArgument("module: parameter %s has shape %s in the module, %s in the exported graph"
                                  % (n, tuple(params[n].shape), v.shape))
    by_layer = {}
    for n in sd:
        by_layer.setdefault(_layer_of(n), []).append(n)
    for layer, names in by_layer.items():
        flags = {params[n].requires_grad for n in names}
        if len(flags) > 1:
            raise InvalidArgument("module: layer %s has parameters that require grad and others that do not (%s): "
                                  "dpsgd freezes whole layers" % (layer, ", ".join(
                                      "%s %s" % (n, params[n].requires_grad) for n in names)))
        if flags == {False}:
            model.freeze(layer)
    frozen = {l.name for l in model.layers if l.frozen}  # a prefix freezes the layers under it too: check
    for layer, names in by_layer.items():
        if (layer in frozen) == params[names[0]].requires_grad:
            raise InvalidArgument("module: layer %s: freezing by module name would %s it; give the modules "
                                  "names that are not prefixes of each other" % (
                                      layer, "freeze" if layer in frozen else "not freeze"))
    return model


def load_weights(module, model):
    """Copies every tensor of the dpsgd model into the module's parameter of the same name (and
    shape), in place, keeping each parameter's dtype and device. Returns the names copied."""
    params = dict(module.named_parameters())
    sd = model.state_dict()
    for n, v in sd.items():
        if n not in params or tuple(params[n].shape) != v.shape:
            raise InvalidArgument("module: has no parameter %s of shape %s" % (n, v.shape))
    with _torch.no_grad():
        for n, v in sd.items():
            p = params[n]
            p.copy_(_torch.from_numpy(np.ascontiguousarray(v)).to(device=p.device, dtype=p.dtype))
    return list(sd)


def _numpy(name, v):
    if isinstance(v, _torch.Tensor):
        return v.detach().cpu().numpy()
    return _check.array(name, v)


def train(module, example_input, x, y, *, x_test=None, y_test=None, onnx_path=None, **kwargs):
    """Trains `module` privately with dpsgd and loads the trained weights back into it.

    example_input: one batch for the export (e.g. x[:2] as a tensor). x, y, x_test, y_test: NumPy
    arrays or torch tensors (features float, labels integer, or float targets with loss="mse");
    every other keyword is dpsgd.train's (epsilon, delta, batch_size, epochs, lr, max_grad_norm,
    noise_seed, callback, loss, ...). Returns dpsgd.train's TrainResult, with `.model`, the
    dpsgd.Model trained. The module's weights are replaced only when the run completes (or a
    callback stops it early); on an error or Ctrl-C they stay as they were (a checkpoint_dir
    keeps what was trained)."""
    model = to_dpsgd(module, example_input, onnx_path)
    result = _train(model, _numpy("x", x), _numpy("y", y),
                    x_test=None if x_test is None else _numpy("x_test", x_test),
                    y_test=None if y_test is None else _numpy("y_test", y_test), **kwargs)
    load_weights(module, model)
    result.model = model
    return result
