"""The whole flow as Python calls: load a dataset, train a classifier, audit a model on data.

These compose the packages (datasets -> training -> predictions table -> audit) without those packages knowing
each other; ``faceaudit.audit`` (auditing a predictions table) needs none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceaudit.config import (
    DEFAULT_CI,
    DEFAULT_INCONCLUSIVE,
    DEFAULT_MIN_TEST_SIZE,
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    data_from_env,
)
from faceaudit.console import step
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import DEFAULT_AGE_BANDS, AgeBands, LabelSchema, get_schema, name_list
from faceaudit.validation import (
    PARAMETERS,
    Boolean,
    Interval,
    InvalidParameterError,
    Options,
    PathLike,
    Text,
    check,
    validate_params,
)

if TYPE_CHECKING:
    from faceaudit.auditing.api import GatesLike
    from faceaudit.auditing.result import AuditResult
    from faceaudit.datasets.manifest import ColumnMap, Dataset
    from faceaudit.seams.contract import ModelContract

ContractLike = "str | Path | ModelContract | None"


@validate_params
def load_dataset(source: str | Path, *, schema: LabelSchema | str | None = None, age_bands: AgeBands | str | None = None,
                 seed: int = DEFAULT_SEED, exclude: str | Path | None = None, columns: ColumnMap | None = None,
                 progress: bool = True) -> Dataset:
    """Labelled face images (a UTKFace folder or ``.tar.gz``, or a labelled CSV/Parquet such as FairFace's
    ``file,age,gender,race``) as a :class:`~faceaudit.datasets.manifest.Dataset`: manifest, splits, exclusions.

    ``schema`` names the labels (default UTKFace's); ``age_bands`` how ages are banded (a spec such as
    ``"0-9,10-19,...,70+"`` or a preset); ``seed`` fixes the train/val/test split; ``exclude`` is an exclusion list
    (``image_id,reason``, e.g. from ``faceaudit data inspect``); ``columns`` maps a labelled table's column names."""
    from faceaudit.datasets.manifest import ColumnMap
    from faceaudit.datasets.manifest import load_dataset as load

    if not isinstance(source, (str, Path)):
        raise InvalidParameterError(f"source must be a path to a folder, archive or labelled table "
                                    f"(got {type(source).__name__})")
    return load(Path(source), schema=get_schema(schema), age_bands=age_bands, seed=seed,
                exclude=None if exclude is None else Path(exclude), columns=columns or ColumnMap(), progress=progress)


@validate_params(backbone=Text(), weights=Text(), alpha=[Interval(Real, 0, None, closed="neither"), None],
                 image_size=[Interval(Integral, 1, None), None], head_epochs=[Interval(Integral, 0, None), None],
                 epochs=Interval(Integral, 0, None), lr=Interval(Real, 0, None, closed="neither"),
                 finetune_lr=Interval(Real, 0, None, closed="neither"), weight_decay=Interval(Real, 0, None),
                 schedule=Options(("cosine", "plateau")), label_smoothing=Interval(Real, 0, 1, closed="left"),
                 class_weights=Boolean(), logit_adjust=Interval(Real, 0, None), augment=Boolean(),
                 rotation=Interval(Real, 0, 180), zoom=Interval(Real, 0, 1, closed="left"),
                 dropout=Interval(Real, 0, 1, closed="left"), embedding_dim=Interval(Integral, 1, None),
                 patience=Interval(Integral, 0, None), strategy=Options(("none", "mirrored", "multiworker")),
                 cpu_devices=Interval(Integral, 0, None), resume=Boolean(),
                 max_train=[Interval(Integral, 1, None), None], dlib_framing=Text(), deterministic=Boolean())
