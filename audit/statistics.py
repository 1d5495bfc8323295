"""Mergeable sufficient statistics of a predictions table, so an audit need not hold the table.

Every metric the audit reports is a function of per-cell statistics, a cell being one combination of the label
schema's attribute values, the predicted class and the top-label confidence bin: the number of images, and the
count, mean and sum of squared deviations of each per-image value (confidence, Brier score, log loss). These merge
exactly across any partition of the rows (Chan, Golub & LeVeque 1979), so shards can be reduced on different
machines in any order and give the same audit. The bootstrap then draws resamples from the merged cells
(:func:`faceaudit.auditing.bootstrap.stratified_replicates` with ``weights``), which needs nothing else.

:class:`RowSample` keeps a bounded, partition-independent sample of rows (the smallest hashes of image id and
seed), for the figures that need images or embeddings (error gallery, t-SNE) and for exact audits of tables
small enough to hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from faceaudit.seams.predictions import PredictionsTable
from faceaudit.taxonomy import LabelSchema

from . import calibration as cal
from .bootstrap import confidence_bins

#: Per-image values whose moments each cell keeps.
CELL_VALUES: tuple[str, ...] = ("confidence", "brier", "log_loss")


def audited_attributes(schema: LabelSchema) -> tuple[str, ...]:
    """The attributes a cell is keyed by: the target, then every attribute the audit groups by."""
    return tuple(dict.fromkeys((schema.target, *schema.groups)))


@dataclass
class CellStatistics:
    """Per-cell counts and moments of a predictions table (see the module docstring); merge with ``+``.

    ``codes`` holds each cell's attribute codes (columns in :func:`audited_attributes` order), its predicted
    class and its confidence bin; ``categories`` each attribute's values in code order.
    """

    schema: LabelSchema
    categories: dict[str, list[str]]
    n_bins: int
    has_probabilities: bool
    codes: np.ndarray  # [cells, attributes + 2] int64: attribute codes, predicted class, bin
    count: np.ndarray  # [cells] int64
    mean: np.ndarray  # [cells, values] float64
    m2: np.ndarray  # [cells, values] float64
    temperature: float | None = None
    attributes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.attributes = audited_attributes(self.schema)

    # -- building ------------------------------------------------------------------------------------------

    @classmethod
    def of(cls, table: PredictionsTable, *, n_bins: int = cal.ECE_BINS,
           temperature: float | None = None) -> "CellStatistics":
        """The statistics of one validated table (one shard or batch); ``temperature`` scales the probabilities
        first (the audit's after-scaling figures)."""
        schema = table.schema
        attributes = audited_attributes(schema)
        frame = table.frame
        columns = [np.asarray(frame[a].cat.codes, dtype=np.int64) for a in attributes]
        categories = {a: [str(c) for c in frame[a].cat.categories] for a in attributes}
        y_true, y_pred = table.y_true, table.y_pred
        probs = table.probabilities
        if probs is not None:
            if temperature is not None:
                probs = cal.scale_temperature(probs, temperature)
            per = cal.per_image(probs, y_true)
            bins = confidence_bins(per["confidence"], n_bins)
            values = np.column_stack([per[v] for v in CELL_VALUES])
        else:
            bins = np.zeros(len(y_true), dtype=np.int64)
            values = np.zeros((len(y_true), len(CELL_VALUES)))
        radix = [len(categories[a]) for a in attributes] + [len(schema.classes), n_bins]
        key = np.zeros(len(y_true), dtype=np.int64)
        for part, size in zip([*columns, y_pred, bins], radix):
            key = key * size + part
        keys, first, inverse, count = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        inverse = inverse.ravel()
        mean = np.column_stack([np.bincount(inverse, weights=v, minlength=len(keys)) for v in values.T]) / count[:, None]
        centred = values - mean[inverse]
        m2 = np.column_stack([np.bincount(inverse, weights=c * c, minlength=len(keys)) for c in centred.T])
        codes = np.column_stack([*(c[first] for c in columns), y_pred[first], bins[first]])
        return cls(schema, categories, n_bins, probs is not None, codes, count.astype(np.int64), mean, m2,
                   temperature)

    def __add__(self, other: "CellStatistics") -> "CellStatistics":
        """The statistics of both tables' rows together (exact; order does not matter)."""
        if (other.schema.to_dict() != self.schema.to_dict() or other.categories != self.categories
                or other.n_bins != self.n_bins or other.has_probabilities != self.has_probabilities
                or other.temperature != self.temperature):
            raise ValueError("cannot merge statistics of tables that follow different label schemas")
        radix = np.array([len(self.categories[a]) for a in self.attributes] + [len(self.schema.classes), self.n_bins])
        key_a, key_b = _keys(self.codes, radix), _keys(other.codes, radix)
        keys, first = np.unique(np.concatenate([key_a, key_b]), return_index=True)
        both_codes = np.concatenate([self.codes, other.codes])
        at_a, at_b = np.searchsorted(keys, key_a), np.searchsorted(keys, key_b)
        n_a, n_b = np.zeros(len(keys)), np.zeros(len(keys))
        n_a[at_a], n_b[at_b] = self.count, other.count
        mean_a, mean_b = np.zeros((len(keys), len(CELL_VALUES))), np.zeros((len(keys), len(CELL_VALUES)))
        m2_a, m2_b = np.zeros_like(mean_a), np.zeros_like(mean_b)
        mean_a[at_a], mean_b[at_b], m2_a[at_a], m2_b[at_b] = self.mean, other.mean, self.m2, other.m2
        n = n_a + n_b
        delta = mean_b - mean_a
        mean = mean_a + delta * (n_b / n)[:, None]
        m2 = m2_a + m2_b + delta * delta * (n_a * n_b / n)[:, None]
        return CellStatistics(self.schema, self.categories, self.n_bins, self.has_probabilities, both_codes[first],
                              (n_a + n_b).astype(np.int64), mean, m2, self.temperature)

    # -- reading -------------------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        """The number of images."""
        return int(self.count.sum())

    def column(self, name: str) -> np.ndarray:
        """Each cell's code of an attribute, or of ``pred`` or ``bin``."""
        position = {**{a: i for i, a in enumerate(self.attributes)}, "pred": len(self.attributes),
                    "bin": len(self.attributes) + 1}
        return self.codes[:, position[name]]

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Each cell's mean and sum of squared deviations of a per-image value (:data:`CELL_VALUES`)."""
        index = CELL_VALUES.index(name)
        return self.mean[:, index], self.m2[:, index]

    def sums(self, name: str) -> np.ndarray:
        """Each cell's sum of a per-image value."""
        return self.values(name)[0] * self.count


def _keys(codes: np.ndarray, radix: np.ndarray) -> np.ndarray:
    key = np.zeros(len(codes), dtype=np.int64)
    for column, size in zip(codes.T, radix):
        key = key * int(size) + column
    return key


def row_hashes(image_ids: pd.Series | np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit hash of each image id under ``seed``: the same id hashes the same in every shard and process."""
    key = f"{int(seed) & 0xFFFF_FFFF_FFFF_FFFF:016x}"  # pandas takes a 16-character key: every 64-bit seed its own
    return pd.util.hash_array(np.asarray(image_ids, dtype=object), hash_key=key, categorize=False)


@dataclass
class RowSample:
    """The ``size`` rows with the smallest id hashes seen so far (bottom-k sampling): mergeable, and the same
    sample for any partition or order of the rows. Each row keeps its position in the whole table (``order``), so
    a sample that holds every row can be put back in the table's order."""

    size: int
    seed: int
    frame: pd.DataFrame | None = None
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    embeddings: np.ndarray | None = None
    seen: int = 0

    def add(self, frame: pd.DataFrame, order: np.ndarray, embeddings: np.ndarray | None = None,
            rows: np.ndarray | None = None) -> None:
        """Offer rows (a validated table's frame) and their positions in the whole table; ``embeddings[rows]``
        are theirs (``rows`` default: all), and only the kept rows' are read (a memory-mapped file stays on disk)."""
        self.seen += len(frame)
        hashes = row_hashes(frame["image_id"], self.seed)
        keep = _smallest(hashes, self.size)
        vectors = None
        if embeddings is not None:
            picked = keep if rows is None else np.asarray(rows)[keep]
            vectors = np.asarray(embeddings[np.sort(picked)], dtype=np.float32)[np.argsort(np.argsort(picked))]
        self._combine(frame.iloc[keep].reset_index(drop=True), hashes[keep], np.asarray(order)[keep], vectors)

    def __add__(self, other: "RowSample") -> "RowSample":
        out = RowSample(self.size, self.seed, self.frame, self.hashes, self.order, self.embeddings,
                        self.seen + other.seen)
        if other.frame is not None:
            out._combine(other.frame, other.hashes, other.order, other.embeddings)
        return out

    def _combine(self, frame: pd.DataFrame, hashes: np.ndarray, order: np.ndarray,
                 embeddings: np.ndarray | None) -> None:
        if self.frame is not None:
            frame = pd.concat([self.frame, frame], ignore_index=True)
            hashes, order = np.concatenate([self.hashes, hashes]), np.concatenate([self.order, order])
            embeddings = None if embeddings is None or self.embeddings is None else np.concatenate(
                [self.embeddings, embeddings])
        keep = _smallest(hashes, self.size)
        keep = keep[np.lexsort((order[keep], hashes[keep]))]  # a fixed order, whatever the partition
        self.frame, self.hashes, self.order = frame.iloc[keep].reset_index(drop=True), hashes[keep], order[keep]
        self.embeddings = None if embeddings is None else embeddings[keep]

    @property
    def complete(self) -> bool:
        """Whether the sample holds every row offered."""
        return self.frame is not None and len(self.frame) == self.seen

    def in_table_order(self) -> tuple[pd.DataFrame, np.ndarray | None]:
        """The sampled rows (and embeddings) in the order they have in the whole table."""
        position = np.argsort(self.order, kind="stable")
        return (self.frame.iloc[position].reset_index(drop=True),
                None if self.embeddings is None else self.embeddings[position])


def _smallest(hashes: np.ndarray, k: int) -> np.ndarray:
    if len(hashes) <= k:
        return np.arange(len(hashes))
    return np.argpartition(hashes, k - 1)[:k]
