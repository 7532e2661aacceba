"""torch's own account (``ground_truth``) of transformers models built from configs, against torch.

- ``unique_params`` is ``sum(p.numel() for p in model.parameters())`` exactly;
- tie groups are the names ``named_parameters(remove_duplicate=False)`` gives one Parameter object;
- ALBERT applies its one shared layer ``num_hidden_layers`` times: applied = that layer's
  parameters x num_hidden_layers + every other parameter once + the word embeddings a second time
  (the decoder tied to them applies the table again).
"""

from __future__ import annotations

from collections import defaultdict

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import zoo  # noqa: E402
from auditor.load.torch_module import ground_truth  # noqa: E402

pytestmark = pytest.mark.slow

MODELS = ["albert", "bert", "gpt2", "t5", "mixtral", "qwen2_moe"]


@pytest.mark.parametrize("name", MODELS)
def test_unique_params_and_ties_match_torch(name: str) -> None:
    model, inputs = zoo.built(name)
    truth = ground_truth(model, inputs, digests=False)
    assert truth.unique_params == sum(p.numel() for p in model.parameters())
    names: dict[int, list[str]] = defaultdict(list)
    for param_name, param in model.named_parameters(remove_duplicate=False):
        names[id(param)].append(param_name)
    expected = sorted(sorted(group) for group in names.values() if len(group) > 1)
    assert sorted(sorted(t.names) for t in truth.ties) == expected
    assert truth.applied_params is not None and truth.applied_params >= truth.unique_params - sum(
        p.numel for p in truth.parameters if p.names[0] in truth.uncalled
    )


def test_albert_applies_its_shared_layer_once_per_depth() -> None:
    model, inputs = zoo.built("albert")
    truth = ground_truth(model, inputs, digests=False)
    layer = model.albert.encoder.albert_layer_groups[0]
    layer_params = sum(p.numel() for p in layer.parameters())
    table = model.albert.embeddings.word_embeddings.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    depth = model.config.num_hidden_layers
    assert truth.applied_params == layer_params * depth + (total - layer_params) + table


def test_module_tree_adds_up_to_torch_counts() -> None:
    model, inputs = zoo.built("albert")
    truth = ground_truth(model, inputs, digests=False)
    tree = truth.by_top_module
    assert set(tree) == {name for name, _ in model.named_children()}
    assert sum(n for n, _ in tree.values()) == truth.unique_params
    assert sum(a or 0 for _, a in tree.values()) == truth.applied_params


def test_albert_folder_gets_its_applied_count_from_the_architecture(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Hugging Face folder has no graph, but the architecture built from config.json on the meta
    device runs one forward (shapes only): its applied count is the one worked out above."""
    import auditor

    model, _ = zoo.built("albert")
    model.save_pretrained(tmp_path / "albert")
    report = auditor.audit(tmp_path / "albert")
    layer = sum(p.numel() for p in model.albert.encoder.albert_layer_groups[0].parameters())
    total = sum(p.numel() for p in model.parameters())
    table = model.albert.embeddings.word_embeddings.weight.numel()
    assert report.counts.unique_params == total
    assert report.counts.applied_params == layer * model.config.num_hidden_layers + (total - layer) + table
    assert not any(section.startswith("applied") for section in report.absent)
    assert "AUD102" in {f.code for f in report.findings}  # the shared layer hides compute, now visible
