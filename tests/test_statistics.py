"""Honest uncertainty: the interval and test building blocks, metrics refused where they mean nothing, missing
classes and tiny test sets, and one family of paired tests shared by ``compare`` and ``diff`` on real predictions.

Coverage itself is proven by simulation in ``bench/bench_coverage.py``; these tests pin the behaviour."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)
from scipy import stats

import faceaudit
from faceaudit.auditing.engine import AuditSettings, compute_audit
from faceaudit.auditing.gates import check_gates, evaluate_gates, parse_gates
from faceaudit.auditing.intervals import clopper_pearson, mover_difference, paired_difference, proportion
from faceaudit.auditing.paired import Slice, paired_family
from faceaudit.auditing.significance import holm, homogeneity, mcnemar
from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.seams.predictions import PredictionsTable
from faceaudit.taxonomy import UTKFACE


def test_clopper_pearson_matches_scipy_and_never_collapses():
    for x, n in [(0, 1), (0, 20), (3, 20), (20, 20), (126, 126), (980, 1000)]:
        lo, hi = clopper_pearson(x, n)
        ref = stats.binomtest(x, n).proportion_ci(0.95, method="exact")
        assert (float(lo), float(hi)) == pytest.approx((ref.low, ref.high), abs=1e-9)
        assert hi - lo > 0
    # The demo's "White 100.0% [100.0, 100.0]" at n = 126: now the exact interval, 97.1 % to 100 %.
    estimate, lo, hi = proportion(126, 126)
    assert estimate == 1.0 and hi == 1.0 and lo == pytest.approx(0.9711, abs=1e-4)
    assert np.isnan(clopper_pearson(0, 0)[0])


def test_differences_and_paired_differences_keep_their_width():
    d, lo, hi = mover_difference(proportion(40, 40), proportion(40, 40))
    assert d == 0 and lo < 0 < hi
    # Two models that never disagree: the paired interval reflects how well the shared accuracy is known.
    for both, neither in [(90, 10), (100, 0), (0, 50)]:
        diff, lo, hi = paired_difference(both, 0, 0, neither)
        assert diff == 0 and lo < 0 < hi
    # More discordant pairs in favour of b: the interval moves up and excludes 0.
    diff, lo, hi = paired_difference(800, 10, 60, 130)
    assert diff == pytest.approx(0.05) and 0 < lo < diff < hi


def test_tests_and_holm():
    assert mcnemar(0, 0)[0] == 1.0
    assert mcnemar(2, 12)[1] == "exact binomial"
    assert mcnemar(2, 12)[0] == pytest.approx(stats.binomtest(2, 14, 0.5).pvalue)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
    # Homogeneity: chi-square with enough expected counts, permutation test otherwise.
    big = homogeneity([90, 80, 85], [100, 100, 100])
    assert big["method"].startswith("chi-square")
    assert big["p_value"] == pytest.approx(stats.chi2_contingency([[90, 10], [80, 20], [85, 15]])[1])
    small = homogeneity([20, 19, 20], [20, 20, 20])
    assert small["method"].startswith("permutation") and small["p_value"] > 0.3


def _records(result):
    return [r for g in result.groupings.values() for r in g["groups"]] + [result.overall]


def test_no_interval_has_zero_width_on_a_perfect_classifier(real_predictions):  # noqa: F811
    """Every face right: every proportion is 0 or 1, yet no interval anywhere in audit.json has zero width."""
    frame = real_predictions.test.copy()
    frame["pred_race"] = frame["race"]
    probs = np.eye(5)[frame["race"].cat.codes.to_numpy()] * 0.95 + 0.01
    frame[[f"prob_{r}" for r in frame["race"].cat.categories]] = probs
    result = compute_audit(PredictionsTable(frame, UTKFACE), settings=AuditSettings(n_boot=100, tsne=False))
    widths = []

    def walk(node):
        if isinstance(node, dict):
            if "value" in node and "ci" in node and node["value"] is not None and node.get("n"):
                widths.append(node["ci"][1] - node["ci"][0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(result.to_dict())
    assert len(widths) > 1000 and min(widths) > 0
    white = result.group("race", "White")["metrics"]["accuracy"]
    assert white["value"] == 1.0 and white["ci"][0] < 1.0


@pytest.mark.parametrize("gate, message", [
    ({"metric": "balanced_accuracy", "by": "race", "min": 0.5}, "undefined within a single-race group"),
    ({"metric": "macro_f1", "by": "race x gender", "max_gap": 0.1}, "undefined within a single-race group"),
    ({"metric": "precision", "by": "gender", "min": 0.5}, "per-race rate"),
    ({"metric": "fpr", "by": "overall", "max": 0.1}, "per-race rate"),
    ({"metric": "brier", "by": "race", "max_gap": 0.1}, "max_gap is available for ece"),
    ({"metric": "selection_rate", "by": "race", "max_gap": 0.1}, "available for accuracy, precision, fpr"),
])
def test_gates_refuse_metrics_undefined_for_their_grouping(gate, message):
    with pytest.raises(FaceauditError, match=message):
        check_gates(parse_gates({"gates": [gate]})[0], UTKFACE)


def test_per_race_gates_are_judged_on_exact_intervals(real_predictions):  # noqa: F811
    result = compute_audit(real_predictions.test_table, settings=AuditSettings(n_boot=100, tsne=False))
    gates, _ = parse_gates({"gates": [{"metric": "fpr", "by": "race", "max": 1.0},
                                      {"metric": "balanced_accuracy", "by": "gender", "min": 0.0},
                                      {"metric": "accuracy", "by": "race", "max_gap": 1.0}]})
    block = evaluate_gates(gates, result)
    assert [r["status"] for r in block["results"]] == ["pass", "pass", "pass"]
    assert "of 5 groups; interval simultaneous over 10 pairs" in block["results"][2]["message"]


def test_missing_class_and_tiny_test_set(real_predictions):  # noqa: F811
    """No Others faces: reported as missing and the coverage gate fails. Three rows: too small to judge, no gate
    passes, no ranking, and the intervals say how little three faces tell."""
    gates, _ = parse_gates({"gates": [{"metric": "n", "by": "race", "min": 30},
                                      {"metric": "accuracy", "by": "overall", "min": 0.0}]})
    without = real_predictions.test_table.subset((real_predictions.test["race"] != "Others").to_numpy())
    result = compute_audit(without, settings=AuditSettings(n_boot=100, tsne=False))
    assert result.data["missing_classes"] == ["Others"] and "Others" in result.grouping("race")["missing"]
    assert any("no test images of Others" in w for w in result.warnings)
    block = evaluate_gates(gates, result)
    sizes = block["results"][0]
    assert sizes["status"] == "fail" and {"key": "Others", "status": "fail"}.items() <= next(
        g for g in sizes["groups"] if g["key"] == "Others").items()

    tiny = pd.DataFrame({"image_id": ["a", "b", "c"], "race": ["White"] * 3, "gender": ["Male", "Female", "Male"],
                         "age": [30, 40, 50], "pred_race": ["White"] * 3})
    result = faceaudit.audit(tiny, gates={"gates": [{"metric": "n", "by": "race", "min": 30},
                                                    {"metric": "accuracy", "by": "overall", "min": 0.0}]},
                             n_boot=100, tsne=False)
    assert result.data["too_small_to_judge"] and result.warnings[0].startswith("too small to judge")
    accuracy = result.overall["metrics"]["accuracy"]
    assert accuracy["value"] == 1.0 and accuracy["ci"][0] == pytest.approx(0.2924, abs=1e-4)
    assert result.grouping("race")["disparities"]["accuracy"]["worst"] is None
    block = result.gates
    assert result.status == block["status"] == "fail"  # the coverage gate: four races have no faces at all
    assert block["results"][1]["status"] == "inconclusive"
    assert "too small to judge" in block["results"][1]["message"]


def test_paired_family_controls_false_worse_verdicts():
    """Two equally good models (independent errors) compared over 20 groups, 300 times: the family-wise rate
    of any "worse" verdict stays within 5 % (bench_coverage measures it at scale)."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(20), 100)
    slices = [Slice("g", str(g), groups == g) for g in range(20)]
    worse = 0
    for _ in range(300):
        a, b = rng.random(len(groups)) < 0.85, rng.random(len(groups)) < 0.85
        worse += (paired_family(a, b, slices)["verdict"] == "worse").any()
    assert worse / 300 <= 0.05


