"""``audit compare``: models side by side, ratios to the baseline, and AUD115 misleading-param-ratio.

The pair: a BERT-like chain of 6 MatMuls with 6 distinct 32x32 weights, and an ALBERT-like chain
applying one 32x32 weight 6 times. By hand: 6144 vs 1024 unique parameters (ratio 1/6) and the
same MACs, 6 x 8 x 32 x 32 = 49152 each (ratio 1): the parameter ratio is off 6-fold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.comparison import compare

AUDIT = [sys.executable, "-m", "auditor.cli"]
ROOT = Path(__file__).resolve().parent.parent
MACS = 6 * 8 * 32 * 32


def _chain(tmp_path: Path, name: str, shared: bool) -> Path:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), f"w{i}") for i in range(1 if shared else 6)]
    nodes, x = [], "x"
    for i in range(6):
        nodes.append(helper.make_node("MatMul", [x, weights[0 if shared else i].name], [f"h{i}"]))
        x = f"h{i}"
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], weights)  # fmt: skip
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return _chain(tmp_path, "bert_like", shared=False), _chain(tmp_path, "albert_like", shared=True)


def test_ratios_and_the_misleading_param_ratio(pair: tuple[Path, Path]) -> None:
    bert, albert = (auditor.audit(p) for p in pair)
    assert bert.counts.unique_params == 6144 and albert.counts.unique_params == 1024
    assert bert.compute is not None and albert.compute is not None and bert.compute.macs == albert.compute.macs == MACS
    comparison = compare([bert, albert])
    other = comparison.models[1]
    assert other.ratios["unique_params"] == pytest.approx(1024 / 6144)
    assert other.ratios["macs"] == pytest.approx(1.0)
    assert comparison.models[0].ratios["unique_params"] == 1.0
    (found,) = comparison.findings
    assert found.code == "AUD115" and found.evidence["param_ratio"] == pytest.approx(1024 / 6144, rel=1e-5)
    assert "MACs" in found.message and [s.kind for s in found.subjects] == ["model", "model"]


def test_a_higher_ratio_factor_silences_it(pair: tuple[Path, Path]) -> None:
    reports = [auditor.audit(p) for p in pair]
    assert compare(reports, ratio_factor=7.0).findings == ()


def test_models_whose_ratios_agree_raise_nothing(tmp_path: Path) -> None:
    a = auditor.audit(_chain(tmp_path, "a", shared=False))
    b = auditor.audit(_chain(tmp_path, "b", shared=False))
    assert compare([a, b]).findings == ()


def test_cli_compare_writes_json_and_gates_ci(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    done = subprocess.run([*AUDIT, "compare", *map(str, pair), "--json", str(out), "-q"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr  # AUD115 is a warning; the default gate is error
    document = json.loads(out.read_text())
    assert document["kind"] == "comparison" and [m["path"] for m in document["models"]] == list(map(str, pair))
    assert document["models"][1]["ratios"]["unique_params"] == pytest.approx(1024 / 6144, rel=1e-5)
    assert [f["code"] for f in document["findings"]] == ["AUD115"]
    schema = json.loads((ROOT / "auditor/report/report.schema.json").read_text())
    for model in document["models"]:
        jsonschema.validate(model["report"], schema)
    done = subprocess.run([*AUDIT, "compare", *map(str, pair), "--fail-on", "warning", "-q"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1


@pytest.mark.parametrize("extra", [[], ["--ratio-factor", "1"], ["--graphml", "g.xml"]])
def test_cli_compare_usage_errors(pair: tuple[Path, Path], extra: list[str]) -> None:
    models = [str(pair[0])] if not extra else list(map(str, pair))
    done = subprocess.run([*AUDIT, "compare", *models, *extra, "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
