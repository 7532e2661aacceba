"""Repeated blocks: structurally identical stretches of the op graph (a transformer's layers)
with their own weights, lined up position by position.

Each parameter is labelled by the Weisfeiler-Lehman label (two rounds) of the op that first
applies it, plus its input slot, shape and dtype. In execution order these labels form a
sequence; a block repeated k times is a stretch of period p repeated k times (a tandem repeat),
found with one vectorised comparison per candidate period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from auditor.analyses.fingerprint import Fingerprint
from auditor.graph import ModelGraph, TensorInfo
from auditor.roles import Role

_MAX_FAMILIES = 8
_WL_ITERATIONS = 2


@dataclass(frozen=True)
class BlockFamily:
    """k blocks; ``blocks[j][t]`` is the tensor at position t of block j."""

    blocks: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class PositionDistance:
    position: int
    tensor: str  # the tensor at this position in the first block
    adjacent: tuple[float | None, ...]  # relative distance between blocks j and j+1 (None: not float)


@dataclass(frozen=True)
class RepeatedBlocks:
    """A family of repeated blocks and what sharing their weights would save."""

    blocks: tuple[tuple[str, ...], ...]
    params_per_block: int
    bytes_per_block: int
    saved_params_if_shared: int  # one set of weights for all blocks (ALBERT-style)
    saved_bytes_if_shared: int
    saved_params_if_pairs_shared: int  # blocks 0+1, 2+3... share one set per pair
    saved_bytes_if_pairs_shared: int
    mean_distance: float | None
    boundary_distances: tuple[float | None, ...]  # mean over positions between blocks j and j+1
    distances: tuple[PositionDistance, ...]


def _op_labels(model: ModelGraph, params: Mapping[str, TensorInfo]) -> dict[str, int]:
    """Weisfeiler-Lehman labels of the main graph's ops: an op's own label (type, attributes,
    weight slots and shapes), refined ``_WL_ITERATIONS`` times with the sorted labels of its
    producers and consumers. Labels are interned to small ints, so equal neighbourhoods get equal
    labels within one run; this is networkx's subgraph hashing without a digest per node, which
    cost most of the time on 100k-node graphs."""
    nodes = model.nodes_by_scope.get("", ())
    intern: dict[object, int] = {}
    label: dict[str, int] = {}
    for node in nodes:
        weights = sorted(
            f"{i}:{params[v].dtype}{list(params[v].shape)}" for i, v in enumerate(node.inputs) if v in params
        )
        attrs = ",".join(f"{k}={v}" for k, v in sorted(node.attrs.items()) if isinstance(v, (int, float, str, list)))
        label[node.id] = intern.setdefault(f"{node.op_type}|{attrs}|{';'.join(weights)}", len(intern))
    producers: dict[str, list[str]] = {node.id: [] for node in nodes}
    consumers: dict[str, list[str]] = {node.id: [] for node in nodes}
    for node in nodes:
        for value in node.inputs:
            producer = model.producer_of.get(value)
            if producer is not None and producer in producers:
                producers[node.id].append(producer)
                consumers[producer].append(node.id)
    for _ in range(_WL_ITERATIONS):
        label = {
            node: intern.setdefault(
                (own, tuple(sorted(label[p] for p in producers[node])), tuple(sorted(label[c] for c in consumers[node]))),
                len(intern),
            )
            for node, own in label.items()
        }
    return label


def _source_parameter(model: ModelGraph, value: str, params: Mapping[str, TensorInfo]) -> str | None:
    """The parameter a value is a view of (Transpose(W), Cast(W)...), if any."""
    for _ in range(16):
        if value in params:
            return value
        producer = model.producer_of.get(value)
        if producer is None:
            return None
        node = model.nodes[producer]
        if not node.inputs or node.role(0) not in (Role.VIEW, Role.DEQUANTIZE):
            return None
        value = node.inputs[0]
    return None


_CANDIDATE_PERIODS = 16


def _candidate_periods(codes: np.ndarray, weights: np.ndarray, free: np.ndarray) -> list[int]:
    """Periods worth trying: in a block repeated k times, each position's label recurs one period
    later, so the period is among the distances to the next equal label that carry the most
    weight. Trying those few instead of every period up to n/2 keeps the search linear."""
    following: dict[int, int] = {}
    weight_at: dict[int, float] = {}
    for i in range(len(codes) - 1, -1, -1):
        code = int(codes[i])
        later = following.get(code)
        if later is not None and free[i] and free[later]:
            distance = later - i
            if distance <= len(codes) // 2:
                weight_at[distance] = weight_at.get(distance, 0.0) + float(weights[i])
        following[code] = i
    return sorted(sorted(weight_at, key=lambda d: (-weight_at[d], d))[:_CANDIDATE_PERIODS])


def _best_repeat(codes: np.ndarray, weights: np.ndarray, free: np.ndarray) -> tuple[int, int, int] | None:
    """(start, period, count) of the tandem repeat saving most weight among free positions."""
    n = len(codes)
    best: tuple[float, int, int, int] | None = None
    prefix = np.concatenate([[0.0], np.cumsum(weights)])
    for period in _candidate_periods(codes, weights, free):
        same = (codes[:-period] == codes[period:]) & free[:-period] & free[period:]
        if not same.any():
            continue
        padded = np.concatenate([[False], same, [False]])
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        for start, stop in zip(edges[::2], edges[1::2]):
            length = stop - start
            if length < period:
                continue
            count = (length + period) // period
            saved = (prefix[start + period] - prefix[start]) * (count - 1)
            if best is None or saved > best[0]:
                best = (saved, int(start), period, count)
    return None if best is None else best[1:]


def find_block_families(model: ModelGraph, params: Sequence[TensorInfo]) -> tuple[BlockFamily, ...]:
    """Families of repeated blocks in the main graph, each block a tuple of distinct tensors."""
    by_id = {t.id: t for t in params}
    if len(by_id) < 2:
        return ()
    labels = _op_labels(model, by_id)
    sequence: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for node in model.nodes_by_scope.get("", ()):
        if node.roles and node.role(0) in (Role.VIEW, Role.DEQUANTIZE):
            continue
        for index, value in enumerate(node.inputs):
            tensor = _source_parameter(model, value, by_id)
            if tensor is not None and tensor not in seen:
                seen.add(tensor)
                t = by_id[tensor]
                loose = f"{node.op_type}/{index}/{t.dtype}{list(t.shape)}"
                sequence.append((tensor, f"{labels[node.id]}/{loose}", loose))
    if len(sequence) < 2:
        return ()
    vocabulary: dict[str, int] = {}
    codes = np.array([vocabulary.setdefault(label, len(vocabulary)) for _, label, _ in sequence])
    loose_codes = [item[2] for item in sequence]
    weights = np.array([by_id[t].numel for t, _, _ in sequence], dtype=np.float64)
    free = np.ones(len(sequence), dtype=bool)
    total = weights.sum()
    families = []
    for _ in range(_MAX_FAMILIES):
        found = _best_repeat(codes, weights, free)
        if found is None:
            break
        start, period, count = found
        # The first and last blocks sit next to the graph's input and output, so their
        # neighbourhood hashes differ; extend the repeat over them on op, slot and shape alone.
        stop = start + period * count
        while start > 0 and free[start - 1] and loose_codes[start - 1] == loose_codes[start - 1 + period]:
            start -= 1
        while stop < len(loose_codes) and free[stop] and loose_codes[stop] == loose_codes[stop - period]:
            stop += 1
        count = (stop - start) // period
        saved = weights[start : start + period].sum() * (count - 1)
        if saved < 0.005 * total:
            break
        blocks = tuple(tuple(t for t, _, _ in sequence[start + j * period : start + (j + 1) * period]) for j in range(count))
        families.append(BlockFamily(blocks))
        free[start : start + period * count] = False
    return tuple(families)


def _saved_by_sharing(
    blocks: Sequence[tuple[str, ...]],
    pairs: Sequence[tuple[int, int]],
    by_id: Mapping[str, TensorInfo],
    copy_head: Mapping[str, str],
) -> tuple[int, int]:
    """Params and bytes saved if block j used block i's weights, for each (i, j); tensors that
    already are copies of their counterpart save nothing more."""
    params = size = 0
    for keep, drop in pairs:
        for base, other in zip(blocks[keep], blocks[drop]):
            if copy_head.get(other, other) != copy_head.get(base, base):
                params += by_id[other].numel
                size += by_id[other].nbytes
    return params, size


def describe_families(
    families: Sequence[BlockFamily],
    params: Sequence[TensorInfo],
    prints: Mapping[str, Fingerprint],
    dots: Mapping[tuple[str, str], float],
    copy_head: Mapping[str, str],
) -> tuple[RepeatedBlocks, ...]:
    """Savings and per-position distances of each family. Tensors already merged as copies of
    the first block's tensor save nothing more; a family with nothing left to save is dropped."""
    by_id = {t.id: t for t in params}
    described = []
    for family in families:
        first = family.blocks[0]
        saved_params, saved_bytes = _saved_by_sharing(family.blocks, [(0, j) for j in range(1, len(family.blocks))],
                                                      by_id, copy_head)  # fmt: skip
        pairs = [(j, j + 1) for j in range(0, len(family.blocks) - 1, 2)]
        pair_params, pair_bytes = _saved_by_sharing(family.blocks, pairs, by_id, copy_head)
        if saved_params == 0:
            continue
        positions = []
        for t, tensor in enumerate(first):
            adjacent: list[float | None] = []
            for j in range(len(family.blocks) - 1):
                a, b = family.blocks[j][t], family.blocks[j + 1][t]
                fa, fb = prints.get(a), prints.get(b)
                if fa is None or fb is None or (a, b) not in dots:
                    adjacent.append(None)
                    continue
                squared = max(fa.sumsq + fb.sumsq - 2 * dots[(a, b)], 0.0)
                scale = math.sqrt(max(fa.sumsq, fb.sumsq))
                adjacent.append(round(math.sqrt(squared) / scale, 6) if scale else 0.0)
            positions.append(PositionDistance(t, tensor, tuple(adjacent)))
        finite = [d for p in positions for d in p.adjacent if d is not None]
        boundaries = []
        for j in range(len(family.blocks) - 1):
            known = [d for p in positions if (d := p.adjacent[j]) is not None]
            boundaries.append(round(float(np.mean(known)), 6) if known else None)
        per_block = sum(by_id[t].numel for t in first)
        described.append(
            RepeatedBlocks(
                blocks=family.blocks,
                params_per_block=per_block,
                bytes_per_block=sum(by_id[t].nbytes for t in first),
                saved_params_if_shared=saved_params,
                saved_bytes_if_shared=saved_bytes,
                saved_params_if_pairs_shared=pair_params,
                saved_bytes_if_pairs_shared=pair_bytes,
                mean_distance=round(float(np.mean(finite)), 6) if finite else None,
                boundary_distances=tuple(boundaries),
                distances=tuple(positions),
            )
        )
    described.sort(key=lambda r: -r.saved_params_if_shared)
    return tuple(described)
