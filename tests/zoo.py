"""Tiny transformers models exported to ONNX with both torch exporters, and a torch-side oracle.

Each builder returns ``(model, inputs)``: a randomly initialised model in eval mode (built from a
config object; no hub access) and the keyword inputs of one forward pass. Sizes are tiny (hidden
32, 2-3 layers, vocab ~100-200) so an export takes a few seconds.

Every parameter is re-drawn from a seeded normal distribution (``_randomise``): transformers
initialises biases to zero and LayerNorm weights to one, so dozens of parameters would hold the
same bytes and an exporter (or the auditor) would rightly merge them, making "unique values"
differ from ``model.num_parameters()`` for a reason that has nothing to do with exporting. Tied
parameters stay tied (``torch.nn.Parameter`` objects are filled in place).

``export`` writes one self-contained file (``external_data=False``) with dynamic batch and sequence
axes: with static shapes both exporters constant-fold shape-only subgraphs that read parameters
(ALBERT/BERT position embeddings sliced to the example length, T5's relative-position bias
computed for the example lengths), so a parameter would be stored only as a slice of itself.

``exported(name, dynamo, folder)`` builds, exports and caches a case (per process: one build and
one export per (name, exporter), shared by every test in a session).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

SEED = 0
BATCH, SEQ, DECODER_SEQ = 2, 8, 5
OPSET = 18

Inputs = dict[str, torch.Tensor]
Model = Any  # a transformers PreTrainedModel (torch.nn.Module with config and num_parameters())


def _randomise(model: Model, seed: int = SEED) -> Model:
    """Fill every parameter (tied ones once) from N(0, 0.02), deterministically; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():  # yields each tied Parameter object once
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model.eval()


def _ids(vocab: int, length: int = SEQ, seed: int = SEED) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, vocab, (BATCH, length), generator=generator)


def albert() -> tuple[Model, Inputs]:
    """ALBERT masked LM: one layer shared across 3 layers, decoder tied to the word embeddings."""
    import transformers

    config = transformers.AlbertConfig(
        vocab_size=120, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(SEED)
    model = _randomise(transformers.AlbertForMaskedLM(config))
    assert model.predictions.decoder.weight is model.albert.embeddings.word_embeddings.weight
    return model, {"input_ids": _ids(config.vocab_size)}


def bert() -> tuple[Model, Inputs]:
    """BERT masked LM: 2 distinct layers, LM decoder tied to the word embeddings."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=150, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(SEED)
    model = _randomise(transformers.BertForMaskedLM(config))
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    return model, {"input_ids": _ids(config.vocab_size)}


def gpt2() -> tuple[Model, Inputs]:
    """GPT-2 LM head model: 2 layers of Conv1D (weights stored in x @ W layout), lm_head tied to wte."""
    import transformers

    config = transformers.GPT2Config(vocab_size=130, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64,
                                     use_cache=False, bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(SEED)
    model = _randomise(transformers.GPT2LMHeadModel(config))
    assert model.lm_head.weight is model.transformer.wte.weight
    # an explicit attention mask: without one, transformers checks position ids for packed
    # sequences with torch.diff, which the legacy exporter cannot export (aten::diff)
    ids = _ids(config.vocab_size)
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def t5() -> tuple[Model, Inputs]:
    """T5 encoder-decoder: shared embedding tied to both embed_tokens and lm_head, relative position bias."""
    import transformers

    settings: dict[str, Any] = dict(
        vocab_size=140, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, tie_word_embeddings=True,
        use_cache=False, decoder_start_token_id=0, pad_token_id=0,
    )  # fmt: skip
    config = transformers.T5Config(**settings)
    torch.manual_seed(SEED)
    model = _randomise(transformers.T5ForConditionalGeneration(config))
    assert model.lm_head.weight is model.shared.weight
    return model, {"input_ids": _ids(config.vocab_size), "decoder_input_ids": _ids(config.vocab_size, DECODER_SEQ, 7)}


def distilbert() -> tuple[Model, Inputs]:
    """DistilBERT masked LM: 2 layers, vocab_projector tied to the word embeddings."""
    import transformers

    config = transformers.DistilBertConfig(vocab_size=110, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                           max_position_embeddings=32)  # fmt: skip
    torch.manual_seed(SEED)
    model = _randomise(transformers.DistilBertForMaskedLM(config))
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    return model, {"input_ids": _ids(config.vocab_size)}


_MOE_COMMON: dict[str, Any] = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
    num_experts_per_tok=2, vocab_size=100, max_position_embeddings=64, use_cache=False, pad_token_id=0,
    bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, attn_implementation="eager",
)  # fmt: skip


def _moe_inputs(vocab: int) -> Inputs:
    ids = _ids(vocab)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def mixtral() -> tuple[Model, Inputs]:
    """Mixtral: 2 layers of 4 routed experts (k=2), stacked banks gate_up_proj [n, 2I, H] and
    down_proj [n, H, I]. transformers' ``batched_mm`` experts (gather the chosen experts'
    weights per token, then a batched matmul) is the implementation both exporters take:
    ``grouped_mm`` has no ONNX conversion and ``eager`` loops over the experts an input hits."""
    import transformers

    config = transformers.MixtralConfig(num_local_experts=4, **_MOE_COMMON)
    torch.manual_seed(SEED)
    model = transformers.MixtralForCausalLM(config)
    model.set_experts_implementation("batched_mm")
    return _randomise(model), _moe_inputs(config.vocab_size)


def mixtral_eager() -> tuple[Model, Inputs]:
    """The same Mixtral with transformers' ``eager`` experts: a loop over the experts an input hits."""
    model, inputs = mixtral()
    model.set_experts_implementation("eager")
    return model, inputs


