"""Explicit sharing: one stored tensor applied several times (several nodes, or a loop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from auditor.analyses.usage import Applications
from auditor.graph import ModelGraph, TensorInfo


@dataclass(frozen=True)
class SharedTensor:
    """A parameter tensor some of whose elements are applied more than once per forward pass."""

    tensor: str
    numel: int
    uses: int
    # applied elements / elements covered; None with an unknown loop, or without a graph (a
    # checkpoint says which names share a tensor, not how often the model applies it)
    applications: float | None
    consumers: tuple[str, ...]  # "op_type node_id" of each applying node; without a graph, the names sharing it


def shared_tensors(
    model: ModelGraph,
    params: Sequence[TensorInfo],
    applications: Mapping[str, Applications],
    initial_values: frozenset[str] = frozenset(),
) -> tuple[SharedTensor, ...]:
    """Parameters some element of which is applied more than once: read by several nodes
    (looking through views; disjoint slices are one application), or inside a loop.

    A tensor holding one value everywhere (an initial value: ones, zeros) is never a tie: an
    exporter merges equal initial values, which says nothing about the model's design.
    """
    if not model.has_graph:
        return _stored_ties(model, params)
    shared = []
    for tensor in params:
        apps = applications[tensor.id]
        if tensor.id in initial_values or not apps.repeated:
            continue
        times = None if apps.applied is None else round(apps.applied / apps.covered, 3) if apps.covered else 0.0
        consumers = tuple(f"{model.nodes[u.node].op_type} {u.node}" for u in apps.uses)
        shared.append(SharedTensor(tensor.id, tensor.stored_elements, len(apps.uses), times, consumers))
    shared.sort(key=lambda s: (-s.numel * (s.applications or 0), s.tensor))
    return tuple(shared)


def _stored_ties(model: ModelGraph, params: Sequence[TensorInfo]) -> tuple[SharedTensor, ...]:
    """A weights-only model's shared tensors: each parameter stored once under several names
    (``model.aliases``: tied weights, views into one storage). ``uses`` is the number of names;
    how often each is applied is unknown without a graph. Stored as ones or zeros or not, an
    alias is a tie: the checkpoint's storage says so, not equal values."""
    names: dict[str, list[str]] = {t.id: [t.name] for t in params}
    for name, head in model.aliases.items():
        if head in names and name not in names[head]:
            names[head].append(name)
    by_id = {t.id: t for t in params}
    shared = [
        SharedTensor(head, by_id[head].stored_elements, len(members), None, tuple(members))
        for head, members in names.items()
        if len(members) > 1
    ]
    shared.sort(key=lambda s: (-s.numel, s.tensor))
    return tuple(shared)
