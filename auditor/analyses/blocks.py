"""Repeated blocks: stretches of the model (a transformer's layers) that repeat with their own
weights, lined up position by position, and how close those weights are.

Where the names carry the module scopes the exporters write, blocks follow them: one block is
one indexed module (``encoder.layer.3``, ``model.layers.17``, ``features.24``). Scopes come from
a parameter's own name (``bert.encoder.layer.0.attention.self.query.bias``), else from the name
of the node applying it (the legacy exporter: ``/bert/encoder/layer.0/attention/self/query/MatMul``),
else from the nearest named parameter around that node (the dynamo exporter names nodes
``node_MatMul_12`` and stores pre-transposed weights as ``val_51``, but keeps the module path in
the names of the biases and norms around them). Indexed modules of one parent whose parameters
have the same ops, slots, shapes and dtypes in the same order form a family.

Where names carry no scopes, each parameter is labelled by the Weisfeiler-Lehman label (two
rounds) of the op that first applies it, plus its input slot, shape and dtype. In execution order
these labels form a sequence; a block repeated k times is a stretch of period p repeated k times
(a tandem repeat), found with one vectorised comparison per candidate period. Such a structural
match needs more evidence: at least ``MIN_STRUCTURAL_BLOCKS`` blocks, and block boundaries moved
so that they do not split the parameters of one module or node (``conv2d_108.w_0`` stays with
``conv2d_108.b_0``).

Either way a family is kept only when its blocks hold at least ``MIN_SHARE`` of the parameters:
smaller repeats (one layer's K and V projections, a detector's box and class heads) are not what
sharing weights across depth is about.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from auditor.analyses.fingerprint import Fingerprint
from auditor.graph import ModelGraph, TensorInfo
from auditor.roles import Role

_MAX_FAMILIES = 8
_WL_ITERATIONS = 2

# A family's blocks together must hold at least this share of the unique parameters. A
# transformer's layer stack holds 50-95% of them, a CNN stage 10-40%; one layer's projections
# or a detector's two heads hold a few percent, and sharing them could not change the model's
# size class anyway.
MIN_SHARE = 0.10
# Names delimit the blocks when parameters holding at least this share of the elements carry
# an indexed scope; otherwise the structural search runs, and it needs this many blocks (two
# structurally equal stretches are common by chance: K and V, box and class heads).
SCOPED_SHARE = 0.5
MIN_STRUCTURAL_BLOCKS = 3

# Bands of the relative Frobenius distance d = |A - B| / max(|A|, |B|) between two blocks'
# weights (per position, averaged over the blocks' elements). Independent random tensors of
# equal norm sit at d = sqrt(2) = 1.41 (their difference adds the two norms in quadrature);
# with norms in ratio r < 1 at sqrt(1 + r^2), so unrelated weights of unequal norm can come as
# near as 1.1-1.2, and a cosine similarity under UNRELATED_COSINE also reads as unrelated.
# AUD108 fires only below CLOSE: well under the random level, where one shared set is a
# plausible starting point for fine-tuning.
NEARLY_IDENTICAL = 0.05  # within 5%: one set of weights with small perturbations
CLOSE = 0.5  # cosine >= ~0.87 at equal norms: sharing plausible after fine-tuning
UNRELATED = 1.2  # from here up: as far apart as independent random weights
UNRELATED_COSINE = 0.2
DISTANCE_WORDS = {
    "nearly identical": "nearly identical",
    "close": "close",
    "partly related": "partly related",
    "unrelated": "as far apart as unrelated random weights",
    "unknown": "not measured (the weights are not float)",
}

_INDEX = re.compile(r"[0-9]+")
_NEIGHBOURHOOD = 6  # hops searched around a node for a named parameter
_SEARCH_LIMIT = 256  # nodes visited per search at most
_CORE = 0.9  # share of a module's elements that must line up with a family's signature


@dataclass(frozen=True)
class BlockFamily:
    """k blocks; ``blocks[j][t]`` is the tensor at position t of block j; ``names[j]`` the scope
    of block j (``encoder.layer.3``) where names delimit the blocks, else empty."""

    blocks: tuple[tuple[str, ...], ...]
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PositionDistance:
    position: int
    tensor: str  # the tensor at this position in the first block
    adjacent: tuple[float | None, ...]  # relative distance between blocks j and j+1 (None: not float)


@dataclass(frozen=True)
class RepeatedBlocks:
    """A family of repeated blocks, what sharing their weights would save, and how far apart
    their weights are. Parameters are counted once per distinct tensor (copies merged)."""

    blocks: tuple[tuple[str, ...], ...]
    params_per_block: int
    bytes_per_block: int
    saved_params_if_shared: int  # one set of weights for all blocks (ALBERT-style); <= unique
    saved_bytes_if_shared: int
    saved_params_if_pairs_shared: int  # blocks 0+1, 2+3... share one set per pair
    saved_bytes_if_pairs_shared: int
    mean_distance: float | None  # mean over positions and adjacent pairs
    boundary_distances: tuple[float | None, ...]  # mean over positions between blocks j and j+1
    distances: tuple[PositionDistance, ...]
    block_names: tuple[str, ...] = ()  # each block's module scope ("encoder.layer.3"); () if found by structure
    delimited_by: str = "structure"  # "scope": blocks are named modules; "structure": op-graph repeat only
    block_distances: tuple[float | None, ...] = ()  # blocks j, j+1: relative Frobenius distance, mean over elements
    block_distance: float | None = None  # mean of block_distances
    distance_words: str = DISTANCE_WORDS["unknown"]  # block_distance in words (see the bands above)
    share_of_unique: float = 0.0  # the family's distinct parameters (all blocks) / unique parameters
    saved_share_of_unique: float = 0.0  # saved_params_if_shared / unique parameters
    sharing_plausible: bool | None = None  # weights already close (True), not (False), not measurable (None)


def distance_band(distance: float | None, cosine: float | None = None) -> str:
    """The band of a relative distance between two blocks' weights: a key of DISTANCE_WORDS."""
    if distance is None:
        return "unknown"
    if distance < NEARLY_IDENTICAL:
        return "nearly identical"
    if distance < CLOSE:
        return "close"
    if distance >= UNRELATED or (cosine is not None and cosine < UNRELATED_COSINE):
        return "unrelated"
    return "partly related"


