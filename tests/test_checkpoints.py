"""Weights-only audits of checkpoints: every count checked against torch's own numbers.

The zoo, each written here to ``tmp_path``: ``TiedNet`` (an embedding tied to the output head,
a BatchNorm) saved as safetensors, sharded safetensors, a torch state dict (zip and legacy) and a
full training checkpoint with optimizer state; tiny BERT and GPT-2 folders saved by transformers;
a GGUF file written with the gguf package; and hostile files (a pickle that would create a
marker file, shards escaping their folder, absurd headers). The oracle is always torch:
``sum(p.numel() for p in model.parameters())`` for parameters, ``buffers()`` for the rest.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402 - after the skip: every checkpoint here is written by torch

from auditor.audit import analyse
from auditor.errors import AuditError
from auditor.graph import ModelGraph
from auditor.load.checkpoint import checkpoint_format, load_checkpoint, load_checkpoint_details
from auditor.report.json_report import render_json


def safetensors_torch() -> Any:
    """safetensors' torch helpers (writing only: the loader parses safetensors itself)."""
    return pytest.importorskip("safetensors.torch")


class TiedNet(nn.Module):
    """An embedding tied to the output head (one Parameter, two names) and a BatchNorm (two
    parameters, three buffers: running mean, running variance, batches seen)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)
        self.norm = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.proj(self.embed(ids))))


def tied_net() -> TiedNet:
    torch.manual_seed(0)
    return TiedNet()


def torch_params(model: nn.Module) -> int:
    """torch's count: parameters() yields a tied Parameter once."""
    return sum(p.numel() for p in model.parameters())


def torch_buffers(model: nn.Module) -> int:
    return sum(b.numel() for b in model.buffers())


def audited(path: Path) -> tuple[ModelGraph, object]:
    graph = load_checkpoint(path)
    assert not graph.has_graph and set(graph.scopes) == {""}
    return graph, analyse(graph)


def refused(path: Path, *slugs: str) -> AuditError:
    with pytest.raises(AuditError) as caught:
        load_checkpoint(path)
    assert caught.value.slug in slugs, caught.value
    assert "\n" not in str(caught.value)
    return caught.value


# ---- (a) safetensors ----------------------------------------------------------------------


def test_safetensors_saved_by_save_model_counts_the_tie_once(tmp_path: Path) -> None:
    """save_model drops the tie's second name: one tensor stored, counted once, nothing copied."""
    model = tied_net()
    path = tmp_path / "tied.safetensors"
    safetensors_torch().save_model(model, str(path))
    graph, report = audited(path)
    assert checkpoint_format(path) == "safetensors" and graph.source == "safetensors"
    assert report.counts.unique_params == report.counts.stored_params == torch_params(model) == 1104
    assert report.counts.wasted_params == 0 and report.duplicates == ()
    assert ("embed.weight" in graph.tensors) != ("head.weight" in graph.tensors)
    apart = {n.name: n for n in graph.not_parameters}
    assert set(apart) == {"norm.running_mean", "norm.running_var", "norm.num_batches_tracked"}
    assert {n.kind for n in apart.values()} == {"running statistic"}
    assert sum(n.numel for n in apart.values()) == torch_buffers(model)
    assert apart["norm.num_batches_tracked"].dtype == "int64"
    np.testing.assert_array_equal(graph.tensors["proj.weight"].read(), model.proj.weight.detach().numpy())
    assert graph.tensors["proj.weight"].external is not None  # memory-mapped from the file


def test_bfloat16_safetensors_read_as_their_values(tmp_path: Path) -> None:
    """numpy has no bfloat16: the bytes are mapped as ml_dtypes' type and read as the same values."""
    values = torch.randn(8, 8).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    safetensors_torch().save_file({"w": values}, str(path))
    graph, report = audited(path)
    tensor = graph.tensors["w"]
    assert tensor.dtype == "bfloat16" and tensor.nbytes == 128
    np.testing.assert_array_equal(np.asarray(tensor.read(), dtype=np.float32), values.float().numpy())
    assert report.counts.by_dtype["bfloat16"].params == 64


# ---- (b) sharded safetensors --------------------------------------------------------------


