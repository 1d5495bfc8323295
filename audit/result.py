"""The audit result and its versioned ``audit.json`` form (schema: docs/audit-schema.md).

The result is plain JSON-shaped data (dicts, lists, numbers, strings) so that the report, ``faceaudit compare``
and any outside tool read the same thing; :class:`AuditResult` only adds typed access, versioning and I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write
from faceaudit.taxonomy import UTKFACE, LabelSchema

#: Major.minor: a new major means readers must change; a new minor only adds keys (2.1: ``label_schema``; 2.2:
#: ``settings.engine``, ``data.streamed``, ``files.predictions_sample``; 2.3: ``task``, age regression audits).
SCHEMA_VERSION = "2.3"
#: What an audit audited (``task`` in audit.json): a classifier (the default, and every audit before 2.3) or an
#: age regressor (``target="age"``).
CLASSIFICATION, REGRESSION = "classification", "regression"
AUDIT_FILE = "audit.json"
#: Joins the values of an intersection's group key (``Black × Female``).
GROUP_SEPARATOR = " × "
#: Fields of :class:`AuditResult` that live beside audit.json (CSV tables, predictions.csv), not in it.
_NOT_IN_JSON = ("tables", "predictions", "predictions_sampled", "folder")


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
    label_schema: dict | None = None
    #: ``classification`` or ``regression`` (an age regressor: metrics mae, bias, within5; no classes).
    task: str = CLASSIFICATION
    calibration: dict | None = None
    embeddings: dict | None = None
    gates: dict | None = None
    files: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION
    faceaudit_version: str = ""
    created_utc: str = ""
    #: The per-group tables written as CSV beside audit.json (name -> frame); empty for a result read from JSON.
    tables: dict = field(default_factory=dict, repr=False, compare=False)
    #: The audited predictions table (``PredictionsTable``), when computed in this process.
    predictions: Any = field(default=None, repr=False, compare=False)
    #: Whether ``predictions`` is a sample of the audited rows (a streamed audit), not all of them.
    predictions_sampled: bool = field(default=False, repr=False, compare=False)
    #: The audit folder this result was read from or written to, if any.
    folder: Path | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The JSON-ready dict, ``schema_version`` first."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_IN_JSON}
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
        names = {f.name for f in fields(cls)} - set(_NOT_IN_JSON)
        missing = {"model", "data", "settings", "classes", "overall", "groupings"} - data.keys()
        if missing:
            raise FaceauditError(f"audit.json lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_json(cls, source: str | Path) -> "AuditResult":
        """Read ``audit.json`` from a path, an audit folder, or JSON text."""
        folder = None
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
            path = Path(source)
            if path.is_dir():
                path = path / AUDIT_FILE
            try:
                source = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise FaceauditError(f"cannot read {path}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise FaceauditError(f"{path} is not an audit.json: it is not UTF-8 text (a binary file?)") from None
            folder = path.parent
        name = path if folder is not None else "audit.json"  # the file the user gave, in every error
        try:
            data = json.loads(source)
        except json.JSONDecodeError as exc:
            raise FaceauditError(f"{name} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise FaceauditError(f"{name} is not an audit.json: it holds a JSON {type(data).__name__}, not the object "
                                 f"faceaudit audit writes")
        try:
            result = cls.from_dict(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise FaceauditError(f"{name} is not an audit.json faceaudit can read ({type(exc).__name__}: "
                                 f"{str(exc)[:100]})") from None
        result.folder = folder
        return result

    # -- typed access -------------------------------------------------------------------------------------

    @property
    def taxonomy(self) -> LabelSchema:
        """The label schema the audit followed (UTKFace for audits written before schema 2.1)."""
        return LabelSchema.from_dict(self.label_schema) if self.label_schema else UTKFACE

    def grouping_key(self, grouping: str | Sequence[str]) -> str:
        """The key of a grouping given as ``"race×gender"``, ``"gender x race"`` or ``("race", "gender")``;
        ``overall`` stays ``overall``. One FaceauditError naming the audit's groupings otherwise."""
        parts = ([p.strip() for p in grouping.replace(" x ", "×").replace(",", "×").split("×")]
                 if isinstance(grouping, str) else [str(p) for p in grouping])
        if parts in (["overall"], ["all"]):
            return "overall"
        for key, record in self.groupings.items():
            if set(record["attributes"]) == set(parts) and len(parts) == len(record["attributes"]):
                return key
        raise FaceauditError(f"the audit has no grouping {grouping!r}; it has overall, {', '.join(self.groupings)}")

    def grouping(self, attributes: str | Sequence[str]) -> dict:
        """One grouping's table, by key (``"race×gender"``) or attribute tuple."""
        return self.groupings[self.grouping_key(attributes)]

    def by_group(self, grouping: str | Sequence[str] = "overall", metric: str = "accuracy") -> pd.DataFrame:
        """One metric over the groups of a grouping as a DataFrame: ``group``, the attribute values, ``n``,
        ``value``, ``lo``, ``hi`` (the interval at the audit's level) and ``too_small`` (not ranked, not judged).

        ``metric`` is a classification metric of the grouping (see ``metrics()``), a calibration metric
        (``ece``, ``mce``, ``brier``, ``log_loss``) or ``n``; for an age regressor ``mae``, ``bias``, ``within5``
        or ``n``."""
        import pandas as pd

        key = self.grouping_key(grouping)
        calibration_metrics = ("ece", "mce", "brier", "log_loss")
        if metric in calibration_metrics:
            if self.is_regression:
                raise FaceauditError(f"{metric} is a classifier's calibration metric; an age audit has mae, bias, "
                                     "within5 and n")
            if not self.calibration:
                raise FaceauditError(f"{metric} needs class probabilities; the predictions had labels only")
            records = ([{"key": "all", "values": {}, "too_small": False, **self.calibration["overall"]}]
                       if key == "overall" else self.calibration["groupings"][key])
            stats = [r[metric] for r in records]
        else:
            records = ([{**self.overall, "key": "all", "values": {}, "too_small": False}]
                       if key == "overall" else self.groupings[key]["groups"])
            available = sorted({m for r in records for m in r["metrics"]})
            if metric != "n" and metric not in available:
                extra = [] if self.is_regression else list(calibration_metrics)
                raise FaceauditError(f"{metric} is not computed for {key} groups; they have: "
                                     f"{', '.join([*available, *extra, 'n'])}")
            stats = [{"value": r["n"], "ci": None, "n": r["n"]} if metric == "n" else r["metrics"][metric]
                     for r in records]
        rows = []
        for record, st in zip(records, stats):
            ci = st.get("ci") or [None, None]
            rows.append({"group": record["key"], **record.get("values", {}), "n": st.get("n", record.get("n")),
                         "value": st.get("value"), "lo": ci[0], "hi": ci[1], "too_small": record.get("too_small")})
        return pd.DataFrame(rows)

    def metrics(self, grouping: str | Sequence[str] = "overall") -> list[str]:
        """The metrics the audit computed for a grouping's groups (a classifier's differ by kind of group; an age
        regressor's are mae, bias and within5)."""
        key = self.grouping_key(grouping)
        records = [self.overall] if key == "overall" else self.groupings[key]["groups"]
        return sorted({m for r in records for m in r["metrics"]})

    # -- files --------------------------------------------------------------------------------------------

    def write(self, out: str | Path, *, report: bool = False, thumbnails: bool = True,
              keep: Sequence[str | Path] = ()) -> Path:
        """Write the audit folder (audit.json, CSV tables, predictions.csv, gates.xml; with ``report=True`` also
        report.html, report.pdf and summary.md), built beside ``out`` and swapped in whole; ``keep`` names inputs
        inside ``out`` (a run folder) that the new folder carries over."""
        from faceaudit.files import carry_inside, replace_folder, replaceable_dir

        from .writer import write_audit

        if not self.tables or self.predictions is None:
            raise FaceauditError("this result was read from audit.json: its tables are in "
                                 f"{self.folder or 'its folder'}; use .report() to render it again")
        out = replaceable_dir(Path(out), AUDIT_FILE, keep=tuple(Path(k) for k in keep))
        with replace_folder(out) as work:
            carry_inside(keep, out, work)
            write_audit(self, work)
            if report:
                from .report import render_report

                render_report(work, thumbnails=thumbnails, home=out)
        self.folder = out
        return out

    def report(self, out: str | Path | None = None, *, thumbnails: bool = True) -> Path:
        """Render report.html, report.pdf and summary.md into ``out`` (writing the audit there first), or into the
        folder this result was read from; returns the folder."""
        if out is not None and self.tables:
            return self.write(out, report=True, thumbnails=thumbnails)
        folder = Path(out) if out is not None else self.folder
        if folder is None:
            raise FaceauditError("give the audit folder to render into (result.report('reports/x'))")
        if not (folder / AUDIT_FILE).exists():
            raise FaceauditError(f"{folder} holds no audit.json: a result read back from a file renders only into "
                                 f"its own audit folder{f' ({self.folder})' if self.folder else ''}")
        from .report import render_report

        render_report(folder, thumbnails=thumbnails)
        return folder

    def _repr_html_(self) -> str:
        """A notebook summary: the model, overall accuracy, the gates, and accuracy by the target's groups."""
        from .report.notebook import result_html

        return result_html(self)

    def group(self, grouping: str, key: str) -> dict:
        """One group's record (``result.group("race", "Black")``)."""
        for record in self.grouping(grouping)["groups"]:
            if record["key"] == key:
                return record
        raise KeyError(f"no group {key!r} in grouping {grouping!r}")

    @property
    def is_regression(self) -> bool:
        """Whether this is the audit of an age regressor (``task == "regression"``)."""
        return self.task == REGRESSION

    @property
    def status(self) -> str:
        """``pass``, ``fail`` or ``inconclusive`` over all gates (``pass`` when there are none)."""
        return (self.gates or {}).get("status", "pass")


def load_audit(path: str | Path) -> AuditResult:
    """The audit in a folder or ``audit.json`` file."""
    return AuditResult.from_json(Path(path))
