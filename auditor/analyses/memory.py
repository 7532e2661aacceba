"""Static memory: weights as loaded, and the peak of live activations over the graph's schedule.

Two estimates. The plain one walks the main graph in its stored (topological) order: a node's
outputs are allocated when it runs, every value is freed after its last consumer (graph
outputs live to the end), a subgraph body adds its own peak while its node runs. The
runtime-aware one models what onnxruntime on CPU does, measured (see :class:`RuntimeEstimate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from auditor.graph import ModelGraph, OpNode
from auditor.roles import OpKind, Role

_BITS = {
    "float64": 64, "int64": 64, "uint64": 64, "complex64": 64, "complex128": 128, "float32": 32,
    "int32": 32, "uint32": 32, "float16": 16, "bfloat16": 16, "int16": 16, "uint16": 16, "int8": 8,
    "uint8": 8, "bool": 8, "int4": 4, "uint4": 4, "int2": 2, "uint2": 2, "float4e2m1": 4,
}  # fmt: skip
_TIMELINE_POINTS = 400

# onnxruntime 1.32 on x86-64 CPU, measured with `benchmarks/memory.py` and single-op models.
# What a session costs before any tensor: kernels, allocators, thread pools (9.4-10.8 MiB measured
# over a process that already imported onnxruntime).
SESSION_FIXED_BYTES = 10 * 2**20
# glibc malloc serves blocks above its mmap threshold with their own mapping, returned to the
# system when freed; the threshold rises with each such block freed, up to 32 MiB on 64-bit. So a
# freed block of at most 32 MiB usually stays in the heap and in the resident set, a larger one
# leaves it. Session creation frees many weight-sized blocks: this decides which copies stay.
MALLOC_KEEPS_BYTES = 32 * 2**20
# Ops whose onnxruntime CPU kernel packs a constant float32 B (input 1, 2-D) for MLAS at session
# creation (PrePack): the packed copy replaces the original, which is freed.
_PREPACKS_B = frozenset({("", "MatMul"), ("", "Gemm"), ("com.microsoft", "FusedMatMul"), ("com.microsoft", "FusedGemm")})
_COPYING_OP_TYPES = frozenset({op for _, op in _PREPACKS_B} | {"Conv"})
# Ops onnxruntime does not fold at session creation even when their inputs are constant.
_NOT_FOLDED = frozenset({("", "DequantizeLinear"), ("", "QuantizeLinear"), ("com.microsoft", "DequantizeLinear")})
# Ops whose onnxruntime CPU kernel may write its output into its input's buffer (MayInplace(0, 0)),
# checked one by one on 64 MiB tensors; Exp, Erf, Add, Mul... allocate a new output.
_IN_PLACE = frozenset(
    "Relu LeakyRelu Sigmoid Tanh Elu Selu Celu HardSigmoid Softplus Softsign ThresholdedRelu Clip Softmax LogSoftmax".split()
)


def _itemsize_bits(dtype: str | None) -> int:
    if dtype is None:
        return 32
    if dtype.startswith("float8"):
        return 8
    return _BITS.get(dtype, 0)  # strings and types without a fixed size: unknown


@dataclass(frozen=True)
class LiveTensor:
    value: str
    bytes: int


@dataclass(frozen=True)
class Liveness:
    """Peak of live activation bytes over one schedule of the main graph."""

    peak_bytes: int
    peak_node: str  # the node running at the peak ('' for a graph without nodes)
    peak_op_type: str
    peak_tensors: tuple[LiveTensor, ...]  # the largest tensors live at the peak
    timeline: tuple[tuple[int, int], ...]  # (node position, bytes held while it runs), at most 400 points
    unknown_values: int  # activations of unknown size, counted as empty
    peak_position: int = -1  # the peak node's position in the schedule (-1: before any node)
    peak_without_outputs_bytes: int = 0  # the peak with the main graph's outputs left out


@dataclass(frozen=True)
class RuntimeEstimate:
    """Peak resident memory of onnxruntime on CPU (x86-64, default session options), term by term.

    The peak is ``session_bytes + max(creation_bytes, running_bytes)``: the process peaks either
    while the session is created or while it runs, whichever holds more. Each term models one
    thing onnxruntime 1.32 does, checked on models built to isolate it (``benchmarks/memory.py``
    compares the whole against measured peaks).

    - ``session_bytes``: the fixed cost of a session (kernels, allocators, thread pools),
      :data:`SESSION_FIXED_BYTES`.
    - ``weights_bytes``: what the session holds as weights: every stored tensor once (its own
      copies), weights generated at run time, and ``folded_bytes``: outputs of nodes whose
      inputs are all constant (a Transpose of a tied embedding, a Cast of a weight), which
      onnxruntime computes once at creation and keeps as new initializers.
    - ``creation_bytes``: the peak while the session is built. Loading copies the initializers
      one at a time out of the parsed file, each freed after its copy: the weights plus the
      largest one twice (``largest_bytes``). Then the graph rewrites and prepacking below make
      their copies; the largest of these moments sets the peak.
    - ``layout_bytes``: at the default level (ORT_ENABLE_ALL) on x86-64 with AVX2 or AVX-512,
      the NCHWc transformer rewrites every 2-D float Conv with a constant weight (group 1 or
      depthwise) to a blocked layout, making a reordered copy of the weight through three
      temporaries (a working copy, the reorder buffer, a TensorProto); the original goes when
      the pass ends. Weights of at most :data:`MALLOC_KEEPS_BYTES` are freed into malloc's heap,
      which keeps them resident: measured, about two more copies of those weights plus the
      largest one stay, and the largest once more while the pass runs. Larger weights are
      unmapped when freed: nothing stays, but while the pass runs all originals and all
      reordered copies are held, plus three temporaries of the largest (``layout_peak_bytes``).
    - ``prepacked_bytes``: MatMul and Gemm pack a constant float32 2-D B for MLAS; the packed
      copy replaces the original, which is freed (it stays when another node reads it too).
      Freed originals of at most :data:`MALLOC_KEEPS_BYTES` stay resident or not depending on
      where they lie in the heap: between none and all of them, which moves with the process's
      allocation history (measured on one model: half to five sixths, from one request to
      another). Half of them are counted. Conv weights are not prepacked on x86-64 (measured:
      disabling prepacking changes nothing for them).
    - ``running_bytes``: what the session holds (weights, kept copies) plus the activations
      twice. The first run allocates its tensors in the CPU arena, which keeps those chunks
      (``activation_arena_bytes``, the planned peak); from the second run on the memory-pattern
      block of all intermediate tensors is allocated beside them (``pattern_bytes``: the same
      peak without the graph outputs, which are allocated apart).
    - The planned peak follows onnxruntime's allocation planner: the caller's inputs are not
      the session's; views (Reshape, Squeeze, Unsqueeze, Flatten, Identity) share their input's
      buffer while Transpose copies; activations such as Relu, Sigmoid, Tanh or Softmax write
      into their input's buffer when it is read for the last time (never into a graph input,
      nor for a graph output); and a tensor takes a freed buffer of exactly its shape where the
      planner can prove the shapes equal (every input shape fixed in the file, or the file
      stating the shapes, as the torch.export-based exporter does), that buffer then staying
      allocated from its first tensor to its last: measured on a BERT encoder, this doubles the
      activations of the torch.export-based export (83 MiB against 41 MiB without reuse) and
      does nothing to the TorchScript export of the same model, whose file states no shapes.

    Not modelled: graph fusions (a fused op drops the intermediates of the ops it replaces:
    Gelu, LayerNormalization, attention), malloc reusing memory freed at creation for the
    arena (both make the estimate high), fragmentation inside the arena, the originals of
    folded weights that nothing else reads (they are dropped), kernel scratch buffers and
    thread stacks.
    """

    session_bytes: int
    creation_bytes: int
    running_bytes: int
    activation_arena_bytes: int
    weights_bytes: int = 0
    largest_bytes: int = 0
    prepacked_bytes: int = 0
    layout_bytes: int = 0
    layout_peak_bytes: int = 0
    pattern_bytes: int = 0
    folded_bytes: int = 0

    @property
    def resident_bytes(self) -> int:
        """What the session holds once created: weights and the copies that stay."""
        return self.weights_bytes + self.prepacked_bytes + self.layout_bytes

    @property
    def peak_bytes(self) -> int:
        return self.session_bytes + max(self.creation_bytes, self.running_bytes)

    @property
    def dominant(self) -> str:
        """The term that sets the peak, in words (they follow "dominated by")."""
        if self.session_bytes >= max(self.creation_bytes, self.running_bytes):
            return "the fixed cost of the session"
        if self.creation_bytes >= self.running_bytes:
            if self.layout_peak_bytes >= max(self.largest_bytes, self.layout_bytes + self.prepacked_bytes):
                return "session creation (Conv weights reordered to the NCHWc layout)"
            if self.layout_bytes + self.prepacked_bytes >= self.largest_bytes:
                return "session creation (weights with their prepacked copies)"
            return "session creation (the weights, the largest held twice)"
        if self.activation_arena_bytes + self.pattern_bytes >= self.resident_bytes:
            return "activations (the arena of the first run plus the memory-pattern block)"
        copies = [name for name, size in (("prepacked", self.prepacked_bytes), ("NCHWc", self.layout_bytes)) if size]
        return "weights held by the session" + (f", with {' and '.join(copies)} copies" if copies else "")


@dataclass(frozen=True)
class StaticMemory:
    weights_bytes: int  # unique stored bytes plus generated weights at their run-time size
    weights_by_dtype: Mapping[str, int]
    generated_bytes: int
    activations: Liveness  # plain: every output a new buffer
    runtime: RuntimeEstimate

    @property
    def plain_peak_bytes(self) -> int:
        """Weights plus the plain liveness peak of activations."""
        return self.weights_bytes + self.activations.peak_bytes


def value_bytes(model: ModelGraph, value: str, expected: Mapping[str, float]) -> int | None:
    """Bytes of an activation at the bound shapes (None when its size is unknown)."""
    shape = model.shapes.get(value)
    if shape is None:
        return None
    if str not in map(type, shape):  # every size known (dims are ints or names): the common case
        bits = _itemsize_bits(model.dtypes.get(value))
        total_bits: int = math.prod(shape) * bits  # type: ignore[assignment]  # all ints here
        # every dim positive and the bits exact as a float: the general case's answer, in integers
        if 0 < total_bits < 1 << 53 and min(shape, default=1) > 0:  # type: ignore[operator]
            return (total_bits + 7) // 8
    elements = 1.0
    for dim in shape:
        if isinstance(dim, int):
            if dim < 0:  # a hostile file's negative size: no size at all
                return None
            elements *= dim
        elif dim in expected:
            elements *= expected[dim]
        else:
            return None
    bits = _itemsize_bits(model.dtypes.get(value))
    total = elements * bits / 8 if bits else math.inf
    return math.ceil(total) if math.isfinite(total) else None  # unknown type, or sizes beyond any machine


def _is_alias(node: OpNode) -> bool:
    """Whether onnxruntime's output is its input's buffer (a view that does not move data)."""
    return (
        bool(node.roles)
        and node.roles[0] is Role.VIEW
        and node.kind is not OpKind.CONVERT
        and node.op_type not in ("Transpose",)  # moves the data
    )


def _op(node: OpNode) -> tuple[str, str]:
    """(domain, op type), the default domain spelled ''."""
    return ("" if node.domain == "ai.onnx" else node.domain, node.op_type)


def _in_place(node: OpNode) -> bool:
    """Whether onnxruntime may write the output into input 0's buffer (when nothing reads it later)."""
    return node.domain in ("", "ai.onnx") and node.op_type in _IN_PLACE


