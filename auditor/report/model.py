"""What every renderer reads: the analyses' results and the findings, as plain frozen data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from auditor.analyses.blocks import RepeatedBlocks
from auditor.analyses.compute import Compute
from auditor.analyses.memory import StaticMemory
from auditor.analyses.copies import CopyGroup
from auditor.analyses.counts import Counts
from auditor.analyses.experts import ExpertBank
from auditor.analyses.near import NearGroup
from auditor.analyses.sharing import SharedTensor
from auditor.analyses.parameters import UnknownRole
from auditor.analyses.usage import BranchChoice, LoopInfo
from auditor.findings import Finding
from auditor.graph import CheckpointInfo, NonParameter, ShapeInfo
from auditor.measure import Measurement

if TYPE_CHECKING:  # the torch front end's data: imported only for types (the report model needs no torch)
    from auditor.analyses.reconcile import ExportInfo
    from auditor.load.torch_module import TorchTruth

@dataclass(frozen=True)
class ModelSummary:
    path: str
    file_size: int
    producer: str
    producer_version: str
    ir_version: int
    opsets: Mapping[str, int]
    external_data_bytes: int
    nodes: int
    stored_tensors: int
    subgraphs: int
    functions: int


@dataclass(frozen=True)
class TensorFacts:
    """What a reviewer needs to recognise a tensor the report names: its shape, element type and
    the nodes that read it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    readers: tuple[str, ...]  # "op_type node" of each node reading it (through views), at most 8
    # for a tensor the exporter named itself (val_12, onnx::MatMul_3): where its first reader comes
    # from in the torch model ("transformer.h.0.attn: matmul"); '' when the name says it already
    source: str = ""


@dataclass(frozen=True)
class ClaimCheck:
    """A stated parameter count and the counts it matches (stored, unique, applied, active)."""

    text: str
    value: float
    matches: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    """One model's audit."""

    model: ModelSummary
    counts: Counts
    shared: tuple[SharedTensor, ...]
    duplicates: tuple[CopyGroup, ...]
    loops: tuple[LoopInfo, ...]
    findings: tuple[Finding, ...]
    shareable: tuple[NearGroup, ...] = ()
    repeated_blocks: tuple[RepeatedBlocks, ...] = ()
    branches: tuple[BranchChoice, ...] = ()  # Ifs whose branches apply different parameter counts
    experts: tuple[ExpertBank, ...] = ()
    unknown_roles: tuple[UnknownRole, ...] = ()
    shapes: ShapeInfo | None = None  # the input shapes the model is costed at
    compute: Compute | None = None
    memory: StaticMemory | None = None
    measured: Measurement | None = None  # with --profile: run on the target device
    claim: ClaimCheck | None = None  # with --claim-params
    tensors: Mapping[str, TensorFacts] = field(default_factory=dict)  # every tensor the report names
    source: str = "onnx"  # the model's format: onnx, safetensors, torch-state-dict, gguf, hf-folder
    not_parameters: tuple[NonParameter, ...] = ()  # buffers and training state a checkpoint carries
    checkpoint: CheckpointInfo | None = None
    absent: tuple[str, ...] = ()  # sections that need a graph, absent from a checkpoint's audit
    torch: TorchTruth | None = None  # a PyTorch model's own account (audit file.py:factory)
    export: ExportInfo | None = None  # how the ONNX export compares with it
