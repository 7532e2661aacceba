"""Static memory: weights as loaded, and the peak of live activations over the graph's schedule.

Two estimates. The plain one walks the main graph in its stored (topological) order: a node's
outputs are allocated when it runs, every value is freed after its last consumer (graph
outputs live to the end), a subgraph body adds its own peak while its node runs. The
runtime-aware one models what onnxruntime on CPU is known to do (see :class:`RuntimeEstimate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from auditor.graph import ModelGraph, OpNode
from auditor.roles import OpKind, Role

_BITS = {
    "float64": 64, "int64": 64, "uint64": 64, "complex64": 64, "complex128": 128, "float32": 32,
    "int32": 32, "uint32": 32, "float16": 16, "bfloat16": 16, "int16": 16, "uint16": 16, "int8": 8,
    "uint8": 8, "bool": 8, "int4": 4, "uint4": 4, "int2": 2, "uint2": 2, "float4e2m1": 4,
}  # fmt: skip
_TIMELINE_POINTS = 400

# onnxruntime on CPU (measured with `benchmarks/memory.py`, onnxruntime 1.32, 2 cores): what a
# session costs before any tensor, and how its arena grows.
SESSION_FIXED_BYTES = 10 * 2**20


def _itemsize_bits(dtype: str | None) -> int:
    if dtype is None:
        return 32
    if dtype.startswith("float8"):
        return 8
    return _BITS.get(dtype, 32)


@dataclass(frozen=True)
class LiveTensor:
    value: str
    bytes: int


@dataclass(frozen=True)
class Liveness:
    """Peak of live activation bytes over one schedule of the main graph."""

    peak_bytes: int
    peak_node: str  # the node running at the peak ('' for a graph without nodes)
    peak_op_type: str
    peak_tensors: tuple[LiveTensor, ...]  # the largest tensors live at the peak
    timeline: tuple[tuple[int, int], ...]  # (node position, live bytes after it), at most 400 points
    unknown_values: int  # activations of unknown size, counted as empty


@dataclass(frozen=True)
class RuntimeEstimate:
    """Peak memory of onnxruntime on CPU, term by term.

    - ``session_bytes``: the fixed cost of a session (kernels, allocator, thread pool).
    - ``creation_bytes``: while a session is created the weights are held twice (the parsed
      model and the session's own copies), so a weight-heavy model peaks there.
    - ``running_bytes``: after creation the weights once, plus the activations twice: the arena
      chunks the first (warm-up) run allocates stay, and the next run allocates the planned
      memory-pattern block beside them. Views (Reshape, Squeeze...) share their input's buffer.
    """

    session_bytes: int
    creation_bytes: int
    running_bytes: int
    activation_arena_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.session_bytes + max(self.creation_bytes, self.running_bytes)

    @property
    def dominant(self) -> str:
        """The term that sets the peak, in words."""
        if self.creation_bytes >= self.running_bytes:
            return "weights held twice while the session is created"
        if 2 * self.activation_arena_bytes >= self.running_bytes - 2 * self.activation_arena_bytes:
            return "activations (warm-up arena plus the memory-pattern block)"
        return "weights"


@dataclass(frozen=True)
class StaticMemory:
    weights_bytes: int  # unique stored bytes plus generated weights at their run-time size
    weights_by_dtype: Mapping[str, int]
    generated_bytes: int
    activations: Liveness  # plain: every output a new buffer
    runtime: RuntimeEstimate

    @property
    def plain_peak_bytes(self) -> int:
        """Weights plus the plain liveness peak of activations."""
        return self.weights_bytes + self.activations.peak_bytes


def value_bytes(model: ModelGraph, value: str, expected: Mapping[str, float]) -> int | None:
    """Bytes of an activation at the bound shapes (None when its size is unknown)."""
    shape = model.shapes.get(value)
    if shape is None:
        return None
    elements = 1.0
    for dim in shape:
        if isinstance(dim, int):
            elements *= dim
        elif dim in expected:
            elements *= expected[dim]
        else:
            return None
    return math.ceil(elements * _itemsize_bits(model.dtypes.get(value)) / 8)


def _is_alias(node: OpNode) -> bool:
    """Whether onnxruntime reuses the input buffer for the output (a view that does not move data)."""
    return (
        bool(node.roles)
        and node.roles[0] is Role.VIEW
        and node.kind is not OpKind.CONVERT
        and node.op_type not in ("Transpose",)  # moves the data
    )


class _LiveWalk:
    """Liveness per scope (a class, not nested closures: recursive closures leave reference cycles)."""

    def __init__(self, model: ModelGraph, expected: Mapping[str, float], alias_views: bool) -> None:
        self.model = model
        self.expected = expected
        self.alias_views = alias_views
        self.memo: dict[str, int] = {}
        self.unknown: set[str] = set()

    def size(self, value: str) -> int:
        if not value or value in self.model.tensors:
            return 0
        found = value_bytes(self.model, value, self.expected)
        if found is None:
            self.unknown.add(value)
            return 0
        return found

    def body_peak(self, scope: str, depth: int) -> int:
        if scope not in self.memo:
            self.memo[scope] = self.scope_peak(scope, depth, False)[0] if depth < 50 else 0
        return self.memo[scope]

    def scope_peak(self, scope: str, depth: int, record: bool) -> tuple[int, str, str, tuple[LiveTensor, ...], list[tuple[int, int]]]:
        nodes = self.model.nodes_by_scope.get(scope, ())
        info = self.model.scopes.get(scope)
        last_use: dict[str, int] = {}
        for position, node in enumerate(nodes):
            for value in node.inputs:
                if value:
                    last_use[value] = position
            for sub in node.invokes:  # values a body reads from outside live while its node runs
                for inner in self.model.nodes_by_scope.get(sub, ()):
                    for value in inner.inputs:
                        if value:
                            last_use[value] = position
        keep = set(info.outputs) if info is not None else set()
        live: dict[str, int] = {}
        owner: dict[str, str] = {}  # alias -> the buffer it views
        refs: dict[str, int] = {}
        total = 0
        for value in info.inputs if info is not None else ():
            if value and value not in self.model.tensors:
                live[value] = self.size(value)
                total += live[value]
        peak, peak_node, peak_op, peak_tensors = total, "", "", tuple(LiveTensor(v, b) for v, b in live.items())
        timeline: list[tuple[int, int]] = []
        for position, node in enumerate(nodes):
            new = 0
            for index, value in enumerate(node.outputs):
                if not value:
                    continue
                if self.alias_views and index == 0 and _is_alias(node) and node.inputs and node.inputs[0] in live:
                    owner[value] = owner.get(node.inputs[0], node.inputs[0])
                    refs[owner[value]] = refs.get(owner[value], 0) + 1
                    continue
                live[value] = self.size(value)
                new += live[value]
            total += new
            body = max((self.body_peak(s, depth + 1) for s in node.invokes), default=0)
            if total + body > peak:
                peak, peak_node, peak_op = total + body, node.id, node.op_type
                if record:
                    largest = sorted(live.items(), key=lambda item: -item[1])[:8]
                    peak_tensors = tuple(LiveTensor(v, b) for v, b in largest)
            # free what this node read for the last time, and outputs nobody reads
            for value in {*node.inputs, *node.outputs}:
                if not value or value in keep or last_use.get(value, -1) > position:
                    continue
                if value in owner:
                    base = owner.pop(value)
                    refs[base] -= 1
                    if refs[base] == 0 and base in live and last_use.get(base, -1) <= position and base not in keep:
                        total -= live.pop(base)
                    continue
                if value in live and not refs.get(value):
                    total -= live.pop(value)
            if record:
                timeline.append((position, total))
        return peak, peak_node, peak_op, peak_tensors, timeline



def liveness(model: ModelGraph, expected: Mapping[str, float] | None = None, alias_views: bool = False) -> Liveness:
    """Peak live activation bytes of the main graph (subgraph bodies at their own peak)."""
    walk = _LiveWalk(model, expected or {}, alias_views)
    peak, node, op, tensors, timeline = walk.scope_peak("", 0, True)
    unknown = walk.unknown
    step = max(1, math.ceil(len(timeline) / _TIMELINE_POINTS))
    sampled = [max(timeline[i : i + step], key=lambda p: p[1]) for i in range(0, len(timeline), step)]
    return Liveness(peak, node, op, tensors, tuple(sampled), len(unknown))


def static_memory(
    model: ModelGraph,
    unique_bytes: int,
    by_dtype: Mapping[str, int],
    generated_bytes: int,
    expected: Mapping[str, float] | None = None,
) -> StaticMemory:
    """Weights and activations at the bound shapes, plainly and as onnxruntime on CPU holds them."""
    plain = liveness(model, expected)
    planned = liveness(model, expected, alias_views=True)
    weights = unique_bytes + generated_bytes
    stored = sum(t.nbytes for t in model.tensors.values())  # the session copies every stored tensor
    runtime = RuntimeEstimate(
        session_bytes=SESSION_FIXED_BYTES,
        creation_bytes=2 * stored,
        running_bytes=stored + generated_bytes + 2 * planned.peak_bytes,
        activation_arena_bytes=planned.peak_bytes,
    )
    return StaticMemory(weights, dict(by_dtype), generated_bytes, plain, runtime)
