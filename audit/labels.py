"""UTKFace's label taxonomy: file-name parsing, label normalisation and age bands."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from faceaudit.config import AGE_BAND_PRESETS, AGE_MAX, AGE_MIN, DEFAULT_AGE_BANDS, GENDERS, RACES
from faceaudit.errors import FaceauditError

_REGULAR_NAME = re.compile(r"^\d{1,3}_[01]_[0-4]_\d+\.jpg\.chip\.jpg$")
_LABELLED_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>\d+)_(?P<race>\d)_(?P<rest>.+)$")
_NO_RACE_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>\d+)_(?P<rest>\d{8,}.*)$")


@dataclass(frozen=True)
class NameLabels:
    """Labels read from one UTKFace file name.

    ``problem`` set means the file cannot join a race-labelled set (the reason says why);
    ``warning`` set means the labels are unambiguous but the name is irregular.
    """

    age: int | None
    gender: str | None
    race: str | None
    problem: str | None = None
    warning: str | None = None


def parse_utkface_name(name: str) -> NameLabels:
    """Parse ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg``; never guesses a missing field."""
    match = _LABELLED_NAME.match(name)
    if match is None:
        no_race = _NO_RACE_NAME.match(name)
        if no_race is not None:
            age, gender = int(no_race["age"]), int(no_race["gender"])
            if gender in (0, 1) and AGE_MIN <= age <= AGE_MAX:
                return NameLabels(age, GENDERS[gender], None, problem="no race field in file name")
        return NameLabels(None, None, None, problem="file name does not follow [age]_[gender]_[race]_[date&time]")
    age, gender, race = int(match["age"]), int(match["gender"]), int(match["race"])
    if not AGE_MIN <= age <= AGE_MAX:
        return NameLabels(None, None, None, problem=f"age {age} outside {AGE_MIN}-{AGE_MAX}")
    if gender not in (0, 1):
        return NameLabels(None, None, None, problem=f"gender code {gender} is not 0 or 1")
    if race >= len(RACES):
        return NameLabels(None, None, None, problem=f"race code {race} is not 0-4")
    warning = None
    if not _REGULAR_NAME.match(name):
        warning = f"irregular file-name suffix {match['rest']!r}; labels kept (age {age}, gender {gender}, race {race})"
    return NameLabels(age, GENDERS[gender], RACES[race], warning=warning)


def _normalise(value: object, names: tuple[str, ...], aliases: dict[str, str], what: str) -> str:
    """Map a code (0..n-1) or a case-insensitive name or alias onto one of ``names``."""
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.0)?", text):
        code = int(float(text))
        if code < len(names):
            return names[code]
    lowered = text.lower()
    for name in names:
        if lowered == name.lower():
            return name
    if lowered in aliases:
        return aliases[lowered]
    from faceaudit.console import shown

    raise FaceauditError(f"unknown {what} label {shown(value)}; expected one of {', '.join(names)} or codes 0-{len(names) - 1}")


def normalise_race(value: object) -> str:
    """A race label from a code 0-4 or a name such as ``white`` or ``Other``."""
    return _normalise(value, RACES, {"other": "Others"}, "race")


def normalise_gender(value: object) -> str:
    """A gender label from a code 0/1 or a name such as ``male``, ``f`` or ``woman``."""
    aliases = {"m": "Male", "man": "Male", "f": "Female", "woman": "Female"}
    return _normalise(value, GENDERS, aliases, "gender")


@dataclass(frozen=True)
class AgeBands:
    """Contiguous age bands such as ``0-2,3-9,...,70+``, covering every age from 0 to 116."""

    lows: tuple[int, ...]
    labels: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str = DEFAULT_AGE_BANDS) -> "AgeBands":
        """Read a spec (``"0-2,3-9,70+"``) or a preset name (``default``, ``decades``)."""
        spec = AGE_BAND_PRESETS.get(spec.strip(), spec)
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
        ages = np.asarray(ages, dtype=float)
        codes = np.searchsorted(np.asarray(self.lows), ages, side="right") - 1
        codes = np.where(np.isnan(ages) | (ages < AGE_MIN) | (ages > AGE_MAX), -1, codes)
        return pd.Categorical.from_codes(codes, categories=list(self.labels), ordered=True)

    def __str__(self) -> str:
        return ",".join(self.labels)
