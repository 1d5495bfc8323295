"""The JSON Schema of ``audit.json``, generated from the result's types (:mod:`.types`, :class:`.result.AuditResult`).

The schema ships as ``faceaudit/schemas/audit.schema.json``; its ``version`` is audit.json's ``schema_version``. A
test regenerates it and fails when the shipped file differs, so types, files and schema cannot drift apart.
Regenerate with ``python -m faceaudit.auditing.json_schema``.

A small generator rather than a library: the records are plain dataclasses read by their type hints (no pydantic
models to keep in step), and the few hints they use (records, ``X | None``, ``list``, ``dict[str, X]``, numbers,
text, the verdict enum) map one-to-one onto draft 2020-12 keywords.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import types
import typing
from pathlib import Path
from typing import Any

from .result import _NOT_IN_JSON, CLASSIFICATION, REGRESSION, AuditResult
from .types import (
    BASELINE_METHODS,
    BASELINE_VERDICTS,
    SCHEMA_VERSION,
    Baseline,
    BaselineChange,
    Record,
    Stat,
    _required,
)
from .verdict import Status, Verdict

#: Where the schema ships, inside the ``faceaudit`` package.
SCHEMA_FILE = Path(str(importlib.resources.files("faceaudit") / "schemas" / "audit.schema.json"))
SCHEMA_NAME = "audit.schema.json"

_SCALARS = {float: {"type": "number"}, int: {"type": "integer"}, bool: {"type": "boolean"}, str: {"type": "string"}}
#: Constraints type hints cannot say: (owner, field) -> extra keywords.
_EXTRA = {
    (Stat, "ci"): {"minItems": 2, "maxItems": 2},
    (AuditResult, "schema_version"): {"pattern": rf"^{SCHEMA_VERSION.split('.')[0]}\.[0-9]+$"},
    (AuditResult, "task"): {"enum": [CLASSIFICATION, REGRESSION]},
    (Baseline, "method"): {"enum": list(BASELINE_METHODS)},
    (BaselineChange, "verdict"): {"enum": list(BASELINE_VERDICTS)},
    (BaselineChange, "ci"): {"minItems": 2, "maxItems": 2},
}


def _type(hint, defs: dict) -> dict:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        parts = [_type(a, defs) for a in args if a is not type(None)]
        inner = parts[0] if len(parts) == 1 else {"anyOf": parts}
        return {"anyOf": [inner, {"type": "null"}]} if type(None) in args else inner
    if hint is Any:
        return {}
    if isinstance(hint, type) and issubclass(hint, Verdict):
        return {"type": "string", "enum": [v.value for v in Verdict]}
    if isinstance(hint, type) and issubclass(hint, Record):
        if hint.__name__ not in defs:
            defs[hint.__name__] = {}  # placeholder first: records may refer to each other
            defs[hint.__name__] = _object(hint, defs)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return {"type": "object", **({"additionalProperties": _type(args[1], defs)} if args else {})}
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return {"type": "array", **({"items": _type(args[0], defs)} if args else {})}
    if hint in _SCALARS:
        return dict(_SCALARS[hint])
    raise TypeError(f"no JSON Schema for type hint {hint!r}")


def _description(cls) -> str:
    return " ".join((cls.__doc__ or "").split())


def _object(cls, defs: dict, skip: tuple[str, ...] = ()) -> dict:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("extra", *skip)]
    properties = {}
    for name in names:
        properties[name] = {**_type(hints[name], defs), **_EXTRA.get((cls, name), {})}
    if issubclass(cls, Record):
        required = [n for n in names if n in _required(cls) or n in cls._ALWAYS]
        closed = not cls._OPEN
    else:
        required = [n for n in names if dataclasses.fields(cls)[[f.name for f in dataclasses.fields(cls)].index(n)]
                    .default is dataclasses.MISSING]
        closed = True
    return {"type": "object", "description": _description(cls), "properties": properties, "required": required,
            "additionalProperties": not closed}


def audit_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the audit.json this faceaudit writes."""
    defs: dict = {}
    top = _object(AuditResult, defs, skip=_NOT_IN_JSON)
    # ``status`` is derived from the gates (a property, not a field) but written first, so readers need not re-derive it.
    top["properties"] = {"status": {"type": "string", "enum": [s.value for s in Status],
                                    "description": "the gates' verdict, or 'not gated' when the audit had none"},
                         **top["properties"]}
    required = [*top["required"], "schema_version", "status", "task", "files", "warnings", "faceaudit_version", "created_utc"]
    top["required"] = list(dict.fromkeys(required))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"faceaudit:{SCHEMA_NAME}",
            "title": "faceaudit audit.json", "version": SCHEMA_VERSION, **top,
            "$defs": dict(sorted(defs.items()))}


def schema_text() -> str:
    """The schema as the shipped file holds it."""
    return json.dumps(audit_schema(), indent=1, ensure_ascii=False) + "\n"


def shipped_schema() -> dict:
    """The schema shipped with this faceaudit (faceaudit/schemas/audit.schema.json)."""
    from importlib.resources import files

    return json.loads(files("faceaudit").joinpath("schemas", SCHEMA_NAME).read_text(encoding="utf-8"))


if __name__ == "__main__":
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
