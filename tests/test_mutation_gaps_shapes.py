"""Input binding and shape inference cases the first tests left open, found by mutation testing:
each test fails on a deliberately broken ``auditor/load/shapes.py`` and passes on the real one.

Every expected figure is counted by hand in the test, from the graph as written.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.graph import ShapeRequest
from auditor.analyses.compute import node_cost
from auditor.analyses.memory import liveness
from auditor.load.onnx_file import load_onnx
from auditor.load.shapes import big_tensors, count_unknown, evaluate_dim, infer_shapes, resolve

F = TensorProto.FLOAT
LOCAL = helper.make_opsetid("local", 1)


def _float(name: str, shape: list[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, F, shape)


def _ones(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _save(tmp_path: Path, graph: onnx.GraphProto, extra: tuple[onnx.OperatorSetIdProto, ...] = (),
          functions: tuple[onnx.FunctionProto, ...] = ()) -> Path:  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), *extra], functions=list(functions))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def test_spatial_axes_of_a_float_image_default_to_224(tmp_path: Path) -> None:
    # x [batch, 3, h, w]: batch 1, h = w = 224; 4 filters of 3x3x3, no padding: 4 x 222 x 222 outputs of 27 MACs
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "image", [_float("x", ["batch", 3, "h", "w"])],
                              [_float("y", None)], [_ones("w", 4, 3, 3, 3)])  # fmt: skip
    report = auditor.audit(_save(tmp_path, graph))
    assert report.shapes is not None and report.shapes.inputs == {"x": (1, 3, 224, 224)}
    assert {(d.name, d.value, d.source) for d in report.shapes.dims} == {
        ("batch", 1, "default batch"), ("h", 224, "default image"), ("w", 224, "default image")
    }  # fmt: skip
    assert report.compute is not None and report.compute.macs == 4 * 222 * 222 * 27


def test_an_op_onnx_does_not_know_leaves_the_rest_inferred(tmp_path: Path) -> None:
    # x [2,8] -> Relu -> MatMul by [8,4]: 2*8*4 MACs; beside it a vendor op onnx has no schema for
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"]),
             helper.make_node("Mystery", ["x"], ["z"], domain="vendor")]  # fmt: skip
    graph = helper.make_graph(nodes, "custom", [_float("x", [2, 8])], [_float("y", None), _float("z", None)], [_ones("w", 8, 4)])
    report = auditor.audit(_save(tmp_path, graph, (helper.make_opsetid("vendor", 1),)))
    assert report.shapes is not None and report.shapes.inferred == "onnx"
    assert report.compute is not None and report.compute.macs == 2 * 8 * 4 and report.compute.unknown_shape_ops == {}


def test_shape_arithmetic_resolves_to_numbers(tmp_path: Path) -> None:
    # x [2,4,4] reshaped to [Shape(x)[0], -1] = [2, 16], then times [16, 4]: 2*16*4 MACs
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Concat", ["b", "minus1"], ["target"], axis=0), helper.make_node("Reshape", ["x", "target"], ["x2"]),
             helper.make_node("MatMul", ["x2", "w"], ["y"])]  # fmt: skip
    inits = [numpy_helper.from_array(np.array([0], np.int64), "i0"), numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             _ones("w", 16, 4)]  # fmt: skip
    graph = helper.make_graph(nodes, "arith", [_float("x", [2, 4, 4])], [_float("y", None)], inits)
    report = auditor.audit(_save(tmp_path, graph))
    assert report.compute is not None and report.compute.macs == 2 * 16 * 4 and report.compute.complete


def test_shape_arithmetic_from_a_constant_node_resolves_to_numbers(tmp_path: Path) -> None:
    # x [2,4,4] reshaped to the Constant node's [2, 16] (a small tensor: kept for data propagation), times [16, 4]
    target = helper.make_node("Constant", [], ["target"], value=numpy_helper.from_array(np.array([2, 16], np.int64)))
    nodes = [target, helper.make_node("Reshape", ["x", "target"], ["x2"]), helper.make_node("MatMul", ["x2", "w"], ["y"])]
    graph = helper.make_graph(nodes, "constant", [_float("x", [2, 4, 4])], [_float("y", None)], [_ones("w", 16, 4)])
    report = auditor.audit(_save(tmp_path, graph))
    assert report.compute is not None and report.compute.macs == 2 * 16 * 4 and report.compute.complete


def test_a_stale_output_shape_in_the_file_does_not_stop_inference(tmp_path: Path) -> None:
    # the file states y at the traced sequence, 128; bound at seq 16 the MatMul is x [1,16,8] x [8,4]: 16*8*4 MACs
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "stale", [_float("x", ["batch", "seq", 8])], [_float("y", [1, 128, 4])], [_ones("w", 8, 4)])
    report = auditor.audit(_save(tmp_path, graph), shapes=ShapeRequest(dims={"seq": 16}))
    assert report.shapes is not None and report.shapes.inferred == "onnx"
    assert report.compute is not None and report.compute.macs == 16 * 8 * 4


def test_shapes_inside_a_loop_body_are_inferred(tmp_path: Path) -> None:
    """Loop of 3 trips; the body: m = s [1,4] x w [4,4]; r = Relu(m); n = r + s, n the body's
    output. m and r are stated nowhere: only inference inside the body knows them.
    Per trip: 16 MACs; FLOPs 32 + 4 (Relu) + 4 (Add)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("MatMul", ["s", "w"], ["m"]),
         helper.make_node("Relu", ["m"], ["r"]), helper.make_node("Add", ["r", "s"], ["n"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         _float("s", [1, 4])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), _float("n", [1, 4])],
    )  # fmt: skip
    inits = [_ones("w", 4, 4), numpy_helper.from_array(np.array(True), "cond"), numpy_helper.from_array(np.array(3, np.int64), "trip")]
    graph = helper.make_graph([helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)], "loop", [_float("x", [1, 4])],
                              [_float("y", None)], inits)  # fmt: skip
    compute = auditor.audit(_save(tmp_path, graph)).compute
    assert compute is not None and compute.unknown_shape_ops == {}
    assert (compute.macs, compute.flops) == (3 * 16, 3 * (32 + 4 + 4))


