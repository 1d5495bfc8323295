"""Apply a trained model to a manifest: class probabilities and penultimate embeddings.

A model source is a run folder (``model.keras`` + ``run.json``, see :mod:`faceaudit.seams.run`), a bare
``.keras`` file following the model contract, or any model :mod:`faceaudit.models` runs (other Keras
models, legacy ``.h5``, SavedModel, TFLite, ONNX). The contract: float32 RGB [0, 255] input of size
``model.input_shape[1:3]``, a final softmax layer named ``<target>_probs`` with one unit per class of the label
schema (``race_probs``, 5 units for UTKFace; older models always say ``race_probs``) and a layer named
``embedding``. Run folders of the ``dlib-resnet`` backbone hold a head whose input is dlib's 128-d descriptors;
those are computed (or read from the cache) first. An ensemble's (:mod:`faceaudit.training.ensemble`) holds a
combiner of its members' predictions. The predictions table built from the probabilities is
:meth:`faceaudit.seams.predictions.PredictionsTable.from_probabilities`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.console import step
from faceaudit.errors import FaceauditError
from faceaudit.seams.run import MODEL_FILE, PREDICTIONS_FILE, RUN_FILE, RunRecord, resolve_model  # noqa: F401
from faceaudit.taxonomy import LabelSchema

EMBEDDING_LAYER = "embedding"


def load_model(model_file: Path):
    """Load a ``.keras`` file (without its optimizer, Python code refused) or fail with one line."""
    from faceaudit.models.keras_runtime import load_keras

    return load_keras(Path(model_file), "keras")


def probs_layer(model, schema: LabelSchema | None = None) -> str:
    """The name of the model's softmax layer: ``<target>_probs`` of the schema, else ``race_probs`` (models from
    before label schemas), else the one layer whose name ends in ``_probs``."""
    from faceaudit.models.keras_runtime import contract_probs

    name = contract_probs([layer.name for layer in model.layers], schema.target if schema is not None else None)
    if name is None:
        expected = f"{schema.target}_probs" if schema is not None else "<target>_probs"
        raise FaceauditError(f"model does not follow the contract: no layer named {expected!r}")
    return name


def contract_model(model, *, expect_images: bool = True, schema: LabelSchema | None = None):
    """A model mapping the input to ``[<target>_probs, embedding]``, after checking the model contract (with a
    schema: one probability per class of its target)."""
    import keras

    names = {layer.name for layer in model.layers}
    probs_name = probs_layer(model, schema)
    if EMBEDDING_LAYER not in names:
        raise FaceauditError(f"model does not follow the contract: no layer named {EMBEDDING_LAYER!r}")
    probs = model.get_layer(probs_name).output
    n_classes = len(schema.classes) if schema is not None else None
    shape = tuple(probs.shape[1:])
    if len(shape) != 1 or (n_classes is not None and shape != (n_classes,)) or (shape[0] or 0) < 2:
        expected = f"({n_classes},) for the classes of {schema.name}" if n_classes else "(classes,)"
        raise FaceauditError(f"model does not follow the contract: {probs_name!r} has shape {shape}, expected {expected}")
    shape = tuple(model.input_shape)
    if expect_images and (len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None):
        raise FaceauditError(f"model does not follow the contract: input shape {shape} is not (None, H, W, 3)")
    return keras.Model(model.inputs, [probs, model.get_layer(EMBEDDING_LAYER).output])


def predict(
    model_source: Path,
    manifest: pd.DataFrame,
    batch_size: int = 64,
    progress: bool = True,
    *,
    schema: LabelSchema | None = None,
    run: RunRecord | None = None,
    runtime=None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities [n, classes] in the schema's class order and embeddings [n, d] (None when the model
    exposes none) for every manifest row.

    ``schema`` defaults to the run's (UTKFace for runs recorded before schemas; a bare ``.keras`` file is checked
    for one probability layer only); ``run`` stands in for the folder's ``run.json`` (the trainer predicts before
    writing it). ``runtime`` is a :class:`faceaudit.models.runtime.Runtime` already loaded (any model format,
    see :func:`~faceaudit.models.loading.load_runtime`); its outputs, in its ``classes`` order, are put in the
    schema's class order."""
    if runtime is None:
        model_file, recorded = resolve_model(model_source)
        run = run or recorded
        if schema is None and run is not None:
            schema = run.schema
    if len(manifest) == 0:
        raise FaceauditError("nothing to predict: the manifest is empty")
    if runtime is None and run is not None and run.backbone == "ensemble":
        return _predict_ensemble(model_file, run, manifest, batch_size, progress, schema)
    if runtime is None and run is not None and run.backbone == "dlib-resnet":
        from faceaudit.models.dlib_features import descriptors

        model = load_model(model_file)
        inputs, _ = descriptors(manifest, run.dlib_framing or "align", progress=progress)
        both = contract_model(model, expect_images=False, schema=schema)
        probs, embeddings = both.predict(inputs, batch_size=batch_size, verbose=0,
                                         callbacks=_progress(len(manifest), batch_size, progress))
        return np.asarray(probs, dtype=np.float64), np.asarray(embeddings, dtype=np.float32)
    if runtime is None:
        from faceaudit.models.loading import load_runtime

        runtime = load_runtime(model_file, classes=schema.classes if schema is not None else None,
                               target=schema.target if schema is not None else None)
    data = runtime_dataset(runtime, manifest, batch_size)
    probs, embeddings = runtime.predict_dataset(data, len(manifest), progress)
    probs = np.asarray(probs, dtype=np.float64)
    if schema is not None and runtime.classes is not None and tuple(runtime.classes) != tuple(schema.classes) \
            and set(runtime.classes) == set(schema.classes):
        probs = probs[:, [runtime.classes.index(c) for c in schema.classes]]
    return probs, None if embeddings is None else np.asarray(embeddings, dtype=np.float32)


