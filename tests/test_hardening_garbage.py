"""Hardening, round two (issue 23), the rest: errors that name their cause (item 8), every command fed garbage ends
in exit 2 and one line with nothing written (item 2), an unforeseen exception is one line and exit 2, never a
traceback with exit 1, and the dlib path's framework lines stay off a quiet console (item 11).

Real inputs: the real UTKFace images and predictions of a model trained on them; garbage files are small.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from commands import FACEAUDIT

from faceaudit.errors import FaceauditError


def _main(capsys, argv: list[str]) -> tuple[int, list[str]]:
    """``faceaudit ARGV`` in this process: the exit code and the stderr lines."""
    from faceaudit.cli import main

    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _one_line(code: int, err: list[str], text: str) -> str:
    assert code == 2 and len(err) == 1 and text in err[0] and "Traceback" not in err[0], (code, err)
    return err[0]


# --- item 8: errors that name their cause ------------------------------------------------------------------------


def test_a_random_bytes_tflite_file_is_not_a_flatbuffer(utk_sample_dir, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(os.urandom(4096))
    for argv in (["predict", str(model), "--data", str(utk_sample_dir), "--out", str(tmp_path / "p")],
                 ["contract", "init", str(model), "--out", str(tmp_path / "c.toml")]):
        proc = subprocess.run([*FACEAUDIT, *argv], capture_output=True, text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert f"{model} is not a TFLite flatbuffer" in lines[0] and "codec" not in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_the_unknown_label_message_names_the_users_prob_columns(real_predictions, tmp_path, capsys):  # noqa: F811
    import pandas as pd

    table = pd.read_csv(real_predictions.csv)
    table = table[table["split"] == "test"].drop(columns=["split"]).reset_index(drop=True)
    table.loc[3, "race"] = "Martian"
    table.rename(columns=lambda c: "p_" + c[len("prob_"):] if c.startswith("prob_") else c).to_csv(
        tmp_path / "p.csv", index=False)
    line = _one_line(*_main(capsys, ["audit", "--predictions", str(tmp_path / "p.csv"), "--prob-prefix", "p_",
                                     "--out", str(tmp_path / "a")]), "unknown race label 'Martian'")
    assert "p_White" in line and "add the missing p_ column" in line and "prob_" not in line, line
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("how", ["negative", "sum"])
def test_a_dataframes_error_names_the_row_of_the_table(real_predictions, how):  # noqa: F811
    import faceaudit

    frame = real_predictions.test_table.output_frame().drop(columns=["confidence", "correct"])
    if how == "negative":
        frame.loc[7, "prob_White"] = -0.5
    else:
        frame.loc[7, "prob_White"] = frame.loc[7, "prob_White"] + 0.5
    with pytest.raises(FaceauditError) as caught:
        faceaudit.audit(frame, n_boot=20)
    assert "row 7 of the table" in str(caught.value) and "of the file" not in str(caught.value), caught.value


def test_etc_passwd_in_a_labelled_csv_is_not_an_image(utk_sample_dir, tmp_path):
    images = sorted(utk_sample_dir.glob("*.jpg"))[:120]
    rows = ["path,age,gender,race"] + [f"{p},{','.join(p.name.split('_')[:3])}" for p in images]
    rows.append("/etc/passwd,30,0,0")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.csv"
    proc = subprocess.run([*FACEAUDIT, "data", "manifest", str(labels), "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "/etc/passwd: not an image file" in proc.stderr and "not found" not in proc.stderr, proc.stderr
    assert "/etc/passwd" not in out.read_text() and len(out.read_text().splitlines()) == len(images) + 1


# --- item 2: every command fed garbage: exit 2, one line, no traceback, nothing written -------------------------


@pytest.fixture(scope="module")
def garbage(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("garbage")
    noise = os.urandom(3000)
    for suffix in ("keras", "onnx", "tflite", "h5", "csv", "parquet", "json", "toml", "tar.gz"):
        (folder / f"bin.{suffix}").write_bytes(noise)
        (folder / f"empty.{suffix}").write_bytes(b"")
    (folder / "list.json").write_text("[1, 2, 3]\n")
    (folder / "dict.json").write_text('{"a": [1, 2]}\n')
    (folder / "wrong.toml").write_text("gates = 3\n")
    (folder / "wrong2.toml").write_text("[[gates]]\nmetric = 5\n")
    (folder / "wrong.csv").write_text("[1,2]\n")
    (folder / "dir").mkdir()
    return folder


MODELS = ["bin.keras", "bin.onnx", "bin.tflite", "bin.h5", "empty.keras", "empty.onnx", "empty.tflite", "list.json",
          "dir"]
TABLES = ["bin.csv", "bin.parquet", "empty.csv", "empty.parquet", "list.json", "wrong.csv", "dir"]
TOMLS = ["bin.toml", "empty.toml", "wrong.toml", "wrong2.toml", "list.json", "dir"]
AUDITS = ["bin.json", "list.json", "dict.json", "empty.json", "dir"]
DATA = ["bin.csv", "bin.tar.gz", "empty.csv", "empty.tar.gz", "dir", "wrong.csv", "list.json"]

CASES = ([("audit-model", m) for m in MODELS] + [("predict", m) for m in MODELS] + [("export", m) for m in MODELS]
         + [("contract-init", m) for m in MODELS] + [("audit-predictions", t) for t in TABLES]
         + [("audit-gates", g) for g in TOMLS] + [("audit-contract", g) for g in TOMLS]
         + [("contract-check", g) for g in TOMLS] + [("report", a) for a in AUDITS]
         + [("compare", a) for a in AUDITS] + [("diff", a) for a in AUDITS]
         + [("data-summary", d) for d in DATA] + [("data-manifest", d) for d in DATA])


@pytest.mark.parametrize("command, name", CASES)
def test_every_command_fed_garbage_exits_2_in_one_line(real_predictions, utk_sample_dir, garbage, tmp_path,  # noqa: F811
                                                      capsys, command, name):
    bad, out, data = str(garbage / name), tmp_path / "out", str(utk_sample_dir)
    argv = {
        "audit-model": ["audit", bad, "--data", data, "--out", str(out)],
        "predict": ["predict", bad, "--data", data, "--out", str(out)],
        "export": ["export", bad, "--format", "onnx", "--out", str(out)],
        "contract-init": ["contract", "init", bad, "--out", str(out)],
        "audit-predictions": ["audit", "--predictions", bad, "--out", str(out)],
        "audit-gates": ["audit", "--predictions", str(real_predictions.csv), "--gates", bad, "--out", str(out),
                        "--no-report"],
        "audit-contract": ["audit", str(garbage / "bin.onnx"), "--data", data, "--contract", bad, "--out", str(out)],
        "contract-check": ["contract", "check", bad],
        "report": ["report", bad, "--out", str(out)],
        "compare": ["compare", bad, bad, "--out", str(out)],
        "diff": ["diff", bad, bad, "--out", str(out)],
        "data-summary": ["data", "summary", bad],
        "data-manifest": ["data", "manifest", bad, "--out", str(out / "m.csv")],
    }[command]
    before = sorted(p.name for p in garbage.iterdir())
    code, err = _main(capsys, argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("faceaudit: error: "), (argv, code, err)
    assert "Traceback" not in err[0] and "codec can't decode" not in err[0], err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))  # at most the empty --out parent
    assert sorted(p.name for p in garbage.iterdir()) == before and not any((garbage / "dir").iterdir())


def test_an_unforeseen_exception_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    import faceaudit.commands.report as report

    def broken(args):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(report, "run_report", broken)
    code, err = _main(capsys, ["report", str(tmp_path / "a"), "--out", str(tmp_path / "r")])
    assert (code, err) == (2, ["faceaudit: error: RuntimeError: something nobody foresaw (rerun with --verbose for "
                               "the traceback)"])
    from faceaudit.cli import main

    code = main(["--verbose", "report", str(tmp_path / "a"), "--out", str(tmp_path / "r")])
    captured = capsys.readouterr().err
    assert code == 2 and captured.startswith("Traceback") and "in broken" in captured, captured
    assert captured.strip().splitlines()[-1] == "faceaudit: error: RuntimeError: something nobody foresaw"
    assert not (tmp_path / "r").exists()


# --- item 11: framework lines on a quiet console (the dlib path, piped) -------------------------------------------


def test_a_quiet_dlib_train_prints_no_framework_lines(utk_sample_dir, tmp_path):
    """A real dlib-resnet train (align+mirror) of 120 real images, piped: stdout is the one result line and stderr
    holds no "WARNING: All log messages before absl::InitializeLog()" or "E0000 ... node_def_util" line."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    import shutil
    from collections import defaultdict

    picked: dict[tuple, list[Path]] = defaultdict(list)
    for path in sorted(utk_sample_dir.glob("*.jpg")):
        key = tuple(path.name.split("_")[1:3])
        if len(picked[key]) < 12:
            picked[key].append(path)
    data = tmp_path / "faces"
    data.mkdir()
    for path in (p for paths in picked.values() for p in paths):
        shutil.copy(path, data / path.name)
    env = {**os.environ, "FACEAUDIT_CACHE": str(tmp_path / "cache")}  # descriptors computed, not cached
    proc = subprocess.run([*FACEAUDIT, "train", "--backbone", "dlib-resnet", "--dlib-framing", "align+mirror",
                           "--data", str(data), "--out", str(tmp_path / "run"), "--head-epochs", "1", "--epochs", "1",
                           "--quiet"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "absl::InitializeLog" not in proc.stderr and "node_def_util" not in proc.stderr, proc.stderr
    assert "E0000" not in proc.stderr and "I0000" not in proc.stderr, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("run written to"), proc.stdout
    assert (tmp_path / "run" / "model.keras").is_file()


@pytest.mark.parametrize("line", [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "E0000 00:00:1796499957.022843   31135 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool "
    "which is not in the op definition: Op<name=MapDataset; ...> NodeDef: {{node ParallelMapDatasetV2/_14}}\n",
])
def test_the_exact_framework_lines_are_dropped_unless_verbose(line, capfd, monkeypatch):
    from faceaudit import console

    monkeypatch.setattr(console, "_verbose", False)
    with console.native_noise_dropped():
        os.write(2, line.encode())
        os.write(2, b"a line of the user's\n")
    assert capfd.readouterr().err == "a line of the user's\n"
    monkeypatch.setattr(console, "_verbose", True)
    with console.native_noise_dropped():
        os.write(2, line.encode())
    assert capfd.readouterr().err == line


def test_a_progress_bar_on_a_terminal_is_live_while_framework_lines_are_dropped(tmp_path):
    """On a terminal (a real pseudo-terminal), Python's writes to stderr inside the block (a tqdm bar) reach the
    screen at once, before the block ends, while the native lines written to file descriptor 2 are dropped."""
    import pty
    import select

    script = tmp_path / "bar.py"
    script.write_text(
        "import os, sys, time\n"
        "from faceaudit import console\n"
        "console.configure(verbose=False)\n"
        "with console.native_noise_dropped():\n"
        "    os.write(2, b'E0000 00:00:1796499957.022843   31135 node_def_util.cc:682] NodeDef mentions\\n')\n"
        "    sys.stderr.write('\\r 50%|#####     | 1/2')\n"
        "    sys.stderr.flush()\n"
        "    time.sleep(3)\n"
        "    sys.stderr.write('\\r100%|##########| 2/2\\n')\n"
        "print('done', flush=True)\n")
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin/stdout/stderr are the terminal
        os.execv(sys.executable, [sys.executable, str(script)])
    seen, shown = b"", {}
    while True:
        ready, _, _ = select.select([fd], [], [], 10)
        if not ready:
            break
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        for mark in (b"50%", b"100%"):
            if mark in seen:
                shown.setdefault(mark, time.monotonic())
    os.waitpid(pid, 0)
    text = seen.decode(errors="replace")
    assert "E0000" not in text and "node_def_util" not in text, text
    assert "100%" in text and "done" in text, text
    # the half-way bar reached the screen while the block still ran (3 s before its end), not held back to the end
    assert shown[b"100%"] - shown[b"50%"] > 1.5, text
