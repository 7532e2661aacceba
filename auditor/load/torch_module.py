"""PyTorch front end: resolve a model factory, torch's own ground truth, ONNX export in a child process,
and parameter counts of a ``.pt2`` file (``torch.export.save``).

Torch is imported inside the functions that need it, never at module level: the dataclasses here
(``TorchTruth``, ``ExportResult``) are plain data that the analyses and the report read without torch
installed (it is an optional extra).

Targets
-------
``path/to/file.py:factory`` loads the file as a module (its folder is put on ``sys.path`` while it
runs, as Python does for a script) and ``package.module:factory`` imports a module (the current
directory is put on ``sys.path`` first, as ``python -m`` does). ``factory`` may be a dotted attribute
path (``module:Builder.tiny``). It is called with no arguments and returns an ``nn.Module`` or
``(module, example_inputs)``, where ``example_inputs`` is a tuple (or list) of tensors passed
positionally, a dict of tensors passed by keyword, or one tensor. Without example inputs the caller's
input shapes are used: a sequence of shapes gives positional inputs, a mapping ``name -> shape``
keyword inputs; each is a float32 tensor drawn from N(0, 1) with a fixed seed (a model reading token
ids needs its factory to return example inputs).

Ground truth
------------
Every number is torch's own, taken from the module object: ``unique_params`` is
``sum(p.numel() for p in module.parameters())`` (one per Parameter object, however many names reach
it). Aliasing comes from storage identity: names whose tensors are the same elements of one storage
form a tie group, and distinct parameters that are views into one storage are listed apart (with the
bytes they overlap). ``applied_params`` comes from one forward pass with the example inputs (eval
mode, ``torch.no_grad``), counting calls per module object with forward pre-hooks: see
``TorchParameter.applications``.

Safety
------
A factory target is code: resolving it runs it, as ``python file.py`` would. ``export_onnx`` and
``trace_target`` run it in a child process with a time and memory limit, never in this one.
``load_pt2`` reads only the archive's JSON (never ``torch.export.load``, which unpickles) unless
``allow_pickle`` is given: see its docstring.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import math
import operator
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, Union

from auditor.errors import AuditError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ExportResult",
    "ModuleCalls",
    "SharedStorage",
    "TieGroup",
    "TorchBuffer",
    "TorchParameter",
    "TorchTruth",
    "export_module",
    "export_onnx",
    "ground_truth",
    "is_pt2_archive",
    "load_pt2",
    "resolve_factory",
    "trace_target",
    "truth_from_dict",
]

OPSET = 18
DEFAULT_EXPORT_TIMEOUT_S = 600.0
# Weights above this go to an external data file. ONNX files are protobufs, capped at 2 GiB; an
# export may store tied weights twice and add folded constants, so the weights alone must stay
# well below the cap for a single file to be safe.
EXTERNAL_DATA_BYTES = 1 << 30
INPUT_SEED = 0

_CHILD = Path(__file__).with_name("_export_child.py")

if TYPE_CHECKING:
    ExampleInputs = Union[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]
InputShapes = Union[Sequence[Sequence[int]], Mapping[str, Sequence[int]]]


# ---- the ground truth: plain data ---------------------------------------------------------------


@dataclass(frozen=True)
class TorchParameter:
    """One Parameter object (``module.parameters()`` yields it once) under every name reaching it.

    ``applications``: how many times the observed forward applied it. A parameter is applied once
    per call of each module holding it directly (``module._parameters``), except that a module
    holding a Parameter that one of its descendants also holds directly leaves it to the descendant
    (BERT's ``predictions.bias`` is ``predictions.decoder.bias``: an alias, not a second use). A
    tied Parameter held by two modules that each run once is applied twice. A parameter read outside
    any call of a module holding it counts by its holders' calls: the root's own parameters once per
    forward; a parameter whose holder is never called (read as ``other.weight`` in someone else's
    forward) counts zero and is listed in ``TorchTruth.uncalled``. None when no forward ran. From a
    ``.pt2`` file: the reads of its lifted placeholders in the graph (looking through views).
    """

    names: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str  # ONNX-style name: float32, bfloat16, float8e4m3fn, int64...
    nbytes: int
    storage: int  # index of the storage holding it (parameters of one storage share it)
    storage_offset: int  # in elements
    applications: int | None = None
    digest: str | None = None  # xxh3-128 (hex) of its bytes in C order; None without data (meta device)
    transposed_digest: str | None = None  # 2-D only: the digest of its transpose

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class TieGroup:
    """Names holding the same elements of one storage: one Parameter under several names (a tie torch
    counts once), or distinct Parameter objects over the same memory (``objects`` > 1: torch's
    ``parameters()`` counts each of them)."""

    names: tuple[str, ...]
    numel: int
    nbytes: int
    objects: int


@dataclass(frozen=True)
class SharedStorage:
    """Distinct parameters that are views into one storage (slices of a fused tensor...)."""

    names: tuple[str, ...]  # the first name of each view
    covered_bytes: int  # distinct bytes of the storage the views cover
    overlap_bytes: int  # bytes covered by more than one view (0: disjoint slices)


@dataclass(frozen=True)
class TorchBuffer:
    """A registered buffer (``named_buffers``), one per tensor object."""

    names: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    kind: str  # "float" | "integer" | "bool" | "other"
    persistent: bool  # in the state dict
    digest: str | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModuleCalls:
    """A module object the observed forward called more than once."""

    names: tuple[str, ...]
    type: str
    calls: int
    params: int  # elements of the parameters each call applies (its own, not its children's)


@dataclass(frozen=True)
class TorchTruth:
    """Torch's own account of a model's parameters; every total comes from the de-duplicated set."""

    source: str  # "module" (an nn.Module) | "pt2" (a torch.export archive)
    model_type: str
    parameters: tuple[TorchParameter, ...]
    ties: tuple[TieGroup, ...] = ()
    shared_storages: tuple[SharedStorage, ...] = ()
    buffers: tuple[TorchBuffer, ...] = ()
    repeated_modules: tuple[ModuleCalls, ...] = ()
    uncalled: tuple[str, ...] = ()  # parameters the observed forward never applied (first names)
    forward_ran: bool = False
    storage_params: int = 0  # elements distinct in memory (ties of distinct objects, overlaps once)
    storage_bytes: int = 0
    inputs: tuple[str, ...] = ()  # the example inputs, "name: dtype[shape]"

    @property
    def unique_params(self) -> int:
        """``sum(p.numel() for p in module.parameters())``: one per Parameter object."""
        return sum(p.numel for p in self.parameters)

    @property
    def unique_bytes(self) -> int:
        return sum(p.nbytes for p in self.parameters)

    @property
    def applied_params(self) -> int | None:
        """Parameter elements applied in the observed forward: sum of numel x applications."""
        if not self.forward_ran:
            return None
        return sum(p.numel * (p.applications or 0) for p in self.parameters)

    @property
    def float_buffer_params(self) -> int:
        return sum(b.numel for b in self.buffers if b.kind == "float")

    @property
    def integer_buffer_params(self) -> int:
        return sum(b.numel for b in self.buffers if b.kind in ("integer", "bool"))

    @property
    def by_top_module(self) -> Mapping[str, tuple[int, int | None]]:
        """Top-level module -> (its parameters, applied per forward), each Parameter counted once
        under its first name (a tie belongs to the module that defines it first)."""
        totals: dict[str, list[int | None]] = {}
        for p in self.parameters:
            top = p.names[0].split(".", 1)[0] if "." in p.names[0] else "(root)"
            entry = totals.setdefault(top, [0, 0])
            entry[0] = (entry[0] or 0) + p.numel
            entry[1] = None if entry[1] is None or p.applications is None else entry[1] + p.numel * p.applications
        return {top: (int(n or 0), applied) for top, (n, applied) in totals.items()}

    @property
    def tied_names(self) -> Mapping[str, TieGroup]:
        """Every name of a tie group -> its group."""
        return {name: group for group in self.ties for name in group.names}


@dataclass(frozen=True)
class ExportResult:
    """One ONNX export of a torch model, and the ground truth of the module that was exported."""

    path: str
    exporter: str  # "dynamo" (torch.export-based) | "torchscript" (the legacy exporter)
    fallback_reason: str | None  # why the dynamo exporter failed, when the TorchScript one ran
    seconds: float
    opset: int
    external_data: bool
    dynamic_inputs: tuple[str, ...]  # inputs exported with dynamic batch and sequence axes
    truth: TorchTruth


# ---- resolving a factory ------------------------------------------------------------------------


@contextlib.contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    """``folder`` first on sys.path while the block runs (a factory file's own imports need it)."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the telling line of its message.

    The dynamo exporter's messages start with a generic banner (with ANSI colours) and put the cause
    under '## Exception summary': that line is the one kept.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1 :]
        # the summary names the cause as "<class 'pkg.Error'>: message": keep the class's own name
        cause = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>", r"\1", after[0]) if after else ""
        line = cause or type(exc).__name__
    else:
        line = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def split_target(target: str) -> tuple[str, str, bool]:
    """(file or module, attribute path, whether it names a file) of ``path.py:factory`` / ``pkg.mod:factory``."""
    where, sep, attribute = target.rpartition(":")
    if not sep or not where or not attribute:
        raise AuditError("factory-target", f"'{target}' is not FILE.py:FACTORY or MODULE:FACTORY")
    if not all(part.isidentifier() for part in attribute.split(".")):
        raise AuditError("factory-target", f"'{attribute}' in '{target}' is not a Python name")
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    return where, attribute, is_file


def _load_factory(target: str) -> tuple[Callable[[], Any], str]:
    """The factory ``target`` names, and the folder its imports need on sys.path."""
    where, attribute, is_file = split_target(target)
    folder = os.getcwd()
    if is_file:
        path = Path(where).resolve()
        folder = str(path.parent)
        if not path.is_file():
            raise AuditError("factory-not-found", f"cannot load {where}: no such file")
        name = f"_auditor_factory_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise AuditError("factory-not-found", f"cannot load {where} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses, pickling and torch.export look modules up by name
        try:
            with _on_sys_path(folder):
                spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            sys.modules.pop(name, None)
            raise AuditError("factory-failed", f"loading {where} failed: {_one_line(exc)}") from exc
    else:
        try:
            with _on_sys_path(folder):
                module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name) and where[len(exc.name) :][:1] in ("", "."):
                raise AuditError("factory-not-found", f"no module named '{where}'") from exc
            raise AuditError("factory-failed", f"importing {where} failed: {_one_line(exc)}") from exc
        except (Exception, SystemExit) as exc:
            raise AuditError("factory-failed", f"importing {where} failed: {_one_line(exc)}") from exc
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise AuditError("factory-attribute", f"{where} has no attribute '{attribute}'")
        found = getattr(found, part)
    if not callable(found):
        raise AuditError("factory-attribute", f"{where}:{attribute} is not callable")
    factory: Callable[[], Any] = found
    return factory, folder


