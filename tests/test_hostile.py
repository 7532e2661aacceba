"""Malformed and hostile files: the audit ends quickly with a count or a one-line error (exit
2), never a hang, a traceback, or a lost file. Each case runs the real console script in a
child process with a time limit, so a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

AUDIT = str(Path(sys.executable).with_name("audit"))
vi = helper.make_tensor_value_info


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUDIT, *args], capture_output=True, text=True, timeout=timeout)


def _one_line_error(done: subprocess.CompletedProcess[str], slug: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audit: error:") and f"[{slug}]" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def _model(nodes, inits, path: Path, functions=(), inputs=None, outputs=None) -> Path:
    graph = helper.make_graph(
        nodes, "g", inputs or [vi("x", TensorProto.FLOAT, [1, 4])], outputs or [vi("y", TensorProto.FLOAT, [1, 4])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("local", 1)],
                              functions=list(functions))  # fmt: skip
    onnx.save(model, path)
    return path


def _loop(m: np.ndarray, cond_nodes, tmp_path: Path, name: str) -> Path:
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "W"], ["x_out"]), *cond_nodes],
        "body",
        [vi("i", TensorProto.INT64, []), vi("c_in", TensorProto.BOOL, []), vi("x_in", TensorProto.FLOAT, [1, 4])],
        [vi("c_out", TensorProto.BOOL, []), vi("x_out", TensorProto.FLOAT, [1, 4])],
    )
    inits = [numpy_helper.from_array(m, "M"), numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "W")]
    return _model([helper.make_node("Loop", ["M", "", "x"], ["y"], body=body)], inits, tmp_path / name)


def test_identity_cycle_in_a_loop_condition_does_not_hang(tmp_path: Path) -> None:
    path = _loop(np.array(3, np.int64), [helper.make_node("Identity", ["c_out"], ["c_out"])], tmp_path, "cycle.onnx")
    done = _run(str(path), "--json", str(tmp_path / "r.json"), "-q")
    assert done.returncode == 0, done.stderr
    import json

    loop = json.loads((tmp_path / "r.json").read_text())["loops"][0]
    assert loop["trip_count"] is None  # a condition that feeds itself is not a pass-through


def test_functions_calling_functions_are_counted_without_exponential_work(tmp_path: Path) -> None:
    """f0 applies a 4x4 constant weight; f_k calls f_{k-1} twice; the graph calls f_40 once:
    the weight is applied 2**40 times."""
    depth = 40
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.arange(16, dtype=np.float32).tolist())
    functions = [helper.make_function("local", "f0", ["a"], ["b"], [
        helper.make_node("Constant", [], ["w"], value=weight), helper.make_node("MatMul", ["a", "w"], ["b"])],
        [helper.make_opsetid("", 19)])]  # fmt: skip
    for k in range(1, depth + 1):
        functions.append(helper.make_function("local", f"f{k}", ["a"], ["b"], [
            helper.make_node(f"f{k - 1}", ["a"], ["h"], domain="local"),
            helper.make_node(f"f{k - 1}", ["h"], ["b"], domain="local")],
            [helper.make_opsetid("", 19), helper.make_opsetid("local", 1)]))  # fmt: skip
    path = _model([helper.make_node(f"f{depth}", ["x"], ["y"], domain="local")], [], tmp_path / "fn.onnx", functions)
    done = _run(str(path), "--json", str(tmp_path / "r.json"), "-q", timeout=60)
    assert done.returncode == 0, done.stderr
    import json

    counts = json.loads((tmp_path / "r.json").read_text())["counts"]
    assert counts["stored_params"] == 16
    assert counts["applied_params"] == 16 * 2**depth


def test_trip_counts_that_are_negative_or_not_integers(tmp_path: Path) -> None:
    import json

    passthrough = [helper.make_node("Identity", ["c_in"], ["c_out"])]
    negative = _loop(np.array(-5, np.int64), passthrough, tmp_path, "neg.onnx")
    assert _run(str(negative), "--json", str(tmp_path / "neg.json"), "-q").returncode == 0
    report = json.loads((tmp_path / "neg.json").read_text())
    assert report["counts"]["applied_params"] == 0  # ONNX runs a loop with M <= 0 zero times
    assert report["loops"][0]["trip_count"] == 0
    not_int = _loop(np.array(np.nan, np.float32), passthrough, tmp_path, "nan.onnx")
    assert _run(str(not_int), "--json", str(tmp_path / "nan.json"), "-q").returncode == 0
    report = json.loads((tmp_path / "nan.json").read_text())
    assert report["counts"]["applied_params"] is None
    assert report["counts"]["applied_params_lower_bound"] == 16


def test_names_defined_twice_are_refused(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    path = _model([helper.make_node("MatMul", ["x", "W"], ["y"])], [w, w], tmp_path / "dup.onnx")
    _one_line_error(_run(str(path)), "invalid-model")


def test_unknown_dtype_and_malformed_dequantization(tmp_path: Path) -> None:
    bad = TensorProto(name="W", data_type=99, dims=[4, 4], raw_data=b"\0" * 64)
    path = _model([helper.make_node("MatMul", ["x", "W"], ["y"])], [bad], tmp_path / "dtype.onnx")
    _one_line_error(_run(str(path)), "invalid-model")
    # a per-axis scale that fits no axis of the weight: nothing can be related, nothing crashes
    q = numpy_helper.from_array(np.ones((4, 4), np.int8), "Q")
    scale = numpy_helper.from_array(np.ones(3, np.float32), "s")
    f = numpy_helper.from_array(np.ones((4, 4), np.float32), "F")
    nodes = [helper.make_node("DequantizeLinear", ["Q", "s"], ["Qd"], axis=1),
             helper.make_node("MatMul", ["x", "Qd"], ["h"]), helper.make_node("MatMul", ["h", "F"], ["y"])]  # fmt: skip
    path = _model(nodes, [q, scale, f], tmp_path / "dq.onnx")
    done = _run(str(path), "-q")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_report_never_overwrites_the_models_weights(tmp_path: Path) -> None:
    model = helper.make_model(
        helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g", [vi("x", TensorProto.FLOAT, [1, 4])],
                          [vi("y", TensorProto.FLOAT, [1, 4])],
                          [numpy_helper.from_array(np.ones((4, 4), np.float32), "W")]),
        opset_imports=[helper.make_opsetid("", 19)],
    )  # fmt: skip
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="m.bin", size_threshold=0)
    before = (tmp_path / "m.bin").read_bytes()
    _one_line_error(_run(str(path), "--json", str(tmp_path / "m.bin"), "--force", "-q"), "output-is-input")
    assert (tmp_path / "m.bin").read_bytes() == before


def test_graphml_holds_names_with_control_characters(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W\x01odd")
    path = _model([helper.make_node("MatMul", ["x", "W\x01odd"], ["y"])], [w], tmp_path / "ctrl.onnx")
    assert _run(str(path), "--graphml", str(tmp_path / "g.graphml"), "-q").returncode == 0
    graph = nx.read_graphml(tmp_path / "g.graphml")
    assert "value:W\\x01odd" in graph


def test_a_name_defined_inside_a_branch_is_not_visible_after_it(tmp_path: Path) -> None:
    """'inner' is defined inside the If's then-branch; a main-graph node after the If reads it.
    That name does not exist in the main graph: refused in one line, never resolved silently."""
    then_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["inner"]), helper.make_node("Neg", ["inner"], ["t"])], "then", [],
                                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])  # fmt: skip
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("If", ["flag"], ["z"], then_branch=then_branch, else_branch=else_branch),
             helper.make_node("Add", ["z", "inner"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "leak", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                                              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])  # fmt: skip
    path = tmp_path / "leak.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    done = _run(str(path), "-q")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "'inner'" in done.stderr and "never defined" in done.stderr
