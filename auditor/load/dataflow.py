"""Roles that depend on the dataflow, settled once after the graph is built.

The vocabulary says a Gather reads rows "by index"; which kind of read that is depends on
where the indices come from:

- indices computed from the runtime inputs (token ids, positions): a LOOKUP (an embedding);
- indices picked by a TopK (a router choosing k of n experts): an EXPERT_BANK read;
- constant indices: a SLICE, with the rows it reads as its part;
- anything else (indices computed from constants at run time): a WEIGHT read of the whole.

Slice and Split with constant bounds get the part of their data input that each output holds;
with bounds known only at run time, their parts are unknown (None): a Slice passes the whole
tensor on, a Split an equal share to each output.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from auditor.graph import ModelGraph, OpNode
from auditor.roles import OpKind, Part, Role, Routing

# views that keep the element layout: a part computed on their output is a part of their input
_SAME_LAYOUT = frozenset({OpKind.IDENTITY, OpKind.CONVERT})


@dataclass(frozen=True)
class _Origin:
    runtime: bool  # computed from the main graph's runtime inputs
    routers: frozenset[str]  # TopK nodes whose chosen indices it derives from


_CONSTANT = _Origin(False, frozenset())
_RUNTIME = _Origin(True, frozenset())


def _join(origins: list[_Origin]) -> _Origin:
    if not origins:
        return _CONSTANT
    routers = frozenset().union(*(o.routers for o in origins))
    return _Origin(any(o.runtime for o in origins), routers)


def _origins(model: ModelGraph) -> dict[str, _Origin]:
    """Origin of every value, in one forward pass over the nodes (loaders insert a node after
    the values it reads from outer scopes are defined)."""
    origin: dict[str, _Origin] = {value: _RUNTIME for value in model.inputs}
    formal = {value: (scope, i) for scope in model.scopes.values() for i, value in enumerate(scope.inputs)}

    def of(value: str) -> _Origin:
        if not value or value in model.tensors:
            return _CONSTANT
        known = origin.get(value)
        if known is not None:
            return known
        return _scope_input(value)

    def _scope_input(value: str) -> _Origin:
        # a formal input of a subgraph: what its owner passes at the same position;
        # of a function (or anything unresolved): treated as computed from the inputs
        scope, position = formal.get(value, (None, 0))
        if scope is not None and scope.owner is not None:
            owner = model.nodes[scope.owner]
            if owner.kind in (OpKind.LOOP, OpKind.SCAN) and position < len(owner.inputs):
                result = of(owner.inputs[position]) if owner.inputs[position] else _CONSTANT
                origin[value] = result
                return result
        origin[value] = _RUNTIME
        return _RUNTIME

    for node in model.nodes.values():
        if node.kind is OpKind.TOP_K and len(node.outputs) > 1:
            source = _join([of(v) for v in node.inputs if v])
            if node.outputs[0]:
                origin[node.outputs[0]] = source
            if node.outputs[1]:
                origin[node.outputs[1]] = _Origin(source.runtime, source.routers | {node.id})
            continue
        inputs = [of(v) for v in node.inputs if v]
        for scope in node.invokes:  # what a subgraph computes flows into the node's outputs
            inputs.extend(of(v) for v in model.scopes[scope].outputs if v in origin)
        joined = _join(inputs)
        for out in node.outputs:
            if out:
                origin[out] = joined
    del of, _scope_input  # mutually recursive closures form a cycle: break it (the audit runs without cyclic GC)
    return origin


def _shape_of(model: ModelGraph, value: str, known: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The static shape of ``value``: a stored tensor's, or what ``known`` holds (the parts of
    slices settled so far), through layout-keeping views and Transposes, or as the file states."""
    for _ in range(64):
        if value in model.tensors:
            return model.tensors[value].shape
        if value in known:
            return known[value]
        producer = model.producer_of.get(value)
        node = model.nodes[producer] if producer is not None else None
        if node is None or not node.inputs:
            break
        if node.kind in _SAME_LAYOUT:
            value = node.inputs[0]
            continue
        if node.role(0) is Role.VIEW and node.op_type == "Transpose":
            inner = _shape_of(model, node.inputs[0], known)
            if inner is None:
                break
            perm = node.attrs.get("perm") or list(range(len(inner)))[::-1]
            return tuple(inner[int(p)] for p in perm) if len(perm) == len(inner) else None
        break
    shape = model.value_shapes.get(value)
    if shape is None or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape if d is not None)


def _part_shape(shape: tuple[int, ...], part: Part) -> tuple[int, ...] | None:
    """The shape of what ``part`` of a value of ``shape`` holds (None when it drops an axis)."""
    if not part.keeps_rank:
        return None
    return tuple(size if picked is None else len(picked) for size, picked in zip(shape, part.axes))


