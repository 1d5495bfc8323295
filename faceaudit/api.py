"""The whole flow as Python calls: load a dataset, train a classifier, audit a model on data.

These compose the packages (datasets -> training -> predictions table -> audit) without those packages knowing
each other; ``faceaudit.audit`` (auditing a predictions table) needs none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceaudit.config import DEFAULT_SEED, data_from_env
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import LabelSchema, get_schema, name_list

if TYPE_CHECKING:
    from faceaudit.audit.result import AuditResult
    from faceaudit.seams.contract import ModelContract
    from faceaudit.seams.run import RunRecord
    from faceaudit.training.runtimes import Runtime

ContractLike = "str | Path | ModelContract | None"


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


def ensemble(runs: Sequence[str | Path], out: str | Path, *, combine: str = "auto", **options: Any) -> Path:
    """Combine finished runs of one data set and label schema into the ensemble run folder ``out`` (members copied,
    combiner fitted on their validation split); options as :func:`faceaudit.training.ensemble.build_ensemble`."""
    from faceaudit.extras import require

    require("tensorflow", "train", "ensembles")
    from faceaudit.training.ensemble import build_ensemble

    return build_ensemble(runs, out, combine=combine, **options)


def mitigate(run: str | Path, out: str | Path, *, method: str = "equal-recall", **options: Any) -> Path:
    """Write the run folder ``out``: ``run``'s model with per-class biases fitted on its validation split
    (``equal-recall`` within ``max_accuracy_drop``, or ``logit-adjust`` with ``tau``); options as
    :func:`faceaudit.training.mitigation.mitigate`."""
    from faceaudit.extras import require

    require("tensorflow", "train", "mitigation")
    from faceaudit.training.mitigation import mitigate as fit_and_write

    return fit_and_write(run, out, method=method, **options)


def predict(model: str | Path, data: Any = None, out: str | Path | None = None, **options: Any) -> Path:
    """Run a model on the test and validation splits of ``data`` into a folder of Parquet shards (what
    ``faceaudit predict`` writes and ``faceaudit.audit(folder)`` streams); ``engine="ray"`` runs it on Ray workers,
    one model per worker. Options as :func:`faceaudit.training.batch.predict_shards`; needs ``faceaudit[train]``
    (and ``faceaudit[distributed]`` for Ray)."""
    from faceaudit.extras import require

    require("tensorflow", "train", "running a model on images")
    from faceaudit.training.batch import predict_shards

    return predict_shards(model, data, out, **options)


def audit_model(model: str | Path, data: Any = None, *, schema: LabelSchema | str | None = None,
                batch_size: int = 64, temperature: bool = True, seed: int = DEFAULT_SEED,
                dataset_options: dict | None = None, progress: bool = False,
                output_layer: str | None = None, embedding_layer: str | None = None, input_size: int | None = None,
                preprocess: str | None = None, bgr: bool = False, classes: str | Sequence[str] | None = None,
                contract: ContractLike = None, **audit_options: Any):
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
    (and ``faceaudit[onnx]`` for ONNX models).

    ``contract`` (a ``model.toml`` path or a :class:`~faceaudit.seams.contract.ModelContract`) states how to run a
    model faceaudit did not train: input, outputs and what they predict, provenance. A contract with several outputs
    needs ``target``; :func:`audit_heads` audits them all from one inference pass."""
    if contract is not None:
        if any(v is not None for v in (output_layer, input_size, preprocess, classes)) or bgr:
            raise FaceauditError("a contract states the input and outputs: leave output_layer, input_size, "
                                 "preprocess, bgr and classes unset (or edit the contract)")
        contract = as_contract(contract)
        target = audit_options.pop("target", None)
        if target is None and len(contract.outputs) > 1:
            raise FaceauditError(f"the contract has outputs for {', '.join(contract.targets)}: pass target=, or "
                                 "use faceaudit.audit_heads to audit every one")
        targets = [target] if target is not None else None
        return audit_heads(model, data, contract=contract, targets=targets, schema=schema, batch_size=batch_size,
                           temperature=temperature, seed=seed, dataset_options=dataset_options, progress=progress,
                           embedding_layer=embedding_layer, **audit_options)[target or contract.targets[0]]
    groups = audit_options.get("groups")
    opened = open_model(model, schema=schema, target=audit_options.get("target"),
                        groups=name_list(groups),
                        age_bands=(dataset_options or {}).get("age_bands"), classes=classes,
                        output_layer=output_layer, embedding_layer=embedding_layer, input_size=input_size,
                        preprocess=preprocess, bgr=bgr, gates=audit_options.get("gates"))
    source, schema, run, runtime = opened.source, opened.schema, opened.run, opened.runtime
    from faceaudit.audit import audit
    from faceaudit.training.inference import predict_table

    dataset, test, notes = _load_test_data(data, schema, seed, dataset_options)
    predictions, embeddings = predict_table(source, test, batch_size, progress, schema=schema, run=run,
                                            runtime=runtime)
    val = None
    val_rows = dataset.split("val")
    if temperature and not val_rows.empty:
        val = predict_table(source, val_rows, batch_size, progress, schema=schema, run=run, runtime=runtime)[0]
    info = opened.info(synthetic=bool(dataset.synthetic))
    if embeddings is None and runtime is not None:
        notes.append(f"no embeddings: {runtime.embedding_note or 'the model exposes no embedding layer'} "
                     "(pass --embedding-layer NAME where the model has one)")
    data_info = {"source": str(dataset.source), "fingerprint": dataset.fingerprint, "split": "test",
                 "n": len(predictions), "synthetic": dataset.synthetic, "predictions_sha256": None, "notes": notes}
    result = audit(predictions, val=val, embeddings=embeddings, embedding_source="model", model=info,
                   data=data_info, seed=seed, temperature=temperature, progress=progress, **audit_options)
    result.warnings[:0] = notes
    return result


