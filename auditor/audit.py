"""Load -> analyses -> findings -> report: the whole pipeline for one model."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import re
from typing import Iterator

from auditor.analyses.blocks import describe_families, find_block_families
from auditor.analyses.compute import compute_cost, routed_tokens
from auditor.analyses.copies import digest_edges, group_copies
from auditor.analyses.counts import count_parameters
from auditor.analyses.embeddings import embedding_tables
from auditor.analyses.experts import expert_banks
from auditor.analyses.fingerprint import fingerprint_all, fingerprint_array, worth_reading
from auditor.analyses.generated import generated_weights
from auditor.analyses.initial_values import initial_value_tensors
from auditor.analyses.memory import static_memory, value_bytes
from auditor.analyses.near import DEFAULT_TOLERANCE, near_duplicates
from auditor.analyses.parameters import parameter_tensors, unknown_roles
from auditor.analyses.sharing import shared_tensors
from auditor.analyses.transforms import dequantized_weights, transformed_edges
from auditor.analyses.usage import AppliedTotals, applied_totals, count_applications, loops, reads_of
from auditor.errors import AuditError
from auditor.findings import Claim, claim_matches, evaluate, export_finding
from auditor.graph import ModelGraph, ShapeRequest
from auditor.load.any import load_model
from auditor.measure import InputSpec
from auditor.progress import Progress
from auditor.roles import Role
from auditor.report.model import ClaimCheck, ModelSummary, Report, TensorFacts


def analyse(
    model: ModelGraph, near: float | None = None, progress: Progress | None = None, claim: Claim | None = None
) -> Report:
    """Run every analysis on a loaded model (``claim``: a stated parameter count to check)."""
    tolerance = DEFAULT_TOLERANCE if near is None else near
    _stage(progress, "counting parameters and their uses")
    params = parameter_tensors(model)
    loop_table = loops(model)
    applications = {
        t.id: count_applications(
            model, reads_of(model, t.id, t.shape, stored=t.stored_elements), loop_table, t.shape, t.stored_elements
        )
        for t in params
    }
    generated = generated_weights(model)
    banks = expert_banks(params, applications)
    if model.has_graph:
        totals = applied_totals(
            model,
            [read for apps in applications.values() for read in apps.reads] + [r for g in generated for r in g.reads],
            loop_table,
        )
    else:  # weights alone say nothing of how often each is applied
        totals = AppliedTotals(applied=None, lower_bound=0, branches=())

    _stage(progress, "looking for repeated blocks")
    families = find_block_families(model, params)
    dequantized = dequantized_weights(model, params)
    lockstep_ids = [[block[t] for block in f.blocks] for f in families for t in range(len(f.blocks[0]))]
    in_lockstep = {tid for group in lockstep_ids for tid in group}
    by_id = {t.id: t for t in params}
    readable = worth_reading(params, [d.numel for d in dequantized])
    if progress is not None:
        readable_ids = {t.id for t in readable}
        progress.start(sum(t.nbytes for t in readable) + sum(by_id[t].nbytes for t in in_lockstep - readable_ids))
    prints, dots = fingerprint_all(
        [t for t in readable if t.id not in in_lockstep],
        [[by_id[tid] for tid in group] for group in lockstep_ids],
        progress,
    )
    initial = initial_value_tensors(params, prints)
    # tensors of initial values are never copies of one another: equal by construction, not by design
    candidates = [t for t in params if t.id not in initial]
    dequantized_prints = {}
    for weight in dequantized:  # one dequantized array in memory at a time
        if weight.source in initial:
            continue
        values = weight.compute()
        if values is not None:
            dequantized_prints[weight.source] = fingerprint_array(weight.source, values)

    _stage(progress, "finding copies and near-duplicates")
    edges = digest_edges(candidates, {tid: fp.digest for tid, fp in prints.items()})
    edges += transformed_edges(candidates, prints, edges, dequantized, dequantized_prints)
    unused = (
        frozenset(t.id for t in params if not applications[t.id].reads and not model.reaches_output(t.id))
        if model.has_graph
        else frozenset()  # without a graph nothing says a weight is unused
    )
    duplicates = group_copies(params, edges, unused)
    copy_head = {member: group.tensors[0] for group in duplicates for member in group.tensors}

    counts = count_parameters(
        params, duplicates, applications, totals, embedding_tables(applications), unused,
        sum(g.numel for g in generated), initial, banks,
    )  # fmt: skip
    absent: tuple[str, ...] = () if model.has_graph else GRAPH_SECTIONS
    ckpt = model.checkpoint
    if ckpt is not None and ckpt.applied_params is not None and ckpt.architecture_params == counts.unique_params:
        # the architecture built from config.json holds exactly these parameters: its forward's count holds
        counts = dataclasses.replace(counts, applied_params=ckpt.applied_params, applied_params_lower_bound=ckpt.applied_params)
        absent = tuple(section for section in absent if not section.startswith("applied"))
    shareable = near_duplicates(candidates, prints, tolerance, copy_head)
    repeated = describe_families(families, params, prints, dots, copy_head)
    unknown = unknown_roles(model, params)
    _stage(progress, "costing compute and memory")
    compute = compute_cost(model, loop_table, [f.blocks for f in families]) if model.has_graph else None
    memory = static_memory(
        model, counts.unique_bytes, {d: c.bytes for d, c in counts.by_dtype.items()},
        sum(value_bytes(model, model.nodes[g.node].outputs[0], {}) or 4 * g.numel for g in generated),
        routed_tokens(model),
    ) if model.has_graph else None  # fmt: skip
    summary = ModelSummary(
        path=model.path,
        file_size=model.file_size,
        producer=model.producer,
        producer_version=model.producer_version,
        ir_version=model.ir_version,
        opsets=dict(model.opsets),
        external_data_bytes=model.external_data_bytes,
        nodes=len(model.nodes),
        stored_tensors=len(model.tensors),
        subgraphs=sum(1 for s in model.scopes.values() if s.kind == "subgraph"),
        functions=sum(1 for s in model.scopes.values() if s.kind == "function"),
    )
    loop_infos = tuple(loop_table.values())
    shared = shared_tensors(model, params, applications, initial)
    findings = evaluate(
        counts, duplicates, loop_infos, shareable, repeated, totals.branches, banks, unknown,
        subjects={
            "unused": sorted(unused),
            "embeddings": sorted(embedding_tables(applications)),
            "shared": [s.tensor for s in shared],
            "generated": [g.node for g in generated],
            "initial": sorted(initial),
        },
        claim=claim,
    )  # fmt: skip
    named = {s.tensor for s in shared} | {t for g in duplicates for t in g.tensors}
    named |= {t for g in shareable for t in g.tensors} | {s.name for f in findings for s in f.subjects if s.kind == "tensor"}
    return Report(
        model=summary,
        counts=counts,
        shared=shared,
        duplicates=duplicates,
        loops=loop_infos,
        findings=findings,
        tensors={tid: tensor_facts(model, tid) for tid in sorted(named) if tid in model.tensors},
        source=model.source,
        not_parameters=model.not_parameters,
        checkpoint=model.checkpoint,
        absent=absent,
        claim=None if claim is None else ClaimCheck(claim.text, claim.value, tuple(claim_matches(counts, claim))),
        shareable=shareable,
        repeated_blocks=repeated,
        branches=totals.branches,
        experts=banks,
        unknown_roles=unknown,
        shapes=model.shape_info,
        compute=compute,
        memory=memory,
    )


def _stage(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress.stage(text)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: loading and analysing create millions of small
    long-lived objects (nodes, uses, reads), and each collection would walk all of them again,
    which made the audit grow faster than the graph. The work creates no large garbage cycles;
    reference counting still frees everything else at once."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# What only a graph can tell: absent from the audit of a checkpoint of weights alone.
GRAPH_SECTIONS = (
    "applied parameters (how often each weight is applied)",
    "embeddings (lookup tables are known from how they are read)",
    "compute (MACs, FLOPs)",
    "memory (activations, onnxruntime estimate)",
    "loops and branches",
    "repeated blocks",
    "which nodes read each tensor",
)


def audit_with_graph(
    path: str | os.PathLike[str],
    near: float | None = None,
    progress: Progress | None = None,
    shapes: ShapeRequest | None = None,
    claim: Claim | None = None,
) -> tuple[Report, ModelGraph]:
    """Audit one model file (ONNX, or a checkpoint: see ``auditor.load.any``), costed at the input
    shapes ``shapes`` binds; also return the loaded graph (for GraphML export and measuring)."""
    with _no_cyclic_gc():
        _stage(progress, "loading the graph and inferring shapes")
        model = load_model(path, shapes)
        return analyse(model, near=near, progress=progress, claim=claim), model


_EXAMPLE_INPUT = re.compile(r"(\S+): \w+\[([0-9, ]*)\]")


def audit_torch_target(
    target: str,
    onnx_path: str | os.PathLike[str],
    export_timeout: float,
    near: float | None = None,
    progress: Progress | None = None,
    shapes: ShapeRequest | None = None,
    claim: Claim | None = None,
    overwrite: bool = False,
) -> tuple[Report, ModelGraph]:
    """Audit a PyTorch model given as ``file.py:factory`` or ``package.module:factory``: export it
    to ``onnx_path`` in a child process (dynamo, else TorchScript), audit the export, and reconcile
    it with torch's own account of the model (ties, applications). ``overwrite``: external data the
    export writes beside ``onnx_path`` may replace an existing file."""
    from auditor.analyses.reconcile import reconcile
    from auditor.load.torch_module import export_onnx

    input_shapes = dict(shapes.input_shapes) if shapes is not None and shapes.input_shapes else None
    result = export_onnx(target, onnx_path, timeout_s=export_timeout, input_shapes=input_shapes, overwrite=overwrite)
    if shapes is None or (not shapes.dims and not shapes.input_shapes):
        # cost the export at the example inputs' shapes ("ids: int64[2, 6]"), not at the defaults
        example = {m.group(1): tuple(int(d) for d in m.group(2).split(",") if d.strip())
                   for m in map(_EXAMPLE_INPUT.fullmatch, result.truth.inputs) if m}  # fmt: skip
        shapes = ShapeRequest(input_shapes=example)
    report, model = audit_with_graph(result.path, near=near, progress=progress, shapes=shapes, claim=claim)
    info = reconcile(result.truth, report, model, result.exporter, result.fallback_reason)
    extra = export_finding(info)
    findings = sorted(report.findings + ((extra,) if extra is not None else ()), key=lambda f: (-f.rank, f.code))
    summary = dataclasses.replace(report.model, path=f"{target} (exported with {result.exporter} to {result.path})")
    return dataclasses.replace(report, model=summary, torch=result.truth, export=info, findings=tuple(findings)), model


def audit(
    path: str | os.PathLike[str],
    near: float | None = None,
    progress: Progress | None = None,
    shapes: ShapeRequest | None = None,
    claim: Claim | None = None,
) -> Report:
    """Audit one model file (ONNX, or a checkpoint without a graph)."""
    return audit_with_graph(path, near=near, progress=progress, shapes=shapes, claim=claim)[0]


def tensor_facts(model: ModelGraph, tensor_id: str) -> TensorFacts:
    """Shape, element type and readers of a stored tensor, for the report's tables."""
    tensor = model.tensors[tensor_id]
    readers = []
    for use in model.terminal_uses(tensor_id):
        node = model.nodes[use.node]
        label = f"{node.op_type} {node.id}"
        if label not in readers:
            readers.append(label)
        if len(readers) == 8:
            break
    source = ""
    if not _TORCH_NAME.fullmatch(tensor.name):  # a name the exporter made up: say where it is used
        first = next(iter(model.terminal_uses(tensor_id)), None)
        source = model.nodes[first.node].source if first is not None else ""
    return TensorFacts(tensor.name, tensor.shape, tensor.dtype, tuple(readers), source)


