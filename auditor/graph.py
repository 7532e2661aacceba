"""The graph model every analysis reads: stored tensors, op nodes, scopes, and their reuse.

Loaders build a :class:`ModelGraph`; nothing here imports onnx or torch. Tensor metadata
(dtype, shape, bytes, where the bytes live) is known without reading tensor data; bytes are
read only through :meth:`TensorInfo.read`, which memory-maps external data.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, NamedTuple

import numpy as np

from auditor.roles import Cost, OpKind, Part, Role, Routing

if TYPE_CHECKING:
    import networkx as nx

Chunks = Iterator[tuple[memoryview, np.ndarray]]

# Packed below one byte per element: their raw bytes differ from their unpacked numpy values.
PACKED_DTYPES = frozenset({"int4", "uint4", "int2", "uint2", "float4e2m1", "float6e2m3", "float6e3m2"})

FLOAT_DTYPES = frozenset(
    {
        "float16",
        "float32",
        "float64",
        "bfloat16",
        "float8e4m3fn",
        "float8e4m3fnuz",
        "float8e5m2",
        "float8e5m2fnuz",
        "float8e8m0",
        "float4e2m1",
    }
)


Dim = int | str  # a size, or the name of a size known only at run time (data-dependent)


@dataclass(frozen=True)
class ShapeRequest:
    """The input shapes to cost a model at: ``--dim NAME=VALUE`` and ``--input-shape NAME=AxB``.

    A ``dims`` name that is no symbolic dimension of the model binds a family of defaulted
    dimensions instead: ``batch`` every batch axis, ``seq`` (or ``sequence``) every sequence
    axis, ``image`` every spatial axis of an image input.
    """

    dims: Mapping[str, int] = field(default_factory=dict)
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    batch: int = 1
    sequence: int = 128
    image: int = 224


@dataclass(frozen=True)
class DimBinding:
    """One symbolic input dimension and the size it was given."""

    name: str
    value: int
    source: str  # "--dim", "--input-shape", "default batch", "default sequence", "default image"


@dataclass(frozen=True)
class ShapeInfo:
    """How the model's input shapes were bound, and how far shapes could be inferred from them."""

    inputs: Mapping[str, tuple[int, ...]]  # graph input name -> the shape it is costed at
    dims: tuple[DimBinding, ...]
    unused: tuple[str, ...] = ()  # --dim / --input-shape names the model does not have
    inferred: str = "onnx"  # which shape inference ran ("onnx", "onnx, in N segments", or "none: <why>")
    unknown_values: int = 0  # node outputs whose shape stayed unknown
    unknown_by_op: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NonParameter:
    """A stored tensor that is not a parameter: a buffer or training state a checkpoint carries."""

    name: str
    kind: str  # "integer buffer" | "running statistic" | "optimizer state" | "buffer" | "training state"
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's configuration said beside its weights (no graph came with it)."""

    architecture: str | None  # the transformers class whose ties and buffers were used
    architecture_note: str  # why no architecture was used, where none was
    experts: tuple[int, int | None] | None  # (n, k) experts per token as the configuration states them
    state_dict_path: str  # where in a training checkpoint the model's state dict was found
    missing: tuple[str, ...]  # parameters of the architecture the checkpoint lacks
    unexpected: tuple[str, ...]  # checkpoint names the architecture does not have
    architecture_params: int | None = None  # the architecture's own parameter count
    applied_params: int | None = None  # what the architecture applies per forward (a meta-device forward)
    applied_note: str = ""  # how that was counted, or why it could not be