def resolve_factory(
    target: str, input_shapes: InputShapes | None = None
) -> tuple[torch.nn.Module, ExampleInputs | None]:
    """Load and call the factory ``target`` names: (module, example inputs or None).

    The factory's own example inputs win; otherwise ``input_shapes`` build float32 ones (see the
    module docstring); with neither, the inputs are None (no forward can run).
    """
    import torch

    factory, folder = _load_factory(target)
    try:
        with _on_sys_path(folder):  # the factory may import lazily
            made = factory()
    except (Exception, SystemExit) as exc:
        raise AuditError("factory-failed", f"{target} raised {_one_line(exc)}") from exc
    inputs: Any = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, inputs = made
    if not isinstance(made, torch.nn.Module):
        raise AuditError(
            "factory-return",
            f"{target} returned {type(made).__name__}; expected an nn.Module or (module, example_inputs)",
        )
    if inputs is None:
        return made, None if input_shapes is None else example_inputs_from_shapes(input_shapes)
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if isinstance(inputs, list):
        inputs = tuple(inputs)
    if isinstance(inputs, tuple) and all(isinstance(t, torch.Tensor) for t in inputs):
        return made, inputs
    if isinstance(inputs, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in inputs.items()):
        return made, dict(inputs)
    raise AuditError(
        "factory-return",
        f"{target} returned example inputs of type {type(inputs).__name__}; expected a tuple of tensors or a dict of "
        "keyword tensors",
    )


