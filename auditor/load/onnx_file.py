"""ONNX file -> ModelGraph: metadata first, tensor bytes only on demand.

Why the onnx package (protobuf) with our own external-data handling rather than onnx_ir: the
model protobuf is parsed with ``load_external_data=False`` (small even for a 100 GB model), and
every external-data location is validated here *before* any byte is touched: it must resolve
inside the model's folder (no ``..``, no absolute path, no symlink out) and its range must fit
in the file. Bytes are then memory-mapped per tensor with numpy. onnx_ir memory-maps too, but
resolves locations itself; for untrusted files we want that check in one place we own.
"""

from __future__ import annotations

import ast
import ctypes
import ctypes.util
import functools
import math
import os
from collections import ChainMap
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, MutableMapping, Sequence

import numpy as np

from auditor.errors import AuditError
from auditor.graph import PACKED_DTYPES, Dim, ExternalRef, ModelGraph, OpNode, Scope, ShapeRequest, TensorInfo
from auditor.roles import OpKind
from auditor.load.dataflow import refine_roles
from auditor.load.onnx_ops import CALL_SPEC, spec_for
from auditor.load.shapes import GraphPath, InferredValue, big_tensors, count_unknown, dims_of, infer_shapes, needs_mark, resolve, strip_data
from auditor.load.tensor_data import tensor_chunks

try:  # protobuf raises its own DecodeError on a corrupt or truncated file
    from google.protobuf.message import DecodeError
except ImportError:  # pragma: no cover - protobuf always comes with onnx
    DecodeError = ValueError

import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

_BITS = {
    "FLOAT": 32, "UINT8": 8, "INT8": 8, "UINT16": 16, "INT16": 16, "INT32": 32, "INT64": 64,
    "BOOL": 8, "FLOAT16": 16, "DOUBLE": 64, "UINT32": 32, "UINT64": 64, "COMPLEX64": 64,
    "COMPLEX128": 128, "BFLOAT16": 16, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8,
    "FLOAT8E5M2FNUZ": 8, "UINT4": 4, "INT4": 4, "FLOAT4E2M1": 4, "FLOAT8E8M0": 8, "UINT2": 2,
    "INT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6,
}  # fmt: skip


# element type number -> (our dtype name, bits per element or None): looked up once per tensor
_TYPES: dict[int, tuple[str, int | None]] = {
    number: ({"FLOAT": "float32", "DOUBLE": "float64"}.get(name, name.lower()), _BITS.get(name))
    for name, number in TensorProto.DataType.items()
    if number != TensorProto.UNDEFINED
}


def _dtype_name(elem_type: int) -> str:
    known = _TYPES.get(elem_type)
    return known[0] if known else f"type{elem_type}"


def _nbytes(elem_type: int, numel: int) -> int:
    """Stored bytes; sub-byte types (int4, int2...) are packed and rounded up to whole bytes."""
    known = _TYPES.get(elem_type)
    bits = known[1] if known else None
    if bits is None:  # strings and unknown types: no fixed size
        return 0
    return (numel * bits + 7) // 8


