"""Counts that hold on real exports beyond dense trained models: routed experts and untrained weights.

- Tiny Mixtral and Qwen2-MoE (``tests/zoo.py``), both exporters: each token runs k of the n
  experts of a routed layer. ``active_params`` must equal torch's count of the parameters one
  token uses, and ``applied_params`` the forward-hook count with each bank counted as k of n
  experts. Both exports store the rotary ``inv_freq`` buffer like a weight (read once), so each
  figure is torch's plus that buffer's elements, taken from the torch model itself.
- BERT and GPT-2 straight after construction (LayerNorm weights of one, zero biases), both
  exporters: ``unique_params`` must be torch's ``num_parameters()``: tensors of initial values
  are neither copies nor ties, and a merged one counts once per weight input.
"""

from __future__ import annotations

import functools
from pathlib import Path

import onnx
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxscript")

import auditor  # noqa: E402
import zoo  # noqa: E402
from auditor.report.model import Report  # noqa: E402

pytestmark = pytest.mark.slow

EXPORTERS = {"dynamo": True, "legacy": False}


@pytest.fixture(scope="session")
def export_dir(zoo_dir: Path) -> Path:
    return zoo_dir  # one export per model and exporter, shared with the other zoo tests


@functools.lru_cache(maxsize=None)
def _audit(path: Path) -> Report:
    return auditor.audit(path)


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("name", list(zoo.MOE_BUILDERS))
def test_moe_active_and_applied_match_torch(name: str, exporter: str, export_dir: Path) -> None:
    exported = zoo.exported(name, EXPORTERS[exporter], export_dir)
    model, report = exported.model, _audit(exported.path)
    buffers = zoo.float_buffer_elements(model)
    layers = zoo.expert_layers(model)
    counts = report.counts
    assert counts.unique_params == model.num_parameters() + buffers
    assert counts.active_params == zoo.torch_active_params(model) + buffers
    assert counts.applied_params == zoo.torch_moe_applied_params(model, exported.inputs) + buffers
    assert counts.active_params < counts.unique_params
    # one bank per projection (gate_up, down) per layer, each k of n, its size per expert from torch
    n, k, per_expert = layers[0]
    assert sorted((b.n, b.k) for b in report.experts) == [(n, k)] * (2 * len(layers))
    assert sum(b.params_per_expert for b in report.experts) == per_expert * len(layers)
    # the expert banks are read by the router's choice, not by token ids: not embeddings
    assert counts.embedding_params == model.get_input_embeddings().weight.numel()
    codes = {f.code for f in report.findings}
    assert "AUD111" in codes and "AUD104" not in codes


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_per_expert_weights_count_k_of_n(exporter: str, export_dir: Path) -> None:
    """The classic layout: each expert its own Linears, applied to the tokens the router sent to
    it (``torch.where`` + ``index_add_``). The 12 expert matrices are one router's 4 experts."""
    exported = zoo.exported("per_expert_moe", EXPORTERS[exporter], export_dir)
    model, report = exported.model, _audit(exported.path)
    counts = report.counts
    assert counts.unique_params == model.num_parameters()
    assert counts.active_params == zoo.torch_active_params(model)
    assert counts.applied_params == zoo.torch_moe_applied_params(model, exported.inputs)
    ((n, k, per_expert),) = zoo.expert_layers(model)
    assert [(b.n, b.k, b.params_per_expert, len(b.tensors)) for b in report.experts] == [(n, k, per_expert, 3 * n)]
    assert counts.embedding_params == model.embed.weight.numel()


def test_experts_unrolled_one_at_a_time(export_dir: Path) -> None:
    """transformers' ``eager`` experts, which the legacy exporter unrolls for the experts the
    example input hits (here all 4 in both layers): one Gather of one expert per unrolled step.
    Legacy exporter only: torch.export rejects the loop, whose length depends on the data."""
    exported = zoo.exported("mixtral_eager", False, export_dir)
    model, report = exported.model, _audit(exported.path)
    buffers = zoo.float_buffer_elements(model)
    assert report.counts.active_params == zoo.torch_active_params(model) + buffers
    assert report.counts.applied_params == zoo.torch_moe_applied_params(model, exported.inputs) + buffers
    assert report.shared == ()  # four gathers of one expert each: every element applied once


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("name", list(zoo.UNTRAINED_BUILDERS))
def test_untrained_export_counts_as_torch(name: str, exporter: str, export_dir: Path) -> None:
    exported = zoo.exported(f"untrained_{name}", EXPORTERS[exporter], export_dir)
    model, report = exported.model, _audit(exported.path)
    expected = model.num_parameters()
    dropped = 0
    if name == "gpt2" and exporter == "dynamo":
        # The dynamo exporter's optimiser drops zero biases: GPT-2's Conv1D layers become Gemm
        # nodes without a bias input, so c_attn/c_proj/c_fc biases (all zero) are not in the file.
        proto = onnx.load(str(exported.path))
        assert all(len(node.input) == 2 for node in proto.graph.node if node.op_type == "Gemm")
        biases = [p for n, p in model.named_parameters() if n.endswith(("c_attn.bias", "c_proj.bias", "c_fc.bias"))]
        assert biases and all(not p.any() for p in biases)
        dropped = sum(p.numel() for p in biases)
    assert report.counts.unique_params == expected - dropped
    assert report.counts.initial_value_tensors > 0
    codes = {f.code for f in report.findings}
    assert "AUD110" in codes
    # no initial value is called a copy or a tie
    initial = {s.tensor for s in report.shared} | {t for g in report.duplicates for t in g.tensors}
    ones_or_zeros = [
        n for n, p in model.named_parameters() if p.numel() > 1 and bool((p == p.flatten()[0]).all())
    ]
    assert ones_or_zeros
    assert not any(tensor.endswith(("LayerNorm.weight", "LayerNorm.bias", "ln_1.weight", "ln_1.bias", "ln_2.weight",
                                    "ln_2.bias", "ln_f.weight", "ln_f.bias")) for tensor in initial)  # fmt: skip
