"""dlib's face-recognition ResNet as a frozen feature extractor: 128-d descriptors, cached by image SHA-256.

The network ships in ``face-recognition-models`` and runs through ``dlib-bin`` on the CPU (about 9 images/s
per core), so descriptors are computed once per image and framing and reused by every later head.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

from faceaudit.config import cache_dir, usable_cpus
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_path

#: Side of the aligned chip dlib's ResNet expects.
CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
#: How an already-cropped face becomes a 150x150 chip: ``resize`` (whole image), ``align`` (dlib's 5-point
#: landmarks on the full-image rectangle, then ``dlib.get_face_chip`` with the padding dlib was trained with).
CHIP_FRAMINGS = ("resize", "align")
#: A framing with this suffix averages each descriptor with that of the mirrored chip (test-time flip
#: averaging, as face-verification pipelines do): one more extraction pass, a steadier descriptor.
MIRROR_SUFFIX = "+mirror"
FRAMINGS = CHIP_FRAMINGS + tuple(f + MIRROR_SUFFIX for f in CHIP_FRAMINGS)

_MODELS: dict = {}


def _models():
    """Load the recogniser and the 5-point landmark model once per process."""
    if not _MODELS:
        from faceaudit.extras import require

        dlib = require("dlib", "inspect", "the dlib-resnet backbone")
        face_recognition_models = require("face_recognition_models", "inspect", "the dlib-resnet backbone")
        _MODELS["dlib"] = dlib
        _MODELS["net"] = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
        _MODELS["shape"] = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    return _MODELS


def face_chip(path: str | Path, framing: str = "align", mirrored: bool = False) -> np.ndarray:
    """The 150x150 uint8 RGB chip dlib's ResNet reads, from one already-cropped face image."""
    chip = _chip(path, framing)
    return np.ascontiguousarray(chip[:, ::-1]) if mirrored else chip


def _chip(path: str | Path, framing: str) -> np.ndarray:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    if framing == "resize":
        return np.asarray(Image.fromarray(rgb).resize((CHIP_SIZE, CHIP_SIZE), Image.BICUBIC))
    if framing != "align":
        raise FaceauditError(f"unknown dlib framing {framing!r}; choose one of {', '.join(CHIP_FRAMINGS)}")
    models = _models()
    dlib = models["dlib"]
    # Landmarks are found more reliably on an upsampled face; the rectangle is the whole (cropped) image.
    scale = max(1, int(np.ceil(CHIP_SIZE / max(rgb.shape[:2]))))
    if scale > 1:
        rgb = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.BICUBIC))
    rect = dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
    shape = models["shape"](rgb, rect)
    return np.asarray(dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=0.25))


def _describe(paths: list[str], framing: str, mirrored: bool = False) -> np.ndarray:
    net = _models()["net"]
    chips = [face_chip(p, framing, mirrored) for p in paths]
    return np.asarray(net.compute_face_descriptor(chips), dtype=np.float32).reshape(len(paths), DESCRIPTOR_DIM)


def descriptor_cache(framing: str = "align", mirrored: bool = False) -> Path:
    """Cached descriptors of one chip framing: ``<cache>/dlib-descriptors/<framing>[-mirrored]/<sha[:2]>/<sha>.npy``."""
    return cache_dir() / "dlib-descriptors" / (f"{framing}-mirrored" if mirrored else framing)


def _cache_file(root: Path, sha: str) -> Path:
    return root / sha[:2] / f"{sha}.npy"


def descriptors(
    manifest: pd.DataFrame,
    framing: str,
    *,
    workers: int | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """Descriptors [n, 128] for the manifest's images (rows in manifest order) and cache statistics.

    Images whose SHA-256 is already cached are read back; the rest are computed in ``workers`` processes
    (default: the CPUs this process may use) and written to the cache as they finish. A ``+mirror`` framing
    is the mean of the chip's and the mirrored chip's descriptors.
    """
    if framing not in FRAMINGS:
        raise FaceauditError(f"unknown dlib framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    if framing.endswith(MIRROR_SUFFIX):
        chip_framing = framing.removesuffix(MIRROR_SUFFIX)
        parts = [_chip_descriptors(manifest, chip_framing, mirrored, workers, chunk, progress)
                 for mirrored in (False, True)]
        stats = {key: sum(part[1][key] for part in parts) for key in ("cached", "computed")}
        return (parts[0][0] + parts[1][0]) / 2, {"images": len(manifest), **stats, "framing": framing}
    return _chip_descriptors(manifest, framing, False, workers, chunk, progress)


def _chip_descriptors(manifest: pd.DataFrame, framing: str, mirrored: bool, workers: int | None, chunk: int,
                      progress: bool) -> tuple[np.ndarray, dict]:
    root = descriptor_cache(framing, mirrored)
    shas = manifest["sha256"].astype(str).to_numpy()
    paths = manifest["path"].astype(str).to_numpy()
    out = np.zeros((len(manifest), DESCRIPTOR_DIM), dtype=np.float32)
    missing: dict[str, list[int]] = {}
    for index, sha in enumerate(shas):
        file = _cache_file(root, sha)
        if sha in missing:
            missing[sha].append(index)
            continue
        try:
            out[index] = np.load(file)
        except (OSError, ValueError):
            missing.setdefault(sha, []).append(index)
    todo = list(missing)
    stats = {"images": len(manifest), "cached": len(manifest) - sum(len(v) for v in missing.values()),
             "computed": len(todo), "framing": framing + ("-mirrored" if mirrored else "")}
    if not todo:
        return out, stats
    workers = workers or usable_cpus()
    batches = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    bar = tqdm(total=len(todo), desc=f"dlib descriptors ({stats['framing']})", unit="img", disable=not progress or None)

    def store(batch: list[str], values: np.ndarray) -> None:
        for sha, value in zip(batch, values):
            with atomic_path(_cache_file(root, sha)) as partial, open(partial, "wb") as handle:
                np.save(handle, value)
            for index in missing[sha]:
                out[index] = value
        bar.update(len(batch))

    first = {sha: paths[missing[sha][0]] for sha in todo}
    if workers == 1:
        for batch in batches:
            store(batch, _describe([first[s] for s in batch], framing, mirrored))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [(batch, pool.submit(_describe, [first[s] for s in batch], framing, mirrored)) for batch in batches]
            for batch, future in futures:
                store(batch, future.result())
    bar.close()
    return out, stats
