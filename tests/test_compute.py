"""Compute (MACs/FLOPs) and input-shape binding, each against a count worked by hand in the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.graph import ShapeRequest
from auditor.load.shapes import evaluate_dim

AUDIT = [sys.executable, "-m", "auditor.cli"]


def _weight(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    values = np.random.default_rng(seed + len(name)).standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(values, name)


def _save(tmp_path: Path, name: str, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], weights: list[onnx.TensorProto], opset: int = 18) -> Path:  # fmt: skip
    graph = helper.make_graph(nodes, name, inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _float(name: str, shape: list[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_conv_macs(tmp_path: Path) -> None:
    # 1x3x8x8 input, 4 filters of 3x3x3, padding 1: 4*8*8 outputs, each 3*3*3 multiply-adds
    path = _save(tmp_path, "conv", [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
                 [_float("x", [1, 3, 8, 8])], [_float("y", None)], [_weight("w", 4, 3, 3, 3), _weight("b", 4)])  # fmt: skip
    compute = auditor.audit(path).compute
    assert compute is not None
    assert compute.macs == 4 * 8 * 8 * 27
    assert compute.flops == 2 * compute.macs + 4 * 8 * 8  # the bias adds once per output
    assert compute.complete


def test_grouped_conv_macs(tmp_path: Path) -> None:
    # groups=2: each of 6 filters sees 4/2 input channels; no padding: 6x6 outputs per channel
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2)
    path = _save(tmp_path, "gconv", [node], [_float("x", [1, 4, 8, 8])], [_float("y", None)], [_weight("w", 6, 2, 3, 3)])
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == 6 * 6 * 6 * (2 * 3 * 3)


def test_conv_transpose_counts_each_input_times_its_kernel(tmp_path: Path) -> None:
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"])
    path = _save(tmp_path, "deconv", [node], [_float("x", [1, 2, 4, 4])], [_float("y", None)], [_weight("w", 2, 3, 3, 3)])
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == (2 * 4 * 4) * (3 * 3 * 3)


def test_matmul_with_broadcasting(tmp_path: Path) -> None:
    # [2,1,4,8] x [3,8,5] broadcasts to [2,3,4,5], each output an 8-long dot product
    path = _save(tmp_path, "bmm", [helper.make_node("MatMul", ["a", "b"], ["y"])],
                 [_float("a", [2, 1, 4, 8]), _float("b", [3, 8, 5])], [_float("y", None)], [])  # fmt: skip
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == 2 * 3 * 4 * 5 * 8 and compute.flops == 2 * compute.macs


def test_gemm_transposed_with_bias(tmp_path: Path) -> None:
    node = helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1)
    path = _save(tmp_path, "gemm", [node], [_float("a", [3, 16])], [_float("y", None)], [_weight("w", 10, 16), _weight("c", 10)])
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == 3 * 16 * 10 and compute.flops == 2 * 480 + 30


@pytest.mark.parametrize("direction, directions", [("forward", 1), ("bidirectional", 2)])
def test_lstm_macs(tmp_path: Path, direction: str, directions: int) -> None:
    # seq 5, batch 2, input 3, hidden 4: per step and direction 4 gates of (3 + 4) inputs each
    hidden, inputs, steps, batch = 4, 3, 5, 2
    node = helper.make_node("LSTM", ["x", "w", "r", "b"], ["y"], hidden_size=hidden, direction=direction)
    weights = [_weight("w", directions, 4 * hidden, inputs), _weight("r", directions, 4 * hidden, hidden),
               _weight("b", directions, 8 * hidden)]  # fmt: skip
    path = _save(tmp_path, "lstm", [node], [_float("x", [steps, batch, inputs])], [_float("y", None)], weights)
    compute = auditor.audit(path).compute
    macs = directions * steps * batch * 4 * hidden * (inputs + hidden)
    assert compute is not None and compute.macs == macs
    # gate arithmetic: 9 per hidden unit and step, plus two bias adds per gate
    assert compute.flops == 2 * macs + directions * steps * batch * hidden * (9 + 8)


def test_einsum(tmp_path: Path) -> None:
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")
    path = _save(tmp_path, "einsum", [node], [_float("a", [2, 3, 4]), _float("b", [2, 4, 5])], [_float("y", None)], [])
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == 2 * 3 * 4 * 5


def _loop_model(tmp_path: Path, trip: int | None) -> Path:
    """A Loop whose body multiplies the carried [1,4] state by a 4x4 weight; ``trip`` None: the
    trip count is a graph input (known only at run time)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["state", "w"], ["next"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         _float("state", [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _float("next", [1, 4])],
    )  # fmt: skip
    weights = [_weight("w", 4, 4), numpy_helper.from_array(np.array(True), "cond")]
    inputs = [_float("x", [1, 4])]
    if trip is None:
        inputs.append(helper.make_tensor_value_info("trip", TensorProto.INT64, []))
    else:
        weights.append(numpy_helper.from_array(np.array(trip, dtype=np.int64), "trip"))
    loop = helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)
    return _save(tmp_path, f"loop{trip}", [loop], inputs, [_float("y", None)], weights)


