"""Shared fixtures for the report, CLI and packaging tests.

Every fixture here is named ``rep_*`` so that fixtures added by other test files never clash.
Each model fixture builds a tiny ONNX file whose counts are worked out by hand below (the
comment next to each model says how), and returns it with those expected numbers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


# Launch flags for Debian's chromium: no sandbox (containers), and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the transformers exports of a session (``zoo.exported`` caches per folder)."""
    return tmp_path_factory.mktemp("zoo")


@dataclass(frozen=True)
class RepModel:
    """A model file written for a test, with the numbers the auditor must report for it."""

    path: Path
    counts: Mapping[str, Any]  # the JSON report's "counts", worked out by hand
    findings: tuple[str, ...]  # finding codes, in report order
    duplicates: tuple[Mapping[str, Any], ...] = ()
    shared: tuple[Mapping[str, Any], ...] = ()
    loops: tuple[Mapping[str, Any], ...] = ()
    graph: Mapping[str, Any] = field(default_factory=dict)  # expected GraphML node/edge counts


def _counts(
    stored: int,
    unique: int,
    applied: int | None,
    lower: int,
    embedding: int,
    tensors: int,
    unused: int = 0,
) -> dict[str, Any]:
    """Counts of an all-float32 model (4 bytes per parameter)."""
    return {
        "stored_params": stored,
        "stored_bytes": 4 * stored,
        "unique_params": unique,
        "unique_bytes": 4 * unique,
        "applied_params": applied,
        "applied_params_lower_bound": lower,
        "embedding_params": embedding,
        "unused_params": unused,
        "generated_params": 0,
        "parameter_tensors": tensors,
        "by_dtype": {"float32": {"params": stored, "bytes": 4 * stored}},
        "active_params": unique,  # no routed experts in these models
        "initial_value_params": 0,
        "initial_value_tensors": 0,
        "wasted_params": stored - unique,
        "wasted_bytes": 4 * (stored - unique),
    }


