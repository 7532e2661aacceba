"""JSON renderer: the report model as a versioned document (schema: auditor/report/report.schema.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import Any

from auditor.report.model import Report

SCHEMA_VERSION = 2


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def report_dict(report: Report) -> dict[str, Any]:
    """The JSON document for one report (plain dicts and lists)."""
    counts = report.counts
    return {
        "schema_version": SCHEMA_VERSION,
        "model": _plain(report.model),
        "counts": {
            "stored_params": counts.stored_params,
            "stored_bytes": counts.stored_bytes,
            "unique_params": counts.unique_params,
            "unique_bytes": counts.unique_bytes,
            "applied_params": counts.applied_params,
            "applied_params_lower_bound": counts.applied_params_lower_bound,
            "active_params": counts.active_params,
            "embedding_params": counts.embedding_params,
            "unused_params": counts.unused_params,
            "generated_params": counts.generated_params,
            "initial_value_params": counts.initial_value_params,
            "initial_value_tensors": counts.initial_value_tensors,
            "wasted_params": counts.wasted_params,
            "wasted_bytes": counts.wasted_bytes,
            "parameter_tensors": counts.parameter_tensors,
            "by_dtype": _plain(counts.by_dtype),
        },
        "shared": [
            {"tensor": s.tensor, "params": s.numel, "uses": s.uses, "applications": s.applications,
             "consumers": list(s.consumers)}  # fmt: skip
            for s in report.shared
        ],
        "duplicates": [
            {k: v for k, v in _plain(group).items() if k != "scale" or v is not None} for group in report.duplicates
        ],
        "shareable": _plain(report.shareable),
        "repeated_blocks": _plain(report.repeated_blocks),
        "loops": _plain(report.loops),
        "branches": _plain(report.branches),
        "experts": _plain(report.experts),
        "unknown_roles": _plain(report.unknown_roles),
        "findings": [
            {"code": f.code, "slug": f.slug, "severity": f.severity, "message": f.message, "evidence": _plain(f.evidence)}
            for f in report.findings
        ],
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, allow_nan=False) + "\n"
