"""Rules: the analyses' results -> findings with stable codes, in plain language.

``RULES`` is the one registry of findings: code, slug, severity, when it fires, what it means
and what to do (or ask the vendor). The README's table, the HTML explanations, the JSON
schema's list of codes and the SARIF rules all come from it or are checked against it by a
test. Codes and slugs never change meaning; a retired code stays listed, marked retired, and is
never reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from auditor.analyses.blocks import RepeatedBlocks
from auditor.analyses.copies import CopyGroup
from auditor.analyses.counts import Counts
from auditor.analyses.experts import ExpertBank
from auditor.analyses.near import NearGroup
from auditor.analyses.parameters import UnknownRole
from auditor.analyses.usage import BranchChoice, LoopInfo

if TYPE_CHECKING:
    from auditor.analyses.reconcile import ExportInfo

SEVERITIES = ("info", "warning", "error")

# Applied / unique at or above this: the parameter count understates compute badly.
APPLIED_RATIO_WARNING = 2.0
# Lookup tables above this share of the unique parameters dominate the count.
EMBEDDING_SHARE_INFO = 0.5


@dataclass(frozen=True)
class Rule:
    """A kind of finding: what makes it fire, what it means, what to do about it."""

    code: str
    slug: str
    severity: str  # info | warning | error
    when: str  # one line: the condition (the README's table)
    explanation: str  # what it means for a reviewer
    action: str  # what to do, or what to ask the vendor
    scope: str = "model"  # "model": one audit; "comparison": audit compare
    retired: bool = False


RULES: tuple[Rule, ...] = (
    Rule("AUD101", "stored-copies", "warning",
         "stored > unique: copies waste N params / bytes",
         "The file stores the same parameters more than once: identical bytes under two names, or a transformed copy "
         "(transposed, reshaped, cast to another float type, scaled, dequantized). Exporters do this when they un-tie "
         "weights. A parameter count taken from the file overstates the model; the unique count is the honest one.",
         "Quote the unique count. Re-export without constant folding (dynamo optimize=False, TorchScript "
         "do_constant_folding=False: in torch 2.13 both then keep a tied weight as one initializer), or ask the "
         "vendor why weights are stored twice."),
    Rule("AUD102", "shared-weights-hide-compute", "warning",
         "applied >= 2x unique: the parameter count understates compute",
         "Some weights are applied many times per forward pass (ALBERT's one layer applied at every depth, a tied "
         "embedding and LM head, a loop over depth). The parameter count then says little about compute or "
         "activation memory.",
         "Compare models by applied parameters, MACs/FLOPs and memory (the Cost section), not by parameter count."),
    Rule("AUD103", "unused-parameters", "warning",
         "parameters no node reads",
         "Stored parameters that no node reads. They inflate the file and any count taken from it.",
         "Leave them out of any count; ask the vendor whether the file is the model that was evaluated."),
    Rule("AUD104", "embedding-dominated", "info",
         "lookup tables are > 50% of the unique parameters",
         "Most parameters sit in lookup tables, of which each token reads one row: a large parameter count with "
         "little compute.",
         "Compare such models by non-embedding parameters and MACs."),
    Rule("AUD105", "loop-trip-count-unknown", "warning",
         "a loop's trip count is known only at run time",
         "A loop runs a number of times known only at run time, so applied parameters and compute can only be "
         "bounded from below.",
         "Ask how many iterations the model runs in practice, or measure it with --profile."),
    Rule("AUD106", "generated-weights", "warning",
         "weights are generated at run time, not stored",
         "Weights made at run time (ConstantOfShape, RandomNormal and similar feeding a weight input): the file "
         "stores almost nothing but the model runs with many parameters.",
         "Count the generated weights with the stored ones; ask the vendor why weights are not stored."),
    Rule("AUD107", "shareable-near-duplicates", "info",
         "near-duplicate tensors could be shared",
         "Tensors whose values are close under the chosen tolerance. They could be shared, but sharing is not free "
         "compression: unless the distance is tiny, the model needs retraining and may lose quality.",
         "Try sharing them and measure quality; do not count the savings before that."),
    Rule("AUD108", "repeated-blocks", "info",
         "repeated blocks (>= 10% of unique params) whose weights are already close",
         "Structurally identical blocks (e.g. the layers of a transformer) with their own weights. Sharing one set "
         "of weights across them (ALBERT-style) would save the parameters shown, at the price of retraining; the "
         "distances say how far apart the blocks' weights are today.",
         "Only worth trying where the blocks' weights are already close; otherwise read it as structure, not waste."),
    Rule("AUD109", "branch-dependent-count", "warning",
         "`If` branches apply different parameter counts: applied depends on the input",
         "An If node chooses at run time between branches that apply different numbers of parameters (a model "
         "holding two alternative networks, one per sample rate). One forward runs one branch: the applied count "
         "and compute are given for the heaviest branch, the lower bounds for the lightest.",
         "Ask which branch your inputs take; compare models on that branch."),
    Rule("AUD110", "initial-values", "info",
         "tensors hold one value everywhere: the model looks untrained",
         "Parameter tensors hold one value in every element, as layers do straight after construction (LayerNorm "
         "weights of one, zero biases). The model looks untrained or partly untrained. Such tensors are never "
         "reported as copies or ties; where an exporter merged them into one tensor, each weight input counts as "
         "its own parameters.",
         "Check that the file holds trained weights before comparing it."),
    Rule("AUD111", "moe-total-vs-active", "info",
         "routed experts: a token runs k of n, active < unique",
         "A mixture of experts: a router sends each token to k of n experts, so only the active parameters do work "
         "per token while all of them take memory.",
         "Compare such models by active parameters and MACs (compute) and by total bytes (memory), not by the "
         "total count alone."),
    Rule("AUD112", "unknown-op-roles", "warning",
         "stored tensors read by ops the vocabulary does not know",
         "Stored tensors are read by ops the auditor does not know (a vendor's custom domain). Float tensors are "
         "counted as parameters, integer ones are not (they may be packed weights or indices); both are listed "
         "under \"Role unknown\".",
         "Ask the vendor what the op does with them, and for a version of the model in standard ops."),
    Rule("AUD113", "quantized-bytes-vs-params", "warning",
         "parameters of different dtypes take different bytes per parameter",
         "The model stores parameters at different precisions (float32 beside int8 or packed int4 with their "
         "scales): a parameter costs 4, 1 or half a byte. Counts then compare poorly with another model's, in "
         "either direction.",
         "Compare bytes and memory (and quality at that precision), not parameter counts."),
    Rule("AUD114", "claim-mismatch", "warning",
         "a stated parameter count (--claim-params) matches none of the counts, or not the unique one",
         "A vendor's stated count is compared with the stored, unique, applied and active counts at the precision "
         "it was given with. A claim matching only the stored count includes copies; one matching the applied "
         "count counts shared weights once per use; one matching the active count leaves idle experts out.",
         "Ask the vendor which count they state and why it differs from the unique count."),
    Rule("AUD115", "misleading-param-ratio", "warning",
         "two models' parameter ratio differs from their compute or memory ratio by more than --ratio-factor",
         "The parameter ratio between two models says one thing and their MACs or memory say another (an "
         "ALBERT-like model: a fraction of BERT's parameters at about the same compute). A decision taken on "
         "the parameter ratio would be taken on the wrong number.",
         "Decide on the ratio that matters for the deployment: MACs for latency and energy, memory for the device.",
         scope="comparison"),
    Rule("AUD116", "export-duplicated-weights", "warning",
         "the ONNX export stores a parameter torch holds once more than once",
         "Torch holds these parameters once (a tied embedding and LM head is one Parameter), but the ONNX export "
         "stores them in several tensors: constant folding turns the head's transpose into a second "
         "initializer. The file's parameter count overstates the model, and the runtime loads every copy.",
         "Quote torch's unique count. Re-export without folding (dynamo optimize=False, TorchScript "
         "do_constant_folding=False); in torch 2.13 both then keep one initializer."),
)  # fmt: skip
RULE_BY_CODE: Mapping[str, Rule] = {rule.code: rule for rule in RULES}


@dataclass(frozen=True)
class Subject:
    """What a finding is about: a tensor, a node, or a model (in a comparison)."""

    kind: str  # tensor | node | model
    name: str


@dataclass(frozen=True)
class Finding:
    """One thing a reviewer should know. ``code`` and ``slug`` never change meaning."""

    code: str
    slug: str
    severity: str  # info | warning | error
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    subjects: tuple[Subject, ...] = ()

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)

    @property
    def rule(self) -> Rule:
        return RULE_BY_CODE[self.code]


def finding(code: str, message: str, evidence: Mapping[str, Any], subjects: Sequence[Subject] = ()) -> Finding:
    """A finding of the registry's ``code``, with its slug and severity from the registry."""
    rule = RULE_BY_CODE[code]
    return Finding(rule.code, rule.slug, rule.severity, message, dict(evidence), tuple(subjects[:_MAX_SUBJECTS]))


