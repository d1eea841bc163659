"""The ctypes mirrors of python/dpsgd/_capi.py against the C compiler's view of the headers:
every struct's size and field offsets, and the enum lists. A mismatch would make the package pass
garbage (or a bad pointer) to the library, so it is checked, not assumed."""

import ctypes
import json
import os
import shutil
import subprocess

import pytest

from dpsgd import _capi


@pytest.fixture(scope="module")
def layout(tmp_path_factory, root):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("no C compiler (build-essential) to check the ctypes layouts with")
    exe = str(tmp_path_factory.mktemp("abi") / "abi_check")
    here = os.path.dirname(os.path.abspath(__file__))
    # compiled only, never linked to the library: dp_optim_name is the one call, from the static archive
    lib = os.path.realpath(_capi.library_path)
    subprocess.run([cc, "-std=c17", "-I", os.path.join(root, "include"), os.path.join(here, "abi_check.c"), "-o", exe,
                    lib, "-Wl,-rpath," + os.path.dirname(lib)], check=True)
    return json.loads(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)


STRUCTS = ["dp_rng", "dp_dataset", "dp_accounting_params", "dp_epsilon_report", "dp_transformer_params",
           "dp_optim_params", "dp_clip_params", "dp_train_progress", "dp_train_params", "dp_train_result",
           "dp_trainer_stats", "dp_trainer_info"]


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_layout(layout, name):
    c = layout["structs"][name]
    py = getattr(_capi, name)
    assert ctypes.sizeof(py) == c["size"], name
    assert [f[0] for f in py._fields_] == list(c["fields"]), name
    for field, off in c["fields"].items():
        assert getattr(py, field).offset == off, "%s.%s" % (name, field)


def test_sig_atomic_is_int(layout):
    assert layout["sig_atomic_t"] == ctypes.sizeof(ctypes.c_int)


def test_enum_lists(layout):
    assert list(_capi.STATUS_NAMES) == layout["status"]
    assert list(_capi.CLIP_MODES) == layout["clip"]
    assert list(_capi.LAYER_KINDS) == layout["layers"]
    assert list(_capi.ACCOUNTANT_KINDS) == layout["accountants"]
    assert list(_capi.OPTIMIZERS) == layout["optimizers"]
