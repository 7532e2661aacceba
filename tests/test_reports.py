"""The three renderers, end to end through the CLI: JSON (against its schema), HTML (in a real
headless chromium, offline), and the terminal summary. Expected numbers are worked out by hand
in conftest.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

MODELS = ["rep_tied_model", "rep_clean_model", "rep_copy_model", "rep_loop_model"]


def _json_report(rep_cli: Callable[..., Any], model: Any, out: Path) -> dict[str, Any]:
    result = rep_cli(model.path, "--json", out, "--quiet", "--fail-on", "never")
    assert result.rc == 0, result.err
    return json.loads(out.read_text(encoding="utf-8"))


# ---- (a) JSON: valid against the schema, hand-computed numbers --------------------------------


@pytest.mark.parametrize("fixture", MODELS)
def test_json_report_matches_schema_and_hand_counts(
    fixture: str, request: pytest.FixtureRequest, rep_cli: Callable[..., Any], rep_validator: Any, tmp_path: Path
) -> None:
    model = request.getfixturevalue(fixture)
    doc = _json_report(rep_cli, model, tmp_path / "report.json")

    errors = sorted(rep_validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)

    assert doc["schema_version"] == 2
    assert doc["counts"] == model.counts
    assert [f["code"] for f in doc["findings"]] == list(model.findings)
    assert doc["duplicates"] == list(model.duplicates)
    if model.shared:
        assert doc["shared"] == list(model.shared)
    assert len(doc["loops"]) == len(model.loops)
    for got, want in zip(doc["loops"], model.loops):
        assert {k: got[k] for k in want} == want
        assert got["reason"]  # says why the trip count is unknown
    assert doc["model"]["path"] == str(model.path)
    assert doc["model"]["file_size"] == model.path.stat().st_size


def test_json_findings_evidence_matches_counts(rep_cli: Callable[..., Any], rep_tied_model: Any, tmp_path: Path) -> None:
    doc = _json_report(rep_cli, rep_tied_model, tmp_path / "report.json")
    evidence = {f["code"]: f["evidence"] for f in doc["findings"]}
    assert evidence["AUD101"] == {"wasted_params": 1600, "wasted_bytes": 6400, "groups": 1}
    assert evidence["AUD102"] == {"applied_params": 4800, "unique_params": 1600, "ratio": 3.0}
    assert evidence["AUD104"] == {"embedding_params": 1600, "share": 1.0}
    severities = {f["code"]: f["severity"] for f in doc["findings"]}
    assert severities == {"AUD101": "warning", "AUD102": "warning", "AUD104": "info"}


def _strict_loads(text: str) -> Any:
    """RFC 8259 JSON: NaN and Infinity are not JSON (JSON.parse in a browser rejects them)."""

    def reject(constant: str) -> None:
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize("fixture", MODELS)
def test_json_report_is_strict_json(
    fixture: str, request: pytest.FixtureRequest, rep_cli: Callable[..., Any], tmp_path: Path
) -> None:
    model = request.getfixturevalue(fixture)
    out = tmp_path / "report.json"
    assert rep_cli(model.path, "--json", out, "--quiet", "--fail-on", "never").rc == 0
    _strict_loads(out.read_text(encoding="utf-8"))


def test_quantized_repeated_blocks_counts(
    rep_cli: Callable[..., Any], rep_quantized_blocks_model: Any, rep_validator: Any, tmp_path: Path
) -> None:
    doc = _json_report(rep_cli, rep_quantized_blocks_model, tmp_path / "report.json")
    assert doc["counts"] == rep_quantized_blocks_model.counts
    assert [f["code"] for f in doc["findings"]] == list(rep_quantized_blocks_model.findings) == []
    (family,) = doc["repeated_blocks"]  # the six layers stay in the report as structure
    assert len(family["blocks"]) == 6 and family["sharing_plausible"] is None
    assert not list(rep_validator.iter_errors(doc))


def test_quantized_repeated_blocks_report_is_strict_json(
    rep_cli: Callable[..., Any], rep_quantized_blocks_model: Any, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    assert rep_cli(rep_quantized_blocks_model.path, "--json", out, "--quiet").rc == 0
    _strict_loads(out.read_text(encoding="utf-8"))


# ---- (b) the schema rejects broken documents ---------------------------------------------------


def _drop_unique(doc: dict[str, Any]) -> None:
    del doc["counts"]["unique_params"]


def _extra_count(doc: dict[str, Any]) -> None:
    doc["counts"]["total_params"] = 1


def _bad_code(doc: dict[str, Any]) -> None:
    doc["findings"][0]["code"] = "AUD1"


def _bad_severity(doc: dict[str, Any]) -> None:
    doc["findings"][0]["severity"] = "fatal"


def _bad_relation(doc: dict[str, Any]) -> None:
    doc["duplicates"][0]["relation"] = "similar"


def _string_applied(doc: dict[str, Any]) -> None:
    doc["counts"]["applied_params"] = "4800"


def _wrong_version(doc: dict[str, Any]) -> None:
    doc["schema_version"] = 1


def _evidence_missing_key(doc: dict[str, Any]) -> None:
    del doc["findings"][0]["evidence"]["wasted_params"]


@pytest.mark.parametrize(
    "break_it",
    [_drop_unique, _extra_count, _bad_code, _bad_severity, _bad_relation, _string_applied, _wrong_version,
     _evidence_missing_key],  # fmt: skip
)
def test_schema_rejects_broken_document(
    break_it: Callable[[dict[str, Any]], None],
    rep_cli: Callable[..., Any],
    rep_tied_model: Any,
    rep_schema: dict[str, Any],
    tmp_path: Path,
) -> None:
    doc = _json_report(rep_cli, rep_tied_model, tmp_path / "report.json")
    jsonschema.validate(doc, rep_schema, cls=jsonschema.Draft202012Validator)  # valid before
    broken = copy.deepcopy(doc)
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, rep_schema, cls=jsonschema.Draft202012Validator)


def test_schema_missing_unique_params_names_the_field(rep_validator: Any, rep_cli: Callable[..., Any],
                                                      rep_tied_model: Any, tmp_path: Path) -> None:  # fmt: skip
    doc = _json_report(rep_cli, rep_tied_model, tmp_path / "report.json")
    del doc["counts"]["unique_params"]
    errors = list(rep_validator.iter_errors(doc))
    assert len(errors) == 1
    assert list(errors[0].absolute_path) == ["counts"]
    assert "'unique_params' is a required property" in errors[0].message


def test_schema_documents_every_property(rep_schema: dict[str, Any]) -> None:
    """Every named property says what it means (the per-code evidence conditionals excepted)."""
    missing: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and "description" not in sub and "/allOf/" not in where:
                    missing.append(f"{where}/{name}")
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")

    walk(rep_schema, "#")
    assert rep_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert not missing, missing


# ---- (c) HTML in a real headless chromium, offline ---------------------------------------------


def test_html_report_in_chromium(
    rep_browser: Any, rep_cli: Callable[..., Any], rep_tied_model: Any, rep_validator: Any, tmp_path: Path
) -> None:
    html_path, json_path = tmp_path / "report.html", tmp_path / "report.json"
    result = rep_cli(rep_tied_model.path, "--html", html_path, "--json", json_path, "--quiet")
    assert result.rc == 0, result.err
    url = html_path.resolve().as_uri()

    context = rep_browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        console_errors: list[str] = []
        page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
        page.goto(url, wait_until="load")
        page.wait_for_timeout(200)  # anything the page would fetch late

        # Self-contained: the only request is the file itself.
        assert requests == [url]
        assert not console_errors, console_errors

        # The counts table: exact numbers with thousands separators, visible.
        for key, exact in (("stored", "3,200"), ("unique", "1,600"), ("applied", "4,800"), ("embedding", "1,600")):
            row = page.locator(f'#counts tr[data-count="{key}"]')
            assert row.count() == 1
            assert row.is_visible()
            cells = row.locator("td")
            assert cells.nth(2).inner_text().strip() == exact, key
            assert exact in row.inner_text()
        assert page.locator('#counts tr[data-count="stored"] td').nth(3).inner_text().strip() == "12.5 KiB"

        # Findings: AUD101 first, as a top-level entry of the findings section, shown as a warning.
        findings = page.locator("#findings > .finding")
        assert findings.count() == 3
        first = findings.first
        assert first.is_visible()
        assert first.get_attribute("data-code") == "AUD101"
        assert "warning" in (first.get_attribute("class") or "").split()
        text = first.inner_text()
        assert "AUD101" in text and "stored-copies" in text and "warning" in text.lower()
        assert [findings.nth(i).get_attribute("data-code") for i in range(3)] == ["AUD101", "AUD102", "AUD104"]
        # Each finding links to its explanation on the same page.
        href = first.locator("a").get_attribute("href")
        assert href == "#explain-stored-copies"
        assert page.locator(href).count() == 1

        # The embedded data is the JSON report.
        embedded = json.loads(page.locator("script#report-data").text_content() or "")
        assert embedded == json.loads(json_path.read_text(encoding="utf-8"))
        assert embedded["counts"] == rep_tied_model.counts
        assert not list(rep_validator.iter_errors(embedded))

        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        data = shot.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
        assert requests == [url]  # still nothing else after rendering fully
    finally:
        context.close()


def test_html_unknown_applied_count_in_chromium(
    rep_browser: Any, rep_cli: Callable[..., Any], rep_loop_model: Any, tmp_path: Path
) -> None:
    html_path = tmp_path / "loop.html"
    assert rep_cli(rep_loop_model.path, "--html", html_path, "--quiet").rc == 0
    page = rep_browser.new_page()
    try:
        page.goto(html_path.resolve().as_uri(), wait_until="load")
        row = page.locator('#counts tr[data-count="applied"]')
        assert row.locator("td").nth(1).inner_text().strip() == "≥ 64"
        assert "lower bound" in page.locator("#counts").inner_text()
        assert page.locator("#findings > .finding").first.get_attribute("data-code") == "AUD105"
        assert page.locator("#loops").inner_text().count("unknown") == 1
        embedded = json.loads(page.locator("script#report-data").text_content() or "")
        assert embedded["counts"]["applied_params"] is None
    finally:
        page.close()


def test_html_without_findings(rep_cli: Callable[..., Any], rep_clean_model: Any, tmp_path: Path) -> None:
    html_path = tmp_path / "clean.html"
    assert rep_cli(rep_clean_model.path, "--html", html_path, "--quiet").rc == 0
    html = html_path.read_text(encoding="utf-8")
    assert "No findings" in html
    assert 'class="finding' not in html


# ---- (d) terminal summary ----------------------------------------------------------------------


def test_terminal_summary_by_default(rep_cli: Callable[..., Any], rep_tied_model: Any, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    result = rep_cli(rep_tied_model.path, "--json", out_json)
    assert result.rc == 0
    lines = result.out.splitlines()
    assert lines[0].startswith(str(rep_tied_model.path))
    table = {line.split()[0] + " " + line.split()[1]: line.split()[2] for line in lines[1:6]}
    assert table == {
        "stored params": "3.2k",
        "unique params": "1.6k",
        "applied params": "4.8k",
        "embedding params": "1.6k",
        "unused params": "0",
    }
    assert "shared tensors: 1   copy groups: 1" in result.out
    assert [line.split()[1] for line in lines if line.startswith("  [")] == ["AUD101", "AUD102", "AUD104"]
    assert f"JSON report: {out_json.resolve()}" in result.out
    assert result.err == ""


def test_terminal_summary_clean_model(rep_cli: Callable[..., Any], rep_clean_model: Any) -> None:
    result = rep_cli(rep_clean_model.path)
    assert result.rc == 0
    assert "no findings" in result.out
    assert "136" in result.out


def test_quiet_prints_nothing(rep_cli: Callable[..., Any], rep_tied_model: Any, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    result = rep_cli(rep_tied_model.path, "--json", out_json, "--quiet")
    assert result.rc == 0
    assert result.out == ""
    assert result.err == ""
    assert json.loads(out_json.read_text(encoding="utf-8"))["counts"]["stored_params"] == 3200


# ---- known bug, kept visible -------------------------------------------------------------------


def test_human_numbers_roll_over_to_next_unit() -> None:
    from auditor.findings import human, human_bytes

    assert human(999_950) == "1M"
    assert human(999) == "999"
    assert human(12_345_678) == "12.3M"
    assert human_bytes(1_048_000) == "0.999 MiB"  # 1023.4 KiB needs an exponent in 3 digits
    assert human_bytes(1 << 40) == "1 TiB"
    assert human_bytes(512) == "512 B"


def test_json_writer_indents_the_top_levels_and_keeps_deeper_containers_on_one_line() -> None:
    """The writer is json's own encoder below the third level: same document as ``json.dumps``,
    one line per compute node, and NaN refused as before."""
    from auditor.report.json_report import dumps

    nodes = [{"node": f"n{i}", "op_type": "MatMul", "macs": i, "shape": [i, 2]} for i in range(5)]
    document = {"compute": {"nodes": nodes, "complete": True}, "empty": {}, "none": [], "name": "é\"\n", 'a"b\n': 1}
    text = dumps(document)
    assert json.loads(text) == document and text.endswith("}\n")
    odd_keys = {"k": {True: 1, None: 2, 1.5: 3, 7: 4}}  # keys as json itself writes them
    assert json.loads(dumps(odd_keys)) == json.loads(json.dumps(odd_keys))
    with pytest.raises(TypeError):
        dumps({(1, 2): 0})
    lines = text.splitlines()
    for node in nodes:
        assert f"      {json.dumps(node)}," in lines or f"      {json.dumps(node)}" in lines
    assert '  "compute": {' in lines and '    "nodes": [' in lines and '  "empty": {},' in lines
    with pytest.raises(ValueError):
        dumps({"a": {"b": {"c": {"d": float("nan")}}}})