_MAX_SUBJECTS = 50  # enough to point at; the sections of the report list the rest


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
    subjects: Mapping[str, Sequence[str]] | None = None,
    claim: Claim | None = None,
) -> tuple[Finding, ...]:
    """All findings for one model, most severe first. ``subjects`` names tensors and nodes the
    counts do not carry (keys ``unused``, ``embeddings``, ``shared``, ``generated``, ``initial``)."""
    named = subjects or {}

    def tensors(names: Sequence[str]) -> list[Subject]:
        return [Subject("tensor", n) for n in names]

    def nodes(names: Sequence[str]) -> list[Subject]:
        return [Subject("node", n) for n in names]

    found: list[Finding] = []
    if counts.wasted_params > 0:
        relations = sorted({g.relation for g in duplicates})
        found.append(
            finding(
                "AUD101",
                f"{human(counts.wasted_params)} parameters ({human_bytes(counts.wasted_bytes)}) "
                f"are stored more than once ({', '.join(relations)} copies in {len(duplicates)} group{'s' if len(duplicates) != 1 else ''}): "
                f"the file holds {human(counts.stored_params)} parameters but only {human(counts.unique_params)} "
                "are distinct. A naive count overstates this model.",
                {"wasted_params": counts.wasted_params, "wasted_bytes": counts.wasted_bytes,
                 "groups": len(duplicates)},  # fmt: skip
                tensors([t for group in duplicates for t in group.tensors]),
            )
        )
    ratio = counts.applied_per_unique
    if ratio is not None and ratio >= APPLIED_RATIO_WARNING:
        found.append(
            finding(
                "AUD102",
                f"Each unique parameter is applied {ratio:.1f} times per forward pass "
                f"({human(counts.applied_params or 0)} applied vs {human(counts.unique_params)} unique): "
                "weights applied more than once (shared tensors, loops, or stored copies of one tensor) make "
                "the parameter count understate compute and activation memory. "
                "Compare models by applied parameters or FLOPs, not by parameter count.",
                {"applied_params": counts.applied_params, "unique_params": counts.unique_params, "ratio": round(ratio, 3)},
                tensors(named.get("shared", ())),
            )
        )
    if counts.unused_params > 0:
        found.append(
            finding(
                "AUD103",
                f"{human(counts.unused_params)} stored parameters are never used by any node: "
                "they inflate the parameter count and the file but do nothing.",
                {"unused_params": counts.unused_params},
                tensors(named.get("unused", ())),
            )
        )
    if counts.unique_params and counts.embedding_params / counts.unique_params > EMBEDDING_SHARE_INFO:
        share = counts.embedding_params / counts.unique_params
        found.append(
            finding(
                "AUD104",
                f"{share:.0%} of the unique parameters are lookup tables (embeddings): each token reads one "
                "row, so the parameter count says little about compute.",
                {"embedding_params": counts.embedding_params, "share": round(share, 4)},
                tensors(named.get("embeddings", ())),
            )
        )
    unknown = [loop for loop in loops if loop.trip_count is None]
    if unknown:
        found.append(
            finding(
                "AUD105",
                f"{len(unknown)} loop(s) run a number of times known only at run time "
                f"({unknown[0].node}: {unknown[0].reason}), so applied parameters cannot be counted; "
                f"at least {human(counts.applied_params_lower_bound)} if each loop runs once.",
                {"loops": [loop.node for loop in unknown], "applied_params_lower_bound": counts.applied_params_lower_bound},
                nodes([loop.node for loop in unknown]),
            )
        )
    if counts.generated_params > 0:
        found.append(
            finding(
                "AUD106",
                f"{human(counts.generated_params)} weight values are generated at run time (ConstantOfShape, "
                "RandomNormal...) rather than stored: the stored parameter count understates the model.",
                {"generated_params": counts.generated_params},
                nodes(named.get("generated", ())),
            )
        )
    if shareable:
        saved = sum(g.saved_params for g in shareable)
        top = shareable[0]
        found.append(
            finding(
                "AUD107",
                f"{len(shareable)} group(s) of tensors hold nearly the same values (largest: {len(top.tensors)} tensors "
                f"within {top.distance:.2%} relative distance); sharing them would save {human(saved)} parameters. "
                "Sharing is not free compression: expect to fine-tune, and check quality.",
                {"groups": len(shareable), "saved_params": saved, "saved_bytes": sum(g.saved_bytes for g in shareable)},
                tensors([t for group in shareable for t in group.tensors]),
            )
        )
    if repeated:
        # A finding only where sharing looks plausible: the blocks' weights are already close.
        # Families of unrelated weights, or of weights whose distance cannot be measured (not
        # float), stay in the report's repeated-blocks section as structure, not waste.
        candidates = [r for r in repeated if r.sharing_plausible is True]
        if candidates:
            top_family = max(candidates, key=lambda r: r.saved_params_if_shared)
            unique = counts.unique_params
            saved = min(top_family.saved_params_if_shared, unique)
            share = saved / unique if unique else 0.0
            names = top_family.block_names
            where = f" ({names[0]} to {names[-1]})" if names else ""
            state = (f"those weights are already {top_family.distance_words} (relative distance "
                     f"{top_family.block_distance:.2g} between adjacent blocks, where unrelated random weights "
                     "sit near 1.4)")  # fmt: skip
            caveat = "Sharing still means fine-tuning; check quality."
            found.append(
                finding(
                    "AUD108",
                    f"{len(top_family.blocks)} repeated blocks{where} of {human(top_family.params_per_block)} "
                    f"parameters each have their own weights; {state}: one shared set (ALBERT-style) would save "
                    f"{human(saved)} parameters, {share:.0%} of the {human(unique)} unique. {caveat}",
                    {"families": len(candidates), "blocks": len(top_family.blocks),
                     "saved_params_if_shared": saved, "saved_share_of_unique": round(share, 4),
                     "unique_params": unique, "block_distance": top_family.block_distance,
                     "mean_distance": top_family.mean_distance, "distance_words": top_family.distance_words},
                    tensors([block[0] for block in top_family.blocks]),
                )
            )
    if branches:
        first = branches[0]
        sizes = " and ".join(human(b) if b is not None else "an unknown number of" for b in first.branches)
        found.append(
            finding(
                "AUD109",
                f"{len(branches)} If node(s) choose at run time between branches that apply different numbers of "
                f"parameters ({first.node}: {sizes}), so the applied count depends on the input: "
                f"between {human(counts.applied_params_lower_bound)} (lightest branches) and "
                + (f"{human(counts.applied_params)} (heaviest)." if counts.applied_params is not None else "an unknown number."),
                {"branches": [b.node for b in branches], "applied_params": counts.applied_params,
                 "applied_params_lower_bound": counts.applied_params_lower_bound},  # fmt: skip
                nodes([b.node for b in branches]),
            )
        )
    if counts.initial_value_tensors:
        found.append(
            finding(
                "AUD110",
                f"{counts.initial_value_tensors} parameter tensor(s) ({human(counts.initial_value_params)} parameters) hold "
                "one value in every element (ones, zeros: how layers are initialised). The model looks untrained or "
                "partly untrained; such tensors are not reported as copies, ties or near-duplicates.",
                {"tensors": counts.initial_value_tensors, "params": counts.initial_value_params},
                tensors(named.get("initial", ())),
            )
        )
    if experts:
        routers = sorted({bank.router for bank in experts})
        ks = sorted({f"{bank.k} of {bank.n}" if bank.k is not None else f"? of {bank.n}" for bank in experts})
        found.append(
            finding(
                "AUD111",
                f"Mixture of experts: {len(routers)} router(s) send each token to {', '.join(ks)} experts, so "
                f"{human(counts.active_params)} of the {human(counts.unique_params)} unique parameters are active per token. "
                "Compute follows the active count, memory the total: compare MoE models by both.",
                {"routers": len(routers), "expert_banks": len(experts), "active_params": counts.active_params,
                 "unique_params": counts.unique_params},  # fmt: skip
                nodes(routers),
            )
        )
    if unknown_roles:
        ops = sorted({op for item in unknown_roles for op in item.ops})
        uncounted = [item for item in unknown_roles if not item.counted]
        found.append(
            finding(
                "AUD112",
                f"{len(unknown_roles)} stored tensor(s) are read by ops the auditor does not know ({', '.join(ops[:5])}"
                + (", ..." if len(ops) > 5 else "")
                + "): float ones are counted as parameters, "
                + (f"{len(uncounted)} integer one(s) are not" if uncounted else "none is left out")
                + "; the counts may be off for these ops.",
                {"tensors": len(unknown_roles), "ops": ops, "uncounted": [item.tensor for item in uncounted]},
                tensors([item.tensor for item in unknown_roles]),
            )
        )
    found += _precision_findings(counts)
    if claim is not None and (mismatch := claim_finding(counts, claim)) is not None:
        found.append(mismatch)
    found.sort(key=lambda f: (-f.rank, f.code))
    return tuple(found)


