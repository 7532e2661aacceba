"""HTML renderer: one self-contained file (inline CSS, embedded JSON, no network requests).

It builds a small view model (numbers formatted, bar widths for the chart) and hands it to
the jinja2 templates; it computes no analysis.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2

from auditor._version import __version__
from auditor.analyses.compute import Compute
from auditor.analyses.memory import Liveness, StaticMemory
from auditor.comparison import METRICS, Comparison, ModelColumn
from auditor.findings import RULE_BY_CODE, RULES, Finding, human, human_bytes
from auditor.graph import DimBinding, ShapeInfo
from auditor.measure import Measurement
from auditor.report.json_report import report_dict
from auditor.report.model import Report
from auditor.report.terminal import human_units, metric_text, model_names, ratio_label, ratio_text, shapes_caption

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
    rows: list[tuple[str, str, int | None, str, str]] = [
        ("stored", "Stored", c.stored_params, human(c.stored_params), human_bytes(c.stored_bytes)),
        ("unique", "Unique", c.unique_params, human(c.unique_params), human_bytes(c.unique_bytes)),
        ("applied", "Applied / forward", c.applied_params if c.applied_params is not None else c.applied_params_lower_bound,
         applied_text, ""),
        ("embedding", "Embedding", c.embedding_params, human(c.embedding_params), ""),
    ]  # fmt: skip
    if report.absent:  # a checkpoint without a graph: these need one
        if any(section.startswith("applied") for section in report.absent):
            rows[2] = ("applied", "Applied / forward", None, "unknown (needs a graph)", "")
        rows[3] = ("embedding", "Embedding", None, "unknown (needs a graph)", "")
    if report.experts:
        rows.insert(2, ("active", "Active / token", c.active_params, human(c.active_params), ""))
    if not report.absent:
        rows.append(("unused", "Unused", c.unused_params, human(c.unused_params), ""))
    if c.generated_params:
        rows.append(("generated", "Generated at run time", c.generated_params, human(c.generated_params), ""))
    top = max((r[2] or 0 for r in rows), default=0) or 1
    bars = []
    for key, label, value, text, size in rows:
        exact = f"{value:,}" if value is not None else "unknown"
        if key == "applied" and c.applied_params is None and value is not None:
            exact = f"≥ {exact}"
        bars.append(Bar(key, label, value, text, exact, size, COUNT_MEANINGS[key], 100.0 * (value or 0) / top))
    return bars


# ---- the cost section: input shapes, compute, memory, measured ----------------------------------

TOP_OP_TYPES = 15
TOP_NODES = 10
NAME_LIMIT = 48  # longer node names are shortened in tables (the full name in title=)

# Why a measured peak differs from the static estimates, shown beside the measurement.
MEASURED_GAP = (
    "onnxruntime keeps the arena chunks of the warm-up run and allocates a memory-pattern block on the next run; "
    "fused kernels, prepacked weights and its own allocator rounding change what is held, so the static figures are "
    "estimates to compare models by, not predictions to the byte."
)


@dataclass(frozen=True)
class Amount:
    """A number in human units, with the exact figure for hover (title=)."""

    text: str
    exact: str


def _amount(n: float, unit: str) -> Amount:
    return Amount(human_units(n, unit), f"{round(n):,} {unit}")


def _bytes(n: int) -> Amount:
    return Amount(human_bytes(n), f"{n:,} bytes")


def _short(name: str, limit: int = NAME_LIMIT) -> str:
    """A long node name cut in the middle (its scope prefix and its tail stay readable)."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return f"{name[:head]}…{name[len(name) - (limit - 1 - head):]}"


@dataclass(frozen=True)
class ShapesView:
    inputs: tuple[tuple[str, str], ...]  # (input, "1×8×16")
    dims: tuple[DimBinding, ...]
    unused: tuple[str, ...]
    not_inferred: str | None  # why shape inference did not run, when it did not
    unknown_values: int
    unknown_by_op: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class OpRow:
    op_type: str
    count: int
    macs: Amount
    flops: Amount


@dataclass(frozen=True)
class NodeRow:
    name: str
    short: str
    op_type: str
    macs: Amount  # per run
    flops: Amount  # per run
    runs: str
    flops_total: Amount  # per forward: per run times runs


@dataclass(frozen=True)
class BlockRow:
    first_tensor: str
    blocks: int
    macs: Amount
    flops: Amount


