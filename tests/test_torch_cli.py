"""``audit file.py:factory``, ``--trace-only`` and ``.pt2`` archives from the command line.

The model: an embedding tied to the output head (50 x 8 = 400 parameters, one Parameter) and one
8 -> 8 Linear (72 parameters) applied 3 times. By hand: torch unique 472; applied 400 x 2 (lookup
and head) + 72 x 3 = 1016; at the example input [2, 6] the MACs are 12 tokens x (3 x 64 + 400) = 7104.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

AUDIT = [sys.executable, "-m", "auditor.cli"]

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 8)
            self.block = nn.Linear(8, 8)
            self.head = nn.Linear(8, 50, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            h = self.embed(ids)
            for _ in range(3):
                h = torch.relu(self.block(h))
            return self.head(h)

    def build():
        torch.manual_seed(0)
        return Tied().eval(), (torch.randint(0, 50, (2, 6)),)

    def broken():
        raise RuntimeError("no weights here")
''')


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    path = tmp_path / "tied_model.py"
    path.write_text(FACTORY)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AUDIT, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_factory_is_exported_audited_and_reconciled(factory: Path, tmp_path: Path) -> None:
    out, saved, html = tmp_path / "r.json", tmp_path / "kept.onnx", tmp_path / "r.html"
    done = _run(f"{factory}:build", "--json", str(out), "--html", str(html), "--save-onnx", str(saved), "-q",
                "--fail-on", "warning")  # fmt: skip
    assert done.returncode == 1, done.stderr  # AUD116 (and AUD101) are warnings
    document = json.loads(out.read_text())
    assert document["torch"]["unique_params"] == 472 and document["torch"]["applied_params"] == 1016
    assert document["compute"]["macs"] == 7104
    (tie,) = document["export"]["ties"]
    assert set(tie["names"]) == {"embed.weight", "head.weight"}
    assert tie["outcome"] in ("split per use", "stored more than once") and tie["added_params"] == 400
    assert "AUD116" in [f["code"] for f in document["findings"]]
    assert document["export"]["counts"]["onnx_stored_params"] == 472 + 400
    onnx.checker.check_model(onnx.load(saved))  # --save-onnx kept a valid export
    assert document["torch"]["by_top_module"] == {
        "embed": {"params": 400, "applied_params": 800}, "block": {"params": 72, "applied_params": 216},
    }  # fmt: skip
    page = html.read_text()
    assert 'id="module-tree"' in page and "embed.weight" in page and "called 3 times" not in page
    assert "(3 times)" in page  # the block Linear, called 3 times per forward


def test_trace_only_gives_torch_numbers(factory: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    done = _run(f"{factory}:build", "--trace-only", "--json", str(out), "-q")
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["kind"] == "torch" and document["torch"]["unique_params"] == 472
    assert document["torch"]["applied_params"] == 1016
    assert [t["names"] for t in document["torch"]["ties"]] == [["embed.weight", "head.weight"]]
    assert _run(f"{factory}:build", "--trace-only", "--html", str(tmp_path / "x.html"), "-q").returncode == 2


def test_a_failing_factory_is_one_line(factory: Path) -> None:
    done = _run(f"{factory}:broken", "--trace-only", "-q")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no weights here" in done.stderr


@pytest.mark.slow
def test_pt2_archive_counts_without_unpickling(factory: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(factory.parent))
    try:
        import tied_model  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(factory.parent))
    module, inputs = tied_model.build()
    archive = tmp_path / "tied.pt2"
    torch.export.save(torch.export.export(module, inputs), archive)
    out = tmp_path / "p.json"
    done = _run(str(archive), "--json", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["torch"]["unique_params"] == sum(p.numel() for p in module.parameters()) == 472


@pytest.mark.slow
def test_compare_takes_a_pytorch_model_beside_an_onnx_file(factory: Path, tmp_path: Path) -> None:
    saved, out = tmp_path / "saved.onnx", tmp_path / "c.json"
    assert _run(f"{factory}:build", "--save-onnx", str(saved), "-q").returncode == 0
    # one shape for both: a factory target alone would be costed at its example inputs, a file at the defaults
    done = _run("compare", str(saved), f"{factory}:build", "--input-shape", "ids=2x6", "--json", str(out), "-q")
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    second = document["models"][1]
    assert second["report"]["torch"]["unique_params"] == 472  # exported and reconciled like a single audit
    assert second["ratios"]["stored_params"] == 1.0 and second["ratios"]["macs"] == 1.0 and document["findings"] == []
