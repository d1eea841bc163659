#!/usr/bin/env python3
"""Writes the committed fixtures of tests/test_onnx_io.c (run by hand, not in CI, with Debian's
python3-onnx: /usr/bin/python3 tests/onnx_io/make_fixtures.py). The values are simple formulas
that the C test recomputes.

external/model.onnx + external/weights.bin: y = MatMul(x, W) + b, with W[3,4] = 0.25 * (i*4+j) - 1,
  b[4] = 10 + j and shape (INT64 [2] = {-1, 4}) all in one external file (onnx's own writer:
  location, offset and length keys), as torch.onnx.export writes a model over 2 GiB.
typed.onnx: initializers in the typed fields instead of raw_data (float_data, double_data,
  int32_data for FLOAT16/INT8/BOOL, int64_data, uint64_data, string_data), as older exporters
  and hand-made models write them.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

here = os.path.dirname(os.path.abspath(__file__))


def external():
    d = os.path.join(here, "external")
    os.makedirs(d, exist_ok=True)
    W = (0.25 * np.arange(12, dtype=np.float32) - 1).reshape(3, 4)
    b = 10 + np.arange(4, dtype=np.float32)
    shape = np.array([-1, 4], dtype=np.int64)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
         helper.make_node("Add", ["xw", "b"], ["y0"], name="add"),
         helper.make_node("Reshape", ["y0", "shape"], ["y"], name="reshape")],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(shape, "shape")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_fixtures.py")
    m.ir_version = 8
    onnx.save_model(m, os.path.join(d, "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)


def typed():
    t = [
        helper.make_tensor("f32", TensorProto.FLOAT, [2, 3], [0.5 * k - 1 for k in range(6)]),
        helper.make_tensor("f64", TensorProto.DOUBLE, [2], [1e300, -2.5]),
        helper.make_tensor("f16", TensorProto.FLOAT16, [3], np.array([1.5, -2.0, 65504.0], dtype=np.float16)),
        helper.make_tensor("i8", TensorProto.INT8, [3], [-128, 0, 127]),
        helper.make_tensor("b", TensorProto.BOOL, [2], [True, False]),
        helper.make_tensor("i64", TensorProto.INT64, [2], [-(2 ** 40), 7]),
        helper.make_tensor("u32", TensorProto.UINT32, [1], [4000000000]),
        helper.make_tensor("s", TensorProto.STRING, [2], [b"hello", b"a\x00b"]),
        helper.make_tensor("scalar", TensorProto.FLOAT, [], [3.25]),
    ]
    g = helper.make_graph(
        [helper.make_node("Identity", ["f32"], ["y"], name="id")], "typed", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], t)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_fixtures.py")
    m.ir_version = 8
    for init in m.graph.initializer:
        assert not init.HasField("raw_data"), init.name
    onnx.save_model(m, os.path.join(here, "typed.onnx"))


external()
typed()
