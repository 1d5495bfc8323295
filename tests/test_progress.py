"""Issue 24, item 6: a console for people. `faceaudit audit` and `faceaudit report` show one bar per long step
(model, data, inference, bootstrap resamples, t-SNE, figures, PDF) on a terminal (stderr) and one plain line per
finished step on stdout when stderr is piped (no carriage returns in a CI log); `--verbose` gives each step's
elapsed time instead; the total ends the run; stderr keeps an error to its one line.
The library stays quiet from Python unless asked (``progress=True``).

Run on small real predictions (a stratified few hundred rows of the session's real UTKFace predictions) and a
tiny real Keras model, through the installed `faceaudit` command, with stderr a pipe or a pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from commands import FACEAUDIT

#: The long steps of an audit of predictions with embeddings, in the order they run, and their plain lines.
STEPS = {"bootstrap": r"bootstrap \(50 resamples × \d+ groupings, before/after scaling\)",
         "t-SNE": r"t-SNE \(\d{3} embeddings\)", "figures": r"figures \(10 report sections\)",
         "PDF": r"PDF \(report\.pdf\)"}
TOTAL = re.compile(r"^audited in \d+\.\d s$", re.M)
ROWS_PER_SPLIT = 300


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FACEAUDIT_DATA", "PYTHONWARNINGS", "FACEAUDIT_REQUIRE_GATES")}
    env["FACEAUDIT_CACHE"] = str(tmp_path / "cache")
    return env


def _piped(argv: list[str], tmp_path: Path) -> Run:
    proc = subprocess.run([*FACEAUDIT, *argv], capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _on_a_terminal(argv: list[str], tmp_path: Path) -> Run:
    """Run with stderr a pseudo-terminal of 120 columns (as a person's shell), stdout a pipe."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([*FACEAUDIT, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
                            env=_env(tmp_path))
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        stdout = proc.stdout.read().decode()
        proc.wait(timeout=600)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return Run(proc.returncode, stdout, b"".join(chunks).decode(errors="replace"))


@pytest.fixture(scope="module")
def small_predictions(real_predictions, tmp_path_factory):  # noqa: F811
    """A few hundred real val and test rows per split (stratified by race) with their aligned embeddings."""
    frame = pd.read_csv(real_predictions.csv)
    vectors = np.load(real_predictions.embeddings_npy)
    frame["row"] = np.arange(len(frame))
    picked = frame.groupby(["split", "race"], group_keys=False).sample(frac=ROWS_PER_SPLIT / (len(frame) / 2),
                                                                       random_state=0)
    picked = picked.sort_values("row")
    folder = tmp_path_factory.mktemp("progress")
    csv, npy = folder / "preds.csv", folder / "emb.npy"
    picked.drop(columns="row").to_csv(csv, index=False)
    np.save(npy, vectors[picked["row"].to_numpy()])
    return csv, npy


def _audit_args(small_predictions, out: Path, *more: str) -> list[str]:
    csv, npy = small_predictions
    return ["audit", "--predictions", str(csv), "--embeddings", str(npy), "--out", str(out), "--n-boot", "50",
            "--min-group-size", "5", *more]


def _done(pattern: str) -> re.Pattern:
    """A finished step's plain line (stderr piped, no --verbose): ``t-SNE (2,133 embeddings) done``."""
    return re.compile(rf"^{pattern} done$", re.M)


def _timed(pattern: str) -> re.Pattern:
    """A finished step's line under --verbose: ``t-SNE (2,133 embeddings) 8.1 s`` (on a terminal: after the cleared
    bar's carriage return)."""
    return re.compile(rf"(?:^|\r){pattern} \d+\.\d s\r?$", re.M)


def _first(pattern: re.Pattern, text: str) -> int:
    found = pattern.search(text)
    assert found, f"no {pattern.pattern!r} in:\n{text[-2000:]}"
    return found.start()


