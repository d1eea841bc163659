#!/usr/bin/env bash
# The main job: install what is missing, build the Release tree in build/, then train.
# Every argument goes to `dpsgd train` (see `./build/dpsgd train --help`), e.g.
#   scripts/train.sh --epochs 40 --epsilon 3
# Fashion-MNIST is read in place from /usr/share/datasets/fashion-mnist/ (installed by
# scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS=${JOBS:-2}

bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DDP_SANITIZE=OFF >/dev/null
cmake --build build -j "$JOBS" >/dev/null || cmake --build build -j 1   # on failure, show why
if [[ ! -x build/dpsgd ]]; then
    echo "train.sh: build/dpsgd was not built (are there sources in tools/?)" >&2
    exit 1
fi
exec ./build/dpsgd train "$@"