@dataclass(frozen=True)
class ComputeView:
    macs: Amount
    flops: Amount
    lower_macs: Amount | None  # when the lightest If branches cost less
    lower_flops: Amount | None
    op_rows: tuple[OpRow, ...]
    others: OpRow | None  # the op types past the top ones, together
    nodes: tuple[NodeRow, ...]
    node_count: int
    blocks: tuple[BlockRow, ...]
    uncosted: tuple[tuple[str, int], ...]
    unknown_shape: tuple[tuple[str, int], ...]
    unknown_trip_loops: tuple[str, ...]
    routed: tuple[tuple[str, str], ...]  # (expert group node, expected tokens)


@dataclass(frozen=True)
class Tick:
    at: float  # x or y in the chart's coordinates
    label: str


@dataclass(frozen=True)
class Chart:
    """The liveness timeline as plain SVG geometry (viewBox coordinates, y down)."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    line: str  # path data
    area: str
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    peak_y: float
    peak_label: str
    peak_title: str
    points: int


@dataclass(frozen=True)
class RuntimeTerm:
    key: str
    label: str
    amount: Amount
    meaning: str
    dominant: bool


@dataclass(frozen=True)
class MemoryView:
    weights: Amount
    by_dtype: tuple[tuple[str, Amount], ...]
    generated: Amount | None
    activation_peak: Amount
    peak_node: str
    peak_op_type: str
    peak_tensors: tuple[tuple[str, str, Amount], ...]  # (name, shortened, bytes)
    unknown_values: int
    plain_peak: Amount
    chart: Chart | None
    terms: tuple[RuntimeTerm, ...]
    runtime_peak: Amount
    dominant: str


@dataclass(frozen=True)
class MeasuredView:
    device: str
    provider: str
    runs: int
    warmup: int
    peak: Amount
    baseline: Amount
    session: Amount
    creation_peak: Amount
    first_run_peak: Amount
    static_peak: Amount | None  # the runtime-aware estimate
    plain_peak: Amount | None
    ratio_static: str  # static estimate / measured
    ratio_plain: str
    median_ms: str
    p90_ms: str
    spread_ms: str
    gap: str


@dataclass(frozen=True)
class CostView:
    caption: str  # "x 1×8×16"
    shapes: ShapesView | None
    compute: ComputeView | None
    memory: MemoryView | None
    measured: MeasuredView | None


def _shape_text(shape: tuple[int, ...], sep: str = "×") -> str:
    return sep.join(str(d) for d in shape) if shape else "scalar"


def _shapes_view(info: ShapeInfo) -> ShapesView:
    return ShapesView(
        inputs=tuple((name, _shape_text(shape)) for name, shape in info.inputs.items()),
        dims=tuple(info.dims),
        unused=tuple(info.unused),
        not_inferred=info.inferred.removeprefix("none:").strip() if info.inferred.startswith("none") else None,
        unknown_values=info.unknown_values,
        unknown_by_op=tuple(sorted(info.unknown_by_op.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def _compute_view(compute: Compute) -> ComputeView:
    differs = compute.macs_lower_bound != compute.macs or compute.flops_lower_bound != compute.flops
    top, rest = compute.by_op_type[:TOP_OP_TYPES], compute.by_op_type[TOP_OP_TYPES:]
    others = None
    if rest:
        others = OpRow(
            f"{len(rest)} other op types",
            sum(t.count for t in rest),
            _amount(sum(t.macs for t in rest), "MACs"),
            _amount(sum(t.flops for t in rest), "FLOPs"),
        )
    return ComputeView(
        macs=_amount(compute.macs, "MACs"),
        flops=_amount(compute.flops, "FLOPs"),
        lower_macs=_amount(compute.macs_lower_bound, "MACs") if differs else None,
        lower_flops=_amount(compute.flops_lower_bound, "FLOPs") if differs else None,
        op_rows=tuple(OpRow(t.op_type, t.count, _amount(t.macs, "MACs"), _amount(t.flops, "FLOPs")) for t in top),
        others=others,
        nodes=tuple(
            NodeRow(n.node, _short(n.node), n.op_type, _amount(n.macs, "MACs"), _amount(n.flops, "FLOPs"),
                    f"{n.runs:g}", _amount(n.flops * n.runs, "FLOPs"))  # fmt: skip
            for n in compute.nodes[:TOP_NODES]  # heaviest first (FLOPs times runs)
        ),
        node_count=len(compute.nodes),
        blocks=tuple(
            BlockRow(b.first_tensor, b.blocks, _amount(b.macs_per_block, "MACs"), _amount(b.flops_per_block, "FLOPs"))
            for b in compute.blocks
        ),
        uncosted=tuple(compute.uncosted_ops.items()),
        unknown_shape=tuple(compute.unknown_shape_ops.items()),
        unknown_trip_loops=tuple(compute.unknown_trip_loops),
        routed=tuple((group, f"{tokens:.4g}") for group, tokens in compute.routed_tokens.items()),
    )


_BYTE_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1))


def _nice_step(span: float, most: int) -> float:
    """The smallest 1, 2 or 5 times a power of ten that splits ``span`` into at most ``most`` steps."""
    raw = span / most
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-9))


def _timeline_chart(live: Liveness) -> Chart | None:
    """The liveness timeline as SVG paths: a viewBox 420 wide keeps its 14-unit text about 11 px tall at 360 px."""
    if not live.timeline:
        return None
    width, height, left, right, top, bottom = 420, 224, 72, 408, 20, 180
    highest = max(live.peak_bytes, max(b for _, b in live.timeline), 1)
    unit, size = next((u, s) for u, s in _BYTE_UNITS if highest >= s)
    step = _nice_step(highest / size, 4)
    if size == 1:  # no fractions of a byte
        step = max(step, 1.0)
    ceiling = math.ceil(highest / size / step - 1e-9) * step  # in units
    scale_y = (bottom - top) / (ceiling * size)
    first, last = live.timeline[0][0], live.timeline[-1][0]
    span = max(last - first, 1)

    def x_at(position: float) -> float:
        return left + (position - first) * (right - left) / span

    def y_at(value: float) -> float:
        return bottom - value * scale_y

    points = [(x_at(p), y_at(b)) for p, b in live.timeline]
    if len(points) == 1:  # one node: a level across the plot
        points = [(left, points[0][1]), (right, points[0][1])]
    line = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points)
    area = f"M{points[0][0]:.1f},{bottom} L" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points) + f" L{points[-1][0]:.1f},{bottom} Z"
    ticks = int(round(ceiling / step))
    y_ticks = tuple(Tick(round(y_at(k * step * size), 1), f"{k * step:.4g} {unit}" if k else "0") for k in range(ticks + 1))
    x_ticks = (Tick(left, str(first)), Tick(right, str(last))) if last > first else (Tick(left, str(first)),)
    node = _short(live.peak_node, 22) if live.peak_node else ""
    label = f"peak {human_bytes(live.peak_bytes)}" + (f" at {node}" if node else "")
    title = f"peak {live.peak_bytes:,} bytes" + (f" while node {live.peak_node} ({live.peak_op_type}) runs" if live.peak_node else "")
    return Chart(width, height, left, right, top, bottom, line, area, y_ticks, x_ticks,
                 round(y_at(live.peak_bytes), 1), label, title, len(live.timeline))  # fmt: skip


RUNTIME_MEANINGS = {
    "session": "Fixed cost of an onnxruntime session: kernels, allocator, thread pool.",
    "creation": "While the session is created the weights are held twice: the parsed model and the session's own copies.",
    "running": "After creation: the weights once, plus the activations twice (the warm-up run's arena chunks stay "
    "and the next run allocates the planned memory-pattern block beside them; views share their input's buffer).",
}


def _memory_view(memory: StaticMemory) -> MemoryView:
    live, runtime = memory.activations, memory.runtime
    creation_dominates = runtime.creation_bytes >= runtime.running_bytes
    terms = (
        RuntimeTerm("session", "Session", _bytes(runtime.session_bytes), RUNTIME_MEANINGS["session"], False),
        RuntimeTerm("creation", "Creation (weights held twice)", _bytes(runtime.creation_bytes), RUNTIME_MEANINGS["creation"],
                    creation_dominates),
        RuntimeTerm("running", "Running (weights + activations twice)", _bytes(runtime.running_bytes),
                    RUNTIME_MEANINGS["running"], not creation_dominates),
    )  # fmt: skip
    return MemoryView(
        weights=_bytes(memory.weights_bytes),
        by_dtype=tuple((dtype, _bytes(n)) for dtype, n in memory.weights_by_dtype.items()),
        generated=_bytes(memory.generated_bytes) if memory.generated_bytes else None,
        activation_peak=_bytes(live.peak_bytes),
        peak_node=live.peak_node,
        peak_op_type=live.peak_op_type,
        peak_tensors=tuple((t.value, _short(t.value), _bytes(t.bytes)) for t in live.peak_tensors),
        unknown_values=live.unknown_values,
        plain_peak=_bytes(memory.plain_peak_bytes),
        chart=_timeline_chart(live),
        terms=terms,
        runtime_peak=_bytes(runtime.peak_bytes),
        dominant=runtime.dominant,
    )


def _ratio(estimate: int, measured: int) -> str:
    return ratio_text(estimate, measured) if measured > 0 else "n/a"


def _measured_view(m: Measurement, memory: StaticMemory | None) -> MeasuredView:
    static = memory.runtime.peak_bytes if memory is not None else None
    plain = memory.plain_peak_bytes if memory is not None else None
    return MeasuredView(
        device=m.device,
        provider=m.provider,
        runs=m.runs,
        warmup=m.warmup,
        peak=_bytes(m.peak_bytes),
        baseline=_bytes(m.baseline_bytes),
        session=_bytes(m.session_bytes),
        creation_peak=_bytes(m.creation_peak_bytes),
        first_run_peak=_bytes(m.first_run_peak_bytes),
        static_peak=_bytes(static) if static is not None else None,
        plain_peak=_bytes(plain) if plain is not None else None,
        ratio_static=_ratio(static, m.peak_bytes) if static is not None else "n/a",
        ratio_plain=_ratio(plain, m.peak_bytes) if plain is not None else "n/a",
        median_ms=f"{m.median_ms:.3g}",
        p90_ms=f"{m.p90_ms:.3g}",
        spread_ms=f"{m.spread_ms:.3g}",
        gap=MEASURED_GAP,
    )


def cost_view(report: Report) -> CostView:
    """The cost section's view model: every figure of the report formatted, nothing computed anew."""
    return CostView(
        caption=shapes_caption(report.shapes),
        shapes=_shapes_view(report.shapes) if report.shapes is not None else None,
        compute=_compute_view(report.compute) if report.compute is not None else None,
        memory=_memory_view(report.memory) if report.memory is not None else None,
        measured=_measured_view(report.measured, report.memory) if report.measured is not None else None,
    )


