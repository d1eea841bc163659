#!/usr/bin/env bash
# tests/onnx_cli_test.sh PATH-TO-DPSGD: `dpsgd train --model FILE.onnx` end to end on the
# PyTorch exports of tests/reference/onnx/: a private run on a .npy batch, --save-weights and
# --save-model (the same graph with the trained weights, the file's own initializers changed),
# --save-model refused without an ONNX model, a transformer export trained, a model with an unsupported
# operator and a BatchNorm model refused before any work (exit 2, naming the node), a --classes that is not the graph's output refused,
# dpsgd norms on an imported model; regression (--loss mse) on an imported MLP: float targets
# learned (the test mse falls), privately too, with dpsgd norms, and its refusals.
# Last line: "onnx_cli_test: N passed, N failed".
# shellcheck disable=SC2015
set -u
BIN=${1:?usage: onnx_cli_test.sh PATH-TO-DPSGD}
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t_setup onnx_cli_test onnx_cli
REF=$(cd "$(dirname "${BASH_SOURCE[0]}")/reference/onnx" && pwd)

TRAIN=(train --model "$REF/cnn_gn.onnx" --data-x "$REF/cnn_gn.x.npy" --data-labels "$REF/cnn_gn.y.npy"
       --test-x "$REF/cnn_gn.x.npy" --test-labels "$REF/cnn_gn.y.npy" --classes 10 --batch-size 4 --epochs 2
       --noise-multiplier 1 --lr 0.5)
run "${TRAIN[@]}" --save-weights "$TMP/w.safetensors" --save-model "$TMP/trained.onnx"
[[ $RC -eq 0 && "$OUT" == *"final:"* && -s "$TMP/w.safetensors" && -s "$TMP/trained.onnx" ]] && ok ||
    bad "train --model cnn_gn.onnx: exit $RC: $OUT $ERR"
# the trained graph loads again and differs from the file it came from only in its weights
if [[ -s "$TMP/trained.onnx" ]]; then
    run train --model "$TMP/trained.onnx" --data-x "$REF/cnn_gn.x.npy" --data-labels "$REF/cnn_gn.y.npy" \
        --test-x "$REF/cnn_gn.x.npy" --test-labels "$REF/cnn_gn.y.npy" --classes 10 --batch-size 4 --epochs 1 --no-dp
    [[ $RC -eq 0 ]] && ok || bad "the saved model does not load: exit $RC: $ERR"
    cmp -s "$TMP/trained.onnx" "$REF/cnn_gn.onnx" && bad "--save-model wrote the untrained file" || ok
fi
run train --model "$REF/cnn_gn.onnx" --data-x "$REF/cnn_gn.x.npy" --data-labels "$REF/cnn_gn.y.npy" --classes 10 \
    --save-model "$TMP/x.onnx" --model cnn
[[ $RC -eq 2 && "$ERR" == *"--save-model: only with --model FILE.onnx"* ]] && ok ||
    bad "--save-model without an ONNX model: exit $RC: $ERR"
# nn.MultiheadAttention's export trains (token ids in, the batch moved and merged in the graph)
run train --model "$REF/transformer.onnx" --data-ids "$REF/transformer.x.npy" --data-labels "$REF/transformer.y.npy" \
    --test-ids "$REF/transformer.x.npy" --test-labels "$REF/transformer.y.npy" --classes 4 --vocab 50 \
    --batch-size 4 --epochs 2 --noise-multiplier 1 --lr 0.1 --save-weights "$TMP/tw.safetensors"
[[ $RC -eq 0 && "$OUT" == *"final:"* && -s "$TMP/tw.safetensors" ]] && ok || bad "transformer.onnx: exit $RC: $OUT $ERR"
# --freeze on the state_dict's module names: the ViT's class token and patch embedding stay as
# they were, the head trains
run train --model "$REF/vit.onnx" --data-x "$REF/vit.x.npy" --data-labels "$REF/vit.y.npy" --classes 5 \
    --batch-size 4 --epochs 2 --noise-multiplier 1 --lr 0.5 --freeze cls --freeze patch --save-weights "$TMP/vw.safetensors"
[[ $RC -eq 0 && -s "$TMP/vw.safetensors" ]] && ok || bad "vit.onnx --freeze: exit $RC: $ERR"
if command -v python3 >/dev/null 2>&1 && [[ -s "$TMP/vw.safetensors" ]]; then
    ST=(python3 "$(dirname "${BASH_SOURCE[0]}")/st_tool.py" maxdiff "$REF/vit.init.safetensors" "$TMP/vw.safetensors")
    [[ "$("${ST[@]}" cls)" == "0.0" && "$("${ST[@]}" patch.weight)" == "0.0" ]] && ok || bad "--freeze cls/patch: they changed"
    [[ "$("${ST[@]}" head.weight)" != "0.0" ]] && ok || bad "--freeze cls/patch: the head did not train"
