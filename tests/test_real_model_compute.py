"""MACs of real transformers exports (both exporters) against ``torch.utils.flop_counter``.

The oracle runs the same torch model on the same inputs under ``FlopCounterMode``, with
scaled-dot-product attention on its math backend: the fused CPU kernel is not registered with
the flop counter, which would then miss attention's two matrix products. torch counts 2 FLOPs
per multiply-accumulate of matrix products only, so its total is compared with ``2 * macs``.

The legacy (TorchScript) exporter turns transformers' ``logits_to_keep`` argument into a graph
input and computes the logits of the last position only (onnxruntime returns [batch, vocab]);
for those exports the oracle runs torch with ``logits_to_keep=1``, the computation in the file.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxscript")

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import auditor  # noqa: E402
import zoo  # noqa: E402
from auditor.graph import ShapeRequest  # noqa: E402

pytestmark = pytest.mark.slow

EXPORTERS = {"dynamo": True, "legacy": False}
MODELS = [*zoo.BUILDERS, *zoo.MOE_BUILDERS, "per_expert_moe"]


def _torch_flops(model: zoo.Model, inputs: dict[str, torch.Tensor], **extra: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(**inputs, **extra)
    return int(counter.get_total_flops())


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("name", MODELS)
def test_macs_match_torch_flop_counter(name: str, exporter: str, zoo_dir: Path) -> None:
    exported = zoo.exported(name, EXPORTERS[exporter], zoo_dir)
    graph_inputs = {i.name for i in onnx.load(exported.path, load_external_data=False).graph.input}
    extra = {"logits_to_keep": 1} if "logits_to_keep" in graph_inputs else {}
    expected = _torch_flops(exported.model, exported.inputs, **extra)
    shapes = ShapeRequest(input_shapes={k: tuple(v.shape) for k, v in exported.inputs.items()})
    report = auditor.audit(exported.path, shapes=shapes)
    assert report.compute is not None
    assert 2 * report.compute.macs == pytest.approx(expected, rel=0.03)
    assert not report.compute.uncosted_ops
    if name == "per_expert_moe":  # each expert's tokens at their expectation: 2 x 8 tokens x k=2 / n=4
        tokens = exported.inputs["input_ids"].numel()
        assert report.compute.routed_tokens and set(report.compute.routed_tokens.values()) == {tokens * 2 / 4}