def train(data: str | Path | Dataset, out: str | Path, *, schema: LabelSchema | str | None = None,
          target: str | None = None, age_bands: str | None = None, exclude: str | Path | None = None,
          seed: int = DEFAULT_SEED, backbone: str = "cnn", weights: str = "none", alpha: float | None = None,
          image_size: int | None = None, head_epochs: int | None = None, epochs: int = 30, batch_size: int = 64,
          lr: float = 1e-3, finetune_lr: float = 1e-4, weight_decay: float = 1e-4, schedule: str = "cosine",
          label_smoothing: float = 0.1, class_weights: bool = False, logit_adjust: float = 0.0, augment: bool = True,
          rotation: float = 10.0, zoom: float = 0.1, dropout: float = 0.3, embedding_dim: int = 128,
          patience: int = 5, strategy: str = "none", cpu_devices: int = 0, resume: bool = False,
          max_train: int | None = None, dlib_framing: str = "align+mirror", deterministic: bool = True,
          progress: bool = True) -> Path:
    """Train a classifier of the schema's ``target`` on ``data`` (a path, or a dataset from :func:`load_dataset`)
    into the run folder ``out`` (``model.keras``, ``run.json``, ``history.json``, ``predictions.csv``) and return
    it. The keyword arguments are the fields of :class:`faceaudit.training.config.TrainConfig`, which says what each
    does and why its default (``backbone``: cnn, mobilenetv2, ..., dlib-resnet; ``epochs`` whole-network epochs;
    ``head_epochs`` with the backbone frozen; ``lr``/``finetune_lr``; ``seed`` for order, augmentation and
    initialisation; ``age_bands`` None: faceaudit's default bands). Needs ``faceaudit[train]``."""
    arguments = dict(locals())  # every keyword above is a TrainConfig field of the same name and meaning
    from faceaudit.extras import require

    require("tensorflow", "train", "training")
    from faceaudit.datasets.manifest import Dataset
    from faceaudit.training.config import TrainConfig
    from faceaudit.training.trainer import train as run_training

    dataset = data if isinstance(data, Dataset) else None
    source = Path(dataset.source) if dataset is not None else Path(check("data", data, PathLike()))
    settings = {k: v for k, v in arguments.items() if k in TrainConfig.__dataclass_fields__}
    settings.update(data=source, out=Path(out), schema=get_schema(schema), dataset=dataset,
                    age_bands=DEFAULT_AGE_BANDS if age_bands is None else age_bands,
                    exclude=None if exclude is None else Path(exclude))
    config = TrainConfig(**settings)
    config.label_schema()  # an unknown target fails here, before anything is written
    return run_training(config)


@validate_params(combine=Options(("auto", "mean", "weighted", "stack")))
def ensemble(runs: Sequence[str | Path], out: str | Path, *, data: str | Path | None = None, combine: str = "auto",
             batch_size: int = 64, progress: bool = True) -> Path:
    """Combine finished runs (two or more run folders of one data set and label schema) into the ensemble run
    folder ``out``: members copied, combiner fitted on their shared validation split (``combine``: ``mean`` of
    log-probabilities, ``weighted``, ``stack`` (multinomial logistic regression) or ``auto``, the lower
    cross-validated log loss). ``data`` is the members' images (default: what their run.json names). Needs
    ``faceaudit[train]``."""
    from faceaudit.extras import require

    require("tensorflow", "train", "ensembles")
    from faceaudit.training.ensemble import build_ensemble

    return build_ensemble(runs, out, combine=combine, data=data, batch_size=batch_size, progress=progress)


@validate_params(method=Options(("equal-recall", "logit-adjust")), tau=Interval(Real, 0, None),
                 max_accuracy_drop=Interval(Real, 0, 1, closed="left"))
def mitigate(run: str | Path, out: str | Path, *, data: str | Path | None = None, method: str = "equal-recall",
             max_accuracy_drop: float = 0.015, tau: float = 1.0, batch_size: int = 64, progress: bool = True) -> Path:
    """Write the run folder ``out``: ``run``'s model with per-class biases fitted on its validation split, either
    ``equal-recall`` (raise the lowest per-class recall while validation accuracy falls by at most
    ``max_accuracy_drop``, a share: 0.015 = 1.5 points) or ``logit-adjust`` (subtract ``tau`` x log training class
    frequency). ``data`` is the run's images (default: what its run.json names). Needs ``faceaudit[train]``."""
    from faceaudit.extras import require

    require("tensorflow", "train", "mitigation")
    from faceaudit.training.mitigation import mitigate as fit_and_write

    return fit_and_write(run, out, method=method, data=data, tau=tau, max_accuracy_drop=max_accuracy_drop,
                         batch_size=batch_size, progress=progress)


