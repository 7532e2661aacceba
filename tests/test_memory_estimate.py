"""Static memory (auditor.analyses.memory): liveness peaks worked out by hand on tiny graphs, the
runtime-aware terms on tiny weights, and one real onnxruntime measurement.

Every activation below is float32 [1, 1024] (4 KiB) unless said otherwise; each expected peak is
counted in the comment above its assertion, tensor by tensor, from the graph as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.analyses import memory
from auditor.analyses.memory import SESSION_FIXED_BYTES, liveness
from auditor.audit import audit_with_graph, run_inputs
from auditor.graph import ModelGraph
from auditor.load.onnx_file import load_onnx

F = TensorProto.FLOAT
ROW = [1, 1024]
KIB4 = 4096  # bytes of one float32 [1, 1024]
MIB = 1 << 20


def _model(
    tmp_path: Path,
    nodes: Sequence[onnx.NodeProto],
    outputs: Sequence[str | tuple[str, Sequence[int]]],
    inits: dict[str, np.ndarray] | None = None,
    inputs: Sequence[tuple[str, Sequence[int | str]] | tuple[str, Sequence[int | str], int]] = (("x", ROW),),
    stated: bool = True,
) -> Path:
    """A model of ``nodes`` (opset 18): inputs float unless an element type is given, output shapes
    inferred unless given, intermediate shapes written as value_info unless ``stated`` is False."""
    graph = helper.make_graph(
        list(nodes),
        "m",
        [helper.make_tensor_value_info(i[0], i[2] if len(i) > 2 else F, i[1]) for i in inputs],
        [helper.make_tensor_value_info(*((out, F, None) if isinstance(out, str) else (out[0], F, out[1]))) for out in outputs],
        [numpy_helper.from_array(value, name) for name, value in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills the outputs' shapes
    onnx.checker.check_model(model, full_check=True)
    if not stated:
        del model.graph.value_info[:]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def _load(path: Path) -> ModelGraph:
    return load_onnx(path)


def _runtime(graph: ModelGraph) -> int:
    """Peak of the runtime-aware liveness (the caller's inputs not counted)."""
    return liveness(graph, alias_views=True, in_place=True, count_inputs=False).peak_bytes


def test_chain_peaks_at_the_add_with_three_tensors(tmp_path: Path) -> None:
    """x -> Relu r1 -> Relu r2 -> Add(r1, r2) y: at the Add, r1, r2 and y are live."""
    graph = _load(_model(tmp_path, [
        helper.make_node("Relu", ["x"], ["r1"]),
        helper.make_node("Relu", ["r1"], ["r2"]),
        helper.make_node("Add", ["r1", "r2"], ["y"]),
    ], ["y"]))  # fmt: skip
    plain = liveness(graph)
    # Relu r1: x + r1 = 2 (x freed); Relu r2: r1 + r2 = 2; Add: r1 + r2 + y = 3
    assert plain.peak_bytes == 3 * KIB4
    assert plain.peak_op_type == "Add"
    assert sorted(t.bytes for t in plain.peak_tensors) == [KIB4] * 3
    # r1 is read again by the Add, so the second Relu cannot reuse its buffer: 3 at run time too
    assert _runtime(graph) == 3 * KIB4
    # the timeline holds the bytes while each node runs: it reaches the peak at the peak's position
    assert plain.timeline == ((0, 2 * KIB4), (1, 2 * KIB4), (2, 3 * KIB4))
    assert plain.peak_position == 2


def test_a_long_lived_branch_raises_the_peak(tmp_path: Path) -> None:
    """a = Relu(x) waits for the final Add while a chain of three runs beside it."""
    graph = _load(_model(tmp_path, [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Exp", ["a"], ["b"]),
        helper.make_node("Sin", ["b"], ["c"]),
        helper.make_node("Cos", ["c"], ["d"]),
        helper.make_node("Add", ["a", "d"], ["y"]),
    ], ["y"]))  # fmt: skip
    plain = liveness(graph)
    # Relu: x + a = 2; Exp: a + b = 2; Sin: a + b + c = 3 (b freed); Cos: a + c + d = 3; Add: a + d + y = 3.
    # The chain alone would peak at 2: the third is a, alive from the first node to the last.
    assert plain.peak_bytes == 3 * KIB4
    assert plain.peak_op_type == "Sin"  # first reached there
    assert "a" in {t.value.rsplit("/", 1)[-1] for t in plain.peak_tensors}


def test_loop_body_counts_at_its_own_peak(tmp_path: Path) -> None:
    """A Loop carrying x through a body Relu t1 -> Exp t2 -> Add(t1, t2) v_out."""
    body = helper.make_graph(
        [
            helper.make_node("Relu", ["v_in"], ["t1"]),
            helper.make_node("Exp", ["t1"], ["t2"]),
            helper.make_node("Add", ["t1", "t2"], ["v_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", F, ROW),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", F, ROW)],
    )
    path = _model(
        tmp_path,
        [helper.make_node("Loop", ["trips", "keep_going", "x"], ["v_final"], body=body)],
        [("v_final", ROW)],
        {"trips": np.array(3, np.int64), "keep_going": np.array(True)},
    )
    graph = _load(path)
    # body: i (8 bytes) + cond_in (1 byte) + v_in; Relu adds t1 (v_in freed); Exp adds t2; Add
    # adds v_out: i + cond_in + t1 + t2 + v_out = 9 + 3 tensors, its peak
    body_peak = 8 + 1 + 3 * KIB4
    # main: x + v_final while the Loop runs, plus the body at its own peak (once, not per trip)
    assert liveness(graph).peak_bytes == 2 * KIB4 + body_peak
    assert liveness(graph).peak_op_type == "Loop"


def test_views_share_their_input_buffer_at_run_time_only(tmp_path: Path) -> None:
    """a = Relu(x) seen through Reshape, Unsqueeze and Flatten, all summed with a."""
    graph = _load(_model(tmp_path, [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Reshape", ["a", "flat"], ["r1"]),
        helper.make_node("Unsqueeze", ["r1", "axis0"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["r3"]),
        helper.make_node("Sum", ["a", "r2", "r3"], ["y"]),
    ], ["y"], {"flat": np.array([1024], np.int64), "axis0": np.array([0], np.int64)}))  # fmt: skip
    # plain: Unsqueeze a + r1 + r2 = 3 (r1 freed); Flatten a + r2 + r3 = 3; Sum a + r2 + r3 + y = 4
    assert liveness(graph).peak_bytes == 4 * KIB4
    # views alias a: one buffer until the Sum writes y
    assert liveness(graph, alias_views=True).peak_bytes == 2 * KIB4
    assert _runtime(graph) == 2 * KIB4


def test_transpose_copies(tmp_path: Path) -> None:
    """a = Relu(x), Transpose t, Transpose back u, Add(a, u): a Transpose moves the data."""
    graph = _load(_model(tmp_path, [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0]),
        helper.make_node("Transpose", ["t"], ["u"], perm=[1, 0]),
        helper.make_node("Add", ["a", "u"], ["y"]),
    ], ["y"]))  # fmt: skip
    # second Transpose: a + t + u = 3 (t freed after); Add: a + u + y = 3
    assert _runtime(graph) == 3 * KIB4


def test_activations_run_in_place_when_their_input_dies(tmp_path: Path) -> None:
    """Exp a -> Relu b -> Sigmoid c -> ReduceSum y (4 bytes): Relu and Sigmoid reuse a's buffer."""
    graph = _load(_model(tmp_path, [
        helper.make_node("Exp", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Sigmoid", ["b"], ["c"]),
        helper.make_node("ReduceSum", ["c"], ["y"], keepdims=0),
    ], ["y"]))  # fmt: skip
    # without reuse: a + b at the Relu, b + c at the Sigmoid = 2
    assert liveness(graph, alias_views=True, count_inputs=False).peak_bytes == 2 * KIB4
    # with: one buffer passed along, then the 4-byte sum beside it
    assert _runtime(graph) == KIB4 + 4


def test_no_in_place_into_a_graph_output_or_a_graph_input(tmp_path: Path) -> None:
    """Relu(x) may not overwrite the caller's x; Relu(a) -> y may not reuse a when y is an output."""
    graph = _load(_model(tmp_path, [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ], ["y"]))  # fmt: skip
    # a is new (x is the caller's, counted 0), y is new beside it: 2
    assert _runtime(graph) == 2 * KIB4
    # the memory-pattern block holds intermediates only: a
    assert liveness(graph, alias_views=True, in_place=True, count_inputs=False, count_outputs=False).peak_bytes == KIB4


def _gap(tmp_path: Path, batch: int | str, stated: bool) -> Path:
    """a [n, 1024] is freed, then a tensor of a's shape comes back after a wider one (w [n, 2048])."""
    return _model(tmp_path, [
        helper.make_node("Exp", ["x"], ["a"]),
        helper.make_node("ReduceSum", ["a"], ["p"], keepdims=1),  # [n, 1]; a dies
        helper.make_node("Expand", ["p", "wide"], ["w"]),  # [n, 2048]; p dies
        helper.make_node("ReduceSum", ["w"], ["q"], keepdims=1),  # [n, 1]; w dies
        helper.make_node("Expand", ["q", "narrow"], ["b"]),  # [n, 1024], a's shape; q dies
        helper.make_node("ReduceSum", ["b"], ["y"], keepdims=0),
    ], ["y"], {"wide": np.array([1, 2048], np.int64), "narrow": np.array([1, 1024], np.int64)},
        inputs=[("x", [batch, 1024])], stated=stated)  # fmt: skip


def test_a_reused_buffer_is_held_through_the_gap(tmp_path: Path) -> None:
    """With every shape known, onnxruntime's planner gives b the buffer a left: held from a to b."""
    graph = _load(_gap(tmp_path, 1, stated=True))
    # without reuse: p + w at the first Expand (or w + q) = 2 x 4 KiB + 4 bytes
    assert _runtime(graph) == 2 * KIB4 + 4
    # with it, a's buffer (4 KiB) stays beside p (4 bytes) and w (8 KiB); q then reuses p's buffer
    reused = liveness(graph, alias_views=True, in_place=True, reuse=True, count_inputs=False)
    assert reused.peak_bytes == 3 * KIB4 + 4
    assert reused.peak_op_type == "Expand"


def test_no_reuse_where_onnxruntime_cannot_prove_shapes_equal(tmp_path: Path) -> None:
    """A dynamic batch and no value_info in the file: the planner cannot tell b's shape is a's."""
    from auditor.graph import ShapeRequest

    stated = load_onnx(_gap(tmp_path, "n", stated=True), ShapeRequest(dims={"n": 1}))
    bare = load_onnx(_gap(tmp_path, "n", stated=False), ShapeRequest(dims={"n": 1}))
    for graph, peak in ((stated, 3 * KIB4 + 4), (bare, 2 * KIB4 + 4)):  # value_info names n: provably equal
        assert liveness(graph, alias_views=True, in_place=True, reuse=True, count_inputs=False).peak_bytes == peak


def test_constant_folding_moves_a_transposed_weight_to_the_weights(tmp_path: Path) -> None:
    """MatMul(x, Transpose(V)): onnxruntime computes the Transpose once, at session creation."""
    v = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    report, graph = audit_with_graph(_model(tmp_path, [
        helper.make_node("Transpose", ["V"], ["vt"]),
        helper.make_node("MatMul", ["x", "vt"], ["y"]),
    ], ["y"], {"V": v}, inputs=[("x", [1, 64])]))  # fmt: skip
    assert report.memory is not None
    rt = report.memory.runtime
    assert liveness(graph).peak_bytes == 64 * 64 * 4 + 2 * 64 * 4  # plain: vt is an activation
    assert rt.folded_bytes == v.nbytes
    assert rt.weights_bytes == 2 * v.nbytes  # V (its file copy) and vt
    assert rt.activation_arena_bytes == 64 * 4  # y only
    assert rt.prepacked_bytes == v.nbytes // 2  # vt is MatMul's B: packed, the original half counted


def _weights_model(tmp_path: Path) -> Path:
    """MatMul by W [64, 64] (16 KiB), a 3x3 Conv with K [8, 8, 3, 3] (2304 bytes), a Gather from E [100, 16]."""
    rng = np.random.default_rng(0)
    inits = {
        "W": rng.standard_normal((64, 64)).astype(np.float32),
        "K": rng.standard_normal((8, 8, 3, 3)).astype(np.float32),
        "E": rng.standard_normal((100, 16)).astype(np.float32),
    }
    return _model(tmp_path, [
        helper.make_node("MatMul", ["x", "W"], ["m"]),
        helper.make_node("Conv", ["img", "K"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Gather", ["E", "ids"], ["g"]),
    ], ["m", "c", "g"], inits, inputs=[("x", [1, 64]), ("img", [1, 8, 4, 4]), ("ids", [2], TensorProto.INT64)])  # fmt: skip


def test_runtime_terms_for_small_weights(tmp_path: Path) -> None:
    """Weights under malloc's 32 MiB: copies freed at creation stay resident (prepacked: half counted)."""
    report, _ = audit_with_graph(_weights_model(tmp_path))
    assert report.memory is not None
    rt = report.memory.runtime
    w, k, e = 64 * 64 * 4, 8 * 8 * 9 * 4, 100 * 16 * 4
    stored = w + k + e
    assert rt.weights_bytes == stored
    assert rt.largest_bytes == w
    assert rt.prepacked_bytes == w // 2  # W packed for MLAS; its freed original half counted
    assert rt.layout_bytes == 2 * k + k  # two more copies of the Conv weights, plus the largest
    assert rt.layout_peak_bytes == 2 * k + 2 * k
    # loading (W twice), the NCHWc rewrite, prepacking beside the rewrite's copies: the first is largest
    assert rt.creation_bytes == stored + max(w, 4 * k, 3 * k + w // 2) == stored + w
    # outputs m [1, 64], c [1, 8, 4, 4], g [2, 16] are live together in the first run; none in the pattern
    assert rt.activation_arena_bytes == (64 + 128 + 32) * 4
    assert rt.pattern_bytes == 0
    assert rt.running_bytes == stored + w // 2 + 3 * k + rt.activation_arena_bytes
    assert rt.peak_bytes == SESSION_FIXED_BYTES + max(rt.creation_bytes, rt.running_bytes)


def test_runtime_terms_for_large_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above malloc's threshold (lowered here to 10000 bytes) freed originals leave the process."""
    monkeypatch.setattr(memory, "MALLOC_KEEPS_BYTES", 10_000)
    report, _ = audit_with_graph(_weights_model(tmp_path))
    assert report.memory is not None
    rt = report.memory.runtime
    w, k = 64 * 64 * 4, 8 * 8 * 9 * 4
    stored = rt.weights_bytes
    assert rt.prepacked_bytes == 0  # W (16 KiB) is over the threshold: unmapped once packed
    assert rt.layout_bytes == 2 * k + k  # K (2304 bytes) is still under it
    # prepacking W holds it beside its packed copy for a moment
    assert rt.creation_bytes == stored + max(w, 4 * k, 3 * k + w)


def test_dominant_names_the_term(tmp_path: Path) -> None:
    """A model of a few KiB is dominated by the fixed cost of its session."""
    report, _ = audit_with_graph(_weights_model(tmp_path))
    assert report.memory is not None
    assert report.memory.runtime.dominant == "the fixed cost of the session"


# ---- against onnxruntime ---------------------------------------------------------------------

BIG = 16 * MIB  # elements: 64 MiB of float32


def test_runtime_estimate_within_25_percent_of_measured(tmp_path: Path) -> None:
    """x [1] expanded to 64 MiB, Relu (in place), Sin (a second 64 MiB), summed to a scalar.

    Estimate: two 64 MiB tensors live at the Sin, kept in the arena by the first run, plus the
    memory-pattern block of the same two from the second run on: 256 MiB over the session.
    """
    pytest.importorskip("onnxruntime")
    from auditor.measure import measure

    path = _model(tmp_path, [
        helper.make_node("Expand", ["x", "dims"], ["big"]),
        helper.make_node("Relu", ["big"], ["r"]),
        helper.make_node("Sin", ["r"], ["s"]),
        helper.make_node("ReduceSum", ["s"], ["y"], keepdims=0),
    ], ["y"], {"dims": np.array([BIG], np.int64)}, inputs=[("x", [1])])  # fmt: skip
    report, graph = audit_with_graph(path)
    assert report.memory is not None
    rt = report.memory.runtime
    assert rt.activation_arena_bytes == rt.pattern_bytes == 2 * 4 * BIG  # r and s at the Sin
    assert rt.dominant == "activations (the arena of the first run plus the memory-pattern block)"
    measured = measure(path, run_inputs(graph), runs=1, warmup=1, timeout_s=60)
    ratio = rt.peak_bytes / measured.peak_bytes
    assert 0.75 <= ratio <= 1.25, (
        f"estimate {rt.peak_bytes / MIB:.1f} MiB vs measured {measured.peak_bytes / MIB:.1f} MiB (ratio {ratio:.2f})"
    )
