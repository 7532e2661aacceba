"""Shape inference of a main graph with subgraphs runs in segments where that is cheaper (onnx's
own inference copies the outer scope's types into every subgraph, so it grows with subgraphs
times graph size).

The oracle is onnx's inference of the whole graph at once: every shape and element type must be
the same, shape arithmetic done once at the top of the graph included (data propagation does not
cross a segment's border by itself).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
import auditor.load.shapes as shapes_module
from auditor.graph import ShapeRequest
from auditor.load.onnx_file import load_onnx

F = TensorProto.FLOAT
D = 8


def _layered(path: Path, layers: int) -> None:
    """x [batch, seq, D]. At the top: sh = Shape(x); flat = [batch * seq, D] computed from sh.
    Each layer: r = Reshape(prev, flat) [b*s, D]; m = MatMul(r, W_i) [b*s, D]; back =
    Reshape(m, sh) [b, s, D]; then an If on the sign of sum(back): Relu or Neg of back."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.asarray(v, np.int64), n) for n, v in
             (("i0", [0]), ("i1", [1]), ("d", [D]))] + [numpy_helper.from_array(np.asarray(0.0, np.float32), "zero")]  # fmt: skip
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Gather", ["sh", "i0"], ["b"]),
        helper.make_node("Gather", ["sh", "i1"], ["s"]),
        helper.make_node("Mul", ["b", "s"], ["bs"]),
        helper.make_node("Concat", ["bs", "d"], ["flat"], axis=0),
    ]
    prev = "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((D, D)) * 0.1).astype(np.float32), f"w{i}"))
        branches = [
            helper.make_graph([helper.make_node(op, [f"back{i}"], [f"{side}{i}"])], f"{side}{i}", [],
                              [helper.make_tensor_value_info(f"{side}{i}", F, None)])  # fmt: skip
            for op, side in (("Relu", "pos"), ("Neg", "neg"))
        ]
        nodes += [
            helper.make_node("Reshape", [prev, "flat"], [f"r{i}"]),
            helper.make_node("MatMul", [f"r{i}", f"w{i}"], [f"m{i}"]),
            helper.make_node("Reshape", [f"m{i}", "sh"], [f"back{i}"]),
            helper.make_node("ReduceSum", [f"back{i}"], [f"t{i}"], keepdims=0),
            helper.make_node("Greater", [f"t{i}", "zero"], [f"c{i}"]),
            helper.make_node("If", [f"c{i}"], [f"out{i}"], then_branch=branches[0], else_branch=branches[1]),
        ]
        prev = f"out{i}"
    graph = helper.make_graph(nodes, "layered", [helper.make_tensor_value_info("x", F, ["batch", "seq", D])],
                              [helper.make_tensor_value_info(prev, F, None)], inits)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_many_subgraphs_are_inferred_in_segments_with_the_same_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layers = 3 * shapes_module._SEGMENT_SUBGRAPHS  # 3 Ifs a segment: several segments
    path = tmp_path / "m.onnx"
    _layered(path, layers)
    request = ShapeRequest(dims={"batch": 2, "seq": 5})
    segmented = load_onnx(path, request)
    assert segmented.shape_info is not None and segmented.shape_info.inferred.startswith("onnx, in ")
    assert int(segmented.shape_info.inferred.split()[2]) >= 3

    monkeypatch.setattr(shapes_module, "_SEGMENT_COPIES", 10**18)  # the oracle: the whole graph at once
    whole = load_onnx(path, request)
    assert whole.shape_info is not None and whole.shape_info.inferred == "onnx"
    assert segmented.shapes == whole.shapes and segmented.dtypes == whole.dtypes
    # the reshapes of the last layer, far from the shape arithmetic at the top, are known
    last = layers - 1
    assert segmented.shapes[f"r{last}"] == (10, D) and segmented.shapes[f"back{last}"] == (2, 5, D)
    branch_value = next(v for v in segmented.shapes if v.endswith(f"/pos{last}"))  # inside the last If's branch
    assert segmented.shapes[branch_value] == (2, 5, D)
    assert segmented.shape_info.unknown_values == 0


def test_segmented_costs_match_a_hand_count(tmp_path: Path) -> None:
    layers = 2 * shapes_module._SEGMENT_SUBGRAPHS + 5
    path = tmp_path / "m.onnx"
    _layered(path, layers)
    report = auditor.audit(path, shapes=ShapeRequest(dims={"batch": 2, "seq": 5}))
    assert report.compute is not None and report.compute.complete
    # each layer's MatMul: [10, D] x [D, D] = 10 * D * D MACs; nothing else multiplies
    assert report.compute.macs == layers * 10 * D * D
    assert report.counts.applied_params == layers * D * D


