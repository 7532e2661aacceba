"""The PyTorch front end (auditor.load.torch_module) and the export reconciliation (auditor.analyses.reconcile).

Small hand-written modules, each with its numbers worked out by hand next to it and checked against
torch's own (``sum(p.numel() for p in module.parameters())``, and the forward-hook count of
tests/zoo.py). Exports run in the child process ``export_onnx`` starts, from a factory file written
to a temporary folder (``FACTORIES``); those taking more than a few seconds are marked slow.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from auditor.analyses.reconcile import DROPPED, KEPT, SPLIT, reconcile  # noqa: E402
from auditor.audit import audit_with_graph  # noqa: E402
from auditor.errors import AuditError  # noqa: E402
from auditor.load.torch_module import (  # noqa: E402
    export_onnx,
    ground_truth,
    is_pt2_archive,
    load_pt2,
    move_into_place,
    resolve_factory,
    trace_target,
    truth_from_dict,
)

import zoo  # noqa: E402  (tests/ is on sys.path: rootdir-relative test modules)

# The factories every export test resolves (written to a file: the export child loads it by path).
# Tied: Embedding(50, 8) = 400, tied to head (Linear 8 -> 50, no bias: the same 400), proj
#   Linear(8, 8) = 64 + 8. unique = 472; applied = embed 400 + proj 72 + head 400 = 872.
# Looped: one Linear(8, 8) (72) applied 4 times: applied = 288, unique = 72.
FACTORIES = '''
import time

import torch


class Tied(torch.nn.Module):
    """An embedding tied to the output head."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.proj = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.proj(self.embed(ids))))


class Branchy(Tied):
    """The tied model with data-dependent control flow: torch.export cannot capture it."""

    def forward(self, ids):
        if ids.sum() > 3:
            return self.head(torch.relu(self.proj(self.embed(ids))))
        return self.head(self.embed(ids))


class Looped(torch.nn.Module):
    """One Linear applied 4 times."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        for _ in range(4):
            x = torch.tanh(self.lin(x))
        return x


def tied():
    torch.manual_seed(0)
    return Tied(), (torch.randint(0, 50, (2, 5)),)


def tied_kwargs():
    torch.manual_seed(0)
    return Tied(), {"ids": torch.randint(0, 50, (2, 5))}


def branchy():
    torch.manual_seed(0)
    return Branchy(), (torch.randint(0, 50, (2, 5)),)


def looped():
    torch.manual_seed(0)
    return Looped()


def raises():
    raise ValueError("no weights here\\nsecond line")


def not_a_module():
    return 42


def bad_inputs():
    return Looped(), "x"


def sleeps():
    time.sleep(120)
    return Looped()
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("factories") / "factories.py"
    path.write_text(FACTORIES)
    return path


def _module(factories: Path, name: str) -> tuple[Any, Any]:
    return resolve_factory(f"{factories}:{name}", input_shapes=[(2, 8)])


class Tied(torch.nn.Module):
    """The tied model, in process."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.proj = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(self.embed(ids))))


def _ids() -> torch.Tensor:
    return torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))


# ---- ground truth ---------------------------------------------------------------------------------


def test_tied_ground_truth_matches_torch() -> None:
    model = Tied()
    truth = ground_truth(model, (_ids(),))
    assert truth.unique_params == sum(p.numel() for p in model.parameters()) == 472
    assert truth.unique_bytes == 472 * 4
    assert truth.storage_params == 472
    assert [g.names for g in truth.ties] == [("embed.weight", "head.weight")]
    assert truth.ties[0].objects == 1 and truth.ties[0].numel == 400
    assert truth.applied_params == 872 == zoo.torch_applied_params(model, {"ids": _ids()})
    assert {p.name: p.applications for p in truth.parameters} == {"embed.weight": 2, "proj.weight": 1, "proj.bias": 1}
    assert truth.repeated_modules == () and truth.uncalled == ()
    assert truth.inputs == ("ids: int64[2, 5]",)
    assert model.training  # the modes are restored after the forward


