"""The whole flow as Python calls: load a dataset, train a classifier, audit a model on data.

These compose the packages (datasets -> training -> predictions table -> audit) without those packages knowing
each other; ``faceaudit.audit`` (auditing a predictions table) needs none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
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
                dataset_options: dict | None = None, progress: bool = False,
                output_layer: str | None = None, embedding_layer: str | None = None, input_size: int | None = None,
                preprocess: str | None = None, bgr: bool = False, classes: str | Sequence[str] | None = None,
                **audit_options: Any):
    """Run a model on the test split of ``data`` (a path or a loaded dataset; default ``$FACEAUDIT_DATA``) and audit
    its predictions; the validation split fits temperature scaling. The model is a run folder, a ``.keras`` file, a
    legacy Keras ``.h5`` file, a TensorFlow SavedModel folder, a ``.tflite`` or an ``.onnx`` file (see
    :func:`faceaudit.training.runtimes.load_runtime`); for a model without faceaudit's layer names, ``output_layer``
    names the class-probability output (needed when several fit), ``embedding_layer`` the embedding layer or output,
    ``input_size`` the image size (when the model does not fix it), ``preprocess`` what the model expects
    (``raw`` [0, 255] as faceaudit's models, ``0-1``, ``-1-1``, ``caffe``, ``torch``), ``bgr`` the channel order and
    ``classes`` (``"A,B,C"`` or a list) the class of each output unit in order (default: the schema's).
    ``dataset_options`` go to :func:`load_dataset` (``age_bands``, ``exclude``, ``columns``); ``audit_options`` to
    :func:`faceaudit.audit`. The schema is the run's (``run.json``) unless given. Needs ``faceaudit[train]``
    (and ``faceaudit[onnx]`` for ONNX models)."""
    from faceaudit.extras import require
    from faceaudit.seams.run import resolve_model

    source = Path(model)
    model_file, run = resolve_model(source)
    require("tensorflow", "train", "running a model on images")  # images are read by tf.data for every format
    from faceaudit.audit import audit
    from faceaudit.datasets.manifest import Dataset, describe_image_problems
    from faceaudit.training.export import read_manifest
    from faceaudit.training.inference import predict_table
    from faceaudit.training.runtimes import load_runtime, source_sha256

    exported = read_manifest(model_file)
    if schema is None and run is not None and run.label_schema:
        schema = LabelSchema.from_dict(run.label_schema)
    if schema is None and exported is not None and exported.get("label_schema"):
        schema = LabelSchema.from_dict(exported["label_schema"])
    schema = get_schema(schema)
    groups = audit_options.get("groups")
    # The target, groups and age bands asked for shape the classes the model is run for and the predictions' bands.
    schema = schema.with_options(target=audit_options.get("target"),
                                 groups=tuple(groups.split(",")) if isinstance(groups, str) else groups,
                                 age_bands=(dataset_options or {}).get("age_bands"))
    names = _class_list(classes)
    if audit_options.get("gates") is not None:  # a gate the audit could not judge is refused before the model runs
        from faceaudit.audit.api import load_gates
        from faceaudit.audit.gates import check_gates

        found, _, source_name = load_gates(audit_options["gates"])
        check_gates(found, schema, source_name or "gates")
    if names is not None and set(names) != set(schema.classes):
        schema = schema.with_classes(names)
    dlib = run is not None and run.backbone == "dlib-resnet"
    runtime = None if dlib else load_runtime(
        model_file, classes=names or schema.classes, output_layer=output_layer, embedding_layer=embedding_layer,
        input_size=input_size, preprocess=preprocess, bgr=bgr, target=schema.target)
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
    predictions, embeddings = predict_table(source, test, batch_size, progress, schema=schema, run=run,
                                            runtime=runtime)
    val = None
    val_rows = dataset.split("val")
    if temperature and not val_rows.empty:
        val = predict_table(source, val_rows, batch_size, progress, schema=schema, run=run, runtime=runtime)[0]
    is_run = source.is_dir() and model_file != source
    fmt = runtime.format if runtime is not None else "keras"
    name = run.name if run is not None else (model_file.stem or model_file.name)
    if exported is not None:  # an export of a run: named after it, with the format and quantisation
        source_run = (exported.get("source_model") or {}).get("run") or name
        quantization = exported.get("quantization")
        name = "-".join(p for p in (source_run, exported["format"], None if quantization == "none" else quantization)
                        if p)
    info = {"name": name,
            "kind": "run" if is_run else fmt, "format": fmt,
            "source": str(source.resolve()), "backbone": run.backbone if run is not None
            else ((exported or {}).get("source_model") or {}).get("backbone"),
            "run_hash": source_sha256(model_file), "synthetic": bool(dataset.synthetic),
            "run": None if run is None else run.facts(),
            "runtime": None if runtime is None else runtime.describe(),
            "export": None if exported is None else {k: exported.get(k) for k in (
                "format", "quantization", "quantization_detail", "total_bytes", "source_model", "exported_at")}}
    if embeddings is None and runtime is not None:
        notes.append(f"no embeddings: {runtime.embedding_note or 'the model exposes no embedding layer'} "
                     "(pass --embedding-layer NAME where the model has one)")
    data_info = {"source": str(dataset.source), "fingerprint": dataset.fingerprint, "split": "test",
                 "n": len(predictions), "synthetic": dataset.synthetic, "predictions_sha256": None, "notes": notes}
    result = audit(predictions, val=val, embeddings=embeddings, embedding_source="model", model=info,
                   data=data_info, seed=seed, temperature=temperature, progress=progress, **audit_options)
    result.warnings[:0] = notes
    return result


def _class_list(classes: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--classes A,B,C`` (or a list) as class names, checked."""
    if classes is None:
        return None
    names = tuple(c.strip() for c in (classes.split(",") if isinstance(classes, str) else classes) if str(c).strip())
    if len(names) < 2:
        raise FaceauditError("--classes needs at least two class names, e.g. White,Black,Asian,Indian,Others")
    if len(set(names)) != len(names):
        raise FaceauditError(f"--classes names a class twice: {','.join(names)}")
    return names