fi
# an operator dpsgd does not import: refused before any work, naming the node and listing what is supported
run train --model "$REF/unsupported.onnx" --data-x "$REF/mlp.x.npy" --data-labels "$REF/mlp.y.npy" --classes 10
[[ $RC -eq 2 && "$ERR" == *"(CumSum): operator not supported (supported: Gemm, MatMul"* ]] && ok ||
    bad "unsupported.onnx: exit $RC: $ERR"
[[ "$OUT" != *"epoch"* ]] && ok || bad "unsupported.onnx: trained before refusing"
run train --model "$REF/batchnorm.onnx" --data-x "$REF/cnn_gn.x.npy" --data-labels "$REF/cnn_gn.y.npy" --classes 10
[[ $RC -eq 2 && "$ERR" == *"(BatchNormalization)"* && "$ERR" == *"GroupNorm"* ]] && ok ||
    bad "batchnorm.onnx: exit $RC: $ERR"
run train --model "$REF/cnn_gn.onnx" --data-x "$REF/cnn_gn.x.npy" --data-labels "$REF/cnn_gn.y.npy" --classes 12
[[ $RC -eq 2 && "$ERR" == *"outputs 10 values"* ]] && ok || bad "--classes 12 for 10 logits: exit $RC: $ERR"
# dpsgd norms on an imported model: the per-sample norms PyTorch computed (float64, one sample
# at a time) for the same weights and batch, here on all 8 rows (--test-x given: no holdout)
run norms --model "$REF/cnn_gn.onnx" --data-x "$REF/cnn_gn.x.npy" --data-labels "$REF/cnn_gn.y.npy" \
    --test-x "$REF/cnn_gn.x.npy" --test-labels "$REF/cnn_gn.y.npy" --classes 10 --per-sample-out "$TMP/n.npy"
