"""Apply a trained model to a manifest: class probabilities, penultimate embeddings, the predictions table.

A model source is a run folder (``model.keras`` + ``run.json``) or a bare ``.keras`` file following the model
contract: float32 RGB [0, 255] input of size ``model.input_shape[1:3]``, a final 5-way softmax layer named
``race_probs`` and a layer named ``embedding``. Run folders of the ``dlib-resnet`` backbone hold a head whose
input is dlib's 128-d descriptors; those are computed (or read from the cache) first.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.audit.schema import PRED_COLUMN, PREDICTION_COLUMNS, PROB_COLUMNS
from faceaudit.config import RACES
from faceaudit.errors import FaceauditError

MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.csv"
PROBS_LAYER = "race_probs"
EMBEDDING_LAYER = "embedding"


def read_run(run_dir: Path) -> dict:
    """The run record ``run.json`` of a run folder (empty dict when the folder has none)."""
    file = Path(run_dir) / RUN_FILE
    if not file.exists():
        return {}
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FaceauditError(f"cannot read {file}: {exc}") from None


def resolve_model(model_source: Path) -> tuple[Path, dict]:
    """The ``.keras`` file a model source names, and its run record (empty for a bare file)."""
    source = Path(model_source)
    if source.is_dir():
        model_file = source / MODEL_FILE
        if not model_file.exists():
            raise FaceauditError(f"{source} is not a run folder: it has no {MODEL_FILE}")
        return model_file, read_run(source)
    if not source.exists():
        raise FaceauditError(f"model not found: {source}")
    if source.suffix != ".keras":
        raise FaceauditError(f"{source} is not a .keras model file or a run folder")
    return source, read_run(source.parent) if source.name == MODEL_FILE else {}


def load_model(model_file: Path):
    """Load a ``.keras`` file (without its optimizer) or fail with one line."""
    import keras

    from faceaudit.training import layers  # noqa: F401  (registers the preprocessing layer)

    if not zipfile.is_zipfile(model_file):
        raise FaceauditError(f"{model_file} is not a valid .keras file (not a zip archive)")
    try:
        return keras.saving.load_model(model_file, compile=False)
    except Exception as exc:  # Keras raises many types for corrupt or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "safe_mode" in str(exc) or "Lambda" in first:  # Keras's refusal to deserialise Python code
            raise FaceauditError(f"cannot load model {model_file}: it contains a Lambda layer (Python code saved "
                                 "with the model), which faceaudit never runs; rebuild the model without Lambda "
                                 "layers and save it again") from None
        if len(first) > 300:
            first = first[:300].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
        raise FaceauditError(f"cannot load model {model_file}: {first}") from None


def contract_model(model, *, expect_images: bool = True):
    """A model mapping the input to ``[race_probs, embedding]``, after checking the model contract."""
    import keras

    names = {layer.name for layer in model.layers}
    for required in (PROBS_LAYER, EMBEDDING_LAYER):
        if required not in names:
            raise FaceauditError(f"model does not follow the contract: no layer named {required!r}")
    probs = model.get_layer(PROBS_LAYER).output
    if tuple(probs.shape[1:]) != (len(RACES),):
        raise FaceauditError(f"model does not follow the contract: {PROBS_LAYER!r} has shape {tuple(probs.shape[1:])}, "
                             f"expected ({len(RACES)},)")
    shape = tuple(model.input_shape)
    if expect_images and (len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None):
        raise FaceauditError(f"model does not follow the contract: input shape {shape} is not (None, H, W, 3)")
    return keras.Model(model.inputs, [probs, model.get_layer(EMBEDDING_LAYER).output])


def predict(
    model_source: Path,
    manifest: pd.DataFrame,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [n, 5] in :data:`RACES` order and embeddings [n, d] for every manifest row."""
    model_file, run = resolve_model(model_source)
    model = load_model(model_file)
    if len(manifest) == 0:
        raise FaceauditError("nothing to predict: the manifest is empty")
    if run.get("backbone") == "dlib-resnet":
        from faceaudit.training.dlib_features import descriptors

        inputs, _ = descriptors(manifest, run.get("dlib_framing", "align"), progress=progress)
        both = contract_model(model, expect_images=False)
        probs, embeddings = both.predict(inputs, batch_size=batch_size, verbose=0,
                                         callbacks=_progress(len(manifest), batch_size, progress))
    else:
        from faceaudit.audit.tfdata import image_dataset

        both = contract_model(model)
        size = int(model.input_shape[1])
        if model.input_shape[1] != model.input_shape[2]:
            raise FaceauditError(f"model input {model.input_shape[1:3]} is not square")
        data = image_dataset(manifest, size, batch_size, with_labels=False)
        probs, embeddings = both.predict(data, verbose=0, callbacks=_progress(len(manifest), batch_size, progress))
    return np.asarray(probs, dtype=np.float64), np.asarray(embeddings, dtype=np.float32)


def _progress(n: int, batch_size: int, progress: bool) -> list:
    """Our one tqdm bar over the prediction batches (shown on a terminal only), instead of Keras's own."""
    if not progress:
        return []
    from faceaudit.console import keras_bar

    return [keras_bar(-(-n // batch_size), f"predicting {n:,} images")]


def predictions_table(manifest: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """The audit's predictions table (:data:`PREDICTION_COLUMNS`) from manifest rows and their probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(manifest), len(RACES)):
        raise ValueError(f"probabilities have shape {probs.shape}, expected ({len(manifest)}, {len(RACES)})")
    table = manifest.reset_index(drop=True).copy()
    for column, values in zip(PROB_COLUMNS, probs.T):
        table[column] = values
    table[PRED_COLUMN] = pd.Categorical.from_codes(probs.argmax(axis=1), categories=list(RACES))
    return table[[c for c in PREDICTION_COLUMNS if c in table.columns]]


def write_predictions(table: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``predictions.csv`` into a run folder atomically (temp name, then rename)."""
    file = Path(out_dir) / PREDICTIONS_FILE
    partial = file.with_name(f".{file.name}.partial")
    table.to_csv(partial, index=False, float_format="%.6g")
    partial.replace(file)
    return file
