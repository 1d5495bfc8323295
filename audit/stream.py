"""Streamed audits: a predictions table as a folder (or glob) of Parquet shards, read in batches and reduced to
mergeable statistics (:mod:`.statistics`), so memory does not grow with the number of rows.

Each shard is reduced on its own (:func:`reduce_shard`): in this process, or on Ray workers with
``engine="ray"`` (:mod:`faceaudit.distributed`); the reductions merge into the same numbers whatever the
partition. Two light passes come first: one over the label columns of every shard (the label schema, with every
value each grouping attribute takes anywhere, and the rows per split), one over the validation rows (temperature
scaling is fitted on them, as in an in-memory audit, before the test rows are reduced).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.errors import FaceauditError
from faceaudit.seams.predictions import (
    PredictionsTable,
    check_embeddings,
    ignored_columns,
    map_columns,
    recorded_schema,
)
from faceaudit.taxonomy import LabelSchema

from . import calibration as cal
from .bootstrap import EXACT_ROWS_LIMIT
from .overlap import split_leak
from .statistics import CellStatistics, RowSample

#: Rows read and validated at a time (about 0.5 GB of working memory at UTKFace's five classes).
BATCH_ROWS = 1_000_000
#: Rows kept for the error gallery and the embedding figures; a table this small is audited exactly in memory.
SAMPLE_ROWS = EXACT_ROWS_LIMIT
#: Validation rows the temperature is fitted on (a hash sample above this).
VAL_ROWS = 500_000
#: Embeddings beside a shard: ``part-00000.parquet`` -> ``part-00000.embeddings.npy`` (rows aligned).
EMBEDDINGS_SUFFIX = ".embeddings.npy"
_POSITION_BITS = 40  # a row's position in the whole table: shard index << 40 | row in shard


def is_sharded(source: str | Path) -> bool:
    """Whether ``source`` names Parquet shards (a folder, or a glob pattern) rather than one file."""
    path = Path(str(source))
    return path.is_dir() or (not path.exists() and glob.has_magic(str(source)))


def shard_paths(source: str | Path) -> list[Path]:
    """The Parquet shards (``*.parquet``, ``*.pq``) a folder or glob names, sorted; one line when there are none."""
    text = str(source)
    found = Path(text).iterdir() if Path(text).is_dir() else (Path(p) for p in glob.glob(text))
    paths = sorted(p for p in found if p.suffix.lower() in (".parquet", ".pq") and p.is_file())
    if not paths:
        raise FaceauditError(f"no Parquet predictions shards (*.parquet) at {text}")
    return paths


def embeddings_path(shard: Path) -> Path:
    """The embeddings file that goes with a shard (it may not exist)."""
    return shard.with_name(shard.name.rsplit(".", 1)[0] + EMBEDDINGS_SUFFIX)


@dataclass(frozen=True)
class Plan:
    """What reducing any shard needs: the schema, which rows are audited, the temperature, the sample size."""

    schema: LabelSchema
    probabilities: bool  # the shards carry prob_ columns (every shard must, or none)
    keep_split: str | None  # "test" keeps the split=test rows; None keeps every row
    n_bins: int
    sample_rows: int
    seed: int
    id_col: str = "image_id"
    prob_prefix: str = "prob_"
    embeddings: bool = False
    temperature: float | None = None
    batch_rows: int = BATCH_ROWS


@dataclass
class Reduction:
    """A shard's (or several shards') statistics, statistics after temperature scaling, and row sample."""

    statistics: CellStatistics | None
    scaled: CellStatistics | None
    sample: RowSample
    rows_read: int = 0

    def __add__(self, other: "Reduction") -> "Reduction":
        return Reduction(_plus(self.statistics, other.statistics), _plus(self.scaled, other.scaled),
                         self.sample + other.sample, self.rows_read + other.rows_read)


def _plus(a, b):
    return b if a is None else a if b is None else a + b


def _parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise FaceauditError(f"cannot read predictions shard {path.name}: {str(exc).splitlines()[0]}") from None


def _decoded(column):
    """An Arrow column with its dictionary encoding (pandas categoricals) undone."""
    import pyarrow as pa

    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _split_mask(batch, value: str) -> np.ndarray:
    """Which rows of an Arrow batch have ``split == value``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _decoded(batch.column(batch.schema.get_field_index("split")))
    equal = pc.equal(pc.cast(column, pa.string()), value)
    return np.asarray(pc.fill_null(equal, False).to_numpy(zero_copy_only=False), dtype=bool)


