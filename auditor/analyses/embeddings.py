"""Parameters used as lookup tables: the data input of a Gather indexed by the model's inputs."""

from __future__ import annotations

from typing import Iterable

from auditor.graph import ModelGraph, TensorInfo

_LOOKUP_OPS = {"Gather", "GatherBlockQuantized"}


def _depends_on_inputs(model: ModelGraph, value: str, inputs: frozenset[str]) -> bool:
    stack, seen = [value], set()
    while stack:
        current = stack.pop()
        if current in inputs:
            return True
        if current in seen:
            continue
        seen.add(current)
        producer = model.producer_of.get(current)
        if producer is not None:
            stack.extend(v for v in model.nodes[producer].inputs if v)
    return False


def embedding_tables(model: ModelGraph, params: Iterable[TensorInfo]) -> frozenset[str]:
    """Ids of parameters read (through view ops) as the table of a Gather whose indices derive
    from the main graph's runtime inputs (token ids, and positions computed from them)."""
    inputs = frozenset(model.inputs)
    found = set()
    for tensor in params:
        for use in model.terminal_uses(tensor.id):
            node = model.nodes[use.node]
            if node.op_type in _LOOKUP_OPS and use.index == 0 and len(node.inputs) > 1:
                if _depends_on_inputs(model, node.inputs[1], inputs):
                    found.add(tensor.id)
                    break
    return frozenset(found)