# ---- findings, summary cards and tensor tables: what a reviewer acts on -----------------------------

SUBJECTS_SHOWN = 6  # a finding names this many subjects; the rest are counted
READERS_SHOWN = 8  # readers of a shared tensor listed; the rest are counted
EVIDENCE_ITEMS = 4  # items of a list shown in one evidence value (all of them in title=)
SHORT_NAME = 40  # tensor, node and model names longer than this are cut in the middle


@dataclass(frozen=True)
class Named:
    """A name as shown (cut in the middle when long) and whole (for title=)."""

    text: str
    full: str
    detail: str = ""  # for a tensor: shape, element type, the nodes that read it


def _named(name: str, limit: int = SHORT_NAME) -> Named:
    return Named(_short(name, limit), name)


def _tensor(report: Report, tensor_id: str) -> Named:
    """A tensor's name with its shape, element type and readers, so a reviewer can tell which weight it is."""
    facts = report.tensors.get(tensor_id)
    if facts is None:
        return _named(tensor_id)
    shape = "×".join(map(str, facts.shape)) or "scalar"
    readers = ", ".join(_short(r, SHORT_NAME) for r in facts.readers[:2])
    more = f" +{len(facts.readers) - 2}" if len(facts.readers) > 2 else ""
    detail = f"{shape} {facts.dtype}" + (f" · read by {readers}{more}" if readers else " · read by no node")
    if facts.source:
        detail += f" · from {_short(facts.source, SHORT_NAME)}"
    return Named(_short(tensor_id, SHORT_NAME), tensor_id, detail)


