"""The typed parts of an audit: one grouping-key type and the nested records of ``audit.json``.

Each record is a dataclass read from and written to JSON by its type hints, so the shipped JSON Schema
(:mod:`.jsonschema`) is generated from the same types. Records also answer dict-style reads (``record["n"]``,
``record.get("ci")``) so that readers written against the JSON shape keep working; new code uses attributes.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from faceaudit.config import DEFAULT_CI, DEFAULT_INCONCLUSIVE, DEFAULT_MIN_GROUP_SIZE, DEFAULT_MIN_TEST_SIZE
from faceaudit.errors import FaceauditError

from .verdict import Verdict

#: Major.minor of ``audit.json``: a new major means readers must change; a new minor only adds keys (2.1:
#: ``label_schema``; 2.2: ``settings.engine``, ``data.streamed``, ``files.predictions_sample``; 2.3: ``task``, age
#: regression audits; 2.4: the format is the shipped JSON Schema, faceaudit/schemas/audit.schema.json; 2.5: ``status``
#: (``not gated`` without gates) and ``baseline``, the audit against an earlier one).
SCHEMA_VERSION = "2.5"
AUDIT_FILE = "audit.json"
#: Joins the attributes of a grouping's name (``race×gender``).
ATTRIBUTE_SEPARATOR = "×"
#: Joins the values of an intersection's group key (``Black × Female``).
GROUP_SEPARATOR = " × "


# -- grouping keys -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupingKey:
    """A grouping: the attributes it crosses (``("race", "gender")``). Its ``name`` keys audit.json
    (``race×gender``), and it joins and splits the keys of its groups (``Black × Female``)."""

    attributes: tuple[str, ...]

    def __post_init__(self):
        if not self.attributes or not all(isinstance(a, str) and a for a in self.attributes):
            raise FaceauditError(f"a grouping names one or more attributes (got {self.attributes!r})")

    @classmethod
    def parse(cls, text: str | Sequence[str] | GroupingKey) -> GroupingKey:
        """From ``race×gender``, ``race x gender``, ``race*gender``, ``race,gender`` or ``("race", "gender")``."""
        if isinstance(text, GroupingKey):
            return text
        if isinstance(text, str):
            parts = [p.strip() for p in text.replace(" x ", "×").replace("*", "×").replace(",", "×").split("×")]
        else:
            parts = [str(p).strip() for p in text]
        if not all(parts):
            raise FaceauditError(f"grouping {text!r} has an empty attribute")
        return cls(tuple(parts))

    @property
    def name(self) -> str:
        return ATTRIBUTE_SEPARATOR.join(self.attributes)

    def __str__(self) -> str:
        return self.name

    def same(self, other: GroupingKey | Sequence[str]) -> bool:
        """Whether both cross the same attributes, in any order (``gender×race`` is ``race×gender``)."""
        attrs = other.attributes if isinstance(other, GroupingKey) else tuple(other)
        return len(attrs) == len(self.attributes) and set(attrs) == set(self.attributes)

    def group_key(self, values: Mapping[str, str] | Sequence[str]) -> str:
        """A group's key from its values (``{"race": "Black", "gender": "Female"}`` -> ``Black × Female``)."""
        if isinstance(values, Mapping):
            values = [str(values[a]) for a in self.attributes]
        return GROUP_SEPARATOR.join(str(v) for v in values)

    def group_values(self, key: str) -> dict[str, str]:
        """A group's values from its key (the inverse of :meth:`group_key`)."""
        parts = key.split(GROUP_SEPARATOR)
        if len(parts) != len(self.attributes):
            raise FaceauditError(f"group {key!r} does not have one value per attribute of {self.name}")
        return dict(zip(self.attributes, parts))


def key_of(values: Mapping[str, str]) -> str:
    """A group's key from its values in grouping order (``{"race": "Black", "gender": "Female"}`` ->
    ``Black × Female``); ``all`` for the whole test set, which has none."""
    return GroupingKey(tuple(values)).group_key(values) if values else "all"


def ordered_grouping(schema, *attributes: str) -> GroupingKey:
    """The grouping by ``attributes`` in the label schema's ``groups`` order (``age_band``, ``race`` ->
    ``race×age_band``), as audit.json keys it."""
    return GroupingKey(tuple(a for a in schema.groups if a in attributes))


