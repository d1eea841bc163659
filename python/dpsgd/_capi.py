"""The C library (libdpsgd.so) through ctypes: finding it, its structs and its prototypes.

Everything here mirrors include/dpsgd/*.h. Every function the package calls has its argtypes
and restype declared, so ctypes converts and checks each argument (a wrong Python type is a
ctypes.ArgumentError, never a bad pointer). The struct layouts are checked against the C
compiler's in tests/python/test_abi.py.
"""

import ctypes
import ctypes.util
import os
import sys

from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_double, c_float, c_int, c_int32, c_int64, c_long,
                    c_size_t, c_uint64, c_void_p)

# ---- finding the library ------------------------------------------------------------------

_SONAMES = ("libdpsgd.so.0", "libdpsgd.so")


def _candidates():
    """(where, path) pairs in search order: DPSGD_LIBRARY, next to the package, the build tree
    the package sits in, the install prefix (ldconfig's cache, then the usual lib folders)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    for name in _SONAMES:
        out.append(("next to the package", os.path.join(here, name)))
    # used in place from a checkout: <root>/python/dpsgd -> <root>/build/libdpsgd.so
    root = os.path.dirname(os.path.dirname(here))
    if os.path.isfile(os.path.join(root, "CMakeLists.txt")):
        for name in _SONAMES:
            out.append(("the build tree", os.path.join(root, "build", name)))
    found = ctypes.util.find_library("dpsgd")  # ldconfig -p (the install prefix, once ldconfig has run)
    if found:
        out.append(("ldconfig", found))
    multiarch = getattr(sys.implementation, "_multiarch", "") or ""
    for prefix in dict.fromkeys((sys.prefix, "/usr/local", "/usr")):
        for libdir in ("lib", os.path.join("lib", multiarch) if multiarch else None, "lib64"):
            if libdir:
                out.append(("the install prefix", os.path.join(prefix, libdir, "libdpsgd.so.0")))
    return out


class LibraryNotFoundError(ImportError):
    """libdpsgd.so could not be found or loaded."""


def _load():
    env = os.environ.get("DPSGD_LIBRARY")
    if env:  # an explicit choice: no fallback behind the user's back
        try:
            return ctypes.CDLL(env), env
        except OSError as e:
            raise LibraryNotFoundError("dpsgd: DPSGD_LIBRARY=%s cannot be loaded: %s" % (env, e)) from None
    tried = []
    for where, path in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            tried.append("%s (%s): not there" % (path, where))
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s): %s" % (path, where, e))
    raise LibraryNotFoundError(
        "dpsgd: the C library libdpsgd.so was not found. Build it (cmake -S . -B build && cmake --build build) "
        "and either use the package from that checkout, set DPSGD_LIBRARY=/path/to/libdpsgd.so, or install it "
        "(cmake --install build; ldconfig). Tried:\n  " + "\n  ".join(tried))


lib, library_path = _load()

# ---- enums (the X-macro lists of the headers, in order) -----------------------------------

STATUS_NAMES = ("DP_OK", "DP_ERR_NOMEM", "DP_ERR_INVALID", "DP_ERR_IO", "DP_ERR_FORMAT", "DP_ERR_RANGE",
                "DP_ERR_NONFINITE", "DP_ERR_UNSUPPORTED", "DP_ERR_INTERRUPTED")
ACCOUNTANT_KINDS = ("rdp", "prv", "pld", "gdp")  # DP_ACCOUNTANT_LIST
CLIP_MODES = ("vanilla", "fast", "ghost", "bk", "auto")  # DP_CLIP_LIST
OPTIMIZERS = ("sgd", "adam", "adamw")  # dp_optim_kind
LAYER_KINDS = ("linear", "conv2d", "relu", "tanh", "maxpool", "avgpool", "flatten", "dropout", "embedding",
               "posembed", "layernorm", "rmsnorm", "groupnorm", "gelu", "add", "attention", "meanpool", "firsttoken",
               "scale", "bias", "sigmoid", "globalavgpool", "transpose", "matmul", "softmax", "unary", "binary",
               "slice", "concat", "reduce")  # DP_LAYER_LIST
DP_POOL_FIRST, DP_POOL_MEAN = 0, 1

# ---- structs ------------------------------------------------------------------------------


class dp_rng(Structure):
    _fields_ = [("s", c_uint64 * 4), ("has_spare", c_int), ("spare", c_double)]


class dp_dataset(Structure):
    _fields_ = [("n", c_size_t), ("c", c_int), ("h", c_int), ("w", c_int), ("dim", c_size_t),
                ("x", POINTER(c_float)), ("y", POINTER(c_int32)), ("n_classes", c_int),
                ("t", POINTER(c_float)), ("n_targets", c_int)]  # regression targets (NULL: labels)


class dp_accounting_params(Structure):
    _fields_ = [("eps_error", c_double), ("delta_error", c_double), ("max_points", c_size_t)]


class dp_epsilon_report(Structure):
    _fields_ = [("epsilon", c_double), ("estimate", c_double), ("lower", c_double), ("upper", c_double),
                ("eps_error", c_double), ("approximate", c_int), ("order", c_double)]


class dp_transformer_params(Structure):
    _fields_ = [("vocab", c_int), ("seq_len", c_int), ("width", c_int), ("heads", c_int), ("layers", c_int),
                ("ffn", c_int), ("n_classes", c_int), ("pre_norm", c_int), ("gelu", c_int), ("pool", c_int),
                ("dropout", c_float), ("train_last", c_int)]


class dp_optim_params(Structure):
    _fields_ = [("kind", c_int), ("lr", c_double), ("momentum", c_double), ("dampening", c_double),
                ("nesterov", c_int), ("weight_decay", c_double), ("beta1", c_double), ("beta2", c_double),
                ("eps", c_double)]


class dp_clip_params(Structure):
    _fields_ = [("mode", c_int), ("max_grad_norm", c_double), ("mem_budget", c_size_t), ("group", c_int)]


class dp_train_progress(Structure):
    _fields_ = [("epoch", c_int), ("epochs", c_int), ("step", c_long), ("steps", c_long),
                ("step_in_epoch", c_int), ("steps_per_epoch", c_int), ("train_loss", c_double),
                ("test_accuracy", c_double), ("test_loss", c_double), ("epsilon", c_double),
                ("elapsed", c_double), ("epoch_end", c_int), ("max_grad_norm", c_double)]


dp_progress_fn = CFUNCTYPE(None, c_void_p, POINTER(dp_train_progress))


class dp_train_params(Structure):
    _fields_ = [("clipping", c_int), ("mem_budget", c_size_t), ("no_dp", c_int), ("max_grad_norm", c_double),
                ("noise_multiplier", c_double), ("target_epsilon", c_double), ("delta", c_double),
                ("accountant", c_int), ("expected_batch", c_int), ("physical_batch", c_int), ("epochs", c_int),
                ("optim", dp_optim_params), ("seed", c_uint64), ("noise_seeded", c_int), ("noise_seed", c_uint64),
                ("report_nonprivate", c_int), ("ema_decay", c_double), ("test_private", c_int),
                ("eval_batch", c_int), ("progress", dp_progress_fn), ("progress_user", c_void_p),
                ("checkpoint_dir", c_char_p), ("checkpoint_every", c_long), ("resume", c_char_p),
                ("force", c_int), ("data_id", c_char_p), ("threads", c_int), ("comm", c_void_p),
                ("stop", POINTER(c_int)),  # volatile sig_atomic_t * (an int on Linux)
                ("clip_quantile", c_double), ("clip_lr", c_double), ("clip_count_noise", c_double),
                ("lr_schedule", c_int), ("augmult", c_int), ("augment_pad", c_int), ("augment_flip", c_int),
                ("prior_sigma", c_double)]


class dp_train_result(Structure):
    _fields_ = [("test_accuracy", c_double), ("test_loss", c_double), ("epsilon", c_double), ("delta", c_double),
                ("sigma", c_double), ("q", c_double), ("steps", c_long), ("steps_per_epoch", c_int),
                ("seconds", c_double), ("mean_batch", c_double), ("empty_batches", c_long),
                ("nonfinite_samples", c_long), ("peak_bytes", c_size_t), ("max_grad_norm", c_double),
                ("noise_multiplier_gradient", c_double)]


class dp_trainer_stats(Structure):
    _fields_ = [("step", c_long), ("batch", c_size_t), ("loss", c_double), ("nonfinite", c_long)]


class dp_trainer_info(Structure):
    _fields_ = [("q", c_double), ("sigma", c_double), ("steps", c_long), ("steps_per_epoch", c_int),
                ("secret_noise", c_int)]


# ---- prototypes ---------------------------------------------------------------------------

P = POINTER
_protos = {
    # core
    "dp_strerror": (c_char_p, [c_int]),
    "dp_last_error": (c_char_p, []),
    "dp_clear_error": (None, []),
    "dp_free": (None, [c_void_p]),
    "dp_rng_seed": (None, [P(dp_rng), c_uint64]),
    # accounting
    "dp_accountant_kind_parse": (c_int, [c_char_p, P(c_int)]),
    "dp_accountant_kind_is_bound": (c_int, [c_int]),
    "dp_accountant_kind_names": (c_char_p, [c_int]),
    "dp_accountant_create": (c_int, [P(c_void_p)]),
    "dp_accountant_destroy": (None, [c_void_p]),
    "dp_accountant_step": (c_int, [c_void_p, c_double, c_double, c_long]),
    "dp_accountant_total_steps": (c_long, [c_void_p]),
    "dp_accountant_history_len": (c_size_t, [c_void_p]),
    "dp_accountant_history_get": (None, [c_void_p, c_size_t, P(c_double), P(c_double), P(c_long)]),
    "dp_accounting_default_params": (dp_accounting_params, []),
    "dp_accountant_epsilon": (c_int, [c_void_p, c_int, c_double, P(dp_accounting_params), P(dp_epsilon_report)]),
    "dp_accountant_delta": (c_int, [c_void_p, c_int, c_double, P(dp_accounting_params), P(c_double)]),
    "dp_accountant_delta_many": (c_int, [c_void_p, c_int, P(c_double), c_size_t, P(dp_accounting_params),
                                         P(c_double)]),
    "dp_calibrate_sigma_kind": (c_int, [c_int, c_double, c_double, c_double, c_long, c_double, P(c_double)]),
    "dp_calibrate_sigma_check": (c_int, [c_int, c_double, c_double, c_double, c_long, c_double]),
    # models
    "dp_model_create_named": (c_int, [c_char_p, c_int, c_int, c_int, c_int, P(c_void_p)]),
    "dp_model_builtin_spec": (c_char_p, [c_char_p]),
    "dp_transformer_default_params": (dp_transformer_params, []),
    "dp_model_create_transformer": (c_int, [P(dp_transformer_params), P(c_void_p)]),
    "dp_model_load_onnx": (c_int, [c_char_p, P(c_void_p)]),
    "dp_model_save_onnx": (c_int, [c_void_p, c_char_p, c_char_p]),
    "dp_model_destroy": (None, [c_void_p]),
    "dp_model_init": (None, [c_void_p, P(dp_rng)]),
    "dp_model_num_params": (c_size_t, [c_void_p]),
    "dp_model_num_trainable": (c_size_t, [c_void_p]),
    "dp_model_params": (P(c_float), [c_void_p]),
    "dp_model_num_layers": (c_int, [c_void_p]),
    "dp_model_output_size": (c_int, [c_void_p]),
    "dp_model_input_size": (c_size_t, [c_void_p]),
    "dp_model_layer_kind": (c_int, [c_void_p, c_int]),
    "dp_model_layer_params": (c_size_t, [c_void_p, c_int, P(c_size_t)]),
    "dp_model_layer_name": (c_char_p, [c_void_p, c_int]),
    "dp_model_layer_frozen": (c_int, [c_void_p, c_int]),
    "dp_model_layer_shape": (c_int, [c_void_p, c_int, P(c_int64)]),
    "dp_model_input_is_tokens": (c_int, [c_void_p]),
    "dp_model_vocab": (c_int, [c_void_p]),
    "dp_model_set_frozen_prefix": (c_int, [c_void_p, c_char_p, c_int, P(c_int)]),
    "dp_model_set_frozen": (c_int, [c_void_p, c_int, c_int]),
    "dp_model_num_tensors": (c_int, [c_void_p]),
    "dp_model_tensor": (c_int, [c_void_p, c_int, P(c_char_p), P(P(c_float)), P(c_size_t)]),
    "dp_model_tensor_shape": (c_int, [c_void_p, c_int, P(c_int64)]),
    "dp_model_describe": (None, [c_void_p, c_void_p, c_size_t]),
    "dp_model_forward": (c_int, [c_void_p, P(c_float), c_int, c_int, P(dp_rng), P(P(c_float))]),
    "dp_model_describe_plan": (c_int, [c_void_p, P(dp_clip_params), c_int, c_void_p, c_size_t]),
    "dp_model_save_safetensors": (c_int, [c_void_p, c_char_p]),
    "dp_model_load_safetensors": (c_int, [c_void_p, c_char_p]),
    # data
    "dp_dataset_load_mnist_dir": (c_int, [c_char_p, c_int, P(dp_dataset)]),
    "dp_dataset_free": (None, [P(dp_dataset)]),
    "dp_dataset_validate": (c_int, [P(dp_dataset), c_char_p, c_size_t, c_int]),
    "dp_dataset_validate_tokens": (c_int, [P(dp_dataset), c_char_p, c_int]),
    "dp_dataset_normalize": (None, [P(dp_dataset), c_double, c_double]),
    "dp_text_synthetic": (c_int, [c_size_t, c_int, c_int, c_uint64, P(dp_dataset)]),
    # optimizers
    "dp_optim_default_params": (dp_optim_params, [c_int]),
    "dp_optim_create": (c_int, [P(dp_optim_params), c_size_t, P(c_void_p)]),
    "dp_optim_destroy": (None, [c_void_p]),
    # training
    "dp_train_default_params": (dp_train_params, []),
    "dp_train_steps_per_epoch": (c_int, [c_size_t, c_int]),
    "dp_train": (c_int, [c_void_p, P(dp_dataset), P(dp_dataset), P(dp_train_params), P(dp_train_result)]),
    "dp_evaluate": (c_int, [c_void_p, P(dp_dataset), c_int, P(c_double), P(c_double)]),
    "dp_rng_shuffle_prefix": (None, [P(dp_rng), P(c_size_t), c_size_t, c_size_t]),
    # the step API
    "dp_trainer_create": (c_int, [c_void_p, P(dp_dataset), P(dp_train_params), P(c_void_p)]),
    "dp_trainer_destroy": (None, [c_void_p]),
    "dp_trainer_step": (c_int, [c_void_p, P(dp_trainer_stats)]),
    "dp_trainer_sample": (c_int, [c_void_p, P(c_size_t), P(c_size_t)]),
    "dp_trainer_step_indices": (c_int, [c_void_p, P(c_size_t), c_size_t, P(dp_trainer_stats)]),
    "dp_trainer_get_info": (None, [c_void_p, P(dp_trainer_info)]),
    "dp_trainer_epsilon": (c_int, [c_void_p, P(c_double)]),
    "dp_trainer_set_lr": (c_int, [c_void_p, c_double]),
}

_missing = [n for n in _protos if not hasattr(lib, n)]
if _missing:
    raise LibraryNotFoundError(
        "dpsgd: %s lacks %s%s: it is not libdpsgd.so, or one older than this package; rebuild it "
        "(cmake --build build) or point DPSGD_LIBRARY at a current one" % (
            library_path, ", ".join(_missing[:4]), " and %d more" % (len(_missing) - 4) if len(_missing) > 4 else ""))
for _name, (_res, _args) in _protos.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args
del _name, _res, _args, _f, _missing


def blas_core():
    """The OpenBLAS kernel set this process uses ("Haswell", "SkylakeX", ... ; "Prescott": the
    generic fallback), or None when the BLAS is not OpenBLAS."""
    try:
        f = ctypes.CDLL("libopenblas.so.0").openblas_get_corename
    except (OSError, AttributeError):
        return None
    f.restype = c_char_p
    f.argtypes = []
    name = f()
    return name.decode() if name else None


def blas_fallback_advice():
    """A sentence when OpenBLAS runs its generic "Prescott" kernels on a CPU that has AVX2 and FMA
    (Debian 12's OpenBLAS 0.3.21 does not know recent cores: 3-4x slower); None otherwise. The CLI
    restarts itself with OPENBLAS_CORETYPE set (tools/tool_setup.h); a Python process cannot, and
    OpenBLAS reads the variable only when it is loaded (NumPy loads it first)."""
    if os.environ.get("OPENBLAS_CORETYPE") or blas_core() != "Prescott":
        return None
    try:
        flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "").split()
    except OSError:
        return None
    if "avx2" not in flags or "fma" not in flags:
        return None
    want = "SkylakeX" if all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq")) else "Haswell"
    return ("OpenBLAS runs its generic Prescott kernels on this CPU (3-4x slower); start Python with "
            "OPENBLAS_CORETYPE=%s set, as `dpsgd train` sets it for itself" % want)


def last_error():
    """dp_last_error() of this thread, as text."""
    msg = lib.dp_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def status_name(st):
    return STATUS_NAMES[st] if 0 <= st < len(STATUS_NAMES) else "status %d" % st


def strerror(st):
    return lib.dp_strerror(st).decode("utf-8", "replace")
