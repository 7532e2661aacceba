"""Repeated blocks as a reviewer reads them: blocks on layer boundaries, savings within the unique
count, distances in words, and AUD108 only where sharing is plausible.

Models are written here with onnx.helper (names as the legacy exporter writes them, as the dynamo
exporter writes them, and without scopes), plus the tiny transformers BERT of ``tests/zoo.py``
exported with both torch exporters. Expected numbers come from the construction (shapes) or from
the torch model, never from the auditor.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.analyses.blocks import DISTANCE_WORDS, MIN_SHARE, distance_band
from auditor.findings import human
from auditor.report.json_report import render_json

RNG = np.random.default_rng(20261128)
H = 16  # hidden size of the helper-built models
HEAD = H * 8  # an output head outside the blocks


def _save(
    tmp_path: Path, nodes: list[Any], inits: dict[str, np.ndarray], output: str, name: str = "m.onnx", width: int = H
) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, None])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _names(naming: str, layer: int, part: str, counter: list[int]) -> tuple[str, str, str, str]:
    """(weight, bias, MatMul node, Add node) names of one Linear, as an exporter writes them:
    legacy: scoped node names, weights 'onnx::MatMul_N'; dynamo: 'node_MatMul_N' and 'val_N',
    biases under their module path; plain: no scope anywhere."""
    counter[0] += 1
    n = counter[0]
    if naming == "legacy":
        scope = f"/encoder/layer.{layer}/{part}"
        return f"onnx::MatMul_{n}", f"encoder.layer.{layer}.{part}.bias", f"{scope}/MatMul", f"{scope}/Add"
    if naming == "dynamo":
        return f"val_{n}", f"encoder.layer.{layer}.{part}.bias", f"node_MatMul_{n}", f"node_linear_{n}"
    return f"w{n}", f"b{n}", f"MatMul_{n}", f"Add_{n}"


def _layers_model(tmp_path: Path, naming: str, layers: int, values: Any) -> tuple[Path, list[list[str]]]:
    """``layers`` layers of Linear(up) -> Relu -> Linear(down) (+ residual), then a head MatMul.
    ``values(layer, part, shape)`` gives each tensor. Returns the path and each layer's tensors
    in execution order."""
    nodes: list[Any] = []
    inits: dict[str, np.ndarray] = {}
    per_layer: list[list[str]] = []
    counter = [0]
    x = "x"
    for j in range(layers):
        tensors = []
        h = x
        for part, act in (("up", True), ("down", False)):
            w, b, mm, add = _names(naming, j, part, counter)
            inits[w], inits[b] = values(j, part, (H, H)), values(j, f"{part}.bias", (H,))
            nodes += [helper.make_node("MatMul", [h, w], [f"{mm}_out"], name=mm),
                      helper.make_node("Add", [f"{mm}_out", b], [f"{add}_out"], name=add)]  # fmt: skip
            h = f"{add}_out"
            if act:
                nodes.append(helper.make_node("Relu", [h], [f"relu{j}"], name=f"Relu_{j}"))
                h = f"relu{j}"
            tensors += [w, b]
        nodes.append(helper.make_node("Add", [x, h], [f"res{j}"], name=f"Residual_{j}"))
        x = f"res{j}"
        per_layer.append(tensors)
    inits["head.weight"] = RNG.standard_normal((H, HEAD // H)).astype(np.float32)
    nodes.append(helper.make_node("MatMul", [x, "head.weight"], ["y"], name="head"))
    return _save(tmp_path, nodes, inits, "y", f"{naming}.onnx"), per_layer


PER_LAYER = 2 * (H * H + H)  # up and down Linear, weight + bias each


def _noisy_copies(noise: float) -> Any:
    """Every layer: one base set of weights plus independent noise of relative size ``noise``."""
    base: dict[str, np.ndarray] = {}

    def values(layer: int, part: str, shape: tuple[int, ...]) -> np.ndarray:
        if part not in base:
            base[part] = RNG.standard_normal(shape).astype(np.float32)
        return (base[part] + noise * RNG.standard_normal(shape)).astype(np.float32)

    return values


def _unrelated(layer: int, part: str, shape: tuple[int, ...]) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# ---- (b) copies plus tiny noise: AUD108 with words and hand-computed savings ----------------


@pytest.mark.parametrize("naming", ["legacy", "dynamo", "plain"])
def test_nearly_identical_layers_are_a_finding(tmp_path: Path, naming: str) -> None:
    layers = 4
    path, per_layer = _layers_model(tmp_path, naming, layers, _noisy_copies(1e-3))
    report = auditor.audit(path)
    unique = layers * PER_LAYER + HEAD
    assert report.counts.unique_params == unique
    assert len(report.repeated_blocks) == 1
    family = report.repeated_blocks[0]
    assert [list(b) for b in family.blocks] == per_layer  # one block per layer, in order
    if naming == "plain":
        assert family.delimited_by == "structure" and family.block_names == ()
    else:
        assert family.delimited_by == "scope"
        assert family.block_names == tuple(f"encoder.layer.{j}" for j in range(layers))
    saved = (layers - 1) * PER_LAYER  # by hand: 3 x 544
    assert family.params_per_block == PER_LAYER
    assert family.saved_params_if_shared == saved
    assert family.saved_bytes_if_shared == 4 * saved
    assert family.saved_params_if_pairs_shared == (layers // 2) * PER_LAYER
    assert family.saved_share_of_unique == pytest.approx(saved / unique, abs=1e-6)
    assert family.share_of_unique == pytest.approx(layers * PER_LAYER / unique, abs=1e-6)
    # relative noise 1e-3 on both sides of each pair: d = sqrt(2) * 1e-3
    assert family.block_distance == pytest.approx(np.sqrt(2) * 1e-3, rel=0.2)
    assert family.distance_words == "nearly identical" and family.sharing_plausible is True
    [aud108] = [f for f in report.findings if f.code == "AUD108"]
    assert "nearly identical" in aud108.message
    assert human(saved) in aud108.message and f"{saved / unique:.0%} of the {human(unique)} unique" in aud108.message
    assert not re.search(r"\d+% apart", aud108.message)
    assert aud108.evidence["saved_params_if_shared"] == saved
    assert aud108.evidence["distance_words"] == "nearly identical"


def test_close_layers_are_a_finding_and_render(tmp_path: Path, rep_validator: Any) -> None:
    """Noise of 20%: 'close'; the JSON report carries the new fields and still validates."""
    path, _ = _layers_model(tmp_path, "legacy", 4, _noisy_copies(0.2))
    report = auditor.audit(path)
    family = report.repeated_blocks[0]
    assert family.distance_words == "close" and family.sharing_plausible is True
    assert any(f.code == "AUD108" and "already close" in f.message for f in report.findings)
    doc = json.loads(render_json(report))
    rep_validator.validate(doc)
    item = doc["repeated_blocks"][0]
    assert item["distance_words"] == "close" and item["delimited_by"] == "scope"
    assert item["block_names"] == [f"encoder.layer.{j}" for j in range(4)]


# ---- unrelated layers: structure, not a finding ---------------------------------------------


@pytest.mark.parametrize("naming", ["legacy", "dynamo", "plain"])
def test_unrelated_layers_stay_in_the_report_without_a_finding(tmp_path: Path, naming: str) -> None:
    path, per_layer = _layers_model(tmp_path, naming, 4, _unrelated)
    report = auditor.audit(path)
    [family] = report.repeated_blocks
    assert [list(b) for b in family.blocks] == per_layer
    assert family.distance_words == DISTANCE_WORDS["unrelated"] == "as far apart as unrelated random weights"
    assert family.block_distance == pytest.approx(np.sqrt(2), abs=0.15)
    assert family.sharing_plausible is False
    assert not any(f.code == "AUD108" for f in report.findings)


def _prenorm_model(tmp_path: Path, layers: int, prefix: str = "model.layers", extra: bool = False) -> tuple[Path, list[list[str]]]:
    """Pre-norm, bias-free layers as the dynamo exporter writes them: LayerNormalization with a
    named scale (``{prefix}.N.norm.weight``, values near 1, as trained norms hold), then
    MatMul(val_up) -> Relu -> MatMul(val_down) + residual; weights small (std 0.02) and
    unrelated. The next layer's norm sits closer downstream of a layer's down projection than
    its own norm upstream. ``extra``: a Dense after the stack under another top-level index
    (sentence-transformers: ``0.auto_model...`` then ``2.linear``)."""
    nodes: list[Any] = []
    inits: dict[str, np.ndarray] = {}
    per_layer = []
    x = "x"
    for j in range(layers):
        gamma, beta = f"{prefix}.{j}.norm.weight", f"{prefix}.{j}.norm.bias"
        up, down = f"val_{2 * j}", f"val_{2 * j + 1}"
        inits[gamma] = (1 + 0.05 * RNG.standard_normal(H)).astype(np.float32)
        inits[beta] = (0.05 * RNG.standard_normal(H)).astype(np.float32)
        inits[up], inits[down] = (0.02 * RNG.standard_normal((2, H, H))).astype(np.float32)
        nodes += [
            helper.make_node("LayerNormalization", [x, gamma, beta], [f"ln{j}"], name=f"node_layer_norm_{j}"),
            helper.make_node("MatMul", [f"ln{j}", up], [f"u{j}"], name=f"node_MatMul_{2 * j}"),
            helper.make_node("Relu", [f"u{j}"], [f"r{j}"], name=f"node_relu_{j}"),
            helper.make_node("MatMul", [f"r{j}", down], [f"d{j}"], name=f"node_MatMul_{2 * j + 1}"),
            helper.make_node("Add", [x, f"d{j}"], [f"res{j}"], name=f"node_add_{j}"),
        ]
        x = f"res{j}"
        per_layer.append([gamma, beta, up, down])
    if extra:
        inits["2.linear.weight"] = (0.02 * RNG.standard_normal((H, H))).astype(np.float32)
        nodes.append(helper.make_node("MatMul", [x, "2.linear.weight"], ["y"], name="node_dense"))
        x = "y"
    return _save(tmp_path, nodes, inits, x), per_layer


def test_prenorm_bias_free_layers_keep_their_last_projection(tmp_path: Path) -> None:
    """Each block is one layer: its norm, up and down projections (the down projection is not
    pulled into the next layer by the norm right after it)."""
    path, per_layer = _prenorm_model(tmp_path, 4)
    [family] = auditor.audit(path).repeated_blocks
    assert [list(b) for b in family.blocks] == per_layer
    assert family.block_names == tuple(f"model.layers.{j}" for j in range(4))


def test_norm_scales_do_not_make_unrelated_layers_close(tmp_path: Path) -> None:
    """Norm scales near 1 are alike in every layer and hold most of the norm of a layer whose
    matrices hold small values: averaged by elements, the layers still read as unrelated."""
    path, _ = _prenorm_model(tmp_path, 4)
    report = auditor.audit(path)
    [family] = report.repeated_blocks
    assert family.distances[0].adjacent[0] is not None and family.distances[0].adjacent[0] < 0.2  # the scales: close
    assert family.distance_words == DISTANCE_WORDS["unrelated"] and family.sharing_plausible is False
    assert not any(f.code == "AUD108" for f in report.findings)


def test_blocks_inside_a_wrapper_module(tmp_path: Path) -> None:
    """sentence-transformers names: the layers are ``0.auto_model.encoder.layer.N``; the top
    level (``0``, ``2``) repeats nothing, so the layers one index deeper are the blocks."""
    path, per_layer = _prenorm_model(tmp_path, 3, prefix="0.auto_model.encoder.layer", extra=True)
    [family] = auditor.audit(path).repeated_blocks
    assert [list(b) for b in family.blocks] == per_layer
    assert family.block_names == tuple(f"0.auto_model.encoder.layer.{j}" for j in range(3))


def test_small_repeats_are_not_reported(tmp_path: Path) -> None:
    """Four nearly identical layers that hold under MIN_SHARE of the parameters (beside a large
    table): too small to matter, neither a family in the report nor a finding."""
    path, _ = _layers_model(tmp_path, "legacy", 4, _noisy_copies(1e-3))
    model = onnx.load(str(path))
    table = int(4 * PER_LAYER / MIN_SHARE) // H + H  # rows: the layers hold just under MIN_SHARE
    model.graph.initializer.append(numpy_helper.from_array(RNG.standard_normal((table, H)).astype(np.float32), "table"))
    model.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [1]))
    model.graph.node.append(helper.make_node("Gather", ["table", "ids"], ["row"], name="lookup"))
    model.graph.output.append(helper.make_tensor_value_info("row", TensorProto.FLOAT, [1, H]))
    onnx.save(model, path)
    report = auditor.audit(path)
    assert 4 * PER_LAYER < MIN_SHARE * report.counts.unique_params
    assert report.repeated_blocks == ()
    assert not any(f.code == "AUD108" for f in report.findings)


def test_decoder_layers_with_cross_attention_and_an_odd_first_layer(tmp_path: Path) -> None:
    """T5-like decoder under dynamo names: each layer's K projection reads the encoder's output
    (whose named norm is its nearest named node) yet belongs to its layer; the first layer also
    holds a small relative-position table the others lack, and joins the family without it."""
    nodes: list[Any] = [helper.make_node("LayerNormalization", ["x", "encoder.final_norm.weight"], ["enc"], name="node_ln_enc")]
    inits: dict[str, np.ndarray] = {"encoder.final_norm.weight": (1 + 0.05 * RNG.standard_normal(H)).astype(np.float32)}
    expected = []
    x = "x"
    for j in range(3):
        norm, q, k, o, ob = (f"decoder.layers.{j}.norm.weight", f"val_{10 * j}", f"val_{10 * j + 1}", f"val_{10 * j + 2}",
                             f"decoder.layers.{j}.o.bias")  # fmt: skip
        inits[norm] = (1 + 0.05 * RNG.standard_normal(H)).astype(np.float32)
        inits[q], inits[k], inits[o] = RNG.standard_normal((3, H, H)).astype(np.float32)
        inits[ob] = RNG.standard_normal(H).astype(np.float32)
        nodes += [
            helper.make_node("LayerNormalization", [x, norm], [f"n{j}"], name=f"node_ln_{j}"),
            helper.make_node("MatMul", [f"n{j}", q], [f"q{j}"], name=f"node_MatMul_q{j}"),
            helper.make_node("MatMul", ["enc", k], [f"k{j}"], name=f"node_MatMul_k{j}"),
            helper.make_node("Mul", [f"q{j}", f"k{j}"], [f"s{j}"], name=f"node_mul_{j}"),
        ]
        scores = f"s{j}"
        block = [norm, q, k]
        if j == 0:
            inits["decoder.layers.0.rel_bias.weight"] = RNG.standard_normal((2, H)).astype(np.float32)
            nodes += [helper.make_node("Gather", ["decoder.layers.0.rel_bias.weight", "pos"], ["bias_row"], name="node_embedding"),
                      helper.make_node("Add", ["s0", "bias_row"], ["sb0"], name="node_add_bias")]  # fmt: skip
            scores = "sb0"
        nodes += [
            helper.make_node("MatMul", [scores, o], [f"o{j}"], name=f"node_MatMul_o{j}"),
            helper.make_node("Add", [f"o{j}", ob], [f"ob{j}"], name=f"node_linear_o{j}"),
            helper.make_node("Add", [x, f"ob{j}"], [f"res{j}"], name=f"node_add_{j}"),
        ]
        x = f"res{j}"
        expected.append([*block, o, ob])
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, H]),
                     helper.make_tensor_value_info("pos", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, H])],
        [numpy_helper.from_array(v, name) for name, v in inits.items()],
    )  # fmt: skip
    path = tmp_path / "decoder.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    [family] = auditor.audit(path).repeated_blocks
    assert family.block_names == ("decoder.layers.0", "decoder.layers.1", "decoder.layers.2")
    assert [list(b) for b in family.blocks] == expected  # the table of layer 0 left out


# ---- (c) two projections of one layer --------------------------------------------------------


@pytest.mark.parametrize("named", [True, False])
def test_two_projections_of_one_layer_are_no_finding(tmp_path: Path, named: bool) -> None:
    """K and V (same shape, unrelated values) read the same input: structurally equal, but
    halves of one layer, not two layers."""
    k, v = ("layer.0.attention.key.weight", "layer.0.attention.value.weight") if named else ("k", "v")
    nodes = [
        helper.make_node("MatMul", ["x", k], ["kx"], name="/layer.0/attention/key/MatMul" if named else "mk"),
        helper.make_node("MatMul", ["x", v], ["vx"], name="/layer.0/attention/value/MatMul" if named else "mv"),
        helper.make_node("Mul", ["kx", "vx"], ["y"], name="combine"),
    ]
    inits = {k: RNG.standard_normal((H, H)).astype(np.float32), v: RNG.standard_normal((H, H)).astype(np.float32)}
    report = auditor.audit(_save(tmp_path, nodes, inits, "y"))
    assert report.repeated_blocks == ()  # two blocks inside one layer (named), or two without scopes
    assert not any(f.code == "AUD108" for f in report.findings)


def test_projections_inside_layers_do_not_become_blocks(tmp_path: Path) -> None:
    """Layers of Q, K, V, O projections under dynamo-style names: the blocks are the layers,
    never the projections of one layer, and unrelated weights give no finding."""
    nodes: list[Any] = []
    inits: dict[str, np.ndarray] = {}
    x = "x"
    for j in range(3):
        outs = []
        for p, part in enumerate(("query", "key", "value")):
            w, b = f"val_{10 * j + p}", f"enc.layer.{j}.attention.{part}.bias"
            inits[w], inits[b] = RNG.standard_normal((H, H)).astype(np.float32), RNG.standard_normal(H).astype(np.float32)
            nodes += [helper.make_node("MatMul", [x, w], [f"m{j}{p}"], name=f"node_MatMul_{j}{p}"),
                      helper.make_node("Add", [f"m{j}{p}", b], [f"a{j}{p}"], name=f"node_linear_{j}{p}")]  # fmt: skip
            outs.append(f"a{j}{p}")
        nodes += [helper.make_node("Mul", outs[:2], [f"qk{j}"], name=f"node_mul_{j}"),
                  helper.make_node("Mul", [f"qk{j}", outs[2]], [f"att{j}"], name=f"node_mul2_{j}")]  # fmt: skip
        w, b = f"val_{10 * j + 9}", f"enc.layer.{j}.attention.output.bias"
        inits[w], inits[b] = RNG.standard_normal((H, H)).astype(np.float32), RNG.standard_normal(H).astype(np.float32)
        nodes += [helper.make_node("MatMul", [f"att{j}", w], [f"o{j}"], name=f"node_MatMul_{j}9"),
                  helper.make_node("Add", [f"o{j}", b], [f"out{j}"], name=f"node_linear_{j}9")]  # fmt: skip
        x = f"out{j}"
    report = auditor.audit(_save(tmp_path, nodes, inits, x))
    [family] = report.repeated_blocks
    assert family.block_names == ("enc.layer.0", "enc.layer.1", "enc.layer.2")
    for j, block in enumerate(family.blocks):
        assert len(block) == 8
        assert {t for t in block if not t.startswith("val_")} == {
            f"enc.layer.{j}.attention.{p}.bias" for p in ("query", "key", "value", "output")
        }
        assert {int(t[4:]) // 10 for t in block if t.startswith("val_")} == {j}
    assert family.sharing_plausible is False
    assert not any(f.code == "AUD108" for f in report.findings)


def test_two_equal_heads_without_scopes_are_not_blocks(tmp_path: Path) -> None:
    """A box head and a class head of one shape (conv-less stand-ins: MatMul, Relu, MatMul on
    one feature): two structural repeats are too little evidence without names."""
    nodes: list[Any] = []
    inits: dict[str, np.ndarray] = {}
    for head in ("box", "cls"):
        for i in range(2):
            inits[f"{head}{i}"] = RNG.standard_normal((H, H)).astype(np.float32)
        nodes += [helper.make_node("MatMul", ["x", f"{head}0"], [f"{head}_h"]),
                  helper.make_node("Relu", [f"{head}_h"], [f"{head}_r"]),
                  helper.make_node("MatMul", [f"{head}_r", f"{head}1"], [f"{head}_y"])]  # fmt: skip
    nodes.append(helper.make_node("Add", ["box_y", "cls_y"], ["y"]))
    report = auditor.audit(_save(tmp_path, nodes, inits, "y"))
    assert report.repeated_blocks == ()
    assert not any(f.code == "AUD108" for f in report.findings)


# ---- (d) savings within the unique count -----------------------------------------------------


def test_savings_never_exceed_unique_when_blocks_overlap(tmp_path: Path) -> None:
    """Six layers that alternate between two sets of weights, each layer storing its own copy
    (A, B, A', B', A'', B''): structurally six blocks, but only two distinct ones. Counting
    block by block against the first would 'save' three layers (B, B', B'') of a model whose
    unique count holds two; sharing can save one layer (B), no more."""
    sets = [{part: RNG.standard_normal(shape).astype(np.float32)
             for part, shape in (("up", (H, H)), ("up.bias", (H,)), ("down", (H, H)), ("down.bias", (H,)))}
            for _ in range(2)]  # fmt: skip
    path, per_layer = _layers_model(tmp_path, "plain", 6, lambda layer, part, shape: sets[layer % 2][part].copy())
    report = auditor.audit(path)
    unique = 2 * PER_LAYER + HEAD
    assert report.counts.unique_params == unique
    [family] = report.repeated_blocks
    assert [list(b) for b in family.blocks] == per_layer
    assert family.params_per_block == PER_LAYER
    assert family.saved_params_if_shared == PER_LAYER  # (2 distinct - 1) x per block
    assert family.saved_params_if_shared <= unique - family.params_per_block
    assert family.saved_params_if_pairs_shared == PER_LAYER  # kept: blocks 0, 2, 4 = A, A', A'' (one A)
    assert 0 < family.saved_share_of_unique <= 1 and family.share_of_unique <= 1
    assert family.distance_words == DISTANCE_WORDS["unrelated"]  # A next to B everywhere
    assert not any(f.code == "AUD108" for f in report.findings)


SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.onnx")))
def test_sample_savings_are_within_the_unique_count(name: str) -> None:
    report = auditor.audit(SAMPLES / name)
    for family in report.repeated_blocks:
        assert family.saved_params_if_shared <= report.counts.unique_params - family.params_per_block
        assert family.share_of_unique >= MIN_SHARE
        assert family.distance_words in DISTANCE_WORDS.values()


# ---- boundaries without scopes ----------------------------------------------------------------


def test_structural_blocks_do_not_split_a_module(tmp_path: Path) -> None:
    """Paddle-style names (``conv2d_N.w_0``, ``conv2d_N.b_0``, the bias added by a separate
    node; N a counter, not a layer index). A stem ends with a bias like every block does, so the
    repeat, extended back over equal ops and shapes, would begin at the stem's bias and cut every
    block through a layer (``conv2d_7.b_0, conv2d_100.w_0, ...``); blocks begin where a module
    begins instead."""
    nodes: list[Any] = []
    inits: dict[str, np.ndarray] = {}
    width = 8
    inits["conv2d_7.w_0"] = RNG.standard_normal((width, H)).astype(np.float32)
    inits["conv2d_7.b_0"] = RNG.standard_normal(H).astype(np.float32)
    nodes += [helper.make_node("MatMul", ["x", "conv2d_7.w_0"], ["stem_mm"]),
              helper.make_node("Add", ["stem_mm", "conv2d_7.b_0"], ["stem"])]  # fmt: skip
    x = "stem"
    expected = []
    for j in range(4):
        block = []
        for i in range(2):
            n = 100 + 37 * j + 5 * i
            w, b = f"conv2d_{n}.w_0", f"conv2d_{n}.b_0"
            inits[w], inits[b] = RNG.standard_normal((H, H)).astype(np.float32), RNG.standard_normal(H).astype(np.float32)
            nodes += [helper.make_node("MatMul", [x, w], [f"{w}_out"]), helper.make_node("Add", [f"{w}_out", b], [f"{b}_out"])]
            x = f"{b}_out"
            block += [w, b]
        nodes.append(helper.make_node("Relu", [x], [f"r{j}"]))
        x = f"r{j}"
        expected.append(block)
    report = auditor.audit(_save(tmp_path, nodes, inits, x, width=width))
    [family] = report.repeated_blocks
    assert family.delimited_by == "structure"
    assert [list(b) for b in family.blocks] == expected


# ---- distance words ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "distance, cosine, band",
    [(None, None, "unknown"), (0.0, 1.0, "nearly identical"), (0.04, 1.0, "nearly identical"), (0.3, 0.95, "close"),
     (0.8, 0.6, "partly related"), (1.41, 0.0, "unrelated"), (1.25, None, "unrelated"),
     (1.12, 0.01, "unrelated"),  # unrelated weights of norms in ratio 1:2 sit at sqrt(1.25)
     (1.9, -0.8, "unrelated")],
)  # fmt: skip
def test_distance_bands(distance: float | None, cosine: float | None, band: str) -> None:
    assert distance_band(distance, cosine) == band


# ---- (a) a real tiny BERT, both exporters -------------------------------------------------------

def _torch_names(exported: Any) -> dict[str, str]:
    """ONNX initializer -> the torch parameter whose values it holds (as is or transposed):
    an oracle for where a tensor belongs that does not read names the exporter wrote."""
    model = onnx.load(str(exported.path))
    params = {name: p.detach().numpy() for name, p in exported.model.named_parameters()}
    found = {}
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        for name, p in params.items():
            if values.shape == p.shape and np.array_equal(values, p) or (
                values.ndim == 2 and values.shape == p.T.shape and np.array_equal(values, p.T)
            ):
                found[tensor.name] = name
                break
    return found


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_bert_layers_are_the_blocks_and_unrelated(exporter: str, zoo_dir: Path) -> None:
    """Each block is one whole encoder layer (by the torch oracle), savings are (k-1) layers,
    and the layers' independent random weights read as unrelated: no finding."""
    pytest.importorskip("transformers")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    import zoo  # tests/ is on sys.path

    exported = zoo.exported("bert", exporter == "dynamo", zoo_dir)
    report = auditor.audit(exported.path)
    torch_of = _torch_names(exported)
    layers = exported.model.config.num_hidden_layers
    layer_params = {name: p.numel() for name, p in exported.model.named_parameters() if ".encoder.layer." in name}
    per_layer = sum(layer_params.values()) // layers
    unique = report.counts.unique_params
    assert report.repeated_blocks
    family = report.repeated_blocks[0]
    assert len(family.blocks) == layers
    for j, block in enumerate(family.blocks):
        owners = {torch_of[t] for t in block}
        assert {re.match(r"bert\.encoder\.layer\.(\d+)\.", o).group(1) for o in owners} == {str(j)}  # type: ignore[union-attr]
        assert owners == {n for n in layer_params if n.startswith(f"bert.encoder.layer.{j}.")}  # the whole layer
    assert family.block_names == tuple(f"bert.encoder.layer.{j}" for j in range(layers))
    assert family.params_per_block == per_layer
    assert family.saved_params_if_shared == (layers - 1) * per_layer <= unique
    assert family.saved_share_of_unique == pytest.approx((layers - 1) * per_layer / unique, abs=1e-6)
    for other in report.repeated_blocks:
        assert other.saved_params_if_shared <= unique and other.share_of_unique >= MIN_SHARE
    assert family.distance_words == "as far apart as unrelated random weights"
    assert family.sharing_plausible is False
    assert not any(f.code == "AUD108" for f in report.findings)


def test_boundary_means_are_numpys_bit_for_bit() -> None:
    """Block boundaries are averaged without numpy for short lists: the same float as np.mean."""
    import random

    from auditor.analyses.blocks import _mean

    rng = random.Random(7)
    for n in list(range(1, 12)) * 300:
        values = [rng.uniform(0.0, 2.0) * 10 ** rng.randint(-8, 3) for _ in range(n)]
        assert _mean(values) == float(np.mean(values))
