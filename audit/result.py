"""The audit result and its versioned ``audit.json`` form (schema: docs/audit-schema.md).

The result is plain JSON-shaped data (dicts, lists, numbers, strings) so that the report, ``faceaudit compare``
and any outside tool read the same thing; :class:`AuditResult` only adds typed access, versioning and I/O.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write

#: Major.minor: a new major means readers must change; a new minor only adds keys.
SCHEMA_VERSION = "2.0"
AUDIT_FILE = "audit.json"
#: The groupings every audit computes, in report order (intersections are joined with " × ").
GROUPINGS: tuple[tuple[str, ...], ...] = (
    ("race",), ("gender",), ("age_band",),
    ("race", "gender"), ("race", "age_band"), ("gender", "age_band"),
    ("race", "gender", "age_band"),
)
GROUP_SEPARATOR = " × "


def grouping_name(attributes: tuple[str, ...] | list[str]) -> str:
    """``race``, ``race×gender``, ...: the key of a grouping in ``audit.json``."""
    return "×".join(attributes)


def stat(value: float | None, ci: tuple[float, float] | None = None, n: int | None = None, **extra: Any) -> dict:
    """One number with its confidence interval and sample size: ``{"value", "ci", "n"}`` (NaN becomes null)."""
    def clean(x):
        if x is None:
            return None
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else round(x, 6)

    out = {"value": clean(value), "ci": None if ci is None else [clean(ci[0]), clean(ci[1])], "n": None if n is None else int(n)}
    for key, val in extra.items():
        if isinstance(val, (tuple, list)) and len(val) == 2:
            out[key] = [clean(val[0]), clean(val[1])]
        elif isinstance(val, (float, np.floating, np.ndarray)):
            out[key] = clean(val)
        elif isinstance(val, np.integer):
            out[key] = int(val)
        else:
            out[key] = val
    if out["ci"] is not None and None in out["ci"]:
        out["ci"] = None
    return out


@dataclass
class AuditResult:
    """Everything one audit found; each field is one top-level key of ``audit.json``."""

    model: dict
    data: dict
    settings: dict
    classes: list[str]
    overall: dict
    groupings: dict
    calibration: dict | None = None
    embeddings: dict | None = None
    gates: dict | None = None
    files: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION
    faceaudit_version: str = ""
    created_utc: str = ""

    def to_dict(self) -> dict:
        """The JSON-ready dict, ``schema_version`` first."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"schema_version": data.pop("schema_version"), **data}

    def to_json(self, path: Path | None = None) -> str:
        """The ``audit.json`` text; when ``path`` is given it is also written atomically there."""
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False)
        if path is not None:
            atomic_write(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict) -> "AuditResult":
        """Read a parsed ``audit.json``; refuses an unknown major schema version."""
        version = str(data.get("schema_version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise FaceauditError(f"audit.json schema version {version or '(missing)'} is not supported "
                                 f"(this faceaudit reads {SCHEMA_VERSION.split('.')[0]}.x)")
        names = {f.name for f in fields(cls)}
        missing = {"model", "data", "settings", "classes", "overall", "groupings"} - data.keys()
        if missing:
            raise FaceauditError(f"audit.json lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_json(cls, source: str | Path) -> "AuditResult":
        """Read ``audit.json`` from a path, an audit folder, or JSON text."""
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
            path = Path(source)
            if path.is_dir():
                path = path / AUDIT_FILE
            try:
                source = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise FaceauditError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            return cls.from_dict(json.loads(source))
        except json.JSONDecodeError as exc:
            raise FaceauditError(f"audit.json is not valid JSON ({exc.msg} at line {exc.lineno})") from None

    # -- typed access -------------------------------------------------------------------------------------

    def grouping(self, attributes: str | tuple[str, ...]) -> dict:
        """One grouping's table, by key (``"race×gender"``) or attribute tuple."""
        key = attributes if isinstance(attributes, str) else grouping_name(attributes)
        return self.groupings[key]

    def group(self, grouping: str, key: str) -> dict:
        """One group's record (``result.group("race", "Black")``)."""
        for record in self.grouping(grouping)["groups"]:
            if record["key"] == key:
                return record
        raise KeyError(f"no group {key!r} in grouping {grouping!r}")

    @property
    def status(self) -> str:
        """``pass``, ``fail`` or ``inconclusive`` over all gates (``pass`` when there are none)."""
        return (self.gates or {}).get("status", "pass")


def load_audit(path: str | Path) -> AuditResult:
    """The audit in a folder or ``audit.json`` file."""
    return AuditResult.from_json(Path(path))