[[ $RC -eq 0 && -s "$TMP/n.npy" ]] && ok || bad "norms --model cnn_gn.onnx: exit $RC: $ERR"
# column 0 against PyTorch's norms (standard-library .npy reading; the measured error printed)
NPYREL='import struct,sys
def npy(p):
    b=open(p,"rb").read(); n=struct.unpack("<H",b[8:10])[0]; h=b[10:10+n].decode()
    f="f" if "<f4" in h else "d"; d=b[10+n:]; return struct.unpack("<%d%s"%(len(d)//struct.calcsize(f),f),d)
a=npy(sys.argv[1]); r=npy(sys.argv[2]); c=len(a)//len(r)
e=max(abs(a[i*c]-r[i])/r[i] for i in range(len(r))); print("norms vs PyTorch: max rel err %.1e"%e); sys.exit(e>1e-5)'
if command -v python3 >/dev/null 2>&1 && [[ -s "$TMP/n.npy" ]]; then
    python3 -c "$NPYREL" "$TMP/n.npy" "$REF/cnn_gn.norms.npy" && ok || bad "norms --model cnn_gn.onnx differ from PyTorch's"
fi
# the same for the transformer (attention exported by PyTorch, token ids in)
run norms --model "$REF/transformer.onnx" --data-ids "$REF/transformer.x.npy" --data-labels "$REF/transformer.y.npy" \
    --test-ids "$REF/transformer.x.npy" --test-labels "$REF/transformer.y.npy" --classes 4 --vocab 50 \
    --per-sample-out "$TMP/tn.npy"
[[ $RC -eq 0 && -s "$TMP/tn.npy" ]] && ok || bad "norms --model transformer.onnx: exit $RC: $ERR"
if command -v python3 >/dev/null 2>&1 && [[ -s "$TMP/tn.npy" ]]; then
    python3 -c "$NPYREL" "$TMP/tn.npy" "$REF/transformer.norms.npy" && ok ||
        bad "norms --model transformer.onnx differ from PyTorch's"
fi
# --loss mse: the MLP export (10 outputs) fitted to float targets t = x[:, :10] / 2 + 0.1 of its
# own batch (written here with the standard library)
if command -v python3 >/dev/null 2>&1; then
    python3 - "$REF/mlp.x.npy" "$TMP" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<H", b[8:10])[0]; h = b[10:10 + n].decode()
x = struct.unpack("<%df" % ((len(b) - 10 - n) // 4), b[10 + n:]); N = len(x) // 20
def save(path, vals, shape):
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % "".join("%d," % d for d in shape)
    hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
    open(path, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + struct.pack("<%df" % len(vals), *vals))
t = [x[i * 20 + j] / 2 + 0.1 for i in range(N) for j in range(10)]
save(sys.argv[2] + "/t.npy", t, (N, 10))
save(sys.argv[2] + "/t3.npy", [v for i in range(N) for v in t[i * 10:i * 10 + 3]], (N, 3))
t[13] = float("nan")
save(sys.argv[2] + "/tnan.npy", t, (N, 10))
PY
    REG=(train --model "$REF/mlp.onnx" --data-x "$REF/mlp.x.npy" --data-labels "$TMP/t.npy" --test-x "$REF/mlp.x.npy"
         --test-labels "$TMP/t.npy" --loss mse --batch-size 4 --quiet)
    run "${REG[@]}" --no-dp --epochs 1 --lr 0 --out "$TMP/r0.json"
    mse0=$(sed -n 's/.*"test_loss": \([0-9.e+-]*\).*/\1/p' "$TMP/r0.json" 2>/dev/null)
    run "${REG[@]}" --no-dp --epochs 40 --lr 0.05 --out "$TMP/r1.json"
    mse1=$(sed -n 's/.*"test_loss": \([0-9.e+-]*\).*/\1/p' "$TMP/r1.json" 2>/dev/null)
    echo "onnx_cli_test: --loss mse on mlp.onnx: test mse ${mse0:-?} untrained, ${mse1:-?} after 40 epochs"
    [[ $RC -eq 0 && "$OUT" == *"final: test mse"* && -n "$mse0" && -n "$mse1" ]] &&
        python3 -c "import sys; sys.exit(0 if $mse1 < 0.5 * $mse0 else 1)" && ok ||
        bad "--loss mse did not learn: $mse0 -> $mse1 (exit $RC: $ERR)"
    grep -q '"loss": "mse"' "$TMP/r1.json" && grep -q '"test_accuracy": null' "$TMP/r1.json" && ok ||
        bad "--loss mse: the JSON does not say mse / has an accuracy"
    run "${REG[@]}" --epochs 2 --noise-multiplier 1 --lr 0.05
    [[ $RC -eq 0 && "$OUT" == *"final: test mse"*"at epsilon"* ]] && ok || bad "--loss mse, private: exit $RC: $OUT $ERR"
    run norms --model "$REF/mlp.onnx" --data-x "$REF/mlp.x.npy" --data-labels "$TMP/t.npy" --test-x "$REF/mlp.x.npy" \
        --test-labels "$TMP/t.npy" --loss mse
    [[ $RC -eq 0 && "$OUT" == *"mean squared error"* ]] && ok || bad "norms --loss mse: exit $RC: $ERR"
    run train --model "$REF/mlp.onnx" --data-x "$REF/mlp.x.npy" --data-labels "$TMP/t.npy" --classes 10
    [[ $RC -eq 1 && "$ERR" == *"float labels"*"--loss mse"* ]] && ok || bad "float labels without --loss mse: exit $RC: $ERR"
    run "${REG[@]}" --classes 10
    [[ $RC -eq 2 && "$ERR" == *"--classes: not with --loss mse"* ]] && ok || bad "--loss mse --classes: exit $RC: $ERR"
    run train --model "$REF/mlp.onnx" --data-x "$REF/mlp.x.npy" --data-labels "$TMP/t3.npy" --loss mse
    [[ $RC -eq 2 && "$ERR" == *"outputs 10 values"*"3 regression targets"* ]] && ok || bad "3 targets, 10 outputs: exit $RC: $ERR"
    run train --model "$REF/mlp.onnx" --data-x "$REF/mlp.x.npy" --data-labels "$TMP/tnan.npy" --loss mse
    [[ $RC -ne 0 && "$ERR" == *"regression target is not finite"* ]] && ok || bad "a NaN target: exit $RC: $ERR"
    # a checkpoint of a regression run does not resume on class labels (another objective)
    run train --model "$REF/mlp.onnx" --data-x "$REF/mlp.x.npy" --data-labels "$TMP/t.npy" --loss mse --batch-size 4 \
        --epochs 1 --noise-multiplier 1 --checkpoint-dir "$TMP/regck" --quiet
    run train --model "$REF/mlp.onnx" --data-x "$REF/mlp.x.npy" --data-labels "$REF/mlp.y.npy" --classes 10 --batch-size 4 \
        --epochs 2 --noise-multiplier 1 --resume "$TMP/regck" --force --quiet
    [[ $RC -ne 0 && "$ERR" == *"trained with mse (regression targets), this run has cross-entropy"* ]] && ok ||
        bad "a regression checkpoint resumed on class labels: exit $RC: $ERR"
    run "${REG[@]}" --loss huber
    [[ $RC -eq 2 && "$ERR" == *"--loss huber"* ]] && ok || bad "--loss huber: exit $RC: $ERR"
fi
t_summary
