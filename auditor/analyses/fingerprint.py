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
import threading
from collections import Counter, defaultdict
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
_BLOCK = 1 << 16  # elements per cache-sized block (256 KiB of float32), a multiple of _ROW


@dataclass(frozen=True, slots=True)  # slots: one per tensor read, 50,000 of them in a large export
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
        # Statistics and sketch block by block, each block small enough to stay in the cache:
        # the five passes over it then cost one read from memory instead of five.
        # The sketch is R^T (sum over rows r of sign_r * row_r): rows of _ROW consecutive
        # elements folded with random signs, then projected to SKETCH_DIM numbers. It is linear,
        # so sketch(a) - sketch(b) = sketch(a - b), and its expected squared norm is the tensor's.
        # Chunks start on row boundaries.
        rows = -(-x.size // _ROW)
        padded = x if x.size == rows * _ROW else np.concatenate([x, np.zeros(rows * _ROW - x.size, np.float32)])
        signs = _row_signs(self.seen // _ROW, rows)
        scratch = _scratch(min(_BLOCK, padded.size))
        square = absolute = 0.0
        low, high = np.inf, -np.inf
        folded = np.zeros(_ROW, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, padded.size, _BLOCK):
                block = padded[start : start + _BLOCK]
                square += float(np.dot(block, block))
                absolute += float(np.add.reduce(np.abs(block, out=scratch[: block.size])))
                low, high = min(low, float(block.min())), max(high, float(block.max()))
                first = start // _ROW
                # einsum reads the rows in memory order: 15x faster than signs @ matrix (a strided gemv)
                folded += np.einsum("r,rc->c", signs[first : first + block.size // _ROW], block.reshape(-1, _ROW))
        if not (np.isfinite(square) and np.all(np.isfinite(folded))):
            # magnitudes past 1e19 overflow float32 sums: redo in float64
            wide = padded.astype(np.float64)
            square = float(np.dot(wide, wide))
            folded = np.einsum("r,rc->c", signs.astype(np.float64), wide.reshape(rows, _ROW))
        if padded is not x:  # the zero padding is no element of the tensor: min and max of x itself
            low, high = float(x.min()), float(x.max())
        self.sumsq += square
        self.sumabs += absolute
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)
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


_local = threading.local()


def _thread_buffers() -> list[bytearray]:
    """Two read buffers per worker thread, reused for every tensor it reads."""
    if not hasattr(_local, "buffers"):
        _local.buffers = [bytearray(), bytearray()]
    buffers: list[bytearray] = _local.buffers
    return buffers


def _scratch(size: int) -> np.ndarray:
    """A float32 work array of at least ``size`` elements, one per worker thread."""
    scratch: np.ndarray | None = getattr(_local, "scratch", None)
    if scratch is None or scratch.size < size:
        scratch = _local.scratch = np.empty(size, dtype=np.float32)
    return scratch[:size]


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        dot = float(np.dot(a, b))
    if not np.isfinite(dot):  # float32 overflow: redo in float64
        dot = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    return dot


def _fingerprint_group(
    group: Sequence[TensorInfo], progress: OnBytes | None
) -> tuple[list[Fingerprint], dict[tuple[str, str], float]]:
    """Fingerprint tensors of equal size with the dot products of neighbours: one after the
    other when a tensor fits in one chunk (only two in memory at a time), else in lockstep,
    chunk by chunk."""
    dots: dict[tuple[str, str], float] = {}
    if group and group[0].numel <= CHUNK_ELEMENTS:
        prints = []
        before: np.ndarray | None = None
        buffers = _thread_buffers()
        for i, tensor in enumerate(group):
            accumulator = _Accumulator(tensor)
            current: np.ndarray | None = None
            # two buffers in turn: the previous tensor's values stay valid for the dot product
            for raw, part in tensor.chunks(CHUNK_ELEMENTS, buffers[i % 2]):
                current = accumulator.add(raw, part)
                if progress:
                    progress(len(raw))
            if current is not None and before is not None and current.size == before.size:
                dots[(group[i - 1].id, tensor.id)] = _dot(before, current)
            before = current
            prints.append(accumulator.result())
        return prints, dots
    accumulators = [_Accumulator(t) for t in group]
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
                dots[key] = dots.get(key, 0.0) + _dot(previous, values)
            previous = values
    return [a.result() for a in accumulators], dots


def worth_reading(params: Sequence[TensorInfo], extra_sizes: Sequence[int] = ()) -> list[TensorInfo]:
    """Tensors that could be a copy or near-duplicate of another: some other tensor (or a
    dequantized weight, ``extra_sizes``) has as many elements. The rest are never read."""
    sizes = Counter(t.numel for t in params if t.nnz is None)
    sizes.update(extra_sizes)
    return [t for t in params if t.nnz is None and sizes[t.numel] >= 2 and t.numel > 0]


# Tensors up to this many elements are fingerprinted many at once, as rows of one matrix:
# per-tensor numpy calls would cost more than the arithmetic on a few thousand elements.
SMALL_ELEMENTS = 1 << 16
_BATCH_ELEMENTS = 1 << 20  # 4 MiB of float32 per batch: its float64 copies stay small


def _batch_prints(
    group: Sequence[TensorInfo], progress: OnBytes | None, with_dots: bool
) -> tuple[list[Fingerprint], dict[tuple[str, str], float]]:
    """Fingerprints of equal-size small tensors computed on one stacked matrix (the same numbers
    as the streaming accumulator, up to float rounding); ``with_dots``: the dot products of
    consecutive members too."""
    numel = group[0].numel
    rows_per = max(1, _BATCH_ELEMENTS // max(numel, 1))
    prints: list[Fingerprint] = []
    dots: dict[tuple[str, str], float] = {}
    padded_rows = -(-numel // _ROW)
    signs = _row_signs(0, padded_rows)
    previous: tuple[TensorInfo, np.ndarray] | None = None
    for start in range(0, len(group), rows_per):
        members = group[start : start + rows_per]
        arrays = [np.ascontiguousarray(t.read()).reshape(-1) for t in members]
        digests = [xxhash.xxh3_128_digest(memoryview(a.view(np.uint8))) for a in arrays]  # type: ignore[arg-type]
        if progress:
            progress(sum(t.nbytes for t in members))
        if not members[0].is_float:
            prints += [Fingerprint(t.id, t.dtype, t.numel, d) for t, d in zip(members, digests)]
            previous = None
            continue
        x = np.zeros((len(members), padded_rows * _ROW), dtype=np.float32)
        for row, values in enumerate(arrays):
            x[row, :numel] = values
        with np.errstate(over="ignore", invalid="ignore"):
            squares = np.einsum("ij,ij->i", x, x, dtype=np.float64)
            folded = np.einsum("r,nrc->nc", signs, x.reshape(len(members), padded_rows, _ROW)).astype(np.float64)
        if not np.all(np.isfinite(folded)):  # float32 sums overflowed: fold in float64
            folded = np.einsum("r,nrc->nc", signs.astype(np.float64), x.reshape(len(members), padded_rows, _ROW).astype(np.float64))
        sketches = folded @ _PROJECTION
        sumabs = np.add.reduce(np.abs(x[:, :numel]), axis=1)
        lows, highs = x[:, :numel].min(axis=1), x[:, :numel].max(axis=1)
        for row, (tensor, digest) in enumerate(zip(members, digests)):
            prints.append(Fingerprint(
                tensor.id, tensor.dtype, numel, digest, float(squares[row]), float(lows[row]), float(highs[row]),
                sketches[row].copy(), float(sumabs[row]),
            ))  # fmt: skip
        if with_dots:
            wide = x.astype(np.float64)
            pairs = np.einsum("ij,ij->i", wide[:-1], wide[1:])
            for row in range(len(members) - 1):
                dots[(members[row].id, members[row + 1].id)] = float(pairs[row])
            if previous is not None:
                dots[(previous[0].id, members[0].id)] = float(np.dot(previous[1], wide[0]))
            previous = (members[-1], wide[-1])
    return prints, dots


def fingerprint_all(
    singles: Sequence[TensorInfo],
    lockstep: Sequence[Sequence[TensorInfo]] = (),
    progress: OnBytes | None = None,
    workers: int | None = None,
) -> tuple[dict[str, Fingerprint], dict[tuple[str, str], float]]:
    """Fingerprints of every tensor given; ``lockstep`` groups (equal sizes) also get the dot
    products of consecutive members, ``dots[(a, b)] = sum(a * b)``. Small tensors are done many
    at a time on stacked matrices; large ones stream, on a thread pool."""
    prints: dict[str, Fingerprint] = {}
    dots: dict[tuple[str, str], float] = {}
    small: dict[tuple[int, bool], list[TensorInfo]] = defaultdict(list)
    units: list[list[TensorInfo]] = []
    for group in lockstep:
        members = list(group)
        if members and members[0].numel <= SMALL_ELEMENTS and all(t.external is None and t.nnz is None for t in members):
            found, pair_dots = _batch_prints(members, progress, with_dots=True)
            prints.update((f.tensor, f) for f in found)
            dots.update(pair_dots)
        else:
            units.append(members)
    for tensor in singles:
        if tensor.numel <= SMALL_ELEMENTS and tensor.external is None and tensor.nnz is None:
            small[(tensor.numel, tensor.is_float)].append(tensor)
        else:
            units.append([tensor])
    for group in small.values():
        found, _ = _batch_prints(group, progress, with_dots=False)
        prints.update((f.tensor, f) for f in found)
    units.sort(key=lambda u: -sum(t.nbytes for t in u))  # big first: better balance
    workers = workers or min(2, os.cpu_count() or 1)
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
