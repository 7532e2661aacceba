"""Weights-only checkpoints -> ModelGraph: safetensors (one file or sharded), pickled torch state
dicts (zip or legacy), GGUF, and Hugging Face-style folders (config.json + weights).

A checkpoint has no graph: the ModelGraph has one empty main scope and no nodes, every stored
tensor is listed with its metadata, and the bytes are read on demand (memory-mapped). What the
graph would have said, the checkpoint's structure says instead:

- storage identity: names of one torch storage (tied weights, views) are kept once, the other
  names recorded in ``aliases`` (found from storage pointers and byte ranges, never by hashing);
- the model's own architecture, where a folder's config.json names a transformers class: built
  on the meta device (no weights, nothing downloaded), it says which names are tied parameters
  and which are buffers;
- names and element types: BatchNorm running statistics, integer buffers and optimizer or
  training state are listed apart as ``not_parameters``.

The format is chosen by what the file is (magic bytes, header structure), not by its extension.
Pickles are only ever opened with ``torch.load(weights_only=True)``: one that needs more than
tensors and plain containers is refused, and nothing in it runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from auditor.errors import AuditError
from auditor.graph import ExternalRef, ModelGraph, NonParameter, Scope, TensorInfo
from auditor.load.tensor_data import memmap_reader, tensor_chunks

if TYPE_CHECKING:
    import torch

try:  # numpy has no bfloat16 or float8: ml_dtypes (a dependency of onnx) gives them
    import ml_dtypes

    _BF16: np.dtype = np.dtype(ml_dtypes.bfloat16)
    _F8E4M3: np.dtype = np.dtype(ml_dtypes.float8_e4m3fn)
    _F8E5M2: np.dtype = np.dtype(ml_dtypes.float8_e5m2)
    _F8E8M0: np.dtype = np.dtype(ml_dtypes.float8_e8m0fnu)
except (ImportError, AttributeError):  # pragma: no cover - raw bits: hashed and compared, never as floats
    _BF16, _F8E4M3, _F8E5M2, _F8E8M0 = np.dtype("<u2"), np.dtype("u1"), np.dtype("u1"), np.dtype("u1")

# safetensors' own limit on the JSON header; a bigger one is not a safetensors file
MAX_HEADER_BYTES = 100_000_000
MAX_INDEX_BYTES = 64 << 20  # a shard index lists names: megabytes even for the largest models

# safetensors dtype -> (our dtype name, numpy dtype of the stored values)
_SAFETENSORS_DTYPES: dict[str, tuple[str, np.dtype]] = {
    "F64": ("float64", np.dtype("<f8")), "F32": ("float32", np.dtype("<f4")), "F16": ("float16", np.dtype("<f2")),
    "BF16": ("bfloat16", _BF16), "F8_E4M3": ("float8e4m3fn", _F8E4M3), "F8_E5M2": ("float8e5m2", _F8E5M2),
    "F8_E8M0": ("float8e8m0", _F8E8M0), "I64": ("int64", np.dtype("<i8")), "I32": ("int32", np.dtype("<i4")),
    "I16": ("int16", np.dtype("<i2")), "I8": ("int8", np.dtype("i1")), "U64": ("uint64", np.dtype("<u8")),
    "U32": ("uint32", np.dtype("<u4")), "U16": ("uint16", np.dtype("<u2")), "U8": ("uint8", np.dtype("u1")),
    "BOOL": ("bool", np.dtype("?")), "C64": ("complex64", np.dtype("<c8")), "C128": ("complex128", np.dtype("<c16")),
}  # fmt: skip

# last name components of buffers a plain state dict cannot otherwise tell from weights: BatchNorm's
_RUNNING_STATISTICS = frozenset({"running_mean", "running_var", "num_batches_tracked"})
# rotary embeddings' inverse frequencies (early Llama checkpoints stored them), GPT-2's causal
# mask constant: float buffers that are computed, never learned
_FLOAT_BUFFERS = frozenset({"inv_freq", "masked_bias"})

# where a training checkpoint keeps the model's weights, most specific first
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "network", "weights")

# a folder's weights, in the order looked for (safetensors first: no pickle to open)
_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")

# config.json keys naming the number of routed experts and how many each token runs
_EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_EXPERT_TOPK_KEYS = ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_k", "num_selected_experts")


@dataclass(frozen=True)
class DeclaredExperts:
    """A mixture of experts as the model's configuration states it: ``k`` of ``n`` experts per token."""

    n: int
    k: int | None
    keys: str  # the configuration keys read, e.g. "num_local_experts / num_experts_per_tok"


