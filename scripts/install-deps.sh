#!/usr/bin/env bash
# Installs the system packages dpsgd needs to build, test and train, and nothing else.
# Idempotent: each package is checked with dpkg-query first, so on a machine that already
# has them this does no network access at all; `apt-get update` runs only when something
# must be installed.
#
#   build-essential          gcc (with its OpenMP runtime, libgomp), make, libc headers
#   cmake                    the build system (+ ctest)
#   pkg-config               to check the installed dpsgd.pc (docs/build.md)
#   libopenblas-openmp-dev   BLAS, OpenMP flavour (single-threaded inside our OpenMP regions)
#   zlib1g-dev               gzip'd IDX files
#   libfftw3-dev             FFTW3 (double): the FFTs of the PRV and PLD accountants
#   libssl-dev               OpenSSL's libcrypto: ChaCha20, the secure noise's keystream
#   dataset-fashion-mnist    the data, read in place from /usr/share/datasets/fashion-mnist/
#   libopenmpi-dev openmpi-bin  Open MPI, for `mpirun -np N dpsgd train` (optional at build
#                            time: CMake's DP_MPI is OFF without it; tests/mpi_test.sh)
#   libprotobuf-c-dev protobuf-c-compiler  protobuf-c: the ONNX reader (src/io/onnx.c) is
#                            generated at build time with protoc-c
#   libonnx-dev              ONNX's schema, /usr/include/onnx/onnx.proto (what protoc-c reads)
#   libonnx-testdata         the ONNX project's operator test cases (tests/test_onnx_io.c)
#   python3 python3-numpy    the Python package (python/dpsgd: ctypes over libdpsgd.so, NumPy arrays)
#   python3-pytest           its tests (tests/python/, run by scripts/test.sh)
#   python3-setuptools python3-venv  `pip install ./python` offline, checked in a virtualenv
#   python3-torch            the PyTorch bridge (dpsgd.torch) and its test: a PyTorch model trained
#                            through dpsgd and evaluated by PyTorch (large: libtorch, ~180 MB)
#
# We use gcc's libgomp, which comes with gcc: libomp-dev (LLVM's runtime) is deliberately
# not installed.
set -euo pipefail

PACKAGES=(build-essential cmake pkg-config libopenblas-openmp-dev zlib1g-dev libfftw3-dev libssl-dev dataset-fashion-mnist
          libopenmpi-dev openmpi-bin libprotobuf-c-dev protobuf-c-compiler libonnx-dev libonnx-testdata
          python3 python3-numpy python3-pytest python3-setuptools python3-venv python3-torch)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-deps: error: not root and sudo is not available; install as root:" >&2
        echo "  apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get update -qq; then
    echo "install-deps: error: 'apt-get update' failed (no network or no package mirror?)" >&2
    exit 1
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null; then
    echo "install-deps: error: could not install: ${missing[*]}" >&2
    exit 1
fi
echo "install-deps: done"
