#!/usr/bin/env python3
"""Make the small ONNX sample models in ``samples/`` and ``answers.json``, their known counts.

Run as ``python samples/make_samples.py [OUTPUT_DIR]`` (default: the folder of this script).
Everything is deterministic: fixed seeds, fixed ir_version/opset/producer, so a second run
writes byte-identical files. Every model is checked with ``onnx.checker`` (full check) and
run once in onnxruntime with random inputs.

The expected counts in ``answers.json`` come from the construction arithmetic below (the
shapes chosen here), never from the auditor: this script does not import ``auditor``. As a
self-check, each formula is compared with the sizes of the float tensors the script actually
created. ``samples/ANSWERS.md`` explains each number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20  # Gelu and LayerNormalization are plain ONNX ops here
IR_VERSION = 9
PRODUCER = ("auditor-samples", "1")
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
MAX_FILE_BYTES = 300_000


class Graph:
    """Collects nodes and initializers under readable, unique names."""

    def __init__(self, rng: np.random.Generator, prefix: str = "") -> None:
        self.rng = rng
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._count = 0

    # -- stored tensors --------------------------------------------------------------------

    def random(self, shape: tuple[int, ...], scale: float = 0.02, offset: float = 0.0) -> np.ndarray:
        return (offset + scale * self.rng.standard_normal(shape)).astype(np.float32)

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.02, offset: float = 0.0) -> str:
        return self.tensor(name, self.random(shape, scale, offset))

    def tensor(self, name: str, array: np.ndarray) -> str:
        """An initializer (added once: shape constants are shared by name)."""
        if name not in self._names:
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def int64(self, name: str, values: Any) -> str:
        return self.tensor(name, np.asarray(values, dtype=np.int64))

    def scalar(self, name: str, value: float) -> str:
        return self.tensor(name, np.asarray(value, dtype=np.float32))

    # -- ops -------------------------------------------------------------------------------

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> Any:
        self._count += 1
        name = f"{self.prefix}{op_type}_{self._count}"
        outs = [f"{name}_out{i}" for i in range(outputs)] if outputs > 1 else [f"{name}_out"]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs if outputs > 1 else outs[0]

    def named_op(self, op_type: str, inputs: list[str], output: str, name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def linear(self, x: str, w: str, b: str) -> str:
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def layer_norm(self, x: str, gamma: str, beta: str) -> str:
        return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)


def make_model(graph: Graph, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
               name: str, functions: list[onnx.FunctionProto] | None = None) -> onnx.ModelProto:  # fmt: skip
    g = helper.make_graph(graph.nodes, name, inputs, outputs, initializer=graph.initializers)
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER[0],
        producer_version=PRODUCER[1],
        functions=functions or [],
    )
    return model


def float_param_numel(model: onnx.ModelProto) -> int:
    """Self-check only: elements of every float tensor with more than one element, wherever it
    is stored (initializers, Constant attributes, subgraphs). All samples use float32 weights."""
    total = 0

    def graph_total(graph: onnx.GraphProto) -> int:
        n = 0
        for t in graph.initializer:
            if t.data_type == FLOAT and int(np.prod(t.dims)) > 1:
                n += int(np.prod(t.dims))
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == FLOAT:
                    k = int(np.prod(attr.t.dims))
                    n += k if k > 1 else 0
                if node.op_type == "Constant" and attr.name == "value_floats" and len(attr.floats) > 1:
                    n += len(attr.floats)
                if attr.type == onnx.AttributeProto.GRAPH:
                    n += graph_total(attr.g)
        return n

    total += graph_total(model.graph)
    return total


# ------------------------------------------------------------------------------------------
# transformer pieces
# ------------------------------------------------------------------------------------------


def embed(g: Graph, ids: str, word: str, pos: str) -> str:
    """Token lookup + position lookup; positions = Range(0, Shape(ids)[1]) derive from the input."""
    tokens = g.op("Gather", [word, ids])
    shape = g.op("Shape", [ids])
    seq = g.op("Gather", [shape, g.int64("const.one", 1)], axis=0)
    positions = g.op("Range", [g.int64("const.zero", 0), seq, g.int64("const.one", 1)])
    return g.op("Add", [tokens, g.op("Gather", [pos, positions])])


def attend(g: Graph, q: str, k: str, v: str, heads: int, dh: int, mask: str | None = None) -> str:
    """Multi-head scaled dot-product attention on [B, S, heads*dh] inputs."""
    split = g.int64("shape.split_heads", [0, 0, heads, dh])
    merge = g.int64("shape.merge_heads", [0, 0, heads * dh])
    qh = g.op("Transpose", [g.op("Reshape", [q, split])], perm=[0, 2, 1, 3])
    kh = g.op("Transpose", [g.op("Reshape", [k, split])], perm=[0, 2, 3, 1])
    vh = g.op("Transpose", [g.op("Reshape", [v, split])], perm=[0, 2, 1, 3])
    scores = g.op("Mul", [g.op("MatMul", [qh, kh]), g.scalar("attention.scale", 1.0 / np.sqrt(dh))])
    if mask is not None:
        scores = g.op("Where", [mask, scores, g.scalar("attention.masked", -1e4)])
    probs = g.op("Softmax", [scores], axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, vh])], perm=[0, 2, 1, 3])
    return g.op("Reshape", [context, merge])


def bert_layer_weights(g: Graph, prefix: str, H: int, F: int) -> dict[str, str]:
    w: dict[str, str] = {}
    for part in ("query", "key", "value", "output"):
        w[f"{part}.weight"] = g.weight(f"{prefix}.attention.{part}.weight", (H, H))
        w[f"{part}.bias"] = g.weight(f"{prefix}.attention.{part}.bias", (H,))
    w["ln1.weight"] = g.weight(f"{prefix}.attention.LayerNorm.weight", (H,), 0.1, 1.0)
    w["ln1.bias"] = g.weight(f"{prefix}.attention.LayerNorm.bias", (H,), 0.1)
    w["ffn1.weight"] = g.weight(f"{prefix}.intermediate.dense.weight", (H, F))
    w["ffn1.bias"] = g.weight(f"{prefix}.intermediate.dense.bias", (F,))
    w["ffn2.weight"] = g.weight(f"{prefix}.output.dense.weight", (F, H))
    w["ffn2.bias"] = g.weight(f"{prefix}.output.dense.bias", (H,))
    w["ln2.weight"] = g.weight(f"{prefix}.output.LayerNorm.weight", (H,), 0.1, 1.0)
    w["ln2.bias"] = g.weight(f"{prefix}.output.LayerNorm.bias", (H,), 0.1)
    return w


def bert_layer(g: Graph, x: str, w: dict[str, str], heads: int, dh: int) -> str:
    """Post-LN encoder layer: LN(x + Attn(x)), then LN(x + FFN(x))."""
    q = g.linear(x, w["query.weight"], w["query.bias"])
    k = g.linear(x, w["key.weight"], w["key.bias"])
    v = g.linear(x, w["value.weight"], w["value.bias"])
    a = g.linear(attend(g, q, k, v, heads, dh), w["output.weight"], w["output.bias"])
    x = g.layer_norm(g.op("Add", [x, a]), w["ln1.weight"], w["ln1.bias"])
    h = g.op("Gelu", [g.linear(x, w["ffn1.weight"], w["ffn1.bias"])])
    f = g.linear(h, w["ffn2.weight"], w["ffn2.bias"])
    return g.layer_norm(g.op("Add", [x, f]), w["ln2.weight"], w["ln2.bias"])


def ids_input() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("input_ids", INT64, ["batch", "sequence"])


def layer_formula(H: int, F: int) -> int:
    """One encoder layer: Q, K, V, O (H*H + H each), two LayerNorms (2H each), FFN H->F->H."""
    return 4 * (H * H + H) + 2 * H + (H * F + F) + (F * H + H) + 2 * H


# ------------------------------------------------------------------------------------------
# the samples: each returns (model, answers, ORT feeds)
# ------------------------------------------------------------------------------------------


def answers(stored: int, applied: int, embedding: int, unique: int | None = None, unused: int = 0,
            shared: list[dict[str, Any]] | None = None, duplicates: list[dict[str, Any]] | None = None,
            bytes_per_param: int = 4, derivation: str = "", applied_lower: int | None = None) -> dict[str, Any]:  # fmt: skip
    unique = stored if unique is None else unique
    return {
        "stored_params": stored,
        "stored_bytes": stored * bytes_per_param,
        "unique_params": unique,
        "unique_bytes": unique * bytes_per_param,
        "applied_params": applied,
        "applied_params_lower_bound": applied if applied_lower is None else applied_lower,
        "embedding_params": embedding,
        "unused_params": unused,
        "shared": sorted(shared or [], key=lambda s: s["name"]),
        "duplicates": duplicates or [],
        "derivation": derivation,
    }


def bert_like() -> tuple[onnx.ModelProto, dict[str, Any], dict[str, np.ndarray]]:
    V, P, H, F, L, heads = 256, 16, 32, 128, 2, 2
    g = Graph(np.random.default_rng(1))
    word = g.weight("embeddings.word_embeddings.weight", (V, H))
    pos = g.weight("embeddings.position_embeddings.weight", (P, H))
    ln = (g.weight("embeddings.LayerNorm.weight", (H,), 0.1, 1.0), g.weight("embeddings.LayerNorm.bias", (H,), 0.1))
    x = g.layer_norm(embed(g, "input_ids", word, pos), *ln)
    for i in range(L):
        x = bert_layer(g, x, bert_layer_weights(g, f"encoder.layer.{i}", H, F), heads, H // heads)
    g.named_op("Identity", [x], "last_hidden_state", "output")
    model = make_model(g, [ids_input()], [helper.make_tensor_value_info("last_hidden_state", FLOAT, ["batch", "sequence", H])], "bert_like")
    layer = layer_formula(H, F)
    stored = V * H + P * H + 2 * H + L * layer
    ans = answers(
        stored, stored, V * H + P * H,
        derivation=f"V={V} P={P} H={H} F={F} L={L}: word V*H + position P*H + embedding LayerNorm 2H "
        f"+ L x layer (4*(H*H+H) + 2H + H*F+F + F*H+H + 2H = {layer}); every tensor applied once",
    )  # fmt: skip
    feeds = {"input_ids": np.random.default_rng(100).integers(0, V, size=(2, P)).astype(np.int64)}
    return model, ans, feeds


def albert_like() -> tuple[onnx.ModelProto, dict[str, Any], dict[str, np.ndarray]]:
    V, P, E, H, F, L, heads = 512, 32, 16, 64, 128, 4, 4
    g = Graph(np.random.default_rng(2))
    word = g.weight("embeddings.word_embeddings.weight", (V, E))
    pos = g.weight("embeddings.position_embeddings.weight", (P, E))
    ln = (g.weight("embeddings.LayerNorm.weight", (E,), 0.1, 1.0), g.weight("embeddings.LayerNorm.bias", (E,), 0.1))
    x = g.layer_norm(embed(g, "input_ids", word, pos), *ln)
    # ALBERT's factorized embedding: small E, projected up to H
    proj_w = g.weight("encoder.embedding_hidden_mapping_in.weight", (E, H))
    proj_b = g.weight("encoder.embedding_hidden_mapping_in.bias", (H,))
    x = g.linear(x, proj_w, proj_b)
    shared = bert_layer_weights(g, "encoder.albert_layer", H, F)  # one set of weights ...
    for _ in range(L):  # ... applied by every layer
        x = bert_layer(g, x, shared, heads, H // heads)
    g.named_op("Identity", [x], "last_hidden_state", "hidden_output")
    # MLM head: dense H->E, Gelu, LayerNorm(E), decoder tied to the word embeddings (Transpose)
    dense_w = g.weight("predictions.dense.weight", (H, E))
    dense_b = g.weight("predictions.dense.bias", (E,))
    head_ln = (g.weight("predictions.LayerNorm.weight", (E,), 0.1, 1.0), g.weight("predictions.LayerNorm.bias", (E,), 0.1))
    h = g.layer_norm(g.op("Gelu", [g.linear(x, dense_w, dense_b)]), *head_ln)
    decoder = g.op("Transpose", [word], perm=[1, 0])
    bias_values = g.random((V,))
    bias = g.tensor("predictions.bias", bias_values)
    g.named_op("Add", [g.op("MatMul", [h, decoder]), bias], "logits", "logits_add")
    # an exporter left the decoder's own bias behind: same values, another name, read by nothing
    g.tensor("predictions.decoder.bias", bias_values.copy())
    model = make_model(
        g, [ids_input()],
        [helper.make_tensor_value_info("last_hidden_state", FLOAT, ["batch", "sequence", H]), helper.make_tensor_value_info("logits", FLOAT, ["batch", "sequence", V])],
        "albert_like",
    )  # fmt: skip
    layer = layer_formula(H, F)
    emb = V * E + P * E
    rest = 2 * E + (E * H + H) + (H * E + E) + 2 * E + V  # emb LN, projection, head dense, head LN, bias
    stored = emb + rest + layer + V  # + the unused copy of predictions.bias
    applied = 2 * V * E + P * E + rest + L * layer  # word table twice (Gather + tied decoder), layer L times
    shared_rows = [{"name": "embeddings.word_embeddings.weight", "uses": 2, "applications": 2}]
    for name, shape in _bert_layer_shapes("encoder.albert_layer", H, F):
        shared_rows.append({"name": name, "uses": L, "applications": L})
    ans = answers(
        stored, applied, emb, unique=stored - V, unused=V, shared=shared_rows,
        duplicates=[{"tensors": ["predictions.bias", "predictions.decoder.bias"], "relation": "identical",
                     "wasted_params": V, "wasted_bytes": 4 * V}],
        derivation=f"V={V} P={P} E={E} H={H} F={F} L={L}: embeddings V*E + P*E, embedding LayerNorm 2E, "
        f"projection E*H+H, ONE layer ({layer}) stored once and applied L times, MLM head dense H*E+E, "
        f"head LayerNorm 2E, decoder bias V, plus an unused identical copy of the decoder bias (V); "
        f"the word table is applied twice (Gather and Transpose->MatMul)",
    )  # fmt: skip
    feeds = {"input_ids": np.random.default_rng(200).integers(0, V, size=(2, P)).astype(np.int64)}
    return model, ans, feeds


def _bert_layer_shapes(prefix: str, H: int, F: int) -> list[tuple[str, tuple[int, ...]]]:
    rows: list[tuple[str, tuple[int, ...]]] = []
    for part in ("query", "key", "value", "output"):
        rows += [(f"{prefix}.attention.{part}.weight", (H, H)), (f"{prefix}.attention.{part}.bias", (H,))]
    rows += [(f"{prefix}.attention.LayerNorm.weight", (H,)), (f"{prefix}.attention.LayerNorm.bias", (H,))]
    rows += [(f"{prefix}.intermediate.dense.weight", (H, F)), (f"{prefix}.intermediate.dense.bias", (F,))]
    rows += [(f"{prefix}.output.dense.weight", (F, H)), (f"{prefix}.output.dense.bias", (H,))]
    rows += [(f"{prefix}.output.LayerNorm.weight", (H,)), (f"{prefix}.output.LayerNorm.bias", (H,))]
    return rows


GPT2 = {"V": 128, "P": 16, "H": 32, "F": 128, "L": 2, "heads": 2}


def _gpt2(tied: bool) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, np.ndarray]]:
    V, P, H, F, L, heads = (GPT2[k] for k in ("V", "P", "H", "F", "L", "heads"))
    g = Graph(np.random.default_rng(3))  # same seed: the two models hold the same values
    wte_values = g.random((V, H))
    wte = g.tensor("transformer.wte.weight", wte_values)
    wpe = g.weight("transformer.wpe.weight", (P, H))
    x = embed(g, "input_ids", wte, wpe)
    # causal mask [S, S] built at run time: Trilu(ConstantOfShape([S, S], 1)) -> bool
    seq = g.op("Shape", ["input_ids"], start=1, end=2)
    ones = g.op("ConstantOfShape", [g.op("Concat", [seq, seq], axis=0)],
                value=helper.make_tensor("one", FLOAT, [1], [1.0]))  # fmt: skip
    mask = g.op("Cast", [g.op("Trilu", [ones], upper=0)], to=TensorProto.BOOL)
    split = g.int64("split.qkv", [H, H, H])
    for i in range(L):
        p = f"transformer.h.{i}"
        h = g.layer_norm(x, g.weight(f"{p}.ln_1.weight", (H,), 0.1, 1.0), g.weight(f"{p}.ln_1.bias", (H,), 0.1))
        qkv = g.linear(h, g.weight(f"{p}.attn.c_attn.weight", (H, 3 * H)), g.weight(f"{p}.attn.c_attn.bias", (3 * H,)))
        q, k, v = g.op("Split", [qkv, split], outputs=3, axis=-1)
        a = attend(g, q, k, v, heads, H // heads, mask)
        a = g.linear(a, g.weight(f"{p}.attn.c_proj.weight", (H, H)), g.weight(f"{p}.attn.c_proj.bias", (H,)))
        x = g.op("Add", [x, a])
        h = g.layer_norm(x, g.weight(f"{p}.ln_2.weight", (H,), 0.1, 1.0), g.weight(f"{p}.ln_2.bias", (H,), 0.1))
        m = g.linear(h, g.weight(f"{p}.mlp.c_fc.weight", (H, F)), g.weight(f"{p}.mlp.c_fc.bias", (F,)))
        m = g.op("Gelu", [m], approximate="tanh")
        m = g.linear(m, g.weight(f"{p}.mlp.c_proj.weight", (F, H)), g.weight(f"{p}.mlp.c_proj.bias", (H,)))
        x = g.op("Add", [x, m])
    x = g.layer_norm(x, g.weight("transformer.ln_f.weight", (H,), 0.1, 1.0), g.weight("transformer.ln_f.bias", (H,), 0.1))
    if tied:
        head = wte  # torch export of a tied head: the embedding initializer, transposed
    else:
        head = g.tensor("lm_head.weight", wte_values.copy())
    g.named_op("MatMul", [x, g.op("Transpose", [head], perm=[1, 0])], "logits", "lm_head")
    name = "gpt2_tied" if tied else "gpt2_untied_copy"
    model = make_model(g, [ids_input()], [helper.make_tensor_value_info("logits", FLOAT, ["batch", "sequence", V])], name)
    layer = 2 * H + (H * 3 * H + 3 * H) + (H * H + H) + 2 * H + (H * F + F) + (F * H + H)
    base = V * H + P * H + L * layer + 2 * H  # wte, wpe, layers, ln_f
    how = (f"V={V} P={P} H={H} F={F} L={L}: wte V*H + wpe P*H + L x layer (ln_1 2H, c_attn H*3H+3H, "
           f"attn.c_proj H*H+H, ln_2 2H, c_fc H*F+F, mlp.c_proj F*H+H = {layer}) + ln_f 2H")  # fmt: skip
    if tied:
        ans = answers(
            base, base + V * H, V * H + P * H,
            shared=[{"name": "transformer.wte.weight", "uses": 2, "applications": 2}],
            derivation=how + "; wte is applied twice (Gather and Transpose->MatMul): applied = stored + V*H",
        )  # fmt: skip
    else:
        ans = answers(
            base + V * H, base + V * H, V * H + P * H, unique=base,
            duplicates=[{"tensors": ["transformer.wte.weight", "lm_head.weight"], "relation": "identical",
                         "wasted_params": V * H, "wasted_bytes": 4 * V * H}],
            derivation=how + "; plus lm_head.weight, an identical copy of wte (V*H) applied once by the head",
        )  # fmt: skip
    feeds = {"input_ids": np.random.default_rng(300).integers(0, V, size=(2, P)).astype(np.int64)}
    return model, ans, feeds


def universal_loop() -> tuple[onnx.ModelProto, dict[str, Any], dict[str, np.ndarray]]:
    V, H, F, T = 64, 32, 64, 6
    g = Graph(np.random.default_rng(4))
    word = g.weight("embeddings.word_embeddings.weight", (V, H))
    x = g.op("Gather", [word, "input_ids"])
    # the block's weights live in the main graph; the Loop body reads them from the outer scope
    ln_w = g.weight("block.LayerNorm.weight", (H,), 0.1, 1.0)
    ln_b = g.weight("block.LayerNorm.bias", (H,), 0.1)
    w1, b1 = g.weight("block.dense1.weight", (H, F)), g.weight("block.dense1.bias", (F,))
    w2, b2 = g.weight("block.dense2.weight", (F, H)), g.weight("block.dense2.bias", (H,))
    body = Graph(g.rng, prefix="body.")
    body.named_op("Identity", ["cond_in"], "cond_out", "body.keep_going")
    n = body.layer_norm("h_in", ln_w, ln_b)
    f = body.linear(body.op("Relu", [body.linear(n, w1, b1)]), w2, b2)
    body.named_op("Add", ["h_in", f], "h_out", "body.residual")
    body_graph = helper.make_graph(
        body.nodes, "universal_block",
        [helper.make_tensor_value_info("iteration", INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", FLOAT, ["batch", "sequence", H])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("h_out", FLOAT, ["batch", "sequence", H])],
    )  # fmt: skip
    g.named_op("Constant", [], "trip_count", "trip_count", value=numpy_helper.from_array(np.asarray(T, np.int64)))
    keep_going = g.tensor("keep_going", np.asarray(True))
    g.named_op("Loop", ["trip_count", keep_going, x], "hidden", "universal_loop", body=body_graph)
    model = make_model(g, [ids_input()], [helper.make_tensor_value_info("hidden", FLOAT, ["batch", "sequence", H])], "universal_loop")
    block = 2 * H + (H * F + F) + (F * H + H)
    shared_rows = [{"name": name, "uses": 1, "applications": T}
                   for name in (ln_w, ln_b, w1, b1, w2, b2)]  # fmt: skip
    ans = answers(
        V * H + block, V * H + T * block, V * H, shared=shared_rows,
        derivation=f"V={V} H={H} F={F} T={T}: embedding V*H + block (LayerNorm 2H, dense1 H*F+F, dense2 F*H+H "
        f"= {block}) stored once; the Loop (M = Constant {T}, condition passed through Identity) applies the "
        f"block T times: applied = V*H + T*block",
    )  # fmt: skip
    feeds = {"input_ids": np.random.default_rng(400).integers(0, V, size=(2, 8)).astype(np.int64)}
    return model, ans, feeds


def small_cnn() -> tuple[onnx.ModelProto, dict[str, Any], dict[str, np.ndarray]]:
    C, C1, C2, S, K, N = 3, 8, 16, 16, 3, 10
    g = Graph(np.random.default_rng(5))
    x = "pixel_values"
    x = g.op("Conv", [x, g.weight("conv1.weight", (C1, C, K, K), 0.2), g.weight("conv1.bias", (C1,))], pads=[1, 1, 1, 1])
    x = g.op("MaxPool", [g.op("Relu", [x])], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Conv", [x, g.weight("conv2.weight", (C2, C1, K, K), 0.2), g.weight("conv2.bias", (C2,))], pads=[1, 1, 1, 1])
    x = g.op("MaxPool", [g.op("Relu", [x])], kernel_shape=[2, 2], strides=[2, 2])
    flat = g.op("Flatten", [x], axis=1)
    features = C2 * (S // 4) * (S // 4)
    g.named_op("Gemm", [flat, g.weight("fc.weight", (N, features)), g.weight("fc.bias", (N,))], "logits", "fc", transB=1)
    model = make_model(
        g, [helper.make_tensor_value_info("pixel_values", FLOAT, ["batch", C, S, S])],
        [helper.make_tensor_value_info("logits", FLOAT, ["batch", N])], "small_cnn",
    )  # fmt: skip
    stored = (C1 * C * K * K + C1) + (C2 * C1 * K * K + C2) + (N * features + N)
    ans = answers(
        stored, stored, 0,
        derivation=f"conv1 {C1}*{C}*{K}*{K}+{C1}, conv2 {C2}*{C1}*{K}*{K}+{C2}, fc {N}*{features}+{N} "
        f"(features = {C2} channels x {S // 4}x{S // 4} after two 2x2 pools); each applied once",
    )  # fmt: skip
    feeds = {"pixel_values": np.random.default_rng(500).standard_normal((2, C, S, S)).astype(np.float32)}
    return model, ans, feeds


def constants_and_if() -> tuple[onnx.ModelProto, dict[str, Any], dict[str, np.ndarray]]:
    D, H = 8, 16
    g = Graph(np.random.default_rng(6))

    def constant(graph: Graph, name: str, shape: tuple[int, ...], floats: bool = False) -> str:
        array = graph.random(shape, 0.3)
        if floats:  # the list form of a Constant: value_floats
            return graph.named_op("Constant", [], name, f"const:{name}", value_floats=[float(v) for v in array])
        return graph.named_op("Constant", [], name, f"const:{name}", value=numpy_helper.from_array(array, name))

    dense_w = constant(g, "dense.weight", (D, H))
    dense_b = constant(g, "dense.bias", (H,), floats=True)
    shared_w = constant(g, "shared.weight", (H, H))
    zero = g.named_op("Constant", [], "zero", "const:zero", value_float=0.0)  # a scalar: not a parameter
    h = g.op("Relu", [g.linear("x", dense_w, dense_b)])
    cond = g.op("Greater", [g.op("ReduceSum", [h], keepdims=0), zero])

    then = Graph(g.rng, prefix="then.")
    t_w = constant(then, "then.weight", (H, H))
    t_b = constant(then, "then.bias", (H,), floats=True)
    t = then.op("MatMul", [h, shared_w])  # outer-scope weight, first use
    t = then.op("Relu", [then.linear(t, t_w, t_b)])
    then.named_op("MatMul", [t, shared_w], "then_out", "then.out")  # second use in this branch
    other = Graph(g.rng, prefix="else.")
    e_w = constant(other, "else.weight", (H, H))
    e_b = constant(other, "else.bias", (H,))
    e = other.op("Relu", [other.linear(h, e_w, e_b)])
    other.named_op("MatMul", [e, shared_w], "else_out", "else.out")  # the only use in this branch

    def branch(graph: Graph, out: str) -> onnx.GraphProto:
        return helper.make_graph(graph.nodes, out, [], [helper.make_tensor_value_info(out, FLOAT, [1, H])])

    g.named_op("If", [cond], "y", "branch", then_branch=branch(then, "then_out"), else_branch=branch(other, "else_out"))
    model = make_model(
        g, [helper.make_tensor_value_info("x", FLOAT, [1, D])], [helper.make_tensor_value_info("y", FLOAT, [1, H])],
        "constants_and_if",
    )  # fmt: skip
    stored = (D * H + H) + H * H + (H * H + H) + (H * H + H)
    main_reads = D * H + H
    then_reads, else_reads = 2 * H * H + (H * H + H), H * H + (H * H + H)
    ans = answers(
        stored, main_reads + max(then_reads, else_reads), 0, applied_lower=main_reads + min(then_reads, else_reads),
        shared=[{"name": "shared.weight", "uses": 3, "applications": 2}],
        derivation=f"D={D} H={H}: main-graph Constants dense.weight D*H (value), dense.bias H (value_floats), "
        f"shared.weight H*H (value); then branch H*H + H, else branch H*H + H. One forward runs one branch: "
        f"the main graph applies D*H + H; then_branch applies shared.weight twice plus its own H*H + H, "
        f"else_branch shared.weight once plus its own H*H + H; applied takes the heavier branch, the lower "
        f"bound the lighter. shared.weight: 3 uses, at most 2 applications (then_branch)",
    )  # fmt: skip
    feeds = {"x": np.random.default_rng(600).standard_normal((1, D)).astype(np.float32)}
    return model, ans, feeds


SAMPLES = {
    "bert_like.onnx": bert_like,
    "albert_like.onnx": albert_like,
    "gpt2_tied.onnx": lambda: _gpt2(tied=True),
    "gpt2_untied_copy.onnx": lambda: _gpt2(tied=False),
    "universal_loop.onnx": universal_loop,
    "small_cnn.onnx": small_cnn,
    "constants_and_if.onnx": constants_and_if,
}


def check(name: str, model: onnx.ModelProto, ans: dict[str, Any], feeds: dict[str, np.ndarray]) -> None:
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    # self-check of the formulas: every float tensor with >1 element, wherever stored
    assert float_param_numel(model) == ans["stored_params"], (name, float_param_numel(model), ans["stored_params"])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for out in session.run(None, feeds):
        assert np.all(np.isfinite(out)), name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--no-run", action="store_true", help="skip the onnxruntime check")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_answers: dict[str, Any] = {}
    for name, build in SAMPLES.items():
        model, ans, feeds = build()
        if not args.no_run:
            check(name, model, ans, feeds)
        data = model.SerializeToString(deterministic=True)
        assert len(data) < MAX_FILE_BYTES, (name, len(data))
        (out / name).write_bytes(data)
        all_answers[name] = ans
        print(f"{out / name}: {len(data)} bytes, {ans['stored_params']} stored params")
    (out / "answers.json").write_text(json.dumps(all_answers, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