def write_shards(folder: Path, shards: dict[str, dict[str, torch.Tensor]], weight_map: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for file, tensors in shards.items():
        safetensors_torch().save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(folder / file))
    if weight_map is None:
        weight_map = {name: file for file, tensors in shards.items() for name in tensors}
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def test_sharded_safetensors_with_a_tie_stored_twice_is_a_copy(tmp_path: Path) -> None:
    """Shards listed by an index; the head stored as its own tensor (a clone of the embedding) is
    a copy: stored twice, counted once in unique."""
    model = tied_net()
    state = model.state_dict()
    index = write_shards(
        tmp_path / "sharded",
        {
            "model-00001-of-00002.safetensors": {k: state[k] for k in ("embed.weight", "proj.weight", "proj.bias")},
            "model-00002-of-00002.safetensors": {
                **{k: v for k, v in state.items() if k.startswith("norm.")},
                "head.weight": state["head.weight"].clone(),
            },
        },
    )
    graph, report = audited(index)
    assert checkpoint_format(index) == "index" and graph.source == "safetensors"
    assert report.counts.unique_params == torch_params(model)
    assert report.counts.stored_params == torch_params(model) + 800
    assert [(g.tensors, g.relation) for g in report.duplicates] == [(("embed.weight", "head.weight"), "identical")]
    assert graph.external_data_bytes == sum(p.stat().st_size for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert sum(n.numel for n in graph.not_parameters) == torch_buffers(model)


# ---- (c) torch state dicts ----------------------------------------------------------------


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_torch_state_dict_keeps_the_tie_as_an_alias(tmp_path: Path, zipped: bool) -> None:
    """torch.save keeps both names on one storage: one tensor kept, the other name an alias."""
    model = tied_net()
    path = tmp_path / "tied.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zipped)
    graph, report = audited(path)
    assert checkpoint_format(path) == ("torch-zip" if zipped else "torch-pickle")
    assert graph.source == "torch-state-dict"
    assert graph.aliases == {"head.weight": "embed.weight"}
    assert report.counts.unique_params == report.counts.stored_params == torch_params(model)
    assert [(s.tensor, s.uses, s.applications, s.consumers) for s in report.shared] == [
        ("embed.weight", 2, None, ("embed.weight", "head.weight"))
    ]
    assert sum(n.numel for n in graph.not_parameters) == torch_buffers(model)
    np.testing.assert_array_equal(graph.tensors["embed.weight"].read(), model.embed.weight.detach().numpy())


def test_views_into_one_storage(tmp_path: Path) -> None:
    """A view inside another tensor's storage is an alias (its elements are the other's, counted
    once); disjoint views of one storage with no whole tensor saved are separate parameters."""
    model = tied_net()
    state = dict(model.state_dict())
    state["rows"] = model.embed.weight.detach()[10:20]  # inside embed.weight
    fused = torch.randn(48, 16)
    state["q.weight"], state["k.weight"], state["v.weight"] = fused[:16], fused[16:32], fused[32:]
    path = tmp_path / "views.pt"
    torch.save(state, path)
    graph, report = audited(path)
    assert graph.aliases == {"head.weight": "embed.weight", "rows": "embed.weight"}
    assert {"q.weight", "k.weight", "v.weight"} <= set(graph.tensors)
    assert report.counts.unique_params == torch_params(model) + fused.numel()
    np.testing.assert_array_equal(graph.tensors["k.weight"].read(), fused[16:32].numpy())


def test_buffers_told_by_name_without_an_architecture(tmp_path: Path) -> None:
    """Without a config: integer tensors, rotary inverse frequencies and GPT-2's stored causal
    mask are buffers; every other float tensor, one-element ones included, is a parameter."""
    state = {
        "w": torch.randn(4, 4), "scale": torch.tensor(2.0), "rotary.inv_freq": torch.rand(8),
        "h.0.attn.bias": torch.ones(1, 1, 8, 8), "h.0.attn.masked_bias": torch.tensor(-1e4), "ids": torch.arange(8),
    }  # fmt: skip
    path = tmp_path / "named.pt"
    torch.save(state, path)
    graph, report = audited(path)
    assert {n.name: n.kind for n in graph.not_parameters} == {
        "rotary.inv_freq": "buffer", "h.0.attn.bias": "buffer", "h.0.attn.masked_bias": "buffer", "ids": "integer buffer",
    }  # fmt: skip
    assert report.counts.unique_params == 16 + 1 and report.counts.parameter_tensors == 2


# ---- (d) full training checkpoint ---------------------------------------------------------


@pytest.mark.parametrize(
    "make, state_keys",
    [
        (lambda p: torch.optim.Adam(p, lr=1e-3), {"step", "exp_avg", "exp_avg_sq"}),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), {"momentum_buffer"}),
    ],
    ids=["adam", "sgd-momentum"],
)
def test_training_checkpoint_lists_optimizer_state_apart(tmp_path: Path, make, state_keys: set[str]) -> None:  # type: ignore[no-untyped-def]
    """{"model": state_dict, "optimizer": ..., "epoch": 3} after one step: the model's state dict
    is found, optimizer state listed apart with one entry per parameter tensor torch counts."""
    model = tied_net()
    optimizer = make(model.parameters())
    model(torch.randint(0, 50, (8,))).square().mean().backward()
    optimizer.step()
    path = tmp_path / "train.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, path)
    details = load_checkpoint_details(path)
    graph = details.model
    report = analyse(graph)
    assert details.state_dict_path == "model"
    assert report.counts.unique_params == torch_params(model)
    assert graph.aliases == {"head.weight": "embed.weight"}
    by_kind: dict[str, list] = {}
    for entry in graph.not_parameters:
        by_kind.setdefault(entry.kind, []).append(entry)
    assert sum(n.numel for n in by_kind["running statistic"]) == torch_buffers(model)
    optimizer_state = by_kind["optimizer state"]
    assert {n.name.rsplit(".", 1)[-1] for n in optimizer_state} == state_keys
    parameters = list(model.parameters())
    for key in state_keys:
        entries = [n for n in optimizer_state if n.name.endswith("." + key)]
        assert len(entries) == len(parameters)
        expected = len(parameters) if key == "step" else torch_params(model)
        assert sum(n.numel for n in entries) == expected
    assert [(n.name, n.dtype) for n in by_kind["training state"]] == [("epoch", "python int")]


