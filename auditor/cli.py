"""Command line: ``audit MODEL [--html PATH] [--json PATH] [--graphml PATH] ...``.

Exit codes: 0 audited; 1 audited and a finding at or above ``--fail-on``; 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Sequence

from auditor._version import __version__
from auditor.errors import AuditError
from auditor.findings import SEVERITIES, Claim, parse_claim
from auditor.graph import ShapeRequest

if TYPE_CHECKING:
    from auditor.findings import Finding
    from auditor.graph import ModelGraph
    from auditor.report.model import Report

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2 (argparse's own convention)
        raise AuditError("usage", message)


# Every output the CLI can write: option, label, module, function for one report, function for a
# comparison (None: not for comparisons). A new output format is one entry here.
OUTPUTS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("json", "JSON", "auditor.report.json_report", "render_json", "render_comparison_json"),
    ("html", "HTML", "auditor.report.html", "render_html", "render_comparison_html"),
    ("markdown", "Markdown", "auditor.report.markdown", "render_markdown", "render_comparison_markdown"),
    ("sarif", "SARIF", "auditor.report.sarif", "render_sarif", "render_comparison_sarif"),
    ("graphml", "GraphML", "auditor.graph", "graphml_text", None),
)
_OUTPUT_HELP = {
    "json": "write the JSON report (schema_version 2)",
    "html": "write a self-contained HTML report",
    "markdown": "write a Markdown summary (for a pull-request comment)",
    "sarif": "write SARIF 2.1.0 (one rule per finding code) for code-scanning tools",
    "graphml": "write the graph of tensor reuse as GraphML",
}


def _add_common(parser: argparse.ArgumentParser, comparison: bool) -> None:
    for option, _, _, _, for_comparison in OUTPUTS:
        if for_comparison is not None or not comparison:
            parser.add_argument(f"--{option}", metavar="PATH", help=_OUTPUT_HELP[option])
    parser.add_argument("--near", metavar="TOL", type=float, default=None,
                        help="relative distance under which tensors count as near-duplicates (default 0.01)")
    parser.add_argument("--dim", metavar="NAME=VALUE", action="append", default=[],
                        help="bind a symbolic input dimension by name (--dim seq=512 --dim batch=8); "
                        "'batch', 'seq' and 'image' bind every batch, sequence or image-size axis "
                        "(defaults: batch 1, sequence 128, image 224)")
    parser.add_argument("--input-shape", metavar="NAME=AxBxC", action="append", default=[],
                        help="fix the shape of one graph input (--input-shape pixel_values=1x3x224x224)")
    parser.add_argument("--profile", choices=["cpu", "cuda"], default=None,
                        help="also run the model with onnxruntime on random inputs of the bound shapes, in a "
                        "child process, and report measured peak memory and latency")
    parser.add_argument("--profile-runs", metavar="N", type=int, default=10, help="timed runs after 2 warm-up runs (default 10)")
    parser.add_argument("--profile-timeout", metavar="SECONDS", type=float, default=300.0,
                        help="stop measuring after this long (default 300)")
    parser.add_argument("--fail-on", choices=[*SEVERITIES, "never"], default="error",
                        help="exit 1 when a finding has this severity or worse (default: error)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--quiet", "-q", action="store_true", help="no terminal summary, no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"auditor {__version__}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="audit",
        description="Audit an ONNX model: honest parameter counts, sharing, copies, and what it costs to run. "
        "'audit compare A B ...' puts models side by side.",
    )
    parser.add_argument("model", help="an .onnx file, or a checkpoint without a graph: .safetensors (or its "
                        "index.json), a torch state dict (.pt/.pth/.bin, read with weights_only=True: never "
                        "unpickled), GGUF, or a Hugging Face-style folder (config.json + weights)")
    _add_common(parser, comparison=False)
    parser.add_argument("--claim-params", metavar="COUNT", default=None,
                        help="a stated parameter count (12M, 1.3B): say which count it matches (finding AUD114 when "
                        "it is not the unique count)")
    torch_options = parser.add_argument_group(
        "PyTorch models", "MODEL may be file.py:factory or package.module:factory: a function returning an nn.Module "
        "or (module, example_inputs). THIS RUNS THE FACTORY'S CODE (in a child process with a time limit): only "
        "audit code you trust. The model is exported to ONNX (dynamo, else TorchScript) and the export reconciled "
        "with torch's own account of its parameters. A .pt2 archive (torch.export.save) is read from its JSON only.")
    torch_options.add_argument("--save-onnx", metavar="PATH", default=None, help="keep the exported ONNX file at PATH")
    torch_options.add_argument("--trace-only", action="store_true",
                               help="torch's own account only (ties, applications, buffers): no ONNX export")
    torch_options.add_argument("--export-timeout", metavar="SECONDS", type=float, default=600.0,
                               help="stop exporting (or tracing) after this long (default 600)")
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="audit compare",
        description="Audit several models and put them side by side, the first as the baseline: every count, "
        "MACs/FLOPs and memory with its ratio, and a finding where the parameter ratio misleads.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="two or more .onnx files; the first is the baseline")
    _add_common(parser, comparison=True)
    parser.add_argument("--ratio-factor", metavar="F", type=float, default=2.0,
                        help="flag a parameter ratio that differs from the compute or memory ratio by more than "
                        "this factor (default 2)")
    parser.add_argument("--export-timeout", metavar="SECONDS", type=float, default=600.0,
                        help="for a model given as file.py:factory (its code runs, in a child process): stop "
                        "exporting after this long (default 600)")
    return parser


def _requested(args: argparse.Namespace) -> list[tuple[str, str, str, str, str | None, str]]:
    """The outputs asked for: (option, label, module, function, comparison function, path)."""
    return [(*entry, getattr(args, entry[0])) for entry in OUTPUTS if getattr(args, entry[0], None)]


def _check_outputs(args: argparse.Namespace, models: Sequence[str]) -> list[Path]:
    outputs = [Path(entry[-1]) for entry in _requested(args)]
    inputs = {Path(m).resolve() for m in models}
    seen: set[Path] = set()
    for out in outputs:
        resolved = out.resolve()
        if resolved in inputs:
            raise AuditError("output-is-input", f"refusing to write a report over the model itself: {out}")
        if resolved in seen:
            raise AuditError("usage", f"two reports would be written to the same file: {out}")
        seen.add(resolved)
        if out.is_dir():
            raise AuditError("output-is-directory", f"{out} is a folder; give a file name for the report")
        if out.exists() and not args.force:
            raise AuditError("output-exists", f"{out} exists; pass --force to overwrite it")
        if not out.parent.resolve().is_dir():
            raise AuditError("output-dir-missing", f"folder for {out} does not exist")
    return outputs


def _write(path: str, text: str) -> None:
    """Write atomically: a crash never leaves a half-written report over an old one."""
    target = Path(path)
    if target.exists():
        mode = target.stat().st_mode & 0o777  # --force keeps the old file's permissions
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # as open() would create it (mkstemp's 0600 is for secrets)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _size(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1 or value > 1 << 40:
        raise AuditError("usage", f"{option}: '{text}' is not a positive size")
    return value


def _shape_request(args: argparse.Namespace) -> ShapeRequest:
    dims: dict[str, int] = {}
    for item in args.dim:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise AuditError("usage", f"--dim takes NAME=VALUE, got '{item}'")
        dims[name] = _size(value, f"--dim {name}")
    shapes: dict[str, tuple[int, ...]] = {}
    for item in args.input_shape:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise AuditError("usage", f"--input-shape takes NAME=AxBxC, got '{item}'")
        parts = value.replace(",", "x").split("x") if value else []
        shapes[name] = tuple(_size(p, f"--input-shape {name}") for p in parts if p != "")
    return ShapeRequest(dims=dims, input_shapes=shapes)


def _claim(text: str | None) -> Claim | None:
    if text is None:
        return None
    try:
        return parse_claim(text)
    except ValueError as exc:
        raise AuditError("usage", f"--claim-params: {exc}") from None


def run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return run_compare(argv[1:])
    args = build_parser().parse_args(argv)
    _check_common(args)
    request = _shape_request(args)
    claim = _claim(args.claim_params)
    torch_target = not Path(args.model).exists() and ":" in args.model
    outputs = [args.model] + ([args.save_onnx] if args.save_onnx else [])
    _check_outputs(args, outputs)
    if args.save_onnx:
        _check_save_onnx(args)
    if (args.save_onnx or args.trace_only) and not torch_target:
        raise AuditError("usage", "--save-onnx and --trace-only apply to a PyTorch model given as file.py:factory")
    from auditor.load.torch_module import is_pt2_archive

    if args.trace_only or (not torch_target and is_pt2_archive(args.model)):
        return _torch_only(args, request)
    from auditor.audit import audit_torch_target, audit_with_graph  # imported late: keeps `audit --help` fast
    from auditor.progress import progress_bar

    with contextlib.ExitStack() as stack:
        if torch_target:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="auditor-export-")))
            onnx_path = Path(args.save_onnx) if args.save_onnx else folder / "model.onnx"
            if not args.quiet:
                sys.stderr.write(f"exporting {args.model} to ONNX (a child process, at most {args.export_timeout:g} s)...\n")
            with progress_bar(enabled=not args.quiet) as progress:
                report, model = audit_torch_target(args.model, onnx_path, args.export_timeout, near=args.near,
                                                   progress=progress, shapes=request, claim=claim,
                                                   overwrite=bool(args.force))  # fmt: skip
            measured_path = str(onnx_path)
        else:
            with progress_bar(enabled=not args.quiet) as progress:
                report, model = audit_with_graph(args.model, near=args.near, progress=progress, shapes=request, claim=claim)
            measured_path = args.model
        return _finish(args, report, model, measured_path)


def _finish(args: argparse.Namespace, report: Report, model: ModelGraph, measured_path: str) -> int:
    """Measure (with --profile), write the outputs, print the summary, and choose the exit code."""
    profile_error: AuditError | None = None
    if args.profile:
        report, profile_error = _profile(args, measured_path, report, model)
    if not model.has_graph and args.graphml:
        raise AuditError("needs-graph", f"{args.model} is a checkpoint without a graph: there is no GraphML to write")
    _refuse_external_data(args, [model])
    for option, label, module, function, _, path in _requested(args):
        render = getattr(importlib.import_module(module), function)
        _write(path, render(model) if option == "graphml" else render(report))
    if not args.quiet:
        from auditor.report.terminal import render_terminal

        sys.stdout.write(render_terminal(report))
        _say_written(args)
    if profile_error is not None:  # the static figures are written; the measurement is not
        sys.stderr.write(f"audit: error: {profile_error}\n")
        return EXIT_BAD_INPUT
    return _exit_code(args, report.findings)


def _check_save_onnx(args: argparse.Namespace) -> None:
    target = Path(args.save_onnx)
    if target.exists() and not args.force:
        raise AuditError("output-exists", f"{target} exists; pass --force to overwrite it")
    if not target.parent.resolve().is_dir():
        raise AuditError("output-dir-missing", f"folder for {target} does not exist")


def _torch_only(args: argparse.Namespace, request: ShapeRequest) -> int:
    """``--trace-only`` or a .pt2 archive: torch's own account, with no ONNX graph audited."""
    from auditor.load.torch_module import load_pt2, trace_target
    from auditor.report.json_report import render_torch_json

    asked = [entry[0] for entry in _requested(args) if entry[0] != "json"]
    if asked or args.profile:
        raise AuditError("usage", f"only --json is written without an ONNX graph (not --{(asked or ['profile'])[0]})")
    if args.trace_only:
        shapes = dict(request.input_shapes) or None
        truth = trace_target(args.model, timeout_s=args.export_timeout, input_shapes=shapes)
    else:
        truth = load_pt2(args.model)
    if args.json:
        _write(args.json, render_torch_json(truth, args.model))
    if not args.quiet:
        applied = f"{truth.applied_params:,}" if truth.applied_params is not None else "unknown (no forward ran)"
        sys.stdout.write(
            f"{args.model}  (torch {truth.source}: {truth.model_type})\n"
            f"  unique params    {truth.unique_params:,}  (sum of numel over model.parameters())\n"
            f"  applied params   {applied}\n"
            f"  tie groups       {len(truth.ties)}"
            + "".join(f"\n    {' = '.join(t.names)}" for t in truth.ties[:10])
            + f"\n  buffers          {len(truth.buffers)} ({truth.float_buffer_params:,} float, "
            f"{truth.integer_buffer_params:,} integer elements)\n"
            + "".join(f"  called {m.calls} times: {', '.join(m.names)}\n" for m in truth.repeated_modules[:10])
        )
        _say_written(args)
    return EXIT_OK


