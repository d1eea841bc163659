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

# show ARGS...: the command and what it printed, after a failed check.
show() {
    echo "    command: dpsgd $*" >&2
    echo "    exit $RC; stdout: ${OUT:0:600}" >&2
    echo "    stderr: ${ERR:0:600}" >&2
}

# expect_rc WANT DESC ARGS...: exit status exactly WANT.
expect_rc() {
    local want=$1 desc=$2
    shift 2
    run "$@"
    if [[ $RC -eq $want ]]; then ok; else
        bad "$desc: exit $RC, want $want"
        show "$@"
    fi
}

# expect_err FLAGTEXT ARGS...: exit 2 and stderr mentions FLAGTEXT
# shellcheck disable=SC2015
expect_err() {
    local want=$1
    shift
    run "$@"
    [[ $RC -eq 2 && "$ERR" == *"$want"* ]] && ok || bad "$* -> rc $RC, stderr: $ERR (wanted '$want')"
}

# expect_fail WANT_RC NEEDLE ARGS...: exit WANT_RC (or any non-zero when WANT_RC is "nz"),
# stderr mentions NEEDLE (fixed string) and, unless ALLOW_FINAL=1, no "final:" line.
expect_fail() {
    local want=$1 needle=$2
    shift 2
    run "$@"
    local good=1
    if [[ $want == nz ]]; then [[ $RC -ne 0 ]] || good=0; else [[ $RC -eq $want ]] || good=0; fi
    if [[ $good -eq 1 ]]; then ok; else
        bad "dpsgd $*: exit $RC, want $want"
        show "$@"
    fi
    if grep -qF -- "$needle" "$TMP/stderr"; then ok; else
        bad "dpsgd $*: stderr does not name '$needle'"
        show "$@"
    fi
    # a failing run prints no final line (except when only writing --out failed, after training)
    if [[ $RC -ne 0 && ${ALLOW_FINAL:-0} != 1 ]]; then
        if grep -q '^final:' "$TMP/stdout"; then
            bad "dpsgd $*: failed but printed a final line"
        else ok; fi
    fi
}
