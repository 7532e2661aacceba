"""Honest parameter counts: stored, unique, applied, embedding, unused — each tensor counted once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from auditor.analyses.copies import CopyGroup
from auditor.analyses.usage import Applications
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
    embedding_params: int
    unused_params: int
    generated_params: int
    by_dtype: Mapping[str, DtypeCount]
    parameter_tensors: int

    @property
    def wasted_params(self) -> int:
        return self.stored_params - self.unique_params

    @property
    def wasted_bytes(self) -> int:
        return self.stored_bytes - self.unique_bytes

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
    embeddings: frozenset[str],
    unused: frozenset[str],
    generated_params: int = 0,
) -> Counts:
    """Totals from the de-duplicated set, never from summing report rows."""
    by_dtype: dict[str, DtypeCount] = {}
    for tensor in params:
        old = by_dtype.get(tensor.dtype, DtypeCount(0, 0))
        by_dtype[tensor.dtype] = DtypeCount(old.params + tensor.stored_elements, old.bytes + tensor.nbytes)
    stored_params = sum(t.stored_elements for t in params)
    stored_bytes = sum(t.nbytes for t in params)
    applied = 0
    applied_known = True
    lower = 0
    for tensor in params:
        apps = applications[tensor.id]
        if apps.applications is None:
            applied_known = False
        else:
            applied += tensor.stored_elements * apps.applications
        lower += tensor.stored_elements * apps.lower_bound
    return Counts(
        stored_params=stored_params,
        stored_bytes=stored_bytes,
        unique_params=stored_params - sum(g.wasted_params for g in copies),
        unique_bytes=stored_bytes - sum(g.wasted_bytes for g in copies),
        applied_params=applied if applied_known else None,
        applied_params_lower_bound=lower,
        embedding_params=sum(t.stored_elements for t in params if t.id in embeddings),
        unused_params=sum(t.stored_elements for t in params if t.id in unused),
        generated_params=generated_params,
        by_dtype=dict(sorted(by_dtype.items())),
        parameter_tensors=len(params),
    )
