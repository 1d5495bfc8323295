"""Who is in the data: counts and shares by race, gender, age band, their crossings, and by split."""

from __future__ import annotations

import pandas as pd

from faceaudit import config

MIN_GROUP_SIZE = config.DEFAULT_MIN_GROUP_SIZE


def counts(manifest: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Counts and shares of every combination of ``by`` (empty combinations kept, with n = 0)."""
    table = manifest.groupby(by, observed=False, sort=True).size().rename("n").reset_index()
    table["share"] = table["n"] / max(len(manifest), 1)
    return table


def composition(manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The composition tables of the report: one per attribute, crossings, and race by split."""
    return {
        "race": counts(manifest, ["race"]),
        "gender": counts(manifest, ["gender"]),
        "age_band": counts(manifest, ["age_band"]),
        "race_gender": counts(manifest, ["race", "gender"]),
        "race_gender_age": counts(manifest, ["race", "gender", "age_band"]),
        "split_race": counts(manifest, ["split", "race"]),
    }


def small_groups(manifest: pd.DataFrame, *, min_size: int = MIN_GROUP_SIZE,
                 by: tuple[str, ...] = ("race", "gender", "age_band")) -> pd.DataFrame:
    """Race x gender x age band cells with fewer than ``min_size`` images, overall and in the test split.

    The audit runs on the test split, so a cell can be large overall and still too small to audit there.
    """
    overall = counts(manifest, list(by)).rename(columns={"n": "n_all"}).drop(columns="share")
    test = counts(manifest[manifest["split"] == "test"], list(by))[["n"]].rename(columns={"n": "n_test"})
    table = pd.concat([overall.reset_index(drop=True), test.reset_index(drop=True)], axis=1)
    table["too_small_overall"] = table["n_all"] < min_size
    table["too_small_in_test"] = table["n_test"] < min_size
    return table[table["too_small_in_test"]].reset_index(drop=True)
