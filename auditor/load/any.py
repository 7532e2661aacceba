"""Any model file -> ModelGraph: the format is told by what the file is, not by its extension."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from auditor.errors import AuditError
from auditor.graph import CheckpointInfo, ModelGraph, ShapeRequest
from auditor.load.checkpoint import checkpoint_format, load_checkpoint_details
from auditor.load.onnx_file import load_onnx


def load_model(path: str | os.PathLike[str], shapes: ShapeRequest | None = None) -> ModelGraph:
    """An ONNX file, or a checkpoint without a graph (safetensors, sharded safetensors, a torch
    state dict read with ``weights_only=True``, GGUF, a Hugging Face-style folder)."""
    target = Path(path)
    if not target.exists():
        raise AuditError("file-not-found", f"no such file or folder: {target}")
    if checkpoint_format(target) is None:
        if target.is_dir():
            raise AuditError("not-a-model", f"{target} is a folder without config.json and weights, not a model")
        return load_onnx(target, shapes)
    details = load_checkpoint_details(target)
    experts = (details.experts.n, details.experts.k) if details.experts is not None else None
    info = CheckpointInfo(
        details.architecture, details.architecture_note, experts, details.state_dict_path,
        details.missing, details.unexpected, details.architecture_params, details.applied_params, details.applied_note,
    )  # fmt: skip
    return replace(details.model, checkpoint=info)
