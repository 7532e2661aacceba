"""Compute (MACs/FLOPs) cases the first tests left open, found by mutation testing: each test
fails on a deliberately broken ``auditor/analyses/compute.py`` and passes on the real one.

Every expected figure is counted by hand in the test, from the graph as written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.analyses.compute import Compute, OpTypeCost
from test_compute import _loop_model  # tests/ is on sys.path (rootdir-relative test modules)

MS = helper.make_opsetid("com.microsoft", 1)


def _weight(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    values = np.random.default_rng(seed + len(name)).standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(values, name)


def _float(name: str, shape: list[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _compute(tmp_path: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
             outputs: list[onnx.ValueInfoProto], weights: list[onnx.TensorProto], opset: int = 18,
             extra: tuple[onnx.OperatorSetIdProto, ...] = ()) -> Compute:  # fmt: skip
    graph = helper.make_graph(nodes, "m", inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    compute = auditor.audit(path).compute
    assert compute is not None
    return compute


def test_matmul_of_two_vectors_is_one_dot_product(tmp_path: Path) -> None:
    # [8] x [8] -> a scalar: one output element, 8 multiply-adds (the empty output shape counts 1 element)
    compute = _compute(tmp_path, [helper.make_node("MatMul", ["a", "b"], ["y"])], [_float("a", [8]), _float("b", [8])],
                       [_float("y", None)], [])  # fmt: skip
    assert (compute.macs, compute.flops) == (8, 16) and compute.complete


def test_conv_with_an_empty_optional_bias_adds_no_bias(tmp_path: Path) -> None:
    # x [1,2,5,5], 4 filters of 2x3x3, no padding: 4*3*3 = 36 outputs of 18 MACs; the bias slot is ""
    node = helper.make_node("Conv", ["x", "w", ""], ["y"])
    compute = _compute(tmp_path, [node], [_float("x", [1, 2, 5, 5])], [_float("y", None)], [_weight("w", 4, 2, 3, 3)])
    assert compute.macs == 36 * 18
    assert compute.flops == 2 * 36 * 18  # no bias adds


def test_fused_matmul_transposes_a_two_dimensional_a(tmp_path: Path) -> None:
    # FusedMatMul(transA=1): a [8,3] read as [3,8], times b [8,5]: y [3,5], each an 8-long dot product
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft", transA=1)
    compute = _compute(tmp_path, [node], [_float("a", [8, 3]), _float("b", [8, 5])], [_float("y", [3, 5])], [], extra=(MS,))
    assert compute.macs == 3 * 5 * 8 and compute.flops == 2 * 120


def test_fused_matmul_without_an_inferred_output_broadcasts_its_operands(tmp_path: Path) -> None:
    # onnx cannot infer a contrib op: [2,1,4,8] x [3,8,5] broadcasts to [2,3,4,5], each output 8 MACs
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft")
    compute = _compute(tmp_path, [node], [_float("a", [2, 1, 4, 8]), _float("b", [3, 8, 5])], [_float("y", None)], [], extra=(MS,))
    assert compute.macs == 2 * 3 * 4 * 5 * 8 and compute.unknown_shape_ops == {}


def test_matmul_with_an_operand_of_unknown_rank_uses_the_known_output(tmp_path: Path) -> None:
    # x has no shape at all; w [16,5] gives the inner size, the declared y [3,5] the outputs: 15 * 16 MACs
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    compute = _compute(tmp_path, [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], [_float("y", [3, 5])],
                       [_weight("w", 16, 5)])  # fmt: skip
    assert compute.macs == 3 * 5 * 16 and compute.unknown_shape_ops == {}


def test_low_bit_matmul_flops_are_two_per_mac(tmp_path: Path) -> None:
    # MatMulNBits: A [1,5,64] times K=64 x N=32: 5 * 64 * 32 MACs, 2 FLOPs each, nothing else
    blob = numpy_helper.from_array(np.zeros((32, 2, 16), dtype=np.uint8), "w")
    scales = numpy_helper.from_array(np.ones((64,), dtype=np.float32), "scales")
    node = helper.make_node("MatMulNBits", ["a", "w", "scales"], ["y"], domain="com.microsoft", K=64, N=32, bits=4, block_size=32)
    compute = _compute(tmp_path, [node], [_float("a", [1, 5, 64])], [_float("y", None)], [blob, scales], extra=(MS,))
    assert (compute.macs, compute.flops) == (5 * 64 * 32, 2 * 5 * 64 * 32)


def test_einsum_with_an_ellipsis_counts_the_batch_dims(tmp_path: Path) -> None:
    # '...ij,...jk->...ik' over a [2,3,4,5] and b [2,3,5,6]: 2*3 batches of a 4x5 by 5x6 product
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="...ij,...jk->...ik")
    compute = _compute(tmp_path, [node], [_float("a", [2, 3, 4, 5]), _float("b", [2, 3, 5, 6])], [_float("y", None)], [])
    assert compute.macs == 2 * 3 * 4 * 5 * 6
    assert compute.flops == 2 * compute.macs


def test_three_dimensional_attention_counts_heads_from_the_attribute(tmp_path: Path) -> None:
    # Attention (opset 23) on 3-D inputs: Q [2, 8, 4 heads x 16], K and V [2, 10, 4 x 16]
    q, k, v = _float("q", [2, 8, 64]), _float("k", [2, 10, 64]), _float("v", [2, 10, 64])
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=4, kv_num_heads=4)
    compute = _compute(tmp_path, [node], [q, k, v], [_float("y", None)], [], opset=23)
    products = 2 * 4 * 8 * 10 * 16  # batch x heads x queries x keys x head size: Q K^T, then weights x V
    scores = 2 * 4 * 8 * 10  # softmax: 3 per score
    assert compute.macs == 2 * products
    assert compute.flops == 2 * compute.macs + 3 * scores


def test_packed_qkv_attention(tmp_path: Path) -> None:
    # contrib Attention: x [1, 8 tokens, 32], packed QKV weight [32, 96], 4 heads of 8
    node = helper.make_node("Attention", ["x", "w"], ["y"], domain="com.microsoft", num_heads=4)
    compute = _compute(tmp_path, [node], [_float("x", [1, 8, 32])], [_float("y", None)], [_weight("w", 32, 96)], extra=(MS,))
    projection = 8 * 32 * 96
    products = 2 * 8 * 8 * 32  # Q K^T and weights x V over all heads: 8 x 8 scores per head of 8, 4 heads = width 32
    assert compute.macs == projection + products
    assert compute.flops == 2 * compute.macs + 3 * 4 * 8 * 8  # softmax over 4 heads of 8 x 8 scores


def test_broadcasting_add_costs_its_output(tmp_path: Path) -> None:
    # [4,1] + [1,6] -> [4,6]: one FLOP per output element, 24, not per element of the first input (4)
    compute = _compute(tmp_path, [helper.make_node("Add", ["a", "b"], ["y"])], [_float("a", [4, 1]), _float("b", [1, 6])],
                       [_float("y", None)], [])  # fmt: skip
    assert (compute.macs, compute.flops) == (0, 24)


def test_rnn_counts_one_gate(tmp_path: Path) -> None:
    # RNN, hidden 4, input 3, 5 steps, batch 2: per step one gate of (3 + 4) inputs per hidden unit;
    # FLOPs: 2 per MAC, 1 activation per hidden unit and step, two bias adds (input and recurrent)
    hidden, inputs, steps, batch = 4, 3, 5, 2
    node = helper.make_node("RNN", ["x", "w", "r", "b"], ["y"], hidden_size=hidden)
    weights = [_weight("w", 1, hidden, inputs), _weight("r", 1, hidden, hidden), _weight("b", 1, 2 * hidden)]
    compute = _compute(tmp_path, [node], [_float("x", [steps, batch, inputs])], [_float("y", None)], weights)
    macs = steps * batch * hidden * (inputs + hidden)
    assert compute.macs == macs == 280
    assert compute.flops == 2 * macs + steps * batch * hidden * (1 + 2)


def test_global_pooling_is_one_flop_per_input_element(tmp_path: Path) -> None:
    # GlobalAveragePool over x [1,3,4,4]: every one of the 48 input elements read into a sum once
    compute = _compute(tmp_path, [helper.make_node("GlobalAveragePool", ["x"], ["y"])], [_float("x", [1, 3, 4, 4])],
                       [_float("y", None)], [])  # fmt: skip
    assert (compute.macs, compute.flops) == (0, 48)


def test_a_loop_of_unknown_trip_count_runs_its_body_once_per_node(tmp_path: Path) -> None:
    # Loop whose trip count is a graph input; body: state [1,4] x w [4,4]: counted once, and each node says 1 run
    compute = auditor.audit(_loop_model(tmp_path, None)).compute
    assert compute is not None
    (node,) = compute.nodes
    assert (node.op_type, node.macs, node.runs) == ("MatMul", 16, 1)
    assert OpTypeCost("MatMul", 1, 16, 32) in compute.by_op_type


def test_batch_norm_is_two_flops_per_element(tmp_path: Path) -> None:
    # inference BatchNormalization over x [1,3,4,4]: a scale and a shift per element, 2 x 48
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    compute = _compute(tmp_path, [node], [_float("x", [1, 3, 4, 4])], [_float("y", None)], [_weight(n, 3) for n in "sbmv"])
    assert (compute.macs, compute.flops) == (0, 96)


def test_routed_experts_count_their_expected_tokens(tmp_path: Path) -> None:
    """A router over 4 experts (k=2) for 6 tokens of width 8; each expert gathers its tokens
    (``x[nonzero(top == e)]``, a size known only at run time) and applies its own [8,16] weight.

    By hand: the router 6*8*4 = 192 MACs; each expert receives 6*2/4 = 3 tokens on average:
    3*8*16 = 384 MACs, 4 experts. FLOPs: 2 per MAC, TopK reads 6*4 logits, each Equal 6*2."""
    tokens, width, experts, k, hidden = 6, 8, 4, 2, 16
    weights = [_weight("R", width, experts), numpy_helper.from_array(np.array([k], dtype=np.int64), "k"),
               numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "R"], ["logits"]), helper.make_node("TopK", ["logits", "k"], ["top_v", "top"], axis=-1)]
    outputs = []
    for e in range(experts):
        weights += [numpy_helper.from_array(np.array(e, dtype=np.int64), f"e{e}"), _weight(f"W{e}", width, hidden, seed=e)]
        nodes += [
            helper.make_node("Equal", ["top", f"e{e}"], [f"mask{e}"]),
            helper.make_node("NonZero", [f"mask{e}"], [f"where{e}"]),
            helper.make_node("Gather", [f"where{e}", "zero"], [f"rows{e}"], axis=0),
            helper.make_node("Gather", ["x", f"rows{e}"], [f"tokens{e}"], axis=0),
            helper.make_node("MatMul", [f"tokens{e}", f"W{e}"], [f"y{e}"]),
        ]
        outputs.append(_float(f"y{e}", None))
    compute = _compute(tmp_path, nodes, [_float("x", [tokens, width])], outputs, weights)
    per_expert = tokens * k / experts * width * hidden
    assert per_expert == 384
    assert compute.macs == tokens * width * experts + experts * per_expert
    assert compute.flops == 2 * compute.macs + tokens * experts + experts * tokens * k
    assert sorted(n.macs for n in compute.nodes if n.op_type == "MatMul") == [192.0, 384.0, 384.0, 384.0, 384.0]
    assert compute.unknown_shape_ops == {}


def test_repeated_blocks_are_costed_per_block(tmp_path: Path) -> None:
    """Six layers, each a MatMul by its own W_i [64,64] then a Relu, over x [1,16,64]: one family
    of 6 blocks. A block's cost is that of the nodes applying its weights: the MatMul,
    16*64*64 MACs and twice that in FLOPs (the Relu applies no weight of the block)."""
    nodes, weights, previous = [], [], "x"
    for i in range(6):
        name = f"encoder/layer.{i}/dense/weight"
        nodes += [helper.make_node("MatMul", [previous, name], [f"h{i}"], name=f"/encoder/layer.{i}/dense/MatMul"),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"/encoder/layer.{i}/act/Relu")]  # fmt: skip
        weights.append(_weight(name, 64, 64, seed=i))
        previous = f"r{i}"
    compute = _compute(tmp_path, nodes, [_float("x", [1, 16, 64])], [_float(previous, None)], weights)
    (family,) = compute.blocks
    assert family.first_tensor == "encoder/layer.0/dense/weight" and family.blocks == 6
    assert family.macs_per_block == 16 * 64 * 64
    assert family.flops_per_block == 2 * 16 * 64 * 64
    assert compute.macs == 6 * family.macs_per_block  # the blocks are all of the model's MACs
    # per op type, heaviest first: 6 MatMuls, 6 Relus of 16 * 64 elements each
    assert compute.by_op_type == (OpTypeCost("MatMul", 6, 6 * 16 * 64 * 64, 12 * 16 * 64 * 64), OpTypeCost("Relu", 6, 0, 6 * 16 * 64))
