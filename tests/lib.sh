# tests/lib.sh: helpers shared by the shell tests; sourced, not run. Call t_setup first.
# `test && ok || bad ...` in the tests is safe: ok() always succeeds.
# shellcheck shell=bash

# Fashion-MNIST, for the data-dependent checks.
DATA=/usr/share/datasets/fashion-mnist

# have_data: true when the Fashion-MNIST training images are installed in $DATA.
have_data() {
    [[ -e $DATA/train-images-idx3-ubyte.gz || -e $DATA/train-images-idx3-ubyte ]]
}

# t_setup NAME PREFIX: NAME prefixes the FAIL and summary lines; creates $TMP (from PREFIX,
# removed at exit) and zeroes the counters.
t_setup() {
    T_NAME=$1
    passed=0
    failed=0
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$2.XXXXXX") || exit 1
    trap 'rm -rf "$TMP"' EXIT
}

ok() { passed=$((passed + 1)); }
bad() {
    failed=$((failed + 1))
    echo "$T_NAME: FAIL: $*" >&2
}

# run ARGS...: runs the tool $BIN, sets RC, OUT (stdout) and ERR (stderr).
# shellcheck disable=SC2034 # RC, OUT and ERR are read by the tests
run() {
    "$BIN" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    RC=$?
    OUT=$(<"$TMP/stdout")
    ERR=$(<"$TMP/stderr")
}

# t_summary: the last line, "NAME: N passed, N failed"; false if any check failed.
t_summary() {
    echo "$T_NAME: $passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}