def _record_batches(path: Path, batch_rows: int, columns: list[str] | None = None):
    """A shard's Arrow record batches of at most ``batch_rows`` rows, or one line saying why not."""
    try:
        yield from _parquet(path).iter_batches(batch_size=batch_rows, columns=columns)
    except (OSError, ValueError) as exc:
        raise FaceauditError(f"cannot read predictions shard {path.name}: {str(exc).splitlines()[0]}") from None


def _batches(path: Path, batch_rows: int, *, split: str | None = None):
    """A shard's rows in batches of at most ``batch_rows``: ``(rows read, positions in the shard, DataFrame)``;
    with ``split``, only the rows of that split are converted (the rest are skipped in Arrow)."""
    offset = 0
    for batch in _record_batches(path, batch_rows):
        read = batch.num_rows
        positions = np.arange(offset, offset + read)
        if split is not None:
            mask = _split_mask(batch, split)
            batch, positions = batch.filter(mask), positions[mask]
        offset += read
        yield read, positions, batch.to_pandas()


def _validated(frame: pd.DataFrame, plan: Plan, what: str) -> PredictionsTable:
    frame, _ = map_columns(frame, id_col=plan.id_col, prob_prefix=plan.prob_prefix, what=what)
    table = PredictionsTable.validate(frame, schema=plan.schema, what=what)
    if table.has_probabilities != plan.probabilities:
        raise FaceauditError(f"{what} has {'prob_' if table.has_probabilities else 'no prob_'} columns, unlike "
                             "the first shard: every shard must carry probabilities, or none")
    return table


def reduce_shard(path: Path, index: int, plan: Plan) -> Reduction:
    """Reduce one shard's audited rows in batches: statistics, statistics after scaling, and the row sample."""
    path = Path(path)
    vectors = None
    if plan.embeddings:
        vectors = np.load(embeddings_path(path), mmap_mode="r", allow_pickle=False)
        rows = _parquet(path).metadata.num_rows
        if vectors.ndim != 2 or len(vectors) != rows:
            raise FaceauditError(f"{embeddings_path(path).name} has shape {vectors.shape}, but {path.name} has "
                                 f"{rows:,} rows")
    out = Reduction(None, None, RowSample(plan.sample_rows, plan.seed))
    for read, positions, frame in _batches(path, plan.batch_rows, split=plan.keep_split):
        out.rows_read += read
        if frame.empty:
            continue
        table = _validated(frame, plan, f"predictions shard {path.name}")
        out.statistics = _plus(out.statistics, CellStatistics.of(table, n_bins=plan.n_bins))
        if plan.temperature is not None and table.has_probabilities:
            out.scaled = _plus(out.scaled, CellStatistics.of(table, n_bins=plan.n_bins, temperature=plan.temperature))
        # only the sampled rows' embeddings are read from the memory-mapped file
        out.sample.add(table.frame, (index << _POSITION_BITS) | positions, vectors, positions)
    return out


@dataclass
class StreamedInputs:
    """Everything a streamed audit computes from: merged statistics, the row sample, the validation rows."""

    statistics: CellStatistics
    scaled: CellStatistics | None
    sample: PredictionsTable
    sample_embeddings: np.ndarray | None
    complete: bool  # the sample holds every audited row (in table order): audit it exactly in memory
    val: PredictionsTable | None
    notes: list[str]
    engine: dict  # how the shards were reduced (audit.json settings.engine)
    info: dict  # what was streamed (audit.json data.streamed)
    fingerprint: str  # SHA-256 over the shards (audit.json data.predictions_sha256)


#: Distinct values kept per column while surveying the shards (a column with more is no grouping attribute).
_SURVEY_VALUES = 10_000


