#!/usr/bin/env bash
# tests/transformer_cli_test.sh PATH-TO-DPSGD: token models in the command-line tool, end to
# end. `dpsgd train --model transformer` on the synthetic order task with DP (final line,
# JSON, epsilon), weights saved and loaded again (--save-weights / --init, bit-identical with
# lr 0, and the same test accuracy from `dpsgd norms`), a non-private run that must learn the
# task, spec models with an embedding on token .npy files (test files, a held-out split,
# --pad-id), freezing by module name, `dpsgd norms` in the ghost and vanilla modes on the same
# weights (per-sample .npy files read back and compared, JSON, the suggestion line), norms on
# float .npy features, bad flags and files (each message names its flag or file), and the
# model sizes as public inputs (--classes and --vocab required for files; a label or id outside
# them refused without quoting it). Python 3
# writes and reads the .npy files (no numpy needed).
# Last line: "transformer_cli_test: N passed, N failed"; exit status non-zero on any failure.
# `test && ok || bad ...` below is safe: ok() always succeeds.
# shellcheck disable=SC2015
set -u

if [[ $# -ne 1 || ! -x "$1" ]]; then
    echo "usage: $0 PATH-TO-DPSGD (an executable)" >&2
    exit 2
fi
BIN=$1
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t_setup transformer_cli_test transformer_cli_test
if ! command -v python3 >/dev/null; then
    echo "transformer_cli_test: SKIP (python3 not installed)"
    exit 77
fi

# npy.py: write small .npy files (ids, labels, features) and read float32 ones back
cat >"$TMP/npy.py" <<'EOF'
import ast, struct, sys

def write(path, descr, shape, values):
    fmt = {'<i4': 'i', '<i8': 'q', '|u1': 'B', '<f4': 'f', '<f8': 'd'}[descr]
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, ''.join('%d,' % s if len(shape) == 1 else '%d, ' % s for s in shape).rstrip(' '))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + ' ' * pad + '\n'
    with open(path, 'wb') as f:
        f.write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(header)) + header.encode('latin1'))
        f.write(struct.pack('<%d%s' % (len(values), fmt), *values))

def read_f32(path):
    b = open(path, 'rb').read()
    assert b[:6] == b'\x93NUMPY', 'not a .npy file'
    if b[6] == 1:
        hl, off = struct.unpack('<H', b[8:10])[0], 10
    else:
        hl, off = struct.unpack('<I', b[8:12])[0], 12
    h = ast.literal_eval(b[off:off + hl].decode('latin1'))
    assert h['descr'] == '<f4' and not h['fortran_order'], h
    n = 1
    for s in h['shape']:
        n *= s
    data = struct.unpack('<%df' % n, b[off + hl:off + hl + 4 * n])
    assert len(b) == off + hl + 4 * n, 'trailing bytes'
    return h['shape'], data