def _predict_ensemble(model_file: Path, run: RunRecord, manifest, batch_size: int, progress: bool, schema):
    """Class probabilities and embeddings of an ensemble run: each member's, then the combiner's."""
    from .ensemble import log_probs, member_folders

    features, embeddings = [], []
    for folder in member_folders(model_file.parent, run):
        probs, embedding = predict(folder, manifest, batch_size, progress, schema=schema)
        features.append(log_probs(probs))
        if embedding is not None:
            norms = np.linalg.norm(embedding, axis=1, keepdims=True)
            embeddings.append(embedding / np.where(norms > 0, norms, 1.0))
    combiner = contract_model(load_model(model_file), expect_images=False, schema=schema)
    inputs = np.concatenate(features, axis=1).astype(np.float32)
    if tuple(combiner.input_shape[1:]) != inputs.shape[1:]:
        raise FaceauditError(f"{model_file} combines {combiner.input_shape[-1]} log-probabilities, but its "
                             f"{len(features)} members give {inputs.shape[1]}")
    probs, _ = combiner.predict(inputs, batch_size=4096, verbose=0)
    return (np.asarray(probs, dtype=np.float64),
            np.concatenate(embeddings, axis=1).astype(np.float32) if embeddings else None)


def runtime_dataset(runtime, manifest: pd.DataFrame, batch_size: int = 64):
    """The manifest's images as a runtime takes them: its input size, resized the way its contract says."""
    from faceaudit.datasets.tfdata import image_dataset

    spec = runtime.input_spec
    return image_dataset(manifest, runtime.input_size, batch_size, with_labels=False, resize=spec.resize,
                         antialias=spec.antialias)


