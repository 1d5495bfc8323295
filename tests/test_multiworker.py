"""faceaudit train --strategy multiworker: two real worker processes on localhost train one model.

Each worker runs the same command with its own ``TF_CONFIG`` (index 0 is the chief) and its own ``--out``; the chief
writes the run folder, the other worker leaves only ``worker-1.json`` (its view of the history).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from commands import FACEAUDIT

from faceaudit.cli import main
from faceaudit.seams.run import RunRecord, load_history

TINY = ["--backbone", "cnn", "--image-size", "32", "--batch-size", "32", "--quiet", "--embedding-dim", "16",
        "--max-train", "192"]
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
EPOCHS = 4
ARGS = ("--epochs", str(EPOCHS), "--patience", "0")


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _start_workers(data: Path, outs: list[Path], logs: Path, *extra: str) -> list[subprocess.Popen]:
    ports = _free_ports(len(outs))
    processes = []
    for index, out in enumerate(outs):
        env = {**os.environ, "TF_CONFIG": _tf_config(ports, index), "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = open(logs / f"worker-{index}.log", "w")  # noqa: SIM115 (closed when the process is waited for)
        command = [*FACEAUDIT, "train", "--data", str(data), "--out", str(out), *TINY, "--strategy", "multiworker",
                   *extra]
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
        log.close()
    return processes


def _wait(processes: list[subprocess.Popen], logs: Path, timeout: float = 240) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("multi-worker training did not finish:\n" + _logs(logs))
    return codes


def _logs(logs: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(logs.glob("worker-*.log")))


@pytest.fixture(scope="module")
def two_workers(utk_sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("multiworker")
    outs = [root / "chief", root / "worker1"]
    start = time.perf_counter()
    codes = _wait(_start_workers(utk_sample_dir, outs, root, *ARGS), root)
    assert codes == [0, 0], _logs(root)
    return outs, root, time.perf_counter() - start


def test_chief_writes_the_run_folder_and_records_the_workers(two_workers):
    (chief, _), logs, _ = two_workers
    names = {p.name for p in chief.iterdir()}
    assert {"model.keras", "history.json", "history-unfreeze.json", "run.json", "predictions.csv"} <= names
    assert "checkpoint" not in names and not any(n.startswith("worker-") for n in names)
    run = json.loads((chief / "run.json").read_text())
    assert run["strategy"] == "multiworker" and run["workers"] == 2 and run["devices"] == 2
    assert run["hyperparameters"]["strategy"] == "multiworker" and run["status"] == "complete"
    assert RunRecord.read(chief).workers == 2 and RunRecord.read(chief).extra == {}
    assert "run written to" in (logs / "worker-0.log").read_text()


def test_the_other_worker_leaves_only_its_history(two_workers):
    (_, worker), logs, _ = two_workers
    assert sorted(p.name for p in worker.iterdir()) == ["worker-1.json"]
    record = json.loads((worker / "worker-1.json").read_text())
    assert record["task"] == "worker-1" and record["workers"] == 2 and not record["chief"]
    assert "worker worker-1 of 2 done" in (logs / "worker-1.log").read_text()


def test_both_workers_trained_one_model(two_workers):
    """Same per-epoch history on both workers: one model, its gradients all-reduced across the two."""
    import keras

    from faceaudit.models import layers  # noqa: F401  (registers Preprocess for loading)

    (chief, worker), _, seconds = two_workers
    ours = load_history(chief)["unfreeze"]
    record = json.loads((worker / "worker-1.json").read_text())
    theirs = record["history"]["unfreeze"]
    for metric in METRICS:
        assert len(ours[metric]) == len(theirs[metric]) == EPOCHS
        np.testing.assert_allclose(ours[metric], theirs[metric], rtol=0, atol=1e-6, err_msg=metric)
    assert np.isfinite(ours["loss"]).all() and ours["loss"][-1] < ours["loss"][0]
    # Bit for bit the same weights: the chief's saved model and the other worker's final weights.
    model = keras.saving.load_model(chief / "model.keras", compile=False)
    saved = {w.path: hashlib.sha256(np.ascontiguousarray(w.numpy()).tobytes()).hexdigest() for w in model.weights}
    assert record["weights_sha256"] == saved
    print(f"two-worker training: {seconds:.1f} s")


def test_each_worker_resumes_from_its_own_checkpoint(two_workers, utk_sample_dir, tmp_path):
    """SIGKILL both workers mid-run, put the chief one epoch behind, resume both: the straight run's history."""
    (straight, _), _, _ = two_workers
    outs = [tmp_path / "chief", tmp_path / "worker1"]
    states = [outs[0] / "checkpoint" / "state.json", outs[1] / "checkpoint" / "worker-1" / "state.json"]
    processes = _start_workers(utk_sample_dir, outs, tmp_path, *ARGS)
    deadline = time.time() + 240
    while time.time() < deadline and all(p.poll() is None for p in processes):
        try:
            if all(json.loads(f.read_text())["epochs_done"] >= 2 for f in states):
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    assert all(p.poll() is None for p in processes), "training finished before it could be killed:\n" + _logs(tmp_path)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (outs[0] / "run.json").exists() and not (outs[1] / "worker-1.json").exists()
    # The chief killed before it saved its last epoch: the other worker must step back to its previous checkpoint.
    chief_ckpt = outs[0] / "checkpoint"
    shutil.copy(chief_ckpt / "state-previous.json", chief_ckpt / "state.json")
    behind = json.loads((chief_ckpt / "state.json").read_text())["epochs_done"]
    assert behind < json.loads(states[1].read_text())["epochs_done"] < EPOCHS

    codes = _wait(_start_workers(utk_sample_dir, outs, tmp_path, *ARGS, "--resume"), tmp_path)
    assert codes == [0, 0], _logs(tmp_path)
    assert json.loads((outs[0] / "run.json").read_text())["resumed"] == 1
    assert sorted(p.name for p in outs[1].iterdir()) == ["worker-1.json"]
    a, b = load_history(straight)["unfreeze"], load_history(outs[0])["unfreeze"]
    theirs = json.loads((outs[1] / "worker-1.json").read_text())["history"]["unfreeze"]
    for metric in METRICS:
        np.testing.assert_allclose(a[metric], b[metric], rtol=1e-5, atol=1e-6, err_msg=metric)
        np.testing.assert_allclose(b[metric], theirs[metric], rtol=0, atol=1e-6, err_msg=metric)


def test_multiworker_without_tf_config_is_a_one_line_error(utk_sample_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(utk_sample_dir), "--out", str(out), *TINY, "--epochs", "1",
                 "--strategy", "multiworker"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceaudit: error:") and err.count("\n") == 0
    assert "TF_CONFIG" in err and "--strategy multiworker" in err
    assert not out.exists()


@pytest.mark.parametrize("value, says", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["localhost:1"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', 'is not "host:port"'),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}', "task index 1"),
    ('{"cluster": {"ps": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "'ps' is not supported"),
])
def test_invalid_tf_config_names_what_is_wrong(value, says, utk_sample_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", value)
    assert main(["train", "--data", str(utk_sample_dir), "--out", str(tmp_path / "run"), *TINY,
                 "--strategy", "multiworker"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "TF_CONFIG" in err and says in err, err
