"""`faceaudit audit` end to end on real predictions: files written, gates and exit codes, bad input."""

from __future__ import annotations

import json
import subprocess
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from audit_fixtures import GAP_AND_FLOOR_GATES, SIZE_GATE, real_predictions  # noqa: F401  (session fixture)
from commands import FACEAUDIT

from faceaudit.auditing.result import SCHEMA_VERSION, AuditResult
from faceaudit.cli import main

GATES = GAP_AND_FLOOR_GATES + """
[[gates]]
name = "per-race accuracy within reach"
metric = "accuracy"
by = "race"
min = {race_min}
""" + SIZE_GATE


def _audit(tmp_path, preds, *extra, gates=None):
    out = tmp_path / "out"
    args = ["audit", "--predictions", str(preds), "--out", str(out), "--n-boot", "200", "--no-report", "--no-tsne",
            *extra]
    if gates is not None:
        file = tmp_path / "gates.toml"
        file.write_text(gates)
        args += ["--gates", str(file)]
    return main(args), out


def test_predictions_audit_writes_every_file(real_predictions, tmp_path, capsys):  # noqa: F811
    code, out = _audit(tmp_path, real_predictions.csv, "--embeddings", str(real_predictions.embeddings_npy),
                       gates=GATES.format(race_min=0.0))
    assert code == 1  # the race accuracy gap of this small model is far above 0.05
    result = AuditResult.from_json(out)
    assert result.schema_version == SCHEMA_VERSION
    assert result.model["kind"] == "predictions" and result.data["n"] == len(real_predictions.test)
    assert result.calibration["temperature"]["n_fit"] == len(real_predictions.val)
    assert result.embeddings["n"] == len(real_predictions.test) and result.embeddings["tsne"] is None
    for name in result.files.values():
        assert (out / name).is_file(), name
    assert {"predictions", "group_metrics", "per_class", "confusion", "disparities", "calibration", "reliability",
            "embedding_groups", "gates_junit"} <= set(result.files)
    written = pd.read_csv(out / "predictions.csv")
    assert len(written) == len(real_predictions.test)
    assert {"image_id", "path", "sha256", "prob_White", "pred_race", "confidence", "correct"} <= set(written.columns)
    metrics = pd.read_csv(out / "group_metrics.csv")
    assert set(metrics["grouping"]) >= {"race", "race×gender×age_band"}
    statuses = {g["name"]: g["status"] for g in result.gates["results"]}
    assert statuses == {"race accuracy gap": "fail", "overall accuracy floor": "pass",
                        "per-race accuracy within reach": "pass", "group sizes": "pass"}
    suite = ET.parse(out / "gates.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 4 and suite.get("failures") == "1"
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["race accuracy gap"]
    assert "gates: FAIL (" in capsys.readouterr().out
    json.loads((out / "audit.json").read_text())  # strict JSON: no NaN


def test_inconclusive_gate_follows_policy(real_predictions, tmp_path):  # noqa: F811
    frame = pd.read_csv(real_predictions.csv)
    test = frame[frame["split"] == "test"]
    accuracy = (test["race"] == test["pred_race"]).mean()
    gates = f"""
[[gates]]
metric = "accuracy"
by = "overall"
min = {accuracy:.6f}
"""
    code, out = _audit(tmp_path, real_predictions.csv, gates=gates)
    result = AuditResult.from_json(out)
    assert result.gates["results"][0]["status"] == "inconclusive"
    assert code == 1
    code, out = _audit(tmp_path, real_predictions.csv, "--inconclusive", "pass", gates=gates)
    assert code == 0
    suite = ET.parse(out / "gates.xml").getroot().find("testsuite")
    assert suite.get("skipped") == "1" and suite.get("failures") == "0"


def test_passing_gates_exit_zero(real_predictions, tmp_path):  # noqa: F811
    gates = '[[gates]]\nmetric = "accuracy"\nby = "race"\nmin = 0.02\n[[gates]]\nmetric = "ece"\nby = "race"\nmax = 0.9\n'
    code, out = _audit(tmp_path, real_predictions.csv, gates=gates)
    assert code == 0
    assert AuditResult.from_json(out).status == "pass"


def _bad_file(tmp_path, frame: pd.DataFrame, name="bad.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _one_line_error(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("faceaudit: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda f: f.assign(prob_White=-f["prob_White"]), "negative"),
        (lambda f: f.assign(prob_Black=np.where(np.arange(len(f)) == 3, np.nan, f["prob_Black"])), "missing or NaN value (line 5"),
        (lambda f: f.assign(prob_Asian=f["prob_Asian"] * 0.5 + f["prob_White"] * 0.1), "sum to"),
        (lambda f: f.assign(race=np.where(np.arange(len(f)) == 5, "Martian", f["race"])), "unknown race label"),
        (lambda f: f.drop(columns=["gender"]), "lacks column"),
        (lambda f: f.drop(columns=["prob_Indian"]), "prob_Indian"),
        (lambda f: f.drop(columns=["age", "age_band"]), "age or age_band"),
        (lambda f: f.iloc[:0], "empty"),
    ],
)
def test_bad_predictions_give_one_line_and_exit_2(real_predictions, tmp_path, capsys, corrupt, message):  # noqa: F811
    frame = pd.read_csv(real_predictions.csv)
    frame = frame[frame["split"] == "test"].drop(columns=["split"]).reset_index(drop=True)
    path = _bad_file(tmp_path, corrupt(frame))
    code, out = _audit(tmp_path, path, "--schema", "utkface")  # the schema says which columns must be there
    assert message in _one_line_error(capsys, code)
    assert not (out / "audit.json").exists()