def test_shape_arithmetic_is_repeated_only_where_its_inputs_are_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """k = Cast(ReduceMax(x)) [batch] int64 at the top, read again by the last layer. Repeating
    the Cast would need ReduceMax's output, which no later segment reads: the last segment takes k
    as an input of the type found before, and k + k is known there too."""
    layers = 2 * shapes_module._SEGMENT_SUBGRAPHS + 1
    path = tmp_path / "m.onnx"
    _layered(path, layers)
    model = onnx.load(str(path))
    model.graph.node.insert(0, helper.make_node("ReduceMax", ["x"], ["f"], keepdims=0, axes=[1, 2]))
    model.graph.node.insert(1, helper.make_node("Cast", ["f"], ["k"], to=TensorProto.INT64))
    model.graph.node.append(helper.make_node("Add", ["k", "k"], ["k2"]))
    model.graph.output.append(helper.make_tensor_value_info("k2", TensorProto.INT64, None))
    onnx.save(model, str(path))
    request = ShapeRequest(dims={"batch": 3, "seq": 4})
    segmented = load_onnx(path, request)
    assert segmented.shape_info is not None and segmented.shape_info.inferred.startswith("onnx, in ")
    assert segmented.shapes["k"] == (3,) and segmented.shapes["k2"] == (3,)
    monkeypatch.setattr(shapes_module, "_SEGMENT_COPIES", 10**18)
    assert load_onnx(path, request).shapes == segmented.shapes


def test_shape_arithmetic_with_shared_inputs_is_looked_at_once(tmp_path: Path) -> None:
    """n_k = Sub(Add(n_{k-1}, n_{k-1}), n_{k-1}) = n_{k-1} from Shape(x), 30 deep, read after
    many Ifs by a Reshape: 3^30 paths to the top if each were followed; each value is decided
    once, and the Reshape gives x's shape [2, 5, D], as with the whole graph. A second chain
    raises each step to a power computed from an activation, which cannot be repeated in a later
    segment: every path to it fails, and is not followed twice either."""
    path = tmp_path / "m.onnx"
    _layered(path, shapes_module._SEGMENT_SUBGRAPHS + 5)
    model = onnx.load(str(path))
    chain = [helper.make_node("Shape", ["x"], ["n0"])]
    for k in range(1, 31):
        chain += [helper.make_node("Add", [f"n{k - 1}", f"n{k - 1}"], [f"a{k}"]), helper.make_node("Sub", [f"a{k}", f"n{k - 1}"], [f"n{k}"])]
    for position, node in enumerate(chain):
        model.graph.node.insert(position, node)
    # y: an fp16 scalar from an activation, of no type a later segment keeps
    power = [helper.make_node("Relu", ["x"], ["act"]), helper.make_node("ReduceSum", ["act"], ["sum"], keepdims=0),
             helper.make_node("Cast", ["sum"], ["y"], to=TensorProto.FLOAT16), helper.make_node("Shape", ["x"], ["p0"])]  # fmt: skip
    for k in range(1, 31):
        power += [helper.make_node("Add", [f"p{k - 1}", f"p{k - 1}"], [f"b{k}"]), helper.make_node("Pow", [f"b{k}", "y"], [f"p{k}"])]
    for position, node in enumerate(power, len(chain)):
        model.graph.node.insert(position, node)
    model.graph.node.append(helper.make_node("Reshape", ["x", "n30"], ["far"], allowzero=0))
    model.graph.node.append(helper.make_node("Reshape", ["x", "p30"], ["farther"], allowzero=0))
    model.graph.output.extend([helper.make_tensor_value_info(n, F, None) for n in ("far", "farther")])
    onnx.save(model, str(path))
    request = ShapeRequest(dims={"batch": 2, "seq": 5})
    started = time.monotonic()
    segmented = load_onnx(path, request)
    assert time.monotonic() - started < 20  # hours if every path were followed
    assert segmented.shape_info is not None and segmented.shape_info.inferred.startswith("onnx, in ")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(shapes_module, "_SEGMENT_COPIES", 10**18)
    try:
        whole = load_onnx(path, request)
        assert whole.shapes["far"] == segmented.shapes["far"] == (2, 5, D)
        # unknown both ways (onnx does not propagate Pow), of the same rank; sizes onnx could not
        # name are renamed per segment
        unknown = [shapes["farther"] for shapes in (whole.shapes, segmented.shapes)]
        assert [len(u) for u in unknown] == [3, 3] and not any(isinstance(d, int) for u in unknown for d in u)
    finally:
        monkeypatch.undo()


