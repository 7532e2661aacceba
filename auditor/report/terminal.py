"""Terminal renderer: a short summary table."""

from __future__ import annotations

from auditor.findings import human, human_bytes
from auditor.report.model import Report


def render_terminal(report: Report) -> str:
    """A few lines: the counts side by side, then the findings."""
    c = report.counts
    applied = human(c.applied_params) if c.applied_params is not None else f">= {human(c.applied_params_lower_bound)} (loop trip count unknown)"
    if c.applied_params is not None and c.applied_params_lower_bound != c.applied_params:
        applied = f"{human(c.applied_params_lower_bound)}-{human(c.applied_params)}"
    rows = [
        ("stored params", human(c.stored_params), human_bytes(c.stored_bytes), "every parameter tensor in the file"),
        ("unique params", human(c.unique_params), human_bytes(c.unique_bytes), "after merging copies"),
        ("applied params", applied, "", "applied per forward pass (shared weights counted per use)"),
        ("embedding params", human(c.embedding_params), "", "lookup tables"),
    ]
    if report.experts:
        rows.insert(2, ("active params", human(c.active_params), "", "used per token (k of n routed experts)"))
    rows.append(("unused params", human(c.unused_params), "", "read by no node"))
    if c.generated_params:
        rows.append(("generated params", human(c.generated_params), "", "created at run time, not stored"))
    width = max(len(r[1]) for r in rows)
    lines = [f"{report.model.path}  ({report.model.producer or 'unknown producer'}, {report.model.nodes} nodes)"]
    lines += [f"  {name:<17} {value:>{width}}  {size:>10}  {note}" for name, value, size, note in rows]
    lines.append(f"  shared tensors: {len(report.shared)}   copy groups: {len(report.duplicates)}"
                 + (f"   shareable groups: {len(report.shareable)}" if report.shareable else "")
                 + (f"   repeated block families: {len(report.repeated_blocks)}" if report.repeated_blocks else ""))  # fmt: skip
    for finding in report.findings:
        lines.append(f"  [{finding.severity}] {finding.code} {finding.slug}: {finding.message}")
    if not report.findings:
        lines.append("  no findings")
    return "\n".join(lines) + "\n"