def _nested_functions(levels: int) -> list[onnx.FunctionProto]:
    """F0 is one Relu; F(i) calls F(i-1) ten times in a row: F(i) expands to about 10^i nodes."""
    functions = [helper.make_function("local", "F0", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], [helper.make_opsetid("", 18)])]
    for level in range(1, levels + 1):
        nodes, previous = [], "a"
        for j in range(10):
            nodes.append(helper.make_node(f"F{level - 1}", [previous], [f"v{j}"], domain="local"))
            previous = f"v{j}"
        nodes.append(helper.make_node("Identity", [previous], ["b"]))
        functions.append(helper.make_function("local", f"F{level}", ["a"], ["b"], nodes, [helper.make_opsetid("", 18), LOCAL]))
    return functions


def test_local_functions_are_inferred_unless_they_expand_too_far(tmp_path: Path) -> None:
    # F1: 10 Relus and an Identity: inferred
    graph = helper.make_graph([helper.make_node("F1", ["x"], ["y"], domain="local")], "small", [_float("x", [2, 3])], [_float("y", None)])
    report = auditor.audit(_save(tmp_path, graph, (LOCAL,), tuple(_nested_functions(1))))
    assert report.shapes is not None and report.shapes.inferred == "onnx"
    # F6 expands to over 10^6 nodes (> 500,000): inference is skipped, and said, at once
    graph = helper.make_graph([helper.make_node("F6", ["x"], ["y"], domain="local")], "huge", [_float("x", [2, 3])], [_float("y", None)])
    started = time.monotonic()
    report = auditor.audit(_save(tmp_path, graph, (LOCAL,), tuple(_nested_functions(6))))
    assert report.shapes is not None and report.shapes.inferred == "none: local function calls expand to over 500,000 nodes"
    assert time.monotonic() - started < 20


