"""Terminal renderer: a short summary table."""

from __future__ import annotations

from pathlib import PurePath
from typing import Mapping

from auditor.comparison import Comparison
from auditor.findings import human, human_bytes
from auditor.graph import ShapeInfo
from auditor.report.model import Report

_MAX_INPUTS = 4  # inputs named in the cost caption; the rest are counted


def human_units(n: float, unit: str) -> str:
    """4096, "MACs" -> '4.1 kMACs'; 512, "FLOPs" -> '512 FLOPs'."""
    text = human(n)
    if text[-1:].isalpha():
        return f"{text[:-1]} {text[-1]}{unit}"
    return f"{text} {unit}"


def ratio_text(estimate: float, measured: float) -> str:
    """estimate / measured with two decimals, or two significant digits when far below one."""
    ratio = estimate / measured
    return f"{ratio:.2f}" if ratio >= 0.05 else f"{ratio:.2g}"


def shapes_caption(info: ShapeInfo | None, sep: str = "×") -> str:
    """The bound input shapes in one phrase: 'input_ids 1×128, mask 1×128'."""
    if info is None:
        return "unbound input shapes"
    if not info.inputs:
        return "no inputs"
    parts = [f"{name} {sep.join(str(d) for d in shape) if shape else 'scalar'}" for name, shape in info.inputs.items()]
    if len(parts) > _MAX_INPUTS:
        parts = parts[: _MAX_INPUTS - 1] + [f"and {len(parts) - _MAX_INPUTS + 1} more inputs"]
    return ", ".join(parts)


def _listing(names: list[str], most: int = 6) -> str:
    """'a, b, c' with at most ``most`` names, then how many more."""
    return ", ".join(names[:most] + ([f"{len(names) - most} more"] if len(names) > most else []))


def _counted(counts: Mapping[str, int]) -> str:
    """{'FancyOp': 2, 'Foo': 1} -> 'FancyOp (2), Foo'."""
    return _listing([f"{name} ({n})" if n > 1 else name for name, n in counts.items()])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cost_lines(report: Report) -> list[str]:
    """Compute, static memory and the measurement, a line each."""
    lines = []
    shapes = report.shapes
    compute = report.compute
    if compute is None:
        lines.append("  cost: not costed")
    else:
        text = f"  Cost at {shapes_caption(shapes, 'x')}: {human_units(compute.macs, 'MACs')}, {human_units(compute.flops, 'FLOPs')}"
        if compute.macs_lower_bound != compute.macs or compute.flops_lower_bound != compute.flops:
            text += (f" (lightest If branches: {human_units(compute.macs_lower_bound, 'MACs')},"
                     f" {human_units(compute.flops_lower_bound, 'FLOPs')})")  # fmt: skip
        notes = []
        if compute.uncosted_ops:
            notes.append(f"{_plural(sum(compute.uncosted_ops.values()), 'op')} uncosted: {_counted(compute.uncosted_ops)}")
        if compute.unknown_shape_ops:
            notes.append(f"{_plural(sum(compute.unknown_shape_ops.values()), 'op')} of unknown shape: {_counted(compute.unknown_shape_ops)}")
        if compute.unknown_trip_loops:
            notes.append(f"loops counted once, trip count unknown: {_listing(list(compute.unknown_trip_loops))}")
        if notes:
            text += " (" + "; ".join(notes) + ")"
        lines.append(text)
        if compute.routed_tokens:
            tokens = ", ".join(f"{group} {value:.4g}" for group, value in list(compute.routed_tokens.items())[:6])
            lines.append(f"    expected tokens per expert: {tokens}")
    if shapes is not None:
        if shapes.unused:
            lines.append(f"    not dimensions of this model (ignored): {', '.join(shapes.unused)}")
        if shapes.inferred.startswith("none"):
            lines.append(f"    shape inference did not run ({shapes.inferred.removeprefix('none:').strip()})")
        elif shapes.unknown_values:
            lines.append(f"    {_plural(shapes.unknown_values, 'value')} of unknown shape (not costed): {_counted(shapes.unknown_by_op)}")
    memory = report.memory
    if memory is None:
        lines.append("  memory: not estimated")
    else:
        live, runtime = memory.activations, memory.runtime
        at = f" at node {live.peak_node} ({live.peak_op_type})" if live.peak_node else ""
        lines.append(
            f"  Memory (static): weights {human_bytes(memory.weights_bytes)}, activation peak {human_bytes(live.peak_bytes)}{at};"
            f" onnxruntime CPU estimate {human_bytes(runtime.peak_bytes)}, dominated by {runtime.dominant}"
        )
    measured = report.measured
    if measured is not None:
        ratio = ""
        if memory is not None and measured.peak_bytes > 0:
            ratio = f" (estimate/measured {ratio_text(memory.runtime.peak_bytes, measured.peak_bytes)})"
        lines.append(
            f"  Measured ({measured.device}, {measured.runs} runs): peak {human_bytes(measured.peak_bytes)}{ratio},"
            f" latency median {measured.median_ms:.3g} ms, p90 {measured.p90_ms:.3g} ms"
        )
    return lines


