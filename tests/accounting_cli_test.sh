#!/usr/bin/env bash
# tests/accounting_cli_test.sh PATH-TO-DPSGD: `dpsgd epsilon` and `dpsgd noise` end to end:
# help, values against tests/test_accounting.c's reference (Opacus PRV upper bound 1.838 for
# q 0.01, sigma 1, 1000 steps, delta 1e-5), --epochs -> steps (as Opacus from a sample rate,
# as `dpsgd train` from --dataset-size and --batch-size), --json, --accountant all, GDP
# refused for calibration and for train and shown only beside PRV's bound, and every bad
# value (each message must name its flag).
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
SPACED=$OUT
# GNU style --flag=value: the same run
run epsilon --sample-rate=0.01 --noise-multiplier=1 --steps=1000 --delta=1e-5
[[ $RC -eq 0 && "$OUT" == "$SPACED" ]] && ok || bad "--flag=value: $OUT $ERR"
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

# GDP is a central-limit approximation (it can underestimate): it never calibrates sigma nor
# is a run's epsilon, and `epsilon` shows it only labelled, beside PRV's upper bound
expect_err "--accountant gdp" noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000 --accountant gdp
[[ "$ERR" == *"not a bound"* && "$ERR" == *"prv"* && -z "$OUT" ]] && ok || bad "noise gdp message: $ERR"
# (a missing --data: the refusal must come first, and a tool that accepted gdp stops at once)
expect_err "--accountant gdp" train --accountant gdp --data "$TMP/none"
expect_err "--accountant gdp" train --data "$TMP/none" --noise-multiplier 1 --accountant gdp
run noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000 --accountant all
[[ $RC -eq 0 && "$OUT" == *"pld: noise multiplier"* && "$OUT" != *"gdp: noise multiplier"* && "$OUT" == *"gdp: not used"* ]] &&
    ok || bad "noise all without gdp: $OUT $ERR"
run epsilon "${BASE[@]}" --accountant gdp
[[ $RC -eq 0 && "$OUT" == *"prv: epsilon 1.838"*"(upper bound"* && "$OUT" == *"gdp: epsilon"*"APPROXIMATION, not a bound"* ]] &&
    ok || bad "epsilon gdp beside prv: $OUT $ERR"
run epsilon "${BASE[@]}" --accountant all
[[ "$OUT" == *"gdp: epsilon"*"not a bound"* ]] && ok || bad "all labels gdp: $OUT"
if command -v python3 >/dev/null 2>&1; then
    run epsilon "${BASE[@]}" --accountant gdp --json
    python3 -c 'import json,sys; a=json.loads(sys.argv[1])["accountants"]; assert list(a)==["prv","gdp"] and a["gdp"]["approximate"] and not a["prv"]["approximate"]' "$OUT" &&
        ok || bad "gdp json beside prv: $OUT"
    run noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000 --accountant all --json
    python3 -c 'import json,sys; assert set(json.loads(sys.argv[1])["accountants"])=={"rdp","prv","pld"}' "$OUT" &&
        ok || bad "noise all json: $OUT"
fi

# steps from epochs as `dpsgd train` counts them (epochs x round(n / batch)) with the sizes;
# with a sample rate alone, Opacus' floor(epochs / q), and the count is printed
run noise --target-epsilon 3 --delta 1e-5 --dataset-size 60000 --batch-size 2048 --epochs 40
[[ $RC -eq 0 && "$OUT" == *"sample rate 0.0341333, 1160 steps"* && "$OUT" == *"40 x 29 = 1160"* ]] &&
    ok || bad "noise with sizes: $OUT $ERR"
run noise --target-epsilon 3 --delta 1e-5 --dataset-size 100 --batch-size 40 --epochs 2 --accountant rdp --json
[[ $RC -eq 0 && "$OUT" == *'"steps": 6,'* && "$OUT" == *'"steps_from": "epochs * round(dataset_size / batch_size)"'* &&
    "$OUT" == *'"sample_rate": 0.4'* ]] && ok || bad "round(100 / 40) = 3 steps per epoch: $OUT $ERR"