def run_compare(argv: Sequence[str]) -> int:
    """``audit compare A B [C ...]``: the models side by side, the first as the baseline."""
    args = build_compare_parser().parse_args(argv)
    _check_common(args)
    if len(args.models) < 2:
        raise AuditError("usage", "audit compare needs at least two models")
    if not args.ratio_factor > 1:
        raise AuditError("usage", f"--ratio-factor must be above 1, got {args.ratio_factor:g}")
    request = _shape_request(args)
    _check_outputs(args, args.models)
    from auditor.audit import audit_torch_target, audit_with_graph
    from auditor.comparison import compare
    from auditor.progress import progress_bar

    reports, graphs, errors = [], [], []
    folder = Path(tempfile.mkdtemp(prefix="auditor-export-"))  # exports of factory targets, removed at the end
    try:
        for index, path in enumerate(args.models):
            if not args.quiet:
                sys.stderr.write(f"auditing {path}...\n")
            measured = path
            with progress_bar(enabled=not args.quiet) as progress:
                if not Path(path).exists() and ":" in path:  # a PyTorch model: exported first
                    measured = str(folder / f"model{index}.onnx")
                    report, model = audit_torch_target(path, measured, args.export_timeout, near=args.near,
                                                       progress=progress, shapes=request)  # fmt: skip
                else:
                    report, model = audit_with_graph(path, near=args.near, progress=progress, shapes=request)
            if args.profile:
                report, error = _profile(args, measured, report, model)
                if error is not None:
                    errors.append(error)
            reports.append(report)
            graphs.append(model)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _refuse_external_data(args, graphs)
    comparison = compare(reports, ratio_factor=args.ratio_factor)
    for _, _, module, _, function, path in _requested(args):
        if function is not None:
            _write(path, getattr(importlib.import_module(module), function)(comparison))
    if not args.quiet:
        from auditor.report.terminal import render_comparison_terminal

        sys.stdout.write(render_comparison_terminal(comparison))
        _say_written(args)
    for error in errors:
        sys.stderr.write(f"audit: error: {error}\n")
    if errors:
        return EXIT_BAD_INPUT
    return _exit_code(args, comparison.all_findings)


