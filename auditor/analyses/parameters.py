"""Which stored tensors are parameters (learned values), by dtype and by the roles they are read in."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.graph import ModelGraph, TensorInfo
from auditor.roles import Role


def is_parameter(model: ModelGraph, tensor: TensorInfo, listed_apart: frozenset[str] | None = None) -> bool:
    """A stored tensor carrying learned values.

    Floating-point tensors with more than one element are parameters unless every read is
    metadata (configuration, shapes, indices, quantization scales). Integer tensors are
    parameters only where a node reads them as a quantized weight (DequantizeLinear, QGemm,
    MatMulNBits...): shapes, axes and indices are not. A one-element tensor is a scalar (a
    scale, an epsilon) and never counts.

    A model without a graph (a checkpoint of weights alone) has no reads to tell by: see
    :func:`is_stored_parameter`; ``listed_apart`` is the names of its ``not_parameters``.
    """
    if not model.has_graph:
        if listed_apart is None:
            listed_apart = frozenset(n.name for n in model.not_parameters)
        return is_stored_parameter(tensor, listed_apart)
    if tensor.stored_elements <= 1:
        return False
    uses = model.consumers.get(tensor.id, ())
    if len(uses) == 1:  # the common case, one node applying it directly: no walk
        node, index = model.nodes[uses[0].node], uses[0].index
        if not model.passed_on(node, index):
            if tensor.is_float:
                return not node.role(index).is_metadata
            return tensor.dtype.startswith(("int", "uint")) and index in node.quantized
    chain = [(model.nodes[use.node], use.index, terminal) for use, terminal in model.view_chain_uses(tensor.id)]
    if tensor.is_float:
        applied = [node.role(index) for node, index, terminal in chain if terminal]
        return not applied or not all(role.is_metadata for role in applied)
    if tensor.dtype.startswith(("int", "uint")):  # DequantizeLinear passes it on: look along the chain
        return any(index in node.quantized for node, index, _ in chain)
    return False


def is_stored_parameter(tensor: TensorInfo, listed_apart: frozenset[str]) -> bool:
    """A parameter of a weights-only model: every stored float tensor, block-quantized ones
    (GGUF's q4_0, q8_0...) and one-element ones included (torch counts a learned scalar), unless
    the loader listed it apart (buffers, running statistics, optimizer and training state).
    Integer and boolean tensors are buffers: no reading node says they are quantized weights."""
    if tensor.name in listed_apart or tensor.id in listed_apart:
        return False
    return not tensor.dtype.startswith(("int", "uint", "bool", "string"))


def parameter_tensors(model: ModelGraph) -> tuple[TensorInfo, ...]:
    """The model's parameter tensors, in file order."""
    listed_apart = frozenset(n.name for n in model.not_parameters)
    return tuple(t for t in model.tensors.values() if is_parameter(model, t, listed_apart))


@dataclass(frozen=True)
class UnknownRole:
    """A stored tensor read by an op the vocabulary does not know: counted as a parameter only
    when it holds floats (``counted``); listed either way so that nothing is dropped in silence."""

    tensor: str
    dtype: str
    shape: tuple[int, ...]
    ops: tuple[str, ...]  # "domain:op_type" of the unknown readers
    counted: bool


def unknown_roles(model: ModelGraph, params: tuple[TensorInfo, ...]) -> tuple[UnknownRole, ...]:
    """Stored tensors (more than one element) that some op of unknown semantics reads."""
    if not any(Role.UNKNOWN in node.roles for node in model.nodes.values()):
        return ()  # the common case: every op is known, no tensor to walk
    param_ids = {t.id for t in params}
    found = []
    for tensor in model.tensors.values():
        if tensor.stored_elements <= 1:
            continue
        ops = sorted(
            {
                f"{node.domain or 'ai.onnx'}:{node.op_type}"
                for use, terminal in model.view_chain_uses(tensor.id)
                if terminal and (node := model.nodes[use.node]).role(use.index) is Role.UNKNOWN
            }
        )
        if ops:
            found.append(UnknownRole(tensor.id, tensor.dtype, tensor.shape, tuple(ops), tensor.id in param_ids))
    return tuple(found)