def qwen2_moe() -> tuple[Model, Inputs]:
    """Qwen2-MoE: 2 layers of 4 routed experts (k=2) plus an always-active shared expert."""
    import transformers

    config = transformers.Qwen2MoeConfig(
        num_experts=4, moe_intermediate_size=40, shared_expert_intermediate_size=48, decoder_sparse_step=1,
        mlp_only_layers=[], norm_topk_prob=False, **_MOE_COMMON,
    )  # fmt: skip
    torch.manual_seed(SEED)
    model = transformers.Qwen2MoeForCausalLM(config)
    model.set_experts_implementation("batched_mm")
    return _randomise(model), _moe_inputs(config.vocab_size)


def untrained_bert() -> tuple[Model, Inputs]:
    """BERT straight after construction: LayerNorm weights of one, biases of zero."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=150, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(SEED)
    return transformers.BertForMaskedLM(config).eval(), {"input_ids": _ids(config.vocab_size)}


def untrained_gpt2() -> tuple[Model, Inputs]:
    """GPT-2 straight after construction: LayerNorm weights of one, biases of zero."""
    import transformers

    config = transformers.GPT2Config(vocab_size=130, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64,
                                     use_cache=False, bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(SEED)
    ids = _ids(config.vocab_size)
    return transformers.GPT2LMHeadModel(config).eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class _Expert(torch.nn.Module):
    """One expert of the classic Mixtral layout: its own three bias-free Linears (SwiGLU)."""

    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.w1 = torch.nn.Linear(hidden, inner, bias=False)
        self.w2 = torch.nn.Linear(inner, hidden, bias=False)
        self.w3 = torch.nn.Linear(hidden, inner, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(torch.nn.functional.silu(self.w1(x)) * self.w3(x))


class PerExpertMoE(torch.nn.Module):
    """A token-level MoE as transformers wrote Mixtral before v5: one module per expert, and a
    loop over all experts that applies each to the tokens the router sent to it
    (``torch.where`` on the one-hot mask) and adds the results back with ``index_add_``."""

    def __init__(self, vocab: int = 64, hidden: int = 16, inner: int = 24, experts: int = 4, k: int = 2) -> None:
        super().__init__()
        self.config = type("Config", (), {"num_experts_per_tok": k})()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.gate = torch.nn.Linear(hidden, experts, bias=False)
        self.experts = torch.nn.ModuleList(_Expert(hidden, inner) for _ in range(experts))
        self.head = torch.nn.Linear(hidden, vocab)
        self.k = k

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)
        flat = hidden.reshape(-1, hidden.shape[-1])
        weights, chosen = torch.topk(torch.softmax(self.gate(flat), dim=-1), self.k, dim=-1)
        mask = torch.nn.functional.one_hot(chosen, num_classes=len(self.experts)).permute(2, 1, 0)
        out = torch.zeros_like(flat)
        for index, expert in enumerate(self.experts):
            slot, token = torch.where(mask[index])
            out.index_add_(0, token, expert(flat[token]) * weights[token, slot, None])
        return self.head(flat + out)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def per_expert_moe() -> tuple[Model, Inputs]:
    """The classic per-expert MoE layout (``PerExpertMoE``): 4 experts of 3 matrices, k = 2."""
    torch.manual_seed(SEED)
    return _randomise(PerExpertMoE()), {"input_ids": _ids(64)}


BUILDERS: dict[str, Callable[[], tuple[Model, Inputs]]] = {
    "albert": albert,
    "bert": bert,
    "gpt2": gpt2,
    "t5": t5,
    "distilbert": distilbert,
}
MOE_BUILDERS: dict[str, Callable[[], tuple[Model, Inputs]]] = {"mixtral": mixtral, "qwen2_moe": qwen2_moe}
PER_EXPERT_BUILDERS: dict[str, Callable[[], tuple[Model, Inputs]]] = {
    "per_expert_moe": per_expert_moe, "mixtral_eager": mixtral_eager,
}
UNTRAINED_BUILDERS: dict[str, Callable[[], tuple[Model, Inputs]]] = {"bert": untrained_bert, "gpt2": untrained_gpt2}
ALL_BUILDERS = {
    **BUILDERS, **MOE_BUILDERS, **PER_EXPERT_BUILDERS, **{f"untrained_{k}": v for k, v in UNTRAINED_BUILDERS.items()}
}


def export(model: Model, example_inputs: Mapping[str, torch.Tensor], path: str | Path, dynamo: bool,
           dynamic: bool = True) -> Path:  # fmt: skip
    """Export ``model(**example_inputs)`` to one ONNX file at ``path`` with ``torch.onnx.export``.

    ``dynamo=True``: the torch.export-based exporter (with its default onnxscript optimisation);
    ``dynamo=False``: the legacy TorchScript exporter (constant folding on, its default). Opset 18,
    no external data. ``dynamic``: batch and sequence axes of every input are dynamic.
    """
    path = Path(path)
    names = list(example_inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            dim = torch.export.Dim.DYNAMIC
            shapes = {n: {0: dim, 1: dim} for n in names} if dynamic else None
            torch.onnx.export(
                model, (), str(path), kwargs=dict(example_inputs), dynamo=True, opset_version=OPSET,
                external_data=False, dynamic_shapes=shapes, optimize=True, verbose=False,
            )  # fmt: skip
        else:
            axes = {n: {0: "batch", 1: f"{n}_len"} for n in names} if dynamic else None
            torch.onnx.export(
                model, (), str(path), kwargs=dict(example_inputs), dynamo=False, opset_version=OPSET,
                external_data=False, input_names=names, dynamic_axes=axes, do_constant_folding=True,
            )  # fmt: skip
    return path


@dataclass(frozen=True)
class Exported:
    """A built model, its example inputs, and its export."""

    name: str
    dynamo: bool
    model: Model
    inputs: Inputs
    path: Path


@functools.lru_cache(maxsize=None)
def built(name: str) -> tuple[Model, Inputs]:
    """One build per model name and process."""
    return ALL_BUILDERS[name]()


@functools.lru_cache(maxsize=None)
def exported(name: str, dynamo: bool, folder: Path) -> Exported:
    """Build (once) and export (once per exporter) into ``folder``."""
    model, inputs = built(name)
    path = export(model, inputs, Path(folder) / f"{name}_{'dynamo' if dynamo else 'legacy'}.onnx", dynamo)
    return Exported(name, dynamo, model, inputs, path)


def torch_applied_params(model: Model, inputs: Mapping[str, Any]) -> int:
    """Parameter elements applied in one forward pass, counted on the torch side with hooks.

    Every module's calls during one ``model(**inputs)`` are counted with a forward pre-hook (one
    hook per module object, so a module reachable under two names counts its real calls); the
    result is the sum over modules of ``numel(module's own parameters, recurse=False) x calls``.
    A tied Parameter owned by two modules (word embeddings and LM decoder) counts once per call of
    each owner: twice when both run once, which is what the auditor counts for one tensor with two
    uses. A Parameter that a module holds as an alias of a descendant's (BERT/ALBERT
    ``predictions.bias`` is ``predictions.decoder.bias``) counts only for the descendant.

    Caveats (where this differs from "elements actually multiplied"):
    - a parameter read functionally outside its owner's forward (``F.linear(x, other.weight)``,
      a bias added by a parent module that is not an alias of a child's) counts by its owner's
      calls, not by its reads; a module whose parameters are only read as attributes (never
      called) counts zero. None of the zoo models does this (checked against the exports);
    - an embedding table counts whole per lookup (all rows), as the auditor counts a Gather's
      table; position embeddings sliced by position ids count whole too;
    - only one forward is observed: data-dependent control flow counts the path these inputs take.
    """
    modules = dict(model.named_modules(remove_duplicate=True))
    # a Parameter that is also a direct parameter of a descendant is applied by that descendant
    # (BERT/ALBERT ``predictions.bias`` is ``predictions.decoder.bias``): the ancestor's
    # attribute is an alias, not a second application
    applied_by: dict[int, list[torch.nn.Parameter]] = {}
    for module in modules.values():
        below = {id(p) for child in module.modules() if child is not module for p in child.parameters(recurse=False)}
        applied_by[id(module)] = [p for p in module.parameters(recurse=False) if id(p) not in below]
    calls: dict[int, int] = {}

    def hook(module: torch.nn.Module, _args: Any) -> None:
        calls[id(module)] = calls.get(id(module), 0) + 1

    handles = [module.register_forward_pre_hook(hook) for module in modules.values()]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return sum(
        sum(p.numel() for p in applied_by[id(module)]) * calls.get(id(module), 0) for module in modules.values()
    )


def float_buffer_elements(model: Model) -> int:
    """Elements of the distinct float buffers (rotary ``inv_freq``...) an export stores like
    weights; buffers holding the same values (``original_inv_freq``) count once, as one tensor
    in the file (or one copy group) holds them."""
    distinct: list[torch.Tensor] = []
    for buffer in model.buffers():
        if buffer.is_floating_point() and buffer.numel() > 1 and not any(
            b.shape == buffer.shape and torch.equal(b, buffer) for b in distinct
        ):
            distinct.append(buffer)
    return sum(b.numel() for b in distinct)


def expert_layers(model: Model) -> list[tuple[int, int, int]]:
    """(n, k, parameters per expert) of each routed-expert layer, from the module tree:
    ``model.model.layers[i].mlp.experts`` holds the stacked banks (leading dimension n); the
    router (``mlp.gate``) and Qwen2-MoE's shared expert are always active."""
    k = model.config.num_experts_per_tok
    if isinstance(model, PerExpertMoE):
        return [(len(model.experts), k, sum(p.numel() for p in model.experts[0].parameters()))]
    layers = []
    for layer in model.model.layers:
        experts = getattr(layer.mlp, "experts", None)
        if experts is None:
            continue
        banks = list(experts.parameters())
        n = banks[0].shape[0]
        assert all(p.shape[0] == n for p in banks)
        layers.append((n, k, sum(p.numel() for p in banks) // n))
    return layers


def torch_active_params(model: Model) -> int:
    """Parameters one token uses: all of them less the n - k experts of each routed layer it skips."""
    return model.num_parameters() - sum((n - k) * per_expert for n, k, per_expert in expert_layers(model))


def torch_moe_applied_params(model: Model, inputs: Mapping[str, Any]) -> int:
    """The forward-hook count (``torch_applied_params``), with each expert bank counted as the k
    of n experts a token runs instead of the whole bank its module holds."""
    inactive = sum((n - k) * per_expert for n, k, per_expert in expert_layers(model))
    return torch_applied_params(model, inputs) - inactive
