"""Deterministic train/val/test splits, stratified by race x gender, that keep byte-identical images together."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from faceaudit.config import DEFAULT_SEED, SPLIT_FRACTIONS, SPLITS


def _order_key(seed: int, sha256: str) -> str:
    return hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()


def assign_splits(
    manifest: pd.DataFrame,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
    seed: int = DEFAULT_SEED,
) -> pd.Series:
    """The split of each row of ``manifest`` (needs ``image_id``, ``sha256``, ``race``, ``gender``).

    Rows with the same bytes form one unit that lands in one split. Units are ordered within each
    race x gender stratum by a seeded hash of their bytes' SHA-256, so the result depends on the files
    and the seed only: not on listing order, file system or machine.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    units = (
        manifest.sort_values("image_id")
        .groupby("sha256", sort=False)
        .agg(race=("race", "first"), gender=("gender", "first"))
        .reset_index()
    )
    units["key"] = [_order_key(seed, sha) for sha in units["sha256"]]
    units = units.sort_values(["race", "gender", "key"], kind="mergesort")
    bounds = np.cumsum((0.0, *fractions))
    unit_split: dict[str, str] = {}
    for _, stratum in units.groupby(["race", "gender"], sort=True, observed=True):
        cuts = np.rint(bounds * len(stratum)).astype(int)
        for name, start, stop in zip(SPLITS, cuts[:-1], cuts[1:]):
            unit_split.update(dict.fromkeys(stratum["sha256"].iloc[start:stop], name))
    return manifest["sha256"].map(unit_split).rename("split")