def example_inputs_from_shapes(shapes: InputShapes) -> ExampleInputs:
    """Float32 inputs drawn from N(0, 1) with a fixed seed: positional for a sequence of shapes,
    keyword for a mapping ``name -> shape``."""
    import torch

    generator = torch.Generator().manual_seed(INPUT_SEED)

    def draw(shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(int(d) for d in shape), generator=generator)

    if isinstance(shapes, Mapping):
        return {str(name): draw(shape) for name, shape in shapes.items()}
    return tuple(draw(shape) for shape in shapes)


# ---- ground truth from a module -----------------------------------------------------------------

_DTYPE_NAMES = {"float8_e4m3fn": "float8e4m3fn", "float8_e5m2": "float8e5m2", "float8_e4m3fnuz": "float8e4m3fnuz",
                "float8_e5m2fnuz": "float8e5m2fnuz", "float8_e8m0fnu": "float8e8m0"}  # fmt: skip


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype under the name the ONNX side uses (float32, bfloat16, float8e4m3fn...)."""
    name = str(dtype).removeprefix("torch.")
    return _DTYPE_NAMES.get(name, name)


def _kind(dtype: torch.dtype) -> str:
    import torch

    if dtype.is_floating_point:
        return "float"
    if dtype is torch.bool:
        return "bool"
    if dtype.is_complex:
        return "other"
    return "integer"


def _digest(tensor: torch.Tensor) -> str | None:
    """xxh3-128 of the tensor's bytes in C order (the layout an ONNX initializer stores), or None
    when it holds no data here (meta device, sparse, quantized)."""
    import torch
    import xxhash

    if tensor.device.type == "meta" or tensor.layout is not torch.strided or tensor.is_quantized:
        return None
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype is torch.bool:
        flat = flat.to(torch.uint8)
    try:
        raw = flat.cpu().view(torch.uint8).numpy()
    except (RuntimeError, TypeError):
        return None
    return str(xxhash.xxh3_128_hexdigest(raw.data))


def _storage_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    """What identifies the memory a tensor lives in: device and storage address; on the meta device
    (and for empty tensors) there is no address, so the tensor object stands for itself."""
    if tensor.device.type == "meta" or tensor.numel() == 0:
        return ("object", id(tensor))
    try:
        return (str(tensor.device), tensor.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return ("object", id(tensor))


def _view_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Same key: the same elements of the same storage, read the same way."""
    return (_storage_key(tensor), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)


def _byte_intervals(tensor: torch.Tensor) -> list[tuple[int, int]]:
    """The byte ranges of its storage a view covers (merged)."""
    size = int(tensor.element_size())
    start = int(tensor.storage_offset()) * size
    if tensor.is_contiguous() or tensor.numel() > (1 << 24):
        # contiguous, or too large to enumerate: taken as one dense block (views of a weight are
        # slices of whole rows in practice; the rare huge strided view is approximated)
        return [(start, start + int(tensor.numel()) * size)]
    import numpy as np

    offsets = np.zeros((), dtype=np.int64)
    for extent, stride in zip(tensor.shape, tensor.stride()):
        offsets = offsets[..., None] + np.arange(int(extent), dtype=np.int64) * int(stride)
    elements = np.unique(offsets.reshape(-1))
    # runs of consecutive elements, each one interval
    breaks = np.flatnonzero(np.diff(elements) != 1) + 1
    firsts = elements[np.concatenate(([0], breaks))]
    lasts = elements[np.concatenate((breaks - 1, [len(elements) - 1]))]
    return [(start + int(a) * size, start + (int(b) + 1) * size) for a, b in zip(firsts, lasts)]


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _describe_inputs(module: torch.nn.Module, inputs: ExampleInputs | None) -> tuple[str, ...]:
    if inputs is None:
        return ()
    items = inputs.items() if isinstance(inputs, dict) else zip(_input_names(module, len(inputs)), inputs)
    return tuple(f"{name}: {dtype_name(t.dtype)}[{', '.join(map(str, t.shape))}]" for name, t in items)


def _call_counts(module: torch.nn.Module, inputs: ExampleInputs) -> dict[int, int]:
    """Calls per module object (by id) during one forward, eval mode, no grad; modes restored."""
    import torch

    objects = {id(m): m for m in module.modules()}
    modes = {key: m.training for key, m in objects.items()}
    calls: dict[int, int] = defaultdict(int)

    def hook(mod: torch.nn.Module, _args: Any) -> None:
        calls[id(mod)] += 1

    handles = [m.register_forward_pre_hook(hook) for m in objects.values()]
    try:
        module.eval()
        with torch.no_grad():
            if isinstance(inputs, dict):
                module(**inputs)
            else:
                module(*inputs)
    except Exception as exc:
        raise AuditError("forward-failed", f"the forward pass with the example inputs failed: {_one_line(exc)}") from exc
    finally:
        for handle in handles:
            handle.remove()
        for key, m in objects.items():
            m.training = modes[key]
    return dict(calls)


