"""How an op reads each of its inputs, in words every analysis shares and no file format owns.

A loader tags every input of every node with a :class:`Role` (the ONNX loader from
``auditor.load.onnx_ops``; a PyTorch front end would map aten ops onto the same roles), and
each node with an :class:`OpKind`. Analyses read roles and kinds, never op names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Role(str, Enum):
    """How a node reads one input."""

    WEIGHT = "weight"  # applies the whole tensor where weights go (MatMul B, Conv W, a norm's scale)
    DATA = "data"  # applies it as an activation operand (Add, Concat, Softmax...)
    LOOKUP = "lookup"  # rows picked by indices computed from the runtime inputs (an embedding table)
    GATHER = "gather"  # rows picked by indices not yet classified (the loader refines it)
    SLICE = "slice"  # a part with constant bounds passed on (Slice, Split, Gather on constant indices)
    VIEW = "view"  # passed on unchanged (Identity, Transpose, Reshape, Cast, Squeeze...)
    DEQUANTIZE = "dequantize"  # a quantized weight passed on as floats (DequantizeLinear's data)
    QUANTIZED = "quantized"  # an integer weight applied by a quantized op (MatMulInteger, QGemm...)
    QUANT_PARAM = "quant_param"  # scale or zero point: metadata of a quantized weight
    CONFIG = "config"  # shapes, axes, bounds, scales of Resize: configuration, not learned
    SHAPE = "shape"  # only the shape is read (Shape, Size)
    INDICES = "indices"  # indices into another input
    CONDITION = "condition"  # an If's or a Loop's condition, a Where's mask
    LOOP_CARRIED = "loop_carried"  # a Loop's carried initial value: read where the body reads it
    EXPERT_BANK = "expert_bank"  # stacked expert weights picked per token by a router (TopK)
    UNKNOWN = "unknown"  # an op the vocabulary does not know

    @property
    def passes_on(self) -> bool:
        """The node hands the tensor (or a part of it) to its output unchanged."""
        return self in (Role.VIEW, Role.DEQUANTIZE, Role.SLICE)

    @property
    def is_metadata(self) -> bool:
        """Reading a tensor in such a role does not apply its values: a float tensor read only so is
        configuration, not a parameter, and such a read is no use of a parameter."""
        return self in (Role.CONFIG, Role.SHAPE, Role.QUANT_PARAM, Role.INDICES, Role.CONDITION)



class OpKind(str, Enum):
    """What a node does, as far as counting is concerned."""

    OTHER = "other"
    IDENTITY = "identity"  # its output is its input (Identity)
    CONVERT = "convert"  # converts each element, keeping the layout (Cast, DequantizeLinear)
    ELEMENTWISE = "elementwise"  # generated weights stay weights through it (W = RandomNormal() * 0.02)
    GENERATOR = "generator"  # makes a tensor at run time from a shape (ConstantOfShape, RandomNormal...)
    TOP_K = "top_k"  # picks k of n (a router, when its indices pick expert weights)
    SCATTER = "scatter"  # writes rows back into a whole tensor (ScatterND: index_add of expert outputs)
    BRANCH = "branch"  # runs one of its subgraphs (If)
    LOOP = "loop"  # runs its body a trip count times (Loop)
    SCAN = "scan"  # runs its body once per element of a sequence (Scan)
    CONSTANT = "constant"  # holds a stored tensor


class Cost(str, Enum):
    """How an op's arithmetic is counted (``auditor.analyses.compute`` holds the formulas)."""

    FREE = "free"  # moves or views data, or works on shapes: no arithmetic to count
    MATMUL = "matmul"  # batched matrix product with broadcasting (MatMul, MatMulInteger, FusedMatMul)
    GEMM = "gemm"  # A' B' (+ C) with transA / transB
    MATMUL_NBITS = "matmul_nbits"  # A times a packed low-bit weight of K x N (attributes K, N)
    CONV = "conv"
    CONV_TRANSPOSE = "conv_transpose"
    EINSUM = "einsum"
    LSTM = "lstm"
    GRU = "gru"
    RNN = "rnn"
    ATTENTION = "attention"  # attention over Q, K, V inputs (ONNX Attention, MultiHeadAttention, GQA)
    PACKED_ATTENTION = "packed_attention"  # projections by a packed QKV weight, then attention (contrib Attention)
    NORMALIZATION = "normalization"  # layer, RMS, group, instance norms: 5 FLOPs per element
    BATCH_NORM = "batch_norm"  # inference batch norm: a scale and a shift, 2 FLOPs per element
    SOFTMAX = "softmax"  # exp, sum and divide: 3 FLOPs per element
    ELEMENTWISE = "elementwise"  # 1 FLOP per output element (arithmetic, activations, comparisons)
    REDUCE = "reduce"  # 1 FLOP per input element (ReduceSum, ArgMax, CumSum, TopK)
    POOL = "pool"  # window size per output element
    GLOBAL_POOL = "global_pool"  # 1 per input element
    RESIZE = "resize"  # 1 per output element
    CONTROL = "control"  # If, Loop, Scan, function calls: the cost of the subgraphs they run
    UNCOSTED = "uncosted"  # not known to the vocabulary: listed by name, never a silent zero


@dataclass(frozen=True)
class Part:
    """The elements of an input a node passes on: per axis, the indices read (``None``: all).

    Coordinates are those of the node's data input. Slices keep ``range`` objects (no list of
    a million indices); constant-index gathers keep their indices as a tuple.
    """

    axes: tuple[range | tuple[int, ...] | None, ...]
    keeps_rank: bool = True  # False when the output drops the axis (a Gather on a scalar index)
    size: int | None = None  # elements it holds, where the input's shape was known

    def elements(self, shape: tuple[int, ...]) -> int:
        """Elements read from an input of ``shape``."""
        total = 1
        for size, picked in zip(shape, self.axes):
            total *= size if picked is None else len(picked)
        for size in shape[len(self.axes) :]:
            total *= size
        return total


@dataclass(frozen=True)
class Routing:
    """A read of an expert bank: ``k`` of the ``n`` experts along ``axis`` run per token."""

    router: str  # the TopK node choosing the experts
    k: int | None  # None when k is computed at run time
    n: int
    axis: int = 0
    # the read picks one expert (a scalar index: an exporter unrolled a loop over the experts);
    # otherwise it picks each token's k experts at once
    one_expert: bool = False
    # for one expert's own weights: the node gathering the tokens the router sent to that expert
    group: str | None = None
