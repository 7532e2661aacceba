"""Routed experts (mixture of experts): weights of which each token runs only k of n.

A bank of experts is found from its reads, never from names: a stacked tensor ``[n, ...]`` read
by a Gather whose indices a TopK chose (the loader's EXPERT_BANK role), or one tensor per
expert applied by a node that runs only on the tokens a router sent to that expert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from auditor.analyses.usage import Applications
from auditor.graph import TensorInfo
from auditor.roles import Role


@dataclass(frozen=True)
class ExpertBank:
    """Expert weights chosen by one router: ``k`` of the ``n`` experts run per token."""

    tensors: tuple[str, ...]  # one stacked tensor, or one tensor per expert
    router: str  # the TopK node choosing the experts
    n: int
    k: int | None  # None when k is computed at run time
    params_per_expert: int

    @property
    def total_params(self) -> int:
        return self.n * self.params_per_expert

    @property
    def inactive_params(self) -> int:
        """Parameters a token does not use: the n - k experts it is not routed to."""
        return 0 if self.k is None else max(self.n - self.k, 0) * self.params_per_expert


def expert_banks(params: Sequence[TensorInfo], applications: Mapping[str, Applications]) -> tuple[ExpertBank, ...]:
    """Stacked expert banks: parameters read per token through a router's choice of experts."""
    banks = []
    for tensor in params:
        routed = [read.routing for read in applications[tensor.id].reads if read.role is Role.EXPERT_BANK and read.routing]
        if not routed:
            continue
        routing = routed[0]
        banks.append(
            ExpertBank((tensor.id,), routing.router, routing.n, routing.k, tensor.stored_elements // max(routing.n, 1))
        )
    banks.sort(key=lambda b: (b.router, b.tensors))
    return tuple(banks)