def test_a_function_calling_itself_is_refused_in_one_line(tmp_path: Path) -> None:
    body = [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("F", ["r"], ["b"], domain="local")]
    function = helper.make_function("local", "F", ["a"], ["b"], body, [helper.make_opsetid("", 18), LOCAL])
    graph = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local")], "rec", [_float("x", [2, 3])], [_float("y", None)])
    path = _save(tmp_path, graph, (LOCAL,), (function,))
    with pytest.raises(auditor.AuditError, match="local function 'F' calls itself"):
        auditor.audit(path)
    info, found = infer_shapes(onnx.load(path), ShapeRequest())
    assert info.inferred == "none: a local function calls itself" and found == {}


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Every tensor of a graph and its subgraphs: initializers and attribute tensors."""
    found = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            found += [attr.t] if attr.HasField("t") else []
            found += _tensors(attr.g) if attr.HasField("g") else []
            for sub in attr.graphs:
                found += _tensors(sub)
    return found


def _canonical(model: onnx.ModelProto) -> bytes:
    """The model's bytes with a data location stated as DEFAULT left unstated (the same thing)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in _tensors(copy.graph):
        if tensor.HasField("data_location") and tensor.data_location == TensorProto.DEFAULT:
            tensor.ClearField("data_location")
    return copy.SerializeToString()