if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'tokens':  # tokens PREFIX N T V SEED: ids [N,T] int32 (-1 padding after a length), labels [N] int64
        prefix, n, T, V, seed = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        import random
        r = random.Random(seed)
        ids, labels = [], []
        for i in range(n):
            L = r.randint(2, T)
            row = [r.randrange(1, V) for _ in range(L)] + [-1 if i % 2 else 0] * (T - L)
            ids += row
            labels.append(int(row[0] < V // 2))
        write(prefix + '_ids.npy', '<i4', (n, T), ids)
        write(prefix + '_labels.npy', '<i8', (n,), labels)
    elif cmd == 'write':  # write PATH DESCR SHAPE(comma) VALUES(comma)
        shape = tuple(int(s) for s in sys.argv[4].split(','))
        vals = [float(v) if sys.argv[3][1] == 'f' else int(v) for v in sys.argv[5].split(',')] if sys.argv[5] else []
        write(sys.argv[2], sys.argv[3], shape, vals)
    elif cmd == 'compare':  # compare A B NCOL_WANT: same shape, close values, total = sqrt(sum layer^2)
        sa, a = read_f32(sys.argv[2])
        sb, b = read_f32(sys.argv[3])
        assert sa == sb, (sa, sb)
        assert len(sa) == 2 and sa[1] == int(sys.argv[4]), sa
        n, c = sa
        colmax = [max(abs(a[i * c + j]) for i in range(n)) for j in range(c)]
        worst = 0.0
        for i in range(n):
            for j in range(c):
                x, y = a[i * c + j], b[i * c + j]
                err = abs(x - y) / (1e-3 * abs(y) + 1e-5 * colmax[j] + 1e-30)
                worst = max(worst, err)
            tot = sum(a[i * c + j] ** 2 for j in range(1, c)) ** 0.5
            assert abs(tot - a[i * c]) <= 1e-4 * a[i * c] + 1e-12, ('total is not the norm of the layers', i, tot, a[i * c])
            assert a[i * c] > 0, ('zero norm', i)
        assert worst <= 1, ('modes disagree', worst)
        print('rows %d, columns %d, worst %.3g of the tolerance' % (n, c, worst))
EOF
PY=(python3 "$TMP/npy.py")
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(" ".join(sys.argv[2].split()), {"d": d}))' "$@"; }

# A tiny transformer on the synthetic order task (T 8, vocabulary 16).
TINY=(--model transformer --layers 1 --width 16 --heads 2 --seq-len 8 --vocab 16 --synthetic-n 512
    --synthetic-test-n 256)

# ---- help --------------------------------------------------------------------------------
expect_rc 0 "norms --help" norms --help
for f in --init --per-sample-out --json --clipping --batch-size --limit --split --clip-values --bins \
    --model --data --data-ids --seq-len --heads --freeze --classes --vocab; do
    grep -qE -- "(^|[^-a-z0-9])${f}([^-a-z0-9]|\$)" <<<"$OUT" && ok || bad "norms --help does not mention $f"
done
expect_rc 0 "help" help
grep -q '^  norms ' <<<"$OUT" && ok || bad "dpsgd help does not list norms"
expect_rc 0 "train --help" train --help
for f in --layers --width --heads --ffn --seq-len --vocab --pre-norm --activation --pool --dropout \
    --train-last-blocks --data-ids --data-labels --test-ids --test-labels --pad-id --synthetic-n \
    --synthetic-test-n --synthetic-seed --data-x --test-x --holdout --classes synthetic-text; do
    grep -qE -- "(^|[^-a-z0-9])${f}([^-a-z0-9]|\$)" <<<"$OUT" && ok || bad "train --help does not mention $f"
done

# ---- bad flags: exit 2, the message names the flag -----------------------------------------
"${PY[@]}" tokens "$TMP/tok" 300 12 20 1
"${PY[@]}" tokens "$TMP/tokt" 100 12 20 2
# user files need the class count, and the transformer the vocabulary (never read off the data)
IDS=(--data-ids "$TMP/tok_ids.npy" --data-labels "$TMP/tok_labels.npy" --classes 2)
VOC=(--vocab 20)
expect_fail 2 "--heads 3" train "${TINY[@]}" --heads 3 --width 8
expect_fail 2 "--seq-len 16" train --model transformer "${IDS[@]}" "${VOC[@]}" --seq-len 16
expect_fail 2 "--seq-len 16" norms --model transformer "${IDS[@]}" "${VOC[@]}" --seq-len 16
expect_fail 2 "--pool" train "${TINY[@]}" --pool foo
expect_fail 2 "--activation" train "${TINY[@]}" --activation tanh
expect_fail 2 "--dropout" train "${TINY[@]}" --dropout 1
expect_fail 2 "--layers" train "${TINY[@]}" --layers -1
expect_fail 2 "--train-last-blocks 3" train "${TINY[@]}" --train-last-blocks 3
expect_fail 2 "--width" train "${TINY[@]}" --width 0
expect_fail 2 "--vocab" train "${TINY[@]}" --vocab 0
expect_fail 2 "--seq-len 3" train "${TINY[@]}" --seq-len 3
expect_fail 2 "--layers" train --model mlp --layers 2
expect_fail 2 "--normalize" train "${TINY[@]}" --normalize 0.5,0.5
expect_fail 2 "--data-labels" train --model transformer --data-ids "$TMP/tok_ids.npy"
expect_fail 2 "--test-labels" train --model transformer "${IDS[@]}" --test-ids "$TMP/tokt_ids.npy"
expect_fail 2 "--pad-id" train "${TINY[@]}" --pad-id 0
expect_fail 2 "--synthetic-n" train --model transformer "${IDS[@]}" --synthetic-n 100
expect_fail 2 "--synthetic-n" train "${TINY[@]}" --synthetic-n 1
expect_fail 2 "--holdout" train "${TINY[@]}" --holdout 0.2
expect_fail 2 "--holdout" train --model transformer "${IDS[@]}" --holdout 1
expect_fail 2 "--data-ids" train --model transformer "${IDS[@]}" --data synthetic-text
expect_fail 2 "--model transformer" train --model transformer --data /nonexistent
expect_fail 2 "--freeze" train "${TINY[@]}" --freeze bert.nosuch
expect_fail 2 "--freeze" train "${TINY[@]}" --freeze ""
expect_fail 2 "--model" train --model mlp --data synthetic-text
expect_fail 2 "--vocab 50" train --model "embedding(20,8) posembed meanpool linear(2)" "${IDS[@]}" --vocab 50
expect_fail 2 "--clipping" norms "${TINY[@]}" --clipping foo
expect_fail 2 "--split" norms "${TINY[@]}" --split validation
expect_fail 2 "--batch-size" norms "${TINY[@]}" --batch-size 0
expect_fail 2 "--limit" norms "${TINY[@]}" --limit 0
expect_fail 2 "--clip-values" norms "${TINY[@]}" --clip-values 0.1,0
expect_fail 2 "--clip-values" norms "${TINY[@]}" --clip-values 0.1,
expect_fail 2 "--bins" norms "${TINY[@]}" --bins 0
expect_fail 2 "--per-sample-out" norms "${TINY[@]}" --per-sample-out
expect_fail 2 "--bogus" norms --bogus

# ---- bad files: exit 1, the message names the flag and the file ----------------------------
echo "not an npy file" >"$TMP/garbage.npy"
expect_fail 1 "--data-ids $TMP/garbage.npy" train --model transformer --data-ids "$TMP/garbage.npy" \
    --data-labels "$TMP/tok_labels.npy" --classes 2 "${VOC[@]}"
"${PY[@]}" write "$TMP/frac_ids.npy" '<f4' 2,3 1,2,3.5,4,5,6
"${PY[@]}" write "$TMP/two_labels.npy" '<i4' 2 0,1
# a bad value in a file (the content of private data): the message names the flag, the file and
# the rule, never the value, its row or position (docs/privacy.md)
quoted() { sed "s|$TMP/[a-z_]*\\.npy||g" "$TMP/stderr" | grep -qE "$1"; } # stderr without the file names
expect_fail 1 "--data-ids $TMP/frac_ids.npy: $TMP/frac_ids.npy: a token id is not an integer" train \
    --model transformer --data-ids "$TMP/frac_ids.npy" --data-labels "$TMP/two_labels.npy" --classes 2 "${VOC[@]}"
quoted 'row|position|3\.5' && bad "a non-integer id: the message quotes the id or its row: $ERR" || ok
expect_fail 1 "$TMP/two_labels.npy" train --model transformer --data-ids "$TMP/tok_ids.npy" --data-labels "$TMP/two_labels.npy" \
    --classes 2 "${VOC[@]}"
expect_fail 1 "--test-ids $TMP/tokt_ids.npy" train --model transformer "${IDS[@]}" "${VOC[@]}" --test-ids "$TMP/tokt_ids.npy" \
    --test-labels "$TMP/two_labels.npy"
expect_fail 1 "--vocab" train --model transformer "${IDS[@]}" --vocab 10
"${PY[@]}" write "$TMP/allpad_ids.npy" '<i4' 3,2 1,2,-1,-1,3,4
"${PY[@]}" write "$TMP/three_labels.npy" '<i4' 3 0,1,0
expect_fail 1 "--data-ids $TMP/allpad_ids.npy (vocabulary 20, --vocab): a sequence is all padding" train \
    --model transformer --data-ids "$TMP/allpad_ids.npy" --classes 2 "${VOC[@]}" --data-labels "$TMP/three_labels.npy" \
    --test-ids "$TMP/allpad_ids.npy" --test-labels "$TMP/three_labels.npy"
quoted 'row|position|1' && bad "an all-padding row: the message names the row: $ERR" || ok

# ---- sizes are public inputs: --classes and --vocab required for files, out-of-range refused ----
# The class count and the vocabulary are shapes of the released model; read off private files
# (1 + the largest label or id) they would reveal whether a record holds a rare large one. A
# refusal names the file and the flag, never the value or its row.
expect_fail 2 "--data-ids: needs --classes K" train --model transformer "${IDS[@]:0:4}" "${VOC[@]}"
expect_fail 2 "--data-ids: needs --classes K" norms --model "embedding(20,8) meanpool linear(2)" "${IDS[@]:0:4}"
expect_fail 2 "needs --vocab V" train --model transformer "${IDS[@]}"
expect_fail 2 "needs --vocab V" norms --model transformer "${IDS[@]}"
expect_fail 2 "--classes 3" train --model transformer --data synthetic-text --classes 3
"${PY[@]}" write "$TMP/big_ids.npy" '<i4' 3,2 1,2,3,19,4,5
expect_fail 1 "--data-ids $TMP/big_ids.npy: a token id is outside 0..15 (--vocab 16)" train --model transformer \
    --data-ids "$TMP/big_ids.npy" --data-labels "$TMP/three_labels.npy" --classes 2 --vocab 16 --holdout 0.34
quoted 'row|position|19' && bad "an id above --vocab: the message quotes the id or its row: $ERR" || ok
"${PY[@]}" write "$TMP/small_ids.npy" '<i4' 3,2 1,2,3,4,5,6
expect_fail 1 "--test-ids $TMP/big_ids.npy: a token id is outside 0..15 (the vocabulary of the model's embedding(16" \
    train --model "embedding(16,4) meanpool linear(2)" --data-ids "$TMP/small_ids.npy" \
    --data-labels "$TMP/three_labels.npy" --test-ids "$TMP/big_ids.npy" --test-labels "$TMP/three_labels.npy" --classes 2
"${PY[@]}" write "$TMP/big_labels.npy" '<i8' 3 0,1000000,1
expect_fail 1 "$TMP/big_labels.npy: a label is outside 0..1 (--classes 2)" train --model transformer "${VOC[@]}" \
    --data-ids "$TMP/small_ids.npy" --data-labels "$TMP/big_labels.npy" --classes 2 --holdout 0.34
quoted 'index|row|1000000' && bad "a label above --classes: the message quotes it or its row: $ERR" || ok

# ---- a private run of a tiny transformer, weights saved ---------------------------------------
TRAIN=(train "${TINY[@]}" --epochs 2 --batch-size 128 --optimizer adam --lr 3e-3 --max-grad-norm 1)
run "${TRAIN[@]}" --out "$TMP/run.json" --save-weights "$TMP/w.safetensors"
[[ $RC -eq 0 ]] && ok || { bad "tiny private transformer: exit $RC"; show "${TRAIN[@]}"; }
grep -qE '^data: synthetic-text .*512 train, 256 test, sequences of 8 tokens, vocabulary 16, 2 classes' <<<"$OUT" &&
    ok || bad "tiny run: no token data line: $OUT"
grep -qE '^model: transformer \(1 layers, width 16, 2 heads, ffn 64,' <<<"$OUT" && ok || bad "tiny run: no model line: $OUT"
[[ $(grep -c '^epoch ' <<<"$OUT") -eq 2 ]] && ok || bad "tiny run: want 2 epoch lines: $OUT"
grep -qE '^final: test accuracy [0-9.]+% at epsilon [0-9.]+ \(delta 1e-05' <<<"$OUT" && ok || bad "tiny run: no final line: $OUT"
if [[ -f "$TMP/run.json" ]]; then
    json_get "$TMP/run.json" 'd["model"] == "transformer" and d["private"] and 0 < d["epsilon"] <= 3 + 1e-9 and
        0 <= d["test_accuracy"] <= 1 and d["steps"] == 8' | grep -q True && ok ||
        bad "run.json: model/private/epsilon/accuracy/steps wrong: $(cat "$TMP/run.json")"
else bad "tiny run: --out not written"; fi
# the epsilon `dpsgd epsilon` computes for the run's q, sigma and steps
Q=$(json_get "$TMP/run.json" 'repr(d["sample_rate"])' 2>/dev/null)
SIG=$(json_get "$TMP/run.json" 'repr(d["noise_multiplier"])' 2>/dev/null)
run epsilon --sample-rate "${Q:-x}" --noise-multiplier "${SIG:-x}" --steps 8 --delta 1e-5 --json
python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))["epsilon"]; b=json.loads(sys.argv[2])["accountants"]["prv"]["epsilon"]
assert abs(a - b) <= 1e-6 * b, (a, b)' "$TMP/run.json" "$OUT" 2>/dev/null && ok ||
    bad "dpsgd epsilon does not reproduce the run's epsilon: $OUT"
