"""AUD113 (mixed precision) and AUD114 (claimed count) cases the first tests left open, found by
mutation testing: each test fails on a deliberately broken ``auditor/findings.py`` and passes on
the real one. Counts are worked by hand, in the test, from the models and figures as written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.analyses.counts import Counts, DtypeCount
from auditor.findings import _precision_findings, claim_finding, claim_matches, parse_claim


def _audit_findings(tmp_path: Path, nodes: list[onnx.NodeProto], x_type: int, inits: list[onnx.TensorProto], y_type: int) -> dict:
    graph = helper.make_graph(nodes, "p", [helper.make_tensor_value_info("x", x_type, [1, 16])],
                              [helper.make_tensor_value_info("y", y_type, None)], inits)  # fmt: skip
    path = tmp_path / "p.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return {f.code: f for f in auditor.audit(path).findings}


def test_half_and_single_precision_are_flagged_with_their_shares(tmp_path: Path) -> None:
    """float32 W1 [16, 8] (128 parameters, 4 B each), then float16 W2 [8, 4] (32, 2 B each):
    bytes per parameter 4 and 2, a ratio of 2; shares 128/160 and 32/160."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float16), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Cast", ["h"], ["h16"], to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["h16", "w2"], ["y"])]  # fmt: skip
    found = _audit_findings(tmp_path, nodes, TensorProto.FLOAT, [w1, w2], TensorProto.FLOAT16)["AUD113"]
    assert found.evidence["bytes_per_param"] == {"float32": 4.0, "float16": 2.0}
    assert found.evidence["share_of_params"] == {"float32": 0.8, "float16": 0.2}


def test_two_dtypes_of_the_same_width_are_not_mixed_precision(tmp_path: Path) -> None:
    # float16 W [16, 8] and a bfloat16 bias [8]: 2 bytes per parameter both
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float16), "w")
    bias = helper.make_tensor("bias", TensorProto.BFLOAT16, [8], [1.0] * 8)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cast", ["bias"], ["b16"], to=TensorProto.FLOAT16),
             helper.make_node("Add", ["h", "b16"], ["y"])]  # fmt: skip
    assert "AUD113" not in _audit_findings(tmp_path, nodes, TensorProto.FLOAT16, [w, bias], TensorProto.FLOAT16)


def test_a_few_float32_norms_beside_half_precision_weights_are_not_flagged(tmp_path: Path) -> None:
    # float16 W [64, 64]: 8,192 B; a float32 scale [64]: 256 B, 3% of the 8,448 stored bytes (under 5%)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float16), "w")
    gamma = numpy_helper.from_array(np.ones(64, np.float32), "gamma")
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16), helper.make_node("MatMul", ["x16", "w"], ["h16"]),
             helper.make_node("Cast", ["h16"], ["h"], to=TensorProto.FLOAT), helper.make_node("Mul", ["h", "gamma"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, gamma])  # fmt: skip
    path = tmp_path / "norm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    report = auditor.audit(path)
    assert {d: (c.params, c.bytes) for d, c in report.counts.by_dtype.items()} == {"float16": (4096, 8192), "float32": (64, 256)}
    assert "AUD113" not in {f.code for f in report.findings}


def test_a_second_precision_holding_exactly_five_percent_of_the_bytes_is_flagged() -> None:
    # float32: 19 parameters, 76 B; float16: 2 parameters, 4 B = 5% of the 80 stored bytes
    by_dtype = {"float32": DtypeCount(19, 76), "float16": DtypeCount(2, 4)}
    counts = replace(_counts(21, 21, 21, 21), stored_bytes=80, unique_bytes=80, by_dtype=by_dtype)
    (found,) = _precision_findings(counts)
    assert found.evidence["bytes_per_param"] == {"float32": 4.0, "float16": 2.0}


def _counts(stored: int, unique: int, applied: int | None, active: int, embedding: int = 0) -> Counts:
    return Counts(
        stored_params=stored, stored_bytes=4 * stored, unique_params=unique, unique_bytes=4 * unique,
        applied_params=applied, applied_params_lower_bound=applied or unique, active_params=active,
        embedding_params=embedding, unused_params=0, generated_params=0, initial_value_params=0,
        by_dtype={"float32": DtypeCount(stored, 4 * stored)}, parameter_tensors=1, initial_value_tensors=0,
        wasted_params=stored - unique, wasted_bytes=4 * (stored - unique),
    )  # fmt: skip


def test_an_integer_claim_is_good_to_half_a_unit_and_one_is_a_count() -> None:
    claim = parse_claim("80")  # 79.5 to 80.5
    assert claim.value * (1 - claim.tolerance) == pytest.approx(79.5)
    assert claim.value * (1 + claim.tolerance) == pytest.approx(80.5)
    assert claim_matches(_counts(81, 81, 81, 81), claim) == []
    assert parse_claim("1").value == 1.0


def test_a_claim_matches_within_its_precision_both_ends_included() -> None:
    # '12M' is 11.5M to 12.5M: 12.3M matches, 12.5M still does, 12.6M does not
    assert claim_matches(_counts(12_300_000, 12_300_000, None, 12_300_000), parse_claim("12M")) == ["stored", "unique", "active"]
    # '1K' is 500 to 1,500
    assert claim_matches(_counts(1500, 1500, 1500, 1500), parse_claim("1K")) == ["stored", "unique", "applied", "active"]
    assert claim_matches(_counts(12_600_000, 12_600_000, None, 12_600_000), parse_claim("12M")) == []


def test_the_claim_finding_spells_out_each_difference() -> None:
    """stored 1,000, unique 600, applied 900, active 400, embeddings 100; the claim '1000'
    matches the stored count only. Differences: 1,000 - 600 = 400 copies or unused; 900 - 600 =
    300 applied more than once; 600 - 400 = 200 experts a token skips."""
    found = claim_finding(_counts(1000, 600, 900, 400, embedding=100), parse_claim("1000"))
    assert found is not None and found.evidence["matches"] == ["stored"]
    assert "(stored 1k, unique 600, applied 900, active 400)" in found.message  # human units: 1,000 is 1k
    assert ("The differences: stored - unique = 400 (copies, unused); applied - unique = 300 (weights applied more than "
            "once); unique - active = 200 (experts a token does not run); embeddings 100.") in found.message  # fmt: skip


def test_the_claim_finding_names_only_the_counts_that_differ() -> None:
    # stored 1,000 = unique = active, applied unknown: no applied count, no differences to explain
    found = claim_finding(_counts(1000, 1000, None, 1000), parse_claim("5000"))
    assert found is not None and found.evidence["matches"] == []
    assert found.message == "The stated 5000 parameters matches none of the counts (stored 1k, unique 1k, active 1k)."
    # only the applied count differs: 1,500 - 1,000 = 500
    found = claim_finding(_counts(1000, 1000, 1500, 1000), parse_claim("1.5k"))
    assert found is not None and found.evidence["matches"] == ["applied"]
    assert found.message.endswith("The differences: applied - unique = 500 (weights applied more than once).")