def _save(graph: onnx.GraphProto, path: Path, producer: str = "rep-tests") -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _weights(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _vi(name: str, elem: int, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


@pytest.fixture(scope="session")
def rep_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the test models (outputs go to each test's own tmp_path)."""
    return tmp_path_factory.mktemp("rep_models")


@pytest.fixture(scope="session")
def rep_tied_model(rep_models_dir: Path) -> RepModel:
    """A tied embedding and LM head, plus a stored copy of the table.

    E[100,16] (1600 params) is read by Gather(E, ids) (an embedding lookup on the input ids) and,
    through Transpose, by MatMul(emb, E^T) (the tied head): 2 uses. E2 is a byte-identical copy
    of E (1600 params) read by one MatMul.

    stored  = 1600 + 1600           = 3200  (12800 bytes)
    unique  = 3200 - 1600 (E2 == E) = 1600  (6400 bytes)
    applied = 1600 * 2 + 1600 * 1   = 4800
    embedding = 1600 (E is the Gather table; E2 is not)
    Findings: AUD101 stored-copies (warning), AUD102 applied/unique = 3.0 >= 2 (warning),
    AUD104 embedding share 1600/1600 > 0.5 (info).
    """
    table = _weights((100, 16), seed=1)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
            helper.make_node("Transpose", ["E"], ["E_t"], name="tie", perm=[1, 0]),
            helper.make_node("MatMul", ["emb", "E_t"], ["logits"], name="head"),
            helper.make_node("MatMul", ["logits", "E2"], ["proj"], name="proj"),
        ],
        "tied",
        [_vi("ids", TensorProto.INT64, [4])],
        [_vi("logits", TensorProto.FLOAT, [4, 100]), _vi("proj", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(table, "E"), numpy_helper.from_array(table.copy(), "E2")],
    )
    return RepModel(
        path=_save(graph, rep_models_dir / "tied.onnx"),
        counts=_counts(stored=3200, unique=1600, applied=4800, lower=4800, embedding=1600, tensors=2),
        findings=("AUD101", "AUD102", "AUD104"),
        duplicates=({"tensors": ["E", "E2"], "relation": "identical", "wasted_params": 1600, "wasted_bytes": 6400},),
        shared=({"tensor": "E", "params": 1600, "uses": 2, "applications": 2,
                 "consumers": ["Gather embed", "MatMul head"]},),  # fmt: skip
        # 4 ops; 2 stored tensors (E, E2); 5 other values (ids, emb, E_t, logits, proj); 1 scope.
        # Edges: 4 contains, 7 reads (2 + 1 + 2 + 2), 4 writes.
        graph={
            "op": 4,
            "tensor": 2,
            "value": 5,
            "scope": 1,
            "op_types": {"Gather": 1, "Transpose": 1, "MatMul": 2},
            "edges": {"contains": 4, "reads": 7, "writes": 4},
        },
    )


@pytest.fixture(scope="session")
def rep_clean_model(rep_models_dir: Path) -> RepModel:
    """A linear layer, nothing to report: W[16,8] (128) + b[8] (8) = 136 params, each applied once."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="linear"),
            helper.make_node("Add", ["h", "b"], ["y"], name="bias"),
        ],
        "clean",
        [_vi("x", TensorProto.FLOAT, [2, 16])],
        [_vi("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(_weights((16, 8), 2), "W"), numpy_helper.from_array(_weights((8,), 3), "b")],
    )
    return RepModel(
        path=_save(graph, rep_models_dir / "clean.onnx"),
        counts=_counts(stored=136, unique=136, applied=136, lower=136, embedding=0, tensors=2),
        findings=(),
    )


@pytest.fixture(scope="session")
def rep_copy_model(rep_models_dir: Path) -> RepModel:
    """A stored copy and nothing else to report.

    W[16,8] and its identical copy W2 each feed one MatMul; V[8,4] follows their sum.
    stored = 128 + 128 + 32 = 288, unique = 288 - 128 = 160, applied = 288 (each tensor once;
    288 / 160 = 1.8 < 2, so no AUD102). Findings: AUD101 (warning) only.
    """
    w = _weights((16, 8), 4)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["a"], name="left"),
            helper.make_node("MatMul", ["x", "W2"], ["b"], name="right"),
            helper.make_node("Add", ["a", "b"], ["s"], name="sum"),
            helper.make_node("MatMul", ["s", "V"], ["y"], name="out"),
        ],
        "copy",
        [_vi("x", TensorProto.FLOAT, [2, 16])],
        [_vi("y", TensorProto.FLOAT, [2, 4])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(w.copy(), "W2"),
            numpy_helper.from_array(_weights((8, 4), 5), "V"),
        ],
    )
    return RepModel(
        path=_save(graph, rep_models_dir / "copy.onnx"),
        counts=_counts(stored=288, unique=160, applied=288, lower=288, embedding=0, tensors=3),
        findings=("AUD101",),
        duplicates=({"tensors": ["W", "W2"], "relation": "identical", "wasted_params": 128, "wasted_bytes": 512},),
    )


@pytest.fixture(scope="session")
def rep_loop_model(rep_models_dir: Path) -> RepModel:
    """A Loop whose trip count M is a runtime input, its body applying W[8,8] (64 params).

    applied is unknown (null); the lower bound runs the loop once: 64. Findings: AUD105 (warning).
    """
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "W"], ["x_out"], name="step"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
        ],
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []), _vi("x_in", TensorProto.FLOAT, [1, 8])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("x_out", TensorProto.FLOAT, [1, 8])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y"], name="loop", body=body)],
        "loop",
        [_vi("M", TensorProto.INT64, []), _vi("x", TensorProto.FLOAT, [1, 8])],
        [_vi("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(_weights((8, 8), 6), "W")],
    )
    return RepModel(
        path=_save(graph, rep_models_dir / "loop.onnx"),
        counts=_counts(stored=64, unique=64, applied=None, lower=64, embedding=0, tensors=1),
        findings=("AUD105",),
        loops=({"node": "loop", "op_type": "Loop", "trip_count": None},),  # plus a non-empty "reason"
    )


@pytest.fixture(scope="session")
def rep_schema() -> dict[str, Any]:
    """The JSON report's schema, read the way an installed copy would find it."""
    text = resources.files("auditor.report").joinpath("report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@pytest.fixture(scope="session")
def rep_validator(rep_schema: dict[str, Any]) -> Any:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(rep_schema)
    return jsonschema.Draft202012Validator(rep_schema)


@dataclass(frozen=True)
class CliResult:
    rc: int
    out: str
    err: str


@pytest.fixture
def rep_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``audit`` in-process: ``rep_cli(model, "--json", path)`` -> CliResult(rc, out, err)."""
    from auditor.cli import main

    def run(*argv: object) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        rc = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def rep_browser() -> Iterator[Any]:
    """Headless Debian chromium driven by playwright (never a downloaded browser)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium is not installed (make browser installs Debian's package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def rep_quantized_blocks_model(rep_models_dir: Path) -> RepModel:
    """Six int8-quantized layers: DequantizeLinear(Q_i[16,16], scale_i) -> MatMul -> Relu.

    Q_i are parameters (the data input of DequantizeLinear; the one-element scales are not):
    stored = unique = applied = 6 * 256 = 1536, 1536 bytes (int8). The auditor finds the middle
    layers as repeated blocks; their distances cannot be computed on the float path (int8).
    """
    rng = np.random.default_rng(7)
    nodes, inits, previous = [], [], "x"
    for i in range(6):
        nodes += [
            helper.make_node("DequantizeLinear", [f"Q{i}", f"s{i}"], [f"W{i}"], name=f"dq{i}"),
            helper.make_node("MatMul", [previous, f"W{i}"], [f"h{i}"], name=f"mm{i}"),
            helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        inits += [
            numpy_helper.from_array(rng.integers(-127, 128, (16, 16)).astype(np.int8), f"Q{i}"),
            numpy_helper.from_array(np.array(0.01 + 0.001 * i, np.float32), f"s{i}"),
        ]
        previous = f"r{i}"
    graph = helper.make_graph(
        nodes, "quantized_blocks", [_vi("x", TensorProto.FLOAT, [2, 16])], [_vi(previous, TensorProto.FLOAT, [2, 16])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], producer_name="rep-tests")
    onnx.checker.check_model(model, full_check=True)
    path = rep_models_dir / "quantized_blocks.onnx"
    onnx.save(model, str(path))
    counts = {
        "stored_params": 1536, "stored_bytes": 1536, "unique_params": 1536, "unique_bytes": 1536,
        "applied_params": 1536, "applied_params_lower_bound": 1536, "embedding_params": 0, "unused_params": 0,
        "generated_params": 0, "parameter_tensors": 6, "by_dtype": {"int8": {"params": 1536, "bytes": 1536}},
        "active_params": 1536, "initial_value_params": 0, "initial_value_tensors": 0, "wasted_params": 0,
        "wasted_bytes": 0,
    }  # fmt: skip
    # six layers of unrelated random int8 weights: repeated structure, but nothing says sharing
    # would work (the distance of non-float weights is not measured), so no AUD108
    return RepModel(path=path, counts=counts, findings=())