def as_contract(contract: ContractLike) -> ModelContract:
    """A contract from a ``model.toml`` path, or itself."""
    from faceaudit.seams.contract import ModelContract, load_contract

    if isinstance(contract, ModelContract):
        return contract
    if isinstance(contract, (str, Path)):
        return load_contract(Path(contract))
    raise FaceauditError(f"contract must be a model.toml path or a ModelContract, got {type(contract).__name__}")


def _load_test_data(data: Any, schema: LabelSchema, seed: int, dataset_options: dict | None):
    """The dataset to audit on (a path, a loaded dataset, or ``$FACEAUDIT_DATA``), its test rows and notes."""
    from faceaudit.datasets.manifest import Dataset, describe_image_problems

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
    return dataset, test, notes


def audit_heads(model: str | Path, data: Any = None, *, contract: ContractLike, targets: Sequence[str] | None = None,
                schema: LabelSchema | str | None = None, batch_size: int = 64, temperature: bool = True,
                seed: int = DEFAULT_SEED, dataset_options: dict | None = None, progress: bool = False,
                embedding_layer: str | None = None, **audit_options: Any) -> dict[str, AuditResult]:
    """Audit every output a model contract names (or those of ``targets``) from one inference pass over the test
    split of ``data``: ``{target: AuditResult}``, in the contract's order. Class outputs are audited as classifiers
    of their target (classes mapped to the label schema's as the contract states), an age output as a regressor
    (mean absolute error, bias, share within 5 years). Each result's model block records the contract, what was done
    to the outputs (``steps``), the contract sanity checks (``sanity``) and any training-data overlap. Other
    options as for :func:`audit_model`."""
    from faceaudit.audit import audit, sanity
    from faceaudit.audit import overlap as overlap_mod
    from faceaudit.training.inference import predict_heads, read_head

    contract = as_contract(contract)
    heads = list(contract.outputs)
    if targets is not None:
        heads = [contract.head(t) for t in targets]
    groups = name_list(audit_options.pop("groups", None))
    audit_options.pop("target", None)
    opened = open_model(model, schema=schema, age_bands=(dataset_options or {}).get("age_bands"),
                        contract=contract, embedding_layer=embedding_layer)
    base = opened.schema
    head_schemas = {h.target: base.with_options(target=h.target, groups=groups) for h in heads}
    if audit_options.get("gates") is not None:
        from faceaudit.audit.api import load_gates
        from faceaudit.audit.gates import check_gates

        found, _, source_name = load_gates(audit_options["gates"])
        for head_schema in head_schemas.values():
            check_gates(found, head_schema, source_name or "gates")
    dataset, test, notes = _load_test_data(data, base, seed, dataset_options)
    runtime = opened.runtime
    raws, embeddings = predict_heads(runtime, test, batch_size, progress)
    val_rows = dataset.split("val")
    classifiers = [h for h in heads if not h.regression]
    val_raws = (predict_heads(runtime, val_rows, batch_size, progress)[0]
                if temperature and classifiers and not val_rows.empty else None)
    overlap = overlap_mod.training_overlap(contract, test, str(dataset.source))
    if embeddings is None and classifiers:
        notes.append(f"no embeddings: {runtime.embedding_note or 'the model exposes no embedding layer'} "
                     "(set embedding_layer in the contract's [model] where the model has one)")
    results = {}
    tolerance = runtime.sum_tolerance
    for head in heads:
        position = contract.targets.index(head.target)
        head_schema = head_schemas[head.target]
        table, steps, checks = read_head(head, raws[position], test, head_schema, sum_tolerance=tolerance)
        val = None
        if val_raws is not None and not head.regression:
            val = read_head(head, val_raws[position], val_rows, head_schema, sum_tolerance=tolerance)[0]
        checks += _sanity_checks(head, table, head_schema)
        info = opened.info(synthetic=bool(dataset.synthetic))
        info.update({"name": opened.name if len(contract.outputs) == 1 else f"{opened.name}-{head.target}",
                     "contract": contract.to_dict(), "head": head.target, "steps": steps,
                     "sanity": sanity.summarise(checks, len(table)), "overlap": overlap})
        data_info = {"source": str(dataset.source), "fingerprint": dataset.fingerprint, "split": "test",
                     "n": len(table), "synthetic": dataset.synthetic, "predictions_sha256": None,
                     "notes": list(notes)}
        result = audit(table, val=val, embeddings=None if head.regression else embeddings, embedding_source="model",
                       model=info, data=data_info,
                       seed=seed, temperature=temperature and not head.regression, progress=progress,
                       **audit_options)
        result.warnings[:0] = list(notes)
        results[head.target] = result
    return results