def _survey(paths: list[Path], id_col: str, prob_prefix: str) -> tuple[pd.DataFrame, dict[str, int] | None]:
    """One pass over the label columns of every shard: a probe table for inferring the label schema (real rows of
    the first shard, plus one row for each label value seen only later, in any shard) and the rows per split."""
    import pyarrow.compute as pc

    names = [_parquet(p).schema_arrow.names for p in paths]
    with_split = [p.name for p, n in zip(paths, names) if "split" in n]
    if with_split and len(with_split) < len(paths):
        without = next(p.name for p, n in zip(paths, names) if "split" not in n)
        raise FaceauditError(f"predictions shard {without} has no split column; {with_split[0]} has one (every "
                             "shard must have it, or none)")
    skip = {id_col, "image_id", "path", "sha256", "confidence", "correct"}
    head, values, splits = None, {}, ({} if with_split else None)
    for path, columns in zip(paths, names):
        labels = [c for c in columns if c not in skip and not c.startswith(prob_prefix) and not c.startswith("pred_")]
        for batch in _record_batches(path, BATCH_ROWS, labels):
            if splits is not None:
                for item in pc.value_counts(_decoded(batch.column(labels.index("split")))).to_pylist():
                    key = str(item["values"])
                    splits[key] = splits.get(key, 0) + item["counts"]
                batch = batch.filter(~_split_mask(batch, "train"))
            for i, column in enumerate(labels):
                if column != "split" and len(values.setdefault(column, set())) < _SURVEY_VALUES:
                    values[column].update(v for v in pc.unique(_decoded(batch.column(i))).to_pylist() if v is not None)
        if head is None:
            for _, _, frame in _batches(path, 1_000):
                if "split" in frame.columns:
                    frame = frame[frame["split"].astype(str) != "train"]
                if len(frame):
                    head = frame.reset_index(drop=True)
                    break
    if head is None:
        raise FaceauditError("the predictions shards hold no test or validation rows")
    extra = [(column, value) for column, seen in values.items() if column in head.columns
             for value in seen - set(head[column].dropna().tolist())]
    if extra:  # one probe row per value the first rows lack, so the schema knows every value of every column
        head = head.astype({c: object for c in head.columns if isinstance(head[c].dtype, pd.CategoricalDtype)})
        probe = head.iloc[np.zeros(len(extra), dtype=int)].reset_index(drop=True)
        for i, (column, value) in enumerate(extra):
            probe.loc[i, column] = value
        probe[id_col] = [f"\0probe{i}" for i in range(len(extra))]
        head = pd.concat([head, probe], ignore_index=True)
    return head, splits


