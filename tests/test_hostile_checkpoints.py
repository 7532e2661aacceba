"""Hostile and odd inputs found in review: each one a clear one-line refusal or a right answer,
never a hang or a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.load.shapes import evaluate_dim

torch = pytest.importorskip("torch")

AUDIT = [sys.executable, "-m", "auditor.cli"]


def test_shared_references_do_not_explode_the_walk(tmp_path: Path) -> None:
    """A dict holding the same dict twice, 40 deep: 2^40 paths, one object per level."""
    nested: dict[str, object] = {"w": torch.zeros(2)}
    for _ in range(40):
        nested = {"a": nested, "b": nested}
    path = tmp_path / "laughs.pt"
    torch.save({"model": {"layer.weight": torch.ones(3, 3)}, "extra": nested}, path)
    start = time.monotonic()
    report = auditor.audit(path)
    assert time.monotonic() - start < 30
    assert report.counts.unique_params == 9


def test_a_dtype_numpy_lacks_is_read_as_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "fnuz.pt"
    torch.save({"a.weight": torch.randn(4, 4).to(torch.float8_e4m3fnuz), "b.weight": torch.randn(3)}, path)
    report = auditor.audit(path)
    assert report.counts.stored_params == 16 + 3


def test_a_config_asking_for_absurd_depth_is_not_built(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from safetensors.torch import save_file

    folder = tmp_path / "huge"
    folder.mkdir()
    config = {"architectures": ["BertModel"], "model_type": "bert", "num_hidden_layers": 1_000_000_000,
              "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(10, 8)}, str(folder / "model.safetensors"))
    start = time.monotonic()
    report = auditor.audit(folder)
    assert time.monotonic() - start < 30
    assert report.checkpoint is not None and report.checkpoint.architecture is None
    assert "num_hidden_layers = 1,000,000,000" in report.checkpoint.architecture_note


def test_a_config_outside_the_folder_is_not_read(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"model_type": "bert", "transformers_version": "SECRET"}))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").symlink_to(outside)
    save_file({"w": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    done = subprocess.run([*AUDIT, str(folder), "--json", str(tmp_path / "r.json"), "-q"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "[external-data-outside]" in done.stderr and "SECRET" not in done.stderr


def test_odd_name_scope_metadata_is_ignored() -> None:
    from auditor.load.onnx_file import _source

    node = helper.make_node("Relu", ["x"], ["y"], name="n")
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", "{[]: 1}"  # a TypeError inside literal_eval
    assert _source(node) == ""


def test_sizes_are_computed_exactly() -> None:
    assert evaluate_dim("ceiling(s0/2)", {"s0": 5}) == 3
    assert evaluate_dim("floor(s0/2)", {"s0": 5}) == 2
    assert evaluate_dim("s0/2", {"s0": 5}) is None  # not a whole size


def test_absurd_dims_are_unknown_not_infinite(tmp_path: Path) -> None:
    big = [10**15] * 24
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, big)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])  # fmt: skip
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    report = auditor.audit(path)
    assert report.compute is not None and report.compute.unknown_shape_ops == {"Relu": 1}


def test_a_few_float32_norms_beside_float16_weights_are_no_finding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float16), "w")
    scale = numpy_helper.from_array(rng.standard_normal(64).astype(np.float16).astype(np.float32), "scale")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cast", ["h"], ["h32"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["h32", "scale"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, scale])  # fmt: skip
    path = tmp_path / "mixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    assert "AUD113" not in {f.code for f in auditor.audit(path).findings}  # 256 B of 8.4 KiB in float32
