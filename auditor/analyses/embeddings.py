"""Parameters used as lookup tables: rows picked by indices computed from the model's inputs."""

from __future__ import annotations

from typing import Mapping

from auditor.analyses.usage import Applications
from auditor.roles import Role


def embedding_tables(applications: Mapping[str, Applications]) -> frozenset[str]:
    """Ids of parameters some node reads as a LOOKUP (the loader gives that role to a Gather whose
    indices derive from the main graph's runtime inputs: token ids, and positions computed
    from them; not to a router's choice of experts, nor to constant indices)."""
    return frozenset(
        tensor for tensor, apps in applications.items() if any(read.role is Role.LOOKUP for read in apps.reads)
    )