def _sanity_checks(head, table, schema: LabelSchema) -> list[dict]:
    """The contract sanity checks of one head's predictions (:mod:`faceaudit.audit.sanity`)."""
    from faceaudit.audit import sanity

    if head.regression:
        return sanity.check_regressor(table.true_age, table.pred_age)
    return sanity.check_classifier(table.y_true, table.y_pred, table.probabilities, list(schema.classes))


def check_model(model: str | Path, data: Any = None, *, contract: ContractLike, n: int = 200,
                schema: LabelSchema | str | None = None, seed: int = DEFAULT_SEED,
                dataset_options: dict | None = None, batch_size: int = 64) -> dict[str, dict]:
    """Run a model on ``n`` test images (a seeded sample) and say, per contract output, whether the contract looks
    right: ``{target: {"n", "summary", "steps", "sanity"}}``; seconds, not minutes, before a full audit."""
    import numpy as np

    from faceaudit.audit import sanity
    from faceaudit.training.inference import predict_heads, read_head

    if isinstance(n, bool) or not isinstance(n, int) or n < 20:
        raise FaceauditError(f"the check needs at least 20 images (got {n!r})")
    contract = as_contract(contract)
    opened = open_model(model, schema=schema, age_bands=(dataset_options or {}).get("age_bands"), contract=contract)
    _, test, _ = _load_test_data(data, opened.schema, seed, dataset_options)
    rows = test.sample(n=min(n, len(test)), random_state=seed).sort_values("image_id").reset_index(drop=True)
    raws, _ = predict_heads(opened.runtime, rows, batch_size, progress=False)
    out = {}
    for position, head in enumerate(contract.outputs):
        head_schema = opened.schema.with_options(target=head.target)
        table, steps, checks = read_head(head, raws[position], rows, head_schema,
                                         sum_tolerance=opened.runtime.sum_tolerance)
        checks += _sanity_checks(head, table, head_schema)
        if head.regression:
            true, pred = table.true_age, table.pred_age
            summary = (f"mean absolute error {abs(pred - true).mean():.1f} years, mean error "
                       f"{(pred - true).mean():+.1f}, predicted ages {pred.min():.0f}-{pred.max():.0f} "
                       f"(true {true.min():.0f}-{true.max():.0f})")
        else:
            shares = np.bincount(table.y_pred, minlength=len(head_schema.classes)) / len(table)
            summary = (f"accuracy {(table.y_true == table.y_pred).mean():.1%}; predicted "
                       + ", ".join(f"{c} {s:.0%}" for c, s in zip(head_schema.classes, shares)))
        out[head.target] = {"n": len(table), "summary": summary, "steps": steps,
                            "sanity": sanity.summarise(checks, len(table))}
    return out