def _split_leak(paths: list[Path], id_col: str, allow: bool) -> list[str]:
    """The split-leak check of :func:`faceaudit.auditing.overlap.split_leak` over every shard, in bounded memory: one
    pass hashing each row's id (8 bytes a row) by split, and a second pass, only when test and other ids meet, to
    name an example and the splits it is also under."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if any(id_col not in _parquet(p).schema_arrow.names for p in paths):
        return []

    def id_batches():
        for path in paths:
            for batch in _record_batches(path, BATCH_ROWS, [id_col, "split"]):
                ids = pc.cast(_decoded(batch.column(0)), pa.string()).to_numpy(zero_copy_only=False)
                yield ids.astype(object), _split_mask(batch, "test"), batch

    test, other = [], []
    for ids, is_test, _ in id_batches():
        hashed = pd.util.hash_array(ids)
        test.append(hashed[is_test])
        other.append(hashed[~is_test])
    shared = np.intersect1d(np.concatenate(test), np.concatenate(other)) if test else np.empty(0, np.uint64)
    if not len(shared):
        return []
    test_ids, other_splits = {}, {}  # only the ids whose hash meets: few
    for ids, is_test, batch in id_batches():
        meets = np.isin(pd.util.hash_array(ids), shared)
        split = pc.cast(_decoded(batch.column(1)), pa.string()).to_numpy(zero_copy_only=False)
        for value, in_test, name in zip(ids[meets], is_test[meets], split[meets]):
            if in_test:
                test_ids.setdefault(value, None)
            else:
                other_splits.setdefault(value, set()).add(str(name))
    leaked = [value for value in test_ids if value in other_splits]  # exact: a hash collision is no leak
    where = sorted(set().union(*(other_splits[value] for value in leaked)))
    return split_leak(len(leaked), str(leaked[0]) if leaked else "", "/".join(where), allow)


def _first_schema(paths: list[Path], *, schema: LabelSchema | None, target, groups, age_bands,
                  id_col: str, prob_prefix: str) -> tuple[PredictionsTable, dict[str, int] | None, list[str]]:
    """The label schema of the shards (the one they record, else inferred from every label value they hold),
    checked to be the same in every shard; a validated probe table; the rows per split; notes on ignored columns."""
    recorded = [recorded_schema(p) for p in paths]
    if schema is None and recorded[0] is not None:
        schema = recorded[0]
    differ = [p.name for p, r in zip(paths, recorded) if r is not None and recorded[0] is not None
              and r.to_dict() != recorded[0].to_dict()]
    if differ:
        raise FaceauditError(f"predictions shard {differ[0]} follows another label schema than {paths[0].name}")
    head, splits = _survey(paths, id_col, prob_prefix)
    what = "the predictions shards"
    head, shadowed = map_columns(head, id_col=id_col, prob_prefix=prob_prefix, what=what)
    options = {"target": target, "groups": None if groups is None else tuple(groups), "age_bands": age_bands}
    table = PredictionsTable.validate(head, schema=schema, what=what, **options)
    ignored = sorted({*ignored_columns(head, table.schema), *shadowed})
    notes = [f"the predictions shards: ignored column(s) {', '.join(ignored)}"] if ignored else []
    return table, splits, notes


def _val_rows(paths: list[Path], plan: Plan) -> PredictionsTable | None:
    """The validation rows (a hash sample of :data:`VAL_ROWS` when there are more), validated."""
    sample = RowSample(VAL_ROWS, plan.seed)
    for index, path in enumerate(paths):
        for _, positions, frame in _batches(path, plan.batch_rows, split="val"):
            if len(frame):
                table = _validated(frame, plan, f"predictions shard {path.name} (val rows)")
                sample.add(table.frame, (index << _POSITION_BITS) | positions)
    if sample.frame is None:
        return None
    frame, _ = sample.in_table_order()
    return PredictionsTable(frame, plan.schema)


def _embedding_files(paths: list[Path]) -> bool:
    """Whether the shards carry embeddings: every shard (of one width), or none."""
    present = [embeddings_path(p).is_file() for p in paths]
    if not any(present):
        return False
    if not all(present):
        missing = next(p for p, here in zip(paths, present) if not here)
        raise FaceauditError(f"predictions shard {missing.name} has no {embeddings_path(missing).name}, but other "
                             "shards have embeddings: give every shard its embeddings, or none")
    widths = {}
    for path in paths:
        try:
            shape = np.load(embeddings_path(path), mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError) as exc:
            raise FaceauditError(f"cannot read {embeddings_path(path).name}: {str(exc).splitlines()[0]}") from None
        widths.setdefault(shape[1] if len(shape) == 2 else shape, path.name)
    if len(widths) > 1:
        (a, first), (b, second) = list(widths.items())[:2]
        raise FaceauditError(f"embeddings of {first} have width {a}, those of {second} {b}: one model's, please")
    return True


def stream_inputs(source: str | Path, *, schema: LabelSchema | None = None, target: str | None = None,
                  groups=None, age_bands=None, temperature: bool = True, n_bins: int = cal.ECE_BINS,
                  seed: int = 0, ci: float = 0.95, engine: str = "local", workers: int | None = None,
                  sample_rows: int = SAMPLE_ROWS, id_col: str = "image_id", prob_prefix: str = "prob_",
                  progress: bool = False, allow_overlap: bool = False) -> StreamedInputs:
    """Read the shards at ``source`` and reduce them (on ``engine``) to what a streamed audit needs."""
    from faceaudit.distributed import check_engine, default_workers, local_engine

    check_engine(engine, workers)
    paths = shard_paths(source)
    probe, splits, notes = _first_schema(paths, schema=schema, target=target, groups=groups, age_bands=age_bands,
                                         id_col=id_col, prob_prefix=prob_prefix)
    keep = "test" if splits and splits.get("test") else None
    if keep:
        notes += _split_leak(paths, id_col, allow_overlap)
    if splits is not None and keep is None:
        notes.append(f"the predictions shards have a split column but no split=test rows (splits: "
                     f"{', '.join(sorted(splits))}): auditing all {sum(splits.values()):,} rows as the test set")
    plan = Plan(probe.schema, probe.has_probabilities, keep, n_bins, sample_rows, seed, id_col, prob_prefix,
                _embedding_files(paths))
    val = _val_rows(paths, plan) if temperature and keep and splits.get("val") else None
    if val is not None and val.has_probabilities:
        plan = replace(plan, temperature=cal.fit_temperature(val.probabilities, val.y_true, ci)["temperature"])
    if engine == "ray":
        from faceaudit.distributed import ray_session

        with ray_session(workers or default_workers()) as engine_info:
            total = _reduce_on_ray(paths, plan, engine_info["workers"], progress)
    else:
        engine_info = local_engine()
        total = _reduce_here(paths, plan, progress)
    if total.statistics is None:
        raise FaceauditError(f"the predictions shards at {source} hold no rows to audit")
    for rows in (total.sample.frame, None if val is None else val.frame):  # a repeated id hashes alike: caught
        duplicated = rows is not None and rows["image_id"].duplicated()   # wherever it falls in the sample
        if duplicated is not False and duplicated.any():
            raise FaceauditError(f"the predictions shards list image_id {rows['image_id'][duplicated].iloc[0]!r} "
                                 "more than once")
    complete = total.sample.complete
    frame, vectors = total.sample.in_table_order() if complete else (total.sample.frame, total.sample.embeddings)
    if vectors is not None:
        vectors = check_embeddings(vectors, len(frame), what="the shards' embeddings")
    info = {"shards": len(paths), "rows": int(total.statistics.n), "rows_read": int(total.rows_read),
            "sample_rows": int(len(frame)), "exact": bool(complete)}
    return StreamedInputs(total.statistics, total.scaled, PredictionsTable(frame, plan.schema), vectors, complete,
                          val, notes, engine_info, info, shards_fingerprint(paths))


def _reduce_here(paths: list[Path], plan: Plan, progress: bool) -> Reduction:
    from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

    sizes = [_parquet(p).metadata.num_rows for p in paths]
    total = Reduction(None, None, RowSample(plan.sample_rows, plan.seed))
    with tqdm(total=sum(sizes), desc=f"reading {len(paths):,} shard{'s' * (len(paths) != 1)}", unit="row",
              unit_scale=True, disable=None if progress else True, leave=False) as bar:
        for index, (path, size) in enumerate(zip(paths, sizes)):
            total = total + reduce_shard(path, index, plan)
            bar.update(size)
    return total


def _reduce_on_ray(paths: list[Path], plan: Plan, workers: int, progress: bool) -> Reduction:
    """Each shard reduced by a Ray Data task (``workers`` at a time), the reductions merged here as they come."""
    import pickle

    import ray
    from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

    from faceaudit.distributed import worker_error

    def reduce_batch(batch: pd.DataFrame) -> pd.DataFrame:
        parts = [pickle.dumps(reduce_shard(Path(p), int(i), plan)) for p, i in zip(batch["path"], batch["index"])]
        return pd.DataFrame({"reduction": parts})

    items = [{"path": str(p), "index": i} for i, p in enumerate(paths)]
    data = ray.data.from_items(items, override_num_blocks=len(paths)).map_batches(
        reduce_batch, batch_size=1, batch_format="pandas", num_cpus=1, compute=ray.data.TaskPoolStrategy(size=workers),
        max_retries=2)  # a lost worker's shard is reduced again; an error in the data is not retried
    total = Reduction(None, None, RowSample(plan.sample_rows, plan.seed))
    with tqdm(total=len(paths), desc=f"reducing {len(paths):,} shards on Ray", unit="shard",
              disable=None if progress else True, leave=False) as bar:
        try:
            for batch in data.iter_batches(batch_size=1, batch_format="pandas"):
                for blob in batch["reduction"]:
                    total = total + pickle.loads(blob)
                    bar.update(1)
        except ray.exceptions.RayError as exc:
            raise FaceauditError(worker_error(exc, "a Ray worker failed reducing the shards")) from None
    return total


def shards_fingerprint(paths: list[Path]) -> str:
    """SHA-256 over every shard's name and SHA-256 (what ``predictions_sha256`` records for a sharded table)."""
    import hashlib

    from faceaudit.datasets.sources import file_sha256

    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()