@validate_params
def predict(model: str | Path, data: str | Path | Dataset | None = None, out: str | Path | None = None, *,
            schema: LabelSchema | str | None = None, target: str | None = None, seed: int = DEFAULT_SEED,
            splits: Sequence[str] | None = ("test", "val"), engine: str = "local", workers: int | None = None,
            shard_size: int = 50_000, batch_size: int = 64, dataset_options: dict | None = None,
            progress: bool = False, output_layer: str | None = None, embedding_layer: str | None = None,
            input_size: int | None = None, preprocess: str | None = None, bgr: bool = False,
            classes: str | Sequence[str] | None = None, verbose: bool = False) -> Path:
    """Run ``model`` on the ``splits`` of ``data`` (None: every row; default data ``$FACEAUDIT_DATA``) into a
    folder of Parquet shards of at most ``shard_size`` rows (what ``faceaudit predict`` writes and
    ``faceaudit.audit(folder)`` streams) and return it (default ``predictions/<model-name>``). ``engine="ray"``
    runs it on ``workers`` Ray workers, one model per worker. ``schema``, ``target``, ``seed``, ``batch_size``,
    ``dataset_options`` and the model options (``output_layer`` ... ``classes``) mean what they mean for
    :func:`audit_model`; ``verbose`` keeps Ray's own log lines. Needs ``faceaudit[train]`` (and
    ``faceaudit[distributed]`` for Ray)."""
    from faceaudit.extras import require

    require("tensorflow", "train", "running a model on images")
    from faceaudit.models.batch import predict_shards

    return predict_shards(model, data, out, engine=engine, workers=workers, shard_size=shard_size, splits=splits,
                          batch_size=batch_size, schema=schema, target=target, seed=seed,
                          dataset_options=dataset_options, progress=progress, verbose=verbose,
                          output_layer=output_layer,
                          embedding_layer=embedding_layer, input_size=input_size, preprocess=preprocess, bgr=bgr,
                          classes=classes)


@validate_params(baseline=[PathLike(), None])
def audit_model(model: str | Path, data: str | Path | Dataset | None = None, *, contract: ContractLike = None,
                schema: LabelSchema | str | None = None, target: str | None = None,
                groups: str | Sequence[str] | None = None, gates: GatesLike = None, ci: float = DEFAULT_CI,
                n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED, min_group_size: int | None = None,
                min_test_size: int = DEFAULT_MIN_TEST_SIZE, inconclusive: str = DEFAULT_INCONCLUSIVE,
                tsne: bool = True, temperature: bool = True, batch_size: int = 64,
                dataset_options: dict | None = None, progress: bool = False, output_layer: str | None = None,
                embedding_layer: str | None = None, input_size: int | None = None, preprocess: str | None = None,
                bgr: bool = False, classes: str | Sequence[str] | None = None, require_gates: bool = False,
                baseline: str | Path | None = None) -> AuditResult:
    """Run a model on the test split of ``data`` (a path or a loaded dataset; default ``$FACEAUDIT_DATA``) and audit
    its predictions; the validation split fits temperature scaling. The model is a run folder, a ``.keras`` file, a
    legacy Keras ``.h5`` file, a TensorFlow SavedModel folder, a ``.tflite`` or an ``.onnx`` file (see
    :func:`faceaudit.models.loading.load_runtime`); for a model without faceaudit's layer names, ``output_layer``
    names the class-probability output (needed when several fit), ``embedding_layer`` the embedding layer or output,
    ``input_size`` the image size (when the model does not fix it), ``preprocess`` what the model expects
    (``raw`` [0, 255] as faceaudit's models, ``0-1``, ``-1-1``, ``caffe``, ``torch``), ``bgr`` the channel order and
    ``classes`` (``"A,B,C"`` or a list) the class of each output unit in order (default: the schema's).
    ``dataset_options`` go to :func:`load_dataset` (``age_bands``, ``exclude``, ``columns``). The schema is the
    run's (``run.json``) unless given. Needs ``faceaudit[train]``
    (and ``faceaudit[onnx]`` for ONNX models).

    ``contract`` (a ``model.toml`` path or a :class:`~faceaudit.seams.contract.ModelContract`) states how to run a
    model faceaudit did not train: input, outputs and what they predict, provenance. A contract with several outputs
    needs ``target``; :func:`audit_heads` audits them all from one inference pass.

    ``schema``, ``target``, ``groups``, ``gates``, ``ci``, ``n_boot``, ``seed``, ``min_group_size``,
    ``min_test_size``, ``inconclusive``, ``tsne``, ``temperature``, ``require_gates`` and ``baseline`` mean what
    they mean for :func:`faceaudit.audit` (``seed`` also fixes the split; both of the last two are checked before
    the model runs); ``batch_size`` is inference's."""
    settings = {"gates": gates, "ci": ci, "n_boot": n_boot, "min_group_size": min_group_size,
                "min_test_size": min_test_size, "inconclusive": inconclusive, "tsne": tsne,
                "require_gates": require_gates}
    from faceaudit.auditing.api import load_baseline, load_gates, require_gated

    found_gates, _, gates_source = load_gates(gates)
    require_gated(found_gates, require_gates, gates_source)
    load_baseline(baseline, ci)
    if contract is not None:
        if any(v is not None for v in (output_layer, input_size, preprocess, classes)) or bgr:
            raise FaceauditError("a contract states the input and outputs: leave output_layer, input_size, "
                                 "preprocess, bgr and classes unset (or edit the contract)")
        contract = as_contract(contract)
        if target is None and len(contract.outputs) > 1:
            raise FaceauditError(f"the contract has outputs for {', '.join(contract.targets)}: pass target=, or "
                                 "use faceaudit.audit_heads to audit every one")
        targets = [target] if target is not None else None
        result = audit_heads(model, data, contract=contract, targets=targets, schema=schema, groups=groups,
                             seed=seed, temperature=temperature, batch_size=batch_size,
                             dataset_options=dataset_options, progress=progress, embedding_layer=embedding_layer,
                             **settings)[target or contract.targets[0]]
        from faceaudit.auditing.api import attach_baseline

        return attach_baseline(result, load_baseline(baseline, ci), baseline)
    from faceaudit.models.opening import open_model

    with step("model", detail=Path(model).name, enabled=progress):
        opened = open_model(model, schema=schema, target=target,
                            groups=name_list(groups),
                            age_bands=(dataset_options or {}).get("age_bands"), classes=classes,
                            output_layer=output_layer, embedding_layer=embedding_layer, input_size=input_size,
                            preprocess=preprocess, bgr=bgr, check_schema=_gates_check(gates))
    source, schema, run, runtime = opened.source, opened.schema, opened.run, opened.runtime
    from faceaudit.auditing import audit
    from faceaudit.models.inference import predict_table

    dataset, test, notes = _load_test_data(data, schema, seed, dataset_options, progress)
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
    result = audit(predictions, target=target, groups=groups, val=val, embeddings=embeddings,
                   embedding_source="model", model_info=info, data_info=data_info, seed=seed, temperature=temperature,
                   progress=progress, baseline=baseline, **settings)
    result.warnings[:0] = notes
    return result


