"""The public API on simulated predictions: ``faceaudit.audit(...)`` and its result, without any dataset archive.

Every test here runs in seconds and needs neither $FACEAUDIT_UTK64 nor a browser: the engine's numbers are
checked against direct counts on the same table, the result's files against what was computed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import simulated
from sklearn.metrics import balanced_accuracy_score

import faceaudit
from faceaudit import FaceauditError, PredictionsTable

ROOT = Path(__file__).resolve().parents[1]
FAST = {"n_boot": 200, "tsne": False, "seed": 1}
UTK_GROUPINGS = ["race", "gender", "age_band", "race×gender", "race×age_band", "gender×age_band",
                 "race×gender×age_band"]


@pytest.fixture(autouse=True)
def _no_archive(monkeypatch):
    """Prove these tests need no dataset: the archive variables are unset."""
    for name in ("FACEAUDIT_UTK64", "FACEAUDIT_UTK200", "FACEAUDIT_DATA"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def utk():
    frame = simulated.utkface()
    return frame, faceaudit.audit(frame, **FAST)


def _accuracy_by(frame: pd.DataFrame, target: str, by: str) -> dict:
    classes = [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]
    pred = np.array(classes)[frame[[f"prob_{c}" for c in classes]].to_numpy().argmax(axis=1)]
    correct = pd.Series(pred == frame[target].to_numpy(), index=frame.index)
    return correct.groupby(frame[by].astype(str)).mean().to_dict()


def test_simulated_audit_matches_direct_counts(utk):
    frame, result = utk
    assert list(result.groupings) == UTK_GROUPINGS
    assert result.classes == list(simulated.UTK_RACES) and result.taxonomy.target == "race"
    table = result.by_group("race", "accuracy")
    assert list(table.columns) == ["group", "race", "n", "value", "lo", "hi", "too_small"]
    assert list(table["group"]) == list(simulated.UTK_RACES)
    expected = _accuracy_by(frame, "race", "race")
    for row in table.itertuples():
        assert row.value == pytest.approx(expected[row.group], abs=1e-6)
        assert row.n == (frame["race"] == row.group).sum()
        assert row.lo < row.value < row.hi and not row.too_small
    # Others has the smallest margin: it is the worst race, and the disparity says so.
    assert result.grouping("race")["disparities"]["accuracy"]["worst"] == "Others"
    overall = result.by_group("overall", "accuracy")
    assert len(overall) == 1 and overall["n"].iloc[0] == len(frame)
    assert result.status == "not gated" and result.gates is None  # an ungated audit never reads as a pass
    assert result.to_dict()["status"] == "not gated"


def test_metrics_depend_on_the_kind_of_grouping(utk):
    """Balanced accuracy and macro-F1 mean nothing inside one race: offered by gender, refused by race."""
    _, result = utk
    assert {"accuracy", "recall", "fpr"} <= set(result.metrics("race"))
    assert "balanced_accuracy" not in result.metrics("race")
    assert {"accuracy", "balanced_accuracy", "macro_f1"} == set(result.metrics("gender"))
    with pytest.raises(FaceauditError, match="balanced_accuracy is not computed for race groups"):
        result.by_group("race", "balanced_accuracy")
    assert set(result.by_group("gender", "balanced_accuracy")["group"]) == {"Male", "Female"}
    ece = result.by_group("race", "ece")
    assert len(ece) == 5 and ((ece["lo"] <= ece["value"]) & (ece["value"] <= ece["hi"])).all()
    # The same grouping however it is spelled.
    spelled = [result.by_group(g, "accuracy") for g in ("gender×race", "race x gender", ("gender", "race"))]
    assert all(t.equals(spelled[0]) for t in spelled) and len(spelled[0]) == 10


def test_write_then_load_gives_the_same_tables(utk, tmp_path):
    _, result = utk
    out = result.write(tmp_path / "audit")
    names = {p.name for p in out.iterdir()}
    assert {"audit.json", "group_metrics.csv", "confusion.csv", "predictions.csv"} <= names
    assert "report.html" not in names
    loaded = faceaudit.load_audit(out)
    for grouping, metric in (("race", "accuracy"), ("gender×age_band", "macro_f1"), ("overall", "ece")):
        pd.testing.assert_frame_equal(loaded.by_group(grouping, metric), result.by_group(grouping, metric))
    assert loaded.taxonomy == result.taxonomy
    assert json.loads(result.to_json()) == json.loads((out / "audit.json").read_text())
    with pytest.raises(FaceauditError, match="read from audit.json"):
        loaded.write(tmp_path / "again")
    assert "<table" in result._repr_html_() and "Others" in result._repr_html_()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predictions_table_reads_back_what_it_writes(utk, tmp_path, suffix):
    """The written predictions table (the audit folder's predictions.csv, or Parquet with its version and schema in
    the metadata) is read by the same definition into the same table, and audits to the same numbers."""
    _, result = utk
    path = result.predictions.write(tmp_path / f"predictions{suffix}")
    again = PredictionsTable.read(path, schema=result.taxonomy)
    pd.testing.assert_frame_equal(again.frame, result.predictions.frame, check_dtype=False)
    assert again.schema == result.taxonomy
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata
        assert meta[b"faceaudit.predictions"].decode() == PredictionsTable.VERSION
        assert json.loads(meta[b"faceaudit.label_schema"]) == result.taxonomy.to_dict()
    redone = faceaudit.audit(path, n_boot=50)
    pd.testing.assert_frame_equal(redone.by_group("race", "accuracy"), result.by_group("race", "accuracy"))


def test_gates_through_the_api(utk):
    frame, _ = utk
    gates = {"gates": [{"name": "floor", "metric": "accuracy", "by": "race", "min": 0.5},
                       {"name": "cells", "metric": "n", "by": "gender x race", "min": 10}]}
    result = faceaudit.audit(frame, gates=gates, **FAST)
    statuses = {r["name"]: r["status"] for r in result.gates["results"]}
    # Others (margin 0.6) is far below 50 %; every race × gender cell has at least 10 faces.
    assert statuses == {"floor": "fail", "cells": "pass"} and result.status == "fail"
    floor = next(r for r in result.gates["results"] if r["name"] == "floor")
    assert {g["key"] for g in floor["groups"] if g["status"] == "fail"} == {"Others"}


def test_split_column_and_val_rows(utk):
    """Rows marked val fit temperature scaling; only test rows are audited."""
    frame, _ = utk
    frame = frame.assign(split=np.where(np.arange(len(frame)) % 4 == 0, "val", "test"))
    result = faceaudit.audit(frame, **FAST)
    assert result.data["n"] == (frame["split"] == "test").sum()
    assert result.calibration["temperature"]["n_fit"] == (frame["split"] == "val").sum()


def test_gender_classifier_by_race_and_age_band():
    """Another target: a gender classifier, grouped by race and age band (every grouping is mixed)."""
    frame = simulated.gender_classifier()
    result = faceaudit.audit(frame, target="gender", groups=("race", "age_band"), **FAST)
    assert result.classes == ["Male", "Female"] and result.taxonomy.target == "gender"
    assert list(result.groupings) == ["race", "age_band", "race×age_band"]
    assert {g["kind"] for g in result.groupings.values()} == {"mixed"}
    assert "balanced_accuracy" in result.metrics("race")
    table = result.by_group("race", "balanced_accuracy").set_index("group")
    pred = np.where(frame["prob_Female"] > frame["prob_Male"], "Female", "Male")
    for race, rows in frame.groupby("race"):
        expected = balanced_accuracy_score(rows["gender"], pred[rows.index])
        assert table.loc[race, "value"] == pytest.approx(expected, abs=1e-6)
    accuracy = result.by_group("race", "accuracy").set_index("group")["value"]
    assert accuracy.idxmin() == "Black" and accuracy["Black"] < 0.7 < accuracy.drop("Black").min()
    assert result.grouping("age_band")["disparities"]["accuracy"]["worst"] in ("0-2", "3-9")


def test_three_class_custom_attribute():
    """A skin-tone classifier (a custom attribute, classes from its prob_* columns) audited by gender and age."""
    frame = simulated.simulate(1500, classes=("light", "medium", "dark"), target="skin_tone",
                               margins={"dark": 0.5}, seed=3)
    result = faceaudit.audit(frame, target="skin_tone", groups=("gender", "age_band"), **FAST)
    assert sorted(result.classes) == ["dark", "light", "medium"]
    assert list(result.groupings) == ["gender", "age_band", "gender×age_band"]
    overall = result.by_group("overall", "accuracy")["value"].iloc[0]
    assert overall == pytest.approx(_accuracy_by(frame.assign(all="all"), "skin_tone", "all")["all"], abs=1e-6)
    per_class = result.overall["per_class"]
    assert set(per_class) == {"light", "medium", "dark"}
    assert min(per_class, key=lambda c: per_class[c]["recall"]["value"]) == "dark"
    counts = np.array(result.overall["confusion"]["counts"])
    assert counts.shape == (3, 3) and counts.sum() == len(frame)
    dark = result.classes.index("dark")
    assert counts[dark, dark] == ((frame["skin_tone"] == "dark") & (frame[[f"prob_{c}" for c in ("light", "medium", "dark")]]
                                                                     .to_numpy().argmax(axis=1) == 2)).sum()
    # With skin tone as a grouping too, its groups are single-class: recall is offered there, balanced accuracy not.
    by_tone = faceaudit.audit(frame, target="skin_tone", groups=("skin_tone", "gender"), **FAST)
    assert "recall" in by_tone.metrics("skin_tone") and "balanced_accuracy" not in by_tone.metrics("skin_tone")


def test_custom_classes_keep_the_order_of_the_probability_columns():
    """New classes keep the prob_* columns' order (the model's output order), not the labels' alphabetical one."""
    frame = simulated.simulate(300, classes=("light", "medium", "dark"), target="skin_tone", seed=3)
    assert faceaudit.audit(frame, target="skin_tone", groups=("gender",), **FAST).classes == ["light", "medium", "dark"]


