"""The cost section of the reports (input shapes, compute, memory, measurement) in HTML and terminal.

Models are built inline; the MACs and FLOPs the renderers must show are worked out by hand in each
model's docstring (the independent oracle), and every other figure is checked against the report
model the renderers read.
"""

from __future__ import annotations

import dataclasses
import html as html_lib
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.findings import human_bytes
from auditor.graph import ShapeRequest
from auditor.measure import InputSpec, measure
from auditor.report.html import render_html
from auditor.report.model import Report
from auditor.report.terminal import human_units, ratio_text, render_terminal

FLOAT = TensorProto.FLOAT
LONG_NAME = "encoder/layers.11/attention/output/dense/MatMul_projection_with_a_very_long_exported_name_0"
UNARY = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Sqrt", "Ceil", "Floor", "Sin", "Cos", "Erf",
         "Softsign", "Softplus", "Round", "Sign", "Reciprocal"]  # fmt: skip


def _weights(shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), f"W{seed}")


def _save(graph: onnx.GraphProto, path: Path, check: bool = True, domains: tuple[str, ...] = ()) -> Path:
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="cost-tests")
    if check:
        onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _matmul_model(tmp_path: Path, custom: bool = False) -> Path:
    """x[batch, 8, 16] @ W[16, 32] -> Relu (-> a vendor op when ``custom``).

    At batch 1: MACs = 1 * 8 * 16 * 32 = 4096; FLOPs = 2 * 4096 + 256 (Relu, one per output
    element: 8 * 32) = 8448. Weights 16 * 32 * 4 bytes = 2048.
    """
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="proj"),
        helper.make_node("Relu", ["h"], ["r" if custom else "y"], name="act"),
    ]
    if custom:
        nodes.append(helper.make_node("FancyOp", ["r"], ["y"], name="vendor_node", domain="com.vendor"))
    graph = helper.make_graph(
        nodes,
        "matmul",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 8, 16])],
        [helper.make_tensor_value_info("y", FLOAT, None if custom else ["batch", 8, 32])],
        [_weights((16, 32), 1)],
    )
    name = "custom.onnx" if custom else "matmul.onnx"
    return _save(graph, tmp_path / name, check=not custom, domains=("com.vendor",) if custom else ())


def _wide_model(tmp_path: Path) -> Path:
    """A MatMul with a very long node name, then 17 different unary ops: more op types than the
    table shows (15 + "others") and a name the tables must shorten. MACs = 8 * 16 * 32 = 4096."""
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["v0"], name=LONG_NAME)]
    for i, op in enumerate(UNARY):
        nodes.append(helper.make_node(op, [f"v{i}"], [f"v{i + 1}"], name=f"{op.lower()}_{i}"))
    graph = helper.make_graph(
        nodes,
        "wide",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 8, 16])],
        [helper.make_tensor_value_info(f"v{len(UNARY)}", FLOAT, ["batch", 8, 32])],
        [_weights((16, 32), 1)],
    )
    return _save(graph, tmp_path / "wide.onnx")


def _branch_model(tmp_path: Path) -> Path:
    """An If on a run-time flag: then x[1,8,16] @ A[16,32] (4096 MACs); else x @ B[16,4] @ C[4,32]
    (8*16*4 + 8*4*32 = 512 + 1024 = 1536 MACs). Heaviest 4096 MACs, lightest 1536."""
    out = [helper.make_tensor_value_info("y", FLOAT, [1, 8, 32])]
    then = helper.make_graph([helper.make_node("MatMul", ["x", "W1"], ["y"], name="wide_path")], "then", [], out)
    other = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W2"], ["t"], name="narrow_in"),
         helper.make_node("MatMul", ["t", "W3"], ["y"], name="narrow_out")],
        "else", [], out,
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then, else_branch=other)],
        "branch",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, []), helper.make_tensor_value_info("x", FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 8, 32])],
        [_weights((16, 32), 1), _weights((16, 4), 2), _weights((4, 32), 3)],
    )
    return _save(graph, tmp_path / "branch.onnx")


def _loop_model(tmp_path: Path) -> Path:
    """A Loop whose trip count M is an input, its body x[1,8] @ W[8,8]: 64 MACs, counted once."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "W1"], ["x_out"], name="step"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", FLOAT, [1, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", FLOAT, [1, 8])],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y"], name="repeat", body=body)],
        "loop",
        [helper.make_tensor_value_info("M", TensorProto.INT64, []), helper.make_tensor_value_info("x", FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 8])],
        [_weights((8, 8), 1)],
    )
    return _save(graph, tmp_path / "loop.onnx")


def _by_id(page: str, element_id: str) -> str:
    """The inner HTML of the element with ``element_id`` (nested elements of its kind balanced)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>', page)
    assert match is not None, f"no element #{element_id}"
    tag, depth = match.group(1), 1
    for tag_match in re.finditer(rf"<(/?){tag}\b[^>]*>", page[match.end() :]):
        depth += -1 if tag_match.group(1) else 1
        if depth == 0:
            return page[match.end() : match.end() + tag_match.start()]
    raise AssertionError(f"#{element_id} is not closed")


