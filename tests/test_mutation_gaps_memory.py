"""Liveness cases the first tests left open, found by mutation testing: each test fails on a
deliberately broken ``auditor/analyses/memory.py`` and passes on the real one.

x is float32 [1, 1024] (4 KiB) throughout; each expected peak is counted in the test, tensor by
tensor, from the graph as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from auditor.analyses.memory import liveness
from auditor.graph import ModelGraph
from auditor.load.onnx_file import load_onnx

KIB4 = 4096  # bytes of one float32 [1, 1024]
RUNTIME = {"alias_views": True, "in_place": True, "reuse": True, "count_inputs": False}


def _graph(tmp_path: Path, nodes: Sequence[onnx.NodeProto], outputs: Sequence[tuple[str, int]],
           inits: Mapping[str, np.ndarray] | None = None) -> ModelGraph:  # fmt: skip
    """x [1, 1024] float32 in; every intermediate's shape and type stated in the file."""
    graph = helper.make_graph(
        list(nodes), "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info(name, elem, None) for name, elem in outputs],
        [numpy_helper.from_array(value, name) for name, value in (inits or {}).items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return load_onnx(path)


def test_run_time_sizes_take_their_expected_value(tmp_path: Path) -> None:
    """x -> Relu r -> NonZero nz [2, n] int64 -> Transpose t [n, 2] int64; n is known only at run time."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["nz"]),
             helper.make_node("Transpose", ["nz"], ["t"])]  # fmt: skip
    graph = _graph(tmp_path, nodes, [("t", TensorProto.INT64)])
    symbols = {d for v in ("nz", "t") for d in graph.shapes[v] if isinstance(d, str)}
    assert symbols  # the run-time size is a named symbol
    # unknown: nz and t count as empty. Relu: x + r = 2 x 4 KiB, the peak
    plain = liveness(graph)
    assert (plain.peak_bytes, plain.unknown_values) == (2 * KIB4, 2)
    # at 1000 each: nz and t are 2 * 1000 int64 = 16,000 bytes; Transpose: nz + t = 32,000
    expected = {s: 1000.0 for s in symbols}
    sized = liveness(graph, expected)
    assert (sized.peak_bytes, sized.unknown_values, sized.peak_op_type) == (32_000, 0, "Transpose")
    # onnxruntime's planner cannot reuse a buffer for a size it does not know: nothing breaks
    assert liveness(graph, **RUNTIME).peak_bytes == KIB4  # r alone (x is the caller's)
    assert liveness(graph, expected, **RUNTIME).peak_bytes == 32_000


def test_float8_activations_take_one_byte_per_element(tmp_path: Path) -> None:
    # x -> Cast c (float8e4m3fn, 1024 B) -> Cast y (float32): x + c, then c + y: 4096 + 1024
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT8E4M3FN), helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]
    graph = _graph(tmp_path, nodes, [("y", TensorProto.FLOAT)])
    assert graph.dtypes.get("c") == "float8e4m3fn"
    assert liveness(graph).peak_bytes == KIB4 + 1024


def test_a_string_activation_has_no_known_size(tmp_path: Path) -> None:
    # x -> Cast s (string: no fixed size, unknown, counted as empty) -> Cast y (float32): 4 KiB live at each node
    nodes = [helper.make_node("Cast", ["x"], ["s"], to=TensorProto.STRING), helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT)]
    graph = _graph(tmp_path, nodes, [("y", TensorProto.FLOAT)])
    assert graph.dtypes.get("s") == "string"
    found = liveness(graph)
    assert (found.peak_bytes, found.unknown_values) == (KIB4, 1)


def test_a_constant_counts_nothing_and_its_buffer_is_never_reused(tmp_path: Path) -> None:
    """wt = Transpose(W [1024, 1]) is computed at session creation (a constant, 0 bytes here);
    a = x + wt; e = Exp(a); y = Exp(e), the output. All [1, 1024] float32.

    Plain: at the Add x, a (wt empty) = 2 x 4 KiB; then a + e, then e + y: 2 x 4 KiB.
    At run time with reuse: e cannot take a's buffer (a is read by e's own node), and a constant's
    empty buffer is no buffer to reuse: a + e = 2 x 4 KiB."""
    nodes = [helper.make_node("Transpose", ["W"], ["wt"]), helper.make_node("Add", ["x", "wt"], ["a"]),
             helper.make_node("Exp", ["a"], ["e"]), helper.make_node("Exp", ["e"], ["y"])]  # fmt: skip
    graph = _graph(tmp_path, nodes, [("y", TensorProto.FLOAT)], {"W": np.ones((1024, 1), np.float32)})
    constants = frozenset({"wt"})
    assert liveness(graph, constants=constants).peak_bytes == 2 * KIB4
    assert liveness(graph, constants=constants, **RUNTIME).peak_bytes == 2 * KIB4


def test_a_long_timeline_is_sampled_keeping_each_window_high(tmp_path: Path) -> None:
    """600 Relus in a row (x + one activation live: 2 x 4 KiB each), with at position 301 a
    Concat of four copies ([4, 1024], 16 KiB) reduced back by a ReduceMax: 4 + 16 KiB while
    each of the two runs. 602 nodes: sampled in windows of ceil(602 / 400) = 2, each its
    highest; the two high positions, 301 and 302, fall in two windows beside a low one."""
    nodes, previous = [], "x"
    for i in range(600):
        if i == 301:
            nodes += [helper.make_node("Concat", [previous] * 4, ["wide"], axis=0),
                      helper.make_node("ReduceMax", ["wide", "axes"], ["narrow"], keepdims=1)]  # fmt: skip
            previous = "narrow"
        nodes.append(helper.make_node("Relu", [previous], [f"r{i}"]))
        previous = f"r{i}"
    graph = _graph(tmp_path, nodes, [(previous, TensorProto.FLOAT)], {"axes": np.array([0], np.int64)})
    found = liveness(graph)
    assert found.peak_bytes == 5 * KIB4 and found.peak_op_type in ("Concat", "ReduceMax")
    assert len(found.timeline) == 301
    assert max(bytes_ for _, bytes_ in found.timeline) == 5 * KIB4
    assert min(bytes_ for _, bytes_ in found.timeline) == 2 * KIB4


def test_a_graph_output_made_early_stays_live_to_the_end(tmp_path: Path) -> None:
    """a = Relu(x) is a graph output, then b = Exp(a), c = Exp(b), y = Exp(c) (an output too).
    Plain liveness, the input not counted: a at the Relu, a + b, then a + b + c at the second Exp
    (b is read there last), then a + c + y: a, the caller's, stays to the end. 3 x 4 KiB."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Exp", ["a"], ["b"]),
             helper.make_node("Exp", ["b"], ["c"]), helper.make_node("Exp", ["c"], ["y"])]  # fmt: skip
    graph = _graph(tmp_path, nodes, [("a", TensorProto.FLOAT), ("y", TensorProto.FLOAT)])
    found = liveness(graph, count_inputs=False)
    assert [bytes_ for _, bytes_ in found.timeline] == [KIB4, 2 * KIB4, 3 * KIB4, 3 * KIB4]