class _LiveWalk:
    """Liveness per scope (a class, not nested closures: recursive closures leave reference cycles).

    Each scope is first planned (which buffer holds each value: its own, its input's for a view or
    an in-place op, a freed buffer of the same shape when ``reuse``), then swept: a buffer lives
    from the node that first writes it to the last read of any value it held.
    """

    def __init__(
        self, model: ModelGraph, expected: Mapping[str, float], alias_views: bool, in_place: bool,
        reuse: bool, count_inputs: bool, count_outputs: bool, constants: frozenset[str],
        cache: dict[str, int | None] | None = None,
    ) -> None:  # fmt: skip
        self.model = model
        self.expected = expected
        self.alias_views = alias_views
        self.in_place = in_place
        self.reuse = reuse
        self.count_inputs = count_inputs  # the main graph's inputs (bodies always own theirs)
        self.count_outputs = count_outputs  # the main graph's outputs
        self.constants = constants
        self.memo: dict[str, int] = {}
        self.unknown: set[str] = set()
        self.peak_at = -1  # the last walked scope's peak position (the main graph's, walked last)
        self.peak_without_outputs = 0  # the same peak without the main graph's outputs (walked last)
        self.cache: dict[str, int | None] = cache if cache is not None else {}  # value -> bytes, shared by walks
        # with every input's shape fixed in the file, onnxruntime infers every shape; otherwise it
        # knows those the file states (exporters that write value_info) and proves nothing else equal
        self.static = all(None not in model.value_shapes.get(v, (None,)) for v in model.inputs)

    def size(self, value: str) -> int:
        if not value or value in self.model.tensors or value in self.constants:
            return 0
        if value in self.cache:
            found = self.cache[value]
        else:
            found = self.cache[value] = value_bytes(self.model, value, self.expected)
        if found is None:
            self.unknown.add(value)
            return 0
        return found

    def shape_key(self, value: str) -> tuple[int, tuple[int, ...]] | None:
        """What onnxruntime's planner compares to reuse a buffer: element size and shape, when known to it."""
        bound = self.model.shapes.get(value)
        if bound is None or str in map(type, bound) or self.size(value) == 0:  # dims: ints or names
            return None
        stated = self.model.value_shapes.get(value)
        if not self.static and (stated is None or len(stated) != len(bound)):
            return None
        return _itemsize_bits(self.model.dtypes.get(value)), bound  # type: ignore[return-value]  # all ints

    def body_peak(self, scope: str, depth: int) -> int:
        if scope not in self.memo:
            self.memo[scope] = self.scope_peak(scope, depth, False)[0] if depth < 50 else 0
        return self.memo[scope]

    def scope_peak(self, scope: str, depth: int, record: bool) -> tuple[int, str, str, tuple[LiveTensor, ...], list[tuple[int, int]]]:
        nodes = self.model.nodes_by_scope.get(scope, ())
        info = self.model.scopes.get(scope)
        main = scope == ""
        last_use: dict[str, int] = {}
        for position, node in enumerate(nodes):
            for value in node.inputs:
                last_use[value] = position  # '' (an omitted input) too: harmless, never looked up
            for sub in node.invokes:  # values a body reads from outside live while its node runs
                for inner in self.model.nodes_by_scope.get(sub, ()):
                    for value in inner.inputs:
                        if value:
                            last_use[value] = position
        keep = set(info.outputs) if info is not None else set()
        uncounted = keep if main and not self.count_outputs else set()
        inputs = [v for v in (info.inputs if info is not None else ()) if v and v not in self.model.tensors]

        # plan: the buffer of every value
        sizes: list[int] = []
        born: list[int] = []  # position of the node first writing the buffer (-1: a scope input)
        ends: list[int] = []  # position of the last read of any value it held
        holders: list[list[tuple[int, str]]] = []  # (position, value) written into each buffer
        keys: list[tuple[int, tuple[int, ...]] | None] = []
        refs: list[int] = []  # values alive in each buffer
        buffer: dict[str, int] = {}
        free: dict[tuple[int, tuple[int, ...]], list[int]] = {}  # freed buffers by shape, most recent last
        dead: set[str] = set()
        for value in inputs:
            buffer[value] = len(sizes)
            sizes.append(self.size(value) if self.count_inputs or not main else 0)
            born.append(-1)
            ends.append(last_use.get(value, len(nodes)))
            holders.append([(-1, value)])
            keys.append(None)  # the caller's (or the owner's) buffer: never reused, never overwritten
            refs.append(1)
        planning = self.alias_views or self.in_place or self.reuse  # else every output is a buffer of its own
        value_size = self.size
        for position, node in enumerate(nodes):
            if not planning:
                for value in node.outputs:
                    if value:
                        buffer[value] = len(sizes)
                        sizes.append(0 if value in uncounted else value_size(value))
                        born.append(position)
                        ends.append(len(nodes) if value in keep else last_use.get(value, position))
                        holders.append([(position, value)])
                        keys.append(None)
                        refs.append(1)
                continue
            source = node.inputs[0] if node.inputs else ""
            for index, value in enumerate(node.outputs):
                if not value:
                    continue
                size = 0 if value in uncounted else value_size(value)
                base = buffer.get(source, -1) if index == 0 else -1
                if base >= 0 and self.alias_views and _is_alias(node):
                    pass  # a view of its input's buffer
                elif (
                    base >= 0 and self.in_place and _in_place(node) and born[base] >= 0 and refs[base] == 1
                    and source not in keep and value not in keep and last_use.get(source) == position
                    and sizes[base] == size > 0
                ):  # fmt: skip
                    pass  # written over its input, which dies here
                else:
                    key = self.shape_key(value) if self.reuse and value not in keep else None
                    stack = free.get(key) if key is not None else None
                    if stack:
                        base = stack.pop()
                    else:
                        base = len(sizes)
                        sizes.append(size)
                        born.append(position)
                        ends.append(position)
                        holders.append([])
                        keys.append(key)
                        refs.append(0)
                buffer[value] = base
                refs[base] += 1
                holders[base].append((position, value))
                ends[base] = max(ends[base], len(nodes) if value in keep else last_use.get(value, position))
            # values read for the last time here, and outputs nobody reads, release their buffer
            for value in (*node.inputs, *node.outputs):
                if not value or value in dead or value not in buffer or value in keep or last_use.get(value, -1) > position:
                    continue
                dead.add(value)
                base = buffer[value]
                refs[base] -= 1
                key = keys[base]
                if refs[base] == 0 and key is not None:
                    free.setdefault(key, []).append(base)

        # sweep: bytes held while each node runs
        starting = sum(sizes[b] for b in range(len(sizes)) if born[b] < 0)
        change = [0] * (len(nodes) + 1)
        for b, size in enumerate(sizes):
            if born[b] >= 0:
                change[born[b]] += size
            if ends[b] < len(nodes):
                change[ends[b] + 1] -= size
        # the same sweep without the buffers of the main graph's outputs: onnxruntime allocates
        # those apart from its memory-pattern block (one plan serves both figures)
        outside = [0] * (len(nodes) + 1)
        if main:
            for b, size in enumerate(sizes):
                if born[b] >= 0 and holders[b] and holders[b][0][1] in keep:  # a buffer made for an output
                    outside[born[b]] += size
                    if ends[b] < len(nodes):
                        outside[ends[b] + 1] -= size
        peak, peak_at, total = starting, -1, starting
        inner_peak, held_outside = starting, 0
        timeline: list[tuple[int, int]] = []
        for position, node in enumerate(nodes):
            total += change[position]
            held_outside += outside[position]
            body = max([self.body_peak(s, depth + 1) for s in node.invokes]) if node.invokes else 0
            if total + body > peak:
                peak, peak_at = total + body, position
            inner_peak = max(inner_peak, total - held_outside + body)
            if record:
                timeline.append((position, total + body))
        self.peak_without_outputs = inner_peak
        at = [b for b in range(len(sizes)) if born[b] <= peak_at <= ends[b] and sizes[b]]
        largest = sorted(at, key=lambda b: -sizes[b])[:8]
        tensors = tuple(
            LiveTensor(max((h for h in holders[b] if h[0] <= peak_at), default=holders[b][0])[1], sizes[b]) for b in largest
        )
        self.peak_at = peak_at
        if peak_at < 0:
            return peak, "", "", tensors, timeline
        return peak, nodes[peak_at].id, nodes[peak_at].op_type, tensors, timeline


