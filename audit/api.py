"""``faceaudit.audit(predictions)``: the one call that audits a predictions table, and the parts beneath it.

It validates the table (a DataFrame, a :class:`~faceaudit.seams.predictions.PredictionsTable` or a CSV/Parquet
file), splits off validation rows for temperature scaling, computes every grouping of the label schema with
intervals, and judges gates. Nothing is written until the result's ``.write(out)`` or ``.report(out)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from faceaudit.config import (
    DEFAULT_CI,
    DEFAULT_INCONCLUSIVE,
    DEFAULT_MIN_GROUP_SIZE,
    DEFAULT_MIN_TEST_SIZE,
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
)
from faceaudit.errors import FaceauditError
from faceaudit.seams.predictions import (
    PredictionsTable,
    check_embeddings,
    ignored_columns,
    load_embeddings,
    map_columns,
    read_shards_record,
    read_table,
    recorded_schema,
)
from faceaudit.taxonomy import AGE_TARGET, AgeBands, LabelSchema, get_schema, name_list
from faceaudit.validation import InstanceOf, PathLike, validate_params

from . import gates as gates_mod
from . import stream
from .engine import AuditSettings, compute_audit
from .overlap import split_leak
from .result import AuditResult

if TYPE_CHECKING:
    from .comparison import LoadedAudit

PredictionsLike = pd.DataFrame | PredictionsTable | str | Path
GatesLike = str | Path | dict | Sequence[gates_mod.Gate] | None


def _settings(*, n_boot: int, ci: float, seed: int, min_group_size: int, min_test_size: int, tsne: bool,
              inconclusive: str, progress: bool) -> AuditSettings:
    """The engine's settings from :func:`audit`'s arguments (checked by :func:`validate_params`), as plain Python
    numbers (a numpy integer or float32 level becomes an int or float)."""
    return AuditSettings(n_boot=int(n_boot), ci=float(ci), seed=int(seed), min_group_size=int(min_group_size),
                         min_test_size=int(min_test_size), tsne=bool(tsne), inconclusive=inconclusive,
                         progress=progress)


def load_gates(gates: GatesLike) -> tuple[list[gates_mod.Gate], int | None, str | None]:
    """Gates from a TOML file, a parsed TOML dict or a list of :class:`Gate`; with the file's ``min_group_size``
    and a name for the source."""
    if gates is None:
        return [], None, None
    if isinstance(gates, (str, Path)):
        found, min_size = gates_mod.load_gates(Path(gates))
        return found, min_size, str(gates)
    if isinstance(gates, dict):
        found, min_size = gates_mod.parse_gates(gates, source="gates")
        return found, min_size, "gates"
    found = list(gates)
    if not all(isinstance(g, gates_mod.Gate) for g in found):
        raise FaceauditError("gates must be a TOML file, a parsed TOML dict or a list of Gate")
    return found, None, "gates"


def require_gated(gate_list: Sequence[gates_mod.Gate], required: bool, source: str | None) -> None:
    """Refuse, before any work, an audit that would judge no gate when gates are required (``require_gates``,
    ``--require-gates``, $FACEAUDIT_REQUIRE_GATES): an ungated audit must not pass unnoticed."""
    if required and not gate_list:
        what = f"the gates {source} hold no gate" if source else "no gates were given"
        raise FaceauditError(f"gates are required (--require-gates or $FACEAUDIT_REQUIRE_GATES) but {what}: "
                             "pass --gates gates.toml (see faceaudit/gates.toml), or drop the requirement")


def load_baseline(baseline: Any, ci: float) -> LoadedAudit | None:
    """The baseline audit (``baseline=``, ``--baseline``) read and checked before any work, or None."""
    if baseline is None:
        return None
    from .comparison import check_baseline

    if ci < 0.5:
        raise FaceauditError(f"a baseline is compared at the audit's confidence level, which must be at least 0.5 "
                             f"(got ci={ci})")
    return check_baseline(baseline)


def attach_baseline(result: AuditResult, loaded: LoadedAudit | None, baseline: Any) -> AuditResult:
    """``result`` with its ``baseline`` record: the same family of tests as ``faceaudit diff BASELINE RESULT``."""
    if loaded is not None:
        from .comparison import baseline_of

        source = str(baseline) if isinstance(baseline, (str, Path)) else None
        result.baseline = baseline_of(result, loaded, level=result.settings.ci, source=source)
    return result


#: ``baseline=``: an earlier audit's folder or audit.json, or an :class:`AuditResult`.
BASELINE = [PathLike(), InstanceOf(AuditResult, name="an AuditResult"), None]


def split_rows(frame: pd.DataFrame, *, temperature: bool = True, allow_overlap: bool = False
               ) -> tuple[pd.DataFrame, pd.DataFrame | None, np.ndarray | None, list[str]]:
    """Test rows, validation rows (for temperature scaling) and the test-row mask of a table with a ``split``
    column; a ``split`` column without test rows audits every row, with a note saying so. A test image that is
    also a val or train row is refused (see :func:`split_overlap`) unless ``allow_overlap``, which notes it."""
    if "split" not in frame.columns:
        return frame, None, None, []
    split = frame["split"].astype(str).to_numpy()
    if not (split == "test").any():
        found = ", ".join(sorted(set(split)))
        return frame, None, None, [f"a split column but no split=test rows (splits: {found}): auditing all "
                                   f"{len(frame):,} rows as the test set"]
    notes = split_overlap(frame, split, allow_overlap)
    val = _subset(frame, split == "val") if temperature and (split == "val").any() else None
    return _subset(frame, split == "test"), val, split == "test", notes


def _subset(frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """The rows of ``mask``, renumbered, remembering their positions in the whole table (``attrs["rows"]``) so
    that an error names the line of the file, not of the subset."""
    from faceaudit.seams.predictions import FileRows

    rows = frame[mask].reset_index(drop=True)
    rows.attrs["rows"] = FileRows(np.flatnonzero(mask))
    return rows


def split_overlap(frame: pd.DataFrame, split: np.ndarray, allow: bool) -> list[str]:
    """The test image ids that also appear under another split (val, train): a leak (temperature scaling fitted
    on test images, a model judged on what it saw). One FaceauditError naming the count and an example, or, when
    ``allow`` (``--allow-overlap``), a note that becomes a warning on the console, in the report and audit.json."""
    if "image_id" not in frame.columns:
        return []
    ids = frame["image_id"].astype(str).to_numpy()
    test = split == "test"
    others = pd.Series(split[~test], index=ids[~test])
    shared = pd.unique(ids[test][np.isin(ids[test], ids[~test])])
    if not len(shared):
        return []
    where = "/".join(sorted(set(others.loc[list(shared)].astype(str))))
    return split_leak(len(shared), str(shared[0]), where, allow)


def prepare(predictions: PredictionsLike, *, schema: LabelSchema | str | None = None, target: str | None = None,
            groups: Sequence[str] | None = None, age_bands: AgeBands | str | None = None,
            val: pd.DataFrame | PredictionsTable | None = None, embeddings: Any = None, temperature: bool = True,
            id_col: str = "image_id", prob_prefix: str = "prob_", allow_overlap: bool = False
            ) -> tuple[PredictionsTable, PredictionsTable | None, np.ndarray | None, list[str]]:
    """The validated test table, validation table and embeddings of any accepted input, and notes about it."""
    what = "the predictions table"
    notes: list[str] = []
    source_path = None
    if isinstance(predictions, (str, Path)):
        source_path = Path(predictions)
        what = f"predictions file {source_path.name}"
        if schema is None:
            schema = recorded_schema(source_path)  # a table faceaudit wrote as Parquet carries its schema
        predictions = read_table(source_path)
    options = {"schema": None if schema is None else get_schema(schema), "target": target,
               "groups": name_list(groups), "age_bands": age_bands}
    if isinstance(predictions, PredictionsTable):
        test = predictions
        if any(v is not None for v in options.values()):
            test = PredictionsTable.validate(predictions.frame, **{**options, "schema": options["schema"] or
                                                                   predictions.schema}, what=what)
        frame_for_embeddings = None
        mask = None
    elif isinstance(predictions, pd.DataFrame):
        frame, shadowed = map_columns(predictions, id_col=id_col, prob_prefix=prob_prefix, what=what)
        rows, val_rows, mask, split_notes = split_rows(frame, temperature=temperature and val is None,
                                                       allow_overlap=allow_overlap)
        test = PredictionsTable.validate(rows, **options, what=what)
        if val is None and val_rows is not None:
            val = PredictionsTable.validate(val_rows, schema=test.schema, what=f"{what} (val rows)")
        ignored = sorted({*ignored_columns(frame, test.schema), *shadowed})
        if ignored:
            notes.append(f"{what}: ignored column(s) {', '.join(ignored)}")
        notes += [f"{what} has {note}" for note in split_notes]
        frame_for_embeddings = frame
    else:
        raise FaceauditError(f"predictions must be a DataFrame, a PredictionsTable or a CSV/Parquet path, "
                             f"got {type(predictions).__name__}")
    if isinstance(val, pd.DataFrame):
        val = PredictionsTable.validate(val, schema=test.schema, what="the validation predictions")
    elif val is not None and not isinstance(val, PredictionsTable):
        raise FaceauditError(f"val must be a DataFrame or a PredictionsTable, got {type(val).__name__}")
    if val is not None and val.schema.classes != test.schema.classes:
        raise FaceauditError(f"the validation predictions have classes {list(val.schema.classes)}, the test "
                             f"predictions {list(test.schema.classes)}")
    vectors = None
    if embeddings is not None:
        n_rows = len(frame_for_embeddings) if frame_for_embeddings is not None else len(test)
        vectors = (load_embeddings(Path(embeddings), n_rows) if isinstance(embeddings, (str, Path))
                   else check_embeddings(embeddings, n_rows))
        if mask is not None:
            vectors = vectors[mask]
    return test, val, vectors, notes


@validate_params(baseline=BASELINE)
def audit(
    predictions: PredictionsLike,
    *,
    schema: LabelSchema | str | None = None,
    target: str | None = None,
    groups: str | Sequence[str] | None = None,
    age_bands: AgeBands | str | None = None,
    gates: GatesLike = None,
    ci: float = DEFAULT_CI,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    min_group_size: int | None = None,
    min_test_size: int = DEFAULT_MIN_TEST_SIZE,
    inconclusive: str = DEFAULT_INCONCLUSIVE,
    tsne: bool = True,
    temperature: bool = True,
    val: pd.DataFrame | PredictionsTable | None = None,
    embeddings: Any = None,
    embedding_source: str = "file",
    id_col: str = "image_id",
    prob_prefix: str = "prob_",
    allow_overlap: bool = False,
    engine: str = "local",
    workers: int | None = None,
    progress: bool = False,
    model_info: dict | str | None = None,
    data_info: dict | None = None,
    require_gates: bool = False,
    baseline: str | Path | AuditResult | None = None,
) -> AuditResult:
    """Audit a classifier's predictions by every group of its label schema, with intervals that cover.

    ``target="age"`` audits an age regressor instead: ``age`` (true, years) and ``pred_age`` (predicted, years)
    columns, scored by mean absolute error, bias and the share within ±5 years (:mod:`.regression`).

    ``predictions`` has one row per test image: ``image_id``, the true ``target`` label (default ``race``), the
    attributes to group by (default: those of UTKFace's schema that the table has: race, gender, age or
    age_band), and ``prob_<class>`` columns or ``pred_<target>``. Without ``schema`` the classes are read from the
    ``prob_*`` columns. Rows with ``split == "val"`` (or ``val``) fit temperature scaling; only ``split == "test"``
    rows are audited when there are any. ``gates`` is a TOML file (see ``faceaudit/gates.toml``) or its parsed
    dict; ``embeddings`` an array or ``.npy`` aligned with the rows. ``model_info`` and ``data_info`` are what
    audit.json's ``model`` and ``data`` blocks record (a name or dict; default: read from a predictions file, else
    "model"); :func:`faceaudit.audit_model` fills them from the model and dataset it ran.

    Every argument is checked before any work (:mod:`faceaudit.validation`): ``ci`` in (0, 1), ``n_boot`` and
    ``seed`` whole numbers (``seed=1.5`` is refused, not rounded), ``inconclusive`` "pass" or "fail", ``engine``
    "local" or "ray"; a refusal is an :class:`~faceaudit.validation.InvalidParameterError` (a ValueError and a
    TypeError). ``require_gates=True`` refuses, before any work, an audit that would judge no gate (its
    ``status`` would be ``not gated``).

    ``baseline`` (an earlier audit's folder, its audit.json or an :class:`AuditResult`) compares this audit with it
    by the same family of tests as :func:`faceaudit.diff` (paired on the same images, else unpaired), at this
    audit's ``ci``; the result's ``baseline`` record holds every group's change and verdict.

    A folder or glob of Parquet shards (as ``faceaudit predict`` writes) is streamed: reduced shard by shard to
    mergeable statistics in bounded memory, here or on Ray workers (``engine="ray"``, ``workers``), with each
    shard's embeddings read from ``part-*.embeddings.npy`` beside it (see :mod:`faceaudit.auditing.stream`).

    >>> result = faceaudit.audit(frame)                    # doctest: +SKIP
    >>> result.by_group("race", "accuracy")                # doctest: +SKIP
    """
    gate_list, gates_min_size, gates_source = load_gates(gates)
    require_gated(gate_list, require_gates, gates_source)
    if min_group_size is None:
        min_group_size = gates_min_size or DEFAULT_MIN_GROUP_SIZE
    settings = _settings(n_boot=n_boot, ci=ci, seed=seed, min_group_size=min_group_size, min_test_size=min_test_size,
                         tsne=tsne, inconclusive=inconclusive, progress=progress)
    from faceaudit.distributed import check_engine, local_engine

    check_engine(engine, workers)
    sharded = isinstance(predictions, (str, Path)) and stream.is_sharded(predictions)
    if _is_age_audit(predictions, target, schema):
        if baseline is not None:
            raise FaceauditError("a baseline compares classifiers' accuracy; an age regressor's audit has mae, bias "
                                 "and within5 (compare its by_group tables instead)")
        if sharded or engine != "local":
            raise FaceauditError("age audits read one predictions table (CSV or Parquet), not Parquet shards or "
                                 "engine='ray'; concatenate the shards into one file")
        return _audit_regression(predictions, target=target, groups=groups, schema=schema, age_bands=age_bands,
                                 gate_list=gate_list, gates_source=gates_source, val=val, embeddings=embeddings,
                                 settings=settings, model_info=model_info, data_info=data_info, id_col=id_col,
                                 local=local_engine())
    loaded_baseline = load_baseline(baseline, settings.ci)
    if engine != "local" and not sharded:
        raise FaceauditError("engine='ray' audits Parquet shards (a folder or glob, as faceaudit predict writes); "
                             "one table is audited in this process")
    streamed = None
    if sharded:
        if embeddings is not None or val is not None:
            raise FaceauditError("predictions shards carry their own embeddings (part-*.embeddings.npy) and "
                                 "validation rows (split=val); embeddings= and val= are for one table")
        streamed = stream.stream_inputs(
            predictions, schema=None if schema is None else get_schema(schema), target=target,
            groups=name_list(groups),
            age_bands=age_bands, temperature=temperature, n_bins=settings.ece_bins, seed=settings.seed,
            ci=settings.ci, engine=engine, workers=workers, id_col=id_col, prob_prefix=prob_prefix,
            progress=progress, allow_overlap=allow_overlap)
        test, val_table, vectors, notes = streamed.sample, streamed.val, streamed.sample_embeddings, streamed.notes
    else:
        test, val_table, vectors, notes = prepare(
            predictions, schema=schema, target=target, groups=groups, age_bands=age_bands, val=val,
            embeddings=embeddings, temperature=temperature, id_col=id_col, prob_prefix=prob_prefix,
            allow_overlap=allow_overlap)
    gate_list = gates_mod.check_gates(gate_list, test.schema, gates_source or "gates")
    info = {"name": model_info} if isinstance(model_info, str) else dict(model_info or {})
    data = dict(data_info or {})
    if isinstance(predictions, (str, Path)):
        path = Path(predictions)
        if streamed is None:
            from faceaudit.datasets.sources import file_sha256

            digest = file_sha256(path)
            name, source = path.stem, str(path.resolve())
        else:
            digest = streamed.fingerprint
            folder = path if path.is_dir() else path.parent
            name = folder.resolve().name
            source = str(path.resolve()) if path.is_dir() else str(folder.resolve() / path.name)
            record = read_shards_record(folder)
            if record is not None:  # faceaudit predict's shards: the model and data it ran, as audit_model records
                info = {**(record.get("model") or {}), **info}
                recorded = record.get("data") or {}
                data = {**{k: recorded[k] for k in ("source", "fingerprint", "synthetic") if k in recorded}, **data}
                embedding_source = "model"
        info.setdefault("name", name)
        info.setdefault("source", source)
        info.setdefault("run_hash", digest)
        data.setdefault("source", source)
        data.setdefault("predictions_sha256", digest)
    _fill_defaults(info, data, test, notes, n=len(test) if streamed is None else streamed.statistics.n,
                   n_val=None if val_table is None else len(val_table))
    if streamed is not None:
        data["streamed"] = streamed.info
    audited = test if streamed is None or streamed.complete else streamed.statistics
    result = compute_audit(audited, settings=settings, embeddings=vectors, embedding_source=embedding_source,
                           val_predictions=val_table if temperature else None, model=info, data=data,
                           scaled=None if streamed is None or streamed.complete else streamed.scaled,
                           sample=None if audited is test else test)
    result.settings.engine = streamed.engine if streamed is not None else local_engine()
    result.warnings.extend(notes)
    if gate_list:
        result.gates = gates_mod.evaluate_gates(gate_list, result, inconclusive=inconclusive, source=gates_source)
    return attach_baseline(result, loaded_baseline, baseline)


def _is_age_audit(predictions: PredictionsLike, target: str | None, schema: LabelSchema | str | None) -> bool:
    """Whether the call audits an age regressor: ``target="age"``, a schema with that target, or a table
    (:class:`PredictionsTable` or a Parquet file faceaudit wrote) that follows one."""
    if target is not None:
        return str(target) == AGE_TARGET
    if schema is not None:
        return get_schema(schema).regression
    if isinstance(predictions, PredictionsTable):
        return predictions.schema.regression
    if isinstance(predictions, (str, Path)) and Path(predictions).is_file():
        recorded = recorded_schema(Path(predictions))
        return bool(recorded is not None and recorded.regression)
    return False


def _fill_defaults(info: dict, data: dict, test: PredictionsTable, notes: list[str], *, n: int,
                   n_val: int | None) -> None:
    """What audit.json's model and data blocks say when the caller did not: a predictions table of unknown origin."""
    for key, value in (("name", "model"), ("kind", "predictions"), ("backbone", None), ("synthetic", False),
                       ("run", None)):
        info.setdefault(key, value)
    for key, value in (("split", "test"), ("n", n), ("n_val", n_val), ("synthetic", False),
                       ("age_bands", str(test.schema.age_bands))):
        data.setdefault(key, value)
    data["notes"] = [*data.get("notes", []), *notes]


def _audit_regression(predictions: PredictionsLike, *, target, groups, schema, age_bands, gate_list, gates_source,
                      val, embeddings, settings: AuditSettings, model_info, data_info, id_col: str, local: dict
                      ) -> AuditResult:
    """The age regressor's audit: validate the one table, compute (:mod:`.regression`), judge the gates."""
    from .regression import compute_regression_audit

    if val is not None:
        raise FaceauditError("val= holds validation rows for temperature scaling, which an age audit does not do")
    if schema is not None and not get_schema(schema).regression:
        schema = get_schema(schema).with_options(target=AGE_TARGET)
    test, _, _, notes = prepare(predictions, schema=schema, target=target or AGE_TARGET, groups=groups,
                                age_bands=age_bands, temperature=False, id_col=id_col)
    if embeddings is not None:
        notes.append("embeddings were given but an age audit does not use them (no embedding clusters)")
    gate_list = gates_mod.check_gates(gate_list, test.schema, gates_source or "gates")
    info = {"name": model_info} if isinstance(model_info, str) else dict(model_info or {})
    data = dict(data_info or {})
    if isinstance(predictions, (str, Path)):
        from faceaudit.datasets.sources import file_sha256

        path = Path(predictions)
        digest = file_sha256(path)
        info.setdefault("name", path.stem)
        info.setdefault("source", str(path.resolve()))
        info.setdefault("run_hash", digest)
        data.setdefault("source", str(path.resolve()))
        data.setdefault("predictions_sha256", digest)
    _fill_defaults(info, data, test, notes, n=len(test), n_val=None)
    result = compute_regression_audit(test, settings=settings, model=info, data=data, notes=notes)
    result.settings.engine = local
    if gate_list:
        result.gates = gates_mod.evaluate_gates(gate_list, result, inconclusive=settings.inconclusive,
                                                source=gates_source)
    return result
