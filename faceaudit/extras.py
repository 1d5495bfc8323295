"""Optional parts of faceaudit and the packages they need.

The base install audits a predictions table; training and inference need the ``train`` extra (TensorFlow, Keras),
data inspection and the dlib backbone the ``inspect`` extra (ImageHash, MTCNN, dlib). :func:`require` imports one
such package at the entry of the feature that needs it, or fails with one line naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from faceaudit.errors import FaceauditError

#: Extras by name and what each adds (``pip install 'faceaudit[NAME]'``).
EXTRAS = {
    "train": "training and model inference (TensorFlow, Keras)",
    "inspect": "data inspection and the dlib backbone (ImageHash, MTCNN, dlib, face-recognition-models)",
    "onnx": "auditing ONNX models (onnxruntime) and exporting to ONNX (tf2onnx)",
    "distributed": "--engine ray: batch inference and the audit's aggregation on Ray workers, locally or on a cluster (Ray Data)",
    "mlflow": "audit --mlflow: logging audits to an MLflow tracking server or store",
    "all": "train, inspect, onnx and distributed",
}
#: How each optional module's package is named in messages, and the extra that installs it.
MODULES = {
    "tensorflow": ("TensorFlow", "train"),
    "keras": ("Keras", "train"),
    "imagehash": ("ImageHash", "inspect"),
    "mtcnn": ("MTCNN", "inspect"),
    "dlib": ("dlib", "inspect"),
    "face_recognition_models": ("face-recognition-models", "inspect"),
    "onnxruntime": ("ONNX Runtime", "onnx"),
    "onnx": ("ONNX", "onnx"),
    "tf2onnx": ("tf2onnx", "onnx"),
    "ray": ("Ray", "distributed"),
    "mlflow": ("MLflow", "mlflow"),
}


def message(module: str, extra: str, purpose: str) -> str:
    """The one line saying what ``purpose`` needs and how to install it."""
    display = MODULES.get(module.split(".")[0], (module, extra))[0]
    return f"{purpose} needs {display}: pip install 'faceaudit[{extra}]'"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` for ``purpose`` (e.g. ``faceaudit train``), or raise one FaceauditError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        top = missing.split(".")[0]
        if top != module.split(".")[0] and top in MODULES:  # a dependency of the module is what is missing
            module, extra = top, MODULES[top][1]
        raise FaceauditError(message(module, extra, purpose)) from None


def missing_extra(exc: ImportError, purpose: str = "this command") -> str | None:
    """The one-line install hint for an ImportError of an optional package, or None for any other module."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name in MODULES:
        return message(name, MODULES[name][1], purpose)
    return None