# ---- the parameters in execution order ------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    tensor: str
    node: str  # the node first applying it
    loose: str  # op, input slot, dtype and shape: what must match position by position


def _source_parameter(model: ModelGraph, value: str, params: Mapping[str, TensorInfo]) -> str | None:
    """The parameter a value is a view of (Transpose(W), Cast(W)...), if any."""
    for _ in range(16):
        if value in params:
            return value
        producer = model.producer_of.get(value)
        if producer is None:
            return None
        node = model.nodes[producer]
        if not node.inputs or node.role(0) not in (Role.VIEW, Role.DEQUANTIZE):
            return None
        value = node.inputs[0]
    return None


def _parameter_sequence(model: ModelGraph, by_id: Mapping[str, TensorInfo]) -> list[_Entry]:
    """Each parameter once, where the main graph first applies it, in execution order."""
    sequence: list[_Entry] = []
    seen: set[str] = set()
    producer_of, nodes = model.producer_of, model.nodes
    for node in model.nodes_by_scope.get("", ()):
        if node.roles and node.role(0) in (Role.VIEW, Role.DEQUANTIZE):
            continue
        for index, value in enumerate(node.inputs):
            if value in by_id:
                tensor: str | None = value
            else:  # most inputs are activations: look further only behind a view
                producer = producer_of.get(value)
                if producer is None or nodes[producer].role(0) not in (Role.VIEW, Role.DEQUANTIZE):
                    continue
                tensor = _source_parameter(model, value, by_id)
            if tensor is not None and tensor not in seen:
                seen.add(tensor)
                t = by_id[tensor]
                sequence.append(_Entry(tensor, node.id, f"{node.op_type}/{index}/{t.dtype}{list(t.shape)}"))
    return sequence


# ---- scopes from names ----------------------------------------------------------------------


def _tensor_scope(name: str) -> tuple[str, ...]:
    """'bert.encoder.layer.0.attention.self.query.bias' -> (bert, encoder, layer, 0, attention,
    self, query); () for names that are no module path ('onnx::MatMul_334', 'val_51', 'W3')."""
    if "." not in name or "/" in name or ":" in name:
        return ()
    return tuple(part for part in name.split(".")[:-1] if part)