def test_schema_inferred_from_the_table(real_predictions, tmp_path, capsys):  # noqa: F811
    """Without --schema the table says what it holds: no gender column audits by race and age band only; a
    dropped probability column makes the classes those of the prob_* columns, so a label outside them is one line."""
    frame = pd.read_csv(real_predictions.csv)
    frame = frame[frame["split"] == "test"].drop(columns=["split"]).reset_index(drop=True)
    code, out = _audit(tmp_path / "a", _bad_file(tmp_path, frame.drop(columns=["gender"])))
    assert code == 0
    result = AuditResult.from_json(out)
    assert list(result.groupings) == ["race", "age_band", "race×age_band"]
    assert result.taxonomy.groups == ("race", "age_band") and result.classes == list(real_predictions.test_table.schema.classes)
    code, _ = _audit(tmp_path / "b", _bad_file(tmp_path, frame.drop(columns=["prob_Indian"]), "four.csv"))
    err = _one_line_error(capsys, code)
    assert "unknown race label 'Indian'" in err and "White, Black, Asian, Others" in err


def test_mismatched_embeddings_and_missing_files(real_predictions, tmp_path, capsys):  # noqa: F811
    short = tmp_path / "short.npy"
    np.save(short, np.load(real_predictions.embeddings_npy)[:-7])
    code, _ = _audit(tmp_path, real_predictions.csv, "--embeddings", str(short))
    assert "rows" in _one_line_error(capsys, code)
    code, _ = _audit(tmp_path, tmp_path / "nope.csv")
    assert "does not exist" in _one_line_error(capsys, code)
    code = main(["audit", "--no-report"])
    assert "either a model" in _one_line_error(capsys, code)
    code, _ = _audit(tmp_path, real_predictions.csv, gates='[[gates]]\nmetric = "accuracy"\nby = "race"\nmax_gap = "big"\n')
    assert "must be a number" in _one_line_error(capsys, code)


def test_age_band_only_and_label_only_predictions(real_predictions, tmp_path):  # noqa: F811
    frame = pd.read_csv(real_predictions.csv)
    frame = frame[frame["split"] == "test"].drop(columns=["split", "age", "prob_White", "prob_Black", "prob_Asian",
                                                          "prob_Indian", "prob_Others"])
    path = _bad_file(tmp_path, frame, "labels.csv")
    code, out = _audit(tmp_path, path)
    assert code == 0
    result = AuditResult.from_json(out)
    assert result.calibration is None
    assert result.overall["metrics"]["accuracy"]["value"] == pytest.approx(
        (real_predictions.test["race"] == real_predictions.test["pred_race"]).mean(), abs=1e-6)


def test_cli_subprocess_exit_code(real_predictions, tmp_path):  # noqa: F811
    bad = tmp_path / "bad.csv"
    pd.read_csv(real_predictions.csv).drop(columns=["race"]).to_csv(bad, index=False)
    proc = subprocess.run([*FACEAUDIT, "audit", "--predictions", str(bad), "--out",
                           str(tmp_path / "o"), "--no-report"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["faceaudit: error: predictions file bad.csv lacks column(s): race"]


def test_parquet_input_gives_the_same_audit(real_predictions, tmp_path):  # noqa: F811
    frame = pd.read_csv(real_predictions.csv)
    parquet = tmp_path / "preds.parquet"
    frame.to_parquet(parquet)
    code_csv, out_csv = _audit(tmp_path / "a", real_predictions.csv)
    code_pq, out_pq = _audit(tmp_path / "b", parquet)
    assert code_csv == code_pq == 0
    a, b = AuditResult.from_json(out_csv), AuditResult.from_json(out_pq)
    assert a.groupings == b.groupings and a.calibration["overall"] == b.calibration["overall"]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda f: f.assign(image_id=f["image_id"].where(f.index != 4, f["image_id"].iloc[0])), "more than once"),
        (lambda f: f.assign(pred_race=f["pred_race"].where(f.index != 2, "Nope")), "unknown race label"),
        (lambda f: f.assign(pred_race=np.roll(f["pred_race"].to_numpy(), 1)), "not the most probable class"),
        (lambda f: f.assign(age=np.where(f.index == 1, 140, f["age"])), "outside 0-116"),
    ],
)
def test_inconsistent_predictions(real_predictions, tmp_path, capsys, corrupt, message):  # noqa: F811
    frame = pd.read_csv(real_predictions.csv)
    frame = frame[frame["split"] == "test"].drop(columns=["split", "age_band"]).reset_index(drop=True)
    code, _ = _audit(tmp_path, _bad_file(tmp_path, corrupt(frame)))
    assert message in _one_line_error(capsys, code)
