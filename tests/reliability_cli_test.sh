#!/usr/bin/env bash
# tests/reliability_cli_test.sh PATH-TO-DPSGD: the reliability flags of `dpsgd train` end to
# end: bad values of --checkpoint-every/--checkpoint-dir/--resume/--init/--save-weights/
# --noise-seed each name their flag (exit 2 for usage, 1 for bad files); the outputs (train's
# --out/--save-weights/--checkpoint-dir, norms' --json/--per-sample-out) are checked before any
# work, and two naming one file are refused; malformed or non-finite --init files name the file
# and field (tensor) and leave nothing written, --init + --save-weights round trip
# bit-exactly (lr 0), a resume with another C is refused; noise: two default runs differ, two
# --noise-seed runs are identical and say what that costs, and the shipped binary ignores the
# test switch DPSGD_TEST_NOISE. Data-dependent checks are skipped without Fashion-MNIST.
# Last line: "reliability_cli_test: N passed, N failed".
# shellcheck disable=SC2015
set -u
BIN=${1:?usage: reliability_cli_test.sh PATH-TO-DPSGD}
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t_setup reliability_cli_test reliability_cli
# expect RC NEEDLE ARGS...: exit status RC and NEEDLE in stderr
expect() {
    local rc=$1 needle=$2
    shift 2
    run "$@"
    [[ $RC -eq $rc && "$ERR" == *"$needle"* ]] && ok || bad "dpsgd $*: exit $RC (want $rc), stderr: $ERR (want '$needle')"
}

expect 2 "--checkpoint-every" train --checkpoint-every 0 --checkpoint-dir "$TMP/c"
expect 2 "--checkpoint-every" train --checkpoint-every x --checkpoint-dir "$TMP/c"
expect 2 "--checkpoint-every: needs --checkpoint-dir" train --checkpoint-every 5
expect 2 "--checkpoint-dir" train --checkpoint-dir ""
expect 2 "--resume needs a value" train --resume
expect 2 "--secure: secure noise is now the default" train --secure
expect 2 "--noise-seed: has no meaning with --no-dp" train --noise-seed 3 --no-dp
expect 2 "--noise-seed" train --noise-seed -1
expect 2 "--init: cannot be combined with --resume" train --init a --resume b

# every output is checked before any work: a directory that is missing or a file name that is
# a directory is refused naming the flag and the path, with nothing on stdout (no data line, no
# training, no final line: a run must not train, then fail to write its result); two outputs
# naming one file, however spelled, are refused naming both flags (exit 2); the check leaves
# no file behind
QQ=(train --train-limit 600 --test-limit 100 --epochs 1 --batch-size 100 --model mlp)
NN=(norms --model mlp --limit 50 --quiet)
mkdir -p "$TMP/od"
# before_work RC NEEDLE ARGS...: exit RC, NEEDLE in stderr, nothing on stdout
before_work() {
    local rc=$1 needle=$2
    shift 2
    run "$@"
    [[ $RC -eq $rc && "$ERR" == *"$needle"* && -z "$OUT" ]] && ok ||
        bad "dpsgd $*: exit $RC (want $rc), stdout '${OUT:0:200}', stderr: $ERR (want '$needle')"
}
before_work 1 "--save-weights /nonexistent/w.st: cannot write in /nonexistent" "${QQ[@]}" \
    --save-weights /nonexistent/w.st
before_work 1 "--out /nonexistent/o.json: cannot write in /nonexistent" "${QQ[@]}" --out /nonexistent/o.json
before_work 1 "--checkpoint-dir /nonexistent/a/ck: cannot create the directory" "${QQ[@]}" \
    --checkpoint-dir /nonexistent/a/ck
before_work 1 "--out $TMP/od: is a directory" "${QQ[@]}" --out "$TMP/od"
: >"$TMP/plainfile"
before_work 1 "--checkpoint-dir $TMP/plainfile: exists and is not a directory" "${QQ[@]}" \
    --checkpoint-dir "$TMP/plainfile"
before_work 1 "--json /nonexistent/n.json: cannot write in /nonexistent" "${NN[@]}" --json /nonexistent/n.json
before_work 1 "--per-sample-out /nonexistent/n.npy" "${NN[@]}" --per-sample-out /nonexistent/n.npy
before_work 2 "--out $TMP/same and --save-weights $TMP/od/../same name the same file" "${QQ[@]}" --out "$TMP/same" \
    --save-weights "$TMP/od/../same"
