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
from auditor.roles import Role, Routing


@dataclass(frozen=True)
class ExpertBank:
    """Expert weights chosen by one router: ``k`` of the ``n`` experts run per token."""

    tensors: tuple[str, ...]  # one stacked tensor, or every expert's own tensors
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
    """Expert weights: stacked banks read through a router's choice of experts, and each router's
    per-expert tensors (applied to the tokens it sent to one expert), one entry per router."""
    banks = []
    own: dict[str, tuple[Routing, set[str], set[str]]] = {}  # router -> (routing, groups, tensors)
    for tensor in params:
        reads = applications[tensor.id].reads
        routed = [read.routing for read in reads if read.role is Role.EXPERT_BANK and read.routing]
        if routed:
            routing = routed[0]
            per_expert = tensor.stored_elements // max(routing.n, 1)
            banks.append(ExpertBank((tensor.id,), routing.router, routing.n, routing.k, per_expert))
            continue
        for read in reads:
            if read.routing is not None and read.routing.group is not None:
                routing, groups, tensors = own.setdefault(read.routing.router, (read.routing, set(), set()))
                groups.add(read.routing.group)
                tensors.add(tensor.id)
    sizes = {t.id: t.stored_elements for t in params}
    for router, (routing, groups, tensors) in own.items():
        total = sum(sizes[t] for t in tensors)
        banks.append(ExpertBank(tuple(sorted(tensors)), router, len(groups), routing.k, total // max(len(groups), 1)))
    banks.sort(key=lambda b: (b.router, b.tensors))
    return tuple(banks)
