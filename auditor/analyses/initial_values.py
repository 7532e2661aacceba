"""Initial values: parameter tensors holding one value everywhere (LayerNorm ones, zero biases).

A model exported straight after construction is full of them. They are never copies or ties of
one another (equal initial values say nothing about the design), and where an exporter merged
them into one tensor, each weight input it feeds stands for a parameter of its own.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from auditor.analyses.fingerprint import Fingerprint
from auditor.graph import TensorInfo

_PROBE = 4096  # elements looked at before reading a whole tensor


def _all_equal(values: np.ndarray, first: np.ndarray) -> bool:
    return bool(np.array_equal(values, np.broadcast_to(first, values.shape)))


def _holds_one_value(tensor: TensorInfo) -> bool:
    _, probe = next(iter(tensor.chunks(_PROBE)))
    if probe.size == 0:
        return False
    first = probe[:1].copy()
    if not _all_equal(probe, first):
        return False
    return all(_all_equal(values, first) for _, values in tensor.chunks())


def initial_value_tensors(params: Sequence[TensorInfo], prints: Mapping[str, Fingerprint]) -> frozenset[str]:
    """Ids of dense parameters whose elements are all equal. Float tensors already fingerprinted
    are decided by their min and max; the others are probed (a trained tensor differs within
    its first few elements) and read in full only while every element seen is equal."""
    found = set()
    for tensor in params:
        if tensor.nnz is not None or tensor.numel < 2:
            continue
        fp = prints.get(tensor.id)
        if fp is not None and tensor.is_float and fp.numel == tensor.numel:
            if fp.minimum == fp.maximum:
                found.add(tensor.id)
            continue
        if _holds_one_value(tensor):
            found.add(tensor.id)
    return frozenset(found)