@dataclass(frozen=True)
class ExternalRef:
    """Where an external tensor's bytes live: a file inside the model's folder, checked at load."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)  # slots: a large export holds 50,000 of them
class TensorInfo:
    """A tensor stored in the model file: an initializer, a sparse initializer or a Constant."""

    id: str
    name: str
    scope: str
    origin: str  # "initializer" | "sparse_initializer" | "constant"
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    external: ExternalRef | None = None
    nnz: int | None = None  # stored values of a sparse tensor
    reader: Callable[[], np.ndarray] | None = field(default=None, compare=False, repr=False)
    # (raw bytes, values) chunk by chunk, given by the loader: reading bytes is its business
    chunker: Callable[[TensorInfo, int, bytearray | None], Chunks] | None = field(default=None, compare=False, repr=False)
    numel: int = field(init=False, compare=False, repr=False)  # elements of the dense tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "numel", math.prod(self.shape))  # frozen: set once, here

    @property
    def stored_elements(self) -> int:
        """Elements actually stored: the dense count, or the non-zeros of a sparse tensor."""
        return self.nnz if self.nnz is not None else self.numel

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def read(self) -> np.ndarray:
        """The tensor's values (a read-only memory map for external data where possible)."""
        if self.reader is None:
            raise ValueError(f"tensor {self.id} has no data")
        return self.reader()

    def chunks(self, elements: int = 1 << 22, buffer: bytearray | None = None) -> Chunks:
        """(raw bytes, values) of consecutive chunks of ``elements`` elements, in storage order;
        bytes read from a file go into ``buffer`` when one is given (the values are views of it)."""
        if self.chunker is None:
            raise ValueError(f"tensor {self.id} has no data")
        return self.chunker(self, elements, buffer)


@dataclass(frozen=True, slots=True)
class OpNode:
    """One op. ``inputs`` / ``outputs`` hold resolved value ids ('' for an omitted input).

    ``roles[i]`` says how the op reads input i (the loader's vocabulary decides); analyses read
    roles and ``kind``, never ``op_type``, which is kept for display.
    """

    id: str
    op_type: str
    domain: str
    scope: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # scope ids this node runs: subgraph attributes (body, then_branch...) or a local function
    invokes: tuple[str, ...] = ()
    roles: tuple[Role, ...] = ()
    kind: OpKind = OpKind.OTHER
    # quantized weight slot -> (scale slot, zero-point slot)
    quantized: Mapping[int, tuple[int | None, int | None]] = field(default_factory=dict, compare=False)
    # for a SLICE read: the part of the data input each output holds (None: unknown bounds)
    parts: tuple[Part | None, ...] = ()
    routing: Routing | None = None  # for an EXPERT_BANK read: k of n experts per token
    cost: Cost = Cost.UNCOSTED  # how its arithmetic is counted
    # where the exporter says the node comes from: the torch module path and operation
    # ("transformer.h.0.attn: matmul"), '' when the file does not say
    source: str = ""

    def role(self, index: int) -> Role:
        """How this node reads input ``index``."""
        return self.roles[index] if index < len(self.roles) else Role.UNKNOWN


@dataclass(frozen=True)
class Scope:
    """A graph: the main graph (id ''), a subgraph attribute of a node, or a local function."""

    id: str
    kind: str  # "main" | "subgraph" | "function"
    owner: str | None  # node id owning a subgraph
    attr: str | None  # attribute name of a subgraph (body, then_branch, else_branch...)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class Use(NamedTuple):
    """A node reading a value at one input position (a tuple: there is one per node input)."""

    node: str
    index: int  # type: ignore[assignment]  # the input position; shadows tuple.index, never called on a Use