def liveness(
    model: ModelGraph,
    expected: Mapping[str, float] | None = None,
    alias_views: bool = False,
    in_place: bool = False,
    reuse: bool = False,
    count_inputs: bool = True,
    count_outputs: bool = True,
    constants: frozenset[str] = frozenset(),
    cache: dict[str, int | None] | None = None,
) -> Liveness:
    """Peak live activation bytes of the main graph (subgraph bodies at their own peak).

    Plain by default: every output a new buffer, the graph's inputs and outputs counted.
    ``alias_views``: views share their input's buffer; ``in_place``: the ops onnxruntime runs in
    place reuse their input's buffer when it dies there; ``reuse``: a value takes a freed buffer
    of its shape where onnxruntime can prove the shapes equal, and that buffer stays allocated
    from its first to its last value; ``count_inputs`` / ``count_outputs``: whether the main
    graph's inputs (the caller's buffers) and outputs count; ``constants``: values computed once
    at session creation, counted with the weights instead.
    """
    walk = _LiveWalk(model, expected or {}, alias_views, in_place, reuse, count_inputs, count_outputs, constants, cache)
    peak, node, op, tensors, timeline = walk.scope_peak("", 0, True)
    unknown = walk.unknown
    step = max(1, math.ceil(len(timeline) / _TIMELINE_POINTS))
    sampled = [max(timeline[i : i + step], key=lambda p: p[1]) for i in range(0, len(timeline), step)]
    return Liveness(peak, node, op, tensors, tuple(sampled), len(unknown), walk.peak_at, walk.peak_without_outputs)