def test_inference_leaves_every_tensor_of_the_model_as_it_was(tmp_path: Path) -> None:
    """Tensors over 4 KiB are detached while onnx infers shapes: raw data and typed fields, in the
    main graph, in a Constant's attribute and in a branch's own initializers. All must come back."""
    rng = np.random.default_rng(0)
    raw = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "raw")  # 8 KiB of raw_data
    typed = helper.make_tensor("typed", F, [32, 64], rng.standard_normal(32 * 64).astype(np.float32).tolist())  # float_data
    assert not typed.HasField("raw_data") and len(typed.float_data) == 32 * 64
    small = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "c")  # 128 B: stays, feeds inference
    big_constant = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32)))
    # a Constant whose data lies in an external file (never read for shapes): left exactly as stated
    outside = onnx.TensorProto(name="outside", dims=[32, 64], data_type=F, data_location=TensorProto.EXTERNAL)
    entry = outside.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    external_constant = helper.make_node("Constant", [], ["k2"], value=outside)
    branch = helper.make_graph([helper.make_node("MatMul", ["h", "inner"], ["t"])], "then", [], [_float("t", None)],
                               [numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "inner")])  # fmt: skip
    other = helper.make_graph([helper.make_node("Relu", ["h"], ["e"])], "else", [], [_float("e", None)])
    nodes = [helper.make_node("MatMul", ["x", "raw"], ["h"]), helper.make_node("MatMul", ["h", "typed"], ["g"]),
             big_constant, helper.make_node("MatMul", ["h", "k"], ["g2"]), helper.make_node("Add", ["h", "c"], ["a"]),
             external_constant, helper.make_node("MatMul", ["h", "k2"], ["g3"]),
             helper.make_node("If", ["flag"], ["z"], then_branch=branch, else_branch=other)]  # fmt: skip
    graph = helper.make_graph(nodes, "big", [_float("x", ["batch", 64]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [_float("g", None), _float("g2", None), _float("g3", None), _float("a", None), _float("z", None)],
                              [raw, typed, small])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    before = _canonical(model)
    info, found = infer_shapes(model, ShapeRequest(batch=3))
    assert info.inferred == "onnx" and info.inputs["x"] == (3, 64)
    assert [found[()][name] for name in ("g", "g2", "g3", "a")] == [((3, 64), F)] * 3 + [((3, 32), F)]
    assert _canonical(model) == before  # bindings, value_info and every tensor's data put back


def test_exporter_sizes_complete_the_inferred_ones() -> None:
    sizes = {"s70": 40, "sequence length": 7}
    assert resolve((None, 4), ("s70", 4), sizes) == (40, 4)  # an expression the exporter wrote, evaluated
    assert resolve((None, 4), ("Min(32, s70)", 4), sizes) == (32, 4)
    assert resolve((None,), ("u0",), sizes) == ("u0",)  # a run-time size: kept by the exporter's name
    assert resolve(("unk__0", 4), None, sizes) == ("unk__0", 4)  # inferred and unbound: stays a name
    assert resolve((None, 4), None, sizes) is None  # unknown and unnamed
    assert evaluate_dim("sequence length", sizes) == 7  # a bound name, even one that is no expression
    assert evaluate_dim("s70 - 40", sizes) == 0  # an empty past (a KV cache at its first step)
    assert evaluate_dim("FloorDiv(s70, 3)", sizes) == 13 and evaluate_dim("Mod(s70, 3)", sizes) == 1  # 40 = 3 * 13 + 1
    assert evaluate_dim("ceiling(s70/3)", sizes) == 14 and evaluate_dim("floor(s70/3)", sizes) == 13
    assert evaluate_dim("s70 - 41", sizes) is None


def test_unknown_shapes_are_counted_by_op_type() -> None:
    outputs = {"a": "MatMul", "b": "Relu", "c": "NonZero", "d": "Relu"}
    shapes = {"a": (1, 2), "c": (2, "unk__0"), "d": (3,)}
    # b has no shape, c a size known only at run time; a and d are known
    assert count_unknown(outputs, shapes) == Counter({"Relu": 1, "NonZero": 1})


def test_an_output_size_fixed_at_export_follows_the_bound_inputs(tmp_path: Path) -> None:
    """The legacy exporter, with only the inputs made dynamic, writes the output at the traced
    sizes: y [1, 128, 4]. Bound at seq 16, y is [1, 16, 4] and its Relu moves 16*4 elements."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "stale", [_float("x", ["batch", "seq", 8])], [_float("y", [1, 128, 4])], [_ones("w", 8, 4)])
    path = _save(tmp_path, graph)
    model = load_onnx(path, ShapeRequest(dims={"seq": 16}))
    assert model.shapes["y"] == (1, 16, 4) and model.shapes["h"] == (1, 16, 4)
    relu = next(node for node in model.nodes.values() if node.op_type == "Relu")
    assert node_cost(relu, model.shapes.get) == (0.0, 16 * 4)  # one comparison per element, no MACs
    # with nothing to bind (static inputs), the sizes the file states are the sizes
    static = helper.make_graph(nodes, "static", [_float("x", [1, 128, 8])], [_float("y", [1, 128, 4])], [_ones("w", 8, 4)])
    assert load_onnx(_save(tmp_path, static)).shapes["y"] == (1, 128, 4)


def test_element_types_the_file_leaves_unstated_are_inferred(tmp_path: Path) -> None:
    """x float16 [1, 1024] -> Relu r -> Cast c (float32) -> Relu y, and no value_info at all:
    r is float16 (2 bytes an element), c float32, as onnx's inference says."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["c"], to=F),
             helper.make_node("Relu", ["c"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 1024])],
                              [helper.make_tensor_value_info("y", F, None)])  # fmt: skip
    model = load_onnx(_save(tmp_path, graph))
    assert (model.dtypes["r"], model.dtypes["c"], model.dtypes["y"]) == ("float16", "float32", "float32")
    # live after each node (x is the caller's, not counted): r; r + c at the Cast; c + y
    assert liveness(model, count_inputs=False).timeline == ((0, 2048), (1, 2048 + 4096), (2, 4096 + 4096))


