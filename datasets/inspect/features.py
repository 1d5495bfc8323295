"""One pass over the images: size, brightness, contrast, colour histogram and perceptual hash of each.

Every later check (exposure, anomalies, near-duplicates) reads these, so each image is decoded once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

#: Bins per RGB channel of the colour histogram the anomaly detector reads (3 x 16 = 48 features).
HISTOGRAM_BINS = 16
#: Images per worker task; two threads overlap JPEG decoding (which releases the GIL) with the hashing.
_CHUNK = 256


@dataclass
class ImageFeatures:
    """Per-image measurements, row-aligned with the manifest they were computed from.

    ``table``: image_id, width, height, brightness (mean ITU-R 601 luma, 0-255), contrast (std of luma),
    phash (64-bit perceptual hash as a 16-digit hex string). ``histograms``: [n, 3 * bins] colour
    histograms, each channel normalised to sum to 1. ``hashes``: the pHashes as uint64.
    """

    table: pd.DataFrame
    histograms: np.ndarray
    hashes: np.ndarray


def _measure(path: str, bins: int) -> tuple[int, int, float, float, np.ndarray, int]:
    import imagehash

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    luma = rgb.convert("L")
    values = np.asarray(luma, dtype=np.float32)
    counts = np.asarray(rgb.histogram(), dtype=np.float64).reshape(3, bins, 256 // bins).sum(axis=2)
    counts /= counts.sum(axis=1, keepdims=True)
    bits = imagehash.phash(luma).hash.ravel()
    phash = int(np.packbits(bits).view(">u8")[0])
    return rgb.width, rgb.height, float(values.mean()), float(values.std()), counts.ravel(), phash


def _measure_chunk(paths: list[str], bins: int) -> list[tuple]:
    return [_measure(p, bins) for p in paths]


def image_features(manifest: pd.DataFrame, *, bins: int = HISTOGRAM_BINS, workers: int = 2,
                   progress: bool = True) -> ImageFeatures:
    """Measure every image of ``manifest`` (needs ``image_id`` and ``path``)."""
    if 256 % bins:
        raise ValueError(f"histogram bins must divide 256, got {bins}")
    from faceaudit.extras import require

    require("imagehash", "inspect", "data inspection (perceptual hashes for duplicates)")
    paths = manifest["path"].astype(str).tolist()
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    results: list[tuple] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(paths), desc="measuring images", unit="img", disable=not progress or None) as bar:
        for measured in pool.map(_measure_chunk, chunks, [bins] * len(chunks)):
            results.extend(measured)
            bar.update(len(measured))
    width, height, brightness, contrast, histograms, hashes = zip(*results) if results else ((),) * 6
    hashes = np.asarray(hashes, dtype=np.uint64)
    table = pd.DataFrame({
        "image_id": manifest["image_id"].to_numpy(),
        "width": np.asarray(width, dtype=int), "height": np.asarray(height, dtype=int),
        "brightness": np.asarray(brightness), "contrast": np.asarray(contrast),
        "phash": [f"{int(h):016x}" for h in hashes],
    })
    return ImageFeatures(table=table, histograms=np.vstack(histograms) if results else np.empty((0, 3 * bins)),
                         hashes=hashes)
