"""Which stored tensors are parameters (learned values), by dtype and by how they are used."""

from __future__ import annotations

from auditor.graph import CONFIG_SLOTS, QUANTIZED_WEIGHT_SLOTS, ModelGraph, TensorInfo


def is_parameter(model: ModelGraph, tensor: TensorInfo) -> bool:
    """A stored tensor carrying learned values.

    Floating-point tensors with more than one element are parameters unless every read is a
    configuration slot (Resize scales, Range bounds...). Integer tensors are parameters only
    where they hold quantized weights (the data input of DequantizeLinear, QLinear*,
    MatMulInteger, MatMulNBits...): shapes, axes and indices are not. A one-element tensor is a
    scalar (a scale, an epsilon) and never counts.
    """
    if tensor.stored_elements <= 1:
        return False
    chain = [(model.nodes[use.node].op_type, use.index, terminal) for use, terminal in model.view_chain_uses(tensor.id)]
    if tensor.is_float:
        applied = [(op, index) for op, index, terminal in chain if terminal]
        return not applied or not all(slot in CONFIG_SLOTS for slot in applied)
    if tensor.dtype.startswith(("int", "uint")):  # DequantizeLinear is a view op: look along the chain
        return any((op, index) in QUANTIZED_WEIGHT_SLOTS for op, index, _ in chain)
    return False


def parameter_tensors(model: ModelGraph) -> tuple[TensorInfo, ...]:
    """The model's parameter tensors, in file order."""
    return tuple(t for t in model.tensors.values() if is_parameter(model, t))
