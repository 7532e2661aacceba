"""The wheel: it ships the templates and the JSON schema, and an installed copy (not the source
tree) renders reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

REQUIRED_IN_WHEEL = [
    "auditor/__init__.py",
    "auditor/cli.py",
    "auditor/templates/report.html.j2",
    "auditor/templates/style.css",
    "auditor/report/report.schema.json",
]


def _pip(*argv: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )
    assert done.returncode == 0, f"pip {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def rep_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="the packaging test builds with hatchling (pip install '.[test]')")
    out = tmp_path_factory.mktemp("wheel")
    _pip("wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), cwd=out)
    wheels = list(out.glob("auditor-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(rep_wheel: Path) -> None:
    names = set(zipfile.ZipFile(rep_wheel).namelist())
    missing = [name for name in REQUIRED_IN_WHEEL if name not in names]
    assert not missing, f"not in {rep_wheel.name}: {missing}"
    # Templates ship inside the package, not at the top of site-packages.
    assert not any(name.startswith("templates/") for name in names)
    entry_points = zipfile.ZipFile(rep_wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    ).decode()
    assert "audit = auditor.cli:main" in entry_points


_PROBE = textwrap.dedent(
    """
    import json, sys
    from importlib import resources
    import auditor
    from auditor.report.html import templates_dir
    schema = json.loads(resources.files("auditor.report").joinpath("report.schema.json").read_text("utf-8"))
    print(json.dumps({"auditor": auditor.__file__, "templates": str(templates_dir()),
                      "schema_version": schema["properties"]["schema_version"]["const"]}))
    """
)


def test_installed_wheel_renders_reports(rep_wheel: Path, rep_tied_model: Any, rep_schema: dict[str, Any]) -> None:
    import jsonschema

    work = rep_wheel.parent
    site = work / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(rep_wheel), cwd=work)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PYTHONHOME", None)

    def python(*argv: str) -> subprocess.CompletedProcess[str]:
        # cwd is the scratch folder, so the source tree is not importable from there.
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=work, env=env, timeout=60)

    probe = python("-c", _PROBE)
    assert probe.returncode == 0, probe.stderr
    where = json.loads(probe.stdout)
    assert Path(where["auditor"]).resolve().is_relative_to(site.resolve()), where
    assert Path(where["templates"]).resolve() == (site / "auditor" / "templates").resolve(), where
    assert where["schema_version"] == 2

    html, report = work / "installed.html", work / "installed.json"
    done = python("-m", "auditor.cli", str(rep_tied_model.path), "--html", str(html), "--json", str(report), "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    text = html.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<!DOCTYPE html>")
    assert '<tr data-count="stored">' in text and "3,200" in text
    assert 'id="report-data"' in text
    doc = json.loads(report.read_text(encoding="utf-8"))
    jsonschema.validate(doc, rep_schema, cls=jsonschema.Draft202012Validator)
    assert doc["counts"] == rep_tied_model.counts
