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
    applications: float | None  # applied elements / elements covered; None with an unknown loop
    consumers: tuple[str, ...]  # "op_type node_id" of each applying node


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
