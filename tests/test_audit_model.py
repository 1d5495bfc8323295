"""`faceaudit audit RUN_FOLDER --data DATA`: inference with a real (tiny, briefly trained) Keras model that follows
the model contract, on real UTKFace images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import tiny_contract_cnn

from faceaudit.auditing.result import AuditResult
from faceaudit.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(utk_sample_dir, tmp_path_factory):
    """A run folder with a 32px CNN trained for two epochs on the real sample's train split."""
    model, dataset = tiny_contract_cnn(utk_sample_dir, epochs=2)
    run = tmp_path_factory.mktemp("runs") / "tiny-cnn"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "run.json").write_text(json.dumps({"name": "tiny-cnn", "backbone": "test-cnn", "run_hash": "abc123"}))
    return run, dataset


def test_audit_of_a_run_folder(tiny_run, utk_sample_dir, tmp_path):
    run, dataset = tiny_run
    out = tmp_path / "audit"
    code = main(["audit", str(run), "--data", str(utk_sample_dir), "--out", str(out), "--n-boot", "100",
                 "--min-group-size", "5", "--no-report"])
    assert code == 0
    result = AuditResult.from_json(out)
    test = dataset.split("test")
    import hashlib

    # The audit identifies the model by its file's SHA-256 (run.json's own run_hash is not trusted for that).
    digest = hashlib.sha256((run / "model.keras").read_bytes()).hexdigest()
    assert result.model == {**result.model, "name": "tiny-cnn", "kind": "run", "backbone": "test-cnn",
                            "run_hash": digest, "synthetic": False}
    assert result.data["n"] == len(test) and result.data["fingerprint"] == dataset.fingerprint
    assert result.data["n_val"] == len(dataset.split("val"))
    assert result.calibration["temperature"]["n_fit"] == len(dataset.split("val"))
    assert result.embeddings["dim"] == 16 and result.embeddings["source"] == "model"
    assert result.embeddings["tsne"]["settings"]["n"] == len(test)
    import pandas as pd

    written = pd.read_csv(out / "predictions.csv")
    assert list(written["image_id"]) == list(test["image_id"])
    assert (written["sha256"] == test["sha256"].to_numpy()).all()
    probs = written[[f"prob_{r}" for r in result.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    tsne = pd.read_csv(out / "tsne.csv")
    assert len(tsne) == len(test) and {"x", "y", "race", "gender", "age_band"} <= set(tsne.columns)


def test_missing_model_and_data_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FACEAUDIT_DATA", raising=False)
    code = main(["audit", str(tmp_path / "nope"), "--no-report"])
    assert code == 2 and "model not found" in capsys.readouterr().err
    (tmp_path / "model.keras").write_text("not a zip")
    code = main(["audit", str(tmp_path / "model.keras"), "--no-report"])
    assert code == 2 and "no data" in capsys.readouterr().err


def test_audit_model_through_the_api(tiny_run, tmp_path):
    """``faceaudit.audit_model(run, data)`` gives the same audit as the command, and ``.report()`` renders it."""
    import faceaudit

    run, dataset = tiny_run
    result = faceaudit.audit_model(run, dataset, n_boot=100, min_group_size=5, tsne=False)
    assert result.model["name"] == "tiny-cnn" and result.model["kind"] == "run"
    assert result.data["n"] == len(dataset.split("test")) and result.classes == list(faceaudit.UTKFACE.classes)
    assert result.embeddings["dim"] == 16 and result.embeddings["tsne"] is None
    table = result.by_group("race", "accuracy")
    assert list(table["group"]) == result.classes and table["n"].sum() == result.data["n"]
    folder = result.report(tmp_path / "report", thumbnails=False)
    assert {"report.html", "report.pdf", "summary.md", "audit.json"} <= {p.name for p in folder.iterdir()}
    assert faceaudit.load_audit(folder).by_group("race", "accuracy").equals(table)


def test_audit_model_applies_the_age_bands_and_groups_asked_for(tiny_run, utk_sample_dir):
    """The age bands the data is read with are the bands audited (not the schema's defaults), and --groups-style
    options reach the predictions the model is run for."""
    import faceaudit

    run, _ = tiny_run
    result = faceaudit.audit_model(run, utk_sample_dir, dataset_options={"age_bands": "decades"},
                                   groups=("race", "age_band"), n_boot=50, tsne=False, temperature=False)
    bands = [g["key"] for g in result.grouping("age_band")["groups"]]
    assert set(bands) <= set(faceaudit.AgeBands.parse("decades").labels) and "70+" not in bands
    assert list(result.groupings) == ["race", "age_band", "race×age_band"]