def ground_truth(module: torch.nn.Module, example_inputs: ExampleInputs | None = None, digests: bool = True) -> TorchTruth:
    """Torch's own parameter account of ``module``; applied counts from one forward with
    ``example_inputs`` (none without them). ``digests``: hash every parameter and buffer (what
    matching them to ONNX tensors by value needs)."""
    names_of: dict[int, list[str]] = defaultdict(list)
    objects: dict[int, Any] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names_of[id(param)].append(name)
        objects[id(param)] = param

    modules, module_names, applies = _appliers(module)
    calls = _call_counts(module, example_inputs) if example_inputs is not None else None
    applications: dict[int, int] = defaultdict(int)
    if calls is not None:
        for key, params in applies.items():
            for pid in params:
                applications[pid] += calls.get(key, 0)

    storages: dict[tuple[Any, ...], int] = {}
    view_members: dict[tuple[Any, ...], list[int]] = defaultdict(list)  # view key -> parameter ids
    parameters = []
    for pid, param in objects.items():
        storage = storages.setdefault(_storage_key(param), len(storages))
        view_members[_view_key(param)].append(pid)
        digest = transposed = None
        if digests:
            digest = _digest(param)
            if param.dim() == 2 and digest is not None:
                transposed = _digest(param.t())
        parameters.append(
            TorchParameter(
                names=tuple(names_of[pid]), shape=tuple(param.shape), dtype=dtype_name(param.dtype),
                nbytes=param.numel() * param.element_size(), storage=storage, storage_offset=param.storage_offset(),
                applications=None if calls is None else applications[pid], digest=digest, transposed_digest=transposed,
            )
        )  # fmt: skip

    ties = tuple(
        TieGroup(tuple(n for pid in pids for n in names_of[pid]), objects[pids[0]].numel(),
                 objects[pids[0]].numel() * objects[pids[0]].element_size(), len(pids))  # fmt: skip
        for pids in view_members.values()
        if sum(len(names_of[pid]) for pid in pids) > 1
    )
    shared, storage_params, storage_bytes = _storage_sharing(objects, names_of, view_members)

    buffer_names: dict[int, list[str]] = defaultdict(list)
    buffer_objects: dict[int, Any] = {}
    for name, buffer in module.named_buffers(remove_duplicate=False):
        buffer_names[id(buffer)].append(name)
        buffer_objects[id(buffer)] = buffer
    buffers = tuple(
        TorchBuffer(
            names=tuple(buffer_names[bid]), shape=tuple(buffer.shape), dtype=dtype_name(buffer.dtype),
            nbytes=buffer.numel() * buffer.element_size(), kind=_kind(buffer.dtype),
            persistent=any(_is_persistent(module, n) for n in buffer_names[bid]),
            digest=_digest(buffer) if digests else None,
        )  # fmt: skip
        for bid, buffer in buffer_objects.items()
    )

    repeated: tuple[ModuleCalls, ...] = ()
    uncalled: tuple[str, ...] = ()
    if calls is not None:
        repeated = tuple(
            ModuleCalls(tuple(module_names[key]), type(mod).__name__, calls[key],
                        sum(objects[pid].numel() for pid in applies[key]))  # fmt: skip
            for key, mod in modules.items()
            if calls.get(key, 0) > 1
        )
        uncalled = tuple(p.name for p in parameters if not p.applications)
    return TorchTruth(
        source="module", model_type=type(module).__name__, parameters=tuple(parameters), ties=ties,
        shared_storages=shared, buffers=buffers, repeated_modules=repeated, uncalled=uncalled,
        forward_ran=calls is not None, storage_params=storage_params, storage_bytes=storage_bytes,
        inputs=_describe_inputs(module, example_inputs),
    )  # fmt: skip


def _appliers(
    root: torch.nn.Module,
) -> tuple[dict[int, torch.nn.Module], dict[int, list[str]], dict[int, list[int]]]:
    """Module objects by id, their names, and the ids of the Parameters each applies when called:
    its own, less those a descendant holds too (see TorchParameter.applications)."""
    modules: dict[int, torch.nn.Module] = {}
    names: dict[int, list[str]] = defaultdict(list)
    for name, mod in root.named_modules(remove_duplicate=False):
        modules[id(mod)] = mod
        names[id(mod)].append(name or "(root)")
    applies: dict[int, list[int]] = {}
    for key, mod in modules.items():
        own = list(dict.fromkeys(id(p) for p in mod._parameters.values() if p is not None))
        below: set[int] = set()
        if own:
            below = {id(p) for child in mod.modules() if child is not mod for p in child.parameters(recurse=False)}
        applies[key] = [pid for pid in own if pid not in below]
    return modules, dict(names), applies


def _is_persistent(root: torch.nn.Module, name: str) -> bool:
    owner_name, _, leaf = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    return leaf not in owner._non_persistent_buffers_set


def _storage_sharing(
    objects: Mapping[int, Any], names_of: Mapping[int, list[str]], view_members: Mapping[tuple[Any, ...], list[int]]
) -> tuple[tuple[SharedStorage, ...], int, int]:
    """Storages holding more than one distinct view, and the elements and bytes distinct in memory."""
    views_by_storage: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for key, pids in view_members.items():
        views_by_storage[key[0]].append(pids[0])
    shared = []
    storage_params = storage_bytes = 0
    for pids in views_by_storage.values():
        covered = sum(hi - lo for lo, hi in _merge([i for pid in pids for i in _byte_intervals(objects[pid])]))
        storage_bytes += covered
        storage_params += covered // objects[pids[0]].element_size()
        if len(pids) > 1:
            total = sum(objects[pid].numel() * objects[pid].element_size() for pid in pids)
            shared.append(SharedStorage(tuple(names_of[pid][0] for pid in pids), covered, total - covered))
    return tuple(shared), storage_params, storage_bytes


# ---- exporting ----------------------------------------------------------------------------------


def _input_names(module: torch.nn.Module, count: int) -> list[str]:
    """Names of the first ``count`` positional parameters of ``forward`` (input_<i> where unnamed)."""
    import inspect

    try:
        params = [
            p.name for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]  # fmt: skip
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input_{i}" for i in range(count)]


EXPORTERS = ("auto", "dynamo", "torchscript")