def as_contract(contract: ContractLike) -> ModelContract:
    """A contract from a ``model.toml`` path, or itself."""
    from faceaudit.seams.contract import ModelContract, load_contract

    if isinstance(contract, ModelContract):
        return contract
    if isinstance(contract, (str, Path)):
        return load_contract(Path(contract))
    raise InvalidParameterError(f"contract must be a model.toml path or a ModelContract (got "
                                f"{type(contract).__name__})")


def _gates_check(gates: Any):
    """A check of the audit's gates against a model's settled schema (None without gates), which
    :func:`faceaudit.models.opening.open_model` runs before the model loads."""
    if gates is None:
        return None

    def check(schema: LabelSchema) -> None:
        from faceaudit.auditing.api import load_gates
        from faceaudit.auditing.gates import check_gates

        found, _, source_name = load_gates(gates)
        check_gates(found, schema, source_name or "gates")

    return check


def _load_test_data(data: Any, schema: LabelSchema, seed: int, dataset_options: dict | None, progress: bool = False):
    """The dataset to audit on (a path, a loaded dataset, or ``$FACEAUDIT_DATA``), its test rows and notes; with
    ``progress``, reading it is a console step."""
    from faceaudit.datasets.manifest import Dataset, describe_image_problems

    if data is None:
        data = data_from_env()
        if data is None:
            raise FaceauditError("no data: pass data (a UTKFace folder or archive) or set $FACEAUDIT_DATA")
    if isinstance(data, Dataset):
        dataset = data
    else:
        with step("data", detail=Path(data).name, enabled=progress, bar=False):  # its image check draws the bar
            dataset = load_dataset(data, schema=schema, progress=progress,
                                   **{"seed": seed, **(dataset_options or {})})
    notes = [note] if (note := describe_image_problems(dataset)) else []
    test = dataset.split("test")
    if test.empty:
        raise FaceauditError(f"the test split of {dataset.source} is empty: nothing to audit")
    return dataset, test, notes


