"""Real transformers exports: the auditor's counts against the torch model's own.

Five tiny models (``tests/zoo.py``) x both torch exporters (dynamo; legacy TorchScript). Each
exporter stores parameters in its own way: Linear weights pre-transposed for MatMul (under a new
name, the original dropped), a tied embedding stored once for Gather plus a transposed copy for
the LM head, ALBERT's shared FFN weights transposed once per layer application by dynamo. After
merging those copies, ``unique_params`` must be the model's own ``num_parameters()`` (within
0.5%), and ``applied_params`` must not depend on how the exporter represented the sharing.

Each (model, exporter) is built, exported and audited once per session; the whole module takes
about a minute on two cores (dynamo exports dominate: T5 ~16 s).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxscript")

import auditor  # noqa: E402
import zoo  # noqa: E402  (tests/ is on sys.path: rootdir-relative test modules)
from auditor.report.model import Report  # noqa: E402

pytestmark = pytest.mark.slow

MODELS = list(zoo.BUILDERS)
EXPORTERS = {"dynamo": True, "legacy": False}


@functools.lru_cache(maxsize=None)
def _audit(path: Path) -> Report:
    return auditor.audit(path)


def _case(name: str, exporter: str, folder: Path) -> tuple[zoo.Exported, Report]:
    exported = zoo.exported(name, EXPORTERS[exporter], folder)
    return exported, _audit(exported.path)


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("name", MODELS)
def test_unique_params_match_torch(name: str, exporter: str, zoo_dir: Path) -> None:
    exported, report = _case(name, exporter, zoo_dir)
    expected = exported.model.num_parameters()
    unique = report.counts.unique_params
    assert abs(unique - expected) <= 0.005 * expected, (
        f"{name}/{exporter}: unique_params={unique}, torch num_parameters={expected} "
        f"(stored_params={report.counts.stored_params}); copies merged: "
        + ", ".join(f"{g.relation} {list(g.tensors)}" for g in report.duplicates)
    )


def test_albert_oracle_counts_the_shared_layer_per_application() -> None:
    """The hook oracle itself, against arithmetic on the torch model: every parameter once, the
    shared layer (num_hidden_layers - 1) more times, the tied word embeddings once more (lookup
    and decoder)."""
    model, inputs = zoo.built("albert")
    layer = model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    layer_params = sum(p.numel() for p in layer.parameters())
    words = model.albert.embeddings.word_embeddings.weight.numel()
    expected = model.num_parameters() + (model.config.num_hidden_layers - 1) * layer_params + words
    assert zoo.torch_applied_params(model, inputs) == expected


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_albert_applied_params_match_torch(exporter: str, zoo_dir: Path) -> None:
    """One shared layer applied num_hidden_layers times, whether the exporter reuses one tensor
    (legacy) or stores a transposed copy per application (dynamo, for the FFN weights)."""
    exported, report = _case("albert", exporter, zoo_dir)
    expected = zoo.torch_applied_params(exported.model, exported.inputs)
    assert report.counts.applied_params == expected, (
        f"albert/{exporter}: applied_params={report.counts.applied_params}, torch oracle={expected}"
    )


@pytest.mark.parametrize("name", MODELS)
def test_applied_params_do_not_depend_on_the_exporter(name: str, zoo_dir: Path) -> None:
    """Both exports give torch's own applied count (forward-hook oracle), hence each other's."""
    exported, dynamo = _case(name, "dynamo", zoo_dir)
    _, legacy = _case(name, "legacy", zoo_dir)
    assert dynamo.counts.applied_params == legacy.counts.applied_params, (
        f"{name}: dynamo applied={dynamo.counts.applied_params}, legacy applied={legacy.counts.applied_params}"
    )
    assert dynamo.counts.applied_params == zoo.torch_applied_params(exported.model, exported.inputs)
