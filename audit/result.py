"""The audit result and its versioned ``audit.json`` form (faceaudit/schemas/audit.schema.json, generated from the
types in :mod:`.types`; prose in docs/audit-schema.md).

Settings, the overall and per-group records, their metrics, the gates, calibration and embeddings are typed records
(:mod:`.types`); the model and data blocks stay JSON objects. The result never renders itself: ``report()`` and
the notebook view hand over to the presenter the API layer registers (:mod:`faceaudit.hooks`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from faceaudit import hooks
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write
from faceaudit.seams.versions import check_version
from faceaudit.taxonomy import UTKFACE, LabelSchema

from .types import (
    AUDIT_FILE,
    GROUP_SEPARATOR,
    SCHEMA_VERSION,
    Baseline,
    Calibration,
    Embeddings,
    Gates,
    Group,
    Grouping,
    GroupingKey,
    Settings,
    Stat,
    grouping_name,
    plain,
    stat,
)
from .verdict import Status
from .writer import write_audit

__all__ = ["AUDIT_FILE", "CLASSIFICATION", "GROUP_SEPARATOR", "REGRESSION", "SCHEMA_VERSION", "AuditResult",
           "grouping_name", "load_audit", "stat"]
#: What an audit audited (``task`` in audit.json): a classifier (the default, and every audit before 2.3) or an
#: age regressor (``target="age"``).
CLASSIFICATION, REGRESSION = "classification", "regression"
#: Fields of :class:`AuditResult` that live beside audit.json (CSV tables, predictions.csv), not in it.
_NOT_IN_JSON = ("tables", "predictions", "predictions_sampled", "folder")


@dataclass
class AuditResult:
    """Everything one audit found; each field is one top-level key of ``audit.json``."""

    model: dict
    data: dict
    settings: Settings
    classes: list[str]
    overall: Group
    groupings: dict[str, Grouping]
    label_schema: dict | None = None
    #: ``classification`` or ``regression`` (an age regressor: metrics mae, bias, within5; no classes).
    task: str = CLASSIFICATION
    calibration: Calibration | None = None
    embeddings: Embeddings | None = None
    gates: Gates | None = None
    #: The audit against an earlier one (``baseline=`` / ``--baseline``), or None.
    baseline: Baseline | None = None
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

    def __setattr__(self, name: str, value) -> None:
        # The typed blocks stay typed whoever assigns them (the engine builds JSON-shaped dicts).
        if name in _TYPED and value is not None:
            value = _TYPED[name](value)
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        """The JSON-ready dict, ``schema_version`` and ``status`` first (typed records as plain JSON objects; no
        ``baseline`` key without one)."""
        data = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name not in _NOT_IN_JSON}
        if data["baseline"] is None:
            del data["baseline"]
        return {"schema_version": data.pop("schema_version"), "status": self.status.value, **data}

    def to_json(self, path: Path | None = None) -> str:
        """The ``audit.json`` text; when ``path`` is given it is also written atomically there."""
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False)
        if path is not None:
            atomic_write(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict) -> "AuditResult":
        """Read a parsed ``audit.json``; refuses another major schema version in one line."""
        _check_schema_version(data)
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
        _check_schema_version(data)
        try:
            result = cls.from_dict(data)
        except FaceauditError as exc:
            raise FaceauditError(f"{name}: {exc}") from None
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise FaceauditError(f"{name} is not an audit.json faceaudit can read ({type(exc).__name__}: "
                                 f"{str(exc)[:100]})") from None
        result.folder = folder
        return result

    # -- typed access -------------------------------------------------------------------------------------

    @property
    def taxonomy(self) -> LabelSchema:
        """The label schema the audit followed (UTKFace for audits written before schema 2.1)."""
        return LabelSchema.from_dict(self.label_schema) if self.label_schema else UTKFACE

    def grouping_key(self, grouping: str | Sequence[str] | GroupingKey) -> str:
        """The key of a grouping given as ``"race×gender"``, ``"gender x race"``, ``("race", "gender")`` or a
        :class:`GroupingKey`; ``overall`` stays ``overall``. One FaceauditError naming the audit's groupings
        otherwise."""
        if isinstance(grouping, str) and grouping.strip().lower() in ("overall", "all"):
            return "overall"
        try:
            wanted = GroupingKey.parse(grouping)
        except FaceauditError:
            wanted = None
        for key, record in self.groupings.items():
            if wanted is not None and wanted.same(record.attributes):
                return key
        raise FaceauditError(f"the audit has no grouping {grouping!r}; it has overall, {', '.join(self.groupings)}")

    def grouping(self, attributes: str | Sequence[str]) -> Grouping:
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
            records = ([replace(self.calibration.overall, key="all", values={}, too_small=False)]
                       if key == "overall" else self.calibration.groupings[key])
            stats = [getattr(r, metric) or Stat() for r in records]
        else:
            records = ([replace(self.overall, key="all", values={}, too_small=False)]
                       if key == "overall" else self.groupings[key].groups)
            available = sorted({m for r in records for m in r.metrics})
            if metric != "n" and metric not in available:
                extra = [] if self.is_regression else list(calibration_metrics)
                raise FaceauditError(f"{metric} is not computed for {key} groups; they have: "
                                     f"{', '.join([*available, *extra, 'n'])}")
            stats = [Stat(value=r.n, n=r.n) if metric == "n" else r.metrics[metric] for r in records]
        rows = []
        for record, st in zip(records, stats):
            ci = st.interval or (None, None)
            rows.append({"group": record.key, **(record.values or {}),
                         "n": st.n if st.n is not None else record.n, "value": st.value, "lo": ci[0],
                         "hi": ci[1], "too_small": record.too_small})
        return pd.DataFrame(rows)

    def metrics(self, grouping: str | Sequence[str] = "overall") -> list[str]:
        """The metrics the audit computed for a grouping's groups (a classifier's differ by kind of group; an age
        regressor's are mae, bias and within5)."""
        key = self.grouping_key(grouping)
        records = [self.overall] if key == "overall" else self.groupings[key].groups
        return sorted({m for r in records for m in r.metrics})

    # -- files --------------------------------------------------------------------------------------------

    def write(self, out: str | Path, *, report: bool = False, thumbnails: bool = True,
              keep: Sequence[str | Path] = ()) -> Path:
        """Write the audit folder (audit.json, CSV tables, predictions.csv, gates.xml; with ``report=True`` also
        report.html, report.pdf and summary.md, through the registered presenter), built beside ``out`` and
        swapped in whole; ``keep`` names inputs inside ``out`` (a run folder) that the new folder carries over."""
        from faceaudit.files import carry_inside, replace_folder, replaceable_dir

        if not self.tables or self.predictions is None:
            raise FaceauditError("this result was read from audit.json: its tables are in "
                                 f"{self.folder or 'its folder'}; use .report() to render it again")
        out = replaceable_dir(Path(out), AUDIT_FILE, keep=tuple(Path(k) for k in keep))
        with replace_folder(out) as work:
            carry_inside(keep, out, work)
            write_audit(self, work)
            if report:
                self._presenter().render_folder(work, thumbnails=thumbnails, home=out)
        self.folder = out
        return out

    def report(self, out: str | Path | None = None, *, thumbnails: bool = True) -> Path:
        """Render report.html, report.pdf and summary.md into ``out`` (writing the audit there first), or into the
        folder this result was read from; returns the folder. The same as ``faceaudit.report(result, out)``."""
        return self._presenter().report(self, out, thumbnails=thumbnails)

    def _repr_html_(self) -> str:
        """A notebook summary (the model, overall accuracy, the gates, accuracy by the target's groups), drawn by
        the presenter; plain text without one."""
        if hooks.presenter is None:
            return f"<pre>{escape(repr(self))}</pre>"
        return hooks.presenter.html(self)

    def __repr__(self) -> str:
        """A few lines (model, overall score, gates, folder) from the presenter, not every group's record; one line
        without a presenter. The whole record is ``to_dict()``."""
        if hooks.presenter is not None and hasattr(hooks.presenter, "text"):
            return hooks.presenter.text(self)
        return (f"<AuditResult {self.model.get('name')!r}: {self.task}, {self.overall.n} test images, "
                f"status {self.status}>")

    @staticmethod
    def _presenter():
        if hooks.presenter is None:
            raise FaceauditError("rendering is the report layer's job: call faceaudit.report(result, out)")
        return hooks.presenter

    def group(self, grouping: str, key: str) -> Group:
        """One group's record (``result.group("race", "Black")``)."""
        for record in self.grouping(grouping).groups:
            if record.key == key:
                return record
        raise KeyError(f"no group {key!r} in grouping {grouping!r}")

    @property
    def is_regression(self) -> bool:
        """Whether this is the audit of an age regressor (``task == "regression"``)."""
        return self.task == REGRESSION

    @property
    def status(self) -> Status:
        """``pass``, ``fail`` or ``inconclusive`` over all gates; ``not gated`` when the audit judged no gate (an
        audit nobody gated is not a pass)."""
        if self.gates is None or not self.gates.results:
            return Status.NOT_GATED
        return Status(self.gates.status)

    @property
    def level(self) -> float:
        """The confidence level of every interval of the audit (``settings.ci``)."""
        return self.settings.level


def _check_schema_version(data: dict) -> None:
    """Refuse an audit.json of another major version in one line (the same major, older or newer minor, reads)."""
    major = int(SCHEMA_VERSION.split(".")[0])
    check_version(data.get("schema_version"), SCHEMA_VERSION, "audit.json schema", oldest_major=major)


#: The typed top-level blocks and how a JSON-shaped value becomes each.
_TYPED = {
    "settings": lambda v: Settings.from_dict(v, "settings"),
    "overall": lambda v: Group.from_dict(v, "overall"),
    "groupings": lambda v: {k: Grouping.from_dict(g, f"groupings.{k}") for k, g in v.items()},
    "gates": lambda v: Gates.from_dict(v, "gates"),
    "calibration": lambda v: Calibration.from_dict(v, "calibration"),
    "embeddings": lambda v: Embeddings.from_dict(v, "embeddings"),
    "baseline": lambda v: Baseline.from_dict(v, "baseline"),
}


def load_audit(path: str | Path) -> AuditResult:
    """The audit in a folder or ``audit.json`` file."""
    return AuditResult.from_json(Path(path))
