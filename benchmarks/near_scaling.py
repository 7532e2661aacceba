"""How near-duplicate search scales with the number of tensors.

Builds models of N random 64x64 tensors of one shape (the worst case: every tensor is a
possible partner of every other), with N/20 planted near copies, and times the auditor's
near-duplicate search alone (fingerprints are computed first and not timed). Prints the time
per tensor, the candidate pairs measured exactly, and whether every planted pair was found.
A search that compared all pairs would grow 4x per doubling; this one should grow ~2x.

Usage: python benchmarks/near_scaling.py [--sizes 250 500 1000 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from auditor.analyses import near
from auditor.analyses.fingerprint import fingerprint_all
from auditor.graph import TensorInfo
from auditor.load.tensor_data import tensor_chunks


def _tensors(count: int, rng: np.random.Generator) -> tuple[list[TensorInfo], set[tuple[str, str]]]:
    arrays = {f"w{i}": rng.standard_normal((64, 64)).astype(np.float32) for i in range(count)}
    planted = set()
    for i in range(0, count, 20):
        arrays[f"w{i}_near"] = arrays[f"w{i}"] + np.float32(0.003) * rng.standard_normal((64, 64)).astype(np.float32)
        planted.add((f"w{i}", f"w{i}_near"))
    tensors = [
        TensorInfo(name, name, "", "initializer", "float32", (64, 64), value.nbytes, reader=lambda value=value: value,
                   chunker=tensor_chunks)
        for name, value in arrays.items()
    ]
    return tensors, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    measured_pairs = 0
    original = near.exact_distance

    def counting(a: TensorInfo, b: TensorInfo) -> tuple[float, float]:
        nonlocal measured_pairs
        measured_pairs += 1
        return original(a, b)

    near.exact_distance = counting  # count exact measurements (a probe, not a stand-in)
    print(f"{'tensors':>8}{'seconds':>10}{'us/tensor':>11}{'exact pairs':>13}{'all pairs':>12}  found")
    for count in args.sizes:
        tensors, planted = _tensors(count, rng)
        prints, _ = fingerprint_all(tensors)
        measured_pairs = 0
        start = time.perf_counter()
        groups = near.near_duplicates(tensors, prints, 0.01)
        seconds = time.perf_counter() - start
        found = {g.tensors for g in groups}
        ok = "all" if found == planted else f"{len(found & planted)}/{len(planted)}, {len(found - planted)} false"
        n = len(tensors)
        print(f"{n:>8}{seconds:>10.3f}{seconds / n * 1e6:>11.1f}{measured_pairs:>13}{n * (n - 1) // 2:>12}  {ok}")


if __name__ == "__main__":
    main()