def test_segmented_inference_leaves_no_reference_cycle(tmp_path: Path) -> None:
    """The audit pauses the cyclic collector: a cycle made while inferring in segments would keep
    the parsed model, weights and all, for as long as the process runs."""
    import gc

    path = tmp_path / "m.onnx"
    _layered(path, 2 * shapes_module._SEGMENT_SUBGRAPHS)
    request = ShapeRequest(dims={"batch": 2, "seq": 5})
    auditor.audit(path, shapes=request)  # imports and caches first
    gc.collect()
    gc.disable()  # as the audit runs: else a collection on the way might free a cycle before it is counted
    try:
        report = auditor.audit(path, shapes=request)
        leaked = gc.collect()
    finally:
        gc.enable()
    assert report.shapes is not None and report.shapes.inferred.startswith("onnx, in ")
    assert leaked == 0


def _chain_with_ifs(nodes: int, ifs: int, initializers: int) -> onnx.GraphProto:
    """``nodes`` Relu nodes in a chain, the last ``ifs`` of them replaced by Ifs (two one-node
    branches each), and ``initializers`` unread scalars in the outer scope."""
    graph_nodes = []
    for i in range(nodes):
        if i >= nodes - ifs:
            branches = [helper.make_graph([helper.make_node("Identity", [f"v{i}"], [f"{side}{i}"])], f"{side}{i}", [],
                                          [helper.make_tensor_value_info(f"{side}{i}", F, None)])  # fmt: skip
                        for side in ("a", "b")]  # fmt: skip
            graph_nodes.append(helper.make_node("If", ["cond"], [f"v{i + 1}"], then_branch=branches[0], else_branch=branches[1]))
        else:
            graph_nodes.append(helper.make_node("Relu", [f"v{i}"], [f"v{i + 1}"]))
    inits = [numpy_helper.from_array(np.asarray(0.0, np.float32), f"c{k}") for k in range(initializers)]
    return helper.make_graph(
        graph_nodes, "chain", [helper.make_tensor_value_info("v0", F, [4]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(f"v{nodes}", F, None)], inits,
    )  # fmt: skip


def test_segments_start_where_copies_into_subgraphs_would_outweigh_the_graph() -> None:
    """onnx's inference copies the outer scope's types (inputs, initializers, values so far)
    into each subgraph: segments pay off once those copies pass ``_SEGMENT_COPIES`` per node,
    however few the subgraphs. Counted by hand: the If at position p (2 branches) copies
    2 * (2 inputs + initializers + p) types."""
    limit = shapes_module._SEGMENT_COPIES
    nodes = 5000
    # 3 Ifs at the end of 5,000 nodes: 2 * (2 + 0 + 4997 + 2 + 4998 + 2 + 4999) = 30,000 copies, under 16 * 5,000
    few = _chain_with_ifs(nodes, 3, 0)
    assert 2 * sum(2 + p for p in range(nodes - 3, nodes)) < limit * nodes
    assert shapes_module._segments(few) == [(0, nodes)]
    # the same 3 Ifs under 20,000 initializers: 2 * 3 * 20,000 more copies, over the limit
    crowded = _chain_with_ifs(nodes, 3, 20_000)
    assert 2 * sum(2 + 20_000 + p for p in range(nodes - 3, nodes)) > limit * nodes
    bounds = shapes_module._segments(crowded)
    assert len(bounds) > 1 and bounds[0][0] == 0 and bounds[-1][1] == nodes
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # consecutive, covering every node
    assert all(stop - start <= shapes_module._SEGMENT_NODES for start, stop in bounds)
    # sparse initializers are in the outer scope too
    sparse = _chain_with_ifs(nodes, 3, 0)
    sparse.sparse_initializer.extend(
        helper.make_sparse_tensor(numpy_helper.from_array(np.ones(1, np.float32), f"s{k}"),
                                  numpy_helper.from_array(np.zeros(1, np.int64), f"s{k}_i"), [4])  # fmt: skip
        for k in range(20_000)
    )
    assert len(shapes_module._segments(sparse)) > 1
    # 20 Ifs among 5,000 nodes without initializers: about 2 * 20 * 4,990 = 200,000 copies, over 80,000
    assert len(shapes_module._segments(_chain_with_ifs(nodes, 20, 0))) > 1
    # no subgraph at all: one segment, however large
    assert shapes_module._segments(_chain_with_ifs(50_000, 0, 0)) == [(0, 50_000)]


def test_a_few_ifs_under_many_initializers_get_the_whole_graphs_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = helper.make_model(_chain_with_ifs(5000, 3, 20_000), opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    segmented = load_onnx(path)
    assert segmented.shape_info is not None and segmented.shape_info.inferred.startswith("onnx, in ")
    monkeypatch.setattr(shapes_module, "_SEGMENT_COPIES", 10**18)
    whole = load_onnx(path)
    assert whole.shape_info is not None and whole.shape_info.inferred == "onnx"
    assert segmented.shapes == whole.shapes and segmented.dtypes == whole.dtypes
    assert segmented.shapes["v5000"] == (4,)


def test_sizes_onnx_cannot_name_stay_apart_across_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnx names a data-dependent size it cannot work out ``unk__0``, ``unk__1``... afresh in
    each model it infers: the first NonZero of every segment would be ``unk__0``. Two unrelated
    sizes must not share a name (a routed-token expectation keyed by one would apply to both),
    and one size read segments later must keep its name."""
    path = tmp_path / "m.onnx"
    _layered(path, 3 * shapes_module._SEGMENT_SUBGRAPHS)
    model = onnx.load(str(path))
    model.graph.node.insert(0, helper.make_node("NonZero", ["x"], ["alone"]))  # read by no later segment
    model.graph.node.insert(1, helper.make_node("NonZero", ["x"], ["first"]))
    model.graph.node.insert(2, helper.make_node("Transpose", ["first"], ["early"]))  # first's size, read at once
    model.graph.node.append(helper.make_node("NonZero", ["x"], ["last"]))
    model.graph.node.append(helper.make_node("Transpose", ["first"], ["moved"]))  # first's size, read segments later
    names = ("first", "alone", "last", "early", "moved")
    model.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in names])
    onnx.save(model, str(path))
    request = ShapeRequest(dims={"batch": 2, "seq": 5})
    segmented = load_onnx(path, request)
    assert segmented.shape_info is not None and int(segmented.shape_info.inferred.split()[2]) >= 3
    sizes = [segmented.shapes[n] for n in ("alone", "first", "last")]
    assert all(size[0] == 3 and isinstance(size[1], str) for size in sizes)
    assert len({size[1] for size in sizes}) == 3
    # the same size keeps its one name in its own segment and in a later one
    assert segmented.shapes["early"] == segmented.shapes["moved"] == (segmented.shapes["first"][1], 3)
    monkeypatch.setattr(shapes_module, "_SEGMENT_COPIES", 10**18)
    whole = load_onnx(path, request)  # as the whole graph's inference names them:
    assert len({whole.shapes[n][1] for n in ("first", "alone", "last")}) == 3
    assert whole.shapes["moved"] == (whole.shapes["first"][1], 3)


def test_sizes_made_up_inside_branches_stay_apart_across_segments(tmp_path: Path) -> None:
    """The same, inside If branches: a NonZero in a branch in the first segment and one in a branch
    in the last segment get sizes of different names (onnx starts again at unk__0 in each)."""
    path = tmp_path / "m.onnx"
    _layered(path, 3 * shapes_module._SEGMENT_SUBGRAPHS)
    model = onnx.load(str(path))
    model.graph.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))

    def branchy(tag: str) -> onnx.NodeProto:
        branches = [
            helper.make_graph([helper.make_node("NonZero", ["x"], [f"nz{tag}{side}"]), helper.make_node("Transpose", [f"nz{tag}{side}"], [f"t{tag}{side}"])],
                              f"{tag}{side}", [], [helper.make_tensor_value_info(f"t{tag}{side}", TensorProto.INT64, None)])  # fmt: skip
            for side in ("a", "b")
        ]
        return helper.make_node("If", ["flag"], [f"out{tag}"], then_branch=branches[0], else_branch=branches[1])

    model.graph.node.insert(0, branchy("first"))
    model.graph.node.append(branchy("last"))
    model.graph.output.extend([helper.make_tensor_value_info(f"out{t}", TensorProto.INT64, None) for t in ("first", "last")])
    onnx.save(model, str(path))
    segmented = load_onnx(path, ShapeRequest(dims={"batch": 2, "seq": 5}))
    assert segmented.shape_info is not None and int(segmented.shape_info.inferred.split()[2]) >= 3
    first = next(shape for value, shape in segmented.shapes.items() if value.endswith("/nzfirsta"))
    last = next(shape for value, shape in segmented.shapes.items() if value.endswith("/nzlasta"))
    assert first[0] == last[0] == 3 and isinstance(first[1], str) and isinstance(last[1], str)
    assert first[1] != last[1]