def _audit_folder(tmp_path, name, frame):
    preds = tmp_path / f"{name}.csv"
    frame.to_csv(preds, index=False)
    out = tmp_path / name
    assert main(["audit", "--predictions", str(preds), "--out", str(out), "--n-boot", "100", "--no-report",
                 "--no-tsne"]) == 0
    return out


def test_compare_and_diff_reach_the_same_verdicts(real_predictions, tmp_path, capsys):  # noqa: F811
    """A second model that is worse on Black faces only: compare's paired tests and diff test one family with one
    correction, so they call the same groups better or worse."""
    test = pd.read_csv(real_predictions.csv)
    test = test[test["split"] == "test"].drop(columns=["split"])
    worse = test.copy()
    black = (worse["race"] == "Black").to_numpy()
    flip = black & (np.random.default_rng(0).random(len(worse)) < 0.4)
    worse.loc[flip, [c for c in worse.columns if c.startswith("prob_")]] = 0.0
    worse.loc[flip, "prob_Others"] = 1.0
    if "pred_race" in worse:
        worse.loc[flip, "pred_race"] = "Others"
    old, new = _audit_folder(tmp_path, "old", test), _audit_folder(tmp_path, "new", worse)
    capsys.readouterr()
    assert main(["diff", str(old), str(new), "--out", str(tmp_path / "diff.md"), "--fail-on-worse"]) == 1
    text = capsys.readouterr().out
    assert "One family of" in text and "Holm" in text
    assert main(["compare", str(old), str(new), "--out", str(tmp_path / "cmp"), "--no-pdf"]) == 0
    diff = pd.read_csv(tmp_path / "diff.csv")
    paired = pd.read_csv(tmp_path / "cmp" / "paired_tests.csv")
    assert diff[["grouping", "group", "verdict"]].equals(paired[["grouping", "group", "verdict"]])
    verdicts = dict(zip(diff["grouping"] + ":" + diff["group"], diff["verdict"]))
    assert verdicts["race:Black"] == "worse" and verdicts["overall:all"] == "worse"
    assert verdicts["race:White"] == "no clear change" and verdicts["gender:Male"] in ("worse", "no clear change")
    assert (diff["diff_hi"] > diff["diff_lo"]).all()
    audit = json.loads((new / "audit.json").read_text())
    assert audit["schema_version"].startswith("2.")