# ---- (e) Hugging Face folders -------------------------------------------------------------


def tiny_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(1)
    return transformers.BertForMaskedLM(config)  # type: ignore[no-any-return]


def tiny_gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=101, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(2)
    return transformers.GPT2LMHeadModel(config)


def tie_groups(model: nn.Module) -> list[set[str]]:
    groups: dict[int, set[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), set()).add(name)
    return [names for names in groups.values() if len(names) > 1]


@pytest.mark.parametrize("build", [tiny_bert, tiny_gpt2], ids=["bert-mlm", "gpt2-lm"])
@pytest.mark.parametrize("shard", [None, "20KB"], ids=["one-file", "sharded"])
def test_hf_folder_counts_ties_once_from_the_architecture(tmp_path: Path, build, shard: str | None) -> None:  # type: ignore[no-untyped-def]
    """save_pretrained (safetensors) stores each tie once; the architecture, built on the meta
    device from config.json, names the tied names, recorded as aliases and shared tensors."""
    model = build()
    folder = tmp_path / "hf"
    if shard is None:
        model.save_pretrained(folder, safe_serialization=True)
    else:
        model.save_pretrained(folder, safe_serialization=True, max_shard_size=shard)
        assert (folder / "model.safetensors.index.json").is_file()
    details = load_checkpoint_details(folder)
    graph = details.model
    report = analyse(graph)
    assert graph.source == "hf-folder" and details.architecture == type(model).__name__
    assert report.counts.unique_params == report.counts.stored_params == torch_params(model)
    assert details.missing == () and details.unexpected == ()
    shared = {frozenset(s.consumers) for s in report.shared}
    assert shared == {frozenset(group) for group in tie_groups(model)}
    assert all(s.applications is None and s.uses == len(s.consumers) for s in report.shared)


def test_hf_folder_with_a_pickled_state_dict(tmp_path: Path) -> None:
    """pytorch_model.bin beside config.json: the tie is one storage (an alias), and an integer
    buffer stored with the weights (position ids) is listed apart."""
    model = tiny_gpt2()
    folder = tmp_path / "hf-bin"
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "model.safetensors").unlink()
    torch.save({**model.state_dict(), "transformer.position_ids": torch.arange(64)[None]}, folder / "pytorch_model.bin")
    graph, report = audited(folder)
    assert graph.aliases == {"lm_head.weight": "transformer.wte.weight"}
    assert report.counts.unique_params == torch_params(model)
    assert [(n.name, n.kind, n.numel) for n in graph.not_parameters] == [("transformer.position_ids", "integer buffer", 64)]