@dataclass(frozen=True)
class CheckpointDetails:
    """A loaded checkpoint and what its configuration said beside the weights."""

    model: ModelGraph
    architecture: str | None = None  # the transformers class whose ties and buffers were used
    architecture_note: str = ""  # why no architecture was used, where none was
    experts: DeclaredExperts | None = None
    state_dict_path: str = ""  # where in a training checkpoint the model's state dict was found
    missing: tuple[str, ...] = ()  # parameters of the architecture the checkpoint lacks (a tie: its first name)
    unexpected: tuple[str, ...] = ()  # checkpoint names the architecture does not have
    architecture_params: int | None = None  # the architecture's own parameter count
    applied_params: int | None = None  # what the architecture applies per forward (meta-device forward)
    applied_note: str = ""  # how that was counted, or why it could not be


@dataclass(frozen=True)
class _Stored:
    """A stored tensor before sharing is resolved: where its bytes lie within one storage."""

    info: TensorInfo
    storage: object | None  # a key naming the storage (a torch storage pointer, a file); None: alone
    start: int = 0  # byte range within the storage
    end: int = 0
    section: str = "model"  # "model" | "optimizer state" | "training state"


@dataclass
class _Loaded:
    """What one format's reader found, before classification."""

    stored: list[_Stored]
    source: str
    producer: str
    producer_version: str = ""
    file_size: int = 0
    external_bytes: int = 0
    not_parameters: list[NonParameter] = field(default_factory=list)
    experts: DeclaredExperts | None = None
    state_dict_path: str = ""


# ---- format detection ---------------------------------------------------------------------


