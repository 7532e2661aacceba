"""Counts that depend on how each op reads its inputs: branches, slices, experts, generated
weights, initial values, quantized contrib ops, ops the vocabulary does not know.

Every model is built here with onnx.helper and run once in onnxruntime (it must be a model that
really runs); every expected number is hand arithmetic from the shapes written in the test.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.roles import Role

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
RNG = np.random.default_rng(42)


def w(name: str, shape: tuple[int, ...], fill: float | None = None) -> onnx.TensorProto:
    values = np.full(shape, fill, np.float32) if fill is not None else RNG.standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(values, name)


def ints(name: str, values: object) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def vi(name: str, elem: int = FLOAT, shape: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def build(tmp_path: Path, nodes, inputs, outputs, inits, name="m.onnx", opset=18, feeds=None, domains=None) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in (domains or [])]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=9)
    path = tmp_path / name
    onnx.save(model, path)
    if feeds is not None:  # the model must really run
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    return path


def two_networks(tmp_path: Path, cond_value: bool | None) -> Path:
    """A voice-activity-style model: one top-level If holding two alternative networks.

    then: x @ A (8x16) @ B (16x4): 128 + 64 = 192 parameters; else: x @ C (8x4): 32 parameters.
    The condition is computed from the input (``cond_value`` None) or a stored constant.
    """
    then = helper.make_graph(
        [helper.make_node("MatMul", ["x", "A"], ["h"]), helper.make_node("MatMul", ["h", "B"], ["t_out"])],
        "then", [], [vi("t_out", FLOAT, [1, 4])],
    )  # fmt: skip
    other = helper.make_graph([helper.make_node("MatMul", ["x", "C"], ["e_out"])], "else", [], [vi("e_out", FLOAT, [1, 4])])
    inits = [w("A", (8, 16)), w("B", (16, 4)), w("C", (8, 4))]
    nodes = []
    if cond_value is None:
        nodes += [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"])]
        inits.append(numpy_helper.from_array(np.asarray(0.0, np.float32), "zero"))
    else:
        inits.append(numpy_helper.from_array(np.asarray(cond_value), "c"))
    nodes.append(helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="rate_switch"))
    return build(tmp_path, nodes, [vi("x", FLOAT, [1, 8])], [vi("y", FLOAT, [1, 4])], inits,
                 feeds={"x": np.ones((1, 8), np.float32)})  # fmt: skip


def test_if_counts_the_heaviest_branch_and_the_lightest_as_lower_bound(tmp_path: Path) -> None:
    report = auditor.audit(two_networks(tmp_path, None))
    assert report.counts.stored_params == 192 + 32
    assert report.counts.applied_params == 192  # one forward runs one network, not both (224)
    assert report.counts.applied_params_lower_bound == 32
    assert [(b.node, b.branches) for b in report.branches] == [("rate_switch", (192, 32))]
    finding = next(f for f in report.findings if f.slug == "branch-dependent-count")
    assert finding.code == "AUD109" and "rate_switch" in finding.message
    assert report.shared == ()


@pytest.mark.parametrize("cond, applied", [(True, 192), (False, 32)])
def test_if_on_a_constant_condition_counts_the_branch_it_takes(tmp_path: Path, cond: bool, applied: int) -> None:
    report = auditor.audit(two_networks(tmp_path, cond))
    assert report.counts.applied_params == report.counts.applied_params_lower_bound == applied
    assert report.branches == ()


def test_disjoint_row_slices_count_the_weight_once(tmp_path: Path) -> None:
    """An LSTM-style weight W [12, 8] cut into three row slices (gate groups 0:4, 4:8, 8:12),
    each applied by its own MatMul: 96 parameters applied once, not 3 x 96, and not shared."""
    nodes = []
    for i, (start, end) in enumerate([(0, 4), (4, 8), (8, 12)]):
        nodes += [
            helper.make_node("Slice", ["W", f"s{i}", f"e{i}", "axis0"], [f"w{i}"]),
            helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]),
        ]
    inits = [w("W", (12, 8)), ints("axis0", [0])]
    for i, (start, end) in enumerate([(0, 4), (4, 8), (8, 12)]):
        inits += [ints(f"s{i}", [start]), ints(f"e{i}", [end])]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [2, 4])], [vi(f"y{i}", FLOAT, None) for i in range(3)], inits,
                 feeds={"x": np.ones((2, 4), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.stored_params == 96
    assert report.counts.applied_params == 96
    assert report.shared == ()


def test_split_parts_and_overlapping_slices(tmp_path: Path) -> None:
    """W [6, 4] (24): Split into rows 0:2, 2:6 (8 + 16, each applied once) plus a Slice of rows
    1:3 (8 elements) applied twice: applied 8 + 16 + 2 x 8 = 40; rows 1 and 2 are applied more
    than once, so W is shared; it covers all 24 elements, so 40 / 24 applications."""
    nodes = [
        helper.make_node("Split", ["W", "sizes"], ["top", "bottom"], axis=0),
        helper.make_node("Slice", ["W", "one", "three", "axis0"], ["mid"]),
        helper.make_node("MatMul", ["top", "x"], ["a"]),
        helper.make_node("MatMul", ["bottom", "x"], ["b"]),
        helper.make_node("MatMul", ["mid", "x"], ["c"]),
        helper.make_node("MatMul", ["mid", "x"], ["d"]),
    ]
    inits = [w("W", (6, 4)), ints("sizes", [2, 4]), ints("one", [1]), ints("three", [3]), ints("axis0", [0])]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [4, 1])], [vi(n, FLOAT, None) for n in "abcd"], inits,
                 feeds={"x": np.ones((4, 1), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.applied_params == 40
    assert [(s.tensor, s.uses, s.applications) for s in report.shared] == [("W", 4, round(40 / 24, 3))]


def test_gather_on_constant_indices_reads_those_rows_and_is_no_embedding(tmp_path: Path) -> None:
    """Gather(T [10, 4], [1, 3, 5]) reads 3 rows: 12 applied; constant indices are no lookup."""
    nodes = [helper.make_node("Gather", ["T", "rows"], ["g"], axis=0), helper.make_node("Add", ["g", "x"], ["y"])]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [3, 4])], [vi("y", FLOAT, [3, 4])], [w("T", (10, 4)), ints("rows", [1, 3, 5])],
                 feeds={"x": np.ones((3, 4), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.applied_params == 12
    assert report.counts.embedding_params == 0


def test_gather_on_indices_computed_from_constants_is_no_embedding(tmp_path: Path) -> None:
    """Gather(T, Range(0, 4, 1)): indices computed at run time, but not from the inputs:
    the whole table is applied, and it is not a lookup of the model's inputs."""
    nodes = [
        helper.make_node("Range", ["start", "limit", "delta"], ["idx"]),
        helper.make_node("Gather", ["T", "idx"], ["g"], axis=0),
        helper.make_node("Add", ["g", "x"], ["y"]),
    ]
    inits = [w("T", (10, 4)), ints("start", 0), ints("limit", 4), ints("delta", 1)]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [4, 4])], [vi("y", FLOAT, [4, 4])], inits,
                 feeds={"x": np.ones((4, 4), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.embedding_params == 0
    assert report.counts.applied_params == 40


def test_gather_on_token_ids_is_an_embedding(tmp_path: Path) -> None:
    nodes = [helper.make_node("Gather", ["E", "ids"], ["y"], axis=0)]
    path = build(tmp_path, nodes, [vi("ids", INT64, [1, 3])], [vi("y", FLOAT, None)], [w("E", (10, 4))],
                 feeds={"ids": np.array([[1, 2, 3]], np.int64)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.embedding_params == 40 and report.counts.applied_params == 40


def test_stacked_expert_bank_counts_k_of_n(tmp_path: Path) -> None:
    """A router (x @ R [8, 4], TopK k=2) picks 2 of 4 experts from a bank E [4, 8, 8] by Gather:
    unique 32 + 256 = 288; active 288 - (4 - 2) x 64 = 160; applied the same. The Gather's
    indices derive from the input, yet the bank is no embedding table."""
    nodes = [
        helper.make_node("MatMul", ["x", "R"], ["logits"]),
        helper.make_node("TopK", ["logits", "k"], ["top_values", "top_experts"], axis=-1),
        helper.make_node("Gather", ["E", "top_experts"], ["chosen"], axis=0),  # [1, 2, 8, 8]
        helper.make_node("Unsqueeze", ["x", "axes"], ["x4"]),  # [1, 1, 1, 8]
        helper.make_node("MatMul", ["x4", "chosen"], ["y"]),
    ]
    inits = [w("R", (8, 4)), w("E", (4, 8, 8)), ints("k", [2]), ints("axes", [1, 2])]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [1, 8])], [vi("y", FLOAT, None)], inits,
                 feeds={"x": np.ones((1, 8), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    c = report.counts
    assert (c.unique_params, c.active_params, c.applied_params, c.embedding_params) == (288, 160, 160, 0)
    assert [(b.tensors, b.n, b.k, b.params_per_expert) for b in report.experts] == [(("E",), 4, 2, 64)]
    assert [f.code for f in report.findings] == ["AUD111"]


def test_dense_model_has_active_equal_unique(tmp_path: Path) -> None:
    report = auditor.audit(two_networks(tmp_path, True))
    assert report.counts.active_params == report.counts.unique_params and report.experts == ()


def test_generated_weights_count_in_applied(tmp_path: Path) -> None:
    """A CNN whose conv kernel is ConstantOfShape([4, 3, 3, 3]) * 0.02 at run time (108 values)
    and whose stored bias has 4: stored 4, generated 108, applied 4 + 108."""
    nodes = [
        helper.make_node("ConstantOfShape", ["kshape"], ["k0"], value=helper.make_tensor("v", FLOAT, [1], [1.0])),
        helper.make_node("Mul", ["k0", "scale"], ["kernel"]),
        helper.make_node("Conv", ["x", "kernel", "bias"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [ints("kshape", [4, 3, 3, 3]), numpy_helper.from_array(np.asarray(0.02, np.float32), "scale"), w("bias", (4,))]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [1, 3, 8, 8])], [vi("y", FLOAT, None)], inits,
                 feeds={"x": np.ones((1, 3, 8, 8), np.float32)})  # fmt: skip
    c = auditor.audit(path).counts
    assert (c.stored_params, c.generated_params, c.applied_params) == (4, 108, 112)


def test_merged_initial_values_count_once_per_weight_input(tmp_path: Path) -> None:
    """Three LayerNorms read one merged tensor of ones (as an exporter writes an untrained model)
    and one merged tensor of zeros; two more ones-tensors are stored separately. Torch would
    hold 3 + 3 LayerNorm weights and biases: unique 6 x 8 + 2 x 8 = 64. Nothing is a copy or a
    tie; one finding says the model looks untrained."""
    nodes = []
    x = "x"
    for i in range(3):
        nodes.append(helper.make_node("LayerNormalization", [x, "ones", "zeros"], [f"n{i}"], axis=-1))
        x = f"n{i}"
    nodes += [helper.make_node("Mul", [x, "ones_a"], ["m"]), helper.make_node("Mul", ["m", "ones_b"], ["y"])]
    inits = [w("ones", (8,), 1.0), w("zeros", (8,), 0.0), w("ones_a", (8,), 1.0), w("ones_b", (8,), 1.0)]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [2, 8])], [vi("y", FLOAT, [2, 8])], inits,
                 feeds={"x": np.ones((2, 8), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    c = report.counts
    assert (c.stored_params, c.unique_params, c.initial_value_tensors) == (32, 64, 4)
    assert report.duplicates == () and report.shared == () and report.shareable == ()
    assert [f.code for f in report.findings] == ["AUD110"]


def test_dynamic_quantize_lstm_weights_are_parameters(tmp_path: Path) -> None:
    """torch LSTM(8, 16) quantized by onnxruntime into com.microsoft DynamicQuantizeLSTM: int8 W
    [1, 8, 64] and R [1, 16, 64] plus float B [1, 128] are 1664 parameters, torch's own count
    (weight_ih 64x8 + weight_hh 64x16 + two biases of 64); scales and zero points are not."""
    torch = pytest.importorskip("torch")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 16).eval()
    float_path = tmp_path / "lstm.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lstm, (torch.randn(5, 1, 8),), str(float_path), dynamo=False, opset_version=18,
                          input_names=["x"], dynamic_axes={"x": {0: "seq", 1: "batch"}})  # fmt: skip
    path = tmp_path / "lstm_int8.onnx"
    quantize_dynamic(str(float_path), str(path), op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": np.ones((5, 1, 8), np.float32)})
    assert any(n.op_type == "DynamicQuantizeLSTM" for n in onnx.load(str(path)).graph.node)
    report = auditor.audit(path)
    expected = sum(p.numel() for p in lstm.parameters())
    assert report.counts.stored_params == report.counts.unique_params == expected == 1664
    assert report.counts.by_dtype["int8"].params == 8 * 64 + 16 * 64
    assert report.unknown_roles == ()


def test_tensors_of_unknown_ops_are_listed_never_dropped(tmp_path: Path) -> None:
    """An op of a domain the vocabulary does not know reads an int8 tensor and a float one: the
    float one counts as a parameter (as before), the int8 one does not; both are listed."""
    nodes = [helper.make_node("PackedThing", ["x", "Q", "F"], ["y"], domain="vendor.ops")]
    inits = [numpy_helper.from_array(RNG.integers(-100, 100, (4, 4)).astype(np.int8), "Q"), w("F", (4,))]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [1, 4])], [vi("y", FLOAT, None)], inits, domains=["vendor.ops"])
    report = auditor.audit(path)
    listed = {(u.tensor, u.dtype, u.ops, u.counted) for u in report.unknown_roles}
    assert listed == {("Q", "int8", ("vendor.ops:PackedThing",), False), ("F", "float32", ("vendor.ops:PackedThing",), True)}
    assert report.counts.stored_params == 4
    assert "AUD112" in {f.code for f in report.findings}


