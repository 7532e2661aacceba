"""Applications through loop-carried values, and which tensor a copy group keeps."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import auditor


def test_weight_carried_through_a_loop_is_applied_every_iteration(tmp_path):
    """W enters Loop(M=5) as a carried value that the body passes on unchanged and reads in a
    MatMul: 5 applications of 64 parameters."""
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "w_in"], ["x_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Identity", ["w_in"], ["w_out"])],
        "body",
        [vi("i", TensorProto.INT64, []), vi("c_in", TensorProto.BOOL, []), vi("x_in", TensorProto.FLOAT, [1, 8]),
         vi("w_in", TensorProto.FLOAT, [8, 8])],
        [vi("c_out", TensorProto.BOOL, []), vi("x_out", TensorProto.FLOAT, [1, 8]), vi("w_out", TensorProto.FLOAT, [8, 8])],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x", "W"], ["y", "w_final"], body=body)],
        "g", [vi("x", TensorProto.FLOAT, [1, 8])], [vi("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.array(5, np.int64), "M"), numpy_helper.from_array(w, "W")],
    )  # fmt: skip
    path = tmp_path / "carried.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    # the oracle: onnxruntime runs the loop 5 times, i.e. x @ W^5
    x = np.ones((1, 8), np.float32)
    out = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(out, x @ np.linalg.matrix_power(w, 5), rtol=1e-4)
    report = auditor.audit(path)
    assert report.counts.applied_params == 5 * 64
    assert [(s.tensor, s.uses, s.applications) for s in report.shared] == [("W", 1, 5)]


def test_copy_group_keeps_the_tensor_the_graph_uses(tmp_path):
    """A (first in the file) is unused; B, its identical copy, is read: B is kept, A is waste."""
    w = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "B"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        [numpy_helper.from_array(w, "A"), numpy_helper.from_array(w.copy(), "B")],
    )
    path = tmp_path / "unused_first.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)
    report = auditor.audit(path)
    assert [g.tensors for g in report.duplicates] == [("B", "A")]
    assert report.counts.unused_params == 24 and report.counts.unique_params == 24
