"""What one forward pass costs at the bound input shapes: MACs and FLOPs per node, op type, block.

Conventions (so figures compare with ``torch.utils.flop_counter``, fvcore and ptflops):

- ``macs`` counts the multiply-accumulates of matrix products, convolutions, recurrent cells and
  attention's two products (Q K^T and the weights times V). A transposed convolution counts
  each input element times its kernel (the convention of the tools above).
- ``flops`` is 2 per MAC plus everything else costed: bias adds, 1 per output element of an
  elementwise op (arithmetic, activations, comparisons, Where: whatever the function), 5 per
  element of a layer/RMS/group/instance norm, 2 of an inference batch norm, 3 of a softmax
  (exp, sum, divide), 1 per input element of a reduction, the window per output of a pooling.
  A recurrent cell adds its gate arithmetic (LSTM 9, GRU 8, RNN 1 per hidden unit and step)
  and two bias adds per gate.
- Ops that only move data or compute shapes cost nothing and are not "uncosted"; ops the
  vocabulary does not know are listed by name in ``uncosted_ops``, never a silent zero.
- A Loop body counts its trip count times (once, and said, when the count is known only at run
  time); a Scan once per scanned element; an If its heaviest branch (its lightest in the lower
  bound); a function call its body. Tokens an expert receives at run time (a data-dependent
  size) count at their expectation, ``tokens * k / n``: summed over the n experts, k per token.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from auditor.analyses.usage import LoopInfo, branch_taken
from auditor.graph import ModelGraph, OpNode
from auditor.roles import Cost, OpKind

Shape = tuple[float, ...]  # float: an expected token count need not be whole


@dataclass(frozen=True, slots=True)
class NodeCost:
    """One node's cost per execution, and how many times it runs per forward."""

    node: str
    op_type: str
    macs: float
    flops: float
    runs: float = 1.0


@dataclass(frozen=True)
class OpTypeCost:
    op_type: str
    count: int  # nodes of this type
    macs: int  # per forward (trip counts applied, heaviest branches)
    flops: int


@dataclass(frozen=True)
class BlockCost:
    """Compute per block of a repeated-block family: the nodes applying the block's weights."""

    first_tensor: str  # names the family: the first tensor of its first block
    blocks: int
    macs_per_block: int
    flops_per_block: int


