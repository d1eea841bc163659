#!/usr/bin/env bash
# tests/recipe_cli_test.sh PATH-TO-DPSGD: `dpsgd train --recipe NAME` end to end: the help
# lists the recipes, an unknown one is refused with the list, a recipe sets the model, the
# features and the hyperparameters, a flag overrides a recipe's value, --model transformer
# brings its own recipe, the scatternet recipe trains on scattering features (small run), and
# the flags of issue 19's training aids act and are checked: --ema, --clip-quantile and
# --lr-schedule; --augmult keeps epsilon, is reproducible and refuses what is not an image;
# --precondition is announced, counted by epsilon, refused where it cannot apply, and its
# saved weights are the recipe's model.
# Data-dependent checks are skipped without Fashion-MNIST.
# Last line: "recipe_cli_test: N passed, N failed".
# shellcheck disable=SC2015
set -u
BIN=${1:?usage: recipe_cli_test.sh PATH-TO-DPSGD}
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t_setup recipe_cli_test recipe_cli

run train --help
[[ $RC -eq 0 && "$OUT" == *"--recipe NAME"* && "$OUT" == *"scatternet"* && "$OUT" == *"transformer "* ]] && ok ||
    bad "train --help does not list the recipes: $OUT"
run train --recipe nope
[[ $RC -eq 2 && "$ERR" == *"--recipe nope: unknown"* && "$ERR" == *"scatternet"* ]] && ok ||
    bad "--recipe nope: exit $RC: $ERR"
run train --recipe
[[ $RC -eq 2 ]] && ok || bad "--recipe without a value: exit $RC"

# --model transformer alone: its own recipe (C 1, batch 512, lr 0.5), not the CNN's
TR=(train --model transformer --layers 1 --width 16 --heads 2 --seq-len 8 --vocab 16 --synthetic-n 1024
    --synthetic-test-n 64 --epochs 1 --noise-multiplier 1)
run "${TR[@]}"
[[ $RC -eq 0 && "$OUT" == *"recipe transformer"* && "$OUT" == *"C 1,"* && "$OUT" == *"expected batch 512 "* &&
   "$OUT" == *"lr 0.5 "* ]] && ok || bad "--model transformer does not bring its recipe: exit $RC: $OUT $ERR"
# a flag overrides the recipe's value
run "${TR[@]}" --batch-size 256 --lr 0.25
[[ $RC -eq 0 && "$OUT" == *"expected batch 256 "* && "$OUT" == *"lr 0.25 "* && "$OUT" == *"C 1,"* ]] && ok ||
    bad "flags do not override the recipe: exit $RC: $OUT"

# --ema: the decay's range, named
run train --ema 1
[[ $RC -eq 2 && "$ERR" == *"--ema"* ]] && ok || bad "--ema 1: exit $RC: $ERR"
run "${TR[@]}" --ema 0.9 --out "$TMP/ema.json"
[[ $RC -eq 0 ]] && grep -q '"ema_decay": 0.9' "$TMP/ema.json" && ok || bad "--ema 0.9: exit $RC: $ERR"

# --clip-quantile (adaptive clipping): the same epsilon as a fixed C (sigma is split, not
# raised), C shown per epoch and at the end, in the JSON; the flags' refusals name them
run "${TR[@]}" --epochs 2 --noise-seed 3 --out "$TMP/fixed.json"
[[ $RC -eq 0 ]] && ok || bad "transformer run for the adaptive comparison: exit $RC: $ERR"
run "${TR[@]}" --epochs 2 --noise-seed 3 --clip-quantile 0.5 --out "$TMP/adaptive.json"
[[ $RC -eq 0 && "$OUT" == *"adaptive clipping: C moves toward the 0.5-quantile"* && "$OUT" =~ epoch\ +2/2.*\ C\ [0-9.]+ &&
   "$OUT" =~ adaptive\ clipping:\ C\ 1\ -\>\ [0-9.]+ ]] && ok || bad "--clip-quantile 0.5: exit $RC: $OUT $ERR"
python3 - "$TMP/fixed.json" "$TMP/adaptive.json" <<'PY' && ok || bad "--clip-quantile changed epsilon or did not move C"
import json, sys
f, a = (json.load(open(x)) for x in sys.argv[1:])
assert a["epsilon"] == f["epsilon"] and a["noise_multiplier"] == f["noise_multiplier"], (a, f)
assert a["noise_multiplier_gradient"] > a["noise_multiplier"] and a["max_grad_norm_final"] != 1, a
assert f["noise_multiplier_gradient"] == f["noise_multiplier"] and f["max_grad_norm_final"] == 1, f
PY
for bad_args in "--clip-quantile 1" "--clip-quantile 0" "--clip-lr 0.1" "--clip-count-noise 5" "--clip-lr -1 --clip-quantile 0.5"; do
    flag=${bad_args%% *}
    # shellcheck disable=SC2086
    run "${TR[@]}" $bad_args
    [[ $RC -eq 2 && "$ERR" == *"$flag"* ]] && ok || bad "$bad_args: exit $RC, expected a refusal naming $flag: $ERR"