@dataclass(frozen=True)
class EvidenceItem:
    key: str  # as in the JSON report
    label: str
    text: str  # in human units
    exact: str


@dataclass(frozen=True)
class FindingView:
    code: str
    slug: str
    severity: str
    message: str
    evidence: tuple[EvidenceItem, ...]
    subjects: tuple[tuple[str, Named], ...]  # (kind, name)
    more_subjects: int
    explanation: str
    action: str


def _evidence_value(key: str, value: Any) -> tuple[str, str]:
    """(shown, exact) for one evidence value, in the unit its key names (``*_ratio``; a ``share``,
    ``bytes`` or ``params`` word); a list or mapping item by item."""
    if value is None:
        return "unknown", "unknown"
    if isinstance(value, bool):
        return ("yes", "yes") if value else ("no", "no")
    if isinstance(value, (int, float)):
        words = key.split("_")
        if words[-1] == "ratio" or key == "factor":
            return f"{value:.3g}x", f"{value:g}"
        if "share" in words:
            return f"{value:.0%}", f"{value:g}"
        if "bytes" in words:
            return human_bytes(value), f"{value:,} bytes"
        if "params" in words or key == "claim":
            return human(value), f"{value:,}"
        if isinstance(value, float):
            return f"{value:.3g}", f"{value:g}"
        return f"{value:,}", f"{value:,}"
    if isinstance(value, str):
        return _short(value, SHORT_NAME), value
    if isinstance(value, Mapping):
        parts = [(f"{k} {shown}", f"{k} {exact}") for k, v in value.items() for shown, exact in [_evidence_value(key, v)]]
    elif isinstance(value, (list, tuple)):
        parts = [_evidence_value(key, v) for v in value]
    else:
        return str(value), str(value)
    if not parts:
        return "none", "none"
    shown = ", ".join(p[0] for p in parts[:EVIDENCE_ITEMS])
    if len(parts) > EVIDENCE_ITEMS:
        shown += f" and {len(parts) - EVIDENCE_ITEMS} more"
    return shown, ", ".join(p[1] for p in parts)


