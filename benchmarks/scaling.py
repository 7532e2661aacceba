"""How the audit's cost grows with the model: graph-heavy, If-heavy, nested and tensor-heavy models.

For each family, models are generated at several sizes; each size is measured in a fresh
process (imports not timed): ``onnx.load`` of the file (the floor), ``onnx.load`` followed by
onnx's shape inference with data propagation (the C++ work the audit's costs need: a second
floor), that followed by one read in Python of every node, stored tensor and inferred value
(the least a Python program on this stack does with the graph: a third floor), and
``auditor.audit`` with the JSON written, each with its peak RSS (VmHWM); the four take turns,
``--repeat`` rounds, and the medians are reported. The growth exponent b of time ~ nodes^b is
fitted by least squares on log-log for each, and the planted copies are checked against the report.

Families:
  graph     transformer-like layers of small weights (18 nodes per layer)
  branches  the same layers, each with an If choosing between two small networks
  nested    Loops nested inside Loops (each level reads its own weight and the outer ones)
  tensors   many small tensors (256 floats), 2% of them planted copies (identical, transposed, scaled)

Usage: python benchmarks/scaling.py [--family graph ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from large_model import measure_interleaved, run_step  # benchmarks/ is on the path when a script here runs

FLOAT = TensorProto.FLOAT
D = 16  # side of the small weights


def _weight(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.02).astype(np.float32), name)


def _layer(rng: np.random.Generator, prefix: str, x: str, nodes: list, inits: list) -> str:
    """A transformer-like layer: LayerNorm, q/k/v/o projections, softmax attention, MLP, residuals."""
    for part in ("ln1", "ln2"):
        inits += [_weight(rng, f"{prefix}.{part}.w", (D,)), _weight(rng, f"{prefix}.{part}.b", (D,))]
    for part in ("q", "k", "v", "o", "up", "down"):
        inits.append(_weight(rng, f"{prefix}.W{part}", (D, D)))
    n = lambda op, ins, out, **kw: nodes.append(helper.make_node(op, ins, [f"{prefix}.{out}"], **kw))  # noqa: E731
    n("LayerNormalization", [x, f"{prefix}.ln1.w", f"{prefix}.ln1.b"], "h", axis=-1)
    for part in ("q", "k", "v"):
        n("MatMul", [f"{prefix}.h", f"{prefix}.W{part}"], part)
    n("Transpose", [f"{prefix}.k"], "kt", perm=[1, 0])
    n("MatMul", [f"{prefix}.q", f"{prefix}.kt"], "scores")
    n("Softmax", [f"{prefix}.scores"], "probs", axis=-1)
    n("MatMul", [f"{prefix}.probs", f"{prefix}.v"], "ctx")
    n("MatMul", [f"{prefix}.ctx", f"{prefix}.Wo"], "attn")
    n("Add", [x, f"{prefix}.attn"], "res1")
    n("LayerNormalization", [f"{prefix}.res1", f"{prefix}.ln2.w", f"{prefix}.ln2.b"], "h2", axis=-1)
    n("MatMul", [f"{prefix}.h2", f"{prefix}.Wup"], "up_out")
    n("Relu", [f"{prefix}.up_out"], "act")
    n("MatMul", [f"{prefix}.act", f"{prefix}.Wdown"], "down_out")
    n("Add", [f"{prefix}.res1", f"{prefix}.down_out"], "out")
    return f"{prefix}.out"


def _save(path: Path, nodes: list, inits: list, outputs: list[str]) -> None:
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x", FLOAT, [4, D])],
        [helper.make_tensor_value_info(o, FLOAT, None) for o in outputs], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def graph_model(path: Path, layers: int) -> dict:
    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    x = "x"
    for i in range(layers):
        x = _layer(rng, f"l{i}", x, nodes, inits)
    _save(path, nodes, inits, [x])
    return {"planted": [], "blocks": layers}


def branch_model(path: Path, layers: int) -> dict:
    """Each layer: an If (on the sign of the input's sum) between two different small MLPs."""
    rng = np.random.default_rng(1)
    nodes: list = []
    inits: list = [numpy_helper.from_array(np.asarray(0.0, np.float32), "zero")]
    x = "x"
    for i in range(layers):
        branches = []
        for side in ("then", "else"):
            w = f"l{i}.{side}.w"
            inits.append(_weight(rng, w, (D, D)))
            out = f"l{i}.{side}.out"
            branches.append(helper.make_graph(
                [helper.make_node("MatMul", [x, w], [f"l{i}.{side}.mm"]), helper.make_node("Relu", [f"l{i}.{side}.mm"], [out])],
                f"l{i}.{side}", [], [helper.make_tensor_value_info(out, FLOAT, None)],
            ))  # fmt: skip
        nodes += [
            helper.make_node("ReduceSum", [x], [f"l{i}.s"], keepdims=0),
            helper.make_node("Greater", [f"l{i}.s", "zero"], [f"l{i}.c"]),
            helper.make_node("If", [f"l{i}.c"], [f"l{i}.out"], then_branch=branches[0], else_branch=branches[1]),
        ]
        x = f"l{i}.out"
    _save(path, nodes, inits, [x])
    return {"planted": [], "applied": layers * D * D}  # one branch of D x D per If


def nested_model(path: Path, depth: int) -> dict:
    """``depth`` Loops (trip count 2) nested in each other; level j reads its own weight and
    every outer level's weight."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(np.asarray(2, np.int64), "two")]
    for level in range(depth):
        inits.append(_weight(rng, f"w{level}", (D, D)))

    def body(level: int) -> onnx.GraphProto:
        h_in, h_out = f"h{level}_in", f"h{level}_out"
        nodes = [helper.make_node("Identity", [f"c{level}_in"], [f"c{level}_out"])]
        current = h_in
        for outer in range(level + 1):
            nodes.append(helper.make_node("MatMul", [current, f"w{outer}"], [f"h{level}_{outer}"]))
            current = f"h{level}_{outer}"
        if level + 1 < depth:
            nodes.append(helper.make_node("Loop", ["two", "", current], [h_out], body=body(level + 1)))
        else:
            nodes.append(helper.make_node("Identity", [current], [h_out]))
        return helper.make_graph(
            nodes, f"body{level}",
            [helper.make_tensor_value_info(f"i{level}", TensorProto.INT64, []),
             helper.make_tensor_value_info(f"c{level}_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info(h_in, FLOAT, None)],
            [helper.make_tensor_value_info(f"c{level}_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info(h_out, FLOAT, None)],
        )  # fmt: skip

    _save(path, [helper.make_node("Loop", ["two", "", "x"], ["y"], body=body(0))], inits, ["y"])
    return {"planted": []}


def tensor_model(path: Path, tensors: int) -> dict:
    """``tensors`` tensors of 256 floats (16x16), each applied by a MatMul; every 50th is a planted
    copy of an earlier one (identical, transposed or scaled by 0.5, in turn)."""
    rng = np.random.default_rng(3)
    inits, nodes, outputs = [], [], []
    kept: list[tuple[str, np.ndarray]] = []
    planted: list[list[str]] = []
    for i in range(tensors):
        name = f"t{i}"
        if i % 50 == 49 and kept:
            source, values = kept[(i // 50) % len(kept)]
            relation = ("identical", "transposed", "scaled")[(i // 50) % 3]
            copy = {"identical": values, "transposed": values.T, "scaled": values * np.float32(0.5)}[relation]
            inits.append(numpy_helper.from_array(np.ascontiguousarray(copy), name))
            planted.append([relation, source, name])
        else:
            values = (rng.standard_normal((D, D)) * 0.02).astype(np.float32)
            inits.append(numpy_helper.from_array(values, name))
            if len(kept) < 1000:
                kept.append((name, values))
        nodes.append(helper.make_node("MatMul", ["x", name], [f"y{i}"]))
        outputs.append(f"y{i}")
    _save(path, nodes, inits, outputs)
    return {"planted": planted}


FAMILIES: dict[str, tuple[Callable[[Path, int], dict], list[int], list[int], str]] = {
    # generator, sizes, quick sizes, unit
    "graph": (graph_model, [500, 1000, 2000, 5000], [200, 400, 800], "layers"),
    "branches": (branch_model, [250, 500, 1000, 2000], [100, 200, 400], "Ifs"),
    # protobuf's parser refuses messages nested deeper than 100: about 24 Loop levels
    "nested": (nested_model, [6, 10, 15, 20], [4, 8, 12], "levels"),
    "tensors": (tensor_model, [5000, 10000, 25000, 50000], [2000, 4000, 8000], "tensors"),
}

_STEPS = {
    "onnx": ("import onnx", "model = onnx.load(str(path))"),
    # the part of the audit that is onnx's own C++ work: the model parsed and its shapes inferred
    "inference": ("import onnx", "model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)"),
    # and the least any Python program on top of that reads: every node's fields, every stored
    # tensor's type, dims and bytes, every inferred value's type and dims (the audit reads them all)
    "read": ("import onnx", """
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)
        def read(graph):
            for node in graph.node:
                node.op_type, node.domain, node.name, list(node.input), list(node.output)
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        read(attr.g)
                    elif attr.type == onnx.AttributeProto.GRAPHS:
                        for sub in attr.graphs:
                            read(sub)
            for tensor in graph.initializer:
                tensor.name, tensor.data_type, tuple(tensor.dims), tensor.raw_data
            for value in list(graph.input) + list(graph.value_info) + list(graph.output):
                kind = value.type.tensor_type
                value.name, kind.elem_type, [d.dim_value or d.dim_param for d in kind.shape.dim]
        read(model.graph)
    """),
    "auditor": ("from auditor import audit\nfrom auditor.report.json_report import render_json", """
        report = audit(path)
        path.with_name(path.stem + ".json").write_text(render_json(report))
    """),
}


def measure(step: str, model: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one step in a fresh Python process."""
    return run_step(*_STEPS[step], model, step)


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """b in seconds ~ size^b, least squares on log-log."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.maximum(np.asarray(seconds, float), 1e-6))
    return float(np.polyfit(x, y, 1)[0])


def check(report_path: Path, info: dict) -> tuple[int, int, str]:
    """(missed, invented) planted copies, and what else differs from the construction."""
    report = json.loads(report_path.read_text())
    planted = info["planted"]
    wrong = []
    if "blocks" in info:
        families = [len(f["blocks"]) for f in report["repeated_blocks"]]
        if families[:1] != [info["blocks"]]:
            wrong.append(f"repeated blocks {families} (expected {info['blocks']})")
    if "applied" in info and report["counts"]["applied_params"] != info["applied"]:
        wrong.append(f"applied {report['counts']['applied_params']} (expected {info['applied']})")
    found = set()
    for group in report["duplicates"]:
        head, *copies = group["tensors"]
        found.update((group["relation"], head, c) for c in copies)
    expected = {tuple(p) for p in planted}
    return len(expected - found), len(found - expected), "; ".join(wrong)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", choices=list(FAMILIES), help="families to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds per size (medians reported)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"median seconds of {args.repeat} interleaved rounds, highest peak RSS")  # fmt: skip
    failed = False
    for family in args.family or list(FAMILIES):
        generate, sizes, quick, unit = FAMILIES[family]
        print(f"\n{family}: {'size':>8} {unit:<8}{'nodes':>8}{'onnx.load s':>13}{'+infer s':>10}{'+read s':>9}{'audit s':>10}"
              f"{'ratio':>8}{'ratio/infer':>12}{'ratio/read':>11}{'onnx MiB':>10}{'infer MiB':>11}{'audit MiB':>11}"
              "  planted copies")  # fmt: skip
        onnx_times, infer_times, read_times, audit_times, node_counts = [], [], [], [], []
        chosen = quick if args.quick else sizes
        with tempfile.TemporaryDirectory() as folder:
            for size in chosen:
                path = Path(folder) / f"{family}_{size}.onnx"
                started = time.perf_counter()
                info = generate(path, size)
                print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
                nodes = _count_nodes(path)
                found = measure_interleaved(measure, ["onnx", "inference", "read", "auditor"], path, args.repeat)
                (load_s, load_mb), (infer_s, infer_mb), (audit_s, audit_mb) = found["onnx"], found["inference"], found["auditor"]
                read_s = found["read"][0]
                missed, invented, wrong = check(path.with_name(path.stem + ".json"), info)
                failed |= bool(missed or invented or wrong)
                onnx_times.append(load_s)
                infer_times.append(infer_s)
                read_times.append(read_s)
                audit_times.append(audit_s)
                node_counts.append(nodes)
                copies = f"{len(info['planted']) - missed}/{len(info['planted'])} found, {invented} invented"
                copies += f"; WRONG: {wrong}" if wrong else ""
                print(f"{'':>10}{size:>8} {'':<8}{nodes:>8}{load_s:>13.2f}{infer_s:>10.2f}{read_s:>9.2f}{audit_s:>10.2f}"
                      f"{audit_s / load_s:>8.1f}{audit_s / infer_s:>12.1f}{audit_s / read_s:>11.1f}"
                      f"{load_mb:>10.0f}{infer_mb:>11.0f}{audit_mb:>11.0f}  {copies}", flush=True)  # fmt: skip
        print(f"{'':>10}growth exponent in nodes: onnx.load {exponent(node_counts, onnx_times):.2f}, "
              f"onnx.load + inference {exponent(node_counts, infer_times):.2f}, "
              f"+ read {exponent(node_counts, read_times):.2f}, audit {exponent(node_counts, audit_times):.2f}")  # fmt: skip
    return 1 if failed else 0


def _count_nodes(path: Path) -> int:
    def count(graph: onnx.GraphProto) -> int:
        total = 0
        for node in graph.node:
            total += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    total += count(attr.g)
        return total

    return count(onnx.load(str(path)).graph)


if __name__ == "__main__":
    sys.exit(main())
