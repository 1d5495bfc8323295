"""Ctrl-C and failures never leave a half-written output folder (issue 10, parts 2 and 3).

Real commands run as subprocesses and get SIGINT from the test, as a user's Ctrl-C: the exit code is 130, the
console shows one line and no traceback, and the output folder is the previous complete one (same audit.json
bytes, report present) or absent. Failing commands leave no folder behind.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from commands import FACEAUDIT

from faceaudit import interrupts
from faceaudit.errors import FaceauditError
from faceaudit.files import OWNED_FILE, replace_folder

REPORT_FILES = ("audit.json", "report.html", "report.pdf", "summary.md", "predictions.csv")


def _audit_args(preds: Path, out: Path, *extra: str) -> list[str]:
    return [*FACEAUDIT, "audit", "--predictions", str(preds), "--out", str(out), "--n-boot", "50", "--no-tsne",
            "--no-thumbnails", *extra]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def _leftovers(out: Path) -> list[str]:
    """Hidden work folders beside ``out`` (they must be gone when a command ends, however it ends)."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def _interrupt_when(args: list[str], ready, delay: float = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    """Start the command, send SIGINT ``delay`` seconds after ``ready()`` is true, and return how it ended."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the command ended (exit {proc.returncode}) before the interrupt point:\n{err}")
            if time.monotonic() > deadline:
                pytest.fail("the interrupt point was never reached")
            time.sleep(0.01)
        time.sleep(delay)
        assert proc.poll() is None, "the command ended before the interrupt"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _in_work_folder(out: Path, name: str | None = None):
    """True once the command's hidden work folder for ``out`` exists (and holds ``name``)."""
    return lambda: any(out.parent.glob(f".{out.name}.partial-*" + (f"/{name}" if name else "")))


def _assert_interrupted(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "faceaudit: interrupted"


@pytest.fixture(scope="module")
def audited_once(real_predictions, tmp_path_factory):  # noqa: F811
    """One complete audit folder (audit, report, PDF) written by the command, for the tests to copy."""
    out = tmp_path_factory.mktemp("complete") / "reports" / "model"
    proc = _run(_audit_args(real_predictions.csv, out))
    assert proc.returncode in (0, 1), proc.stderr
    return out


@pytest.fixture
def complete(audited_once, tmp_path):
    """A complete audit folder of this test's own (a copy of the one audit) and the bytes of every file in it."""
    out = tmp_path / "reports" / "model"
    shutil.copytree(audited_once, out)
    return out, {name: (out / name).read_bytes() for name in REPORT_FILES}


def _assert_unchanged(out: Path, before: dict[str, bytes]) -> None:
    assert {name: (out / name).read_bytes() for name in REPORT_FILES} == before
    assert _leftovers(out) == []


@pytest.mark.parametrize("point", ["audit.json", "report.html"])  # before the report; during the PDF rendering
def test_interrupted_reaudit_keeps_the_previous_complete_folder(real_predictions, complete, point):  # noqa: F811
    out, before = complete
    proc = _interrupt_when(_audit_args(real_predictions.csv, out, "--n-boot", "60"), _in_work_folder(out, point))
    _assert_interrupted(proc)
    _assert_unchanged(out, before)


@pytest.mark.parametrize("point", ["audit.json", "report.html"])
def test_interrupted_audit_into_a_fresh_folder_leaves_nothing(real_predictions, tmp_path, point):  # noqa: F811
    out = tmp_path / "new" / "model"
    proc = _interrupt_when(_audit_args(real_predictions.csv, out), _in_work_folder(out, point))
    _assert_interrupted(proc)
    assert not (tmp_path / "new").exists()  # nor the parent the command created


def test_early_interrupt_leaves_nothing(real_predictions, tmp_path):  # noqa: F811
    out = tmp_path / "model"
    started = time.monotonic()
    proc = _interrupt_when(_audit_args(real_predictions.csv, out), lambda: time.monotonic() - started > 3)
    _assert_interrupted(proc)
    assert not out.exists() and _leftovers(out) == []


@pytest.mark.parametrize("delay", [0, 1.5, 2.5])  # copying the folder, rendering, writing the PDF (~4 s in all)
def test_interrupted_rerender_keeps_the_report(complete, delay):
    out, before = complete
    proc = _interrupt_when([*FACEAUDIT, "report", str(out)], _in_work_folder(out), delay)
    _assert_interrupted(proc)
    _assert_unchanged(out, before)


def test_rerender_replaces_the_report_in_place(complete):
    out, before = complete
    (out / "summary.md").unlink()
    proc = _run([*FACEAUDIT, "report", str(out), "--no-pdf"])
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out / 'report.html'}" in proc.stdout and ".partial-" not in proc.stdout
    assert (out / "summary.md").read_bytes() == before["summary.md"]
    assert (out / "audit.json").read_bytes() == before["audit.json"]
    assert (out / "report.pdf").read_bytes() == before["report.pdf"]  # kept: --no-pdf does not delete it
    assert _leftovers(out) == []


