#!/usr/bin/python3
"""Models dpsgd must refuse, for tests/test_onnx.c and tests/onnx_cli_test.sh (run by hand with
Debian's python3-torch and python3-onnx; the outputs are committed):

  batchnorm.onnx    a CNN with nn.BatchNorm2d (mixes the samples of a batch), 1x8x8 input, 10 classes
  unsupported.onnx  an MLP whose hidden layer goes through CumSum (an operator dpsgd does not import)

Usage: make_refusals.py [OUT_DIR]   (default: this directory)
"""
import io
import os
import sys

import onnx
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


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    torch.manual_seed(0)
    export(BNNet(), torch.randn(2, 1, 8, 8), os.path.join(out, "batchnorm.onnx"))
    export(CumSumNet(), torch.randn(2, 6), os.path.join(out, "unsupported.onnx"))


if __name__ == "__main__":
    main()