def test_hf_folder_of_base_weights_under_a_head_architecture(tmp_path: Path) -> None:
    """Weights saved without the base model's prefix (BertModel: "encoder...") beside a config
    naming BertForMaskedLM: names are matched with the prefix added, and the head's own
    parameters are reported missing, the tied decoder aside."""
    full = tiny_bert()
    folder = tmp_path / "base"
    full.save_pretrained(folder, safe_serialization=True)
    base = full.bert
    safetensors_torch().save_model(base, str(folder / "model.safetensors"))
    details = load_checkpoint_details(folder)
    report = analyse(details.model)
    assert details.architecture == "BertForMaskedLM" and details.unexpected == ()
    assert set(details.missing) == {n for n, _ in full.named_parameters() if n.startswith("cls.")} - {
        "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
    }  # fmt: skip
    assert report.counts.unique_params == torch_params(base)


def test_lightning_style_checkpoint(tmp_path: Path) -> None:
    """{"state_dict", "optimizer_states": [...], "global_step"}: the state dict under its key,
    the optimizer state found by structure inside a list."""
    model = tied_net()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randint(0, 50, (4,))).sum().backward()
    optimizer.step()
    path = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "optimizer_states": [optimizer.state_dict()], "global_step": 1,
                "rng": torch.get_rng_state()}, path)  # fmt: skip
    details = load_checkpoint_details(path)
    kinds = {n.name: n.kind for n in details.model.not_parameters}
    assert details.state_dict_path == "state_dict"
    assert analyse(details.model).counts.unique_params == torch_params(model)
    assert sum(1 for k in kinds.values() if k == "optimizer state") == 3 * len(list(model.parameters()))
    assert kinds["global_step"] == kinds["rng"] == "training state"


def test_declared_experts_from_config(tmp_path: Path) -> None:
    """A mixture of experts as config.json states it (n experts, k per token)."""
    from auditor.load.checkpoint import declared_experts

    experts = declared_experts({"num_local_experts": 8, "num_experts_per_tok": 2})
    assert experts is not None and (experts.n, experts.k) == (8, 2)
    assert declared_experts({"text_config": {"n_routed_experts": 64, "num_experts_per_tok": 6}}).n == 64  # type: ignore[union-attr]
    assert declared_experts({"hidden_size": 32}) is None


# ---- (f) GGUF -----------------------------------------------------------------------------


