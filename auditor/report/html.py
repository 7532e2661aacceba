"""HTML renderer: one self-contained file (inline CSS, embedded JSON, no network requests).

It builds a small view model (numbers formatted, bar widths for the chart) and hands it to
the jinja2 templates; it computes no analysis.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import jinja2

from auditor._version import __version__
from auditor.findings import human, human_bytes
from auditor.report.json_report import report_dict
from auditor.report.model import Report

# Meaning of each count, shown beside it (the README's 'What counts' says the same).
COUNT_MEANINGS = {
    "stored": "Every parameter tensor in the file, each counted once. What a naive counter reports.",
    "unique": "Stored, after merging tensors that hold the same values under another name.",
    "applied": "Parameter elements applied in one forward pass: a shared tensor counts once per use, "
    "a loop body's weights once per iteration, a slice the elements it reads, an If its heaviest branch, "
    "a routed expert bank the k of n experts a token runs. Tracks compute far better than the stored count.",
    "active": "Unique, less the experts a token is not routed to: what mixture-of-experts model cards quote.",
    "embedding": "Parameters used as lookup tables (a Gather indexed by the inputs): one row per token is read.",
    "unused": "Stored parameters that no node reads.",
    "generated": "Weights created at run time (ConstantOfShape, RandomNormal...), not stored in the file.",
}


def templates_dir() -> Path:
    """The templates shipped in the wheel (auditor/templates), or the source tree's templates/."""
    packaged = Path(__file__).resolve().parent.parent / "templates"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[2] / "templates"
    if source.is_dir():
        return source
    raise FileNotFoundError("auditor templates not found (broken installation)")


@dataclass(frozen=True)
class Bar:
    key: str
    label: str
    value: int | None
    text: str
    exact: str
    bytes_text: str
    meaning: str
    width: float  # percent of the longest bar


def _bars(report: Report) -> list[Bar]:
    c = report.counts
    applied_text = human(c.applied_params) if c.applied_params is not None else f"≥ {human(c.applied_params_lower_bound)}"
    rows = [
        ("stored", "Stored", c.stored_params, human(c.stored_params), human_bytes(c.stored_bytes)),
        ("unique", "Unique", c.unique_params, human(c.unique_params), human_bytes(c.unique_bytes)),
        ("applied", "Applied / forward", c.applied_params if c.applied_params is not None else c.applied_params_lower_bound,
         applied_text, ""),
        ("embedding", "Embedding", c.embedding_params, human(c.embedding_params), ""),
    ]  # fmt: skip
    if report.experts:
        rows.insert(2, ("active", "Active / token", c.active_params, human(c.active_params), ""))
    rows.append(("unused", "Unused", c.unused_params, human(c.unused_params), ""))
    if c.generated_params:
        rows.append(("generated", "Generated at run time", c.generated_params, human(c.generated_params), ""))
    top = max((r[2] or 0 for r in rows), default=0) or 1
    bars = []
    for key, label, value, text, size in rows:
        exact = f"{value:,}" if value is not None else "unknown"
        if key == "applied" and c.applied_params is None:
            exact = f"≥ {exact}"
        bars.append(Bar(key, label, value, text, exact, size, COUNT_MEANINGS[key], 100.0 * (value or 0) / top))
    return bars


def render_html(report: Report) -> str:
    """The report as one HTML document."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["human"] = human
    env.filters["human_bytes"] = human_bytes
    template = env.get_template("report.html.j2")
    return template.render(
        report=report,
        data=report_dict(report),
        bars=_bars(report),
        version=__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
