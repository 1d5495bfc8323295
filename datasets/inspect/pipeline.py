"""Run every data check over a loaded dataset and keep the findings together, with the time each stage took."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd

from faceaudit.config import DEFAULT_SEED
from faceaudit.datasets.manifest import Dataset

from . import anomalies, composition, duplicates, exclusions, exposure, features, nonfaces, sanity


@dataclass(frozen=True)
class InspectOptions:
    """Every setting of an inspection; the defaults are documented where each is defined."""

    faces: bool = False
    face_confidence: float = nonfaces.DEFAULT_FACE_CONFIDENCE
    face_image_size: int = nonfaces.DEFAULT_FACE_IMAGE_SIZE
    face_batch: int = nonfaces.DEFAULT_FACE_BATCH
    near_distance: int = duplicates.DEFAULT_NEAR_DISTANCE
    outlier_share: float = anomalies.DEFAULT_OUTLIER_SHARE
    dark_below: float = exposure.DARK_BELOW
    dark_borderline: float = exposure.DARK_BORDERLINE
    washed_out_above: float = exposure.WASHED_OUT_ABOVE
    washed_out_borderline: float = exposure.WASHED_OUT_BORDERLINE
    min_group_size: int = composition.MIN_GROUP_SIZE
    exclude_kinds: tuple[str, ...] = exclusions.DEFAULT_EXCLUDE_KINDS
    seed: int = DEFAULT_SEED
    workers: int = 2


@dataclass
class Inspection:
    """The findings of one inspection (every table keyed by ``image_id``) and per-stage timings in seconds."""

    dataset: Dataset
    options: InspectOptions
    features: pd.DataFrame
    composition: dict[str, pd.DataFrame]
    small_groups: pd.DataFrame
    property_stats: pd.DataFrame
    exposure: pd.DataFrame
    outliers: pd.DataFrame
    pairs: pd.DataFrame
    groups: pd.Series
    leakage: pd.DataFrame
    ages_out_of_range: pd.DataFrame
    label_conflicts: pd.DataFrame
    label_problems: pd.DataFrame
    exclusions: pd.DataFrame
    faces: pd.DataFrame | None = None
    non_faces: pd.DataFrame | None = None
    face_rate: float | None = None
    face_cpu_seconds: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def inspect_dataset(dataset: Dataset, options: InspectOptions = InspectOptions(), *,
                    progress: bool = True) -> Inspection:
    """Measure every image, then run composition, exposure, anomaly, duplicate, label and (optionally) face checks."""
    manifest = dataset.manifest
    timings: dict[str, float] = {}
    with _timed(timings, "measure images"):
        measured = features.image_features(manifest, workers=options.workers, progress=progress)
    with _timed(timings, "composition"):
        tables = composition.composition(manifest)
        small = composition.small_groups(manifest, min_size=options.min_group_size)
        stats = exposure.property_stats(manifest, measured.table)
    with _timed(timings, "exposure"):
        flags = exposure.exposure_flags(measured.table, dark_below=options.dark_below,
                                        dark_borderline=options.dark_borderline,
                                        washed_out_above=options.washed_out_above,
                                        washed_out_borderline=options.washed_out_borderline)
    with _timed(timings, "isolation forest"):
        outliers = anomalies.histogram_outliers(measured.histograms, manifest["image_id"],
                                                share=options.outlier_share, seed=options.seed)
    with _timed(timings, "duplicates"):
        pairs = duplicates.duplicate_pairs(manifest, measured.hashes, max_distance=options.near_distance,
                                           progress=progress)
        groups = duplicates.duplicate_groups(pairs, manifest["image_id"])
        leaks = duplicates.leakage(pairs)
    with _timed(timings, "label sanity"):
        out_of_range = sanity.ages_out_of_range(dataset.excluded)
        conflicts = sanity.label_conflicts(pairs)
        problems = sanity.label_range_problems(manifest)
    faces = flagged_faces = rate = cpu = None
    if options.faces:
        with _timed(timings, "MTCNN faces"):
            scan = nonfaces.detect_faces(manifest["path"].astype(str).tolist(), manifest["image_id"].tolist(),
                                         image_size=options.face_image_size, min_confidence=options.face_confidence,
                                         batch_size=options.face_batch, progress=progress)
            faces, flagged_faces, rate, cpu = scan.table, nonfaces.non_faces(scan), scan.rate, scan.cpu_seconds
    with _timed(timings, "exclusion list"):
        excluded = exclusions.build_exclusions(
            options.exclude_kinds, pairs=pairs, groups=groups,
            splits=manifest.set_index("image_id")["split"].astype(str), outliers=outliers, exposure=flags,
            non_faces=flagged_faces, face_confidence=options.face_confidence, conflicts=conflicts)
    return Inspection(
        dataset=dataset, options=options, features=measured.table, composition=tables, small_groups=small,
        property_stats=stats, exposure=flags, outliers=outliers, pairs=pairs, groups=groups, leakage=leaks,
        ages_out_of_range=out_of_range, label_conflicts=conflicts, label_problems=problems, exclusions=excluded,
        faces=faces, non_faces=flagged_faces, face_rate=rate, face_cpu_seconds=cpu,
        timings=timings)
