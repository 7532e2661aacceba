"""``compare`` cases the first tests left open, found by mutation testing: each test fails on a
deliberately broken ``auditor/comparison.py`` and passes on the real one.

The models: a chain of ``layers`` MatMuls over x [1, seq, 32], the i-th applying weight
W_(i mod distinct) [32, 32]. By hand: unique parameters ``distinct * 1024``; MACs
``layers * seq * 32 * 32``; the plain static memory peak is the weights (4 B each) plus two
[1, seq, 32] float activations (a MatMul's input and output; the one before is freed).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.comparison import compare
from auditor.graph import ShapeRequest
from auditor.measure import Measurement
from auditor.report.model import Report


def _chain(tmp_path: Path, name: str, distinct: int, layers: int = 6, seq: int | str = 8) -> Path:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), f"w{i}") for i in range(distinct)]
    nodes, x = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [x, f"w{i % distinct}"], [f"h{i}"]))
        x = f"h{i}"
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, 32])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], weights)  # fmt: skip
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _measured(report: Report, peak_bytes: int, latencies_ms: tuple[float, ...]) -> Report:
    measurement = Measurement(device="cpu", provider="CPUExecutionProvider", runs=len(latencies_ms), warmup=1, baseline_bytes=0,
                              session_bytes=peak_bytes // 2, creation_peak_bytes=peak_bytes // 2,
                              first_run_peak_bytes=peak_bytes, peak_bytes=peak_bytes, latencies_ms=latencies_ms)  # fmt: skip
    return replace(report, measured=measurement)


def test_every_figure_is_read_into_the_columns(tmp_path: Path) -> None:
    """FLOPs, both static memory figures and the measured ones reach the comparison's columns."""
    six = auditor.audit(_chain(tmp_path, "six", 6))
    three = auditor.audit(_chain(tmp_path, "three", 3))
    base = _measured(six, 4_000_000, (1.0, 3.0, 2.0))
    other = _measured(three, 1_000_000, (1.0, 1.5, 0.5))
    columns = compare([base, other]).models
    macs = 6 * 8 * 32 * 32
    assert columns[0].values["flops"] == 2 * macs  # MatMuls only: 2 FLOPs per MAC
    assert columns[0].values["static_plain_peak_bytes"] == 6 * 4096 + 2 * 8 * 32 * 4
    assert columns[1].values["static_plain_peak_bytes"] == 3 * 4096 + 2 * 8 * 32 * 4
    assert six.memory is not None and columns[0].values["static_peak_bytes"] == six.memory.runtime.peak_bytes
    assert columns[0].values["measured_peak_bytes"] == 4_000_000.0
    assert columns[1].ratios["measured_peak_bytes"] == pytest.approx(0.25)
    assert columns[0].values["latency_median_ms"] == 2.0  # the median of 1, 3, 2
    assert columns[1].ratios["latency_median_ms"] == pytest.approx(0.5)


def test_embedding_parameters_of_a_graph_are_known(tmp_path: Path) -> None:
    # token ids [1, 8] look up a [10, 32] table (320 embedding parameters), then the chain's MatMul by [32, 32]
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((10, 32)).astype(np.float32), "table")
    w = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "w")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])]
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [table, w])  # fmt: skip
    path = tmp_path / "embed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    columns = compare([auditor.audit(path), auditor.audit(_chain(tmp_path, "six", 6))]).models
    assert columns[0].values["embedding_params"] == 320 and columns[1].values["embedding_params"] == 0
    assert columns[1].ratios["embedding_params"] == 0.0


def test_a_gap_of_exactly_the_factor_is_no_finding_and_above_it_is(tmp_path: Path) -> None:
    # 6 vs 3 distinct weights, same MACs: parameter ratio 1/2, MACs ratio 1: off by exactly 2 = the default factor
    six, three = auditor.audit(_chain(tmp_path, "six", 6)), auditor.audit(_chain(tmp_path, "three", 3))
    assert compare([six, three]).findings == ()
    # 10 layers, 5 vs 2 distinct weights: ratio 2/5, off by 2.5: more than the default 2, less than 3
    five = auditor.audit(_chain(tmp_path, "five", 5, layers=10))
    two = auditor.audit(_chain(tmp_path, "two", 2, layers=10))
    (found,) = compare([five, two]).findings
    assert found.code == "AUD115" and found.evidence["factor"] == 2.0 and "off by up to 2.5x" in found.message


