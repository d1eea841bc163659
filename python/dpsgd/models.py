"""dpsgd.Model: a model of the C library (a spec string, a built-in name, an ONNX file or the
BERT-like transformer), its weights as NumPy arrays, safetensors files, inference.

The parameters live in one float32 block inside the library, tensor after tensor in PyTorch's
order. state_dict() returns copies by default; state_dict(copy=False) returns writable views of
that block (they keep the model alive, and see every later change: training updates them in
place).
"""

import collections
import collections.abc
import ctypes
import os

import numpy as np

from . import _capi, _check
from ._capi import lib
from .errors import InvalidArgument, NonFiniteError, check

# dpsgd train initialises a spec model with dp_rng seeded by (--seed ^ INIT_SALT) (tools/cli.c):
# Model(..., seed=S) does the same, so it starts from the weights `dpsgd train --seed S` starts from.
INIT_SALT = 0x1BADC0FFEE

Layer = collections.namedtuple("Layer", "index name kind output_shape parameters frozen")
Layer.__doc__ = """One node of a model: index, module name, kind ("conv2d"), output shape per
sample ([C, H, W], or [T, F] for a sequence), parameter count, frozen."""


def _input_chw(input_shape, tokens):
    """(c, h, w) of a per-example shape: (D,) -> D x 1 x 1 (1 x 1 x T for token ids), (H, W) ->
    1 x H x W, (C, H, W); as `dpsgd train` reads [N, D], [N, H, W], [N, C, H, W] arrays."""
    if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    if not isinstance(input_shape, (tuple, list)) or not 1 <= len(input_shape) <= 3:
        raise InvalidArgument("input_shape: expected (D,), (H, W) or (C, H, W), got %r" % (input_shape,))
    dims = [_check.integer("input_shape[%d]" % i, d, 1, _check.INT_MAX) for i, d in enumerate(input_shape)]
    if len(dims) == 1:
        return (1, 1, dims[0]) if tokens else (dims[0], 1, 1)
    if len(dims) == 2:
        return (1, dims[0], dims[1])
    return tuple(dims)


def _is_onnx(spec):
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, bytes):
        spec = os.fsdecode(spec)
    return isinstance(spec, str) and spec.endswith(".onnx") and len(spec) > 5


