"""AUD113 quantized-bytes-vs-params and AUD114 claim-mismatch, on models whose counts are worked by hand."""

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
from auditor.findings import parse_claim

AUDIT = [sys.executable, "-m", "auditor.cli"]


def _quantized(tmp_path: Path) -> Path:
    """A [64, 32] int8 weight (2048 params, 1 B each) dequantized by a per-column float scale
    (32 params, 4 B each), then a float32 [32, 16] MatMul weight (512 params, 4 B each)."""
    rng = np.random.default_rng(0)
    q = numpy_helper.from_array(rng.integers(-127, 127, (64, 32), dtype=np.int8), "wq")
    scale = numpy_helper.from_array(rng.random(32).astype(np.float32) + 0.5, "scale")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [q, scale, w2])  # fmt: skip
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_mixed_precision_is_flagged_with_bytes_per_parameter(tmp_path: Path) -> None:
    report = auditor.audit(_quantized(tmp_path))
    (found,) = [f for f in report.findings if f.code == "AUD113"]
    assert found.evidence["bytes_per_param"] == {"int8": 1.0, "float32": 4.0}
    assert report.counts.stored_params == 64 * 32 + 32 * 16  # the scale is metadata, not a parameter


def test_a_single_precision_model_is_not_flagged(rep_clean_model: object) -> None:
    report = auditor.audit(rep_clean_model.path)  # type: ignore[attr-defined]
    assert "AUD113" not in {f.code for f in report.findings}


def _tied(tmp_path: Path) -> Path:
    """A [10, 8] table applied twice (a tied embedding and head) and a stored copy of it:
    stored 160, unique 80, applied 160 (the copy read once, the original once)."""
    table = np.random.default_rng(1).standard_normal((10, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(table, "emb"), numpy_helper.from_array(table.copy(), "head")]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]), helper.make_node("MatMul", ["e", "head_t"], ["y"]),
             helper.make_node("Transpose", ["head"], ["head_t"])]  # fmt: skip
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    path = tmp_path / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_claim_matching_the_stored_count_is_flagged(tmp_path: Path) -> None:
    path = _tied(tmp_path)
    report = auditor.audit(path, claim=parse_claim("160"))
    assert report.counts.stored_params == 160 and report.counts.unique_params == 80
    (found,) = [f for f in report.findings if f.code == "AUD114"]
    assert "stored" in found.evidence["matches"] and "unique" not in found.evidence["matches"]
    assert "copies" in found.message
    assert report.claim is not None and "stored" in report.claim.matches


def test_claim_matching_the_unique_count_is_no_finding(tmp_path: Path) -> None:
    report = auditor.audit(_tied(tmp_path), claim=parse_claim("80"))
    assert "AUD114" not in {f.code for f in report.findings}
    assert report.claim is not None and "unique" in report.claim.matches


def test_claim_matching_nothing_says_so(tmp_path: Path) -> None:
    report = auditor.audit(_tied(tmp_path), claim=parse_claim("1M"))
    (found,) = [f for f in report.findings if f.code == "AUD114"]
    assert found.evidence["matches"] == [] and "matches none" in found.message


def test_claim_from_the_command_line(tmp_path: Path) -> None:
    path, out = _tied(tmp_path), tmp_path / "r.json"
    done = subprocess.run([*AUDIT, str(path), "--claim-params", "160", "--json", str(out), "-q", "--fail-on", "warning"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1  # AUD114 is a warning
    document = json.loads(out.read_text())
    assert document["claim"]["matches"][0] == "stored"
    done = subprocess.run([*AUDIT, str(path), "--claim-params", "lots", "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--claim-params" in done.stderr


def test_named_tensors_carry_shape_dtype_and_readers(tmp_path: Path) -> None:
    from auditor.report.html import render_html
    from auditor.report.json_report import report_dict

    report = auditor.audit(_tied(tmp_path))
    (group,) = report.duplicates
    assert set(group.tensors) == {"emb", "head"}
    emb, head = report.tensors["emb"], report.tensors["head"]
    assert emb.shape == head.shape == (10, 8) and emb.dtype == "float32"
    assert emb.readers == ("Gather Gather_0",) and head.readers == ("MatMul MatMul_1",)  # read through the Transpose
    html = render_html(report)
    assert "10×8 float32 · read by MatMul MatMul_1" in html
    assert report_dict(report)["tensors"]["head"]["readers"] == ["MatMul MatMul_1"]


def test_tensors_the_exporter_named_say_where_they_come_from(tmp_path: Path) -> None:
    """A legacy-style file: the copy 'onnx::MatMul_7' is read by /decoder/lm_head/MatMul."""
    table = np.random.default_rng(2).standard_normal((10, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(table, "embed.weight"), numpy_helper.from_array(table.T.copy(), "onnx::MatMul_7")]
    nodes = [helper.make_node("Gather", ["embed.weight", "ids"], ["e"], name="/embed/Gather"),
             helper.make_node("MatMul", ["e", "onnx::MatMul_7"], ["y"], name="/decoder/lm_head/MatMul")]  # fmt: skip
    graph = helper.make_graph(nodes, "named", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    path = tmp_path / "named.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    report = auditor.audit(path)
    assert report.tensors["onnx::MatMul_7"].source == "decoder.lm_head: MatMul"
    assert report.tensors["embed.weight"].source == ""  # a torch name says where it comes from already


def test_dynamo_name_scopes_give_the_source() -> None:
    from auditor.load.onnx_file import _source

    node = helper.make_node("MatMul", ["a", "b"], ["c"], name="node_linear_3")
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", "['', 'transformer', 'h.0', 'attn', 'linear']"
    assert _source(node) == "transformer.h.0.attn: linear"
    entry.value = "__import__('os').system('true')"  # never evaluated as code
    assert _source(node) == ""
