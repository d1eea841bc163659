#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run):
#   1. scripts/install-deps.sh (no network when everything is installed);
#   2. Release build in build/, ctest there, the example program, an install to a temporary
#      prefix with the example compiled against it through pkg-config (scripts/check-install.sh),
#      and the Python package's tests (pytest, tests/python/) against build/'s library and CLI;
#   3. AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/, ctest there (with
#      LeakSanitizer on), and the example program again under the sanitizers; where the CPU has
#      AVX2 and FMA, a second sanitizer build (build-asan-v3/) with them for the kernel and
#      engine tests.
# Every step runs even if an earlier one failed (a build failure skips only its own tests),
# so one run reports everything; the exit status is non-zero if anything failed. The last
# line is "test.sh: N passed, N failed" (ctest cases plus the example runs).
#
# Options through the environment: JOBS (build parallelism, default 2), SKIP_ASAN=1 (only
# the Release half), CTEST_ARGS (extra ctest arguments, e.g. "-R test_nn").
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
JOBS=${JOBS:-2}
# The machine has 2 cores: the tests' OpenMP regions use both, and ctest runs one test at a
# time so they do not fight over them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# shellcheck disable=SC2206
CTEST_EXTRA=(${CTEST_ARGS:-})

passed=0
failed=0
failures=()
fail() { failed=$((failed + 1)); failures+=("$1"); echo "test.sh: FAILED: $1" >&2; }

# run_ctest NAME DIR [ARGS...]: runs ctest in DIR (with ARGS), adds its counts to passed/failed,
# prints the wall time.
run_ctest() {
    local name=$1 dir=$2 log t0 t1 rc summary total nfail
    log=$(mktemp)
    t0=$EPOCHREALTIME
    (cd "$dir" && ctest --output-on-failure --no-tests=error "${CTEST_EXTRA[@]}" "${@:3}") 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    t1=$EPOCHREALTIME
    # "100% tests passed, 0 tests failed out of 5"
    summary=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
    rm -f "$log"
    if [[ -n "$summary" ]]; then
        total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$summary")
        nfail=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$summary")
        passed=$((passed + total - nfail))
        failed=$((failed + nfail))
        [[ $nfail -eq 0 ]] || failures+=("$name: $nfail of $total tests")
    fi
    if [[ $rc -ne 0 && ( -z "$summary" || $nfail -eq 0 ) ]]; then
        fail "$name: ctest exited with $rc"
    fi
    awk -v n="$name" -v a="$t0" -v b="$t1" 'BEGIN { printf "test.sh: %s ctest wall time %.1f s\n", n, b - a }'
}

# run_pytest: the Python package's tests (tests/python/, docs/python.md) with Debian's python3,
# whose NumPy, pytest and torch install-deps installed (a pyenv or virtualenv python3 earlier on
# PATH may have none of them), against build/'s libdpsgd.so and dpsgd; adds pytest's counts.
run_pytest() {
    local py=/usr/bin/python3 log rc summary n
    [[ -x $py ]] || py=$(command -v python3)
    echo "==> pytest tests/python ($py)"
    log=$(mktemp)
    DPSGD_LIBRARY=$ROOT/build/libdpsgd.so DPSGD_CLI=$ROOT/build/dpsgd PYTHONPATH=$ROOT/python \
        PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest -p no:cacheprovider -q -rs tests/python 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    # "12 passed, 1 failed, 2 skipped in 40.1s"
    summary=$(grep -E '^=*\s*[0-9]+ (passed|failed|error)' "$log" | tail -n 1)
    rm -f "$log"
    n=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || true)
    passed=$((passed + ${n:-0}))
    n=$(( $(grep -oE '[0-9]+ (failed|errors?)' <<<"$summary" | grep -oE '[0-9]+' | paste -sd+ - || echo 0) + 0 ))
    failed=$((failed + n))
    [[ $n -eq 0 ]] || failures+=("pytest: $n failed")
    if [[ $rc -ne 0 && $n -eq 0 ]]; then fail "pytest: exited with $rc"; fi
}

