"""Finding the library (DPSGD_LIBRARY, next to the package, the build tree, the install prefix;
a clear error when it is missing) and installing the package with pip, offline."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import dpsgd

PKG = os.path.dirname(os.path.abspath(dpsgd.__file__))
LIB = os.path.realpath(dpsgd.library_path)


def run_py(code, env_extra=None, cwd=None, drop=("DPSGD_LIBRARY", "PYTHONPATH")):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=cwd)


def copy_package(dest):
    shutil.copytree(PKG, os.path.join(dest, "dpsgd"), ignore=shutil.ignore_patterns("__pycache__", "*.so*"))
    return dest


def installed_elsewhere():
    import ctypes.util
    return ctypes.util.find_library("dpsgd") or any(
        os.path.exists(os.path.join(p, "libdpsgd.so.0")) for p in ("/usr/local/lib", "/usr/lib", "/usr/local/lib64"))


def test_bad_dpsgd_library_is_an_import_error(tmp_path):
    p = run_py("import dpsgd", {"DPSGD_LIBRARY": str(tmp_path / "nope.so"), "PYTHONPATH": os.path.dirname(PKG)})
    assert p.returncode != 0
    assert "LibraryNotFoundError: dpsgd: DPSGD_LIBRARY=%s cannot be loaded" % (tmp_path / "nope.so") in p.stderr


def test_missing_library_says_where_it_looked(tmp_path):
    if installed_elsewhere():
        pytest.skip("a libdpsgd.so is installed system-wide: the package would find it")
    copy_package(tmp_path)
    p = run_py("import dpsgd", {"PYTHONPATH": str(tmp_path)})
    assert p.returncode != 0
    err = p.stderr
    assert "the C library libdpsgd.so was not found" in err and "DPSGD_LIBRARY" in err
    assert "next to the package" in err and "the install prefix" in err


def test_library_next_to_the_package(tmp_path):
    copy_package(tmp_path)
    shutil.copy(LIB, tmp_path / "dpsgd" / "libdpsgd.so.0")
    p = run_py("import dpsgd; print(dpsgd.library_path); print(dpsgd.epsilon(sample_rate=0.01, "
               "noise_multiplier=1.0, steps=100, delta=1e-5, accountant='rdp'))", {"PYTHONPATH": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == str(tmp_path / "dpsgd" / "libdpsgd.so.0")


def test_build_tree_of_the_checkout(tmp_path):
    """Used in place (PYTHONPATH=python) from a checkout whose build/ holds the library: a copy of
    the package in a folder laid out as a checkout (CMakeLists.txt, python/dpsgd, build/)."""
    (tmp_path / "CMakeLists.txt").write_text("")
    copy_package(tmp_path / "python")
    (tmp_path / "build").mkdir()
    shutil.copy(LIB, tmp_path / "build" / "libdpsgd.so.0")
    p = run_py("import dpsgd; print(dpsgd.library_path)", {"PYTHONPATH": str(tmp_path / "python")})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(tmp_path / "build" / "libdpsgd.so.0")


def test_not_a_dpsgd_library(tmp_path):
    """A library without the package's functions (another library, or an older libdpsgd.so)."""
    import ctypes.util
    other = ctypes.util.find_library("z")
    p = run_py("import dpsgd", {"DPSGD_LIBRARY": other, "PYTHONPATH": os.path.dirname(PKG)})
    assert p.returncode != 0
    assert "lacks dp_strerror" in p.stderr and "older than this package" in p.stderr


def test_pip_install_offline(tmp_path, root):
    """`pip install ./python` in a virtual environment with --no-index (no network at all: nothing
    is downloaded, setuptools is Debian's); DPSGD_LIBRARY at install time bundles the library, so
    the installed package works from elsewhere with no environment variable."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    src = tmp_path / "src"
    shutil.copytree(os.path.join(root, "python"), src, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                                   "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DPSGD_LIBRARY")}
    p = subprocess.run(pip + ["install", "--no-index", str(src)], capture_output=True, text=True,
                       env=dict(env, DPSGD_LIBRARY=LIB))
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import dpsgd, os; print(os.path.dirname(dpsgd.__file__)); print(dpsgd.epsilon("
                        "sample_rate=0.01, noise_multiplier=1.0, steps=100, delta=1e-5, accountant='rdp'))"],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert p.returncode == 0, p.stderr
    where = p.stdout.splitlines()[0]
    assert where.startswith(str(venv)) and os.path.exists(os.path.join(where, "libdpsgd.so.0"))


def test_blas_fallback_advice(monkeypatch):
    from dpsgd import _capi
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setattr(_capi, "blas_core", lambda: "Prescott")
    flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "").split()
    advice = _capi.blas_fallback_advice()
    if "avx2" in flags and "fma" in flags:
        assert "OPENBLAS_CORETYPE=" in advice and "Prescott" in advice
    else:
        assert advice is None
    monkeypatch.setattr(_capi, "blas_core", lambda: "Haswell")
    assert _capi.blas_fallback_advice() is None
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    monkeypatch.setattr(_capi, "blas_core", lambda: "Prescott")
    assert _capi.blas_fallback_advice() is None  # the user chose it
