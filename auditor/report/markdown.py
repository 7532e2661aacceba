"""Markdown renderer: a GitHub-flavoured summary short enough for a pull-request comment.

It only formats the report model (and a :class:`~auditor.comparison.Comparison`'s figures and
ratios): every number shown is one the analyses computed.
"""

from __future__ import annotations

from typing import Sequence

from auditor.comparison import Comparison, Metric, ModelColumn
from auditor.findings import Finding, human, human_bytes
from auditor.report.model import Report
from auditor.report.terminal import human_units, shapes_caption

# GitHub rejects comments over 65,536 characters; stop short of it, leaving room for the last line.
COMMENT_LIMIT = 65_000
MAX_FINDINGS = 30  # findings listed per list; the rest are counted in one line
_MAX_MESSAGE = 1_200  # characters of one message (names inside can be arbitrarily long)
_MAX_NAME = 120  # characters of a model's name in a title or a table header

# Characters that GitHub-flavoured Markdown may read as markup in running text or a table cell.
_SPECIAL = set("\\`*_[]<>|~&")


def escape(text: str, most: int | None = None) -> str:
    """``text`` as literal Markdown: markup characters (``|`` and backticks among them)
    backslash-escaped, line breaks made spaces, cut to ``most`` characters with an ellipsis."""
    flat = " ".join(text.splitlines())  # \r, \u2028... too: a name must not start a line of its own
    if most is not None and len(flat) > most:
        flat = flat[: most - 1] + "…"
    return "".join("\\" + c if c in _SPECIAL else c for c in flat)


def _exact(n: float) -> str:
    return f"{n:,.0f}"


def _applied(report: Report) -> tuple[str, str]:
    c = report.counts
    if c.applied_params is None:
        return f"≥ {human(c.applied_params_lower_bound)}", f"≥ {_exact(c.applied_params_lower_bound)} (loop trip count unknown)"
    if c.applied_params_lower_bound != c.applied_params:
        return (
            f"{human(c.applied_params_lower_bound)}–{human(c.applied_params)}",
            f"{_exact(c.applied_params_lower_bound)}–{_exact(c.applied_params)} (depends on the If branch taken)",
        )
    return human(c.applied_params), _exact(c.applied_params)


def _rows(report: Report) -> list[tuple[str, str, str]]:
    """(figure, value, exact or detail) for the key counts, cost and memory."""
    c = report.counts
    rows = [
        ("stored parameters", human(c.stored_params), _exact(c.stored_params)),
        ("unique parameters", human(c.unique_params), _exact(c.unique_params)),
        ("applied parameters", *_applied(report)),
        ("active parameters", human(c.active_params), _exact(c.active_params)),
        ("stored bytes", human_bytes(c.stored_bytes), _exact(c.stored_bytes)),
        ("unique bytes", human_bytes(c.unique_bytes), _exact(c.unique_bytes)),
    ]
    if report.compute is not None:
        rows.append(("MACs", human_units(report.compute.macs, "MACs"), _exact(report.compute.macs)))
        rows.append(("FLOPs", human_units(report.compute.flops, "FLOPs"), _exact(report.compute.flops)))
    if report.memory is not None:
        plain, runtime = report.memory.plain_peak_bytes, report.memory.runtime.peak_bytes
        rows.append(("memory: weights + activation peak", human_bytes(plain), _exact(plain)))
        rows.append(("memory: onnxruntime CPU estimate", human_bytes(runtime), _exact(runtime)))
    measured = report.measured
    if measured is not None:
        where = f"{escape(measured.device)}, {measured.runs} runs"
        rows.append(("memory: measured peak", human_bytes(measured.peak_bytes), f"{_exact(measured.peak_bytes)} ({where})"))
        rows.append(("latency (median)", f"{measured.median_ms:.3g} ms", f"p90 {measured.p90_ms:.3g} ms"))
    if report.claim is not None:
        matches = ", ".join(report.claim.matches) or "none of the counts"
        rows.append(("stated (--claim-params)", escape(report.claim.text, 40), f"matches {escape(matches)}"))
    return rows