done
# --lr-schedule: named in the header; an unknown one refused
run "${TR[@]}" --lr-schedule cosine
[[ $RC -eq 0 && "$OUT" == *"(momentum, cosine schedule)"* ]] && ok || bad "--lr-schedule cosine: exit $RC: $OUT $ERR"
run "${TR[@]}" --lr-schedule linear
[[ $RC -eq 2 && "$ERR" == *"--lr-schedule linear: unknown"* ]] && ok || bad "--lr-schedule linear: exit $RC: $ERR"
run "${TR[@]}" --clip-quantile 0.5 --no-dp
[[ $RC -eq 2 && "$ERR" == *"--clip-quantile"* && "$ERR" == *"--no-dp"* ]] && ok || bad "--clip-quantile --no-dp: exit $RC: $ERR"
run "${TR[@]}" --clip-quantile 0.5 --clip-count-noise 0.4
[[ $RC -ne 0 && "$ERR" == *"clip_count_noise 0.4"* && "$ERR" == *"noise multiplier 1"* ]] && ok ||
    bad "--clip-count-noise 0.4 with sigma 1: exit $RC: $ERR"
# --augmult: the refusals name the flag (and exit 2) before any work
expect_fail 2 "--augmult" train --augmult 65
expect_fail 2 "--augmult" train --augmult -1
expect_fail 2 "--augment-pad: needs --augmult" train --augment-pad 2
expect_fail 2 "--no-flip: needs --augmult" train --no-flip
expect_fail 2 "--recipe scatternet" train --recipe scatternet --augmult 2
# --precondition: a noise multiplier >= 0, and only where the transform and its fold apply (said before any work)
expect_fail 2 "--precondition: the noise multiplier must be" train --recipe scatternet --precondition -1
expect_fail 2 "--precondition 2: only with a recipe whose features" train --precondition 2
expect_fail 2 "--precondition 10 (the recipe's): only with the recipe's own model" train --recipe scatternet \
    --model "groupnorm(9) flatten linear(10)"
expect_fail 2 "--precondition 10 (the recipe's): a preconditioned run cannot be checkpointed" train --recipe scatternet \
    --checkpoint-dir "$TMP/pck"
expect_fail 2 "--precondition 10 (the recipe's): not with --freeze" train --recipe scatternet --freeze 0
expect_fail 2 "--precondition 0.3: its release alone spends epsilon" train --recipe scatternet --precondition 0.3 --epsilon 1
run "${TR[@]}" --augmult 2
[[ $RC -eq 2 && "$ERR" == *"--augmult 2: the training data is token sequences, not images"* ]] && ok ||
    bad "--augmult on token data: exit $RC: $ERR"
ONNX_REF=$(cd "$(dirname "${BASH_SOURCE[0]}")/reference/onnx" && pwd)
run train --model mlp --data-x "$ONNX_REF/mlp.x.npy" --data-labels "$ONNX_REF/mlp.y.npy" --classes 10 --batch-size 4 \
    --epochs 1 --noise-multiplier 1 --delta 1e-3 --augmult 2
[[ $RC -eq 2 && "$ERR" == *"--augmult 2: the training data is flat vectors, not images"* ]] && ok ||
    bad "--augmult on flat vectors: exit $RC: $ERR"
# an imported CNN on 1x12x12 images trains with it
run train --model "$ONNX_REF/cnn_gn.onnx" --data-x "$ONNX_REF/cnn_gn.x.npy" --data-labels "$ONNX_REF/cnn_gn.y.npy" \
    --classes 10 --batch-size 4 --epochs 1 --noise-multiplier 1 --delta 1e-3 --augmult 3 --augment-pad 2 --no-flip
[[ $RC -eq 0 && "$OUT" == *"augmentation: 3 copies of each sampled example (random crop, shift up to 2 pixels)"* ]] && ok ||
    bad "--augmult 3 on an ONNX CNN: exit $RC: $OUT $ERR"
expect_fail 2 "--augment-pad 12: must be below the images' 12 x 12" train --model "$ONNX_REF/cnn_gn.onnx" \
    --data-x "$ONNX_REF/cnn_gn.x.npy" --data-labels "$ONNX_REF/cnn_gn.y.npy" --classes 10 --batch-size 4 --epochs 1 \
    --noise-multiplier 1 --delta 1e-3 --augmult 2 --augment-pad 12

if ! have_data; then
    echo "recipe_cli_test: SKIP data-dependent checks (no $DATA)"
