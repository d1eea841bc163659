#!/usr/bin/env bash
# tests/cli_test.sh PATH-TO-DPSGD [PATH-TO-DPSGD-TESTHOOKS]: the command-line tool end to end
# (the test build, when given, for the audit's test-only switches and a small audit whose
# broken mechanism must give a VIOLATION; the shipped one must refuse them): help texts, unknown
# commands and flags, every kind of bad value (each message must name its flag), missing and
# malformed data (an IDX label above the 10 classes refused by train, norms and audit), a
# small real private run with a JSON summary, a failing --out that leaves
# no temporary files, and the non-private baseline. Data-dependent checks are skipped
# (printed as SKIP, not counted) when the Fashion-MNIST files are not installed.
# Last line: "cli_test: N passed, N failed"; exit status non-zero on any failure.
# `test && ok || bad ...` below is safe: ok() always succeeds.
# shellcheck disable=SC2015
set -u

if [[ $# -lt 1 || $# -gt 2 || ! -x "$1" || ( $# -eq 2 && ! -x "$2" ) ]]; then
    echo "usage: $0 PATH-TO-DPSGD [PATH-TO-DPSGD-TESTHOOKS] (executables; the second for the audit's test switches)" >&2
    exit 2
fi
BIN=$1
HOOKS_BIN=${2:-}
SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t_setup cli_test cli_test

# ---- help ------------------------------------------------------------------------------
expect_rc 0 "--help" --help
grep -q 'train' <<<"$OUT" && ok || bad "--help does not mention 'train'"
expect_rc 0 "help" help
expect_rc 0 "help train" help train
grep -q -- '--epochs' <<<"$OUT" && ok || bad "help train does not show the train options"
expect_rc 2 "no command" # usage on stderr, exit 2
[[ -n "$ERR" ]] && ok || bad "no command: no usage on stderr"
expect_rc 0 "train --help" train --help
HELP=$OUT
expect_rc 0 "train -h" train -h
[[ "$OUT" == "$HELP" ]] && ok || bad "train -h and train --help differ"

# Every flag the parser accepts: the list below, plus whatever tools/dpsgd.c compares
# against (so a new flag without help text fails here).
FLAGS=(--data --classes --normalize --train-limit --test-limit --model --freeze --no-dp --clipping
    --max-grad-norm --epsilon --delta --noise-multiplier --epochs --batch-size
    --physical-batch --optimizer --lr --momentum --nesterov --weight-decay --beta1 --beta2
    --seed --threads --out --quiet --help -h)
if [[ -f "$SRC_DIR/tools/dpsgd.c" ]]; then
    while read -r f; do FLAGS+=("$f"); done < <(grep -oE 'strcmp\(a, "-[-a-z0-9]+"\)' "$SRC_DIR/tools/dpsgd.c" |
        sed -E 's/.*"(-[-a-z0-9]+)".*/\1/' | sort -u)
fi
for f in "${FLAGS[@]}"; do
    if grep -qE -- "(^|[^-a-z0-9])${f}([^-a-z0-9]|\$)" <<<"$HELP"; then ok; else bad "train --help does not mention $f"; fi
done

# ---- unknown command / flag ---------------------------------------------------------------
expect_fail 2 frobnicate frobnicate
expect_fail 2 "--bogus" train --bogus
expect_fail 2 "--epoch" train --epoch 3
expect_fail 2 "extra" train extra
# an unknown flag is named as unknown in every command, also where nothing follows it (it was
# "--nonsense needs a value" in epsilon and noise)
for c in train norms epsilon noise "bench cnn"; do
    # shellcheck disable=SC2086 # "bench cnn" is the command and its workload
    expect_fail 2 "unknown option '--nonsense'" $c --nonsense
    # shellcheck disable=SC2086
    expect_fail 2 "unknown option '--nonsense'" $c --nonsense 3
done

# a switch given a value with '=' names the switch (it said "unknown option '1'"; sweep.sh)
expect_fail 2 "--pre-norm=1: --pre-norm takes no value" train --pre-norm=1
expect_fail 2 "--quiet=no: --quiet takes no value" norms --quiet=no
expect_fail 2 "--json=1=2: --json takes no value" epsilon --json=1=2
expect_fail 2 "--quick=1: --quick takes no value" bench cnn --quick=1
# an empty --data and a spec's empty last argument name the flag (both ran on before)
expect_fail 2 "--data: empty path" train --data ''
expect_fail 2 "--data: empty path" norms --data ''

# ---- bad values: each names its flag (all rejected before any data is read) -------------
NODATA=(--data "$TMP/never-read")
expect_fail 2 --epochs train "${NODATA[@]}" --epochs 0
expect_fail 2 --epochs train "${NODATA[@]}" --epochs x
expect_fail 2 --epochs train "${NODATA[@]}" --epochs 1.5
expect_fail 2 --epochs train "${NODATA[@]}" --epochs -1
expect_fail 2 --epochs train "${NODATA[@]}" --epochs 99999999999999999999
expect_fail 2 --lr train "${NODATA[@]}" --lr nan
expect_fail 2 --lr train "${NODATA[@]}" --lr inf
expect_fail 2 --lr train "${NODATA[@]}" --lr 1e999
expect_fail 2 --lr train "${NODATA[@]}" --lr 0.1x
expect_fail 2 --lr train "${NODATA[@]}" --lr ""
expect_fail 2 --delta train "${NODATA[@]}" --delta 2
expect_fail 2 --delta train "${NODATA[@]}" --delta 0
expect_fail 2 --epsilon train "${NODATA[@]}" --epsilon 0
expect_fail 2 --epsilon train "${NODATA[@]}" --epsilon -3
expect_fail 2 --max-grad-norm train "${NODATA[@]}" --max-grad-norm 0
expect_fail 2 --max-grad-norm train "${NODATA[@]}" --max-grad-norm -0.1
expect_fail 2 --noise-multiplier train "${NODATA[@]}" --noise-multiplier 0
expect_fail 2 --clipping train "${NODATA[@]}" --clipping foo
expect_fail 2 --mem-budget train "${NODATA[@]}" --mem-budget 3Q
expect_fail 2 --mem-budget train "${NODATA[@]}" --mem-budget -1GiB
expect_fail 2 --optimizer train "${NODATA[@]}" --optimizer bar
expect_fail 2 --batch-size train "${NODATA[@]}" --batch-size
expect_fail 2 --batch-size train "${NODATA[@]}" --batch-size 0
expect_fail 2 --physical-batch train "${NODATA[@]}" --physical-batch 0
expect_fail 2 --normalize train "${NODATA[@]}" --normalize 1
expect_fail 2 --normalize train "${NODATA[@]}" --normalize 0.5,0
expect_fail 2 --normalize train "${NODATA[@]}" --normalize 0.5,-1
expect_fail 2 --normalize train "${NODATA[@]}" --normalize x,1
expect_fail 2 --normalize train "${NODATA[@]}" --normalize nan,1
expect_fail 2 --train-limit train "${NODATA[@]}" --train-limit 0
expect_fail 2 --test-limit train "${NODATA[@]}" --test-limit -5
expect_fail 2 --seed train "${NODATA[@]}" --seed -1
expect_fail 2 --threads train "${NODATA[@]}" --threads 0
expect_fail 2 --classes train "${NODATA[@]}" --classes 0
expect_fail 2 --classes audit "${NODATA[@]}" --classes x
# the optimizer's ranges are usage errors too, found before the data is read (they were found
# by dp_train after loading it, exit 1)
expect_fail 2 "--lr -1" train "${NODATA[@]}" --lr -1
expect_fail 2 "--momentum 1" train "${NODATA[@]}" --momentum 1
expect_fail 2 "--momentum 1.5" train "${NODATA[@]}" --momentum 1.5
expect_fail 2 "--weight-decay -0.1" train "${NODATA[@]}" --weight-decay -0.1
expect_fail 2 "--beta1 1" train "${NODATA[@]}" --optimizer adam --beta1 1
expect_fail 2 "--beta2 -1" train "${NODATA[@]}" --optimizer adamw --beta2 -1
expect_fail 2 "--nesterov" train "${NODATA[@]}" --nesterov --momentum 0
# --no-dp with a flag only a private run uses: refused naming both (they were silently ignored)
for f in "--epsilon 2" "--noise-multiplier 1" "--max-grad-norm 1" "--clipping ghost" "--delta 1e-6" \
    "--accountant rdp" "--noise-seed 3" "--report-nonprivate" "--mem-budget 1GiB"; do
    # shellcheck disable=SC2086 # flag and value
    expect_fail 2 "--no-dp" train "${NODATA[@]}" --no-dp $f
    [[ "$ERR" == *"${f%% *}"* ]] && ok || bad "--no-dp $f: the message does not name ${f%% *}: $ERR"
    # shellcheck disable=SC2086
    expect_fail 2 "--no-dp" train "${NODATA[@]}" $f --no-dp
done
# the audit's switches that break the mechanism on purpose exist only in the test build
# (dpsgd-testhooks, src/core/testhooks.h): the shipped dpsgd refuses them as unknown options
expect_fail 2 "unknown option '--debug-noise-scale'" audit "${NODATA[@]}" --debug-noise-scale 0.5
expect_fail 2 "unknown option '--debug-canary-scale'" audit "${NODATA[@]}" --debug-canary-scale 10
expect_rc 0 "audit --help" audit --help
grep -q -- '--debug-' <<<"$OUT" && bad "audit --help shows the test-only switches: $OUT" || ok
grep -q 'f-DP' <<<"$OUT" && ok || bad "audit --help does not mention the f-DP lower bounds"
grep -q 'privacy profile' <<<"$OUT" && ok || bad "audit --help does not say the verdict tests the claimed privacy profile"
if [[ -n $HOOKS_BIN ]]; then
    PROD_BIN=$BIN
    BIN=$HOOKS_BIN
    expect_rc 0 "testhooks audit --help" audit --help
    grep -q -- '--debug-noise-scale' <<<"$OUT" && ok || bad "dpsgd-testhooks audit --help lacks --debug-noise-scale"
    expect_fail 2 --debug-noise-scale audit "${NODATA[@]}" --debug-noise-scale -1
    expect_fail 2 --debug-canary-scale audit "${NODATA[@]}" --debug-canary-scale 0
    # accepted there: the run goes on to the (missing) data
    expect_fail 1 never-read audit "${NODATA[@]}" --debug-noise-scale 0.5 --debug-canary-scale 10
    BIN=$PROD_BIN
fi
expect_fail 2 --freeze train "${NODATA[@]}" --freeze -1
expect_fail 2 --freeze train "${NODATA[@]}" --freeze ""
expect_fail 2 --freeze train "${NODATA[@]}" --freeze 99999999999
expect_fail 2 --out train "${NODATA[@]}" --out
expect_fail 2 --data train --data

# ---- missing data ----------------------------------------------------------------------
expect_fail 1 /nonexistent train --data /nonexistent --epochs 1 --quiet

# ---- data-dependent checks ---------------------------------------------------------------
if [[ ! -f "$DATA/t10k-images-idx3-ubyte.gz" || ! -f "$DATA/train-images-idx3-ubyte.gz" ]]; then
    echo "cli_test: SKIP data-dependent checks ($DATA not installed)"
else
    # A malformed IDX dir: the test split copied in as both splits, then one file damaged.
    MAL=$TMP/idx
    mkdir -p "$MAL"
    for k in images-idx3 labels-idx1; do
        cp "$DATA/t10k-$k-ubyte.gz" "$MAL/t10k-$k-ubyte.gz"
        cp "$DATA/t10k-$k-ubyte.gz" "$MAL/train-$k-ubyte.gz"
    done
    # sanity: the copied dir itself works (a tiny run), so the failures below are the damage
    expect_rc 0 "copied IDX dir trains" train --data "$MAL" --train-limit 200 --test-limit 100 --epochs 1 \
        --batch-size 100 --model "flatten linear(10)" --quiet
    # truncated gzip stream
    head -c 100000 "$DATA/t10k-images-idx3-ubyte.gz" >"$MAL/train-images-idx3-ubyte.gz"
    expect_fail 1 train-images-idx3-ubyte train --data "$MAL" --epochs 1 --quiet
    cp "$DATA/t10k-images-idx3-ubyte.gz" "$MAL/train-images-idx3-ubyte.gz"
    # corrupted header (bad magic) in an otherwise valid gzip file
    gzip -dc "$DATA/t10k-labels-idx1-ubyte.gz" >"$TMP/labels.raw"
    printf '\x00\x00\x09\x09' | dd of="$TMP/labels.raw" bs=1 seek=0 count=4 conv=notrunc status=none
    gzip -c "$TMP/labels.raw" >"$MAL/t10k-labels-idx1-ubyte.gz"
    expect_fail 1 t10k-labels-idx1-ubyte train --data "$MAL" --epochs 1 --quiet
    # truncated payload (valid gzip of a short file)
    head -c 5000 "$TMP/labels.raw" | gzip -c >"$MAL/t10k-labels-idx1-ubyte.gz"
    expect_fail 1 t10k-labels-idx1-ubyte train --data "$MAL" --epochs 1 --quiet
    # not gzip at all
    echo "garbage" >"$MAL/t10k-labels-idx1-ubyte.gz"
    expect_fail 1 t10k-labels-idx1-ubyte train --data "$MAL" --epochs 1 --quiet

    # One training label byte set to 200: the class count of IDX data is 10 (or --classes), never
    # 1 + the largest label (that made a 201-class model, its shape revealing the record). Refused
    # by every command that loads data, naming the file and the flag but not the label or its row.
    BIG=$TMP/idxbig
    mkdir -p "$BIG"
    for k in images-idx3 labels-idx1; do cp "$DATA/t10k-$k-ubyte.gz" "$BIG/t10k-$k-ubyte.gz"; done
    cp "$DATA/t10k-images-idx3-ubyte.gz" "$BIG/train-images-idx3-ubyte.gz"
    gzip -dc "$DATA/t10k-labels-idx1-ubyte.gz" >"$TMP/labels.raw"
    printf '\310' | dd of="$TMP/labels.raw" bs=1 seek=$((8 + 4321)) count=1 conv=notrunc status=none
    gzip -c "$TMP/labels.raw" >"$BIG/train-labels-idx1-ubyte.gz"
    NEEDLE="$BIG/train-labels-idx1-ubyte.gz: a label is outside 0..9 (--classes 10, the default for IDX data)"
    # (the rows a limit leaves out are checked too: the file is refused, whatever the limit)
    SMALLBIG=(--model mlp --train-limit 200 --test-limit 100 --epochs 1 --batch-size 100 --quiet)
    expect_fail 1 "$NEEDLE" train --data "$BIG" "${SMALLBIG[@]}"
    sed "s|$BIG/||g" "$TMP/stderr" | grep -qE '200|4321|index|row' && bad "label 200: the message quotes it or its row: $ERR" || ok
    expect_fail 1 "$NEEDLE" norms --data "$BIG" --model mlp --limit 100 --quiet
    expect_fail 1 "$NEEDLE" audit --data "$BIG" --model mlp --train-limit 200 --canaries 10 --epochs 1 --batch-size 100
    expect_fail 1 "(--classes 12)" train --data "$BIG" "${SMALLBIG[@]}" --classes 12
    # a larger --classes is a public choice: then the label is in range
    expect_rc 0 "IDX --classes 201" norms --data "$BIG" --model "flatten linear(201)" --classes 201 --limit 200 --quiet

    SMALL=(--train-limit 2000 --test-limit 500 --epochs 1 --batch-size 256)
    # a bad model spec / freeze index / optimizer value checked after loading
    # (the spec error names the layer, "model spec: layer 0: linear(OUT..) needs OUT >= 1",
    # not the flag itself)
    expect_fail nz "model spec: layer 0" train "${SMALL[@]}" --model "linear(0)" --quiet
    expect_fail nz "model spec" train "${SMALL[@]}" --model "linear(10) bogus" --quiet
    expect_fail nz "empty argument after ','" train "${SMALL[@]}" --model "flatten linear(10,)" --quiet
    expect_fail nz "--model" train "${SMALL[@]}" --model "flatten linear(7)" --quiet
    expect_fail nz "--freeze" train "${SMALL[@]}" --model mlp --freeze 99 --quiet
    expect_fail 2 "--freeze nosuchlayer" train "${SMALL[@]}" --model mlp --freeze nosuchlayer --quiet
    expect_fail 2 "--lr" train "${SMALL[@]}" --lr -1 --quiet
    expect_fail 2 "--momentum" train "${SMALL[@]}" --momentum 1.5 --quiet
    # a noise standard deviation (sigma x C) that is not a finite number: refused, not an abort
    expect_fail nz "the noise standard deviation must be a finite number" train "${SMALL[@]}" \
        --noise-multiplier 1e300 --max-grad-norm 1e300 --quiet
    # checks that need the training set size: usage errors as well (exit 2), before any training
    expect_fail 2 "--batch-size 200: must be in 1..100" train --train-limit 100 --test-limit 10 --epochs 1 --batch-size 200 --quiet
    expect_fail 2 "--delta 0.01: must be below 1/n" train --train-limit 1000 --test-limit 10 --epochs 1 --batch-size 100 --delta 0.01 --quiet
    # an --epsilon no noise multiplier reaches: refused at once with the reachable range (the
    # calibration used to search for minutes, then say "no convergence")
    timeout 20 "$BIN" train --epsilon 1e9 --quiet >"$TMP/stdout" 2>"$TMP/stderr"
    RC=$? ERR=$(<"$TMP/stderr")
    [[ $RC -eq 2 && "$ERR" == *"--epsilon 1e+09"*"unreachable"*"at most"*"can be reached"* ]] && ok ||
        bad "train --epsilon 1e9: exit $RC (124: timed out), want 2 with the reachable range: $ERR"
    timeout 20 "$BIN" train --epsilon 0.001 --train-limit 2000 --batch-size 100 --quiet >"$TMP/stdout" 2>"$TMP/stderr"
    RC=$? ERR=$(<"$TMP/stderr")
    [[ $RC -eq 2 && "$ERR" == *"unreachable"*"at least"* ]] && ok ||
        bad "train --epsilon 0.001: exit $RC (124: timed out), want 2 with the reachable range: $ERR"

    # a small real private run with a JSON summary
    run train "${SMALL[@]}" --out "$TMP/out.json" --quiet
    if [[ $RC -eq 0 ]]; then ok; else
        bad "small run: exit $RC"
        show train "${SMALL[@]}" --out "$TMP/out.json" --quiet
    fi
    grep -E '^final:.*epsilon' <<<"$OUT" >/dev/null && ok || bad "small run: no 'final: ... epsilon' line: $OUT"
    [[ $(grep -c '^epoch' <<<"$OUT") -eq 0 ]] && ok || bad "small run: --quiet printed progress lines"
    if [[ -f "$TMP/out.json" ]]; then
        ok
        grep -q '"epsilon"' "$TMP/out.json" && ok || bad "out.json has no \"epsilon\""
        grep -q '"test_accuracy"' "$TMP/out.json" && ok || bad "out.json has no \"test_accuracy\""
        grep -q '"private": true' "$TMP/out.json" && ok || bad "out.json is not marked private"
        grep -q '"steps": 8,' "$TMP/out.json" && ok || bad "out.json: steps is not 8 (round(2000/256))"
        if command -v python3 >/dev/null; then
            python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert 0 < d["epsilon"] <= 3.0 + 1e-9, d; assert 0 <= d["test_accuracy"] <= 1, d' \
                "$TMP/out.json" && ok || bad "out.json is not valid JSON with epsilon in (0, 3]: $(cat "$TMP/out.json")"
        fi
    else
        bad "small run: $TMP/out.json not written"
    fi
    shopt -s nullglob
    left=("$TMP"/*.tmp*)
    shopt -u nullglob
    [[ ${#left[@]} -eq 0 ]] && ok || bad "temporary files left: ${left[*]}"

    # a physical batch far above the logical batch behaves as the whole batch (it must not
    # size buffers for 10^8 rows)
    run train --train-limit 1000 --test-limit 100 --epochs 1 --batch-size 250 --physical-batch 100000000 --quiet
    if [[ $RC -eq 0 ]]; then ok; else
        bad "--physical-batch 100000000 on batches of ~250: exit $RC: $ERR"
    fi

    # progress output without --quiet (not a tty: one line per epoch)
    run train --train-limit 500 --test-limit 100 --epochs 2 --batch-size 250 --model mlp
    [[ $RC -eq 0 ]] && ok || bad "verbose run: exit $RC: $ERR"
    [[ $(grep -c '^epoch ' <<<"$OUT") -eq 2 ]] && ok || bad "verbose run: want 2 epoch lines: $OUT"
    grep -q '^model: mlp' <<<"$OUT" && ok || bad "verbose run: no model line: $OUT"

    # --verbose prints the auto plan; a budget below every plan is refused (it used to be exceeded
    # silently) with the --physical-batch that keeps it, which then runs within it
    run train --train-limit 500 --test-limit 100 --epochs 1 --batch-size 250 --verbose
    [[ $RC -eq 0 ]] && ok || bad "--verbose: exit $RC: $ERR"
    grep -q '^clipping plan, mode auto, batch 250' <<<"$OUT" && ok || bad "--verbose: no plan header: $OUT"
    [[ $(grep -c ' norm \(ghost\|instantiate\) ' <<<"$OUT") -eq 4 ]] && ok || bad "--verbose: want 4 layer lines: $OUT"
    grep -q 'second backward pass: no' <<<"$OUT" && ok || bad "--verbose: default budget should need no second pass: $OUT"
    run train --train-limit 500 --test-limit 100 --epochs 1 --batch-size 250 --verbose --mem-budget 1MiB
    PB=$(sed -nE 's/.*--physical-batch ([0-9]+) fits it.*/\1/p' <<<"$ERR")
    [[ $RC -eq 2 && "$ERR" == *"--mem-budget 1 MiB: no clipping plan fits a step of 250 samples"* && -n $PB ]] && ok ||
        bad "--mem-budget 1MiB: exit $RC, want 2 naming a --physical-batch that fits: $ERR"
    [[ -z "$OUT" ]] && ok || bad "--mem-budget 1MiB: refused, but printed: $OUT"
    run train --train-limit 500 --test-limit 100 --epochs 1 --batch-size 250 --verbose --mem-budget 1MiB \
        --physical-batch "${PB:-1}"
    [[ $RC -eq 0 && "$OUT" == *"memory budget 1.0 MiB"* && "$OUT" != *"no plan fits"* ]] && ok ||
        bad "--mem-budget 1MiB --physical-batch $PB: exit $RC, or the plan does not fit: $OUT $ERR"
    expect_fail 2 "not even one sample at a time fits it" train --train-limit 500 --epochs 1 --batch-size 250 --mem-budget 1KiB

    # --out into a directory that does not exist / onto a directory: fails, no temp files left
    mkdir -p "$TMP/outs/adir"
    before=$(ls -A "$TMP/outs")
    ALLOW_FINAL=1 expect_fail 1 "--out" train --train-limit 500 --test-limit 100 --epochs 1 --batch-size 250 --quiet \
        --out "$TMP/outs/missing/out.json"
    ALLOW_FINAL=1 expect_fail 1 "--out" train --train-limit 500 --test-limit 100 --epochs 1 --batch-size 250 --quiet \
        --out "$TMP/outs/adir"
    after=$(ls -A "$TMP/outs")
    [[ "$before" == "$after" ]] && ok || bad "--out failures left files behind: '$after'"
    [[ -z $(ls -A "$TMP/outs/adir") ]] && ok || bad "--out onto a directory wrote into it"

    # the non-private baseline
    run train --no-dp --train-limit 2000 --test-limit 500 --epochs 1 --batch-size 256 --lr 0.1 --quiet \
        --out "$TMP/nodp.json"
    [[ $RC -eq 0 ]] && ok || bad "--no-dp run: exit $RC: $ERR"
    grep -q '^final:.*non-private' <<<"$OUT" && ok || bad "--no-dp run: no 'non-private' final line: $OUT"
    grep -q '"private": false' "$TMP/nodp.json" 2>/dev/null && ok || bad "--no-dp: out json not marked non-private"

    # a small honest audit (< 1 s): both estimators printed and in the JSON, labelled as lower
    # bounds; the shipped build writes no test-switch fields
    AUD=(--model "flatten linear(10)" --train-limit 1000 --canaries 1000 --epochs 2 --batch-size 200 --epsilon 1)
    run audit "${AUD[@]}" --json "$TMP/audit.json"
    [[ $RC -eq 0 ]] && ok || bad "audit: exit $RC: $ERR"
    grep -q '^empirical lower bound: ' <<<"$OUT" && ok || bad "audit: no 'empirical lower bound' line: $OUT"
    grep -q '^f-DP lower bound: .*(eps, delta)-DP trade-off curve' <<<"$OUT" && ok || bad "audit: no f-DP line: $OUT"
    grep -q '^  Gaussian curve: .*a lower bound only if' <<<"$OUT" && ok || bad "audit: no Gaussian line: $OUT"
    # the verdict is the test of the claimed privacy profile, and says so
    grep -q '^claimed profile test:  p = ' <<<"$OUT" && ok || bad "audit: no profile test line: $OUT"
    grep -q '^verdict: consistent (the claimed privacy profile is not rejected' <<<"$OUT" && ok ||
        bad "audit: the verdict does not name the profile test: $OUT"
    grep -q 'debug' "$TMP/audit.json" 2>/dev/null && bad "audit: the shipped build wrote test-switch fields" || ok
    if command -v python3 >/dev/null; then
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
assert d["verdict"] == "consistent" and 0 <= d["epsilon_lower_bound_fdp"] < d["epsilon_claimed"], d
assert d["epsilon_lower_bound_fdp_gaussian"] >= d["epsilon_lower_bound_fdp"] - 1e-6, d
assert d["mu_lower_bound_fdp_gaussian"] >= 0 and d["fdp_correct"] <= d["fdp_guesses"] <= d["canaries"], d
assert d["profile_p_value"] >= 1 - d["confidence"] and d["profile_points"] > 100, d
assert d["profile_correct"] <= d["profile_guesses"] <= d["canaries"], d' \
            "$TMP/audit.json" && ok || bad "audit.json: $(cat "$TMP/audit.json")"
    fi
    # the test build's broken mechanism (noise x 0.1) is caught: VIOLATION, exit 3
    if [[ -n $HOOKS_BIN ]]; then
        PROD_BIN=$BIN
        BIN=$HOOKS_BIN
        run audit "${AUD[@]}" --debug-noise-scale 0.1 --json "$TMP/broken.json"
        [[ $RC -eq 3 ]] && ok || bad "testhooks audit --debug-noise-scale 0.1: exit $RC, want 3: $OUT $ERR"
        grep -q '^WARNING: test-only switches on' <<<"$OUT" && ok || bad "broken audit: no warning: $OUT"
        grep -q '^verdict: VIOLATION (the claimed privacy profile is rejected: p = ' <<<"$OUT" && ok ||
            bad "broken audit: the verdict does not name the profile test: $OUT"
        grep -q '"profile_p_value": [0-9.e-]*,' "$TMP/broken.json" 2>/dev/null && ok ||
            bad "broken audit: JSON lacks profile_p_value"
        grep -q '"debug_noise_scale": 0.10000000000000001' "$TMP/broken.json" 2>/dev/null && ok ||
            bad "broken audit: JSON lacks debug_noise_scale"
        BIN=$PROD_BIN
    fi
fi

t_summary