def _amount(fragment: str) -> tuple[str, str]:
    """(shown text, exact title) of the first formatted amount in ``fragment``."""
    match = re.search(r'<span class="amount" title="([^"]*)">([^<]*)</span>', fragment)
    assert match is not None, fragment
    return html_lib.unescape(match.group(2)), html_lib.unescape(match.group(1))


def _section(page: str) -> str:
    start = page.index('<section id="cost">')
    return page[start : page.index("</section>", start)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cost_models")


@pytest.fixture(scope="module")
def measured_wide(models: Path) -> tuple[Report, Path]:
    """The wide model audited at batch 1 and measured on CPU (onnxruntime, 3 runs after 1 warm-up)."""
    path = _wide_model(models)
    report = auditor.audit(path, shapes=ShapeRequest(dims={"batch": 1}))
    measurement = measure(path, [InputSpec("x", "float32", (1, 8, 16))], runs=3, warmup=1, threads=1, timeout_s=120)
    return dataclasses.replace(report, measured=measurement), path


# ---- compute: hand-counted MACs and FLOPs, as the renderers show them ---------------------------


def test_html_compute_matches_hand_count(models: Path) -> None:
    report = auditor.audit(_matmul_model(models), shapes=ShapeRequest(dims={"batch": 1}))
    assert report.compute is not None and report.shapes is not None
    assert (report.compute.macs, report.compute.flops) == (4096, 8448)  # the oracle, by hand
    page = render_html(report)
    section = _section(page)

    assert _amount(_by_id(page, "compute-macs")) == (human_units(4096, "MACs"), "4,096 MACs")
    assert _amount(_by_id(page, "compute-flops")) == (human_units(8448, "FLOPs"), "8,448 FLOPs")
    assert human_units(4096, "MACs") == "4.1 kMACs"
    assert 'id="compute-lower"' not in page  # no If: no lower bound to show
    # by op type: MatMul carries all the MACs; Relu one FLOP per output element
    matmul_row = re.search(r'<tr data-op="MatMul">(.*?)</tr>', section, re.S)
    assert matmul_row is not None
    assert "4,096 MACs" in matmul_row.group(1) and "8,192 FLOPs" in matmul_row.group(1)
    assert "256 FLOPs" in re.search(r'<tr data-op="Relu">(.*?)</tr>', section, re.S).group(1)  # type: ignore[union-attr]
    # the heaviest node first, with its runs
    nodes = _by_id(page, "compute-nodes")
    assert nodes.index("proj") < nodes.index("act")
    # input shapes and the dimension binding
    assert '<tr data-input="x"><td><code>x</code></td><td class="num">1×8×16</td></tr>' in section
    dims = _by_id(page, "cost-dims")
    assert "<code>batch</code>" in dims and ">--dim<" in dims
    assert "x 1×8×16" in section  # the section's caption

    text = render_terminal(report)
    assert "Cost at x 1x8x16: 4.1 kMACs, 8.45 kFLOPs" in text
    assert "uncosted" not in text


def test_lower_bound_of_if_branches(models: Path) -> None:
    report = auditor.audit(_branch_model(models))
    assert report.compute is not None
    assert (report.compute.macs, report.compute.macs_lower_bound) == (4096, 1536)  # by hand
    page = render_html(report)
    lower = _by_id(page, "compute-lower")
    assert "1,536 MACs" in lower and human_units(1536, "MACs") in lower
    assert "lightest If branches: 1.54 kMACs" in render_terminal(report)


def test_loop_with_unknown_trip_count_is_counted_once(models: Path) -> None:
    report = auditor.audit(_loop_model(models))
    assert report.compute is not None and report.compute.unknown_trip_loops
    assert report.compute.macs == 64  # the body once: 1 * 8 * 8
    page = render_html(report)
    note = _by_id(page, "compute-unknown-trips")
    assert "counted once" in note
    for loop in report.compute.unknown_trip_loops:
        assert f"<code>{loop}</code>" in note
    assert "loops counted once" in render_terminal(report)


def test_many_op_types_and_long_names(measured_wide: tuple[Report, Path]) -> None:
    report, _ = measured_wide
    assert report.compute is not None
    assert report.compute.macs == 4096  # by hand: 8 * 16 * 32; the unary ops have no MACs
    page = render_html(report)
    table = _by_id(page, "compute-by-op")
    assert table.count("<tr data-op=") == 15
    rest = report.compute.by_op_type[15:]
    others = re.search(r'<tr class="others">(.*?)</tr>', table, re.S)
    assert others is not None
    assert f"{len(rest)} other op types" in others.group(1)
    assert f"{sum(t.flops for t in rest):,} FLOPs" in others.group(1)
    nodes = _by_id(page, "compute-nodes")
    assert nodes.count("<tr><td>") == 10  # the top 10 of 18 costed nodes
    assert f'title="{LONG_NAME}"' in nodes and f">{LONG_NAME}<" not in nodes  # shortened, full name on hover
    shortened = re.search(rf'<code title="{re.escape(LONG_NAME)}">([^<]*)</code>', nodes)
    assert shortened is not None and "…" in shortened.group(1) and len(shortened.group(1)) <= 48


# ---- uncosted ops, unknown shapes, unused --dim names ------------------------------------------


def test_uncosted_op_and_unused_dims_are_named(models: Path) -> None:
    report = auditor.audit(_matmul_model(models, custom=True), shapes=ShapeRequest(dims={"batch": 1, "heads": 12}))
    assert report.compute is not None and report.shapes is not None
    assert dict(report.compute.uncosted_ops) == {"FancyOp": 1}
    assert report.compute.macs == 4096  # the vendor op adds nothing, and says so
    assert report.shapes.unused == ("--dim heads",)
    page = render_html(report)
    assert "<code>FancyOp</code>" in _by_id(page, "compute-uncosted")
    assert "<code>--dim heads</code>" in _by_id(page, "cost-unused")
    if report.shapes.unknown_values:
        unknown = _by_id(page, "cost-unknown-shapes")
        assert str(report.shapes.unknown_values) in unknown
        for op in report.shapes.unknown_by_op:
            assert f"<code>{op}</code>" in unknown

    text = render_terminal(report)
    cost_line = next(line for line in text.splitlines() if line.startswith("  Cost at "))
    assert "1 op uncosted: FancyOp" in cost_line
    assert "--dim heads" in text


def test_missing_fields_say_so_in_one_line(models: Path) -> None:
    report = auditor.audit(_matmul_model(models))
    bare = dataclasses.replace(report, shapes=None, compute=None, memory=None, measured=None)
    section = _section(render_html(bare))
    assert "Input shapes not bound" in section
    assert "Not costed" in section and "Not estimated" in section and "Not measured" in section
    assert "<table" not in section and "<svg" not in section
    text = render_terminal(bare)
    assert "cost: not costed" in text and "memory: not estimated" in text
    assert "Not measured" in _section(render_html(report))  # no --profile: said, not left empty


# ---- memory: figures and the liveness chart ------------------------------------------------------


def test_memory_figures_and_timeline_chart(models: Path) -> None:
    report = auditor.audit(_matmul_model(models), shapes=ShapeRequest(dims={"batch": 1}))
    memory = report.memory
    assert memory is not None
    assert memory.weights_bytes == 2048  # 16 * 32 float32
    page = render_html(report)
    assert _amount(_by_id(page, "memory-weights")) == ("2 KiB", "2,048 bytes")
    assert _amount(_by_id(page, "memory-activations")) == (
        human_bytes(memory.activations.peak_bytes), f"{memory.activations.peak_bytes:,} bytes")
    assert memory.activations.peak_node in _by_id(page, "memory-peak")

    svg = re.search(r'<svg class="timeline" id="memory-timeline"[^>]*>(.*?)</svg>', page, re.S)
    assert svg is not None
    opening = svg.group(0)[: svg.group(0).index(">")]
    assert 'viewBox="0 0 ' in opening and 'width="100%"' in opening
    line = re.search(r'<path class="line" d="(M[^"]+)"', svg.group(1))
    assert line is not None and line.group(1).count("L") == len(memory.activations.timeline) - 1
    assert '<path class="area" d="M' in svg.group(1)
    peak = re.search(r'<g class="peak">.*?<line [^>]*y1="([\d.]+)".*?<text[^>]*>([^<]*)</text>', svg.group(1), re.S)
    assert peak is not None
    assert peak.group(2) == f"peak {human_bytes(memory.activations.peak_bytes)} at {memory.activations.peak_node}"
    # the peak is the highest point drawn: no point of the line above it (smaller y is higher)
    ys = [float(p.split(",")[1]) for p in re.findall(r"[\d.]+,[\d.]+", line.group(1))]
    assert min(ys) >= float(peak.group(1))
    assert re.search(r">\d[\d.]* (B|KiB|MiB|GiB)</text>", svg.group(1))  # axis labels in byte units

    runtime = _by_id(page, "memory-runtime")
    for key, value in (("session", memory.runtime.session_bytes), ("creation", memory.runtime.creation_bytes),
                       ("running", memory.runtime.running_bytes), ("peak", memory.runtime.peak_bytes)):  # fmt: skip
        row = re.search(rf'<tr data-term="{key}"[^>]*>(.*?)</tr>', runtime, re.S)
        assert row is not None and f"{value:,} bytes" in row.group(1), key
    assert memory.runtime.dominant in runtime
    assert runtime.count("(sets the peak)") == 1

    text = render_terminal(report)
    assert (f"Memory (static): weights 2 KiB, activation peak {human_bytes(memory.activations.peak_bytes)} at node "
            f"{memory.activations.peak_node}") in text  # fmt: skip
    assert f"onnxruntime CPU estimate {human_bytes(memory.runtime.peak_bytes)}, dominated by {memory.runtime.dominant}" in text


# ---- measured: beside the static estimates --------------------------------------------------------


def test_measured_beside_the_estimates(measured_wide: tuple[Report, Path]) -> None:
    report, _ = measured_wide
    m, memory = report.measured, report.memory
    assert m is not None and memory is not None and m.peak_bytes > 0
    page = render_html(report)
    table = _by_id(page, "measured-memory")
    rows = {key: body for key, body in re.findall(r'<tr data-peak="(\w+)">(.*?)</tr>', table, re.S)}
    assert f"{m.peak_bytes:,} bytes" in rows["measured"]
    assert f"{memory.runtime.peak_bytes:,} bytes" in rows["static"]
    assert f">{ratio_text(memory.runtime.peak_bytes, m.peak_bytes)}<" in rows["static"]
    assert f"{memory.plain_peak_bytes:,} bytes" in rows["plain"]
    assert f">{ratio_text(memory.plain_peak_bytes, m.peak_bytes)}<" in rows["plain"]
    latency = _by_id(page, "measured-latency")
    assert f"{m.median_ms:.3g} ms" in latency and f"{m.p90_ms:.3g} ms" in latency and f"{m.spread_ms:.3g} ms" in latency
    measured_section = page[page.index('id="measured"') :]
    assert "3 timed runs after 1 warm-up" in measured_section and m.provider in measured_section
    assert "memory-pattern block" in _by_id(page, "measured-gap")

    line = next(x for x in render_terminal(report).splitlines() if x.startswith("  Measured ("))
    assert line == (f"  Measured (cpu, 3 runs): peak {human_bytes(m.peak_bytes)} "
                    f"(estimate/measured {ratio_text(memory.runtime.peak_bytes, m.peak_bytes)}), "
                    f"latency median {m.median_ms:.3g} ms, p90 {m.p90_ms:.3g} ms")  # fmt: skip


# ---- a real browser at phone width ----------------------------------------------------------------


def test_cost_section_in_chromium_at_360px(rep_browser: Any, measured_wide: tuple[Report, Path], tmp_path: Path) -> None:
    report, _ = measured_wide
    html_path = tmp_path / "cost.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    url = html_path.resolve().as_uri()
    context = rep_browser.new_context(viewport={"width": 360, "height": 800})
    try:
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(url, wait_until="load")
        assert requests == [url]  # self-contained

        cost = page.locator("#cost")
        cost.scroll_into_view_if_needed()
        assert cost.is_visible()
        assert page.locator("#compute-macs").inner_text().strip() == "4.1 kMACs"
        svg = page.locator("#memory-timeline")
        svg.scroll_into_view_if_needed()
        assert svg.is_visible()
        box = svg.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 80
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360 + 1
        # tick labels stay legible: at least 10 CSS pixels tall once the viewBox is scaled down
        tick = page.locator("#memory-timeline text.tick").first.bounding_box()
        assert tick is not None and tick["height"] >= 10
        assert page.locator("#memory-timeline g.peak line").count() == 1
        assert page.locator("#measured-memory").is_visible()

        overflow = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1] + 1, overflow
    finally:
        context.close()


def test_ratio_text_keeps_small_ratios_readable() -> None:
    assert ratio_text(105, 100) == "1.05"
    assert ratio_text(4096, 10_600_000) == "0.00039"  # not a bare 0.00
