"""Age regression as an audit target (``--target age``): the predictions table, the numbers, gates, CLI, report.

On the real UTKFace-64px test split's labels (true ages, races, genders) with simulated predicted ages of known
error: Laplace errors whose scale grows with age, and Black faces made 4 years older on average.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.stats import binomtest

import faceaudit
from faceaudit.auditing.gates import evaluate_gates, parse_gates
from faceaudit.auditing.result import SCHEMA_VERSION, AuditResult
from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.seams.predictions import PredictionsTable
from faceaudit.taxonomy import UTKFACE

BIAS = {"Black": 4.0}
N_BOOT = 200


def _predicted_ages(rows: pd.DataFrame, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    age = rows["age"].to_numpy(dtype=float)
    bias = rows["race"].astype(str).map(BIAS).fillna(0.0).to_numpy()
    return age + bias + (2 + 0.1 * age) * rng.laplace(0, 1 / np.sqrt(2), len(rows))


@pytest.fixture(scope="module")
def test_rows(utk64_dataset) -> pd.DataFrame:
    """The real test split's manifest rows (image_id, race, gender, age, age_band, path, sha256, split)."""
    return utk64_dataset.split("test").reset_index(drop=True)


@pytest.fixture(scope="module")
def table(test_rows) -> PredictionsTable:
    return PredictionsTable.from_age_predictions(test_rows, _predicted_ages(test_rows), UTKFACE)


@pytest.fixture(scope="module")
def result(table):
    return faceaudit.audit(table, n_boot=N_BOOT)


@pytest.fixture(scope="module")
def csv_path(table, tmp_path_factory):
    path = tmp_path_factory.mktemp("age") / "ages.csv"
    frame = table.output_frame().drop(columns=["error", "abs_error"])  # a model's table, as a user hands it over
    frame.to_csv(path, index=False)
    return path


def _mask(frame: pd.DataFrame, values: dict) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for attribute, value in values.items():
        mask &= frame[attribute].astype(str).to_numpy() == value
    return mask


# -- the predictions table ------------------------------------------------------------------------------------------


def test_table_from_model_output_round_trips(table, test_rows, tmp_path):
    assert table.schema.regression and table.schema.classes == ()
    assert list(table.frame.columns[:6]) == ["image_id", "race", "gender", "age", "age_band", "pred_age"]
    written = table.output_frame()
    np.testing.assert_allclose(written["error"], written["pred_age"] - written["age"])
    np.testing.assert_allclose(written["abs_error"], np.abs(written["error"]))
    for name in ("t.parquet", "t.csv"):
        path = table.write(tmp_path / name)
        back = PredictionsTable.read(path, target="age") if name.endswith("csv") else PredictionsTable.read(path)
        assert back.schema.regression
        pd.testing.assert_frame_equal(back.frame.drop(columns=["pred_age"]), table.frame.drop(columns=["pred_age"]),
                                      check_dtype=False)
        np.testing.assert_allclose(back.pred_age, table.pred_age, rtol=1e-5)
    bad = _predicted_ages(test_rows)
    bad[7] = np.nan
    with pytest.raises(FaceauditError, match="not a finite number"):
        PredictionsTable.from_age_predictions(test_rows, bad, UTKFACE)
    with pytest.raises(FaceauditError, match="predicted ages for"):
        PredictionsTable.from_age_predictions(test_rows, bad[:-1], UTKFACE)


def test_taxonomy_age_target():
    schema = UTKFACE.with_options(target="age")
    assert schema.regression and schema.classes == () and schema.groups == ("race", "gender", "age_band")
    assert not UTKFACE.regression and UTKFACE.classes == ("White", "Black", "Asian", "Indian", "Others")
    with pytest.raises(FaceauditError, match="no classes"):
        schema.with_classes(["a", "b"])
    assert faceaudit.LabelSchema.from_dict(schema.to_dict()).regression


# -- the numbers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grouping", ["race", "gender", "age_band", "race×gender"])
def test_group_numbers_match_numpy(result, table, grouping):
    frame = table.frame
    error = table.age_error
    records = result.grouping(grouping)["groups"]
    assert sum(r["n"] for r in records) == len(frame)
    for record in records:
        e = error[_mask(frame, record["values"])]
        m = record["metrics"]
        assert m["mae"]["value"] == pytest.approx(np.abs(e).mean(), abs=1e-5)
        assert m["bias"]["value"] == pytest.approx(e.mean(), abs=1e-5)
        assert m["within5"]["value"] == pytest.approx((np.abs(e) <= 5).mean(), abs=1e-6)
        ci = binomtest(int((np.abs(e) <= 5).sum()), len(e)).proportion_ci(0.95, method="exact")
        assert m["within5"]["ci"] == pytest.approx([ci.low, ci.high], abs=1e-6)
        t_lo, t_hi = stats.t.interval(0.95, len(e) - 1, loc=e.mean(), scale=stats.sem(e))
        assert m["bias"]["ci"] == pytest.approx([t_lo, t_hi], abs=1e-5)
        a = np.abs(e)
        a_lo, a_hi = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
        assert m["mae"]["ci"][0] <= a_lo + 1e-5 and m["mae"]["ci"][1] >= a_hi - 1e-5  # t, widened by bootstrap-t
        assert m["mae"]["ci"][1] - m["mae"]["ci"][0] < 3 * (a_hi - a_lo)
        assert record["n"] == len(e) and m["mae"]["n"] == len(e)
    overall = result.overall["metrics"]
    assert overall["mae"]["value"] == pytest.approx(np.abs(error).mean(), abs=1e-5)
    assert result.task == "regression" and result.classes == [] and result.calibration is None


