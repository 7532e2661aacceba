"""The loader and the counting rules on small inline models, and the loader's refusals.

Every model is built here (onnx.helper / onnx.parser) and written to ``tmp_path``; every expected
number is hand arithmetic from the shapes written in the test, never a second auditor run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

import auditor
from auditor.cli import main as cli_main

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def weight(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    """A float32 initializer with distinct random values (no accidental identical copies)."""
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def int64(name: str, values: object) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def value(name: str, elem: int = FLOAT, shape: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def save(
    tmp_path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    *,
    name: str = "model.onnx",
    opset: int = 17,
    functions: list[onnx.FunctionProto] = (),  # type: ignore[assignment]
    extra_opsets: dict[str, int] | None = None,
    sparse: list[onnx.SparseTensorProto] = (),  # type: ignore[assignment]
    full_check: bool | None = True,  # None: no checker at all (a deliberately corrupt model)
) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers), sparse_initializer=list(sparse))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    ir = {17: 8, 21: 10}[opset]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir, functions=list(functions))
    if full_check is not None:
        onnx.checker.check_model(model, full_check=full_check)
    path = tmp_path / name
    onnx.save(model, path)
    return path


def shared_rows(report: auditor.Report) -> dict[str, tuple[int, int, int | None]]:
    return {s.tensor: (s.numel, s.uses, s.applications) for s in report.shared}


# ------------------------------------------------------------------------------------------
# loops, branches, functions
# ------------------------------------------------------------------------------------------


def test_if_nested_in_loop_reads_weight_two_levels_up(tmp_path: Path) -> None:
    """W (main graph) is read from an If branch inside a Loop body: two scopes up.

    Loop M=3 (static, condition passed through). then_branch: (h @ W) @ U; else_branch:
    (h @ W) @ W. Per tensor: W has 3 uses; per iteration max(then 1, else 2) = 2; x 3 = 6
    applications; U: 1 use, max(1, 0) = 1 per iteration, x 3 = 3 applications. Per model, each
    iteration runs one branch: then applies W + U = 32, else W + W = 32, so 32 x 3 = 96 (not the
    sum of the per-tensor maxima, 144: no iteration runs both branches).
    """
    then = helper.make_graph(
        [helper.make_node("MatMul", ["h", "W"], ["t1"]), helper.make_node("MatMul", ["t1", "U"], ["t_out"])],
        "then", [], [value("t_out", FLOAT, [1, 4])],
    )  # fmt: skip
    other = helper.make_graph(
        [helper.make_node("MatMul", ["h", "W"], ["e1"]), helper.make_node("MatMul", ["e1", "W"], ["e_out"])],
        "else", [], [value("e_out", FLOAT, [1, 4])],
    )  # fmt: skip
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["c"]),
            helper.make_node("If", ["c"], ["h_out"], then_branch=then, else_branch=other, name="inner_if"),
        ],
        "body",
        [value("i", INT64, []), value("cond_in", BOOL, []), value("h", FLOAT, [1, 4])],
        [value("cond_out", BOOL, []), value("h_out", FLOAT, [1, 4])],
    )
    path = save(
        tmp_path,
        [helper.make_node("Loop", ["M", "keep", "x"], ["y"], body=body, name="loop")],
        [value("x", FLOAT, [1, 4])],
        [value("y", FLOAT, [1, 4])],
        [weight("W", (4, 4), 1), weight("U", (4, 4), 2), int64("M", 3),
         numpy_helper.from_array(np.asarray(True), "keep"), numpy_helper.from_array(np.asarray(0.0, np.float32), "zero")],
    )  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.stored_params == 16 + 16
    assert report.counts.applied_params == 32 * 3
    assert report.counts.applied_params_lower_bound == 32 * 3
    assert shared_rows(report) == {"W": (16, 3, 6), "U": (16, 1, 3)}
    assert [loop.trip_count for loop in report.loops] == [3]


def test_scan_static_length(tmp_path: Path) -> None:
    """Scan over X [5, 4] (static length 5); the body reads W [4, 4] from the outer scope."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_t", "W"], ["p"]),
            helper.make_node("Add", ["s_in", "p"], ["s_out"]),
            helper.make_node("Identity", ["s_out"], ["y_t"]),
        ],
        "body",
        [value("s_in", FLOAT, [4]), value("x_t", FLOAT, [4])],
        [value("s_out", FLOAT, [4]), value("y_t", FLOAT, [4])],
    )
    path = save(
        tmp_path,
        [helper.make_node("Scan", ["s0", "X"], ["s_final", "Y"], body=body, num_scan_inputs=1, name="scan")],
        [value("s0", FLOAT, [4]), value("X", FLOAT, [5, 4])],
        [value("s_final", FLOAT, [4]), value("Y", FLOAT, [5, 4])],
        [weight("W", (4, 4), 3)],
    )
    report = auditor.audit(path)
    assert report.counts.stored_params == 16
    assert report.counts.applied_params == 16 * 5
    assert shared_rows(report) == {"W": (16, 1, 5)}
    assert [(loop.op_type, loop.trip_count) for loop in report.loops] == [("Scan", 5)]


