"""Exact duplicates (same SHA-256 of the bytes) and near-duplicates (perceptual hashes a few bits apart).

Near-duplicate search compares every pair of 64-bit pHashes with numpy XOR and popcount, a block of rows at a
time: 21k images are 228M pairs, a couple of seconds, with no index that could miss a pair.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

from faceaudit import config
from faceaudit.config import SPLITS

DEFAULT_NEAR_DISTANCE = config.NEAR_DISTANCE
_BLOCK = 1024

PAIR_COLUMNS = ("image_id_a", "image_id_b", "kind", "distance", "split_a", "split_b",
                "race_a", "race_b", "gender_a", "gender_b", "age_a", "age_b")


def close_hash_pairs(hashes: np.ndarray, max_distance: int, *, progress: bool = True) -> np.ndarray:
    """Every index pair ``i < j`` whose hashes differ in at most ``max_distance`` bits, as [k, 3] (i, j, d)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    found = []
    starts = range(0, n, _BLOCK)
    for start in tqdm(starts, desc="comparing hashes", unit="block", disable=not progress or None, leave=False):
        block = hashes[start:start + _BLOCK]
        rest = hashes[start:]
        distance = np.bitwise_count(block[:, None] ^ rest[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        keep = cols > rows  # strictly upper triangle: j > i
        rows, cols = rows[keep], cols[keep]
        found.append(np.column_stack([rows + start, cols + start, distance[rows, cols]]))
    return np.vstack(found).astype(np.int64) if found else np.empty((0, 3), dtype=np.int64)


def duplicate_pairs(manifest: pd.DataFrame, hashes: np.ndarray, *, max_distance: int = DEFAULT_NEAR_DISTANCE,
                    progress: bool = True) -> pd.DataFrame:
    """Every exact and near-duplicate pair with both images' split and labels (:data:`PAIR_COLUMNS`).

    ``kind`` is ``exact`` when the bytes are identical (same SHA-256), else ``near`` (pHash distance within
    ``max_distance``). Exact pairs are found from the SHA-256 even if their pHashes were to differ.
    """
    manifest = manifest.reset_index(drop=True)
    near = close_hash_pairs(hashes, max_distance, progress=progress)
    sha = manifest["sha256"].to_numpy()
    codes = pd.factorize(sha)[0]
    exact = [np.array(list(_pairs(np.flatnonzero(codes == c)))) for c in np.flatnonzero(np.bincount(codes) > 1)]
    exact_idx = np.vstack(exact) if exact else np.empty((0, 2), dtype=np.int64)
    index = {(int(i), int(j)): int(d) for i, j, d in near}
    for i, j in exact_idx:
        index.setdefault((int(i), int(j)), int(np.bitwise_count(hashes[i] ^ hashes[j])))
    if not index:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    keys = np.array(sorted(index), dtype=np.int64)
    a, b = keys[:, 0], keys[:, 1]

    def pick(column: str, rows: np.ndarray) -> np.ndarray:
        return manifest[column].astype(str).to_numpy()[rows] if column != "age" else manifest[column].to_numpy()[rows]

    pairs = pd.DataFrame({
        "image_id_a": pick("image_id", a), "image_id_b": pick("image_id", b),
        "kind": np.where(sha[a] == sha[b], "exact", "near"),
        "distance": [index[(int(i), int(j))] for i, j in keys],
        "split_a": pick("split", a), "split_b": pick("split", b),
        "race_a": pick("race", a), "race_b": pick("race", b),
        "gender_a": pick("gender", a), "gender_b": pick("gender", b),
        "age_a": pick("age", a), "age_b": pick("age", b),
    })
    return pairs.sort_values(["kind", "distance", "image_id_a", "image_id_b"]).reset_index(drop=True)


def _pairs(members: np.ndarray):
    for k, i in enumerate(members):
        for j in members[k + 1:]:
            yield i, j


def duplicate_groups(pairs: pd.DataFrame, image_ids: pd.Series) -> pd.Series:
    """A group number per image (connected components of the pair graph); -1 for images with no twin."""
    ids = pd.Index(image_ids)
    if pairs.empty:
        return pd.Series(-1, index=ids, name="group")
    a, b = ids.get_indexer(pairs["image_id_a"]), ids.get_indexer(pairs["image_id_b"])
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(ids), len(ids)))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    labels = np.where(sizes[labels] > 1, labels, -1)
    # renumber groups 0..k-1 by their first image, so the numbers are stable run to run
    in_group = np.flatnonzero(labels >= 0)
    _, first = np.unique(labels[in_group], return_index=True)
    order = {int(labels[in_group[i]]): n for n, i in enumerate(sorted(first))}
    return pd.Series([order.get(int(g), -1) for g in labels], index=ids, name="group")


def split_pair(a: str, b: str) -> str:
    """The unordered split pair of two images, in train/val/test order (``train-test``, ``val-val``...)."""
    first, second = sorted((a, b), key=lambda s: SPLITS.index(s) if s in SPLITS else len(SPLITS))
    return f"{first}-{second}"


def leakage(pairs: pd.DataFrame) -> pd.DataFrame:
    """Counts of duplicate pairs whose images sit in different splits, by split pair and kind."""
    every = pd.MultiIndex.from_product([["train-val", "train-test", "val-test"], ["exact", "near"]],
                                       names=["split_pair", "kind"])
    cross = pairs[pairs["split_a"] != pairs["split_b"]]
    labels = pd.Series([split_pair(a, b) for a, b in zip(cross["split_a"], cross["split_b"])],
                       index=cross.index, dtype=object)
    counts = cross.assign(split_pair=labels).groupby(["split_pair", "kind"]).size()
    return counts.reindex(every, fill_value=0).rename("pairs").reset_index()
