"""The sample models: every count, shared tensor and stored copy against hand arithmetic.

The expected numbers are written out here from the way ``samples/make_samples.py`` builds
each model (its shapes), independently of the auditor and of ``answers.json``; a separate
test checks that ``answers.json`` (computed by the script) agrees with them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import auditor

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
F32 = 4  # every sample stores float32 weights: bytes = 4 x params


def _layer(H: int, F: int) -> int:
    """One BERT/ALBERT encoder layer, written out by hand."""
    attention = 4 * (H * H + H)  # query, key, value, output: weight H x H + bias H
    layer_norms = 2 * (H + H)  # attention LayerNorm and output LayerNorm: gamma + beta
    ffn = (H * F + F) + (F * H + H)  # intermediate H -> F, output F -> H
    return attention + layer_norms + ffn


def _expected() -> dict[str, dict]:
    """Expected counts for each sample, by construction."""
    out: dict[str, dict] = {}

    # bert_like: V=256 P=16 H=32 F=128, 2 layers with their own weights
    V, P, H, F = 256, 16, 32, 128
    layer = _layer(H, F)
    assert layer == 12704  # 4*(1024+32) + 128 + (4096+128) + (4096+32)
    stored = V * H + P * H + 2 * H + 2 * layer
    assert stored == 34176
    out["bert_like.onnx"] = dict(
        stored=stored, unique=stored, applied=stored, embedding=V * H + P * H, unused=0, shared=set(), duplicates=[]
    )

    # albert_like: V=512 P=32 E=16 H=64 F=128; ONE layer applied by 4 layers; tied MLM decoder;
    # predictions.decoder.bias: an unused identical copy of predictions.bias (V)
    V, P, E, H, F, L = 512, 32, 16, 64, 128, 4
    layer = _layer(H, F)
    assert layer == 33472  # 4*(4096+64) + 256 + (8192+128) + (8192+64)
    embeddings = V * E + P * E  # 8192 + 512
    emb_ln, projection = 2 * E, E * H + H
    head = (H * E + E) + 2 * E + V  # dense H->E, LayerNorm(E), decoder bias
    stored = embeddings + emb_ln + projection + layer + head + V
    assert stored == 45392
    applied = 2 * V * E + P * E + emb_ln + projection + L * layer + head  # the copy: never applied
    assert applied == 153488
    prefix = "encoder.albert_layer"
    layer_tensors = [
        f"{prefix}.attention.{part}.{kind}" for part in ("query", "key", "value", "output") for kind in ("weight", "bias")
    ] + [
        f"{prefix}.attention.LayerNorm.weight", f"{prefix}.attention.LayerNorm.bias",
        f"{prefix}.intermediate.dense.weight", f"{prefix}.intermediate.dense.bias",
        f"{prefix}.output.dense.weight", f"{prefix}.output.dense.bias",
        f"{prefix}.output.LayerNorm.weight", f"{prefix}.output.LayerNorm.bias",
    ]  # fmt: skip
    assert len(layer_tensors) == 16
    out["albert_like.onnx"] = dict(
        stored=stored, unique=stored - V, applied=applied, embedding=embeddings, unused=V,
        shared={(name, L, L) for name in layer_tensors} | {("embeddings.word_embeddings.weight", 2, 2)},
        duplicates=[(("predictions.bias", "predictions.decoder.bias"), V, V * F32)],
    )  # fmt: skip

    # gpt2: V=128 P=16 H=32 F=128, 2 layers; tied head reads wte through Transpose
    V, P, H, F = 128, 16, 32, 128
    block = 2 * H + (H * 3 * H + 3 * H) + (H * H + H) + 2 * H + (H * F + F) + (F * H + H)
    assert block == 12704
    base = V * H + P * H + 2 * block + 2 * H  # wte, wpe, blocks, ln_f
    assert base == 30080
    out["gpt2_tied.onnx"] = dict(
        stored=base, unique=base, applied=base + V * H, embedding=V * H + P * H, unused=0,
        shared={("transformer.wte.weight", 2, 2)}, duplicates=[],
    )  # fmt: skip
    out["gpt2_untied_copy.onnx"] = dict(
        stored=base + V * H, unique=base, applied=base + V * H, embedding=V * H + P * H, unused=0,
        shared=set(), duplicates=[(("transformer.wte.weight", "lm_head.weight"), V * H, V * H * F32)],
    )  # fmt: skip

    # universal_loop: V=64 H=32 F=64; block weights in the main graph, applied by a Loop 6 times
    V, H, F, T = 64, 32, 64, 6
    block = 2 * H + (H * F + F) + (F * H + H)
    assert block == 4256
    names = ["block.LayerNorm.weight", "block.LayerNorm.bias", "block.dense1.weight", "block.dense1.bias",
             "block.dense2.weight", "block.dense2.bias"]  # fmt: skip
    out["universal_loop.onnx"] = dict(
        stored=V * H + block, unique=V * H + block, applied=V * H + T * block, embedding=V * H, unused=0,
        shared={(name, 1, T) for name in names}, duplicates=[],
    )  # fmt: skip

    # small_cnn: conv 3->8 (3x3), conv 8->16 (3x3), fc 256->10
    stored = (8 * 3 * 3 * 3 + 8) + (16 * 8 * 3 * 3 + 16) + (10 * 16 * 4 * 4 + 10)
    assert stored == 3962
    out["small_cnn.onnx"] = dict(
        stored=stored, unique=stored, applied=stored, embedding=0, unused=0, shared=set(), duplicates=[]
    )

    # constants_and_if: D=8 H=16; shared.weight read twice in then_branch, once in else_branch
    D, H = 8, 16
    stored = (D * H + H) + H * H + (H * H + H) + (H * H + H)
    assert stored == 944
    # one forward runs one branch: main D*H + H; then 2*H*H (shared twice) + H*H + H; else H*H + H*H + H
    main, then, other = D * H + H, 2 * H * H + H * H + H, H * H + H * H + H
    out["constants_and_if.onnx"] = dict(
        stored=stored, unique=stored, applied=main + max(then, other), lower=main + min(then, other),
        embedding=0, unused=0, shared={("shared.weight", 3, 2)}, duplicates=[],
    )  # fmt: skip
    return out


EXPECTED = _expected()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_counts(name: str) -> None:
    expected = EXPECTED[name]
    report = auditor.audit(SAMPLES / name)
    counts = report.counts
    assert counts.stored_params == expected["stored"]
    assert counts.stored_bytes == expected["stored"] * F32
    assert counts.unique_params == expected["unique"]
    assert counts.unique_bytes == expected["unique"] * F32
    assert counts.applied_params == expected["applied"]
    # every loop here is static; only an If's lighter branch makes the lower bound smaller
    assert counts.applied_params_lower_bound == expected.get("lower", expected["applied"])
    assert counts.embedding_params == expected["embedding"]
    assert counts.unused_params == expected["unused"]
    assert counts.generated_params == 0  # no weight is made at run time in any sample
    assert {(s.tensor, s.uses, s.applications) for s in report.shared} == expected["shared"]
    assert len(report.shared) == len(expected["shared"])
    assert [(g.tensors, g.wasted_params, g.wasted_bytes) for g in report.duplicates] == expected["duplicates"]
    assert all(g.relation == "identical" for g in report.duplicates)
    assert all(loop.trip_count is not None for loop in report.loops)


def test_sample_findings() -> None:
    codes = {name: {f.code for f in auditor.audit(SAMPLES / name).findings} for name in EXPECTED}
    assert codes["albert_like.onnx"] >= {"AUD101", "AUD102", "AUD103"}  # copy, 3.4x applied/unique, unused
    assert "AUD102" in codes["universal_loop.onnx"]  # 27584 / 6304 = 4.4 applications per parameter
    assert "AUD101" in codes["gpt2_untied_copy.onnx"]
    assert "AUD105" not in set().union(*codes.values())
    assert codes["bert_like.onnx"] == codes["small_cnn.onnx"] == set()
    assert codes["constants_and_if.onnx"] == {"AUD109"}  # the count depends on the branch taken


def test_answers_json_agrees() -> None:
    answers = json.loads((SAMPLES / "answers.json").read_text(encoding="utf-8"))
    assert set(answers) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        got = answers[name]
        assert got["stored_params"] == expected["stored"], name
        assert got["stored_bytes"] == expected["stored"] * F32, name
        assert got["unique_params"] == expected["unique"], name
        assert got["unique_bytes"] == expected["unique"] * F32, name
        assert got["applied_params"] == expected["applied"], name
        assert got["applied_params_lower_bound"] == expected.get("lower", expected["applied"]), name
        assert got["embedding_params"] == expected["embedding"], name
        assert got["unused_params"] == expected["unused"], name
        assert {(s["name"], s["uses"], s["applications"]) for s in got["shared"]} == expected["shared"], name
        assert [
            (tuple(d["tensors"]), d["wasted_params"], d["wasted_bytes"]) for d in got["duplicates"]
        ] == expected["duplicates"], name
        assert all(d["relation"] == "identical" for d in got["duplicates"]), name


def test_answers_md_mentions_the_numbers() -> None:
    text = (SAMPLES / "ANSWERS.md").read_text(encoding="utf-8")
    for name, expected in EXPECTED.items():
        assert f"`{name}`" in text
        section = text.split(f"`{name}`", 1)[1]
        for key in ("stored", "applied"):
            assert str(expected[key]) in section, (name, key)


def test_samples_are_small() -> None:
    for name in EXPECTED:
        assert (SAMPLES / name).stat().st_size < 300_000


def test_make_samples_is_reproducible(tmp_path: Path) -> None:
    script = SAMPLES / "make_samples.py"
    assert not re.search(r"^\s*(import|from)\s+auditor\b", script.read_text(encoding="utf-8"), re.MULTILINE)
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True, timeout=120)
    for name in [*EXPECTED, "answers.json"]:
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
