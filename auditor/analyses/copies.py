"""Stored copies of the same parameters under different names: the one place tensors are merged.

Every relation found (identical bytes here; transformed copies in ``transforms``) is an edge
between two tensors; connected tensors form one group, counted once in ``unique_params``.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from auditor.graph import TensorInfo

class UnionFind:
    """Disjoint sets of tensor ids (union by size, path halving). Written here rather than taken
    from networkx.utils: importing networkx for it cost every audit 13 MB and a third of a second."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}

    def __getitem__(self, item: str) -> str:
        """The representative of ``item``'s set (``item`` joins as a set of its own if new)."""
        parent = self._parent
        if item not in parent:
            parent[item] = item
            self._size[item] = 1
            return item
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, first: str, second: str) -> None:
        a, b = self[first], self[second]
        if a == b:
            return
        if self._size[a] < self._size[b]:
            a, b = b, a
        self._parent[b] = a
        self._size[a] += self._size.pop(b)

    def to_sets(self) -> list[set[str]]:
        groups: dict[str, set[str]] = defaultdict(set)
        for item in list(self._parent):
            groups[self[item]].add(item)
        return list(groups.values())


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


def _equal_bytes(x: memoryview, y: memoryview) -> bool:
    """Byte equality at memory speed: 8 bytes at a time (memoryview == goes element by element)."""
    if len(x) != len(y):
        return False
    first, second = np.frombuffer(x, dtype=np.uint8), np.frombuffer(y, dtype=np.uint8)
    whole = len(first) // 8 * 8
    return bool(
        np.array_equal(first[:whole].view(np.uint64), second[:whole].view(np.uint64))
        and np.array_equal(first[whole:], second[whole:])
    )


def same_bytes(a: TensorInfo, b: TensorInfo) -> bool:
    """Byte-for-byte comparison of two tensors of one dtype and size, chunk by chunk."""
    if a.nbytes != b.nbytes or a.numel != b.numel or a.dtype != b.dtype:
        return False
    return all(_equal_bytes(x, y) for (x, _), (y, _) in zip(a.chunks(), b.chunks()))


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
    # each copy is reported under the relation of the edge that reaches it on a shortest path
    # from the kept tensor, with the scale multiplied along that path (copy = scale x kept)
    neighbours: dict[str, list[tuple[str, CopyEdge, float | None]]] = defaultdict(list)
    for edge in edge_list:
        inverse = None
        if edge.scale is not None:
            inverse = 1.0 / edge.scale if edge.scale != 0 else None
        neighbours[edge.source].append((edge.copy, edge, edge.scale))
        neighbours[edge.copy].append((edge.source, edge, inverse))
    entries: dict[tuple[str, str, float | None], list[str]] = defaultdict(list)
    for head in sorted(set(head_of.values()), key=order.__getitem__):
        factor: dict[str, float] = {head: 1.0}
        queue = deque([head])
        while queue:
            current = queue.popleft()
            for other, edge, scale in neighbours[current]:
                if other in factor:
                    continue
                factor[other] = factor[current] * (scale if scale is not None else 1.0)
                scaled = abs(factor[other] - 1.0) > 1e-6
                relation = "scaled" if scaled and edge.relation in ("identical", "reshaped") else edge.relation
                kept_scale = float(np.float32(factor[other])) if scaled or relation == "scaled" else None
                entries[(head, relation, kept_scale)].append(other)
                queue.append(other)
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
