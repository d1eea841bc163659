#!/usr/bin/python3
"""Models dpsgd must refuse, for tests/test_onnx.c and tests/onnx_cli_test.sh (run by hand with
Debian's python3-torch and python3-onnx; the outputs are committed):

  batchnorm.onnx    a CNN with nn.BatchNorm2d (mixes the samples of a batch), 1x8x8 input, 10 classes
  unsupported.onnx  an MLP whose hidden layer goes through CumSum (an operator dpsgd does not import)
  gemm_inputs.onnx  mlp.onnx with two extra inputs on its first Gemm (5: malformed)
  nan_weight.onnx   mlp.onnx with a NaN in its first weight (as --init refuses)
  bad_epsilon.onnx  cnn_gn.onnx with epsilon -1 on its first InstanceNormalization
  pool_pads.onnx    cnn_gn.onnx with pads 2 on its 2x2 MaxPool (a window wholly in padding)
(the last three edit the committed fixtures, so mlp.onnx and cnn_gn.onnx must be there)

Usage: make_refusals.py [OUT_DIR]   (default: this directory)
"""
import io
import os
import sys

import onnx
import onnx.helper
import onnx.numpy_helper
import torch
import torch.nn as nn


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class CumSumNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.cumsum(self.fc1(x), dim=1))


def export(model, x, path):
    f = io.BytesIO()
    torch.onnx.export(model, x, f, opset_version=17, training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load_from_string(f.getvalue())
    onnx.save(m, path)
    print(path, sorted({n.op_type for n in m.graph.node}))


def edited(src, path, edit):
    m = onnx.load(src)
    edit(m.graph)
    onnx.save(m, path)
    print(path)


def extra_gemm_inputs(g):
    n = next(n for n in g.node if n.op_type == "Gemm")
    n.input.extend([n.input[1], n.input[2]])


def nan_weight(g):
    t = next(t for t in g.initializer if t.name.endswith("weight"))
    a = onnx.numpy_helper.to_array(t).copy()
    a.flat[3] = float("nan")
    t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))


def bad_epsilon(g):
    n = next(n for n in g.node if n.op_type == "InstanceNormalization")
    for a in n.attribute:
        if a.name == "epsilon":
            a.f = -1.0


def pool_pads(g):
    n = next(n for n in g.node if n.op_type == "MaxPool")
    for a in n.attribute:
        if a.name == "pads":
            del a.ints[:]
            a.ints.extend([2, 2, 2, 2])
            return
    n.attribute.append(onnx.helper.make_attribute("pads", [2, 2, 2, 2]))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    here = os.path.dirname(os.path.abspath(__file__))
    torch.manual_seed(0)
    export(BNNet(), torch.randn(2, 1, 8, 8), os.path.join(out, "batchnorm.onnx"))
    export(CumSumNet(), torch.randn(2, 6), os.path.join(out, "unsupported.onnx"))
    edited(os.path.join(here, "mlp.onnx"), os.path.join(out, "gemm_inputs.onnx"), extra_gemm_inputs)
    edited(os.path.join(here, "mlp.onnx"), os.path.join(out, "nan_weight.onnx"), nan_weight)
    edited(os.path.join(here, "cnn_gn.onnx"), os.path.join(out, "bad_epsilon.onnx"), bad_epsilon)
    edited(os.path.join(here, "cnn_gn.onnx"), os.path.join(out, "pool_pads.onnx"), pool_pads)


if __name__ == "__main__":
    main()