def test_module_called_in_a_loop(factories: Path) -> None:
    module, inputs = _module(factories, "looped")
    truth = ground_truth(module, inputs)
    assert truth.unique_params == sum(p.numel() for p in module.parameters()) == 72
    assert truth.applied_params == 4 * 72 == zoo.torch_applied_params(module, {"x": inputs[0]})
    (calls,) = truth.repeated_modules
    assert (calls.names, calls.type, calls.calls, calls.params) == (("lin",), "Linear", 4, 72)


class Views(torch.nn.Module):
    """Three 8x8 weights sliced from one 3x8x8 storage (disjoint views), applied in turn."""

    def __init__(self) -> None:
        super().__init__()
        base = torch.randn(3, 8, 8)
        self.a = torch.nn.Parameter(base[0])
        self.b = torch.nn.Parameter(base[1])
        self.c = torch.nn.Parameter(base[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.a @ self.b @ self.c


def test_weights_as_views_of_one_storage() -> None:
    model = Views()
    assert model.a.untyped_storage().data_ptr() == model.c.untyped_storage().data_ptr()
    truth = ground_truth(model, (torch.randn(2, 8),))
    assert truth.unique_params == sum(p.numel() for p in model.parameters()) == 192
    assert truth.ties == ()  # distinct elements: views, not ties
    (shared,) = truth.shared_storages
    assert shared.names == ("a", "b", "c") and shared.covered_bytes == 192 * 4 and shared.overlap_bytes == 0
    assert len({p.storage for p in truth.parameters}) == 1
    assert [p.storage_offset for p in truth.parameters] == [0, 64, 128]
    assert truth.storage_params == 192
    # root parameters, read in the root's forward: applied once per forward
    assert truth.applied_params == 192


def test_overlapping_and_aliased_views() -> None:
    """Rows 0-5 and rows 2-7 of one 8x4 storage (16 bytes x 4 rows overlap), a strided view (the
    transpose of rows 0-3, inside the first), and a second Parameter object over the first's memory."""
    base = torch.randn(8, 4)
    model = torch.nn.Module()
    model.low = torch.nn.Parameter(base[:6])
    model.high = torch.nn.Parameter(base[2:])
    model.turned = torch.nn.Parameter(base[:4].t())
    model.again = torch.nn.Parameter(model.low.data)
    truth = ground_truth(model)
    assert truth.unique_params == sum(p.numel() for p in model.parameters()) == 24 + 24 + 16 + 24
    assert truth.storage_params == 32  # the 8x4 storage, each element once
    (tie,) = truth.ties
    assert tie.names == ("low", "again") and tie.objects == 2 and tie.numel == 24
    (shared,) = truth.shared_storages
    assert shared.names == ("low", "high", "turned")
    assert shared.covered_bytes == 32 * 4 and shared.overlap_bytes == (24 + 24 + 16 - 32) * 4
    assert not truth.forward_ran and truth.applied_params is None


def test_buffers_apart_and_uncalled_parameters() -> None:
    """A float buffer (rotary-like table), an integer buffer (position ids), a non-persistent one; a
    Linear whose weight the root reads functionally without calling it (applied zero times)."""

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.randn(4, 8))
            self.register_buffer("positions", torch.arange(16))
            self.register_buffer("scratch", torch.zeros(3), persistent=False)
            self.used = torch.nn.Linear(8, 8)
            self.borrowed = torch.nn.Linear(8, 8, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(self.used(x), self.borrowed.weight) + self.table.sum()

    model = Model()
    truth = ground_truth(model, (torch.randn(2, 8),))
    assert truth.unique_params == 72 + 64
    assert truth.applied_params == 72  # borrowed.weight: its module is never called
    assert truth.uncalled == ("borrowed.weight",)
    kinds = {b.names[0]: (b.kind, b.persistent, b.numel) for b in truth.buffers}
    assert kinds == {"table": ("float", True, 32), "positions": ("integer", True, 16), "scratch": ("float", False, 3)}
    assert truth.float_buffer_params == 35 and truth.integer_buffer_params == 16


def test_truth_survives_json() -> None:
    truth = ground_truth(Tied(), (_ids(),))
    assert truth_from_dict(json.loads(json.dumps(asdict(truth)))) == truth


# ---- resolving factories --------------------------------------------------------------------------


def test_file_factory_with_its_own_imports(tmp_path: Path) -> None:
    (tmp_path / "helper_layers_for_test.py").write_text("import torch\nWIDTH = 6\n")
    (tmp_path / "model.py").write_text(
        "import torch\nfrom helper_layers_for_test import WIDTH\n\n"
        "def build():\n    return torch.nn.Linear(WIDTH, 2), {'input': torch.ones(1, WIDTH)}\n"
    )
    module, inputs = resolve_factory(f"{tmp_path / 'model.py'}:build")
    assert isinstance(module, torch.nn.Linear) and module.in_features == 6
    assert set(inputs) == {"input"}
    assert str(tmp_path) not in sys.path  # only while the file ran
    assert ground_truth(module, inputs).applied_params == 14


def test_module_factory_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "tiny_models_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "import torch\n\nclass Builders:\n    @staticmethod\n    def small():\n        return torch.nn.Linear(3, 3)\n"
    )
    monkeypatch.chdir(tmp_path)
    module, inputs = resolve_factory("tiny_models_pkg.nets:Builders.small", input_shapes={"input": (2, 3)})
    assert isinstance(module, torch.nn.Linear)
    assert inputs is not None and isinstance(inputs, dict) and inputs["input"].shape == (2, 3)
    assert inputs["input"].dtype == torch.float32


def test_inputs_from_shapes(factories: Path) -> None:
    _, positional = _module(factories, "looped")
    assert isinstance(positional, tuple) and positional[0].shape == (2, 8) and positional[0].dtype == torch.float32
    _, again = _module(factories, "looped")
    assert torch.equal(positional[0], again[0])  # seeded: the same inputs every time
    assert resolve_factory(f"{factories}:looped")[1] is None


@pytest.mark.parametrize(
    ("target", "slug", "words"),
    [
        ("{dir}/missing.py:build", "factory-not-found", "no such file"),
        ("{file}:nowhere", "factory-attribute", "no attribute 'nowhere'"),
        ("{file}:raises", "factory-failed", "ValueError: no weights here"),
        ("{file}:not_a_module", "factory-return", "returned int"),
        ("{file}:bad_inputs", "factory-return", "example inputs of type str"),
        ("{file}", "factory-target", "FILE.py:FACTORY"),
        ("{file}:not-a-name", "factory-target", "not a Python name"),
        ("no_such_package_xyz.models:build", "factory-not-found", "no module named"),
    ],
)
def test_factory_errors_are_one_line(factories: Path, target: str, slug: str, words: str) -> None:
    with pytest.raises(AuditError) as caught:
        resolve_factory(target.format(dir=factories.parent, file=factories))
    assert caught.value.slug == slug
    assert words in caught.value.message
    assert "\n" not in str(caught.value)


# ---- child processes ------------------------------------------------------------------------------


def test_trace_in_a_child_equals_the_truth_here(factories: Path) -> None:
    module, inputs = resolve_factory(f"{factories}:tied")
    assert trace_target(f"{factories}:tied", timeout_s=120) == ground_truth(module, inputs)


def test_factory_error_crosses_the_child(factories: Path, tmp_path: Path) -> None:
    with pytest.raises(AuditError) as caught:
        export_onnx(f"{factories}:raises", tmp_path / "m.onnx", timeout_s=120)
    assert caught.value.slug == "factory-failed" and "no weights here" in caught.value.message
    assert list(tmp_path.iterdir()) == []


def test_hanging_export_is_killed(factories: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(AuditError) as caught:
        export_onnx(f"{factories}:sleeps", tmp_path / "m.onnx", timeout_s=3)
    assert caught.value.slug == "export-timeout"
    assert "did not finish within 3 s" in caught.value.message
    assert time.monotonic() - start < 30
    assert list(tmp_path.iterdir()) == []  # neither the file nor the export's working folder


@pytest.fixture(scope="module")
def tied_exports(factories: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tied model exported by each exporter, audited and reconciled (one export per exporter)."""
    folder = tmp_path_factory.mktemp("tied_exports")
    found = {}
    for exporter in ("dynamo", "torchscript"):
        result = export_onnx(f"{factories}:tied", folder / f"{exporter}.onnx", timeout_s=300, exporter=exporter)
        report, graph = audit_with_graph(result.path)
        found[exporter] = (result, report, reconcile(result.truth, report, graph, result.exporter))
    return found


@pytest.mark.slow
def test_dynamo_export_of_the_tie(tied_exports: dict[str, Any]) -> None:
    """torch 2.13's dynamo exporter lifts the tie as one parameter, but its optimiser folds the
    head's transpose into a second initializer: the Gather reads ``head.weight``, the MatMul a
    transposed copy. Each use gets its own tensor: split per use, 400 params added."""
    result, report, info = tied_exports["dynamo"]
    assert result.exporter == "dynamo" and result.fallback_reason is None and result.dynamic_inputs == ("ids",)
    assert result.truth.unique_params == 472 and result.truth.applied_params == 872
    (tie,) = info.ties
    assert tie.names == ("embed.weight", "head.weight") and tie.outcome == SPLIT
    assert [(h.tensor, h.relation, h.matched_by, h.readers) for h in tie.holders][0] == (
        "head.weight", "identical", "name", 1
    )  # fmt: skip
    assert [(h.relation, h.readers) for h in tie.holders[1:]] == [("transposed", 1)]
    assert tie.message == "split per use: 2 tensors (identical, transposed), one per use"
    # proj.weight is stored only as its transpose, under a new name: found by value
    proj = next(p for p in info.parameters if p.names == ("proj.weight",))
    assert proj.outcome == KEPT and proj.holders[0].relation == "transposed" and proj.holders[0].matched_by == "value"
    assert info.duplicated_by_export and info.duplicated_params == 400 and info.duplicated_bytes == 1600
    assert (info.onnx_stored_params, info.onnx_unique_params, info.torch_unique_params) == (872, 472, 472)
    assert info.added_stored_params == 400 and info.added_unique_params == 0
    assert info.onnx_applied_params == info.torch_applied_params == 872
    assert info.unmatched == () and info.buffer_tensors == ()
    assert report.counts.wasted_params == 400


@pytest.mark.slow
def test_torchscript_export_of_the_tie(tied_exports: dict[str, Any]) -> None:
    """The TorchScript exporter keeps ``embed.weight`` for the Gather and constant-folds the head's
    transpose into ``onnx::MatMul_*``: split per use as well."""
    result, _, info = tied_exports["torchscript"]
    assert result.exporter == "torchscript" and result.fallback_reason is None
    (tie,) = info.ties
    assert tie.outcome == SPLIT
    assert tie.holders[0].tensor == "embed.weight" and tie.holders[0].matched_by == "name"
    assert tie.holders[1].tensor.startswith("onnx::MatMul") and tie.holders[1].relation == "transposed"
    assert info.duplicated_by_export and info.duplicated_params == 400
    assert info.onnx_stored_params - info.torch_unique_params == 400
    assert info.onnx_applied_params == info.torch_applied_params == 872


@pytest.mark.slow
def test_fallback_to_torchscript(factories: Path, tmp_path: Path) -> None:
    """Data-dependent control flow: the dynamo exporter fails and the TorchScript one traces the
    branch the example takes (the ``proj`` branch here: ids sum above 3)."""
    result = export_onnx(f"{factories}:branchy", tmp_path / "m.onnx", timeout_s=300)
    assert result.exporter == "torchscript"
    assert result.fallback_reason is not None and "\n" not in result.fallback_reason
    assert "data-dependent" in result.fallback_reason.lower() or "guard" in result.fallback_reason.lower()
    report, graph = audit_with_graph(result.path)
    info = reconcile(result.truth, report, graph, result.exporter, result.fallback_reason)
    assert info.fallback_reason == result.fallback_reason
    assert {p.names: p.outcome for p in info.parameters}[("proj.weight",)] == KEPT


@pytest.mark.slow
def test_export_of_a_loop_keeps_one_tensor(factories: Path, tmp_path: Path) -> None:
    """The looped Linear, from input shapes (no example inputs): both sides apply it 4 times."""
    result = export_onnx(f"{factories}:looped", tmp_path / "m.onnx", timeout_s=300, input_shapes=[(2, 8)])
    assert result.dynamic_inputs == ()  # float inputs keep their shapes
    report, graph = audit_with_graph(result.path)
    info = reconcile(result.truth, report, graph, result.exporter)
    assert [p.outcome for p in info.parameters] == [KEPT, KEPT]
    assert not info.duplicated_by_export
    assert info.torch_applied_params == info.onnx_applied_params == 288


def test_export_without_inputs_is_refused(factories: Path, tmp_path: Path) -> None:
    with pytest.raises(AuditError) as caught:
        export_onnx(f"{factories}:looped", tmp_path / "m.onnx", timeout_s=120)
    assert caught.value.slug == "factory-inputs"


def test_dropped_parameter_is_reported(factories: Path, tmp_path: Path) -> None:
    """An unused Linear: torch applies it zero times, the export stores nothing of it."""
    (tmp_path / "f.py").write_text(
        "import torch\n\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.used = torch.nn.Linear(4, 4)\n        self.spare = torch.nn.Linear(4, 4)\n\n"
        "    def forward(self, x):\n        return self.used(x)\n\n"
        "def build():\n    torch.manual_seed(0)\n    return M(), (torch.randn(2, 4),)\n"
    )
    result = export_onnx(f"{tmp_path / 'f.py'}:build", tmp_path / "m.onnx", timeout_s=300, exporter="torchscript")
    report, graph = audit_with_graph(result.path)
    info = reconcile(result.truth, report, graph, result.exporter)
    outcomes = {p.names[0]: p.outcome for p in info.parameters}
    assert outcomes == {"used.weight": KEPT, "used.bias": KEPT, "spare.weight": DROPPED, "spare.bias": DROPPED}
    assert info.missing_params == 20 and info.added_stored_params == -20


# ---- .pt2 archives --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tied_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "tied.pt2"
    torch.export.save(torch.export.export(Tied().eval(), (_ids(),)), str(path))
    return path


def test_pt2_counts_without_unpickling(tied_pt2: Path) -> None:
    """torch.export lifts both names of the tie (the embedding's placeholder unused, the head's read
    twice); the archive stores their memory once: one parameter of 400, applied twice."""
    assert is_pt2_archive(tied_pt2)
    truth = load_pt2(tied_pt2)
    assert truth.source == "pt2"
    assert truth.unique_params == 472 and truth.applied_params == 872
    assert [g.names for g in truth.ties] == [("embed.weight", "head.weight")]
    assert {p.names: p.applications for p in truth.parameters} == {
        ("embed.weight", "head.weight"): 2, ("proj.weight",): 1, ("proj.bias",): 1
    }  # fmt: skip


def test_pt2_pickle_path_agrees(tied_pt2: Path) -> None:
    safe, unpickled = load_pt2(tied_pt2), load_pt2(tied_pt2, allow_pickle=True)
    assert (safe.unique_params, safe.applied_params, safe.ties) == (
        unpickled.unique_params, unpickled.applied_params, unpickled.ties
    )  # fmt: skip


class _Marker:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_pt2_hostile_pickle_is_never_loaded(tied_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    hostile = tmp_path / "hostile.pt2"
    with zipfile.ZipFile(tied_pt2) as source, zipfile.ZipFile(hostile, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if "sample_inputs" in entry.filename:
                data = pickle.dumps(_Marker(marker))
            target.writestr(entry, data)
    assert load_pt2(hostile).unique_params == 472
    assert not marker.exists()


def test_pt2_rejects_other_files(tmp_path: Path) -> None:
    state_dict = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, state_dict)  # a zip as well
    assert not is_pt2_archive(state_dict)
    text = tmp_path / "model.pt2"
    text.write_text("not a zip")
    assert not is_pt2_archive(text)
    with pytest.raises(AuditError) as caught:
        load_pt2(text)
    assert caught.value.slug == "not-pt2"
    other = tmp_path / "other.pt2"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("archive/serialized_exported_program.json", "{}")
    with pytest.raises(AuditError) as caught:
        load_pt2(other)
    assert caught.value.slug == "pt2-format" and "pre-2.8" in caught.value.message
    with pytest.raises(AuditError) as caught:
        load_pt2(tmp_path / "absent.pt2")
    assert caught.value.slug == "file-not-found"


@pytest.mark.slow
def test_transformers_gpt2_accounts_for_every_stored_parameter(tmp_path: Path) -> None:
    """GPT-2 from the zoo (``tests/zoo.py:gpt2``, keyword inputs): the tie of wte and lm_head is split
    per use, and every stored ONNX parameter is a torch parameter or one of its copies:
    stored = torch unique + what the export duplicated."""
    result = export_onnx(f"{Path(zoo.__file__)}:gpt2", tmp_path / "gpt2.onnx", timeout_s=300, exporter="dynamo")
    model, inputs = zoo.built("gpt2")
    assert result.truth.unique_params == model.num_parameters()
    assert result.truth.applied_params == zoo.torch_applied_params(model, inputs)
    assert set(result.dynamic_inputs) == {"input_ids", "attention_mask"}
    report, graph = audit_with_graph(result.path)
    info = reconcile(result.truth, report, graph, result.exporter)
    (tie,) = info.ties
    assert tie.names == ("transformer.wte.weight", "lm_head.weight") and tie.outcome == SPLIT
    assert info.unmatched == () and info.missing_params == 0
    assert info.onnx_stored_params == info.torch_unique_params + info.duplicated_params
    assert info.onnx_unique_params == info.torch_unique_params
    assert info.onnx_applied_params == info.torch_applied_params


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_without_folding_keeps_the_tie(factories: Path, tmp_path: Path, exporter: str) -> None:
    """Without constant folding neither exporter stores the head's transpose: one tensor, two readers."""
    result = export_onnx(f"{factories}:tied", tmp_path / "m.onnx", timeout_s=300, exporter=exporter, fold=False)
    report, graph = audit_with_graph(result.path)
    info = reconcile(result.truth, report, graph, result.exporter)
    (tie,) = info.ties
    assert tie.outcome == KEPT and tie.message == "kept as one tensor" and tie.holders[0].readers == 2
    assert not info.duplicated_by_export and info.onnx_stored_params == info.torch_unique_params == 472


def test_external_data_of_an_export_never_replaces_a_file_by_surprise(tmp_path: Path) -> None:
    """An export over 1 GiB writes its weights beside the ONNX file (m.onnx.data). Moving them into
    the destination folder must not replace a file already there, unless --force said so; and a
    refusal moves nothing at all."""
    work, dest_dir = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    dest_dir.mkdir()
    (work / "m.onnx").write_bytes(b"graph")
    (work / "m.onnx.data").write_bytes(b"new weights")
    (dest_dir / "m.onnx.data").write_bytes(b"someone's file")
    with pytest.raises(AuditError) as refused:
        move_into_place(work, dest_dir / "m.onnx", overwrite=False)
    assert refused.value.slug == "output-exists" and "m.onnx.data" in str(refused.value) and "--force" in str(refused.value)
    assert (dest_dir / "m.onnx.data").read_bytes() == b"someone's file" and not (dest_dir / "m.onnx").exists()

    move_into_place(work, dest_dir / "m.onnx", overwrite=True)
    assert (dest_dir / "m.onnx").read_bytes() == b"graph" and (dest_dir / "m.onnx.data").read_bytes() == b"new weights"
    assert not list(work.iterdir())
    # nothing in the way: moved without --force
    (work / "n.onnx").write_bytes(b"graph 2")
    (work / "n.onnx.data").write_bytes(b"weights 2")
    move_into_place(work, dest_dir / "n.onnx", overwrite=False)
    assert (dest_dir / "n.onnx.data").read_bytes() == b"weights 2"
