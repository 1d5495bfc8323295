"""Batch inference into a sharded predictions table: a folder of Parquet shards beside ``predict.json``.

``faceaudit audit --predictions FOLDER`` reads it. Every shard is written by
:meth:`faceaudit.seams.predictions.PredictionsTable.write`, the one definition of the format. The local engine runs
one runtime in this process; the ray engine (Ray Data) loads the runtime once per worker actor and runs the same
:func:`faceaudit.models.inference.predict` on each batch, so both engines write the same predictions. The folder
is built aside and swapped in whole: a failure or Ctrl-C leaves the previous folder, or none.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faceaudit.config import DEFAULT_SEED, data_from_env
from faceaudit.errors import FaceauditError
from faceaudit.seams.predictions import SHARDS_RECORD
from faceaudit.taxonomy import LabelSchema

#: Shard names, numbered from 0 in manifest order.
SHARD_NAME = "part-{:05d}.parquet"
EMBEDDINGS_NAME = "part-{:05d}.embeddings.npy"
#: The splits predicted by default: test rows are audited, val rows fit temperature scaling.
DEFAULT_SPLITS: tuple[str, ...] = ("test", "val")
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: How often Ray restarts a lost worker actor, and retries the batch it was running, before the run fails.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
#: Columns the ray workers add to a batch besides the probabilities: the row's position, how the output was read.
_ROW, _SOFTMAX, _RENORMALISED, _EMBEDDING = "_faceaudit_row", "_faceaudit_softmax", "_faceaudit_renormalised", "_emb_"


Chunk = tuple[pd.DataFrame, np.ndarray, "np.ndarray | None"]


def predict_shards(model: str | Path, data: Any = None, out: str | Path | None = None, *, engine: str = "local",
                   workers: int | None = None, shard_size: int = 50_000,
                   splits: Sequence[str] | None = DEFAULT_SPLITS, batch_size: int = 64,
                   schema: LabelSchema | str | None = None, target: str | None = None, seed: int = DEFAULT_SEED,
                   dataset_options: dict | None = None, progress: bool = False, verbose: bool = False,
                   output_layer: str | None = None, embedding_layer: str | None = None,
                   input_size: int | None = None, preprocess: str | None = None, bgr: bool = False,
                   classes: str | Sequence[str] | None = None) -> Path:
    """Predict the rows of ``splits`` (None: every row) of ``data`` (default ``$FACEAUDIT_DATA``) with ``model``
    (opened as :func:`faceaudit.audit_model` opens it; the contract options are the same) into the folder ``out``
    (default ``predictions/<model-name>``): ``part-NNNNN.parquet`` shards of at most ``shard_size`` rows in
    manifest order, ``part-NNNNN.embeddings.npy`` beside each when the model gives embeddings, and
    ``predict.json``. ``engine`` is ``local`` (this process) or ``ray`` (``workers`` actors, default one per CPU;
    needs ``faceaudit[distributed]``). Returns the folder."""
    from faceaudit.distributed import check_engine, default_workers
    from faceaudit.files import replaceable_dir

    from .opening import open_model

    started = time.perf_counter()
    check_engine(engine, workers)
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FaceauditError(f"{name.replace('_', '-')} must be a whole number, at least 1 (got {value!r})")
    splits = _check_splits(splits)
    keep = (Path(model), None if data is None or not isinstance(data, (str, Path)) else Path(data))
    if out is not None:  # refused before the model loads
        replaceable_dir(Path(out), SHARDS_RECORD, keep=keep)
    if engine == "ray":
        from faceaudit.extras import require

        require("ray", "distributed", "--engine ray")
    opened = open_model(model, schema=schema, target=target, age_bands=(dataset_options or {}).get("age_bands"),
                        classes=classes, output_layer=output_layer, embedding_layer=embedding_layer,
                        input_size=input_size, preprocess=preprocess, bgr=bgr)
    if engine == "ray" and not opened.image_model:
        raise FaceauditError(f"--engine ray runs image models; {opened.run.backbone} runs (dlib descriptors, an "
                             "ensemble's members) are predicted in one process: use --engine local")
    dataset = _dataset(data, opened.schema, seed, dataset_options)
    rows = _rows(dataset, splits)
    out = replaceable_dir(Path(out) if out is not None else Path("predictions") / opened.name, SHARDS_RECORD,
                          keep=keep)
    workers = (workers or default_workers()) if engine == "ray" else 1
    return _write_folder(opened, dataset, rows, out, keep, engine=engine, workers=workers, shard_size=shard_size,
                         batch_size=batch_size, splits=splits, progress=progress, verbose=verbose, started=started)


def _check_splits(splits: Sequence[str] | None) -> tuple[str, ...] | None:
    """The split names asked for, checked (None: every row)."""
    if splits is None:
        return None
    names = tuple(dict.fromkeys(s.strip() for s in ([splits] if isinstance(splits, str) else splits) if s.strip()))
    unknown = [s for s in names if s not in SPLITS]
    if unknown or not names:
        raise FaceauditError(f"split must be one or more of {', '.join(SPLITS)}, or all (got {unknown[0]!r})"
                             if unknown else "split names no split; use e.g. test,val or all")
    return names


def _dataset(data: Any, schema: LabelSchema, seed: int, dataset_options: dict | None):
    """The dataset to predict, as :func:`faceaudit.audit_model` loads it."""
    from faceaudit.datasets.manifest import Dataset, load_dataset

    if data is None:
        data = data_from_env()
        if data is None:
            raise FaceauditError("no data: pass data (a UTKFace folder or archive) or set $FACEAUDIT_DATA")
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, (str, Path)):
        raise FaceauditError(f"data must be a path to a folder, archive or labelled table, or a loaded dataset, got "
                             f"{type(data).__name__}")
    return load_dataset(Path(data), schema=schema, **{"seed": seed, **(dataset_options or {})})


def _rows(dataset, splits: tuple[str, ...] | None) -> pd.DataFrame:
    """The manifest rows of the splits, in manifest order, with their ``split`` column."""
    manifest = dataset.manifest
    rows = manifest if splits is None else manifest[manifest["split"].isin(splits)]
    if rows.empty:
        which = "it" if splits is None else f"its {','.join(splits)} split{'s' if len(splits) > 1 else ''}"
        raise FaceauditError(f"nothing to predict: {which} of {dataset.source} hold no images")
    return rows.reset_index(drop=True)


def _write_folder(opened, dataset, rows: pd.DataFrame, out: Path, keep: tuple, *, engine: str, workers: int,
                  shard_size: int, batch_size: int, splits, progress: bool, verbose: bool, started: float) -> Path:
    """Build the folder aside (shards, then predict.json) and swap it in whole."""
    from faceaudit.console import native_noise_dropped
    from faceaudit.distributed import local_engine, ray_session
    from faceaudit.files import carry_inside, replace_folder
    from faceaudit.seams.predictions import write_shards_record

    with replace_folder(out) as work:
        carry_inside(keep, out, work)
        begun = time.perf_counter()
        if engine == "local":
            engine_info = local_engine()
            shards = _write_shards(_local_chunks(opened, rows, shard_size, batch_size, progress), work,
                                   opened.schema, len(rows), progress)
        else:
            # Ray's C++ records go to file descriptor 2, which is captured while Ray runs; the progress bar is
            # drawn on a copy of the terminal's descriptor so it stays live.
            with os.fdopen(os.dup(2), "w") as terminal:
                with native_noise_dropped(), ray_session(workers, verbose=verbose) as engine_info:
                    engine_info = dict(engine_info)
                    shards = _write_shards(_ray_chunks(opened, rows, shard_size, batch_size, workers), work,
                                           opened.schema, len(rows), progress, bar_file=terminal)
        seconds = time.perf_counter() - begun
        record = {"model": opened.info(synthetic=bool(dataset.synthetic)),
                  "data": {"source": str(dataset.source), "fingerprint": dataset.fingerprint,
                           "splits": list(splits) if splits is not None else "all",
                           "synthetic": bool(dataset.synthetic)},
                  "schema": opened.schema.name, "label_schema": opened.schema.to_dict(),
                  "engine": engine_info, "batch_size": batch_size, "shard_size": shard_size,
                  "shards": shards, "rows": int(sum(s["rows"] for s in shards)),
                  "embeddings": all("embeddings" in s for s in shards),
                  "predict_s": round(seconds, 3), "wall_s": round(time.perf_counter() - started, 3),
                  "images_per_s": round(len(rows) / seconds, 2) if seconds > 0 else None}
        write_shards_record(work, record)
    return out


def _write_shards(chunks: Iterator[Chunk], folder: Path, schema: LabelSchema, total: int,
                  progress: bool, bar_file=None) -> list[dict]:
    """Write each chunk as the next shard (and its embeddings); what predict.json lists of them."""
    from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

    from faceaudit.files import atomic_path
    from faceaudit.models.formats import source_sha256
    from faceaudit.seams.predictions import PredictionsTable

    shards = []
    with tqdm(total=total, desc=f"predicting {total:,} images", unit="image", disable=None if progress else True,
              leave=False, file=bar_file) as bar:
        for index, (rows, probs, embeddings) in enumerate(chunks):
            path = PredictionsTable.from_probabilities(rows, probs, schema).write(folder / SHARD_NAME.format(index))
            entry = {"file": path.name, "rows": len(rows), "sha256": source_sha256(path)}
            if embeddings is not None:
                emb_path = folder / EMBEDDINGS_NAME.format(index)
                with atomic_path(emb_path) as partial:
                    np.save(partial, np.asarray(embeddings, dtype=np.float32))
                entry["embeddings"] = {"file": emb_path.name, "dim": int(embeddings.shape[1]),
                                       "sha256": source_sha256(emb_path)}
            shards.append(entry)
            bar.update(len(rows))
    return shards


def _local_chunks(opened, rows: pd.DataFrame, shard_size: int, batch_size: int, progress: bool) -> Iterator[Chunk]:
    """Shard-sized chunks predicted in this process, with the one runtime already loaded."""
    from faceaudit.models.inference import predict

    for start in range(0, len(rows), shard_size):
        chunk = rows.iloc[start:start + shard_size].reset_index(drop=True)
        probs, embeddings = predict(opened.source, chunk, batch_size, False, schema=opened.schema, run=opened.run,
                                    runtime=opened.runtime)
        yield chunk, probs, embeddings


class RayPredictor:
    """A Ray Data worker actor: loads the runtime once, then predicts each batch of manifest rows exactly as the
    local engine does (:func:`faceaudit.models.inference.predict`, images decoded from the ``path`` column)."""

    def __init__(self, model_file: Path, options: dict, schema: LabelSchema, batch_size: int):
        from faceaudit.models.loading import load_runtime

        self.model_file, self.schema, self.batch_size = Path(model_file), schema, batch_size
        self.runtime = load_runtime(self.model_file, **options)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from faceaudit.models.inference import predict

        _injected_fault(int(batch[_ROW].iloc[0]) if len(batch) else 0)
        try:
            probs, embeddings = predict(self.model_file, batch, self.batch_size, False, schema=self.schema,
                                        runtime=self.runtime)
        except FaceauditError:
            raise
        except Exception as exc:  # one line for the driver to report (Ray wraps it in its own traceback)
            raise FaceauditError(f"predicting {len(batch)} images from {batch['path'].iloc[0]} failed: "
                                 f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}") from None
        columns = {_ROW: batch[_ROW].to_numpy()}
        columns.update(zip(self.schema.prob_columns, probs.T))
        if embeddings is not None:
            columns.update((f"{_EMBEDDING}{i}", values) for i, values in enumerate(embeddings.T))
        columns[_SOFTMAX] = np.full(len(batch), bool(self.runtime.softmax_applied))
        columns[_RENORMALISED] = np.full(len(batch), bool(self.runtime.renormalised))
        return pd.DataFrame(columns)


#: Fault injection for the tests: a path in this variable makes the first worker that reaches a block past the
#: first one create that file and kill itself (SIGKILL), once, so "a worker lost mid-run" happens at a known point
#: whatever the machine's speed.
FAULT_VARIABLE = "FACEAUDIT_TEST_KILL_RAY_WORKER"


def _injected_fault(first_row: int) -> None:
    """Kill this Ray worker (see ``FAULT_VARIABLE``) when asked to and no worker has been killed yet."""
    marker = os.environ.get(FAULT_VARIABLE)
    if not marker or first_row == 0:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # exactly one worker, once
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _ray_chunks(opened, rows: pd.DataFrame, shard_size: int, batch_size: int, workers: int) -> Iterator[Chunk]:
    """Shard-sized chunks predicted by ``workers`` Ray actors, in manifest order; the rows stay on the driver (the
    workers get each row's position and image path) and are matched back by position."""
    import ray

    from faceaudit.distributed import worker_error

    frame = pd.DataFrame({_ROW: np.arange(len(rows), dtype=np.int64), "path": rows["path"].astype(str).to_numpy()})
    block = max(batch_size, min(shard_size, -(-len(rows) // (workers * 8))))  # several blocks per worker
    ds = ray.data.from_pandas([frame.iloc[i:i + block] for i in range(0, len(frame), block)])
    ds = ds.map_batches(RayPredictor, fn_constructor_args=(opened.model_file, opened.runtime_options, opened.schema,
                                                           batch_size),
                        # one call per block: each call builds an image pipeline, too costly per inference batch
                        compute=ray.data.ActorPoolStrategy(size=workers), batch_size=block, num_cpus=1,
                        batch_format="pandas", max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
    prob_columns = list(opened.schema.prob_columns)
    done = 0
    try:
        for batch in ds.iter_batches(batch_size=shard_size, batch_format="pandas"):
            positions = batch[_ROW].to_numpy()
            if not np.array_equal(positions, np.arange(done, done + len(batch))):
                raise FaceauditError("Ray returned the predictions out of manifest order; rerun, or use --engine local")
            done += len(batch)
            emb_columns = [c for c in batch.columns if c.startswith(_EMBEDDING)]
            embeddings = batch[emb_columns].to_numpy(dtype=np.float32) if emb_columns else None
            if opened.runtime is not None:  # how the workers read the outputs, for predict.json's model block
                opened.runtime.softmax_applied = bool(opened.runtime.softmax_applied) or bool(batch[_SOFTMAX].any())
                opened.runtime.renormalised = opened.runtime.renormalised or bool(batch[_RENORMALISED].any())
            yield rows.iloc[positions].reset_index(drop=True), batch[prob_columns].to_numpy(dtype=np.float64), \
                embeddings
    except (ray.exceptions.RayError, ray.exceptions.RayTaskError) as exc:
        raise FaceauditError(worker_error(exc, "the Ray workers failed")) from None
    if done != len(rows):
        raise FaceauditError(f"Ray returned {done} of {len(rows)} predictions; rerun, or use --engine local")
