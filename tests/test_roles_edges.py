"""The edges of the counting rules, found by a mutation-testing run (see README, "Tests that can
fail"): loops that stop themselves, scans, slices on other axes and with steps, splits without
sizes, gathers on other axes, routers whose k is known at run time, functions inside loops,
empty branches. Models are built with onnx.helper and run in onnxruntime; the numbers are
worked out by hand from the shapes in each test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.analyses.usage import BranchChoice, LoopInfo
from auditor.errors import AuditError
from test_roles import BOOL, FLOAT, INT64, build, ints, vi, w


def _loop_body(nodes: list[onnx.NodeProto], cond_out: str = "c_out", extra_inits: list | None = None) -> onnx.GraphProto:
    """A Loop body over h [1, 4]: the given nodes, which must produce ``cond_out`` and h_out."""
    return helper.make_graph(
        nodes, "body",
        [vi("i", INT64, []), vi("c_in", BOOL, []), vi("h", FLOAT, [1, 4])],
        [vi(cond_out, BOOL, []), vi("h_out", FLOAT, [1, 4])],
        extra_inits or [],
    )  # fmt: skip


def _loop_model(tmp_path: Path, body: onnx.GraphProto, m: onnx.TensorProto | None, cond: onnx.TensorProto | None,
                inputs: list | None = None, feeds: dict | None = None) -> Path:  # fmt: skip
    inits = [w("W", (4, 4))] + [t for t in (m, cond) if t is not None]
    loop_inputs = [m.name if m is not None else "n", cond.name if cond is not None else "", "x"]
    nodes = [helper.make_node("Loop", loop_inputs, ["y"], body=body, name="loop")]
    feeds = {"x": np.ones((1, 4), np.float32), **(feeds or {})}
    return build(tmp_path, nodes, [vi("x", FLOAT, [1, 4])] + (inputs or []), [vi("y", FLOAT, [1, 4])], inits, feeds=feeds)


MATMUL = helper.make_node("MatMul", ["h", "W"], ["h_out"])


def test_loop_that_computes_its_own_stop_condition(tmp_path: Path) -> None:
    """The body sets cond = iter < 2: the trip count is data-dependent for the auditor."""
    body = _loop_body([helper.make_node("Less", ["i", "two"], ["c_out"]), MATMUL],
                      extra_inits=[numpy_helper.from_array(np.asarray(2, np.int64), "two")])  # fmt: skip
    report = auditor.audit(_loop_model(tmp_path, body, ints("M", 3), numpy_helper.from_array(np.asarray(True), "keep")))
    assert report.loops == (LoopInfo("loop", "Loop", None, "the body computes its own stop condition"),)
    assert report.counts.applied_params is None and report.counts.applied_params_lower_bound == 16
    finding = next(f for f in report.findings if f.code == "AUD105")
    assert "loop" in finding.evidence["loops"] and "stop condition" in finding.message


def test_loop_whose_body_returns_a_constant_true(tmp_path: Path) -> None:
    body = _loop_body([helper.make_node("Identity", ["yes"], ["c_out"]), MATMUL],
                      extra_inits=[numpy_helper.from_array(np.asarray(True), "yes")])  # fmt: skip
    report = auditor.audit(_loop_model(tmp_path, body, ints("M", 3), None))
    assert report.loops == (LoopInfo("loop", "Loop", 3, ""),) and report.counts.applied_params == 48


@pytest.mark.parametrize("m, cond, trip", [(0, True, 0), (3, False, 0)])
def test_loop_that_never_runs(tmp_path: Path, m: int, cond: bool, trip: int) -> None:
    """M = 0, or a start condition of False: the body runs zero times; W is applied 0 times."""
    body = _loop_body([helper.make_node("Identity", ["c_in"], ["c_out"]), MATMUL])
    path = _loop_model(tmp_path, body, ints("M", m), numpy_helper.from_array(np.asarray(cond), "start"))
    report = auditor.audit(path)
    assert [loop.trip_count for loop in report.loops] == [trip]
    assert report.counts.applied_params == 0 and report.shared == ()


def test_loop_condition_given_at_run_time(tmp_path: Path) -> None:
    body = _loop_body([helper.make_node("Identity", ["c_in"], ["c_out"]), MATMUL])
    nodes_path = tmp_path / "m.onnx"
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "go", "x"], ["y"], body=body, name="loop")], "g",
        [vi("x", FLOAT, [1, 4]), vi("go", BOOL, [])], [vi("y", FLOAT, [1, 4])], [w("W", (4, 4)), ints("M", 3)],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), nodes_path)
    report = auditor.audit(nodes_path)
    assert report.loops == (LoopInfo("loop", "Loop", None, "the loop condition is computed at run time"),)


def test_loop_with_a_float_trip_count(tmp_path: Path) -> None:
    """onnxruntime refuses a float M, but a file may hold one: the trip count is not trusted."""
    body = _loop_body([helper.make_node("Identity", ["c_in"], ["c_out"]), MATMUL])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y"], body=body, name="loop")], "g",
        [vi("x", FLOAT, [1, 4])], [vi("y", FLOAT, [1, 4])],
        [w("W", (4, 4)), numpy_helper.from_array(np.asarray(3.0, np.float32), "M")],
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    report = auditor.audit(path)
    assert report.loops == (LoopInfo("loop", "Loop", None, "the trip count M is not an integer (float32)"),)


def _scan_model(tmp_path: Path, x_shape: list, axes: list[int] | None, states: bool = True) -> Path:
    """Scan over X reading W [4, 4] per step; with a state (an accumulator) or without."""
    if states:
        body = helper.make_graph(
            [helper.make_node("MatMul", ["x_t", "W"], ["p"]), helper.make_node("Add", ["s_in", "p"], ["s_out"]),
             helper.make_node("Identity", ["s_out"], ["y_t"])],
            "body", [vi("s_in", FLOAT, [1, 4]), vi("x_t", FLOAT, [1, 4])],
            [vi("s_out", FLOAT, [1, 4]), vi("y_t", FLOAT, [1, 4])],
        )  # fmt: skip
        inputs = ["s0", "X"]
        outputs = ["s_final", "ys"]
    else:
        body = helper.make_graph([helper.make_node("MatMul", ["x_t", "W"], ["y_t"])], "body",
                                 [vi("x_t", FLOAT, [1, 4])], [vi("y_t", FLOAT, [1, 4])])  # fmt: skip
        inputs, outputs = ["X"], ["ys"]
    attrs = {"num_scan_inputs": 1, "body": body}
    if axes is not None:
        attrs["scan_input_axes"] = axes
    nodes = [helper.make_node("Scan", inputs, outputs, name="scan", **attrs)]
    graph_inputs = [vi("X", FLOAT, x_shape)] + ([vi("s0", FLOAT, [1, 4])] if states else [])
    graph = helper.make_graph(nodes, "g", graph_inputs, [vi(o, FLOAT, None) for o in outputs], [w("W", (4, 4))])
    path = tmp_path / "scan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return path


@pytest.mark.parametrize(
    "shape, axes, states, trip",
    [([5, 1, 4], None, True, 5), ([1, 6, 4], [1], True, 6), ([1, 6, 4], [-2], True, 6), ([7, 1, 4], None, False, 7),
     (["T", 1, 4], None, True, None)],
)  # fmt: skip
def test_scan_lengths(tmp_path: Path, shape: list, axes: list[int] | None, states: bool, trip: int | None) -> None:
    report = auditor.audit(_scan_model(tmp_path, shape, axes, states))
    assert [loop.trip_count for loop in report.loops] == [trip]
    if trip is None:
        assert report.loops[0].reason == "the scanned sequence length is dynamic"
        assert report.counts.applied_params is None
    else:
        assert report.counts.applied_params == 16 * trip


def _slices(tmp_path: Path, weight: tuple[int, ...], slices: list[list[str]], inits: list, opset: int = 18,
            slice_attrs: list[dict] | None = None) -> auditor.Report:  # fmt: skip
    """W of ``weight`` shape, each Slice (its inputs after W, or attributes) feeding a ReduceSum."""
    nodes = []
    for i, bounds in enumerate(slices):
        attrs = (slice_attrs or [{}] * len(slices))[i]
        nodes.append(helper.make_node("Slice", ["W", *bounds], [f"s{i}"], **attrs))
        nodes.append(helper.make_node("Neg", [f"s{i}"], [f"y{i}"]))
    path = build(tmp_path, nodes, [], [vi(f"y{i}", FLOAT, None) for i in range(len(slices))], [w("W", weight)] + inits,
                 opset=opset, feeds={})  # fmt: skip
    return auditor.audit(path)


def test_slices_on_the_second_axis_overlap(tmp_path: Path) -> None:
    """W [4, 8]: columns 0:3 and 2:5: applied 12 + 12 = 24, covered 20 (column 2 twice)."""
    inits = [ints("a0", [0]), ints("a3", [3]), ints("a2", [2]), ints("a5", [5]), ints("ax1", [1])]
    report = _slices(tmp_path, (4, 8), [["a0", "a3", "ax1"], ["a2", "a5", "ax1"]], inits)
    assert report.counts.applied_params == 24
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", 1.2)]


def test_slices_without_axes_and_with_steps(tmp_path: Path) -> None:
    """W [4, 4]: rows 0:2 and 2:4 (three inputs, default axes) and, from W2, rows 0 and 2
    (step 2) and rows 1 and 3: all disjoint, applied once each, nothing shared."""
    inits = [ints("z", [0]), ints("two", [2]), ints("four", [4]), ints("one", [1]), ints("ax0", [0])]
    report = _slices(tmp_path, (4, 4), [["z", "two"], ["two", "four"]], inits)
    assert report.counts.applied_params == 16 and report.shared == ()
    step_dir = tmp_path / "steps"
    step_dir.mkdir()
    report = _slices(step_dir, (4, 4), [["z", "four", "ax0", "two"], ["one", "four", "ax0", "two"]], inits)
    assert report.counts.applied_params == 16 and report.shared == ()


def test_slice_attributes_of_opset_9(tmp_path: Path) -> None:
    report = _slices(tmp_path, (4, 4), [[], []], [], opset=9,
                     slice_attrs=[{"starts": [0], "ends": [2], "axes": [0]}, {"starts": [2], "ends": [4], "axes": [0]}])  # fmt: skip
    assert report.counts.applied_params == 16 and report.shared == ()


def test_negative_axes_count_like_positive_ones(tmp_path: Path) -> None:
    """Slice rows 0:2 twice of W [4, 4] with axes [-2]: 8 elements applied twice."""
    inits = [ints("z", [0]), ints("two", [2]), ints("neg", [-2])]
    report = _slices(tmp_path, (4, 4), [["z", "two", "neg"], ["z", "two", "neg"]], inits)
    assert report.counts.applied_params == 16
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", 2.0)]


def test_slices_on_two_axes_cover_their_union(tmp_path: Path) -> None:
    """W [4, 4]: rows 0:2 (8) and columns 0:2 (8) overlap in a 2x2 corner: covered 12."""
    inits = [ints("z", [0]), ints("two", [2]), ints("ax0", [0]), ints("ax1", [1])]
    report = _slices(tmp_path, (4, 4), [["z", "two", "ax0"], ["z", "two", "ax1"]], inits)
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", round(16 / 12, 3))]


def test_slice_of_a_slice_reads_the_right_rows(tmp_path: Path) -> None:
    """W [10, 4]: s = rows 2:8; rows 0:3 of s are rows 2:5 of W; a second Slice reads rows 2:5
    directly: the same 12 elements twice, so 24 applied over 12 covered."""
    nodes = [
        helper.make_node("Slice", ["W", "two", "eight"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "three"], ["ss"]),
        helper.make_node("Slice", ["W", "two", "five"], ["t"]),
        helper.make_node("Add", ["ss", "t"], ["y"]),
    ]
    inits = [w("W", (10, 4)), ints("two", [2]), ints("eight", [8]), ints("zero", [0]), ints("three", [3]), ints("five", [5])]
    report = auditor.audit(build(tmp_path, nodes, [], [vi("y", FLOAT, None)], inits, feeds={}))
    assert report.counts.applied_params == 24
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", 2.0)]


def test_slice_after_a_transpose_counts_its_elements(tmp_path: Path) -> None:
    """W [4, 6]: Transpose then rows 0:3 of W^T (12 elements), and rows 0:2 of W (12): the
    layouts differ, so only counts are known: 24 over 24, nothing claimed shared."""
    nodes = [
        helper.make_node("Transpose", ["W"], ["wt"], perm=[1, 0]),
        helper.make_node("Slice", ["wt", "zero", "three"], ["a"]),
        helper.make_node("Slice", ["W", "zero", "two"], ["b"]),
        helper.make_node("Neg", ["a"], ["ya"]),
        helper.make_node("Neg", ["b"], ["yb"]),
    ]
    inits = [w("W", (4, 6)), ints("zero", [0]), ints("three", [3]), ints("two", [2])]
    report = auditor.audit(build(tmp_path, nodes, [], [vi("ya", FLOAT, None), vi("yb", FLOAT, None)], inits, feeds={}))
    assert report.counts.applied_params == 24 and report.shared == ()


@pytest.mark.parametrize(
    "opset, attrs, inputs, sizes",
    [(18, {"axis": 1, "num_outputs": 3}, [], [3, 3, 1]),  # equal split on axis 1, the last part smaller
     (18, {"num_outputs": 2}, [], None),  # no axis attribute: axis 0
     (11, {"axis": 1, "split": [2, 5]}, [], [2, 5])],  # opset 11: sizes as an attribute
)  # fmt: skip
def test_split_variants(tmp_path: Path, opset: int, attrs: dict, inputs: list, sizes: list | None) -> None:
    """W [4, 7] (or [6, 7] split on rows); the first part is applied twice, the others once."""
    shape = (4, 7) if attrs.get("axis") == 1 else (6, 7)
    outputs = [f"p{i}" for i in range(attrs.get("num_outputs", len(sizes or [])))]
    nodes = [helper.make_node("Split", ["W", *inputs], outputs, **attrs)]
    nodes += [helper.make_node("Neg", [p], [f"y{p}"]) for p in outputs]
    nodes.append(helper.make_node("Neg", ["p0"], ["again"]))
    graph = helper.make_graph(nodes, "g", [], [vi(f"y{p}", FLOAT, None) for p in outputs] + [vi("again", FLOAT, None)],
                              [w("W", shape)])  # fmt: skip
    path = tmp_path / "split.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9 if opset > 11 else 6), path)
    report = auditor.audit(path)
    first = (4 * sizes[0]) if attrs.get("axis") == 1 else (3 * 7)  # [6, 7] in two halves: 3 rows
    total = 28 if attrs.get("axis") == 1 else 42
    assert report.counts.applied_params == total + first
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", round((total + first) / total, 3))]


def test_gather_on_the_second_axis(tmp_path: Path) -> None:
    """Gather(T [4, 10], [1, 3], axis=1) reads 2 columns: 8 elements; with axis -1 the same."""
    for axis in (1, -1):
        folder = tmp_path / f"axis{axis}"
        folder.mkdir()
        nodes = [helper.make_node("Gather", ["T", "cols"], ["g"], axis=axis), helper.make_node("Neg", ["g"], ["y"])]
        path = build(folder, nodes, [], [vi("y", FLOAT, None)], [w("T", (4, 10)), ints("cols", [1, 3])], feeds={})
        assert auditor.audit(path).counts.applied_params == 8


def test_router_k_known_only_at_run_time(tmp_path: Path) -> None:
    """TopK's k is an input: k of 4 is unknown. Active stays unique (nothing can be subtracted
    for sure); applied counts all 4 experts, its lower bound one."""
    nodes = [
        helper.make_node("MatMul", ["x", "R"], ["logits"]),
        helper.make_node("TopK", ["logits", "k"], ["top_values", "top_experts"], axis=-1),
        helper.make_node("Gather", ["E", "top_experts"], ["chosen"], axis=0),
        helper.make_node("Unsqueeze", ["x", "axes"], ["x4"]),
        helper.make_node("MatMul", ["x4", "chosen"], ["y"]),
    ]
    inits = [w("R", (8, 4)), w("E", (4, 8, 8)), ints("axes", [1, 2])]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [1, 8]), vi("k", INT64, [1])], [vi("y", FLOAT, None)], inits,
                 feeds={"x": np.ones((1, 8), np.float32), "k": np.array([2], np.int64)})  # fmt: skip
    report = auditor.audit(path)
    assert [(b.n, b.k) for b in report.experts] == [(4, None)]
    assert report.counts.active_params == report.counts.unique_params == 32 + 256
    assert report.counts.applied_params == 32 + 256 and report.counts.applied_params_lower_bound == 32 + 64


def test_if_with_an_empty_branch(tmp_path: Path) -> None:
    """then: x @ W (16 parameters); else: Identity(x). The lightest branch applies nothing."""
    then = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["t"])], "then", [], [vi("t", FLOAT, [1, 4])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", FLOAT, [1, 4])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="maybe")]  # fmt: skip
    inits = [w("W", (4, 4)), numpy_helper.from_array(np.asarray(0.0, np.float32), "zero")]
    report = auditor.audit(build(tmp_path, nodes, [vi("x", FLOAT, [1, 4])], [vi("y", FLOAT, [1, 4])], inits,
                                 feeds={"x": np.ones((1, 4), np.float32)}))  # fmt: skip
    assert report.counts.applied_params == 16 and report.counts.applied_params_lower_bound == 0
    assert report.branches == (BranchChoice("maybe", (16, 0)),)


def _function(name: str, body: list[onnx.NodeProto], inputs: list[str], outputs: list[str]) -> onnx.FunctionProto:
    return helper.make_function("local", name, inputs, outputs, body, [helper.make_opsetid("", 18)])


def test_function_called_inside_a_loop(tmp_path: Path) -> None:
    """A local function holds its own weight V [4, 4] as a Constant and applies it; a Loop of 3
    calls it once per iteration: 3 x 16 applied."""
    v = numpy_helper.from_array(np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32), "v")
    fn = _function("apply_v", [helper.make_node("Constant", [], ["V"], value=v), helper.make_node("MatMul", ["a", "V"], ["b"])],
                   ["a"], ["b"])  # fmt: skip
    body = _loop_body([helper.make_node("Identity", ["c_in"], ["c_out"]),
                       helper.make_node("apply_v", ["h"], ["h_out"], domain="local")])  # fmt: skip
    graph = helper.make_graph([helper.make_node("Loop", ["M", "", "x"], ["y"], body=body, name="loop")], "g",
                              [vi("x", FLOAT, [1, 4])], [vi("y", FLOAT, [1, 4])], [ints("M", 3)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
                              functions=[fn], ir_version=9)  # fmt: skip
    path = tmp_path / "fn.onnx"
    onnx.save(model, path)
    report = auditor.audit(path)
    assert report.counts.stored_params == 16 and report.counts.applied_params == 48


def test_recursive_function_is_refused_as_invalid(tmp_path: Path) -> None:
    fn = _function("again", [helper.make_node("again", ["a"], ["b"], domain="local")], ["a"], ["b"])
    graph = helper.make_graph([helper.make_node("again", ["x"], ["y"], domain="local"),
                               helper.make_node("MatMul", ["y", "W"], ["z"])], "g",
                              [vi("x", FLOAT, [1, 4])], [vi("z", FLOAT, [1, 4])], [w("W", (4, 4))])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
                              functions=[fn], ir_version=9)  # fmt: skip
    path = tmp_path / "rec.onnx"
    onnx.save(model, path)
    with pytest.raises(AuditError) as refused:
        auditor.audit(path)
    assert refused.value.slug == "invalid-model" and "'again' calls itself" in str(refused.value)


def test_two_element_weights_count_and_boolean_masks_do_not(tmp_path: Path) -> None:
    nodes = [helper.make_node("Mul", ["x", "pair"], ["a"]), helper.make_node("Where", ["mask", "a", "x"], ["y"])]
    inits = [w("pair", (2,)), numpy_helper.from_array(np.array([True, False]), "mask")]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [2])], [vi("y", FLOAT, [2])], inits, feeds={"x": np.ones(2, np.float32)})
    report = auditor.audit(path)
    assert report.counts.stored_params == 2 and report.counts.by_dtype.keys() == {"float32"}


def test_unknown_op_in_the_default_domain_and_scalars(tmp_path: Path) -> None:
    """An op name no schema knows, in the default domain, reads W [4] and a one-element scale:
    W is listed under its op as ai.onnx:NoSuchOp, the scalar is not listed."""
    nodes = [helper.make_node("NoSuchOp", ["x", "W", "scale"], ["y"])]
    inits = [w("W", (4,)), numpy_helper.from_array(np.asarray([0.5], np.float32), "scale")]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [4])], [vi("y", FLOAT, None)], inits)
    report = auditor.audit(path)
    assert [(u.tensor, u.ops) for u in report.unknown_roles] == [("W", ("ai.onnx:NoSuchOp",))]


def test_gather_with_negative_scalar_and_default_axis(tmp_path: Path) -> None:
    """Gather(T [10, 4], [-1, 0, 2]) without an axis attribute: rows 9, 0, 2 (12 elements); a
    second Gather of the scalar index 9 reads row 9 again (4 elements): 16 applied. A scalar index
    drops the axis, so where that row sits is not followed: the reads count, not their overlap."""
    nodes = [
        helper.make_node("Gather", ["T", "rows"], ["g"]),
        helper.make_node("Gather", ["T", "nine"], ["h"]),
        helper.make_node("Neg", ["g"], ["y"]),
        helper.make_node("Neg", ["h"], ["z"]),
    ]
    inits = [w("T", (10, 4)), ints("rows", [-1, 0, 2]), numpy_helper.from_array(np.asarray(9, np.int64), "nine")]
    report = auditor.audit(build(tmp_path, nodes, [], [vi("y", FLOAT, None), vi("z", FLOAT, None)], inits, feeds={}))
    assert report.counts.applied_params == 16 and report.shared == ()


def test_slice_of_a_slice_on_another_axis(tmp_path: Path) -> None:
    """W [10, 4]: rows 2:8, then columns 0:2 of that: 12 elements; a direct Slice of rows 2:8 adds
    24 more over the same rows: 36 applied, 24 covered."""
    nodes = [
        helper.make_node("Slice", ["W", "two", "eight"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two", "one"], ["ss"]),
        helper.make_node("Slice", ["W", "two", "eight"], ["t"]),
        helper.make_node("Neg", ["ss"], ["y"]),
        helper.make_node("Neg", ["t"], ["z"]),
    ]
    inits = [w("W", (10, 4)), ints("two", [2]), ints("eight", [8]), ints("zero", [0]), ints("one", [1])]
    report = auditor.audit(build(tmp_path, nodes, [], [vi("y", FLOAT, None), vi("z", FLOAT, None)], inits, feeds={}))
    assert report.counts.applied_params == 36
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", 1.5)]


def test_covered_elements_directly() -> None:
    """The union of parts, by hand: no reads, one cut axis, two cut axes (mask and, above the
    mask limit, the capped sum), and a sparse tensor's stored values."""
    from auditor.analyses import usage
    from auditor.graph import Use
    from auditor.roles import Role

    def read(axes: tuple, elements: int) -> usage.Read:
        return usage.Read(Use("n", 0), Role.WEIGHT, elements, axes)

    shape = (4, 4)
    assert usage.covered_elements([], shape) == 0
    rows = [read((range(0, 2), None), 8), read((range(1, 3), None), 8)]
    assert usage.covered_elements(rows, shape) == 12 and isinstance(usage.covered_elements(rows, shape), int)
    corner = [read((range(0, 2), None), 8), read((None, range(0, 2)), 8)]
    assert usage.covered_elements(corner, shape) == 12
    assert usage.covered_elements(corner, shape, stored=8) == 6  # half the elements stored
    limit = usage._MASK_LIMIT
    try:
        usage._MASK_LIMIT = 4  # too big to mask: the sum, capped at the tensor
        assert usage.covered_elements(corner, shape) == 16
    finally:
        usage._MASK_LIMIT = limit
