"""The entry point to every runtime: a model file or folder in, the :class:`~faceaudit.models.runtime.Runtime` of
its format out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from faceaudit.errors import FaceauditError
from faceaudit.seams.contract import ModelContract

from .formats import detect_format
from .keras_runtime import KerasRuntime, load_keras
from .onnx_runtime import OnnxRuntime
from .runtime import Runtime
from .savedmodel_runtime import SavedModelRuntime
from .tflite_runtime import TFLiteRuntime


def load_runtime(
    source: Path | str,
    *,
    classes: Sequence[str] | None = None,
    n_classes: int | None = None,
    output_layer: str | None = None,
    embedding_layer: str | None = None,
    input_size: int | None = None,
    preprocess: str | None = None,
    bgr: bool = False,
    target: str | None = None,
    contract: ModelContract | None = None,
) -> Runtime:
    """Open a model file or folder (a run folder's ``model.keras``, ``.keras``, ``.h5``, SavedModel folder,
    ``.tflite``, ``.onnx``) as a :class:`Runtime`, or fail with one line.

    ``classes`` names the model's output units in order (``n_classes`` gives only their number); the output whose
    width is that number is the class-probability one (``output_layer`` names it when there are several).
    ``embedding_layer`` names the embedding layer (Keras) or output (other formats); ``input_size`` is needed when
    the model does not fix it; ``preprocess`` (one of :data:`PREPROCESS`, default ``raw``) and ``bgr`` say what
    the model wants from float32 RGB [0, 255] images. ``target`` picks the faceaudit contract layer
    ``<target>_probs`` of a ``.keras`` model. A ``contract`` (:mod:`faceaudit.seams.contract`) states the input and
    the outputs instead (``preprocess`` and ``bgr`` are then the contract's)."""
    path = Path(source)
    if path.is_dir() and (path / "model.keras").exists():
        path = path / "model.keras"
    fmt = detect_format(path)
    if path.name == "saved_model.pb":
        path = path.parent
    if classes is None and n_classes is not None:
        classes = tuple(f"class_{i}" for i in range(int(n_classes)))
    if input_size is not None and int(input_size) < 1:
        raise FaceauditError("--input-size must be a positive number of pixels")
    options = {"classes": classes, "output_layer": output_layer, "embedding_layer": embedding_layer,
               "input_size": None if input_size is None else int(input_size), "preprocess": preprocess, "bgr": bgr,
               "contract": contract}
    if fmt in ("keras", "h5"):
        model = load_keras(path, fmt)
        return KerasRuntime(path, model, fmt=fmt, schema_target=target, **options)
    if fmt == "savedmodel":
        return SavedModelRuntime(path, **options)
    if fmt == "tflite":
        return TFLiteRuntime(path, **options)
    return OnnxRuntime(path, **options)