[[ -s "$TMP/w.safetensors" ]] && ok || bad "tiny run: --save-weights not written"
# Hugging Face names in the weights file
grep -q 'bert.encoder.layer.0.attention.self.query.weight' "$TMP/w.safetensors" && ok || bad "weights lack HF names"

# the same weights loaded again: lr 0 leaves them bit-identical
run train "${TINY[@]}" --init "$TMP/w.safetensors" --no-dp --epochs 1 --batch-size 128 --optimizer adam --lr 0 \
    --save-weights "$TMP/w2.safetensors" --quiet
[[ $RC -eq 0 ]] && ok || bad "--init run: exit $RC: $ERR"
cmp -s "$TMP/w.safetensors" "$TMP/w2.safetensors" && ok || bad "--init then --save-weights with lr 0 changed the weights"
# --init into another shape: refused, naming the tensor
expect_fail 1 "--init" train "${TINY[@]}" --width 32 --init "$TMP/w.safetensors" --epochs 1 --quiet

# checkpoints: one epoch, then resumed to two, equals two epochs in one go (bit-identical, with
# seeded noise)
CK=(train "${TINY[@]}" --synthetic-test-n 64 --batch-size 128 --optimizer adam --lr 3e-3 --max-grad-norm 1
    --noise-multiplier 1 --noise-seed 3 --quiet)
