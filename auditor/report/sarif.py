"""SARIF 2.1.0 renderer: the findings as a static-analysis log that code-scanning tools read.

One run whose driver lists every rule of the registry (:data:`auditor.findings.RULES`, in order,
retired ones marked), and one result per finding, located at its model's file and, logically,
at the tensors, nodes or models it is about. It only formats the report model.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from auditor._version import __version__
from auditor.comparison import Comparison
from auditor.findings import RULES, Finding, Rule, Subject
from auditor.report.model import Report

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
# SARIF's levels: "none" | "note" | "warning" | "error"
LEVELS: Mapping[str, str] = {"info": "note", "warning": "warning", "error": "error"}
# SARIF's logical location kinds: a tensor is a variable, a node a function, a model a module.
LOGICAL_KINDS: Mapping[str, str] = {"tensor": "variable", "node": "function", "model": "module"}
RULE_INDEX: Mapping[str, int] = {rule.code: index for index, rule in enumerate(RULES)}


def artifact_uri(path: str) -> str:
    """A model path as SARIF's ``artifactLocation.uri``: an absolute path as a ``file:`` URI, a
    relative one as a relative reference (forward slashes, percent-encoded)."""
    pure = PurePath(path)
    if pure.is_absolute():
        return pure.as_uri()
    return quote(pure.as_posix())


def _plain(value: Any) -> Any:
    """Evidence as JSON values: tuples as lists, numpy scalars as numbers, NaN and infinities as null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rule(rule: Rule) -> dict[str, Any]:
    properties: dict[str, Any] = {"scope": rule.scope}
    if rule.retired:
        properties["retired"] = True
    return {
        "id": rule.code,
        "name": rule.slug,
        "shortDescription": {"text": rule.when},
        "fullDescription": {"text": rule.explanation},
        "help": {"text": rule.action},
        "defaultConfiguration": {"level": LEVELS[rule.severity]},
        "properties": properties,
    }


class _Artifacts:
    """The run's model files, each listed once, and locations pointing at them."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.entries: list[dict[str, Any]] = []

    def add(self, report: Report) -> None:
        path = report.model.path
        if path not in self.index:
            self.index[path] = len(self.entries)
            self.entries.append(
                {"location": {"uri": artifact_uri(path)}, "length": report.model.file_size, "roles": ["analysisTarget"]}
            )

    def location(self, path: str, subjects: Sequence[Subject]) -> dict[str, Any]:
        artifact: dict[str, Any] = {"uri": artifact_uri(path)}
        if path in self.index:
            artifact["index"] = self.index[path]
        location: dict[str, Any] = {"physicalLocation": {"artifactLocation": artifact}}
        if subjects:
            location["logicalLocations"] = [
                {"name": s.name, "kind": LOGICAL_KINDS.get(s.kind, "object")} for s in subjects
            ]
        return location


def _result(finding: Finding, locations: list[dict[str, Any]], related: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "ruleIndex": RULE_INDEX[finding.code],
        "level": LEVELS[finding.severity],
        "message": {"text": finding.message},
        "locations": locations,
        "properties": {"evidence": _plain(finding.evidence)},
    }
    if related:
        result["relatedLocations"] = related
    return result


def _model_result(finding: Finding, report: Report, artifacts: _Artifacts) -> dict[str, Any]:
    """A finding of one model's audit: at the model's file, and at its subjects."""
    return _result(finding, [artifacts.location(report.model.path, finding.subjects)], [])


def _comparison_result(finding: Finding, baseline: str, artifacts: _Artifacts) -> dict[str, Any]:
    """A comparison's finding: at the file of each model it names other than the baseline, the
    baseline's file as a related location (or as the location when it names no other)."""
    models = [s for s in finding.subjects if s.kind == "model"]
    others = [s for s in models if s.name != baseline]
    named_baseline = [s for s in models if s.name == baseline]
    related = []
    if others:
        locations = [artifacts.location(s.name, [s]) for s in others]
        for index, s in enumerate(named_baseline):
            related.append({"id": index, **artifacts.location(s.name, [s]), "message": {"text": "the baseline"}})
    else:
        locations = [artifacts.location(baseline, named_baseline or [Subject("model", baseline)])]
    return _result(finding, locations, related)


def _log(artifacts: _Artifacts, results: list[dict[str, Any]]) -> str:
    driver = {"name": "auditor", "version": __version__, "rules": [_rule(rule) for rule in RULES]}
    run = {"tool": {"driver": driver}, "artifacts": artifacts.entries, "results": results}
    log = {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}
    return json.dumps(log, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_sarif(report: Report) -> str:
    """One model's findings as a SARIF 2.1.0 log."""
    artifacts = _Artifacts()
    artifacts.add(report)
    return _log(artifacts, [_model_result(f, report, artifacts) for f in report.findings])


def render_comparison_sarif(comparison: Comparison) -> str:
    """A comparison's findings, then every model's, as one SARIF 2.1.0 log."""
    artifacts = _Artifacts()
    for column in comparison.models:
        artifacts.add(column.report)
    baseline = comparison.models[0].report.model.path
    results = [_comparison_result(f, baseline, artifacts) for f in comparison.findings]
    results += [_model_result(f, c.report, artifacts) for c in comparison.models for f in c.report.findings]
    return _log(artifacts, results)