_PRECISION_SHARE = 0.05  # the second precision's share of the stored bytes for AUD113


def _precision_findings(counts: Counts) -> list[Finding]:
    """AUD113: parameters stored at precisions of different bytes per parameter."""
    per_param = {
        dtype: item.bytes / item.params for dtype, item in counts.by_dtype.items() if item.params and item.bytes
    }
    if len(per_param) < 2 or max(per_param.values()) / min(per_param.values()) < 1.5:
        return []
    # a few float32 norms beside float16 or int8 weights is how such models are built: the counts
    # then mislead only where a minority precision holds a real share of the bytes
    if sorted(item.bytes for d, item in counts.by_dtype.items() if d in per_param)[-2] < _PRECISION_SHARE * counts.stored_bytes:
        return []
    share = {dtype: counts.by_dtype[dtype].params / max(counts.stored_params, 1) for dtype in per_param}
    # a few float scales beside int8 weights are how quantization looks: they still change bytes per parameter
    parts = ", ".join(
        f"{human(counts.by_dtype[d].params)} {d} ({per_param[d]:.3g} B each)"
        for d in sorted(per_param, key=lambda d: -counts.by_dtype[d].params)
    )
    return [
        finding(
            "AUD113",
            f"Parameters are stored at different precisions: {parts}. {human(counts.stored_params)} parameters take "
            f"{human_bytes(counts.stored_bytes)}; compare bytes and memory with another model, not counts.",
            {"bytes_per_param": {d: round(v, 4) for d, v in per_param.items()},
             "share_of_params": {d: round(v, 4) for d, v in share.items()}},  # fmt: skip
        )
    ]


