"""Stored copies of the same parameters under different names: the one place tensors are merged.

Every relation found (identical bytes here; transformed copies in ``transforms``) is an edge
between two tensors; connected tensors form one group, counted once in ``unique_params``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from networkx.utils import UnionFind

from auditor.graph import TensorInfo, value_chunks

@dataclass(frozen=True)
class CopyEdge:
    """``copy`` holds the same parameters as ``source`` under ``relation`` (with ``scale``)."""

    source: str
    copy: str
    relation: str
    scale: float | None = None


@dataclass(frozen=True)
class CopyGroup:
    """Copies of the first tensor (the one kept) under one relation; the copies are waste.
    For ``scaled``, each copy = ``scale`` * the kept tensor."""

    tensors: tuple[str, ...]
    relation: str  # identical | transposed | reshaped | cast | scaled | dequantized
    wasted_params: int
    wasted_bytes: int
    scale: float | None = None


def same_bytes(a: TensorInfo, b: TensorInfo) -> bool:
    """Byte-for-byte comparison of two tensors of one dtype and size, chunk by chunk."""
    if a.nbytes != b.nbytes or a.numel != b.numel or a.dtype != b.dtype:
        return False
    return all(x == y for (x, _), (y, _) in zip(value_chunks(a), value_chunks(b)))


def digest_edges(tensors: Sequence[TensorInfo], digests: Mapping[str, bytes]) -> list[CopyEdge]:
    """Identical (same dtype and shape) and reshaped (same bytes, other shape) copies: equal
    digests first, then confirmed byte by byte. Only tensors given a digest are considered (the
    caller hashes just those with a possible partner)."""
    buckets: dict[tuple[str, int, bytes], list[TensorInfo]] = defaultdict(list)
    for tensor in tensors:
        if tensor.id in digests and tensor.nnz is None:
            buckets[(tensor.dtype, tensor.numel, digests[tensor.id])].append(tensor)
    edges = []
    for members in buckets.values():
        kept: list[TensorInfo] = []
        for tensor in members:
            match = next((k for k in kept if same_bytes(k, tensor)), None)
            if match is None:
                kept.append(tensor)
            else:
                relation = "identical" if match.shape == tensor.shape else "reshaped"
                edges.append(CopyEdge(match.id, tensor.id, relation))
    return edges


def group_copies(
    tensors: Sequence[TensorInfo], edges: Iterable[CopyEdge], unused: frozenset[str] = frozenset()
) -> tuple[CopyGroup, ...]:
    """Merge copy edges into groups (union-find). The kept tensor is one the graph uses, then
    the smallest in bytes (an int8 weight rather than its float copy), then the first in file
    order."""
    order = {t.id: (t.id in unused, t.nbytes, i) for i, t in enumerate(tensors)}
    by_id = {t.id: t for t in tensors}
    edge_list = list(edges)
    linked = UnionFind()
    for edge in edge_list:
        linked.union(edge.source, edge.copy)
    head_of: dict[str, str] = {}
    for members in linked.to_sets():
        head = min(members, key=order.__getitem__)
        head_of.update((member, head) for member in members)
    # each copy is reported under the relation of an edge that brought it in (one to the head
    # when there is one); copies of one head under one relation (and one scale) form an entry
    relation_of: dict[str, CopyEdge] = {}
    for edge in edge_list:
        head = head_of[edge.source]
        for member, other in ((edge.copy, edge.source), (edge.source, edge.copy)):
            if member != head and (member not in relation_of or other == head):
                relation_of[member] = edge
    entries: dict[tuple[str, str, float | None], list[str]] = defaultdict(list)
    for member, edge in relation_of.items():
        # an edge says copy = scale * source; a member reported as the edge's source is
        # 1/scale times the other end
        scale = edge.scale
        if scale is not None and member == edge.source and scale != 0:
            scale = float(np.float32(1.0 / scale))
        entries[(head_of[member], edge.relation, scale)].append(member)
    groups = []
    for (head, relation, scale), copies in entries.items():
        copies.sort(key=order.__getitem__)
        groups.append(
            CopyGroup(
                tensors=(head, *copies),
                relation=relation,
                wasted_params=sum(by_id[c].stored_elements for c in copies),
                wasted_bytes=sum(by_id[c].nbytes for c in copies),
                scale=scale,
            )
        )
    groups.sort(key=lambda g: (-g.wasted_bytes, g.tensors))
    return tuple(groups)