run "${CK[@]}" --epochs 2 --save-weights "$TMP/ckA.safetensors"
[[ $RC -eq 0 ]] && ok || bad "checkpoint reference run: exit $RC: $ERR"
run "${CK[@]}" --epochs 1 --checkpoint-dir "$TMP/ck"
[[ $RC -eq 0 && -f "$TMP/ck/checkpoint.safetensors" ]] && ok || bad "--checkpoint-dir: exit $RC, no checkpoint: $ERR"
run "${CK[@]}" --epochs 2 --resume "$TMP/ck" --force --save-weights "$TMP/ckB.safetensors"
[[ $RC -eq 0 ]] && ok || bad "--resume: exit $RC: $ERR"
cmp -s "$TMP/ckA.safetensors" "$TMP/ckB.safetensors" && ok || bad "resumed transformer run differs from the uninterrupted one"

# ---- dpsgd norms on the trained weights: ghost and vanilla agree ---------------------------
NORMS=(norms "${TINY[@]}" --init "$TMP/w.safetensors" --batch-size 100 --quiet)
run "${NORMS[@]}" --per-sample-out "$TMP/ghost.npy" --json "$TMP/ghost.json"
[[ $RC -eq 0 ]] && ok || { bad "norms ghost: exit $RC"; show "${NORMS[@]}"; }
grep -q '^engine: clipping ghost, batch 100' <<<"$OUT" && ok || bad "norms: no engine line: $OUT"
grep -qE '^total +[0-9]+ +512 ' <<<"$OUT" && ok || bad "norms: no total row with 512 samples: $OUT"
grep -qE '^bert.encoder.layer.0.attention.self.query ' <<<"$OUT" && ok || bad "norms: no per-layer rows: $OUT"
grep -qE '^suggestion: C at the median: [0-9.e+-]+' <<<"$OUT" && ok || bad "norms: no suggestion line: $OUT"
grep -qE '^  C = .*clipped +[0-9.]+%' <<<"$OUT" && ok || bad "norms: no candidate lines: $OUT"
grep -qE '^histogram of the total norm \(20 log-spaced bins\)' <<<"$OUT" && ok || bad "norms: no histogram: $OUT"
run "${NORMS[@]}" --clipping vanilla --per-sample-out "$TMP/vanilla.npy"
[[ $RC -eq 0 ]] && ok || { bad "norms vanilla: exit $RC"; show "${NORMS[@]}" --clipping vanilla; }
NCOL=$(json_get "$TMP/ghost.json" 'len(d["columns"])' 2>/dev/null)
json_get "$TMP/ghost.json" 'd["columns"][0] == "total" and len(d["layers"]) + 1 == len(d["columns"]) and
    d["total"]["count"] == 512 and d["total"]["min"] <= d["total"]["q50"] <= d["total"]["max"] and
    sum(d["histogram"]["counts"]) + d["histogram"]["zero"] == 512 and d["suggested_C"] == d["total"]["q50"]' |
    grep -q True && ok || bad "ghost.json inconsistent: $(head -c 1500 "$TMP/ghost.json")"
