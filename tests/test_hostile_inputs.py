"""Hostile inputs on real UTKFace files: images no decoder should be trusted with, and other tools' predictions.

An archive of real UTKFace faces carries a decompression bomb (20000 x 20000 PNG), one in PIL's warning range
(10000 x 10000), a 1-bit BMP TensorFlow cannot decode and a truncated JPEG. Every command must exclude them
with the reason, exit 0 and print no traceback (exit 1 is reserved for failed gates).
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import warnings
from pathlib import Path

import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from commands import FACEAUDIT
from PIL import Image

from faceaudit.taxonomy import UTKFACE

RACES = UTKFACE.classes

BOMB = "UTKFace/30_0_1_20170117000000000.jpg.chip.jpg"         # PNG bytes, 400 M pixels
WARN_BOMB = "UTKFace/31_1_2_20170117000000001.jpg.chip.jpg"    # PNG bytes, 100 M pixels: PIL only warns
ONE_BIT_BMP = "UTKFace/32_0_3_20170117000000002.jpg.chip.jpg"  # a real face as a 1-bit BMP
TRUNCATED = "UTKFace/33_1_4_20170117000000003.jpg.chip.jpg"    # a real JPEG cut in half
HOSTILE = {BOMB: "image too large", WARN_BOMB: "image too large", ONE_BIT_BMP: "BMP variant",
           TRUNCATED: "unreadable image"}
FAST = ["--image-size", "32", "--batch-size", "32", "--embedding-dim", "16", "--quiet"]


def _png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (size, size)).save(buffer, "PNG")  # a few hundred kB that claim size x size pixels
    return buffer.getvalue()


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*FACEAUDIT, *args], capture_output=True, text=True, timeout=timeout)


def _clean(process: subprocess.CompletedProcess, code: int = 0) -> None:
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    assert process.returncode == code, process.stderr[-3000:]


@pytest.fixture(scope="module")
def hostile_files(utk_sample_dir) -> dict[str, bytes]:
    real = sorted(utk_sample_dir.iterdir())
    face = Image.open(real[0]).convert("RGB")
    bmp = io.BytesIO()
    face.convert("1").save(bmp, "BMP")
    return {BOMB: _png(20000), WARN_BOMB: _png(10000), ONE_BIT_BMP: bmp.getvalue(),
            TRUNCATED: real[1].read_bytes()[: real[1].stat().st_size // 2]}


@pytest.fixture(scope="module")
def hostile_archive(utk_sample_dir, hostile_files, tmp_path_factory) -> Path:
    """80 real faces (16 per race, both genders) plus the hostile files, as a .tar.gz."""
    real = sorted(utk_sample_dir.iterdir())
    by_race = {race: [p for p in real if p.name.split("_")[2] == str(race)][:16] for race in range(len(RACES))}
    archive = tmp_path_factory.mktemp("hostile") / "hostile.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for paths in by_race.values():
            for path in paths:
                tar.add(path, arcname=f"UTKFace/{path.name}")
        for name, data in hostile_files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_check_image_names_each_hostile_file_without_warnings(hostile_files, utk_sample_dir):
    from faceaudit.datasets.manifest import check_image

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning escaping would fail here
        for name, data in hostile_files.items():
            reason = check_image(data)
            assert reason is not None and reason.startswith(HOSTILE[name]), (name, reason)
        assert check_image(sorted(utk_sample_dir.iterdir())[0].read_bytes()) is None
    assert "400,000,000 pixels" in check_image(hostile_files[BOMB])


def test_data_summary_lists_hostile_files_as_excluded(hostile_archive):
    process = _run("data", "summary", str(hostile_archive))
    _clean(process)
    assert "usable: 80" in process.stdout
    for name, reason in HOSTILE.items():
        assert any(name in line and reason in line for line in process.stdout.splitlines()), (name, process.stdout)


def test_data_manifest_leaves_hostile_files_out(hostile_archive, tmp_path):
    out = tmp_path / "manifest.csv"
    process = _run("data", "manifest", str(hostile_archive), "--out", str(out))
    _clean(process)
    manifest = pd.read_csv(out)
    assert len(manifest) == 80 and not set(HOSTILE) & set(manifest["image_id"])
    assert "4 image file(s) excluded as unusable" in process.stderr and "possible decompression bomb" in process.stderr


def test_data_inspect_survives_hostile_files(hostile_archive, tmp_path):
    out = tmp_path / "inspect"
    process = _run("data", "inspect", str(hostile_archive), "--out", str(out), "--no-pdf")
    _clean(process)
    excluded = pd.read_csv(out / "tables" / "excluded_at_parse.csv").set_index("image_id")["reason"]
    for name, reason in HOSTILE.items():
        assert excluded[name].startswith(reason)
    assert json.loads((out / "data.json").read_text())["files"]["usable"] == 80


def test_train_and_audit_survive_hostile_files(hostile_archive, tmp_path):
    run = tmp_path / "run"
    process = _run("train", "--data", str(hostile_archive), "--out", str(run), "--head-epochs", "1", "--epochs", "1",
                   *FAST)
    _clean(process)
    assert "excluded as unusable" in process.stderr
    recorded = json.loads((run / "run.json").read_text())["data"]["excluded_unusable_images"]
    assert set(recorded) == set(HOSTILE) and recorded[BOMB].startswith("image too large")

    out = tmp_path / "audit"
    process = _run("audit", str(run), "--data", str(hostile_archive), "--out", str(out), "--no-report",
                   "--no-tsne", "--n-boot", "20")
    _clean(process)  # no gates: 0; a failed gate would be 1, an error 2
    warnings_ = json.loads((out / "audit.json").read_text())["warnings"]
    assert any("excluded as unusable" in w and BOMB in w for w in warnings_), warnings_


# --- predictions from other tools ------------------------------------------------------------------------


def _other_tool_layout(real_predictions, folder: Path, rows: str | None = None) -> Path:  # noqa: F811
    table = pd.read_csv(real_predictions.csv, dtype={"image_id": str})
    if rows is not None:
        table = table[table["split"] == rows]
    table = table.rename(columns={"image_id": "id", **{f"prob_{r}": f"p_{r}" for r in RACES}})
    table["pred"] = table["pred_race"]
    table = table.drop(columns=["pred_race"])
    path = folder / "other.csv"
    table.to_csv(path, index=False)
    return path


def test_other_tools_layout_refused_with_a_hint(real_predictions, tmp_path):  # noqa: F811
    path = _other_tool_layout(real_predictions, tmp_path)
    process = _run("audit", "--predictions", str(path), "--out", str(tmp_path / "out"), "--no-report")
    _clean(process, 2)
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "image_id" in lines[0] and "--id-col id" in lines[0] and "--prob-prefix p_" in lines[0]


def test_other_tools_layout_accepted_with_options(real_predictions, tmp_path):  # noqa: F811
    path = _other_tool_layout(real_predictions, tmp_path)
    out = tmp_path / "out"
    process = _run("audit", "--predictions", str(path), "--id-col", "id", "--prob-prefix", "p_", "--out", str(out),
                   "--no-report", "--no-tsne", "--n-boot", "20")
    _clean(process)
    assert "ignored column(s) pred" in process.stderr
    result = json.loads((out / "audit.json").read_text())
    assert any("ignored column(s) pred" in w for w in result["warnings"])
    assert result["data"]["n"] == len(real_predictions.test)
    audited = pd.read_csv(out / "predictions.csv", dtype={"image_id": str})
    assert set(audited["image_id"]) == set(real_predictions.test["image_id"])


def test_wrong_prob_prefix_is_one_line(real_predictions, tmp_path):  # noqa: F811
    path = _other_tool_layout(real_predictions, tmp_path)
    process = _run("audit", "--predictions", str(path), "--id-col", "id", "--prob-prefix", "score_",
                   "--out", str(tmp_path / "out"), "--no-report")
    _clean(process, 2)
    assert process.stderr.count("\n") == 1 and "'score_' (--prob-prefix)" in process.stderr


def test_split_without_test_rows_says_all_rows_are_audited(real_predictions, tmp_path):  # noqa: F811
    path = _other_tool_layout(real_predictions, tmp_path, rows="val")
    out = tmp_path / "out"
    process = _run("audit", "--predictions", str(path), "--id-col", "id", "--prob-prefix", "p_", "--out", str(out),
                   "--no-report", "--no-tsne", "--n-boot", "20")
    _clean(process)
    assert "no split=test rows" in process.stderr
    result = json.loads((out / "audit.json").read_text())
    assert any("no split=test rows" in w and "auditing all" in w for w in result["warnings"])
    assert result["data"]["n"] == len(real_predictions.val)
