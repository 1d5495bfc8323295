"""The audit's numbers checked against scikit-learn, fairlearn and straightforward implementations, on real
predictions of a model trained on real UTKFace images (tests/audit_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from fairlearn.metrics import MetricFrame
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
)

from faceaudit.audit import bootstrap
from faceaudit.audit.calibration import expected_calibration_error, fit_temperature, scale_temperature
from faceaudit.audit.engine import AuditSettings, compute_audit
from faceaudit.audit.schema import PROB_COLUMNS
from faceaudit.config import RACES

LABELS = list(range(len(RACES)))
# sklearn warns on groups where y_pred has classes absent from y_true; that is the case being checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _f1_macro(y_true, y_pred):
    return f1_score(y_true, y_pred, average="macro", zero_division=0)


METRICS = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score, "macro_f1": _f1_macro}


@pytest.fixture(scope="module")
def audit(real_predictions):  # noqa: F811
    settings = AuditSettings(n_boot=1000, seed=7, tsne=False)
    return compute_audit(real_predictions.test, settings=settings, val_predictions=real_predictions.val,
                         embeddings=real_predictions.embeddings, embedding_source="file").result


def _codes(frame: pd.DataFrame):
    return frame["race"].cat.codes.to_numpy(), frame["pred_race"].cat.codes.to_numpy()


@pytest.mark.parametrize("grouping", ["race", "gender", "age_band", "race×gender", "race×gender×age_band"])
def test_group_metrics_match_sklearn_and_fairlearn(audit, real_predictions, grouping):  # noqa: F811
    frame = real_predictions.test
    y_true, y_pred = _codes(frame)
    attributes = grouping.split("×")
    features = frame[attributes].astype(str)
    mf = MetricFrame(metrics=METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=features)
    by_group = mf.by_group
    records = audit.grouping(grouping)["groups"]
    assert sum(r["n"] for r in records) == len(frame)
    for record in records:
        index = tuple(record["values"][a] for a in attributes)
        expected = by_group.loc[index if len(index) > 1 else index[0]]
        for metric in METRICS:
            assert record["metrics"][metric]["value"] == pytest.approx(expected[metric], abs=1e-6), (record["key"], metric)
        mask = (features == pd.Series(record["values"])[attributes]).all(axis=1).to_numpy()
        t, p = y_true[mask], y_pred[mask]
        assert record["confusion"]["counts"] == confusion_matrix(t, p, labels=LABELS).tolist()
        normalised = confusion_matrix(t, p, labels=LABELS, normalize="true")
        for k, row in enumerate(record["confusion"]["normalized"]):
            if row is None:
                assert (t == k).sum() == 0
            else:
                np.testing.assert_allclose(row, normalised[k], atol=1e-6)
        precision = precision_score(t, p, labels=LABELS, average=None, zero_division=np.nan)
        recall = recall_score(t, p, labels=LABELS, average=None, zero_division=np.nan)
        f1 = f1_score(t, p, labels=LABELS, average=None, zero_division=np.nan)
        for k, race in enumerate(RACES):
            got = record["per_class"][race]
            for name, ref in (("precision", precision[k]), ("recall", recall[k])):
                if np.isnan(ref):
                    assert got[name]["value"] is None
                else:
                    assert got[name]["value"] == pytest.approx(ref, abs=1e-6)
            if (t == k).any() or (p == k).any():
                assert got["f1"]["value"] == pytest.approx(0.0 if np.isnan(f1[k]) else f1[k], abs=1e-6)


def test_overall_and_disparities_match_fairlearn(audit, real_predictions):  # noqa: F811
    frame = real_predictions.test
    y_true, y_pred = _codes(frame)
    mf = MetricFrame(metrics=METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=frame["race"].astype(str))
    for metric in METRICS:
        assert audit.overall["metrics"][metric]["value"] == pytest.approx(mf.overall[metric], abs=1e-6)
        disparity = audit.grouping("race")["disparities"][metric]
        assert disparity["gap"]["value"] == pytest.approx(mf.difference(method="between_groups")[metric], abs=1e-6)
        assert disparity["ratio"]["value"] == pytest.approx(mf.ratio(method="between_groups")[metric], abs=1e-6)
        assert disparity["worst"] == mf.by_group[metric].idxmin()
        group = audit.group("race", "Black")
        assert group["vs_overall"][metric]["value"] == pytest.approx(
            mf.by_group[metric]["Black"] - mf.overall[metric], abs=1e-6)


def test_bootstrap_intervals_agree_with_fairlearn(audit, real_predictions):  # noqa: F811
    """fairlearn resamples the whole test set, the audit resamples within cells; for per-group metrics the
    intervals agree within Monte Carlo error. fairlearn runs 300 resamples to keep the test short (its bounds then
    move by about 0.01 between seeds); bench/bench_audit.py compares at 1,000."""
    frame = real_predictions.test
    y_true, y_pred = _codes(frame)
    mf = MetricFrame(metrics=METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=frame["race"].astype(str),
                     n_boot=300, ci_quantiles=[0.025, 0.975], random_state=3)
    lower, upper = mf.by_group_ci
    for record in audit.grouping("race")["groups"]:
        for metric in METRICS:
            lo, hi = record["metrics"][metric]["ci"]
            width = upper[metric][record["key"]] - lower[metric][record["key"]]
            tolerance = max(0.015, 0.2 * width)
            assert lo == pytest.approx(lower[metric][record["key"]], abs=tolerance), (record["key"], metric)
            assert hi == pytest.approx(upper[metric][record["key"]], abs=tolerance), (record["key"], metric)
        wilson = record["metrics"]["accuracy"]["wilson"]
        assert wilson[0] < record["metrics"]["accuracy"]["value"] < wilson[1]
        assert wilson == pytest.approx(record["metrics"]["accuracy"]["ci"], abs=0.02)


def test_multinomial_bootstrap_matches_exact_row_bootstrap(real_predictions, monkeypatch):  # noqa: F811
    """The large-n path (multinomial over types, normal sums) gives the same intervals as drawing rows."""
    frame = real_predictions.test
    settings = AuditSettings(n_boot=1000, seed=11, tsne=False)
    exact = compute_audit(frame, settings=settings).result
    monkeypatch.setattr(bootstrap, "EXACT_ROWS_LIMIT", 0)
    typed = compute_audit(frame, settings=settings).result
    for grouping in ("race", "race×gender"):
        for a, b in zip(exact.grouping(grouping)["groups"], typed.grouping(grouping)["groups"]):
            if a["too_small"]:
                continue
            assert a["metrics"]["accuracy"]["value"] == b["metrics"]["accuracy"]["value"]
            np.testing.assert_allclose(a["metrics"]["accuracy"]["ci"], b["metrics"]["accuracy"]["ci"], atol=0.02)
        for a, b in zip(exact.calibration["groupings"][grouping], typed.calibration["groupings"][grouping]):
            if a["too_small"]:
                continue
            for metric in ("ece", "brier", "log_loss"):
                assert a[metric]["value"] == pytest.approx(b[metric]["value"], abs=1e-6)
                width = a[metric]["ci"][1] - a[metric]["ci"][0]
                np.testing.assert_allclose(a[metric]["ci"], b[metric]["ci"], atol=max(0.01, 0.2 * width))


def _ece_reference(probs, y_true, n_bins=15):
    """Top-label ECE the textbook way: loop over bins (lo, hi]."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