before_work 2 "--save-weights $TMP/od/checkpoint.safetensors and --checkpoint-dir $TMP/od/ name the same file" \
    "${QQ[@]}" --save-weights "$TMP/od/checkpoint.safetensors" --checkpoint-dir "$TMP/od/"
before_work 2 "--json $TMP/n and --per-sample-out $TMP/./n name the same file" "${NN[@]}" --json "$TMP/n" \
    --per-sample-out "$TMP/./n"
compgen -G "$TMP/.dpsgd-check-*" >/dev/null || compgen -G "$TMP/od/.dpsgd-check-*" >/dev/null &&
    bad "the output check left a file behind" || ok

if ! have_data; then
    echo "reliability_cli_test: SKIP data-dependent checks (no $DATA)"
else
    Q=(train --train-limit 600 --test-limit 100 --epochs 1 --batch-size 100 --quiet --model mlp)
    expect 1 "--resume" "${Q[@]}" --resume "$TMP/none"
    # malformed --init files: named, and --save-weights not written
    printf 'abc' >"$TMP/short.st"
    expect 1 "--init $TMP/short.st: truncated" "${Q[@]}" --init "$TMP/short.st" --save-weights "$TMP/never.st"
    [[ ! -e $TMP/never.st ]] && ok || bad "--save-weights written after a failed --init"
    printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a":{"dtype":1}}' >"$TMP/json.st"
    expect 1 "dtype" "${Q[@]}" --init "$TMP/json.st"
    printf '\xff\xff\xff\xff\xff\x00\x00\x00{}' >"$TMP/huge.st"
    expect 1 "header size" "${Q[@]}" --init "$TMP/huge.st"
    # round trip: save, init with lr 0, save again: identical
    run "${Q[@]}" --save-weights "$TMP/w1.st"
    [[ $RC -eq 0 ]] && ok || bad "save-weights run failed: $ERR"
    run "${Q[@]}" --init "$TMP/w1.st" --lr 0 --save-weights "$TMP/w2.st"
    [[ $RC -eq 0 ]] && cmp -s "$TMP/w1.st" "$TMP/w2.st" && ok || bad "--init/--save-weights round trip differs ($ERR)"
    expect 1 "not a parameter of this model" "${Q[@]}" --model cnn --init "$TMP/w1.st"
    # a NaN in one --init tensor: refused naming the file and the tensor, by train (it used to
    # fail at step 1, "lower --lr?") and by norms (it used to print NaN statistics)
    if python3 - "$TMP/w1.st" "$TMP/nan.st" <<'EOF'; then