def test_biased_race_is_found(result, table):
    by_race = result.by_group("race", "bias").set_index("group")
    assert by_race.loc["Black", "lo"] > 0  # made older, beyond sampling noise
    assert all(by_race.loc[r, "lo"] < 0 < by_race.loc[r, "hi"] or abs(by_race.loc[r, "value"]) < 1.5
               for r in ("White", "Asian", "Indian"))
    disparities = result.grouping("race")["disparities"]
    assert disparities["bias"]["worst"] == "Black" and disparities["bias"]["n_ranked"] == 5
    assert disparities["bias"]["gap"]["ci"][0] > 0
    assert disparities["mae"]["worst"] == "Black" and disparities["mae"]["difference"]["ci"][0] > 0
    assert disparities["mae"]["pairs"] == 10 and 0.99 < disparities["mae"]["level"] <= 0.995  # max-type level
    black = result.group("race", "Black")["vs_rest"]["bias"]
    assert black["p_holm"] < 0.001 and black["ci"][0] > 0 and black["family"] == 5
    assert black["value"] == pytest.approx(table.age_error[table.frame["race"] == "Black"].mean()
                                           - table.age_error[table.frame["race"] != "Black"].mean(), abs=1e-5)
    within = disparities["within5"]
    assert within["worst"] == "Black" and within["omnibus"]["p_value"] < 0.05
    small = [r for r in result.grouping("race×gender×age_band")["groups"] if r["n"] < 30]
    assert small and all(r["too_small"] for r in small)
    assert all(r["key"] not in (d.get("worst"), d.get("best"))
               for d in result.grouping("race×gender×age_band")["disparities"].values() for r in small)


def test_headline_and_notebook(result):
    from faceaudit.auditing.report.age_findings import regression_console_lines, regression_findings

    lines = regression_console_lines(result)
    assert lines[0].startswith("model: MAE ") and "within ±5 years" in lines[0]
    assert any("race bias: largest Black +" in line for line in lines)
    texts = [f.text for f in regression_findings(result)]
    assert "race" in texts[0] and "Black" in texts[0] and "Black" in texts[1] and "older" in texts[1]
    html = result._repr_html_()
    assert "age regressor" in html and "Black" in html
    with pytest.raises(FaceauditError, match="they have: bias, mae, within5, n"):
        result.by_group("race", "accuracy")
    with pytest.raises(FaceauditError, match="an age audit has mae, bias, within5 and n"):
        result.by_group("race", "ece")


# -- gates ----------------------------------------------------------------------------------------------------------


def test_gates_pass_fail_inconclusive(result):
    overall_mae = result.overall["metrics"]["mae"]["value"]
    gates, _ = parse_gates({"gates": [
        {"metric": "mae", "by": "race", "max": 20},
        {"metric": "bias", "by": "race", "max": 2},
        {"metric": "mae", "by": "overall", "max": overall_mae},
        {"metric": "within5", "by": "race", "min": 0.2},
        {"metric": "mae", "by": "race", "max_gap": 0.1},
        {"metric": "bias", "by": "race", "min": -3},
        {"metric": "mae", "by": "race×gender×age_band", "max": 100},
    ]})
    verdicts = [r["status"] for r in evaluate_gates(gates, result)["results"]]
    assert verdicts == ["pass", "fail", "inconclusive", "pass", "fail", "pass", "inconclusive"]
    message = evaluate_gates(gates[1:2], result)["results"][0]["message"]
    assert "Black" in message and "fail" in message


@pytest.mark.parametrize("entry, message", [
    ({"metric": "accuracy", "by": "race", "min": 0.8}, "accuracy is a classifier's metric; an age audit gates mae"),
    ({"metric": "mae", "by": "race", "min": 3}, "mae takes max or max_gap, not min"),
    ({"metric": "within5", "by": "race", "min_ratio": 0.8}, "within5 takes min or max_gap"),
])
def test_classifier_gates_refused_on_an_age_audit(table, entry, message):
    with pytest.raises(FaceauditError, match=message):
        faceaudit.audit(table, n_boot=0, gates={"gates": [entry]})


