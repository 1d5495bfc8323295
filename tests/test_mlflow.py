"""`faceaudit audit --mlflow` against a real MLflow tracking server started here (SQLite backend, artifacts served
from a local folder), read back through MLflow's own client: the run's metrics equal audit.json's numbers, the
gates are tags, the artifacts are the files written; an unreachable server and a missing extra fail in one line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from audit_fixtures import GAP_AND_FLOOR_GATES, real_predictions  # noqa: F401  (session fixture)

from faceaudit.cli import main

#: How long the server may take to answer /health (about 15-30 s on a busy 2-core machine: two Python start-ups and
#: the SQLite schema's migrations).
START_TIMEOUT_S = 180
GATES = GAP_AND_FLOOR_GATES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_binary() -> str:
    beside = Path(sys.executable).parent / "mlflow"
    found = str(beside) if beside.is_file() else shutil.which("mlflow")
    assert found, "the mlflow command is not installed (pip install 'faceaudit[test]' installs it)"
    return found


class Server:
    """A running ``mlflow server``; :attr:`url` waits until it answers its health check."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self._url, self.log, self.started = process, url, log, time.monotonic()
        self.ready_after: float | None = None
        self.predictions = None  # the real predictions, computed while the server starts

    @property
    def url(self) -> str:
        while self.ready_after is None:
            try:
                with urllib.request.urlopen(f"{self._url}/health", timeout=2) as response:
                    if response.status == 200:
                        self.ready_after = time.monotonic() - self.started
            except OSError:
                if self.process.poll() is not None or time.monotonic() - self.started > START_TIMEOUT_S:
                    pytest.fail(f"mlflow server did not start: {self.log.read_text()[-2000:]}")
                time.sleep(0.25)
        return self._url


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """A real tracking server on a free localhost port: SQLite backend, artifacts proxied to a local folder. It
    starts before the real predictions are computed, so the two overlap; the finalizer ends its process group."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port, log = _free_port(), root / "server.log"
    # no job runner: a third Python process the server would start and never use here
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [_mlflow_binary(), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)

    def stop():
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass

    request.addfinalizer(stop)
    running = Server(process, f"http://127.0.0.1:{port}", log)
    running.predictions = request.getfixturevalue("real_predictions")  # computed while the server starts
    return running


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _name(*parts: str) -> str:
    """The documented naming: `` × `` -> ``_x_``, any other character MLflow refuses -> ``_``, joined by dots."""
    return ".".join(re.sub(r"[^\w.\- ]", "_", re.sub(r"\s*×\s*", "_x_", p)) for p in parts)


def _expected_metrics(audit: dict) -> dict[str, float]:
    """audit.json's numbers under their metric names: per group and overall, each with its bounds."""
    expected = {}

    def add(name, stat):
        if stat and stat.get("value") is not None:
            expected[name] = stat["value"]
            expected[f"{name}.lower"], expected[f"{name}.upper"] = stat["ci"]

    for metric, stat in audit["overall"]["metrics"].items():
        add(metric, stat)
    expected["n"] = audit["overall"]["n"]
    for grouping, block in audit["groupings"].items():
        for group in block["groups"]:
            for metric, stat in group["metrics"].items():
                add(_name(metric, grouping, group["key"]), stat)
            expected[_name("n", grouping, group["key"])] = group["n"]
        for metric, disparity in block["disparities"].items():
            add(_name("gap", metric, grouping), disparity.get("gap"))
    for metric in ("ece", "brier", "log_loss"):
        add(metric, audit["calibration"]["overall"][metric])
    for grouping, groups in audit["calibration"]["groupings"].items():
        for group in groups:
            add(_name("ece", grouping, group["key"]), group.get("ece"))
    return expected


def _audit(preds: Path, out: Path, *extra: str) -> list[str]:
    boot = [] if "--n-boot" in extra else ["--n-boot", "100"]
    return ["audit", "--predictions", str(preds), "--out", str(out), *boot, "--no-tsne", *extra]


def _run_id(stdout: str) -> str:
    found = re.findall(r"^logged to MLflow: run ([0-9a-f]{32}) in experiment '([^']+)' at (\S+)$", stdout, re.M)
    assert len(found) == 1, stdout
    return found[0][0]


@pytest.fixture(scope="module")
def gated(server, tmp_path_factory) -> SimpleNamespace:
    """A gated audit with its report, logged to the server: the folder, exit code and console output."""
    folder = tmp_path_factory.mktemp("gated")
    gates = folder / "gates.toml"
    gates.write_text(GATES)
    out, stdout, stderr = folder / "out", io.StringIO(), io.StringIO()
    url = server.url
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(_audit(server.predictions.csv, out, "--gates", str(gates), "--mlflow", url,
                           "--mlflow-experiment", "review board"))
    return SimpleNamespace(out=out, code=code, stdout=stdout.getvalue(), stderr=stderr.getvalue(), url=url)