if "${PY[@]}" compare "$TMP/ghost.npy" "$TMP/vanilla.npy" "${NCOL:-0}" >"$TMP/cmp.txt" 2>&1; then ok; else
    bad "norms: ghost and vanilla per-sample outputs differ: $(cat "$TMP/cmp.txt")"
fi
# norms on the test split at the trained weights: the accuracy train reported
run "${NORMS[@]}" --split test --json "$TMP/test.json"
[[ $RC -eq 0 ]] && ok || bad "norms --split test: exit $RC: $ERR"
python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))["test_accuracy"]; b=json.load(open(sys.argv[2]))["accuracy"]
assert abs(a - b) < 1e-6, (a, b)' "$TMP/run.json" "$TMP/test.json" 2>/dev/null && ok ||
    bad "norms --split test accuracy differs from train's test accuracy at the same weights"
# --limit and another clipping mode with a batch that does not divide the count
run norms "${TINY[@]}" --init "$TMP/w.safetensors" --limit 70 --batch-size 32 --clipping fast --quiet \
    --per-sample-out "$TMP/fast.npy" --clip-values 0.5,1,2
[[ $RC -eq 0 ]] && ok || bad "norms --limit 70 --clipping fast: exit $RC: $ERR"
[[ $(grep -c '^  C = ' <<<"$OUT") -eq 3 ]] && ok || bad "norms --clip-values: want 3 candidate lines: $OUT"
python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import npy
s, a = npy.read_f32(sys.argv[2]); s2, b = npy.read_f32(sys.argv[3])
assert s[0] == 70 and s[1] == s2[1]
assert all(abs(x - y) <= 1e-3 * abs(y) + 1e-6 for x, y in zip(a, b[:len(a)]))' "$TMP" "$TMP/fast.npy" "$TMP/ghost.npy" \
    2>"$TMP/err.txt" && ok || bad "norms --limit 70 fast: rows differ from ghost: $(cat "$TMP/err.txt")"
