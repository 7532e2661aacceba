"""Benchmark on a large external-data model with planted copies.

Generates a transformer-like model (layers of d x d float32 matrices, data in one external
file, streamed to disk so the generator never holds it) with planted exact, transposed,
scaled and near-duplicate copies, then measures in one run, each step in a fresh process:

  floor     read the external data once, sequentially (the speed the bytes can be read)
  onnx      onnx.load with external data (time, peak RSS)
  auditor   auditor.audit (time, peak RSS)

and prints the ratios against the floor and whether every planted copy was found, with no
false ones. Usage: python benchmarks/large_model.py --size-gb 3.6 [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import statistics
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

PLANTS = ("identical", "transposed", "scaled", "near")
PLANTS_EACH = 3
SCALE = 0.125
NEAR_NOISE = 1e-3


def generate(out: Path, size_gb: float, dim: int) -> dict[str, list[list[str]]]:
    """Write model.onnx + model.bin into ``out``; return the planted copies {relation: [[orig, copy]]}."""
    out.mkdir(parents=True, exist_ok=True)
    matrix_bytes = dim * dim * 4
    planted_count = len(PLANTS) * PLANTS_EACH
    layers = max(2, int(size_gb * (1 << 30) // matrix_bytes - planted_count) // 4)
    rng = np.random.default_rng(0)
    initializers, nodes, outputs = [], [], []
    offset = 0
    planted: dict[str, list[list[str]]] = {p: [] for p in PLANTS}
    started = time.perf_counter()

    with open(out / "model.bin", "wb") as data:

        def store(name: str, array: np.ndarray) -> None:
            nonlocal offset
            array = np.ascontiguousarray(array, dtype=np.float32)
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape)
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", "model.bin"), ("offset", str(offset)), ("length", str(array.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            data.write(array.tobytes())
            offset += array.nbytes
            initializers.append(tensor)

        hidden = "x"
        originals: list[tuple[str, np.ndarray]] = []
        for layer in range(layers):
            for part in ("q", "k", "v", "o"):
                name = f"layer{layer}.{part}"
                weight = (rng.standard_normal((dim, dim), dtype=np.float32) * 0.02).astype(np.float32)
                store(name, weight)
                if len(originals) < planted_count and layer % 2 == 0 and part in ("q", "o"):
                    originals.append((name, weight))
                nodes.append(helper.make_node("MatMul", [hidden, name], [f"{name}.out"]))
                hidden = f"{name}.out"
            nodes.append(helper.make_node("Tanh", [hidden], [f"layer{layer}.act"]))
            hidden = f"layer{layer}.act"
            done = (layer + 1) * 4 * matrix_bytes
            print(f"\r  generating: {done / (1 << 30):.2f} GiB", end="", file=sys.stderr, flush=True)
        outputs.append(hidden)
        for index, (name, weight) in enumerate(originals):
            relation = PLANTS[index % len(PLANTS)]
            copy_name = f"planted.{relation}.{index}"
            if relation == "identical":
                copy = weight
            elif relation == "transposed":
                copy = weight.T
            elif relation == "scaled":
                copy = weight * np.float32(SCALE)
            else:
                copy = weight + rng.standard_normal(weight.shape, dtype=np.float32) * np.float32(0.02 * NEAR_NOISE)
            store(copy_name, copy)
            nodes.append(helper.make_node("MatMul", ["x", copy_name], [f"{copy_name}.out"]))
            outputs.append(f"{copy_name}.out")
            planted[relation].append([name, copy_name])
    print(f"\r  generated {offset / (1 << 30):.2f} GiB in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, dim]) for o in outputs],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="auditor-bench")
    onnx.save(model, out / "model.onnx")  # tensors already external: the proto stays small
    return planted


# (set-up, timed work): imports are not timed, so the figures compare the work itself
_STEPS = {
    "floor": ("", """
        buf = bytearray(16 << 20); view = memoryview(buf); total = 0
        with open(path.with_name("model.bin"), "rb", buffering=0) as f:
            while (n := f.readinto(view)):
                total += n
    """),
    "onnx": ("import onnx", """
        model = onnx.load(str(path))
    """),
    "auditor": ("from auditor import audit\nfrom auditor.report.json_report import render_json", """
        report = audit(path)
        path.with_name("report.json").write_text(render_json(report))
    """),
}


def run_step(setup: str, work: str, model: Path, label: str = "step") -> tuple[float, float]:
    """(seconds, peak RSS MiB) of ``work`` (after untimed ``setup``) in a fresh Python process,
    with ``path`` bound to ``model``. Shared with ``scaling.py``."""
    code = f"import time, sys\nfrom pathlib import Path\npath = Path(sys.argv[1])\n{setup}\n"
    code += "start = time.perf_counter()\n" + textwrap.dedent(work)
    # VmHWM (peak RSS of this process image); ru_maxrss would carry the parent's peak over exec
    code += "\nelapsed = time.perf_counter() - start\n"
    code += "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]\n"
    code += "print(elapsed, int(hwm) / 1024)\n"
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{label} failed on {model.name}:\n{done.stderr[-2000:]}")
    seconds, rss = done.stdout.split()[-2:]
    return float(seconds), float(rss)


def measure(step: str, model: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one step in a fresh Python process."""
    return run_step(*_STEPS[step], model, step)