run epsilon --dataset-size 100 --batch-size 40 --noise-multiplier 1 --epochs 2 --delta 1e-5 --accountant rdp
[[ $RC -eq 0 && "$OUT" == *", 6 steps,"* ]] && ok || bad "epsilon with sizes: $OUT $ERR"
run noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.4 --epochs 2 --accountant rdp
[[ $RC -eq 0 && "$OUT" == *", 5 steps,"* && "$OUT" == *"floor(2 epochs / sample rate 0.4) = 5"* &&
    "$OUT" == *"--dataset-size"* ]] && ok || bad "steps assumed from the sample rate: $OUT $ERR"
expect_err "--batch-size" noise --target-epsilon 3 --delta 1e-5 --dataset-size 100 --epochs 2
expect_err "--dataset-size" noise --target-epsilon 3 --delta 1e-5 --batch-size 10 --epochs 2
expect_err "--batch-size" noise --target-epsilon 3 --delta 1e-5 --dataset-size 100 --batch-size 101 --epochs 2
expect_err "--batch-size" noise --target-epsilon 3 --delta 1e-5 --dataset-size 100 --batch-size 0 --epochs 2
expect_err "--sample-rate" noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.1 --dataset-size 100 --batch-size 10 --epochs 2
expect_err "--epochs" noise --target-epsilon 3 --delta 1e-5 --dataset-size 100 --batch-size 10 --epochs 1.5

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
expect_err "unknown option '--bogus'" epsilon "${BASE[@]}" --bogus
expect_err "unknown option '--bogus'" noise --target-epsilon 1 --delta 1e-5 --sample-rate 0.1 --steps 10 --bogus
expect_err "unknown option '--noise-multiplier'" noise --target-epsilon 1 --delta 1e-5 --sample-rate 0.1 --steps 10 \
    --noise-multiplier
expect_err "--steps needs a value" epsilon --sample-rate 0.1 --noise-multiplier 1 --delta 1e-5 --steps

# A target no noise multiplier reaches is a usage error, said at once with the reachable range
# (the search used to run for minutes, then say "no convergence" or give a sigma far from it).
# timeout: the old search ran for minutes; 124 is the timeout's status.
run_timed() {
    timeout 20 "$BIN" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    RC=$?
    OUT=$(<"$TMP/stdout")
    ERR=$(<"$TMP/stderr")
}
run_timed noise --target-epsilon 1e-9 --delta 1e-5 --sample-rate 1 --steps 100
[[ $RC -eq 2 && "$ERR" == *"--target-epsilon 1e-09"*"unreachable"*"at least"*"can be reached"* ]] && ok ||
    bad "unreachable below: rc $RC $ERR"
run_timed noise --target-epsilon 1e9 --delta 1e-5 --dataset-size 60000 --batch-size 2048 --epochs 40
[[ $RC -eq 2 && "$ERR" == *"unreachable with the prv accountant"*"1160 steps"*"at most"*"can be reached"* ]] && ok ||
    bad "unreachable above: rc $RC $ERR"
run_timed noise --target-epsilon 1e9 --delta 1e-5 --dataset-size 60000 --batch-size 2048 --epochs 40 --accountant pld
[[ $RC -eq 2 && "$ERR" == *"unreachable with the pld accountant"* ]] && ok || bad "unreachable above, pld: rc $RC $ERR"
run_timed noise --target-epsilon 0.005 --delta 1e-5 --sample-rate 0.01 --steps 1000 --json
[[ $RC -eq 2 && "$ERR" == *"at least 0.00999"* ]] && ok || bad "below prv's error: rc $RC $ERR"
# delta at least 1 - (1 - q)^T: epsilon is 0 whatever the noise (it "calibrated" to epsilon 0)
run_timed noise --target-epsilon 3 --delta 0.999999 --sample-rate 0.5 --steps 10 --accountant all
[[ $RC -eq 2 && "$ERR" == *"--delta 0.999999"*"whatever the noise"* ]] && ok || bad "delta near 1: rc $RC $ERR"
# a reachable target near the top still calibrates, to the tolerance
if command -v python3 >/dev/null 2>&1; then
    run_timed noise --target-epsilon 1000 --delta 1e-5 --sample-rate 1 --steps 1 --json
    python3 -c 'import json,sys; e=json.loads(sys.argv[1])["accountants"]["prv"]["epsilon"]; assert 999.99 <= e <= 1000, e' \
        "$OUT" && ok || bad "target 1000 at q 1: rc $RC $OUT $ERR"
fi

t_summary