def checkpoint_format(path: str | os.PathLike[str]) -> str | None:
    """What a path holds: "hf-folder", "safetensors", "index" (a shard index's weight_map),
    "torch-zip", "torch-pickle", "gguf"; None when it is none of those (an ONNX file, say).
    Decided from the first bytes, never from the extension alone."""
    target = Path(path)
    if target.is_dir():
        if (target / "config.json").is_file() or any((target / name).is_file() for name in _WEIGHT_FILES):
            return "hf-folder"
        return None
    if not target.is_file():
        return None
    size = target.stat().st_size
    with open(target, "rb") as handle:
        head = handle.read(16)
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] == b"PK\x03\x04":
        return "torch-zip" if _is_torch_zip(target) else None
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle's PROTO opcode
        return "torch-pickle"
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{":
            return "safetensors"
    if head.lstrip()[:1] == b"{" and size <= MAX_INDEX_BYTES:
        try:
            index = _read_json(target, "index")
        except AuditError:
            return None
        if isinstance(index, dict) and isinstance(index.get("weight_map"), dict):
            return "index"
    return None


def _is_torch_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_INDEX_BYTES + 1)
    except OSError as exc:
        raise AuditError("invalid-checkpoint", f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(raw) > MAX_INDEX_BYTES:
        raise AuditError("invalid-checkpoint", f"{path}: the {what} is larger than {MAX_INDEX_BYTES >> 20} MiB")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise AuditError("invalid-checkpoint", f"{path}: the {what} is not valid JSON ({_one_line(exc)})") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice is refused (readers disagree on which one wins)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key '{key}' appears twice")
        result[key] = value
    return result


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# ---- public entry points ------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike[str]) -> ModelGraph:
    """Load a weights-only checkpoint (safetensors, torch state dict, GGUF, HF folder) as a
    graph-less ModelGraph; tensor bytes are read on demand."""
    return load_checkpoint_details(path).model


def load_checkpoint_details(path: str | os.PathLike[str]) -> CheckpointDetails:
    """:func:`load_checkpoint`, with what the configuration said (architecture, experts)."""
    target = Path(path)
    if not target.exists():
        raise AuditError("file-not-found", f"no such file: {target}")
    kind = checkpoint_format(target)
    if kind is None:
        what = "folder" if target.is_dir() else "file"
        raise AuditError(
            "not-a-checkpoint",
            f"{target}: not a checkpoint this tool reads (safetensors, torch state dict, GGUF or a folder "
            f"with config.json and weights): the {what}'s contents match none of them",
        )
    if kind == "hf-folder":
        return _load_folder(target)
    loaded = _load_file(target, kind)
    return _finish(target, loaded, None)


def _load_file(path: Path, kind: str) -> _Loaded:
    if kind == "safetensors":
        return _Loaded(_safetensors(path), "safetensors", "safetensors", file_size=path.stat().st_size)
    if kind == "index":
        return _sharded(path)
    if kind in ("torch-zip", "torch-pickle"):
        return _torch_file(path)
    if kind == "gguf":
        from auditor.load.gguf_file import read_gguf  # the gguf package is needed for GGUF files alone

        contents = read_gguf(path)
        experts = None
        if contents.expert_count is not None and contents.expert_count > 1:
            experts = DeclaredExperts(contents.expert_count, contents.expert_used_count, "expert_count / expert_used_count")
        # two names on one byte range of the file are one tensor, as two names on one torch storage
        stored = [_Stored(t, ("gguf", str(path)), t.external.offset, t.external.offset + t.nbytes)
                  if t.external is not None and t.nbytes else _Stored(t, None) for t in contents.tensors]  # fmt: skip
        return _Loaded(stored, "gguf", contents.architecture or "gguf", f"GGUF v{contents.version}",
                       file_size=path.stat().st_size, experts=experts)  # fmt: skip
    raise AuditError("not-a-checkpoint", f"{path}: unknown checkpoint kind {kind}")  # pragma: no cover


# ---- safetensors --------------------------------------------------------------------------


def _safetensors(path: Path) -> list[_Stored]:
    """Tensors of one safetensors file: the header parsed and checked here (every range inside
    the file, no overlaps, sizes matching shapes), the data memory-mapped per tensor."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise AuditError("not-a-checkpoint", f"{path}: too short for a safetensors file ({size} bytes)")
        header_len = int.from_bytes(prefix, "little")
        if header_len > MAX_HEADER_BYTES or header_len > size - 8:
            raise AuditError(
                "invalid-checkpoint",
                f"{path}: safetensors header of {header_len} bytes does not fit the file ({size} bytes) or the "
                f"{MAX_HEADER_BYTES}-byte limit",
            )
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise AuditError("invalid-checkpoint", f"{path}: safetensors header is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(header, dict):
        raise AuditError("invalid-checkpoint", f"{path}: safetensors header is not a JSON object")
    data_start = 8 + header_len
    data_size = size - data_start
    resolved = str(path.resolve())
    stored = []
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype_name, np_dtype, shape, begin, end = _header_entry(path, name, entry, data_size)
        ranges.append((begin, end, name))
        ref = ExternalRef(resolved, data_start + begin, end - begin)
        info = TensorInfo(
            id=name, name=name, scope="", origin="initializer", dtype=dtype_name, shape=shape, nbytes=end - begin,
            external=ref, reader=memmap_reader(ref, np_dtype, shape), chunker=tensor_chunks,
        )  # fmt: skip
        stored.append(_Stored(info, None))
    _check_ranges(path, ranges, data_size)
    return stored


def _header_entry(path: Path, name: str, entry: object, data_size: int) -> tuple[str, np.dtype, tuple[int, ...], int, int]:
    def bad(why: str) -> AuditError:
        return AuditError("invalid-checkpoint", f"{path}: tensor '{name}' {why}")

    if not isinstance(entry, dict):
        raise bad("has no dtype/shape/data_offsets entry")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
        raise bad(f"has an unknown dtype {str(dtype)[:40]!r}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise bad("has a malformed shape")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list) or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):  # fmt: skip
        raise bad("has malformed data_offsets")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise bad(f"lies at bytes {begin}..{end}, outside the file's {data_size} data bytes")
    dtype_name, np_dtype = _SAFETENSORS_DTYPES[dtype]
    expected = math.prod(shape) * np_dtype.itemsize
    if end - begin != expected:
        raise bad(f"holds {end - begin} bytes, its shape {tuple(shape)} needs {expected}")
    return dtype_name, np_dtype, tuple(shape), begin, end


def _check_ranges(path: Path, ranges: list[tuple[int, int, str]], data_size: int) -> None:
    """Tensors tile the data without overlap or gap, as safetensors itself requires: an overlap
    would let one byte range pass for two tensors."""
    position = 0
    for begin, end, name in sorted(ranges):
        if begin < position:
            raise AuditError("invalid-checkpoint", f"{path}: tensor '{name}' overlaps the tensor before it")
        if begin > position:
            raise AuditError("invalid-checkpoint", f"{path}: {begin - position} unindexed bytes before tensor '{name}'")
        position = end
    if position != data_size:
        raise AuditError("invalid-checkpoint", f"{path}: {data_size - position} bytes after the last tensor")


# ---- sharded checkpoints ------------------------------------------------------------------


def inside_folder(base: Path, location: str, what: str) -> Path:
    """``location`` resolved inside ``base`` (the folder of an index or model); absolute paths,
    ``..`` and symlinks out are refused before any byte is read: the rule for ONNX external data."""
    if not location or "\0" in location:
        raise AuditError("invalid-checkpoint", f"{what}: empty location or one holding a NUL byte")
    pure = Path(location.replace("\\", "/"))
    if pure.is_absolute() or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise AuditError(
            "external-data-outside", f"{what}: '{location}' is an absolute path; only files inside the folder are read"
        )
    if ".." in pure.parts:
        raise AuditError("external-data-outside", f"{what}: '{location}' leaves the folder")
    root = base.resolve()
    target = (root / pure).resolve()
    if target != root and root not in target.parents:
        raise AuditError("external-data-outside", f"{what}: '{location}' resolves outside the folder (symlink)")
    if not target.is_file():
        raise AuditError("external-data-missing", f"{what}: '{location}' not found in the folder")
    return target


def _sharded(index: Path) -> _Loaded:
    """Tensors of every shard an index's weight_map names (each shard read once, safetensors or
    pickled, as its first bytes say), checked against the map."""
    contents = _read_json(index, "shard index")
    weight_map = contents.get("weight_map") if isinstance(contents, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise AuditError("invalid-checkpoint", f"{index}: shard index has no weight_map of names to files")
    shard_files: dict[Path, str] = {}
    for name, location in weight_map.items():
        file = inside_folder(index.parent, location, f"{index.name}: shard of '{name}'")
        shard_files.setdefault(file, location)
    stored: list[_Stored] = []
    not_params: list[NonParameter] = []
    found: dict[str, Path] = {}  # tensor name -> the shard holding it
    sources = set()
    for file, location in shard_files.items():
        kind = checkpoint_format(file)
        if kind == "safetensors":
            part = _Loaded(_safetensors(file), "safetensors", "safetensors")
        elif kind in ("torch-zip", "torch-pickle"):
            part = _torch_file(file)
        else:
            raise AuditError("invalid-checkpoint", f"{index}: shard '{location}' is neither safetensors nor a torch checkpoint")
        sources.add(part.source)
        for item in part.stored:
            if item.section == "model":
                if item.info.name in found:
                    raise AuditError(
                        "invalid-checkpoint",
                        f"{index}: tensor '{item.info.name}' is stored in both '{shard_files[found[item.info.name]]}' "
                        f"and '{location}'",
                    )
                found[item.info.name] = file
            stored.append(item)
        not_params += part.not_parameters
    for name, location in weight_map.items():
        if found.get(name) != inside_folder(index.parent, location, index.name):
            raise AuditError("invalid-checkpoint", f"{index}: tensor '{name}' is not in its shard '{location}'")
    source = sources.pop() if len(sources) == 1 else "torch-state-dict"
    return _Loaded(
        stored, source, "safetensors" if source == "safetensors" else "torch", file_size=index.stat().st_size,
        external_bytes=sum(file.stat().st_size for file in shard_files), not_parameters=not_params,
    )  # fmt: skip


# ---- pickled torch checkpoints ------------------------------------------------------------


def _torch_file(path: Path) -> _Loaded:
    """A torch.save file, unpickled with weights_only=True (memory-mapped where it is a zip)."""
    try:
        import torch
    except ImportError:
        raise AuditError("checkpoint-unavailable", f"{path}: reading a pickled checkpoint needs torch (pip install torch)") from None
    zipped = zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notes: the refusal below is the message
            loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as exc:
        raise AuditError("unsafe-pickle", f"{path}: {_unsafe_reason(path, zipped, exc)}") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt pickle fails in many ways (IndexError...)
        raise AuditError("invalid-checkpoint", f"{path}: not a readable torch checkpoint ({_one_line(exc)})") from None
    return _from_torch_object(path, loaded)


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _unsafe_reason(path: Path, zipped: bool, exc: BaseException) -> str:
    """One line naming what the pickle wanted beyond tensors and containers."""
    wanted = _UNSUPPORTED_GLOBAL.findall(str(exc))
    if not wanted:
        wanted = _pickle_globals(path, zipped)
    tail = "; it was not loaded and nothing in it ran (only weights-only unpickling is used)"
    if wanted:
        return f"refused to unpickle: it needs the global {wanted[0]}, which only full unpickling would run{tail}"
    detail = str(exc).split("WeightsUnpickler error:")[-1]
    return f"refused to unpickle: the weights-only unpickler rejects it ({_one_line(Exception(detail.split('Check the doc')[0]))}){tail}"


def _pickle_globals(path: Path, zipped: bool) -> list[str]:
    """Globals a pickle imports, found by reading its opcodes (nothing is executed); torch's own
    rebuild functions and containers are left out."""
    if zipped:
        import torch

        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - a hostile zip may be malformed anywhere: the refusal stands without a name
            return []
    found: list[str] = []
    try:
        with open(path, "rb") as handle:
            for _ in range(5):  # a legacy torch file is a few pickles in a row (magic, version, object...)
                strings: list[str] = []
                for opcode, arg, _ in pickletools.genops(handle):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
                        found.append(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    if opcode.name == "STOP":
                        break
    except Exception:  # noqa: BLE001 - past the pickles lie raw storage bytes, or a malformed pickle: keep what was found
        pass
    safe = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset", "builtins.bytearray")
    return [name for name in found if not name.startswith(safe)]


class _Node:
    """A value inside an unpickled checkpoint, with where it sits."""

    __slots__ = ("path", "value", "in_optimizer")

    def __init__(self, path: tuple[str, ...], value: object, in_optimizer: bool) -> None:
        self.path = path
        self.value = value
        self.in_optimizer = in_optimizer


def _is_optimizer_state(key: str, value: object) -> bool:
    """An optimizer's state: under a key naming one (optimizer, optimizer_states, optim...), or a
    torch optimizer state dict ({"state", "param_groups"})."""
    return "optim" in key.lower() or (isinstance(value, Mapping) and "state" in value and "param_groups" in value)


_MAX_NODES = 1_000_000  # values in one checkpoint's nested containers: far above any real one


def _nodes(loaded: object, max_depth: int = 64) -> Iterator[_Node]:
    """Every value of nested dicts, lists and tuples, containers before their items. A container
    reached twice (an unpickled object may share references: a dict holding the same dict twice,
    40 deep, is 2^40 paths) is walked once."""
    stack = [(_Node((), loaded, _is_optimizer_state("", loaded)), 0)]
    seen: set[int] = set()
    visited = 0
    while stack:
        node, depth = stack.pop()
        visited += 1
        if visited > _MAX_NODES:
            raise AuditError("invalid-checkpoint", f"the checkpoint nests more than {_MAX_NODES:,} values; refusing to walk it")
        yield node
        value = node.value
        if depth >= max_depth:
            continue
        if isinstance(value, (Mapping, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
        items: list[tuple[str, object]] = []
        if isinstance(value, Mapping):
            items = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(value)]
        for key, item in reversed(items):  # reversed onto the stack: visited in stored order
            inside = node.in_optimizer or _is_optimizer_state(key, item)
            stack.append((_Node((*node.path, key), item, inside), depth + 1))


def _state_dict(loaded: object) -> tuple[tuple[str, ...] | None, Mapping[str, Any] | None]:
    """The model's state dict within a checkpoint: the object itself when it maps names to
    tensors, else the name -> tensor mapping under a known key (state_dict, model...), else the
    largest one outside optimizer state."""
    import torch

    def flat(mapping: Mapping[Any, Any]) -> bool:
        """Names to tensors (a stray number or None among them is tolerated, and skipped)."""
        return (
            any(isinstance(v, torch.Tensor) for v in mapping.values())
            and all(isinstance(k, str) for k in mapping)
            and all(isinstance(v, (torch.Tensor, int, float, str, bytes, type(None))) for v in mapping.values())
        )

    if isinstance(loaded, Mapping) and flat(loaded) and not _is_optimizer_state("", loaded):
        return (), loaded
    candidates = []
    for node in _nodes(loaded, max_depth=8):
        mapping = node.value
        if isinstance(mapping, Mapping) and not node.in_optimizer and flat(mapping):
            last = node.path[-1] if node.path else ""
            known = _STATE_DICT_KEYS.index(last) if last in _STATE_DICT_KEYS else len(_STATE_DICT_KEYS)
            elements = sum(int(t.numel()) for t in mapping.values() if isinstance(t, torch.Tensor))
            candidates.append((known, len(node.path), -elements, node.path, mapping))
    if not candidates:
        return None, None
    _, _, _, path, mapping = min(candidates, key=lambda c: c[:3])
    return path, mapping


_TORCH_TO_NUMPY: dict[str, np.dtype] = {
    "bfloat16": _BF16, "float8_e4m3fn": _F8E4M3, "float8_e5m2": _F8E5M2, "float8_e8m0fnu": _F8E8M0,
}  # fmt: skip


def _torch_dtype_name(tensor: torch.Tensor) -> str:
    name = str(tensor.dtype).removeprefix("torch.")
    if name.startswith("float8_"):  # our names, as ONNX spells them: float8e4m3fn, float8e8m0
        name = "float8" + name.removeprefix("float8_").removesuffix("fnu")
    return {"bool": "bool", "float": "float32", "double": "float64", "half": "float16"}.get(name, name)


def _torch_reader(tensor: torch.Tensor) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        import torch

        value = tensor.int_repr() if tensor.is_quantized else tensor
        if value.layout != torch.strided:
            value = value.to_dense()
        value = value.resolve_conj().resolve_neg()
        special = _TORCH_TO_NUMPY.get(str(value.dtype).removeprefix("torch."))
        if special is not None:  # numpy lacks the type: the same bytes under ml_dtypes' type
            raw = value.contiguous().reshape(-1).view(torch.uint8).numpy()
            return raw.view(special).reshape(tuple(value.shape))
        try:
            return value.numpy()
        except TypeError:  # a type neither numpy nor ml_dtypes has (AMD's fp8 fnuz...): its raw bytes
            raw = value.contiguous().reshape(-1).view(torch.uint8).numpy()
            return raw.view(np.dtype(f"u{value.element_size()}")).reshape(tuple(value.shape))

    return read


def _torch_stored(name: str, tensor: torch.Tensor, section: str) -> _Stored:
    """A torch tensor with the byte range it covers in its storage (views keep their offset)."""
    import torch

    tensor = tensor.detach()
    item = tensor.element_size()
    numel = int(tensor.numel())
    info = TensorInfo(
        id=name, name=name, scope="", origin="initializer", dtype=_torch_dtype_name(tensor),
        shape=tuple(int(d) for d in tensor.shape), nbytes=numel * item, reader=_torch_reader(tensor),
        chunker=tensor_chunks,
    )  # fmt: skip
    if tensor.layout != torch.strided or tensor.is_quantized or numel == 0:
        return _Stored(info, None, section=section)
    storage = tensor.untyped_storage()
    pointer = storage.data_ptr()
    if not pointer:
        return _Stored(info, None, section=section)
    start = int(tensor.storage_offset()) * item
    span = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride())) + 1
    return _Stored(info, ("torch", pointer), start, start + span * item, section)


def _from_torch_object(path: Path, loaded: object) -> _Loaded:
    """Model tensors, optimizer state and other training state of an unpickled checkpoint."""
    import torch

    if isinstance(loaded, torch.Tensor):
        loaded = {"tensor": loaded}
    state_path, state = _state_dict(loaded)
    stored: list[_Stored] = []
    names: set[str] = set()
    if state is not None:
        for name, tensor in state.items():
            if isinstance(tensor, torch.Tensor):
                stored.append(_torch_stored(name, tensor, "model"))
                names.add(name)
    not_params: list[NonParameter] = []
    for node in _nodes(loaded):
        leaf = node.value
        if state_path is not None and node.path[: len(state_path)] == state_path:
            continue  # the state dict itself, done above
        dotted = ".".join(node.path) or "value"
        while dotted in names:  # a training entry named like a weight: kept apart
            dotted += "'"
        if isinstance(leaf, torch.Tensor):
            if state is None and not node.in_optimizer:  # no state dict found: every tensor outside the optimizer
                stored.append(_torch_stored(dotted, leaf, "model"))
                names.add(dotted)
                continue
            kind = "optimizer state" if node.in_optimizer else "training state"
            item = _torch_stored(dotted, leaf, kind).info
            not_params.append(NonParameter(dotted, kind, item.dtype, item.shape, item.nbytes))
        elif len(node.path) == 1 and isinstance(leaf, (int, float)) and not isinstance(leaf, bool) and not node.in_optimizer:
            # epoch, step counters: the checkpoint's training position (no tensor storage)
            not_params.append(NonParameter(dotted, "training state", f"python {type(leaf).__name__}", (), 0))
    where = ".".join(state_path) if state_path else ""
    return _Loaded(stored, "torch-state-dict", "torch", file_size=path.stat().st_size,
                   not_parameters=not_params, state_dict_path=where)  # fmt: skip


# ---- Hugging Face-style folders -----------------------------------------------------------


def _load_folder(folder: Path) -> CheckpointDetails:
    weights = next((folder / name for name in _WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        singles = sorted(folder.glob("*.safetensors"))
        if len(singles) != 1:
            raise AuditError(
                "not-a-checkpoint",
                f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
                + (f" (and {len(singles)} other .safetensors files: name one)" if singles else ""),
            )
        weights = singles[0]
    file = inside_folder(folder, weights.name, f"{folder}")
    kind = checkpoint_format(file)
    if kind is None or kind == "hf-folder":
        raise AuditError("not-a-checkpoint", f"{file}: not a safetensors or torch checkpoint")
    loaded = _load_file(file, kind)
    config_path = folder / "config.json"
    if config_path.is_file() or config_path.is_symlink():
        config_path = inside_folder(folder, "config.json", "config.json")  # never read a file outside the folder
    config: Any = _read_json(config_path, "config.json") if config_path.is_file() else None
    if not isinstance(config, dict):
        config = None
    if config is not None:  # the folder is the model: config.json its entry, the weights beside it
        loaded.source = "hf-folder"
        loaded.producer = "transformers"
        loaded.producer_version = str(config.get("transformers_version", ""))
        loaded.external_bytes += loaded.file_size
        loaded.file_size = config_path.stat().st_size
        loaded.experts = declared_experts(config)
    return _finish(folder, loaded, folder if config is not None else None)


def declared_experts(config: Mapping[str, Any]) -> DeclaredExperts | None:
    """Routed experts a configuration states (n experts, k per token), where its keys say so
    plainly; a text_config inside (multimodal models) is looked at too."""
    for part in (config, config.get("text_config")):
        if not isinstance(part, Mapping):
            continue
        count = next(((key, part[key]) for key in _EXPERT_COUNT_KEYS if _positive(part.get(key))), None)
        if count is None or count[1] < 2:
            continue
        topk = next(((key, part[key]) for key in _EXPERT_TOPK_KEYS if _positive(part.get(key))), None)
        return DeclaredExperts(count[1], topk[1] if topk else None, f"{count[0]} / {topk[0]}" if topk else count[0])
    return None


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class _Architecture:
    """What a transformers model class says about its names: parameters (with the names tied to
    each) and buffers."""

    name: str
    tie_groups: tuple[tuple[str, ...], ...]  # names sharing one Parameter, in declaration order
    parameters: frozenset[str]
    buffers: frozenset[str]
    prefix: str  # base_model_prefix, for checkpoints saved without or with the head's prefix
    unique_params: int = 0  # sum(p.numel() for p in model.parameters()) of the architecture
    applied_params: int | None = None  # applied in one forward on the meta device (None: could not run)
    applied_note: str = ""  # how the applied count was taken, or why it could not be


def _architecture(folder: Path) -> tuple[_Architecture | None, str]:
    """The model class config.json names, built on the meta device (no weights, nothing
    downloaded, no remote code); (None, why) where that cannot be done."""
    try:
        import torch
        import transformers
        from transformers.models.auto import modeling_auto
    except ImportError:
        return None, "transformers is not installed: ties and buffers from names alone"
    known = {
        name
        for table, mapping in vars(modeling_auto).items()
        if table.startswith("MODEL_") and table.endswith("_MAPPING_NAMES") and isinstance(mapping, Mapping)
        for value in mapping.values()
        for name in (value if isinstance(value, (list, tuple)) else (value,))
    }
    raw = _read_json(folder / "config.json", "config.json")
    oversized = _oversized(raw)
    if oversized:  # building the model on the meta device still makes one Python object per layer
        return None, f"config.json asks for {oversized}: the architecture was not built"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity(logging.ERROR)
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        wanted = [str(a) for a in (getattr(config, "architectures", None) or [])]
        class_name = next((a for a in wanted if a in known), None)
        if class_name is None:
            return None, f"architecture {wanted[0] if wanted else '(none named)'} is not one transformers knows"
        model_class = getattr(transformers, class_name, None)
        if model_class is None or not hasattr(model_class, "_from_config"):
            return None, f"transformers has no class {class_name}"
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = model_class._from_config(config)
    except Exception as exc:  # noqa: BLE001 - a config transformers cannot build leaves names to tell
        return None, f"transformers could not build the architecture from config.json ({_one_line(exc)})"
    finally:
        transformers.logging.set_verbosity(verbosity)
    groups: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), []).append(name)
    buffers = frozenset(name for name, _ in model.named_buffers(remove_duplicate=False))
    parameters = frozenset(name for names in groups.values() for name in names)
    ties = tuple(tuple(names) for names in groups.values() if len(names) > 1)
    applied, note = _meta_applied(model, config)
    unique = sum(p.numel() for p in model.parameters())
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    return _Architecture(class_name, ties, parameters, buffers, prefix, unique, applied, note), ""


# Counts in config.json above which building the architecture (in this process) is refused: far
# above any real model (the largest have about 128 layers, 256 experts, 128 heads).
_CONFIG_LIMIT = 4096
_COUNT_WORDS = ("layer", "block", "expert", "head", "group")


def _oversized(config: object, depth: int = 0) -> str:
    """A count in config.json large enough to make building the model a denial of service ('' if none)."""
    if depth > 8 or not isinstance(config, dict):
        return ""
    for key, value in config.items():
        if isinstance(value, dict):
            inner = _oversized(value, depth + 1)
            if inner:
                return inner
        elif (isinstance(value, int) and not isinstance(value, bool) and value > _CONFIG_LIMIT
              and any(word in str(key).lower() for word in _COUNT_WORDS)):  # fmt: skip
            return f"{key} = {value:,}"
    return ""


_META_TOKENS = 8  # sequence length of the forward run on the meta device (applications do not depend on it)


def _meta_applied(model: Any, config: Any) -> tuple[int | None, str]:
    """Parameter elements the architecture applies per forward, counted with forward hooks on one
    forward on the meta device (shapes only: no weights, no arithmetic)."""
    import torch

    from auditor.load.torch_module import ground_truth

    ids = torch.zeros((1, _META_TOKENS), dtype=torch.long, device="meta")
    inputs: dict[str, Any] = {"input_ids": ids}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            truth = ground_truth(model.eval(), inputs, digests=False)
    except Exception as exc:  # noqa: BLE001 - data-dependent code (routing by nonzero) cannot run on meta
        return None, f"one forward on the meta device failed ({_one_line(exc)})"
    return truth.applied_params, f"forward hooks on one forward on the meta device, input_ids 1x{_META_TOKENS}"


def _name_mapping(names: Sequence[str], arch: _Architecture) -> Callable[[str], str]:
    """checkpoint name -> architecture name: as is, without the base model's prefix, or with it,
    whichever matches most names (a base model's weights loaded into a model with a head)."""
    known = arch.parameters | arch.buffers
    prefix = f"{arch.prefix}." if arch.prefix else ""
    options: list[Callable[[str], str]] = [lambda n: n]
    if prefix:
        options += [lambda n: n.removeprefix(prefix), lambda n: prefix + n]
    return max(options, key=lambda f: sum(1 for n in names if f(n) in known))


# ---- from stored tensors to the graph -----------------------------------------------------


def _resolve_storage(stored: Sequence[_Stored]) -> tuple[list[_Stored], dict[str, str]]:
    """One entry per distinct storage region: a tensor whose bytes lie within another's (the same
    storage, a tie; or a view of part of it) becomes an alias of it. Sorted by start (larger
    first on a tie), a range lies within some earlier one exactly when it lies within the one
    reaching furthest: one pass, however many views share a storage."""
    order = {id(item): i for i, item in enumerate(stored)}
    kept: list[_Stored] = []
    aliases: dict[str, str] = {}
    by_storage: dict[object, list[_Stored]] = {}
    for item in stored:
        if item.storage is None or item.section != "model":
            kept.append(item)
        else:
            by_storage.setdefault(item.storage, []).append(item)
    for members in by_storage.values():
        members.sort(key=lambda m: (m.start, -m.end, order[id(m)]))
        furthest: _Stored | None = None
        for item in members:
            if furthest is not None and item.end <= furthest.end:
                aliases[item.info.name] = furthest.info.id
                continue
            kept.append(item)
            if furthest is None or item.end > furthest.end:
                furthest = item
    kept.sort(key=lambda item: order[id(item)])
    return kept, aliases


def _kind_by_name(name: str, dtype: str, shape: tuple[int, ...]) -> str | None:
    """The non-parameter kind a name and element type tell, without the architecture."""
    last = name.rsplit(".", 1)[-1]
    if last in _RUNNING_STATISTICS:
        return "running statistic"
    if dtype.startswith(("int", "uint")) or dtype == "bool":
        return "integer buffer"
    if last in _FLOAT_BUFFERS or (name.endswith("attn.bias") and len(shape) == 4):  # GPT-2's causal mask
        return "buffer"
    return None


def _finish(path: Path, loaded: _Loaded, folder: Path | None) -> CheckpointDetails:
    """Aliases, ties and non-parameters resolved; the graph-less ModelGraph built."""
    kept, aliases = _resolve_storage(loaded.stored)
    not_params = list(loaded.not_parameters)
    arch, note = (None, "")
    if folder is not None:
        arch, note = _architecture(folder)
    model_names = [item.info.name for item in loaded.stored if item.section == "model"]
    to_arch: Callable[[str], str] = (lambda n: n) if arch is None else _name_mapping(model_names, arch)
    tensors: dict[str, TensorInfo] = {}
    for item in kept:
        info = item.info
        if item.section != "model":
            not_params.append(NonParameter(info.name, item.section, info.dtype, info.shape, info.nbytes))
            continue
        kind = _kind_by_name(info.name, info.dtype, info.shape)
        if arch is not None:  # the architecture knows better than names for float tensors
            if kind is None and to_arch(info.name) in arch.buffers:
                kind = "buffer"  # a float buffer names could not tell
            elif kind == "buffer" and to_arch(info.name) in arch.parameters:
                kind = None  # a learned tensor named like a buffer
        if kind is not None:
            not_params.append(NonParameter(info.name, kind, info.dtype, info.shape, info.nbytes))
        else:
            tensors[info.id] = info
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    if arch is not None:
        stored_as = {to_arch(name): name for name in model_names}
        for group in arch.tie_groups:
            present = [stored_as[n] for n in group if n in stored_as]
            if len(present) == 1:  # a tie stored once (safetensors drops the duplicates): one tensor, several names
                head = aliases.get(present[0], present[0])
                for name in group:
                    if name not in stored_as:
                        aliases[name] = head
        # one name per Parameter the checkpoint lacks: none for a tie stored under another name
        others = {name for group in arch.tie_groups for name in group[1:]}
        tied = {name for group in arch.tie_groups if any(n in stored_as for n in group) for name in group}
        missing = tuple(sorted(n for n in arch.parameters if n not in stored_as and n not in tied and n not in others))
        unexpected = tuple(sorted(n for n in model_names if to_arch(n) not in arch.parameters | arch.buffers))
    aliases = {name: head for name, head in aliases.items() if head in tensors}
    model = ModelGraph(
        path=str(path),
        file_size=loaded.file_size,
        producer=loaded.producer if arch is None else f"{loaded.producer} {arch.name}",
        producer_version=loaded.producer_version,
        ir_version=0,
        opsets={},
        tensors=tensors,
        nodes={},
        scopes={"": Scope(id="", kind="main", owner=None, attr=None, inputs=(), outputs=())},
        inputs=(),
        outputs=(),
        external_data_bytes=loaded.external_bytes,
        source=loaded.source,
        aliases=aliases,
        not_parameters=tuple(not_params),
    )
    return CheckpointDetails(
        model=model,
        architecture=arch.name if arch else None,
        architecture_note=note,
        experts=loaded.experts,
        state_dict_path=loaded.state_dict_path,
        missing=missing,
        unexpected=unexpected,
        architecture_params=arch.unique_params if arch else None,
        applied_params=arch.applied_params if arch else None,
        applied_note=arch.applied_note if arch else "",
    )


__all__ = [
    "CheckpointDetails",
    "DeclaredExperts",
    "checkpoint_format",
    "declared_experts",
    "inside_folder",
    "load_checkpoint",
    "load_checkpoint_details",
]
