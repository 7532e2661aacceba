"""Input shapes bound to sizes, and every value's shape inferred from them (onnx's inference).

Costs need concrete shapes. The graph inputs' symbolic dimensions are bound first (``--dim``,
``--input-shape``, then stated defaults: batch 1, sequence 128, image 224), written into the
model's input types, and onnx's shape inference runs with data propagation, so shape
arithmetic (``Shape -> Gather -> Concat -> Reshape``) resolves to numbers. What it leaves
unknown is taken from the shapes the exporter wrote (the dynamo exporter writes symbolic
expressions such as ``Min(32, s70)``), evaluated with the same bindings. Sizes that depend on
the data (``NonZero``: tokens routed to one expert) stay named symbols; the compute analysis
gives routed tokens their expected share.

Large tensors are detached from the protobuf while inference runs: the onnx API serialises the
whole model, and a self-contained 2 GB file would be copied four times for shapes that only
need the dims.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import re
from fractions import Fraction
from collections import Counter
from typing import Callable, Iterable, Iterator, Mapping

import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from auditor.errors import AuditError
from auditor.graph import Dim, DimBinding, ShapeInfo, ShapeRequest

# Tensors above these sizes are detached while onnx infers shapes. Integer tensors up to 512
# elements stay: data propagation reads them (shapes, axes, slice bounds). Float data matters to
# inference only as a few values (Resize's scales, a float Range's bounds): tensors of more than
# 16 elements are only copied, and a graph of many small weights made onnx's copies of the model
# the audit's peak memory. (Counted in elements: a tensor's byte size includes its name.)
_STUB_INTEGER_ELEMENTS = 512
_STUB_FLOAT_ELEMENTS = 16
_INTEGER_TYPES = frozenset({
    TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT64,
    TensorProto.UINT32, TensorProto.UINT16, TensorProto.UINT8, TensorProto.BOOL,
})  # fmt: skip


def _worth_detaching(tensor: TensorProto) -> bool:
    if tensor.data_location == TensorProto.EXTERNAL:
        return False
    limit = _STUB_INTEGER_ELEMENTS if tensor.data_type in _INTEGER_TYPES else _STUB_FLOAT_ELEMENTS
    return bool(math.prod(tensor.dims) > limit)


_SEQUENCE_NAMES = ("seq", "sequence")


def dims_of(value: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    """A value's stated dims (a size, a symbol's name, None for an unnamed unknown); None without a shape."""
    value_type = value.type
    if not value_type.HasField("tensor_type"):
        return None
    return _tensor_dims(value_type.tensor_type)


def _tensor_dims(tensor_type: onnx.TypeProto.Tensor) -> tuple[int | str | None, ...] | None:
    if not tensor_type.HasField("shape"):
        return None
    # a nonzero dim_value needs no HasField call (the common case, and the slow call)
    return tuple([
        d.dim_value or (0 if d.HasField("dim_value") else (d.dim_param or None)) for d in tensor_type.shape.dim
    ])  # fmt: skip


def _input_role(dims: tuple[int | str | None, ...], axis: int, elem_type: int) -> str:
    """Which default a dynamic axis of a graph input takes: batch, sequence or image size."""
    if axis == 0:
        return "batch"
    is_float = elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    if is_float and len(dims) == 4 and axis >= 2:
        return "image"
    return "sequence"


def bind_inputs(graph: onnx.GraphProto, request: ShapeRequest) -> ShapeInfo:
    """Give every runtime input of ``graph`` a concrete shape; write it into the input's type."""
    initializers = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    inputs = [v for v in graph.input if v.name not in initializers and v.type.HasField("tensor_type")]
    names = {v.name for v in inputs}
    symbols = {d for v in inputs for d in (dims_of(v) or ()) if isinstance(d, str)}
    unused = [f"--input-shape {n}" for n in request.input_shapes if n not in names]
    family_names = {"batch": "batch", "seq": "sequence", "sequence": "sequence", "image": "image"}
    families = {family_names[n]: (n, v) for n, v in request.dims.items() if n not in symbols and n in family_names}
    unused += [f"--dim {n}" for n in request.dims if n not in symbols and n not in family_names]
    defaults = {"batch": request.batch, "sequence": request.sequence, "image": request.image}
    bound: dict[str, tuple[int, ...]] = {}
    bindings: dict[str, DimBinding] = {}
    used_families: set[str] = set()
    for value in inputs:
        dims = dims_of(value) or ()
        tensor_type = value.type.tensor_type
        fixed = request.input_shapes.get(value.name)
        if fixed is not None:
            if tensor_type.HasField("shape") and len(fixed) != len(dims):
                raise AuditError(
                    "usage", f"--input-shape {value.name} has {len(fixed)} dimensions; the input has {len(dims)}"
                )
            for dim, size in zip(dims, fixed):
                if isinstance(dim, int) and dim >= 0 and dim != size:
                    raise AuditError(
                        "usage", f"--input-shape {value.name}: the model fixes a dimension to {dim}, not {size}"
                    )
                if isinstance(dim, str) and dim not in bindings:
                    bindings[dim] = DimBinding(dim, size, "--input-shape")
            bound[value.name] = tuple(fixed)
            continue
        if not tensor_type.HasField("shape"):  # rank unknown: only --input-shape can say it
            continue
        shape = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int) and dim >= 0:
                shape.append(dim)
                continue
            if isinstance(dim, int):  # -1: some converters' way to write a dynamic size
                dim = None
            if isinstance(dim, str) and dim in bindings:
                shape.append(bindings[dim].value)
                continue
            if isinstance(dim, str) and dim in request.dims:
                binding = DimBinding(dim, request.dims[dim], "--dim")
            else:
                family = _input_role(dims, axis, tensor_type.elem_type)
                label = dim if isinstance(dim, str) else f"{value.name}[{axis}]"
                if family in families:
                    used_families.add(family)
                    option, size = families[family]
                    binding = DimBinding(label, size, f"--dim {option}")
                else:
                    binding = DimBinding(label, defaults[family], f"default {family}")
            bindings[binding.name] = binding
            shape.append(binding.value)
        bound[value.name] = tuple(shape)
    unused += [f"--dim {n}" for n, fam in family_names.items() if n in request.dims and n not in symbols
               and fam not in used_families]  # fmt: skip
    for value in inputs:  # written into the file's types: inference starts from concrete sizes
        if value.name not in bound:
            continue
        shape_proto = value.type.tensor_type.shape
        del shape_proto.dim[:]
        for size in bound[value.name]:
            shape_proto.dim.add().dim_value = size
    return ShapeInfo(inputs=bound, dims=tuple(bindings.values()), unused=tuple(dict.fromkeys(unused)))