# run_example NAME EXE: the example must exit 0.
run_example() {
    echo "==> $1"
    if "$2"; then passed=$((passed + 1)); else fail "$1 (exit $?)"; fi
}

echo "==> install-deps"
bash scripts/install-deps.sh || { echo "test.sh: cannot install dependencies" >&2; exit 1; }

# ---- Release ---------------------------------------------------------------------------
echo "==> Release build (build/)"
if cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DDP_SANITIZE=OFF >/dev/null &&
   cmake --build build -j "$JOBS"; then
    run_ctest Release build
    run_example "example_train_private (Release)" build/example_train_private
    echo "==> install + pkg-config"
    if bash scripts/check-install.sh build; then passed=$((passed + 1)); else fail "install + pkg-config"; fi
    run_pytest
else
    fail "Release build"
fi

# ---- AddressSanitizer + UBSan ----------------------------------------------------------
# Build type: Debug (so assert() stays on) with CMAKE_C_FLAGS_DEBUG overridden to -O1 -g.
# -O0, the usual Debug level, makes the sanitized numeric kernels several times slower and
# the suite would not finish quickly on 2 cores; -O1 is what the ASan documentation
# recommends for "reasonable performance", still keeps line-accurate stack traces (with the
# frame pointer kept), and compiles faster than -O2/-O3 (RelWithDebInfo), which would also
# define NDEBUG.
if [[ "${SKIP_ASAN:-0}" != 1 ]]; then
    echo "==> ASan+UBSan build (build-asan/)"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    # Leaks inside libgomp/OpenBLAS thread-pool bookkeeping (not our code), if any: see the file.
    if [[ -f scripts/lsan.supp ]]; then
        export LSAN_OPTIONS=suppressions=$ROOT/scripts/lsan.supp:print_suppressions=0
    fi
    if cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDP_SANITIZE=ON \
             "-DCMAKE_C_FLAGS_DEBUG=-O1 -g -fno-omit-frame-pointer" >/dev/null &&
       cmake --build build-asan -j "$JOBS"; then
        run_ctest ASan build-asan
        run_example "example_train_private (ASan)" build-asan/example_train_private
    else
        fail "ASan build"
    fi
    # The build above has no -march, so it runs the portable loops; the AVX2 code (the noise's
    # vector paths, the Gram and small-GEMM kernels, the direct convolution, scatter) runs in
    # the Release build only, without sanitizers. Where this machine has AVX2 and FMA (the
    # Release configure found x86-64-v3), the tests of those kernels and of the engine run once
    # more under the sanitizers with them compiled in.
    if grep -q '^DP_HAVE_X86_64_V3:INTERNAL=1' build/CMakeCache.txt 2>/dev/null; then
        echo "==> ASan+UBSan build with AVX2 (build-asan-v3/): kernel and engine tests"
        v3_tests=(test_nn test_privacy test_scatter test_seq_kernels test_tensor_kernels test_train test_reference)
        if cmake -S . -B build-asan-v3 -DCMAKE_BUILD_TYPE=Debug -DDP_SANITIZE=ON \
                 "-DCMAKE_C_FLAGS_DEBUG=-O1 -g -fno-omit-frame-pointer -march=x86-64-v3" >/dev/null &&
           cmake --build build-asan-v3 -j "$JOBS" --target "${v3_tests[@]}"; then
            run_ctest "ASan AVX2" build-asan-v3 -R "^($(IFS='|'; echo "${v3_tests[*]}"))\$"
        else
            fail "ASan AVX2 build"
        fi
    fi
fi

echo
if [[ $failed -ne 0 || ${#failures[@]} -ne 0 ]]; then
    printf 'test.sh: failed: %s\n' "${failures[@]}" >&2
fi
echo "test.sh: $passed passed, $failed failed"
[[ $failed -eq 0 && ${#failures[@]} -eq 0 ]]