def measure_interleaved(
    measure_step: Callable[[str, Path], tuple[float, float]], steps: list[str], model: Path, repeat: int
) -> dict[str, tuple[float, float]]:
    """(median seconds, highest peak RSS MiB) of each step over ``repeat`` rounds, the steps taking
    turns within each round: on a shared machine whose speed drifts from one minute to the next,
    a step and its floor then see the same conditions. Shared with ``scaling.py``."""
    runs: dict[str, list[tuple[float, float]]] = {step: [] for step in steps}
    for _ in range(repeat):
        for step in steps:
            runs[step].append(measure_step(step, model))
    return {step: (statistics.median(s for s, _ in found), max(r for _, r in found)) for step, found in runs.items()}


def check(report: dict, planted: dict[str, list[list[str]]]) -> tuple[list[str], list[str]]:
    """(missed, invented) planted copies, comparing the report's groups with what was planted."""
    found: set[tuple[str, str, str]] = set()
    for group in report["duplicates"]:
        head, *copies = group["tensors"]
        found.update((group["relation"], head, c) for c in copies)
    for group in report["shareable"]:
        head, *copies = group["tensors"]
        found.update(("near", head, c) for c in copies)
    expected = {(relation, a, b) for relation, pairs in planted.items() for a, b in pairs}
    missed = sorted(f"{r}: {a} -> {b}" for r, a, b in expected - found)
    invented = sorted(f"{r}: {a} -> {b}" for r, a, b in found - expected)
    return missed, invented


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=3.6, help="size of the external data (GiB)")
    parser.add_argument("--dim", type=int, default=2048, help="matrix side (d x d float32 weights)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--keep", action="store_true", help="keep the generated model")
    parser.add_argument("--skip-onnx", action="store_true", help="skip the onnx.load measurement")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the floor and the audit (medians reported)")
    args = parser.parse_args()

    planted = generate(args.out, args.size_gb, args.dim)
    model = args.out / "model.onnx"
    data_bytes = (args.out / "model.bin").stat().st_size
    measure("floor", model)  # warm the page cache so every step reads from the same place
    results = measure_interleaved(measure, ["floor", "auditor"], model, args.repeat)
    if not args.skip_onnx:  # once: it takes several times the others, and its figure is not a floor
        results["onnx"] = measure("onnx", model)
    missed, invented = check(json.loads((args.out / "report.json").read_text()), planted)

    floor = results["floor"][0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.0f} GiB RAM")  # fmt: skip
    print(f"model: {data_bytes / (1 << 30):.2f} GiB external data, {args.dim}x{args.dim} float32 matrices; "
          f"median of {args.repeat} interleaved rounds (onnx: one run)")  # fmt: skip
    print(f"{'step':<10}{'seconds':>10}{'x floor':>10}{'peak RSS MiB':>15}")
    for step, (seconds, rss) in results.items():
        print(f"{step:<10}{seconds:>10.2f}{seconds / floor:>10.2f}{rss:>15.0f}")
    total = sum(len(v) for v in planted.values())
    print(f"planted copies: {total}, found: {total - len(missed)}, missed: {len(missed)}, invented: {len(invented)}")
    for line in missed:
        print(f"  missed   {line}")
    for line in invented:
        print(f"  invented {line}")
    if not args.keep:
        shutil.rmtree(args.out)
    return 0 if not missed and not invented else 1


if __name__ == "__main__":
    sys.exit(main())