def _position_ids_graph(limit_from_data: bool) -> onnx.GraphProto:
    """ids [batch, seq] int64. Position ids as the legacy exporter builds them: Shape(ids) ->
    Gather(1) -> Range(0, seq, 1) -> Gather(pos [64, 8]) [seq, 8], added to Gather(tok [100, 8], ids)
    [batch, seq, 8]. With ``limit_from_data`` the limit is ReduceMax of the ids: known only at run time."""
    i64 = lambda name, value: numpy_helper.from_array(np.asarray(value, np.int64), name)  # noqa: E731
    limit = (
        [helper.make_node("ReduceMax", ["ids"], ["limit"], keepdims=0)] if limit_from_data
        else [helper.make_node("Shape", ["ids"], ["shape"]), helper.make_node("Gather", ["shape", "one"], ["limit"])]
    )  # fmt: skip
    nodes = limit + [
        helper.make_node("Range", ["zero", "limit", "one"], ["positions"]),
        helper.make_node("Gather", ["pos", "positions"], ["pos_emb"]),
        helper.make_node("Gather", ["tok", "ids"], ["tok_emb"]),
        helper.make_node("Add", ["tok_emb", "pos_emb"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["y"]),
    ]
    inits = [i64("zero", 0), i64("one", 1), _ones("pos", 64, 8), _ones("tok", 100, 8), _ones("w", 8, 8)]
    return helper.make_graph(nodes, "positions", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                             [_float("y", None)], inits)  # fmt: skip


def test_a_range_over_a_dimension_gets_its_length(tmp_path: Path) -> None:
    """onnx's data propagation does not evaluate Range: its length (seq) is worked out from
    Shape -> Gather and given back to the inference, so the position lookup has a shape too."""
    model = load_onnx(_save(tmp_path, _position_ids_graph(limit_from_data=False)), ShapeRequest(dims={"batch": 2, "seq": 7}))
    assert model.shapes["positions"] == (7,) and model.shapes["pos_emb"] == (7, 8) and model.shapes["h"] == (2, 7, 8)
    assert model.shape_info is not None and model.shape_info.unknown_values == 0
    report = auditor.audit(tmp_path / "m.onnx", shapes=ShapeRequest(dims={"batch": 2, "seq": 7}))
    assert report.compute is not None and report.compute.complete and report.compute.macs == 2 * 7 * 8 * 8
    # and without a reference cycle: the audit pauses the cyclic collector, so one would keep the
    # parsed model (its arena) alive for good
    gc.collect()
    gc.disable()  # as the audit runs: else a collection on the way might free a cycle before it is counted
    try:
        auditor.audit(tmp_path / "m.onnx", shapes=ShapeRequest(dims={"batch": 2, "seq": 7}))
        leaked = gc.collect()
    finally:
        gc.enable()
    assert leaked == 0


def test_a_range_over_run_time_data_stays_unknown(tmp_path: Path) -> None:
    model = load_onnx(_save(tmp_path, _position_ids_graph(limit_from_data=True)), ShapeRequest(dims={"batch": 2, "seq": 7}))
    assert "positions" not in model.shapes or not all(isinstance(d, int) for d in model.shapes["positions"])
    assert model.shapes["tok_emb"] == (2, 7, 8)


@pytest.mark.parametrize(("start", "limit", "delta", "length"), [(0.5, 4.0, 1.5, 3), (5, 2, -1, 3), (3, 3, 1, 0), (4, 1, 1, 0)])
def test_range_lengths_round_up_and_never_go_below_zero(tmp_path: Path, start: float, limit: float, delta: float, length: int) -> None:
    kind = TensorProto.FLOAT if isinstance(start, float) else TensorProto.INT64
    dtype = np.float32 if kind == TensorProto.FLOAT else np.int64
    inits = [numpy_helper.from_array(np.asarray(v, dtype), n) for n, v in (("s", start), ("l", limit), ("d", delta))]
    # the limit passes through Cast and Identity, as exporters write it
    nodes = [helper.make_node("Identity", ["l"], ["l1"]), helper.make_node("Cast", ["l1"], ["l2"], to=kind),
             helper.make_node("Range", ["s", "l2", "d"], ["r"])]  # fmt: skip
    graph = helper.make_graph(nodes, "range", [], [helper.make_tensor_value_info("r", kind, None)], inits)
    assert load_onnx(_save(tmp_path, graph)).shapes["r"] == (length,)


def test_an_output_that_is_also_an_input_or_a_weight_leaves_inference_alone(tmp_path: Path) -> None:
    """Graph outputs listed again from the inputs or the initializers: their stated shapes are no
    node's to infer, and clearing them once broke the whole inference."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    for extra in ("x", "w"):
        graph = helper.make_graph(nodes, "passing", [_float("x", ["batch", 4])], [_float("y", ["batch", 4]), _float(extra, [4, 4] if extra == "w" else ["batch", 4])],
                                  [_ones("w", 4, 4)])  # fmt: skip
        model = load_onnx(_save(tmp_path, graph), ShapeRequest(batch=3))
        assert model.shapes["y"] == (3, 4) and model.shape_info is not None and model.shape_info.unknown_values == 0


def test_an_input_returned_with_a_looser_stated_shape_keeps_its_bound_one(tmp_path: Path) -> None:
    """x [batch, 8] returned again as an output stated [?, 8]: onnx's inference took the output's
    looser type for x itself, so x lost its bound size and Relu(x) got a made-up one. The output
    is the input: it takes the input's type as bound (batch 3)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"])], "loose",
        [_float("x", ["batch", 8])], [helper.make_tensor_value_info("r", F, None), helper.make_tensor_value_info("x", F, [None, 8])],
    )  # fmt: skip
    model = load_onnx(_save(tmp_path, graph), ShapeRequest(batch=3))
    assert model.shapes["x"] == model.shapes["r"] == (3, 8)
    assert model.shape_info is not None and model.shape_info.unknown_values == 0
    assert liveness(model).unknown_values == 0
    # what the output does state stands: the only shape of an input stated without one, and a
    # size the file fixes where the input leaves it to a default (n would be the sequence's 128)
    for stated_input, stated_output in ((None, [3, 8]), (["batch", "n"], ["batch", 8])):
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["r"])], "stated",
            [_float("x", stated_input)], [helper.make_tensor_value_info("r", F, None), _float("x", stated_output)],
        )  # fmt: skip
        model = load_onnx(_save(tmp_path, graph), ShapeRequest(batch=3))
        assert model.shapes["x"] == model.shapes["r"] == (3, 8)