def test_more_parameters_for_the_same_work_is_flagged_too(tmp_path: Path) -> None:
    """Baseline: one weight applied 6 times over seq 8. The other: 6 weights over seq 16:
    6x the parameters for 2x the MACs, off by 6 / 2 = 3."""
    shared = auditor.audit(_chain(tmp_path, "shared", 1))
    distinct = auditor.audit(_chain(tmp_path, "distinct", 6, seq=16))
    (found,) = compare([shared, distinct]).findings
    assert found.evidence["param_ratio"] == pytest.approx(6.0) and found.evidence["macs_ratio"] == pytest.approx(2.0)
    assert "off by up to 3.0x" in found.message


def test_the_same_parameters_doing_four_times_the_work_is_flagged(tmp_path: Path) -> None:
    # one model at seq 8 and at seq 32: parameter ratio 1, MACs ratio 4
    path = _chain(tmp_path, "symbolic", 6, seq="seq")
    short = auditor.audit(path, shapes=ShapeRequest(dims={"seq": 8}))
    long = auditor.audit(path, shapes=ShapeRequest(dims={"seq": 32}))
    (found,) = compare([short, long]).findings
    assert found.evidence["param_ratio"] == 1.0 and found.evidence["macs_ratio"] == pytest.approx(4.0)


def test_macs_with_an_uncosted_op_are_not_judged(tmp_path: Path) -> None:
    """The other model applies one weight 6 times (1/6 of the parameters at the same MACs: off by
    6), but ends in a vendor op nothing can cost: its MACs are a lower bound, so no MACs gap.
    Memory: 4,096 + 2 x 1,024 bytes against 24,576 + 2,048, a ratio of 0.23, off by only 1.4."""
    six = auditor.audit(_chain(tmp_path, "six", 6))
    path = _chain(tmp_path, "shared", 1)
    model = onnx.load(path)
    model.graph.node.append(helper.make_node("Mystery", ["h5"], ["z"], domain="vendor"))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    model.opset_import.append(helper.make_opsetid("vendor", 1))
    onnx.save(model, path)
    shared = auditor.audit(path)
    assert shared.compute is not None and not shared.compute.complete and shared.compute.macs == 6 * 8 * 32 * 32
    assert compare([six, shared]).findings == ()


def test_a_baseline_without_parameters_has_no_ratio_and_raises_nothing(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])  # fmt: skip
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    comparison = compare([auditor.audit(path), auditor.audit(_chain(tmp_path, "six", 6))])
    assert comparison.models[1].ratios["unique_params"] is None and comparison.findings == ()


def test_measured_memory_speaks_for_memory_and_the_worst_gap_is_named(tmp_path: Path) -> None:
    """6 vs 3 distinct weights at --ratio-factor 1.05. Parameter ratio 1/2; MACs ratio 1 (off by
    2); static memory (24,576 + 2,048 vs 12,288 + 2,048 bytes) ratio 0.538, off by 1.077: both
    above 1.05. With measured peaks in the ratio of the parameters (1/2), the measured figure
    replaces the static one, and agrees: only MACs are left."""
    six, three = auditor.audit(_chain(tmp_path, "six", 6)), auditor.audit(_chain(tmp_path, "three", 3))
    (static,) = compare([six, three], ratio_factor=1.05).findings
    memory_ratio = (3 * 4096 + 2048) / (6 * 4096 + 2048)
    assert static.evidence["static_plain_peak_bytes_ratio"] == pytest.approx(memory_ratio, abs=1e-6)
    assert set(static.evidence) >= {"macs_ratio", "static_plain_peak_bytes_ratio"}
    assert "off by up to 2.0x" in static.message  # the worst of 2 and 1.077
    measured = [_measured(six, 2_000_000, (1.0,)), _measured(three, 1_000_000, (1.0,))]
    (found,) = compare(measured, ratio_factor=1.05).findings
    ratios = {key for key in found.evidence if key.endswith("_ratio") and key != "param_ratio"}
    assert ratios == {"macs_ratio"}


def test_the_message_names_the_baseline_and_both_counts(tmp_path: Path) -> None:
    bert, albert = _chain(tmp_path, "bert_like", 6), _chain(tmp_path, "albert_like", 1)
    (found,) = compare([auditor.audit(bert), auditor.audit(albert)]).findings
    assert found.evidence["baseline"] == str(bert) and found.evidence["model"] == str(albert)
    # 1,024 unique parameters against 6,144, in human units
    assert f"{albert} has 0.167x the unique parameters of {bert} (1.02k vs 6.14k)" in found.message