def big_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Tensors of a graph and its subgraphs with enough data to matter for a copy."""
    for tensor in graph.initializer:
        if _worth_detaching(tensor):
            yield tensor
    for node in graph.node:
        if not node.attribute:  # most nodes
            continue
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                if _worth_detaching(attr.t):
                    yield attr.t
            elif attr.type == AttributeProto.GRAPH:
                yield from big_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from big_tensors(sub)


_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def _detached(model: onnx.ModelProto) -> list[tuple[TensorProto, dict[str, object]]]:
    """Move the data of big tensors out of ``model`` (restored by :func:`_reattach`)."""
    saved = []
    for tensor in big_tensors(model.graph):
        fields: dict[str, object] = {}
        for name in _DATA_FIELDS:
            if name == "raw_data":
                if tensor.HasField("raw_data"):
                    fields[name] = tensor.raw_data
            elif len(getattr(tensor, name)):
                fields[name] = list(getattr(tensor, name))
        strip_data(tensor)
        saved.append((tensor, fields))
    return saved


def strip_data(tensor: TensorProto, mark: bool = True) -> None:
    """Clear a tensor's data, leaving its name, type and dims. ``mark``: say the data is external,
    so that shape inference takes the dims without looking for data; float data it never reads,
    and a million small weights are spared the marking."""
    if tensor.HasField("raw_data"):  # the common case: one field to clear
        tensor.ClearField("raw_data")
    else:
        for name in _DATA_FIELDS:
            tensor.ClearField(name)
    if mark:
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "__auditor_detached__"


def needs_mark(tensor: TensorProto) -> bool:
    """Whether a stripped tensor must be marked external for inference: data propagation reads
    integer tensors (shapes, axes)."""
    return tensor.data_type in _INTEGER_TYPES


def _reattach(saved: list[tuple[TensorProto, dict[str, object]]]) -> None:
    for tensor, fields in saved:
        del tensor.external_data[-1]
        tensor.data_location = TensorProto.DEFAULT
        for name, data in fields.items():
            if name == "raw_data":
                tensor.raw_data = data  # type: ignore[assignment]
            else:
                getattr(tensor, name).extend(data)


_MAX_EXPANDED_NODES = 500_000


def _expanded_nodes(model: onnx.ModelProto) -> int | None:
    """Nodes onnx's inference would visit with every local function call expanded (it infers a
    call by inferring the callee's body); None for a function that calls itself."""
    bodies = {(f.domain, f.name): f for f in model.functions}
    sizes: dict[tuple[str, str], int | None] = {}

    def size(nodes: list[onnx.NodeProto], path: frozenset[tuple[str, str]]) -> int | None:
        total = 0
        for node in nodes:
            key = (node.domain, node.op_type)
            total += 1
            if key in bodies:
                if key in path:
                    return None
                if key not in sizes:
                    sizes[key] = size(list(bodies[key].node), path | {key})
                inner = sizes[key]
                if inner is None:
                    return None
                total += inner
            if total > _MAX_EXPANDED_NODES:
                return total
        return total

    return size(list(model.graph.node), frozenset())


