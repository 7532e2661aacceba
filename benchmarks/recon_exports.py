"""Recon: how the torch exporters store a transformers model's parameters in ONNX.

For each tiny model of ``tests/zoo.py`` and each exporter (dynamo, legacy TorchScript), export it
and print:

  torch      model.num_parameters() (tied parameters once), and the hook oracle's applied count
  onnx       elements of float initializers + float Constant values with more than one element
  auditor    what ``auditor.audit(path).counts`` says: stored, unique, applied
  mapping    for every torch parameter, each ONNX tensor holding its values and how:
             identical (same name and values), duplicate (same bytes, another name),
             reshaped, transposed(perm), transposed+reshaped, scaled(c) (B = c*A in some
             layout), cast(dtype), sliced (the leading rows only: folded lookups), or absent
  leftovers  float ONNX tensors (numel > 1) that match no parameter (folded masks, etc.)

The matching is independent of the auditor: plain numpy comparisons of every (parameter, ONNX
tensor) pair of compatible size. Usage:

  python benchmarks/recon_exports.py [--models albert,bert] [--exporters dynamo,legacy]
                                     [--static] [--verbose] [--out DIR]

``--static`` exports without dynamic axes (shows what constant folding does to position
embeddings and position biases); ``--verbose`` prints the mapping of every parameter, not just
the ones stored only in a transformed form.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402  (tests/zoo.py)

FLOATS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}


@dataclass(frozen=True)
class Stored:
    """A float tensor stored in the ONNX file."""

    name: str
    where: str  # initializer | Constant
    array: np.ndarray


def stored_floats(model: onnx.ModelProto) -> list[Stored]:
    """Float initializers and float Constant values (main graph, subgraphs, functions)."""
    out: list[Stored] = []

    def walk(graph: onnx.GraphProto) -> None:
        for init in graph.initializer:
            array = numpy_helper.to_array(init)
            if array.dtype in FLOATS:
                out.append(Stored(init.name, "initializer", array))
        walk_nodes(graph.node)

    def walk_nodes(nodes: object) -> None:
        for node in nodes:  # type: ignore[attr-defined]
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.name == "value":
                    array = numpy_helper.to_array(attr.t)
                    if array.dtype in FLOATS:
                        out.append(Stored(node.output[0], "Constant", array))
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)

    walk(model.graph)
    for function in model.functions:
        walk_nodes(function.node)
    return out


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-3, atol=1e-6))


def relation(param: np.ndarray, onnx_name: str, torch_names: set[str], stored: np.ndarray) -> str | None:
    """How ``stored`` holds ``param``'s values (``torch_names``: its names, tied aliases included),
    or None. ``identical``: under one of its torch names; ``duplicate``: same bytes, other name."""
    p = param
    if stored.dtype != p.dtype:
        s = stored.astype(np.float32)
        inner = relation(p.astype(np.float32), onnx_name, set(), s) if s.size == p.size else None
        return None if inner is None else f"cast({stored.dtype})+{inner}"
    if stored.size == p.size:
        if stored.shape == p.shape and np.array_equal(stored, p):
            return "identical" if onnx_name in torch_names else "duplicate"
        if np.array_equal(stored.reshape(-1), p.reshape(-1)):
            return "reshaped"
        layouts: list[tuple[str, np.ndarray]] = [("", p.reshape(-1))]
        if 1 < p.ndim <= 4:
            for perm in itertools.permutations(range(p.ndim)):
                if perm == tuple(range(p.ndim)):
                    continue
                view = p.transpose(perm)
                kind = "transposed" if view.shape == stored.shape else "transposed+reshaped"
                label = f"{kind}{list(perm) if p.ndim > 2 else ''}"
                if np.array_equal(view.reshape(-1), stored.reshape(-1)):
                    return label
                layouts.append((label, view.reshape(-1)))
        flat = stored.reshape(-1).astype(np.float64)
        for label, view in layouts:
            v = view.astype(np.float64)
            denom = float(v @ v)
            if denom == 0.0:
                continue
            c = float(flat @ v) / denom
            if abs(c - 1.0) > 1e-6 and c != 0.0 and np.allclose(flat, c * v, rtol=1e-5, atol=1e-9):
                return f"scaled({c:.6g}){'+' + label if label else ''}"
        return None
    if 0 < stored.size < p.size and p.ndim >= 2 and stored.size % int(np.prod(p.shape[1:])) == 0:
        rows = stored.size // int(np.prod(p.shape[1:]))
        if np.array_equal(stored.reshape(-1), p[:rows].reshape(-1)):
            return f"sliced(rows 0..{rows - 1} of {p.shape[0]})"
    return None


def recon(name: str, dynamo: bool, folder: Path, static: bool, verbose: bool) -> dict[str, object]:
    import auditor  # counts only; the matching below is independent of it

    model, inputs = zoo.built(name)
    path = folder / f"{name}_{'dynamo' if dynamo else 'legacy'}{'_static' if static else ''}.onnx"
    start = time.perf_counter()
    zoo.export(model, inputs, path, dynamo, dynamic=not static)
    seconds = time.perf_counter() - start
    proto = onnx.load(str(path))
    stored = stored_floats(proto)
    big = [s for s in stored if s.array.size > 1]
    report = auditor.audit(path)
    counts = report.counts
    params = dict(model.named_parameters())  # tied parameters once, under their first name
    arrays = {n: p.detach().numpy() for n, p in params.items()}
    aliases: dict[int, set[str]] = defaultdict(set)
    for alias, param in model.named_parameters(remove_duplicate=False):
        aliases[id(param)].add(alias)

    mapping: dict[str, list[tuple[str, str]]] = defaultdict(list)
    matched: set[str] = set()
    for tname, parray in arrays.items():
        for s in big:
            rel = relation(parray, s.name, aliases[id(params[tname])], s.array)
            if rel is not None:
                mapping[tname].append((s.name, rel))
                matched.add(s.name)
    relations = Counter(rel.split("(")[0] for rels in mapping.values() for _, rel in rels)
    only_transformed = [
        t for t in arrays if mapping[t] and all(r not in ("identical", "duplicate") for _, r in mapping[t])
    ]
    absent = [t for t in arrays if not mapping[t]]
    leftovers = [s for s in big if s.name not in matched]
    tag = f"{name} / {'dynamo' if dynamo else 'legacy'}{' / static shapes' if static else ''}"
    print(f"\n=== {tag}  (export {seconds:.1f}s, {path.stat().st_size} bytes)")
    print(f"torch     num_parameters={model.num_parameters()}  oracle applied={zoo.torch_applied_params(model, inputs)}")
    print(f"onnx      float elements (numel>1)={sum(s.array.size for s in big)} in {len(big)} tensors "
          f"({sum(s.where == 'Constant' for s in big)} Constant)")  # fmt: skip
    print(f"auditor   stored={counts.stored_params} unique={counts.unique_params} applied={counts.applied_params}")
    print(f"relations {dict(relations)}")
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for group in report.duplicates:
        merged[group.relation][0] += len(group.tensors) - 1
        merged[group.relation][1] += group.wasted_params
    print(f"auditor copies merged (relation: [copies, wasted params]) {dict(merged)}")
    for tname in arrays if verbose else only_transformed + absent:
        rels = ", ".join(f"{n} [{r}]" for n, r in mapping[tname]) or "ABSENT"
        print(f"  {tname} {tuple(arrays[tname].shape)}: {rels}")
    copies = {t: len(m) for t, m in mapping.items() if len(m) > 1}
    if copies:
        print(f"  stored more than once: {copies}")
    for s in leftovers:
        print(f"  not a parameter: {s.where} {s.name} {s.array.dtype} {s.array.shape}")
    return {
        "case": tag,
        "torch": model.num_parameters(),
        "onnx_floats": sum(s.array.size for s in big),
        "stored": counts.stored_params,
        "unique": counts.unique_params,
        "applied": counts.applied_params,
        "oracle": zoo.torch_applied_params(model, inputs),
        "only_transformed": len(only_transformed),
        "absent": len(absent),
        "leftover": sum(s.array.size for s in leftovers),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.BUILDERS))
    parser.add_argument("--exporters", default="dynamo,legacy")
    parser.add_argument("--static", action="store_true", help="no dynamic axes")
    parser.add_argument("--verbose", action="store_true", help="every parameter's mapping")
    parser.add_argument("--out", type=Path, help="keep the ONNX files here")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            for exporter in args.exporters.split(","):
                rows.append(recon(name, exporter == "dynamo", folder, args.static, args.verbose))
    print("\n| case | torch params | onnx float elems | stored | unique | unique-torch | applied | oracle "
          "| only transformed | absent | non-param floats |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['torch']} | {r['onnx_floats']} | {r['stored']} | {r['unique']} "
              f"| {int(r['unique']) - int(r['torch']):+d} | {r['applied']} | {r['oracle']} "  # type: ignore[call-overload]
              f"| {r['only_transformed']} | {r['absent']} | {r['leftover']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
