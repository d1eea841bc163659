"""pytest set-up for the Python package's tests (scripts/test.sh runs them after the Release build).

The package is imported from python/ of this checkout; the library is DPSGD_LIBRARY when set
(scripts/test.sh sets build/libdpsgd.so), else the package's own search (build/ of this
checkout). The CLI compared against is DPSGD_CLI, else the `dpsgd` next to the library.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.path.join(ROOT, "python") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "python"))

import dpsgd  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def cli():
    path = os.environ.get("DPSGD_CLI") or os.path.join(os.path.dirname(os.path.realpath(dpsgd.library_path)), "dpsgd")
    if not os.access(path, os.X_OK):
        pytest.fail("the dpsgd CLI to compare with is not at %s (set DPSGD_CLI)" % path)
    return path


def blas_core():
    """The OpenBLAS kernel set this process uses: the CLI is run with the same one, so that both
    compute with the same kernels (the CLI would otherwise pick its own, tools/tool_setup.h)."""
    return dpsgd.blas_core()


@pytest.fixture(scope="session")
def run_cli(cli):
    def run(*args, check=True, env=None):
        e = dict(os.environ)
        core = blas_core()
        if core:
            e["OPENBLAS_CORETYPE"] = core
        e.update(env or {})
        p = subprocess.run([cli] + [str(a) for a in args], capture_output=True, text=True, env=e)
        if check and p.returncode != 0:
            raise AssertionError("%s %s: exit %d\n%s%s" % (cli, " ".join(map(str, args)), p.returncode, p.stdout,
                                                            p.stderr))
        return p
    return run


@pytest.fixture(scope="session")
def fmnist():
    if not os.path.isdir(FMNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (scripts/install-deps.sh installs it)")
    return FMNIST