def write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, object]], **uints: int) -> None:
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, number in uints.items():
        writer.add_uint32(f"llama.{key}", number)
    for name, (array, qtype) in tensors.items():
        if qtype is None:
            writer.add_tensor(name, array)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_counts_logical_elements_of_quantized_tensors(tmp_path: Path) -> None:
    """An F32 tensor and two Q8_0 tensors (one a byte copy of the other): parameters are the
    logical elements, bytes the packed ones (34 bytes per block of 32), copies found on the bytes."""
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(3)
    dense = rng.standard_normal((8, 32)).astype(np.float32)
    quantized = rng.standard_normal((4, 64)).astype(np.float32)
    q8 = gguf.GGMLQuantizationType.Q8_0
    path = tmp_path / "tiny.gguf"
    write_gguf(
        path,
        {"token_embd.weight": (dense, None), "blk.0.ffn_up.weight": (quantized, q8), "blk.1.ffn_up.weight": (quantized, q8)},
        expert_count=8, expert_used_count=2,
    )  # fmt: skip
    details = load_checkpoint_details(path)
    graph = details.model
    report = analyse(graph)
    assert checkpoint_format(path) == "gguf" and graph.source == "gguf"
    up = graph.tensors["blk.0.ffn_up.weight"]
    assert (up.shape, up.dtype, up.nbytes, up.numel) == ((4, 64), "q8_0", 256 // 32 * 34, 256)
    assert graph.tensors["token_embd.weight"].shape == (8, 32)
    assert report.counts.stored_params == 256 * 3 and report.counts.unique_params == 256 * 2
    assert report.counts.by_dtype["q8_0"].params == 512 and report.counts.by_dtype["q8_0"].bytes == 2 * 272
    assert [(g.tensors, g.relation) for g in report.duplicates] == [(("blk.0.ffn_up.weight", "blk.1.ffn_up.weight"), "identical")]
    np.testing.assert_array_equal(graph.tensors["token_embd.weight"].read(), dense)
    np.testing.assert_allclose(up.read(), quantized, atol=np.abs(quantized).max() / 100)
    assert details.experts is not None and (details.experts.n, details.experts.k) == (8, 2)


# ---- (g) malicious pickles ----------------------------------------------------------------


class Trap:
    """Unpickling this object creates the marker file (what an attack would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("how", ["torch-zip", "torch-legacy", "raw-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    payload = {"w": torch.zeros(3), "x": Trap(marker)}
    if how == "raw-pickle":
        path.write_bytes(pickle.dumps({"x": Trap(marker)}, protocol=4))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=how == "torch-zip")
    assert not marker.exists()
    error = refused(path, "unsafe-pickle")
    assert "open" in error.message  # names the global it wanted
    assert not marker.exists()


def test_malicious_pickle_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.cli import main

    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"x": Trap(marker)}, path)
    assert main([str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[unsafe-pickle]" in err and not marker.exists()


# ---- (h) and other hostile files ----------------------------------------------------------


def test_shard_outside_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    safetensors_torch().save_file({"w": torch.zeros(2)}, str(outside))
    folder = tmp_path / "model"
    folder.mkdir()
    for location in ("../outside.safetensors", str(outside)):
        index = folder / "model.safetensors.index.json"
        index.write_text(json.dumps({"weight_map": {"w": location}}))
        refused(index, "external-data-outside")
    (folder / "link.safetensors").symlink_to(outside)
    index.write_text(json.dumps({"weight_map": {"w": "link.safetensors"}}))
    refused(index, "external-data-outside")
    index.write_text(json.dumps({"weight_map": {"w": "absent.safetensors"}}))
    refused(index, "external-data-missing")


def test_index_naming_a_tensor_its_shard_lacks_is_refused(tmp_path: Path) -> None:
    index = write_shards(tmp_path / "m", {"a.safetensors": {"w": torch.zeros(2)}}, {"w": "a.safetensors", "v": "a.safetensors"})
    refused(index, "invalid-checkpoint")


def safetensors_bytes(header: dict[str, object], data: bytes, header_len: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


@pytest.mark.parametrize(
    "header, data, header_len",
    [
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 1 << 40),  # absurd length
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None),  # beyond the file
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None),  # shape needs 12 bytes
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "v": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, None),  # overlap
        ({"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None),  # unknown dtype
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None),
    ],
    ids=["absurd-header", "beyond-file", "size-mismatch", "overlap", "unknown-dtype", "negative-dim"],
)
def test_malformed_safetensors_is_refused(tmp_path: Path, header: dict[str, object], data: bytes, header_len: int | None) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(safetensors_bytes(header, data, header_len))
    refused(path, "invalid-checkpoint", "not-a-checkpoint")


def test_unknown_and_truncated_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x07" * 64)
    refused(junk, "not-a-checkpoint")
    rng = np.random.default_rng(4)
    good = tmp_path / "good.gguf"
    write_gguf(good, {"w": (rng.standard_normal((4, 32)).astype(np.float32), None)})
    for cut in (40, good.stat().st_size - 16):  # inside the header; inside the tensor data
        truncated = tmp_path / f"truncated{cut}.gguf"
        truncated.write_bytes(good.read_bytes()[:cut])
        refused(truncated, "invalid-checkpoint")
    # arrays claiming 2**60 items (bytes, strings) in a tiny file: refused at once (the gguf
    # package's reader alone loops over empty reads past the end of the file for the bytes)
    for item_type in (0, 8):
        endless = tmp_path / f"endless{item_type}.gguf"
        endless.write_bytes(
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 3) + b"key" + struct.pack("<IIQ", 9, item_type, 1 << 60)
        )
        refused(endless, "invalid-checkpoint")


# ---- the report of a graph-less model -----------------------------------------------------


def test_graphless_report_renders(tmp_path: Path) -> None:
    """A model without nodes: the sections that need a graph are absent and said so, never zeros."""
    import jsonschema

    from auditor.report.html import render_html
    from auditor.report.terminal import render_terminal

    path = tmp_path / "tied.pt"
    torch.save(tied_net().state_dict(), path)
    graph, report = audited(path)
    assert report.compute is None and report.memory is None  # type: ignore[attr-defined]
    assert report.counts.applied_params is None  # type: ignore[attr-defined]
    assert any("compute" in section for section in report.absent)  # type: ignore[attr-defined]
    document = json.loads(render_json(report))  # type: ignore[arg-type]
    assert document["counts"]["unique_params"] == 1104 and document["source"] == "torch-state-dict"
    schema = json.loads((Path(__file__).resolve().parent.parent / "auditor/report/report.schema.json").read_text())
    jsonschema.validate(document, schema)
    html, text = render_html(report), render_terminal(report)  # type: ignore[arg-type]
    assert "needs a graph" in html and "needs a graph" in text
    for running_stat in ("running_mean", "num_batches_tracked"):
        assert running_stat in html
