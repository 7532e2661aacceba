"""The comparison page and terminal table, and the single report as a reviewer reads it: real audits
of tiny models built inline, rendered, and loaded in headless chromium at 1280 and 390 px.

The two models (counts worked out by hand, the independent oracle):

* ALBERT-like: one W[64,64] (4,096 parameters) applied by six MatMul+Relu layers in a row.
  stored = unique = 4,096; applied = 6 * 4,096 = 24,576.
* BERT-like: six distinct W_i[64,64] in the same six layers. stored = unique = applied = 24,576.

Both read x[1,16,64]: each MatMul is 16 * 64 * 64 = 65,536 MACs, six of them 393,216 MACs. With
BERT as the baseline, ALBERT has 4,096 / 24,576 = 1/6 of the unique parameters at 1x the MACs: the
parameter ratio is off by 6x > 2x (the default --ratio-factor), so ``compare`` raises AUD115.

Screenshots go to ``$AUDITOR_TEST_ARTIFACTS`` (default ``test-artifacts/``) for a reviewer to look at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.comparison import Comparison, compare
from auditor.findings import finding
from auditor.report.html import finding_view, render_comparison_html, render_html
from auditor.report.model import Report
from auditor.report.terminal import render_comparison_terminal

LAYERS, SEQ, WIDTH = 6, 16, 64
WEIGHT = WIDTH * WIDTH  # 4,096 parameters per layer
MACS = LAYERS * SEQ * WIDTH * WIDTH  # 393,216, the same for both models
ALBERT_UNIQUE, BERT_UNIQUE = WEIGHT, LAYERS * WEIGHT  # 4,096 and 24,576
PARAM_RATIO = ALBERT_UNIQUE / BERT_UNIQUE  # 1/6
# A name longer than the tables show (40 characters): cut in the middle, whole in title=.
LONG_WEIGHT = "albert/encoder/albert_layer_groups.0/albert_layers.0/ffn/dense/weight_shared_by_all_layers"
WIDTHS = [1280, 390]


def _layers_model(path: Path, shared: bool) -> Path:
    """Six MatMul+Relu layers over x[1,16,64]: one weight applied six times (``shared``), or six weights."""
    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for i in range(LAYERS):
        weight = LONG_WEIGHT if shared else f"bert/encoder/layer.{i}/ffn/dense/weight"
        nodes += [
            helper.make_node("MatMul", [previous, weight], [f"h{i}"], name=f"/encoder/layer.{i}/ffn/dense/MatMul"),
            helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"/encoder/layer.{i}/ffn/act/Relu"),
        ]
        if not shared or i == 0:
            weights.append(numpy_helper.from_array(rng.standard_normal((WIDTH, WIDTH)).astype(np.float32), weight))
        previous = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "albert_like" if shared else "bert_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, WIDTH])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, SEQ, WIDTH])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="compare-tests")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Report]:
    """(BERT-like, ALBERT-like), audited."""
    folder = tmp_path_factory.mktemp("compare_models")
    bert = auditor.audit(_layers_model(folder / "bert-like.onnx", shared=False))
    albert = auditor.audit(_layers_model(folder / "albert-like.onnx", shared=True))
    return bert, albert


@pytest.fixture(scope="module")
def comparison(pair: tuple[Report, Report]) -> Comparison:
    return compare(list(pair))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("AUDITOR_TEST_ARTIFACTS", "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page_at(rep_browser: Any) -> Iterator[Any]:
    """``page_at(width, path)``: the page loaded at that viewport width, console errors and requests recorded."""
    contexts: list[Any] = []

    def load(width: int, path: Path, media: str = "screen") -> Any:
        context = rep_browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.errors, page.requests = [], []
        page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("request", lambda req: page.requests.append(req.url))
        page.emulate_media(media=media)
        page.goto(path.resolve().as_uri(), wait_until="load")
        return page

    yield load
    for context in contexts:
        context.close()


def _no_horizontal_overflow(page: Any) -> None:
    scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner + 1, (scroll, inner)


# ---- the audits and the comparison against the hand counts ---------------------------------------


def test_hand_counts_and_the_misleading_ratio(pair: tuple[Report, Report], comparison: Comparison) -> None:
    bert, albert = pair
    assert (bert.counts.unique_params, bert.counts.applied_params) == (BERT_UNIQUE, BERT_UNIQUE)
    assert (albert.counts.unique_params, albert.counts.applied_params) == (ALBERT_UNIQUE, LAYERS * WEIGHT)
    assert bert.compute is not None and albert.compute is not None
    assert bert.compute.macs == albert.compute.macs == MACS
    assert [f.code for f in comparison.findings] == ["AUD115"]
    evidence = comparison.findings[0].evidence
    assert evidence["param_ratio"] == pytest.approx(PARAM_RATIO, abs=1e-6)
    assert evidence["macs_ratio"] == pytest.approx(1.0)


# ---- terminal ---------------------------------------------------------------------------------------


def test_comparison_terminal_table(comparison: Comparison) -> None:
    text = render_comparison_terminal(comparison)
    lines = text.splitlines()
    assert lines[0].startswith("Comparison of 2 models; baseline bert-like.onnx")
    table = lines[1 : 1 + 1 + len(comparison.metrics)]
    cells = [re.split(r" {2,}", line.strip()) for line in table]
    assert cells[0] == ["metric", "bert-like.onnx", "albert-like.onnx"]
    rows = {row[0]: row[1:] for row in cells[1:]}
    assert rows["unique parameters"] == ["24.6k", f"4.1k ({PARAM_RATIO:.3g}x)"]
    assert rows["MACs"] == ["393 kMACs", "393 kMACs (1x)"]
    assert len({len(line) for line in table}) == 1  # the columns line up (right-aligned figures)
    assert any(line.startswith("  [warning] AUD115 misleading-param-ratio: ") for line in lines)
    bert, albert = (column.report for column in comparison.models)
    assert lines[-2].startswith(f"  bert-like.onnx: {len(bert.findings)} finding")
    assert lines[-1].startswith(f"  albert-like.onnx: {len(albert.findings)} finding")
    assert "AUD102" in lines[-1]  # applied / unique = 6 >= 2


# ---- HTML without a browser: evidence in human units, escaping, long names ---------------------------


def test_evidence_in_human_units() -> None:
    view = finding_view(finding("AUD101", "copies", {"wasted_params": 1600, "wasted_bytes": 6400, "groups": 1}))
    assert [(e.label, e.text, e.exact) for e in view.evidence] == [
        ("wasted params", "1.6k", "1,600"),
        ("wasted bytes", "6.25 KiB", "6,400 bytes"),
        ("groups", "1", "1"),
    ]
    mixed = finding_view(finding("AUD113", "precisions", {"bytes_per_param": {"float32": 4.0, "int8": 1.0},
                                                          "share_of_params": {"float32": 0.25, "int8": 0.75}}))  # fmt: skip
    assert [e.text for e in mixed.evidence] == ["float32 4 B, int8 1 B", "float32 25%, int8 75%"]


def test_model_names_are_escaped(tmp_path: Path) -> None:
    """File names are data: a model called ``<i>x&y.onnx`` shows as text, never as markup."""
    first = auditor.audit(_layers_model(tmp_path / "<i>x&y.onnx", shared=False))
    second = auditor.audit(_layers_model(tmp_path / "plain.onnx", shared=True))
    page = render_comparison_html(compare([first, second]))
    assert "<i>" not in page
    assert "&lt;i&gt;x&amp;y.onnx" in page


def test_copies_table_names_kept_and_copies(tmp_path: Path) -> None:
    """A stored copy under long names: kept tensor and copy both shortened, the full names in title=."""
    kept, copy = "encoder/" + "k" * 50 + "/weight", "decoder/" + "c" * 50 + "/weight"
    w = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", kept], ["a"], name="left"), helper.make_node("MatMul", ["a", copy], ["y"], name="right")],
        "copies",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, kept), numpy_helper.from_array(w.copy(), copy)],
    )
    path = tmp_path / "copies.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    page = render_html(auditor.audit(path))
    table = page[page.index('<table id="copies-table">') : page.index("</table>", page.index('id="copies-table"'))]
    for name in (kept, copy):
        assert f'title="{name}"' in table
        assert f">{name}<" not in table  # shortened
    assert "identical" in table and ">64<" in table  # 8 * 8 wasted parameters


# ---- the comparison page in chromium ------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_page_in_chromium(
    width: int, comparison: Comparison, page_at: Any, tmp_path: Path, artifacts: Path
) -> None:
    html_path = tmp_path / "compare.html"
    html_path.write_text(render_comparison_html(comparison), encoding="utf-8")
    page = page_at(width, html_path)
    page.wait_for_timeout(100)
    assert page.requests == [html_path.resolve().as_uri()]  # self-contained
    assert not page.errors, page.errors

    # Findings first: the comparison's AUD115, with its evidence and what to do, then each model's.
    first = page.locator("#findings .finding").first
    assert first.get_attribute("data-code") == "AUD115"
    assert page.locator("#findings-comparison .finding").count() == 1
    assert first.is_visible()
    assert first.locator('dl.evidence [data-key="param_ratio"] dd').inner_text() == f"{PARAM_RATIO:.3g}x"
    assert "What to do:" in first.inner_text()
    assert first.locator("a").first.get_attribute("href") == "#explain-misleading-param-ratio"
    assert page.locator("#explain-misleading-param-ratio").count() == 1
    for i, column in enumerate(comparison.models, start=1):  # then each model's, in its report's order
        codes = page.locator(f"#findings-model-{i} .finding").evaluate_all("els => els.map(e => e.dataset.code)")
        assert codes == [f.code for f in column.report.findings]
    assert "AUD102" in [f.code for f in comparison.models[1].report.findings]  # applied / unique = 6 >= 2
    assert page.locator("#findings").bounding_box()["y"] < page.locator("#ratios").bounding_box()["y"]

    # The ratio table: the ratio shown is the one counted by hand; the exact value on hover.
    cells = page.locator('#ratio-table tr[data-metric="unique_params"] td')
    assert cells.nth(0).locator(".value").inner_text() == "24.6k"
    assert cells.nth(1).locator(".ratio").inner_text() == f"{PARAM_RATIO:.3g}x" == "0.167x"
    assert (cells.nth(1).get_attribute("title") or "").startswith(f"{ALBERT_UNIQUE:,} parameters")
    assert "flagged" in (cells.nth(1).get_attribute("class") or "")
    macs = page.locator('#ratio-table tr[data-metric="macs"] td').nth(1)
    assert macs.locator(".ratio").inner_text() == "1x"
    assert (macs.get_attribute("title") or "").startswith(f"{MACS:,} MACs")
    assert page.locator('#summary [data-model="model-2"] [data-key="unique_params"] .ratio').inner_text() == "· 0.167x"

    # The charts: ALBERT's parameter bar is a sixth of its MACs bar, at a glance.
    chart = page.locator('#charts figure[data-model="model-2"] svg')
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 250 and box["x"] + box["width"] <= width + 1
    params_bar = float(chart.locator('g[data-key="unique_params"] rect').get_attribute("width"))
    macs_bar = float(chart.locator('g[data-key="macs"] rect').get_attribute("width"))
    assert params_bar / macs_bar == pytest.approx(PARAM_RATIO, rel=0.01)
    assert chart.locator('g[data-key="unique_params"] rect').is_visible()
    label = chart.locator("text.label").first.bounding_box()
    assert label is not None and label["height"] >= 10  # legible once the viewBox is scaled down

    # Per-model sections, linked from the table's header.
    assert page.locator("#model-2").count() == 1
    assert page.locator('#ratio-table thead a[href="#model-2"]').inner_text() == "albert-like.onnx"

    _no_horizontal_overflow(page)
    page.screenshot(path=str(artifacts / f"compare-{width}.png"), full_page=True)


def test_compare_page_prints(comparison: Comparison, page_at: Any, tmp_path: Path, artifacts: Path) -> None:
    """On paper nothing sticks, no table is cut (it wraps instead of scrolling), the charts stay."""
    html_path = tmp_path / "compare.html"
    html_path.write_text(render_comparison_html(comparison), encoding="utf-8")
    page = page_at(390, html_path, media="print")
    stuck = page.evaluate(
        "() => [...document.querySelectorAll('*')].filter(e => ['sticky', 'fixed'].includes(getComputedStyle(e).position)).length"
    )
    assert stuck == 0
    cut = page.evaluate(
        """() => [...document.querySelectorAll('table')].filter(t => {
             const box = t.parentElement; return t.scrollWidth > box.clientWidth + 1 || getComputedStyle(box).overflowX === 'auto';
           }).map(t => t.id || t.className)"""
    )
    assert cut == []
    assert page.locator("#charts svg").count() == 2
    assert page.locator("#charts svg").first.is_visible()
    _no_horizontal_overflow(page)
    pdf = page.pdf(path=str(artifacts / "compare.pdf"), format="A4")
    assert pdf.startswith(b"%PDF")


# ---- the single report, as a reviewer reads it ----------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_single_report_in_chromium(
    width: int, pair: tuple[Report, Report], page_at: Any, tmp_path: Path, artifacts: Path
) -> None:
    _, albert = pair
    html_path = tmp_path / "report.html"
    html_path.write_text(render_html(albert), encoding="utf-8")
    page = page_at(width, html_path)
    assert page.requests == [html_path.resolve().as_uri()]
    assert not page.errors, page.errors

    # Summary cards at the top, above the findings.
    cards = {key: page.locator(f'#summary [data-card="{key}"] .value') for key in ("stored", "unique", "applied", "macs")}
    assert cards["unique"].inner_text() == "4.1k" and cards["unique"].get_attribute("title") == f"{ALBERT_UNIQUE:,} parameters"
    assert cards["applied"].inner_text() == "24.6k" and cards["applied"].get_attribute("title") == f"{LAYERS * WEIGHT:,} parameters"
    assert cards["macs"].inner_text() == "393 kMACs" and cards["macs"].get_attribute("title") == f"{MACS:,} MACs"
    assert page.locator('#summary [data-card="memory"]').is_visible()
    assert page.locator("#summary").bounding_box()["y"] < page.locator("#findings").bounding_box()["y"]

    # The finding with its evidence (numbers humanised, exact in title=), subjects and action.
    found = page.locator("#findings > .finding").first
    assert found.get_attribute("data-code") == "AUD102"
    ratio = found.locator('dl.evidence [data-key="ratio"] dd')
    assert ratio.inner_text() == f"{LAYERS * WEIGHT / ALBERT_UNIQUE:g}x" == "6x"
    applied = found.locator('dl.evidence [data-key="applied_params"] dd')
    assert applied.inner_text() == "24.6k" and applied.get_attribute("title") == f"{LAYERS * WEIGHT:,}"
    assert found.locator(f'.subjects code[title="tensor {LONG_WEIGHT}"]').count() == 1
    assert "What to do:" in found.inner_text()

    # The shared tensor: its long name shortened (whole in title=), the six nodes that read it.
    row = page.locator("#shared-table tbody tr")
    assert row.count() == 1
    name = row.locator("td").first.locator("code")
    assert name.get_attribute("title") == LONG_WEIGHT and "…" in name.inner_text()
    assert row.locator(".reader").count() == LAYERS
    assert row.locator(".reader").first.inner_text() == "/encoder/layer.0/ffn/dense/MatMul MatMul"

    _no_horizontal_overflow(page)
    page.screenshot(path=str(artifacts / f"report-{width}.png"), full_page=True)
