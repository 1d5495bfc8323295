"""Non-faces: images where the MTCNN detector (``mtcnn`` package, weights shipped with it) finds no face.

Every image is resized to one square size before detection, so 64 px crops are upsampled to a size the
detector's 12 px proposal windows handle well and equal-size images can be batched into one call. MTCNN misses
many faces that fill the whole frame (tight crops such as UTKFace's 200 px set), so an image with no face at the
first pass is tried again with a border of replicated edge pixels; its confidence is the better of the two.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

from faceaudit import config

DEFAULT_FACE_IMAGE_SIZE = config.FACE_IMAGE_SIZE
DEFAULT_FACE_CONFIDENCE = config.FACE_CONFIDENCE
DEFAULT_FACE_BATCH = config.FACE_BATCH
#: Smallest face searched for, in pixels of the resized image (the package default; larger values break
#: mtcnn 1.0's pyramid, whose level count assumes 20).
MIN_FACE_SIZE = 20
#: Border added on each side for the second try, as a fraction of the image side.
RETRY_BORDER = 0.25


@dataclass(frozen=True)
class FaceScan:
    """Per-image detector output plus how long it took."""

    table: pd.DataFrame  # image_id, n_faces, face_confidence, retried (second try with a border)
    seconds: float
    image_size: int
    min_confidence: float
    cpu_seconds: float = float("nan")

    @property
    def rate(self) -> float:
        """Images per second."""
        return len(self.table) / self.seconds if self.seconds > 0 else float("nan")


def _load(path: str, size: int, border: float = 0.0) -> np.ndarray:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
    pad = int(round(size * border))
    return np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else pixels


def _detect(detector, images: list[np.ndarray], min_confidence: float) -> list[list[float]]:
    """Face confidences per image for one batch of equal-size images."""
    found = detector.detect_faces(images, min_face_size=MIN_FACE_SIZE, threshold_onet=min(min_confidence, 0.8))
    if found and isinstance(found[0], dict):  # the package unwraps one-image batches
        found = [found]
    if not any(found) and len(images) > 1:
        # mtcnn 1.0 answers a whole batch with "no faces" when any stage finds no proposal at all: recheck singly
        return [_detect(detector, [image], min_confidence)[0] for image in images]
    return [[float(face["confidence"]) for face in faces] for faces in (found or [[] for _ in images])]


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def detect_faces(
    paths: Sequence[str],
    image_ids: Sequence[str] | None = None,
    *,
    image_size: int = DEFAULT_FACE_IMAGE_SIZE,
    min_confidence: float = DEFAULT_FACE_CONFIDENCE,
    batch_size: int = DEFAULT_FACE_BATCH,
    progress: bool = True,
) -> FaceScan:
    """Run MTCNN over ``paths``: the number of faces at ``min_confidence`` and the best confidence per image."""
    from faceaudit.extras import require

    require("tensorflow", "all", "the MTCNN face check (--faces)")
    _quiet_tensorflow()
    MTCNN = require("mtcnn", "all", "the MTCNN face check (--faces)").MTCNN

    detector = MTCNN(stages="face_and_landmarks_detection")
    image_ids = list(image_ids) if image_ids is not None else list(paths)
    best = np.zeros(len(paths), dtype=float)
    counts = np.zeros(len(paths), dtype=int)
    retried = np.zeros(len(paths), dtype=bool)
    start, cpu_start = time.perf_counter(), time.process_time()
    with tqdm(total=len(paths), desc="MTCNN faces", unit="img", disable=not progress or None) as bar:
        for first in range(0, len(paths), batch_size):
            batch = [_load(p, image_size) for p in paths[first:first + batch_size]]
            for offset, scores in enumerate(_detect(detector, batch, min_confidence)):
                best[first + offset] = max(scores, default=0.0)
                counts[first + offset] = sum(s >= min_confidence for s in scores)
            bar.update(len(batch))
    missed = np.flatnonzero(counts == 0)
    for first in tqdm(range(0, len(missed), batch_size), desc="MTCNN retry with border", unit="batch",
                      disable=not progress or None, leave=False):
        rows = missed[first:first + batch_size]
        batch = [_load(paths[i], image_size, RETRY_BORDER) for i in rows]
        for i, scores in zip(rows, _detect(detector, batch, min_confidence)):
            retried[i] = True
            best[i] = max(best[i], max(scores, default=0.0))
            counts[i] = sum(s >= min_confidence for s in scores)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    table = pd.DataFrame({"image_id": image_ids, "n_faces": counts, "face_confidence": best, "retried": retried})
    return FaceScan(table=table, seconds=seconds, image_size=image_size, min_confidence=min_confidence,
                    cpu_seconds=cpu_seconds)


def non_faces(scan: FaceScan) -> pd.DataFrame:
    """The images with no face at the scan's confidence, least face-like first."""
    flagged = scan.table[scan.table["n_faces"] == 0]
    return flagged.sort_values("face_confidence").reset_index(drop=True)