def test_age_gate_refused_on_a_classifier_audit():
    from simulated import utkface

    with pytest.raises(FaceauditError, match="mae is an age regressor's metric"):
        faceaudit.audit(utkface(600), n_boot=0, gates={"gates": [{"metric": "mae", "by": "race", "max": 5}]})


def test_shards_refused(table, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    table.write(folder / "part-00000.parquet")
    with pytest.raises(FaceauditError, match="age audits read one predictions table"):
        faceaudit.audit(folder, target="age")


# -- the command line ---------------------------------------------------------------------------------------------


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("faceaudit: error: "), err
    return err[0]


def _run(tmp_path, predictions, *extra, gates: str | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    args = ["audit", "--predictions", str(predictions), "--target", "age", "--out", str(out), "--n-boot", str(N_BOOT),
            *extra]
    if gates is not None:
        (tmp_path / "gates.toml").write_text(gates)
        args += ["--gates", str(tmp_path / "gates.toml")]
    return main(args), out


def test_cli_exit_codes_and_report(csv_path, tmp_path, capsys):
    code, out = _run(tmp_path / "a", csv_path, gates='[[gates]]\nmetric = "mae"\nby = "race"\nmax = 20\n')
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "MAE" in stdout and "race bias: largest Black" in stdout
    for name in ("audit.json", "group_metrics.csv", "disparities.csv", "predictions.csv", "gates.xml", "report.html",
                 "report.pdf", "summary.md"):
        assert (out / name).is_file(), name
    audit = json.loads((out / "audit.json").read_text())
    assert audit["task"] == "regression" and audit["schema_version"] == SCHEMA_VERSION
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    html = (out / "report.html").read_text()
    for heading in ("Error by true age", "Predicted against true age", "Largest errors", "MAE, years [CI]"):
        assert heading in html, heading
    for absent in ('id="confusion"', 'id="calibration"', "confusion matrices", "temperature scaling", "Accuracy [CI]"):
        assert absent not in html, absent
    assert "age estimation" in (out / "summary.md").read_text()
    code, _ = _run(tmp_path / "b", csv_path, "--no-report", gates='[[gates]]\nmetric = "bias"\nby = "race"\nmax = 2\n')
    assert code == 1
    assert "gate FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("corrupt, message", [
    (lambda f: f.drop(columns=["pred_age"]), "lacks column(s): pred_age"),
    (lambda f: f.assign(pred_age=f["pred_age"].astype(object).where(f.index != 5, "old")),
     "column 'pred_age' has a non-numeric value 'old' (line 7 of the file"),
    (lambda f: f.assign(age=f["age_band"]), "holds no ages in years"),
])
def test_cli_bad_inputs_exit_2(csv_path, tmp_path, capsys, corrupt, message):
    path = tmp_path / "bad.csv"
    corrupt(pd.read_csv(csv_path)).to_csv(path, index=False)
    code, out = _run(tmp_path, path)
    assert message in _one_line_error(capsys, code)
    assert not out.exists()


def test_cli_age_gate_on_a_classifier_exits_2(tmp_path, capsys):
    from simulated import utkface

    path = tmp_path / "race.csv"
    utkface(600).to_csv(path, index=False)
    (tmp_path / "gates.toml").write_text('[[gates]]\nmetric = "within5"\nby = "race"\nmin = 0.5\n')
    out = tmp_path / "out"
    code = main(["audit", "--predictions", str(path), "--out", str(out), "--gates", str(tmp_path / "gates.toml")])
    assert "within5 is an age regressor's metric" in _one_line_error(capsys, code)
    assert not out.exists()


# -- the report ---------------------------------------------------------------------------------------------------


def test_report_renders_regression_sections(result, tmp_path):
    folder = result.report(tmp_path / "report", thumbnails=False)
    html = (folder / "report.html").read_text()
    for heading in ("Errors overall and per group", "Error by true age", "Predicted against true age",
                    "Largest errors", "Model card", "Reproducibility", "age estimator", "Bias, years [CI]"):
        assert heading in html, heading
    for absent in ('id="confusion"', 'id="calibration"', 'id="embeddings"', "Per-group confusion matrices",
                   "temperature scaling", "classifier's accuracy"):
        assert absent not in html, absent
    assert html.count("data:image/png;base64,") >= 2  # error by true age, predicted vs true
    assert (folder / "report.pdf").read_bytes()[:5] == b"%PDF-"
    summary = (folder / "summary.md").read_text()
    assert "age estimation" in summary and "Black" in summary and len(summary.splitlines()) <= 60
    back = AuditResult.from_json(folder)
    assert back.task == "regression" and back.by_group("race", "mae").shape[0] == 5
    back.report()  # re-rendered from audit.json alone