def export_module(
    module: torch.nn.Module,
    example_inputs: ExampleInputs,
    path: str | os.PathLike[str],
    dynamic_ids: bool = True,
    opset: int = OPSET,
    exporter: str = "auto",
    fold: bool = True,
) -> ExportResult:
    """Export ``module`` in this process (no time limit: ``export_onnx`` runs this in a child).

    Its ground truth is taken first (one forward). ``exporter="auto"`` runs
    ``torch.onnx.export(dynamo=True)`` and the TorchScript exporter (``dynamo=False``) if that
    fails; ``"dynamo"`` or ``"torchscript"`` runs only that one. Both at ``opset``, with their
    default optimisation (constant folding) when ``fold``: folding is what stores a tied weight a
    second time, transposed, for the head (``fold=False`` keeps the Transpose node and one tensor,
    in both exporters of torch 2.13). Inputs that are 2-D integer tensors (token ids) get
    dynamic batch and sequence axes when ``dynamic_ids``: with static shapes exporters fold
    shape-only subgraphs that read parameters (a position table sliced to the example length would
    be stored as that slice). Other inputs keep their example shapes. Parameters and buffers over
    1 GiB in all go to external data beside ``path``.
    """
    import warnings

    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, not {exporter!r}")
    truth = ground_truth(module, example_inputs)
    path = Path(path)
    start = time.perf_counter()
    if isinstance(example_inputs, dict):
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] | None = dict(example_inputs)
        named = list(example_inputs.items())
    else:
        args, kwargs = tuple(example_inputs), None
        named = list(zip(_input_names(module, len(args)), args))
    ids = [
        name for name, t in named
        if dynamic_ids and t.dim() == 2 and not t.is_floating_point() and not t.is_complex() and t.dtype is not torch.bool
    ]  # fmt: skip
    weights = sum(p.nbytes for p in truth.parameters) + sum(b.nbytes for b in truth.buffers)
    external = weights > EXTERNAL_DATA_BYTES
    module.eval()

    def dynamo() -> None:
        auto = torch.export.Dim.AUTO  # dynamic where the model allows it, static (no error) elsewhere
        per_input = [({0: auto, 1: auto} if name in ids else None) for name, _ in named]
        shapes: Any = None
        if ids:
            shapes = dict(zip(kwargs, per_input)) if kwargs is not None else tuple(per_input)
        torch.onnx.export(
            module, args, str(path), kwargs=kwargs, dynamo=True, opset_version=opset, external_data=external,
            dynamic_shapes=shapes, optimize=fold, verbose=False, report=False,
        )  # fmt: skip

    def torchscript() -> None:
        torch.onnx.export(
            module, args, str(path), kwargs=kwargs, dynamo=False, opset_version=opset, external_data=external,
            input_names=[name for name, _ in named],
            dynamic_axes={name: {0: "batch", 1: f"{name}_length"} for name in ids} or None, do_constant_folding=fold,
        )  # fmt: skip

    fallback_reason = None
    used = "torchscript" if exporter == "torchscript" else "dynamo"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            if used == "dynamo":
                dynamo()
            else:
                torchscript()
        except Exception as first:
            if exporter != "auto":
                raise AuditError("export-failed", f"the {used} exporter failed: {_one_line(first)}") from first
            fallback_reason = _one_line(first)
            for leftover in path.parent.glob(f"{path.name}*"):
                leftover.unlink()
            used = "torchscript"
            try:
                torchscript()
            except Exception as second:
                raise AuditError(
                    "export-failed",
                    f"neither exporter could export {truth.model_type}: dynamo: {fallback_reason}; "
                    f"torchscript: {_one_line(second)}",
                ) from second
    return ExportResult(
        path=str(path), exporter=used, fallback_reason=fallback_reason, seconds=time.perf_counter() - start,
        opset=opset, external_data=external, dynamic_inputs=tuple(ids), truth=truth,
    )  # fmt: skip


def export_onnx(
    target: str,
    path: str | os.PathLike[str],
    timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S,
    input_shapes: InputShapes | None = None,
    dynamic_ids: bool = True,
    memory_cap_bytes: int | None = None,
    exporter: str = "auto",
    fold: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Resolve the factory ``target`` and export it to ``path`` in a child process with a time (and
    memory) limit; a hanging export is killed (``AuditError('export-timeout')``). Modules do not
    pickle reliably, so the child calls the factory itself; the ground truth is taken there, from
    the very module exported. ``exporter``, ``fold``: see ``export_module``. Nothing is left at ``path`` unless
    the export succeeds; a file the exporter writes beside it (external data) replaces an existing
    one only with ``overwrite``."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, not {exporter!r}")
    dest = Path(path).resolve()
    if not dest.parent.is_dir():
        raise AuditError("export-path", f"cannot write {path}: no such folder")
    # The exporters write the file (and any external data beside it) into a fresh folder, moved
    # into place only once complete: a killed export leaves nothing half-written at ``path``.
    work = Path(tempfile.mkdtemp(prefix=".auditor-export-", dir=dest.parent))
    try:
        request = _request("export", target, input_shapes)
        request.update(path=str(work / dest.name), dynamic_ids=dynamic_ids, exporter=exporter, fold=fold)
        result = _run_child(request, timeout_s, memory_cap_bytes, f"exporting {target}", "export")
        move_into_place(work, dest, overwrite)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(
        path=str(dest), exporter=str(result["exporter"]), fallback_reason=result["fallback_reason"],
        seconds=float(result["seconds"]), opset=int(result["opset"]), external_data=bool(result["external_data"]),
        dynamic_inputs=tuple(result["dynamic_inputs"]), truth=truth_from_dict(result["truth"]),
    )  # fmt: skip


def move_into_place(work: Path, dest: Path, overwrite: bool) -> None:
    """Move what an export wrote into ``work`` (the file ``dest.name``, external data beside it)
    into ``dest``'s folder. Any file there it would replace, other than ``dest`` itself (which the
    caller has cleared), is refused unless ``overwrite``: checked before anything moves."""
    written = sorted(work.iterdir())
    clashes = [item.name for item in written if item.name != dest.name and (dest.parent / item.name).exists()]
    if clashes and not overwrite:
        raise AuditError(
            "output-exists",
            f"the export writes {clashes[0]} beside {dest.name}, and {dest.parent / clashes[0]} exists; "
            "pass --force to overwrite it",
        )
    for item in written:
        os.replace(item, dest.parent / item.name)