def test_loop_body_counts_its_trip_count(tmp_path: Path) -> None:
    compute = auditor.audit(_loop_model(tmp_path, 3)).compute
    assert compute is not None and compute.macs == 3 * (1 * 4 * 4)
    (node,) = [n for n in compute.nodes if n.op_type == "MatMul"]
    assert node.runs == 3 and node.macs == 16


def test_loop_with_run_time_trip_count_is_counted_once_and_said(tmp_path: Path) -> None:
    compute = auditor.audit(_loop_model(tmp_path, None)).compute
    assert compute is not None and compute.macs == 16
    assert len(compute.unknown_trip_loops) == 1 and not compute.complete


def test_if_counts_heaviest_branch_and_lightest_as_lower_bound(tmp_path: Path) -> None:
    heavy = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [], [_float("t", [1, 8])])
    light = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [], [_float("e", [1, 8])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=heavy, else_branch=light)
    path = _save(tmp_path, "if", [node], [_float("x", [1, 8]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                 [_float("y", None)], [_weight("w", 8, 8)])  # fmt: skip
    compute = auditor.audit(path).compute
    assert compute is not None
    assert compute.macs == 64 and compute.flops == 128
    assert compute.macs_lower_bound == 0 and compute.flops_lower_bound == 8


def test_uncosted_op_is_named_never_a_silent_zero(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mystery", ["r"], ["y"], domain="vendor.ops")]
    graph = helper.make_graph(nodes, "custom", [_float("x", [2, 3])], [_float("y", None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vendor.ops", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    compute = auditor.audit(path).compute
    assert compute is not None and compute.uncosted_ops == {"Mystery": 1} and not compute.complete
    assert compute.flops == 6  # the Relu still counts


def test_data_movement_costs_nothing_and_is_not_uncosted(tmp_path: Path) -> None:
    shape = numpy_helper.from_array(np.array([6], dtype=np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Transpose", ["x"], ["t"])]
    path = _save(tmp_path, "moves", nodes, [_float("x", [2, 3])], [_float("r", None), _float("t", None)], [shape])
    compute = auditor.audit(path).compute
    assert compute is not None and compute.flops == 0 and compute.complete


# ---- input shapes ----------------------------------------------------------------------------


def _symbolic_matmul(tmp_path: Path) -> Path:
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    return _save(tmp_path, "sym", [node], [_float("x", ["batch", "seq", 16])], [_float("y", None)], [_weight("w", 16, 32)])


def test_defaults_are_batch_1_and_sequence_128(tmp_path: Path) -> None:
    report = auditor.audit(_symbolic_matmul(tmp_path))
    assert report.shapes is not None and report.compute is not None
    assert report.shapes.inputs == {"x": (1, 128, 16)}
    assert {(d.name, d.value, d.source) for d in report.shapes.dims} == {
        ("batch", 1, "default batch"), ("seq", 128, "default sequence")
    }  # fmt: skip
    assert report.compute.macs == 1 * 128 * 16 * 32


def test_dims_bind_by_symbol_name_and_by_family(tmp_path: Path) -> None:
    path = _symbolic_matmul(tmp_path)
    by_name = auditor.audit(path, shapes=ShapeRequest(dims={"seq": 7, "batch": 3}))
    assert by_name.compute is not None and by_name.compute.macs == 3 * 7 * 16 * 32
    # a model whose symbols have other names: 'batch' and 'seq' still bind those axes
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    other = _save(tmp_path, "s70", [node], [_float("x", ["s72", "s70", 16])], [_float("y", None)], [_weight("w", 16, 32)])
    report = auditor.audit(other, shapes=ShapeRequest(dims={"seq": 7, "batch": 3, "height": 5}))
    assert report.compute is not None and report.compute.macs == 3 * 7 * 16 * 32
    assert report.shapes is not None and report.shapes.unused == ("--dim height",)


def test_input_shape_fixes_one_input_and_checks_its_rank(tmp_path: Path) -> None:
    path = _symbolic_matmul(tmp_path)
    report = auditor.audit(path, shapes=ShapeRequest(input_shapes={"x": (2, 5, 16)}))
    assert report.compute is not None and report.compute.macs == 2 * 5 * 16 * 32
    with pytest.raises(auditor.AuditError, match="has 2 dimensions; the input has 3"):
        auditor.audit(path, shapes=ShapeRequest(input_shapes={"x": (2, 16)}))
    with pytest.raises(auditor.AuditError, match="fixes a dimension to 16"):
        auditor.audit(path, shapes=ShapeRequest(input_shapes={"x": (2, 5, 17)}))


def test_exporter_expressions_evaluate_with_the_bindings() -> None:
    sizes = {"s70": 40, "s43": 2, "s53": 9, "s72": 3}
    assert evaluate_dim("Min(32, s70)", sizes) == 32
    assert evaluate_dim("((s43*s53)//s72)", sizes) == 6
    assert evaluate_dim("s70 + 1", sizes) == 41
    assert evaluate_dim("u0", sizes) is None  # data-dependent: stays a name
    assert evaluate_dim("__import__('os')", sizes) is None  # never evaluated as Python


def test_cli_binds_dims_and_rejects_bad_values(tmp_path: Path) -> None:
    path = _symbolic_matmul(tmp_path)
    out = tmp_path / "r.json"
    done = subprocess.run([*AUDIT, str(path), "--dim", "seq=4", "--input-shape", "x=2x4x16", "--json", str(out), "-q"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["compute"]["macs"] == 2 * 4 * 16 * 32
    assert document["shapes"]["inputs"] == {"x": [2, 4, 16]}
    for bad in (["--dim", "seq=0"], ["--dim", "seq"], ["--input-shape", "x=2xAx16"]):
        done = subprocess.run([*AUDIT, str(path), *bad, "-q"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "op, attrs, per_element",
    [("Softmax", {}, 3), ("Relu", {}, 1), ("ReduceMean", {"keepdims": 1}, 1)],
)
def test_per_element_costs(tmp_path: Path, op: str, attrs: dict[str, int], per_element: int) -> None:
    path = _save(tmp_path, op, [helper.make_node(op, ["x"], ["y"], **attrs)], [_float("x", [4, 6])], [_float("y", None)], [])
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == 0 and compute.flops == per_element * 24


def test_layer_norm_and_pooling(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], axis=-1),
        helper.make_node("MaxPool", ["n"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    path = _save(tmp_path, "lnpool", nodes, [_float("x", [1, 2, 4, 4])], [_float("y", None)], [_weight("g", 4), _weight("b", 4)])
    compute = auditor.audit(path).compute
    # 5 per normalised element (32), then 2x2 windows over the 1x2x2x2 output
    assert compute is not None and compute.flops == 5 * 32 + 4 * 8


def test_attention_op_counts_both_products(tmp_path: Path) -> None:
    # ONNX Attention (opset 23): Q [2, 4 heads, 8, 16], K and V over 10 positions
    q, k, v = _float("q", [2, 4, 8, 16]), _float("k", [2, 4, 10, 16]), _float("v", [2, 4, 10, 16])
    path = _save(tmp_path, "attn", [helper.make_node("Attention", ["q", "k", "v"], ["y"])], [q, k, v], [_float("y", None)],
                 [], opset=23)  # fmt: skip
    compute = auditor.audit(path).compute
    products = 2 * 4 * 8 * 10 * 16  # Q K^T, then the weights times V: each this many MACs
    assert compute is not None and compute.macs == 2 * products
    assert compute.flops == 2 * compute.macs + 3 * (2 * 4 * 8 * 10)  # softmax over the scores


def test_low_bit_matmul_counts_its_logical_weight(tmp_path: Path) -> None:
    # MatMulNBits: A [1, 5, 64] times a 4-bit weight of K=64 x N=32 packed in uint8 blobs
    blob = numpy_helper.from_array(np.zeros((32, 2, 16), dtype=np.uint8), "w")
    scales = numpy_helper.from_array(np.ones((64,), dtype=np.float32), "scales")
    node = helper.make_node("MatMulNBits", ["a", "w", "scales"], ["y"], domain="com.microsoft", K=64, N=32, bits=4, block_size=32)
    graph = helper.make_graph([node], "nbits", [_float("a", [1, 5, 64])], [_float("y", None)], [blob, scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / "nbits.onnx"
    onnx.save(model, path)
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == 5 * 64 * 32


def test_gru_counts_three_gates(tmp_path: Path) -> None:
    hidden, inputs, steps, batch = 5, 3, 4, 2
    node = helper.make_node("GRU", ["x", "w", "r"], ["y"], hidden_size=hidden)
    weights = [_weight("w", 1, 3 * hidden, inputs), _weight("r", 1, 3 * hidden, hidden)]
    path = _save(tmp_path, "gru", [node], [_float("x", [steps, batch, inputs])], [_float("y", None)], weights)
    compute = auditor.audit(path).compute
    macs = steps * batch * 3 * hidden * (inputs + hidden)
    assert compute is not None and compute.macs == macs
    assert compute.flops == 2 * macs + steps * batch * hidden * 8  # no bias input: gate arithmetic only


def test_scan_body_runs_once_per_scanned_element(tmp_path: Path) -> None:
    # Scan over 7 rows of [7, 4]: the body multiplies each [1, 4] row by a 4x4 weight
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["row", "axes"], ["row2"]), helper.make_node("MatMul", ["row2", "w"], ["out"])],
        "body", [_float("row", [4])], [_float("out", [1, 4])],
        [numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")],
    )  # fmt: skip
    node = helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1)
    path = _save(tmp_path, "scan", [node], [_float("x", [7, 4])], [_float("y", None)], [_weight("w", 4, 4)])
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == 7 * 16


def test_a_function_called_twice_counts_twice(tmp_path: Path) -> None:
    function = helper.make_function(
        "local", "Proj", ["a", "b"], ["c"], [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Add", ["r", "b"], ["c"])],
        [helper.make_opsetid("", 18)],
    )  # fmt: skip
    nodes = [helper.make_node("Proj", ["x", "x"], ["y1"], domain="local"), helper.make_node("Proj", ["y1", "x"], ["y2"], domain="local")]
    graph = helper.make_graph(nodes, "fn", [_float("x", [3, 5])], [_float("y2", None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)], functions=[function])
    path = tmp_path / "fn.onnx"
    onnx.save(model, path)
    compute = auditor.audit(path).compute
    # function bodies carry no inferred shapes: their ops are listed as unknown, never counted as zero silently
    assert compute is not None and compute.unknown_shape_ops == {"Add": 1, "Relu": 1} and not compute.complete


def test_an_input_of_unknown_rank_is_not_taken_for_a_scalar(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    unranked = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)  # no shape at all
    path = _save(tmp_path, "unranked", [node], [unranked], [_float("y", None)], [])
    report = auditor.audit(path)
    assert report.shapes is not None and "x" not in report.shapes.inputs
    assert report.compute is not None and report.compute.unknown_shape_ops == {"Relu": 1}
    fixed = auditor.audit(path, shapes=ShapeRequest(input_shapes={"x": (3, 4)}))
    assert fixed.compute is not None and fixed.compute.flops == 12


def test_grouped_query_attention_3d_counts_every_query_head(tmp_path: Path) -> None:
    # q [2, 8, 4 heads x 16], k/v [2, 10, 2 heads x 16]: each of 4 query heads attends over 10 keys
    q, k, v = _float("q", [2, 8, 64]), _float("k", [2, 10, 32]), _float("v", [2, 10, 32])
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=4, kv_num_heads=2)
    path = _save(tmp_path, "gqa", [node], [q, k, v], [_float("y", None)], [], opset=23)
    compute = auditor.audit(path).compute
    assert compute is not None and compute.macs == 2 * (2 * 4 * 8 * 10 * 16)
