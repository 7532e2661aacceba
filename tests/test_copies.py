"""Stored copies in every form (identical, transposed, reshaped, cast, scaled, dequantized),
near-duplicates, repeated blocks and generated weights, on small models built here.

Every expected figure is worked out from the construction in the test, never by the auditor."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor

RNG = np.random.default_rng(1234)


def _save(tmp_path, nodes, inputs, outputs, inits, name="m.onnx", external=False):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    path = tmp_path / name
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location="weights.bin", size_threshold=0)  # fmt: skip
    else:
        onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def copies_model(tmp_path_factory):
    """One 64x32 weight stored in six more forms, an unrelated weight and a near-duplicate."""
    w = RNG.standard_normal((64, 32)).astype(np.float32)
    q = np.clip(np.round(w / 0.05), -127, 127).astype(np.int8)
    inits = {
        "W": w,
        "W_T": w.T.copy(),
        "W_scaled": w * np.float32(0.125),
        "W_half": w.astype(np.float16),
        "W_flat": w.reshape(32, 64).copy(),
        "W_same": w.copy(),
        "Other": RNG.standard_normal((64, 32)).astype(np.float32),
        "Other_near": None,
        "Q": q,
        "Q_float": q.astype(np.float32) * np.float32(0.05),
        "q_scale": np.array(0.05, np.float32),
    }
    inits["Other_near"] = inits["Other"] + np.float32(0.002) * RNG.standard_normal((64, 32)).astype(np.float32)
    nodes, outputs = [], []
    for name in ("W", "W_scaled", "W_same", "Other", "Other_near", "Q_float"):
        nodes.append(helper.make_node("MatMul", ["x", name], [f"y_{name}"]))
        outputs.append(f"y_{name}")
    for name in ("W_T", "W_flat"):
        nodes.append(helper.make_node("MatMul", ["xt", name], [f"y_{name}"]))
        outputs.append(f"y_{name}")
    nodes += [
        helper.make_node("Cast", ["W_half"], ["W_half_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "W_half_f"], ["y_half"]),
        helper.make_node("DequantizeLinear", ["Q", "q_scale"], ["Q_dq"]),
        helper.make_node("MatMul", ["x", "Q_dq"], ["y_q"]),
    ]
    outputs += ["y_half", "y_q"]
    path = _save(tmp_path_factory.mktemp("copies"), nodes, [("x", [1, 64]), ("xt", [1, 32])], outputs, inits)
    return path, inits


def test_every_form_of_copy_is_merged(copies_model):
    path, inits = copies_model
    report = auditor.audit(path)
    n = 64 * 32
    # parameters: W in 6 float forms + Other + Other_near + Q (int8) + Q_float; q_scale is a scalar
    assert report.counts.stored_params == 10 * n
    # distinct: W, Other, Other_near (a near-duplicate is not a copy), Q (== Q_float)
    assert report.counts.unique_params == 4 * n
    copies = {c: g.relation for g in report.duplicates for c in g.tensors[1:]}
    heads = {g.tensors[0] for g in report.duplicates}
    # the kept tensor of a group is the smallest in bytes: the float16 copy of W, the int8 Q
    assert heads == {"W_half", "Q"}
    assert set(copies) == {"W", "W_T", "W_scaled", "W_flat", "W_same", "Q_float"}
    assert copies["Q_float"] == "dequantized"
    assert copies["W_scaled"] == "scaled"
    scaled = next(g for g in report.duplicates if g.relation == "scaled")
    assert scaled.tensors == ("W_half", "W_scaled")
    assert scaled.scale == pytest.approx(0.125, rel=1e-6)  # W_scaled = 0.125 * W_half
    # bytes: 7 float32 + 1 float16 + 1 int8 copies of size n, less what is kept (f16 W and int8 Q)
    stored_bytes = 8 * 4 * n + 2 * n + n
    assert report.counts.stored_bytes == stored_bytes
    assert report.counts.unique_bytes == 2 * n + n + 4 * n * 2  # W_half, Q, Other, Other_near


def test_relations_without_a_third_tensor(tmp_path):
    """Each relation alone, so the relation named is the one between exactly two tensors."""
    w = RNG.standard_normal((16, 8, 4)).astype(np.float32)
    cases = {
        "transposed": w.transpose(2, 0, 1).copy(),
        "reshaped": w.reshape(8, 64).copy(),
        "scaled": w * np.float32(-0.5),
        "cast": w.astype(np.float16),
        "cast_bf16": w.astype(ml_dtypes.bfloat16),
        "identical": w.copy(),
    }
    for relation, copy in cases.items():
        path = _save(
            tmp_path, [helper.make_node("Identity", ["A"], ["a"]), helper.make_node("Identity", ["B"], ["b"])],
            [], ["a", "b"], {"A": w, "B": copy}, name=f"{relation}.onnx",
        )  # fmt: skip
        report = auditor.audit(path)
        assert [g.relation for g in report.duplicates] == [relation.split("_")[0]], relation
        assert report.counts.unique_params == w.size, relation
        if relation == "scaled":
            assert report.duplicates[0].tensors == ("A", "B")
            assert report.duplicates[0].scale == pytest.approx(-0.5)


def test_near_duplicates_measured_exactly(copies_model):
    path, inits = copies_model
    report = auditor.audit(path, near=0.01)
    assert len(report.shareable) == 1
    group = report.shareable[0]
    assert group.tensors == ("Other", "Other_near")
    a, b = inits["Other"].astype(np.float64), inits["Other_near"].astype(np.float64)
    expected = np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b))
    assert group.distance == pytest.approx(expected, rel=1e-6)
    assert group.cosine == pytest.approx(float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)), rel=1e-9)
    assert group.saved_params == 64 * 32 and group.saved_bytes == 64 * 32 * 4
    # a tolerance below the planted distance finds nothing
    assert auditor.audit(path, near=expected / 2).shareable == ()


def test_near_duplicates_are_found_among_many_random_tensors(tmp_path):
    """40 random tensors of one shape and 3 planted near pairs: exactly those 3 are reported."""
    inits = {f"w{i}": RNG.standard_normal((32, 32)).astype(np.float32) for i in range(40)}
    for i in (3, 17, 29):
        inits[f"w{i}_near"] = inits[f"w{i}"] + np.float32(0.003) * RNG.standard_normal((32, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", k], [f"y_{k}"]) for k in inits]
    path = _save(tmp_path, nodes, [("x", [1, 32])], [f"y_{k}" for k in inits], inits)
    report = auditor.audit(path, near=0.01)
    assert sorted(g.tensors for g in report.shareable) == sorted(
        (f"w{i}", f"w{i}_near") for i in (3, 17, 29)
    )


def test_external_data_copies_are_found(tmp_path):
    w = RNG.standard_normal((128, 64)).astype(np.float32)
    inits = {"A": w, "B": w.T.copy(), "C": w.copy()}
    nodes = [helper.make_node("Identity", [k], [k.lower()]) for k in inits]
    path = _save(tmp_path, nodes, [], ["a", "b", "c"], inits, external=True)
    report = auditor.audit(path)
    assert report.model.external_data_bytes == 3 * w.nbytes
    assert sorted((g.relation, g.tensors) for g in report.duplicates) == [
        ("identical", ("A", "C")), ("transposed", ("A", "B"))
    ]  # fmt: skip


def _layer_model(tmp_path, layers, hidden, shared_noise):
    """``layers`` blocks MatMul(Wq) -> Relu -> MatMul(Wo) + Add(b); block j's weights are block
    0's plus noise of relative size ``shared_noise * j``."""
    base = {
        "q": RNG.standard_normal((hidden, hidden)).astype(np.float32),
        "o": RNG.standard_normal((hidden, hidden)).astype(np.float32),
        "b": RNG.standard_normal((hidden,)).astype(np.float32),
    }
    inits, nodes, x = {}, [], "x"
    for j in range(layers):
        for key, value in base.items():
            inits[f"l{j}.{key}"] = value + np.float32(shared_noise * j) * RNG.standard_normal(value.shape).astype(np.float32)
        nodes += [
            helper.make_node("MatMul", [x, f"l{j}.q"], [f"l{j}.h"]),
            helper.make_node("Relu", [f"l{j}.h"], [f"l{j}.r"]),
            helper.make_node("MatMul", [f"l{j}.r", f"l{j}.o"], [f"l{j}.m"]),
            helper.make_node("Add", [f"l{j}.m", f"l{j}.b"], [f"l{j}.out"]),
        ]
        x = f"l{j}.out"
    return _save(tmp_path, nodes, [("x", [1, hidden])], [x], inits), inits