def _finding_lines(findings: Sequence[Finding], budget: int) -> list[str]:
    """One list item per finding, at most :data:`MAX_FINDINGS` and ``budget`` characters; the
    rest counted in a last line."""
    lines: list[str] = []
    used = 0
    for index, f in enumerate(findings):
        item = (
            f"- **{escape(f.severity)}** `{f.code}` {escape(f.slug)}: "
            f"{escape(f.message, _MAX_MESSAGE)}\\\n  *What to do:* {escape(f.rule.action)}"
        )
        if index >= MAX_FINDINGS or used + len(item) + 1 > budget:
            lines.append(f"- ... and {len(findings) - index} more")
            break
        lines.append(item)
        used += len(item) + 1
    return lines


def _findings_section(title: str, findings: Sequence[Finding], budget: int) -> list[str]:
    head = f"{title} ({len(findings)})" if findings else f"{title}: none"
    return [head, ""] + (_finding_lines(findings, budget) + [""] if findings else [])


def _finish(lines: list[str]) -> str:
    """The document, cut at a line boundary if it would pass GitHub's comment limit."""
    text = "\n".join(lines).rstrip("\n") + "\n"
    if len(text) <= COMMENT_LIMIT:
        return text
    cut = text.rfind("\n", 0, COMMENT_LIMIT - 200)
    return text[:cut] + "\n\n... (cut at GitHub's comment limit; the JSON or HTML report has everything)\n"


def render_markdown(report: Report) -> str:
    """One model's audit as a pull-request comment: the key figures, then the findings."""
    m = report.model
    lines = [
        f"### Model audit: {escape(m.path, _MAX_NAME)}",
        "",
        f"{escape(m.producer or 'unknown producer')}, {m.nodes} nodes; costed at {escape(shapes_caption(report.shapes, 'x'))}",
        "",
        "| figure | value | exact |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {value} | {exact} |" for name, value, exact in _rows(report)]
    lines.append("")
    used = sum(len(line) + 1 for line in lines)
    lines += _findings_section("#### Findings", report.findings, COMMENT_LIMIT - used - 500)
    return _finish(lines)


def _value(metric: Metric, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric.unit == "params":
        return human(value)
    if metric.unit == "bytes":
        return human_bytes(value)
    if metric.unit == "ms":
        return f"{value:.3g} ms"
    return human_units(value, "MACs" if metric.unit == "macs" else "FLOPs")


def _cell(metric: Metric, column: ModelColumn, baseline: bool) -> str:
    value = column.values.get(metric.key)
    text = _value(metric, value)
    ratio = column.ratios.get(metric.key)
    if baseline or value is None or ratio is None:
        return text
    return f"{text} ({ratio:.3g}x)"


def render_comparison_markdown(comparison: Comparison) -> str:
    """Several models as a pull-request comment: one table (baseline first, ratios beside the
    others' figures), the comparison's findings, then each model's."""
    columns = comparison.models
    names = [escape(c.report.model.path, _MAX_NAME) for c in columns]
    lines = [
        f"### Model comparison: {len(columns)} models, baseline {names[0]}",
        "",
        "| figure | " + " | ".join([f"{names[0]} (baseline)"] + names[1:]) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for metric in comparison.metrics:
        cells = [_cell(metric, column, index == 0) for index, column in enumerate(columns)]
        lines.append(f"| {escape(metric.label)} | " + " | ".join(cells) + " |")
    lines += ["", (f"Ratios are to the baseline. AUD115 fires where the unique-parameter ratio and a compute or memory "
              f"ratio differ by more than {comparison.ratio_factor:g}x."), ""]
    sections: list[tuple[str, Sequence[Finding]]] = [("#### Comparison findings", comparison.findings)]
    sections += [(f"#### {name}", column.report.findings) for name, column in zip(names, columns)]
    used = sum(len(line) + 1 for line in lines)
    # each list gets an even share of what is left, so a long first list cannot crowd out the others
    share = max((COMMENT_LIMIT - used - 500) // len(sections), 400)
    for title, findings in sections:
        lines += _findings_section(title, findings, share)
    return _finish(lines)
