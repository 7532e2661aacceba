"""One streaming pass over tensor values: hashes, order-free statistics and random sketches.

Each tensor is read once, in chunks with bounded memory, and summarised by a Fingerprint:
an xxh3-128 digest of its bytes (identical copies), order-free statistics (sum of squares,
min, max: transposed, scaled and cast copies share them up to a factor or rounding) and a
16-number random projection of its values (near-duplicates: distances between sketches
estimate distances between tensors). Tensors that must be compared element by element later
(adjacent blocks of a repeated structure) are read in lockstep, so that comparison costs no
second read. Work runs on a thread pool: hashing, file reads and numpy release the GIL.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import xxhash

from auditor.graph import TensorInfo

CHUNK_ELEMENTS = 1 << 22

SKETCH_DIM = 16
_ROW = 256  # sketch rows: element i sits at column i % _ROW of row i // _ROW
_PROJECTION = (np.random.default_rng(20261126).standard_normal((_ROW, SKETCH_DIM)) / np.sqrt(SKETCH_DIM)).astype(
    np.float32
)

OnBytes = Callable[[int], None]  # told how many bytes were just read


@dataclass(frozen=True)
class Fingerprint:
    """A tensor's summary; statistics are over its values as float64 where it is a float tensor."""

    tensor: str
    dtype: str
    numel: int
    digest: bytes
    sumsq: float = 0.0
    minimum: float = 0.0
    maximum: float = 0.0
    sketch: np.ndarray = field(default_factory=lambda: np.zeros(SKETCH_DIM), compare=False, repr=False)
    sumabs: float = 0.0

    @property
    def rms(self) -> float:
        return float(np.sqrt(self.sumsq / self.numel)) if self.numel else 0.0

    @property
    def mean_abs_ratio(self) -> float:
        """mean|x| / rms: like ``peak_ratio`` unchanged by scaling, transposing or casting, but a
        property of every element rather than of one, so unrelated tensors seldom agree on it."""
        rms = self.rms
        return self.sumabs / self.numel / rms if rms and self.numel else 0.0

    @property
    def peak_ratio(self) -> float:
        """max|x| / rms: unchanged by scaling, transposing or casting the tensor."""
        rms = self.rms
        return max(abs(self.minimum), abs(self.maximum)) / rms if rms else 0.0


def _row_signs(first_row: int, rows: int) -> np.ndarray:
    index = np.arange(first_row, first_row + rows, dtype=np.uint64)
    mixed = (index + np.uint64(0x632BE59BD9B4E019)) * np.uint64(0x9E3779B97F4A7C15)
    return np.where((mixed >> np.uint64(63)) == 1, -1.0, 1.0).astype(np.float32)


