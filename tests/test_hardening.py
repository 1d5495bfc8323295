"""Hardening, round two (issue 23): SIGTERM and SIGHUP stop a command like Ctrl-C, a user's files in an output
folder are never deleted, two writers of one folder cannot both "win", and a Ray cluster that is not there fails in
one line within seconds, leaving no Ray session behind.

Real commands run as subprocesses on real UTKFace predictions; each test checks the exit code, the one line on
stderr and what is on disk (sha256 of the previous output, no hidden work folders, the user's file intact).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from test_interrupts import _audit_args, _in_work_folder, _interrupt_when, _leftovers, _run

from faceaudit.files import OWNED_FILE


def _hashes(out: Path) -> dict[str, str]:
    """sha256 of every file in an output folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir()) if p.is_file()}


def _one_error(proc: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def audited_once(real_predictions, tmp_path_factory):  # noqa: F811
    """One complete audit folder written by the command, for the tests to copy."""
    out = tmp_path_factory.mktemp("previous") / "reports" / "a"
    proc = _run(_audit_args(real_predictions.csv, out))
    assert proc.returncode in (0, 1), proc.stderr
    return out


@pytest.fixture
def previous(audited_once, tmp_path):
    """A complete audit folder of this test's own (a copy of the one audit) and the sha256 of each file in it."""
    out = tmp_path / "reports" / "a"
    shutil.copytree(audited_once, out)
    return out, _hashes(out)


def _signal_when(args, ready, signum) -> subprocess.CompletedProcess:
    """``_interrupt_when`` with another signal than SIGINT."""
    original = subprocess.Popen.send_signal

    def send(self, sig):
        return original(self, signum if sig == signal.SIGINT else sig)

    subprocess.Popen.send_signal = send
    # A test run started under nohup ignores SIGHUP, and the command rightly keeps an inherited SIG_IGN: start it
    # with the default disposition, as from a terminal.
    inherited = signal.signal(signum, signal.SIG_DFL) if signum != signal.SIGINT else None
    try:
        return _interrupt_when(args, ready)
    finally:
        subprocess.Popen.send_signal = original
        if inherited is not None:
            signal.signal(signum, inherited)


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
def test_sigterm_and_sighup_keep_the_previous_audit(real_predictions, previous, signum, code, name):  # noqa: F811
    out, before = previous
    proc = _signal_when(_audit_args(real_predictions.csv, out, "--n-boot", "60"), _in_work_folder(out, "audit.json"),
                        signum)
    _one_error(proc, code, f"faceaudit: terminated ({name})")
    assert _hashes(out) == before and _leftovers(out) == []


def test_sigterm_into_a_fresh_folder_leaves_nothing(real_predictions, tmp_path):  # noqa: F811
    out = tmp_path / "new" / "a"
    proc = _signal_when(_audit_args(real_predictions.csv, out), _in_work_folder(out, "report.html"), signal.SIGTERM)
    _one_error(proc, 143, "terminated (SIGTERM)")
    assert not (tmp_path / "new").exists()


def test_a_users_file_is_refused_then_kept_with_force(real_predictions, previous):  # noqa: F811
    out, before = previous
    (out / "NOTES.txt").write_text("reviewer: check the Indian group")
    proc = _run(_audit_args(real_predictions.csv, out, "--n-boot", "51"))
    _one_error(proc, 2, f"{out} holds 1 file faceaudit did not write (NOTES.txt)")
    assert "--force" in proc.stderr
    assert {k: v for k, v in _hashes(out).items() if k != "NOTES.txt"} == before and _leftovers(out) == []
    proc = _run([*_audit_args(real_predictions.csv, out, "--n-boot", "51"), "--force"])
    assert proc.returncode in (0, 1), proc.stderr
    assert (out / "NOTES.txt").read_text() == "reviewer: check the Indian group"  # kept in the new audit
    assert _hashes(out)["audit.json"] != before["audit.json"] and _leftovers(out) == []
    assert "NOTES.txt" not in (out / OWNED_FILE).read_text().splitlines()  # still the user's: refused next time
    proc = _run(_audit_args(real_predictions.csv, out))
    _one_error(proc, 2, "faceaudit did not write (NOTES.txt)")


def test_a_second_writer_of_the_same_folder_fails_at_once(real_predictions, previous):  # noqa: F811
    out, _ = previous
    first = subprocess.Popen(_audit_args(real_predictions.csv, out, "--n-boot", "1000"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.parent / f".{out.name}.lock").exists():  # the first has checked the folder and holds it
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.02)
        second = _run(_audit_args(real_predictions.csv, out))
        _one_error(second, 2, f"{out} is being written by another faceaudit (pid {first.pid})")
        # "at once": the second gave up while the first was still at work (it did not wait for it, nor audit), a
        # fact that holds on a loaded machine as on an idle one, unlike a wall-clock bound
        assert first.poll() is None, "the second writer returned only after the first had finished"
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode in (0, 1), stderr
    assert f"wrote {out / 'report.html'}" in stdout and (out / "report.pdf").is_file()  # the first one's output
    assert _leftovers(out) == []


@pytest.mark.parametrize("address, says", [("not-a-host:99999", "not host:port with a port from 1 to 65535"),
                                           ("not-a-host:6379", "cannot reach the Ray cluster"),
                                           ("127.0.0.1:1", "cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:1")])
def test_a_ray_cluster_that_is_not_there_fails_in_one_line(real_predictions, tmp_path, address, says):  # noqa: F811
    pytest.importorskip("ray")
    out = tmp_path / "a"
    started = time.monotonic()
    proc = subprocess.run(_audit_args(real_predictions.csv, out, "--engine", "ray"), capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RAY_ADDRESS": address})
    _one_error(proc, 2, says)
    assert time.monotonic() - started < 30 and "unset RAY_ADDRESS" in proc.stderr and proc.stdout == ""
    assert not out.exists() and _leftovers(out) == []


def test_a_ray_run_leaves_no_ray_session_behind(real_predictions, tmp_path):  # noqa: F811
    pytest.importorskip("ray")
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    import pandas as pd

    shards = tmp_path / "shards"
    shards.mkdir()
    pd.read_csv(real_predictions.csv).to_parquet(shards / "part-00000.parquet")
    out = tmp_path / "a"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(_audit_args(shards, out, "--no-report", "--engine", "ray", "--workers", "1"),
                          capture_output=True, text=True, timeout=600, env={**env, "RAY_TMPDIR": str(ray_tmp)})
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == "" or all(line.startswith("faceaudit: warning") for line in proc.stderr.splitlines())
    assert (out / "audit.json").is_file()
    used = (ray_tmp / "ray").is_dir()  # Ray ran its session here
    left = sorted(p.name for p in ray_tmp.glob("ray/session_*"))
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert used and left == []


# --- errors that name their cause, nonsense refused (items 2, 6, 8, 9), in process on the real predictions ------


def _main_error(capsys, argv: list[str], text: str) -> str:
    """``faceaudit ARGV`` in this process: exit 2 and one line on stderr holding ``text``."""
    from faceaudit.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and text in err[0], (code, err)
    return err[0]


def _gates(tmp_path: Path, body: str | bytes) -> Path:
    path = tmp_path / "gates.toml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return path


@pytest.mark.parametrize("rule, says", [
    ("metric = 'accuracy'\nby = 'race'\nmin = nan", "min must be a finite number (got nan)"),
    ("metric = 'accuracy'\nby = 'race'\nmax_gap = inf", "max_gap must be a finite number (got inf)"),
    ("metric = 'accuracy'\nby = 'race'\nmin = 7.0", "accuracy is a proportion, so min must be between 0 and 1"),
    ("metric = 'accuracy'\nby = 'race'\nmin_ratio = -3", "min_ratio is the worst group's share of the best's"),
    ("metric = 'recall'\nby = 'race'\nmin_ratio = 1.5", "above 0 and at most 1 (got 1.5)"),
    ("metric = 'log_loss'\nmax = -1", "log_loss is never negative"),
])
def test_a_gate_no_audit_could_meet_or_miss_is_refused(real_predictions, tmp_path, capsys, rule, says):  # noqa: F811
    out = tmp_path / "a"
    gates = _gates(tmp_path, f"[[gates]]\n{rule}\n")
    _main_error(capsys, ["audit", "--predictions", str(real_predictions.csv), "--gates", str(gates), "--out",
                         str(out), "--no-report"], says)
    assert not out.exists()


def test_a_gates_file_that_is_not_utf8_is_one_line(real_predictions, tmp_path, capsys):  # noqa: F811
    gates = _gates(tmp_path, b"[[gates]]\nname = '\xff\xfe caf\xe9'\nmetric = 'accuracy'\nmin = 0.5\n")
    _main_error(capsys, ["audit", "--predictions", str(real_predictions.csv), "--gates", str(gates), "--out",
                         str(tmp_path / "a")], f"gates file {gates} is not UTF-8 text")


@pytest.mark.parametrize("content, says", [(b"\x00\xff\xfe\x89PNG", "is not an audit.json: it is not UTF-8 text"),
                                           (b"[1, 2, 3]", "is not an audit.json: it holds a JSON list"),
                                           (b"{\"overall\": ", "is not valid JSON")])
def test_diff_of_a_file_that_is_not_an_audit_names_the_file(tmp_path, capsys, content, says):
    bad = tmp_path / "other.json"
    bad.write_bytes(content)
    line = _main_error(capsys, ["diff", str(bad), str(bad)], says)
    assert str(bad) in line


@pytest.fixture
def table(real_predictions):  # noqa: F811
    import pandas as pd

    return pd.read_csv(real_predictions.csv)


def test_a_decimal_comma_is_named_with_file_column_and_line(table, tmp_path, capsys):
    table["prob_Asian"] = table["prob_Asian"].astype(str)
    row = int(table.index[table["split"] == "test"][5])
    table.loc[row, "prob_Asian"] = "0,93"
    table.to_csv(tmp_path / "comma.csv", index=False)
    _main_error(capsys, ["audit", "--predictions", str(tmp_path / "comma.csv"), "--out", str(tmp_path / "a")],
                f"predictions file comma.csv: column 'prob_Asian' has a non-numeric value '0,93' (line {row + 2} of "
                f"the file; 1 row(s) affected); that is a decimal comma")
    assert not (tmp_path / "a").exists()


def test_a_short_last_row_is_named_as_a_missing_value(table, tmp_path, capsys):
    path = tmp_path / "short.csv"
    table.drop(columns=["split"]).to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines[-1] = ",".join(lines[-1].split(",")[:6])  # cut after the first probability
    path.write_text("\n".join(lines) + "\n")
    _main_error(capsys, ["audit", "--predictions", str(path), "--out", str(tmp_path / "a")],
                f"column 'prob_Black' has a missing or NaN value (line {len(lines)} of the file; 1 row(s) affected); a row "
                f"shorter than the header")


def test_a_test_image_also_in_val_is_refused_or_warned(table, tmp_path, capsys):
    import json

    val, test = table.index[table["split"] == "val"], table.index[table["split"] == "test"]
    table.loc[val[:4], "image_id"] = table.loc[test[10:14], "image_id"].to_numpy()
    table.to_csv(tmp_path / "leak.csv", index=False)
    args = ["audit", "--predictions", str(tmp_path / "leak.csv"), "--out", str(tmp_path / "a"), "--no-report",
            "--n-boot", "20"]
    example = table.loc[test[10], "image_id"]
    _main_error(capsys, args, f"4 test image id(s) also under split=val (e.g. {example!r})")
    assert not (tmp_path / "a").exists()
    from faceaudit.cli import main

    assert main([*args, "--allow-overlap"]) in (0, 1)
    err = capsys.readouterr().err
    assert "faceaudit: warning: predictions file leak.csv has 4 test image id(s) also under split=val" in err
    assert "--allow-overlap" in json.dumps(json.loads((tmp_path / "a" / "audit.json").read_text()))


def test_a_leak_between_splits_is_caught_across_shards(table, tmp_path, capsys):
    """The same check on Parquet shards (the streamed audit): a test id in one shard, its val twin in another."""
    val, test = table.index[table["split"] == "val"], table.index[table["split"] == "test"]
    table.loc[val[:3], "image_id"] = table.loc[test[:3], "image_id"].to_numpy()
    shards = tmp_path / "shards"
    shards.mkdir()
    half = len(table) // 2
    ordered = pd.concat([table.loc[test], table.drop(index=test)], ignore_index=True)  # tests first: apart from vals
    ordered.iloc[:half].to_parquet(shards / "part-00000.parquet", index=False)
    ordered.iloc[half:].to_parquet(shards / "part-00001.parquet", index=False)
    args = ["audit", "--predictions", str(shards), "--out", str(tmp_path / "a"), "--no-report", "--n-boot", "20"]
    _main_error(capsys, args, f"3 test image id(s) also under split=val (e.g. {table.loc[test[0], 'image_id']!r})")
    assert not (tmp_path / "a").exists()
    from faceaudit.cli import main

    assert main([*args, "--allow-overlap"]) in (0, 1)
    assert "3 test image id(s) also under split=val" in capsys.readouterr().err


def test_a_folder_written_before_the_owned_list_keeps_the_users_file(real_predictions, previous):  # noqa: F811
    """An audit folder from a faceaudit that kept no list of its files: its known outputs are replaced, the
    reviewer's notes are refused without --force and kept with it."""
    out, _ = previous
    (out / OWNED_FILE).unlink()
    (out / "NOTES.txt").write_text("looked at by R.\n")
    proc = _run(_audit_args(real_predictions.csv, out))
    _one_error(proc, 2, "holds 1 file faceaudit did not write (NOTES.txt)")
    proc = _run([*_audit_args(real_predictions.csv, out), "--force"])
    assert proc.returncode in (0, 1), proc.stderr
    assert (out / "NOTES.txt").read_text() == "looked at by R.\n"
    assert "NOTES.txt" not in (out / OWNED_FILE).read_text().split()


def test_prob_columns_differing_only_in_case_are_refused(table, tmp_path, capsys):
    table["prob_WHITE"] = 0.0
    table.to_csv(tmp_path / "twins.csv", index=False)
    _main_error(capsys, ["audit", "--predictions", str(tmp_path / "twins.csv"), "--out", str(tmp_path / "a")],
                "columns prob_White and prob_WHITE name the same class")
