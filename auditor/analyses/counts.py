"""Honest parameter counts: stored, unique, applied, active, embedding, unused — each tensor counted once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from auditor.analyses.copies import CopyGroup
from auditor.analyses.experts import ExpertBank
from auditor.analyses.usage import AppliedTotals, Applications
from auditor.graph import TensorInfo


@dataclass(frozen=True)
class DtypeCount:
    params: int
    bytes: int


@dataclass(frozen=True)
class Counts:
    """The model's parameter counts; see the README section 'What counts' for each definition."""

    stored_params: int
    stored_bytes: int
    unique_params: int
    unique_bytes: int
    applied_params: int | None
    applied_params_lower_bound: int
    active_params: int
    embedding_params: int
    unused_params: int
    generated_params: int
    initial_value_params: int
    by_dtype: Mapping[str, DtypeCount]
    parameter_tensors: int
    initial_value_tensors: int
    wasted_params: int  # stored more than once: the copies' parameters
    wasted_bytes: int

    @property
    def applied_per_unique(self) -> float | None:
        """How many times each unique parameter is applied per forward, on average."""
        if self.applied_params is None or not self.unique_params:
            return None
        return self.applied_params / self.unique_params


def count_parameters(
    params: Sequence[TensorInfo],
    copies: Sequence[CopyGroup],
    applications: Mapping[str, Applications],
    totals: AppliedTotals,
    embeddings: frozenset[str],
    unused: frozenset[str],
    generated_params: int = 0,
    initial_values: frozenset[str] = frozenset(),
    experts: Sequence[ExpertBank] = (),
) -> Counts:
    """Totals from the de-duplicated set, never from summing report rows.

    A tensor of initial values (every element equal) that several weight inputs read stands for
    one parameter tensor per weight input: exporters merge equal initial values, torch does not.
    """
    by_dtype: dict[str, DtypeCount] = {}
    for tensor in params:
        old = by_dtype.get(tensor.dtype, DtypeCount(0, 0))
        by_dtype[tensor.dtype] = DtypeCount(old.params + tensor.stored_elements, old.bytes + tensor.nbytes)
    stored_params = sum(t.stored_elements for t in params)
    stored_bytes = sum(t.nbytes for t in params)
    merged_params = merged_bytes = 0
    for tensor in params:
        if tensor.id in initial_values:
            extra = max(len(applications[tensor.id].reads) - 1, 0)
            merged_params += extra * tensor.stored_elements
            merged_bytes += extra * tensor.nbytes
    wasted_params = sum(g.wasted_params for g in copies)
    wasted_bytes = sum(g.wasted_bytes for g in copies)
    unique_params = stored_params - wasted_params + merged_params
    return Counts(
        stored_params=stored_params,
        stored_bytes=stored_bytes,
        unique_params=unique_params,
        unique_bytes=stored_bytes - wasted_bytes + merged_bytes,
        applied_params=totals.applied,
        applied_params_lower_bound=totals.lower_bound,
        active_params=unique_params - sum(bank.inactive_params for bank in experts),
        embedding_params=sum(t.stored_elements for t in params if t.id in embeddings),
        unused_params=sum(t.stored_elements for t in params if t.id in unused),
        generated_params=generated_params,
        initial_value_params=sum(t.stored_elements for t in params if t.id in initial_values),
        by_dtype=dict(sorted(by_dtype.items())),
        parameter_tensors=len(params),
        initial_value_tensors=sum(1 for t in params if t.id in initial_values),
        wasted_params=wasted_params,
        wasted_bytes=wasted_bytes,
    )
