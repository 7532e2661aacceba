"""The ``audit`` command: exit codes, output files, GraphML, error messages, the console script."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import networkx as nx
import pytest

from auditor.errors import AuditError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _python_m(*argv: object, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor.cli", *map(str, argv)],
        capture_output=True, text=True, cwd=cwd, timeout=60,
    )  # fmt: skip


# ---- exit codes --------------------------------------------------------------------------------


def test_clean_model_exits_0(rep_cli: Callable[..., Any], rep_clean_model: Any) -> None:
    result = rep_cli(rep_clean_model.path)
    assert result.rc == 0
    assert result.err == ""


@pytest.mark.parametrize(
    ("fail_on", "rc"),
    [(None, 0), ("error", 0), ("warning", 1), ("info", 1), ("never", 0)],
)
def test_fail_on_with_stored_copy(rep_cli: Callable[..., Any], rep_copy_model: Any, fail_on: str | None, rc: int) -> None:
    """The copy model has exactly one finding, AUD101, a warning."""
    argv = [rep_copy_model.path, "--quiet"] + (["--fail-on", fail_on] if fail_on else [])
    result = rep_cli(*argv)
    assert result.rc == rc
    assert result.err == ""


@pytest.mark.parametrize("fail_on", ["info", "warning", "error"])
def test_clean_model_never_fails(rep_cli: Callable[..., Any], rep_clean_model: Any, fail_on: str) -> None:
    assert rep_cli(rep_clean_model.path, "--quiet", "--fail-on", fail_on).rc == 0


def _one_line(err: str) -> str:
    assert err.endswith("\n")
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("audit: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],  # unknown flag
        ["--fail-on", "fatal"],  # bad choice
        ["--near", "abc"],  # bad number
    ],
)
def test_usage_errors_exit_2(rep_cli: Callable[..., Any], rep_clean_model: Any, argv: list[str]) -> None:
    result = rep_cli(rep_clean_model.path, *argv)
    assert result.rc == 2
    assert result.out == ""
    line = _one_line(result.err)
    assert line.endswith("[usage]")
    assert argv[0] in line or argv[-1] in line


def test_no_model_argument_exits_2(rep_cli: Callable[..., Any]) -> None:
    result = rep_cli()
    assert result.rc == 2
    assert "[usage]" in _one_line(result.err)


def test_missing_file_exits_2(rep_cli: Callable[..., Any], tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    result = rep_cli(missing)
    assert result.rc == 2
    assert result.out == ""
    line = _one_line(result.err)
    assert str(missing) in line and line.endswith("[file-not-found]")


def test_not_onnx_exits_2(rep_cli: Callable[..., Any], tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    result = rep_cli(junk)
    assert result.rc == 2
    assert _one_line(result.err).endswith("[not-onnx]")


# ---- output files ------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--json", "--html", "--graphml"])
def test_existing_output_needs_force(rep_cli: Callable[..., Any], rep_clean_model: Any, tmp_path: Path, flag: str) -> None:
    out = tmp_path / "report.out"
    out.write_text("keep me\n", encoding="utf-8")

    refused = rep_cli(rep_clean_model.path, flag, out)
    assert refused.rc == 2
    assert _one_line(refused.err).endswith("[output-exists]")
    assert out.read_text(encoding="utf-8") == "keep me\n"

    forced = rep_cli(rep_clean_model.path, flag, out, "--force", "--quiet")
    assert forced.rc == 0, forced.err
    written = out.read_text(encoding="utf-8")
    assert written != "keep me\n"
    if flag == "--json":
        assert json.loads(written)["counts"]["stored_params"] == 136
    # Written atomically: no temporary file is left beside the report.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.out"]


def test_refused_output_writes_no_other_report(rep_cli: Callable[..., Any], rep_clean_model: Any, tmp_path: Path) -> None:
    """Outputs are checked before any is written: one existing file means none is touched."""
    existing, fresh = tmp_path / "a.html", tmp_path / "b.json"
    existing.write_text("old", encoding="utf-8")
    assert rep_cli(rep_clean_model.path, "--html", existing, "--json", fresh).rc == 2
    assert not fresh.exists()
    assert existing.read_text(encoding="utf-8") == "old"


def test_output_over_model_refused(rep_cli: Callable[..., Any], rep_clean_model: Any) -> None:
    before = rep_clean_model.path.read_bytes()
    result = rep_cli(rep_clean_model.path, "--json", rep_clean_model.path, "--force")
    assert result.rc == 2
    assert _one_line(result.err).endswith("[output-is-input]")
    assert rep_clean_model.path.read_bytes() == before


def test_output_folder_missing(rep_cli: Callable[..., Any], rep_clean_model: Any, tmp_path: Path) -> None:
    result = rep_cli(rep_clean_model.path, "--json", tmp_path / "no" / "such" / "r.json")
    assert result.rc == 2
    assert _one_line(result.err).endswith("[output-dir-missing]")


def test_same_output_twice_refused(rep_cli: Callable[..., Any], rep_clean_model: Any, tmp_path: Path) -> None:
    out = tmp_path / "r.out"
    result = rep_cli(rep_clean_model.path, "--json", out, "--html", out)
    assert result.rc == 2
    assert _one_line(result.err).endswith("[usage]")
    assert not out.exists()


def test_reports_respect_umask(rep_cli: Callable[..., Any], rep_clean_model: Any, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "r.json"
        assert rep_cli(rep_clean_model.path, "--json", out, "--quiet").rc == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_graphml(rep_cli: Callable[..., Any], rep_tied_model: Any, tmp_path: Path) -> None:
    out = tmp_path / "graph.graphml"
    result = rep_cli(rep_tied_model.path, "--graphml", out, "--quiet")
    assert result.rc == 0, result.err

    graph = nx.read_graphml(out)
    want = rep_tied_model.graph
    kinds = Counter(data.get("kind") for _, data in graph.nodes(data=True))
    assert kinds == Counter({k: want[k] for k in ("op", "tensor", "value", "scope")})
    ops = Counter(data["op_type"] for _, data in graph.nodes(data=True) if data.get("kind") == "op")
    assert ops == Counter(want["op_types"])
    edges = Counter(data.get("kind") for *_, data in graph.edges(data=True))
    assert edges == Counter(want["edges"])

    table = graph.nodes["value:E"]
    assert (table["kind"], table["origin"], table["dtype"], table["shape"]) == ("tensor", "initializer", "float32", "100,16")
    assert int(table["numel"]) == 1600 and int(table["nbytes"]) == 6400
    assert graph.nodes["value:E2"]["kind"] == "tensor"
    # Tied weight: E is read by the Gather and by the Transpose that feeds the head.
    readers = {v for _, v, d in graph.out_edges("value:E", data=True) if d["kind"] == "reads"}
    assert readers == {"op:embed", "op:tie"}
    assert graph.nodes["op:head"]["op_type"] == "MatMul"


# ---- --debug -----------------------------------------------------------------------------------


def test_debug_raises_in_process(rep_cli: Callable[..., Any], tmp_path: Path) -> None:
    with pytest.raises(AuditError) as info:
        rep_cli(tmp_path / "nope.onnx", "--debug")
    assert info.value.slug == "file-not-found"


def test_debug_prints_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    plain = _python_m(missing)
    assert plain.returncode == 2
    assert _one_line(plain.stderr).endswith("[file-not-found]")

    debug = _python_m(missing, "--debug")
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "AuditError" in debug.stderr and "[file-not-found]" in debug.stderr


# ---- the installed console script --------------------------------------------------------------


def test_console_script(rep_copy_model: Any, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "audit"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e .)")
    out = tmp_path / "r.json"
    done = subprocess.run(
        [str(script), str(rep_copy_model.path), "--json", str(out), "--fail-on", "warning"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "AUD101" in done.stdout
    assert json.loads(out.read_text(encoding="utf-8"))["counts"]["unique_params"] == 160

    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0
    assert version.stdout.strip().startswith("auditor ")


def test_progress_bar_only_on_a_terminal(rep_copy_model: Any) -> None:
    """Run the real console script with stderr on a pseudo-terminal: a bar is drawn there;
    with --quiet, or with stderr piped, nothing is."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    audit = Path(sys.executable).with_name("audit")

    def run(*extra: str, tty: bool = True) -> str:
        master, slave = pty.openpty()
        # a terminal of 30x100 (a bare pty is 0 columns wide, where tqdm draws nothing)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        proc = subprocess.Popen(
            [str(audit), str(rep_copy_model.path), "--fail-on", "never", *extra],
            stdout=subprocess.DEVNULL,
            stderr=slave if tty else subprocess.PIPE,
        )
        os.close(slave)
        chunks = []
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=60)
        os.close(master)
        if not tty:
            assert proc.stderr is not None and proc.stderr.read() == b""
        return b"".join(chunks).decode("utf-8", "replace")

    shown = run()
    assert "reading tensors" in shown
    # the stages before and after the bar: a big graph takes seconds to walk before a byte is read
    assert "loading the graph and inferring shapes..." in shown and "costing compute and memory..." in shown
    assert "reading tensors" not in run("--quiet")
    run(tty=False)
