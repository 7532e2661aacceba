"""Shareable parameters: near-duplicate tensors (close values, different names).

Sketches first: each float tensor's 16-number random projection is hashed with random
hyperplanes (SimHash) into bands, so only tensors landing in a common bucket are compared,
and the cost grows about linearly with the number of tensors. Candidates whose sketches are
close are then measured exactly, streaming both tensors.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from auditor.analyses.fingerprint import SKETCH_DIM, Fingerprint
from auditor.graph import TensorInfo

DEFAULT_TOLERANCE = 0.01
MIN_ELEMENTS = 64  # smaller tensors (a few biases) are not worth sharing and crowd the search
_WINDOW = 32
_BANDS = 8
_HYPERPLANES = np.random.default_rng(7).standard_normal((_BANDS * 24, SKETCH_DIM))


@dataclass(frozen=True)
class NearGroup:
    """Tensors within the tolerance of the first; sharing them would save the others' storage."""

    tensors: tuple[str, ...]
    relation: str
    distance: float  # largest relative Frobenius distance to the first tensor
    cosine: float  # smallest cosine similarity to the first tensor
    saved_params: int
    saved_bytes: int


def exact_distance(a: TensorInfo, b: TensorInfo) -> tuple[float, float]:
    """(||a - b|| / max(||a||, ||b||), cosine) streaming both tensors in the same element order."""
    diff = dot = norm_a = norm_b = 0.0
    for (_, x), (_, y) in zip(a.chunks(), b.chunks()):
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        delta = x64 - y64
        diff += float(delta @ delta)
        dot += float(x64 @ y64)
        norm_a += float(x64 @ x64)
        norm_b += float(y64 @ y64)
    scale = math.sqrt(max(norm_a, norm_b))
    cosine = dot / math.sqrt(norm_a * norm_b) if norm_a and norm_b else 0.0
    return (math.sqrt(diff) / scale if scale else 0.0), cosine


def _bits_per_band(tolerance: float) -> int:
    # sketches of tensors at relative distance d differ by an angle of about d (up to 3d for a
    # 16-number sketch); keep each band's collision chance for such a pair above ~0.7
    angle = min(max(3 * tolerance, 1e-4), 1.0)
    return int(min(24, max(2, math.log(0.7) / math.log(1 - angle / math.pi))))


def near_duplicates(
    tensors: Sequence[TensorInfo],
    prints: dict[str, Fingerprint],
    tolerance: float = DEFAULT_TOLERANCE,
    same_group: dict[str, str] | None = None,
) -> tuple[NearGroup, ...]:
    """Groups of float tensors of equal size within ``tolerance`` relative distance, excluding
    stored copies (``same_group`` maps tensor -> its copy group's head, which stands for it)."""
    same_group = same_group or {}
    by_id = {t.id: t for t in tensors}
    bits = _bits_per_band(tolerance)
    planes = _HYPERPLANES[: _BANDS * bits].reshape(_BANDS, bits, SKETCH_DIM)
    weights = 1 << np.arange(bits, dtype=np.int64)
    order = {t.id: i for i, t in enumerate(tensors)}
    eligible = []
    for tensor in tensors:
        fp = prints.get(tensor.id)
        if fp is None or not tensor.is_float or tensor.nnz is not None or fp.sumsq <= 0:
            continue
        if tensor.numel < MIN_ELEMENTS:
            continue
        if same_group.get(tensor.id, tensor.id) != tensor.id:  # a stored copy: its head stands for it
            continue
        eligible.append(tensor)
    if len(eligible) < 2:
        return ()
    # every sketch hashed at once: (tensors x bands) bucket codes
    sketches = np.stack([prints[t.id].sketch for t in eligible])
    norms = np.linalg.norm(sketches, axis=1)
    units = sketches / np.where(norms > 0, norms, 1.0)[:, None]
    codes = np.stack([(units @ band.T > 0).astype(np.int64) @ weights for band in planes], axis=1)  # band by band: small temporaries
    # per band, rows sorted by (size, bucket code, first sketch coordinate): each tensor is paired
    # with the next _WINDOW rows of its bucket, so a crowd of look-alikes (hundreds of similar
    # small tensors) cannot make the work quadratic; all of it as array operations
    sizes = np.array([t.numel for t in eligible], dtype=np.int64)
    found: list[np.ndarray] = []
    for band in range(_BANDS):
        rows = np.lexsort((units[:, 0], codes[:, band], sizes))
        key_size, key_code = sizes[rows], codes[rows, band]
        for step in range(1, min(_WINDOW, len(rows) - 1) + 1):
            same = (key_size[:-step] == key_size[step:]) & (key_code[:-step] == key_code[step:])
            if not same.any():
                break  # sorted by bucket: no bucket holds step + 1 rows, so none holds more
            first, second = rows[:-step][same], rows[step:][same]
            found.append(np.minimum(first, second) * len(eligible) + np.maximum(first, second))
    if not found:
        return ()
    pair_codes = np.unique(np.concatenate(found))
    a, b = pair_codes // len(eligible), pair_codes % len(eligible)
    sketch_distance = np.linalg.norm(sketches[a] - sketches[b], axis=1) / np.maximum(np.maximum(norms[a], norms[b]), 1e-300)
    neighbours: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for hit in np.flatnonzero(sketch_distance <= 3 * tolerance + 1e-6):
        left, right = eligible[int(a[hit])], eligible[int(b[hit])]
        distance, cosine = exact_distance(left, right)
        if distance <= tolerance:
            neighbours[left.id][right.id] = neighbours[right.id][left.id] = (distance, cosine)
    # star groups: each group's tensors are within the tolerance of its first tensor (chains of
    # near pairs would otherwise drift beyond it)
    groups = []
    assigned: set[str] = set()
    for head in sorted(neighbours, key=order.__getitem__):
        if head in assigned:
            continue
        others = sorted((t for t in neighbours[head] if t not in assigned), key=order.__getitem__)
        if not others:
            continue
        assigned.update([head, *others])
        stats = [neighbours[head][t] for t in others]
        groups.append(
            NearGroup(
                tensors=(head, *others),
                relation="near",
                distance=max(s[0] for s in stats),
                cosine=min(s[1] for s in stats),
                saved_params=sum(by_id[t].numel for t in others),
                saved_bytes=sum(by_id[t].nbytes for t in others),
            )
        )
    groups.sort(key=lambda g: (-g.saved_bytes, g.tensors))
    return tuple(groups)
