"""How often each tensor is applied in one forward pass: reads, slices, loops, branches, experts.

A *read* is a node applying (part of) a source tensor: found by following the tensor through
the nodes that pass it on (views, slices, loop-carried values), carrying the part of the tensor
that each value holds. Per tensor, the reads give its uses, the elements it applies and the
elements it covers (disjoint slices cover a tensor once). Per model, applied parameters are
summed per scope and combined up the scope tree: a loop body times its trip count, an ``If``
as its heaviest branch (its lightest for the lower bound), a function once per call, and a read
of an expert bank as k of its n experts.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from auditor.errors import AuditError
from auditor.graph import ModelGraph, OpNode, Use
from auditor.roles import OpKind, Part, Role, Routing

_MAX_NESTING = 256
_MASK_LIMIT = 1 << 24  # above this many elements, overlapping parts are not unioned exactly
WEIGHT_ROLES = frozenset({Role.WEIGHT, Role.LOOKUP, Role.GATHER, Role.EXPERT_BANK, Role.QUANTIZED})

Axes = tuple["range | tuple[int, ...] | np.ndarray | None", ...]
_WHOLE: tuple[Axes, ...] = tuple(tuple(None for _ in range(rank)) for rank in range(9))  # shared, not one per tensor


@dataclass(frozen=True)
class LoopInfo:
    """A Loop or Scan node and its trip count, or why it is unknown."""

    node: str
    op_type: str
    trip_count: int | None
    reason: str  # why the trip count is unknown; '' when known


@dataclass(frozen=True, slots=True)
class Read:
    """A node applying ``elements`` elements of a source tensor, once per run of its scope.

    ``axes`` are the indices read per axis in the source's own coordinates (None per axis: all
    of it); ``axes`` is None when the path went through a layout change (a Transpose before a
    Slice), so only the count is known.
    """

    use: Use
    role: Role
    elements: int
    axes: Axes | None
    routing: Routing | None = None


@dataclass(frozen=True, slots=True)
class Applications:
    """Reads of one tensor and the elements it applies per forward pass."""

    reads: tuple[Read, ...]
    applied: int | None  # elements applied per forward; None when a loop on the way has an unknown trip count
    lower_bound: int  # the same with each unknown loop run once
    covered: int  # distinct elements applied at least once
    in_loop: bool = False  # applied inside a Loop or Scan body

    @property
    def uses(self) -> tuple[Use, ...]:
        return tuple(read.use for read in self.reads)

    @property
    def repeated(self) -> bool:
        """Some element is applied more than once per forward pass (or a loop of unknown length reads it)."""
        applied = self.applied if self.applied is not None else self.lower_bound
        return applied > self.covered or (self.in_loop and self.applied is None)


@dataclass(frozen=True)
class BranchChoice:
    """An ``If`` whose branches apply different numbers of parameters."""

    node: str
    branches: tuple[int | None, ...]  # applied parameters of each branch (then, else)


@dataclass(frozen=True)
class AppliedTotals:
    """Parameter elements applied per forward pass by the whole model."""

    applied: int | None  # heaviest branch of each If; None if a loop's trip count is unknown
    lower_bound: int  # lightest branch of each If, each unknown loop once
    branches: tuple[BranchChoice, ...]  # Ifs whose branches differ


# ---- loops ---------------------------------------------------------------------------------


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
    if node.kind is OpKind.LOOP:
        trip = model.small_constant(node.inputs[0]) if node.inputs and node.inputs[0] else None
        if trip is None or trip.size != 1:
            return LoopInfo(node.id, node.op_type, None, "the trip count M is computed at run time")
        if trip.dtype.kind not in "iu":
            return LoopInfo(node.id, node.op_type, None, f"the trip count M is not an integer ({trip.dtype})")
        if len(node.inputs) > 1 and node.inputs[1]:
            start = model.small_constant(node.inputs[1])
            if start is None:
                return LoopInfo(node.id, node.op_type, None, "the loop condition is computed at run time")
            if not bool(start.reshape(()).item()):
                return LoopInfo(node.id, node.op_type, 0, "")
        if not node.invokes or not _is_passthrough_condition(model, node.invokes[0]):
            return LoopInfo(node.id, node.op_type, None, "the body computes its own stop condition")
        # ONNX runs a loop with M <= 0 zero times
        return LoopInfo(node.id, node.op_type, max(int(trip.reshape(()).item()), 0), "")
    # Scan: the length of the first scan input along its scan axis
    count = int(node.attrs.get("num_scan_inputs", 0) or 0)
    if count <= 0 or len(node.inputs) < count:
        return LoopInfo(node.id, node.op_type, None, "no scan inputs")
    first = node.inputs[len(node.inputs) - count]
    axes = node.attrs.get("scan_input_axes") or [0]
    shape = model.tensors[first].shape if first in model.tensors else model.value_shapes.get(first)
    axis = int(axes[0])
    if shape and -len(shape) <= axis < len(shape):
        length = shape[axis]
        if length is not None:
            return LoopInfo(node.id, node.op_type, int(length), "")
    return LoopInfo(node.id, node.op_type, None, "the scanned sequence length is dynamic")


def loops(model: ModelGraph) -> dict[str, LoopInfo]:
    """Every Loop and Scan node with its trip count."""
    return {n.id: loop_info(model, n) for n in model.nodes.values() if n.kind in (OpKind.LOOP, OpKind.SCAN)}


# ---- reads ---------------------------------------------------------------------------------


def _compose(outer: Axes, part: Part, shape: tuple[int, ...]) -> Axes:
    """Indices of the source read by ``part`` of a value that holds ``outer`` of it."""
    composed: list[range | tuple[int, ...] | np.ndarray | None] = []
    for axis, size in enumerate(shape):
        current = outer[axis] if axis < len(outer) else None
        picked = part.axes[axis] if axis < len(part.axes) else None
        if picked is None:
            composed.append(current)
        elif current is None:
            composed.append(picked)
        else:
            composed.append(np.asarray(current)[np.asarray(picked, dtype=np.int64)])
    return tuple(composed)


def _count(axes: Axes, shape: tuple[int, ...]) -> int:
    return math.prod(size if picked is None else len(picked) for picked, size in zip(axes, shape))


def reads_of(
    model: ModelGraph, source: str, shape: tuple[int, ...], through_elementwise: bool = False, stored: int | None = None
) -> tuple[Read, ...]:
    """Every node applying ``source`` (a stored tensor, or a weight generated at run time),
    following views, slices and loop-carried values; ``through_elementwise`` also follows
    elementwise ops (a generated weight scaled by a constant is still a weight). A sparse
    tensor applies its ``stored`` values, not its dense size: read sizes are scaled to them."""
    numel = math.prod(shape)
    density = 1.0 if stored is None or not numel else stored / numel
    whole: Axes = _WHOLE[len(shape)] if len(shape) < len(_WHOLE) else tuple(None for _ in shape)
    # (value, indices of the source it holds or None when the layout changed, elements)
    stack: list[tuple[str, Axes | None, int]] = [(source, whole, numel)]
    seen: set[str] = set()
    found: list[Read] = []
    while stack:
        value, axes, elements = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        for use in model.consumers.get(value, ()):
            node = model.nodes[use.node]
            role = node.role(use.index)
            if role is Role.SLICE and node.parts:
                for out, part in zip(node.outputs, node.parts):
                    if not out:
                        continue
                    if part is None:  # bounds known at run time only: an equal share of what comes in
                        stack.append((out, None, elements // max(len(node.outputs), 1)))
                    elif axes is not None and part.keeps_rank:
                        inner = _compose(axes, part, shape)
                        stack.append((out, inner, _count(inner, shape)))
                    else:  # the layout changed on the way: only the count of what the part holds is known
                        stack.append((out, None, min(part.size if part.size is not None else elements, elements)))
                continue
            following = model.passed_on(node, use.index)
            if following:
                keeps = axes if node.kind in (OpKind.IDENTITY, OpKind.CONVERT) or role is Role.LOOP_CARRIED else None
                stack.extend((out, keeps, elements) for out in following)
            elif through_elementwise and node.kind is OpKind.ELEMENTWISE and node.outputs and node.outputs[0]:
                stack.append((node.outputs[0], axes, elements))
            elif not role.is_metadata:  # Shape(W) reads no values of W
                applied = elements if density == 1.0 else round(elements * density)
                routing = node.routing if role is Role.EXPERT_BANK or (node.routing and node.routing.group) else None
                if routing is not None and routing.one_expert and routing.n:
                    applied //= routing.n
                found.append(Read(use, role, applied, axes, routing))
    return tuple(found)


def covered_elements(reads: Sequence[Read], shape: tuple[int, ...], stored: int | None = None) -> int:
    """Distinct elements of a tensor of ``shape`` that ``reads`` apply (disjoint slices add up;
    the same rows read twice count once); for a sparse tensor, in ``stored`` values."""
    numel = math.prod(shape)
    if stored is not None and stored != numel and numel:
        return min(stored, round(covered_elements(reads, shape) * stored / numel))
    if not reads:
        return 0
    if any(read.axes is None for read in reads):
        return min(numel, sum(read.elements for read in reads))
    partial = [read.axes for read in reads if read.axes is not None and any(a is not None for a in read.axes)]
    if len(partial) < len(reads):
        return numel  # one read applies the whole tensor
    cut = {axis for axes in partial for axis, picked in enumerate(axes) if picked is not None}
    if len(cut) == 1:
        (axis,) = cut
        picked_rows: set[int] = set()
        for axes in partial:
            picked_rows.update(int(i) for i in np.asarray(axes[axis]).reshape(-1))
        return len(picked_rows) * numel // max(shape[axis], 1)
    if numel <= _MASK_LIMIT:
        mask = np.zeros(shape, dtype=bool)
        for axes in partial:
            mask[np.ix_(*[np.arange(size) if a is None else np.asarray(a, dtype=np.int64) for a, size in zip(axes, shape)])] = True
        return int(mask.sum())
    return min(numel, sum(read.elements for read in reads))


# ---- applications per tensor ---------------------------------------------------------------


def _enclosing(model: ModelGraph, scope: str) -> list[str]:
    """Scopes one level up: the owner's scope for a subgraph, every caller's for a function."""
    info = model.scopes[scope]
    if info.owner is not None:
        return [model.nodes[info.owner].scope]
    return [model.nodes[caller].scope for caller in model.callers.get(scope, ())]


def branch_taken(model: ModelGraph, node: OpNode) -> int | None:
    """Index of the branch a constant condition selects (0: then, 1: else), if it is constant."""
    cond = model.small_constant(node.inputs[0], 1) if node.inputs and node.inputs[0] else None
    if cond is None or cond.size != 1:
        return None
    return 0 if bool(cond.reshape(()).item()) else 1


def _combine(
    model: ModelGraph, node: OpNode, inner: list[tuple[int, int | None]], loop_table: Mapping[str, LoopInfo], lightest: bool
) -> int | None:
    """What a node that runs subgraphs adds: ``inner`` holds (branch index, total) per subgraph."""
    if any(v is None for _, v in inner):
        return None
    known = [(i, v or 0) for i, v in inner]
    if node.kind is OpKind.BRANCH:
        taken = branch_taken(model, node)
        if taken is not None:
            return sum(v for i, v in known if i == taken)
        totals = [v for _, v in known] + [0] * (len(node.invokes) - len(known))
        return min(totals) if lightest else max(totals)
    if node.id in loop_table:
        trip = loop_table[node.id].trip_count
        if trip is None:
            if not lightest:
                return None
            trip = 1
        return trip * sum(v for _, v in known)
    return sum(v for _, v in known)


def count_applications(
    model: ModelGraph,
    reads: Sequence[Read],
    loop_table: Mapping[str, LoopInfo],
    shape: tuple[int, ...],
    stored: int | None = None,
) -> Applications:
    """Elements of one tensor applied per forward: each read once, times the trip counts of the
    loops around it; for an ``If``, the branch that applies it most; for a local function, once
    per call site. Expert routing is not applied here (it is per model, in ``applied_totals``)."""
    direct: Counter[str] = Counter()
    for read in reads:
        direct[model.nodes[read.use.node].scope] += read.elements
    if not reads:
        return Applications(tuple(reads), 0, 0, 0)
    if len(direct) == 1 and "" in direct:  # read in the main graph only: no loop, branch or call around it
        return Applications(tuple(reads), direct[""], direct[""], covered_elements(reads, shape, stored), False)
    relevant: set[str] = set()
    frontier = list(direct)
    while frontier:
        scope = frontier.pop()
        if scope not in relevant:
            relevant.add(scope)
            frontier.extend(_enclosing(model, scope))

    # the nodes running the relevant subgraphs and functions, per scope: a tensor read in one
    # branch of one If out of thousands looks at that If only
    runners: dict[str, dict[str, list[tuple[int, str]]]] = defaultdict(dict)
    for child in relevant:
        info = model.scopes[child]
        owners: tuple[str, ...] = (info.owner,) if info.owner is not None else model.callers.get(child, ())
        for owner in owners:
            node = model.nodes[owner]
            runners[node.scope].setdefault(owner, []).append((node.invokes.index(child), child))

    memo: dict[tuple[str, bool], int | None] = {}

    def evaluate(scope: str, lower: bool, depth: int) -> int | None:
        # memoised: functions calling functions would otherwise cost exponential time
        if (scope, lower) in memo:
            return memo[(scope, lower)]
        if depth > _MAX_NESTING:
            raise AuditError("invalid-model", "subgraphs or functions nest too deeply (recursive function?)")
        total: int | None = direct.get(scope, 0)
        for owner, children in runners.get(scope, {}).items():
            node = model.nodes[owner]
            inner = [(i, evaluate(s, lower, depth + 1)) for i, s in sorted(children)]
            if node.kind is OpKind.BRANCH and branch_taken(model, node) is None:
                # per tensor, an If counts the branch that applies this tensor most
                added = None if any(v is None for _, v in inner) else max(v or 0 for _, v in inner)
            else:
                added = _combine(model, node, inner, loop_table, lightest=False)
                if added is None and lower:
                    added = _combine(model, node, inner, loop_table, lightest=True)
            if added is None or total is None:
                total = None
                break
            total += added
        memo[(scope, lower)] = total
        return total

    exact = evaluate("", lower=False, depth=0)
    lower = evaluate("", lower=True, depth=0)
    del evaluate  # a recursive closure is a reference cycle: break it (the audit runs without cyclic GC)
    in_loop = any((runner := model.scopes[s].owner) is not None and runner in loop_table for s in relevant)
    return Applications(tuple(reads), exact, lower or 0, covered_elements(reads, shape, stored), in_loop)


# ---- applied parameters of the whole model ----------------------------------------------------


def _routed(read: Read, lightest: bool) -> int:
    """Elements a read applies per token: k of the n experts of a routed bank."""
    routing = read.routing
    if routing is None or routing.n <= 0:
        return read.elements
    k = routing.k if routing.k is not None else (1 if lightest else routing.n)
    return read.elements * min(k, routing.n) // routing.n


def applied_totals(
    model: ModelGraph, reads: Iterable[Read], loop_table: Mapping[str, LoopInfo], expert_share: Mapping[str, float] | None = None
) -> AppliedTotals:
    """Applied parameter elements of the whole model, combined up the scope tree.

    ``expert_share`` maps nodes that apply one expert of a routed layer (per-expert weights
    selected by a router mask) to the share of tokens each runs on (k / n).
    """
    share = expert_share or {}
    direct: dict[bool, dict[str, float]] = {False: defaultdict(float), True: defaultdict(float)}
    for read in reads:
        scope = model.nodes[read.use.node].scope
        factor = share.get(read.use.node, 1.0)
        for lightest in (False, True):
            direct[lightest][scope] += _routed(read, lightest) * factor
    memo: dict[tuple[str, bool], int | None] = {}
    differing: dict[str, BranchChoice] = {}

    def evaluate(scope: str, lightest: bool, depth: int) -> int | None:
        if (scope, lightest) in memo:
            return memo[(scope, lightest)]
        if depth > _MAX_NESTING:
            raise AuditError("invalid-model", "subgraphs or functions nest too deeply (recursive function?)")
        memo[(scope, lightest)] = None  # a recursive function call reads as unknown, never loops
        total: int | None = round(direct[lightest].get(scope, 0.0))
        for node in model.runners_by_scope.get(scope, ()):
            inner = [(i, evaluate(s, lightest, depth + 1)) for i, s in enumerate(node.invokes)]
            if node.kind is OpKind.BRANCH and not lightest and branch_taken(model, node) is None:
                totals = tuple(v for _, v in inner)
                if len(set(totals)) > 1:
                    differing[node.id] = BranchChoice(node.id, totals)
            added = _combine(model, node, inner, loop_table, lightest)
            if added is None or total is None:
                total = None
                continue
            total += added
        memo[(scope, lightest)] = total
        return total

    heavy = evaluate("", False, 0)
    light = evaluate("", True, 0)
    del evaluate  # a recursive closure is a reference cycle: break it (the audit runs without cyclic GC)
    return AppliedTotals(heavy, light or 0, tuple(differing[k] for k in sorted(differing)))