def test_loop_with_runtime_trip_count(tmp_path: Path) -> None:
    """M is a graph input: applied_params unknown, lower bound counts the loop once, AUD105."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["h", "W"], ["h_out"])],
        "body",
        [value("i", INT64, []), value("cond_in", BOOL, []), value("h", FLOAT, [1, 4])],
        [value("cond_out", BOOL, []), value("h_out", FLOAT, [1, 4])],
    )
    path = save(
        tmp_path,
        [
            helper.make_node("Loop", ["M", "keep", "x"], ["h_final"], body=body, name="loop"),
            helper.make_node("MatMul", ["h_final", "V"], ["y"]),
        ],
        [value("x", FLOAT, [1, 4]), value("M", INT64, [])],
        [value("y", FLOAT, [1, 3])],
        [weight("W", (4, 4), 4), weight("V", (4, 3), 5), numpy_helper.from_array(np.asarray(True), "keep")],
    )
    report = auditor.audit(path)
    assert report.counts.stored_params == 16 + 12
    assert report.counts.applied_params is None
    assert report.counts.applied_params_lower_bound == 16 * 1 + 12  # the loop counted as running once
    assert [loop.trip_count for loop in report.loops] == [None]
    finding = next(f for f in report.findings if f.code == "AUD105")
    assert finding.slug == "loop-trip-count-unknown"
    assert finding.evidence["applied_params_lower_bound"] == 28


def test_local_function_constant_called_twice(tmp_path: Path) -> None:
    """A model-local function holds its weight in a Constant; two call sites: 2 applications."""
    w = numpy_helper.from_array(np.random.default_rng(6).standard_normal((4, 4)).astype(np.float32), "Wf")
    function = helper.make_function(
        "custom", "Lin", ["X"], ["Y"],
        [helper.make_node("Constant", [], ["Wf"], value=w), helper.make_node("MatMul", ["X", "Wf"], ["Y"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )  # fmt: skip
    path = save(
        tmp_path,
        [
            helper.make_node("Lin", ["x"], ["y1"], domain="custom", name="call1"),
            helper.make_node("Lin", ["y1"], ["y2"], domain="custom", name="call2"),
        ],
        [value("x", FLOAT, [1, 4])],
        [value("y2", FLOAT, [1, 4])],
        functions=[function],
        extra_opsets={"custom": 1},
    )
    report = auditor.audit(path)
    assert report.counts.stored_params == 16  # stored once, in the function
    assert report.counts.applied_params == 32
    assert [(s.numel, s.uses, s.applications) for s in report.shared] == [(16, 1, 2)]
    assert report.model.functions == 1


# ------------------------------------------------------------------------------------------
# what is a parameter, and how many bytes
# ------------------------------------------------------------------------------------------


def test_sparse_initializer_counts_stored_values(tmp_path: Path) -> None:
    """S1: dense [10, 10], 5 values (float32) at 5 linear int64 indices: 5 params, 5*4 + 5*8 bytes.
    S2: dense [6, 6], 3 values at [3, 2] int64 coordinates: 3 params, 3*4 + 6*8 bytes."""
    s1 = helper.make_sparse_tensor(
        numpy_helper.from_array(np.asarray([1.0, 2.0, 3.0, 4.0, 5.0], np.float32), "S1"),
        numpy_helper.from_array(np.asarray([0, 11, 22, 57, 99], np.int64), "S1_indices"),
        [10, 10],
    )
    s2 = helper.make_sparse_tensor(
        numpy_helper.from_array(np.asarray([7.0, 8.0, 9.0], np.float32), "S2"),
        numpy_helper.from_array(np.asarray([[0, 1], [2, 3], [5, 5]], np.int64), "S2_indices"),
        [6, 6],
    )
    path = save(
        tmp_path,
        [helper.make_node("MatMul", ["x", "S1"], ["y1"]), helper.make_node("MatMul", ["z", "S2"], ["y2"])],
        [value("x", FLOAT, [1, 10]), value("z", FLOAT, [1, 6])],
        [value("y1", FLOAT, [1, 10]), value("y2", FLOAT, [1, 6])],
        sparse=[s1, s2],
        full_check=False,  # onnx shape inference does not see sparse initializers
    )
    report = auditor.audit(path)
    assert report.counts.stored_params == 5 + 3
    assert report.counts.stored_bytes == (5 * 4 + 5 * 8) + (3 * 4 + 6 * 8)  # 60 + 60
    assert report.counts.applied_params == 8
    assert report.counts.unused_params == 0


def test_int8_dequantized_weight_is_a_parameter_int64_shape_is_not(tmp_path: Path) -> None:
    """Wq int8 [4, 8] -> DequantizeLinear -> MatMul: 32 params, 32 bytes. The int64 shape [2]
    feeding Reshape, the scale and the zero point (scalars) are not parameters."""
    wq = numpy_helper.from_array(np.random.default_rng(7).integers(-128, 127, (4, 8)).astype(np.int8), "Wq")
    path = save(
        tmp_path,
        [
            helper.make_node("DequantizeLinear", ["Wq", "scale", "zp"], ["W"]),
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Reshape", ["h", "shape"], ["y"]),
        ],
        [value("x", FLOAT, [1, 4])],
        [value("y", FLOAT, [2, 4])],
        [wq, numpy_helper.from_array(np.asarray(0.05, np.float32), "scale"),
         numpy_helper.from_array(np.asarray(0, np.int8), "zp"), int64("shape", [2, 4])],
    )  # fmt: skip
    report = auditor.audit(path)
    assert report.counts.stored_params == 32
    assert report.counts.stored_bytes == 32
    assert report.counts.parameter_tensors == 1
    assert {k: (v.params, v.bytes) for k, v in report.counts.by_dtype.items()} == {"int8": (32, 32)}
    assert report.counts.applied_params == 32  # read through DequantizeLinear (a view op) once


def test_config_tensor_through_view_op_is_not_a_parameter(tmp_path: Path) -> None:
    """Resize scales [4] float32 are configuration, also when read through Identity (a view op)."""
    path = save(
        tmp_path,
        [helper.make_node("Identity", ["scales"], ["s2"]), helper.make_node("Resize", ["x", "", "s2"], ["y"])],
        [value("x", FLOAT, [1, 1, 4, 4])],
        [value("y", FLOAT, [1, 1, 8, 8])],
        [numpy_helper.from_array(np.asarray([1.0, 1.0, 2.0, 2.0], np.float32), "scales")],
    )
    assert auditor.audit(path).counts.stored_params == 0


@pytest.mark.parametrize("storage", ["raw_data", "int32_data"])
def test_int4_weight_bytes_round_up(tmp_path: Path, storage: str) -> None:
    """W4: INT4 [3, 5] = 15 elements = 60 bits -> 8 whole bytes, whichever field holds them."""
    values = [int(v) for v in np.random.default_rng(8).integers(-8, 8, 15)]
    w4 = helper.make_tensor("W4", TensorProto.INT4, [3, 5], values)  # packed into int32_data
    assert len(w4.int32_data) == 8
    if storage == "raw_data":
        w4 = helper.make_tensor("W4", TensorProto.INT4, [3, 5], bytes(b & 0xFF for b in w4.int32_data), raw=True)
        assert len(w4.raw_data) == 8
    path = save(
        tmp_path,
        [helper.make_node("DequantizeLinear", ["W4", "scale"], ["W"]), helper.make_node("MatMul", ["x", "W"], ["y"])],
        [value("x", FLOAT, [1, 3])],
        [value("y", FLOAT, [1, 5])],
        [w4, numpy_helper.from_array(np.asarray(0.1, np.float32), "scale")],
        opset=21,
    )
    report = auditor.audit(path)
    assert report.counts.stored_params == 15
    assert report.counts.stored_bytes == (15 * 4 + 7) // 8 == 8
    assert report.counts.applied_params == 15


def test_tied_embedding_counted_once_applied_twice(tmp_path: Path) -> None:
    """E [10, 4]: Gather(E, ids) and MatMul(h, Transpose(E)): unique 40, applied 80."""
    path = save(
        tmp_path,
        [
            helper.make_node("Gather", ["E", "ids"], ["h"]),
            helper.make_node("Transpose", ["E"], ["Et"], perm=[1, 0]),
            helper.make_node("MatMul", ["h", "Et"], ["logits"]),
        ],
        [value("ids", INT64, [1, 3])],
        [value("logits", FLOAT, [1, 3, 10])],
        [weight("E", (10, 4), 9)],
    )
    report = auditor.audit(path)
    counts = report.counts
    assert (counts.stored_params, counts.unique_params, counts.applied_params) == (40, 40, 80)
    assert counts.embedding_params == 40
    assert shared_rows(report) == {"E": (40, 2, 2)}
    assert report.duplicates == ()


def test_unused_initializer(tmp_path: Path) -> None:
    """W [4, 4] is used; U [3, 3] is read by nothing: 9 unused, AUD103."""
    path = save(
        tmp_path,
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [value("x", FLOAT, [1, 4])],
        [value("y", FLOAT, [1, 4])],
        [weight("W", (4, 4), 10), weight("U", (3, 3), 11)],
    )
    report = auditor.audit(path)
    assert report.counts.stored_params == 16 + 9
    assert report.counts.applied_params == 16
    assert report.counts.unused_params == 9
    finding = next(f for f in report.findings if f.code == "AUD103")
    assert finding.evidence["unused_params"] == 9


def test_external_data_counts(tmp_path: Path) -> None:
    """All tensors in one external file (size_threshold=0): W [4, 8] f32 (128 B), b [8] f32
    (32 B), shape int64 [2] (16 B); the data file holds 128 + 32 + 16 = 176 bytes."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["h2"]),
            helper.make_node("Reshape", ["h2", "shape"], ["y"]),
        ],
        "g",
        [value("x", FLOAT, [1, 4])],
        [value("y", FLOAT, [2, 4])],
        [weight("W", (4, 8), 12), weight("b", (8,), 13), int64("shape", [2, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)  # fmt: skip
    assert (tmp_path / "ext.data").stat().st_size == 176
    report = auditor.audit(path)
    assert report.counts.stored_params == 32 + 8
    assert report.counts.stored_bytes == (32 + 8) * 4
    assert report.counts.applied_params == 40
    assert report.model.external_data_bytes == 176
    assert report.duplicates == ()


# ------------------------------------------------------------------------------------------
# refusals: exit code 2, one line on stderr naming the problem
# ------------------------------------------------------------------------------------------


def expect_refusal(capsys: pytest.CaptureFixture[str], path: Path | str, *slugs: str) -> str:
    code = cli_main([str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line, no traceback
    assert any(f"[{slug}]" in err for slug in slugs), err
    return err


def external_model(tmp_path: Path, location: str, data: bytes | None = b"\0" * 64, folder: str = "m") -> Path:
    """A model whose W [4, 4] float32 (64 bytes) lives at ``location``; ``data`` goes to
    ``folder/ext.bin`` when given. The external_data entries are written by hand."""
    directory = tmp_path / folder
    directory.mkdir(parents=True, exist_ok=True)
    w = weight("W", (4, 4), 14)
    set_external_data(w, location, offset=0, length=64)
    w.ClearField("raw_data")  # onnx.save then writes the proto as is, without converting data
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g", [value("x", FLOAT, [1, 4])],
                              [value("y", FLOAT, [1, 4])], [w])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if data is not None:
        (directory / "ext.bin").write_bytes(data)
    path = directory / "model.onnx"
    onnx.save(model, path)
    return path


def test_external_model_helper_is_valid(tmp_path: Path) -> None:
    """The hand-written external entry is right: the same model with a good file audits."""
    report = auditor.audit(external_model(tmp_path, "ext.bin"))
    assert report.counts.stored_params == 16
    assert report.model.external_data_bytes == 64


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_refusal(capsys, tmp_path / "nope.onnx", "file-not-found")


def test_text_file_is_not_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n", encoding="utf-8")
    expect_refusal(capsys, path, "not-onnx")


def test_truncated_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = save(
        tmp_path,
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        [value("x", FLOAT, [1, 16])],
        [value("y", FLOAT, [1, 16])],
        [weight("W", (16, 16), 15), weight("b", (16,), 16)],
        name="full.onnx",
    )
    data = full.read_bytes()
    half = tmp_path / "half.onnx"
    half.write_bytes(data[: len(data) // 2])
    expect_refusal(capsys, half, "not-onnx", "invalid-model")


def test_external_data_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_refusal(capsys, external_model(tmp_path, "ext.bin", data=None), "external-data-missing")


def test_external_data_parent_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ext.bin").write_bytes(b"\0" * 64)  # exists: only the location is wrong
    expect_refusal(capsys, external_model(tmp_path, "../ext.bin", data=None), "external-data-outside")


def test_external_data_absolute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "abs.bin"
    target.write_bytes(b"\0" * 64)
    expect_refusal(capsys, external_model(tmp_path, str(target.resolve()), data=None), "external-data-outside")


def test_external_data_symlink_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"\0" * 64)
    path = external_model(tmp_path, "link.bin", data=None)
    os.symlink(outside / "secret.bin", path.parent / "link.bin")
    expect_refusal(capsys, path, "external-data-outside")


def test_external_data_truncated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_refusal(capsys, external_model(tmp_path, "ext.bin", data=b"\0" * 40), "external-data-truncated")


def test_inline_tensor_shorter_than_its_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A [4, 4] float32 initializer needs 64 bytes; this file holds 8 (two such tensors, so the
    copy analysis reads them)."""
    tensors = []
    for name in ("A", "B"):
        tensor = numpy_helper.from_array(np.ones((4, 4), np.float32), name)
        tensor.raw_data = tensor.raw_data[:8]
        tensors.append(tensor)
    path = save(
        tmp_path,
        [helper.make_node("MatMul", ["x", "A"], ["h"]), helper.make_node("MatMul", ["h", "B"], ["y"])],
        [value("x", FLOAT, [1, 4])],
        [value("y", FLOAT, [1, 4])],
        tensors,
        full_check=None,  # onnx.checker itself rejects this file
    )
    expect_refusal(capsys, path, "invalid-model")


_RSS_AFTER_LOAD = """
import sys
from auditor.load.onnx_file import load_onnx
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
before = rss()
model = load_onnx(sys.argv[1])
print(rss() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the process's RSS from /proc")
def test_a_self_contained_model_is_held_once_after_loading(tmp_path: Path) -> None:
    """64 MiB of weights stored inline. The loader takes each tensor's data out of the parsed
    protobuf for good and lets the protobuf go: the process then holds the weights once. (Putting
    the data back after shape inference, as it once did, held them three times: 192 MiB.) Every
    value still reads back exactly."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((2048, 1024)).astype(np.float32) for _ in range(8)]
    doubles = np.arange(16, dtype=np.float64).reshape(4, 4)  # 128 bytes: taken out too, read back whole
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}"]) for i in range(8)]
    nodes.append(helper.make_node("Constant", [], ["d"], value=numpy_helper.from_array(doubles)))
    graph = helper.make_graph(
        nodes, "inline", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2048])],
        [helper.make_tensor_value_info("h7", TensorProto.FLOAT, None), helper.make_tensor_value_info("d", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(w if i % 2 == 0 else w.T.copy(), f"w{i}") for i, w in enumerate(weights)],
    )  # fmt: skip
    path = tmp_path / "inline.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    size = 8 * 2048 * 1024 * 4
    done = subprocess.run([sys.executable, "-c", _RSS_AFTER_LOAD, str(path)], capture_output=True, text=True, check=True)
    grown = int(done.stdout.split()[-1])
    assert size < grown < size * 1.5, f"{grown / 2**20:.0f} MiB held for {size / 2**20:.0f} MiB of weights"

    model = auditor.load.onnx_file.load_onnx(path)
    for i, w in enumerate(weights):
        np.testing.assert_array_equal(model.tensors[f"w{i}"].read(), w if i % 2 == 0 else w.T)
    np.testing.assert_array_equal(model.tensors["d"].read(), doubles)
    assert model.shapes["h7"] == (1, 2048)  # inference ran on the stripped model