# --per-sample-out into a missing directory: exit 1, nothing left behind
expect_fail 1 "--per-sample-out" "${NORMS[@]}" --per-sample-out "$TMP/missing/x.npy"

# ---- freezing: by module name and the last blocks ---------------------------------------------
run norms "${TINY[@]}" --layers 2 --train-last-blocks 1 --quiet
[[ $RC -eq 0 ]] && ok || bad "norms --train-last-blocks 1: exit $RC: $ERR"
grep -q '^bert.encoder.layer.1.output.dense ' <<<"$OUT" && ok || bad "--train-last-blocks 1: block 1 not trained"
grep -qE '^(bert.encoder.layer.0|bert.embeddings)' <<<"$OUT" && bad "--train-last-blocks 1: frozen layers listed" || ok
run norms "${TINY[@]}" --freeze bert.embeddings --quiet
[[ $RC -eq 0 ]] && ok || bad "norms --freeze bert.embeddings: exit $RC: $ERR"
grep -qE '^bert.embeddings' <<<"$OUT" && bad "--freeze bert.embeddings: embeddings still listed" || ok
grep -qE '^bert.encoder.layer.0.attention.self.query ' <<<"$OUT" && ok || bad "--freeze: block 0 not listed"
run norms "${TINY[@]}" --freeze 4 --quiet # layer 4: block 0's key projection
[[ $RC -eq 0 ]] && ok || bad "norms --freeze 4: exit $RC: $ERR"
grep -qE '^bert.encoder.layer.0.attention.self.key ' <<<"$OUT" && bad "--freeze 4: the key projection still listed" || ok
grep -qE '^bert.encoder.layer.0.attention.self.value ' <<<"$OUT" && ok || bad "--freeze 4: the value projection not listed"