@dataclass(frozen=True)
class Compute:
    """Cost of one forward pass at the bound shapes."""

    macs: int
    flops: int
    macs_lower_bound: int  # each If at its lightest branch, unknown trip counts at one
    flops_lower_bound: int
    # heaviest first; every node counted, the nodes of both branches of an If included (the
    # totals above take one branch): the table says where compute is, not what one forward sums to
    by_op_type: tuple[OpTypeCost, ...]
    nodes: tuple[NodeCost, ...]  # every node with a cost, heaviest first
    uncosted_ops: Mapping[str, int]  # op types the vocabulary cannot cost -> nodes
    unknown_shape_ops: Mapping[str, int]  # costable nodes whose shapes stayed unknown -> count
    unknown_trip_loops: tuple[str, ...]  # loops counted once: their trip count is known only at run time
    routed_tokens: Mapping[str, float]  # expert group node -> tokens it is expected to receive
    blocks: tuple[BlockCost, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every node was costed."""
        return not self.uncosted_ops and not self.unknown_shape_ops and not self.unknown_trip_loops


def _product(values: Sequence[float]) -> float:
    return float(math.prod(values)) if values else 1.0


class _Shapes:
    """Shapes of values at the bound sizes, with expected routed-token counts substituted."""

    def __init__(self, model: ModelGraph, expected: Mapping[str, float]) -> None:
        self.model = model
        self.expected = expected
        self.memo: dict[str, Shape | None] = {}  # a value is read by its producer and its consumers

    def __call__(self, value: str) -> Shape | None:
        if value in self.memo:
            return self.memo[value]
        found = self.memo[value] = self._shape(value)
        return found

    def _shape(self, value: str) -> Shape | None:
        if not value:
            return None
        tensor = self.model.tensors.get(value)
        if tensor is not None:
            return tuple(map(float, tensor.shape))
        shape = self.model.shapes.get(value)
        if shape is None:
            return None
        if all(type(dim) is int for dim in shape):
            return tuple(map(float, shape))
        out = []
        for dim in shape:
            if isinstance(dim, int):
                out.append(float(dim))
            elif dim in self.expected:
                out.append(self.expected[dim])
            else:
                return None
        return tuple(out)


def _operands(node: OpNode) -> list[int]:
    """Input slots holding the operands (not scales, zero points, shapes or indices)."""
    return [i for i, value in enumerate(node.inputs) if value and not node.role(i).is_metadata]


def _matmul(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    slots = _operands(node)
    if len(slots) < 2:
        return None
    a, b = shape(node.inputs[slots[0]]), shape(node.inputs[slots[1]])
    out = shape(node.outputs[0]) if node.outputs else None
    if node.attrs.get("transA") and a is not None and len(a) >= 2:
        a = a[:-2] + (a[-1], a[-2])
    if node.attrs.get("transB") and b is not None and len(b) >= 2:
        b = b[:-2] + (b[-1], b[-2])
    # the inner size from whichever operand is known (the other may hold a run-time size)
    inner = a[-1] if a else (b[-2] if b and len(b) >= 2 else b[0] if b else None)
    if inner is None:
        return None
    if out is None:
        if a is None or b is None:
            return None
        rows = a[:-1]
        cols = b[-1:] if len(b) >= 2 else ()
        batch_a, batch_b = a[:-2], b[:-2]
        width = max(len(batch_a), len(batch_b))
        batch = [
            max(x, y)
            for x, y in zip((1.0,) * (width - len(batch_a)) + batch_a, (1.0,) * (width - len(batch_b)) + batch_b)
        ]
        out = tuple(batch) + rows[-1:] + cols
    macs = _product(out) * inner
    return macs, 2 * macs


def _gemm(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    slots = _operands(node)
    if len(slots) < 2:
        return None
    a, b = shape(node.inputs[slots[0]]), shape(node.inputs[slots[1]])
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    rows, inner = (a[1], a[0]) if node.attrs.get("transA") else a
    cols = b[0] if node.attrs.get("transB") else b[1]
    macs = rows * inner * cols
    bias = rows * cols if len(slots) > 2 else 0.0
    return macs, 2 * macs + bias


def _matmul_nbits(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    a = shape(node.inputs[0]) if node.inputs else None
    inner, cols = node.attrs.get("K"), node.attrs.get("N")
    if a is None or not isinstance(inner, int) or not isinstance(cols, int):
        return None
    macs = _product(a[:-1]) * inner * cols
    return macs, 2 * macs


def _conv(node: OpNode, shape: Callable[[str], Shape | None], transposed: bool) -> tuple[float, float] | None:
    slots = _operands(node)
    if len(slots) < 2:
        return None
    x, w = shape(node.inputs[slots[0]]), shape(node.inputs[slots[1]])
    out = shape(node.outputs[0]) if node.outputs else None
    if w is None:
        return None
    per_output = _product(w[1:])  # (input channels / groups) x kernel; transposed: (out / groups) x kernel
    if transposed:
        if x is None:
            return None
        macs = _product(x) * per_output
    else:
        if out is None:
            return None
        macs = _product(out) * per_output
    bias = _product(out) if out is not None and len(slots) > 2 else 0.0
    return macs, 2 * macs + bias


_EINSUM_TERM = re.compile(r"^[A-Za-z.]*$")


def _einsum(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    equation = str(node.attrs.get("equation", "")).replace(" ", "")
    inputs_text = equation.split("->")[0]
    terms = inputs_text.split(",")
    shapes = [shape(v) for v in node.inputs]
    if not terms or len(terms) != len(shapes) or any(s is None for s in shapes) or not all(_EINSUM_TERM.match(t) for t in terms):
        return None
    sizes: dict[str, float] = {}
    for term, dims in zip(terms, shapes):
        assert dims is not None
        letters = term.replace("...", "")
        if "..." in term:  # the ellipsis covers the dims the letters do not
            sizes["..."] = max(sizes.get("...", 1.0), _product(dims[: len(dims) - len(letters)]))
            dims = dims[len(dims) - len(letters) :]
        for letter, size in zip(letters, dims):
            sizes[letter] = max(sizes.get(letter, 1.0), size)
    total = _product(list(sizes.values()))
    if len(terms) == 1:
        return 0.0, _product(shapes[0] or ())
    macs = total * (len(terms) - 1)
    return macs, 2 * macs


_GATES = {Cost.LSTM: (4, 9), Cost.GRU: (3, 8), Cost.RNN: (1, 1)}


def _recurrent(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    x = shape(node.inputs[0]) if node.inputs else None
    w = shape(node.inputs[1]) if len(node.inputs) > 1 else None
    r = shape(node.inputs[2]) if len(node.inputs) > 2 else None
    if x is None or w is None or r is None or len(x) != 3 or len(w) != 3:
        return None
    steps, batch = (x[1], x[0]) if node.attrs.get("layout") else (x[0], x[1])
    directions, gated, inputs = w
    gates, cell = _GATES[node.cost]
    hidden = gated / gates
    macs = directions * steps * batch * gated * (inputs + hidden)
    has_bias = len(node.inputs) > 3 and bool(node.inputs[3])
    elementwise = directions * steps * batch * hidden * (cell + (2 * gates if has_bias else 0))
    return macs, 2 * macs + elementwise


def _attention(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    if len(node.inputs) < 3:
        return None
    q, k, v = (shape(node.inputs[i]) for i in range(3))
    if q is None or k is None or v is None or len(q) not in (3, 4) or len(k) != len(q):
        return None
    keys = k[-2]
    values = v[-1]
    if len(q) == 3:  # [batch, tokens, heads x size]: fewer KV heads serve every query head (GQA)
        q_heads = node.attrs.get("q_num_heads") or node.attrs.get("num_heads")
        kv_heads = node.attrs.get("kv_num_heads")
        if isinstance(q_heads, int) and isinstance(kv_heads, int) and kv_heads > 0:
            values = v[-1] * q_heads / kv_heads
    macs = _product(q[:-1]) * keys * (q[-1] + values)
    heads = q[1] if len(q) == 4 else float(node.attrs.get("num_heads") or node.attrs.get("q_num_heads") or 1)
    scores = (q[0] * heads * q[-2] * keys) if len(q) == 4 else q[0] * heads * q[1] * keys
    return macs, 2 * macs + 3 * scores


def _packed_attention(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    x = shape(node.inputs[0]) if node.inputs else None
    w = shape(node.inputs[1]) if len(node.inputs) > 1 else None
    if x is None or w is None or len(x) != 3 or len(w) != 2:
        return None
    batch, tokens, _ = x
    projection = batch * tokens * w[0] * w[1]
    width = w[1] / 3  # Q, K and V side by side
    heads = float(node.attrs.get("num_heads") or 1)
    macs = projection + 2 * batch * tokens * tokens * width
    return macs, 2 * macs + 3 * batch * heads * tokens * tokens


def _per_element(factor: float, use_output: bool) -> Callable[[OpNode, Callable[[str], Shape | None]], tuple[float, float] | None]:
    def cost(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
        value = (node.outputs[0] if use_output and node.outputs else "") or (node.inputs[0] if node.inputs else "")
        dims = shape(value) if value else None
        if dims is None and use_output and node.inputs:
            dims = shape(node.inputs[0])
        return None if dims is None else (0.0, factor * _product(dims))

    return cost


def _pool(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    out = shape(node.outputs[0]) if node.outputs else None
    kernel = node.attrs.get("kernel_shape")
    if out is None or not isinstance(kernel, list):
        return None
    return 0.0, _product(out) * _product([float(k) for k in kernel])


_FORMULAS: dict[Cost, Callable[[OpNode, Callable[[str], Shape | None]], tuple[float, float] | None]] = {
    Cost.MATMUL: _matmul,
    Cost.GEMM: _gemm,
    Cost.MATMUL_NBITS: _matmul_nbits,
    Cost.CONV: lambda n, s: _conv(n, s, transposed=False),
    Cost.CONV_TRANSPOSE: lambda n, s: _conv(n, s, transposed=True),
    Cost.EINSUM: _einsum,
    Cost.LSTM: _recurrent,
    Cost.GRU: _recurrent,
    Cost.RNN: _recurrent,
    Cost.ATTENTION: _attention,
    Cost.PACKED_ATTENTION: _packed_attention,
    Cost.NORMALIZATION: _per_element(5, use_output=True),
    Cost.BATCH_NORM: _per_element(2, use_output=True),
    Cost.SOFTMAX: _per_element(3, use_output=True),
    Cost.ELEMENTWISE: _per_element(1, use_output=True),
    Cost.REDUCE: _per_element(1, use_output=False),
    Cost.GLOBAL_POOL: _per_element(1, use_output=False),
    Cost.RESIZE: _per_element(1, use_output=True),
    Cost.POOL: _pool,
}


def node_cost(node: OpNode, shape: Callable[[str], Shape | None]) -> tuple[float, float] | None:
    """(MACs, FLOPs) of one execution of ``node``; (0, 0) for data movement; None when its
    shapes are unknown or the vocabulary cannot cost it."""
    if node.cost is Cost.FREE or node.cost is Cost.CONTROL:
        return 0.0, 0.0
    formula = _FORMULAS.get(node.cost)
    cost = formula(node, shape) if formula is not None else None
    if cost is not None and not (math.isfinite(cost[0]) and math.isfinite(cost[1])):
        return None  # sizes beyond any machine (a hostile file's dims): unknown, not infinite
    return cost


def routed_tokens(model: ModelGraph) -> dict[str, float]:
    """Data-dependent sizes of routed expert groups -> expected tokens (``tokens * k / n``).

    A group node gathers the tokens a router sent to one expert; its first output dimension
    is a size named at run time. Over the n experts each token is counted k times.
    """
    expected: dict[str, float] = {}
    for node in model.nodes.values():
        routing = node.routing
        if routing is None or routing.group is None or routing.k is None or not routing.n:
            continue
        group = model.nodes.get(routing.group)
        router = model.nodes.get(routing.router)
        if group is None or router is None or not group.outputs or not router.inputs:
            continue
        out = model.shapes.get(group.outputs[0])
        logits = model.shapes.get(router.inputs[0])
        if not out or not logits or not isinstance(out[0], str) or not all(isinstance(d, int) for d in logits[:-1]):
            continue
        tokens = float(math.prod(int(d) for d in logits[:-1]))
        expected[out[0]] = tokens * routing.k / routing.n
    return expected


def compute_cost(model: ModelGraph, loop_table: Mapping[str, LoopInfo], blocks: Sequence[Sequence[Sequence[str]]] = ()) -> Compute:
    """MACs and FLOPs of one forward pass; ``blocks`` are repeated-block families (tensor ids
    per block) to cost per block."""
    expected = routed_tokens(model)
    by_group = {}
    for node in model.nodes.values():
        if node.routing is not None and node.routing.group is not None:
            group = model.nodes.get(node.routing.group)
            dims = model.shapes.get(group.outputs[0]) if group is not None and group.outputs else None
            if dims and isinstance(dims[0], str):  # the run-time size the expectation is keyed by
                by_group[node.routing.group] = dims[0]
    shape = _Shapes(model, {k: v for k, v in expected.items()})
    own: dict[str, tuple[float, float]] = {}
    uncosted: dict[str, int] = defaultdict(int)
    unknown: dict[str, int] = defaultdict(int)
    for node in model.nodes.values():
        if node.cost is Cost.UNCOSTED:
            uncosted[node.op_type] += 1
            continue
        cost = node_cost(node, shape)
        if cost is None:
            unknown[node.op_type] += 1
        elif cost != (0.0, 0.0):
            own[node.id] = cost

    walk = _ScopeWalk(model, own, loop_table)
    heavy = walk.scope_cost("", False, 0)
    light = walk.scope_cost("", True, 0)
    unknown_trips = walk.unknown_trips
    multiplier = walk.multiplier

    node_costs = [
        NodeCost(node_id, model.nodes[node_id].op_type, m, f, multiplier(model.nodes[node_id].scope))
        for node_id, (m, f) in own.items()
    ]
    node_costs.sort(key=lambda c: (-c.flops * c.runs, c.node))
    per_type: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for node in model.nodes.values():
        entry = per_type[node.op_type]
        entry[0] += 1
    for item in node_costs:
        entry = per_type[item.op_type]
        entry[1] += item.macs * item.runs
        entry[2] += item.flops * item.runs
    by_type = tuple(
        sorted(
            (OpTypeCost(op, int(c), round(m), round(f)) for op, (c, m, f) in per_type.items()),
            key=lambda t: (-t.flops, t.op_type),
        )
    )
    block_costs = _block_costs(model, own, blocks)
    return Compute(
        macs=round(heavy[0]),
        flops=round(heavy[1]),
        macs_lower_bound=round(light[0]),
        flops_lower_bound=round(light[1]),
        by_op_type=by_type,
        nodes=tuple(node_costs),
        uncosted_ops=dict(sorted(uncosted.items())),
        unknown_shape_ops=dict(sorted(unknown.items())),
        unknown_trip_loops=tuple(unknown_trips),
        routed_tokens={group: expected[value] for group, value in sorted(by_group.items()) if value in expected}
        if expected
        else {},
        blocks=block_costs,
    )


class _ScopeWalk:
    """Costs summed per scope up the scope tree (a class, not nested closures: recursive
    closures would leave reference cycles behind every audit)."""

    def __init__(self, model: ModelGraph, own: Mapping[str, tuple[float, float]], loop_table: Mapping[str, LoopInfo]) -> None:
        self.model = model
        self.own = own
        self.loop_table = loop_table
        self.unknown_trips: list[str] = []
        self.memo: dict[tuple[str, bool], tuple[float, float]] = {}
        self.runs: dict[str, float] = {}

    def scope_cost(self, scope: str, lightest: bool, depth: int) -> tuple[float, float]:
        key = (scope, lightest)
        if key in self.memo:
            return self.memo[key]
        if depth > 200:  # nesting deeper than any real model: stop rather than recurse forever
            return 0.0, 0.0
        macs = flops = 0.0
        for node in self.model.nodes_by_scope.get(scope, ()):
            m, f = self.own.get(node.id, (0.0, 0.0))
            macs, flops = macs + m, flops + f
            if node.invokes:
                m, f = self.runner_cost(node, lightest, depth)
                macs, flops = macs + m, flops + f
        self.memo[key] = (macs, flops)
        return macs, flops

    def runner_cost(self, node: OpNode, lightest: bool, depth: int) -> tuple[float, float]:
        inner = [self.scope_cost(s, lightest, depth + 1) for s in node.invokes]
        if node.kind is OpKind.BRANCH:
            taken = branch_taken(self.model, node)
            if taken is not None:
                return inner[taken] if taken < len(inner) else (0.0, 0.0)
            padded = inner + [(0.0, 0.0)] * (2 - len(inner))
            return min(padded, key=lambda c: c[1]) if lightest else max(padded, key=lambda c: c[1])
        if node.id in self.loop_table:
            trip = self.loop_table[node.id].trip_count
            if trip is None:
                if node.id not in self.unknown_trips:
                    self.unknown_trips.append(node.id)
                trip = 1
            return sum(c[0] for c in inner) * trip, sum(c[1] for c in inner) * trip
        return sum(c[0] for c in inner), sum(c[1] for c in inner)

    def multiplier(self, scope: str, depth: int = 0) -> float:
        """How often a scope's nodes run per forward: trip counts of the loops around it
        (a function: once per call)."""
        if scope in self.runs:
            return self.runs[scope]
        info = self.model.scopes.get(scope)
        if info is None or scope == "" or depth > 200:
            return 1.0
        if info.owner is not None:
            owner = self.model.nodes[info.owner]
            trip = self.loop_table[owner.id].trip_count if owner.id in self.loop_table else 1
            value = (trip if trip is not None else 1) * self.multiplier(owner.scope, depth + 1)
        else:
            value = sum(self.multiplier(self.model.nodes[c].scope, depth + 1) for c in self.model.callers.get(scope, ()))
        self.runs[scope] = value
        return value


def _block_costs(
    model: ModelGraph, own: Mapping[str, tuple[float, float]], families: Sequence[Sequence[Sequence[str]]]
) -> tuple[BlockCost, ...]:
    """Per family, the mean cost of the nodes applying each block's weights (views followed)."""
    result = []
    for blocks in families:
        if not blocks or not blocks[0]:
            continue
        per_block = []
        for tensors in blocks:
            nodes = {use.node for tensor in tensors for use in model.terminal_uses(tensor)}
            macs = sum(own.get(n, (0.0, 0.0))[0] for n in nodes)
            flops = sum(own.get(n, (0.0, 0.0))[1] for n in nodes)
            per_block.append((macs, flops))
        count = len(per_block)
        result.append(
            BlockCost(
                blocks[0][0],
                count,
                round(sum(c[0] for c in per_block) / count),
                round(sum(c[1] for c in per_block) / count),
            )
        )
    return tuple(result)