GraphPath = tuple[tuple[int, str, int], ...]  # (node position, attribute, graph index) from the main graph
InferredValue = tuple[tuple[int | str | None, ...] | None, int]  # (dims or None for an unknown rank, elem type or 0)


def _collect(
    graph: onnx.GraphProto, path: GraphPath, into: dict[GraphPath, dict[str, InferredValue]], offset: int = 0, prefix: str = ""
) -> None:
    """Every inferred value shape and element type of ``graph`` and its subgraphs, keyed by the
    subgraph's path (``offset``: the position of ``graph``'s first node in the main graph, for
    a segment of it; ``prefix``: put before the names onnx made up for unknown sizes, ``unk__3``)."""
    found = into.setdefault(path, {})
    for values in (graph.input, graph.value_info, graph.output):
        for value in values:
            value_type = value.type  # each read of a protobuf field makes an object: read once
            if value_type.HasField("tensor_type"):
                tensor_type = value_type.tensor_type
                dims = _tensor_dims(tensor_type)
                if prefix and dims is not None and str in map(type, dims):
                    dims = tuple(prefix + d if type(d) is str and _UNNAMED.fullmatch(d) else d for d in dims)
                found[value.name] = (dims, tensor_type.elem_type)
    for position, node in enumerate(graph.node, offset):
        if not node.attribute:  # most nodes: no subgraph to look into
            continue
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                _collect(attr.g, path + ((position, attr.name, 0),), into, prefix=prefix)
            elif attr.type == AttributeProto.GRAPHS:
                for index, sub in enumerate(attr.graphs):
                    _collect(sub, path + ((position, attr.name, index),), into, prefix=prefix)


# onnx's inference copies the types of every value in the outer graph's scope (its inputs, its
# initializers, the values computed so far) into each subgraph it enters, so a graph of n Ifs
# costs n times its own size: 1.6 s for 2,000 Ifs, four times that for 4,000. A main graph
# where those copies would outweigh the graph (see ``_SEGMENT_COPIES``) is inferred in segments
# of at most this many subgraphs and nodes, each segment a model of its own whose inputs are
# the values it reads from before it.
_SEGMENT_SUBGRAPHS = 64
_SEGMENT_NODES = 4096
# Segments cost a fifth to a quarter more per node than one whole-graph inference (each segment is
# a model built, inferred and read back); a copied type costs about a sixtieth of a node's
# inference (measured: 120,000 nodes with 4 to 66 Ifs). Beyond this many copies per node of
# the main graph, segments are the cheaper way.
_SEGMENT_COPIES = 16


def _subgraph_count(node: onnx.NodeProto) -> int:
    """Subgraphs a node's attributes hold (0 for most nodes: no attribute read)."""
    if not node.attribute:
        return 0
    return sum(1 if a.type == AttributeProto.GRAPH else len(a.graphs) if a.type == AttributeProto.GRAPHS else 0
               for a in node.attribute)  # fmt: skip