import json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
at = 8 + n + hdr["3.weight"]["data_offsets"][0] + 4 * 3  # the 4th value of the last layer's weight
raw[at:at + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(raw)
EOF
        expect 1 "--init $TMP/nan.st: tensor '3.weight' holds a non-finite value" "${Q[@]}" --init "$TMP/nan.st"
        expect 1 "--init $TMP/nan.st: tensor '3.weight' holds a non-finite value" norms --model mlp --limit 50 \
            --quiet --init "$TMP/nan.st"
    else
        bad "could not write the NaN weights"
    fi
    expect 1 "--save-weights $TMP/no/dir/w.st" "${Q[@]}" --save-weights "$TMP/no/dir/w.st"
    compgen -G "$TMP/no/dir/w.st.tmp*" >/dev/null && bad "temporary file left" || ok
    # resume refusals
    run "${Q[@]}" --checkpoint-dir "$TMP/ck"
    [[ $RC -eq 0 && -f $TMP/ck/checkpoint.safetensors ]] && ok || bad "checkpoint run failed: $ERR"
    expect 1 "--max-grad-norm" "${Q[@]}" --resume "$TMP/ck" --max-grad-norm 0.2
    expect 1 "--max-grad-norm" "${Q[@]}" --resume "$TMP/ck" --max-grad-norm 0.2 --force
    expect 1 "--epochs" "${Q[@]}" --epochs 2 --resume "$TMP/ck"
    # the library names the field (epochs), the CLI its flag: whole words only, not in a path
    cp -r "$TMP/ck" "$TMP/epochs"
    expect 1 "--resume $TMP/epochs/checkpoint.safetensors: the checkpoint was made with --epochs 1, this run has 2 (pass --force" \
        "${Q[@]}" --epochs 2 --resume "$TMP/epochs"
    expect 1 "already holds a checkpoint" "${Q[@]}" --checkpoint-dir "$TMP/ck"
    other=3
    [[ $OMP_NUM_THREADS == 3 ]] && other=4
    expect 1 "--threads" "${Q[@]}" --threads $other --resume "$TMP/ck"
    expect 1 "training data of" "${Q[@]/600/601}" --resume "$TMP/ck" --force
    run "${Q[@]}" --epochs 2 --resume "$TMP/ck" --force
    [[ $RC -eq 0 ]] && ok || bad "--force with more epochs refused: $ERR"
    # one hex digit of sigma in the stored accountant history (it would lower the reported
    # epsilon): refused as corrupt or edited, also with --force
    mkdir -p "$TMP/ck_edit"
    if python3 - "$TMP/ck/checkpoint.safetensors" "$TMP/ck_edit/checkpoint.safetensors" <<'EOF'; then
import sys
raw = bytearray(open(sys.argv[1], "rb").read())
i = raw.index(b'"accountant":"') + len(b'"accountant":"')
j = raw.index(b" ", i) + 5  # "q 0x1.Xxxx...": the first hex digit of sigma's mantissa
if raw[j - 5:j] != b" 0x1.":
    sys.exit("unexpected accountant history " + raw[i:i + 80].decode())
raw[j] = ord("9") if raw[j] == ord("8") else ord("8")
open(sys.argv[2], "wb").write(raw)
EOF
        expect 1 "$TMP/ck_edit/checkpoint.safetensors: checkpoint field 'checksum'" "${Q[@]}" --resume "$TMP/ck_edit"
        expect 1 "corrupt or edited" "${Q[@]}" --resume "$TMP/ck_edit" --force
    else
        bad "could not edit the checkpoint"
    fi
    # input canaries need held-out rows: with every row trained on, refused (they used to be
    # drawn from the training rows themselves)
    expect 2 "--canary-type input: no rows are held out" audit --canary-type input --train-limit 60000
    # default noise (OS CSPRNG): two runs of one configuration differ
    run "${Q[@]}" --save-weights "$TMP/s1.st"
    [[ $RC -eq 0 ]] && ok || bad "default run failed: $ERR"
    run "${Q[@]}" --save-weights "$TMP/s2.st"
    [[ $RC -eq 0 ]] && ! cmp -s "$TMP/s1.st" "$TMP/s2.st" && ok || bad "two default runs gave the same weights"
    # --noise-seed: identical weights, and the run says its epsilon depends on the seed
    NS=(train --train-limit 600 --test-limit 100 --epochs 1 --batch-size 100 --model mlp --noise-seed 5)
    run "${NS[@]}" --save-weights "$TMP/n1.st" --out "$TMP/n1.json"
    [[ $RC -eq 0 && "$OUT" == *"holds ONLY while that seed stays secret"* ]] && ok ||
        bad "--noise-seed run: exit $RC, no warning on stdout: $OUT $ERR"
    grep -q '"noise_seed_public": true' "$TMP/n1.json" 2>/dev/null && ok || bad "--out JSON does not flag the public seed"
    run "${NS[@]}" --quiet --save-weights "$TMP/n2.st"
    [[ $RC -eq 0 ]] && cmp -s "$TMP/n1.st" "$TMP/n2.st" && ok || bad "two --noise-seed 5 runs differ ($ERR)"
    # the shipped binary has no test switch: DPSGD_TEST_NOISE=off changes nothing (it used to
    # remove the noise while epsilon was still printed)
    DPSGD_TEST_NOISE=off run "${NS[@]}" --quiet --save-weights "$TMP/n3.st"
    [[ $RC -eq 0 ]] && cmp -s "$TMP/n1.st" "$TMP/n3.st" && ok || bad "DPSGD_TEST_NOISE=off changed the weights"
    DPSGD_TEST_NOISE=only run "${NS[@]}" --quiet --save-weights "$TMP/n4.st"
    [[ $RC -eq 0 ]] && cmp -s "$TMP/n1.st" "$TMP/n4.st" && ok || bad "DPSGD_TEST_NOISE=only changed the weights"
fi
t_summary