# ---- the non-private baseline learns the order task -------------------------------------------
run train "${TINY[@]}" --synthetic-n 2000 --no-dp --epochs 4 --batch-size 64 --optimizer adam --lr 3e-3 --quiet \
    --out "$TMP/nodp.json"
[[ $RC -eq 0 ]] && ok || bad "non-private transformer: exit $RC: $ERR"
json_get "$TMP/nodp.json" 'd["test_accuracy"] >= 0.75' 2>/dev/null | grep -q True && ok ||
    bad "non-private transformer: test accuracy below 75% on the order task: $OUT"

# ---- token .npy files and spec models with an embedding ----------------------------------------
SPEC="embedding(20,8) posembed meanpool linear(2)"
run train --model "$SPEC" "${IDS[@]}" --test-ids "$TMP/tokt_ids.npy" --test-labels "$TMP/tokt_labels.npy" \
    --epochs 1 --batch-size 50 --optimizer adam --lr 1e-2 --max-grad-norm 1
[[ $RC -eq 0 ]] && ok || bad "spec model on token .npy: exit $RC: $ERR"
grep -qE "^data: $TMP/tok_ids.npy, test $TMP/tokt_ids.npy \\(300 train, 100 test, sequences of 12 tokens, vocabulary 20" \
    <<<"$OUT" && ok || bad "spec model on token .npy: data line: $OUT"
run train --model transformer --layers 1 --width 8 --heads 2 "${IDS[@]}" "${VOC[@]}" --epochs 1 --batch-size 50 --quiet \
    --pad-id 0
[[ $RC -eq 0 ]] && ok || bad "transformer on token .npy with a held-out split and --pad-id: exit $RC: $ERR"
# --pad-id 0 turns id 0 into padding: a row of zeros is then empty
"${PY[@]}" write "$TMP/zero_ids.npy" '<i8' 3,2 1,2,0,0,3,4
ZERO=(--data-ids "$TMP/zero_ids.npy" --data-labels "$TMP/three_labels.npy" --test-ids "$TMP/zero_ids.npy"
    --test-labels "$TMP/three_labels.npy" --classes 2)
expect_rc 0 "id 0 as a token" train --model "embedding(5,4) meanpool linear(2)" "${ZERO[@]}" --epochs 1 --batch-size 2 --quiet
expect_fail 1 "--data-ids $TMP/zero_ids.npy (vocabulary 5): a sequence is all padding" train \
    --model "embedding(5,4) meanpool linear(2)" "${ZERO[@]}" --pad-id 0 --epochs 1 --quiet