@validate_params
def audit_heads(model: str | Path, data: str | Path | Dataset | None = None, *, contract: ContractLike,
                targets: Sequence[str] | None = None, schema: LabelSchema | str | None = None,
                groups: str | Sequence[str] | None = None, gates: GatesLike = None, ci: float = DEFAULT_CI,
                n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED, min_group_size: int | None = None,
                min_test_size: int = DEFAULT_MIN_TEST_SIZE, inconclusive: str = DEFAULT_INCONCLUSIVE,
                tsne: bool = True, temperature: bool = True, batch_size: int = 64,
                dataset_options: dict | None = None, progress: bool = False,
                embedding_layer: str | None = None, require_gates: bool = False) -> dict[str, AuditResult]:
    """Audit every output a model contract names (or those of ``targets``) from one inference pass over the test
    split of ``data``: ``{target: AuditResult}``, in the contract's order. Class outputs are audited as classifiers
    of their target (classes mapped to the label schema's as the contract states), an age output as a regressor
    (mean absolute error, bias, share within 5 years). Each result's model block records the contract, what was done
    to the outputs (``steps``), the contract sanity checks (``sanity``) and any training-data overlap. The other
    arguments mean what they mean for :func:`audit_model`."""
    settings = {"gates": gates, "ci": ci, "n_boot": n_boot, "min_group_size": min_group_size,
                "min_test_size": min_test_size, "inconclusive": inconclusive, "tsne": tsne,
                "require_gates": require_gates}
    from faceaudit.auditing.api import load_gates, require_gated

    found_gates, _, gates_source = load_gates(gates)
    require_gated(found_gates, require_gates, gates_source)
    from faceaudit.auditing import audit, sanity
    from faceaudit.auditing import overlap as overlap_mod
    from faceaudit.models.inference import predict_heads, read_head
    from faceaudit.models.opening import open_model

    contract = as_contract(contract)
    heads = list(contract.outputs)
    if targets is not None:
        heads = [contract.head(t) for t in targets]
    groups = name_list(groups)
    with step("model", detail=Path(model).name, enabled=progress):
        opened = open_model(model, schema=schema, age_bands=(dataset_options or {}).get("age_bands"),
                            contract=contract, embedding_layer=embedding_layer)
    base = opened.schema
    head_schemas = {h.target: base.with_options(target=h.target, groups=groups) for h in heads}
    if gates is not None:
        from faceaudit.auditing.api import load_gates
        from faceaudit.auditing.gates import check_gates

        found, _, source_name = load_gates(gates)
        for head_schema in head_schemas.values():
            check_gates(found, head_schema, source_name or "gates")
    dataset, test, notes = _load_test_data(data, base, seed, dataset_options, progress)
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
        result = audit(table, groups=groups, val=val, embeddings=None if head.regression else embeddings,
                       embedding_source="model", model_info=info, data_info=data_info, seed=seed,
                       temperature=temperature and not head.regression, progress=progress, **settings)
        result.warnings[:0] = list(notes)
        results[head.target] = result
    return results


def _sanity_checks(head, table, schema: LabelSchema) -> list[dict]:
    """The contract sanity checks of one head's predictions (:mod:`faceaudit.auditing.sanity`)."""
    from faceaudit.auditing import sanity

    if head.regression:
        return sanity.check_regressor(table.true_age, table.pred_age)
    return sanity.check_classifier(table.y_true, table.y_pred, table.probabilities, list(schema.classes))


@validate_params(n=PARAMETERS["check_size"])
def check_model(model: str | Path, data: str | Path | Dataset | None = None, *, contract: ContractLike,
                schema: LabelSchema | str | None = None, seed: int = DEFAULT_SEED, n: int = 200,
                batch_size: int = 64, dataset_options: dict | None = None) -> dict[str, dict]:
    """Run a model on ``n`` test images (a seeded sample) and say, per contract output, whether the contract looks
    right: ``{target: {"n", "summary", "steps", "sanity"}}``; seconds, not minutes, before a full audit."""
    import numpy as np

    from faceaudit.auditing import sanity
    from faceaudit.models.inference import predict_heads, read_head
    from faceaudit.models.opening import open_model

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