@dataclass(frozen=True)
class ModelGraph:
    """Everything the analyses need to know about one model, independent of its file format."""

    path: str
    file_size: int
    producer: str
    producer_version: str
    ir_version: int
    opsets: Mapping[str, int]
    tensors: Mapping[str, TensorInfo]
    nodes: Mapping[str, OpNode]
    scopes: Mapping[str, Scope]
    inputs: tuple[str, ...]  # runtime inputs of the main graph (initializers excluded)
    outputs: tuple[str, ...]
    value_shapes: Mapping[str, tuple[int | None, ...]] = field(default_factory=dict)
    external_data_bytes: int = 0
    # value id -> shape at the bound input shapes, a str naming a size known only at run time
    shapes: Mapping[str, tuple[Dim, ...]] = field(default_factory=dict)
    dtypes: Mapping[str, str] = field(default_factory=dict)  # value id -> element type
    shape_info: ShapeInfo | None = None
    # where the model came from: "onnx", "safetensors", "torch-state-dict", "gguf", "hf-folder"...
    source: str = "onnx"
    # names stored as one storage (a state dict's tied parameters): name -> the tensor id kept
    aliases: Mapping[str, str] = field(default_factory=dict)
    not_parameters: tuple[NonParameter, ...] = ()  # buffers and training state, counted apart
    checkpoint: CheckpointInfo | None = None  # for a checkpoint: what its configuration said

    @property
    def has_graph(self) -> bool:
        """Whether the model comes with its computation (a checkpoint of weights alone does not)."""
        return bool(self.nodes)

    # ---- indexes derived once -------------------------------------------------------------

    @cached_property
    def consumers(self) -> Mapping[str, tuple[Use, ...]]:
        """value id -> the nodes reading it (from any scope, outer-scope reads included)."""
        index: dict[str, list[Use]] = defaultdict(list)
        for node in self.nodes.values():
            node_id = node.id
            for position, value in enumerate(node.inputs):
                if value:
                    index[value].append(Use(node_id, position))
        return {value: tuple(uses) for value, uses in index.items()}

    @cached_property
    def producer_of(self) -> Mapping[str, str]:
        """value id -> id of the node that computes it."""
        return {out: node.id for node in self.nodes.values() for out in node.outputs if out}

    @cached_property
    def nodes_by_scope(self) -> Mapping[str, tuple[OpNode, ...]]:
        index: dict[str, list[OpNode]] = defaultdict(list)
        for node in self.nodes.values():
            index[node.scope].append(node)
        return {scope: tuple(nodes) for scope, nodes in index.items()}

    @cached_property
    def runners_by_scope(self) -> Mapping[str, tuple[OpNode, ...]]:
        """scope id -> its nodes that run subgraphs or functions (Loop, If, Scan, calls)."""
        return {scope: tuple(n for n in nodes if n.invokes) for scope, nodes in self.nodes_by_scope.items()}

    @cached_property
    def callers(self) -> Mapping[str, tuple[str, ...]]:
        """scope id -> ids of the nodes that run it (one owner for a subgraph, call sites for a function)."""
        index: dict[str, list[str]] = defaultdict(list)
        for node in self.nodes.values():
            for scope in node.invokes:
                index[scope].append(node.id)
        return {scope: tuple(nodes) for scope, nodes in index.items()}

    # ---- queries --------------------------------------------------------------------------

    def view_chain_uses(self, value: str) -> Iterator[tuple[Use, bool]]:
        """Every use of ``value`` through the nodes that pass it on, with whether the use is terminal.

        A use is terminal when the node does something with the value other than passing it on
        (a MatMul applying it, a Shape reading its shape...); views, slices and
        DequantizeLinear on the way are yielded as non-terminal, and so is a Loop that carries
        the value through its iterations unchanged: the reads inside the body are the uses
        (and the body's trip count multiplies them).
        """
        return self.walk_uses(value, self.passed_on)

    def walk_uses(self, value: str, passes_on: Callable[[OpNode, int], tuple[str, ...]]) -> Iterator[tuple[Use, bool]]:
        """Uses of ``value`` and, where ``passes_on(node, index)`` names values the node passes
        it on to, the uses of those values too (yielded with False; the others with True)."""
        stack = [value]
        seen: set[str] = set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            for use in self.consumers.get(current, ()):
                following = passes_on(self.nodes[use.node], use.index)
                yield use, not following
                stack.extend(following)

    def passed_on(self, node: OpNode, index: int) -> tuple[str, ...]:
        """The values ``node`` hands its input ``index`` on to (views, slices, loop-carried)."""
        role = node.role(index)
        if role in (Role.VIEW, Role.DEQUANTIZE):
            return node.outputs[:1] if node.outputs and node.outputs[0] else ()
        if role is Role.SLICE:
            return tuple(out for out in node.outputs if out)
        if role is Role.LOOP_CARRIED:
            carried = self._loop_carried_input(node, index)
            return (carried,) if carried else ()
        return ()

    def _loop_carried_input(self, node: OpNode, index: int) -> str | None:
        """The body input of a Loop's carried value at ``index`` if the body passes it on unchanged."""
        if not node.invokes:
            return None
        body = self.scopes[node.invokes[0]]
        if index >= len(body.inputs) or index - 1 >= len(body.outputs):
            return None
        body_input = body.inputs[index]
        return body_input if self.before_identities(body.outputs[index - 1]) == body_input else None

    def before_identities(self, value: str) -> str:
        """The value that ``value`` copies through a chain of Identity ops (itself if none)."""
        seen = {value}
        while (producer := self.producer_of.get(value)) is not None:
            node = self.nodes[producer]
            if node.kind is not OpKind.IDENTITY or not node.inputs or node.inputs[0] in seen:
                break  # a cycle can only come from a malformed file: stop where it starts
            value = node.inputs[0]
            seen.add(value)
        return value

    def small_constant(self, value: str, limit: int = 16) -> np.ndarray | None:
        """The values of a stored tensor of at most ``limit`` elements (trip counts, shapes)."""
        tensor = self.tensors.get(value)
        if tensor is None or tensor.numel > limit:
            return None
        return np.asarray(tensor.read())

    def terminal_uses(self, value: str) -> tuple[Use, ...]:
        """The nodes that apply ``value``, looking through view ops."""
        return tuple(use for use, terminal in self.view_chain_uses(value) if terminal)

    @cached_property
    def graph_outputs(self) -> frozenset[str]:
        """Values returned by any graph, subgraph or function."""
        return frozenset(out for scope in self.scopes.values() for out in scope.outputs)

    def reaches_output(self, value: str) -> bool:
        """Whether ``value`` (or a view of it) is an output of its graph."""
        outputs = self.graph_outputs
        if value in outputs:
            return True
        return any(
            out in outputs for use, _ in self.view_chain_uses(value) for out in self.passed_on(self.nodes[use.node], use.index)
        )



