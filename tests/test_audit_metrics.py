"""The audit's numbers checked against scikit-learn, fairlearn and straightforward implementations, on real
predictions of a model trained on real UTKFace images (tests/audit_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from fairlearn.metrics import MetricFrame
from scipy.stats import binomtest, chi2_contingency
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
)

from faceaudit.auditing import bootstrap
from faceaudit.auditing.calibration import expected_calibration_error, fit_temperature, scale_temperature
from faceaudit.auditing.engine import AuditSettings, compute_audit
from faceaudit.seams.predictions import PredictionsTable
from faceaudit.taxonomy import UTKFACE

RACES = list(UTKFACE.classes)
PROB_COLUMNS = UTKFACE.prob_columns

LABELS = list(range(len(RACES)))
# sklearn warns on groups where y_pred has classes absent from y_true; that is the case being checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _f1_macro(y_true, y_pred):
    return f1_score(y_true, y_pred, average="macro", zero_division=0)


METRICS = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score, "macro_f1": _f1_macro}


@pytest.fixture(scope="module")
def audit(real_predictions):  # noqa: F811
    settings = AuditSettings(n_boot=1000, seed=7, tsne=False)
    return compute_audit(real_predictions.test_table, settings=settings, val_predictions=real_predictions.val_table,
                         embeddings=real_predictions.embeddings, embedding_source="file")


def _codes(frame: pd.DataFrame):
    return frame["race"].cat.codes.to_numpy(), frame["pred_race"].cat.codes.to_numpy()


def _mask(frame: pd.DataFrame, values: dict) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for attribute, value in values.items():
        mask &= (frame[attribute].astype(str) == value).to_numpy()
    return mask


def _exact_interval(successes: int, trials: int) -> tuple[float, float]:
    """Clopper–Pearson from scipy's own implementation, independent of the audit's."""
    ci = binomtest(int(successes), int(trials)).proportion_ci(0.95, method="exact")
    return ci.low, ci.high


@pytest.mark.parametrize("grouping", ["gender", "age_band", "gender×age_band"])
def test_mixed_group_metrics_match_sklearn_and_fairlearn(audit, real_predictions, grouping):  # noqa: F811
    frame = real_predictions.test
    y_true, y_pred = _codes(frame)
    attributes = grouping.split("×")
    features = frame[attributes].astype(str)
    mf = MetricFrame(metrics=METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=features)
    records = audit.grouping(grouping)["groups"]
    assert audit.grouping(grouping)["kind"] == "mixed"
    assert sum(r["n"] for r in records) == len(frame)
    for record in records:
        index = tuple(record["values"][a] for a in attributes)
        expected = mf.by_group.loc[index if len(index) > 1 else index[0]]
        for metric in METRICS:
            got = record["metrics"][metric]
            assert got["value"] == pytest.approx(expected[metric], abs=1e-6), (record["key"], metric)
            assert got["ci"][0] < got["ci"][1] and got["ci"][0] <= got["value"] <= got["ci"][1]
        mask = _mask(frame, record["values"])
        t, p = y_true[mask], y_pred[mask]
        assert record["metrics"]["accuracy"]["ci"] == pytest.approx(_exact_interval((t == p).sum(), len(t)), abs=1e-6)
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
                assert got["f1"]["ci"][0] <= got["f1"]["value"] <= got["f1"]["ci"][1]
            assert got["fpr"]["value"] == pytest.approx(((p == k) & (t != k)).sum() / (t != k).sum(), abs=1e-6)
            assert got["selection_rate"]["value"] == pytest.approx((p == k).mean(), abs=1e-6)


@pytest.mark.parametrize("grouping", ["race", "race×gender", "race×age_band", "race×gender×age_band"])
def test_single_race_groups_carry_their_rates_within_context(audit, real_predictions, grouping):  # noqa: F811
    """Inside one race every true label is the same: such groups carry recall, FNR, precision, FPR and selection
    rate of their race over their context (whole test set, or that gender / age band), never balanced accuracy or
    macro-F1 (which would duplicate accuracy and measure how varied the errors are)."""
    frame = real_predictions.test
    y_true, y_pred = _codes(frame)
    block = audit.grouping(grouping)
    assert block["kind"] == "class"
    assert sum(r["n"] for r in block["groups"]) == len(frame)
    for record in block["groups"]:
        assert "balanced_accuracy" not in record["metrics"] and "macro_f1" not in record["metrics"]
        assert "per_class" not in record
        context = {a: v for a, v in record["values"].items() if a != "race"}
        in_context = _mask(frame, context)
        t, p = y_true[in_context], y_pred[in_context]
        k = RACES.index(record["values"]["race"])
        m = record["metrics"]
        assert m["accuracy"]["value"] == pytest.approx(((t == k) & (p == k)).sum() / (t == k).sum(), abs=1e-6)
        assert m["recall"] == m["accuracy"]
        assert m["fnr"]["value"] == pytest.approx(1 - m["recall"]["value"], abs=1e-6)
        assert m["fpr"]["value"] == pytest.approx(((p == k) & (t != k)).sum() / (t != k).sum(), abs=1e-6)
        assert m["selection_rate"]["value"] == pytest.approx((p == k).mean(), abs=1e-6)
        assert m["true_share"]["value"] == pytest.approx((t == k).mean(), abs=1e-6)
        if (p == k).any():
            assert m["precision"]["value"] == pytest.approx(
                precision_score(t, p, labels=[k], average=None, zero_division=np.nan)[0], abs=1e-6)
            assert m["precision"]["ci"] == pytest.approx(_exact_interval(((t == k) & (p == k)).sum(), (p == k).sum()),
                                                         abs=1e-6)
        for stat in m.values():
            if stat["value"] is not None:
                assert stat["ci"][0] < stat["ci"][1], (record["key"], stat)


def test_overall_and_disparities_match_fairlearn(audit, real_predictions):  # noqa: F811
    frame = real_predictions.test
    y_true, y_pred = _codes(frame)
    mf = MetricFrame(metrics=METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=frame["race"].astype(str))
    for metric in METRICS:
        assert audit.overall["metrics"][metric]["value"] == pytest.approx(mf.overall[metric], abs=1e-6)
    disparity = audit.grouping("race")["disparities"]["accuracy"]
    assert disparity["gap"]["value"] == pytest.approx(mf.difference(method="between_groups")["accuracy"], abs=1e-6)
    assert disparity["ratio"]["value"] == pytest.approx(mf.ratio(method="between_groups")["accuracy"], abs=1e-6)
    assert disparity["worst"] == mf.by_group["accuracy"].idxmin()
    assert disparity["difference"]["value"] == pytest.approx(-disparity["gap"]["value"], abs=1e-6)
    assert disparity["n_ranked"] == 5 and disparity["pairs"] == 10
    # The simultaneous interval over 10 pairs is wider than a single 95% comparison of the same two groups.
    # Max-type (studentized range) level over the 10 pairs: below Bonferroni's 0.995, never above it (issue 22).
    assert 0.99 < disparity["level"] < 0.995
    lo, hi = disparity["gap"]["ci"]
    assert 0 <= lo <= disparity["gap"]["value"] <= hi
    assert disparity["omnibus"]["p_value"] == pytest.approx(
        chi2_contingency(pd.crosstab(frame["race"].astype(str), y_true == y_pred), correction=False).pvalue, rel=1e-6)
    black = audit.group("race", "Black")
    correct = y_true == y_pred
    in_group = (frame["race"] == "Black").to_numpy()
    vs_rest = black["vs_rest"]["accuracy"]
    assert vs_rest["value"] == pytest.approx(correct[in_group].mean() - correct[~in_group].mean(), abs=1e-6)
    # One family across the ranked groups of race, gender and age band (issue 22), not the 5 races alone.
    ranked = sum(not g["too_small"] for name in ("race", "gender", "age_band") for g in audit.grouping(name)["groups"])
    assert vs_rest["family"] == ranked > 5 and vs_rest["level"] == pytest.approx(1 - 0.05 / ranked)
    assert vs_rest["ci"][0] < vs_rest["value"] < vs_rest["ci"][1]


def test_multinomial_bootstrap_matches_exact_row_bootstrap(real_predictions, monkeypatch):  # noqa: F811
    """The large-n path (multinomial over types, normal sums) gives the same Brier and log-loss intervals as
    drawing rows; the classification metrics do not resample at all, so they are identical."""
    frame = real_predictions.test_table
    settings = AuditSettings(n_boot=1000, seed=11, tsne=False)
    exact = compute_audit(frame, settings=settings)
    monkeypatch.setattr(bootstrap, "EXACT_ROWS_LIMIT", 0)
    typed = compute_audit(frame, settings=settings)
    for grouping in ("race", "race×gender"):
        assert exact.grouping(grouping)["groups"] == typed.grouping(grouping)["groups"]
        for a, b in zip(exact.calibration["groupings"][grouping], typed.calibration["groupings"][grouping]):
            if a["too_small"]:
                continue
            # The ECE is a bootstrap too (bias-corrected, normal-bootstrap interval, issue 22): close, not equal.
            width = a["ece"]["ci"][1] - a["ece"]["ci"][0]
            assert a["ece"]["value"] == pytest.approx(b["ece"]["value"], abs=max(0.005, 0.2 * width))
            np.testing.assert_allclose(a["ece"]["ci"], b["ece"]["ci"], atol=max(0.01, 0.2 * width))
            for metric in ("brier", "log_loss"):
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
    assert overall["ece"]["plugin"] == pytest.approx(_ece_reference(probs, y_true), abs=1e-6)
    assert overall["ece"]["plugin"] == pytest.approx(expected_calibration_error(probs, y_true), abs=1e-6)
    # Debiasing only removes the plug-in estimate's upward bias, and the interval contains its point estimate.
    assert overall["ece"]["value"] <= overall["ece"]["plugin"]
    assert overall["ece"]["ci"][0] <= overall["ece"]["value"] <= overall["ece"]["ci"][1]
    assert overall["mce"]["ci"][0] <= overall["mce"]["value"] <= overall["mce"]["ci"][1]
    assert overall["mce"]["bin"]["n"] >= 1
    assert overall["log_loss"]["value"] == pytest.approx(log_loss(y_true, probs, labels=LABELS), abs=1e-6)
    onehot = np.eye(len(RACES))[y_true]
    assert overall["brier"]["value"] == pytest.approx(((probs - onehot) ** 2).sum(axis=1).mean(), abs=1e-6)
    for record in audit.calibration["groupings"]["race"]:
        mask = (frame["race"] == record["key"]).to_numpy()
        assert record["ece"]["plugin"] == pytest.approx(_ece_reference(probs[mask], y_true[mask]), abs=1e-6)
        lo, hi = record["ece"]["ci"]
        assert lo <= record["ece"]["value"] <= hi and lo < hi
        bins = record["reliability"]
        assert sum(b["n"] for b in bins) == record["n"]
        conf = probs[mask].max(axis=1)
        assert np.average([b["confidence"] for b in bins], weights=[b["n"] for b in bins]) == pytest.approx(conf.mean(), abs=1e-5)


def test_temperature_scaling_fits_validation_split(audit, real_predictions):  # noqa: F811
    val = real_predictions.val
    probs, y_true = val[list(PROB_COLUMNS)].to_numpy(), val["race"].cat.codes.to_numpy()
    fit = fit_temperature(probs, y_true)
    temperature, before, after = fit["temperature"], fit["nll_before"], fit["nll_after"]
    assert after <= before
    assert fit["lo"] < temperature < fit["hi"]
    # The profile-likelihood bounds sit where the log likelihood has dropped by chi2(1, 0.95) / 2.
    for bound in (fit["lo"], fit["hi"]):
        drop = len(y_true) * (log_loss(y_true, scale_temperature(probs, bound), labels=LABELS) - after)
        assert drop == pytest.approx(3.841 / 2, abs=0.01)
    assert before == pytest.approx(log_loss(y_true, probs, labels=LABELS), abs=1e-6)
    assert after == pytest.approx(log_loss(y_true, scale_temperature(probs, temperature), labels=LABELS), abs=1e-6)
    for t in (temperature * 0.8, temperature * 1.25):  # a minimum, not just an improvement
        assert log_loss(y_true, scale_temperature(probs, t), labels=LABELS) >= after - 1e-9
    block = audit.calibration["temperature"]
    assert block["temperature"] == pytest.approx(temperature, rel=1e-4)
    assert block["ci"] == pytest.approx([fit["lo"], fit["hi"]], rel=1e-4)
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


def test_constant_classifier_gets_exact_intervals(real_predictions):  # noqa: F811
    """A classifier that always answers "White" is right exactly on the White faces: 100 % recall for White, 0 %
    for every other race. No interval collapses there: each is the exact binomial one of the same counts."""
    frame = real_predictions.test.copy()
    probs = np.full((len(frame), len(RACES)), 0.05)
    probs[:, 0] = 0.8
    frame[list(PROB_COLUMNS)] = probs
    frame["pred_race"] = pd.Categorical(["White"] * len(frame), categories=frame["race"].cat.categories)
    result = compute_audit(PredictionsTable(frame, UTKFACE), settings=AuditSettings(n_boot=200, seed=5, tsne=False))
    for record in [result.overall] + result.grouping("gender")["groups"]:
        mask = _mask(frame, record.get("values", {}))
        accuracy = record["metrics"]["accuracy"]
        white = int((frame["race"][mask] == "White").sum())
        assert accuracy["ci"] == pytest.approx(_exact_interval(white, mask.sum()), abs=1e-6)
    for record in result.grouping("race")["groups"]:
        recall = record["metrics"]["recall"]
        lo, hi = recall["ci"]
        assert lo < hi
        if record["key"] == "White":
            assert recall["value"] == 1.0 and hi == 1.0 and lo == pytest.approx(0.025 ** (1 / record["n"]), abs=1e-6)
        else:
            assert recall["value"] == 0.0 and lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / record["n"]), abs=1e-6)