def lead_grouping(schema) -> str:
    """The grouping a report and a comparison lead with: the target's when the audit groups by it, else the first."""
    return schema.target if schema.target in schema.groups else schema.groups[0]


def other_groupings(schema) -> list[str]:
    """The single-attribute groupings other than :func:`lead_grouping`, in ``groups`` order."""
    return [g for g in schema.groups if g != lead_grouping(schema)]


def pair_grouping(schema) -> str | None:
    """The lead grouping crossed with the first other one (``race×gender``), or None with a single grouping."""
    others = other_groupings(schema)
    return ordered_grouping(schema, lead_grouping(schema), others[0]).name if others else None


def grouping_name(attributes: Sequence[str]) -> str:
    """``race``, ``race×gender``, ...: the key of a grouping in ``audit.json``."""
    return GroupingKey(tuple(attributes)).name


def stat(value: float | None, ci: tuple[float, float] | None = None, n: int | None = None, **extra: Any) -> dict:
    """One number with its confidence interval and sample size: ``{"value", "ci", "n"}`` (NaN becomes null), the
    JSON shape of :class:`Stat`."""
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


# -- records -----------------------------------------------------------------------------------------------


def _clean(x):
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


class Record(Mapping):
    """Base of every record: JSON in and out by type hints, and dict-style reads for JSON-shaped readers.

    Keys a newer minor version adds are kept (``extra``) and written back; optional fields that are None are left
    out of the JSON unless listed in ``_ALWAYS``."""

    #: Optional fields written even when None (``"ci": null``).
    _ALWAYS: ClassVar[tuple[str, ...]] = ()
    #: Whether the schema allows keys it does not name (records with free-form additions, like a metric's extras).
    _OPEN: ClassVar[bool] = False

    # dict-style reads --------------------------------------------------------------------------------------
    def __getitem__(self, key: str):
        if key in _field_names(type(self)):
            value = getattr(self, key)
            if value is None and key not in self._ALWAYS and key not in _required(type(self)):
                raise KeyError(key)
            return value
        return self.extra[key]

    def __setitem__(self, key: str, value) -> None:
        if key in _field_names(type(self)):
            setattr(self, key, _convert(_hints(type(self))[key], value, key))
        else:
            self.extra[key] = value

    def __iter__(self) -> Iterator[str]:
        for name in _field_names(type(self)):
            if getattr(self, name) is not None or name in self._ALWAYS or name in _required(type(self)):
                yield name
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def setdefault(self, key: str, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    # JSON ----------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping, where: str = ""):
        """Read a parsed JSON object; one FaceauditError naming the path of a missing or mistyped key."""
        if isinstance(data, cls):
            return data
        where = where or cls.__name__
        if not isinstance(data, Mapping):
            raise FaceauditError(f"{where} should be an object, not {type(data).__name__}")
        hints = _hints(cls)
        missing = [n for n in _required(cls) if n not in data]
        if missing:
            raise FaceauditError(f"{where} lacks {', '.join(missing)}")
        values = {n: _convert(hints[n], data[n], f"{where}.{n}") for n in _field_names(cls) if n in data}
        extra = {k: v for k, v in data.items() if k not in hints}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict:
        out = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if value is None and name not in self._ALWAYS and name not in _required(type(self)):
                continue
            out[name] = plain(value)
        out.update({k: plain(v) for k, v in self.extra.items()})
        return out


def _extra_key(key: str, doc: str) -> property:
    """A read-only attribute for one of a record's extra keys (None where it is absent)."""
    return property(lambda self: self.extra.get(key), doc=doc)


@dataclass(eq=False)
class Stat(Record):
    """One estimate: its value, its interval at the audit's level (``ci``: ``[lo, hi]``, or null when none could be
    computed) and the images it rests on. A group's difference from the rest (``vs_rest``) adds its test, the
    Bonferroni-adjusted ``level`` of its interval, the ``family`` of groups compared and its p-values; ECE adds its
    plug-in estimate (``plugin``), MCE its ``bin``: extra keys, written only where computed."""

    value: float | None = None
    ci: list[float] | None = None
    n: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("value", "ci", "n")
    _OPEN: ClassVar[bool] = True

    @property
    def interval(self) -> tuple[float, float] | None:
        """``(lo, hi)`` at the audit's level, or None."""
        return None if not self.ci else (self.ci[0], self.ci[1])

    test = _extra_key("test", "A difference's test (``Welch's t-test``, ``not tested (too small)``, ...), or None.")
    level = _extra_key("level", "A difference's interval level, adjusted (Bonferroni) for its ``family``, or None.")
    family = _extra_key("family", "How many groups a difference from the rest was compared across, or None.")
    p_value = _extra_key("p_value", "A difference's p-value, or None where it was not tested.")
    p_holm = _extra_key("p_holm", "A difference's p-value Holm-adjusted over its family, or None.")

    @property
    def bin_size(self) -> int | None:
        """MCE's bin: how many faces the bin of the maximum holds."""
        return (self.extra.get("bin") or {}).get("n")


@dataclass(eq=False)
class Group(Record):
    """One group of a grouping (or the whole test set, ``overall``): its size and metrics with intervals."""

    n: int
    metrics: dict[str, Stat]
    key: str | None = None
    values: dict[str, str] | None = None
    too_small: bool | None = None
    #: For a group of a ``class`` grouping: the key of the group of the other attributes it sits in.
    context: str | None = None
    per_class: dict[str, dict[str, Any]] | None = None
    confusion: dict[str, Any] | None = None
    #: The group against the rest of the test set (difference with a simultaneous interval).
    vs_rest: dict[str, Stat] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class Disparity(Record):
    """Worst against best group of one metric: the difference, gap and ratio with simultaneous intervals."""

    worst: str | None = None
    best: str | None = None
    n_ranked: int | None = None
    pairs: int | None = None
    too_small: list[str] | None = None
    level: float | None = None
    adjustment: str | None = None
    difference: Stat | None = None
    gap: Stat | None = None
    ratio: Stat | None = None
    omnibus: dict[str, Any] | None = None
    #: How worst and best are picked when not by the value (an age regressor's bias: by its size, |bias|).
    rule: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("worst", "best", "n_ranked", "pairs", "too_small", "level", "adjustment",
                                          "difference", "gap", "ratio", "omnibus")


@dataclass(eq=False)
class Grouping(Record):
    """One grouping's groups (by key), the groups with no test image, and the disparities per metric."""

    attributes: list[str]
    kind: str
    groups: list[Group]
    missing: list[str] = field(default_factory=list)
    disparities: dict[str, Disparity | None] = field(default_factory=dict)
    context: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def grouping_key(self) -> GroupingKey:
        return GroupingKey(tuple(self.attributes))


@dataclass(eq=False)
class Settings(Record):
    """How the audit was computed: resamples, confidence level, seed, minimum sizes, interval methods, engine."""

    ci: float = DEFAULT_CI
    n_boot: int | None = None
    seed: int | None = None
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    min_test_size: int = DEFAULT_MIN_TEST_SIZE
    ece_bins: int | None = None
    knn_k: int | None = None
    within_years: float | None = None
    #: Interval method per metric family (the report's method section quotes them).
    intervals: dict[str, str] = field(default_factory=dict)
    bootstrap: str | None = None
    inconclusive: str = DEFAULT_INCONCLUSIVE
    engine: dict[str, Any] | None = None
    command: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("n_boot", "seed")

    @property
    def level(self) -> float:
        """The confidence level of every interval (``ci``)."""
        return self.ci


@dataclass(eq=False)
class GateGroup(Record):
    """One group's verdict under a ``min``/``max`` gate."""

    key: str
    status: Verdict
    value: Stat | None = None
    too_small: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("value",)


@dataclass(eq=False)
class GateResult(Record):
    """One gate's verdict, the value(s) it rests on and a one-line message."""

    name: str
    metric: str
    grouping: str
    rule: str
    threshold: float
    status: Verdict
    message: str
    value: Stat | None = None
    groups: list[GateGroup] = field(default_factory=list)
    #: For an inconclusive gate: per group, the images a decisive verdict needs (80 % power).
    needs: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("value",)


@dataclass(eq=False)
class Gates(Record):
    """The gates block: each gate's verdict, the counts, the overall status and what inconclusive does."""

    status: Verdict
    results: list[GateResult]
    counts: dict[str, int] = field(default_factory=dict)
    inconclusive_policy: str = DEFAULT_INCONCLUSIVE
    file: str | None = None
    junit: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("file", "junit")

    def count(self, verdict: str) -> int:
        """How many gates ended ``verdict`` (``pass``, ``fail`` or ``inconclusive``; 0 when none did)."""
        return int(self.counts.get(str(verdict), 0))

    def counts_text(self) -> str:
        """``3 passed, 1 failed, 0 inconclusive``."""
        return (f"{self.count(Verdict.PASS)} passed, {self.count(Verdict.FAIL)} failed, "
                f"{self.count(Verdict.INCONCLUSIVE)} inconclusive")


@dataclass(eq=False)
class CalibrationGroup(Record):
    """One group's calibration (the whole test set's, ``overall``, has no key): debiased ECE, MCE (with its
    ``bin``), Brier and log loss with intervals, and the reliability bins."""

    key: str | None = None
    values: dict[str, str] | None = None
    n: int | None = None
    too_small: bool | None = None
    ece: Stat | None = None
    mce: Stat | None = None
    brier: Stat | None = None
    log_loss: Stat | None = None
    reliability: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class TemperatureGroup(Record):
    """One group's calibration before and after temperature scaling, and the change in ECE on paired resamples."""

    key: str | None = None
    n: int | None = None
    too_small: bool | None = None
    before: CalibrationGroup | None = None
    after: CalibrationGroup | None = None
    ece_change: Stat | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class Temperature(Record):
    """Temperature scaling fitted on the validation split (T with its interval) and every group before and after."""

    temperature: float | None = None
    ci: list[float] | None = None
    interval: str | None = None
    fitted_on: str | None = None
    n_fit: int | None = None
    nll_before: float | None = None
    nll_after: float | None = None
    groupings: dict[str, list[TemperatureGroup]] = field(default_factory=dict)
    overall: TemperatureGroup | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class Calibration(Record):
    """The calibration block: how ECE is binned and estimated, every group's calibration, the ECE disparity per
    grouping and temperature scaling (null when there was no validation split)."""

    n_bins: int | None = None
    binning: str | None = None
    ece_estimator: str | None = None
    groupings: dict[str, list[CalibrationGroup]] = field(default_factory=dict)
    disparities: dict[str, dict[str, Disparity | None]] = field(default_factory=dict)
    temperature: Temperature | None = None
    overall: CalibrationGroup | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("temperature",)


@dataclass(eq=False)
class PurityGroup(Record):
    """One group's kNN purity: the share of its faces' nearest neighbours in embedding space with the same label."""

    key: str | None = None
    values: dict[str, str] | None = None
    n: int | None = None
    too_small: bool | None = None
    purity: Stat | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class KnnPurity(Record):
    """kNN purity of the label (``k`` neighbours) over the whole test set and every group."""

    k: int | None = None
    label: str | None = None
    groupings: dict[str, list[PurityGroup]] = field(default_factory=dict)
    overall: Stat | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class Silhouette(Record):
    """How well the label's clusters separate in embedding space (−1 to 1), overall and per class (``by_group``:
    key, n and the ``value`` stat)."""

    label: str | None = None
    overall: Stat | None = None
    by_group: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class Embeddings(Record):
    """The embeddings block: how many faces were embedded, the t-SNE map's file and settings (null when none was
    drawn), the silhouette and the kNN purity."""

    n: int | None = None
    n_total: int | None = None
    dim: int | None = None
    source: str | None = None
    subsampled: bool | None = None
    tsne: dict[str, Any] | None = None
    silhouette: Silhouette | None = None
    knn_purity: KnnPurity | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("tsne",)


#: How a baseline was compared: on the same images (``paired``) or as independent samples (``unpaired``).
BASELINE_METHODS = ("paired", "unpaired")
#: A group's verdict against the baseline (the same words as ``faceaudit diff``'s; ``too small`` groups are shown
#: but not tested).
BASELINE_VERDICTS = ("better", "worse", "no clear change", "too small", "not comparable")


@dataclass(eq=False)
class BaselineChange(Record):
    """One group against the baseline: both accuracies (``old``, ``new``), the change (new − old) with its
    simultaneous interval, the Holm-adjusted p-value and the verdict."""

    grouping: str
    group: str
    verdict: str
    old: Stat | None = None
    new: Stat | None = None
    change: float | None = None
    ci: list[float] | None = None
    p_holm: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("old", "new", "change", "ci", "p_holm")

    @property
    def change_stat(self) -> Stat | None:
        """The change (new − old) with its simultaneous interval, as a Stat; None when it was not computed."""
        return None if self.change is None else Stat(value=self.change, ci=self.ci)


@dataclass(eq=False)
class Baseline(Record):
    """The audit against an earlier one (``--baseline``): the same family of tests as ``faceaudit diff OLD NEW``,
    paired on the same images or unpaired, Holm-adjusted at ``level``; ``better`` and ``worse`` count the groups
    whose change is clear, ``rows`` hold every group."""

    source: str
    model: str
    method: str
    level: float
    family: int
    better: int
    worse: int
    rows: list[BaselineChange] = field(default_factory=list)
    #: Why the comparison is not paired (the test sets differ, a predictions table is missing); empty when paired.
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("rows",)

    @property
    def unclear(self) -> int:
        """Groups tested with no clear change."""
        return sum(r.verdict == "no clear change" for r in self.rows)

    def changed(self, verdict: str) -> list[BaselineChange]:
        """The rows with ``verdict`` (``better`` or ``worse``), largest change first."""
        rows = [r for r in self.rows if r.verdict == verdict]
        return sorted(rows, key=lambda r: -abs(r.change or 0.0))


# -- conversion by type hints ------------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items()
                       if k != "extra" and not k.startswith("_") and k in {f.name for f in dataclasses.fields(cls)}}
    return _HINTS[cls]


