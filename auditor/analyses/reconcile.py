"""How an export kept torch's parameters: the ONNX tensors holding each one, tie group by tie group.

Torch's ground truth (``auditor.load.torch_module.TorchTruth``, plain data) names every parameter and
carries a digest of its bytes; the ONNX file's tensors are matched to them by name where the exporter
kept names and the bytes agree, else by value (identical bytes, the same bytes in another shape, or
the bytes of the transpose of a 2-D parameter), and then through the copy groups the audit found
(``report.duplicates``: transposed, cast, scaled... copies of a tensor already matched). Parameters
holding equal values in torch (two zero biases) cannot be told apart by value: they are matched by
name only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import xxhash

from auditor.analyses.parameters import parameter_tensors
from auditor.graph import PACKED_DTYPES, ModelGraph, TensorInfo

if TYPE_CHECKING:  # plain data; importing it at run time would make this analysis depend on a loader
    from auditor.load.torch_module import TorchParameter, TorchTruth
    from auditor.report.model import Report

KEPT = "kept as one tensor"
STORED = "stored more than once"
SPLIT = "split per use"
NOT_FOUND = "not found"
DROPPED = "dropped"

_BY_NAME, _BY_VALUE, _BY_COPY, _EQUAL_VALUES = "name", "value", "copy group", "equal values"
# holders are listed matched by name first, then by value, then through copy groups (file order within)
_RANK = {_BY_NAME: 0, _BY_VALUE: 1, _EQUAL_VALUES: 2, _BY_COPY: 3}


@dataclass(frozen=True)
class Holder:
    """An ONNX tensor holding a torch parameter whole, under ``relation``."""

    tensor: str  # tensor id in the ONNX graph
    relation: str  # identical | reshaped | transposed | a copy group's relation (cast, scaled...)
    matched_by: str  # "name" | "value" | "copy group" | "equal values" (ambiguous: see the module docstring)
    readers: int  # nodes applying it (through views)
    numel: int
    nbytes: int


@dataclass(frozen=True)
class ParameterExport:
    """One parameter of torch's (all the names of a tie group together) and where the export put it."""

    names: tuple[str, ...]
    numel: int
    nbytes: int
    holders: tuple[Holder, ...]
    outcome: str  # KEPT | STORED | SPLIT | NOT_FOUND | DROPPED
    applications: int | None  # torch's count for the observed forward

    @property
    def tied(self) -> bool:
        return len(self.names) > 1

    @property
    def ambiguous(self) -> bool:
        """Matched only by holding values other parameters hold too."""
        return any(h.matched_by == _EQUAL_VALUES for h in self.holders)

    @property
    def added_params(self) -> int:
        """Elements the export stores beyond the one copy torch holds."""
        return max(sum(h.numel for h in self.holders) - self.numel, 0)

    @property
    def added_bytes(self) -> int:
        return max(sum(h.nbytes for h in self.holders) - self.nbytes, 0)

    @property
    def message(self) -> str:
        """The outcome in words: 'kept as one tensor', 'stored 2 times (identical, transposed)'..."""
        relations = ", ".join(h.relation for h in self.holders)
        if self.outcome == KEPT:
            return KEPT if self.holders[0].relation == "identical" else f"{KEPT} ({relations})"
        if self.outcome == SPLIT:
            return f"split per use: {len(self.holders)} tensors ({relations}), one per use"
        if self.outcome == STORED:
            return f"stored {len(self.holders)} times ({relations})"
        if self.outcome == DROPPED:
            return "dropped: the forward never applied it and the export stores no tensor holding it"
        return "not found whole in the export (folded into other constants, or stored in parts)"