def _check_common(args: argparse.Namespace) -> None:
    if args.near is not None and not 0 < args.near <= 2:
        raise AuditError("usage", f"--near must be a relative distance in (0, 2], got {args.near}")
    if args.profile_runs < 1:
        raise AuditError("usage", f"--profile-runs must be at least 1, got {args.profile_runs}")
    if not 0 < args.profile_timeout <= 86_400:
        raise AuditError("usage", f"--profile-timeout must be in (0, 86400] seconds, got {args.profile_timeout:g}")
    if not 0 < args.export_timeout <= 86_400:
        raise AuditError("usage", f"--export-timeout must be in (0, 86400] seconds, got {args.export_timeout:g}")


def _refuse_external_data(args: argparse.Namespace, graphs: Sequence[ModelGraph]) -> None:
    weights = {t.external.path for g in graphs for t in g.tensors.values() if t.external is not None}
    for entry in _requested(args):
        if str(Path(entry[-1]).resolve()) in weights:
            raise AuditError("output-is-input", f"refusing to write a report over a model's external data: {entry[-1]}")


def _say_written(args: argparse.Namespace) -> None:
    for _, label, _, _, _, path in _requested(args):
        sys.stdout.write(f"{label} report: {Path(path).resolve()}\n")


def _exit_code(args: argparse.Namespace, findings: Sequence[Finding]) -> int:
    if args.fail_on != "never":
        threshold = SEVERITIES.index(args.fail_on)
        if any(f.rank >= threshold for f in findings):
            return EXIT_FINDINGS
    return EXIT_OK