def test_three_races_of_a_custom_schema():
    """Target race with classes A, B, C (read from prob_A..prob_C), and the same with an explicit LabelSchema."""
    frame = simulated.simulate(1200, classes=("A", "B", "C"), seed=4)
    inferred = faceaudit.audit(frame, **FAST)
    assert inferred.classes == ["A", "B", "C"] and list(inferred.groupings)[:3] == ["race", "gender", "age_band"]
    schema = faceaudit.LabelSchema("abc", "race", (faceaudit.Attribute("race", ("A", "B", "C")),
                                                   faceaudit.Attribute("gender", ("Male", "Female"))))
    explicit = faceaudit.audit(frame, schema=schema, **FAST)
    assert explicit.taxonomy.name == "abc"
    pd.testing.assert_frame_equal(explicit.by_group("race", "accuracy"), inferred.by_group("race", "accuracy"))
    assert list(explicit.by_group("race", "accuracy")["group"]) == ["A", "B", "C"]


def test_labels_only_predictions():
    frame = simulated.utkface(600)
    probs = frame[[f"prob_{r}" for r in simulated.UTK_RACES]].to_numpy()
    labels = frame.drop(columns=[f"prob_{r}" for r in simulated.UTK_RACES]).assign(
        pred_race=np.array(simulated.UTK_RACES)[probs.argmax(axis=1)])
    result = faceaudit.audit(labels, **FAST)
    assert result.calibration is None
    assert result.overall["metrics"]["accuracy"]["value"] == pytest.approx(
        (labels["pred_race"] == labels["race"]).mean(), abs=1e-6)
    with pytest.raises(FaceauditError, match="needs class probabilities"):
        result.by_group("race", "ece")


