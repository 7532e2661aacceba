"""auditor: honest parameter counts, sharing and cost for neural-network models."""

from __future__ import annotations

from auditor._version import __version__
from auditor.audit import analyse, audit
from auditor.errors import AuditError
from auditor.report.model import Report

__all__ = ["AuditError", "Report", "__version__", "analyse", "audit"]