def _profile(args: argparse.Namespace, path: str, report: Report, model: ModelGraph) -> tuple[Report, AuditError | None]:
    """The report with the measured figures, or unchanged with the error that stopped measuring."""
    import dataclasses

    from auditor.audit import run_inputs
    from auditor.measure import measure

    if not model.has_graph:
        return report, AuditError("needs-graph", f"{path} is a checkpoint without a graph: there is nothing to run")
    try:
        specs = run_inputs(model)
        if not args.quiet:
            sys.stderr.write(f"measuring on {args.profile}: 2 warm-up and {args.profile_runs} timed runs...\n")
        measured = measure(path, specs, device=args.profile, runs=args.profile_runs, warmup=2,
                           timeout_s=args.profile_timeout)  # fmt: skip
    except AuditError as exc:
        return report, exc
    return dataclasses.replace(report, measured=measured), None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``audit`` command."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except AuditError as exc:
        if debug:
            raise
        sys.stderr.write(f"audit: error: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("audit: interrupted\n")
        return 130
    except (OSError, MemoryError) as exc:
        if debug:
            raise
        sys.stderr.write(f"audit: error: {exc}\n")
        return EXIT_BAD_INPUT
    except Exception as exc:  # a malformed file the checks above missed: still one line, never 1
        if debug:
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(
            f"audit: error: could not audit the model ({type(exc).__name__}: {detail}); the file may be "
            "malformed, --debug shows the traceback [audit-failed]\n"
        )
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
