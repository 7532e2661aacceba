"""Several models side by side, the first as the baseline: every figure, its ratio, and the
findings only a comparison can make (a parameter ratio that compute or memory contradict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from auditor.findings import Finding, Subject, finding, human
from auditor.report.model import Report

DEFAULT_RATIO_FACTOR = 2.0


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # params | bytes | macs | flops | ms
    read: Callable[[Report], float | None]


def _measured_peak(report: Report) -> float | None:
    return float(report.measured.peak_bytes) if report.measured is not None else None


def _latency(report: Report) -> float | None:
    return report.measured.median_ms if report.measured is not None else None


METRICS: tuple[Metric, ...] = (
    Metric("stored_params", "stored parameters", "params", lambda r: r.counts.stored_params),
    Metric("unique_params", "unique parameters", "params", lambda r: r.counts.unique_params),
    Metric("applied_params", "applied parameters", "params", lambda r: r.counts.applied_params),
    Metric("active_params", "active parameters", "params", lambda r: r.counts.active_params),
    Metric("embedding_params", "embedding parameters", "params",
           lambda r: None if r.absent else r.counts.embedding_params),  # without a graph: unknown, not 0
    Metric("stored_bytes", "stored bytes", "bytes", lambda r: r.counts.stored_bytes),
    Metric("unique_bytes", "unique bytes", "bytes", lambda r: r.counts.unique_bytes),
    Metric("macs", "MACs", "macs", lambda r: r.compute.macs if r.compute else None),
    Metric("flops", "FLOPs", "flops", lambda r: r.compute.flops if r.compute else None),
    Metric("static_plain_peak_bytes", "memory: weights + activation peak", "bytes",
           lambda r: r.memory.plain_peak_bytes if r.memory else None),
    Metric("static_peak_bytes", "memory: onnxruntime CPU estimate", "bytes",
           lambda r: r.memory.runtime.peak_bytes if r.memory else None),
    Metric("measured_peak_bytes", "memory: measured peak", "bytes", _measured_peak),
    Metric("latency_median_ms", "latency (median)", "ms", _latency),
)  # fmt: skip


@dataclass(frozen=True)
class ModelColumn:
    """One model's figures and their ratios to the baseline's (None: unknown or baseline zero)."""

    report: Report
    values: Mapping[str, float | None]
    ratios: Mapping[str, float | None]
    dtype_bytes: Mapping[str, int]


@dataclass(frozen=True)
class Comparison:
    models: tuple[ModelColumn, ...]  # the first is the baseline
    findings: tuple[Finding, ...]  # the comparison's own (each model's are in its report)
    ratio_factor: float

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The metrics known for at least one model."""
        return tuple(m for m in METRICS if any(c.values.get(m.key) is not None for c in self.models))

    @property
    def all_findings(self) -> tuple[Finding, ...]:
        return self.findings + tuple(f for c in self.models for f in c.report.findings)


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def compare(reports: Sequence[Report], ratio_factor: float = DEFAULT_RATIO_FACTOR) -> Comparison:
    """The reports side by side, the first as the baseline."""
    if len(reports) < 2:
        raise ValueError("a comparison needs at least two models")
    base_values = {m.key: m.read(reports[0]) for m in METRICS}
    columns = []
    for report in reports:
        values = {m.key: m.read(report) for m in METRICS}
        ratios = {k: _ratio(v, base_values[k]) for k, v in values.items()}
        columns.append(ModelColumn(report, values, ratios, {d: c.bytes for d, c in report.counts.by_dtype.items()}))
    findings = [f for column in columns[1:] for f in _misleading(columns[0], column, ratio_factor)]
    return Comparison(tuple(columns), tuple(findings), ratio_factor)


# What a parameter ratio is checked against, in the order a reviewer would name them.
_AGAINST = (("macs", "MACs"), ("measured_peak_bytes", "measured peak memory"),
            ("static_plain_peak_bytes", "memory (weights + activations)"))  # fmt: skip


def _misleading(base: ModelColumn, other: ModelColumn, factor: float) -> list[Finding]:
    """AUD115 when the unique-parameter ratio and a compute or memory ratio differ by more than ``factor``."""
    params = other.ratios.get("unique_params")
    if params is None or params == 0:
        return []
    gaps = []
    complete = all(c.report.compute is not None and c.report.compute.complete for c in (base, other))
    for key, label in _AGAINST:
        ratio = other.ratios.get(key)
        if ratio is None or ratio == 0:
            continue
        if key == "macs" and not complete:
            continue  # MACs with uncosted ops or unknown shapes are a lower bound: no ratio to judge by
        if key == "static_plain_peak_bytes" and other.ratios.get("measured_peak_bytes") is not None:
            continue  # measured memory, where there is one, speaks for memory
        gap = max(ratio / params, params / ratio)
        if gap > factor:
            gaps.append((key, label, ratio, gap))
    if not gaps:
        return []
    a, b = base.report.model.path, other.report.model.path
    parts = "; ".join(f"{ratio:.3g}x its {label}" for _, label, ratio, _ in gaps)
    worst = max(gap for *_, gap in gaps)
    return [
        finding(
            "AUD115",
            f"{b} has {params:.3g}x the unique parameters of {a} ({human(other.values['unique_params'] or 0)} vs "
            f"{human(base.values['unique_params'] or 0)}) but {parts}: the parameter ratio is off by up to "
            f"{worst:.1f}x (more than --ratio-factor {factor:g}).",
            {"baseline": a, "model": b, "param_ratio": round(params, 6), "factor": factor,
             **{f"{key}_ratio": round(ratio, 6) for key, _, ratio, _ in gaps}},  # fmt: skip
            [Subject("model", a), Subject("model", b)],
        )
    ]