class _Accumulator:
    def __init__(self, tensor: TensorInfo) -> None:
        self.tensor = tensor
        self.digest = xxhash.xxh3_128()
        self.is_float = tensor.is_float
        self.sumsq = 0.0
        self.sumabs = 0.0
        self.minimum = np.inf
        self.maximum = -np.inf
        self.sketch = np.zeros(SKETCH_DIM, dtype=np.float64)
        self.seen = 0

    def add(self, raw: memoryview, values: np.ndarray) -> np.ndarray | None:
        """Fold one chunk in; return it as float32 (for lockstep dot products) or None."""
        self.digest.update(raw)
        if not self.is_float or values.size == 0:
            self.seen += values.size
            return None
        x = values if values.dtype == np.float32 else values.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            square = float(np.dot(x, x))
        if not np.isfinite(square):  # magnitudes past 1e19 overflow float32 squares: redo in float64
            wide = x.astype(np.float64)
            square = float(np.dot(wide, wide))
        self.sumsq += square
        self.sumabs += float(np.abs(x).sum(dtype=np.float64))
        self.minimum = min(self.minimum, float(x.min()))
        self.maximum = max(self.maximum, float(x.max()))
        # The sketch is R^T (sum over rows r of sign_r * row_r): rows of _ROW consecutive
        # elements folded with random signs (one memory-bound pass), then projected to
        # SKETCH_DIM numbers. It is linear, so sketch(a) - sketch(b) = sketch(a - b), and
        # its expected squared norm is the tensor's. Chunks start on row boundaries.
        rows = -(-x.size // _ROW)
        padded = x if x.size == rows * _ROW else np.concatenate([x, np.zeros(rows * _ROW - x.size, np.float32)])
        signs = _row_signs(self.seen // _ROW, rows)
        with np.errstate(over="ignore", invalid="ignore"):
            folded = (signs @ padded.reshape(rows, _ROW)).astype(np.float64)
        if not np.all(np.isfinite(folded)):  # float32 sums overflowed: fold in float64
            folded = signs.astype(np.float64) @ padded.reshape(rows, _ROW).astype(np.float64)
        self.sketch += folded @ _PROJECTION
        self.seen += values.size
        return x

    def result(self) -> Fingerprint:
        t = self.tensor
        if not self.is_float or not self.seen:
            return Fingerprint(t.id, t.dtype, t.numel, self.digest.digest())
        return Fingerprint(
            t.id, t.dtype, t.numel, self.digest.digest(), self.sumsq, self.minimum, self.maximum,
            self.sketch.copy(), self.sumabs,
        )  # fmt: skip


def _fingerprint_group(
    group: Sequence[TensorInfo], progress: OnBytes | None
) -> tuple[list[Fingerprint], dict[tuple[str, str], float]]:
    """Fingerprint tensors of equal size in lockstep, with dot products of neighbours."""
    accumulators = [_Accumulator(t) for t in group]
    dots: dict[tuple[str, str], float] = {}
    per_tensor = max(_ROW, (CHUNK_ELEMENTS // max(len(group), 1)) // _ROW * _ROW)
    streams = [t.chunks(per_tensor) for t in group]
    while True:
        chunks = [next(s, None) for s in streams]
        if all(c is None for c in chunks):
            break
        previous: np.ndarray | None = None
        for i, (acc, chunk) in enumerate(zip(accumulators, chunks)):
            if chunk is None:
                previous = None
                continue
            values = acc.add(*chunk)
            if progress:
                progress(len(chunk[0]))
            if values is not None and previous is not None and i > 0 and values.size == previous.size:
                key = (group[i - 1].id, group[i].id)
                with np.errstate(over="ignore", invalid="ignore"):
                    dot = float(np.dot(previous, values))
                if not np.isfinite(dot):  # float32 overflow: redo in float64
                    dot = float(np.dot(previous.astype(np.float64), values.astype(np.float64)))
                dots[key] = dots.get(key, 0.0) + dot
            previous = values
    return [a.result() for a in accumulators], dots


def worth_reading(params: Sequence[TensorInfo], extra_sizes: Sequence[int] = ()) -> list[TensorInfo]:
    """Tensors that could be a copy or near-duplicate of another: some other tensor (or a
    dequantized weight, ``extra_sizes``) has as many elements. The rest are never read."""
    sizes = Counter(t.numel for t in params if t.nnz is None)
    sizes.update(extra_sizes)
    return [t for t in params if t.nnz is None and sizes[t.numel] >= 2 and t.numel > 0]


def fingerprint_all(
    singles: Sequence[TensorInfo],
    lockstep: Sequence[Sequence[TensorInfo]] = (),
    progress: OnBytes | None = None,
    workers: int | None = None,
) -> tuple[dict[str, Fingerprint], dict[tuple[str, str], float]]:
    """Fingerprints of every tensor given; ``lockstep`` groups (equal sizes) also get the dot
    products of consecutive members, ``dots[(a, b)] = sum(a * b)``."""
    units: list[list[TensorInfo]] = [list(g) for g in lockstep] + [[t] for t in singles]
    units.sort(key=lambda u: -sum(t.nbytes for t in u))  # big first: better balance
    workers = workers or min(2, os.cpu_count() or 1)
    prints: dict[str, Fingerprint] = {}
    dots: dict[tuple[str, str], float] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for found, pair_dots in pool.map(lambda u: _fingerprint_group(u, progress), units):
            prints.update((f.tensor, f) for f in found)
            dots.update(pair_dots)
    return prints, dots


def fingerprint_array(tensor_id: str, values: np.ndarray) -> Fingerprint:
    """Fingerprint of values computed in memory (dequantized weights)."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    accumulator = _Accumulator(
        TensorInfo(tensor_id, tensor_id, "", "computed", "float32", tuple(values.shape), flat.nbytes)
    )
    for start in range(0, flat.size, CHUNK_ELEMENTS):
        part = flat[start : start + CHUNK_ELEMENTS]
        accumulator.add(memoryview(part.view(np.uint8)), part)  # type: ignore[arg-type]
    return accumulator.result()