def finding_view(f: Finding) -> FindingView:
    """A finding as the page shows it: message, evidence in human units, subjects, the rule's advice."""
    rule = RULE_BY_CODE[f.code]
    return FindingView(
        code=f.code,
        slug=f.slug,
        severity=f.severity,
        message=f.message,
        evidence=tuple(EvidenceItem(k, k.replace("_", " "), *_evidence_value(k, v)) for k, v in f.evidence.items()),
        subjects=tuple((s.kind, _named(s.name)) for s in f.subjects[:SUBJECTS_SHOWN]),
        more_subjects=max(len(f.subjects) - SUBJECTS_SHOWN, 0),
        explanation=rule.explanation,
        action=rule.action,
    )


@dataclass(frozen=True)
class Card:
    """One headline figure at the top of the report."""

    key: str
    label: str
    value: Amount
    note: str


def _params(n: int) -> Amount:
    return Amount(human(n), f"{n:,} parameters")


def summary_cards(report: Report) -> tuple[Card, ...]:
    """The figures a reviewer looks at first: counts, compute, memory, the measurement if any."""
    c = report.counts
    cards = [
        Card("stored", "Stored params", _params(c.stored_params), f"{human_bytes(c.stored_bytes)} in the file"),
        Card("unique", "Unique params", _params(c.unique_params),
             human_bytes(c.unique_bytes) + (f"; {human(c.wasted_params)} stored twice" if c.wasted_params else "")),
    ]  # fmt: skip
    if c.applied_params is not None:
        per_unique = c.applied_per_unique
        note = "per forward pass" + (f", {per_unique:.3g}x the unique" if per_unique is not None and per_unique != 1 else "")
        cards.append(Card("applied", "Applied params", _params(c.applied_params), note))
    else:
        lower = c.applied_params_lower_bound
        cards.append(Card("applied", "Applied params", Amount(f"≥ {human(lower)}", f"≥ {lower:,} parameters"),
                          "a loop's trip count is unknown"))  # fmt: skip
    if report.experts:
        cards.append(Card("active", "Active params", _params(c.active_params), "per token (k of n experts)"))
    if report.compute is not None:
        flops = human_units(report.compute.flops, "FLOPs")
        cards.append(Card("macs", "MACs", _amount(report.compute.macs, "MACs"), f"{flops} at {shapes_caption(report.shapes)}"))
    else:
        cards.append(Card("macs", "MACs", Amount("not costed", "no compute figures"), "input shapes not bound"))
    if report.memory is not None:
        memory = report.memory
        cards.append(Card("memory", "Weights + activations", _bytes(memory.plain_peak_bytes),
                          f"static peak; activations {human_bytes(memory.activations.peak_bytes)}"))
        cards.append(Card("runtime", "onnxruntime CPU", _bytes(memory.runtime.peak_bytes),
                          f"static estimate, set by {memory.runtime.dominant}"))  # fmt: skip
    if report.measured is not None:
        m = report.measured
        cards.append(Card("measured", "Measured peak", _bytes(m.peak_bytes), f"{m.device}; latency median {m.median_ms:.3g} ms"))
    return tuple(cards)


