"""auditor: honest parameter counts, sharing and cost for neural-network models."""

from __future__ import annotations

from auditor.audit import analyse, audit
from auditor.errors import AuditError
from auditor.report.model import Report

__all__ = ["AuditError", "Report", "analyse", "audit"]
__version__ = "0.1.0"