def test_reaudit_replaces_the_whole_folder(real_predictions, complete):  # noqa: F811
    out, before = complete
    proc = _run(_audit_args(real_predictions.csv, out, "--no-report"))
    assert proc.returncode in (0, 1), proc.stderr
    assert (out / "audit.json").is_file() and not (out / "report.html").exists()  # no stale report beside it
    assert ".partial-" not in proc.stdout and _leftovers(out) == []


BAD_GATES = "[[gates]]\nname = 'x'\nmetric = 'no-such-metric'\nby = 'race'\nmin = 0.5\n"


@pytest.mark.parametrize("how", ["bad gates", "bad predictions"])
def test_failing_audit_leaves_no_folder(real_predictions, tmp_path, how):  # noqa: F811
    preds, extra = real_predictions.csv, []
    if how == "bad gates":
        gates = tmp_path / "gates.toml"
        gates.write_text(BAD_GATES)
        extra = ["--gates", str(gates)]
    else:
        preds = tmp_path / "bad.csv"
        preds.write_text("image_id,race\n1,White\n")
    out = tmp_path / "a" / "b" / "model"
    proc = _run(_audit_args(preds, out, *extra))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("faceaudit: error: ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "a").exists()


def test_failing_reaudit_keeps_the_previous_folder(real_predictions, complete, tmp_path):  # noqa: F811
    out, before = complete
    gates = tmp_path / "gates.toml"
    gates.write_text(BAD_GATES)
    proc = _run(_audit_args(real_predictions.csv, out, "--gates", str(gates)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    _assert_unchanged(out, before)


# --- the pieces, in process ---------------------------------------------------------------------------------------


def _listed(out: Path) -> list[str]:
    """The entries of an output folder, less faceaudit's hidden list of the entries it wrote."""
    return sorted(p.name for p in out.iterdir() if p.name != OWNED_FILE)


def test_replace_folder_swaps_and_cleans_up(tmp_path):
    out = tmp_path / "x" / "out"
    with pytest.raises(RuntimeError), replace_folder(out) as work:
        (work / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert not (tmp_path / "x").exists()
    with replace_folder(out) as work:
        (work / "a.txt").write_text("one")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "one"
    with replace_folder(out) as work:
        (work / "b.txt").write_text("two")
    assert _listed(out) == ["b.txt"]
    with replace_folder(out, copy_existing=True) as work:
        (work / "c.txt").write_text("three")
    assert _listed(out) == ["b.txt", "c.txt"]
    with pytest.raises(KeyboardInterrupt), replace_folder(out) as work:
        raise KeyboardInterrupt
    assert _listed(out) == ["b.txt", "c.txt"]
    assert (out / OWNED_FILE).read_text().splitlines() == ["b.txt", "c.txt"]  # what faceaudit wrote there
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_replace_folder_refuses_a_file_and_removes_stale_work_folders(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(FaceauditError, match="not a folder"), replace_folder(tmp_path / "file"):
        pass
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}"
    stale.mkdir()
    with replace_folder(tmp_path / "out"):
        pass
    assert not stale.exists()


class _SwallowsCtrlC:
    """Delivers SIGINT inside ``__del__``, where Python prints "Exception ignored" and drops the KeyboardInterrupt
    (as in WeasyPrint's weakref callbacks)."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # the handler runs here; its KeyboardInterrupt cannot leave __del__
            pass


def test_a_swallowed_ctrl_c_still_exits_130(monkeypatch, capsys, tmp_path):
    import faceaudit.cli as cli

    out = tmp_path / "out"

    def handler(args):
        with replace_folder(out) as work:
            (work / "audit.json").write_text("{}")
            _SwallowsCtrlC()  # dropped at once: __del__ runs, the interrupt is swallowed
        return 0

    parser = argparse.ArgumentParser()
    parser.set_defaults(handler=handler, verbose=False)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "faceaudit: interrupted"
    assert not out.exists() and _leftovers(out) == []  # the swap did not happen
    assert signal.getsignal(signal.SIGINT) is not interrupts._on_sigint  # the previous handler is back
    assert not interrupts.interrupted()  # nor does the recorded interrupt outlive the command (a later
    interrupts.check()                   # library call in the same process would replay it)


def test_interrupted_compare_leaves_nothing(real_predictions, complete, tmp_path):  # noqa: F811
    out, _ = complete
    other = tmp_path / "other"
    assert _run(_audit_args(real_predictions.csv, other, "--no-report", "--n-boot", "51")).returncode in (0, 1)
    target = tmp_path / "cmp" / "compare"
    proc = _interrupt_when([*FACEAUDIT, "compare", str(out), str(other), "--out", str(target)],
                           _in_work_folder(target, "compare.html"))
    _assert_interrupted(proc)
    assert not (tmp_path / "cmp").exists()


def test_a_folder_of_other_files_is_refused_not_replaced(real_predictions, tmp_path):  # noqa: F811
    keep = tmp_path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("not an audit")
    proc = _run(_audit_args(real_predictions.csv, keep.parent, "--no-report"))
    assert proc.returncode == 2 and "holds other files and no audit.json" in proc.stderr, proc.stderr
    assert sorted(p.name for p in keep.parent.iterdir()) == ["notes.txt"]


def test_replace_folder_refuses_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FaceauditError, match="current folder"), replace_folder("."):
        pass
    assert tmp_path.is_dir()


def test_unwritable_output_location_is_one_line_and_leaves_nothing(real_predictions, tmp_path):  # noqa: F811
    """An output path below a regular file cannot be created (as root too, where permission bits do not stop a
    write): one line, exit 2, nothing written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = _run(_audit_args(real_predictions.csv, blocker / "reports" / "model"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("faceaudit: error:")
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_interrupted_inspect_keeps_the_previous_complete_folder(utk_sample_dir, tmp_path):
    out = tmp_path / "data-report"
    first = _run([*FACEAUDIT, "data", "inspect", str(utk_sample_dir), "--out", str(out)])
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = _interrupt_when([*FACEAUDIT, "data", "inspect", str(utk_sample_dir), "--out", str(out)],
                           _in_work_folder(out))
    _assert_interrupted(proc)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert _leftovers(out) == []


def test_interrupted_train_before_its_first_checkpoint_leaves_nothing(utk_sample_dir, tmp_path):
    out = tmp_path / "runs" / "cnn"
    proc = _interrupt_when([*FACEAUDIT, "train", "--backbone", "cnn", "--data", str(utk_sample_dir), "--epochs", "3",
                            "--out", str(out)], lambda: out.exists(), delay=0.5)
    _assert_interrupted(proc)
    assert not out.exists() or (out / "checkpoint").exists()