@dataclass(frozen=True)
class ExportInfo:
    """How an ONNX export (or the file audited) compares with torch's own account of the model."""

    exporter: str | None  # "dynamo" | "torchscript" | None (the ONNX file was not exported here)
    fallback_reason: str | None  # why the dynamo exporter failed, when the TorchScript one ran
    ties: tuple[ParameterExport, ...]  # one per tie group (names of one parameter)
    parameters: tuple[ParameterExport, ...]  # every parameter, a tie group once
    buffer_tensors: tuple[str, ...]  # ONNX parameter tensors holding a torch buffer (rotary tables...)
    unmatched: tuple[str, ...]  # ONNX parameter tensors holding no torch parameter or buffer
    torch_unique_params: int
    torch_unique_bytes: int
    torch_applied_params: int | None
    torch_float_buffer_params: int
    onnx_stored_params: int
    onnx_stored_bytes: int
    onnx_unique_params: int
    onnx_unique_bytes: int
    onnx_applied_params: int | None
    buffer_params: int  # elements of buffer_tensors
    unmatched_params: int  # elements of unmatched

    @property
    def added_stored_params(self) -> int:
        """ONNX stored minus torch unique: what the file stores beyond torch's parameters (can be negative)."""
        return self.onnx_stored_params - self.torch_unique_params

    @property
    def added_stored_bytes(self) -> int:
        return self.onnx_stored_bytes - self.torch_unique_bytes

    @property
    def added_unique_params(self) -> int:
        """ONNX unique minus torch unique: left after the audit merged the copies it found."""
        return self.onnx_unique_params - self.torch_unique_params

    @property
    def added_unique_bytes(self) -> int:
        return self.onnx_unique_bytes - self.torch_unique_bytes

    @property
    def duplicated(self) -> tuple[ParameterExport, ...]:
        """Parameters the export stores more than once (ambiguous matches left out)."""
        return tuple(p for p in self.parameters if p.outcome in (STORED, SPLIT) and not p.ambiguous)

    @property
    def duplicated_params(self) -> int:
        return sum(p.added_params for p in self.duplicated)

    @property
    def duplicated_bytes(self) -> int:
        return sum(p.added_bytes for p in self.duplicated)

    @property
    def duplicated_by_export(self) -> bool:
        """Whether the export stores some parameter torch holds once more than once (a tie broken,
        a weight stored beside its transpose): the finding ``export-duplicated-weights``."""
        return bool(self.duplicated)

    @property
    def missing_params(self) -> int:
        """Elements of torch parameters no ONNX tensor holds whole."""
        return sum(p.numel for p in self.parameters if p.outcome in (NOT_FOUND, DROPPED))


def _digest(tensor: TensorInfo) -> str | None:
    """xxh3-128 (hex) of a tensor's bytes, as torch's side computes it; None when not comparable."""
    if tensor.nnz is not None or tensor.dtype in PACKED_DTYPES:
        return None
    try:
        state = xxhash.xxh3_128()
        for raw, _ in tensor.chunks():
            state.update(raw)
    except (ValueError, OSError):
        return None
    return str(state.hexdigest())


def _units(truth: TorchTruth) -> list[list[TorchParameter]]:
    """Parameters grouped by tie group: distinct Parameter objects over the same memory are one unit."""
    tied = truth.tied_names
    units: dict[object, list[TorchParameter]] = {}
    for param in truth.parameters:
        group = tied.get(param.name)
        units.setdefault(group.names if group is not None else param.names, []).append(param)
    return list(units.values())


def _relation(param: TorchParameter, tensor: TensorInfo, digest: str | None) -> str | None:
    """How ``tensor`` holds ``param`` by value (None: it does not)."""
    if tensor.dtype != param.dtype or tensor.numel != param.numel:
        return None
    if param.digest is None:  # no data on the torch side (meta device): only a name can match
        return None
    if digest == param.digest:
        return "identical" if tensor.shape == param.shape else "reshaped"
    if param.transposed_digest is not None and digest == param.transposed_digest:
        return "transposed"
    return None


