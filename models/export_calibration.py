"""The representative set that calibrates int8 quantisation: images (or dlib descriptors) of the run's own training
split, drawn with a fixed seed, and what they were for the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError

from .export_spec import REPRESENTATIVE_IMAGES, REPRESENTATIVE_SEED


def representative_set(run, input_shape, *, data: Path | str | None = None,
                       count: int = REPRESENTATIVE_IMAGES) -> tuple[np.ndarray, dict]:
    """``count`` images (or dlib descriptors) of the run's training split, as the model's input, and what they
    were (source, split, n, how drawn, a hash of their ids) for the manifest."""
    import hashlib

    from faceaudit.models.inference import load_run_dataset

    if run is None:
        raise FaceauditError("int8 needs a run folder with run.json: its training split calibrates the quantisation")
    dataset = load_run_dataset(run, data, progress=False, purpose="int8")
    source = dataset.source
    train = dataset.split("train")
    if train.empty:
        raise FaceauditError(f"the training split of {source} is empty: nothing to calibrate int8 on")
    chosen = train.sample(min(count, len(train)), random_state=REPRESENTATIVE_SEED).sort_values("image_id")
    if run.backbone == "dlib-resnet":
        from faceaudit.models.dlib_features import descriptors

        inputs, _ = descriptors(chosen, run.dlib_framing or "align", progress=False)
        inputs = np.asarray(inputs, dtype=np.float32)
    else:
        from faceaudit.datasets.tfdata import image_dataset

        inputs = np.concatenate([np.asarray(batch) for batch in
                                 image_dataset(chosen, int(input_shape[1]), 64, with_labels=False)])
    recorded = (run.data or {}).get("manifest_sha256")
    info = {"source": str(source), "split": "train", "n": int(len(chosen)), "of": int(len(train)),
            "drawn": f"uniformly at random without replacement (seed {REPRESENTATIVE_SEED})",
            "image_ids_sha256": hashlib.sha256("\n".join(chosen["image_id"].astype(str)).encode()).hexdigest(),
            "data_fingerprint": dataset.fingerprint,
            "matches_run_data": None if not recorded else recorded == dataset.fingerprint}
    return inputs, info