def _ints(model: ModelGraph, value: str, limit: int = 64) -> list[int] | None:
    constant = model.small_constant(value, limit) if value else None
    if constant is None or constant.dtype.kind not in "iu":
        return None
    return [int(v) for v in constant.reshape(-1)]


def _slice_part(model: ModelGraph, node: OpNode, shape: tuple[int, ...]) -> Part | None:
    """Slice-10+: starts, ends, axes, steps as inputs; Slice-1: as attributes."""
    if len(node.inputs) >= 3:
        starts, ends = _ints(model, node.inputs[1]), _ints(model, node.inputs[2])
        axes = _ints(model, node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
        steps = _ints(model, node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else None
    else:
        starts, ends = node.attrs.get("starts"), node.attrs.get("ends")
        axes, steps = node.attrs.get("axes"), None
    if starts is None or ends is None or len(starts) != len(ends):
        return None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    if len(axes) != len(starts) or len(steps) != len(starts) or 0 in steps:
        return None
    picked: list[range | tuple[int, ...] | None] = [None] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if not -len(shape) <= axis < len(shape):
            return None
        axis %= len(shape)
        picked[axis] = range(*slice(start, end, step).indices(shape[axis]))
    part = Part(tuple(picked))
    return replace(part, size=part.elements(shape))


def _split_parts(model: ModelGraph, node: OpNode, shape: tuple[int, ...]) -> tuple[Part | None, ...] | None:
    axis = int(node.attrs.get("axis", 0))
    if not -len(shape) <= axis < len(shape):
        return None
    axis %= len(shape)
    outputs = len(node.outputs)
    sizes = _ints(model, node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attrs.get("split")
    if sizes is None:
        chunk = -(-shape[axis] // outputs) if outputs else 0
        sizes = [min(chunk, max(shape[axis] - i * chunk, 0)) for i in range(outputs)]
    if len(sizes) != outputs or sum(sizes) != shape[axis]:
        return None
    parts: list[Part | None] = []
    offset = 0
    for size in sizes:
        picked: list[range | tuple[int, ...] | None] = [None] * len(shape)
        picked[axis] = range(offset, offset + int(size))
        part = Part(tuple(picked))
        parts.append(replace(part, size=part.elements(shape)))
        offset += int(size)
    return tuple(parts)


def _gather_part(model: ModelGraph, node: OpNode, indices: str, shape: tuple[int, ...]) -> Part | None:
    if node.op_type != "Gather" or indices not in model.tensors:
        return None
    axis = int(node.attrs.get("axis", 0))
    if not -len(shape) <= axis < len(shape):
        return None
    axis %= len(shape)
    values = np.asarray(model.tensors[indices].read())
    if values.dtype.kind not in "iu":
        return None
    flat = values.reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + shape[axis], flat)
    if flat.size and (flat.min() < 0 or flat.max() >= shape[axis]):
        return None  # out of range: onnxruntime would fail; count the whole tensor
    picked: list[range | tuple[int, ...] | None] = [None] * len(shape)
    picked[axis] = tuple(int(i) for i in flat)
    part = Part(tuple(picked), keeps_rank=values.ndim == 1)
    return replace(part, size=part.elements(shape))


def _router_k(model: ModelGraph, router: str) -> int | None:
    node = model.nodes[router]
    k = _ints(model, node.inputs[1], 1) if len(node.inputs) > 1 else None
    if k is None and "k" in node.attrs:  # TopK-1 has k as an attribute
        return int(node.attrs["k"])
    return k[0] if k else None


def _refine(model: ModelGraph, node: OpNode, origin: dict[str, _Origin], known: dict[str, tuple[int, ...]]) -> OpNode:
    roles = list(node.roles)
    parts: tuple[Part | None, ...] = ()
    routing = None
    for slot, role in enumerate(node.roles):
        if role is Role.GATHER:
            index_slot = next((i for i, r in enumerate(node.roles) if r is Role.INDICES), None)
            indices = node.inputs[index_slot] if index_slot is not None else ""
            where = origin.get(indices, _CONSTANT) if indices and indices not in model.tensors else _CONSTANT
            shape = _shape_of(model, node.inputs[slot], known)
            if indices in model.tensors:
                part = _gather_part(model, node, indices, shape) if shape is not None else None
                roles[slot], parts = (Role.SLICE, (part,)) if part is not None else (Role.WEIGHT, ())
            elif where.routers:
                router = min(where.routers)
                axis = int(node.attrs.get("axis", 0))
                n = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
                roles[slot] = Role.EXPERT_BANK if n else Role.WEIGHT
                if n:
                    one = model.value_shapes.get(indices) == ()
                    routing = Routing(router, _router_k(model, router), n, axis % len(shape or (0,)), one)
            elif where.runtime:
                roles[slot] = Role.LOOKUP
            else:
                roles[slot] = Role.WEIGHT
        elif role is Role.SLICE and slot == 0:
            shape = _shape_of(model, node.inputs[0], known)
            found: tuple[Part | None, ...] | None = None
            if shape is not None and node.op_type == "Slice":
                part = _slice_part(model, node, shape)
                found = (part,) if part is not None else None
            elif shape is not None and node.op_type == "Split":
                found = _split_parts(model, node, shape)
            # bounds known only at run time: the whole tensor goes on (shared among a Split's outputs)
            parts = found if found is not None else tuple(None for _ in node.outputs)
            for out, part in zip(node.outputs, parts):
                held = _part_shape(shape, part) if shape is not None and part is not None else None
                if out and held is not None:
                    known[out] = held
    if roles == list(node.roles) and not parts and routing is None:
        return node
    return replace(node, roles=tuple(roles), parts=parts, routing=routing)


def _expert_groups(model: ModelGraph, origin: dict[str, _Origin]) -> dict[str, Routing]:
    """Nodes applying one expert's own weights: their input holds the tokens a router sent to
    that expert (gathered by indices the router's TopK chose, as an unrolled loop over experts
    does: ``hidden[where(mask == e)]``), not yet written back (a Scatter: ``index_add``).

    Each token gather starts a group; a node whose inputs carry exactly one group of a router
    is that expert's. A value mixing several groups is the experts' combined output: no node
    downstream of it is an expert's, so a missed write-back cannot leak into dense layers. A
    router with fewer than two groups is not a mixture of experts (a detector's TopK over boxes).
    """
    groups: dict[str, frozenset[tuple[str, str]]] = {}
    for node in model.nodes.values():
        tags: frozenset[tuple[str, str]] = frozenset()
        if node.kind is not OpKind.SCATTER:
            tags = frozenset().union(*(groups.get(v, frozenset()) for v in node.inputs if v))
        if Role.GATHER in node.roles and node.inputs and node.inputs[0] not in model.tensors:
            index_slot = next((i for i, r in enumerate(node.roles) if r is Role.INDICES), None)
            indices = node.inputs[index_slot] if index_slot is not None else ""
            routers = origin.get(indices, _CONSTANT).routers if indices else frozenset()
            data = groups.get(node.inputs[0], frozenset())
            if routers and not data:
                tags = frozenset((router, node.id) for router in routers)
        for out in node.outputs:
            if out and tags:
                groups[out] = tags
    per_router: dict[str, set[str]] = {}
    for tags in groups.values():
        for router, group in tags:
            per_router.setdefault(router, set()).add(group)
    routings: dict[str, Routing] = {}
    for node in model.nodes.values():
        tags = frozenset().union(*(groups.get(v, frozenset()) for v in node.inputs if v))
        if len(tags) != 1 or node.kind is OpKind.SCATTER:
            continue
        ((router, group),) = tags
        if len(per_router.get(router, ())) < 2:
            continue
        logits = model.value_shapes.get(model.nodes[router].inputs[0]) if model.nodes[router].inputs else None
        n = logits[-1] if logits and logits[-1] is not None else len(per_router[router])
        routings[node.id] = Routing(router, _router_k(model, router), int(n), group=group)
    return routings


def refine_roles(model: ModelGraph) -> ModelGraph:
    """The model with GATHER reads classified, SLICE reads given their parts, and the nodes that
    apply one routed expert's own weights given their router."""
    pending = [n for n in model.nodes.values() if Role.GATHER in n.roles or (n.roles and n.roles[0] is Role.SLICE)]
    if not pending:
        return model
    has_gathers = any(Role.GATHER in n.roles for n in pending)
    origin = _origins(model) if has_gathers else {}
    nodes = dict(model.nodes)
    known: dict[str, tuple[int, ...]] = {}  # shapes of slice outputs, for slices of slices
    for node in pending:  # in graph order: a slice's input is settled before the slice
        nodes[node.id] = _refine(model, node, origin, known)
    if has_gathers and any(n.kind is OpKind.TOP_K for n in model.nodes.values()):
        for node_id, routing in _expert_groups(model, origin).items():
            if nodes[node_id].routing is None:
                nodes[node_id] = replace(nodes[node_id], routing=routing)
    return replace(model, nodes=nodes)
