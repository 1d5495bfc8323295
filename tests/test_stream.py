"""Streamed audits of Parquet shards: the same numbers as the in-memory audit, whatever the partition or engine.

Real predictions (a model trained on real UTKFace pixels, :mod:`audit_fixtures`) are cut into shards as another
tool would write them; the simulated table above the exact-resampling limit checks the statistics path against
the in-memory audit's own type-level bootstrap; Ray runs in local mode with two workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from commands import run_killing_a_ray_worker
from simulated import utkface

import faceaudit
from faceaudit.auditing import stream
from faceaudit.auditing.engine import compute_audit
from faceaudit.auditing.statistics import CellStatistics, RowSample
from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.seams.predictions import PredictionsTable

#: Keys of audit.json that name where the input came from or how it was computed, not what it found.
PROVENANCE = ("created_utc",)


def _shards(csv: Path, npy: Path | None, folder: Path, parts: int, order: np.ndarray | None = None) -> Path:
    """The table at ``csv`` (and its embeddings) as ``parts`` Parquet shards, rows in ``order``."""
    frame = pd.read_csv(csv, dtype={"image_id": str})
    vectors = None if npy is None else np.load(npy)
    order = np.arange(len(frame)) if order is None else order
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(np.array_split(order, parts)):
        frame.iloc[rows].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
        if vectors is not None:
            np.save(folder / f"part-{i:05d}.embeddings.npy", vectors[rows])
    return folder


def _found(result) -> dict:
    """What an audit found: audit.json less provenance (sources, hashes, engine, time)."""
    data = json.loads(result.to_json())
    for key in PROVENANCE:
        data.pop(key, None)
    data["model"] = {}
    for key in ("source", "predictions_sha256", "streamed"):
        data["data"].pop(key, None)
    data["settings"].pop("engine", None)
    data["settings"].pop("command", None)
    data.pop("files", None)
    if (data.get("embeddings") or {}).get("tsne"):
        data["embeddings"]["tsne"].pop("seconds")
    return data


def _numbers(a, b, path=""):
    """Every pair of numbers at the same place in two audit.json trees."""
    if isinstance(a, dict):
        for key in a:
            yield from _numbers(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _numbers(x, y, f"{path}[{i}]")
    elif isinstance(a, (int, float)) and not isinstance(a, bool) and a is not None:
        yield path, a, b


def test_shards_audit_exactly_like_one_table(real_predictions, tmp_path):  # noqa: F811
    """Below the sample size every row is kept: the streamed audit is the in-memory audit, number for number,
    embeddings, t-SNE and temperature scaling included; the row sample is written, not predictions.csv."""
    folder = _shards(real_predictions.csv, real_predictions.embeddings_npy, tmp_path / "shards", 3)
    whole = faceaudit.audit(real_predictions.csv, embeddings=real_predictions.embeddings_npy, n_boot=200)
    streamed = faceaudit.audit(folder, n_boot=200)
    assert _found(streamed) == _found(whole)
    for name, table in whole.tables.items():
        pd.testing.assert_frame_equal(streamed.tables[name], table, obj=name)
    assert streamed.data["streamed"] == {"shards": 3, "rows": len(real_predictions.test_table),
                                         "rows_read": len(real_predictions.test_table) + len(real_predictions.val_table),
                                         "sample_rows":
                                         len(real_predictions.test_table), "exact": True}
    assert streamed.settings["engine"] == {"engine": "local", "workers": 1, "cluster": None}
    assert streamed.embeddings["n"] == len(real_predictions.test_table) and streamed.calibration["temperature"]


def test_statistics_path_matches_the_in_memory_audit(real_predictions, tmp_path):  # noqa: F811
    """Forced through the mergeable statistics (a 300-row sample): every closed-form number (proportions,
    balanced accuracy, F1, disparities, MCE, the temperature) is the in-memory one; the bootstrap-debiased ECE and the
    bootstrap intervals of Brier score and log loss, drawn over cell types instead of rows, agree within Monte Carlo
    error."""
    folder = _shards(real_predictions.csv, None, tmp_path / "shards", 4)
    inputs = stream.stream_inputs(folder, sample_rows=300, seed=0)
    assert not inputs.complete and len(inputs.sample) == 300 and inputs.statistics.n == len(real_predictions.test_table)
    streamed = compute_audit(inputs.statistics, scaled=inputs.scaled, sample=inputs.sample, val_predictions=inputs.val)
    whole = compute_audit(real_predictions.test_table, val_predictions=real_predictions.val_table)
    a, b = whole.to_dict(), streamed.to_dict()
    assert a["groupings"] == b["groupings"] and a["overall"] == b["overall"]
    for path, x, y in _numbers(a["calibration"], b["calibration"]):
        if "/ece/" in path or path.endswith("/ece"):  # the bootstrap-debiased ECE: resamples of cells, not rows,
            assert x == pytest.approx(y, abs=0.05), path  # so Monte Carlo error (largest in groups of a few faces)
        elif not ("/brier/ci" in path or "/log_loss/ci" in path or "ece_change/ci" in path):
            assert x == pytest.approx(y, abs=2e-6), path  # rounded to 6 digits: a last-digit flip at most
    mine, theirs = streamed.tables["calibration"], whole.tables["calibration"]
    judged = theirs["n"] >= 30  # a bootstrap bound of a handful of faces moves by more than its width
    for metric in ("brier", "log_loss"):
        width = (theirs[f"{metric}_hi"] - theirs[f"{metric}_lo"])[judged]
        for bound in ("lo", "hi"):
            moved = (mine[f"{metric}_{bound}"] - theirs[f"{metric}_{bound}"]).abs()[judged]
            assert (moved > 0).any() and (moved <= 0.2 * width).all(), (metric, bound, (moved / width).max())
    # the sample is a real sample: rows of the table, with their labels
    assert set(inputs.sample.frame["image_id"]) <= set(real_predictions.test_table.frame["image_id"])


def test_statistics_merge_the_same_in_any_partition(real_predictions):  # noqa: F811
    """Cell statistics and the row sample of the whole table equal those merged from parts, in any order."""
    table = real_predictions.test_table
    whole = CellStatistics.of(table)
    parts = [table.subset(np.isin(np.arange(len(table)), rows))
             for rows in np.array_split(np.random.default_rng(0).permutation(len(table)), 5)]
    merged = parts[0]
    stats = [CellStatistics.of(p) for p in parts]
    forward, backward = stats[0], stats[-1]
    for s in stats[1:]:
        forward = forward + s
    for s in reversed(stats[:-1]):
        backward = backward + s
    for merged in (forward, backward):
        np.testing.assert_array_equal(merged.codes, whole.codes)
        np.testing.assert_array_equal(merged.count, whole.count)
        np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-9, atol=1e-12)
    one = RowSample(200, 7)
    one.add(table.frame, np.arange(len(table)))
    pieces = RowSample(200, 7)
    for rows in np.array_split(np.arange(len(table))[::-1], 3):
        part = RowSample(200, 7)
        part.add(table.frame.iloc[rows].reset_index(drop=True), rows)
        pieces = pieces + part
    assert list(pieces.frame["image_id"]) == list(one.frame["image_id"]) and pieces.seen == len(table)


def test_above_the_exact_limit_streamed_equals_in_memory(tmp_path):
    """120,000 rows (above the 50,000 where even the in-memory audit resamples cell types): the streamed audit
    reproduces the in-memory one, bootstrap intervals and temperature scaling included, to rounding."""
    frame = utkface(120_000, seed=3)
    frame["split"] = np.where(np.random.default_rng(1).random(len(frame)) < 0.2, "val", "test")
    folder = tmp_path / "big"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 5)):
        frame.iloc[rows].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    whole = faceaudit.audit(frame, n_boot=200)
    streamed = faceaudit.audit(str(folder / "*.parquet"), n_boot=200)
    assert streamed.data["streamed"]["exact"] is False and streamed.data["streamed"]["sample_rows"] == 50_000
    for path, x, y in _numbers(_found(whole), _found(streamed)):
        assert x == pytest.approx(y, rel=1e-9, abs=2e-6), path
    # the merged statistics do not depend on who reduced which shard: two Ray workers give the same audit.json
    on_ray = faceaudit.audit(folder, n_boot=200, engine="ray", workers=2)
    assert _found(on_ray) == _found(streamed) and on_ray.settings["engine"]["workers"] == 2


def test_ray_engine_gives_the_local_numbers(real_predictions, tmp_path, capsys):  # noqa: F811
    """The same shards reduced by two Ray workers (local mode) through the command: the same audit.json numbers
    as the local engine, and audit.json and the report say which engine and how many workers."""
    folder = _shards(real_predictions.csv, real_predictions.embeddings_npy, tmp_path / "shards", 4)
    assert main(["audit", "--predictions", str(folder), "--out", str(tmp_path / "local"), "--no-report",
                 "--n-boot", "200", "--no-tsne"]) == 0
    capsys.readouterr()
    assert main(["audit", "--predictions", str(folder / "part-*.parquet"), "--out", str(tmp_path / "ray"),
                 "--engine", "ray", "--workers", "2", "--n-boot", "200", "--no-tsne"]) == 0
    assert capsys.readouterr().err == ""  # no Ray log lines, warnings or progress bars off a terminal
    local = faceaudit.AuditResult.from_json(tmp_path / "local" / "audit.json")
    ray = faceaudit.AuditResult.from_json(tmp_path / "ray" / "audit.json")
    assert _found(local) == _found(ray)
    assert ray.settings["engine"]["engine"] == "ray" and ray.settings["engine"]["workers"] == 2
    html = (tmp_path / "ray" / "report.html").read_text()
    assert "ray, 2 workers (local); 4 Parquet shards streamed" in html
    assert (tmp_path / "ray" / "predictions.csv").exists()  # every row was kept: the full table is written


def test_a_sample_is_written_apart_and_compare_refuses_it(tmp_path, capsys):
    """Above the sample size the audit folder holds predictions_sample.csv (for the error gallery), which paired
    comparisons refuse rather than pair a sample."""
    frame = utkface(60_000, seed=5)
    folder = tmp_path / "shards"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 2)):
        frame.iloc[rows].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    assert main(["audit", "--predictions", str(folder), "--out", str(tmp_path / "a"), "--no-tsne",
                 "--n-boot", "50"]) == 0
    assert (tmp_path / "a" / "predictions_sample.csv").exists() and not (tmp_path / "a" / "predictions.csv").exists()
    assert len(pd.read_csv(tmp_path / "a" / "predictions_sample.csv")) == 50_000
    assert "From a sample of 50,000 of the 60,000 test images" in (tmp_path / "a" / "report.html").read_text()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "c")]) == 2
    assert "kept a sample of its rows" in capsys.readouterr().err


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_hostile_shards_fail_in_one_line_and_write_nothing(real_predictions, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no Parquet predictions shards" in _error(["audit", "--predictions", str(empty), "--out", str(out)], capsys)
    assert "no Parquet predictions shards" in _error(
        ["audit", "--predictions", str(tmp_path / "none-*.parquet"), "--out", str(out)], capsys)
    folder = _shards(real_predictions.csv, None, tmp_path / "dup", 2)
    first = pd.read_parquet(folder / "part-00000.parquet")
    second = pd.read_parquet(folder / "part-00001.parquet")
    pd.concat([first, second[second["split"] == "test"].iloc[:400]]).to_parquet(folder / "part-00000.parquet",
                                                                                 index=False)
    assert "more than once" in _error(["audit", "--predictions", str(folder), "--out", str(out)], capsys)
    bad = _shards(real_predictions.csv, None, tmp_path / "bad", 2)
    (bad / "part-00001.parquet").write_bytes(b"PAR1 not really")
    assert "cannot read predictions shard part-00001.parquet" in _error(
        ["audit", "--predictions", str(bad), "--out", str(out)], capsys)
    nosplit = _shards(real_predictions.csv, None, tmp_path / "nosplit", 2)
    pd.read_parquet(nosplit / "part-00001.parquet").drop(columns=["split"]).to_parquet(
        nosplit / "part-00001.parquet", index=False)
    assert "has no split column" in _error(["audit", "--predictions", str(nosplit), "--out", str(out)], capsys)
    emb = _shards(real_predictions.csv, real_predictions.embeddings_npy, tmp_path / "emb", 2)
    np.save(emb / "part-00001.embeddings.npy", np.zeros((3, 64), dtype=np.float32))
    assert "part-00001.embeddings.npy has shape (3, 64)" in _error(
        ["audit", "--predictions", str(emb), "--out", str(out)], capsys)
    assert "engine='ray' audits Parquet shards" in _error(
        ["audit", "--predictions", str(real_predictions.csv), "--engine", "ray", "--out", str(out)], capsys)
    assert "--workers needs --engine ray" in _error(
        ["audit", "--predictions", str(emb), "--workers", "2", "--out", str(out)], capsys)
    later = _shards(real_predictions.csv, None, tmp_path / "later", 2)
    pd.read_parquet(later / "part-00000.parquet").drop(columns=["split"]).to_parquet(
        later / "part-00000.parquet", index=False)
    assert "part-00000.parquet has no split column; part-00001.parquet has one" in _error(
        ["audit", "--predictions", str(later), "--out", str(out)], capsys)
    labels = _shards(real_predictions.csv, None, tmp_path / "labels", 2)
    pd.read_parquet(labels / "part-00001.parquet").drop(columns=[c for c in first.columns if c.startswith("prob_")]
                                                        ).to_parquet(labels / "part-00001.parquet", index=False)
    assert "has no prob_ columns, unlike the first shard" in _error(
        ["audit", "--predictions", str(labels), "--out", str(out)], capsys)
    np.save(emb / "part-00001.embeddings.npy", np.zeros((len(second), 3), dtype=np.float32))
    assert "width 64" in _error(["audit", "--predictions", str(emb), "--out", str(out)], capsys)
    (emb / "part-00001.embeddings.npy").unlink()
    assert "part-00001.parquet has no part-00001.embeddings.npy" in _error(
        ["audit", "--predictions", str(emb), "--out", str(out)], capsys)
    assert "shards carry theirs" in _error(["audit", "--predictions", str(emb), "--embeddings",
                                            str(real_predictions.embeddings_npy), "--out", str(out)], capsys)
    nan = _shards(real_predictions.csv, None, tmp_path / "nan", 2)
    rows = pd.read_parquet(nan / "part-00001.parquet")
    rows.loc[rows.index[-1], "prob_White"] = np.nan
    rows.to_parquet(nan / "part-00001.parquet", index=False)
    for engine in (["--engine", "local"], ["--engine", "ray", "--workers", "1"]):  # an error inside a Ray worker too
        message = _error(["audit", "--predictions", str(nan), "--out", str(out), *engine], capsys)
        assert "predictions shard part-00001.parquet" in message and "NaN" in message, message
    assert not out.exists()
    with pytest.raises(FaceauditError, match="embeddings= and val= are for one table"):
        faceaudit.audit(emb, embeddings=real_predictions.embeddings_npy)


def test_values_first_seen_in_later_shards_and_empty_shards(tmp_path):
    """The label schema is read from every shard, not the first rows: a grouping value met only in a later shard
    is known, an empty first shard is skipped, and a file whose name looks like a glob is one table."""
    frame = utkface(3_000, seed=2)
    frame["region"] = np.where(np.arange(len(frame)) < 1_500, "north", "south")
    folder = tmp_path / "shards"
    folder.mkdir()
    frame.iloc[:0].to_parquet(folder / "part-00000.parquet", index=False)
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 2), start=1):
        frame.iloc[rows].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    streamed = faceaudit.audit(folder, groups="race,region", n_boot=50, tsne=False)
    whole = faceaudit.audit(frame, groups="race,region", n_boot=50, tsne=False)
    assert streamed.data["counts"]["region"] == {"north": 1_500, "south": 1_500}
    assert _found(streamed) == _found(whole)
    odd = tmp_path / "preds[1].csv"
    frame.to_csv(odd, index=False)
    assert not stream.is_sharded(odd) and faceaudit.audit(odd, n_boot=50, tsne=False).data["n"] == 3_000


def test_cell_statistics_refuse_other_schemas(real_predictions):  # noqa: F811
    table = real_predictions.test_table
    gender = PredictionsTable.validate(table.frame, schema=table.schema.with_options(groups=("race",)))
    with pytest.raises(ValueError, match="different label schemas"):
        CellStatistics.of(table) + CellStatistics.of(gender)


def test_a_ray_worker_lost_mid_audit_is_retried_or_nothing_is_written(tmp_path):
    """A Ray worker killed while it reduces a shard: its task is retried (same audit.json as the local engine), or
    the command fails in one line with no audit folder."""
    frame = utkface(1_200_000, seed=9)
    folder = tmp_path / "shards"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 6)):
        frame.iloc[rows].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    out = tmp_path / "ray"
    killed, code, stdout, stderr = run_killing_a_ray_worker(
        ["audit", "--predictions", str(folder), "--out", str(out), "--engine", "ray", "--workers", "2",
         "--no-report", "--n-boot", "50", "--no-tsne"], "reduce_batch")
    assert killed is not None, f"no Ray worker was seen reducing a shard (exit {code}): {stderr[-2000:]}"
    if code == 0:  # Ray retried the task: one warning says so, none of Ray's own lines show
        assert "(raylet)" not in stdout and "pid=" not in stdout, stdout  # Ray's "(task pid=...)" log lines
        assert any(line.startswith("shards: accuracy") for line in stdout.splitlines()), stdout
        assert all(line.startswith("faceaudit: warning: a Ray worker was lost") for line in stderr.splitlines())
        local = faceaudit.audit(folder, n_boot=50, tsne=False)
        assert _found(faceaudit.AuditResult.from_json(out / "audit.json")) == _found(local)
    else:
        assert not out.exists() and len(stderr.strip().splitlines()) == 1, stderr