def graphml_lines(model: ModelGraph) -> Iterator[str]:
    """The graph of tensor reuse as GraphML. Characters XML cannot hold (control characters a
    hostile file may put in names) are written as \\xNN escapes."""
    import networkx as nx  # imported on demand: an audit without --graphml does not need it

    graph = to_networkx(model)
    if any(_XML_UNSAFE.search(str(n)) for n in graph):
        graph = nx.relabel_nodes(graph, {n: _xml_safe(n) for n in graph})
    for _, data in list(graph.nodes(data=True)) + [(None, d) for *_, d in graph.edges(data=True)]:
        for key, value in data.items():
            if isinstance(value, str):
                data[key] = _xml_safe(value)
    yield from nx.generate_graphml(graph)


def graphml_text(model: ModelGraph) -> str:
    """The graph of tensor reuse as one GraphML document."""
    return "\n".join(graphml_lines(model))


_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    return _XML_UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def to_networkx(model: ModelGraph) -> "nx.MultiDiGraph":
    """The graph of tensor reuse: ops, values and scopes as nodes; reads, writes, nesting as edges.

    Node keys are prefixed (``op:``, ``value:``, ``scope:``) so ids from different kinds never
    collide. Edge ``kind`` is ``reads`` (value -> op, with the input ``index``), ``writes``
    (op -> value) or ``runs`` (op -> scope it runs); ``contains`` links a scope to its ops.
    """
    import networkx as nx

    graph = nx.MultiDiGraph(name=model.path)
    for scope in model.scopes.values():
        graph.add_node(f"scope:{scope.id}", kind="scope", scope_kind=scope.kind, label=scope.id or "main")
    for tensor in model.tensors.values():
        graph.add_node(
            f"value:{tensor.id}",
            kind="tensor",
            origin=tensor.origin,
            dtype=tensor.dtype,
            shape=",".join(map(str, tensor.shape)),
            numel=tensor.numel,
            nbytes=tensor.nbytes,
            scope=tensor.scope,
        )
    for node in model.nodes.values():
        graph.add_node(f"op:{node.id}", kind="op", op_type=node.op_type, domain=node.domain, scope=node.scope)
        graph.add_edge(f"scope:{node.scope}", f"op:{node.id}", kind="contains")
        for position, value in enumerate(node.inputs):
            if value:
                if f"value:{value}" not in graph:
                    graph.add_node(f"value:{value}", kind="value")
                graph.add_edge(f"value:{value}", f"op:{node.id}", kind="reads", index=position, role=node.role(position).value)
        for value in node.outputs:
            if value:
                if f"value:{value}" not in graph:
                    graph.add_node(f"value:{value}", kind="value")
                graph.add_edge(f"op:{node.id}", f"value:{value}", kind="writes")
        for invoked in node.invokes:
            graph.add_edge(f"op:{node.id}", f"scope:{invoked}", kind="runs")
    return graph


