"""How often each tensor is applied in one forward pass: uses, loops, branches, functions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from auditor.errors import AuditError
from auditor.graph import ModelGraph, OpNode, Use

_MAX_NESTING = 256


@dataclass(frozen=True)
class LoopInfo:
    """A Loop or Scan node and its trip count, or why it is unknown."""

    node: str
    op_type: str
    trip_count: int | None
    reason: str  # why the trip count is unknown; '' when known


@dataclass(frozen=True)
class Applications:
    """Uses of one tensor and how many times it is applied per forward pass."""

    uses: tuple[Use, ...]
    applications: int | None  # None when a loop on the way has an unknown trip count
    lower_bound: int  # applications with each unknown loop run once
    in_loop: bool = False  # applied inside a Loop or Scan body


def _is_passthrough_condition(model: ModelGraph, body: str) -> bool:
    """True when a Loop body never changes its condition (so the loop runs exactly M times)."""
    scope = model.scopes[body]
    if len(scope.inputs) < 2 or not scope.outputs:
        return False
    cond_out = model.before_identities(scope.outputs[0])
    if cond_out == scope.inputs[1]:
        return True
    constant = model.small_constant(cond_out)
    return constant is not None and constant.size == 1 and bool(constant.reshape(()).item())


def loop_info(model: ModelGraph, node: OpNode) -> LoopInfo:
    """Trip count of a Loop (static M and a condition the body never changes) or a Scan."""
    if node.op_type == "Loop":
        trip = model.small_constant(node.inputs[0]) if node.inputs and node.inputs[0] else None
        if trip is None or trip.size != 1:
            return LoopInfo(node.id, "Loop", None, "the trip count M is computed at run time")
        if trip.dtype.kind not in "iu":
            return LoopInfo(node.id, "Loop", None, f"the trip count M is not an integer ({trip.dtype})")
        if len(node.inputs) > 1 and node.inputs[1]:
            start = model.small_constant(node.inputs[1])
            if start is None:
                return LoopInfo(node.id, "Loop", None, "the loop condition is computed at run time")
            if not bool(start.reshape(()).item()):
                return LoopInfo(node.id, "Loop", 0, "")
        if not node.invokes or not _is_passthrough_condition(model, node.invokes[0]):
            return LoopInfo(node.id, "Loop", None, "the body computes its own stop condition")
        # ONNX runs a loop with M <= 0 zero times
        return LoopInfo(node.id, "Loop", max(int(trip.reshape(()).item()), 0), "")
    # Scan: the length of the first scan input along its scan axis
    count = int(node.attrs.get("num_scan_inputs", 0) or 0)
    if count <= 0 or len(node.inputs) < count:
        return LoopInfo(node.id, "Scan", None, "no scan inputs")
    first = node.inputs[len(node.inputs) - count]
    axes = node.attrs.get("scan_input_axes") or [0]
    shape = model.tensors[first].shape if first in model.tensors else model.value_shapes.get(first)
    axis = int(axes[0])
    if shape and -len(shape) <= axis < len(shape):
        length = shape[axis]
        if length is not None:
            return LoopInfo(node.id, "Scan", int(length), "")
    return LoopInfo(node.id, "Scan", None, "the scanned sequence length is dynamic")


def loops(model: ModelGraph) -> dict[str, LoopInfo]:
    """Every Loop and Scan node with its trip count."""
    return {n.id: loop_info(model, n) for n in model.nodes.values() if n.op_type in ("Loop", "Scan")}


def _enclosing(model: ModelGraph, scope: str) -> list[str]:
    """Scopes one level up: the owner's scope for a subgraph, every caller's for a function."""
    info = model.scopes[scope]
    if info.owner is not None:
        return [model.nodes[info.owner].scope]
    return [model.nodes[caller].scope for caller in model.callers.get(scope, ())]


def count_applications(model: ModelGraph, value: str, loop_table: dict[str, LoopInfo]) -> Applications:
    """Applications per forward of ``value``: each terminal use once, times the trip counts of
    the loops around it; for an ``If``, the branch that applies it most; for a local function,
    once per call site."""
    uses = model.terminal_uses(value)
    direct = Counter(model.nodes[use.node].scope for use in uses)
    relevant: set[str] = set()
    frontier = list(direct)
    while frontier:
        scope = frontier.pop()
        if scope not in relevant:
            relevant.add(scope)
            frontier.extend(_enclosing(model, scope))

    memo: dict[tuple[str, bool], int | None] = {}

    def evaluate(scope: str, lower: bool, depth: int) -> int | None:
        # memoised: functions calling functions would otherwise cost exponential time
        if (scope, lower) in memo:
            return memo[(scope, lower)]
        if depth > _MAX_NESTING:
            raise AuditError("invalid-model", "subgraphs or functions nest too deeply (recursive function?)")
        memo[(scope, lower)] = result = _evaluate(scope, lower, depth)
        return result

    def _evaluate(scope: str, lower: bool, depth: int) -> int | None:
        total = direct.get(scope, 0)
        for node in model.runners_by_scope.get(scope, ()):
            inner = [s for s in node.invokes if s in relevant]
            if not inner:
                continue
            values = [evaluate(s, lower, depth + 1) for s in inner]
            if any(v is None for v in values):
                return None
            known = [v for v in values if v is not None]
            if node.op_type == "If":
                total += max(known)
            elif node.id in loop_table:
                trip = loop_table[node.id].trip_count
                if trip is None:
                    if not lower:
                        return None
                    trip = 1
                total += trip * sum(known)
            else:
                total += sum(known)
        return total

    if not uses:
        return Applications(uses, 0, 0)
    exact = evaluate("", lower=False, depth=0)
    lower = evaluate("", lower=True, depth=0)
    in_loop = any(
        (owner := model.scopes[s].owner) is not None and owner in loop_table for s in relevant
    )
    return Applications(uses, exact, lower or 0, in_loop)
