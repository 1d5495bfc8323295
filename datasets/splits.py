"""Deterministic train/val/test splits, stratified by target x gender (race x gender for UTKFace), that keep
byte-identical images together."""

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
    strata: tuple[str, ...] = ("race", "gender"),
) -> pd.Series:
    """The split of each row of ``manifest`` (needs ``image_id``, ``sha256`` and the ``strata`` columns: the
    schema's target and gender, those that exist).

    Rows with the same bytes form one unit that lands in one split. Units are ordered within each
    stratum (race x gender for UTKFace) by a seeded hash of their bytes' SHA-256, so the result depends on the
    files and the seed only: not on listing order, file system or machine.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    strata = [c for c in dict.fromkeys(strata) if c in manifest.columns]
    units = (
        manifest.sort_values("image_id")
        .groupby("sha256", sort=False)
        .agg(**{c: (c, "first") for c in strata})
        .reset_index()
    )
    units["key"] = [_order_key(seed, sha) for sha in units["sha256"]]
    units = units.sort_values([*strata, "key"], kind="mergesort")
    bounds = np.cumsum((0.0, *fractions))
    unit_split: dict[str, str] = {}
    for _, stratum in (units.groupby(strata, sort=True, observed=True) if strata else [(None, units)]):
        cuts = np.rint(bounds * len(stratum)).astype(int)
        for name, start, stop in zip(SPLITS, cuts[:-1], cuts[1:]):
            unit_split.update(dict.fromkeys(stratum["sha256"].iloc[start:stop], name))
    return manifest["sha256"].map(unit_split).rename("split")
