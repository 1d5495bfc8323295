"""``faceaudit predict``: one small Keras model trained on the real UTKFace sample, predicted into sharded Parquet
tables by the local engine and by Ray workers (in this process, and in a subprocess that loses a worker midway),
and the inputs the command refuses."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
from commands import FACEAUDIT
from tiny_models import tiny_contract_cnn

from faceaudit.cli import main
from faceaudit.taxonomy import UTKFACE

pytestmark = pytest.mark.slow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SIZE = 32
#: max |Δp| allowed between engines (the same code on the same images).
ATOL = 1e-6


@pytest.fixture(scope="module")
def model_file(utk_sample_dir, tmp_path_factory):
    """A 32px CNN with faceaudit's ``embedding`` and ``race_probs`` layers, trained for one epoch on the sample."""
    model, _ = tiny_contract_cnn(utk_sample_dir, size=SIZE)
    path = tmp_path_factory.mktemp("predict") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def local(model_file, utk_sample_dir, tmp_path_factory):
    """The local engine's folder for the test and val splits, in shards of 30 rows."""
    import faceaudit

    out = tmp_path_factory.mktemp("local") / "preds"
    return faceaudit.predict(model_file, utk_sample_dir, out, shard_size=30, batch_size=16)


def _read(folder) -> tuple[pd.DataFrame, np.ndarray | None, dict]:
    """A predictions folder's rows (shards in order), embeddings and predict.json."""
    record = json.loads((folder / "predict.json").read_text())
    frame = pd.concat([pd.read_parquet(folder / s["file"]) for s in record["shards"]], ignore_index=True)
    embeddings = [np.load(folder / s["embeddings"]["file"]) for s in record["shards"] if "embeddings" in s]
    return frame, (np.concatenate(embeddings) if embeddings else None), record


def _same_predictions(folder, reference) -> None:
    ref_frame, ref_emb, _ = _read(reference)
    frame, emb, _ = _read(folder)
    assert list(frame["image_id"]) == list(ref_frame["image_id"])
    probs = list(UTKFACE.prob_columns)
    assert np.abs(frame[probs].to_numpy() - ref_frame[probs].to_numpy()).max() <= ATOL
    assert np.abs(emb - ref_emb).max() <= ATOL


