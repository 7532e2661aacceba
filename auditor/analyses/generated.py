"""Weights generated at run time: ConstantOfShape, RandomNormal and similar feeding a weight input.

The file stores almost nothing for them, but the model runs with their elements as weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.analyses.usage import WEIGHT_ROLES, Read, reads_of
from auditor.graph import ModelGraph, OpNode
from auditor.roles import OpKind, Role


@dataclass(frozen=True)
class GeneratedWeight:
    """A weight made at run time by ``node``, and the nodes that apply it."""

    node: str
    shape: tuple[int, ...]
    reads: tuple[Read, ...]

    @property
    def numel(self) -> int:
        total = 1
        for d in self.shape:
            total *= d
        return total


def _generated_shape(model: ModelGraph, node: OpNode) -> tuple[int, ...] | None:
    shape: tuple[int | None, ...] | None = None
    raw = node.attrs.get("shape")
    first = node.inputs[0] if node.inputs else ""
    if isinstance(raw, list):  # RandomNormal, RandomUniform
        shape = tuple(int(d) for d in raw)
    elif first and node.role(0) is Role.SHAPE:  # *Like ops: the shape of their input
        shape = model.tensors[first].shape if first in model.tensors else model.value_shapes.get(first)
    elif first:  # ConstantOfShape: the shape is the input's values
        dims = model.small_constant(first)
        if dims is not None and dims.dtype.kind in "iu" and dims.ndim == 1:
            shape = tuple(int(d) for d in dims)
    if shape is None or any(d is None or d < 0 for d in shape):
        return None
    return tuple(int(d) for d in shape if d is not None)


def generated_weights(model: ModelGraph) -> tuple[GeneratedWeight, ...]:
    """Weights generated at run time that reach a weight input (also through views, slices and
    elementwise scaling), with static shapes and more than one element."""
    found = []
    for node in model.nodes.values():
        if node.kind is not OpKind.GENERATOR or not node.outputs or not node.outputs[0]:
            continue
        shape = _generated_shape(model, node)
        if shape is None:
            continue
        generated = GeneratedWeight(node.id, shape, ())
        if generated.numel <= 1:
            continue
        reads = tuple(r for r in reads_of(model, node.outputs[0], shape, through_elementwise=True) if r.role in WEIGHT_ROLES)
        if reads:
            found.append(GeneratedWeight(node.id, shape, reads))
    return tuple(found)
