"""Load -> analyses -> findings -> report: the whole pipeline for one model."""

from __future__ import annotations

import os
from typing import Callable

from auditor.analyses.copies import group_copies, identical_edges
from auditor.analyses.counts import count_parameters
from auditor.analyses.embeddings import embedding_tables
from auditor.analyses.parameters import parameter_tensors
from auditor.analyses.sharing import shared_tensors
from auditor.analyses.usage import count_applications, loops
from auditor.findings import evaluate
from auditor.graph import ModelGraph
from auditor.load.onnx_file import load_onnx
from auditor.report.model import ModelSummary, Report

Progress = Callable[[int], None]


def analyse(model: ModelGraph, near: float | None = None, progress: Progress | None = None) -> Report:
    """Run every analysis on a loaded model."""
    params = parameter_tensors(model)
    loop_table = loops(model)
    applications = {t.id: count_applications(model, t.id, loop_table) for t in params}
    duplicates = group_copies(params, identical_edges(params, progress))
    counts = count_parameters(model, params, duplicates, applications, embedding_tables(model, params))
    summary = ModelSummary(
        path=model.path,
        file_size=model.file_size,
        producer=model.producer,
        producer_version=model.producer_version,
        ir_version=model.ir_version,
        opsets=dict(model.opsets),
        external_data_bytes=model.external_data_bytes,
        nodes=len(model.nodes),
        stored_tensors=len(model.tensors),
        subgraphs=sum(1 for s in model.scopes.values() if s.kind == "subgraph"),
        functions=sum(1 for s in model.scopes.values() if s.kind == "function"),
    )
    return Report(
        model=summary,
        counts=counts,
        shared=shared_tensors(model, params, applications),
        duplicates=duplicates,
        loops=tuple(loop_table.values()),
        findings=evaluate(counts, duplicates, tuple(loop_table.values())),
    )


def audit_with_graph(
    path: str | os.PathLike[str], near: float | None = None, progress: Progress | None = None
) -> tuple[Report, ModelGraph]:
    """Audit one ONNX file; also return the loaded graph (for GraphML export)."""
    model = load_onnx(path)
    return analyse(model, near=near, progress=progress), model


def audit(path: str | os.PathLike[str], near: float | None = None, progress: Progress | None = None) -> Report:
    """Audit one ONNX file."""
    return audit_with_graph(path, near=near, progress=progress)[0]
