"""The installed ``faceaudit`` command: help, ``data`` subcommands, one-line errors."""

from __future__ import annotations

import os
import subprocess

import pandas as pd
import pytest
from commands import FACEAUDIT

from faceaudit.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    return subprocess.run([*FACEAUDIT, *args], capture_output=True, text=True, timeout=300, env=os.environ.copy())


def test_help_lists_subcommands_and_each_has_help():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "data" in result.stdout
    for args in (("data", "--help"), ("data", "summary", "--help"), ("data", "export-tfrecords", "--help")):
        sub = run_cli(*args)
        assert sub.returncode == 0 and "usage: faceaudit" in sub.stdout, args


def test_summary_of_the_real_archive(utk64_archive, capsys):
    assert main(["data", "summary", str(utk64_archive)]) == 0
    out = capsys.readouterr().out
    assert "files: 21,352   with a race label: 21,349" in out
    for line in ("White        9,074", "Black        4,090", "Asian        3,092", "Indian       3,578", "Others       1,515"):
        assert line in out
    for name in ("61_1_20170109150557335", "61_1_20170109142408075", "39_1_20170116174525125",
                 "55_0_0_20170116232725357jpg", "24_0_1_20170116220224657 .jpg"):
        assert name in out
    assert "race x gender:" in out


@pytest.mark.parametrize("args,message", [
    (("data", "summary", "/nonexistent/UTKFace.tar.gz"), "does not exist"),
    (("data", "summary", "{sample}", "--age-bands", "0-9,20+"), "contiguous"),
    (("data", "manifest", "{sample}", "--out", "{tmp}/manifest.txt"), "must end in .csv or .parquet"),
    (("data", "export-tfrecords", "{sample}", "--out", "/proc/forbidden"), "cannot write to /proc/forbidden"),
])
def test_user_mistakes_give_one_line_and_exit_2(args, message, utk_sample_dir, tmp_path):
    args = [a.format(sample=utk_sample_dir, tmp=tmp_path) for a in args]
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faceaudit: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_manifest_command_writes_parquet(utk_sample_dir, tmp_path):
    out = tmp_path / "m.parquet"
    result = run_cli("data", "manifest", str(utk_sample_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    manifest = pd.read_parquet(out)
    assert list(manifest.columns) == ["image_id", "path", "sha256", "age", "gender", "race", "age_band", "split"]
    assert len(manifest) == 400


def test_fairface_csv_summary_and_manifest_with_schema(utk_sample_dir, tmp_path, capsys):
    """`--schema fairface` reads FairFace's label layout (file column, age bins) with no column options."""
    races = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
    images = sorted(utk_sample_dir.iterdir())[:70]
    table = pd.DataFrame({"file": [os.path.relpath(p, tmp_path) for p in images],
                          "age": ["more than 70" if i % 5 == 0 else "20-29" for i in range(len(images))],
                          "gender": ["Female", "Male"] * (len(images) // 2),
                          "race": [races[i % 7] for i in range(len(images))]})
    labels = tmp_path / "fairface_label_val.csv"
    table.to_csv(labels, index=False)
    assert main(["data", "summary", str(labels), "--schema", "fairface"]) == 0
    out = capsys.readouterr().out
    assert "label schema: fairface7 (target: race)" in out and "usable: 70" in out
    assert "Latino_Hispanic" in out and "70+" in out and "race x gender:" in out
    manifest_file = tmp_path / "m.csv"
    assert main(["data", "manifest", str(labels), "--schema", "fairface", "--out", str(manifest_file)]) == 0
    manifest = pd.read_csv(manifest_file)
    assert manifest["age"].isna().all() and set(manifest["age_band"]) == {"20-29", "70+"}
    assert main(["data", "summary", str(labels), "--schema", "utkface"]) == 0  # other races excluded, not fatal
    assert "unknown race label 'Latino_Hispanic'" in capsys.readouterr().out


@pytest.mark.parametrize("argv,module,line", [
    (["train", "--data", "{sample}", "--out", "{tmp}/run"], "tensorflow",
     "faceaudit train needs TensorFlow: pip install 'faceaudit[train]'"),
    (["data", "export-tfrecords", "{sample}", "--out", "{tmp}/tfr"], "tensorflow",
     "faceaudit data export-tfrecords needs TensorFlow: pip install 'faceaudit[train]'"),
    (["data", "inspect", "{sample}", "--out", "{tmp}/inspect"], "imagehash",
     "faceaudit data inspect needs ImageHash: pip install 'faceaudit[inspect]'"),
    (["demo", "--out", "{tmp}/demo"], "tensorflow",
     "faceaudit demo (it trains a CNN) needs TensorFlow: pip install 'faceaudit[train]'"),
])
def test_a_missing_extra_is_one_line_naming_it(argv, module, line, utk_sample_dir, tmp_path, monkeypatch, capsys):
    """Without an optional package (None in sys.modules: its import fails) the command says which extra to install,
    before writing anything."""
    import sys

    monkeypatch.setitem(sys.modules, module, None)
    assert main([a.format(sample=utk_sample_dir, tmp=tmp_path) for a in argv]) == 2
    assert capsys.readouterr().err.strip() == f"faceaudit: error: {line}"
    assert list(tmp_path.iterdir()) == []
