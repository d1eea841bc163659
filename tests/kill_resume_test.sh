#!/usr/bin/env bash
# tests/kill_resume_test.sh PATH-TO-DPSGD-TESTHOOKS [SANITIZE]: exact resume after SIGKILL.
# Runs the test build of the CLI (DPSGD_TEST_SLOW_CHECKPOINT is read there only) with a fixed
# --noise-seed, which makes the runs reproducible.
# Trains a small private run uninterrupted, then kills the same run (SIGKILL) at several
# random points, one of them while a checkpoint is being written (DPSGD_TEST_SLOW_CHECKPOINT
# holds the temporary file open before its rename), one of them twice (the resumed run is
# killed again), resumes each from its checkpoint directory, and requires the final weights
# (--save-weights, compared with cmp) and epsilon (--out JSON) to be bit-identical to the
# uninterrupted run. Also: a run killed right after it printed an epoch's figures has that
# epoch's checkpoint on disk (nothing is released before the checkpoint that covers it), and
# a default run (OS-seeded noise) killed and resumed ends with the same epsilon. Signals: a
# second run on a checkpoint directory in use is refused naming the holder's pid; SIGTERM and
# SIGINT stop at a step boundary with a checkpoint (exit 143, 130) that resumes bit-identically;
# a second SIGINT stops at once; an output directory removed during the run: the finished
# run's weights and summary are kept in the working directory. Skipped (exit 77) under sanitizers (SANITIZE=ON: timing-driven and slow)
# and when the Fashion-MNIST files are not installed.
# Last line: "kill_resume_test: N passed, N failed".
set -u
BIN=${1:?usage: kill_resume_test.sh PATH-TO-DPSGD [SANITIZE]}
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ "${2:-OFF}" == ON || -n "${DPSGD_SKIP_KILL_TEST:-}" ]]; then
    echo "kill_resume_test: SKIP (sanitizer build)"
    exit 77
fi
if ! have_data; then
    echo "kill_resume_test: SKIP (no data in $DATA)"
    exit 77
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t_setup kill_resume_test kill_resume
RUN=(train --train-limit 1500 --test-limit 300 --epochs 3 --batch-size 256 --seed 11 --noise-seed 11 --quiet)
CK=(--checkpoint-every 1)

epsilon_of() { grep -o '"epsilon": [^,]*' "$1"; }
# step of the checkpoint in DIR (0 if none yet)
step_of() {
    local f=$1/checkpoint.safetensors s
    [[ -f $f ]] || { echo 0; return; }
    s=$(head -c 4096 "$f" | grep -ao '"step":"[0-9]*"' | grep -o '[0-9]\+')
    echo "${s:-0}"
}

t0=$EPOCHREALTIME
"$BIN" "${RUN[@]}" --save-weights "$TMP/ref.st" --out "$TMP/ref.json" >/dev/null || { echo "reference run failed" >&2; exit 1; }
REF_EPS=$(epsilon_of "$TMP/ref.json")
TOTAL=18 # 3 epochs x round(1500/256) = 6 steps

