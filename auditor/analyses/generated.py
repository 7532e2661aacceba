"""Weights generated at run time: ConstantOfShape, RandomNormal and similar feeding a weight input.

The file stores almost nothing for them, but the model runs with their elements as weights.
"""

from __future__ import annotations

import math

import numpy as np

from auditor.graph import VIEW_OPS, ModelGraph, OpNode

_GENERATORS = {"ConstantOfShape", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike"}
# elementwise ops through which generated values stay weights (W = RandomNormal() * 0.02)
_PASS_THROUGH = {"Mul", "Add", "Sub", "Div", "Neg", "Abs"}
WEIGHT_SLOTS: frozenset[tuple[str, int]] = frozenset(
    {
        ("MatMul", 1), ("Gemm", 1), ("Gemm", 2), ("Conv", 1), ("Conv", 2), ("ConvTranspose", 1),
        ("ConvTranspose", 2), ("Gather", 0), ("LayerNormalization", 1), ("LayerNormalization", 2),
        ("BatchNormalization", 1), ("BatchNormalization", 2), ("Einsum", 1), ("LSTM", 1), ("LSTM", 2),
        ("GRU", 1), ("GRU", 2), ("RNN", 1), ("RNN", 2),
    }
)  # fmt: skip


def _generated_elements(model: ModelGraph, node: OpNode) -> int | None:
    shape: tuple[int | None, ...] | None = None
    if node.op_type in ("RandomNormal", "RandomUniform"):
        raw = node.attrs.get("shape")
        shape = tuple(int(d) for d in raw) if isinstance(raw, list) else None
    elif node.op_type == "ConstantOfShape" and node.inputs:
        dims = model.small_constant(node.inputs[0])
        shape = tuple(int(d) for d in dims.reshape(-1)) if dims is not None and dims.dtype.kind in "iu" else None
    elif node.inputs:  # *Like ops: the shape of their input
        shape = model.value_shapes.get(node.inputs[0])
        if node.inputs[0] in model.tensors:
            shape = model.tensors[node.inputs[0]].shape
    if shape is None or any(d is None or d < 0 for d in shape):
        return None
    return math.prod(shape)  # type: ignore[arg-type]


def _feeds_weight(model: ModelGraph, value: str) -> bool:
    def passes_on(node: OpNode, index: int) -> str | None:
        if (VIEW_OPS.get(node.op_type) == index or node.op_type in _PASS_THROUGH) and node.outputs:
            return node.outputs[0] or None
        return None

    return any((model.nodes[use.node].op_type, use.index) in WEIGHT_SLOTS for use, _ in model.walk_uses(value, passes_on))


def generated_parameters(model: ModelGraph) -> int:
    """Elements of weights generated at run time (static shapes only; one element is a scalar)."""
    total = 0
    for node in model.nodes.values():
        if node.op_type in _GENERATORS and node.outputs and node.outputs[0]:
            elements = _generated_elements(model, node)
            if elements and elements > 1 and _feeds_weight(model, node.outputs[0]):
                total += elements
    return total