def test_loader_tags_every_input_with_its_role(tmp_path: Path) -> None:
    """Roles come from the vocabulary (MatMul's B is a weight, Reshape's shape is config) and the
    dataflow (a Gather on token ids is a lookup)."""
    from auditor.load.onnx_file import load_onnx

    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["e"], axis=0),
        helper.make_node("Reshape", ["e", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "W"], ["y"]),
    ]
    inits = [w("E", (10, 4)), w("W", (4, 2)), ints("shape", [-1, 4])]
    path = build(tmp_path, nodes, [vi("ids", INT64, [3])], [vi("y", FLOAT, None)], inits)
    model = load_onnx(path)
    roles = {node.op_type: node.roles for node in model.nodes.values()}
    assert roles == {"Gather": (Role.LOOKUP, Role.INDICES), "Reshape": (Role.VIEW, Role.CONFIG), "MatMul": (Role.DATA, Role.WEIGHT)}


def test_returned_weight_is_not_unused(tmp_path: Path) -> None:
    """W is read by no node but is a graph output (through an Identity): not unused. U is neither."""
    nodes = [helper.make_node("Identity", ["W"], ["w_out"]), helper.make_node("Add", ["x", "x"], ["y"])]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [4])], [vi("y", FLOAT, [4]), vi("w_out", FLOAT, [4, 4])],
                 [w("W", (4, 4)), w("U", (3, 3))], feeds={"x": np.ones(4, np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.unused_params == 9


def test_weight_in_a_loop_of_unknown_length_is_shared(tmp_path: Path) -> None:
    """W is read once inside a Loop whose trip count is an input: it runs an unknown number of
    times, so W is shared (applications unknown), and applied is unknown with 16 as lower bound."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("MatMul", ["h", "W"], ["h_out"])],
        "body",
        [vi("i", INT64, []), vi("c_in", BOOL, []), vi("h", FLOAT, [1, 4])],
        [vi("c_out", BOOL, []), vi("h_out", FLOAT, [1, 4])],
    )
    nodes = [helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)]
    path = build(tmp_path, nodes, [vi("n", INT64, []), vi("x", FLOAT, [1, 4])], [vi("y", FLOAT, [1, 4])], [w("W", (4, 4))],
                 feeds={"n": np.array(3, np.int64), "x": np.ones((1, 4), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.applied_params is None and report.counts.applied_params_lower_bound == 16
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", None)]


def test_scale_of_a_copy_is_relative_to_the_kept_tensor(tmp_path: Path) -> None:
    """A unused, B = 2A and C = 0.5A used: B is kept (used, first); A = 0.5 x B, C = 0.25 x B."""
    a = RNG.standard_normal((16, 8)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "B"], ["y1"]), helper.make_node("MatMul", ["x", "C"], ["y2"])]
    inits = [numpy_helper.from_array(a, "A"), numpy_helper.from_array(2 * a, "B"), numpy_helper.from_array(np.float32(0.5) * a, "C")]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [1, 16])], [vi("y1", FLOAT, None), vi("y2", FLOAT, None)], inits)
    report = auditor.audit(path)
    scales = {t: g.scale for g in report.duplicates for t in g.tensors[1:]}
    assert {g.tensors[0] for g in report.duplicates} == {"B"}
    assert scales == {"A": 0.5, "C": 0.25}


def test_huge_magnitudes_find_the_copy_and_print_no_warning(tmp_path: Path) -> None:
    """Values near 1e30 overflow float32 sums of squares: the scaled copy is still found and
    nothing reaches stderr with --quiet."""
    a = (RNG.standard_normal((16, 8)) * 1e30).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "A"], ["y1"]), helper.make_node("MatMul", ["x", "B"], ["y2"])]
    inits = [numpy_helper.from_array(a, "A"), numpy_helper.from_array(np.float32(0.5) * a, "B")]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [1, 16])], [vi("y1", FLOAT, None), vi("y2", FLOAT, None)], inits)
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "auditor.cli", str(path), "--quiet", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""
    report = auditor.audit(path)
    assert [(g.tensors, g.relation, g.scale) for g in report.duplicates] == [(("A", "B"), "scaled", 0.5)]


def test_reports_show_branches_experts_initial_values_and_unknown_roles(tmp_path: Path) -> None:
    """The JSON of each new case validates against the schema and carries the new sections; the
    HTML shows them with their numbers; the terminal shows the applied range and active count."""
    import json

    import jsonschema

    from auditor.report.html import render_html
    from auditor.report.json_report import render_json
    from auditor.report.terminal import render_terminal

    schema = json.loads((Path(auditor.__file__).parent / "report" / "report.schema.json").read_text(encoding="utf-8"))
    branch_dir, expert_dir = tmp_path / "branch", tmp_path / "experts"
    branch_dir.mkdir()
    expert_dir.mkdir()
    test_stacked_expert_bank_counts_k_of_n(expert_dir)
    branch = auditor.audit(two_networks(branch_dir, None))
    experts = auditor.audit(expert_dir / "m.onnx")
    for report in (branch, experts):
        jsonschema.validate(json.loads(render_json(report)), schema, cls=jsonschema.Draft202012Validator)
    doc = json.loads(render_json(experts))
    assert doc["counts"]["active_params"] == 160
    assert doc["experts"] == [{"tensors": ["E"], "router": doc["experts"][0]["router"], "n": 4, "k": 2, "params_per_expert": 64}]
    assert json.loads(render_json(branch))["branches"] == [{"node": "rate_switch", "branches": [192, 32]}]
    html = render_html(experts)
    assert 'id="experts"' in html and "2 of 4" in html and 'data-count="active"' in html
    html = render_html(branch)
    assert 'id="branches"' in html and 'id="applied-range"' in html and "rate_switch" in html
    assert "32-192" in render_terminal(branch)
    assert "active params" in render_terminal(experts)


def test_reading_only_the_shape_of_a_weight_is_no_use(tmp_path: Path) -> None:
    """W [4, 4] is applied by one MatMul; a Shape node reads only its shape: one use, not shared."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y"]),
        helper.make_node("Shape", ["W"], ["s"]),
        helper.make_node("Reshape", ["y", "s"], ["z"]),
    ]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [4, 4])], [vi("z", FLOAT, None)], [w("W", (4, 4))],
                 feeds={"x": np.ones((4, 4), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.applied_params == 16 and report.shared == ()


def test_a_topk_over_boxes_is_no_router(tmp_path: Path) -> None:
    """A detector keeps the 3 best of 10 boxes (TopK on scores), gathers their features and runs
    a box head W [4, 2]: one group of gathered rows, not a mixture of experts; W counts in full."""
    nodes = [
        helper.make_node("MatMul", ["feats", "S"], ["scores2d"]),
        helper.make_node("Squeeze", ["scores2d", "last"], ["scores"]),
        helper.make_node("TopK", ["scores", "k"], ["best", "keep"], axis=0),
        helper.make_node("Gather", ["feats", "keep"], ["kept"], axis=0),
        helper.make_node("MatMul", ["kept", "W"], ["y"]),
    ]
    inits = [w("S", (4, 1)), w("W", (4, 2)), ints("k", [3]), ints("last", [1])]
    path = build(tmp_path, nodes, [vi("feats", FLOAT, [10, 4])], [vi("y", FLOAT, None)], inits,
                 feeds={"feats": RNG.standard_normal((10, 4)).astype(np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.experts == () and report.counts.applied_params == 4 + 8 == report.counts.active_params


def test_an_audit_leaves_no_reference_cycles(tmp_path: Path) -> None:
    """The audit runs with the cyclic garbage collector paused (it would walk every node again
    and again); so it must not create cycles, or their memory is never given back. A model with
    a branch and a gather exercises the recursive evaluations and the dataflow pass."""
    import gc

    branch_dir, gather_dir = tmp_path / "branch", tmp_path / "gather"
    branch_dir.mkdir()
    gather_dir.mkdir()
    paths = [two_networks(branch_dir, None)]
    test_stacked_expert_bank_counts_k_of_n(gather_dir)
    paths.append(gather_dir / "m.onnx")
    for path in paths:
        auditor.audit(path)  # first run: imports and caches
    gc.collect()
    for path in paths:
        auditor.audit(path)
        assert gc.collect() == 0, path


def test_slice_bounds_known_only_at_run_time(tmp_path: Path) -> None:
    """Slice(W [8, 4], 0, n) with n an input reads at most the whole W: 32. Split(V [8, 4]) into
    two outputs of run-time sizes: an equal share each, 16 + 16 = 32, not 2 x 32."""
    nodes = [
        helper.make_node("Slice", ["W", "zero", "n", "axis0"], ["w_part"]),
        helper.make_node("MatMul", ["w_part", "x"], ["a"]),
        helper.make_node("Concat", ["n", "n"], ["sizes"], axis=0),
        helper.make_node("Split", ["V", "sizes"], ["v1", "v2"], axis=0),
        helper.make_node("MatMul", ["v1", "x"], ["b"]),
        helper.make_node("MatMul", ["v2", "x"], ["c"]),
    ]
    inits = [w("W", (8, 4)), w("V", (8, 4)), ints("zero", [0]), ints("axis0", [0])]
    path = build(tmp_path, nodes, [vi("n", INT64, [1]), vi("x", FLOAT, [4, 1])], [vi(o, FLOAT, None) for o in "abc"], inits,
                 feeds={"n": np.array([4], np.int64), "x": np.ones((4, 1), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.applied_params == 32 + 32
    assert report.shared == ()


def test_split_parts_sit_where_the_sizes_put_them(tmp_path: Path) -> None:
    """Split(W [6, 4], [2, 4]) gives rows 0:2 and 2:6; a Slice reads rows 0:2 again. Applied
    8 + 16 + 8 = 32 over the 24 elements covered: W is shared, 32/24 applications per element.
    (Parts placed one row off would cover a seventh row.)"""
    nodes = [
        helper.make_node("Split", ["W", "sizes"], ["top", "bottom"], axis=0),
        helper.make_node("Slice", ["W", "zero", "two", "axis0"], ["head"]),
        helper.make_node("MatMul", ["top", "x"], ["a"]),
        helper.make_node("MatMul", ["bottom", "x"], ["b"]),
        helper.make_node("MatMul", ["head", "x"], ["c"]),
    ]
    inits = [w("W", (6, 4)), ints("sizes", [2, 4]), ints("zero", [0]), ints("two", [2]), ints("axis0", [0])]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [4, 1])], [vi(n, FLOAT, None) for n in "abc"], inits,
                 feeds={"x": np.ones((4, 1), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", round(32 / 24, 3))]


def test_split_into_equal_parts_without_sizes(tmp_path: Path) -> None:
    """Opset 17 Split(W [7, 4]) into 3 outputs without sizes: rows 0:3, 3:6, 6:7 (ONNX's
    equal split, the last part smaller). The middle part is applied twice: applied
    12 + 2 x 12 + 4 = 40 over 28 covered."""
    nodes = [
        helper.make_node("Split", ["W"], ["p0", "p1", "p2"], axis=0),
        helper.make_node("MatMul", ["p0", "x"], ["a"]),
        helper.make_node("MatMul", ["p1", "x"], ["b"]),
        helper.make_node("MatMul", ["p1", "x"], ["c"]),
        helper.make_node("MatMul", ["p2", "x"], ["d"]),
    ]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [4, 1])], [vi(n, FLOAT, None) for n in "abcd"], [w("W", (7, 4))],
                 opset=17)  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.applied_params == 40
    assert [(s.tensor, s.applications) for s in report.shared] == [("W", round(40 / 28, 3))]


def test_topk_with_k_as_an_attribute(tmp_path: Path) -> None:
    """Opset 9: TopK takes k as an attribute. The router picks 1 of 4 experts of E [4, 8, 8]:
    active 32 + 256 - 3 x 64 = 96."""
    nodes = [
        helper.make_node("MatMul", ["x", "R"], ["logits"]),
        helper.make_node("TopK", ["logits"], ["top_values", "top_experts"], axis=-1, k=1),
        helper.make_node("Gather", ["E", "top_experts"], ["chosen"], axis=0),
        helper.make_node("Unsqueeze", ["x"], ["x4"], axes=[1, 2]),
        helper.make_node("MatMul", ["x4", "chosen"], ["y"]),
    ]
    path = build(tmp_path, nodes, [vi("x", FLOAT, [1, 8])], [vi("y", FLOAT, None)], [w("R", (8, 4)), w("E", (4, 8, 8))],
                 opset=9, feeds={"x": np.ones((1, 8), np.float32)})  # fmt: skip
    report = auditor.audit(path)
    assert [(b.n, b.k) for b in report.experts] == [(4, 1)]
    assert report.counts.active_params == 96 == report.counts.applied_params