# start_and_kill DIR MODE TARGET: starts a checkpointing run in DIR (resuming if DIR holds a
# checkpoint) and SIGKILLs it. MODE "step": once the checkpoint reaches step TARGET, after a
# random pause of 0-100 ms; MODE "write": while a checkpoint's temporary file exists.
start_and_kill() {
    local dir=$1 mode=$2 target=$3 pid resume=() i
    [[ -f $dir/checkpoint.safetensors ]] && resume=(--resume "$dir")
    if [[ $mode == write ]]; then
        DPSGD_TEST_SLOW_CHECKPOINT=500 "$BIN" "${RUN[@]}" --checkpoint-dir "$dir" "${CK[@]}" "${resume[@]}" >/dev/null 2>&1 &
    else
        "$BIN" "${RUN[@]}" --checkpoint-dir "$dir" "${CK[@]}" "${resume[@]}" >/dev/null 2>&1 &
    fi
    pid=$!
    for ((i = 0; i < 3000; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        if [[ $mode == write ]]; then
            compgen -G "$dir/checkpoint.safetensors.tmp*" >/dev/null && [[ $(step_of "$dir") -ge $target ]] && break
        elif [[ $(step_of "$dir") -ge $target ]]; then
            sleep "0.$(printf '%03d' $((RANDOM % 100)))"
            break
        fi
        sleep 0.01
    done
    if kill -9 "$pid" 2>/dev/null; then
        KILLS=$((KILLS + 1))
        wait "$pid" 2>/dev/null
        echo "  killed at checkpoint step $(step_of "$dir") (mode $mode, target $target)"
    else
        wait "$pid" 2>/dev/null
        echo "  run finished before the kill (mode $mode, target $target)"
    fi
}

# resume_and_check NAME DIR: resumes to the end and compares with the reference.
resume_and_check() {
    local name=$1 dir=$2 resume=()
    [[ -f $dir/checkpoint.safetensors ]] && resume=(--resume "$dir")
    if ! "$BIN" "${RUN[@]}" --checkpoint-dir "$dir" "${CK[@]}" "${resume[@]}" --save-weights "$dir/w.st" \
            --out "$dir/out.json" >"$dir/log" 2>&1; then
        bad "$name: resumed run failed: $(cat "$dir/log")"
        return
    fi
    cmp -s "$dir/w.st" "$TMP/ref.st" && ok || bad "$name: final weights differ from the uninterrupted run"
    local eps
    eps=$(epsilon_of "$dir/out.json")
    [[ "$eps" == "$REF_EPS" ]] && ok || bad "$name: $eps, uninterrupted run $REF_EPS"
}

echo "kill_resume_test: reference $REF_EPS"
KILLS=0
# kill_fresh NAME MODE TARGET: a fresh directory killed once; retried (fresh again, earlier
# target) when the run ended before the kill, or, in write mode, when the kill landed just
# after the rename (a loaded machine can delay this script by more than the 500 ms window).
kill_fresh() {
    local name=$1 mode=$2 target=$3 try
    for try in 1 2 3; do
        rm -rf "${TMP:?}/$name"
        local before=$KILLS
        start_and_kill "$TMP/$name" "$mode" "$target"
        if [[ $KILLS -gt $before ]]; then
            [[ $mode != write ]] && return 0
            compgen -G "$TMP/$name/checkpoint.safetensors.tmp*" >/dev/null && return 0
        fi
        KILLS=$before
        target=$(((target + 1) / 2))
        echo "  retrying $name (attempt $((try + 1)), target $target)"
    done
    return 1
}
for k in 1 2 3; do
    target=$((1 + RANDOM % (TOTAL - 6)))
    kill_fresh "ck$k" step "$target"
    resume_and_check "kill $k (step $target)" "$TMP/ck$k"
done
# during a checkpoint write: the temporary file exists, the previous checkpoint must survive
target=$((2 + RANDOM % 5))
if kill_fresh ckw write "$target"; then ok; else bad "write kill: no temporary file was pending after 3 tries"; fi
resume_and_check "kill during a checkpoint write (step $target)" "$TMP/ckw"
compgen -G "$TMP/ckw/checkpoint.safetensors.tmp*" >/dev/null && bad "stale temporary file not removed" || ok
# killed twice: once, then the resumed run again
t1=$((1 + RANDOM % 6))
t2=$((t1 + 3 + RANDOM % 6))
start_and_kill "$TMP/ck2x" step "$t1"
start_and_kill "$TMP/ck2x" step "$t2"
resume_and_check "killed twice (steps $t1, $t2)" "$TMP/ck2x"

# release order: killed the moment the first epoch line is printed (the checkpoint write is
# slowed to 500 ms), the directory must already hold the epoch's checkpoint (step 6)
rm -rf "$TMP/order"
DPSGD_TEST_SLOW_CHECKPOINT=500 "$BIN" "${RUN[@]/--quiet/--verbose}" --checkpoint-dir "$TMP/order" >"$TMP/order.out" 2>/dev/null &
pid=$!
for ((i = 0; i < 6000; i++)); do
    grep -q '^epoch *1/3' "$TMP/order.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.005
done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if grep -q '^epoch *1/3' "$TMP/order.out"; then
    s=$(step_of "$TMP/order")
    [[ $s -ge 6 ]] && ok || bad "epoch 1 was printed before its checkpoint was on disk (checkpoint at step $s)"
else
    bad "release order: the run printed no epoch line"
fi

# default noise: killed, resumed with fresh noise; epsilon as the uninterrupted run's
SEC=(train --train-limit 1500 --test-limit 300 --epochs 3 --batch-size 256 --seed 11 --quiet)
SAVED=("${RUN[@]}")
RUN=("${SEC[@]}")
before=$KILLS
start_and_kill "$TMP/sec" step 5
KILLS=$before
if "$BIN" "${SEC[@]}" --resume "$TMP/sec" --checkpoint-dir "$TMP/sec" --out "$TMP/sec.json" >"$TMP/sec.log" 2>&1; then
    [[ "$(epsilon_of "$TMP/sec.json")" == "$REF_EPS" ]] && ok || bad "default-noise resume: $(epsilon_of "$TMP/sec.json"), uninterrupted $REF_EPS"
else
    bad "default-noise resume failed: $(cat "$TMP/sec.log")"
fi
RUN=("${SAVED[@]}")

# start_slow DIR MS ARGS...: a run of RUN checkpointing into DIR (ARGS added; each checkpoint
# write slowed by MS ms, so that the run is still going when signalled) in the background; its
# pid in SPID, stdout and stderr in DIR.err and DIR.out; returns once DIR holds a checkpoint.
# Started with job control (set -m): a script's background job otherwise inherits SIGINT
# ignored, which dpsgd leaves ignored.
start_slow() {
    local dir=$1 ms=$2 i
    shift 2
    set -m
    DPSGD_TEST_SLOW_CHECKPOINT=$ms "$BIN" "${RUN[@]}" --checkpoint-dir "$dir" "$@" >"$dir.out" 2>"$dir.err" &
    SPID=$!
    set +m
    for ((i = 0; i < 3000; i++)); do
        [[ $(step_of "$dir") -ge 1 ]] && break
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.01
    done
}
# stopped NAME DIR SIG RC NEEDLE...: sends SIG to SPID, then requires exit RC and each NEEDLE
# in DIR.err
stopped() {
    local name=$1 dir=$2 sig=$3 want=$4 rc n
    shift 4
    if ! kill -0 "$SPID" 2>/dev/null; then
        bad "$name: the run ended before the signal"
        wait "$SPID" 2>/dev/null
        return
    fi
    kill -"$sig" "$SPID"
    wait "$SPID"
    rc=$?
    [[ $rc -eq $want ]] && ok || bad "$name: exit $rc, want $want; stderr: $(cat "$dir.err")"
    for n in "$@"; do
        grep -qF -- "$n" "$dir.err" && ok || bad "$name: stderr does not say '$n': $(cat "$dir.err")"
    done
}

# Two runs on one checkpoint directory: the second is refused naming the first's pid (the
# first holds an flock on DIR/.lock); SIGTERM then stops the first at the next step boundary,
# exit 143, and the resume (the lock was released at exit) ends bit-identical
start_slow "$TMP/lock" 300 "${CK[@]}"
"$BIN" "${RUN[@]}" --checkpoint-dir "$TMP/lock" "${CK[@]}" >/dev/null 2>"$TMP/second.err"
rc=$?
[[ $rc -eq 1 ]] && grep -qF "$TMP/lock: in use by another run (pid $SPID holds $TMP/lock/.lock)" "$TMP/second.err" &&
    ok || bad "second run on a locked directory: exit $rc, $(cat "$TMP/second.err")"
stopped SIGTERM "$TMP/lock" TERM 143 "SIGTERM: stopped on request after" "--resume $TMP/lock"
resume_and_check "SIGTERM" "$TMP/lock"
# SIGINT in the middle of an epoch with checkpoints at epoch ends only: the stop writes one
# holding exactly the steps done, exit 130, names it and says how to continue; resumed: identical
start_slow "$TMP/int" 1000
stopped SIGINT "$TMP/int" INT 130 "SIGINT: stopped on request after" \
    "the checkpoint $TMP/int/checkpoint.safetensors holds it" "to continue, run the same command with --resume $TMP/int"
done_steps=$(grep -o 'after [0-9]* of' "$TMP/int.err" | grep -o '[0-9]\+' | head -1)
[[ -n $done_steps && $(step_of "$TMP/int") -eq $done_steps ]] && ok ||
    bad "SIGINT: checkpoint at step $(step_of "$TMP/int"), the message says ${done_steps:-nothing}"
resume_and_check "SIGINT" "$TMP/int"
# a second SIGINT stops at once, sent while the first's checkpoint is being written; the last
# checkpoint on disk is whole: the resume ends identical
start_slow "$TMP/int2" 1000
kill -INT "$SPID" 2>/dev/null
for ((i = 0; i < 500; i++)); do
    compgen -G "$TMP/int2/checkpoint.safetensors.tmp*" >/dev/null && break
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.01
done
stopped "second SIGINT" "$TMP/int2" INT 130 "second signal: stopping at once"
grep -qF "stopped on request" "$TMP/int2.err" && bad "second SIGINT: the run did not stop at once" || ok
resume_and_check "second SIGINT" "$TMP/int2"

# an output whose directory disappears during the run: the finished run keeps its weights and
# summary in the working directory, says where and what epsilon was spent, exits 1; both are
# the uninterrupted run's
mkdir -p "$TMP/gone" "$TMP/cwd"
[[ $BIN == /* ]] || BIN=$PWD/$BIN # run from another directory below
(cd "$TMP/cwd" && export DPSGD_TEST_SLOW_CHECKPOINT=200 && exec "$BIN" "${RUN[@]}" --save-weights "$TMP/gone/w.st" \
    --out "$TMP/gone/o.json" --checkpoint-dir "$TMP/late" "${CK[@]}" >"$TMP/late.out" 2>"$TMP/late.err") &
pid=$!
for ((i = 0; i < 3000; i++)); do
    [[ $(step_of "$TMP/late") -ge 1 ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
done
rm -rf "${TMP:?}/gone"
wait "$pid"
rc=$?
[[ $rc -eq 1 ]] && ok || bad "late write failure: exit $rc, want 1: $(cat "$TMP/late.err")"
grep -qF "kept its weights in ./dpsgd-weights-$pid.safetensors" "$TMP/late.err" &&
    grep -qF "kept its summary in ./dpsgd-summary-$pid.json" "$TMP/late.err" &&
    grep -qF "the run finished: epsilon ${REF_EPS#\"epsilon\": } spent" "$TMP/late.err" && ok ||
    bad "late write failure: stderr does not name the kept files and epsilon: $(cat "$TMP/late.err")"
cmp -s "$TMP/cwd/dpsgd-weights-$pid.safetensors" "$TMP/ref.st" && ok || bad "late write failure: kept weights differ"
[[ "$(epsilon_of "$TMP/cwd/dpsgd-summary-$pid.json")" == "$REF_EPS" ]] && ok ||
    bad "late write failure: kept summary differs"

# at least 5 real kills (a run that ended first does not count)
[[ $KILLS -ge 5 ]] && ok || bad "only $KILLS runs were killed before they finished (need 5)"
awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "kill_resume_test: %.1f s\n", b - a }'
t_summary
