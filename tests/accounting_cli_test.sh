#!/usr/bin/env bash
# tests/accounting_cli_test.sh PATH-TO-DPSGD: `dpsgd epsilon` and `dpsgd noise` end to end:
# help, values against tests/test_accounting.c's reference (Opacus PRV upper bound 1.838 for
# q 0.01, sigma 1, 1000 steps, delta 1e-5), --epochs -> steps, --json, --accountant all,
# and every bad value (each message must name its flag).
# Last line: "accounting_cli_test: N passed, N failed"; exit status non-zero on any failure.
# shellcheck disable=SC2015
set -u
if [[ $# -ne 1 || ! -x "$1" ]]; then
    echo "usage: $0 PATH-TO-DPSGD" >&2
    exit 2
fi
BIN=$1
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
t_setup accounting_cli_test acct_cli

BASE=(--sample-rate 0.01 --noise-multiplier 1 --steps 1000 --delta 1e-5)

run epsilon --help
[[ $RC -eq 0 && "$OUT" == *"--accountant"* && "$OUT" == *"floor(E / Q)"* ]] && ok || bad "epsilon --help"
run noise --help
[[ $RC -eq 0 && "$OUT" == *"--target-epsilon"* ]] && ok || bad "noise --help"
run help
[[ "$OUT" == *"epsilon"* && "$OUT" == *"noise"* ]] && ok || bad "commands listed"

run epsilon "${BASE[@]}"
[[ $RC -eq 0 && "$OUT" == *"prv: epsilon 1.838"* ]] && ok || bad "default prv: $OUT $ERR"
run epsilon "${BASE[@]}" --accountant rdp
[[ $RC -eq 0 && "$OUT" == *"rdp: epsilon 2.1014"* ]] && ok || bad "rdp: $OUT"
run epsilon "${BASE[@]}" --accountant all
[[ $RC -eq 0 && "$OUT" == *"rdp:"* && "$OUT" == *"prv:"* && "$OUT" == *"pld:"* && "$OUT" == *"APPROXIMATION"* ]] && ok || bad "all: $OUT"
run epsilon --sample-rate 0.01 --noise-multiplier 1 --epochs 10 --delta 1e-5 --json
[[ $RC -eq 0 && "$OUT" == *'"steps": 1000'* && "$OUT" == *'"epsilon": 1.838'* ]] && ok || bad "epochs/json: $OUT"
run epsilon "${BASE[@]}" --accountant gdp --json
[[ $RC -eq 0 && "$OUT" == *'"approximate": true'* ]] && ok || bad "gdp json: $OUT"
if command -v python3 >/dev/null 2>&1; then
    run epsilon "${BASE[@]}" --accountant all --json
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert set(d["accountants"])=={"rdp","prv","pld","gdp"}' "$OUT" && ok || bad "json parse: $OUT"
fi
run noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --epochs 10
[[ $RC -eq 0 && "$OUT" =~ "prv: noise multiplier 0.81" ]] && ok || bad "noise: $OUT $ERR"
run noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000 --accountant rdp
[[ $RC -eq 0 && "$OUT" =~ "rdp: noise multiplier 0.8" ]] && ok || bad "noise rdp: $OUT $ERR"

expect_err "--sample-rate" epsilon --sample-rate 0 --noise-multiplier 1 --steps 10 --delta 1e-5
expect_err "--sample-rate" epsilon --sample-rate 1.5 --noise-multiplier 1 --steps 10 --delta 1e-5
expect_err "--sample-rate" epsilon --sample-rate abc --noise-multiplier 1 --steps 10 --delta 1e-5
expect_err "--noise-multiplier" epsilon --sample-rate 0.1 --noise-multiplier 0 --steps 10 --delta 1e-5
expect_err "--noise-multiplier" epsilon --sample-rate 0.1 --noise-multiplier -1 --steps 10 --delta 1e-5
expect_err "--delta" epsilon --sample-rate 0.1 --noise-multiplier 1 --steps 10 --delta 1
expect_err "--delta" epsilon --sample-rate 0.1 --noise-multiplier 1 --steps 10 --delta 0
expect_err "--steps" epsilon --sample-rate 0.1 --noise-multiplier 1 --steps 0 --delta 1e-5
expect_err "--steps" epsilon --sample-rate 0.1 --noise-multiplier 1 --delta 1e-5
expect_err "--epochs" epsilon --sample-rate 0.1 --noise-multiplier 1 --epochs 0.01 --delta 1e-5
expect_err "--accountant" epsilon "${BASE[@]}" --accountant moments
expect_err "unknown option" epsilon "${BASE[@]}" --bogus 1
expect_err "--target-epsilon" noise --target-epsilon 0 --delta 1e-5 --sample-rate 0.1 --steps 10
expect_err "--target-epsilon" noise --delta 1e-5 --sample-rate 0.1 --steps 10
expect_err "--delta" noise --target-epsilon 1 --delta 2 --sample-rate 0.1 --steps 10
run noise --target-epsilon 1e-9 --delta 1e-5 --sample-rate 1 --steps 100
[[ $RC -eq 1 && "$ERR" == *"unreachable"* ]] && ok || bad "unreachable: rc $RC $ERR"

t_summary