def trace_target(
    target: str,
    timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S,
    input_shapes: InputShapes | None = None,
    memory_cap_bytes: int | None = None,
) -> TorchTruth:
    """The ground truth of the factory ``target`` (no export), taken in a child process with a time
    limit (``AuditError('trace-timeout')``): the factory's code never runs in this process."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    result = _run_child(_request("truth", target, input_shapes), timeout_s, memory_cap_bytes, f"tracing {target}", "trace")
    return truth_from_dict(result["truth"])


def _request(mode: str, target: str, input_shapes: InputShapes | None) -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        raise AuditError("torch-unavailable", "auditing a PyTorch model needs torch: pip install 'auditor[torch]'")
    where, attribute, is_file = split_target(target)
    if is_file:  # the child resolves it from the same folder, whatever its working directory
        target = f"{Path(where).resolve()}:{attribute}"
    shapes: Any = None
    if isinstance(input_shapes, Mapping):
        shapes = {"kwargs": {str(k): [int(d) for d in v] for k, v in input_shapes.items()}}
    elif input_shapes is not None:
        shapes = {"args": [[int(d) for d in s] for s in input_shapes]}
    return {"mode": mode, "target": target, "input_shapes": shapes, "cwd": os.getcwd()}


def run_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The child's work (``_export_child.py``): resolve, take the ground truth, export if asked."""
    shapes_spec = request.get("input_shapes")
    shapes: InputShapes | None = None
    if shapes_spec is not None:
        shapes = shapes_spec["kwargs"] if "kwargs" in shapes_spec else [tuple(s) for s in shapes_spec["args"]]
    with _on_sys_path(str(request.get("cwd") or os.getcwd())):
        module, inputs = resolve_factory(str(request["target"]), shapes)
    if request["mode"] == "truth":
        return {"ok": True, "truth": asdict(ground_truth(module, inputs))}
    if inputs is None:
        raise AuditError(
            "factory-inputs", f"{request['target']} returned no example inputs; give the input shapes to export it"
        )
    result = export_module(
        module, inputs, str(request["path"]), dynamic_ids=bool(request.get("dynamic_ids", True)),
        exporter=str(request.get("exporter", "auto")), fold=bool(request.get("fold", True)),
    )  # fmt: skip
    return {"ok": True, **asdict(result)}


def _run_child(
    request: Mapping[str, Any], timeout_s: float, memory_cap_bytes: int | None, what: str, slug: str
) -> dict[str, Any]:
    """Run ``_export_child.py`` on ``request``; its result, or AuditError ``<slug>-timeout`` /
    ``<slug>-memory`` / ``<slug>-failed`` (or the child's own slug)."""
    from auditor.measure import _default_cap, _last_json, crash_reason, run_limited

    cap = memory_cap_bytes if memory_cap_bytes is not None else _default_cap()
    out, err, returncode, timed_out, over_cap = run_limited(_CHILD, json.dumps(request).encode(), timeout_s, cap)
    if over_cap is not None:
        raise AuditError(
            f"{slug}-memory", f"{what} exceeded the memory cap of {cap >> 20} MiB and was stopped"
        )
    if timed_out:
        raise AuditError(f"{slug}-timeout", f"{what} did not finish within {timeout_s:g} s and was stopped")
    result = _last_json(out)
    if result is None:
        raise AuditError(f"{slug}-failed", f"{what} failed: {crash_reason(returncode, err)}")
    if not result.get("ok"):
        raise AuditError(str(result.get("slug") or f"{slug}-failed"), str(result.get("message", "no reason given")))
    return result


def truth_from_dict(data: Mapping[str, Any]) -> TorchTruth:
    """A TorchTruth back from ``dataclasses.asdict`` (the child's JSON)."""
    return TorchTruth(
        source=data["source"],
        model_type=data["model_type"],
        parameters=tuple(
            TorchParameter(**{**p, "names": tuple(p["names"]), "shape": tuple(p["shape"])}) for p in data["parameters"]
        ),
        ties=tuple(TieGroup(**{**t, "names": tuple(t["names"])}) for t in data["ties"]),
        shared_storages=tuple(SharedStorage(**{**s, "names": tuple(s["names"])}) for s in data["shared_storages"]),
        buffers=tuple(
            TorchBuffer(**{**b, "names": tuple(b["names"]), "shape": tuple(b["shape"])}) for b in data["buffers"]
        ),
        repeated_modules=tuple(ModuleCalls(**{**m, "names": tuple(m["names"])}) for m in data["repeated_modules"]),
        uncalled=tuple(data["uncalled"]),
        forward_ran=bool(data["forward_ran"]),
        storage_params=int(data["storage_params"]),
        storage_bytes=int(data["storage_bytes"]),
        inputs=tuple(data["inputs"]),
    )


# ---- .pt2 archives (torch.export.save) ----------------------------------------------------------

# torch._export.serde.schema.ScalarType: the archive's dtype codes (part of its versioned schema)
_PT2_DTYPES: dict[int, tuple[str, int]] = {
    1: ("uint8", 1), 2: ("int8", 1), 3: ("int16", 2), 4: ("int32", 4), 5: ("int64", 8), 6: ("float16", 2),
    7: ("float32", 4), 8: ("float64", 8), 9: ("complex32", 4), 10: ("complex64", 8), 11: ("complex128", 16),
    12: ("bool", 1), 13: ("bfloat16", 2), 28: ("uint16", 2), 29: ("float8e4m3fn", 1), 30: ("float8e5m2", 1),
    31: ("float8e4m3fnuz", 1), 32: ("float8e5m2fnuz", 1), 33: ("float8e8m0", 1), 34: ("uint32", 4), 35: ("uint64", 8),
}  # fmt: skip

# ops whose output is (a view, slice or cast of) their input: a parameter passed through them is
# applied where their output is read
_PASS_ON_OPS = frozenset({
    "t", "transpose", "permute", "view", "reshape", "_unsafe_view", "expand", "expand_as", "alias", "detach",
    "unsqueeze", "squeeze", "flatten", "contiguous", "clone", "_to_copy", "to", "type_as", "numpy_T", "mT",
    "slice", "select", "narrow", "split", "split_with_sizes", "chunk", "unbind", "as_strided", "view_as",
    "lift_fresh_copy", "getitem",
})  # fmt: skip