def render_terminal(report: Report) -> str:
    """A few lines: the counts side by side, the cost, then the findings."""
    c = report.counts
    applied = human(c.applied_params) if c.applied_params is not None else f">= {human(c.applied_params_lower_bound)} (loop trip count unknown)"
    if any(section.startswith("applied") for section in report.absent):
        applied = "unknown (needs a graph)"
    elif report.absent and report.checkpoint is not None and report.checkpoint.applied_note:
        applied += " (from the architecture)"
    if c.applied_params is not None and c.applied_params_lower_bound != c.applied_params:
        applied = f"{human(c.applied_params_lower_bound)}-{human(c.applied_params)}"
    rows = [
        ("stored params", human(c.stored_params), human_bytes(c.stored_bytes), "every parameter tensor in the file"),
        ("unique params", human(c.unique_params), human_bytes(c.unique_bytes), "after merging copies"),
        ("applied params", applied, "", "applied per forward pass (shared weights counted per use)"),
        ("embedding params", "unknown" if report.absent else human(c.embedding_params), "", "lookup tables"),
    ]
    if report.experts:
        rows.insert(2, ("active params", human(c.active_params), "", "used per token (k of n routed experts)"))
    if not report.absent:  # without a graph nothing says a weight is unused
        rows.append(("unused params", human(c.unused_params), "", "read by no node"))
    if c.generated_params:
        rows.append(("generated params", human(c.generated_params), "", "created at run time, not stored"))
    width = max(len(r[1]) for r in rows)
    lines = [f"{report.model.path}  ({report.model.producer or 'unknown producer'}, {report.model.nodes} nodes)"]
    lines += [f"  {name:<17} {value:>{width}}  {size:>10}  {note}" for name, value, size, note in rows]
    lines.append(f"  shared tensors: {len(report.shared)}   copy groups: {len(report.duplicates)}"
                 + (f"   shareable groups: {len(report.shareable)}" if report.shareable else "")
                 + (f"   repeated block families: {len(report.repeated_blocks)}" if report.repeated_blocks else ""))  # fmt: skip
    if report.absent:
        lines.append(f"  a {report.source} checkpoint without a graph: {', '.join(report.absent)} needs a graph and is absent")
        if report.checkpoint is not None:
            arch = report.checkpoint.architecture or f"no architecture ({report.checkpoint.architecture_note})"
            lines.append(f"  architecture: {arch}")
    else:
        lines += _cost_lines(report)
    if report.export is not None and report.torch is not None:
        e = report.export
        lines.append(
            f"  export: {e.exporter}" + (f" (dynamo failed: {e.fallback_reason})" if e.fallback_reason else "")
            + f"; torch unique {human(e.torch_unique_params)}, ONNX stored {human(e.onnx_stored_params)}"
            + f" ({'+' if e.added_stored_params >= 0 else ''}{human(e.added_stored_params)})"
        )  # fmt: skip
        for tie in e.ties:
            lines.append(f"    tie {' = '.join(tie.names)}: {tie.message}")
        for module in report.torch.repeated_modules[:5]:
            lines.append(f"    called {module.calls} times per forward: {', '.join(module.names)}")
    if report.not_parameters:
        kinds: dict[str, list[int]] = {}
        for item in report.not_parameters:
            entry = kinds.setdefault(item.kind, [0, 0, 0])
            entry[0] += 1
            entry[1] += item.numel
            entry[2] += item.nbytes
        lines.append("  not parameters: " + "; ".join(
            f"{kind} {n} tensor{'s' if n != 1 else ''}, {human(numel)} elements, {human_bytes(size)}"
            for kind, (n, numel, size) in kinds.items()
        ))  # fmt: skip
    for finding in report.findings:
        lines.append(f"  [{finding.severity}] {finding.code} {finding.slug}: {finding.message}")
    if not report.findings:
        lines.append("  no findings")
    return "\n".join(lines) + "\n"


# ---- a comparison of several models ------------------------------------------------------------


def metric_text(value: float | None, unit: str) -> str:
    """A comparison figure in human units: 'params' 4096 -> '4.1k', 'bytes' -> '16 KiB', 'macs' -> '393 kMACs'."""
    if value is None:
        return "-"
    if unit == "params":
        return human(value)
    if unit == "bytes":
        return human_bytes(value)
    if unit == "ms":
        return f"{value:.3g} ms"
    return human_units(value, {"macs": "MACs", "flops": "FLOPs"}.get(unit, unit))


def ratio_label(ratio: float | None) -> str:
    """A ratio to the baseline, three significant digits: 0.1667 -> '0.167x' ('n/a' when unknown)."""
    return "n/a" if ratio is None else f"{ratio:.3g}x"


def model_names(comparison: Comparison) -> tuple[str, ...]:
    """A short name per model: the file name, or the whole path where two file names are the same."""
    paths = [column.report.model.path for column in comparison.models]
    names = [PurePath(p).name or p for p in paths]
    names = [n if names.count(n) == 1 else p for n, p in zip(names, paths)]
    return tuple(n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names))


def render_comparison_terminal(comparison: Comparison) -> str:
    """The models side by side, the first as the baseline (ratios to it in parentheses), then the
    comparison's findings and how many findings each model has."""
    names = model_names(comparison)
    header = ["metric", *names]
    rows = [header]
    for metric in comparison.metrics:
        row = [metric.label]
        for i, column in enumerate(comparison.models):
            text = metric_text(column.values.get(metric.key), metric.unit)
            if i and column.values.get(metric.key) is not None:
                text += f" ({ratio_label(column.ratios.get(metric.key))})"
            row.append(text)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"Comparison of {len(names)} models; baseline {names[0]}, ratios to it in parentheses"]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append(("  " + "   ".join(cells)).rstrip())
    for finding in comparison.findings:
        lines.append(f"  [{finding.severity}] {finding.code} {finding.slug}: {finding.message}")
    if not comparison.findings:
        lines.append(f"  no comparison findings (parameter ratios agree with compute and memory within {comparison.ratio_factor:g}x)")
    for name, column in zip(names, comparison.models):
        found = column.report.findings
        codes = ", ".join(sorted({f.code for f in found}))
        lines.append(f"  {name}: {_plural(len(found), 'finding')}" + (f" ({codes})" if codes else ""))
    return "\n".join(lines) + "\n"