def test_predictions_table_and_csv_inputs(tmp_path):
    frame = simulated.utkface(800)
    csv = tmp_path / "preds.csv"
    frame.to_csv(csv, index=False)
    from_frame = faceaudit.audit(frame, **FAST)
    from_csv = faceaudit.audit(csv, **FAST)
    from_table = faceaudit.audit(faceaudit.PredictionsTable.validate(frame), **FAST)
    for other in (from_csv, from_table):
        assert other.groupings == from_frame.groupings
    assert from_csv.model["name"] == "preds" and len(from_csv.data["predictions_sha256"]) == 64


@pytest.mark.parametrize("call, message", [
    (lambda f: faceaudit.audit(f.to_dict("records")), "predictions must be a DataFrame"),
    (lambda f: faceaudit.audit(f, target="planet"), "planet"),
    (lambda f: faceaudit.audit(f, groups=("race", "planet")), "planet"),
    (lambda f: faceaudit.audit(f, n_boot=-1), "n_boot must be a whole number"),
    (lambda f: faceaudit.audit(f, ci=2), r"ci must be a number in \(0, 1\)"),
    (lambda f: faceaudit.audit(f, gates={"gates": [{"metric": "balanced_accuracy", "by": "race", "min": 0.5}]}),
     "balanced_accuracy is undefined within a single-race group"),
    (lambda f: faceaudit.audit(f, gates={"gates": [{"metric": "accuracy", "by": "race x planet", "min": 0.5}]}),
     "unknown grouping"),
    (lambda f: faceaudit.audit(f, schema="fairface9"), "unknown label schema"),
    (lambda f: faceaudit.audit(f, **FAST).by_group("planet", "accuracy"), "the audit has no grouping 'planet'"),
    (lambda f: faceaudit.audit(f, **FAST).by_group("race", "happiness"), "happiness is not computed"),
])
def test_api_input_errors_are_one_line(call, message):
    frame = simulated.utkface(300)
    with pytest.raises(FaceauditError, match=message) as caught:
        call(frame)
    assert "\n" not in str(caught.value)