def test_calibration_matches_reference_implementations(audit, real_predictions):  # noqa: F811
    frame = real_predictions.test
    probs = frame[list(PROB_COLUMNS)].to_numpy()
    y_true = frame["race"].cat.codes.to_numpy()
    overall = audit.calibration["overall"]
    assert overall["ece"]["value"] == pytest.approx(_ece_reference(probs, y_true), abs=1e-6)
    assert overall["ece"]["value"] == pytest.approx(expected_calibration_error(probs, y_true), abs=1e-6)
    assert overall["log_loss"]["value"] == pytest.approx(log_loss(y_true, probs, labels=LABELS), abs=1e-6)
    onehot = np.eye(len(RACES))[y_true]
    assert overall["brier"]["value"] == pytest.approx(((probs - onehot) ** 2).sum(axis=1).mean(), abs=1e-6)
    for record in audit.calibration["groupings"]["race"]:
        mask = (frame["race"] == record["key"]).to_numpy()
        assert record["ece"]["value"] == pytest.approx(_ece_reference(probs[mask], y_true[mask]), abs=1e-6)
        lo, hi = record["ece"]["ci"]
        assert lo <= record["ece"]["value"] + 0.02 and hi >= record["ece"]["value"]
        bins = record["reliability"]
        assert sum(b["n"] for b in bins) == record["n"]
        conf = probs[mask].max(axis=1)
        assert np.average([b["confidence"] for b in bins], weights=[b["n"] for b in bins]) == pytest.approx(conf.mean(), abs=1e-5)


