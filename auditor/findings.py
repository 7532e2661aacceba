"""Rules: the analyses' results -> findings with stable codes, in plain language.

Codes and slugs never change meaning; a slug is the anchor of the finding's explanation in
the HTML report and in the README's Findings table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from auditor.analyses.blocks import RepeatedBlocks
from auditor.analyses.copies import CopyGroup
from auditor.analyses.counts import Counts
from auditor.analyses.experts import ExpertBank
from auditor.analyses.near import NearGroup
from auditor.analyses.parameters import UnknownRole
from auditor.analyses.usage import BranchChoice, LoopInfo

SEVERITIES = ("info", "warning", "error")

# Applied / unique at or above this: the parameter count understates compute badly.
APPLIED_RATIO_WARNING = 2.0
# Lookup tables above this share of the unique parameters dominate the count.
EMBEDDING_SHARE_INFO = 0.5


@dataclass(frozen=True)
class Finding:
    """One thing a reviewer should know. ``code`` and ``slug`` never change meaning."""

    code: str
    slug: str
    severity: str  # info | warning | error
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)


def human(n: float) -> str:
    """12345678 -> '12.3M'."""
    return _scaled(n, (("", 1), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)), "")


def human_bytes(n: float) -> str:
    return _scaled(n, (("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)), " ")


def _scaled(n: float, units: tuple[tuple[str, float], ...], gap: str) -> str:
    """The smallest unit in which three significant digits need no exponent (999,950 -> 1M)."""
    for unit, size in units:
        if abs(n) / size < 999.5 or unit == units[-1][0]:
            value = n / size
            text = f"{value:.0f}" if size == 1 else f"{value:.3g}"
            return f"{text}{gap}{unit}".rstrip()
    raise AssertionError("unreachable")


def evaluate(
    counts: Counts,
    duplicates: Sequence[CopyGroup],
    loops: Sequence[LoopInfo],
    shareable: Sequence[NearGroup] = (),
    repeated: Sequence[RepeatedBlocks] = (),
    branches: Sequence[BranchChoice] = (),
    experts: Sequence[ExpertBank] = (),
    unknown_roles: Sequence[UnknownRole] = (),
) -> tuple[Finding, ...]:
    """All findings for one model, most severe first."""
    found: list[Finding] = []
    if counts.wasted_params > 0:
        relations = sorted({g.relation for g in duplicates})
        found.append(
            Finding(
                "AUD101",
                "stored-copies",
                "warning",
                f"{human(counts.wasted_params)} parameters ({human_bytes(counts.wasted_bytes)}) "
                f"are stored more than once ({', '.join(relations)} copies in {len(duplicates)} group{'s' if len(duplicates) != 1 else ''}): "
                f"the file holds {human(counts.stored_params)} parameters but only {human(counts.unique_params)} "
                "are distinct. A naive count overstates this model.",
                {"wasted_params": counts.wasted_params, "wasted_bytes": counts.wasted_bytes,
                 "groups": len(duplicates)},  # fmt: skip
            )
        )
    ratio = counts.applied_per_unique
    if ratio is not None and ratio >= APPLIED_RATIO_WARNING:
        found.append(
            Finding(
                "AUD102",
                "shared-weights-hide-compute",
                "warning",
                f"Each unique parameter is applied {ratio:.1f} times per forward pass "
                f"({human(counts.applied_params or 0)} applied vs {human(counts.unique_params)} unique): "
                "weights applied more than once (shared tensors, loops, or stored copies of one tensor) make "
                "the parameter count understate compute and activation memory. "
                "Compare models by applied parameters or FLOPs, not by parameter count.",
                {"applied_params": counts.applied_params, "unique_params": counts.unique_params, "ratio": round(ratio, 3)},
            )
        )
    if counts.unused_params > 0:
        found.append(
            Finding(
                "AUD103",
                "unused-parameters",
                "warning",
                f"{human(counts.unused_params)} stored parameters are never used by any node: "
                "they inflate the parameter count and the file but do nothing.",
                {"unused_params": counts.unused_params},
            )
        )
    if counts.unique_params and counts.embedding_params / counts.unique_params > EMBEDDING_SHARE_INFO:
        share = counts.embedding_params / counts.unique_params
        found.append(
            Finding(
                "AUD104",
                "embedding-dominated",
                "info",
                f"{share:.0%} of the unique parameters are lookup tables (embeddings): each token reads one "
                "row, so the parameter count says little about compute.",
                {"embedding_params": counts.embedding_params, "share": round(share, 4)},
            )
        )
    unknown = [loop for loop in loops if loop.trip_count is None]
    if unknown:
        found.append(
            Finding(
                "AUD105",
                "loop-trip-count-unknown",
                "warning",
                f"{len(unknown)} loop(s) run a number of times known only at run time "
                f"({unknown[0].node}: {unknown[0].reason}), so applied parameters cannot be counted; "
                f"at least {human(counts.applied_params_lower_bound)} if each loop runs once.",
                {"loops": [loop.node for loop in unknown], "applied_params_lower_bound": counts.applied_params_lower_bound},
            )
        )
    if counts.generated_params > 0:
        found.append(
            Finding(
                "AUD106",
                "generated-weights",
                "warning",
                f"{human(counts.generated_params)} weight values are generated at run time (ConstantOfShape, "
                "RandomNormal...) rather than stored: the stored parameter count understates the model.",
                {"generated_params": counts.generated_params},
            )
        )
    if shareable:
        saved = sum(g.saved_params for g in shareable)
        top = shareable[0]
        found.append(
            Finding(
                "AUD107",
                "shareable-near-duplicates",
                "info",
                f"{len(shareable)} group(s) of tensors hold nearly the same values (largest: {len(top.tensors)} tensors "
                f"within {top.distance:.2%} relative distance); sharing them would save {human(saved)} parameters. "
                "Sharing is not free compression: expect to fine-tune, and check quality.",
                {"groups": len(shareable), "saved_params": saved, "saved_bytes": sum(g.saved_bytes for g in shareable)},
            )
        )
    if repeated:
        top_family = repeated[0]
        found.append(
            Finding(
                "AUD108",
                "repeated-blocks",
                "info",
                f"{len(top_family.blocks)} structurally identical blocks of {human(top_family.params_per_block)} "
                f"parameters each have their own weights; one shared set (ALBERT-style) would save "
                f"{human(top_family.saved_params_if_shared)} parameters"
                + (f", but their weights are {top_family.mean_distance:.0%} apart on average"
                   if top_family.mean_distance is not None else "")
                + ": sharing would mean retraining and likely quality loss.",
                {"families": len(repeated), "blocks": len(top_family.blocks),
                 "saved_params_if_shared": top_family.saved_params_if_shared, "mean_distance": top_family.mean_distance},
            )
        )
    if branches:
        first = branches[0]
        sizes = " and ".join(human(b) if b is not None else "an unknown number of" for b in first.branches)
        found.append(
            Finding(
                "AUD109",
                "branch-dependent-count",
                "warning",
                f"{len(branches)} If node(s) choose at run time between branches that apply different numbers of "
                f"parameters ({first.node}: {sizes}), so the applied count depends on the input: "
                f"between {human(counts.applied_params_lower_bound)} (lightest branches) and "
                + (f"{human(counts.applied_params)} (heaviest)." if counts.applied_params is not None else "an unknown number."),
                {"branches": [b.node for b in branches], "applied_params": counts.applied_params,
                 "applied_params_lower_bound": counts.applied_params_lower_bound},  # fmt: skip
            )
        )
    if counts.initial_value_tensors:
        found.append(
            Finding(
                "AUD110",
                "initial-values",
                "info",
                f"{counts.initial_value_tensors} parameter tensor(s) ({human(counts.initial_value_params)} parameters) hold "
                "one value in every element (ones, zeros: how layers are initialised). The model looks untrained or "
                "partly untrained; such tensors are not reported as copies, ties or near-duplicates.",
                {"tensors": counts.initial_value_tensors, "params": counts.initial_value_params},
            )
        )
    if experts:
        routers = sorted({bank.router for bank in experts})
        ks = sorted({f"{bank.k} of {bank.n}" if bank.k is not None else f"? of {bank.n}" for bank in experts})
        found.append(
            Finding(
                "AUD111",
                "moe-total-vs-active",
                "info",
                f"Mixture of experts: {len(routers)} router(s) send each token to {', '.join(ks)} experts, so "
                f"{human(counts.active_params)} of the {human(counts.unique_params)} unique parameters are active per token. "
                "Compute follows the active count, memory the total: compare MoE models by both.",
                {"routers": len(routers), "expert_banks": len(experts), "active_params": counts.active_params,
                 "unique_params": counts.unique_params},  # fmt: skip
            )
        )
    if unknown_roles:
        ops = sorted({op for item in unknown_roles for op in item.ops})
        uncounted = [item for item in unknown_roles if not item.counted]
        found.append(
            Finding(
                "AUD112",
                "unknown-op-roles",
                "warning",
                f"{len(unknown_roles)} stored tensor(s) are read by ops the auditor does not know ({', '.join(ops[:5])}"
                + (", ..." if len(ops) > 5 else "")
                + "): float ones are counted as parameters, "
                + (f"{len(uncounted)} integer one(s) are not" if uncounted else "none is left out")
                + "; the counts may be off for these ops.",
                {"tensors": len(unknown_roles), "ops": ops, "uncounted": [item.tensor for item in uncounted]},
            )
        )
    found.sort(key=lambda f: (-f.rank, f.code))
    return tuple(found)
