"""The whole flow as Python calls: load a dataset, train a classifier, audit a model on data.

These compose the packages (datasets -> training -> predictions table -> audit) without those packages knowing
each other; ``faceaudit.audit`` (auditing a predictions table) needs none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faceaudit.config import DEFAULT_SEED, data_from_env
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import LabelSchema, get_schema


def load_dataset(source: str | Path, *, schema: LabelSchema | str | None = None, **options: Any):
    """Labelled face images (a UTKFace folder or ``.tar.gz``, or a labelled CSV/Parquet such as FairFace's
    ``file,age,gender,race``) as a :class:`~faceaudit.datasets.manifest.Dataset`: manifest, splits, exclusions.
    ``options`` as for :func:`faceaudit.datasets.manifest.load_dataset` (``age_bands``, ``seed``, ``exclude``...)."""
    from faceaudit.datasets.manifest import load_dataset as load

    if not isinstance(source, (str, Path)):
        raise FaceauditError(f"source must be a path to a folder, archive or labelled table, got {type(source).__name__}")
    return load(Path(source), schema=get_schema(schema), **options)


def train(data: str | Path, out: str | Path, *, backbone: str = "cnn", schema: LabelSchema | str | None = None,
          **options: Any) -> Path:
    """Train a classifier of the schema's target on ``data`` into the run folder ``out`` (``model.keras``,
    ``run.json``, ``history.json``, ``predictions.csv``); ``options`` are :class:`TrainConfig` fields (``epochs``,
    ``image_size``, ``batch_size``...). Needs ``faceaudit[train]``."""
    from faceaudit.extras import require

    require("tensorflow", "train", "training")
    from faceaudit.training.config import TrainConfig
    from faceaudit.training.trainer import train as run_training

    return run_training(TrainConfig(data=Path(data), out=Path(out), backbone=backbone, schema=get_schema(schema),
                                    **options))


def audit_model(model: str | Path, data: Any = None, *, schema: LabelSchema | str | None = None,
                batch_size: int = 64, temperature: bool = True, seed: int = DEFAULT_SEED,
                dataset_options: dict | None = None, progress: bool = False, **audit_options: Any):
    """Run a model (a run folder or a ``.keras`` file) on the test split of ``data`` (a path or a loaded dataset;
    default ``$FACEAUDIT_DATA``) and audit its predictions; the validation split fits temperature scaling.
    ``dataset_options`` go to :func:`load_dataset` (``age_bands``, ``exclude``, ``columns``); ``audit_options`` to
    :func:`faceaudit.audit`. The schema is the run's (``run.json``) unless given. Needs ``faceaudit[train]``."""
    from faceaudit.extras import require

    require("tensorflow", "train", "running a Keras model")
    from faceaudit.audit import audit
    from faceaudit.datasets.manifest import Dataset, describe_image_problems
    from faceaudit.datasets.sources import file_sha256
    from faceaudit.seams.run import resolve_model
    from faceaudit.training.inference import predict_table

    source = Path(model)
    model_file, run = resolve_model(source)
    if schema is None and run is not None and run.label_schema:
        schema = LabelSchema.from_dict(run.label_schema)
    schema = get_schema(schema)
    if data is None:
        data = data_from_env()
        if data is None:
            raise FaceauditError("no data: pass data (a UTKFace folder or archive) or set $FACEAUDIT_DATA")
    if isinstance(data, Dataset):
        dataset = data
    else:
        dataset = load_dataset(data, schema=schema, **{"seed": seed, **(dataset_options or {})})
    notes = [note] if (note := describe_image_problems(dataset)) else []
    test = dataset.split("test")
    if test.empty:
        raise FaceauditError(f"the test split of {dataset.source} is empty: nothing to audit")
    predictions, embeddings = predict_table(source, test, batch_size, progress, schema=schema, run=run)
    val = None
    val_rows = dataset.split("val")
    if temperature and not val_rows.empty:
        val = predict_table(source, val_rows, batch_size, progress, schema=schema, run=run)[0]
    is_run = source.is_dir()
    info = {"name": run.name if run is not None else model_file.stem, "kind": "run" if is_run else "keras",
            "source": str(source.resolve()), "backbone": None if run is None else run.backbone,
            "run_hash": file_sha256(model_file), "synthetic": bool(dataset.synthetic),
            "run": None if run is None else run.facts()}
    data_info = {"source": str(dataset.source), "fingerprint": dataset.fingerprint, "split": "test",
                 "n": len(predictions), "synthetic": dataset.synthetic, "predictions_sha256": None, "notes": notes}
    result = audit(predictions, val=val, embeddings=embeddings, embedding_source="model", model=info,
                   data=data_info, seed=seed, temperature=temperature, progress=progress, **audit_options)
    result.warnings[:0] = notes
    return result