def _folded(model: ModelGraph, expected: Mapping[str, float]) -> dict[str, int]:
    """Values onnxruntime computes once at session creation (constant folding), with their bytes:
    outputs of nodes whose every input is a stored tensor or itself folded (a Transpose or a Cast
    of a weight...). Random generators, control flow and DequantizeLinear (kept for the quantized
    kernels) are not folded."""
    folded: dict[str, int] = {}
    for node in model.nodes.values():  # stored in topological order, scope by scope
        if (
            node.invokes or node.kind is OpKind.GENERATOR or _op(node) in _NOT_FOLDED
            or not any(node.inputs) or not all(not v or v in model.tensors or v in folded for v in node.inputs)
        ):  # fmt: skip
            continue
        for value in node.outputs:
            if value and value not in model.tensors:  # an Identity is removed, not computed
                folded[value] = 0 if node.kind is OpKind.IDENTITY else value_bytes(model, value, expected) or 0
    return folded


def _weight_copies(model: ModelGraph, folded: Mapping[str, int]) -> tuple[int, int, int, int]:
    """Copies of weights that session creation makes, over the weights themselves: (prepacked
    copies kept, their peak while packing, NCHWc copies kept, their peak during the rewrite)."""
    sizes: dict[str, int] = {}
    prepacked: set[str] = set()
    conv: set[str] = set()
    for node in model.nodes.values():
        if node.op_type not in _COPYING_OP_TYPES:  # most nodes: no tuple made for them
            continue
        op = _op(node)
        if op not in _PREPACKS_B and op != ("", "Conv"):
            continue  # only these copy their weights at session creation
        weight = node.inputs[1] if len(node.inputs) > 1 else ""
        tensor = model.tensors.get(weight)
        dims = tensor.shape if tensor is not None else model.shapes.get(weight, ()) if weight in folded else ()
        dtype = tensor.dtype if tensor is not None else model.dtypes.get(weight, "")
        if not dims or dtype != "float32" or not all(isinstance(d, int) for d in dims):
            continue
        shape = tuple(int(d) for d in dims)
        sizes[weight] = tensor.nbytes if tensor is not None else folded[weight]
        if op in _PREPACKS_B and len(shape) == 2:
            prepacked.add(weight)
        elif op == ("", "Conv") and len(shape) == 4:
            group = int(node.attrs.get("group", 1) or 1)
            if group == 1 or (shape[1] == 1 and shape[0] == group):  # dense or depthwise
                conv.add(weight)
    kept, freed, packing = 0, 0, 0
    for name in prepacked - conv:
        size = sizes[name]
        if any(_op(model.nodes[use.node]) not in _PREPACKS_B for use in model.consumers.get(name, ())):
            kept += size  # another node still reads the original
        elif size <= MALLOC_KEEPS_BYTES:
            freed += size
        else:  # unmapped once packed, but held beside its packed copy meanwhile
            packing = max(packing, size)
    kept += freed // 2  # malloc keeps some of the freed originals: half counted (see RuntimeEstimate)
    small = [sizes[n] for n in conv if sizes[n] <= MALLOC_KEEPS_BYTES]
    large = [sizes[n] for n in conv if sizes[n] > MALLOC_KEEPS_BYTES]
    layout_kept = 2 * sum(small) + max(small, default=0)
    layout_peak = layout_kept + max(small, default=0) + sum(large) + 3 * max(large, default=0)
    return kept, kept + packing, layout_kept, layout_peak


