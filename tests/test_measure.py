"""Measured memory and latency (auditor.measure): real onnxruntime runs of tiny models in a child process.

Every model is written inline as ONNX text; the sizes the memory tests expect are worked out from
the shapes planted in the model, not from anything the auditor computes.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

from auditor.measure import InputSpec, Measurement, ProfileError, measure

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'

# The planted intermediate of the "wide" model: 64 Mi float32 elements.
WIDE_ELEMENTS = 64 * MIB
WIDE_BYTES = WIDE_ELEMENTS * 4  # 256 MiB


def _write(tmp_path: Path, name: str, text: str) -> Path:
    model = onnx.parser.parse_model(HEADER + text)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _matmul(tmp_path: Path) -> Path:
    """A tiny model: one 4x8 by 8x16 MatMul."""
    return _write(
        tmp_path,
        "matmul",
        """
        matmul (float[4,8] x) => (float[4,16] y) {
            dims = Constant <value = int64[2] {8, 16}> ()
            w = ConstantOfShape <value = float[1] {0.125}> (dims)
            y = MatMul (x, w)
        }
        """,
    )


def _wide(tmp_path: Path) -> Path:
    """One input value expanded to a 256 MiB float32 intermediate, then summed to a scalar.

    The Expand reads the graph input, so onnxruntime cannot fold it away at session creation: the
    256 MiB must be allocated while the model runs.
    """
    return _write(
        tmp_path,
        "wide",
        f"""
        wide (float[1] x) => (float y) {{
            dims = Constant <value = int64[1] {{{WIDE_ELEMENTS}}}> ()
            big = Expand (x, dims)
            y = ReduceSum <keepdims = 0> (big)
        }}
        """,
    )


def _lookup(tmp_path: Path) -> Path:
    """A token-id model: Gather from a 10-row embedding table."""
    return _write(
        tmp_path,
        "lookup",
        """
        lookup (int64[2,8] ids) => (float[2,8,4] y) {
            dims = Constant <value = int64[2] {10, 4}> ()
            table = ConstantOfShape <value = float[1] {0.5}> (dims)
            y = Gather (table, ids)
        }
        """,
    )


def _spin(tmp_path: Path) -> Path:
    """A Loop with the largest trip count and a condition that stays true: it never finishes."""
    return _write(
        tmp_path,
        "spin",
        """
        spin (float[1] x) => (float[1] y) {
            trips = Constant <value = int64 {9223372036854775807}> ()
            keep = Constant <value = bool {1}> ()
            y = Loop (trips, keep, x) <body = step (int64 i, bool c, float[1] v) => (bool c_out, float[1] v_out) {
                c_out = Identity (c)
                one = Constant <value = float[1] {1.0}> ()
                v_out = Add (v, one)
            }>
        }
        """,
    )


def _hog(tmp_path: Path) -> Path:
    """A 2 GiB tensor: ConstantOfShape of 512 Mi floats.

    The fill value is 1, not 0, so every page is written and counts in RSS (zero pages might not).
    """
    return _write(
        tmp_path,
        "hog",
        """
        hog (float[1] x) => (float[1] y) {
            dims = Constant <value = int64[1] {536870912}> ()
            big = ConstantOfShape <value = float[1] {1.0}> (dims)
            total = ReduceSum <keepdims = 0> (big)
            y = Add (x, total)
        }
        """,
    )


def _children() -> list[int]:
    """Pids of this process's children running the measuring script."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
        if b"_measure_child" in cmdline and ppid == str(os.getpid()):
            found.append(int(entry.name))
    return found


def _one_line(error: ProfileError) -> None:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text, text
    assert text.endswith(f"[{error.slug}]")