class _ExternalResolver:
    """Validates external-data locations against the model's folder, once per file."""

    def __init__(self, model_path: Path) -> None:
        self.base = model_path.parent.resolve()
        self._sizes: dict[str, int] = {}

    def ref(self, tensor: TensorProto, expected_bytes: int) -> ExternalRef:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location:
            raise AuditError("external-data-invalid", f"tensor '{tensor.name}' has external data with no location")
        if "\0" in location:
            raise AuditError("external-data-invalid", f"tensor '{tensor.name}': external data location holds a NUL byte")
        pure = Path(location.replace("\\", "/"))
        if pure.is_absolute() or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
            raise AuditError(
                "external-data-outside",
                f"tensor '{tensor.name}': external data location '{location}' is an absolute path; "
                "only files inside the model's folder are read",
            )
        if ".." in pure.parts:
            raise AuditError(
                "external-data-outside",
                f"tensor '{tensor.name}': external data location '{location}' leaves the model's folder",
            )
        target = (self.base / pure).resolve()
        if target != self.base and self.base not in target.parents:
            raise AuditError(
                "external-data-outside",
                f"tensor '{tensor.name}': external data location '{location}' resolves outside the "
                "model's folder (symlink)",
            )
        key = str(target)
        if key not in self._sizes:
            if not target.is_file():
                raise AuditError(
                    "external-data-missing",
                    f"tensor '{tensor.name}': external data file '{location}' not found next to the model",
                )
            self._sizes[key] = target.stat().st_size
        size = self._sizes[key]
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else size - offset
        except ValueError as exc:
            raise AuditError("external-data-invalid", f"tensor '{tensor.name}': bad offset/length ({exc})") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise AuditError(
                "external-data-truncated",
                f"tensor '{tensor.name}': external data range {offset}+{length} lies beyond the end of "
                f"'{location}' ({size} bytes)",
            )
        if length != expected_bytes:
            raise AuditError(
                "external-data-invalid",
                f"tensor '{tensor.name}': external data holds {length} bytes, its shape needs {expected_bytes}",
            )
        return ExternalRef(key, offset, length)

    @property
    def total_bytes(self) -> int:
        return sum(self._sizes.values())


def _external_reader(tensor: TensorProto, ref: ExternalRef) -> Callable[[], np.ndarray]:
    elem_type, shape = tensor.data_type, tuple(tensor.dims)
    np_dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    packed = _dtype_name(elem_type) in PACKED_DTYPES
    name = tensor.name

    def read() -> np.ndarray:
        if ref.length == 0:
            return np.zeros(shape, dtype=np_dtype)
        if not packed:
            return np.memmap(ref.path, dtype=np_dtype, mode="r", offset=ref.offset, shape=shape)
        with open(ref.path, "rb") as handle:  # packed sub-byte types: unpack through onnx
            handle.seek(ref.offset)
            raw = handle.read(ref.length)
        proto = helper.make_tensor(name, elem_type, shape, raw, raw=True)
        return numpy_helper.to_array(proto)

    return read


_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def _check_inline_size(tensor: TensorProto, numel: int, nbytes: int, raw: bytes | None = None) -> None:
    """An inline tensor must hold as many values as its shape says (a corrupt file may not).
    ``raw``: its raw_data when the caller holds it already (each read of the field is a copy)."""
    if raw is not None or tensor.HasField("raw_data"):
        held, needed = len(raw if raw is not None else tensor.raw_data), nbytes
    else:
        held = max((len(getattr(tensor, name)) for name in _TYPED_FIELDS), default=0)
        needed = numel
        if tensor.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
            needed = 2 * numel
        elif _dtype_name(tensor.data_type) in PACKED_DTYPES:
            return  # packing into int32_data varies by writer; numpy_helper checks it when read
        if held == 0 and numel == 0:
            return
    if held != needed:
        raise AuditError(
            "invalid-model",
            f"tensor '{tensor.name}' holds {held} {'bytes' if raw is not None or tensor.HasField('raw_data') else 'values'}, "
            f"its shape needs {needed} (truncated or corrupt model)",
        )


