"""What a faceaudit export is: its formats, quantisations, file names, input and output names, and the serving function
every format is converted from; :mod:`.export` writes one, :mod:`.exported` runs one."""

from __future__ import annotations

import json
from pathlib import Path

from faceaudit.errors import FaceauditError

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float16", "int8")
EXPORT_DIR = "export"
MANIFEST_FILE = "manifest.json"
#: The model file each format writes inside the export folder (a SavedModel is the folder itself).
MODEL_FILES = {"savedmodel": "saved_model.pb", "tflite": "model.tflite", "onnx": "model.onnx"}
INPUT_NAME = "image"
#: The input of a dlib-resnet head: dlib's 128-d face descriptors, not pixels.
DESCRIPTOR_INPUT = "descriptor"
PROBS_OUTPUT = "probabilities"
EMBEDDING_OUTPUT = "embedding"
#: Images of the training split that calibrate int8 quantisation.
REPRESENTATIVE_IMAGES = 300
REPRESENTATIVE_SEED = 0
ONNX_OPSET = 17


def read_manifest(model: Path | str) -> dict | None:
    """The ``manifest.json`` of an exported model (given as its folder or its model file), or None when the model was
    not exported by faceaudit."""
    model = Path(model)
    file = (model if model.is_dir() else model.parent) / MANIFEST_FILE
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FaceauditError(f"cannot read {file}: {exc}") from None
    return manifest if isinstance(manifest, dict) and "format" in manifest else None


def default_out(run_dir: Path | str, fmt: str, quantize: str | None = None) -> Path:
    """``<run>/export/<fmt>[-<quantize>]``."""
    return Path(run_dir) / EXPORT_DIR / (fmt if quantize is None else f"{fmt}-{quantize}")


def input_name(input_shape) -> str:
    """``image`` for an image model ([n, H, W, 3]), ``descriptor`` for a dlib-resnet head ([n, 128])."""
    return INPUT_NAME if len(input_shape) == 4 else DESCRIPTOR_INPUT


def serving_function(both, input_shape):
    """A tf.function from the input (``image`` or ``descriptor``) to ``{probabilities, embedding}`` (inference
    mode)."""
    import tensorflow as tf

    spec = tf.TensorSpec(input_shape, tf.float32, name=input_name(input_shape))
    if spec.name == INPUT_NAME:
        @tf.function(input_signature=[spec])
        def serve(image):
            probs, embedding = both([image], training=False)
            return {PROBS_OUTPUT: probs, EMBEDDING_OUTPUT: embedding}
    else:
        @tf.function(input_signature=[spec])
        def serve(descriptor):
            probs, embedding = both([descriptor], training=False)
            return {PROBS_OUTPUT: probs, EMBEDDING_OUTPUT: embedding}

    return serve, spec