def test_repeated_blocks_found_with_savings_and_distances(tmp_path):
    layers, hidden = 6, 16
    path, inits = _layer_model(tmp_path, layers, hidden, shared_noise=0.1)
    report = auditor.audit(path)
    assert len(report.repeated_blocks) == 1
    family = report.repeated_blocks[0]
    per_block = 2 * hidden * hidden + hidden
    assert [list(b) for b in family.blocks] == [[f"l{j}.q", f"l{j}.o", f"l{j}.b"] for j in range(layers)]
    assert family.params_per_block == per_block
    assert family.saved_params_if_shared == per_block * (layers - 1)
    assert family.saved_params_if_pairs_shared == per_block * (layers // 2)
    assert family.saved_bytes_if_pairs_shared == 4 * per_block * (layers // 2)
    assert family.saved_bytes_if_shared == 4 * per_block * (layers - 1)
    for position, key in enumerate(("q", "o", "b")):
        expected = []
        for j in range(layers - 1):
            a = inits[f"l{j}.{key}"].astype(np.float64)
            b = inits[f"l{j + 1}.{key}"].astype(np.float64)
            expected.append(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b)))
        assert family.distances[position].adjacent == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert any(f.code == "AUD108" for f in report.findings)


def test_albert_style_sharing_is_not_a_repeated_block(tmp_path):
    """Blocks that already read one set of weights have nothing left to share."""
    hidden = 16
    inits = {"q": RNG.standard_normal((hidden, hidden)).astype(np.float32),
             "o": RNG.standard_normal((hidden, hidden)).astype(np.float32)}  # fmt: skip
    nodes, x = [], "x"
    for j in range(4):
        nodes += [helper.make_node("MatMul", [x, "q"], [f"h{j}"]), helper.make_node("Relu", [f"h{j}"], [f"r{j}"]),
                  helper.make_node("MatMul", [f"r{j}", "o"], [f"y{j}"])]  # fmt: skip
        x = f"y{j}"
    report = auditor.audit(_save(tmp_path, nodes, [("x", [1, hidden])], [x], inits))
    assert report.repeated_blocks == ()
    assert report.counts.applied_params == 4 * 2 * hidden * hidden


