#!/usr/bin/env bash
# Checks that an installed dpsgd is usable: `cmake --install BUILD_DIR` into a temporary
# prefix, then compile examples/train_private.c against it through pkg-config, once with the
# shared library and once with the static one, and run both. Usage: check-install.sh [build]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=${1:-build}
CC=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$BUILD" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name dpsgd.pc | head -n 1)
[[ -n "$pc" ]] || { echo "check-install: no dpsgd.pc installed" >&2; exit 1; }
PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
libdir=$(pkg-config --variable=libdir dpsgd)

# shared: the program finds libdpsgd.so through its rpath (or LD_LIBRARY_PATH / ldconfig)
# shellcheck disable=SC2046
"$CC" -std=c17 -Wall -Wextra -Werror -O2 examples/train_private.c $(pkg-config --cflags --libs dpsgd) \
    -Wl,-rpath,"$libdir" -o "$tmp/shared"
# static: libdpsgd.a by name, then its private dependencies
# shellcheck disable=SC2046
"$CC" -std=c17 -Wall -Wextra -Werror -O2 examples/train_private.c $(pkg-config --cflags dpsgd) \
    $(pkg-config --static --libs dpsgd | sed 's/-ldpsgd\b/-l:libdpsgd.a/') -o "$tmp/static"

for kind in shared static; do
    if ! out=$("$tmp/$kind" 2>&1); then
        echo "$out" >&2
        echo "check-install: the $kind build of examples/train_private.c failed" >&2
        exit 1
    fi
    # the OpenMP build of OpenBLAS, not the pthread one Debian's alternatives may pick
    blas=$(ldd "$tmp/$kind" | awk '/libopenblas/ { print $3; exit }')
    if [[ -n "$blas" && $(readlink -f "$blas") != */openblas-openmp/* ]]; then
        echo "check-install: the $kind program loads $blas -> $(readlink -f "$blas")," >&2
        echo "  not the OpenMP build of OpenBLAS (RUNPATH / dpsgd.pc Libs.private lost?)" >&2
        exit 1
    fi
done
echo "check-install: installed headers, libraries and dpsgd.pc work (shared and static)"
