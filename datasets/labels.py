"""UTKFace's file names: the labels they carry (the taxonomy itself is :data:`faceaudit.taxonomy.UTKFACE`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from faceaudit.taxonomy import AGE_MAX, AGE_MIN, UTKFACE, AgeBands  # noqa: F401  (AgeBands re-exported)

RACES = UTKFACE.attribute("race").values
GENDERS = UTKFACE.attribute("gender").values

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
