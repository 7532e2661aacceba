"""Explicit sharing: one stored tensor applied several times (several nodes, or a loop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from auditor.analyses.usage import Applications
from auditor.graph import ModelGraph, TensorInfo


@dataclass(frozen=True)
class SharedTensor:
    """A parameter tensor applied more than once per forward pass."""

    tensor: str
    numel: int
    uses: int
    applications: int | None
    consumers: tuple[str, ...]  # "op_type node_id" of each applying node


def shared_tensors(
    model: ModelGraph, params: Sequence[TensorInfo], applications: Mapping[str, Applications]
) -> tuple[SharedTensor, ...]:
    """Parameters used by several nodes (looking through view ops) or applied more than once by a loop."""
    shared = []
    for tensor in params:
        apps = applications[tensor.id]
        if len(apps.uses) >= 2 or (apps.applications or apps.lower_bound) >= 2 or (apps.in_loop and apps.applications is None):
            consumers = tuple(f"{model.nodes[u.node].op_type} {u.node}" for u in apps.uses)
            shared.append(SharedTensor(tensor.id, tensor.stored_elements, len(apps.uses), apps.applications, consumers))
    shared.sort(key=lambda s: (-s.numel * (s.applications or 0), s.tensor))
    return tuple(shared)