quoted 'row|position|1' && bad "an all-padding row (--pad-id 0): the message names the row: $ERR" || ok
run train --model transformer --layers 1 --width 8 --heads 2 "${IDS[@]}" "${VOC[@]}" --epochs 1 --batch-size 50 \
    --holdout 0.2 --no-dp
grep -qE '20% held out as the test split \(240 train, 60 test, sequences of 12 tokens, vocabulary 20,' <<<"$OUT" &&
    ok || bad "--holdout 0.2: data line: $OUT"

# ---- norms on float features (.npy) and on images -----------------------------------------------
"${PY[@]}" write "$TMP/x.npy" '<f4' 6,2 0,1,1,0,0.5,0.5,1,1,0,0,2,1
"${PY[@]}" write "$TMP/y.npy" '|u1' 6 0,1,2,0,1,2
run norms --model "linear(3)" --data-x "$TMP/x.npy" --data-labels "$TMP/y.npy" --classes 3 --holdout 0.2 \
    --json "$TMP/x.json"
[[ $RC -eq 0 ]] && ok || bad "norms on --data-x: exit $RC: $ERR"
json_get "$TMP/x.json" 'd["samples"] == 5 and d["classes"] == 3 and d["columns"] == ["total", "0"]' 2>/dev/null |
    grep -q True && ok || bad "norms on --data-x: JSON: $(cat "$TMP/x.json" 2>/dev/null)"
# the class count is --classes, not 1 + the largest label (2 here): a fourth, unused class
run norms --model mlp --data-x "$TMP/x.npy" --data-labels "$TMP/y.npy" --classes 4 --holdout 0.2 --json "$TMP/x4.json"
json_get "$TMP/x4.json" 'd["classes"] == 4' 2>/dev/null | grep -q True && ok ||
    bad "norms --classes 4 on labels 0..2: JSON: $(cat "$TMP/x4.json" 2>/dev/null) $ERR"
expect_fail 2 "--data-x: needs --classes K" norms --model "linear(3)" --data-x "$TMP/x.npy" --data-labels "$TMP/y.npy"
expect_fail 2 "--data-x: needs --classes K" train --model "linear(3)" --data-x "$TMP/x.npy" --data-labels "$TMP/y.npy"
# a label of 1,000,000 made a 1,000,001-class model; 50,000,000 failed on linear(OUT)
for big in 1000000 50000000; do
    "${PY[@]}" write "$TMP/ybig.npy" '<i8' 6 0,1,2,"$big",1,2
    expect_fail 1 "$TMP/ybig.npy: a label is outside 0..2 (--classes 3)" train --model mlp --data-x "$TMP/x.npy" \
        --data-labels "$TMP/ybig.npy" --classes 3 --holdout 0.2 --epochs 1 --quiet
    quoted "index|row|$big" && bad "a label above --classes: the message quotes it or its row: $ERR" || ok
done
"${PY[@]}" write "$TMP/yneg.npy" '<i4' 6 0,1,2,-1,1,2
expect_fail 1 "--test-x $TMP/x.npy: $TMP/yneg.npy: a label is outside 0..2 (--classes 3)" norms --model mlp \
    --data-x "$TMP/x.npy" --data-labels "$TMP/y.npy" --test-x "$TMP/x.npy" --test-labels "$TMP/yneg.npy" --classes 3
if have_data; then
    run norms --model mlp --limit 300 --batch-size 128 --quiet
    [[ $RC -eq 0 ]] && ok || bad "norms on Fashion-MNIST: exit $RC: $ERR"
    grep -q '^data: /usr/share/datasets/fashion-mnist, train split: 300 samples, 10 classes' <<<"$OUT" && ok ||
        bad "norms on Fashion-MNIST: data line: $OUT"
else
    echo "transformer_cli_test: SKIP the Fashion-MNIST norms check ($DATA not installed)"
fi

t_summary
