"""Reading tensor bytes: chunk by chunk with one reusable buffer (external data) or in memory.

Loaders give each :class:`~auditor.graph.TensorInfo` ``tensor_chunks`` as its chunker; analyses
call ``tensor.chunks(n)`` and never open files themselves.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

from auditor.graph import PACKED_DTYPES, ExternalRef, TensorInfo

Chunks = Iterator[tuple[memoryview, np.ndarray]]

CHUNK_ELEMENTS = 1 << 22


def file_chunks(
    ref: ExternalRef, dtype: np.dtype, itemsize: int, numel: int, elements: int, buffer: bytearray | None = None
) -> Chunks:
    """(raw bytes, values) of consecutive chunks of a tensor stored raw in an external file,
    read into ``buffer`` when given and large enough (a fresh buffer per tensor costs page faults)."""
    size = min(elements, numel) * itemsize
    if buffer is None:
        buffer = bytearray(size)
    elif len(buffer) < size:
        try:  # grown in place, so that the caller's buffer serves the next tensor too
            buffer.extend(bytes(size - len(buffer)))
        except BufferError:  # values of an earlier chunk still look into it
            buffer = bytearray(size)
    view = memoryview(buffer)
    with open(ref.path, "rb", buffering=0) as handle:
        handle.seek(ref.offset)
        left = ref.length
        while left > 0:
            want = min(left, size)
            got = 0
            while got < want:
                n = handle.readinto(view[got:want])
                if not n:
                    raise OSError(f"{ref.path}: unexpected end of file")
                got += n
            left -= want
            yield view[:want], np.frombuffer(buffer, dtype=dtype, count=want // itemsize)


def array_chunks(read: Callable[[], np.ndarray], elements: int) -> Chunks:
    """(raw bytes, values) of consecutive chunks of a tensor's values held in memory."""
    values = np.ascontiguousarray(read()).reshape(-1)
    raw = memoryview(values.view(np.uint8)) if values.dtype != object else memoryview(b"")  # type: ignore[arg-type]
    itemsize = values.dtype.itemsize
    for start in range(0, max(values.size, 1), elements):
        part = values[start : start + elements]
        yield raw[start * itemsize : (start + part.size) * itemsize], part


def tensor_chunks(tensor: TensorInfo, elements: int = CHUNK_ELEMENTS, buffer: bytearray | None = None) -> Chunks:
    """A tensor's chunks: straight from its file when its bytes are stored raw there (external
    data, dense, not packed below a byte), otherwise from its decoded values. One function for
    every tensor (``TensorInfo.chunker``), so that a million tensors hold no closure each."""
    ref = tensor.external
    if ref is not None and tensor.nnz is None and tensor.dtype not in PACKED_DTYPES and tensor.numel:
        dtype = np.dtype(tensor.read().dtype)  # a memory map: reading its dtype touches no data
        return file_chunks(ref, dtype, tensor.nbytes // tensor.numel, tensor.numel, elements, buffer)
    return array_chunks(tensor.read, elements)


def memmap_reader(ref: ExternalRef, dtype: np.dtype, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    """A reader of ``shape`` elements of ``dtype`` at ``ref``'s offset, memory-mapped (checked at load)."""
    numel = math.prod(shape)

    def read() -> np.ndarray:
        if numel == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(ref.path, dtype=dtype, mode="r", offset=ref.offset, shape=(numel,)).reshape(shape)

    return read