def reconcile(
    truth: TorchTruth,
    report: Report,
    model: ModelGraph,
    exporter: str | None = None,
    fallback_reason: str | None = None,
) -> ExportInfo:
    """Map torch's parameters to the ONNX tensors holding them and say, per tie group, whether the
    export kept it as one tensor, stored it several times, split it per use or lost it whole."""
    params = parameter_tensors(model)
    param_ids = {t.id for t in params}
    position = {tid: i for i, tid in enumerate(model.tensors)}
    units = _units(truth)
    sizes = {(p.dtype, p.numel) for p in truth.parameters} | {(b.dtype, b.numel) for b in truth.buffers}
    digests = {tid: _digest(t) for tid, t in model.tensors.items() if (t.dtype, t.numel) in sizes}
    by_digest: dict[str, list[str]] = defaultdict(list)
    for tid, digest in digests.items():
        if digest is not None:
            by_digest[digest].append(tid)
    by_name: dict[str, list[str]] = defaultdict(list)
    for tid, tensor in model.tensors.items():
        by_name[tensor.name].append(tid)
    # a digest several torch parameters (or buffers) share says nothing about which one a tensor holds
    owners: dict[str, int] = defaultdict(int)
    for unit in units:
        for d in {unit[0].digest, unit[0].transposed_digest} - {None}:
            owners[str(d)] += 1
    for buffer in truth.buffers:
        if buffer.digest is not None:
            owners[buffer.digest] += 1
    copies_of: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for group in report.duplicates:
        for member in group.tensors:
            copies_of[member].extend((other, group.relation) for other in group.tensors if other != member)

    results = []
    for unit in units:
        first = unit[0]
        names = tuple(n for p in unit for n in p.names)
        found: dict[str, tuple[str, str]] = {}  # tensor id -> (relation, matched by)
        for name in names:
            for tid in by_name.get(name, ()):
                tensor = model.tensors[tid]
                relation = _relation(first, tensor, digests.get(tid))
                if relation is None and first.digest is None and tensor.shape == first.shape:
                    relation = "identical"
                if relation is not None:
                    found.setdefault(tid, (relation, _BY_NAME))
        # a scalar's value says nothing (exporters store many one-element constants): by name only
        candidates = [by_digest.get(d, []) for d in (first.digest, first.transposed_digest) if d is not None]
        if first.numel <= 1:
            candidates = []
        ambiguous = any(owners[d] > 1 for d in (first.digest, first.transposed_digest) if d is not None)
        if not ambiguous or not found:
            for tid in (t for group in candidates for t in group):
                relation = _relation(first, model.tensors[tid], digests.get(tid))
                if relation is not None:
                    found.setdefault(tid, (relation, _EQUAL_VALUES if ambiguous else _BY_VALUE))
        for tid in list(found):
            for other, relation in copies_of.get(tid, ()):
                found.setdefault(other, (relation, _BY_COPY))
        holders = tuple(
            Holder(tid, relation, how, len(model.terminal_uses(tid)), model.tensors[tid].stored_elements,
                   model.tensors[tid].nbytes)  # fmt: skip
            for tid, (relation, how) in sorted(found.items(), key=lambda item: (_RANK[item[1][1]], position[item[0]]))
        )
        applications = None if not truth.forward_ran else sum(p.applications or 0 for p in unit)
        results.append(
            ParameterExport(names, first.numel, first.nbytes, holders, _outcome(holders, applications), applications)
        )

    held = {h.tensor for p in results for h in p.holders}
    buffer_tensors = _buffer_tensors(truth, model, by_name, by_digest, held)
    unmatched = tuple(t.id for t in params if t.id not in held and t.id not in buffer_tensors)
    counts = report.counts
    return ExportInfo(
        exporter=exporter,
        fallback_reason=fallback_reason,
        ties=tuple(p for p in results if p.tied),
        parameters=tuple(results),
        buffer_tensors=tuple(t for t in buffer_tensors if t in param_ids),
        unmatched=unmatched,
        torch_unique_params=truth.unique_params,
        torch_unique_bytes=truth.unique_bytes,
        torch_applied_params=truth.applied_params,
        torch_float_buffer_params=truth.float_buffer_params,
        onnx_stored_params=counts.stored_params,
        onnx_stored_bytes=counts.stored_bytes,
        onnx_unique_params=counts.unique_params,
        onnx_unique_bytes=counts.unique_bytes,
        onnx_applied_params=counts.applied_params,
        buffer_params=sum(model.tensors[t].stored_elements for t in buffer_tensors if t in param_ids),
        unmatched_params=sum(model.tensors[t].stored_elements for t in unmatched),
    )


def _outcome(holders: Sequence[Holder], applications: int | None) -> str:
    if not holders:
        return DROPPED if applications == 0 else NOT_FOUND
    if len(holders) == 1:
        return KEPT
    if all(h.readers == 1 for h in holders):
        return SPLIT
    return STORED


def _buffer_tensors(
    truth: TorchTruth,
    model: ModelGraph,
    by_name: Mapping[str, Sequence[str]],
    by_digest: Mapping[str, Sequence[str]],
    held: Iterable[str],
) -> tuple[str, ...]:
    """ONNX tensors holding a torch buffer whole (by name, or by identical bytes), not already a parameter's."""
    taken = set(held)
    found: list[str] = []
    for buffer in truth.buffers:
        candidates = [t for n in buffer.names for t in by_name.get(n, ())]
        if buffer.digest is not None:
            candidates += by_digest.get(buffer.digest, [])
        for tid in candidates:
            tensor = model.tensors[tid]
            if tid not in taken and tid not in found and tensor.numel == buffer.numel and tensor.dtype == buffer.dtype:
                found.append(tid)
    return tuple(found)
