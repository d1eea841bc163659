#!/usr/bin/env bash
# tests/bench_cli_test.sh PATH-TO-DPSGD: `dpsgd bench` end to end on tiny batches: the
# markdown table, the JSON (parsed; the stage times add up to the step) and the SVG
# (well-formed) of a quick synthetic run; a --mem-limit too small for vanilla gives OOM (by
# plan, and by the allocator) and exit 0;
# every bad flag exits 2 naming the flag; the BERT plan (--plan-only) runs out where the
# article's does; a tiny bert-small run; --model FILE.onnx (an ONNX export as the workload:
# a quick run of every mode, and the files and combinations refused with exit 2).
# Last line: "bench_cli_test: N passed, N failed"; exit status non-zero on any failure.
# shellcheck disable=SC2015
set -u
if [[ $# -ne 1 || ! -x "$1" ]]; then
    echo "usage: $0 PATH-TO-DPSGD" >&2
    exit 2
fi
BIN=$1
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
t_setup bench_cli_test bench_cli

run bench --help
[[ $RC -eq 0 && "$OUT" == *"--mem-limit"* && "$OUT" == *"synthetic"* && "$OUT" == *"ghost"* && "$OUT" == *"--model FILE.onnx"* ]] &&
    ok || bad "bench --help: $OUT"
run help
[[ "$OUT" == *"bench"* ]] && ok || bad "bench not listed: $OUT"

# the quick synthetic run: every mode, two batch sizes, one timed step
run bench synthetic --quick --batch-sizes 4,8 --reps 1 --warmup 0 --json "$TMP/b.json" --plot "$TMP/b.svg"
[[ $RC -eq 0 ]] && ok || bad "quick run: rc $RC: $ERR"
for want in "### batch 4" "### batch 8" "| model creation |" "| first backward |" "| second backward |" \
    "| optimizer step |" "peak tracked" "peak RSS" "step time × no-DP" "GFLOP/s" "SGEMM" "### summary"; do
    [[ "$OUT" == *"$want"* ]] && ok || bad "table lacks '$want'"
done
head=$(grep -m1 '^|  | no-DP' <<<"$OUT")
[[ "$head" == *"vanilla"* && "$head" == *"fast"* && "$head" == *"ghost"* ]] && ok || bad "mode columns: $head"
[[ "$ERR" == *"batch 8, ghost"* ]] && ok || bad "progress on stderr: $ERR"
[[ "$OUT" == *"noise from the OS-seeded ChaCha20 generator"* ]] && ok || bad "the report does not name the noise source"
run bench cnn --noise bogus
[[ $RC -eq 2 && "$ERR" == *"--noise bogus: expected secure or seeded"* ]] && ok || bad "--noise bogus: rc $RC: $ERR"
if command -v python3 >/dev/null 2>&1; then
    python3 - "$TMP/b.json" <<'EOF' && ok || bad "json content"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["workload"] == "synthetic" and d["parameters"] == 16387840, d["parameters"]
assert d["settings"]["noise"] == "secure", d["settings"]  # dpsgd train's default noise source
assert [r["batch"] for r in d["results"]] == [4, 8]
for r in d["results"]:
    m = r["modes"]
    assert {"no-DP", "vanilla", "fast", "ghost"} <= set(m), set(m)  # and any later mode
    for name, v in m.items():
        assert v["status"] == "ok", (name, v)
        assert v["memory"]["peak_tracked_bytes"] > 0 and v["time"]["median_ms"] > 0
        # the stage timers (dp_step's on_stage hook) split the library's whole step: with one
        # timed step, its parts add up to it
        t = v["time"]
        parts = [t["forward_loss_ms"], t["backward_ms"], t["noise_scale_optimizer_ms"]]
        assert min(parts) > 0, (name, t)
        assert abs(sum(parts) - t["median_ms"]) <= 1e-4 * t["median_ms"] + 1e-3, (name, t)
    B = r["batch"]
    # vanilla holds B x all parameters at once; ghost only O(B) bytes in its first backward
    assert m["vanilla"]["memory"]["backward_1_bytes"] >= B * 16387840 * 4
    assert m["ghost"]["memory"]["backward_1_bytes"] < 64 * B
    assert m["no-DP"]["memory"]["backward_2_bytes"] is None
    assert m["no-DP"]["time"]["gflops"] > 0
EOF
else
    [[ -s "$TMP/b.json" ]] && ok || bad "json written"
fi
[[ -s "$TMP/b.svg" && "$(tail -c 8 "$TMP/b.svg")" == *"</svg>"* ]] && ok || bad "svg written"
if command -v xmllint >/dev/null 2>&1; then
    xmllint --noout "$TMP/b.svg" && ok || bad "svg not well-formed"
fi
grep -q "batch size" "$TMP/b.svg" && grep -q "step time" "$TMP/b.svg" && grep -q ">ghost<" "$TMP/b.svg" && ok || bad "svg labels"
ls "$TMP"/b.json.tmp* >/dev/null 2>&1 && bad "temporary file left" || ok

# OOM by plan: vanilla needs B x 62.5 MiB more than no-DP; the run goes on and exits 0
run bench synthetic --quick --batch-sizes 4 --reps 1 --warmup 0 --modes no-dp,vanilla --mem-limit 300MiB \
    --json "$TMP/oom.json" --plot "$TMP/oom.svg"
[[ $RC -eq 0 && "$OUT" == *"OOM (plan:"* && "$ERR" == *"vanilla: OOM"* ]] && ok || bad "OOM by plan: rc $RC $OUT $ERR"
line=$(grep '^| 4 | no-DP' <<<"$OUT")
[[ "$line" != *OOM* && -n "$line" ]] && ok || bad "no-DP should run: $line"
if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); m=d["results"][0]["modes"]; assert m["vanilla"]["status"]=="oom_plan" and m["no-DP"]["status"]=="ok", m' \
        "$TMP/oom.json" && ok || bad "OOM json"
fi
grep -q ">OOM<" "$TMP/oom.svg" && ok || bad "OOM marked in the svg"
# OOM by the allocator (--no-plan runs the mode): vanilla's per-sample gradients are refused
run bench synthetic --quick --batch-sizes 4 --reps 1 --warmup 0 --modes vanilla --mem-limit 300MiB --no-plan
[[ $RC -eq 0 && "$OUT" == *"OOM (first backward)"* && "$OUT" == *"OOM here"* ]] && ok || bad "OOM by the allocator: rc $RC $OUT $ERR"

# bad usage: exit 2, the flag named
expect_err "workload" bench
expect_err "unknown workload" bench resnet
expect_err "--batch-sizes" bench synthetic --batch-sizes 0
expect_err "--batch-sizes" bench synthetic --batch-sizes 4,x
expect_err "--batch-sizes" bench synthetic --batch-sizes ,
expect_err "--modes" bench synthetic --modes ghost,turbo
expect_err "--reps" bench synthetic --reps 0
expect_err "--warmup" bench synthetic --warmup -1
expect_err "--mem-limit" bench synthetic --mem-limit 12XB
expect_err "--mem-limit" bench synthetic --mem-limit -5GiB
expect_err "--threads" bench synthetic --threads 0
expect_err "--seed" bench synthetic --seed abc
expect_err "--json" bench synthetic --json
expect_err "--plot" bench synthetic --plot "$TMP/no/such/dir/x.svg"
expect_err "unknown option" bench synthetic --frobnicate
expect_err "--plan-only" bench bert --plan-only --json "$TMP/p.json"

# BERT-base by plan (nothing run): vanilla fits at 128 and runs out from 512 (per-sample
# gradients of 7.68M parameters), ghost reaches the same largest batch as no-DP (1024)
run bench bert --plan-only
[[ $RC -eq 0 ]] && ok || bad "bert --plan-only: rc $RC $ERR"
row() { grep "^| $1 |" <<<"$OUT"; }
# columns: | batch | no-DP | vanilla | x | fast | x | ghost | x | bk | x | auto | x |
col() { row "$1" | awk -F'|' -v c="$2" '{print $c}'; }
[[ $(col 128 4) != *OOM* && $(col 512 4) == *OOM* ]] && ok || bad "bert plan: vanilla should fit at 128, not 512: $OUT"
[[ $(col 1024 3) != *OOM* && $(col 1024 8) != *OOM* && $(col 1024 12) != *OOM* ]] && ok ||
    bad "bert plan: no-DP, ghost and auto should fit at 1024: $OUT"
[[ $(col 2048 3) == *OOM* && $(col 2048 8) == *OOM* ]] && ok || bad "bert plan: no-DP and ghost should not fit at 2048: $OUT"
ratio=$(col 1024 9 | tr -d ' ')
awk -v r="$ratio" 'BEGIN { exit !(r + 0 > 0 && r + 0 <= 1.05) }' && ok || bad "bert plan: ghost/no-DP $ratio > 1.05"

# the small BERT runs for real, tiny
run bench bert-small --batch-sizes 2 --reps 1 --warmup 0 --modes no-dp,ghost,auto
[[ $RC -eq 0 ]] && ok || bad "bert-small: rc $RC $ERR"
grep -q '^| 2 | auto |' <<<"$OUT" && ok || bad "bert-small: no auto row in the summary: $OUT"
grep -q 'ghost step time <= 1.25x' <<<"$OUT" && ok || bad "bert-small: the bert targets are not reported: $OUT"

# modes that would not fit in memory together are timed in groups, each with no-DP
DPSGD_TEST_BENCH_AVAIL=1 run bench bert-small --batch-sizes 2 --reps 1 --warmup 0 --modes no-dp,ghost,auto
[[ $RC -eq 0 ]] && ok || bad "bert-small in groups: rc $RC $ERR"
grep -q 'timing: in 2 processes' <<<"$OUT" && ok || bad "bert-small in groups: no note of 2 processes: $OUT"
grep -q '^| 2 | auto |.*| [0-9.]* | [0-9.]* |$' <<<"$OUT" && ok || bad "bert-small in groups: auto not timed: $OUT"

# --model FILE.onnx: a PyTorch export as the workload, every mode on the quick batch sizes
REF=$(cd "$(dirname "${BASH_SOURCE[0]}")/reference/onnx" && pwd)
run bench --model "$REF/cnn_gn.onnx" --quick --json "$TMP/m.json"
[[ $RC -eq 0 ]] && ok || bad "--model quick run: rc $RC: $ERR"
for want in "# dpsgd bench --model $REF/cnn_gn.onnx" "the ONNX model $REF/cnn_gn.onnx (1,466 parameters" \
    "### batch 4" "### batch 8" "| first backward |" "step time × no-DP" "### summary" "none: the issues set none"; do
    [[ "$OUT" == *"$want"* ]] && ok || bad "--model: the report lacks '$want'"
done
# every mode ran and was timed at both batch sizes: a size, its ratio, ..., the step's ms and ratio
for b in 4 8; do
    for mode in no-DP vanilla fast ghost bk auto; do
        grep -Eq "^\| $b \| $mode \| [0-9.]+ [KMG]?i?B \| [0-9.]+ \| .* \| [0-9.]+ \| [0-9.]+ \|$" <<<"$OUT" && ok ||
            bad "--model: batch $b, $mode: no measured summary row: $(grep "^| $b | $mode |" <<<"$OUT")"
    done
done
if command -v python3 >/dev/null 2>&1; then
    python3 - "$TMP/m.json" "$REF/cnn_gn.onnx" <<'EOF' && ok || bad "--model json content"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["model_file"] == sys.argv[2] and d["workload"] == "--model " + sys.argv[2], d["workload"]
assert d["parameters"] == 1466 and d["classes"] == 10 and d["input_size"] == 144, d
assert d["flops_per_sample"]["forward"] > 0, d["flops_per_sample"]
assert [r["batch"] for r in d["results"]] == [4, 8]
for r in d["results"]:
    assert {"no-DP", "vanilla", "fast", "ghost", "bk", "auto"} <= set(r["modes"]), set(r["modes"])
    for name, v in r["modes"].items():
        assert v["status"] == "ok" and v["time"]["median_ms"] > 0, (name, v)
EOF
fi
# a file that does not load, or a workload as well: exit 2 with the loader's message, nothing run
expect_err "$TMP/none.onnx: cannot open" bench --model "$TMP/none.onnx" --quick
[[ -z "$OUT" ]] && ok || bad "--model of a missing file printed a report: $OUT"
expect_err "BatchNormalization" bench --model "$REF/batchnorm.onnx" --quick
[[ -z "$OUT" ]] && ok || bad "--model of a refused graph printed a report: $OUT"
expect_err "not both" bench cnn --model "$REF/cnn_gn.onnx" --plan-only
expect_err "not both" bench --model "$REF/cnn_gn.onnx" synthetic --plan-only
expect_err "--model" bench --model

t_summary