def static_memory(
    model: ModelGraph,
    unique_bytes: int,
    by_dtype: Mapping[str, int],
    generated_bytes: int,
    expected: Mapping[str, float] | None = None,
) -> StaticMemory:
    """Weights and activations at the bound shapes, plainly and as onnxruntime on CPU holds them."""
    cache: dict[str, int | None] = {}  # each value's bytes, computed once for the three walks
    plain = liveness(model, expected, cache=cache)
    folded = _folded(model, expected or {})
    constants = frozenset(folded)
    planned = liveness(
        model, expected, alias_views=True, in_place=True, reuse=True, count_inputs=False, constants=constants, cache=cache
    )
    pattern_bytes = planned.peak_without_outputs_bytes
    weights = unique_bytes + generated_bytes
    # the session holds every stored tensor (duplicates too), the generated ones and the folded ones
    held = sum(t.nbytes for t in model.tensors.values()) + generated_bytes + sum(folded.values())
    largest = max((t.nbytes for t in model.tensors.values()), default=0)
    prepacked, packing, layout, layout_peak = _weight_copies(model, folded)
    runtime = RuntimeEstimate(
        session_bytes=SESSION_FIXED_BYTES,
        # loading, then the NCHWc rewrite, then prepacking (beside the rewrite's kept copies)
        creation_bytes=held + max(largest, layout_peak, layout + packing),
        running_bytes=held + prepacked + layout + planned.peak_bytes + pattern_bytes,
        activation_arena_bytes=planned.peak_bytes,
        weights_bytes=held,
        largest_bytes=largest,
        prepacked_bytes=prepacked,
        layout_bytes=layout,
        layout_peak_bytes=layout_peak,
        pattern_bytes=pattern_bytes,
        folded_bytes=sum(folded.values()),
    )
    return StaticMemory(weights, dict(by_dtype), generated_bytes, plain, runtime)