def test_logged_run_reads_back_equal_to_the_audit(gated, tmp_path):
    from mlflow.tracking import MlflowClient

    out, url = gated.out, gated.url
    assert gated.code == 1, gated.stderr  # the race accuracy gap of this small model is far above 0.05
    assert "mlflow" not in gated.stderr.lower() and "🏃" not in gated.stdout  # MLflow's own lines stay quiet
    run_id = _run_id(gated.stdout)
    audit = json.loads((out / "audit.json").read_text())

    client = MlflowClient(tracking_uri=url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == audit["model"]["name"]
    assert client.get_experiment(run.info.experiment_id).name == "review board"

    metrics, expected = run.data.metrics, _expected_metrics(audit)
    assert len(expected) > 500  # race, gender, age band and their intersections, each with bounds
    mismatched = {k: (metrics.get(k), v) for k, v in expected.items() if metrics.get(k) != v}
    assert not mismatched, list(mismatched.items())[:5]
    black = next(g for g in audit["groupings"]["race"]["groups"] if g["key"] == "Black")["metrics"]["accuracy"]
    assert (metrics["accuracy.race.Black"], metrics["accuracy.race.Black.lower"],
            metrics["accuracy.race.Black.upper"]) == (black["value"], *black["ci"])
    assert "accuracy.race_x_gender.Black_x_Female" in metrics and "accuracy.age_band.70_" in metrics
    assert metrics["accuracy"] == audit["overall"]["metrics"]["accuracy"]["value"]

    params = run.data.params
    assert params["model"] == audit["model"]["name"]
    assert params.get("data_fingerprint") == audit["data"].get("fingerprint")  # a dataset's; none for a table
    assert params["predictions_sha256"] == audit["data"]["predictions_sha256"]
    assert (float(params["level"]), int(params["n_boot"]), int(params["seed"])) == (
        audit["settings"]["ci"], audit["settings"]["n_boot"], audit["settings"]["seed"])

    tags = run.data.tags
    assert tags["faceaudit.status"] == audit["gates"]["status"] == "fail"
    assert tags["faceaudit.gate.race accuracy gap"] == "fail"
    assert tags["faceaudit.gate.overall accuracy floor"] == "pass"
    assert tags["mlflow.note.content"] == (out / "summary.md").read_text()

    written = {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}  # not the folder's marker
    assert {"audit.json", "report.html", "report.pdf", "summary.md", "group_metrics.csv", "gates.xml"} <= written
    assert {a.path for a in client.list_artifacts(run_id)} == written
    downloaded = Path(client.download_artifacts(run_id, "", str(tmp_path / "downloaded")))
    for name in written:
        assert (downloaded / name).read_bytes() == (out / name).read_bytes(), name


def test_ungated_audit_with_baseline_without_report_goes_to_the_env_uri(server, gated, tmp_path, capsys,
                                                                        monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    out = tmp_path / "plain"
    code = main(_audit(server.predictions.csv, out, "--no-report", "--n-boot", "0", "--baseline", str(gated.out),
                       "--mlflow"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run = MlflowClient(tracking_uri=server.url).get_run(_run_id(captured.out))
    assert run.data.tags["faceaudit.status"] == "not gated"
    baseline = json.loads((out / "audit.json").read_text())["baseline"]  # the same images: paired, no change
    assert run.data.tags["faceaudit.baseline"] == (f"{baseline['better']} better, {baseline['worse']} worse than "
                                                   f"{baseline['model']} ({baseline['method']})")
    metrics = run.data.metrics
    assert (metrics["baseline.better"], metrics["baseline.worse"]) == (baseline["better"], baseline["worse"])
    for row in baseline["rows"]:
        if row["change"] is not None:
            name = "change.accuracy" + ("" if row["grouping"] == "overall" else
                                        "." + _name(row["grouping"], row["group"]))
            assert (metrics[name], metrics[f"{name}.lower"], metrics[f"{name}.upper"]) == (row["change"], *row["ci"])
    assert not any(k.startswith("faceaudit.gate.") for k in run.data.tags)
    assert MlflowClient(tracking_uri=server.url).get_experiment(run.info.experiment_id).name == "faceaudit"
    artifacts = {a.path for a in MlflowClient(tracking_uri=server.url).list_artifacts(run.info.run_id)}
    assert artifacts == {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert "audit.json" in artifacts and not artifacts & {"report.html", "report.pdf", "summary.md"}


def test_unreachable_server_is_one_line_after_the_audit_is_written(real_predictions, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    code = main(_audit(real_predictions.csv, out, "--no-report", "--n-boot", "0", "--mlflow", url))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert [line for line in err if "error" in line.lower() or "retr" in line.lower()] == err[-1:], err
    assert err[-1] == (f"faceaudit: error: audit written to {out}, but logging to MLflow at {url} failed: cannot "
                       f"reach the server (connection refused)")
    assert (out / "audit.json").is_file()
    assert elapsed < 60, elapsed


def test_missing_mlflow_names_the_extra_before_auditing(real_predictions, tmp_path, capsys,  # noqa: F811
                                                        monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # "import mlflow" raises ImportError, as when not installed
    out = tmp_path / "out"
    code = main(_audit(real_predictions.csv, out, "--no-report", "--mlflow"))
    assert code == 2
    assert capsys.readouterr().err.strip() == \
        "faceaudit: error: --mlflow needs MLflow: pip install 'faceaudit[mlflow]'"
    assert not out.exists()


def test_experiment_option_needs_mlflow(real_predictions, tmp_path, capsys):  # noqa: F811
    code = main(_audit(real_predictions.csv, tmp_path / "out", "--mlflow-experiment", "x"))
    assert code == 2 and "--mlflow-experiment goes with --mlflow" in capsys.readouterr().err
