"""The audit: a predictions table in, an :class:`AuditResult` out (per-group metrics with intervals, disparities,
calibration, embedding clusters, gates), then its files and report.

Imported as ``faceaudit.auditing`` (the folder is ``audit/``); the one-call entry point ``faceaudit.audit(...)`` is
:func:`.api.audit`, a plain function.
"""

from __future__ import annotations

from .api import audit
from .result import AuditResult, load_audit

__all__ = ["AuditResult", "audit", "load_audit"]
