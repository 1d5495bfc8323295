"""Which model format a file or folder is, and its identity (SHA-256) as audit.json records it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from faceaudit.errors import FaceauditError

#: Model formats by the name recorded in audit.json's model block.
FORMATS = {
    "keras": "Keras model (.keras)",
    "h5": "legacy Keras HDF5 model (.h5)",
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TFLite flatbuffer (.tflite)",
    "onnx": "ONNX model (.onnx)",
}


def detect_format(source: Path | str) -> str:
    """The format of a model file or folder (a key of :data:`FORMATS`), or one FaceauditError."""
    path = Path(source)
    if not path.exists():
        raise FaceauditError(f"model not found: {path}")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise FaceauditError(f"{path} is not a run folder or a TensorFlow SavedModel (no model.keras, no "
                             "saved_model.pb)")
    suffix = path.suffix.lower()
    with open(path, "rb") as handle:
        head = handle.read(16)
    if suffix == ".keras":
        return "keras"
    if suffix in (".h5", ".hdf5") or head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if suffix == ".tflite" or head[4:8] == b"TFL3":
        return "tflite"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pb" and path.name == "saved_model.pb":
        return "savedmodel"
    raise FaceauditError(f"{path} is not a model faceaudit can run: expected a run folder, a .keras, .h5, .tflite "
                         "or .onnx file, or a TensorFlow SavedModel folder")


def source_sha256(source: Path | str) -> str:
    """Hex SHA-256 of a model file, or of a SavedModel folder (every file's relative path and bytes, in order)."""
    path = Path(source)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()
