"""Copies that are not byte-identical: transposed, reshaped, cast, scaled and dequantized.

Candidates come from fingerprints (order-free statistics agree, up to a factor or rounding),
so no pair is compared unless its summaries match; every candidate is then confirmed on the
values, in each layout that fits (same order, or an axis permutation).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from auditor.analyses.copies import CopyEdge, UnionFind
from auditor.analyses.fingerprint import Fingerprint
from auditor.graph import ModelGraph, OpNode, TensorInfo
from auditor.roles import Role

_LOW_PRECISION = {"float16": 1e-3, "bfloat16": 8e-3, "float8e4m3fn": 0.07, "float8e5m2": 0.13}
_MAX_PERMUTED_RANK = 4
_SCALE_RTOL = 1e-5
_WINDOW = 32  # at most this many look-alike neighbours are tried per tensor
# Below this size a tensor is only matched byte for byte: a few-element bias or scale that is
# a transform of another is as likely chance as a copy, and crowds of them cost time.
MIN_ELEMENTS = 64


@dataclass(frozen=True)
class Dequantized:
    """Float values of a quantized weight, ``(q - zero_point) * scale``, computed on demand
    (so that only one is in memory at a time)."""

    source: str  # the integer tensor
    numel: int
    compute: Callable[[], np.ndarray | None] = field(compare=False, repr=False)


def _layouts(a: np.ndarray, shape: tuple[int, ...]) -> Iterator[tuple[np.ndarray, bool]]:
    """Views of ``a`` with ``shape``: same element order (reshaped if the shape differs), then
    each axis permutation whose shape fits. Yields (view, permuted)."""
    if a.shape == shape or a.size == int(np.prod(shape)):
        yield a.reshape(shape), False
    if 1 < a.ndim <= _MAX_PERMUTED_RANK:
        for perm in itertools.permutations(range(a.ndim)):
            if perm != tuple(range(a.ndim)) and tuple(a.shape[p] for p in perm) == shape:
                yield a.transpose(perm), True


def _sample_agrees(view: np.ndarray, target: np.ndarray, scale: float, rtol: float, atol: float) -> bool:
    """A cheap look at 512 spread-out elements before comparing whole tensors."""
    flat = np.linspace(0, target.size - 1, num=min(512, target.size), dtype=np.int64)
    index = np.unravel_index(flat, target.shape)
    return bool(np.allclose(np.asarray(target[index], np.float64), scale * np.asarray(view[index], np.float64),
                            rtol=rtol, atol=atol))  # fmt: skip


def _as_float(t: TensorInfo) -> np.ndarray:
    return np.asarray(t.read(), dtype=np.float32) if t.dtype != "float64" else np.asarray(t.read())


def _close(x: float, y: float, rtol: float) -> bool:
    return abs(x - y) <= rtol * max(abs(x), abs(y), 1e-30)


def _relate(a: TensorInfo, b: TensorInfo, fa: Fingerprint, fb: Fingerprint) -> CopyEdge | None:
    """How ``b`` derives from ``a``, if it does: transposed, cast or scaled."""
    if a.dtype != b.dtype:
        low, high = (b, a) if b.dtype in _LOW_PRECISION else (a, b)
        rtol = _LOW_PRECISION.get(low.dtype)
        if rtol is None or high.dtype not in ("float32", "float64"):
            return None
        if not _close(fa.sumsq, fb.sumsq, 4 * rtol) or not _close(fa.peak_ratio, fb.peak_ratio, 4 * rtol):
            return None
        low_values = np.asarray(low.read())
        high_values = np.asarray(high.read())
        for view, _ in _layouts(high_values, low.shape):
            if np.array_equal(view.astype(low_values.dtype), low_values):
                return CopyEdge(high.id, low.id, "cast")
        return None
    if not _close(fa.peak_ratio, fb.peak_ratio, 1e-4):
        return None
    if fa.minimum == fb.minimum and fa.maximum == fb.maximum and _close(fa.sumsq, fb.sumsq, 1e-5):
        values_a, values_b = _as_float(a), _as_float(b)
        for view, permuted in _layouts(values_a, b.shape):
            if permuted and _sample_agrees(view, values_b, 1.0, 0, 0) and np.array_equal(view, values_b):
                return CopyEdge(a.id, b.id, "transposed")
    if not fa.sumsq or not fb.sumsq:
        return None
    magnitude = float(np.sqrt(fb.sumsq / fa.sumsq))
    for scale in (magnitude, -magnitude):
        peak_a = fa.maximum if scale > 0 else fa.minimum
        if abs(scale - 1.0) < 1e-6 or not _close(fb.maximum, scale * peak_a, 1e-4):
            continue
        values_a, values_b = _as_float(a), _as_float(b)
        atol = 1e-6 * max(abs(fb.minimum), abs(fb.maximum))
        for view, _ in _layouts(values_a, b.shape):
            if _sample_agrees(view, values_b, scale, _SCALE_RTOL, atol) and np.allclose(
                values_b, scale * view, rtol=_SCALE_RTOL, atol=atol
            ):
                return CopyEdge(a.id, b.id, "scaled", scale=float(np.float32(scale)))
    return None


def _candidate_pairs(group: Sequence[Fingerprint], rtol: float) -> Iterator[tuple[Fingerprint, Fingerprint]]:
    """Pairs whose two scale-free ratios (peak and mean magnitude over rms) agree within
    ``rtol``: a sort and a sweep over at most ``_WINDOW`` neighbours each, not all pairs (as
    array operations: one comparison of shifted arrays per neighbour distance)."""
    peaks = np.array([f.peak_ratio for f in group], dtype=np.float64)
    spreads = np.array([f.mean_abs_ratio for f in group], dtype=np.float64)
    rows = np.argsort(peaks, kind="stable")
    peak, spread = peaks[rows], spreads[rows]
    found: list[tuple[int, int]] = []
    for step in range(1, min(_WINDOW, len(rows) - 1) + 1):
        near_peak = peak[step:] <= peak[:-step] * (1 + rtol) + 1e-12
        if not near_peak.any():
            break  # sorted by peak: farther neighbours are farther still
        close = near_peak & (np.abs(spread[step:] - spread[:-step]) <= rtol * np.maximum(
            np.maximum(np.abs(spread[step:]), np.abs(spread[:-step])), 1e-30))  # fmt: skip
        found.extend((int(first), int(first) + step) for first in np.flatnonzero(close))
    for i, j in sorted(found):  # the order of the old sweep: by first tensor, then distance
        yield group[int(rows[i])], group[int(rows[j])]


def transformed_edges(
    tensors: Sequence[TensorInfo],
    prints: dict[str, Fingerprint],
    already: Sequence[CopyEdge] = (),
    dequantized: Sequence[Dequantized] = (),
    dequantized_prints: dict[str, Fingerprint] | None = None,
) -> list[CopyEdge]:
    """Transposed, cast and scaled copies among float tensors, and float copies of dequantized
    weights. Pairs already linked by ``already`` are skipped."""
    by_id = {t.id: t for t in tensors}
    linked = UnionFind()
    for known in already:
        linked.union(known.source, known.copy)
    stand_ins = {known.copy for known in already}  # byte copies: the tensor they copy stands for them
    buckets: dict[int, list[Fingerprint]] = defaultdict(list)
    for tensor in tensors:
        fp = prints.get(tensor.id)
        if (
            fp is not None and tensor.is_float and tensor.nnz is None and fp.sumsq > 0
            and tensor.id not in stand_ins and tensor.numel >= MIN_ELEMENTS
        ):  # fmt: skip
            buckets[tensor.numel].append(fp)
    edges: list[CopyEdge] = []
    order = {t.id: i for i, t in enumerate(tensors)}
    for group in buckets.values():
        window = max([4 * _LOW_PRECISION.get(f.dtype, 0.0) for f in group] + [1e-4])
        for first, second in _candidate_pairs(group, window):
            a, b = sorted((by_id[first.tensor], by_id[second.tensor]), key=lambda t: order[t.id])
            if linked[a.id] == linked[b.id]:
                continue
            with np.errstate(over="ignore", invalid="ignore"):  # huge magnitudes: no match, no warning
                edge = _relate(a, b, prints[a.id], prints[b.id])
            if edge is not None:
                edges.append(edge)
                linked.union(a.id, b.id)
    for source in dequantized:
        fq = (dequantized_prints or {}).get(source.source)
        if fq is None or fq.sumsq <= 0:
            continue
        for fp in buckets.get(source.numel, ()):
            if not (_close(fp.sumsq, fq.sumsq, 1e-3) and _close(fp.peak_ratio, fq.peak_ratio, 1e-3)
                    and _close(fp.mean_abs_ratio, fq.mean_abs_ratio, 1e-3)):  # fmt: skip
                continue
            dequantized_values = source.compute()
            if dequantized_values is None:
                break
            target = by_id[fp.tensor]
            values = np.asarray(target.read(), dtype=np.float32)
            atol = 1e-5 * max(abs(fq.minimum), abs(fq.maximum))
            if any(np.allclose(values, view, rtol=1e-5, atol=atol) for view, _ in _layouts(dequantized_values, target.shape)):
                edges.append(CopyEdge(source.source, target.id, "dequantized"))
    return edges


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int) -> np.ndarray | None:
    """(q - zero) * scale per tensor, per axis or in blocks along ``axis``; None if malformed."""
    values = q.astype(np.float32)
    if scale.size > 1:
        if not -values.ndim <= axis < values.ndim:
            return None
        axis %= values.ndim
        if block > 0:
            scale, zero = np.repeat(scale, block, axis=axis), np.repeat(zero, block, axis=axis)
            if scale.shape[axis] < values.shape[axis]:
                return None
            scale = scale.take(range(values.shape[axis]), axis=axis)
            zero = zero.take(range(values.shape[axis]), axis=axis)
        else:
            shape = [1] * values.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
    try:
        return np.asarray((values - zero) * scale, dtype=np.float32)
    except ValueError:  # shapes that do not broadcast: the file is malformed, relate nothing
        return None


def dequantized_weights(
    model: ModelGraph, params: Sequence[TensorInfo], max_elements: int = 1 << 26
) -> list[Dequantized]:
    """Float values of each stored quantized weight read by a DequantizeLinear with stored scale
    and zero point (per tensor, per axis or blocked) — only where a float parameter of the same
    size exists, since otherwise there is nothing it could be a copy of."""
    param_ids = {t.id for t in params}
    float_sizes = {t.numel for t in params if t.is_float}
    found = []
    for node in model.nodes.values():
        if not node.roles or node.role(0) is not Role.DEQUANTIZE or 0 not in node.quantized:
            continue
        scale_slot, zero_slot = node.quantized[0]
        q_id = node.inputs[0]
        scale_id = node.inputs[scale_slot] if scale_slot is not None and scale_slot < len(node.inputs) else ""
        zero_id = node.inputs[zero_slot] if zero_slot is not None and zero_slot < len(node.inputs) else ""
        if q_id not in param_ids or scale_id not in model.tensors or (zero_id and zero_id not in model.tensors):
            continue
        q = model.tensors[q_id]
        if q.numel > max_elements or q.numel not in float_sizes:
            continue
        found.append(Dequantized(q_id, q.numel, _dequantizer(model, node, q, scale_id, zero_id)))
    return found


def _dequantizer(model: ModelGraph, node: OpNode, q: TensorInfo, scale_id: str, zero_id: str) -> Callable[[], np.ndarray | None]:
    def compute() -> np.ndarray | None:
        scale = np.asarray(model.tensors[scale_id].read(), dtype=np.float32)
        zero = np.asarray(model.tensors[zero_id].read()).astype(np.float32) if zero_id else np.zeros_like(scale)
        axis = int(node.attrs.get("axis", 1))
        block = int(node.attrs.get("block_size", 0) or 0)
        values = _dequantize(np.asarray(q.read()), scale, zero, axis, block)
        return values if values is not None and values.size == q.numel else None

    return compute