SNIPPET = """
import numpy as np, pandas as pd
import faceaudit
rng = np.random.default_rng(0)
races = list(faceaudit.UTKFACE.classes)
true = rng.integers(0, 5, 1000)
probs = rng.dirichlet(np.ones(5), 1000) + 3.0 * np.eye(5)[true]
probs /= probs.sum(axis=1, keepdims=True)
df = pd.DataFrame({"image_id": [f"i{i}" for i in range(1000)], "race": [races[k] for k in true],
                   "gender": rng.choice(["Male", "Female"], 1000), "age": rng.integers(1, 90, 1000),
                   **{f"prob_{r}": probs[:, k] for k, r in enumerate(races)}})
pd.set_option("display.width", 200)
r = faceaudit.audit(df, n_boot=100, tsne=False)
print(r.by_group('race', 'accuracy'))
print("FILE", faceaudit.__file__)
"""


@pytest.mark.parametrize("where", ["root", "outside"])
def test_import_and_audit_from_any_folder(where, tmp_path):
    """``import faceaudit; faceaudit.audit(df)`` from the repository root (the source folders) and from elsewhere."""
    cwd = ROOT if where == "root" else tmp_path
    proc = subprocess.run([sys.executable, "-c", SNIPPET], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["group", "race", "n", "value", "lo", "hi", "too_small"]
    rows = [line.split() for line in lines[1:6]]  # index, group, race, n, value, lo, hi, too_small
    assert [r[1] for r in rows] == [r[2] for r in rows] == list(simulated.UTK_RACES)
    assert sum(int(r[3]) for r in rows) == 1000
    assert all(0.5 < float(r[4]) <= 1 and float(r[5]) < float(r[4]) and float(r[6]) >= float(r[4]) for r in rows)
    assert {r[7] for r in rows} == {"False"}
    assert lines[-1].startswith("FILE ") and Path(lines[-1][5:]).is_file()


def test_numeric_labels_are_read_by_value_not_by_position():
    """A 1-6 scale stored as floats keeps its values (5.0 is 5, not the code 5 = "6"); 0 is refused, not mapped."""
    scale = faceaudit.Attribute("skin", tuple("123456"))
    assert [scale.normalise(v) for v in ("1.0", "5.0", "6.0", 3)] == ["1", "5", "6", "3"]
    with pytest.raises(FaceauditError, match="unknown skin label 0"):
        scale.normalise(0)


def test_parquet_tables_keep_their_schema(tmp_path):
    """A gender-target table written as Parquet re-audits as a gender audit without being told again."""
    result = faceaudit.audit(simulated.gender_classifier(), target="gender", groups=("race", "age_band"), **FAST)
    path = result.predictions.write(tmp_path / "gender.parquet")
    again = faceaudit.audit(path, **FAST)
    assert again.taxonomy.target == "gender" and list(again.groupings) == list(result.groupings)
    pd.testing.assert_frame_equal(again.by_group("race", "accuracy"), result.by_group("race", "accuracy"))


def test_groups_as_text_and_explicit_zero_sizes(utk):
    frame, _ = utk
    assert list(faceaudit.audit(frame, groups="gender", **FAST).groupings) == ["gender"]
    assert list(faceaudit.audit(frame, groups="race,gender", **FAST).groupings) == ["race", "gender", "race×gender"]
    for bad in ({"min_group_size": 0}, {"min_test_size": -5}):
        with pytest.raises(FaceauditError, match=next(iter(bad))):
            faceaudit.audit(frame, **bad, **FAST)
    assert faceaudit.audit(frame, ci=np.float32(0.9), **FAST).settings["ci"] == pytest.approx(0.9)


def test_excess_loss_bound_with_no_group_to_judge_is_not_a_pass():
    from faceaudit.auditing.comparison import excess_gate
    from faceaudit.auditing.paired import Slice, excess_family

    rng = np.random.default_rng(0)
    a, b = rng.random(40) < 0.9, np.zeros(40, dtype=bool)  # b gets everything wrong; every group is too small
    mask = np.arange(40) < 20
    frame = excess_family(a, b, [Slice("race", "A", mask, too_small=True), Slice("race", "B", ~mask, too_small=True)])
    code, line = excess_gate(frame, 0.02)
    assert code == 1 and "INCONCLUSIVE" in line and "no group is large enough" in line
    assert excess_gate(frame, 0.02, inconclusive="pass")[0] == 0