def _node_scope(node_id: str) -> tuple[str, ...]:
    """'/bert/encoder/layer.0/attention/self/query/MatMul' -> (bert, encoder, layer, 0,
    attention, self, query): the legacy exporter's scope, less the op's own name."""
    if "/" not in node_id:
        return ()
    return tuple(part for piece in node_id.rsplit("/", 1)[0].split("/") for part in piece.split(".") if part)


def _indexed(scope: tuple[str, ...]) -> list[int]:
    """Positions of the index components of a scope (the 3 of layer.3); counters glued to a
    name (conv2d_108, dense_3) number ops, not layers, and are not indices."""
    return [i for i, part in enumerate(scope) if _INDEX.fullmatch(part)]


def _named_nodes(model: ModelGraph, by_id: Mapping[str, TensorInfo]) -> dict[str, tuple[str, ...]]:
    """Main-graph nodes that carry a scope: their own (legacy names) or that of a named
    parameter they read."""
    named: dict[str, tuple[str, ...]] = {}
    for node in model.nodes_by_scope.get("", ()):
        scope = _node_scope(node.id)
        if not scope:
            for value in node.inputs:
                tensor = _source_parameter(model, value, by_id)
                if tensor is not None and (scope := _tensor_scope(by_id[tensor].name)):
                    break
        if scope:
            named[node.id] = scope
    return named


def _search(model: ModelGraph, start: str, named: Mapping[str, tuple[str, ...]], upstream: bool) -> tuple[str, ...]:
    """The scope of the nearest named node upstream or downstream of ``start``; () if none
    within ``_NEIGHBOURHOOD`` hops."""
    seen = {start}
    frontier = deque([(start, 0)])
    while frontier and len(seen) < _SEARCH_LIMIT:
        node_id, hops = frontier.popleft()
        if hops >= _NEIGHBOURHOOD:
            continue
        node = model.nodes[node_id]
        if upstream:
            nexts = [p for v in node.inputs if (p := model.producer_of.get(v)) is not None]
        else:
            nexts = [use.node for v in node.outputs for use in model.consumers.get(v, ())]
        for other in nexts:
            if other in seen or model.nodes[other].scope != "":
                continue
            if other in named:
                return named[other]
            seen.add(other)
            frontier.append((other, hops + 1))
    return ()


