"""dpsgd: differentially private training (DP-SGD) and privacy accounting, over the C library
libdpsgd.so (found through DPSGD_LIBRARY, next to this package, the build tree of the checkout
the package sits in, or the install prefix).

    import dpsgd
    dpsgd.epsilon(sample_rate=2048 / 60000, noise_multiplier=1.8, steps=1160, delta=1e-5)
    x, y = dpsgd.data.fashion_mnist(train=True, limit=2000)
    model = dpsgd.Model("cnn", input_shape=(1, 28, 28), classes=10)
    result = dpsgd.train(model, x, y, epsilon=3, epochs=2, batch_size=256)

docs/python.md has a worked example for each part.
"""

from ._capi import library_path, LibraryNotFoundError, blas_core
from .errors import (Error, OutOfMemory, InvalidArgument, DTypeError, IOFailure, FormatError, RangeError,
                     NonFiniteError, Unsupported, Interrupted)
from .accounting import Accountant, EpsilonReport, epsilon, epsilon_report, noise_multiplier, KINDS as ACCOUNTANTS
from .models import Model, Layer
from .training import train, TrainResult, EpochRecord, holdout_split, PrivateTrainer, StepStats
from . import data

__version__ = "0.1.0"

__all__ = ["Accountant", "EpsilonReport", "epsilon", "epsilon_report", "noise_multiplier", "ACCOUNTANTS", "Model",
           "Layer", "train", "TrainResult", "EpochRecord", "holdout_split", "PrivateTrainer", "StepStats", "data",
           "Error", "OutOfMemory", "InvalidArgument", "DTypeError", "IOFailure", "FormatError", "RangeError",
           "NonFiniteError", "Unsupported", "Interrupted", "LibraryNotFoundError", "library_path", "blas_core"]
