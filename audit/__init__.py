"""The audit: a predictions table in, an :class:`AuditResult` out (per-group metrics with intervals, disparities,
calibration, embedding clusters, gates), then its files and report.

The package is also the one-call entry point: ``faceaudit.audit(predictions, ...)`` runs :func:`.api.audit`.
"""

from __future__ import annotations

import inspect
import sys
import types

from .api import audit
from .result import AuditResult, load_audit

__all__ = ["AuditResult", "audit", "load_audit"]


class _CallableModule(types.ModuleType):
    """Lets ``faceaudit.audit`` be both this package and the function most users want from it."""

    def __call__(self, *args, **kwargs) -> AuditResult:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(audit)  # help(faceaudit.audit) and IDEs show the function's parameters