def test_a_negative_input_size_is_a_dynamic_one(tmp_path: Path) -> None:
    """Some converters write -1 for a dynamic size: it is bound like an unnamed one (batch, here),
    and --input-shape may give it any size; it never becomes a negative byte count."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "neg", [_float("x", [-1, 4])],
                              [helper.make_tensor_value_info("r", F, None)])  # fmt: skip
    path = _save(tmp_path, graph)
    model = load_onnx(path, ShapeRequest(batch=3))
    assert model.shapes["x"] == model.shapes["r"] == (3, 4)
    assert model.shape_info is not None and [(d.name, d.value) for d in model.shape_info.dims] == [("x[0]", 3)]
    assert liveness(model).peak_bytes == 2 * 3 * 4 * 4  # x and r, float32
    assert load_onnx(path, ShapeRequest(input_shapes={"x": (5, 4)})).shapes["r"] == (5, 4)


def test_an_output_inference_cannot_reach_keeps_the_size_the_file_states(tmp_path: Path) -> None:
    """y comes from an op onnx does not know: its stated shape [batch, 1000] stands, bound to the
    batch given; z, computed from it by a MatMul, is inferred from there."""
    nodes = [helper.make_node("FastThing", ["x"], ["y"], domain="com.example"), helper.make_node("MatMul", ["y", "w"], ["z"])]
    graph = helper.make_graph(nodes, "custom", [_float("x", ["batch", 8])], [_float("y", ["batch", 1000]), _float("z", None)],
                              [_ones("w", 1000, 4)])  # fmt: skip
    model = load_onnx(_save(tmp_path, graph, (helper.make_opsetid("com.example", 1),)), ShapeRequest(batch=2))
    assert model.shapes["y"] == (2, 1000)


def test_small_float_tensors_with_long_names_still_feed_inference(tmp_path: Path) -> None:
    """Resize reads its scales' values. An exporter's long name makes the tensor's byte size large;
    what counts is its 4 elements, so the scales stay for inference: y is [1, 3, 8, 8]."""
    name = "/decoder/up_blocks.0/upsamplers.0/Constant_output_0_with_a_long_exported_name"
    scales = numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), name)
    nodes = [helper.make_node("Resize", ["x", "", name], ["y"], mode="nearest")]
    graph = helper.make_graph(nodes, "resize", [_float("x", [1, 3, 4, 4])], [_float("y", None)], [scales])
    assert load_onnx(_save(tmp_path, graph)).shapes["y"] == (1, 3, 8, 8)
    # which tensors are taken out for inference: by elements, not bytes
    def tensor(n: int, dtype: type, label: str) -> onnx.TensorProto:
        return numpy_helper.from_array(np.zeros(n, dtype), label)
    graph = helper.make_graph([], "g", [], [], [tensor(16, np.float32, "f" * 200), tensor(17, np.float32, "g"),
                                               tensor(512, np.int64, "i"), tensor(513, np.int64, "j")])  # fmt: skip
    assert [t.name for t in big_tensors(graph)] == ["g", "j"]


def _doubling_chain(depth: int, op: str) -> list[onnx.NodeProto]:
    """v0 = dim 0 of x; v_k = op(v_{k-1}, v_{k-1}): 2^depth paths through the chain."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "zero"], ["v0"])]
    nodes += [helper.make_node(op, [f"v{k - 1}", f"v{k - 1}"], [f"v{k}"]) for k in range(1, depth + 1)]
    return nodes


