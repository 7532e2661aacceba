"""The ONNX op vocabulary: for each op and input slot, how the op reads that input.

This is the one place that knows ONNX op names. The loader tags every node input with the
:class:`~auditor.roles.Role` given here (then refines gathers and slices from the dataflow, in
``auditor.load.dataflow``); analyses read roles only.

Standard ops not listed get their roles from their schema in onnx's registry: inputs whose
formal name says configuration (``shape``, ``axes``, ``scales``...) are CONFIG, index inputs
INDICES, the rest DATA. Ops of other domains (com.microsoft contrib ops) are listed by hand;
an op found in neither is UNKNOWN, and its stored tensors are reported as "role unknown".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Mapping

import onnx.defs

from auditor.roles import Cost, OpKind, Role

W, D, V, C, S = Role.WEIGHT, Role.DATA, Role.VIEW, Role.CONFIG, Role.SLICE
Q, QP, I, COND = Role.QUANTIZED, Role.QUANT_PARAM, Role.INDICES, Role.CONDITION


@dataclass(frozen=True)
class OpSpec:
    """How one op reads its inputs: ``roles`` per slot, ``rest`` for slots past the table.

    ``quantized`` maps each slot holding an integer quantized weight to the slots of its scale
    and zero point (None when the op has no such input).
    """

    roles: tuple[Role, ...]
    rest: Role = Role.DATA
    kind: OpKind = OpKind.OTHER
    quantized: Mapping[int, tuple[int | None, int | None]] = field(default_factory=dict)
    cost: Cost = Cost.UNCOSTED

    def role(self, slot: int) -> Role:
        return self.roles[slot] if slot < len(self.roles) else self.rest

    def roles_for(self, inputs: int) -> tuple[Role, ...]:
        """The roles of a node with ``inputs`` inputs."""
        if inputs <= len(self.roles):
            return self.roles[:inputs]
        return self.roles + (self.rest,) * (inputs - len(self.roles))


def _q(roles: tuple[Role, ...], quantized: Mapping[int, tuple[int | None, int | None]], kind: OpKind = OpKind.OTHER) -> OpSpec:
    return OpSpec(roles, Role.DATA, kind, dict(quantized))


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Neg", "Abs", "Pow", "Sqrt", "Exp", "Reciprocal")

# ai.onnx ops whose roles the schema names do not tell (weights, views, slices, control flow).
_STANDARD: dict[str, OpSpec] = {
    # weights
    "MatMul": OpSpec((D, W)),
    "Gemm": OpSpec((D, W, W)),
    "Conv": OpSpec((D, W, W)),
    "ConvTranspose": OpSpec((D, W, W)),
    "Einsum": OpSpec((D, W)),
    "LayerNormalization": OpSpec((D, W, W)),
    "RMSNormalization": OpSpec((D, W)),
    "BatchNormalization": OpSpec((D, W, W, W, W)),
    "InstanceNormalization": OpSpec((D, W, W)),
    "GroupNormalization": OpSpec((D, W, W)),
    "LSTM": OpSpec((D, W, W, W, C, D, D, W)),
    "GRU": OpSpec((D, W, W, W, C, D)),
    "RNN": OpSpec((D, W, W, W, C, D)),
    "PRelu": OpSpec((D, W)),
    # rows by index: refined from the indices' origin (lookup, constant slice, expert bank)
    "Gather": OpSpec((Role.GATHER, I)),
    "GatherND": OpSpec((Role.GATHER, I)),
    "GatherElements": OpSpec((Role.GATHER, I)),
    # views: the same tensor passed on
    "Identity": OpSpec((V,), kind=OpKind.IDENTITY),
    "Transpose": OpSpec((V,)),
    "Reshape": OpSpec((V, C)),
    "Cast": OpSpec((V,), kind=OpKind.CONVERT),
    "CastLike": OpSpec((V, Role.SHAPE), kind=OpKind.CONVERT),
    "Squeeze": OpSpec((V, C)),
    "Unsqueeze": OpSpec((V, C)),
    "Flatten": OpSpec((V,)),
    "DequantizeLinear": _q((Role.DEQUANTIZE, QP, QP), {0: (1, 2)}, OpKind.CONVERT),
    # parts with constant bounds
    "Slice": OpSpec((S, C, C, C, C)),
    "Split": OpSpec((S, C)),
    # configuration read as floats
    "Resize": OpSpec((D, C, C, C)),
    "Upsample": OpSpec((D, C)),
    "Range": OpSpec((C, C, C)),
    "Pad": OpSpec((D, C, C, C)),
    "Clip": OpSpec((D, C, C)),
    "Shape": OpSpec((Role.SHAPE,)),
    "Size": OpSpec((Role.SHAPE,)),
    "Where": OpSpec((COND, D, D)),
    "TopK": OpSpec((D, C), kind=OpKind.TOP_K),
    "QuantizeLinear": OpSpec((D, QP, QP)),
    "ScatterND": OpSpec((D, I, D), kind=OpKind.SCATTER),
    "ScatterElements": OpSpec((D, I, D), kind=OpKind.SCATTER),
    "Scatter": OpSpec((D, I, D), kind=OpKind.SCATTER),
    # quantized weights
    "QLinearConv": _q((D, QP, QP, Q, QP, QP, QP, QP, Q), {3: (4, 5), 8: (None, None)}),
    "QLinearMatMul": _q((Q, QP, QP, Q, QP, QP, QP, QP), {0: (1, 2), 3: (4, 5)}),
    "MatMulInteger": _q((Q, Q, QP, QP), {0: (None, 2), 1: (None, 3)}),
    "ConvInteger": _q((Q, Q, QP, QP), {0: (None, 2), 1: (None, 3)}),
    # generators
    "ConstantOfShape": OpSpec((C,), kind=OpKind.GENERATOR),
    "RandomNormal": OpSpec((), kind=OpKind.GENERATOR),
    "RandomUniform": OpSpec((), kind=OpKind.GENERATOR),
    "RandomNormalLike": OpSpec((Role.SHAPE,), kind=OpKind.GENERATOR),
    "RandomUniformLike": OpSpec((Role.SHAPE,), kind=OpKind.GENERATOR),
    "EyeLike": OpSpec((Role.SHAPE,), kind=OpKind.GENERATOR),
    # control flow
    "If": OpSpec((COND,), kind=OpKind.BRANCH),
    "Loop": OpSpec((C, COND), rest=Role.LOOP_CARRIED, kind=OpKind.LOOP),
    "Scan": OpSpec((), kind=OpKind.SCAN),
    "Constant": OpSpec((), kind=OpKind.CONSTANT),
}
for _name in _ELEMENTWISE:
    _STANDARD[_name] = OpSpec((D, D), kind=OpKind.ELEMENTWISE)

# onnxruntime contrib ops (domain com.microsoft), from its ContribOperators.md.
_CONTRIB: dict[str, OpSpec] = {
    "FusedMatMul": OpSpec((D, W)),
    "FusedConv": OpSpec((D, W, W, D)),
    "FusedGemm": OpSpec((D, W, W)),
    "Attention": OpSpec((D, W, W, I, D, D, D)),
    "MultiHeadAttention": OpSpec((D, D, D, W, I, D, D, D)),
    "GroupQueryAttention": OpSpec((D, D, D, D, D, I, I, D, D)),
    "RotaryEmbedding": OpSpec((D, I, D, D)),
    "SkipLayerNormalization": OpSpec((D, D, W, W, W)),
    "SkipSimplifiedLayerNormalization": OpSpec((D, D, W, W)),
    "SimplifiedLayerNormalization": OpSpec((D, W)),
    "LayerNormalization": OpSpec((D, W, W)),
    "EmbedLayerNormalization": OpSpec((I, I, Role.GATHER, Role.GATHER, Role.GATHER, W, W, I, I)),
    "BiasGelu": OpSpec((D, W)),
    "FastGelu": OpSpec((D, W)),
    "BiasAdd": OpSpec((D, D, W)),
    "BiasSplitGelu": OpSpec((D, W)),
    "Gelu": OpSpec((D,)),
    "QuickGelu": OpSpec((D,)),
    "BiasDropout": OpSpec((D, W, D, C, COND)),
    # quantized and packed weights
    "DynamicQuantizeMatMul": _q((D, Q, QP, QP, W), {1: (2, 3)}),
    "MatMulIntegerToFloat": _q((Q, Q, QP, QP, QP, QP, W), {0: (2, 4), 1: (3, 5)}),
    "DynamicQuantizeLSTM": _q((D, Q, Q, W, C, D, D, W, QP, QP, QP, QP), {1: (8, 9), 2: (10, 11)}),
    "QAttention": _q((D, Q, W, QP, QP, I, QP, QP, D), {1: (4, 7)}),
    "QGemm": _q((Q, QP, QP, Q, QP, QP, Q, QP, QP), {0: (1, 2), 3: (4, 5), 6: (None, None)}),
    "QOrderedMatMul": _q((D, QP, Q, QP, QP, W, D, QP), {2: (3, None)}),
    "QOrderedAttention": _q((D, QP, QP, QP, QP, Q, QP, Q, QP, Q, QP, W, W, W, QP, QP), {5: (6, None), 7: (8, None), 9: (10, None)}),
    "QLinearAdd": _q((Q, QP, QP, Q, QP, QP, QP, QP), {0: (1, 2), 3: (4, 5)}),
    "QLinearMul": _q((Q, QP, QP, Q, QP, QP, QP, QP), {0: (1, 2), 3: (4, 5)}),
    "QLinearConv": _q((D, QP, QP, Q, QP, QP, QP, QP, Q), {3: (4, 5), 8: (None, None)}),
    "QLinearSigmoid": OpSpec((D, QP, QP, QP, QP)),
    "QLinearLeakyRelu": OpSpec((D, QP, QP, QP, QP)),
    "QLinearSoftmax": OpSpec((D, QP, QP, QP, QP)),
    "QLinearGlobalAveragePool": OpSpec((D, QP, QP, QP, QP)),
    "QLinearConcat": OpSpec((QP, QP), rest=D),
    "DynamicQuantizeLinear": OpSpec((D,)),
    "MatMulNBits": _q((D, Q, QP, QP, I, W), {1: (2, 3)}),
    "MatMulBnb4": _q((D, Q, QP), {1: (2, None)}),
    "GatherBlockQuantized": _q((Role.GATHER, I, QP, QP), {0: (2, 3)}),
    "DequantizeLinear": _q((Role.DEQUANTIZE, QP, QP), {0: (1, 2)}, OpKind.CONVERT),
    "QuantizeLinear": OpSpec((D, QP, QP)),
}

# Formal input names of standard ops that hold configuration or indices, not learned values.
_CONFIG_NAMES = frozenset(
    {
        "shape", "axes", "axis", "pads", "starts", "ends", "steps", "split", "repeats", "roi", "scales",
        "sizes", "constant_value", "depth", "k", "K", "min", "max", "ratio", "training_mode", "start",
        "limit", "delta", "sequence_lens", "block_shape", "output_shape", "image_shape",
        "max_output_boxes_per_class", "iou_threshold", "score_threshold", "frame_step", "frame_length",
        "dft_length", "num_mel_bins", "sample_rate", "lower_edge_hertz", "upper_edge_hertz", "M",
        "target_type", "size", "cond", "condition", "offset",
    }
)  # fmt: skip
_INDEX_NAMES = frozenset({"indices", "batch_indices", "position_ids", "write_indices", "position", "nonpad_kv_seqlen"})

_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")

UNKNOWN_SPEC = OpSpec((), rest=Role.UNKNOWN)


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# How each op is costed, by op type (ai.onnx and com.microsoft share names where they mean the same).
_COSTS: dict[Cost, tuple[str, ...]] = {
    Cost.FREE: _names("""
        Identity Reshape Transpose Squeeze Unsqueeze Flatten Concat Split Slice Gather GatherND
        GatherElements Expand Tile Pad Shape Size Constant ConstantOfShape Range Cast CastLike
        Dropout NonZero ScatterND ScatterElements Scatter SpaceToDepth DepthToSpace Trilu
        EyeLike OneHot Compress ReverseSequence SequenceAt SequenceConstruct SequenceEmpty
        SequenceInsert SequenceLength SplitToSequence ConcatFromSequence Optional OptionalGetElement
        OptionalHasElement RandomNormal RandomUniform RandomNormalLike RandomUniformLike Bernoulli
        Multinomial GatherBlockQuantized Unique CenterCropPad Col2Im"""),
    Cost.MATMUL: _names("MatMul MatMulInteger QLinearMatMul FusedMatMul DynamicQuantizeMatMul MatMulIntegerToFloat QOrderedMatMul MatMulBnb4"),
    Cost.GEMM: _names("Gemm QGemm FusedGemm"),
    Cost.MATMUL_NBITS: _names("MatMulNBits"),
    Cost.CONV: _names("Conv ConvInteger QLinearConv FusedConv"),
    Cost.CONV_TRANSPOSE: _names("ConvTranspose"),
    Cost.EINSUM: _names("Einsum"),
    Cost.LSTM: _names("LSTM DynamicQuantizeLSTM"),
    Cost.GRU: _names("GRU"),
    Cost.RNN: _names("RNN"),
    Cost.ATTENTION: _names("MultiHeadAttention GroupQueryAttention"),
    Cost.PACKED_ATTENTION: _names("QAttention QOrderedAttention"),
    Cost.NORMALIZATION: _names("""
        LayerNormalization RMSNormalization GroupNormalization InstanceNormalization
        SimplifiedLayerNormalization SkipLayerNormalization SkipSimplifiedLayerNormalization
        EmbedLayerNormalization LpNormalization MeanVarianceNormalization LRN"""),
    Cost.BATCH_NORM: _names("BatchNormalization"),
    Cost.SOFTMAX: _names("Softmax LogSoftmax Hardmax QLinearSoftmax"),
    Cost.ELEMENTWISE: _names("""
        Add Sub Mul Div Neg Abs Pow Sqrt Exp Log Reciprocal Relu LeakyRelu PRelu Elu Selu Celu
        Sigmoid HardSigmoid HardSwish Tanh Erf Gelu FastGelu BiasGelu QuickGelu BiasAdd BiasSplitGelu
        Softplus Softsign Mish Swish Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Floor
        Ceil Round Sign Clip Min Max Mean Sum Mod BitShift BitwiseAnd BitwiseOr BitwiseXor
        BitwiseNot And Or Xor Not Equal Greater GreaterOrEqual Less LessOrEqual Where IsNaN IsInf
        ThresholdedRelu Shrink QuantizeLinear DequantizeLinear DynamicQuantizeLinear QLinearAdd
        QLinearMul QLinearSigmoid QLinearLeakyRelu BiasDropout RotaryEmbedding Affine"""),
    Cost.REDUCE: _names("""
        ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum
        ReduceLogSumExp ReduceSumSquare ArgMax ArgMin CumSum TopK"""),
    Cost.POOL: _names("MaxPool AveragePool LpPool"),
    Cost.GLOBAL_POOL: _names("GlobalAveragePool GlobalMaxPool GlobalLpPool QLinearGlobalAveragePool"),
    Cost.RESIZE: _names("Resize Upsample GridSample"),
    Cost.CONTROL: _names("If Loop Scan"),
}
_COST_OF = {name: cost for cost, names in _COSTS.items() for name in names}
# the ONNX standard Attention (opset 23) takes Q, K, V; the contrib one a packed QKV weight
_COST_OF_DOMAIN = {("com.microsoft", "Attention"): Cost.PACKED_ATTENTION, ("", "Attention"): Cost.ATTENTION}


def _with_cost(spec: OpSpec, domain: str, op_type: str) -> OpSpec:
    cost = _COST_OF_DOMAIN.get((domain, op_type)) or _COST_OF.get(op_type, Cost.UNCOSTED)
    return spec if cost is spec.cost else replace(spec, cost=cost)


@lru_cache(maxsize=None)
def spec_for(domain: str, op_type: str, opset: int = 10_000) -> OpSpec:
    """How ``op_type`` of ``domain`` reads its inputs (every input UNKNOWN for an op the
    vocabulary does not know) and how its arithmetic is costed."""
    return _with_cost(_roles_of(domain, op_type, opset), "" if domain == "ai.onnx" else domain, op_type)


def _roles_of(domain: str, op_type: str, opset: int) -> OpSpec:
    if domain in ("", "ai.onnx") and op_type in _STANDARD:
        return _STANDARD[op_type]
    if domain == "com.microsoft" and op_type in _CONTRIB:
        return _CONTRIB[op_type]
    if domain in _STANDARD_DOMAINS:
        try:
            schema = onnx.defs.get_schema(op_type, opset, domain)
        except onnx.defs.SchemaError:
            return UNKNOWN_SPEC
        roles = tuple(
            C if formal.name in _CONFIG_NAMES else I if formal.name in _INDEX_NAMES else D for formal in schema.inputs
        )
        variadic = bool(schema.inputs) and schema.inputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
        return OpSpec(roles, rest=roles[-1] if variadic and roles else D)
    return UNKNOWN_SPEC


CALL_SPEC = OpSpec((), rest=Role.DATA, cost=Cost.CONTROL)  # a call of a model-local function