def _constant_reader(array: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: array


# little-endian numpy types whose raw_data bytes are the values as they are
_PLAIN_NUMPY: dict[int, np.dtype] = {
    TensorProto.FLOAT: np.dtype("<f4"), TensorProto.DOUBLE: np.dtype("<f8"), TensorProto.FLOAT16: np.dtype("<f2"),
    TensorProto.INT8: np.dtype("i1"), TensorProto.UINT8: np.dtype("u1"), TensorProto.INT16: np.dtype("<i2"),
    TensorProto.UINT16: np.dtype("<u2"), TensorProto.INT32: np.dtype("<i4"), TensorProto.UINT32: np.dtype("<u4"),
    TensorProto.INT64: np.dtype("<i8"), TensorProto.UINT64: np.dtype("<u8"),
}  # fmt: skip


# Inline tensors up to this size are copied out of the protobuf, so that a graph of many small
# weights does not keep the whole parsed model alive; bigger ones keep a reference to it.
_COPY_INLINE_BYTES = 1 << 16


class _RawReader:
    """Reads a small tensor's raw little-endian bytes held apart from the protobuf (a class with
    slots, not a closure: a third of the memory, for each of a graph's many small weights)."""

    __slots__ = ("held", "dtype", "shape")

    def __init__(self, held: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.held, self.dtype, self.shape = held, dtype, shape

    def __call__(self) -> np.ndarray:
        # the common case without numpy_helper's per-call checks (its size was checked at load)
        return np.frombuffer(self.held, dtype=self.dtype).reshape(self.shape)


def _inline_reader(
    tensor: TensorProto, raw: bytes | None = None, data_type: int | None = None, shape: tuple[int, ...] | None = None
) -> Callable[[], np.ndarray]:
    """``raw``: the tensor's raw_data, read once by the caller when the tensor is small;
    ``data_type`` and ``shape``: its fields, when the caller has read them already."""
    plain = _PLAIN_NUMPY.get(tensor.data_type if data_type is None else data_type)
    small = raw is not None or tensor.ByteSize() <= _COPY_INLINE_BYTES
    if plain is not None and (raw is not None or tensor.HasField("raw_data")):
        shape = tuple(tensor.dims) if shape is None else shape
        if small:
            return _RawReader(raw if raw is not None else tensor.raw_data, plain, shape)
        return lambda: np.frombuffer(tensor.raw_data, dtype=plain).reshape(shape)
    if small:
        detached = TensorProto()
        detached.CopyFrom(tensor)
        return lambda: numpy_helper.to_array(detached)
    return lambda: numpy_helper.to_array(tensor)


def _source(node: onnx.NodeProto, name: str | None = None) -> str:
    """The torch module path and operation a node comes from: the dynamo exporter's
    ``pkg.torch.onnx.name_scopes`` metadata, else a legacy node name (``/encoder/layer.0/MatMul``;
    ``name``: the node's, when the caller has read it already)."""
    if name is None:
        name = node.name
    for entry in node.metadata_props if node.metadata_props else ():
        if entry.key == "pkg.torch.onnx.name_scopes" and len(entry.value) <= 4096:
            try:
                scopes = ast.literal_eval(entry.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return ""
            if isinstance(scopes, list) and scopes and all(isinstance(s, str) for s in scopes):
                module = ".".join(s for s in scopes[:-1] if s)
                return f"{module}: {scopes[-1]}" if module else str(scopes[-1])
            return ""
    if name.startswith("/") and name.count("/") >= 2:
        *parts, operation = name.strip("/").split("/")
        return f"{'.'.join(parts)}: {operation}"
    return ""


class _Builder:
    """Walks a ModelProto: main graph, subgraphs to any depth, and model-local functions."""

    def __init__(self, model: onnx.ModelProto, path: Path, request: ShapeRequest) -> None:
        self.model = model
        self.path = path
        self.request = request
        self.shapes: dict[str, tuple[Dim, ...]] = {}
        self.dtypes: dict[str, str] = {}
        self.bound: dict[GraphPath, dict[str, InferredValue]] = {}
        self.sizes: dict[str, int] = {}
        self.external = _ExternalResolver(path)
        self.tensors: dict[str, TensorInfo] = {}
        self.nodes: dict[str, OpNode] = {}
        self.scopes: dict[str, Scope] = {}
        self.value_shapes: dict[str, tuple[int | None, ...]] = {}
        self.functions = {(f.domain, f.name): f"fn:{f.domain}:{f.name}" for f in model.functions}
        self.value_owner: dict[str, str] = {}  # value id -> scope defining it (ids must not collide)
        self.opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
        # data taken out of the model's tensors: id of the tensor -> (the tensor, its data)
        self.taken: dict[int, tuple[TensorProto, bytes | TensorProto]] = {}

    def _take_data(self) -> None:
        """Take the data of the model's big inline tensors out of the protobuf, for good.

        Shape inference then never copies weights, and each tensor's data is held once: as bytes
        (raw little-endian values, the common case) or as a standalone copy of the tensor. Putting
        it back instead would copy it into the protobuf's arena, which keeps the cleared data too:
        a self-contained model held three times its size.
        """
        for tensor in big_tensors(self.model.graph):
            if tensor.HasField("raw_data") and tensor.data_type in _PLAIN_NUMPY:
                data: bytes | TensorProto = tensor.raw_data
            else:
                data = TensorProto()
                data.CopyFrom(tensor)
            strip_data(tensor, mark=needs_mark(tensor))
            self.taken[id(tensor)] = (tensor, data)  # the tensor kept alive: its id stays its own

    def _data(self, tensor: TensorProto) -> tuple[TensorProto, bytes | None]:
        """``tensor`` with its data: (itself, or a standalone copy holding its data; its raw bytes
        when they were taken as bytes, its name, type and dims then read from itself)."""
        taken = self.taken.get(id(tensor))
        if taken is None or taken[0] is not tensor:
            return tensor, None
        data = taken[1]
        return (data, None) if isinstance(data, TensorProto) else (tensor, data)

    def _claim(self, scope: str, name: str, kind: str) -> str:
        """A fresh value id for ``name`` defined in ``scope``; a second definition is an error
        (ONNX graphs are in SSA form), so no stored tensor can hide behind another."""
        value_id = self._value_id(scope, name)
        if value_id in self.value_owner:
            where = f" in {scope}" if scope else ""
            raise AuditError("invalid-model", f"'{name}'{where} is defined twice (second time as {kind})")
        self.value_owner[value_id] = scope
        return value_id

    # -- tensors ------------------------------------------------------------------------------

    def _dense(self, tensor: TensorProto, value_id: str, scope: str, origin: str) -> TensorInfo:
        tensor, taken = self._data(tensor)
        data_type, name = tensor.data_type, tensor.name  # protobuf fields read once
        known = _TYPES.get(data_type)
        if known is None:
            raise AuditError("invalid-model", f"tensor '{name}' has an unknown data type {data_type}")
        shape = tuple(tensor.dims)
        if shape and min(shape) < 0:
            raise AuditError("invalid-model", f"tensor '{name}' has a negative dimension")
        numel = math.prod(shape)
        nbytes = _nbytes(data_type, numel)
        external = None
        if taken is None and tensor.data_location == TensorProto.EXTERNAL:
            external = self.external.ref(tensor, nbytes)
            reader = _external_reader(tensor, external)
        else:
            # a small tensor's raw bytes are read once, for the check and the reader alike
            raw = taken
            if raw is None and nbytes <= _COPY_INLINE_BYTES and tensor.HasField("raw_data"):
                raw = tensor.raw_data
            _check_inline_size(tensor, numel, nbytes, raw)
            reader = _inline_reader(tensor, raw, data_type, shape)
        return TensorInfo(
            id=value_id, name=name, scope=scope, origin=origin, dtype=known[0],
            shape=shape, nbytes=nbytes, external=external, reader=reader,
            chunker=tensor_chunks,
        )  # fmt: skip

    def _sparse(self, sparse: onnx.SparseTensorProto, value_id: str, scope: str) -> TensorInfo:
        values = self._dense(sparse.values, value_id, scope, "sparse_initializer")
        indices = self._dense(sparse.indices, value_id, scope, "sparse_initializer")
        shape = tuple(int(d) for d in sparse.dims)

        name = sparse.values.name

        def read() -> np.ndarray:
            dense = np.zeros(math.prod(shape), dtype=values.read().dtype)
            try:
                flat_index = indices.read().astype(np.int64)
                if flat_index.ndim == 2:  # [nnz, rank] coordinates
                    flat_index = np.ravel_multi_index(tuple(flat_index.T), shape)
                flat_index = flat_index.reshape(-1)
                if flat_index.size != values.numel or (flat_index.size and (flat_index.min() < 0 or flat_index.max() >= dense.size)):
                    raise ValueError("indices do not match the values or the shape")
                dense[flat_index] = values.read().reshape(-1)
            except ValueError as exc:
                raise AuditError("invalid-model", f"sparse tensor '{name}' is malformed: {exc}") from None
            return dense.reshape(shape)

        return TensorInfo(
            id=value_id, name=sparse.values.name, scope=scope, origin="sparse_initializer",
            dtype=values.dtype, shape=shape, nbytes=values.nbytes + indices.nbytes,
            nnz=values.numel, reader=read, chunker=tensor_chunks,
        )  # fmt: skip

    def _constant(self, node: onnx.NodeProto, value_id: str, scope: str) -> TensorInfo | None:
        for attr in node.attribute:
            if attr.name == "value":
                return replace(self._dense(attr.t, value_id, scope, "constant"), name=node.output[0])
            if attr.name == "sparse_value":
                return replace(self._sparse(attr.sparse_tensor, value_id, scope), name=node.output[0], origin="constant")
            listed = {
                "value_float": (np.float32, [attr.f]),
                "value_floats": (np.float32, list(attr.floats)),
                "value_int": (np.int64, [attr.i]),
                "value_ints": (np.int64, list(attr.ints)),
            }.get(attr.name)
            if listed is not None:
                dtype, items = listed
                array = np.asarray(items, dtype=dtype)
                if attr.name in ("value_float", "value_int"):
                    array = array.reshape(())
                reader = _constant_reader(array)
                return TensorInfo(
                    id=value_id, name=node.output[0], scope=scope, origin="constant",
                    dtype=array.dtype.name, shape=array.shape, nbytes=array.nbytes,
                    reader=reader, chunker=tensor_chunks,
                )  # fmt: skip
        return None  # string constants carry no parameters

    # -- graphs -------------------------------------------------------------------------------

    def walk(self) -> ModelGraph:
        graph = self.model.graph
        self._take_data()
        shape_info, self.bound = infer_shapes(self.model, self.request, detach=False)
        self.sizes = {binding.name: binding.value for binding in shape_info.dims}
        for function in self.model.functions:
            self._function(function)
        main = self._graph(graph, scope="", kind="main", owner=None, attr=None, outer={}, path=())
        self._refuse_recursion()
        if any(node.kind is OpKind.TOP_K for node in self.nodes.values()):
            self._infer_main_shapes()
        outputs = {out: node.op_type for node in self.nodes.values() for out in node.outputs if out}
        unknown = count_unknown(outputs, self.shapes)
        shape_info = replace(shape_info, unknown_values=sum(unknown.values()), unknown_by_op=dict(unknown.most_common()))
        initializer_names = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
        inputs = tuple(v for v, proto in zip(main.inputs, graph.input) if proto.name not in initializer_names)
        return refine_roles(ModelGraph(
            path=str(self.path),
            file_size=self.path.stat().st_size,
            producer=self.model.producer_name,
            producer_version=self.model.producer_version,
            ir_version=self.model.ir_version,
            opsets={(o.domain or "ai.onnx"): o.version for o in self.model.opset_import},
            tensors=self.tensors,
            nodes=self.nodes,
            scopes=self.scopes,
            inputs=inputs,
            outputs=main.outputs,
            value_shapes=self.value_shapes,
            external_data_bytes=self.external.total_bytes,
            shapes=self.shapes,
            dtypes=self.dtypes,
            shape_info=shape_info,
        ))

    def _refuse_recursion(self) -> None:
        """ONNX functions may not call themselves, directly or through others: such a file has
        no finite forward pass to count."""
        owner_function: dict[str, str] = {}  # scope -> the function it belongs to
        for scope in self.scopes.values():
            top = scope
            while top.owner is not None:
                top = self.scopes[self.nodes[top.owner].scope]
            if top.kind == "function":
                owner_function[scope.id] = top.id
        calls: dict[str, set[str]] = {f: set() for f in self.functions.values()}
        for node in self.nodes.values():
            caller = owner_function.get(node.scope)
            if caller is not None:
                calls[caller].update(s for s in node.invokes if s in calls)
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for start in calls:
            if start in state:
                continue
            state[start] = 1
            stack = [(start, iter(sorted(calls[start])))]
            while stack:
                function, pending = stack[-1]
                callee = next(pending, None)
                if callee is None:
                    state[function] = 2
                    stack.pop()
                elif state.get(callee) == 1:
                    raise AuditError("invalid-model", f"local function '{callee.split(':', 2)[-1]}' calls itself")
                elif callee not in state:
                    state[callee] = 1
                    stack.append((callee, iter(sorted(calls[callee]))))

    def _infer_main_shapes(self) -> None:
        """Shapes of the main graph's values from onnx's shape inference, where the file has none.

        Only for graphs with a TopK (a router, perhaps): whether an expert bank is read one expert
        at a time depends on the rank of its indices, which exporters seldom write down.
        """
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False)
        except Exception:  # noqa: BLE001 - inference is a bonus: a model it cannot handle is still audited
            return
        known = dict(self.value_shapes)
        self._record_shapes(inferred.graph.value_info, "")
        self.value_shapes.update(known)  # what the file says wins

    def _value_id(self, scope: str, name: str) -> str:
        return f"{scope}/{name}" if scope else name

    def _record_shapes(self, values: Iterable[onnx.ValueInfoProto], scope: str) -> None:
        """Shapes the file states (``value_shapes``: what holds at any input size)."""
        for value in values:
            tensor_type = value.type.tensor_type
            if tensor_type.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
                self.value_shapes[self._value_id(scope, value.name)] = dims

    def _record_bound_shapes(self, graph: onnx.GraphProto, scope: str, path: GraphPath) -> None:
        """Shapes at the bound input sizes (``shapes``), and element types: inferred, completed
        from the symbolic expressions the exporter wrote."""
        written: dict[str, tuple[int | str | None, ...]] = {}
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            tensor_type = value.type.tensor_type
            if tensor_type.elem_type:
                self.dtypes[self._value_id(scope, value.name)] = _TYPES.get(tensor_type.elem_type, ("unknown", None))[0]
            # inferred sizes come first: the file's complete them (a main-graph output's fixed
            # sizes, which the legacy exporter writes at the traced sizes, give way to them)
            stated = dims_of(value)
            if stated is not None:
                written[value.name] = stated
        inferred = self.bound.get(path, {})
        dtypes, shapes, sizes = self.dtypes, self.shapes, self.sizes
        prefix = f"{scope}/" if scope else ""  # as _value_id spells ids
        for name, (dims, elem_type) in inferred.items():
            value_id = prefix + name
            if elem_type and value_id not in dtypes:  # a type the file left unstated
                dtypes[value_id] = _TYPES.get(elem_type, ("unknown", None))[0]
            if dims is not None and (shape := resolve(dims, written.get(name), sizes)) is not None:
                shapes[value_id] = shape
        for name, dims in written.items():
            if (name not in inferred or inferred[name][0] is None) and (shape := resolve(dims, None, self.sizes)) is not None:
                self.shapes[self._value_id(scope, name)] = shape

    def _graph(
        self,
        graph: onnx.GraphProto,
        scope: str,
        kind: str,
        owner: str | None,
        attr: str | None,
        outer: MutableMapping[str, str],
        path: GraphPath = (),
    ) -> Scope:
        if len(self.scopes) > 100_000:
            raise AuditError("invalid-model", "more than 100000 nested graphs; refusing to walk further")
        # names visible here: local definitions shadow the outer scope's (a view of it, not a copy:
        # copying it for every branch made a graph of many Ifs quadratic)
        names: MutableMapping[str, str] = ChainMap({}, outer) if outer else {}

        def define(name: str, kind: str) -> str:
            names[name] = self._claim(scope, name, kind)
            return names[name]

        inputs = tuple(define(v.name, "an input") for v in graph.input)
        input_names = {v.name for v in graph.input}
        for tensor in graph.initializer:  # an initializer may give an input its default value
            value_id = names[tensor.name] if tensor.name in input_names else define(tensor.name, "an initializer")
            input_names.discard(tensor.name)
            self.tensors[value_id] = self._dense(tensor, value_id, scope, "initializer")
        for sparse in graph.sparse_initializer:
            name = sparse.values.name
            value_id = names[name] if name in input_names else define(name, "a sparse initializer")
            input_names.discard(name)
            self.tensors[value_id] = self._sparse(sparse, value_id, scope)
        claim = self._claim
        for node in graph.node:
            for out in node.output:
                if out:
                    names[out] = claim(scope, out, "a node output")
        self._record_shapes(list(graph.input) + list(graph.value_info) + list(graph.output), scope)
        self._record_bound_shapes(graph, scope, path)

        self.scopes[scope] = Scope(scope, kind, owner, attr, inputs, ())
        for position, node in enumerate(graph.node):
            self._node(node, position, scope, names, path)
        outputs = tuple(self._resolve(v.name, names, scope) for v in graph.output)
        self.scopes[scope] = Scope(scope, kind, owner, attr, inputs, outputs)
        return self.scopes[scope]

    def _resolve(self, name: str, names: Mapping[str, str], scope: str) -> str:
        if not name:
            return ""
        try:
            return names[name]
        except KeyError:
            where = f" in {scope}" if scope else ""
            raise AuditError(
                "invalid-model", f"value '{name}'{where} is used but never defined (truncated or invalid model)"
            ) from None

    def _resolve_all(self, inputs: Sequence[str], names: Mapping[str, str], scope: str) -> tuple[str, ...]:
        try:
            return tuple([names[name] if name else "" for name in inputs])
        except KeyError:  # name the first undefined one
            return tuple(self._resolve(name, names, scope) for name in inputs)

    def _node(self, node: onnx.NodeProto, position: int, scope: str, names: MutableMapping[str, str], path: GraphPath = ()) -> None:
        # each read of a protobuf field makes a new Python object: every field is read once
        op_type, domain, name = node.op_type, node.domain, node.name
        base = name or f"{op_type}_{position}"
        node_id = self._value_id(scope, base)
        while node_id in self.nodes:  # names are not required to be unique
            base += "_"
            node_id = self._value_id(scope, base)
        attrs: dict[str, object] = {}
        invokes: list[str] = []
        attributes = list(node.attribute) if node.attribute else []
        if len(attributes) > 1:  # subgraphs in a fixed order whatever the file's: an If's then_branch first
            attributes.sort(key=lambda a: a.name != "then_branch")
        for attr in attributes:
            if attr.type == AttributeProto.GRAPH:
                sub_scope = f"{node_id}.{attr.name}"
                self._graph(attr.g, sub_scope, "subgraph", node_id, attr.name, names, path + ((position, attr.name, 0),))
                invokes.append(sub_scope)
            elif attr.type == AttributeProto.GRAPHS:
                for i, sub in enumerate(attr.graphs):
                    sub_scope = f"{node_id}.{attr.name}[{i}]"
                    self._graph(sub, sub_scope, "subgraph", node_id, attr.name, names, path + ((position, attr.name, i),))
                    invokes.append(sub_scope)
            elif attr.type == AttributeProto.TENSOR and math.prod(attr.t.dims) <= 16:
                small, raw = self._data(attr.t)
                if raw is not None:  # a few doubles taken out for shape inference: whole again
                    small = TensorProto(name=small.name, data_type=small.data_type, dims=small.dims, raw_data=raw)
                if small.data_location == TensorProto.EXTERNAL:
                    attrs[attr.name] = None
                else:
                    _check_inline_size(small, math.prod(small.dims), _nbytes(small.data_type, math.prod(small.dims)))
                    attrs[attr.name] = numpy_helper.to_array(small)
            elif attr.type == AttributeProto.INT:  # the plain types read directly: helper.get_attribute_value is slow
                attrs[attr.name] = attr.i
            elif attr.type == AttributeProto.FLOAT:
                attrs[attr.name] = attr.f
            elif attr.type == AttributeProto.STRING:
                attrs[attr.name] = attr.s.decode("utf-8", "replace")
            elif attr.type == AttributeProto.INTS:
                attrs[attr.name] = list(attr.ints)
            elif attr.type == AttributeProto.FLOATS:
                attrs[attr.name] = list(attr.floats)
        function = self.functions.get((domain, op_type)) if self.functions else None
        if function is not None:
            invokes.append(function)
            spec = CALL_SPEC  # a call applies its arguments once per call
        else:
            spec = spec_for(domain or "", op_type, self.opsets.get(domain or "ai.onnx", 10_000))
        node_inputs, node_outputs = node.input, node.output
        op = OpNode(
            id=node_id,
            op_type=op_type,
            domain=domain,
            scope=scope,
            inputs=self._resolve_all(node_inputs, names, scope),
            outputs=tuple([names[out] if out else "" for out in node_outputs]),
            attrs=attrs,
            invokes=tuple(invokes),
            roles=spec.roles_for(len(node_inputs)),
            kind=spec.kind,
            quantized=spec.quantized,
            cost=spec.cost,
            source=_source(node, name),
        )
        self.nodes[node_id] = op
        if op_type == "Constant" and domain in ("", "ai.onnx") and node_outputs:
            info = self._constant(node, op.outputs[0], scope)
            if info is not None:
                self.tensors[info.id] = info

    def _function(self, function: onnx.FunctionProto) -> None:
        scope = self.functions[(function.domain, function.name)]
        names: dict[str, str] = {}
        inputs = tuple(names.setdefault(name, self._claim(scope, name, "an input")) for name in function.input)
        for node in function.node:
            for out in node.output:
                if out:
                    names[out] = self._claim(scope, out, "a node output")
        for attr_name in function.attribute:
            names.setdefault(attr_name, self._value_id(scope, attr_name))
        self.scopes[scope] = Scope(scope, "function", None, None, inputs, ())
        for position, node in enumerate(function.node):
            self._node(node, position, scope, names, ((-1, scope, 0),))  # no inferred shapes in function bodies
        outputs = tuple(self._resolve(name, names, scope) for name in function.output)
        self.scopes[scope] = Scope(scope, "function", None, None, inputs, outputs)


def load_onnx(path: str | os.PathLike[str], shapes: ShapeRequest | None = None) -> ModelGraph:
    """Parse an ONNX file into a ModelGraph without loading external tensor data; value shapes
    are inferred at the input shapes ``shapes`` binds (stated defaults where it does not)."""
    model_path = Path(path)
    if not model_path.exists():
        raise AuditError("file-not-found", f"no such file: {model_path}")
    if not model_path.is_file():
        raise AuditError("not-a-file", f"not a regular file: {model_path}")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except DecodeError as exc:
        raise AuditError("not-onnx", f"{model_path} is not a readable ONNX model (truncated or corrupt: {exc})") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise AuditError("not-onnx", f"{model_path} is not a readable ONNX model ({exc})") from None
    # Protobuf accepts many non-ONNX byte strings as an (odd) message; a real model has these.
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise AuditError("not-onnx", f"{model_path} is not an ONNX model (no ir_version, graph or opset)")
    try:
        graph = _Builder(model, model_path, shapes or ShapeRequest()).walk()
    except RecursionError:
        raise AuditError("invalid-model", f"{model_path}: subgraphs nested too deeply to walk") from None
    del model  # the parsed protobuf: every tensor's data is held apart from it now
    _return_freed_memory()
    return graph


def _return_freed_memory() -> None:
    """Hand the memory the parsed protobuf held back to the system (glibc only). Its arena was
    allocated in blocks among the loader's own objects, so the heap cannot shrink by itself:
    without this the process kept about 80 MB more at 75,000 nodes, for nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    # looked up once: each ctypes.CDLL makes a class, garbage the cyclic collector must free
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): the memory stays reusable inside
        return None