def test_packed_activation_bytes_round_up_to_whole_bytes(tmp_path: Path) -> None:
    """Cast x [1, 3] to int4: 3 values of 4 bits are 12 bits, held in 2 bytes (not 1)."""
    from auditor.analyses.memory import value_bytes

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["q"], to=TensorProto.INT4)], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])], [helper.make_tensor_value_info("q", TensorProto.INT4, None)],
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    model = load_onnx(path)
    assert model.dtypes["q"] == "int4" and model.shapes["q"] == (1, 3)
    assert value_bytes(model, "q", {}) == 2
    assert value_bytes(model, "x", {}) == 12  # float32 [1, 3]


def _relu(tmp_path: Path, dims: list[int]) -> ModelGraph:
    """r = Relu(x), x float32 of the fixed shape ``dims``."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"])], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)], [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    return load_onnx(path)


def test_sizes_beyond_any_machine_have_no_byte_count(tmp_path: Path) -> None:
    """A hostile file's dims: 17 axes of 2^62 are 2^1054 elements, past any float; the size is
    unknown (None), not a 300-digit integer that later sums would carry."""
    from auditor.analyses.memory import value_bytes

    dims = [2**62] * 17
    model = _relu(tmp_path, dims)
    assert model.shapes["r"] == tuple(dims)
    assert value_bytes(model, "r", {}) is None


def test_byte_counts_of_odd_sizes_follow_the_float_rules(tmp_path: Path) -> None:
    """The integer fast path gives way where the float path decides otherwise: a negative size
    (no size at all) and a zero among sizes whose product overflows a float first (nan: unknown)."""
    import dataclasses

    from auditor.analyses.memory import value_bytes

    model = _relu(tmp_path, [1, 4])
    assert value_bytes(model, "r", {}) == 16
    for odd in ((-1, 4), (-3, -4), (2**62,) * 17 + (0,)):
        assert value_bytes(dataclasses.replace(model, shapes={"r": odd}), "r", {}) is None, odd
    assert value_bytes(dataclasses.replace(model, shapes={"r": (0, 4)}), "r", {}) == 0  # an empty tensor