def test_matmul_runs_and_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requested runs come back as that many positive latencies, on the CPU provider, leaving no files."""
    path = _matmul(tmp_path)
    monkeypatch.chdir(tmp_path)  # the child inherits this working directory
    m = measure(path, [InputSpec("x", "float32", (4, 8))], runs=7, warmup=2, threads=1)
    assert (m.device, m.provider, m.runs, m.warmup) == ("cpu", "CPUExecutionProvider", 7, 2)
    assert len(m.latencies_ms) == 7 and all(t > 0 for t in m.latencies_ms)
    assert m.median_ms <= m.p90_ms <= max(m.latencies_ms)
    assert m.spread_ms == pytest.approx(max(m.latencies_ms) - min(m.latencies_ms))
    assert m.baseline_bytes > 10 * MIB  # a Python with numpy and onnxruntime loaded
    assert 0 <= m.session_bytes <= m.creation_peak_bytes <= m.peak_bytes
    assert m.first_run_peak_bytes <= m.peak_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matmul.onnx"]
    assert _children() == []


def test_no_warmup_times_the_first_run(tmp_path: Path) -> None:
    """With warmup=0 the first run is also the first timed run."""
    m = measure(_matmul(tmp_path), [InputSpec("x", "float32", (4, 8))], runs=3, warmup=0)
    assert len(m.latencies_ms) == 3 and m.warmup == 0


def test_peak_memory_sees_the_planted_intermediate(tmp_path: Path) -> None:
    """A 256 MiB intermediate shows in the peak (and in the first run's); a tiny model stays far below."""
    wide = measure(_wide(tmp_path), [InputSpec("x", "float32", (1,))], runs=2, warmup=1)
    assert WIDE_BYTES <= wide.first_run_peak_bytes <= wide.peak_bytes < 1536 * MIB
    # Created, not yet run: the session holds nothing of that size.
    assert wide.creation_peak_bytes < WIDE_BYTES // 4
    tiny = measure(_matmul(tmp_path), [InputSpec("x", "float32", (4, 8))], runs=2, warmup=1)
    assert tiny.peak_bytes < WIDE_BYTES // 4


def test_token_ids_in_range_run(tmp_path: Path) -> None:
    """Integer inputs are drawn from [low, high): ids below the table's 10 rows run."""
    m = measure(_lookup(tmp_path), [InputSpec("ids", "int64", (2, 8), low=0, high=10)], runs=2, warmup=1)
    assert len(m.latencies_ms) == 2


def test_token_ids_out_of_range_fail_in_one_line(tmp_path: Path) -> None:
    """Ids up to 1000 in a 10-row table: onnxruntime refuses, reported as one line, not a traceback."""
    with pytest.raises(ProfileError) as caught:
        measure(_lookup(tmp_path), [InputSpec("ids", "int64", (2, 8), low=0, high=1000)], runs=2, warmup=1)
    assert caught.value.slug == "profile-failed"
    _one_line(caught.value)
    assert "out of data bounds" in caught.value.message


def test_timeout_stops_the_child(tmp_path: Path) -> None:
    """A Loop that never ends is stopped at the timeout, and the child is gone afterwards."""
    start = time.monotonic()
    with pytest.raises(ProfileError) as caught:
        measure(_spin(tmp_path), [InputSpec("x", "float32", (1,))], runs=1, warmup=0, timeout_s=3)
    elapsed = time.monotonic() - start
    assert caught.value.slug == "profile-timeout"
    assert "3 s" in caught.value.message
    _one_line(caught.value)
    assert 3 <= elapsed < 10
    assert _children() == []


def test_memory_cap_stops_the_child(tmp_path: Path) -> None:
    """A model filling 2 GiB is stopped at a 300 MiB cap."""
    with pytest.raises(ProfileError) as caught:
        measure(_hog(tmp_path), [InputSpec("x", "float32", (1,))], memory_cap_bytes=300 * MIB, timeout_s=60)
    assert caught.value.slug == "profile-memory"
    assert "300 MiB" in caught.value.message
    _one_line(caught.value)
    assert _children() == []


def test_invalid_model_fails_in_one_line(tmp_path: Path) -> None:
    """Random bytes are not a model: profile-failed, one line."""
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ProfileError) as caught:
        measure(path, [InputSpec("x", "float32", (1,))])
    assert caught.value.slug == "profile-failed"
    _one_line(caught.value)


def test_missing_model_fails_without_a_child(tmp_path: Path) -> None:
    """A path that does not exist is reported before any process starts."""
    with pytest.raises(ProfileError) as caught:
        measure(tmp_path / "absent.onnx", [])
    assert caught.value.slug == "profile-failed"


def test_cuda_without_provider_is_unavailable(tmp_path: Path) -> None:
    """Asking for cuda where onnxruntime has no CUDA provider says what is needed."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(ProfileError) as caught:
        measure(_matmul(tmp_path), [InputSpec("x", "float32", (4, 8))], device="cuda")
    assert caught.value.slug == "profile-unavailable"
    assert "onnxruntime-gpu" in caught.value.message
    _one_line(caught.value)


def test_cuda_reports_device_memory(tmp_path: Path) -> None:
    """On a GPU, the device peak is reported (it includes at least the 256 MiB intermediate)."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a GPU")
    m = measure(_wide(tmp_path), [InputSpec("x", "float32", (1,))], device="cuda", runs=2, warmup=1)
    assert m.device == "cuda" and m.provider == "CUDAExecutionProvider"
    assert m.peak_bytes >= WIDE_BYTES


def test_latency_statistics_match_numpy() -> None:
    """median, p90 and spread agree with numpy's percentiles (linear interpolation)."""
    latencies = (5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0)
    m = Measurement("cpu", "CPUExecutionProvider", 7, 0, 1, 0, 0, 0, 0, latencies)
    assert m.median_ms == pytest.approx(float(np.percentile(latencies, 50)))
    assert m.p90_ms == pytest.approx(float(np.percentile(latencies, 90)))
    assert m.spread_ms == 9.0


def test_parent_does_not_import_onnxruntime() -> None:
    """Importing auditor.measure loads neither onnxruntime nor numpy beyond what auditor already does."""
    code = (
        "import sys, auditor; before = set(sys.modules); import auditor.measure; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('onnxruntime', 'numpy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_child_imports_only_stdlib_numpy_onnxruntime() -> None:
    """The child script imports nothing from auditor, only the standard library, numpy and onnxruntime."""
    tree = ast.parse((ROOT / "auditor" / "_measure_child.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert names - set(sys.stdlib_module_names) == {"numpy", "onnxruntime"}