def test_local_engine_writes_shards_matching_single_process_predict(local, model_file, utk_sample_dir):
    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.models.inference import predict
    from faceaudit.seams.predictions import PredictionsTable

    frame, embeddings, record = _read(local)
    dataset = load_dataset(utk_sample_dir, progress=False)
    manifest = dataset.manifest
    expected = manifest[manifest["split"].isin(["test", "val"])].reset_index(drop=True)
    assert list(frame["image_id"]) == list(expected["image_id"])  # manifest order, both splits, split kept
    assert list(frame["split"]) == list(expected["split"]) and set(frame["split"]) == {"test", "val"}
    shards = sorted(p.name for p in local.glob("part-*.parquet"))
    assert shards == [f"part-{i:05d}.parquet" for i in range(-(-len(expected) // 30))]
    assert [s["rows"] for s in record["shards"]] == [min(30, len(expected) - i) for i in range(0, len(expected), 30)]
    for shard in record["shards"]:
        assert len(pd.read_parquet(local / shard["file"])) == len(np.load(local / shard["embeddings"]["file"]))
    assert record["rows"] == len(expected) and record["engine"] == {"engine": "local", "workers": 1, "cluster": None}
    assert record["data"]["fingerprint"] == dataset.fingerprint and record["schema"] == UTKFACE.name
    assert record["model"]["name"] == "model" and record["model"]["runtime"]["output_kind"] == "probabilities"
    written = PredictionsTable.validate(pd.read_parquet(local / "part-00000.parquet"), schema=UTKFACE)
    assert {"path", "sha256", "split", "confidence", "correct"} <= set(frame.columns) and len(written.frame) == 30
    # The same numbers as audit_model's single-process predictions, split by split.
    for split in ("test", "val"):
        rows = dataset.split(split)
        probs, emb = predict(model_file, rows, progress=False, schema=UTKFACE)
        mine = frame["split"] == split
        assert list(frame.loc[mine, "image_id"]) == list(rows["image_id"])
        assert np.abs(frame.loc[mine, list(UTKFACE.prob_columns)].to_numpy() - probs).max() <= ATOL
        assert np.abs(embeddings[mine.to_numpy()] - emb).max() <= ATOL


def test_ray_engine_through_the_cli_matches_local(local, model_file, utk_sample_dir, tmp_path, capsys):
    out = tmp_path / "ray"
    code = main(["predict", str(model_file), "--data", str(utk_sample_dir), "--out", str(out), "--engine", "ray",
                 "--workers", "2", "--shard-size", "30", "--batch-size", "8"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""  # no Ray log lines, warnings or progress bars
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 80 predictions in 3 shards to") and "2 Ray workers" in lines[0]
    _same_predictions(out, local)
    record = json.loads((out / "predict.json").read_text())
    assert record["engine"]["engine"] == "ray" and record["engine"]["workers"] == 2
    assert [s["rows"] for s in record["shards"]] == [30, 30, 20]
    assert record["model"]["runtime"]["output_kind"] == "probabilities"
    # The audit of the Ray-written shards is the single-process audit of the same model on the same images.
    import faceaudit

    streamed = faceaudit.audit(out, n_boot=100, tsne=False)
    direct = faceaudit.audit_model(model_file, utk_sample_dir, n_boot=100, tsne=False)
    assert streamed.overall == direct.overall and streamed.groupings == direct.groupings
    for key in ("name", "kind", "run_hash", "runtime"):  # the model card reads predict.json: the same model
        assert streamed.model[key] == direct.model[key], key
    assert streamed.data["fingerprint"] == direct.data["fingerprint"]
    assert streamed.calibration["temperature"]["temperature"] == pytest.approx(
        direct.calibration["temperature"]["temperature"], abs=1e-6)
    assert streamed.embeddings["knn_purity"] == direct.embeddings["knn_purity"]


def test_a_worker_lost_midway_is_recovered_or_nothing_is_written(model_file, utk_sample_dir, tmp_path):
    """A map worker SIGKILLs itself at a known point (its first block past the first one; the fault-injection hook
    FACEAUDIT_TEST_KILL_RAY_WORKER), so the test does not race the machine's speed (issue 23, item 12)."""
    import subprocess

    out, marker = tmp_path / "killed", tmp_path / "worker-killed"
    proc = subprocess.run(
        [*FACEAUDIT, "predict", str(model_file), "--data", str(utk_sample_dir), "--out", str(out), "--engine", "ray",
         "--workers", "2", "--split", "all", "--shard-size", "50", "--batch-size", "2"], capture_output=True, text=True,
        timeout=600, env={**os.environ, "FACEAUDIT_TEST_KILL_RAY_WORKER": str(marker)})
    code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    assert marker.exists(), f"no Ray map worker killed itself mid-run (exit {code}): {stderr[-2000:]}"
    if code == 0:  # Ray restarted the actor and retried its batches
        lines = stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"wrote 400 predictions in 8 shards to {out} ("), stdout
        assert all(line.startswith("faceaudit: warning: a Ray worker was lost") for line in stderr.splitlines())
        frame, _, record = _read(out)
        assert record["rows"] == 400 and record["engine"]["workers"] == 2
        local_out = tmp_path / "local-all"
        assert main(["predict", str(model_file), "--data", str(utk_sample_dir), "--out", str(local_out),
                     "--split", "all", "--shard-size", "50"]) == 0
        _same_predictions(out, local_out)
    else:
        assert not out.exists() and not list(tmp_path.glob(".killed.*")), stderr
        assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("args, message", [
    (["--engine", "spark"], "--engine must be one of 'local', 'ray' (got 'spark')"),
    (["--workers", "2"], "--workers needs --engine ray"),
    (["--split", "tests"], "split must be one or more of"),
    (["--shard-size", "0"], "shard-size must be a whole number"),
])
def test_bad_inputs_fail_in_one_line_and_write_nothing(args, message, model_file, utk_sample_dir, tmp_path, capsys):
    out = tmp_path / "preds"
    assert main(["predict", str(model_file), "--data", str(utk_sample_dir), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_missing_model_and_missing_ray_fail_in_one_line(model_file, utk_sample_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "preds"
    assert main(["predict", str(tmp_path / "absent.keras"), "--data", str(utk_sample_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"faceaudit: error: model not found: {tmp_path / 'absent.keras'}"]
    monkeypatch.setitem(sys.modules, "ray", None)  # faceaudit[distributed] not installed
    assert main(["predict", str(model_file), "--data", str(utk_sample_dir), "--out", str(out), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'faceaudit[distributed]'" in err[0], err
    assert not out.exists()


def test_sigterm_midway_exits_143_and_leaves_no_folder(model_file, utk_sample_dir, tmp_path):
    """SIGTERM (timeout, CI, Kubernetes) once the first shard is written: one line, exit 143, nothing left."""
    import signal
    import subprocess
    import time

    out = tmp_path / "preds"
    proc = subprocess.Popen([*FACEAUDIT, "predict", str(model_file), "--data", str(utk_sample_dir), "--out", str(out),
                             "--split", "all", "--shard-size", "20", "--batch-size", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(tmp_path.glob(".preds.partial-*/part-00000.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline, "the first shard was never written"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["faceaudit: terminated (SIGTERM)"], stderr
    assert not out.exists() and not list(tmp_path.glob(".preds.*"))


def test_a_ray_address_that_is_not_there_fails_within_seconds(model_file, utk_sample_dir, tmp_path):
    import subprocess
    import time

    pytest.importorskip("ray")
    out = tmp_path / "preds"
    started = time.monotonic()
    proc = subprocess.run([*FACEAUDIT, "predict", str(model_file), "--data", str(utk_sample_dir), "--out", str(out),
                           "--engine", "ray"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_ADDRESS": "not-a-host:99999"})
    assert proc.returncode == 2 and time.monotonic() - started < 30, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "faceaudit: error: RAY_ADDRESS=not-a-host:99999 is not host:port with a port from 1 to 65535; start the "
        "cluster (ray start --head) or unset RAY_ADDRESS to run Ray on this machine"]
    assert proc.stdout == "" and not out.exists()