@pytest.mark.slow
def test_piped_audit_prints_one_plain_line_per_step_and_the_total(small_predictions, tmp_path):
    run = _piped(_audit_args(small_predictions, tmp_path / "audit"), tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    assert "\r" not in run.stderr + run.stdout, "carriage returns in piped output"
    at = [_first(_done(pattern), run.stdout) for pattern in STEPS.values()]
    assert at == sorted(at) and at[-1] < _first(TOTAL, run.stdout), run.stdout  # in the order they run, then total
    for pattern in STEPS.values():
        assert len(_done(pattern).findall(run.stdout)) == 1, run.stdout  # one line per step, no more
        assert not _timed(pattern).search(run.stdout), "step times without --verbose"
    assert not re.search(r"bootstrap|t-SNE|figures|PDF", run.stderr), run.stderr  # stderr: warnings and errors only
    assert (tmp_path / "audit" / "report.pdf").is_file()


@pytest.mark.slow
def test_verbose_prints_each_steps_time_when_it_ends(small_predictions, tmp_path):
    run = _piped([*_audit_args(small_predictions, tmp_path / "audit", "--no-report"), "--verbose"], tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    assert "\r" not in run.stderr
    at = [_first(_timed(STEPS[name]), run.stdout) for name in ("bootstrap", "t-SNE")]
    assert at == sorted(at), run.stdout
    assert not re.search(r" done$", run.stdout, re.M), run.stdout  # the time line stands for the plain line
    assert "figures" not in run.stdout and "PDF" not in run.stdout  # --no-report: no such steps
    total = TOTAL.search(run.stdout)
    assert total, run.stdout
    seconds = [float(m) for m in re.findall(r"^(?:bootstrap|t-SNE) .* (\d+\.\d) s$", run.stdout, re.M)]
    assert len(seconds) == 2 and sum(seconds) <= float(total.group().split()[2]) + 0.1  # steps fit in the total


@pytest.mark.slow
def test_audit_on_a_terminal_draws_bars(small_predictions, tmp_path):
    run = _on_a_terminal([*_audit_args(small_predictions, tmp_path / "audit"), "--verbose"], tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    assert "\r" in run.stderr
    for name, pattern in STEPS.items():
        assert re.search(rf"\r{pattern}: ", run.stderr), f"no {name} bar:\n{run.stderr[-1500:]!r}"
        assert _timed(pattern).search(run.stdout), f"no {name} time"
    for name in ("bootstrap", "t-SNE", "figures"):  # steps that count their work show a filling bar
        assert re.search(rf"\r{STEPS[name]}: +\d+%\|", run.stderr), name
    assert re.search(r"\rt-SNE \(\d{3} embeddings\): +\d+%\|.*\| \d+/1000 ", run.stderr)  # iterations counted
    assert not re.search(r" done$", run.stdout, re.M)  # no plain lines with a terminal
    assert TOTAL.search(run.stdout), run.stdout
    assert "\r" not in run.stdout


@pytest.mark.slow
def test_report_command_shows_the_same_steps(small_predictions, tmp_path):
    out = tmp_path / "audit"
    assert _piped(_audit_args(small_predictions, out, "--no-report", "--no-tsne"), tmp_path).code == 0
    run = _piped(["report", str(out), "--verbose"], tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    assert "\r" not in run.stderr
    for name in ("figures", "PDF"):
        assert len(_timed(STEPS[name]).findall(run.stdout)) == 1, run.stdout
    assert re.search(r"^rendered in \d+\.\d s$", run.stdout, re.M), run.stdout


@pytest.mark.slow
def test_the_library_is_quiet_unless_asked(small_predictions, capfd, monkeypatch):
    import faceaudit
    from faceaudit import console

    monkeypatch.setattr(console, "_step_times", False)  # as in a fresh interpreter (a CLI test may have set it)
    csv, npy = small_predictions
    faceaudit.audit(csv, embeddings=npy, n_boot=20, min_group_size=5)
    quiet = capfd.readouterr()
    assert not re.search(r"^(bootstrap|t-SNE)\b", quiet.err + quiet.out, re.M), quiet
    faceaudit.audit(csv, embeddings=npy, n_boot=20, min_group_size=5, progress=True)
    shown = [line for line in capfd.readouterr().out.splitlines() if re.match(r"(bootstrap|t-SNE) ", line)]
    # a pytest capture is no terminal: one plain line per step, and no times (those come with --verbose)
    assert [(line.split(" (")[0], line.endswith(" done")) for line in shown] == [("bootstrap", True),
                                                                                 ("t-SNE", True)], shown
    monkeypatch.setattr(console, "_step_times", True)
    faceaudit.audit(csv, embeddings=npy, n_boot=20, min_group_size=5, tsne=False, progress=True)
    assert re.search(r"^bootstrap \(20 resamples .* \d+\.\d s$", capfd.readouterr().out, re.M)


@pytest.mark.slow
def test_model_audit_shows_inference_steps(utk_sample_dir, tmp_path):
    from tiny_models import tiny_contract_cnn

    model, dataset = tiny_contract_cnn(utk_sample_dir)
    model.save(tmp_path / "tiny.keras")
    run = _piped(["audit", str(tmp_path / "tiny.keras"), "--data", str(utk_sample_dir), "--out", str(tmp_path / "a"),
                  "--n-boot", "20", "--min-group-size", "5", "--no-tsne", "--no-report", "--verbose"], tmp_path)
    assert run.code == 0, run.stderr[-2000:]
    assert "\r" not in run.stderr
    n_test, n_val = len(dataset.split("test")), len(dataset.split("val"))
    at = [_first(_timed(pattern), run.stdout)
          for pattern in (re.escape("model (tiny.keras)"), re.escape(f"data ({utk_sample_dir.name})"),
                          re.escape(f"inference ({n_test:,} test images)"),
                          re.escape(f"inference ({n_val:,} val images)"), r"bootstrap \(20 resamples[^)]*\)")]
    assert at == sorted(at), run.stdout
    assert TOTAL.search(run.stdout), run.stdout