def test_range_bounds_from_long_chains_are_worked_out_once(tmp_path: Path) -> None:
    """A chain of 30 Adds of a value to itself has 2^30 paths: each value is worked out once.
    x is [3, 2]: v30 = 3 * 2^30, the Range's length. A chain of Muls passes any size: unknown."""
    inits = [numpy_helper.from_array(np.asarray(v, np.int64), n) for n, v in (("zero", 0), ("one", 1))]
    for op, expected in (("Add", (3 * 2**30,)), ("Mul", None)):
        nodes = _doubling_chain(30, op) + [helper.make_node("Range", ["zero", "v30", "one"], ["r"])]
        graph = helper.make_graph(nodes, "chain", [_float("x", [3, 2])], [helper.make_tensor_value_info("r", TensorProto.INT64, None)], inits)
        started = time.monotonic()
        shape = load_onnx(_save(tmp_path, graph)).shapes.get("r")
        assert time.monotonic() - started < 20  # hours if every path were walked
        assert shape == expected if expected else (shape is None or not all(isinstance(d, int) for d in shape))


def test_a_range_limit_cast_to_an_integer_is_truncated(tmp_path: Path) -> None:
    """Range(0, Cast<int64>(7.5), 1): the cast truncates toward zero, as onnxruntime does: 7 values.
    Cast<bool>(5) is 1: Range(0, that, 1) holds one value."""
    for value, to, length in ((7.5, TensorProto.INT64, 7), (5.0, TensorProto.BOOL, 1)):
        nodes = [helper.make_node("Cast", ["f"], ["c"], to=to), helper.make_node("Cast", ["c"], ["limit"], to=TensorProto.INT64),
                 helper.make_node("Range", ["zero", "limit", "one"], ["r"])]  # fmt: skip
        inits = [numpy_helper.from_array(np.asarray(value, np.float32), "f")]
        inits += [numpy_helper.from_array(np.asarray(v, np.int64), n) for n, v in (("zero", 0), ("one", 1))]
        graph = helper.make_graph(nodes, "cast", [], [helper.make_tensor_value_info("r", TensorProto.INT64, None)], inits)
        assert load_onnx(_save(tmp_path, graph)).shapes["r"] == (length,)