@dataclass(frozen=True)
class _Lifted:
    """One placeholder of an exported program that stands for a parameter, buffer or constant."""

    placeholder: str
    name: str  # its fully qualified name in the module (state-dict key)
    kind: str  # "parameter" | "buffer" | "constant"
    shape: tuple[int, ...]
    dtype: str
    itemsize: int
    storage: tuple[Any, ...]  # which stored block of memory holds it
    offset: int  # in elements
    view: tuple[Any, ...]  # how it reads that block (sizes, strides): same storage and view, same values
    persistent: bool = True

    @property
    def memory(self) -> tuple[Any, ...]:
        """Equal for names over the same memory: the tie torch.export.save preserves."""
        return (self.storage, self.offset, self.view)


def is_pt2_archive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive (a zip holding ``archive_format`` and
    ``models/*.json``, or the pre-2.8 ``serialized_exported_program.json``), told by its contents:
    a ``torch.save`` state dict is a zip too."""
    try:
        if not Path(path).is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, ValueError, zipfile.BadZipFile):  # ValueError: an entry name that is not UTF-8
        return False
    return any(re.fullmatch(r"(?:.+/)?models/[^/]+\.json", n) for n in names) or any(
        n.endswith("serialized_exported_program.json") for n in names
    )


def load_pt2(path: str | os.PathLike[str], allow_pickle: bool = False) -> TorchTruth:
    """Parameter counts of a ``torch.export.save`` archive.

    By default only the archive's JSON is read (the program's graph and signature, the weights'
    config): nothing is unpickled and no weight is loaded, so a hostile file can run no code.
    ``torch.export.load`` is not safe for untrusted files: pickled weights and constants are loaded
    with ``torch.load(weights_only=False)``, opaque objects with ``pickle.loads``, and the example
    inputs fall back to ``weights_only=False`` when the safe load fails. ``allow_pickle=True`` uses
    it (for archives the JSON reader does not understand, such as the pre-2.8 format); only for
    files you trust.

    Ties: ``torch.export`` lifts each name of a tied parameter as its own placeholder (the names
    not used by the graph get no reads) and ``torch.export.save`` stores the shared memory once;
    names over the same memory form one TorchParameter. ``unique_params`` sums the distinct ones;
    ``applications`` counts the reads of every placeholder of a parameter (through views, slices
    and casts; reads inside a cond/while/map body count once at the call).
    """
    file = Path(path)
    if not file.is_file():
        raise AuditError("file-not-found", f"cannot read {path}: no such file")
    if not zipfile.is_zipfile(file):
        raise AuditError("not-pt2", f"{file.name} is not a torch.export archive (not a zip file)")
    if allow_pickle:
        if importlib.util.find_spec("torch") is None:
            raise AuditError("torch-unavailable", "reading a .pt2 file with torch.export.load needs torch")
        lifted, reads = _pt2_unpickled(file)
    else:
        lifted, reads = _pt2_json(file)
    return _truth_from_program(lifted, reads, file.name)


# the archive's JSON entries (graph, signature, configs) are read whole: refuse absurd sizes
_PT2_JSON_LIMIT = 256 << 20  # a program's JSON: far above real ones, small enough to parse in memory


def _pt2_json(file: Path) -> tuple[list[_Lifted], dict[str, int]]:
    """Placeholders and their reads from the archive's JSON alone."""
    with zipfile.ZipFile(file) as archive:
        names = set(archive.namelist())
        models = {}
        for entry in sorted(names):
            found = re.fullmatch(r"(?:(.+)/)?models/([^/]+)\.json", entry)
            if found:
                models[found.group(2)] = (found.group(1) + "/" if found.group(1) else "", entry)
        if not models:
            legacy = any(n.endswith("serialized_exported_program.json") for n in names)
            raise AuditError(
                "pt2-format",
                f"{file.name} is " + ("an archive of the pre-2.8 format, which only torch.export.load reads (it unpickles: "
                "allow it only for a trusted file)" if legacy else "not a torch.export archive (no models/*.json)"),
            )  # fmt: skip
        # torch.export.load returns the program named "model"
        model_name = "model" if "model" in models else sorted(models)[0]
        root, entry = models[model_name]

        def read_json(name: str) -> Any:
            if archive.getinfo(name).file_size > _PT2_JSON_LIMIT:
                raise AuditError("pt2-format", f"{file.name}: {name} is larger than {_PT2_JSON_LIMIT >> 20} MiB")
            return json.loads(archive.read(name))

        try:
            program = read_json(entry)
            configs = {}
            for kind, config_name in (("weights", f"data/weights/{model_name}_weights_config.json"),
                                      ("constants", f"data/constants/{model_name}_constants_config.json")):  # fmt: skip
                config_entry = root + config_name
                configs[kind] = read_json(config_entry)["config"] if config_entry in names else {}
            return _parse_program(program, configs, file)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError, RecursionError, NotImplementedError,
                RuntimeError, zipfile.BadZipFile, zlib.error, EOFError) as exc:  # fmt: skip
            raise AuditError("pt2-format", f"{file.name}: unreadable torch.export archive ({_one_line(exc)})") from None


def _parse_program(
    program: Any, configs: Mapping[str, Any], file: Path
) -> tuple[list[_Lifted], dict[str, int]]:
    """The lifted placeholders of a serialized ExportedProgram and the reads of each in its graph."""
    graph = program["graph_module"]["graph"]
    lifted = []
    for spec in program["graph_module"]["signature"]["input_specs"]:
        (kind, body), *_ = spec.items()
        if kind == "parameter":
            fqn, config = body["parameter_name"], configs["weights"]
        elif kind == "buffer":
            fqn = body["buffer_name"]
            config = configs["weights"] if body.get("persistent", True) else configs["constants"]
        elif kind == "tensor_constant":
            fqn, config = body["tensor_constant_name"], configs["constants"]
        else:
            continue
        placeholder = str(body["arg"]["name"])
        meta = graph["tensor_values"].get(placeholder) or (config.get(fqn) or {}).get("tensor_meta")
        if meta is None:
            raise AuditError("pt2-format", f"{file.name}: no shape for {fqn}")
        shape = tuple(_as_int(size, file, fqn) for size in meta["sizes"])
        dtype, itemsize = _PT2_DTYPES.get(int(meta["dtype"]), (f"dtype{meta['dtype']}", 0))
        payload = config.get(fqn)
        storage: tuple[Any, ...] = ("name", fqn)  # pickled or unknown: its own memory
        offset = 0
        view: tuple[tuple[int, ...], ...] = (shape,)
        if payload is not None and payload.get("tensor_meta") is not None:
            stored = payload["tensor_meta"]
            storage = ("weights" if config is configs["weights"] else "constants", str(payload["path_name"]))
            offset = _as_int(stored["storage_offset"], file, fqn)
            view = (tuple(_as_int(s, file, fqn) for s in stored["sizes"]),
                    tuple(_as_int(s, file, fqn) for s in stored["strides"]))  # fmt: skip
        lifted.append(
            _Lifted(placeholder, str(fqn), "constant" if kind == "tensor_constant" else kind, shape, dtype, itemsize,
                    storage, offset, view, bool(body.get("persistent", True)))  # fmt: skip
        )
    readers: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for node in graph["nodes"]:
        op = _op_name(str(node.get("target", "")))
        outputs = list(_tensor_names(node.get("outputs", [])))
        for value in _tensor_names(node.get("inputs", [])):
            readers[value].append((op, outputs))
    return lifted, {item.placeholder: _reads(item.placeholder, readers) for item in lifted}


def _as_int(size: Any, file: Path, fqn: str) -> int:
    if isinstance(size, dict) and "as_int" in size:
        return int(size["as_int"])
    if isinstance(size, int):
        return size
    raise AuditError("pt2-format", f"{file.name}: {fqn} has a symbolic size")


def _op_name(target: str) -> str:
    """'torch.ops.aten.t.default' -> 't'."""
    parts = target.removeprefix("torch.ops.").split(".")
    return parts[1] if len(parts) >= 2 else target


def _tensor_names(value: Any) -> Iterator[str]:
    """Tensor value names in a node's serialized arguments (not inside nested graphs)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "as_graph":
                continue
            if key == "as_tensor" and isinstance(item, dict) and "name" in item:
                yield str(item["name"])
            elif key == "as_tensors" and isinstance(item, list):
                yield from (str(t["name"]) for t in item if isinstance(t, dict) and "name" in t)
            else:
                yield from _tensor_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _tensor_names(item)


def _reads(value: str, readers: Mapping[str, list[tuple[str, list[str]]]]) -> int:
    """Reads of ``value``, looking through the ops that pass it on (views, slices, casts)."""
    total, stack, seen = 0, [value], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for op, outputs in readers.get(current, ()):
            if op in _PASS_ON_OPS:
                stack.extend(outputs)
            else:
                total += 1
    return total


def _pt2_unpickled(file: Path) -> tuple[list[_Lifted], dict[str, int]]:
    """Placeholders and their reads from ``torch.export.load`` (unpickles: trusted files only)."""
    import torch
    from torch.export.graph_signature import InputKind

    try:
        program = torch.export.load(str(file))
    except Exception as exc:
        raise AuditError("pt2-format", f"torch.export.load could not read {file.name}: {_one_line(exc)}") from exc
    tensors = {**program.state_dict, **program.constants}
    lifted = []
    for spec in program.graph_signature.input_specs:
        kind = {InputKind.PARAMETER: "parameter", InputKind.BUFFER: "buffer", InputKind.CONSTANT_TENSOR: "constant"}.get(
            spec.kind
        )
        if kind is None or spec.target is None:
            continue
        tensor = tensors[spec.target]
        lifted.append(
            _Lifted(spec.arg.name, spec.target, kind, tuple(tensor.shape), dtype_name(tensor.dtype),
                    tensor.element_size(), _storage_key(tensor), tensor.storage_offset(),
                    (tuple(tensor.shape), tuple(tensor.stride())), spec.persistent is not False)  # fmt: skip
        )
    readers: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        # a multi-output op's results are read through getitem nodes, which pass them on
        op = "getitem" if node.target is operator.getitem else _op_name(f"torch.ops.{node.target}")
        for value in node.all_input_nodes:
            readers[value.name].append((op, [node.name]))
    return lifted, {item.placeholder: _reads(item.placeholder, readers) for item in lifted}


def _truth_from_program(lifted: Sequence[_Lifted], reads: Mapping[str, int], model_type: str) -> TorchTruth:
    """One TorchParameter per distinct memory among the lifted parameters (a tie: several names)."""
    by_memory: dict[tuple[Any, ...], list[_Lifted]] = defaultdict(list)
    for item in lifted:
        by_memory[item.memory].append(item)
    storages: dict[Any, int] = {}
    parameters, buffers, ties = [], [], []
    for memory, items in by_memory.items():
        first = items[0]
        nbytes = math.prod(first.shape) * first.itemsize
        names = tuple(i.name for i in items)
        if first.kind == "parameter":
            parameters.append(
                TorchParameter(names, first.shape, first.dtype, nbytes, storages.setdefault(first.storage, len(storages)),
                               first.offset, sum(reads[i.placeholder] for i in items))  # fmt: skip
            )
            if len(items) > 1:
                ties.append(TieGroup(names, math.prod(first.shape), nbytes, 1))
        else:
            kind = "float" if first.dtype.startswith(("float", "bfloat")) else "bool" if first.dtype == "bool" else (
                "other" if first.dtype.startswith("complex") else "integer")  # fmt: skip
            buffers.append(TorchBuffer(names, first.shape, first.dtype, nbytes, kind, first.persistent))
    return TorchTruth(
        source="pt2", model_type=model_type, parameters=tuple(parameters), ties=tuple(ties), buffers=tuple(buffers),
        uncalled=tuple(p.name for p in parameters if not p.applications), forward_ran=True,
        storage_params=sum(p.numel for p in parameters), storage_bytes=sum(p.nbytes for p in parameters),
    )  # fmt: skip
