"""The machine-readable outputs of ``faceaudit data inspect``: data.json, CSV tables and the exclusion list.

``data.json`` fields (schema ``faceaudit.data-inspection``, version 1.0):

- ``schema``, ``schema_version``, ``generated`` (UTC ISO time), ``faceaudit_version``
- ``source``: the data source; ``fingerprint``: SHA-256 naming this exact data (ids, bytes, labels, splits)
- ``options``: every setting of the run (thresholds, seed, exclusion kinds)
- ``files``: ``total``, ``usable``, ``excluded_at_parse``, ``kept_with_warnings``; ``image_sizes``: {"WxH": n}
- ``composition``: {race|gender|age_band|split: {label: n}}, ``race_gender``: {"race/gender": n}
- ``small_groups``: race x gender x age band cells under ``min_group_size`` in the test split (and overall)
- ``exposure``: counts of ``dark``, ``dark-borderline``, ``washed-out``, ``washed-out-borderline`` images
- ``outliers``: number flagged by the Isolation Forest and the score cut
- ``faces``: null when ``--faces`` was not given; else images checked, ``non_faces``, confidence, image size,
  ``images_per_second`` (wall clock) and ``cpu_seconds`` (process CPU time, all threads)
- ``duplicates``: ``exact_pairs``, ``near_pairs``, ``groups``, ``images_in_groups``, ``leakage``
  ({split pair: {exact, near}} counting pairs whose images sit in different splits)
- ``labels``: ``ages_out_of_range`` (excluded at parse), ``conflicts`` (duplicate pairs with contradictory labels,
  by kind), ``range_problems``
- ``exclusions``: ``images`` listed in exclusions.csv, ``kinds`` chosen, ``by_kind`` images per kind (an image
  may count under several kinds)
- ``timings``: seconds per stage
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.files import atomic_write
from faceaudit.version import __version__

from .pipeline import Inspection

SCHEMA = "faceaudit.data-inspection"
SCHEMA_VERSION = "1.0"


def image_table(ins: Inspection) -> pd.DataFrame:
    """One row per usable image: labels, split, measurements, outlier score, duplicate group, face confidence."""
    manifest = ins.dataset.manifest[["image_id", "split", "race", "gender", "age", "age_band", "sha256"]]
    table = manifest.merge(ins.features, on="image_id").merge(ins.outliers, on="image_id")
    table["duplicate_group"] = table["image_id"].map(ins.groups)
    if ins.faces is not None:
        table = table.merge(ins.faces, on="image_id", how="left")
    return table


def tables(ins: Inspection) -> dict[str, pd.DataFrame]:
    """Every CSV written under ``tables/``, by file stem."""
    out = {f"composition_{name}": table for name, table in ins.composition.items()}
    out.update({
        "images": image_table(ins),
        "small_groups": ins.small_groups,
        "image_properties_by_group": ins.property_stats,
        "exposure_flags": ins.exposure,
        "outliers": ins.outliers[ins.outliers["outlier"]],
        "duplicate_pairs": ins.pairs,
        "leakage": ins.leakage,
        "label_conflicts": ins.label_conflicts,
        "ages_out_of_range": ins.ages_out_of_range,
        "excluded_at_parse": ins.dataset.excluded,
        "kept_with_warnings": ins.dataset.warnings,
    })
    if ins.non_faces is not None:
        out["non_faces"] = ins.non_faces
    return out


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.items()}


def summary(ins: Inspection) -> dict:
    """The data.json document (fields in this module's docstring)."""
    dataset, manifest, options = ins.dataset, ins.dataset.manifest, ins.options
    sizes = (ins.features["width"].astype(str) + "x" + ins.features["height"].astype(str)).value_counts()
    race_gender = manifest.groupby(["race", "gender"], observed=False).size()
    conflicts = ins.label_conflicts["conflict"].value_counts() if len(ins.label_conflicts) else pd.Series(dtype=int)
    leakage = {pair: {kind: int(n) for kind, n in group[["kind", "pairs"]].itertuples(index=False)}
               for pair, group in ins.leakage.groupby("split_pair", sort=False)}
    by_kind = (ins.exclusions["reason"].str.findall(r"(?:^|; )([a-z-]+):").map(lambda kinds: sorted(set(kinds)))
               .explode().value_counts())
    scores = ins.outliers.loc[ins.outliers["outlier"], "outlier_score"]
    faces = None
    if ins.faces is not None:
        faces = {"checked": len(ins.faces), "non_faces": len(ins.non_faces), "min_confidence": options.face_confidence,
                 "image_size": options.face_image_size, "retried_with_border": int(ins.faces["retried"].sum()),
                 "images_per_second": ins.face_rate, "cpu_seconds": ins.face_cpu_seconds}
    groups = ins.groups[ins.groups >= 0]
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "faceaudit_version": __version__,
        "source": dataset.source, "synthetic": dataset.synthetic, "fingerprint": dataset.fingerprint,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(options).items()},
        "files": {"total": dataset.n_files, "usable": len(manifest), "excluded_at_parse": len(dataset.excluded),
                  "kept_with_warnings": len(dataset.warnings)},
        "image_sizes": _counts(sizes),
        "composition": {key: _counts(manifest[key].value_counts(sort=False))
                        for key in ("race", "gender", "age_band", "split")},
        "race_gender": {f"{r}/{g}": int(n) for (r, g), n in race_gender.items()},
        "small_groups": {"min_group_size": options.min_group_size,
                         "cells_too_small_in_test": len(ins.small_groups),
                         "cells_too_small_overall": int(ins.small_groups["too_small_overall"].sum())},
        "exposure": {flag: int((ins.exposure["flag"] == flag).sum())
                     for flag in ("dark", "dark-borderline", "washed-out", "washed-out-borderline")},
        "outliers": {"flagged": int(len(scores)), "share": options.outlier_share,
                     "score_cut": float(scores.min()) if len(scores) else None},
        "faces": faces,
        "duplicates": {"exact_pairs": int((ins.pairs["kind"] == "exact").sum()),
                       "near_pairs": int((ins.pairs["kind"] == "near").sum()),
                       "max_phash_distance": options.near_distance,
                       "groups": int(groups.nunique()), "images_in_groups": int(len(groups)),
                       "leakage": leakage},
        "labels": {"ages_out_of_range": len(ins.ages_out_of_range), "conflicts": _counts(conflicts),
                   "conflicting_pairs": len(ins.label_conflicts), "range_problems": len(ins.label_problems)},
        "exclusions": {"images": len(ins.exclusions), "kinds": list(options.exclude_kinds),
                       "by_kind": _counts(by_kind)},
        "timings": {k: round(v, 3) for k, v in ins.timings.items()},
    }


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_outputs(ins: Inspection, out_dir: Path) -> dict[str, Path]:
    """Write data.json, exclusions.csv and tables/*.csv into ``out_dir``, each file atomically."""
    out_dir = Path(out_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, table in tables(ins).items():
        written[stem] = atomic_write(out_dir / "tables" / f"{stem}.csv", table.to_csv(index=False))
    written["exclusions"] = atomic_write(out_dir / "exclusions.csv", ins.exclusions.to_csv(index=False))
    written["data.json"] = atomic_write(out_dir / "data.json",
                                        json.dumps(summary(ins), indent=2, default=_jsonable) + "\n")
    return written