def test_temperature_scaling_fits_validation_split(audit, real_predictions):  # noqa: F811
    val = real_predictions.val
    probs, y_true = val[list(PROB_COLUMNS)].to_numpy(), val["race"].cat.codes.to_numpy()
    temperature, before, after = fit_temperature(probs, y_true)
    assert after <= before
    assert before == pytest.approx(log_loss(y_true, probs, labels=LABELS), abs=1e-6)
    assert after == pytest.approx(log_loss(y_true, scale_temperature(probs, temperature), labels=LABELS), abs=1e-6)
    for t in (temperature * 0.8, temperature * 1.25):  # a minimum, not just an improvement
        assert log_loss(y_true, scale_temperature(probs, t), labels=LABELS) >= after - 1e-9
    block = audit.calibration["temperature"]
    assert block["temperature"] == pytest.approx(temperature, rel=1e-4)
    assert block["n_fit"] == len(val)
    assert {r["key"] for r in block["groupings"]["race"]} == set(RACES)
    assert block["overall"]["before"]["ece"]["value"] == audit.calibration["overall"]["ece"]["value"]


def test_embedding_figures(audit, real_predictions):  # noqa: F811
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    frame, x = real_predictions.test, real_predictions.embeddings
    race = frame["race"].cat.codes.to_numpy()
    block = audit.embeddings
    assert block["dim"] == x.shape[1] and block["n"] == len(x)
    assert block["silhouette"]["overall"]["value"] == pytest.approx(silhouette_score(x, race), abs=1e-4)
    _, idx = NearestNeighbors(n_neighbors=11).fit(x).kneighbors(x)
    purity = (race[idx[:, 1:]] == race[:, None]).mean(axis=1)
    assert block["knn_purity"]["overall"]["value"] == pytest.approx(purity.mean(), abs=2e-3)
    for record in block["knn_purity"]["groupings"]["race"]:
        mask = (frame["race"] == record["key"]).to_numpy()
        assert record["purity"]["value"] == pytest.approx(purity[mask].mean(), abs=5e-3)


def test_intervals_keep_the_variance_of_the_class_mix(real_predictions):  # noqa: F811
    """A classifier that always answers "White" is right exactly on the White faces. Resampling within race
    cells would fix that share and give zero-width intervals; resampling within each group must give overall and
    per-gender accuracy intervals as wide as the binomial (Wilson) interval of the same images."""
    frame = real_predictions.test.copy()
    probs = np.full((len(frame), len(RACES)), 0.05)
    probs[:, 0] = 0.8
    frame[list(PROB_COLUMNS)] = probs
    frame["pred_race"] = pd.Categorical(["White"] * len(frame), categories=frame["race"].cat.categories)
    result = compute_audit(frame, settings=AuditSettings(n_boot=1000, seed=5, tsne=False)).result
    records = [result.overall] + result.grouping("gender")["groups"]
    for record in records:
        accuracy = record["metrics"]["accuracy"]
        ci_width = accuracy["ci"][1] - accuracy["ci"][0]
        wilson_width = accuracy["wilson"][1] - accuracy["wilson"][0]
        assert ci_width == pytest.approx(wilson_width, rel=0.15), record.get("key")