else
    # the default recipe is cnn
    run train --train-limit 600 --test-limit 100 --epochs 1 --batch-size 100 --noise-multiplier 1
    [[ $RC -eq 0 && "$OUT" == *"recipe cnn"* && "$OUT" == *"26010 parameters"* ]] && ok || bad "default recipe: $OUT $ERR"
    # --augmult 2: the same epsilon, sigma and steps as without (the accounting does not change), a
    # different run, reproducible with --noise-seed
    AUG=(train --train-limit 2000 --test-limit 200 --epochs 1 --batch-size 250 --noise-seed 3 --quiet)
    run "${AUG[@]}" --out "$TMP/a0.json"
    [[ $RC -eq 0 ]] && ok || bad "the run without --augmult: exit $RC: $ERR"
    for k in 1 2; do
        run "${AUG[@]}" --augmult 2 --out "$TMP/a$k.json" --save-weights "$TMP/a$k.safetensors"
        [[ $RC -eq 0 ]] && ok || bad "--augmult 2: exit $RC: $ERR"
    done
    python3 - "$TMP/a0.json" "$TMP/a1.json" "$TMP/a2.json" <<'PY' && ok || bad "--augmult 2: epsilon or reproducibility"
import json, sys
a0, a1, a2 = (json.load(open(f)) for f in sys.argv[1:])
assert a1["augmult"] == 2 and a0["augmult"] == 0, (a0["augmult"], a1["augmult"])
for k in ("epsilon", "noise_multiplier", "sample_rate", "steps"):
    assert a1[k] == a0[k], (k, a0[k], a1[k])
assert a1["test_accuracy"] == a2["test_accuracy"] and a1["test_loss"] == a2["test_loss"]
assert a1["test_loss"] != a0["test_loss"]
PY
    cmp -s "$TMP/a1.safetensors" "$TMP/a2.safetensors" && ok || bad "--augmult 2 --noise-seed 3: two runs differ"
    # scatternet: 81 x 7 x 7 scattering features, GroupNorm(27) + linear (39,862 parameters)
    run train --recipe scatternet --train-limit 2000 --test-limit 200 --epochs 2 --batch-size 500 --out "$TMP/s.json"
    [[ $RC -eq 0 && "$OUT" == *"features: scattering transform J 2, 8 angles: 81x7x7"* &&
       "$OUT" == *"39862 parameters"* && "$OUT" == *"recipe scatternet"* && "$OUT" == *"lr 6 "* ]] && ok ||
        bad "--recipe scatternet: exit $RC: $OUT $ERR"
    grep -q '"recipe": "scatternet"' "$TMP/s.json" 2>/dev/null && ok || bad "the JSON does not name the recipe"
    # preconditioned by default: the release is announced, the classifier alone trains (39,700 of 39,862)
    [[ "$OUT" == *"preconditioning: GroupNorm(27) features"*"released with noise multiplier 10 (covered by epsilon)"* &&
       "$OUT" == *"39862 parameters (39700 trainable)"* ]] && ok || bad "--recipe scatternet: no preconditioning: $OUT"
    # the release is in epsilon: the same run without it needs less noise on the steps, both at the target;
    # with a given sigma the release raises epsilon instead
    PC=(train --recipe scatternet --train-limit 1000 --test-limit 100 --epochs 2 --batch-size 250 --quiet)
    run "${PC[@]}" --out "$TMP/p1.json" --save-weights "$TMP/p1.safetensors"
    [[ $RC -eq 0 ]] && ok || bad "--recipe scatternet (small): exit $RC: $ERR"
    run "${PC[@]}" --precondition 0 --out "$TMP/p0.json"
    [[ $RC -eq 0 ]] && ok || bad "--precondition 0: exit $RC: $ERR"
    # the step size follows: 6 preconditioned, the recipe's 16 without, --lr over both
    for a in "--precondition 0:lr 16 " "--precondition 0 --lr 3:lr 3 " "--lr 5:lr 5 "; do
        run train --recipe scatternet --train-limit 300 --test-limit 50 --epochs 1 --batch-size 150 ${a%%:*}
        [[ $RC -eq 0 && "$OUT" == *"${a#*:}"* ]] && ok || bad "${a%%:*}: expected '${a#*:}': $OUT $ERR"
    done
    run "${PC[@]}" --precondition 3 --noise-multiplier 2 --out "$TMP/p3.json"
    [[ $RC -eq 0 ]] && ok || bad "--precondition 3 --noise-multiplier 2: exit $RC: $ERR"
    run "${PC[@]}" --precondition 0 --noise-multiplier 2 --out "$TMP/p4.json"
    [[ $RC -eq 0 ]] && ok || bad "--precondition 0 --noise-multiplier 2: exit $RC: $ERR"
    python3 - "$TMP/p1.json" "$TMP/p0.json" "$TMP/p3.json" "$TMP/p4.json" <<'PY' && ok || bad "--precondition: accounting"