def _segments(graph: onnx.GraphProto) -> list[tuple[int, int]]:
    """[start, stop) node ranges of the main graph to infer one after the other: one range
    unless the types onnx's inference would copy into subgraphs (about the scope's size for
    each) come to more than ``_SEGMENT_COPIES`` per node."""
    counts = [_subgraph_count(node) for node in graph.node]
    scope = len(graph.input) + len(graph.initializer) + len(graph.sparse_initializer)
    copies = sum(count * (scope + position) for position, count in enumerate(counts) if count)
    if copies <= _SEGMENT_COPIES * max(len(counts), 1):
        return [(0, len(counts))]
    bounds, start, held = [], 0, 0
    for position, count in enumerate(counts):
        held += count > 0
        if held > _SEGMENT_SUBGRAPHS or position - start >= _SEGMENT_NODES:
            bounds.append((start, position))
            start, held = position, int(count > 0)
    bounds.append((start, len(counts)))
    return bounds


def _reads(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    """Names ``nodes`` read from their scope, their subgraphs' reads of outer values included."""
    read: set[str] = set()
    for node in nodes:
        read.update(node.input)
        for attr in node.attribute:
            for sub in (attr.g,) if attr.type == AttributeProto.GRAPH else attr.graphs if attr.type == AttributeProto.GRAPHS else ():
                inner = _reads(sub.node)
                inner -= {v.name for v in sub.input} | {t.name for t in sub.initializer}
                inner -= {out for n in sub.node for out in n.output}
                read |= inner
    read.discard("")
    return read


def _is_shape_value(inferred: InferredValue) -> bool:
    """A numeric tensor of rank 0 or 1: what shape arithmetic computes (Shape, Gather, Concat,
    and the casts to float and back that the legacy exporter writes)."""
    dims, elem_type = inferred
    return elem_type in _SHAPE_TYPES and dims is not None and len(dims) <= 1


_SHAPE_TYPES = frozenset({TensorProto.INT64, TensorProto.INT32, TensorProto.FLOAT, TensorProto.DOUBLE})
_MAX_PULLED = 256  # nodes of shape arithmetic a segment may repeat from before it
_UNNAMED = re.compile(r"unk__\d+")  # the symbols onnx makes up for sizes it cannot name


class _SegmentedInference:
    """onnx's inference on each segment of the main graph in turn (see ``_segments``).

    A segment reads the graph's inputs and initializers, and the values earlier segments
    computed, with the types inferred there. Data propagation (shape arithmetic worked out to
    numbers) does not cross a border by itself: so the shape arithmetic an earlier segment did
    for a value this one reads (``Shape -> Gather -> Concat`` into a Reshape) is repeated at the
    segment's start, up to ``_MAX_PULLED`` nodes. The sizes onnx leaves unnamed (``unk__0``) are
    renamed per segment, so that two segments' unknowns never share a name.

    A class, not closures: a recursive closure is a reference cycle, and this one would hold the
    parsed model while the audit runs with the cyclic collector paused.
    """

    def __init__(self, model: onnx.ModelProto, segments: list[tuple[int, int]]) -> None:
        graph = model.graph
        self.model = model
        self.segments = segments
        self.initializers = {t.name: t for t in graph.initializer}
        self.sparse = {t.values.name: t for t in graph.sparse_initializer}
        self.inputs = {v.name: v for v in graph.input}
        self.nodes = list(graph.node)
        # each node's fields read once (every read of a protobuf field makes new objects)
        self.outputs = [list(node.output) for node in self.nodes]
        inputs = [list(node.input) for node in self.nodes]
        self.producer = {out: position for position, outs in enumerate(self.outputs) for out in outs if out}
        self.shape_reads = {
            ins[0] for ins, node in zip(inputs, self.nodes) if ins and node.op_type in ("Shape", "Size") and not node.domain
        }
        self.reads = []
        for start, stop in segments:
            read = {name for ins in inputs[start:stop] for name in ins}
            read |= _reads(node for node in self.nodes[start:stop] if node.attribute)  # what subgraphs read
            read.discard("")
            self.reads.append(read)
        self.last_read: dict[str, int] = {}  # name -> the last segment reading it
        for index, read in enumerate(self.reads):
            for name in read:
                self.last_read[name] = index
        self.types: dict[str, onnx.ValueInfoProto] = {}  # values computed so far that a later segment may read
        self.shape_values: set[str] = set()  # those of them that shape arithmetic computes

    def run(self, found: dict[GraphPath, dict[str, InferredValue]]) -> None:
        graph = self.model.graph
        for index, ((start, stop), read) in enumerate(zip(self.segments, self.reads)):
            pulled: set[int] = set()
            decided: dict[str, bool] = {}
            for name in sorted(read):
                self._pull(name, start, pulled, decided)
            segment = [self.nodes[p] for p in sorted(pulled)] + self.nodes[start:stop]
            read = read | _reads(self.nodes[p] for p in pulled)
            defined = {out for p in pulled for out in self.outputs[p]}
            defined.update(out for outs in self.outputs[start:stop] for out in outs)
            part = onnx.ModelProto(ir_version=self.model.ir_version, opset_import=self.model.opset_import,
                                   functions=self.model.functions)  # fmt: skip
            for name in sorted(read - defined):
                part.graph.input.extend(self._input(name, part))
            part.graph.node.extend(segment)
            part.graph.output.extend(v for v in graph.output if v.name in defined)
            part.graph.value_info.extend(v for v in graph.value_info if v.name in defined)  # sizes worked out here
            inferred = onnx.shape_inference.infer_shapes(part, strict_mode=False, data_prop=True).graph
            prefix = f"s{index}_"
            # what repeated shape arithmetic computes was found in its own segment already: kept
            main = found.setdefault((), {})
            kept_before = {out: main[out] for p in pulled for out in self.outputs[p] if out in main}
            # pulled nodes own no subgraphs; unknown sizes get the segment's prefix
            _collect(inferred, (), found, offset=start - len(pulled), prefix=prefix)
            main.update(kept_before)  # (outputs of pulled nodes: in self.types already, skipped below)
            for value in list(inferred.value_info) + list(inferred.output):
                name = value.name
                if name in self.types or name not in defined:
                    continue
                shape_value = _is_shape_value(main.get(name, (None, 0)))
                if self.last_read.get(name, -1) > index or name in self.shape_reads or shape_value:
                    self.types[name] = kept = onnx.ValueInfoProto()
                    kept.CopyFrom(value)  # a copy: a reference would keep the whole inferred segment alive
                    _rename_unnamed(kept, prefix)
                    if shape_value:
                        self.shape_values.add(name)

    def _input(self, name: str, part: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
        """What a segment declares for a value it reads from outside itself (initializers added to ``part``)."""
        if name in self.initializers:
            part.graph.initializer.append(self.initializers[name])
            return [self.inputs[name]] if name in self.inputs else []
        if name in self.sparse:
            part.graph.sparse_initializer.append(self.sparse[name])
            return []
        if name in self.inputs:
            return [self.inputs[name]]
        if name in self.types:
            return [self.types[name]]
        return [onnx.helper.make_empty_tensor_value_info(name)]  # computed before, of unknown type

    def _pull(self, name: str, start: int, pulled: set[int], decided: dict[str, bool]) -> bool:
        """Add the shape arithmetic before ``start`` that computes ``name`` to ``pulled``; whether
        ``name`` is then known in the segment (computed there, or an input of a known type).
        ``decided`` remembers each name's answer: shared inputs are looked at once."""
        if name in decided:
            return decided[name]
        decided[name] = answer = self._decide(name, start, pulled, decided)
        return answer

    def _decide(self, name: str, start: int, pulled: set[int], decided: dict[str, bool]) -> bool:
        position = self.producer.get(name, start)
        if position >= start or position in pulled:
            return True
        if name not in self.types:
            return False
        node = self.nodes[position]
        if name not in self.shape_values or _subgraph_count(node) or len(pulled) >= _MAX_PULLED:
            return True  # an input of the type found before
        trial = set(pulled) | {position}
        for source in node.input:
            if source and source not in self.initializers and source not in self.inputs:
                if not self._pull(source, start, trial, decided):
                    return True  # its own inputs cannot all be had: better the value's type as found
        pulled |= trial
        return True


def _rename_unnamed(value: onnx.ValueInfoProto, prefix: str) -> None:
    """Prefix the sizes onnx made up (``unk__3``) in a value kept for later segments."""
    if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and _UNNAMED.fullmatch(dim.dim_param):
                dim.dim_param = prefix + dim.dim_param


def _infer(model: onnx.ModelProto, segments: list[tuple[int, int]], found: dict[GraphPath, dict[str, InferredValue]]) -> None:
    if len(segments) == 1:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        _collect(inferred.graph, (), found)
    else:
        _SegmentedInference(model, segments).run(found)


_PASS_THROUGH = frozenset({"Squeeze", "Unsqueeze", "Identity", "Reshape", "Flatten"})
_LARGEST_SIZE = 1 << 62  # beyond any tensor (and beyond int64 once a Range's length is written)
_ARITHMETIC: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "Add": operator.add, "Sub": operator.sub, "Mul": operator.mul,
}  # fmt: skip


def _range_lengths(graph: onnx.GraphProto, shapes: Mapping[str, InferredValue]) -> list[onnx.ValueInfoProto]:
    """The output shapes of the main graph's Range nodes that onnx's inference left unknown,
    where start, limit and delta are scalars this can work out: constants, and dims of inferred
    shapes taken with ``Shape -> Gather`` and simple arithmetic (the legacy exporter builds
    position ids this way; onnx's data propagation does not evaluate Range)."""
    ranges = [node for node in graph.node if node.op_type == "Range" and node.domain in ("", "ai.onnx")
              and len(node.input) == 3 and node.output]  # fmt: skip
    if not ranges:
        return []
    scalars = _Scalars(graph, shapes)
    found = []
    for node in ranges:
        dims, elem_type = shapes.get(node.output[0], (None, 0))
        if dims is not None and all(isinstance(d, int) for d in dims):
            continue
        start, limit, delta = (scalars.value(name, 0) for name in node.input)
        if start is None or limit is None or not delta:
            continue
        length = max(0, math.ceil((limit - start) / delta))
        if length > _LARGEST_SIZE:
            continue
        elem_type = elem_type or (shapes.get(node.input[0]) or (None, TensorProto.INT64))[1] or TensorProto.INT64
        found.append(onnx.helper.make_tensor_value_info(node.output[0], elem_type, [length]))
    return found


class _Scalars:
    """One-element values of the main graph worked out without running it (a class, not a
    recursive closure: that would be a reference cycle holding the parsed model)."""

    def __init__(self, graph: onnx.GraphProto, shapes: Mapping[str, InferredValue]) -> None:
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.constants = {t.name: t for t in graph.initializer}
        self.shapes = shapes
        self.memo: dict[str, Fraction | None] = {}

    def value(self, name: str, depth: int) -> Fraction | None:
        """``name``'s value, worked out once (a chain of Adds of a value to itself doubles the paths)."""
        if name in self.memo:
            return self.memo[name]
        if depth > 32:
            return None
        found = self._value(name, depth)
        if found is not None and abs(found) > _LARGEST_SIZE:  # no size, and Fractions would grow without bound
            found = None
        self.memo[name] = found
        return found

    def _value(self, name: str, depth: int) -> Fraction | None:
        if name in self.constants:
            return _one_value(self.constants[name])
        node = self.producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return _one_value(attr.t)
                if attr.name in ("value_int", "value_float"):
                    return Fraction(attr.i if attr.name == "value_int" else attr.f)
            return None
        if node.op_type == "Cast" and node.input:  # to an integer type: truncated toward zero
            value = self.value(node.input[0], depth + 1)
            to = next((a.i for a in node.attribute if a.name == "to"), 0)
            if value is None or to not in _INTEGER_TYPES:
                return value
            return Fraction(int(value != 0)) if to == TensorProto.BOOL else Fraction(int(value))
        if node.op_type in _PASS_THROUGH and node.input:
            return self.value(node.input[0], depth + 1)
        if node.op_type in _ARITHMETIC and len(node.input) == 2:
            a, b = self.value(node.input[0], depth + 1), self.value(node.input[1], depth + 1)
            return None if a is None or b is None else _ARITHMETIC[node.op_type](a, b)
        if node.op_type == "Gather" and len(node.input) == 2:  # one dim of a Shape
            return self._dim(node, depth)
        return None

    def _dim(self, gather: onnx.NodeProto, depth: int) -> Fraction | None:
        source = self.producer.get(gather.input[0])
        index = self.value(gather.input[1], depth + 1)
        if source is None or source.op_type != "Shape" or index is None or index.denominator != 1:
            return None
        dims = (self.shapes.get(source.input[0]) or (None, 0))[0]
        if dims is None:
            return None
        attrs = {a.name: a.i for a in source.attribute}
        window = dims[attrs.get("start", 0) : attrs.get("end", len(dims))] if attrs else dims
        position = int(index)
        if not -len(window) <= position < len(window):
            return None
        dim = window[position]
        return Fraction(dim) if isinstance(dim, int) else None


def _one_value(tensor: TensorProto) -> Fraction | None:
    """The value of a one-element numeric tensor, exactly."""
    if math.prod(tensor.dims) != 1 or tensor.data_location == TensorProto.EXTERNAL:
        return None
    try:
        value = numpy_helper.to_array(tensor).reshape(-1)[0]
        return Fraction(value.item())
    except (ValueError, TypeError, OverflowError):
        return None


def infer_shapes(
    model: onnx.ModelProto, request: ShapeRequest, detach: bool = True
) -> tuple[ShapeInfo, dict[GraphPath, dict[str, InferredValue]]]:
    """Bind ``model``'s inputs and infer every value's shape at those sizes.

    Returns the binding and the inferred shapes and element types per graph (the main graph at
    path ``()``). The model is left as it was: bindings and detached data are put back.
    ``detach=False``: the caller has taken the big tensors' data out for good already (the
    loader does: putting data back into a protobuf copies it, and its arena keeps both).
    """
    graph = model.graph
    original_inputs = [onnx.ValueInfoProto() for _ in graph.input]
    for copy, value in zip(original_inputs, graph.input):
        copy.CopyFrom(value)
    original_outputs = [onnx.ValueInfoProto() for _ in graph.output]
    for copy, value in zip(original_outputs, graph.output):
        copy.CopyFrom(value)
    original_value_info = list(graph.value_info)
    info = bind_inputs(graph, request)
    found: dict[GraphPath, dict[str, InferredValue]] = {}
    expanded = _expanded_nodes(model) if model.functions else len(graph.node)
    try:
        if expanded is None or expanded > _MAX_EXPANDED_NODES:
            why = "a local function calls itself" if expanded is None else f"local function calls expand to over {_MAX_EXPANDED_NODES:,} nodes"
            return ShapeInfo(info.inputs, info.dims, info.unused, inferred=f"none: {why}"), found
        del graph.value_info[:]  # the exporter's symbolic shapes would only conflict with the bound ones
        # so would a computed output's stated shape (non-strict inference keeps it): cleared; the
        # file's sizes complete the inferred ones afterwards where inference finds none
        # (a graph output is an input, a stored tensor or a node's output: one that is neither of
        # the first two is computed, and the inputs and tensors are named without a walk of the nodes)
        bound_inputs = {v.name: v for v in graph.input}
        given = set(bound_inputs) | {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
        for value in graph.output:
            if value.name in bound_inputs:  # an input returned as it is: onnx takes the output's type for it
                _tighten(value, bound_inputs[value.name])
            elif value.name not in given and value.type.HasField("tensor_type"):
                value.type.tensor_type.ClearField("shape")
        saved = _detached(model) if detach else []
        try:
            segments = _segments(graph)
            _infer(model, segments, found)
            ranges = _range_lengths(graph, found.get((), {}))
            if ranges:  # sizes onnx could not work out, given back to it: what follows gets shapes too
                graph.value_info.extend(ranges)
                found.clear()
                _infer(model, segments, found)
                main = found.setdefault((), {})
                for value in ranges:  # onnx keeps its own unknown size where the value is a graph output
                    dims, elem_type = main.get(value.name, (None, 0))
                    if dims is None or not all(isinstance(d, int) for d in dims):
                        main[value.name] = (dims_of(value), value.type.tensor_type.elem_type)
            if len(segments) > 1:
                info = dataclasses.replace(info, inferred=f"onnx, in {len(segments)} segments")
        except Exception as exc:  # noqa: BLE001 - a model onnx cannot infer is still audited
            text = str(exc).strip()
            detail = text.splitlines()[0][:160] if text else type(exc).__name__
            return ShapeInfo(info.inputs, info.dims, info.unused, inferred=f"none: onnx shape inference failed ({detail})"), found
        finally:
            _reattach(saved)
        return info, found
    finally:
        del graph.input[:]
        graph.input.extend(original_inputs)
        del graph.output[:]
        graph.output.extend(original_outputs)
        del graph.value_info[:]
        graph.value_info.extend(original_value_info)


def _tighten(output: onnx.ValueInfoProto, bound: onnx.ValueInfoProto) -> None:
    """Give a graph output that is a graph input the input's bound sizes where the output states
    none: onnx's inference takes the output's type for the input itself, so a looser stated
    ``[?, 8]`` would undo the binding. Sizes the output does state stand."""
    out_type, in_type = output.type.tensor_type, bound.type.tensor_type
    if not (output.type.HasField("tensor_type") and out_type.HasField("shape") and in_type.HasField("shape")):
        return
    if len(out_type.shape.dim) != len(in_type.shape.dim):
        return  # inconsistent: onnx reports it, or not, as before
    for stated, size in zip(out_type.shape.dim, in_type.shape.dim):
        if not stated.HasField("dim_value") and size.HasField("dim_value"):
            stated.dim_value = size.dim_value


# exact rational arithmetic: "ceiling(s0/2)" must round 5/2 up, not floor it first
_BINARY: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: lambda a, b: Fraction(a // b), ast.Mod: operator.mod, ast.Div: operator.truediv,
}  # fmt: skip
_CALLS: dict[str, Callable[..., Fraction]] = {
    "Min": min, "Max": max, "min": min, "max": max, "floor": lambda a: Fraction(math.floor(a)),
    "ceiling": lambda a: Fraction(math.ceil(a)), "FloorDiv": lambda a, b: Fraction(a // b), "Mod": operator.mod,
}  # fmt: skip


def evaluate_dim(expression: str, sizes: Mapping[str, int]) -> int | None:
    """The size a symbolic dimension written by an exporter (``Min(32, s70)``,
    ``((s43*s53)//s72)``) takes under ``sizes``; None when it names an unbound symbol."""
    if expression in sizes:
        return sizes[expression]
    if len(expression) > 200:
        return None
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError):
        return None

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return Fraction(node.value)
        if isinstance(node, ast.Name) and node.id in sizes:
            return Fraction(sizes[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS and not node.keywords:
            return Fraction(_CALLS[node.func.id](*(value(a) for a in node.args)))
        raise ValueError("unsupported")

    try:
        result = value(tree)
    except (ValueError, ZeroDivisionError, TypeError, OverflowError):
        return None
    if result.denominator != 1 or result < 0:  # a size is a whole number
        return None
    return int(result)


def resolve(
    dims: tuple[int | str | None, ...], written: tuple[int | str | None, ...] | None, sizes: Mapping[str, int]
) -> tuple[Dim, ...] | None:
    """A value's shape: inferred dims, completed from the exporter's expressions; None if
    a dimension is unknown and unnamed."""
    if str not in map(type, dims) and None not in dims:  # fully inferred (dims: ints, names, None): the common case
        return dims  # type: ignore[return-value]
    result: list[Dim] = []
    for axis, dim in enumerate(dims):
        if isinstance(dim, int):
            result.append(dim)
            continue
        if written is not None and len(written) == len(dims) and written[axis] is not None:
            candidate = written[axis]
            if isinstance(candidate, int):
                result.append(candidate)
                continue
            size = evaluate_dim(str(candidate), sizes)
            if size is not None:
                result.append(size)
                continue
            if dim is None:
                dim = str(candidate)
        if dim is None:
            return None
        size = evaluate_dim(dim, sizes)
        result.append(size if size is not None else dim)
    return tuple(result)


def count_unknown(outputs: Mapping[str, str], shapes: Mapping[str, tuple[Dim, ...]]) -> Counter[str]:
    """Node outputs (value id -> op type) whose shape is unknown or has a size known only at
    run time (a dim that is a name), by op type."""
    return Counter(op for value, op in outputs.items() if (shape := shapes.get(value)) is None or str in map(type, shape))