def _nearest_scope(model: ModelGraph, node_id: str, named: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The scope of an unnamed parameter's node from the named ones around it: the node its
    output meets at once (a Linear's MatMul, then the Add of its named bias), else the nearest
    upstream (a bias-free projection follows its own layer's norm; the next layer's norm may sit
    closer downstream of a block's last projection), else the nearest downstream."""
    for value in model.nodes[node_id].outputs:
        for use in model.consumers.get(value, ()):
            if use.node in named and model.nodes[use.node].scope == "":
                return named[use.node]
    return _search(model, node_id, named, upstream=True) or _search(model, node_id, named, upstream=False)


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The longest common prefix of two scopes."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _scopes(model: ModelGraph, sequence: Sequence[_Entry], by_id: Mapping[str, TensorInfo]) -> list[tuple[str, ...]]:
    """The module scope of each parameter in the sequence; () where names tell nothing. An
    unnamed parameter takes the scope of the named ones around its node (``_nearest_scope``),
    unless the named parameters just before and after it in execution order agree on an indexed
    scope that this one is not in: a decoder's cross-attention K and V read the encoder's
    output, whose norm is their nearest named node, yet run inside ``decoder.block.N``."""
    own = [_tensor_scope(by_id[e.tensor].name) or _node_scope(e.node) for e in sequence]
    if not any(_indexed(scope) for scope in own) and not any(
        "/" in node.id and _indexed(_node_scope(node.id)) for node in model.nodes_by_scope.get("", ())
    ):
        return own  # no indexed scope anywhere: nothing to search for
    named = _named_nodes(model, by_id)
    before: list[tuple[str, ...]] = []
    last: tuple[str, ...] = ()
    for scope in own:
        before.append(last)
        last = scope or last
    after: list[tuple[str, ...]] = [()] * len(own)
    last = ()
    for i in range(len(own) - 1, -1, -1):
        after[i] = last
        last = own[i] or last
    scopes = []
    for entry, scope, previous, following in zip(sequence, own, before, after):
        if not scope:
            scope = _nearest_scope(model, entry.node, named)
            bracket = _common(previous, following)
            if _indexed(bracket) and scope[: len(bracket)] != bracket:
                scope = bracket
        scopes.append(scope)
    return scopes


def _subsequence(template: Sequence[str], members: Sequence[int], sequence: Sequence[_Entry]) -> list[int] | None:
    """The members whose signatures spell ``template`` in order (first match), or None."""
    matched: list[int] = []
    for i in members:
        if len(matched) < len(template) and sequence[i].loose == template[len(matched)]:
            matched.append(i)
    return matched if len(matched) == len(template) else None


def _scoped_families(
    positions: Sequence[int], scopes: Sequence[tuple[str, ...]], sequence: Sequence[_Entry],
    sizes: Sequence[int], level: int = 0,
) -> list[tuple[tuple[str, ...], list[list[int]]]]:
    """Families of indexed modules: at index component ``level`` of the scopes, modules of one
    parent with equal signatures (ops, slots, shapes and dtypes in order). A module with a few
    extra parameters (T5's first block and its relative-position bias) joins a family whose
    signature it contains, with those extras left out, when the rest holds ``_CORE`` of its
    elements. A parent whose modules form no family is searched one index deeper (a wrapper such
    as sentence-transformers' ``0.auto_model.encoder.layer.N``)."""
    parents: dict[tuple[str, ...], dict[str, list[int]]] = {}
    for i in positions:
        marks = _indexed(scopes[i])
        if len(marks) > level:
            cut = marks[level]
            parents.setdefault(scopes[i][:cut], {}).setdefault(scopes[i][cut], []).append(i)
    found: list[tuple[tuple[str, ...], list[list[int]]]] = []
    for parent, modules in parents.items():
        groups: dict[tuple[str, ...], list[tuple[str, list[int]]]] = {}
        for index, members in modules.items():
            groups.setdefault(tuple(sequence[i].loose for i in members), []).append((index, members))
        # lone modules, longest first, join the largest group whose signature they contain
        for signature in sorted((s for s, g in groups.items() if len(g) == 1), key=lambda s: -len(s)):
            if len(groups[signature]) != 1:  # a longer module joined it meanwhile
                continue
            index, members = groups[signature][0]
            for template in sorted(groups, key=lambda s: (-len(groups[s]), len(s))):
                if template == signature or len(template) >= len(signature) or not groups[template]:
                    continue
                core = _subsequence(template, members, sequence)
                if core is not None and sum(sizes[i] for i in core) >= _CORE * sum(sizes[i] for i in members):
                    groups[template].append((index, core))
                    groups[signature] = []
                    break
        families = [g for g in groups.values() if len(g) >= 2]
        for group in families:
            group.sort(key=lambda item: int(item[0]))
            found.append((tuple(".".join((*parent, index)) for index, _ in group), [members for _, members in group]))
        if not families:
            found += _scoped_families([i for members in modules.values() for i in members], scopes, sequence, sizes, level + 1)
    return found


# ---- structure alone ------------------------------------------------------------------------


def _op_labels(model: ModelGraph, params: Mapping[str, TensorInfo]) -> dict[str, int]:
    """Weisfeiler-Lehman labels of the main graph's ops: an op's own label (type, attributes,
    weight slots and shapes), refined ``_WL_ITERATIONS`` times with the sorted labels of its
    producers and consumers. Labels are interned to small ints, so equal neighbourhoods get equal
    labels within one run; this is networkx's subgraph hashing without a digest per node, which
    cost most of the time on 100k-node graphs."""
    nodes = model.nodes_by_scope.get("", ())
    intern: dict[object, int] = {}
    labels: list[int] = []
    for node in nodes:
        weights = tuple((i, params[v].dtype, params[v].shape) for i, v in enumerate(node.inputs) if v in params)
        attrs = (
            ",".join(f"{k}={v}" for k, v in sorted(node.attrs.items()) if isinstance(v, (int, float, str, list)))
            if node.attrs else ""
        )  # fmt: skip
        labels.append(intern.setdefault((node.op_type, attrs, weights), len(intern)))
    # neighbours by position in ``nodes`` (ints, not ids: this loop runs per node per iteration)
    position = {node.id: i for i, node in enumerate(nodes)}
    producers: list[list[int]] = [[] for _ in nodes]
    consumers: list[list[int]] = [[] for _ in nodes]
    producer_of = model.producer_of
    for i, node in enumerate(nodes):
        for value in node.inputs:
            producer = position.get(producer_of.get(value, ""), -1) if value else -1
            if producer >= 0:
                producers[i].append(producer)
                consumers[producer].append(i)
    for _ in range(_WL_ITERATIONS):
        labels = [
            intern.setdefault(
                (own, tuple(sorted([labels[p] for p in before])), tuple(sorted([labels[c] for c in after]))), len(intern)
            )
            for own, before, after in zip(labels, producers, consumers)
        ]
    return {node.id: label for node, label in zip(nodes, labels)}


_CANDIDATE_PERIODS = 16


def _candidate_periods(codes: np.ndarray, weights: np.ndarray, free: np.ndarray) -> list[int]:
    """Periods worth trying: in a block repeated k times, each position's label recurs one period
    later, so the period is among the distances to the next equal label that carry the most
    weight. Trying those few instead of every period up to n/2 keeps the search linear."""
    following: dict[int, int] = {}
    weight_at: dict[int, float] = {}
    for i in range(len(codes) - 1, -1, -1):
        code = int(codes[i])
        later = following.get(code)
        if later is not None and free[i] and free[later]:
            distance = later - i
            if distance <= len(codes) // 2:
                weight_at[distance] = weight_at.get(distance, 0.0) + float(weights[i])
        following[code] = i
    return sorted(sorted(weight_at, key=lambda d: (-weight_at[d], d))[:_CANDIDATE_PERIODS])


def _best_repeat(codes: np.ndarray, weights: np.ndarray, free: np.ndarray) -> tuple[int, int, int] | None:
    """(start, period, count) of the tandem repeat saving most weight among free positions."""
    best: tuple[float, int, int, int] | None = None
    prefix = np.concatenate([[0.0], np.cumsum(weights)])
    for period in _candidate_periods(codes, weights, free):
        same = (codes[:-period] == codes[period:]) & free[:-period] & free[period:]
        if not same.any():
            continue
        padded = np.concatenate([[False], same, [False]])
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        for start, stop in zip(edges[::2], edges[1::2]):
            length = stop - start
            if length < period:
                continue
            count = (length + period) // period
            saved = (prefix[start + period] - prefix[start]) * (count - 1)
            if best is None or saved > best[0]:
                best = (saved, int(start), period, count)
    return None if best is None else best[1:]


def _owner(entry: _Entry, by_id: Mapping[str, TensorInfo]) -> str:
    """What a parameter belongs to, for block boundaries: its module (the name less its last
    part: conv2d_108 for conv2d_108.w_0), else the node applying it."""
    name = by_id[entry.tensor].name
    return name.rsplit(".", 1)[0] if "." in name and "/" not in name else f"node:{entry.node}"


def _structural_families(model: ModelGraph, sequence: Sequence[_Entry], by_id: Mapping[str, TensorInfo]) -> list[list[list[int]]]:
    """Tandem repeats of the labelled sequence, boundaries moved off the middle of a module."""
    labels = _op_labels(model, by_id)
    vocabulary: dict[str, int] = {}
    codes = np.array([vocabulary.setdefault(f"{labels[e.node]}/{e.loose}", len(vocabulary)) for e in sequence])
    loose = [e.loose for e in sequence]
    owners = [_owner(e, by_id) for e in sequence]
    weights = np.array([by_id[e.tensor].numel for e in sequence], dtype=np.float64)
    free = np.ones(len(sequence), dtype=bool)
    total = weights.sum()
    found: list[list[list[int]]] = []
    for _ in range(_MAX_FAMILIES * 2):
        if len(found) == _MAX_FAMILIES:
            break
        repeat = _best_repeat(codes, weights, free)
        if repeat is None:
            break
        start, period, count = repeat
        if 2 * weights[start : start + period].sum() * (count - 1) < MIN_SHARE * total:
            break  # the best repeat left holds too little; k blocks hold at most twice their saving
        # The first and last blocks sit next to the graph's input and output, so their
        # neighbourhood hashes differ; extend the repeat over them on op, slot and shape alone.
        stop = start + period * count
        while start > 0 and free[start - 1] and loose[start - 1] == loose[start - 1 + period]:
            start -= 1
        while stop < len(loose) and free[stop] and loose[stop] == loose[stop - period]:
            stop += 1
        free[start:stop] = False
        # A repeat may begin anywhere in its period; begin it where a module or node begins, and
        # keep as many whole blocks as fit.
        starts = [s for s in range(start, start + period) if s == 0 or owners[s] != owners[s - 1]]
        if starts:
            start = max(starts, key=lambda s: ((stop - s) // period, -s))
        count = (stop - start) // period
        if count >= MIN_STRUCTURAL_BLOCKS:
            found.append([list(range(start + j * period, start + (j + 1) * period)) for j in range(count)])
    return found


def find_block_families(model: ModelGraph, params: Sequence[TensorInfo]) -> tuple[BlockFamily, ...]:
    """Families of repeated blocks in the main graph, each block a tuple of distinct tensors; by
    module scope where names carry one, else by structure; each holding at least ``MIN_SHARE``
    of the stored parameters (checked again on unique parameters by ``describe_families``)."""
    by_id = {t.id: t for t in params}
    if len(by_id) < 2:
        return ()
    sequence = _parameter_sequence(model, by_id)
    if len(sequence) < 2:
        return ()
    scopes = _scopes(model, sequence, by_id)
    sizes = [by_id[e.tensor].numel for e in sequence]
    scoped = sum(n for n, scope in zip(sizes, scopes) if _indexed(scope))
    candidates: list[tuple[tuple[str, ...], list[list[int]]]]
    if scoped >= SCOPED_SHARE * sum(sizes):
        candidates = _scoped_families(range(len(sequence)), scopes, sequence, sizes)
    else:
        candidates = [((), blocks) for blocks in _structural_families(model, sequence, by_id)]
    total = sum(t.numel for t in by_id.values())
    families = [
        BlockFamily(tuple(tuple(sequence[i].tensor for i in block) for block in blocks), names)
        for names, blocks in candidates
        if sum(sizes[i] for block in blocks for i in block) >= MIN_SHARE * total
    ]
    families.sort(key=lambda f: -sum(by_id[t].numel for t in f.blocks[0]) * (len(f.blocks) - 1))
    return tuple(families[:_MAX_FAMILIES])


# ---- savings and distances ------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    """``np.mean(values)``, bit for bit, without its per-call cost on the short lists it gets once
    per block boundary (50,000 of them in a large export): numpy sums fewer than 8 values in
    order from 0, as ``sum`` does."""
    return sum(values) / len(values) if len(values) < 8 else float(np.mean(values))


def _distinct(
    blocks: Sequence[Sequence[str]], by_id: Mapping[str, TensorInfo], copy_head: Mapping[str, str]
) -> tuple[int, int]:
    """Params and bytes of the distinct tensors in ``blocks`` (copies of one tensor count once)."""
    heads = {copy_head.get(t, t) for block in blocks for t in block}
    return sum(by_id[h].stored_elements for h in heads), sum(by_id[h].nbytes for h in heads)


def describe_families(
    families: Sequence[BlockFamily],
    params: Sequence[TensorInfo],
    prints: Mapping[str, Fingerprint],
    dots: Mapping[tuple[str, str], float],
    copy_head: Mapping[str, str],
) -> tuple[RepeatedBlocks, ...]:
    """Savings, shares and distances of each family. Sharing saves the family's distinct
    parameters less those of the blocks kept, so it never exceeds the unique count: tensors
    already tied or stored as copies of one another save nothing more. A family with nothing
    to save, or under ``MIN_SHARE`` of the unique parameters, is dropped."""
    by_id = {t.id: t for t in params}
    unique = sum(t.stored_elements for t in params if copy_head.get(t.id, t.id) == t.id)
    described = []
    for family in families:
        blocks = family.blocks
        first = blocks[0]
        k = len(blocks)
        family_params, family_bytes = _distinct(blocks, by_id, copy_head)
        per_block, per_block_bytes = _distinct([first], by_id, copy_head)
        kept = [blocks[j] for j in range(0, k, 2)]  # pairs (0, 1), (2, 3)...: the first of each kept
        kept_params, kept_bytes = _distinct(kept, by_id, copy_head)
        saved_params = min(family_params - per_block, max(unique - per_block, 0))
        if saved_params <= 0 or family_params < MIN_SHARE * unique:
            continue
        positions = []
        for t, tensor in enumerate(first):
            adjacent: list[float | None] = []
            for j in range(k - 1):
                a, b = blocks[j][t], blocks[j + 1][t]
                fa, fb = prints.get(a), prints.get(b)
                if fa is None or fb is None or (a, b) not in dots:
                    adjacent.append(None)
                    continue
                squared = max(fa.sumsq + fb.sumsq - 2 * dots[(a, b)], 0.0)
                scale = math.sqrt(max(fa.sumsq, fb.sumsq))
                adjacent.append(round(math.sqrt(squared) / scale, 6) if scale else 0.0)
            positions.append(PositionDistance(t, tensor, tuple(adjacent)))
        finite = [d for p in positions for d in p.adjacent if d is not None]
        boundaries = []
        for j in range(k - 1):
            known = [d for p in positions if (d := p.adjacent[j]) is not None]
            boundaries.append(round(_mean(known), 6) if known else None)
        whole, cosines = _block_distances(blocks, prints, dots)
        measured = [d for d in whole if d is not None]
        block_distance = round(float(np.mean(measured)), 6) if measured else None
        cosine = float(np.mean(cosines)) if cosines else None
        band = distance_band(block_distance, cosine)
        described.append(
            RepeatedBlocks(
                blocks=blocks,
                params_per_block=per_block,
                bytes_per_block=per_block_bytes,
                saved_params_if_shared=saved_params,
                saved_bytes_if_shared=max(family_bytes - per_block_bytes, 0),
                saved_params_if_pairs_shared=min(family_params - kept_params, saved_params),
                saved_bytes_if_pairs_shared=max(family_bytes - kept_bytes, 0),
                mean_distance=round(float(np.mean(finite)), 6) if finite else None,
                boundary_distances=tuple(boundaries),
                distances=tuple(positions),
                block_names=family.names,
                delimited_by="scope" if family.names else "structure",
                block_distances=whole,
                block_distance=block_distance,
                distance_words=DISTANCE_WORDS[band],
                share_of_unique=round(family_params / unique, 6) if unique else 0.0,
                saved_share_of_unique=round(saved_params / unique, 6) if unique else 0.0,
                sharing_plausible=None if band == "unknown" else band in ("nearly identical", "close"),
            )
        )
    described.sort(key=lambda r: -r.saved_params_if_shared)
    return tuple(described)


def _block_distances(
    blocks: Sequence[Sequence[str]], prints: Mapping[str, Fingerprint], dots: Mapping[tuple[str, str], float]
) -> tuple[tuple[float | None, ...], list[float]]:
    """How far apart adjacent blocks' weights are: the relative Frobenius distance of each
    position (the float ones both have), averaged over the blocks' elements; and the cosine
    similarities, averaged alike. Weighting by elements, not by norm, keeps a norm's scale
    vector (values near 1: a large norm in few elements, and alike in every layer) from
    outweighing the matrices that hold the parameters."""
    distances: list[float | None] = []
    cosines: list[float] = []
    for j in range(len(blocks) - 1):
        weight = distance = cosine = 0.0
        for a, b in zip(blocks[j], blocks[j + 1]):
            fa, fb = prints.get(a), prints.get(b)
            if fa is None or fb is None or (a, b) not in dots:
                continue
            scale = math.sqrt(max(fa.sumsq, fb.sumsq))
            n = float(fa.numel)
            weight += n
            distance += n * (math.sqrt(max(fa.sumsq + fb.sumsq - 2 * dots[(a, b)], 0.0)) / scale if scale else 0.0)
            product = math.sqrt(fa.sumsq * fb.sumsq)
            cosine += n * (dots[(a, b)] / product if product else 1.0)
        if not weight:
            distances.append(None)
            continue
        distances.append(round(distance / weight, 6))
        cosines.append(cosine / weight)
    return tuple(distances), cosines