@dataclass(frozen=True)
class Reader:
    op_type: str
    node: Named


@dataclass(frozen=True)
class SharedRow:
    tensor: Named
    params: str
    uses: int
    applications: str
    readers: tuple[Reader, ...]
    more_readers: int


def _reader(consumer: str) -> Reader:
    """'MatMul layer0/matmul' (how the sharing analysis names an applying node) -> its op type and node."""
    op_type, _, node = consumer.partition(" ")
    return Reader(op_type, _named(node)) if node else Reader("", _named(op_type))


def shared_rows(report: Report) -> tuple[SharedRow, ...]:
    return tuple(
        SharedRow(
            tensor=_tensor(report, s.tensor),
            params=f"{s.numel:,}",
            uses=s.uses,
            applications=f"{s.applications:g}" if s.applications is not None else "unknown",
            readers=tuple(_reader(c) for c in s.consumers[:READERS_SHOWN]),
            more_readers=max(len(s.consumers) - READERS_SHOWN, 0),
        )
        for s in report.shared
    )


@dataclass(frozen=True)
class CopyRow:
    kept: Named
    copies: tuple[Named, ...]
    relation: str
    wasted_params: str
    wasted_bytes: Amount


def copy_rows(report: Report) -> tuple[CopyRow, ...]:
    return tuple(
        CopyRow(
            kept=_tensor(report, g.tensors[0]),
            copies=tuple(_tensor(report, t) for t in g.tensors[1:]),
            relation=g.relation + (f" (×{g.scale:.6g})" if g.scale is not None else ""),
            wasted_params=f"{g.wasted_params:,}",
            wasted_bytes=_bytes(g.wasted_bytes),
        )
        for g in report.duplicates
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["human"] = human
    env.filters["human_bytes"] = human_bytes
    return env


def _generated() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def render_html(report: Report) -> str:
    """The report as one HTML document."""
    template = _environment().get_template("report.html.j2")
    return template.render(
        report=report,
        data=report_dict(report),
        bars=_bars(report),
        cost=cost_view(report),
        findings=[finding_view(f) for f in report.findings],
        cards=summary_cards(report),
        shared=shared_rows(report),
        copies=copy_rows(report),
        rules=[rule for rule in RULES if rule.scope == "model"],
        version=__version__,
        generated=_generated(),
    )


# ---- a comparison of several models --------------------------------------------------------------


@dataclass(frozen=True)
class ModelHead:
    anchor: str  # id of the model's section on the page
    name: str
    path: str
    baseline: bool
    producer: str
    nodes: int
    link: str | None  # the model's own report, when the caller wrote one


@dataclass(frozen=True)
class RatioCell:
    text: str  # the value in human units
    ratio: str | None  # "0.167x"; None in the baseline's column
    title: str  # the exact value (and ratio)
    flagged: bool  # a ratio an AUD115 finding names for this model


@dataclass(frozen=True)
class RatioRow:
    key: str
    label: str
    cells: tuple[RatioCell, ...]


@dataclass(frozen=True)
class ChartBar:
    key: str
    label: str
    kind: str  # params | compute | memory (the bar's colour)
    y: float
    length: float  # viewBox units; 0 when the ratio is unknown
    ratio: str
    title: str
    flagged: bool


@dataclass(frozen=True)
class RatioChart:
    """One model's ratios to the baseline as horizontal bars (viewBox coordinates); every chart of a
    comparison shares one scale, so the charts read side by side."""

    model: ModelHead
    width: int
    height: int
    left: int
    row: int
    one_x: float  # where the baseline's 1x falls
    axis_y: int
    bars: tuple[ChartBar, ...]


@dataclass(frozen=True)
class CardFigure:
    key: str
    label: str
    value: Amount
    ratio: str | None


@dataclass(frozen=True)
class ModelCard:
    model: ModelHead
    figures: tuple[CardFigure, ...]
    findings: int


@dataclass(frozen=True)
class FindingGroup:
    anchor: str
    title: str
    model: ModelHead | None  # None: the comparison's own findings
    findings: tuple[FindingView, ...]


@dataclass(frozen=True)
class ModelSection:
    model: ModelHead
    figures: tuple[tuple[str, Amount], ...]
    shared: int
    copies: int
    findings: tuple[tuple[str, str, str], ...]  # (code, slug, severity)
    group: str  # anchor of its findings on the page


@dataclass(frozen=True)
class CompareView:
    models: tuple[ModelHead, ...]
    groups: tuple[FindingGroup, ...]
    cards: tuple[ModelCard, ...]
    rows: tuple[RatioRow, ...]
    charts: tuple[RatioChart, ...]
    log_scale: bool
    sections: tuple[ModelSection, ...]
    ratio_factor: str
    finding_count: int


# The ratios charted side by side: parameters beside compute and memory.
CHART_METRICS = (
    ("unique_params", "unique params", "params"),
    ("applied_params", "applied params", "params"),
    ("macs", "MACs", "compute"),
    ("static_plain_peak_bytes", "memory", "memory"),
    ("measured_peak_bytes", "measured peak", "memory"),
    ("latency_median_ms", "latency", "compute"),
)
# The figures of a model's card (ratios beside them).
CARD_METRICS = (("unique_params", "unique params"), ("applied_params", "applied params"), ("macs", "MACs"),
                ("static_plain_peak_bytes", "weights + activations"), ("measured_peak_bytes", "measured peak"))  # fmt: skip
# The figures of a model's section.
SECTION_METRICS = ("stored_params", "unique_params", "applied_params", "active_params", "embedding_params", "macs",
                   "flops", "static_plain_peak_bytes", "static_peak_bytes", "measured_peak_bytes", "latency_median_ms")  # fmt: skip


def _metric_amount(value: float | None, unit: str) -> Amount:
    if value is None:
        return Amount("-", "unknown")
    exact = {"params": "parameters", "bytes": "bytes", "macs": "MACs", "flops": "FLOPs"}.get(unit)
    return Amount(metric_text(value, unit), f"{round(value):,} {exact}" if exact else f"{value:.6g} {unit}")


def _flagged(comparison: Comparison, column: ModelColumn) -> frozenset[str]:
    """The metric keys an AUD115 finding names for this model: its parameter ratio and the ratios that contradict it."""
    keys: set[str] = set()
    for f in comparison.findings:
        if f.code == "AUD115" and f.evidence.get("model") == column.report.model.path:
            keys.add("unique_params")
            keys.update(k.removesuffix("_ratio") for k in f.evidence if k.endswith("_ratio") and k != "param_ratio")
    return frozenset(keys)


LOG_SCALE_ABOVE = 10.0  # when the ratios charted span more than this, bars follow a log scale


@dataclass(frozen=True)
class RatioScale:
    """Ratio -> bar length, one for all charts of a comparison: linear from 0 to the largest ratio, or,
    when the ratios span more than LOG_SCALE_ABOVE, logarithmic from half the smallest to the largest."""

    low: float
    high: float
    log: bool

    def at(self, ratio: float, plot: float) -> float:
        if not self.log:
            return plot * ratio / self.high
        span = math.log(self.high / self.low)
        return plot * max(math.log(max(ratio, self.low) / self.low), 0.0) / span


def _ratio_scale(ratios: Sequence[float]) -> RatioScale:
    positive = [r for r in ratios if r > 0]
    high, low = max([1.0, *positive]), min([1.0, *positive])
    if high / low > LOG_SCALE_ABOVE:
        return RatioScale(low / 2, high, True)
    return RatioScale(0.0, high, False)


def _ratio_chart(head: ModelHead, column: ModelColumn, metrics: Sequence[tuple[str, str, str]], scale: RatioScale,
                 flagged: frozenset[str]) -> RatioChart:  # fmt: skip
    """Bars of the ratios to the baseline: a viewBox 400 wide keeps 14-unit text about 12 px tall at 360 px."""
    width, left, plot, row = 400, 118, 200, 30
    units = {m.key: m.unit for m in METRICS}
    bars = []
    for i, (key, label, kind) in enumerate(metrics):
        ratio, value = column.ratios.get(key), column.values.get(key)
        title = f"{label}: {_metric_amount(value, units[key]).exact}" + (f", {ratio:.6g}x the baseline" if ratio is not None else "")
        bars.append(ChartBar(key, label, kind, i * row, scale.at(ratio, plot) if ratio is not None else 0.0,
                             ratio_label(ratio), title, key in flagged))  # fmt: skip
    axis_y = len(metrics) * row
    return RatioChart(head, width, axis_y + 24, left, row, left + scale.at(1.0, plot), axis_y, tuple(bars))


def compare_view(comparison: Comparison, links: Sequence[str | None] | None = None) -> CompareView:
    """The comparison page's view model: every figure formatted, the ratios as the comparison has them."""
    names = model_names(comparison)
    heads = tuple(
        ModelHead(f"model-{i + 1}", name, c.report.model.path, i == 0, c.report.model.producer or "unknown producer",
                  c.report.model.nodes, links[i] if links is not None and i < len(links) else None)  # fmt: skip
        for i, (name, c) in enumerate(zip(names, comparison.models))
    )
    metrics = comparison.metrics
    units = {m.key: m.unit for m in metrics}
    flagged = [_flagged(comparison, c) for c in comparison.models]
    rows = []
    for m in metrics:
        cells = []
        for i, c in enumerate(comparison.models):
            value, ratio = c.values.get(m.key), c.ratios.get(m.key)
            amount = _metric_amount(value, m.unit)
            if i == 0 or value is None:
                cells.append(RatioCell(amount.text, None, amount.exact + (" (baseline)" if i == 0 else ""), False))
            else:
                title = amount.exact + (f" = {ratio:.6g}x the baseline" if ratio is not None else " (no ratio: the baseline has none)")
                cells.append(RatioCell(amount.text, ratio_label(ratio), title, m.key in flagged[i]))
        rows.append(RatioRow(m.key, m.label, tuple(cells)))
    charted = [item for item in CHART_METRICS if item[0] in units]
    known = [c.ratios.get(key) for c in comparison.models for key, _, _ in charted]
    scale = _ratio_scale([r for r in known if r is not None])
    charts = tuple(_ratio_chart(h, c, charted, scale, f) for h, c, f in zip(heads, comparison.models, flagged))
    cards = tuple(
        ModelCard(
            h,
            tuple(
                CardFigure(key, label, _metric_amount(c.values.get(key), units[key]),
                           None if i == 0 else ratio_label(c.ratios.get(key)))  # fmt: skip
                for key, label in CARD_METRICS
                if key in units and c.values.get(key) is not None
            ),
            len(c.report.findings),
        )
        for i, (h, c) in enumerate(zip(heads, comparison.models))
    )
    groups = [FindingGroup("findings-comparison", "Comparison", None, tuple(finding_view(f) for f in comparison.findings))]
    groups += [
        FindingGroup(f"findings-{h.anchor}", h.name, h, tuple(finding_view(f) for f in c.report.findings))
        for h, c in zip(heads, comparison.models)
    ]
    sections = tuple(
        ModelSection(
            h,
            tuple((m.label, _metric_amount(c.values.get(m.key), m.unit)) for m in metrics if m.key in SECTION_METRICS),
            len(c.report.shared),
            len(c.report.duplicates),
            tuple((f.code, f.slug, f.severity) for f in c.report.findings),
            f"findings-{h.anchor}",
        )
        for h, c in zip(heads, comparison.models)
    )
    return CompareView(heads, tuple(groups), cards, tuple(rows), charts, scale.log, sections, f"{comparison.ratio_factor:g}",
                       len(comparison.all_findings))  # fmt: skip


def _comparison_data(comparison: Comparison) -> dict[str, Any]:
    """The figures embedded in the page as JSON, for scripts that read the file."""
    return {
        "ratio_factor": comparison.ratio_factor,
        "models": [{"path": c.report.model.path, "values": dict(c.values), "ratios": dict(c.ratios)} for c in comparison.models],
        "findings": [
            {"code": f.code, "slug": f.slug, "severity": f.severity, "message": f.message, "evidence": dict(f.evidence),
             "subjects": [{"kind": s.kind, "name": s.name} for s in f.subjects]}  # fmt: skip
            for f in comparison.findings
        ],
    }


def render_comparison_html(comparison: Comparison, links: Sequence[str | None] | None = None) -> str:
    """The comparison as one HTML document; ``links`` (one per model, optional) point at each model's own report."""
    codes = {f.code for f in comparison.all_findings}
    rules = [rule for rule in RULES if rule.code in codes or rule.scope == "comparison"]
    template = _environment().get_template("compare.html.j2")
    return template.render(
        view=compare_view(comparison, links),
        data=_comparison_data(comparison),
        rules=rules,
        version=__version__,
        generated=_generated(),
    )
