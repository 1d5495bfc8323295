"""Label schemas: which attribute a classifier predicts, its classes, and the attributes its audit groups by.

A :class:`LabelSchema` is data, not code: the engine, gates, reports, training and the predictions table read the
target, the classes and the groupings from it. Presets cover UTKFace (the default), FairFace's 7 and 4 races;
:meth:`LabelSchema.infer` derives one from a predictions table when none is given.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from faceaudit.errors import FaceauditError

if TYPE_CHECKING:  # numpy and pandas load where tables are read, not when the CLI builds its options
    import numpy as np
    import pandas as pd

#: Youngest and oldest age a label may carry (UTKFace's range; FairFace's bins fall inside it).
AGE_MIN, AGE_MAX = 0, 116
#: Default age bands: finer where faces change fastest (children), then decades, 70+ pooled because UTKFace
#: has few older faces per race. They are also FairFace's own age bins (its ``more than 70`` is ``70+``).
DEFAULT_AGE_BANDS = "0-2,3-9,10-19,20-29,30-39,40-49,50-59,60-69,70+"
#: The seed repo's decades.
DECADE_AGE_BANDS = "0-9,10-19,20-29,30-39,40-49,50-59,60-69,70-79,80-89,90-99,100-109,110-116"
AGE_BAND_PRESETS = {"default": DEFAULT_AGE_BANDS, "decades": DECADE_AGE_BANDS}
#: The derived attribute that age bands define.
AGE_BAND = "age_band"
#: The regression target: age in years (``--target age``); its model predicts a number, not a class.
AGE_TARGET = "age"


def _number(text: str) -> float | None:
    """The number a label spells (``"5"``, ``"5.0"``), or None."""
    try:
        return float(text) if re.fullmatch(r"-?\d+(\.\d+)?", text.strip()) else None
    except ValueError:
        return None


def _display(name: str) -> str:
    return name.replace("_", " ")


@dataclass(frozen=True)
class Attribute:
    """One labelled attribute of a face: its values in code order and other spellings read as each value."""

    name: str
    values: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()
    ordered: bool = False

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(str(v) for v in self.values))
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.name):
            raise FaceauditError(f"attribute name {self.name!r} must be a word (letters, digits, underscores)")
        if len(self.values) < 1 or len(set(self.values)) != len(self.values):
            raise FaceauditError(f"attribute {self.name!r} needs distinct values, got {list(self.values)}")

    @property
    def label(self) -> str:
        """How reports name the attribute (``age band``)."""
        return _display(self.name)

    def normalise(self, value: object) -> str:
        """A value from its name in any case (numbers compared by value: ``5.0`` is ``5``), an alias, or, when no
        value is itself a number, its code 0..n-1; one FaceauditError otherwise."""
        text = str(value).strip()
        lowered = text.lower()
        for name in self.values:
            if lowered == name.lower() or (_number(text) is not None and _number(text) == _number(name)):
                return name
        aliases = dict(self.aliases)
        if lowered in aliases:
            return aliases[lowered]
        numeric_values = any(_number(v) is not None for v in self.values)
        if not numeric_values and re.fullmatch(r"\d+(\.0)?", text) and int(float(text)) < len(self.values):
            return self.values[int(float(text))]
        from faceaudit.console import shown

        codes = "" if numeric_values else f" or codes 0-{len(self.values) - 1}"
        raise FaceauditError(f"unknown {self.label} label {shown(value)}; expected one of {', '.join(self.values)}"
                             f"{codes}")

    def categorical(self, series: pd.Series, column: str | None = None) -> pd.Categorical:
        """The column as a categorical over :attr:`values`, each distinct value normalised once (fast on a million
        rows); a missing or unknown value is one FaceauditError naming the column and row."""
        import numpy as np
        import pandas as pd

        column = column or self.name
        missing = series.isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise FaceauditError(f"column {column!r} has a missing value (row {row + 2} of the file)")
        try:
            mapping = {value: self.normalise(value) for value in pd.unique(series)}
        except FaceauditError as exc:
            raise FaceauditError(f"column {column!r}: {exc}") from None
        return pd.Categorical(series.map(mapping), categories=list(self.values), ordered=self.ordered)

    def to_dict(self) -> dict:
        return {"name": self.name, "values": list(self.values), "aliases": dict(self.aliases), "ordered": self.ordered}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Attribute":
        return cls(str(data["name"]), tuple(data["values"]), tuple((data.get("aliases") or {}).items()),
                   bool(data.get("ordered", False)))


@dataclass(frozen=True)
class AgeBands:
    """Contiguous age bands such as ``0-2,3-9,...,70+``, covering every age from 0 to 116."""

    lows: tuple[int, ...]
    labels: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str = DEFAULT_AGE_BANDS) -> "AgeBands":
        """Read a spec (``"0-2,3-9,70+"``) or a preset name (``default``, ``decades``)."""
        if isinstance(spec, AgeBands):
            return spec
        spec = AGE_BAND_PRESETS.get(str(spec).strip(), str(spec))
        lows, highs, labels = [], [], []
        for part in (p.strip() for p in spec.split(",")):
            bounded = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            open_ended = re.fullmatch(r"(\d+)\s*\+", part)
            if bounded:
                low, high = int(bounded[1]), int(bounded[2])
            elif open_ended:
                low, high = int(open_ended[1]), AGE_MAX
            else:
                raise FaceauditError(f"age band {part!r} is not of the form 10-19 or 70+")
            if high < low:
                raise FaceauditError(f"age band {part!r} ends before it starts")
            lows.append(low)
            highs.append(high)
            labels.append(part.replace(" ", ""))
        if lows[0] != AGE_MIN or highs[-1] != AGE_MAX:
            raise FaceauditError(f"age bands must cover {AGE_MIN}-{AGE_MAX}; {spec!r} covers {lows[0]}-{highs[-1]}")
        for (end, label), start in zip(zip(highs, labels), lows[1:]):
            if start != end + 1:
                raise FaceauditError(f"age bands must be contiguous: a gap or overlap follows {label!r}")
        return cls(tuple(lows), tuple(labels))

    def assign(self, ages: pd.Series | np.ndarray) -> pd.Categorical:
        """The band label of each age, as an ordered categorical."""
        import numpy as np
        import pandas as pd

        ages = np.asarray(ages, dtype=float)
        codes = np.searchsorted(np.asarray(self.lows), ages, side="right") - 1
        codes = np.where(np.isnan(ages) | (ages < AGE_MIN) | (ages > AGE_MAX), -1, codes)
        return pd.Categorical.from_codes(codes, categories=list(self.labels), ordered=True)

    def normalise_label(self, value: object) -> str | None:
        """A band label as written by a dataset (``20 - 29``, FairFace's ``more than 70``) mapped onto these bands;
        None when it names no band here."""
        text = re.sub(r"\s+", "", str(value).strip().lower())
        more = re.fullmatch(r"(?:morethan|over|above)(\d+)", text)
        if more:
            text = f"{more[1]}+"
        return text if text in self.labels else None

    def attribute(self) -> Attribute:
        """The age band as an ordered attribute (for grouping, or as a classifier's target)."""
        return Attribute(AGE_BAND, self.labels, ordered=True)

    def __str__(self) -> str:
        return ",".join(self.labels)


_GENDER = Attribute("gender", ("Male", "Female"),
                    (("f", "Female"), ("female", "Female"), ("m", "Male"), ("man", "Male"), ("woman", "Female")))


def _refuse_case_twins(classes: Sequence[str]) -> None:
    """Refuse probability columns whose classes differ only in case or surrounding spaces (``prob_White`` and
    ``prob_WHITE``): labels match case-insensitively, so they would be one class counted twice."""
    seen: dict[str, str] = {}
    for name in classes:
        key = str(name).strip().casefold()
        if key in seen:
            raise FaceauditError(f"columns prob_{seen[key]} and prob_{name} name the same class (labels match "
                                 f"ignoring case); keep one of them")
        seen[key] = str(name)


@dataclass(frozen=True)
class LabelSchema:
    """A face-attribute taxonomy: the attribute a classifier predicts (``target``), the labelled attributes with
    their values, the age bands, and the attributes an audit groups by (``groups``; ``age_band`` is derived from
    age). Every grouping is a non-empty combination of ``groups``, single attributes first. ``target="age"`` is a
    regression (a model predicting age in years): it has no classes (:attr:`regression`)."""

    name: str
    target: str
    attributes: tuple[Attribute, ...]
    age_bands: AgeBands = field(default_factory=AgeBands.parse)
    groups: tuple[str, ...] = ()

    def __post_init__(self):
        names = [a.name for a in self.attributes]
        if AGE_BAND in names or len(set(names)) != len(names):
            raise FaceauditError(f"label schema {self.name!r}: attribute names must be distinct and not {AGE_BAND!r}")
        groups = tuple(self.groups) or (*names, AGE_BAND)
        object.__setattr__(self, "groups", groups)
        known = (*names, AGE_BAND)
        for name in (*(() if self.regression else (self.target,)), *groups):
            if name not in known:
                targets = "" if name in groups else f" (or {AGE_TARGET}, a regression in years)"
                raise FaceauditError(f"label schema {self.name!r} has no attribute {name!r}; it has "
                                     f"{', '.join(known)}{targets}")
        if len(set(groups)) != len(groups):
            raise FaceauditError(f"groups {list(groups)} name an attribute twice")
        if not self.regression and len(self.classes) < 2:
            raise FaceauditError(f"the target {self.target!r} needs at least two classes, got {list(self.classes)}")

    # -- what the audit reads -------------------------------------------------------------------------------

    def attribute(self, name: str) -> Attribute:
        """One attribute by name (``age_band`` from the age bands)."""
        if name == AGE_BAND:
            return self.age_bands.attribute()
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise FaceauditError(f"label schema {self.name!r} has no attribute {name!r}")

    @property
    def regression(self) -> bool:
        """Whether the target is age in years (a regression: no classes, errors in years instead of accuracy)."""
        return self.target == AGE_TARGET

    @property
    def classes(self) -> tuple[str, ...]:
        """The target's classes, in the order of a model's output units and of the probability columns (none for
        a regression target)."""
        return () if self.regression else self.attribute(self.target).values

    @property
    def labelled(self) -> tuple[str, ...]:
        """Every attribute a row carries: the labelled ones and the age band."""
        return (*(a.name for a in self.attributes), AGE_BAND)

    @property
    def groupings(self) -> tuple[tuple[str, ...], ...]:
        """Every combination of the grouping attributes, by size, in ``groups`` order."""
        return tuple(combo for size in range(1, len(self.groups) + 1)
                     for combo in itertools.combinations(self.groups, size))

    @property
    def prob_columns(self) -> tuple[str, ...]:
        """``prob_<class>`` for every class, in class order."""
        return tuple(f"prob_{c}" for c in self.classes)

    @property
    def pred_column(self) -> str:
        """The predicted label's column: ``pred_<target>`` (``pred_race``)."""
        return f"pred_{self.target}"

    def label(self, name: str) -> str:
        """How reports name an attribute or a grouping key (``race×age_band`` -> ``race × age band``)."""
        return " × ".join(_display(part) for part in name.split("×"))

    # -- variants -----------------------------------------------------------------------------------------

    def with_options(self, *, target: str | None = None, groups: Sequence[str] | None = None,
                     age_bands: AgeBands | str | None = None) -> "LabelSchema":
        """The same taxonomy auditing another target (``"age"``: a regression), grouping by other attributes, or
        with other age bands."""
        bands = self.age_bands if age_bands is None else AgeBands.parse(age_bands)
        return replace(self, target=target or self.target, age_bands=bands,
                       groups=tuple(groups) if groups is not None else self.groups)

    def with_classes(self, classes: Sequence[str]) -> "LabelSchema":
        """The schema with the target's classes replaced (a model trained on another set of classes)."""
        if self.target == AGE_BAND:
            raise FaceauditError("an age-band target takes its classes from --age-bands")
        if self.regression:
            raise FaceauditError("an age target is a regression in years: it has no classes")
        attributes = tuple(Attribute(a.name, tuple(classes)) if a.name == self.target else a for a in self.attributes)
        return replace(self, name=f"{self.name} (classes from the predictions)", attributes=attributes)

    # -- I/O ----------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON form recorded in ``audit.json`` and ``run.json``."""
        return {"name": self.name, "target": self.target, "classes": list(self.classes),
                "attributes": [a.to_dict() for a in self.attributes], "age_bands": str(self.age_bands),
                "groups": list(self.groups)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "LabelSchema":
        return cls(str(data["name"]), str(data["target"]), tuple(Attribute.from_dict(a) for a in data["attributes"]),
                   AgeBands.parse(data.get("age_bands") or DEFAULT_AGE_BANDS), tuple(data.get("groups") or ()))

    # -- inference from a table -------------------------------------------------------------------------

    @classmethod
    def infer(cls, frame: pd.DataFrame, *, target: str = "race", groups: Sequence[str] | None = None,
              base: "LabelSchema | None" = None) -> "LabelSchema":
        """A schema for a predictions table: ``base`` (UTKFace by default) where its values fit the table; the
        target's classes from the ``prob_*`` columns (else the labels seen); other attributes from their columns."""
        base = base or UTKFACE
        attributes = list(base.attributes)
        names = [a.name for a in attributes]
        wanted = list(groups) if groups is not None else None
        inferred = set()
        for name in dict.fromkeys([target, *(wanted or [])]):
            if name not in (AGE_BAND, AGE_TARGET) and name not in names and name in frame.columns:
                attributes.append(Attribute(name, _observed(frame[name])))
                names.append(name)
                inferred.add(name)
        schema = replace(base, attributes=tuple(attributes))
        probs = [str(c)[len("prob_"):] for c in frame.columns if str(c).startswith("prob_")]
        _refuse_case_twins(probs)
        if target != AGE_BAND and target in names:
            current = schema.attribute(target)
            if probs:
                # A preset keeps its class order (columns are matched by name); new classes keep the columns' order.
                if set(probs) != set(current.values) or len(probs) != len(current.values) or target in inferred:
                    schema = replace(schema, target=target).with_classes(probs)
            elif target in frame.columns:
                import pandas as pd

                seen = _observed(pd.concat([frame[target], frame.get(f"pred_{target}", frame[target])]))
                if not _fits(current, seen):
                    schema = replace(schema, target=target).with_classes(seen)
        for attribute in list(schema.attributes):
            if attribute.name != target and attribute.name in frame.columns and not _fits(attribute, _observed(frame[attribute.name])):
                inferred = Attribute(attribute.name, _observed(frame[attribute.name]))
                schema = replace(schema, attributes=tuple(inferred if a.name == attribute.name else a for a in schema.attributes))
        present = [a.name for a in schema.attributes if a.name in frame.columns]
        if "age" in frame.columns or AGE_BAND in frame.columns:
            present.append(AGE_BAND)
        if wanted is None:
            wanted = [g for g in base.groups if g in present] or present
        missing = [g for g in wanted if g not in present]
        if missing:
            need = {AGE_BAND: "age or age_band"}
            raise FaceauditError(f"lacks column(s) to group by: "
                                 f"{', '.join(need.get(m, m) for m in missing)}")
        return replace(schema, target=target, groups=tuple(wanted))


def _observed(series: pd.Series) -> tuple[str, ...]:
    """The distinct non-missing values of a column as text, sorted (numbers numerically)."""
    import pandas as pd

    values = pd.unique(series.dropna().astype(str).str.strip())
    return tuple(sorted(values, key=lambda v: (0, float(v), v) if re.fullmatch(r"-?\d+(\.\d+)?", v) else (1, 0, v)))


def _fits(attribute: Attribute, values: Iterable[str]) -> bool:
    """Whether every value reads as one of the attribute's (by name, alias or code)."""
    try:
        for value in values:
            attribute.normalise(value)
    except FaceauditError:
        return False
    return True


#: UTKFace: five races in the file-name codes' order 0-4, binary gender, age 0-116. The default.
UTKFACE = LabelSchema(
    "utkface", "race",
    (Attribute("race", ("White", "Black", "Asian", "Indian", "Others"), (("other", "Others"),)), _GENDER))
_FAIRFACE_ALIASES = (("latino", "Latino_Hispanic"), ("latino hispanic", "Latino_Hispanic"),
                     ("latino_hispanic", "Latino_Hispanic"), ("hispanic", "Latino_Hispanic"),
                     ("east_asian", "East Asian"), ("southeast_asian", "Southeast Asian"),
                     ("middle_eastern", "Middle Eastern"))
#: FairFace (Kärkkäinen & Joo 2021), 7 races as in its label CSVs (``file,age,gender,race``; age as its bins).
FAIRFACE7 = LabelSchema(
    "fairface7", "race",
    (Attribute("race", ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
                        "Middle Eastern"), _FAIRFACE_ALIASES), _GENDER))
#: FairFace's 4-race taxonomy (its ``race4`` model): East and Southeast Asian are Asian.
FAIRFACE4 = LabelSchema(
    "fairface4", "race",
    (Attribute("race", ("White", "Black", "Asian", "Indian"),
               (("east asian", "Asian"), ("east_asian", "Asian"), ("southeast asian", "Asian"),
                ("southeast_asian", "Asian"))), _GENDER))
#: Presets by name (``--schema``).
SCHEMAS: dict[str, LabelSchema] = {"utkface": UTKFACE, "fairface": FAIRFACE7, "fairface7": FAIRFACE7,
                                   "fairface4": FAIRFACE4}


def name_list(names: "str | Sequence[str] | None") -> "tuple[str, ...] | None":
    """Names (attributes, classes) from ``"race, age_band"`` or a sequence, stripped; None stays None."""
    if names is None:
        return None
    return tuple(str(n).strip() for n in (names.split(",") if isinstance(names, str) else names) if str(n).strip())


def get_schema(schema: "LabelSchema | str | None" = None) -> LabelSchema:
    """A schema from a preset name or itself; None is UTKFace."""
    if schema is None:
        return UTKFACE
    if isinstance(schema, LabelSchema):
        return schema
    try:
        return SCHEMAS[str(schema).strip().lower()]
    except KeyError:
        raise FaceauditError(f"unknown label schema {schema!r}; presets: {', '.join(SCHEMAS)}") from None
