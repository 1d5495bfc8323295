"""Run an exported model (a folder :func:`faceaudit.models.export.export_model` wrote): image models through the
runtime that audits them, a dlib-resnet head through its format's own runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError

from . import export_onnx, export_savedmodel, export_tflite
from .export_spec import DESCRIPTOR_INPUT, EMBEDDING_OUTPUT, MODEL_FILES, PROBS_OUTPUT, read_manifest

#: Each format's runner of one batch of descriptors.
_DESCRIPTOR_RUNNERS = {"savedmodel": export_savedmodel.descriptor_runner, "tflite": export_tflite.descriptor_runner,
                       "onnx": export_onnx.descriptor_runner}


def load_exported(folder: Path | str, fmt: str, batch_size: int = 64):
    """A function from inputs to ``{probabilities, embedding}`` for an exported model (a folder
    :func:`.export.export_model` wrote), loaded once. Image models are run by the runtime that audits them
    (:func:`faceaudit.models.loading.load_runtime`); a dlib-resnet head (input ``[n, 128]`` descriptors) by the
    format's own runtime through its signature (SavedModel ``serving_default``, the TFLite signature runner, an
    onnxruntime session)."""
    if fmt not in MODEL_FILES:
        raise FaceauditError(f"unknown export format {fmt!r}")
    folder = Path(folder)
    manifest = read_manifest(folder) or {}
    if (manifest.get("input") or {}).get("name") == DESCRIPTOR_INPUT:
        return descriptor_runner(folder, fmt, batch_size)
    from faceaudit.models.loading import load_runtime

    runtime = load_runtime(folder if fmt == "savedmodel" else folder / MODEL_FILES[fmt],
                           output_layer=PROBS_OUTPUT, embedding_layer=EMBEDDING_OUTPUT)

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        probs, embedding = runtime.predict(np.asarray(inputs, dtype=np.float32), batch_size=batch_size)
        return {PROBS_OUTPUT: probs, EMBEDDING_OUTPUT: embedding}

    return run


def descriptor_runner(folder: Path, fmt: str, batch_size: int):
    """:func:`load_exported` for a model whose input is ``descriptor`` [n, 128]."""
    one = _DESCRIPTOR_RUNNERS[fmt](folder)

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if inputs.ndim != 2:
            raise FaceauditError(f"this model takes descriptors [n, d], not an array of shape {inputs.shape}")
        outs = [one(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
        return {key: np.concatenate([np.asarray(o[key], dtype=np.float32) for o in outs])
                for key in (PROBS_OUTPUT, EMBEDDING_OUTPUT)}

    return run


def run_exported(folder: Path, fmt: str, inputs: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``{probabilities, embedding}`` of an exported model (a folder :func:`export_model` wrote) on ``inputs``
    (images, or descriptors for a dlib-resnet head); see :func:`load_exported`."""
    return load_exported(folder, fmt, batch_size)(inputs)