# a parameter name as torch writes it: dotted module path ending in a name (encoder.layer.0.weight)
_TORCH_NAME = re.compile(r"[A-Za-z_][\w]*(\.[\w]+)+")


def run_inputs(model: ModelGraph) -> list[InputSpec]:
    """How to feed the model's inputs at the bound shapes when running it: integer inputs that
    index an embedding table take valid rows (token ids), masks are ones, other integers 0 or 1."""
    specs = []
    for value in model.inputs:
        shape = model.shapes.get(value)
        dtype = model.dtypes.get(value, "float32")
        if shape is None or not all(isinstance(d, int) for d in shape):
            raise AuditError("profile-shapes", f"input '{value}' has no concrete shape; give it with --input-shape")
        low, high = 0, 2
        if dtype.startswith(("int", "uint")):
            rows = [
                model.tensors[table].shape[int(model.nodes[use.node].attrs.get("axis", 0) or 0)]
                for use, _ in model.walk_uses(value, lambda node, index: node.outputs[:1] if node.role(index) is Role.VIEW else ())
                if model.nodes[use.node].role(use.index) is Role.INDICES
                and (table := model.nodes[use.node].inputs[0]) in model.tensors
                and model.tensors[table].shape
            ]
            if rows:
                high = max(1, min(rows))
            elif "mask" in value.lower():
                low = 1
        specs.append(InputSpec(value, "bool" if dtype == "bool" else dtype, tuple(int(d) for d in shape), low, high))
    return specs