def test_generated_weights_are_counted(tmp_path):
    """A weight made by RandomNormal (times a scale) and one by ConstantOfShape."""
    nodes = [
        helper.make_node("RandomNormal", [], ["w_raw"], shape=[32, 48], seed=1.0),
        helper.make_node("Mul", ["w_raw", "scale"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("ConstantOfShape", ["shape"], ["b"], value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Add", ["y", "b"], ["z"]),
        helper.make_node("Gemm", ["z", "g"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
         numpy_helper.from_array(np.array([1, 48], np.int64), "shape"),
         numpy_helper.from_array(RNG.standard_normal((48, 8)).astype(np.float32), "g")],
    )  # fmt: skip
    path = tmp_path / "gen.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    report = auditor.audit(path)
    # RandomNormal feeds MatMul's weight input through Mul; ConstantOfShape feeds only an Add
    assert report.counts.generated_params == 32 * 48
    assert report.counts.stored_params == 48 * 8
    assert any(f.code == "AUD106" for f in report.findings)


@pytest.mark.parametrize("layout", ["per-axis int8", "per-tensor int4", "blocked uint8"])
def test_dequantized_float_copy_is_found(tmp_path, layout):
    """A quantized weight read by DequantizeLinear, plus a float tensor holding exactly its
    dequantized values (as an exporter that kept both would store)."""
    rows, cols = 16, 12
    if layout == "per-axis int8":
        q = RNG.integers(-127, 128, (rows, cols)).astype(np.int8)
        scale = RNG.uniform(0.01, 0.1, cols).astype(np.float32)
        zero = np.zeros(cols, np.int8)
        values = (q.astype(np.float32) - zero) * scale  # axis=1: one scale per column
        attrs, q_tensor = {"axis": 1}, numpy_helper.from_array(q, "Q")
    elif layout == "per-tensor int4":
        q = RNG.integers(-8, 8, (rows, cols)).astype(np.int8)
        scale, zero = np.array(0.05, np.float32), np.array(0, np.int8)
        values = q.astype(np.float32) * scale
        attrs = {}
        q_tensor = helper.make_tensor("Q", TensorProto.INT4, (rows, cols), q.flatten().tolist())
        zero = None
    else:
        q = RNG.integers(0, 256, (rows, cols)).astype(np.uint8)
        block = 4  # scales for blocks of 4 rows along axis 0
        scale = RNG.uniform(0.01, 0.1, (rows // block, cols)).astype(np.float32)
        zero = np.full((rows // block, cols), 128, np.uint8)
        values = (q.astype(np.float32) - np.repeat(zero, block, 0)) * np.repeat(scale, block, 0)
        attrs, q_tensor = {"axis": 0, "block_size": block}, numpy_helper.from_array(q, "Q")
    inits = [q_tensor, numpy_helper.from_array(np.asarray(scale), "s"), numpy_helper.from_array(values.astype(np.float32), "F")]
    dq_inputs = ["Q", "s"]
    if zero is not None:
        inits.append(numpy_helper.from_array(np.asarray(zero), "z"))
        dq_inputs.append("z")
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", dq_inputs, ["Qd"], **attrs),
         helper.make_node("MatMul", ["x", "Qd"], ["y1"]), helper.make_node("MatMul", ["x", "F"], ["y2"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, cols]) for o in ("y1", "y2")], inits,
    )  # fmt: skip
    path = tmp_path / "dq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    report = auditor.audit(path)
    assert [(g.tensors, g.relation) for g in report.duplicates] == [(("Q", "F"), "dequantized")]
    assert report.counts.stored_params == 2 * rows * cols
    assert report.counts.unique_params == rows * cols
    q_bytes = rows * cols // 2 if layout == "per-tensor int4" else rows * cols
    # scales and zero points are quantization metadata, not parameters
    assert report.counts.unique_bytes == q_bytes


def test_near_groups_stay_within_the_tolerance_of_their_first_tensor(tmp_path):
    """A, A + d, A + 2d with |d| / |A| = 0.006: A-B and B-C are within 0.01, A-C is not. No
    group may hold tensors farther than the tolerance from its first tensor."""
    a = RNG.standard_normal((32, 32)).astype(np.float32)
    d = RNG.standard_normal((32, 32)).astype(np.float32)
    d *= np.float32(0.006 * np.linalg.norm(a) / np.linalg.norm(d))
    inits = {"A": a, "B": a + d, "C": a + 2 * d}
    nodes = [helper.make_node("MatMul", ["x", k], [f"y_{k}"]) for k in inits]
    report = auditor.audit(_save(tmp_path, nodes, [("x", [1, 32])], [f"y_{k}" for k in inits], inits), near=0.01)
    assert [g.tensors for g in report.shareable] == [("A", "B")]
    assert report.shareable[0].distance <= 0.01


def test_union_find_joins_sets_and_keeps_others_apart() -> None:
    """The disjoint sets behind copy groups, against groups worked out by hand."""
    from auditor.analyses.copies import UnionFind

    sets = UnionFind()
    for a, b in [("a", "b"), ("c", "d"), ("b", "c"), ("x", "y"), ("e", "e")]:
        sets.union(a, b)
    assert sets["a"] == sets["d"] and sets["x"] == sets["y"] and sets["a"] != sets["x"]
    assert sorted(sorted(s) for s in sets.to_sets()) == [["a", "b", "c", "d"], ["e"], ["x", "y"]]
    assert sets["new"] == "new"