@dataclass
class OpenedModel:
    """A model resolved and loaded the one way every command runs it: its files, label schema and runtime."""

    source: Path
    model_file: Path
    run: RunRecord | None
    exported: dict | None
    schema: LabelSchema
    #: The ``classes``/contract options :func:`faceaudit.training.runtimes.load_runtime` was given (to load again).
    runtime_options: dict
    #: None for runs whose model does not take images (dlib-resnet heads, ensembles), run by
    #: :func:`faceaudit.training.inference.predict` itself.
    runtime: Runtime | None

    @property
    def image_model(self) -> bool:
        """Whether a runtime runs the model on images (not a dlib-resnet head or an ensemble's combiner)."""
        return self.run is None or self.run.image_model

    def info(self, *, synthetic: bool) -> dict:
        """What audit.json (and predict.json) record of the model; after predicting, so the runtime can tell how
        its outputs were read."""
        from faceaudit.training.runtimes import source_sha256

        run, exported, runtime = self.run, self.exported, self.runtime
        is_run = self.source.is_dir() and self.model_file != self.source
        fmt = runtime.format if runtime is not None else "keras"
        return {"name": self.name,
                "kind": "run" if is_run else fmt, "format": fmt,
                "source": str(self.source.resolve()), "backbone": run.backbone if run is not None
                else ((exported or {}).get("source_model") or {}).get("backbone"),
                "run_hash": source_sha256(self.model_file), "synthetic": synthetic,
                "run": None if run is None else run.facts(),
                "runtime": None if runtime is None else runtime.describe(),
                "export": None if exported is None else {k: exported.get(k) for k in (
                    "format", "quantization", "quantization_detail", "total_bytes", "source_model", "exported_at")}}

    @property
    def name(self) -> str:
        """The run's name, else the file's; an export of a run adds its format and quantisation (output folders
        are named after it)."""
        contract = self.runtime_options.get("contract")
        name = self.run.name if self.run is not None else (self.model_file.stem or self.model_file.name)
        if contract is not None and contract.name and self.run is None:
            name = contract.name
        if self.exported is not None:
            source_run = (self.exported.get("source_model") or {}).get("run") or name
            quantization = self.exported.get("quantization")
            name = "-".join(p for p in (source_run, self.exported["format"],
                                        None if quantization == "none" else quantization) if p)
        return name


def open_model(model: str | Path, *, schema: LabelSchema | str | None = None, target: str | None = None,
               groups: Sequence[str] | None = None, age_bands: Any = None,
               classes: str | Sequence[str] | None = None, output_layer: str | None = None,
               embedding_layer: str | None = None, input_size: int | None = None, preprocess: str | None = None,
               bgr: bool = False, gates: Any = None, contract: ModelContract | None = None) -> OpenedModel:
    """Resolve a run folder or model file, settle its label schema (given, else the run's or export's, shaped by
    ``target``, ``groups``, ``age_bands`` and ``classes``) and load its runtime once, so that auditing and batch
    prediction open a model the same way. ``gates`` are checked against the schema before the model loads. With a
    ``contract`` the runtime reads every output it names (and the model file must match its ``sha256``)."""
    from faceaudit.extras import require
    from faceaudit.seams.run import resolve_model

    source = Path(model)
    model_file, run = resolve_model(source)
    require("tensorflow", "train", "running a model on images")  # images are read by tf.data for every format
    from faceaudit.training.export import read_manifest
    from faceaudit.training.runtimes import load_runtime

    exported = read_manifest(model_file)
    if schema is None and run is not None and run.label_schema:
        schema = LabelSchema.from_dict(run.label_schema)
    if schema is None and exported is not None and exported.get("label_schema"):
        schema = LabelSchema.from_dict(exported["label_schema"])
    schema = get_schema(schema)
    # The target, groups and age bands asked for shape the classes the model is run for and the predictions' bands.
    schema = schema.with_options(target=target, groups=None if groups is None else tuple(groups), age_bands=age_bands)
    names = _class_list(classes)
    if gates is not None:  # a gate the audit could not judge is refused before the model runs
        from faceaudit.audit.api import load_gates
        from faceaudit.audit.gates import check_gates

        found, _, source_name = load_gates(gates)
        check_gates(found, schema, source_name or "gates")
    if names is not None and set(names) != set(schema.classes):
        schema = schema.with_classes(names)
    options = {"classes": names or schema.classes, "output_layer": output_layer, "embedding_layer": embedding_layer,
               "input_size": input_size, "preprocess": preprocess, "bgr": bgr, "target": schema.target}
    if contract is not None:
        from faceaudit.training.runtimes import source_sha256

        if contract.sha256 is not None and source_sha256(model_file) != contract.sha256:
            raise FaceauditError(f"{model_file.name} is not the model the contract describes: its SHA-256 differs "
                                 f"from [model] sha256 = {contract.sha256[:12]}...")
        options = {"classes": None, "output_layer": None, "embedding_layer": embedding_layer,
                   "input_size": input_size, "preprocess": None, "bgr": False, "target": None, "contract": contract}
    opened = OpenedModel(source, model_file, run, exported, schema, options, runtime=None)
    if opened.image_model:
        opened.runtime = load_runtime(model_file, **options)
    return opened


def _class_list(classes: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--classes A,B,C`` (or a list) as class names, checked."""
    names = name_list(classes)
    if names is None:
        return None
    if len(names) < 2:
        raise FaceauditError("--classes needs at least two class names, e.g. White,Black,Asian,Indian,Others")
    if len(set(names)) != len(names):
        raise FaceauditError(f"--classes names a class twice: {','.join(names)}")
    return names