import json, sys
p1, p0, p3, p4 = (json.load(open(f)) for f in sys.argv[1:])
assert 2.98 <= p1["epsilon"] <= 3 and 2.98 <= p0["epsilon"] <= 3, (p1["epsilon"], p0["epsilon"])
assert p1["noise_multiplier"] > p0["noise_multiplier"], (p1["noise_multiplier"], p0["noise_multiplier"])
assert p3["noise_multiplier"] == p4["noise_multiplier"] == 2 and p3["epsilon"] > p4["epsilon"] + 0.01, (p3, p4)
assert p1["precondition_noise_multiplier"] == 10 and p0["precondition_noise_multiplier"] == 0
assert p3["precondition_noise_multiplier"] == 3
PY
    # the saved weights are the recipe's model, the classifier folded in: GroupNorm's affine is the identity
    python3 - "$TMP/p1.safetensors" <<'PY' && ok || bad "--precondition: the saved weights are not the recipe's model"
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
h = json.loads(raw[8:8 + n])
def t(name):
    a, b = h[name]["data_offsets"]
    return struct.unpack("<%df" % ((b - a) // 4), raw[8 + n + a:8 + n + b])
assert h["2.weight"]["shape"] == [10, 3969] and h["0.weight"]["shape"] == [81], h
assert all(v == 1 for v in t("0.weight")) and all(v == 0 for v in t("0.bias"))
assert any(v != 0 for v in t("2.weight"))
PY
    # the non-private baseline preconditions with the exact statistics
    run "${PC[@]}" --no-dp
    [[ $RC -eq 0 && "$OUT" != *"preconditioning"* ]] && ok || bad "--no-dp --quiet printed: $OUT $ERR"
    run train --recipe scatternet --train-limit 1000 --test-limit 100 --epochs 1 --batch-size 250 --precondition 4
    [[ $RC -eq 0 && "$OUT" == *"steps after the features' release (noise multiplier 4)"* ]] && ok ||
        bad "--precondition 4: the final line does not name the release: $OUT $ERR"
    run train --recipe scatternet --train-limit 1000 --test-limit 100 --epochs 1 --batch-size 250 --no-dp
    [[ $RC -eq 0 && "$OUT" == *"second moments exact (non-private baseline)"* ]] && ok ||
        bad "--recipe scatternet --no-dp: exit $RC: $OUT $ERR"
    # its weights are averaged (--ema 0.99), which --ema 0 turns off
    grep -q '"ema_decay": 0.98999999999999999' "$TMP/s.json" 2>/dev/null && [[ "$OUT" == *"averaging: "*"decay 0.99"* ]] &&
        ok || bad "--recipe scatternet does not average the weights: $(grep ema "$TMP/s.json" 2>/dev/null)"
    # a smaller budget brings fewer epochs, unless --epochs is given
    for ee in "1 20" "2 40" "3 60" "1.5 40"; do
        set -- $ee
        run train --recipe scatternet --epsilon "$1" --train-limit 300 --test-limit 50 --batch-size 150 --quiet --out "$TMP/e.json"
        [[ $RC -eq 0 ]] && grep -q "\"epochs\": $2," "$TMP/e.json" && ok || bad "--epsilon $1: expected $2 epochs: $(grep epochs "$TMP/e.json")"
    done
    run train --recipe scatternet --epsilon 1 --epochs 3 --train-limit 300 --test-limit 50 --batch-size 150 --quiet --out "$TMP/e.json"
    [[ $RC -eq 0 ]] && grep -q '"epochs": 3,' "$TMP/e.json" && ok || bad "--epochs 3 does not override the budget's epochs"
    # --scatter-angles: another filter bank (6 angles: 1 + 12 + 72 = 49 channels), refused without the recipe
    run train --recipe scatternet --scatter-angles 6 --model "groupnorm(7) flatten linear(10)" --train-limit 600 \
        --test-limit 100 --epochs 1 --batch-size 300 --precondition 0
    [[ $RC -eq 0 && "$OUT" == *"J 2, 6 angles: 49x7x7"* && "$OUT" == *"24118 parameters"* ]] && ok ||
        bad "--scatter-angles 6: exit $RC: $OUT $ERR"
    run train --scatter-angles 6 --train-limit 600 --epochs 1
    [[ $RC -eq 2 && "$ERR" == *"--scatter-angles: only with"* ]] && ok || bad "--scatter-angles without the recipe: $ERR"
    # it learns: well above chance after 2 epochs on 2000 rows
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["test_accuracy"] > 0.5 else 1)' \
        "$TMP/s.json" 2>/dev/null && ok || bad "scatternet did not learn: $(cat "$TMP/s.json" 2>/dev/null)"
fi
t_summary
