"""GGUF (llama.cpp) files: tensors with their ggml types, memory-mapped.

Parameters are counted from logical shapes (elements), whatever the packing: a Q4_0 tensor of
4096 x 4096 holds 16.8M parameters in 9.4 MB. ``TensorInfo.shape`` is the logical shape (numpy
order, outermost first), ``nbytes`` the packed bytes, ``dtype`` our name for plain types
(float32, float16, bfloat16, int8...) and the ggml type name lowercased for block-quantized
ones (q4_0, q8_0, q4_k, iq2_xxs...). A quantized tensor's chunks are its packed bytes, so that
copies are found byte for byte; ``read()`` dequantizes where the gguf package can.

Why the header is parsed here rather than by ``gguf.GGUFReader``: that reader turns every
element of every metadata array into a numpy array (five seconds for one 150k-token vocabulary,
which a model has two or three of), and it trusts array lengths: one claiming more items than
the file holds keeps it looping over empty reads forever. Here every length is checked against
the file, only the few values the audit reports are decoded, and the rest is skipped. The gguf
package still gives the ggml type table (block sizes) and the dequantizers.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from auditor.errors import AuditError
from auditor.graph import ExternalRef, TensorInfo
from auditor.load.tensor_data import Chunks, memmap_reader, tensor_chunks

_PLAIN = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
          "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}  # fmt: skip

# GGUF metadata value types: struct formats of the scalar ones (8: string, 9: array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 8  # ggml has 4; a few more tolerated, thousands refused
_DEFAULT_ALIGNMENT = 32
# metadata the audit reports: the architecture, then "<architecture>.expert_count" and so on
_WANTED_KEYS = frozenset({"general.architecture", "general.alignment"})
_WANTED_SUFFIXES = (".expert_count", ".expert_used_count")
_MAX_NAME_BYTES = 1 << 16


@dataclass(frozen=True)
class GgufContents:
    """What a GGUF file holds: its tensors and the metadata the audit reports."""

    tensors: tuple[TensorInfo, ...]
    version: int
    architecture: str | None
    expert_count: int | None
    expert_used_count: int | None


@dataclass(frozen=True)
class _TensorEntry:
    name: str
    dims: tuple[int, ...]  # ggml order: innermost first
    ggml_type: int
    offset: int  # from the start of the data section


class _Header:
    """Bounds-checked steps over a GGUF header (little-endian), decoding only what it must."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.size = len(data)
        self.offset = 0
        self.values: dict[str, object] = {}  # the metadata kept: general.*, expert counts

    def skip(self, size: int) -> int:
        """Advance ``size`` bytes; return where they start."""
        start = self.offset
        if size < 0 or start + size > self.size:
            raise ValueError(f"header runs past the end of the file at byte {start}")
        self.offset += size
        return start

    def number(self, fmt: str) -> int:
        value: int = struct.unpack_from("<" + fmt, self.data, self.skip(struct.calcsize(fmt)))[0]
        return value

    def string(self, decode: bool = True) -> str:
        length = self.number("Q")
        start = self.skip(length)
        if not decode:
            return ""
        if length > _MAX_NAME_BYTES:  # a key, a tensor name or the architecture: never this long
            raise ValueError(f"a name of {length} bytes")
        return self.data[start : start + length].decode("utf-8", "replace")

    def value(self, kind: int, keep: bool, depth: int = 0) -> object:
        """A metadata value: decoded when ``keep``, else skipped (arrays are never kept)."""
        if kind in _SCALARS:
            fmt = _SCALARS[kind]
            return self.number(fmt) if keep else self.skip(struct.calcsize(fmt))
        if kind == _STRING:
            return self.string(decode=keep)
        if kind == _ARRAY and depth < 4:
            item, count = self.number("I"), self.number("Q")
            if item in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[item]))
            elif count > (self.size - self.offset) // 8:  # a string or array item takes 8 bytes at least
                raise ValueError(f"array of {count} items is longer than the file")
            else:
                for _ in range(count):
                    self.value(item, False, depth + 1)
            return None
        raise ValueError(f"unknown metadata value type {kind}")

    def read(self) -> tuple[int, list[_TensorEntry], int]:
        """(version, tensors, where the data section starts)."""
        if self.data[:4] != b"GGUF":
            raise ValueError("no GGUF magic")
        self.skip(4)
        version = self.number("I")
        if version & 0xFFFF == 0:
            raise AuditError("unsupported-checkpoint", "a big-endian GGUF file; only little-endian ones are read")
        if version not in (2, 3):
            raise AuditError("unsupported-checkpoint", f"GGUF version {version}; versions 2 and 3 are read")
        tensor_count, kv_count = self.number("Q"), self.number("Q")
        if kv_count > self.size or tensor_count > self.size:
            raise ValueError(f"{kv_count} metadata entries and {tensor_count} tensors cannot fit the file")
        for _ in range(kv_count):
            key = self.string()
            keep = key in _WANTED_KEYS or key.endswith(_WANTED_SUFFIXES)
            value = self.value(self.number("I"), keep)
            if keep:
                self.values[key] = value
        entries = []
        for _ in range(tensor_count):
            name = self.string()
            n_dims = self.number("I")
            if n_dims > _MAX_DIMS:
                raise ValueError(f"tensor '{name}' has {n_dims} dimensions")
            dims = tuple(self.number("Q") for _ in range(n_dims))
            entries.append(_TensorEntry(name, dims, self.number("I"), self.number("Q")))
        alignment = self.values.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"general.alignment {alignment} is not a power of two")
        return version, entries, -(-self.offset // alignment) * alignment


def _parse(path: Path) -> tuple[int, list[_TensorEntry], int, dict[str, object]]:
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        header = _Header(data)
        version, entries, data_start = header.read()
        return version, entries, data_start, header.values


def read_gguf(path: Path) -> GgufContents:
    """The tensors of a GGUF file (memory-mapped) with its architecture and expert counts."""
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:
        raise AuditError("checkpoint-unavailable", f"{path}: reading GGUF files needs the gguf package (pip install gguf)") from None
    try:
        version, entries, data_start, values = _parse(path)
    except AuditError as exc:
        raise AuditError(exc.slug, f"{path}: {exc.message}") from None
    except (ValueError, OverflowError, struct.error, OSError) as exc:
        raise AuditError("invalid-checkpoint", f"{path}: not a readable GGUF file ({' '.join(str(exc).split())[:200]})") from None
    size = path.stat().st_size
    resolved = str(path.resolve())
    tensors = []
    seen: set[str] = set()

    def bad(name: str, why: str) -> AuditError:
        return AuditError("invalid-checkpoint", f"{path}: tensor '{name}' {why}")

    for entry in entries:
        if entry.name in seen:
            raise bad(entry.name, "appears twice")
        seen.add(entry.name)
        try:
            qtype = GGMLQuantizationType(entry.ggml_type)
        except ValueError:
            raise bad(entry.name, f"has an unknown ggml type {entry.ggml_type}") from None
        shape = tuple(reversed(entry.dims))  # ggml lists the innermost dimension first
        numel = math.prod(shape)
        block, type_size = GGML_QUANT_SIZES[qtype]
        if entry.dims and entry.dims[0] % block:
            raise bad(entry.name, f"has rows of {entry.dims[0]}, not whole {qtype.name} blocks of {block}")
        nbytes = numel // block * type_size
        offset = data_start + entry.offset
        if offset + nbytes > size:
            raise bad(entry.name, f"lies at bytes {offset}..{offset + nbytes}, beyond the end of the file ({size} bytes)")
        ref = ExternalRef(resolved, offset, nbytes)
        plain = _PLAIN.get(qtype.name)
        if plain is not None:
            info = TensorInfo(
                id=entry.name, name=entry.name, scope="", origin="initializer", dtype=plain, shape=shape,
                nbytes=nbytes, external=ref, reader=memmap_reader(ref, _numpy_dtype(plain), shape),
                chunker=tensor_chunks,
            )  # fmt: skip
        else:
            info = TensorInfo(
                id=entry.name, name=entry.name, scope="", origin="initializer", dtype=qtype.name.lower(),
                shape=shape, nbytes=nbytes, external=ref, reader=_dequantizer(ref, int(qtype), shape),
                chunker=packed_chunks,
            )  # fmt: skip
        tensors.append(info)
    architecture = values.get("general.architecture")
    architecture = architecture if isinstance(architecture, str) else None

    def count(suffix: str) -> int | None:
        value = values.get(f"{architecture}{suffix}") if architecture else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return GgufContents(tuple(tensors), version, architecture, count(".expert_count"), count(".expert_used_count"))


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        try:  # numpy has no bfloat16: ml_dtypes (a dependency of onnx) gives it
            import ml_dtypes

            bf16: np.dtype = np.dtype(ml_dtypes.bfloat16)
            return bf16
        except ImportError:  # pragma: no cover - raw bits: hashed and compared, never as floats
            return np.dtype("<u2")
    dtype: np.dtype = np.dtype(name).newbyteorder("<")
    return dtype


def _dequantizer(ref: ExternalRef, qtype: int, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    """Float32 values of a block-quantized tensor, in its logical shape (the gguf package's
    numpy dequantizers; a type it cannot dequantize raises ValueError)."""

    def read() -> np.ndarray:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        packed = np.memmap(ref.path, dtype=np.uint8, mode="r", offset=ref.offset, shape=(ref.length,))
        try:
            values = dequantize(packed, GGMLQuantizationType(qtype))
        except NotImplementedError as exc:
            raise ValueError(f"cannot dequantize {GGMLQuantizationType(qtype).name}: {exc}") from None
        return np.asarray(values, dtype=np.float32).reshape(shape)

    return read


def packed_chunks(tensor: TensorInfo, elements: int = 1 << 22, buffer: bytearray | None = None) -> Chunks:
    """A block-quantized tensor's packed bytes, chunk by chunk, as (bytes, the same bytes as
    uint8): hashing and byte comparison find its copies; it has no float values to summarise."""
    ref = tensor.external
    if ref is None or ref.length == 0:
        empty = np.zeros(0, dtype=np.uint8)
        yield memoryview(b""), empty
        return
    data = np.memmap(ref.path, dtype=np.uint8, mode="r", offset=ref.offset, shape=(ref.length,))
    step = max(elements, 1)
    for start in range(0, ref.length, step):
        part = np.asarray(data[start : start + step])
        yield part.data, part  # a 1-d slice of the map: contiguous
