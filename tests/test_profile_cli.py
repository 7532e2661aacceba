"""``audit --profile``: the model run by onnxruntime in a child process, from the command line.

A failed measurement (a model that runs too long, a device that is not there) is one line on
stderr and exit 2, and the static report is still written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

AUDIT = [sys.executable, "-m", "auditor.cli"]


def _lookup_model(tmp_path: Path) -> Path:
    """Token ids [batch, seq] -> a 50-row embedding -> MatMul: ids out of range would fail."""
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32), "table")
    weight = numpy_helper.from_array(np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "lookup", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [table, weight],
    )  # fmt: skip
    path = tmp_path / "lookup.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _spinning_model(tmp_path: Path) -> Path:
    """A Loop that runs (practically) forever: its trip count is huge and its condition stays true."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Add", ["s", "one"], ["s_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )  # fmt: skip
    weights = [numpy_helper.from_array(np.array(2**62, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond")]
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)], "spin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        weights,
    )  # fmt: skip
    path = tmp_path / "spin.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_profile_cpu_reports_measured_peak_and_latency(tmp_path: Path) -> None:
    path, out = _lookup_model(tmp_path), tmp_path / "r.json"
    done = subprocess.run([*AUDIT, str(path), "--profile", "cpu", "--profile-runs", "3", "--dim", "seq=16",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    memory, latency = document["memory"], document["latency_ms"]
    assert memory["measured_device"] == "cpu" and memory["measured_runs"] == 3
    assert memory["measured_peak_bytes"] > 0
    assert 0 < latency["median"] <= latency["p90"]
    assert len(memory["measured"]["latencies_ms"]) == 3
    assert "Measured" in done.stdout or "measured" in done.stdout.lower()
    # the ids fed were valid rows of the 50-row table, or onnxruntime would have failed


def test_profile_timeout_exits_2_with_the_static_report_written(tmp_path: Path) -> None:
    path, out = _spinning_model(tmp_path), tmp_path / "r.json"
    done = subprocess.run([*AUDIT, str(path), "--profile", "cpu", "--profile-timeout", "2", "--json", str(out), "-q"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "[profile-timeout]" in done.stderr and "Traceback" not in done.stderr
    document = json.loads(out.read_text())
    assert document["memory"]["static_peak_bytes"] > 0 and document["memory"]["measured_peak_bytes"] is None


def test_profile_cuda_without_a_gpu_is_a_clear_refusal(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("a CUDA provider is present: the refusal path does not apply")
    path, out = _lookup_model(tmp_path), tmp_path / "r.json"
    done = subprocess.run([*AUDIT, str(path), "--profile", "cuda", "--json", str(out), "-q"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "[profile-unavailable]" in done.stderr and done.stderr.count("\n") == 1
    assert json.loads(out.read_text())["compute"]["macs"] == 1 * 128 * 16 * 8  # default batch 1, sequence 128