@dataclass(frozen=True)
class Claim:
    """A stated parameter count (``--claim-params 12M``) and the precision it was stated with."""

    text: str
    value: float
    tolerance: float  # half a unit of the last digit given, relative: "12M" is 11.5M-12.5M


_SUFFIXES = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_claim(text: str) -> Claim:
    """'12M', '1.3B', '110000000', '85.6m' -> a Claim; ValueError when it is no count."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    suffix = cleaned[-1:].upper() if cleaned[-1:].isalpha() else ""
    number = cleaned[:-1] if suffix else cleaned
    if suffix not in _SUFFIXES or not number or not all(c.isdigit() or c == "." for c in number) or number.count(".") > 1:
        raise ValueError(f"'{text}' is not a parameter count such as 12M, 1.3B or 110000000")
    value = float(number) * _SUFFIXES[suffix]
    if value <= 0:
        raise ValueError(f"'{text}' is not a positive count")
    decimals = len(number.split(".")[1]) if "." in number else 0
    unit = 10.0 ** -decimals * _SUFFIXES[suffix] if suffix or decimals else 1.0
    return Claim(text, value, max(0.5 * unit / value, 0.005))


def claim_matches(counts: Counts, claim: Claim) -> list[str]:
    """The counts (stored, unique, applied, active) a stated figure matches at its precision."""
    candidates = {"stored": counts.stored_params, "unique": counts.unique_params,
                  "applied": counts.applied_params, "active": counts.active_params}  # fmt: skip
    return [n for n, v in candidates.items() if v and abs(v - claim.value) <= claim.tolerance * claim.value]


def claim_finding(counts: Counts, claim: Claim) -> Finding | None:
    """AUD114 when a stated figure is not the unique count: which count it matches, if any, and
    what the differences are made of."""
    candidates = {
        "stored": counts.stored_params,
        "unique": counts.unique_params,
        "applied": counts.applied_params,
        "active": counts.active_params,
    }
    matches = claim_matches(counts, claim)
    if "unique" in matches:
        return None
    made_of = []
    if counts.stored_params != counts.unique_params:
        made_of.append(f"stored - unique = {human(counts.stored_params - counts.unique_params)} (copies, unused)")
    if counts.applied_params is not None and counts.applied_params != counts.unique_params:
        made_of.append(f"applied - unique = {human(counts.applied_params - counts.unique_params)} (weights applied more than once)")
    if counts.active_params != counts.unique_params:
        made_of.append(f"unique - active = {human(counts.unique_params - counts.active_params)} (experts a token does not run)")
    if counts.embedding_params:
        made_of.append(f"embeddings {human(counts.embedding_params)}")
    named = ", ".join(f"{n} {human(v)}" for n, v in candidates.items() if v is not None)
    if matches:
        verdict = f"matches the {' and '.join(matches)} count, not the unique one"
    else:
        verdict = "matches none of the counts"
    return finding(
        "AUD114",
        f"The stated {claim.text} parameters {verdict} ({named})."
        + (f" The differences: {'; '.join(made_of)}." if made_of else ""),
        {"claim": claim.value, "claim_text": claim.text, "matches": matches,
         **{f"{n}_params": v for n, v in candidates.items()}},  # fmt: skip
    )


def export_finding(info: ExportInfo) -> Finding | None:
    """AUD116 when an export stores a parameter torch holds once more than once."""
    if not info.duplicated_by_export:
        return None
    broken = info.duplicated
    first = broken[0]
    return finding(
        "AUD116",
        f"The {info.exporter or 'ONNX'} export stores {len(broken)} parameter(s) torch holds once more than once "
        f"({' = '.join(first.names)}: {first.message}); {human(info.duplicated_params)} parameters "
        f"({human_bytes(info.duplicated_bytes)}) added.",
        {"exporter": info.exporter, "duplicated_params": info.duplicated_params, "duplicated_bytes": info.duplicated_bytes,
         "parameters": [{"names": list(p.names), "outcome": p.outcome, "tensors": [h.tensor for h in p.holders]}
                        for p in broken]},  # fmt: skip
        [Subject("tensor", h.tensor) for p in broken for h in p.holders],
    )