def predict_heads(runtime, manifest: pd.DataFrame, batch_size: int = 64, progress: bool = True
                  ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Every contract head's raw output on the manifest's images (one inference pass), and the embeddings."""
    if len(manifest) == 0:
        raise FaceauditError("nothing to predict: the manifest is empty")
    with step("inference", detail=_images(manifest), enabled=progress, bar=False):  # the runtime draws the bar
        raws, embeddings = runtime.predict_heads(runtime_dataset(runtime, manifest, batch_size), len(manifest),
                                                 progress)
    return raws, None if embeddings is None else np.asarray(embeddings, dtype=np.float32)


def load_run_dataset(run: RunRecord, data: Path | str | None = None, *, progress: bool = True, purpose: str):
    """The dataset a run was trained on (``data``, else the source ``run.json`` names), with the run's label schema,
    age bands and exclusion list, so its splits are the run's own; one line naming ``purpose`` when it is missing."""
    from faceaudit.datasets.manifest import load_dataset

    source = data or (run.data or {}).get("source")
    if not source:
        raise FaceauditError(f"{purpose} needs the run's images, but run.json names no data source; pass --data")
    if not Path(source).exists():
        raise FaceauditError(f"{purpose} needs the run's images: {source}"
                             f"{'' if data else ' (from run.json)'} does not exist; pass --data")
    exclude = (run.hyperparameters or {}).get("exclude")
    schema = run.schema
    return load_dataset(Path(source), exclude=Path(exclude) if exclude and Path(exclude).exists() else None,
                        age_bands=schema.age_bands, progress=progress, schema=schema)


def _images(manifest: pd.DataFrame) -> str:
    """``2,133 test images``: what an inference step runs on (its split, where the rows share one)."""
    splits = manifest["split"].unique() if "split" in manifest.columns else []
    split = f"{splits[0]} " if len(splits) == 1 else ""
    return f"{len(manifest):,} {split}image{'s' * (len(manifest) != 1)}"


def _progress(n: int, batch_size: int, progress: bool) -> list:
    """Our one tqdm bar over the prediction batches (shown on a terminal only), instead of Keras's own."""
    if not progress:
        return []
    from faceaudit.console import keras_bar

    return [keras_bar(-(-n // batch_size), f"predicting {n:,} images")]


def predict_table(
    model_source: Path,
    manifest: pd.DataFrame,
    batch_size: int = 64,
    progress: bool = True,
    *,
    schema: LabelSchema | None = None,
    run: RunRecord | None = None,
    runtime=None,
):
    """The predictions table of a model on labelled manifest rows, and the embeddings (rows aligned; None when the
    model exposes none).

    The table is built by :meth:`PredictionsTable.from_probabilities` with ``schema``, else the run's schema, else
    UTKFace's (a bare model file). ``runtime`` as for :func:`predict`."""
    from faceaudit.seams.predictions import PredictionsTable
    from faceaudit.taxonomy import UTKFACE

    if schema is None:
        recorded = run or (resolve_model(model_source)[1] if runtime is None else None)
        schema = recorded.schema if recorded is not None else UTKFACE
    with step("inference", detail=_images(manifest), enabled=progress, bar=False):  # predict draws the bar
        probs, embeddings = predict(model_source, manifest, batch_size, progress, schema=schema, run=run,
                                    runtime=runtime)
    return PredictionsTable.from_probabilities(manifest, probs, schema), embeddings


def read_head(head, raw: np.ndarray, rows: pd.DataFrame, schema: LabelSchema, *, sum_tolerance: float = 5e-3):
    """One contract head's raw output on manifest ``rows`` as its predictions table (classes mapped to the schema's,
    or ages in years), with what was done to the output (``steps``) and any output that contradicts the contract
    (``checks``, for :mod:`faceaudit.auditing.sanity`)."""
    from faceaudit.seams.predictions import PredictionsTable

    raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    checks: list[dict] = []
    if not np.isfinite(raw).all():
        raise FaceauditError(f"the model's {head.target} output has NaN or infinite values for "
                             f"{int((~np.isfinite(raw)).any(axis=1).sum())} of {len(raw)} images")
    if head.regression:
        return PredictionsTable.from_age_predictions(rows, head.read(raw), schema), head.steps(), checks
    labels = head.labels(schema.classes, schema.attribute(schema.target).normalise)
    steps = head.steps(labels)
    if head.kind == "softmax":
        sums = raw.sum(axis=1)
        off = np.abs(sums - 1) > sum_tolerance
        if off.any():
            fix = "softmax applied" if (raw < 0).any() else "rows rescaled to sum to 1"
            checks.append({"check": "not_probabilities",
                           "message": f"the {head.target} output was declared softmax but its rows sum to "
                                      f"{sums.min():.3g}-{sums.max():.3g}, not 1, for {off.mean():.0%} of faces ({fix})",
                           "likely_cause": "the output is logits (kind = 'logits') or the contract names the wrong "
                                           "output"})
            raw = _softmax_rows(raw) if (raw < 0).any() else raw / np.where(sums > 0, sums, 1)[:, None]
            steps.append(f"{head.target}: {fix} (declared softmax did not sum to 1)")
        elif (np.abs(sums - 1) > 1e-6).any():
            raw = raw / sums[:, None]
    if head.kind == "sigmoid" and ((raw < 0) | (raw > 1)).any():
        checks.append({"check": "not_probabilities",
                       "message": f"the {head.target} output was declared sigmoid but has values from "
                                  f"{raw.min():.3g} to {raw.max():.3g} (sigmoid applied)",
                       "likely_cause": "the output is a logit: the model's last layer has no sigmoid"})
        raw = 1 / (1 + np.exp(-raw))
        steps.append(f"{head.target}: sigmoid applied (declared sigmoid was outside 0-1)")
    probs = head.read(raw, schema.classes, labels)
    unmapped = [c for c in schema.classes if c not in labels]
    if unmapped:
        steps.append(f"{head.target}: no output for {', '.join(unmapped)} (probability 0)")
    return PredictionsTable.from_probabilities(rows, probs, schema), steps, checks


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