class Model:
    """A model of the library.

        m = dpsgd.Model("cnn", input_shape=(1, 28, 28), classes=10)     # a built-in name
        m = dpsgd.Model("conv2d(16,8,s2,p2) tanh maxpool(2,1) flatten linear(10)",
                        input_shape=(1, 28, 28))                           # a spec (docs/model-spec.md)
        m = dpsgd.Model("net.onnx")                                        # exported from PyTorch
        m = dpsgd.Model.transformer(vocab=100, seq_len=32, classes=2)

    A spec or named model is initialised as `dpsgd train --seed seed` initialises it (PyTorch's
    default initialisation from the library's seeded generator); an ONNX model starts from its
    file's weights. Not thread-safe: use one model from one thread at a time."""

    _any_shape = False  # rows of any per-example shape with input_size values are accepted

    def __init__(self, spec, input_shape=None, classes=None, seed=0, *, init=True):
        self._h = None
        self.onnx_path = None
        seed = _check.integer("seed", seed, 0, _check.U64_MAX)
        h = ctypes.c_void_p()
        if _is_onnx(spec):
            p = _check.path("spec", spec)
            check(lib.dp_model_load_onnx(p, ctypes.byref(h)))
            self._h = h
            self.onnx_path = os.fsdecode(p)
            self.spec = self.onnx_path
            if input_shape is not None:
                c, hh, w = _input_chw(input_shape, self.is_tokens)
                if c * hh * w != self.input_size:
                    raise InvalidArgument("input_shape %r: the graph %s takes %d values per example"
                                          % (tuple(input_shape), self.onnx_path, self.input_size))
                self._input_shape = tuple(input_shape) if not isinstance(input_shape, int) else (input_shape,)
            else:  # the public API gives the values per example, not the graph's shape: any [N, ...] of them
                self._input_shape = (self.input_size,)
                self._any_shape = True
        else:
            s = _check.text("spec", spec)
            if s.strip() == b"transformer":
                raise InvalidArgument("spec 'transformer': build it with dpsgd.Model.transformer(vocab=..., "
                                      "seq_len=..., ...)")
            if input_shape is None:
                raise InvalidArgument("input_shape: required for a spec or a built-in model, e.g. (1, 28, 28)")
            builtin = lib.dp_model_builtin_spec(s) is not None
            k = 0
            if classes is not None:
                k = _check.integer("classes", classes, 1, 1 << 24)
            elif builtin:
                raise InvalidArgument("classes: required for the built-in model %r (its last layer has one output "
                                      "per class)" % spec)
            tokens = s.lstrip().lower().startswith(b"embedding")
            c, hh, w = _input_chw(input_shape, tokens)
            check(lib.dp_model_create_named(s, c, hh, w, k, ctypes.byref(h)), prefix="spec")
            self._h = h
            self.spec = spec
            self._input_shape = tuple(input_shape) if not isinstance(input_shape, int) else (input_shape,)
            if init:
                self.init(seed)
        self.seed = seed
        if classes is not None:
            k = _check.integer("classes", classes, 1, 1 << 24)
            if k != self.classes:
                raise InvalidArgument("classes %d: the model outputs %d values" % (k, self.classes))

    @classmethod
    def transformer(cls, vocab, seq_len, classes=2, width=None, heads=None, layers=None, ffn=None,
                    pre_norm=None, activation=None, pool=None, dropout=None, train_last_blocks=None, seed=0):
        """The BERT-like encoder classifier for token ids (dp_model_create_transformer; the
        defaults are the library's, as `dpsgd train --model transformer`). Input: [N, seq_len]
        integer ids, -1 for padding. activation: "gelu" or "relu"; pool: "first" or "mean";
        train_last_blocks: train only the last k blocks, the pooler and the classifier."""
        p = lib.dp_transformer_default_params()
        p.vocab = _check.integer("vocab", vocab, 1, 1 << 24)
        p.seq_len = _check.integer("seq_len", seq_len, 1, 65536)
        p.n_classes = _check.integer("classes", classes, 1, 1 << 24)
        for name, v in (("width", width), ("heads", heads), ("layers", layers), ("ffn", ffn)):
            if v is not None:
                setattr(p, name, _check.integer(name, v, 0, _check.INT_MAX))
        if pre_norm is not None:
            p.pre_norm = _check.flag("pre_norm", pre_norm)
        if activation is not None:
            p.gelu = _check.choice("activation", activation, ("relu", "gelu"))
        if pool is not None:
            p.pool = _check.choice("pool", pool, ("first", "mean"))
        if dropout is not None:
            p.dropout = _check.real("dropout", dropout)
        if train_last_blocks is not None:
            p.train_last = _check.integer("train_last_blocks", train_last_blocks, 0, _check.INT_MAX)
        seed = _check.integer("seed", seed, 0, _check.U64_MAX)
        self = cls.__new__(cls)
        self._h = None
        self.onnx_path = None
        h = ctypes.c_void_p()
        check(lib.dp_model_create_transformer(ctypes.byref(p), ctypes.byref(h)), mapper=_transformer_names,
              prefix="transformer")
        self._h = h
        self.spec = "transformer"
        self._input_shape = (p.seq_len,)
        self.seed = seed
        self.init(seed)
        return self

    def __del__(self):
        h = getattr(self, "_h", None)
        if h:
            lib.dp_model_destroy(h)
            self._h = None

    # ---- structure ----

    def init(self, seed=0):
        """Re-initialises the parameters (PyTorch's default initialisation; BERT's for the
        transformer) from the generator seeded as `dpsgd train --seed seed` seeds it."""
        seed = _check.integer("seed", seed, 0, _check.U64_MAX)
        r = _capi.dp_rng()
        lib.dp_rng_seed(ctypes.byref(r), seed ^ INIT_SALT)
        lib.dp_model_init(self._h, ctypes.byref(r))
        self.seed = seed
        return self

    @property
    def num_params(self):
        return int(lib.dp_model_num_params(self._h))

    @property
    def num_trainable(self):
        return int(lib.dp_model_num_trainable(self._h))

    @property
    def classes(self):
        """Outputs per example (the number of classes; with loss="mse", the targets per row)."""
        return int(lib.dp_model_output_size(self._h))

    @property
    def input_size(self):
        """Values per example."""
        return int(lib.dp_model_input_size(self._h))

    @property
    def input_shape(self):
        """The per-example shape the model was built for."""
        return self._input_shape

    @property
    def is_tokens(self):
        """True when the input is token ids (the first layer is an embedding)."""
        return bool(lib.dp_model_input_is_tokens(self._h))

    @property
    def vocab(self):
        """The embedding's vocabulary (token models), else 0."""
        return int(lib.dp_model_vocab(self._h)) if self.is_tokens else 0

    @property
    def layers(self):
        out = []
        shape = (ctypes.c_int64 * 3)()
        for i in range(lib.dp_model_num_layers(self._h)):
            nd = lib.dp_model_layer_shape(self._h, i, shape)
            k = lib.dp_model_layer_kind(self._h, i)
            name = lib.dp_model_layer_name(self._h, i)
            out.append(Layer(i, name.decode() if name else str(i),
                             _capi.LAYER_KINDS[k] if 0 <= k < len(_capi.LAYER_KINDS) else str(k),
                             tuple(int(shape[j]) for j in range(nd)),
                             int(lib.dp_model_layer_params(self._h, i, None)),
                             bool(lib.dp_model_layer_frozen(self._h, i))))
        return out

    def describe(self):
        """One line per layer with its output shape and parameter count (the library's text)."""
        cap = 1 << 20
        buf = ctypes.create_string_buffer(cap)
        lib.dp_model_describe(self._h, buf, cap)
        return buf.value.decode("utf-8", "replace")

    def plan(self, batch_size, clipping="auto", max_grad_norm=0.1, mem_budget=0):
        """The clipping plan for a batch (what `dpsgd train --verbose` prints): per trainable
        layer the norm method, how its clipped sum is formed, bytes and FLOPs."""
        cp = _capi.dp_clip_params(_check.choice("clipping", clipping, _capi.CLIP_MODES),
                                  _check.real("max_grad_norm", max_grad_norm),
                                  _check.integer("mem_budget", mem_budget, 0, _check.SIZE_MAX))
        b = _check.integer("batch_size", batch_size, 1, _check.INT_MAX)
        cap = 1 << 20
        buf = ctypes.create_string_buffer(cap)
        check(lib.dp_model_describe_plan(self._h, ctypes.byref(cp), b, buf, cap))
        return buf.value.decode("utf-8", "replace")

    def freeze(self, layer, frozen=True):
        """Freezes (frozen=False: unfreezes) layer `layer`: an index, or a module-name prefix
        ("bert.embeddings", "0"); returns how many layers changed. Frozen parameters take no
        part in clipping, noise or the optimizer step."""
        frozen = _check.flag("frozen", frozen)
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            i = _check.integer("layer", layer, 0, _check.INT_MAX)
            check(lib.dp_model_set_frozen(self._h, i, frozen))
            return 1
        name = _check.text("layer", layer)
        n = ctypes.c_int()
        check(lib.dp_model_set_frozen_prefix(self._h, name, frozen, ctypes.byref(n)))
        return n.value

    def unfreeze(self, layer):
        return self.freeze(layer, False)

    # ---- weights ----

    def _tensors(self):
        """[(name, pointer, count, shape)] of every parameter tensor."""
        out = []
        name = ctypes.c_char_p()
        data = ctypes.POINTER(ctypes.c_float)()
        count = ctypes.c_size_t()
        shape = (ctypes.c_int64 * 4)()
        for t in range(lib.dp_model_num_tensors(self._h)):
            check(lib.dp_model_tensor(self._h, t, ctypes.byref(name), ctypes.byref(data), ctypes.byref(count)))
            nd = lib.dp_model_tensor_shape(self._h, t, shape)
            shp = tuple(int(shape[j]) for j in range(nd)) if nd > 0 else (int(count.value),)
            out.append((name.value.decode(), ctypes.cast(data, ctypes.c_void_p).value, int(count.value), shp))
        return out

    def _view(self, addr, count, shape):
        buf = (ctypes.c_float * count).from_address(addr)
        buf._dpsgd_model = self  # the view keeps the model (and so its parameter block) alive
        return np.ctypeslib.as_array(buf).reshape(shape)

    def state_dict(self, copy=True):
        """An OrderedDict of parameter name -> float32 array with PyTorch's names and shapes
        ("0.weight" [out, in, k, k], "0.bias" [out]; the transformer's Hugging Face names; an
        ONNX model's initializer names). copy=True (default): independent copies. copy=False:
        writable views into the model's parameter block (writing them changes the model;
        training updates them)."""
        out = collections.OrderedDict()
        for name, addr, count, shape in self._tensors():
            v = self._view(addr, count, shape)
            out[name] = v.copy() if copy else v
        return out

    def parameters(self):
        """The whole parameter block as one writable float32 view (every tensor, in order)."""
        n = self.num_params
        addr = ctypes.cast(lib.dp_model_params(self._h), ctypes.c_void_p).value
        return self._view(addr, n, (n,))

    def load_state_dict(self, state, strict=True):
        """Copies the arrays of `state` (name -> array or torch tensor) into the model. Every
        value is checked first (name, shape, a real dtype, finite), so on any error the model is
        unchanged. strict=True: the names must be exactly the model's. strict=False: names the
        model lacks are ignored and tensors the state lacks keep their values. Returns the lists
        (missing, unexpected), as PyTorch's load_state_dict does."""
        if not isinstance(state, collections.abc.Mapping):
            raise InvalidArgument("state: expected a mapping of names to arrays, got %s" % type(state).__name__)
        tensors = self._tensors()
        names = {t[0] for t in tensors}
        missing = [t[0] for t in tensors if t[0] not in state]
        unexpected = [k for k in state if k not in names]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing %s" % ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
            if unexpected:
                parts.append("unexpected %s" % ", ".join(map(str, unexpected[:8])) +
                             (" ..." if len(unexpected) > 8 else ""))
            raise InvalidArgument("state: the names differ from the model's: %s" % "; ".join(parts))
        staged = []
        for name, addr, count, shape in tensors:
            if name not in state:
                continue
            a = _check.array("state[%r]" % name, state[name])
            if a.dtype.kind not in "fiu":
                raise _check.DTypeError("state[%r]: dtype %s: expected real numbers" % (name, a.dtype))
            if tuple(a.shape) != shape:
                raise InvalidArgument("state[%r]: shape %s, the model's is %s" % (name, tuple(a.shape), shape))
            a32 = np.asarray(a, dtype=np.float32)
            if not np.all(np.isfinite(a32)):
                raise NonFiniteError("state[%r]: a value is not finite (NaN or Inf, or beyond float32)" % name)
            staged.append((addr, count, shape, a32))
        for addr, count, shape, a32 in staged:
            self._view(addr, count, shape)[...] = a32
        return missing, unexpected

    def save(self, path):
        """Writes the weights as safetensors (PyTorch names and shapes, F32), atomically;
        `safetensors.torch.load_file(path)` reads them in PyTorch."""
        check(lib.dp_model_save_safetensors(self._h, _check.path("path", path)))

    def load(self, path):
        """Reads weights written by save() (or `dpsgd train --save-weights`): the file must hold
        exactly the model's tensors; on any mismatch the model is unchanged."""
        check(lib.dp_model_load_safetensors(self._h, _check.path("path", path)))
        return self

    def save_onnx(self, path):
        """An ONNX model: writes its graph with the current weights (dp_model_save_onnx)."""
        if self.onnx_path is None:
            raise InvalidArgument("save_onnx: only for a model loaded from an ONNX file")
        check(lib.dp_model_save_onnx(self._h, _check.path("onnx file", self.onnx_path), _check.path("path", path)))

    # ---- inference ----

    def _rows(self, name, x):
        if self.is_tokens:
            a = _check.array(name, x)
            if a.dtype.kind not in "fiu":
                raise _check.DTypeError("%s: dtype %s: token ids must be integers" % (name, a.dtype))
            if a.ndim != 2 or a.shape[1] != self.input_size:
                raise InvalidArgument("%s: shape %s: the model takes token ids [N, %d]" % (name, tuple(a.shape),
                                                                                         self.input_size))
            if a.dtype.kind in "iu" and a.size and (a.min() < -(2**31) or a.max() >= 2**24):
                raise InvalidArgument("%s: a token id is outside -1..%d" % (name, self.vocab - 1))
            return np.ascontiguousarray(a, dtype=np.float32)
        return _check.float_rows(name, x, self.input_size, None if self._any_shape else self._input_shape)

    def logits(self, x, batch_size=1000):
        """The model's outputs [N, classes] (float32) for inputs x [N, ...] (inference: no dropout)."""
        rows = self._rows("x", x)
        b = _check.integer("batch_size", batch_size, 1, _check.INT_MAX)
        n, k = rows.shape[0], self.classes
        out = np.empty((n, k), dtype=np.float32)
        z = ctypes.POINTER(ctypes.c_float)()
        fp = ctypes.POINTER(ctypes.c_float)
        for off in range(0, n, b):
            B = min(b, n - off)
            chunk = rows[off:off + B]
            check(lib.dp_model_forward(self._h, chunk.ctypes.data_as(fp), B, 0, None, ctypes.byref(z)))
            out[off:off + B] = np.ctypeslib.as_array(z, shape=(B, k))
        return out

    def predict(self, x, batch_size=1000):
        """The predicted class of each row (int64 [N])."""
        return self.logits(x, batch_size).argmax(axis=1)

    def evaluate(self, x, y, batch_size=1000, loss="xent"):
        """(accuracy, mean cross-entropy) on (x, y), as `dpsgd train` evaluates its test set.
        loss="mse": y holds regression targets [N, K] (or [N] when K = 1), K = classes, and the
        result is (None, mean squared error): there is no accuracy."""
        from .training import _Data, _loss  # avoid an import cycle
        mse = _loss(loss)
        d = _Data(self, x, y, "x", "y", min_rows=1, mse=mse)
        acc, lv = ctypes.c_double(), ctypes.c_double()
        b = _check.integer("batch_size", batch_size, 1, _check.INT_MAX)
        check(lib.dp_evaluate(self._h, ctypes.byref(d.ds), b, ctypes.byref(acc), ctypes.byref(lv)))
        return (None if mse else acc.value), lv.value

    def __repr__(self):
        return "dpsgd.Model(%r, input %s, %d classes, %d parameters, %d trainable)" % (
            self.spec, self._input_shape, self.classes, self.num_params, self.num_trainable)


# The transformer builder's messages name dp_transformer_params fields; the package's keywords.
_TRANSFORMER_NAMES = {"n_classes": "classes", "train_last": "train_last_blocks"}


def _transformer_names(msg):
    import re
    return re.sub(r"\b(n_classes|train_last)\b", lambda m: _TRANSFORMER_NAMES[m.group(1)], msg)