def _field_names(cls: type) -> list[str]:
    return list(_hints(cls))


def _required(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.name != "extra"
            and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def _optional(hint) -> tuple[Any, bool]:
    """The type inside ``X | None`` and whether None was allowed."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _convert(hint, value, where: str):
    """A JSON value read as ``hint`` (records built, numbers checked); one FaceauditError naming ``where``."""
    inner, nullable = _optional(hint)
    if value is None:
        if nullable or inner is Any:
            return None
        raise FaceauditError(f"{where} must not be null")
    origin = typing.get_origin(inner)
    if isinstance(inner, type) and issubclass(inner, Record):
        return inner.from_dict(value, where)
    if isinstance(inner, type) and issubclass(inner, Verdict):
        try:
            return Verdict(value)
        except ValueError:
            raise FaceauditError(f"{where} is {value!r}, not one of {', '.join(v.value for v in Verdict)}") from None
    if origin is dict:
        if not isinstance(value, Mapping):
            raise FaceauditError(f"{where} should be an object, not {type(value).__name__}")
        _, item = typing.get_args(inner)
        return {k: _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise FaceauditError(f"{where} should be a list, not {type(value).__name__}")
        (item,) = typing.get_args(inner)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise FaceauditError(f"{where} should be a number, not {type(value).__name__}")
        return value if isinstance(value, int) else float(value)
    if inner is int:
        if isinstance(value, bool) or not float(value).is_integer():
            raise FaceauditError(f"{where} should be a whole number, not {value!r}")
        return int(value)
    if inner is bool:
        if not isinstance(value, (bool,)) and type(value).__name__ != "bool_":
            raise FaceauditError(f"{where} should be true or false, not {value!r}")
        return bool(value)
    if inner is str:
        if not isinstance(value, str):
            raise FaceauditError(f"{where} should be text, not {type(value).__name__}")
        return value
    return value


def plain(value):
    """Records, lists and dicts as JSON-ready values (NaN and infinities become null)."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Verdict):
        return value.value
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return _clean(value)
    if type(value).__name__.startswith(("int", "uint")) and not isinstance(value, bool) and hasattr(value, "item"):
        return int(value)
    if type(value).__name__ == "bool_":
        return bool(value)
    return value
