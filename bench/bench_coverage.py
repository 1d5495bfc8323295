"""Benchmark the audit's uncertainty: empirical coverage of every interval it reports, on simulated known truths.

    python bench/bench_coverage.py [--reps 100] [--quick] [--seed 0] [--workers 2]
                                   [--section all|regression|decisive|calibration] [--cells abcdef]

Each section simulates test sets whose true accuracies, rates and calibration are known, runs the product code
on them and counts how often the reported interval contains the truth (coverage) or a gate reaches the wrong
verdict. Nothing is argued from theory: every figure is measured, with its Monte Carlo standard error (±), next
to its target. A figure fails when it misses its target by more than 2 standard errors (a smaller miss is marked
~ and listed, as Monte Carlo noise); the exit status is 1 when any target fails.

1. per-group intervals at n = 20, 50, 200, 1000 faces and true accuracy 0.6, 0.9, 0.98, 1.0: accuracy
   (Clopper–Pearson), each race's recall / precision / FPR / selection rate as the engine computes them, balanced
   accuracy (MOVER) and macro-F1 (mean of per-class bounds) of a mixed-class group, each race's difference
   from the rest of the test set.
   1a calls the interval functions directly on many draws; 1b runs ``compute_audit`` end to end.
2. disparities across five race groups whose true accuracy gap is 0 or 0.03 (end to end): the gap, worst − best
   and ratio intervals of accuracy, precision and FPR, the difference from the rest, the mean estimated gap and
   how often a ``gap <= 0.05`` gate wrongly fails.
3. how often a ``min accuracy`` gate passes a group whose true accuracy is below the threshold.
4. the family-wise rate of false "worse" verdicts of ``paired_family`` (``faceaudit diff`` / ``compare``) on two
   equally good models, and the paired interval's width when the models never disagree; 4c: coverage of the excess
   change (group change − whole-set change) of compare's "who pays for the change", a race at 100 % included.
5. the ECE and MCE intervals for a calibrated and a miscalibrated model at 60, 200 and 1000 faces per group (and,
   end to end at 60 and 200, Brier and log loss), plug-in against debiased ECE, and how often an ``ece <= 0.05``
   gate wrongly fails; 5c: the same end to end through a streamed audit's merged cell statistics.

6. age regressors (``--target age``): five race groups of n = 20, 60, 200, 1000 faces with UTKFace-like true ages,
   Laplace errors whose scale grows with age, 5 % gross errors at four times that scale and a bias per race;
   coverage and mean width of the MAE, bias and within-±5-years intervals, and of the MAE gap; a ``mae max_gap 1``
   gate's false failures at a true gap of 0 and its power (failures) at a true gap of 2 years. ``--section
   regression`` runs this section alone (about 2 minutes on 2 cores).
7. Decisive verdicts (issue 22; ``--section decisive``, ``--cells`` picks among 7a-7f): 7a ECE estimate, width,
   coverage, exclusion of 0.02 (next to an oracle that knows the miscalibration's side and each face's accuracy);
   7b power of ``max_gap 0.05`` at a true 10-point gap, next to an oracle test of the known pair and the
   Neyman-Pearson ceiling of any valid test; 7c global null over race, gender and age band; 7d min gate with every
   group at the threshold; 7e the shipped gates file at UTKFace's size (2 x reps audits per cell: Monte Carlo SE
   <= 3 points from 200); 7f the planner (``faceaudit plan``): audits at the planned sizes, from stated rates and,
   for the ECE gate, from a pilot audit (``--from``; reps / 2 pilots), decisive >= 75 %. 7e and 7f audit with 200
   resamples (as sections 1-4); 7a with the default 1,000. ``--section calibration`` runs section 5 alone.
   Every audit.json text the benchmark computes passes tests/audit_checks.py (no zero-width interval), or it stops.

Targets (issue): coverage >= 0.93 everywhere; min-accuracy gate false passes <= 2.5 %; family-wise false
"worse" <= 5 %; false gate failures when the truth is well inside the threshold <= 5 % (expected about 0).
End-to-end runs hold gender and age constant (race-level figures do not depend on them, and it keeps the seven
groupings cheap) and use ``AuditSettings(tsne=False, n_boot=200)``, except 5b, which judges the bootstrap intervals
of Brier and log loss and so uses the default 1,000 resamples. The default run takes about 3 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate, stats

from faceaudit.auditing import intervals
from faceaudit.auditing.bootstrap import confidence_bins
from faceaudit.auditing.calibration import ECE_BINS, calibration_error
from faceaudit.auditing.engine import AuditSettings, compute_audit
from faceaudit.auditing.gates import evaluate_gates, parse_gates
from faceaudit.auditing.metrics import class_rates, mixed_metrics
from faceaudit.auditing.paired import Slice, excess_family, paired_family
from faceaudit.auditing.result import AuditResult
from faceaudit.auditing.statistics import CellStatistics
from faceaudit.config import DEFAULT_N_BOOT
from faceaudit.seams.predictions import PredictionsTable
from faceaudit.taxonomy import UTKFACE, AgeBands

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from audit_checks import audit_problems  # noqa: E402 - the tests' checks of every audit.json

RACES = UTKFACE.classes
GENDERS = UTKFACE.attribute("gender").values
PROB_COLUMNS = UTKFACE.prob_columns

K = len(RACES)
RACE_NAMES = np.array(RACES)
SIZES = (20, 50, 200, 1000)
ACCURACIES = (0.6, 0.9, 0.98, 1.0)
COVERAGE_TARGET = 0.93
#: Each race's share of the errors it receives from the other classes (White attracts the most).
ERROR_WEIGHTS = np.array([4.0, 1.0, 2.0, 3.0, 2.0])
#: Race k's recall is 1 - (1 - p) * SPREAD[k]: White exactly p, the mean recall (balanced accuracy) exactly p.
SPREAD = np.array([1.0, 0.5, 0.75, 1.25, 1.5])
#: UTKFace-like class shares of a mixed-class group (a gender, an age band).
SHARES = np.array([0.42, 0.19, 0.15, 0.17, 0.07])
SETTINGS = AuditSettings(tsne=False, n_boot=200)
#: Section 5b judges the bootstrap intervals (Brier, log loss), so it uses the audit's default number of resamples.
CALIBRATION_SETTINGS = AuditSettings(tsne=False, n_boot=DEFAULT_N_BOOT)


# -- simulated truths ---------------------------------------------------------------------------------------


def confusion_model(recalls) -> np.ndarray:
    """Row-conditional confusion probabilities ``M[true, pred]``: each class's recall, errors spread by weight."""
    recalls = np.asarray(recalls, dtype=float)
    m = np.zeros((K, K))
    for k in range(K):
        others = np.arange(K) != k
        m[k, others] = (1 - recalls[k]) * ERROR_WEIGHTS[others] / ERROR_WEIGHTS[others].sum()
        m[k, k] = recalls[k]
    return m


def spread_recalls(p: float) -> np.ndarray:
    return 1 - (1 - p) * SPREAD


def truths(shares, m: np.ndarray) -> dict[str, np.ndarray]:
    """Population values of every class rate for true-class shares and confusion probabilities."""
    joint = np.asarray(shares, dtype=float)[:, None] * m
    row, col, tp = joint.sum(axis=1), joint.sum(axis=0), np.diag(joint)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / row
        out = {"recall": recall, "precision": np.where(col > 0, tp / col, np.nan),
               "fpr": (col - tp) / (1 - row), "selection_rate": col, "f1": 2 * tp / (row + col)}
    out["accuracy"] = recall
    out["balanced_accuracy"] = float(np.mean(recall))
    out["macro_f1"] = float(np.mean(out["f1"]))
    return out


def draw_predictions(true: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A predicted class for each true class, drawn from the rows of ``m``."""
    cumulative = m.cumsum(axis=1)[true]
    return np.minimum((rng.random(len(true))[:, None] > cumulative).sum(axis=1), K - 1)


def race_frame(sizes, m: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """A labels-only predictions table: ``sizes[k]`` faces of race k, predictions drawn from ``m``."""
    true = np.repeat(np.arange(K), sizes)
    pred = draw_predictions(true, m, rng)
    return pd.DataFrame({"image_id": np.arange(len(true)).astype(str), "race": RACE_NAMES[true], "gender": "Male",
                         "age": 30, "pred_race": RACE_NAMES[pred]})


def covered(lo, hi, truth, tol: float = 1e-6) -> np.ndarray:
    """Whether ``truth`` lies in ``[lo, hi]`` (tolerance for the 6-decimal rounding of audit.json); NaN: False."""
    lo, hi, truth = (np.asarray(v, dtype=float) for v in (lo, hi, truth))
    return (lo - tol <= truth) & (truth <= hi + tol)


#: audit.json texts checked by :func:`checked` in this process since the last task began.
_CHECKED = [0]


def checked(result) -> dict:
    """The audit's dict, once its audit.json text has passed the tests' checks (tests/audit_checks.py: no zero-width
    interval); a failing audit stops the benchmark with its problems."""
    problems = audit_problems(json.loads(result.to_json()))
    if problems:
        raise AssertionError("benchmark audit.json check failed: " + "; ".join(problems))
    _CHECKED[0] += 1
    return result.to_dict()


def audit_dict(frame: pd.DataFrame) -> dict:
    return checked(compute_audit(PredictionsTable.validate(frame), settings=SETTINGS))


def judged(gates, audit: dict, **options):
    """The gates block for an audit's dict (the gates read the typed result)."""
    return evaluate_gates(gates, AuditResult.from_dict(audit), **options)


def race_groups(audit: dict) -> dict[str, dict]:
    return {g["key"]: g for g in audit["groupings"]["race"]["groups"]}


def ci(stat: dict) -> tuple[float, float]:
    return tuple(stat["ci"]) if stat and stat.get("ci") else (np.nan, np.nan)


# -- end-to-end tasks (run in worker processes) ---------------------------------------------------------------


def task_race_grid(n: int, p: float, reps: int, seed) -> dict:
    """Section 1b: five races of ``n`` faces, recalls around ``p``; coverage of each race's reported intervals."""
    rng = np.random.default_rng(seed)
    m = confusion_model(spread_recalls(p))
    truth = truths(np.full(K, 1 / K), m)
    vs_rest_truth = np.array([truth["recall"][k] - np.delete(truth["recall"], k).mean() for k in range(K)])
    hits = {k: [] for k in ("accuracy", "precision", "fpr", "selection_rate", "vs_rest", "balanced_accuracy",
                            "macro_f1")}
    mismatch = 0.0
    for _ in range(reps):
        frame = race_frame(np.full(K, n), m, rng)
        audit = audit_dict(frame)
        groups = race_groups(audit)
        cm = np.array(audit["overall"]["confusion"]["counts"])
        direct = class_rates(cm)
        for k, race in enumerate(RACES):
            metrics = groups[race]["metrics"]
            for name in ("accuracy", "precision", "fpr", "selection_rate"):
                lo, hi = ci(metrics[name])
                hits[name].append(covered(lo, hi, truth[name][k]))
                part = direct["recall" if name == "accuracy" else name]
                if not np.isnan(part[1][k]):
                    mismatch = max(mismatch, abs(lo - part[1][k]), abs(hi - part[2][k]))
            hits["vs_rest"].append(covered(*ci(groups[race]["vs_rest"]["accuracy"]), vs_rest_truth[k]))
        for name in ("balanced_accuracy", "macro_f1"):
            hits[name].append(covered(*ci(audit["overall"]["metrics"][name]), truth[name]))
    return {"hits": {k: np.array(v) for k, v in hits.items()}, "mismatch": mismatch}


def task_gap(sizes: tuple, accuracies: tuple, reps: int, seed) -> dict:
    """Section 2: disparities across the five race groups, end to end, and the ``gap <= 0.05`` gate."""
    rng = np.random.default_rng(seed)
    sizes = np.array(sizes)
    m = confusion_model(accuracies)
    truth = truths(sizes / sizes.sum(), m)
    rest = np.array([(np.delete(sizes * truth["recall"], k)).sum() / np.delete(sizes, k).sum() for k in range(K)])
    vs_rest_truth = truth["recall"] - rest
    gates, _ = parse_gates({"gates": [{"metric": "accuracy", "by": "race", "max_gap": 0.05}]})
    out = {f"{metric}_{kind}": [] for metric in ("accuracy", "precision", "fpr") for kind in ("gap", "difference",
                                                                                                "ratio")}
    out.update(vs_rest=[], gap_value=[], gate_fail=[], omnibus_reject=[], oracle_fail=[])
    for _ in range(reps):
        audit = audit_dict(race_frame(sizes, m, rng))
        disparities = audit["groupings"]["race"]["disparities"]
        for metric in ("accuracy", "precision", "fpr"):
            d, t = disparities[metric], truth[metric]
            index = {race: k for k, race in enumerate(RACES)}
            out[f"{metric}_gap"].append(covered(*ci(d["gap"]), t.max() - t.min()))
            out[f"{metric}_difference"].append(covered(*ci(d["difference"]), t[index[d["worst"]]] - t[index[d["best"]]]))
            out[f"{metric}_ratio"].append(covered(*ci(d["ratio"]), t.min() / t.max()))
        groups = race_groups(audit)
        out["vs_rest"] += [covered(*ci(groups[race]["vs_rest"]["accuracy"]), vs_rest_truth[k])
                           for k, race in enumerate(RACES)]
        out["gap_value"].append(disparities["accuracy"]["gap"]["value"])
        verdict = judged(gates, audit)["results"][0]["status"]
        out["gate_fail"].append(verdict == "fail")
        out["omnibus_reject"].append(disparities["accuracy"]["omnibus"]["p_value"] < 0.05)
        # Oracle: knows which pair carries the gap (the largest group, White, and the smallest, Others) and tests
        # only it, one-sided at 2.5 % (Newcombe's interval at 95 %, no multiplicity).
        a, b = (groups[race]["metrics"]["accuracy"] for race in (RACES[0], RACES[-1]))
        parts = [intervals.proportion(round(m["value"] * size), size) for m, size in ((a, sizes[0]), (b, sizes[-1]))]
        out["oracle_fail"].append(float(intervals.mover_difference(*parts)[1]) > 0.05)
    return {k: np.array(v) for k, v in out.items()}


def task_min_gate(n: int, truth: float, threshold: float, reps: int, seed) -> dict:
    """Section 3: every race truly at ``truth``; how often the ``min accuracy`` gate passes a race, end to end."""
    rng = np.random.default_rng(seed)
    m = confusion_model(np.full(K, truth))
    gates, _ = parse_gates({"gates": [{"metric": "accuracy", "by": "race", "min": threshold}]})
    passes = []
    for _ in range(reps):
        result = judged(gates, audit_dict(race_frame(np.full(K, n), m, rng)))["results"][0]
        passes += [g["status"] == "pass" for g in result["groups"]]
    return {"pass": np.array(passes)}


def task_paired(n: int, agree: float, reps: int, seed) -> dict:
    """Section 4: two equally good models on the same ``n`` faces; verdicts of ``paired_family``.

    ``agree`` is the chance that model b simply repeats model a's answer on a face (0: independent errors);
    otherwise b answers afresh with the same per-face accuracy, so both models are equally good.
    """
    rng = np.random.default_rng(seed)
    out = {"worse": [], "better": [], "family": []}
    for _ in range(reps):
        race, gender, band = population(n, rng)
        slices = paired_slices(race, gender, band)
        accuracy = RACE_ACCURACY[race]
        a = rng.random(n) < accuracy
        fresh = rng.random(n) < accuracy
        b = np.where(rng.random(n) < agree, a, fresh)
        verdicts = paired_family(a, b, slices)["verdict"].to_numpy()
        out["worse"].append((verdicts == "worse").any())
        out["better"].append((verdicts == "better").any())
        out["family"].append(sum(not s.too_small for s in slices))
    return {k: np.array(v) for k, v in out.items()}


#: Per-race accuracy of both models in section 4 (Others hardest, as in UTKFace).
RACE_ACCURACY = np.array([0.92, 0.90, 0.88, 0.86, 0.65])
#: Age distribution of section 4 over the default age bands (UTKFace-like: many 20-39-year-olds).
BAND_SHARES = np.array([0.08, 0.07, 0.07, 0.30, 0.18, 0.10, 0.09, 0.07, 0.04])


def population(n: int, rng: np.random.Generator):
    """Race, gender and age band codes of ``n`` faces."""
    bands = AgeBands.parse()
    band = rng.choice(len(bands.labels), size=n, p=BAND_SHARES)
    return rng.choice(K, size=n, p=SHARES), rng.integers(0, len(GENDERS), size=n), band


def paired_slices(race, gender, band) -> list[Slice]:
    """Overall, each race, each gender, each age band and each race × gender; too small below 30 faces."""
    labels = AgeBands.parse().labels
    slices = [Slice("overall", "all", np.ones(len(race), dtype=bool))]
    masks = [("race", RACES[k], race == k) for k in range(K)]
    masks += [("gender", GENDERS[g], gender == g) for g in range(len(GENDERS))]
    masks += [("age_band", labels[b], band == b) for b in range(len(labels))]
    masks += [("race×gender", f"{RACES[k]} × {GENDERS[g]}", (race == k) & (gender == g))
              for k in range(K) for g in range(len(GENDERS))]
    return slices + [Slice(grouping, key, mask, too_small=int(mask.sum()) < 30) for grouping, key, mask in masks]


def audited(frame: pd.DataFrame, source: str, settings: AuditSettings = CALIBRATION_SETTINGS) -> dict:
    """``compute_audit`` of the rows (``rows``), or of their cell statistics merged from three shards (``cells``:
    what a streamed audit of a table too large to keep computes from)."""
    table = PredictionsTable.validate(frame)
    if source == "rows":
        return checked(compute_audit(table, settings=settings))
    shards = [table.subset(np.isin(np.arange(len(table)), rows)) for rows in np.array_split(np.arange(len(table)), 3)]
    cells = CellStatistics.of(shards[0]) + CellStatistics.of(shards[1]) + CellStatistics.of(shards[2])
    return checked(compute_audit(cells, settings=settings))


def task_ece(per_group: int, model: str, reps: int, seed, source: str = "rows") -> dict:
    """Section 5, end to end: five races of ``per_group`` faces with probabilities; calibration intervals and gate."""
    rng = np.random.default_rng(seed)
    f = CALIBRATION_MODELS[model]
    gates, _ = parse_gates({"gates": [{"metric": "ece", "by": "race", "max": 0.05}]})
    truth_brier, truth_log_loss = population_losses(f)
    out = {k: [] for k in ("ece", "mce", "brier", "log_loss", "ece_gap", "gate_fail_group", "gate_fail")}
    for _ in range(reps):
        frame, confidence, accuracy = probability_frame(np.full(K, per_group), f, rng)
        audit = audited(frame, source)
        race = np.repeat(np.arange(K), per_group)
        true_ece = binned_ece(confidence, accuracy, race, K)
        true_mce = binned_mce(confidence, accuracy, race, K)
        records = {g["key"]: g for g in audit["calibration"]["groupings"]["race"]}
        for k, name in enumerate(RACES):
            g = records[name]
            out["ece"].append(covered(*ci(g["ece"]), true_ece[k]))
            out["mce"].append(covered(*ci(g["mce"]), true_mce[k]))
            out["brier"].append(covered(*ci(g["brier"]), truth_brier))
            out["log_loss"].append(covered(*ci(g["log_loss"]), truth_log_loss))
        gap = audit["calibration"]["disparities"]["race"]["ece"]["gap"]
        out["ece_gap"].append(covered(*ci(gap), true_ece.max() - true_ece.min()))
        result = judged(gates, audit)["results"][0]
        out["gate_fail_group"] += [g["status"] == "fail" for g in result["groups"]]
        out["gate_fail"].append(result["status"] == "fail")
    return {k: np.array(v) for k, v in out.items()}


# -- age regressors (section 6) -------------------------------------------------------------------------------

#: UTKFace-like true ages: children, young adults (most), middle-aged, old.
AGE_SPANS = ((0, 17), (18, 39), (40, 64), (65, 100))
AGE_SHARES = np.array([0.15, 0.45, 0.30, 0.10])
#: Share of gross errors and how much larger their scale is (heavy tails).
GROSS_SHARE, GROSS_SCALE = 0.05, 4.0
#: Each race's bias in years in the coverage cells (White, Black, Asian, Indian, Others): Black made older, Others
#: younger.
AGE_BIASES = np.array([0.0, 3.0, -1.0, 0.0, -2.0])
AGE_SIZES = (20, 60, 200, 1000)
AGE_GATE = {"metric": "mae", "by": "race", "max_gap": 1.0}


def draw_ages(n: int, rng: np.random.Generator) -> np.ndarray:
    span = rng.choice(len(AGE_SPANS), size=n, p=AGE_SHARES)
    low, high = np.array([s[0] for s in AGE_SPANS]), np.array([s[1] for s in AGE_SPANS])
    return rng.integers(low[span], high[span] + 1)


def draw_age_errors(ages: np.ndarray, bias, scale, rng: np.random.Generator) -> np.ndarray:
    """Predicted − true age: ``bias`` + Laplace noise of sd ``scale * (2 + 0.1 * age)`` years, 5 % of it four
    times larger."""
    z = rng.laplace(0, 1 / np.sqrt(2), len(ages)) * np.where(rng.random(len(ages)) < GROSS_SHARE, GROSS_SCALE, 1.0)
    return bias + scale * (2 + 0.1 * ages) * z


_AGE_TRUTHS: dict = {}


def age_truths(biases, scales) -> dict[str, np.ndarray]:
    """Each race's population MAE, bias and share within ±5 years (Monte Carlo, 2M faces each: SE < 0.005 years)."""
    key = (tuple(biases), tuple(scales))
    if key not in _AGE_TRUTHS:
        rng = np.random.default_rng(12345)
        out = {"mae": [], "bias": [], "within5": []}
        for bias, scale in zip(biases, scales):
            e = draw_age_errors(draw_ages(2_000_000, rng), bias, scale, rng)
            out["mae"].append(np.abs(e).mean())
            out["bias"].append(bias)
            out["within5"].append((np.abs(e) <= 5).mean())
        _AGE_TRUTHS[key] = {k: np.array(v) for k, v in out.items()}
    return _AGE_TRUTHS[key]


def age_audit(n: int, biases, scales, rng: np.random.Generator) -> dict:
    from faceaudit.auditing.regression import compute_regression_audit

    ages = draw_ages(K * n, rng)
    race = np.repeat(np.arange(K), n)
    pred = ages + draw_age_errors(ages, np.asarray(biases)[race], np.asarray(scales)[race], rng)
    frame = pd.DataFrame({"image_id": np.arange(K * n).astype(str), "race": RACE_NAMES[race], "gender": "Male",
                          "age": ages, "pred_age": pred})
    table = PredictionsTable.validate(frame, target="age", groups=("race",))
    return checked(compute_regression_audit(table, settings=AGE_SETTINGS))


#: Section 6 judges the bootstrap-t part of the MAE interval, so it uses the audit's default number of resamples;
#: groups of 20 are ranked and 100 faces judged (defaults 30 and 150) so that the gap and the gate are measured at
#: the smallest size too.
AGE_SETTINGS = AuditSettings(tsne=False, n_boot=DEFAULT_N_BOOT, min_group_size=20, min_test_size=0)


def task_age(n: int, reps: int, seed) -> dict:
    """Section 6: coverage and width of each race's MAE, bias and within-5 intervals (biases AGE_BIASES)."""
    rng = np.random.default_rng(seed)
    truth = age_truths(AGE_BIASES, np.ones(K))
    out = {f"{m}_{k}": [] for m in ("mae", "bias", "within5") for k in ("hit", "width")}
    for _ in range(reps):
        groups = race_groups(age_audit(n, AGE_BIASES, np.ones(K), rng))
        for k, race in enumerate(RACES):
            for metric in ("mae", "bias", "within5"):
                lo, hi = ci(groups[race]["metrics"][metric])
                out[f"{metric}_hit"].append(covered(lo, hi, truth[metric][k]))
                out[f"{metric}_width"].append(hi - lo)
    return {k: np.array(v) for k, v in out.items()}


def task_age_gap(n: int, gap: float, reps: int, seed) -> dict:
    """Section 6: every race unbiased, Others' errors scaled so its MAE is ``gap`` years above the others'; the
    MAE gap interval and the ``mae max_gap 1`` gate."""
    rng = np.random.default_rng(seed)
    base = age_truths(np.zeros(K), np.ones(K))["mae"][0]
    scales = np.ones(K)
    scales[-1] = 1 + gap / base
    truth = age_truths(np.zeros(K), scales)["mae"]
    gates, _ = parse_gates({"gates": [AGE_GATE]})
    out = {"gap_hit": [], "gap_width": [], "fail": []}
    for _ in range(reps):
        audit = age_audit(n, np.zeros(K), scales, rng)
        gap_stat = audit["groupings"]["race"]["disparities"]["mae"]["gap"]
        lo, hi = ci(gap_stat)
        out["gap_hit"].append(covered(lo, hi, truth.max() - truth.min()))
        out["gap_width"].append(hi - lo)
        out["fail"].append(judged(gates, audit)["results"][0]["status"] == "fail")
    return {k: np.array(v) for k, v in out.items()}


# -- decisive verdicts (section 7, issue 22) ---------------------------------------------------------------------

#: UTKFace-sized test set (about 2,100 images) in UTKFace's race mix.
UTK_TEST = 2100
#: The power cell of section 7b: group sizes, and a 10-point gap carried by the smallest group (Others).
POWER_SIZES = (1000, 450, 340, 390, 160)
POWER_ACCURACIES = {0.0: (0.90,) * 5, 0.10: (0.90, 0.90, 0.90, 0.90, 0.80)}


def mixed_frame(n: int, accuracy, rng: np.random.Generator, shares=SHARES, f=None) -> pd.DataFrame:
    """A predictions table with races in ``shares``, random genders and UTKFace-like ages; with ``f`` (true accuracy
    at confidence, per race), class probabilities too, else each race right with probability ``accuracy[race]``."""
    true = rng.choice(K, size=n, p=np.asarray(shares) / np.sum(shares))
    frame = pd.DataFrame({"image_id": np.arange(n).astype(str), "race": RACE_NAMES[true],
                          "gender": np.array(GENDERS)[rng.integers(0, 2, n)], "age": draw_ages(n, rng)})
    if f is None:
        right = rng.random(n) < np.asarray(accuracy)[true]
        wrong = (true + rng.integers(1, K, size=n)) % K
        frame["pred_race"] = RACE_NAMES[np.where(right, true, wrong)]
        return frame
    confidence = draw_confidence(n, rng)
    right = rng.random(n) < np.clip([f[k](c) for k, c in zip(true, confidence)], 0, 1)
    top = np.where(right, true, (true + rng.integers(1, K, size=n)) % K)
    probs = np.repeat(((1 - confidence) / (K - 1))[:, None], K, axis=1)
    probs[np.arange(n), top] = confidence
    for i, column in enumerate(PROB_COLUMNS):
        frame[column] = probs[:, i]
    return frame


def _flagged(audit: dict) -> bool:
    """Whether any race, gender or age-band group is flagged against the rest (Holm and the interval agree)."""
    from faceaudit.auditing.report.formatting import significant

    return any(significant((g.get("vs_rest") or {}).get("accuracy"))
               for name in ("race", "gender", "age_band") for g in audit["groupings"][name]["groups"]
               if not g["too_small"])


def task_global_null(n: int, reps: int, seed) -> dict:
    """7c: every group equally accurate; is any race, gender or age-band group flagged?"""
    rng = np.random.default_rng(seed)
    return {"flagged": np.array([_flagged(audit_dict(mixed_frame(n, np.full(K, 0.85), rng))) for _ in range(reps)])}


def task_min_at_threshold(n: int, threshold: float, by: str, reps: int, seed) -> dict:
    """7d: every group exactly at the threshold of a min-accuracy gate; how often does the gate fail?"""
    rng = np.random.default_rng(seed)
    gates, _ = parse_gates({"gates": [{"metric": "accuracy", "by": by, "min": threshold}]})
    fails = []
    for _ in range(reps):
        frame = mixed_frame(n, np.full(K, threshold), rng, shares=np.ones(K))
        fails.append(judged(gates, audit_dict(frame))["results"][0]["status"] == "fail")
    return {"fail": np.array(fails)}


def task_ece_sharp(per_group: int, model: str, reps: int, seed) -> dict:
    """7a: each race's ECE estimate, interval width, coverage and whether it excludes 0.02."""
    rng = np.random.default_rng(seed)
    f = CALIBRATION_MODELS[model]
    out = {k: [] for k in ("estimate", "width", "covered", "excludes", "oracle")}
    z = stats.norm.ppf(0.975)
    for _ in range(reps):
        frame, confidence, accuracy = probability_frame(np.full(K, per_group), f, rng)
        audit = audited(frame, "rows")
        race = np.repeat(np.arange(K), per_group)
        truth = binned_ece(confidence, accuracy, race, K)
        right = frame[list(PROB_COLUMNS)].to_numpy().argmax(axis=1) == race
        records = {g["key"]: g for g in audit["calibration"]["groupings"]["race"]}
        for k, name in enumerate(RACES):
            e = records[name]["ece"]
            lo, hi = ci(e)
            out["estimate"].append(e["value"])
            out["width"].append(hi - lo)
            out["covered"].append(covered(lo, hi, truth[k]))
            out["excludes"].append(lo > 0.02)
            # Oracle: knows every bin errs on the overconfident side and each face's true accuracy, so it bounds
            # the ECE by mean(confidence - correct) with its exact standard error (one-sided, 2.5 %).
            mine = race == k
            spread = np.sqrt((accuracy[mine] * (1 - accuracy[mine])).sum()) / per_group
            out["oracle"].append((confidence[mine] - right[mine]).mean() - z * spread > 0.02)
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def task_default_gates(gap: float, reps: int, seed) -> dict:
    """7e: the shipped gates file on UTKFace-sized audits of a fair calibrated model (``gap`` 0) or one whose Black
    faces are ``gap`` less often right at every confidence."""
    from faceaudit.auditing.gates import load_gates

    rng = np.random.default_rng(seed)
    gates, _ = load_gates(Path(__file__).resolve().parent.parent / "faceaudit" / "gates.toml")
    fair = CALIBRATION_MODELS["calibrated"]
    f = [fair, lambda c: c - gap, fair, fair, fair]
    status, inconclusive = [], []
    for _ in range(reps):
        block = judged(gates, audited(mixed_frame(UTK_TEST, None, rng, f=f), "rows", SETTINGS), inconclusive="pass")
        status.append(block["status"])
        inconclusive.append([r["name"] for r in block["results"] if r["status"] == "inconclusive"])
    return {"pass": np.array([x == "pass" for x in status]), "fail": np.array([x == "fail" for x in status]),
            "inconclusive_names": np.array(["; ".join(x) for x in inconclusive], dtype=object)}


#: 7f planner cells: the gate, and the rates the planner is given (the truth of the simulated audits).
PLANNER_CELLS = {
    "accuracy min 0.80 by race, every race 0.85": ({"metric": "accuracy", "by": "race", "min": 0.80}, "min"),
    "max_gap 0.05 by race, 10-point gap, 1,000/450/340/390/160 mix": (
        {"metric": "accuracy", "by": "race", "max_gap": 0.05}, "gap_fail"),
    "max_gap 0.10 by race, no gap, equal sizes": ({"metric": "accuracy", "by": "race", "max_gap": 0.10}, "gap_pass"),
    "ece max 0.05 by race, calibrated": ({"metric": "ece", "by": "race", "max": 0.05}, "ece"),
    "ece max 0.05 by race, calibrated, plan --from a 200-per-race pilot audit": (
        {"metric": "ece", "by": "race", "max": 0.05}, "ece_from"),
}
#: Faces per race of the pilot audit that the ``ece_from`` planner cell plans from.
PILOT = 200


def planned_sizes(kind: str, gate: dict) -> np.ndarray:
    """The per-race sizes :mod:`faceaudit.auditing.planner` asks for (what ``faceaudit plan`` prints)."""
    from faceaudit.auditing.planner import plan, plan_gap

    gates, _ = parse_gates({"gates": [gate]})
    if kind == "gap_fail":  # planned at the observed rates and mix (plan --from): the smallest group's size
        k = plan_gap(POWER_ACCURACIES[0.10], POWER_SIZES, 0.05, "max_gap")
        return np.ceil(k * np.asarray(POWER_SIZES) / min(POWER_SIZES)).astype(int)
    rates = {"accuracy": 0.85} if kind in ("min", "gap_pass") else {"ece": 0.0, "accuracy": 0.823}  # mean confidence of section 5
    needs = plan(gates, None, rates=rates)[0]["needs"]
    return np.full(K, max(row["needs"] for row in needs))


def task_planner(label: str, reps: int, seed) -> dict:
    """7f: audits at the planned sizes; how often is the gate decisive (pass or fail)?"""
    from faceaudit.auditing.planner import plan

    gate, kind = PLANNER_CELLS[label]
    rng = np.random.default_rng(seed)
    gates, _ = parse_gates({"gates": [gate]})
    sizes = planned_sizes(kind, gate) if kind != "ece_from" else None
    decisive, planned = [], []
    for _ in range(reps):
        if kind == "ece_from":  # plan from a pilot audit (faceaudit plan --from), then audit at the planned sizes
            calibrated = CALIBRATION_MODELS["calibrated"]
            pilot = audited(probability_frame(np.full(K, PILOT), calibrated, rng)[0], "rows", SETTINGS)
            needs = {row["group"]: row["needs"] for row in plan(gates, AuditResult.from_dict(pilot))[0]["needs"]}
            sizes = np.array([needs.get(race) or PILOT for race in RACES])
            planned.append(sizes)
            audit = audited(probability_frame(sizes, calibrated, rng)[0], "rows", SETTINGS)
        elif kind == "ece":
            audit = audited(probability_frame(sizes, CALIBRATION_MODELS["calibrated"], rng)[0], "rows", SETTINGS)
        else:
            accuracies = POWER_ACCURACIES[0.10] if kind == "gap_fail" else np.full(K, 0.85)
            audit = audit_dict(race_frame(sizes, confusion_model(accuracies), rng))
        decisive.append(judged(gates, audit)["results"][0]["status"] != "inconclusive")
    return {"decisive": np.array(decisive), "sizes": np.concatenate(planned) if planned else sizes}


TASKS = {"race_grid": task_race_grid, "gap": task_gap, "min_gate": task_min_gate, "paired": task_paired,
         "ece": task_ece, "ece_cells": lambda n, model, reps, seed: task_ece(n, model, reps, seed, "cells"),
         "age": task_age, "age_gap": task_age_gap, "global_null": task_global_null,
         "min_at_threshold": task_min_at_threshold, "ece_sharp": task_ece_sharp, "default_gates": task_default_gates,
         "planner": task_planner}


def run_task(name: str, args: tuple, reps: int, seed) -> dict:
    _CHECKED[0] = 0
    out = TASKS[name](*args, reps, seed)
    return {**out, "_audits_checked": np.array([_CHECKED[0]])}


#: audit.json texts checked over the whole run (summed as cells' results are read).
AUDITS_CHECKED = [0]


class Pool:
    """Cells of end-to-end work, each split into chunks across worker processes, merged in submission order."""

    def __init__(self, workers: int, seed: int):
        self.executor = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
        self.workers, self.seed, self.count = max(workers, 1), seed, 0

    def submit(self, name: str, args: tuple, reps: int):
        self.count += 1
        chunks = [c for c in np.array_split(np.arange(reps), self.workers) if len(c)]
        futures = []
        for i, chunk in enumerate(chunks):
            seed = [self.seed, self.count, i]
            if self.executor is None:
                futures.append(run_task(name, args, len(chunk), seed))
            else:
                futures.append(self.executor.submit(run_task, name, args, len(chunk), seed))
        return futures

    @staticmethod
    def result(futures) -> dict:
        parts = [f if isinstance(f, dict) else f.result() for f in futures]
        out = {}
        for key in parts[0]:
            values = [p[key] for p in parts]
            if isinstance(values[0], dict):
                out[key] = {k: np.concatenate([v[k] for v in values]) for k in values[0]}
            elif isinstance(values[0], np.ndarray):
                out[key] = np.concatenate(values)
            else:
                out[key] = max(values)
        AUDITS_CHECKED[0] += int(out.pop("_audits_checked", np.zeros(1)).sum())
        return out


# -- calibration truths ---------------------------------------------------------------------------------------

#: True accuracy at top-label confidence c: calibrated, and overconfident (true binned ECE about 0.07).
CALIBRATION_MODELS = {"calibrated": lambda c: c, "overconfident": lambda c: c ** 1.5}
#: Top-label confidence is 0.25 + 0.745 * Beta(4, 1.2): mostly confident, never a tie with the other classes.
CONF_LOW, CONF_SPAN, CONF_A, CONF_B = 0.25, 0.745, 4.0, 1.2


def draw_confidence(shape, rng: np.random.Generator) -> np.ndarray:
    return CONF_LOW + CONF_SPAN * rng.beta(CONF_A, CONF_B, size=shape)


def probability_frame(sizes, f, rng: np.random.Generator):
    """A predictions table with probabilities: the top class is right with probability f(confidence); the other
    four classes share the rest equally. Returns the frame, the confidences and each face's true accuracy."""
    true = np.repeat(np.arange(K), sizes)
    n = len(true)
    confidence = draw_confidence(n, rng)
    accuracy = f(confidence)
    right = rng.random(n) < accuracy
    wrong = (true + rng.integers(1, K, size=n)) % K
    top = np.where(right, true, wrong)
    probs = np.repeat(((1 - confidence) / (K - 1))[:, None], K, axis=1)
    probs[np.arange(n), top] = confidence
    frame = pd.DataFrame({"image_id": np.arange(n).astype(str), "race": RACE_NAMES[true], "gender": "Male",
                          "age": 30})
    for i, column in enumerate(PROB_COLUMNS):
        frame[column] = probs[:, i]
    return frame, confidence, accuracy


def population_losses(f) -> tuple[float, float]:
    """Population mean multiclass Brier score and log loss of the simulated model (numerical integration)."""
    def density(c):
        return stats.beta.pdf((c - CONF_LOW) / CONF_SPAN, CONF_A, CONF_B) / CONF_SPAN

    def brier(c):
        rest = (1 - c) / (K - 1)
        p_true = f(c) * c + (1 - f(c)) * rest
        return (c ** 2 + (K - 1) * rest ** 2 - 2 * p_true + 1) * density(c)

    def log_loss(c):
        return -(f(c) * np.log(c) + (1 - f(c)) * np.log((1 - c) / (K - 1))) * density(c)

    span = (CONF_LOW, CONF_LOW + CONF_SPAN)
    return integrate.quad(brier, *span, limit=200)[0], integrate.quad(log_loss, *span, limit=200)[0]


def bin_sums(confidence: np.ndarray, values: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Per-group, per-bin sums ``[groups, ECE_BINS]`` of ``values`` (engine binning)."""
    index = group * ECE_BINS + confidence_bins(confidence, ECE_BINS)
    return np.bincount(index, weights=values, minlength=groups * ECE_BINS).reshape(groups, ECE_BINS)


def binned_ece(confidence, accuracy, group, groups: int) -> np.ndarray:
    """True binned ECE given the drawn confidences: sum_b w_b |mean f(c) - mean c| over each group's bins."""
    gap = np.abs(bin_sums(confidence, accuracy, group, groups) - bin_sums(confidence, confidence, group, groups))
    return gap.sum(axis=1) / np.bincount(group, minlength=groups)


def binned_mce(confidence, accuracy, group, groups: int) -> np.ndarray:
    """True binned MCE given the drawn confidences: the largest |mean f(c) - mean c| over non-empty bins."""
    count = bin_sums(confidence, np.ones_like(confidence), group, groups)
    gap = np.abs(bin_sums(confidence, accuracy, group, groups) - bin_sums(confidence, confidence, group, groups))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, gap / np.where(count > 0, count, 1), 0.0).max(axis=1)


# -- reporting ------------------------------------------------------------------------------------------------

FAILURES: list[str] = []
#: Figures on the wrong side of their target but within 2 Monte Carlo standard errors of it (not failures).
NEAR_MISSES: list[str] = []
#: A figure fails only when it misses its target by more than this many Monte Carlo standard errors.
MC_ALLOWANCE = 2.0


def rate(hits) -> tuple[float, float, int]:
    """Share of True, its Monte Carlo standard error, and the number of trials."""
    hits = np.asarray(hits, dtype=float)
    n = len(hits)
    share = float(hits.mean()) if n else float("nan")
    return share, float(np.sqrt(share * (1 - share) / n)) if n else float("nan"), n


def fmt(share: float, se: float) -> str:
    return f"{share:.3f}±{se:.3f}"


def mark(label: str, share: float, se: float, target: float, at_least: bool) -> str:
    """``""`` when the target is met, ``"~"`` when missed within Monte Carlo error, ``"!"`` when failed."""
    miss = (target - share) if at_least else (share - target)
    sign = ">=" if at_least else "<="
    if not miss > 0:
        return ""
    line = f"{label}: {share:.3f} ± {se:.3f} ({sign} {target} wanted)"
    if miss > MC_ALLOWANCE * se:
        FAILURES.append(line)
        return "!"
    NEAR_MISSES.append(line)
    return "~"


def status(marks) -> str:
    return "FAIL" if "!" in marks else "PASS"


def judge(label: str, hits, target: float, at_least: bool) -> str:
    share, se, _ = hits
    return status([mark(label, share, se, target, at_least)])


def coverage_row(prefix: str, label: str, columns: dict[str, np.ndarray], width: int = 13) -> str:
    """One table row of coverages with ±SE; FAIL when any figure is below the target beyond Monte Carlo error."""
    cells, marks = [], []
    for name, hits in columns.items():
        share, se, _ = rate(hits)
        marks.append(mark(f"{label} {name} coverage", share, se, COVERAGE_TARGET, True))
        cells.append(f"{fmt(share, se) + (marks[-1] or ' '):>{width}s}")
    return prefix + "".join(cells) + f"  {status(marks)}"


def header(prefix: str, names, width: int = 13) -> str:
    return prefix + "".join(f"{n:>{width}s}" for n in names) + "  target >= 0.93"


# -- sections -------------------------------------------------------------------------------------------------


def section_1a(draws: int, rng: np.random.Generator) -> None:
    print(f"\n1a. Per-group intervals, product interval functions called directly ({draws:,} draws per cell)")
    print("    accuracy: proportion() for a group at true accuracy p (Clopper–Pearson)")
    print("    recall ... selection: class_rates() on five races of n faces each, recalls 1 - (1-p) * [1, .5, .75, 1.25,"
          " 1.5] (White p, mean p), pooled over the races")
    print("    bal.acc, macro-F1: mixed_metrics() on a mixed-class group of n faces drawn with UTKFace-like class shares"
          " .42/.19/.15/.17/.07, same confusion probabilities (true balanced accuracy p); F1 equal: macro-F1 of such"
          " a group with five equal class shares")
    names = ("accuracy", "recall", "precision", "fpr", "selection", "bal.acc", "macro-F1", "F1 equal")
    print(header("       n     p", names))
    absent = {}
    for n in SIZES:
        for p in ACCURACIES:
            x = rng.binomial(n, p, size=draws)
            _, lo, hi = intervals.proportion(x, n)
            columns = {"accuracy": covered(lo, hi, p)}
            m = confusion_model(spread_recalls(p))
            t = truths(np.full(K, 1 / K), m)
            cm = np.stack([rng.multinomial(n, m[k], size=draws) for k in range(K)], axis=1)
            rates = class_rates(cm)
            for name, key in (("recall", "recall"), ("precision", "precision"), ("fpr", "fpr"),
                              ("selection", "selection_rate")):
                est, lo, hi = rates[key]
                columns[name] = covered(lo, hi, t[key][None, :])[~np.isnan(est)]
            joint = SHARES[:, None] * m
            cm = rng.multinomial(n, joint.ravel(), size=draws).reshape(draws, K, K)
            t = truths(SHARES, m)
            mixed = mixed_metrics(cm)
            columns["bal.acc"] = covered(*mixed["balanced_accuracy"][1:], t["balanced_accuracy"])
            columns["macro-F1"] = covered(*mixed["macro_f1"][1:], t["macro_f1"])
            absent[(n, p)] = float((cm.sum(axis=2) == 0).any(axis=1).mean())
            equal = np.full(K, 1 / K)
            cm = rng.multinomial(n, (equal[:, None] * m).ravel(), size=draws).reshape(draws, K, K)
            columns["F1 equal"] = covered(*mixed_metrics(cm)["macro_f1"][1:], truths(equal, m)["macro_f1"])
            print(coverage_row(f"    {n:4d}  {p:4.2f}", f"1a n={n} p={p}", columns))
    shown = ", ".join(f"n={n}: {absent[(n, 0.9)]:.0%}" for n in SIZES)
    print(f"    (a class is absent from the mixed group in {shown} of draws; its balanced accuracy and macro-F1 then "
          "average the classes present, the truth all five)")


def submit_all(pool: Pool, reps: int) -> dict:
    """Every end-to-end cell, submitted at once so the workers run while the direct sections compute."""
    return {
        "1b": {(n, p): pool.submit("race_grid", (n, p), reps) for n in SIZES for p in ACCURACIES},
        "2": {(label, gap): pool.submit("gap", (sizes, GAP_ACCURACIES[gap]), reps)
              for label, sizes in GAP_SIZES.items() for gap in GAP_ACCURACIES},
        "3": {case: pool.submit("min_gate", case, reps) for case in MIN_GATE_E2E},
        "4": {case: pool.submit("paired", case, 5 * reps) for case in PAIRED_CASES},
        "5b": {(n, model): pool.submit("ece", (n, model), 2 * reps) for n in ECE_E2E_SIZES
               for model in CALIBRATION_MODELS},
        "5c": {(n, model): pool.submit("ece_cells", (n, model), 2 * reps) for n in ECE_E2E_SIZES
               for model in CALIBRATION_MODELS},
    }


def section_1b(pool: Pool, futures: dict, reps: int) -> None:
    print(f"\n1b. The same, end to end: compute_audit on five races of n faces each ({reps} audits per cell; "
          "race figures pooled over the five races)")
    print("    accuracy ... selection: each race's reported intervals; vs-rest: its difference from the rest "
          "(Bonferroni over ranked races); bal.acc, macro-F1: the overall group (five equal classes)")
    names = ("accuracy", "precision", "fpr", "selection", "vs-rest", "bal.acc", "macro-F1")
    print(header("       n     p", names))
    mismatch = 0.0
    for (n, p), f in futures.items():
        out = pool.result(f)
        hits = out["hits"]
        mismatch = max(mismatch, out["mismatch"])
        columns = dict(zip(names, (hits["accuracy"], hits["precision"], hits["fpr"], hits["selection_rate"],
                                   hits["vs_rest"], hits["balanced_accuracy"], hits["macro_f1"])))
        print(coverage_row(f"    {n:4d}  {p:4.2f}", f"1b n={n} p={p}", columns))
    ok = mismatch <= 1e-6
    if not ok:
        FAILURES.append(f"1b engine intervals differ from class_rates by {mismatch:.2e}")
    print(f"    engine race intervals vs class_rates on the same counts: max |difference| {mismatch:.1e}  "
          f"target <= 1e-6 (6-decimal rounding)  {'PASS' if ok else 'FAIL'}")


GAP_SIZES = {"40 each": (40,) * 5, "200 each": (200,) * 5, "900/400/300/350/150": (900, 400, 300, 350, 150),
             "120/60/45/40/35": (120, 60, 45, 40, 35)}
GAP_ACCURACIES = {0.0: (0.90,) * 5, 0.03: (0.90, 0.88, 0.91, 0.89, 0.90)}


def section_2(pool: Pool, futures: dict, reps: int) -> None:
    print(f"\n2. Disparities across the five race groups, end to end ({reps} audits per row)")
    print("   true accuracies: gap 0: all 0.90; gap 0.03: .90/.88/.91/.89/.90 (White/Black/Asian/Indian/Others); "
          "the difference's truth is that of the worst minus the best group the audit picked")
    names = ("acc gap", "acc w-b", "acc ratio", "prec gap", "prec w-b", "fpr gap", "fpr w-b", "vs-rest")
    print(header(f"   {'sizes':22s}{'gap':>5s}", names))
    results = {}
    for (label, gap), f in futures.items():
        out = results[(label, gap)] = pool.result(f)
        columns = dict(zip(names, (out["accuracy_gap"], out["accuracy_difference"], out["accuracy_ratio"],
                                   out["precision_gap"], out["precision_difference"], out["fpr_gap"],
                                   out["fpr_difference"], out["vs_rest"])))
        print(coverage_row(f"   {label:22s}{gap:5.2f}", f"2 {label} gap={gap}", columns))
    lowest = min(min(rate(results[k][f"{m}_ratio"])[0] for m in ("precision", "fpr")) for k in results)
    print(f"   (precision and FPR ratio intervals, not gated here: lowest coverage {lowest:.3f})")
    print(f"\n   {'sizes':22s}{'gap':>5s}{'mean est. gap':>15s}{'gap<=0.05 gate FAILS':>23s}{'target':>9s}"
          f"{'omnibus p<.05 (info)':>23s}")
    for (label, gap), out in results.items():
        fail, se, _ = rate(out["gate_fail"])
        reject, rse, _ = rate(out["omnibus_reject"])
        verdict = judge(f"2 {label} gap={gap} gap<=0.05 gate false fail", (fail, se, 0), 0.05, at_least=False)
        print(f"   {label:22s}{gap:5.2f}{np.mean(out['gap_value']):15.4f}{fmt(fail, se):>23s}{'<= 0.05':>9s}"
              f"{fmt(reject, rse):>23s}  {verdict}")


MIN_GATE_E2E = [(30, 0.93, 0.95), (30, 0.945, 0.95), (100, 0.945, 0.95), (300, 0.945, 0.95), (1000, 0.945, 0.95)]


def section_3(pool: Pool, futures: dict, reps: int, draws: int, rng: np.random.Generator) -> None:
    print("\n3. False passes of a 'min accuracy' gate when the truth is below the threshold (a race group passes "
          "when its lower bound >= threshold)")
    print(f"   {'n':>5s}{'truth':>7s}{'threshold':>11s}{f'direct ({draws:,})':>18s}"
          f"{f'end to end ({reps}x5)':>22s}   target")
    cases = [(30, 0.93, 0.95)] + [(n, th - 0.005, th) for th in (0.95, 0.80) for n in (30, 50, 100, 200, 300, 500, 1000)]
    for n, truth, threshold in cases:
        x = rng.binomial(n, truth, size=draws)
        _, lo, _ = intervals.proportion(x, n)
        label = f"3 n={n} truth={truth} threshold={threshold} false pass"
        direct = rate(lo >= threshold)
        marks = [mark(f"{label} (direct)", *direct[:2], 0.025, False)]
        shown = ""
        if (n, truth, threshold) in futures:
            end = rate(pool.result(futures[(n, truth, threshold)])["pass"])
            marks.append(mark(f"{label} (end to end)", *end[:2], 0.025, False))
            shown = fmt(*end[:2]) + (marks[-1] or " ")
        print(f"   {n:5d}{truth:7.3f}{threshold:11.2f}{fmt(*direct[:2]) + (marks[0] or ' '):>18s}{shown:>22s}"
              f"   <= 0.025  {status(marks)}")


PAIRED_CASES = [(600, 0.0), (2400, 0.0), (600, 0.9), (2400, 0.9)]


def section_4(pool: Pool, futures: dict, reps: int, rng: np.random.Generator) -> None:
    print(f"\n4. paired_family (faceaudit diff / compare) on two equally good models ({reps} comparisons per row)")
    print("   slices: overall, 5 races, 2 genders, 9 age bands, 10 race×gender (too small below 30); per-race "
          "accuracy .92/.90/.88/.86/.65 for both models")
    print(f"   {'faces':>6s}  {'errors':28s}{'family':>8s}{'any false worse':>18s}{'any false better':>18s}   target")
    for (n, agree), f in futures.items():
        out = pool.result(f)
        worse, se, _ = rate(out["worse"])
        better, bse, _ = rate(out["better"])
        errors = "independent" if agree == 0 else f"b repeats a on {agree:.0%} of faces"
        verdict = judge(f"4 n={n} {errors} family-wise false worse", (worse, se, 0), 0.05, at_least=False)
        print(f"   {n:6d}  {errors:28s}{np.mean(out['family']):8.1f}{fmt(worse, se):>18s}{fmt(better, bse):>18s}"
              f"   worse <= 0.05  {verdict}")
    race, gender, band = population(2400, rng)
    a = rng.random(2400) < RACE_ACCURACY[race]
    frame = paired_family(a, a.copy(), paired_slices(race, gender, band))
    judged = frame[~frame["too_small"]]
    width = (frame["diff_hi"] - frame["diff_lo"]).to_numpy()
    ok = bool((width > 0).all() and ((judged["diff_lo"] < 0) & (judged["diff_hi"] > 0)).all()
              and (judged["verdict"] == "no clear change").all())
    if not ok:
        FAILURES.append("4 paired interval collapses when the models never disagree")
    overall = frame.iloc[0]
    print(f"   models that never disagree (2,400 faces): every interval has positive width (narrowest "
          f"{width.min():.4f}, overall [{overall['diff_lo']:+.4f}, {overall['diff_hi']:+.4f}]), every verdict "
          f"'no clear change'  target: width > 0  {'PASS' if ok else 'FAIL'}")


#: Section 4c: each scenario's accuracy of model a per race (White, Black, Asian, Indian, Others) and what model b
#: loses per race; 1.0 puts a race at 100 % for both models (a change that is exactly 0).
EXCESS_SCENARIOS = {
    "equal loss 1 pt": (RACE_ACCURACY, np.full(K, 0.01)),
    "Others loses 6, Asian 3": (RACE_ACCURACY, np.array([0.0, 0.0, 0.03, 0.0, 0.06])),
    "White at 100 %, Others loses 6": (np.array([1.0, 0.90, 0.88, 0.86, 0.65]), np.array([0.0, 0.0, 0.0, 0.0, 0.06])),
}


def section_4c(reps: int, rng: np.random.Generator) -> None:
    """Coverage of the excess change (group change − whole-set change) that compare's "who pays" section shows."""
    print(f"\n   4c. excess change of each group over the whole set's (compare's \"who pays for the change\"), "
          f"{reps} comparisons per row; truth: the group's mean change in accuracy minus the whole set's, over the "
          "faces drawn; b repeats a's answer on 50 % of faces")
    print(f"   {'faces':>6s}  {'scenario':32s}{'per interval':>15s}{'all in family':>15s}{'flagged wrongly':>17s}"
          "   target")
    for n in (600, 2400):
        for name, (accuracy, loss) in EXCESS_SCENARIOS.items():
            each, family, wrong = [], [], []
            for _ in range(reps):
                race, gender, band = population(n, rng)
                slices = paired_slices(race, gender, band)
                p_a = accuracy[race]
                p_b = 0.5 * p_a + 0.5 * (p_a - loss[race])  # b repeats a on half the faces, else answers afresh
                a = rng.random(n) < p_a
                b = np.where(rng.random(n) < 0.5, a, rng.random(n) < (p_a - loss[race]))
                frame = excess_family(a, b, slices)
                judged = ~frame["too_small"].to_numpy()
                masks = [sl.mask for sl in slices if sl.grouping != "overall"]
                truth = np.array([(p_b - p_a)[m].mean() for m in masks]) - (p_b - p_a).mean()
                hit = covered(frame["excess_lo"], frame["excess_hi"], truth)[judged]
                each.extend(hit)
                family.append(hit.all())
                flagged = (frame["verdict"] == "loses more than the whole set").to_numpy()[judged]
                wrong.append((flagged & (truth[judged] >= 0)).any())
            per, per_se, _ = rate(each)
            fam, fam_se, _ = rate(family)
            bad, bad_se, _ = rate(wrong)
            marks = [mark(f"4c n={n} {name} excess interval", per, per_se, 0.93, True),
                     mark(f"4c n={n} {name} excess family", fam, fam_se, 0.93, True),
                     mark(f"4c n={n} {name} wrongly flagged", bad, bad_se, 0.05, False)]
            print(f"   {n:6d}  {name:32s}{fmt(per, per_se):>15s}{fmt(fam, fam_se):>15s}{fmt(bad, bad_se):>17s}"
                  f"   >= 0.93, >= 0.93, <= 0.05  {status(marks)}")


ECE_SIZES = (60, 200, 1000)
#: End to end (bootstrap included) only the small groups, with twice the repetitions: there the percentile
#: bootstrap of Brier and log loss sits closest to its target, and 1000 faces cost 2.5 times as much per audit.
ECE_E2E_SIZES = (60, 200)


def section_5(pool: Pool, futures: dict, cell_futures: dict, reps: int, draws: int, rng: np.random.Generator) -> None:
    print("\n5. Calibration: the top class is right with probability f(confidence); confidence 0.25 + 0.745 * "
          "Beta(4, 1.2); f(c) = c (calibrated) or c^1.5 (overconfident)")
    print(f"   5a. calibration_error called directly on {draws:,} groups per row; true ECE / MCE are binned "
          "(15 bins) given the drawn confidences")
    print(f"   {'n':>6s}  {'model':14s}{'true ECE':>9s}{'plug-in':>9s}{'debiased':>9s}{'ECE cov':>13s}"
          f"{'MCE cov':>13s}{'ece<=.05 gate FAILS':>21s}   targets")
    for n in ECE_SIZES:
        for model, f in CALIBRATION_MODELS.items():
            chunks = []
            for start in range(0, draws, max(1, 2_000_000 // n)):
                g = min(draws - start, max(1, 2_000_000 // n))
                confidence = draw_confidence((g, n), rng)
                accuracy = f(confidence)
                correct = (rng.random((g, n)) < accuracy).astype(float)
                group = np.repeat(np.arange(g), n)
                c, a, r = confidence.ravel(), accuracy.ravel(), correct.ravel()
                count = bin_sums(c, np.ones_like(c), group, g)
                bounds = calibration_error(count, bin_sums(c, c, group, g), bin_sums(c, r, group, g))
                chunks.append({"true": binned_ece(c, a, group, g), "mce_true": binned_mce(c, a, group, g), **bounds})
            res = {k: np.concatenate([ch[k] for ch in chunks]) for k in ("true", "mce_true", "ece", "ece_lo", "ece_hi",
                                                                           "ece_plugin", "mce_lo", "mce_hi")}
            ece_cov = rate(covered(res["ece_lo"], res["ece_hi"], res["true"]))
            mce_cov = rate(covered(res["mce_lo"], res["mce_hi"], res["mce_true"]))
            fails = rate(res["ece_lo"] > 0.05)
            label = f"5a n={n} {model}"
            marks = [mark(f"{label} ECE coverage", *ece_cov[:2], COVERAGE_TARGET, True),
                     mark(f"{label} MCE coverage", *mce_cov[:2], COVERAGE_TARGET, True)]
            targets = "cov >= 0.93"
            if model == "calibrated":
                marks.append(mark(f"{label} ece<=0.05 gate false fail", *fails[:2], 0.05, False))
                targets += ", fails <= 0.05"
            else:
                marks.append("")
            print(f"   {n:6d}  {model:14s}{res['true'].mean():9.4f}{res['ece_plugin'].mean():9.4f}"
                  f"{res['ece'].mean():9.4f}{fmt(*ece_cov[:2]) + (marks[0] or ' '):>13s}"
                  f"{fmt(*mce_cov[:2]) + (marks[1] or ' '):>13s}{fmt(*fails[:2]) + (marks[2] or ' '):>21s}"
                  f"   {targets}  {status(marks)}")
    print(f"\n   5b. end to end: compute_audit with probabilities, five races of n faces ({2 * reps} audits per row, "
          f"race figures pooled); Brier and log loss (percentile bootstrap, {DEFAULT_N_BOOT:,} resamples, the "
          "default) against population means")
    calibration_rows(pool, futures, "5b")
    print("\n   5c. the same through a streamed audit's statistics: per-cell counts and moments merged from three "
          "shards (audit/statistics.py), resamples drawn over cell types with normal within-type sums")
    calibration_rows(pool, cell_futures, "5c")


def calibration_rows(pool: Pool, futures: dict, section: str) -> None:
    """The rows of an end-to-end calibration section (5b, 5c)."""
    names = ("ECE", "MCE", "Brier", "log loss", "ECE gap")
    print(f"   {'n':>6s}  {'model':14s}" + "".join(f"{x:>13s}" for x in names)
          + f"{'gate FAILS: group':>19s}{'any race':>13s}   targets")
    for (n, model), f in futures.items():
        out = pool.result(f)
        columns = dict(zip(names, (out["ece"], out["mce"], out["brier"], out["log_loss"], out["ece_gap"])))
        row = coverage_row(f"   {n:6d}  {model:14s}", f"{section} n={n} {model}", columns)
        row, verdict = row[:-6], row[-4:]
        group_fail, any_fail = rate(out["gate_fail_group"]), rate(out["gate_fail"])
        targets, flag = "cov >= 0.93", ""
        if model == "calibrated":
            targets += ", group fails <= 0.05"
            flag = mark(f"{section} n={n} calibrated ece<=0.05 gate false fail (per group)", *group_fail[:2], 0.05,
                        False)
            verdict = status([flag]) if verdict == "PASS" else verdict
        print(f"{row}{fmt(*group_fail[:2]) + (flag or ' '):>19s}{fmt(*any_fail[:2]):>13s}   {targets}  {verdict}")


def age_reps(n: int, reps: int) -> int:
    """Audits per row of section 6: ``reps`` (twice the other sections'), halved at 1,000 faces per group, where
    an audit costs four times as much and the intervals are nearly normal."""
    return reps // 2 if n >= 1000 else reps


def submit_age(pool: Pool, reps: int) -> dict:
    """Section 6's cells: coverage at each size, and the gap gate at true gaps of 0 and 2 years."""
    return {"cover": {n: pool.submit("age", (n,), age_reps(n, reps)) for n in AGE_SIZES},
            "gap": {(n, gap): pool.submit("age_gap", (n, gap), age_reps(n, reps)) for n in AGE_SIZES
                    for gap in (0.0, 2.0)}}


def section_6(pool: Pool, futures: dict, reps: int) -> None:
    truth = age_truths(AGE_BIASES, np.ones(K))
    print(f"\n6. Age regressors: five races of n faces, UTKFace-like true ages, Laplace errors of sd 2 + 0.1 x age years "
          f"with {GROSS_SHARE:.0%} gross errors at {GROSS_SCALE:g}x, biases {'/'.join(f'{b:+g}' for b in AGE_BIASES)} "
          f"years (White/Black/Asian/Indian/Others); true MAE {'/'.join(f'{m:.2f}' for m in truth['mae'])}, within "
          f"±5 {'/'.join(f'{w:.3f}' for w in truth['within5'])}; compute_regression_audit end to end with "
          f"{DEFAULT_N_BOOT:,} resamples, groups ranked from 20 faces ({reps} audits per row, {age_reps(1000, reps)} at "
          "n=1000; race figures pooled)")
    print("   6a. per-group intervals: coverage (and mean width: years; within5: share)")
    names = ("MAE", "bias", "within5")
    print(header("       n", names) + f"{'MAE width':>12s}{'bias width':>12s}{'w5 width':>10s}")
    for n, f in futures["cover"].items():
        out = pool.result(f)
        row = coverage_row(f"    {n:4d}", f"6a n={n}", dict(zip(names, (out["mae_hit"], out["bias_hit"],
                                                                            out["within5_hit"]))))
        row, verdict = row[:-6], row[-4:]
        print(f"{row}{np.nanmean(out['mae_width']):12.2f}{np.nanmean(out['bias_width']):12.2f}"
              f"{np.nanmean(out['within5_width']):10.3f}  {verdict}")
    print(f"\n   6b. MAE gap across the five races (simultaneous over 10 pairs) and a mae max_gap "
          f"{AGE_GATE['max_gap']:g} gate: unbiased races, Others' errors scaled to a true MAE gap of 0 or 2 years")
    print(f"   {'n':>6s}{'true gap':>9s}{'gap cov':>13s}{'gap width':>11s}{'gate FAILS':>13s}   target")
    for (n, gap), f in futures["gap"].items():
        out = pool.result(f)
        cov, fails = rate(out["gap_hit"]), rate(out["fail"])
        marks = [mark(f"6b n={n} gap={gap} MAE gap coverage", *cov[:2], COVERAGE_TARGET, True)]
        target = "cov >= 0.93"
        if gap == 0:
            marks.append(mark(f"6b n={n} gap=0 mae max_gap gate false fail", *fails[:2], 0.025, False))
            target += ", fails <= 0.025"
        else:
            target += ", fails = power (info)"
        print(f"   {n:6d}{gap:9.1f}{fmt(*cov[:2]) + (marks[0] or ' '):>13s}{np.nanmean(out['gap_width']):11.2f}"
              f"{fmt(*fails[:2]) + (marks[1] if len(marks) > 1 and marks[1] else ' '):>13s}   {target}  {status(marks)}")


def submit_decisive(pool: Pool, reps: int, cells: str = "abcdef") -> dict:
    want = lambda cell, value: value() if cell in cells else {}  # noqa: E731
    return {"ece": want("a", lambda: {(n, m): pool.submit("ece_sharp", (n, m), reps) for n, m in
                                      ((60, "calibrated"), (500, "calibrated"), (500, "overconfident"))}),
            "gap": want("b", lambda: {g: pool.submit("gap", (POWER_SIZES, POWER_ACCURACIES[g]), reps)
                                      for g in POWER_ACCURACIES}),
            "null": want("c", lambda: pool.submit("global_null", (2000,), 2 * reps)),
            "min": want("d", lambda: {by: pool.submit("min_at_threshold", (2000, 0.85, by), 2 * reps)
                                      for by in ("race", "race×gender")}),
            "gates": want("e", lambda: {g: pool.submit("default_gates", (g,), 2 * reps) for g in (0.0, 0.25)}),
            "planner": want("f", lambda: {label: pool.submit("planner", (label,), reps // 2 if PLANNER_CELLS[label][1] ==
                                                             "ece_from" else reps) for label in PLANNER_CELLS})}


def section_7(pool: Pool, futures: dict, reps: int) -> None:
    """Issue 22: sharp enough to decide, at the same coverage."""
    print(f"\n7. Decisive verdicts ({reps} audits per cell; 7c, 7d, 7e {2 * reps})")
    print("7a. ECE per race (5 races x n faces): bootstrap-corrected debiased estimate, interval, truth = binned ECE")
    print(f"   {'n':>5s} {'model':14s}{'mean est.':>11s}{'mean width':>12s}{'coverage':>16s}{'excl. 0.02':>16s}"
          f"{'oracle excl.':>16s}")
    targets = {(60, "calibrated"): ("estimate", 0.04), (500, "calibrated"): ("estimate", 0.02)}
    for (n, model), f in futures["ece"].items():
        out = pool.result(f)
        cov = rate(out["covered"].astype(bool))
        exc = rate(out["excludes"].astype(bool))
        marks = [mark(f"7a n={n} {model} ECE coverage", *cov[:2], COVERAGE_TARGET, True)]
        if model == "overconfident":
            # The issue's 0.80 is above what the oracle reaches with bounds whose one-sided error is 2.5 % (as every
            # bound a gate judges has): judged against the oracle (at most 5 points below it), 0.80 shown.
            floor = rate(out["oracle"].astype(bool))[0] - 0.05
            marks.append(mark(f"7a n={n} {model} excludes 0.02 (oracle - 0.05)", *exc[:2], floor, True))
        est, width = float(np.mean(out["estimate"])), float(np.mean(out["width"]))
        if (n, model) in targets and est > targets[(n, model)][1]:
            FAILURES.append(f"7a n={n} {model} mean ECE {est:.4f} > {targets[(n, model)][1]}")
            marks.append("!")
        if n == 500 and model == "calibrated" and width > 0.08:
            FAILURES.append(f"7a n={n} {model} mean width {width:.4f} > 0.08")
            marks.append("!")
        oracle = fmt(*rate(out["oracle"].astype(bool))[:2]) if model == "overconfident" else "-"
        print(f"   {n:5d} {model:14s}{est:11.4f}{width:12.4f}{fmt(*cov[:2]):>16s}{fmt(*exc[:2]):>16s}{oracle:>16s}"
              f"  {status(marks)}")
    if any(m == "overconfident" for _, m in futures["ece"]):
        print("   oracle excl.: a lower bound that knows every bin is overconfident and each face's true accuracy "
              "(mean confidence - accuracy, its exact SE, one-sided 2.5 %, as an equal-tailed 95 % interval's): what "
              "an interval could exclude if it knew them. Target 0.80 (issue) is above it, so excl. is judged against "
              "the oracle (>= oracle - 0.05)")
    if futures["gap"]:
        print("7b. race accuracy gap, groups 1,000/450/340/390/160 (Others carries the gap): max_gap 0.05 gate")
    for gap, f in futures["gap"].items():
        out = pool.result(f)
        fail = rate(out["gate_fail"])
        cov = rate(out["accuracy_gap"])
        # The power target (0.40) is above what any valid test reaches here (the ceiling printed below): shown, not
        # judged; the false-fail target at a true gap of 0 is judged.
        m = [mark(f"7b gap={gap} gap coverage", *cov[:2], COVERAGE_TARGET, True)]
        if not gap:
            m.append(mark(f"7b gap={gap} gate fails", *fail[:2], 0.025, False))
        wanted = "target >= 0.40, above the ceiling below: not judged" if gap else "target <= 0.025"
        print(f"   true gap {gap:4.2f}: gate fails {fmt(*fail[:2])} ({wanted}); "
              f"oracle fails {fmt(*rate(out['oracle_fail'])[:2])}; gap coverage {fmt(*cov[:2])}  {status(m)}")
    if futures["gap"]:
        print("   oracle fails: a test that knows which pair carries the gap (White vs Others) and tests only it, "
              "one-sided at 2.5 % (Newcombe, no multiplicity)")
        # Ceiling of any test of 'gap <= 0.05' that fails wrongly at most 2.5 % of the time: with every other race's
        # accuracy known (0.90), the gap is above 0.05 exactly when Others is below 0.85, and the most powerful test
        # of that is the one-sided exact binomial test of Others' 160 faces (Neyman-Pearson).
        n_small, p_true, p_null = POWER_SIZES[-1], POWER_ACCURACIES[0.10][-1], POWER_ACCURACIES[0.10][0] - 0.05
        cut = int(stats.binom.ppf(0.025, n_small, p_null))
        cut = cut if stats.binom.cdf(cut, n_small, p_null) <= 0.025 else cut - 1
        exact = stats.binom.cdf(cut, n_small, p_true)
        share = (0.025 - stats.binom.cdf(cut, n_small, p_null)) / stats.binom.pmf(cut + 1, n_small, p_null)
        ceiling = exact + share * stats.binom.pmf(cut + 1, n_small, p_true)
        print(f"   ceiling: even knowing every other race's accuracy, the most powerful test failing wrongly at most "
              f"2.5 % (one-sided binomial test of Others' {n_small} faces) fails {exact:.3f} of audits, {ceiling:.4f} "
              "if randomised to exactly 2.5 % (Neyman-Pearson); so no valid method reaches 0.40 here")
    if futures["null"]:
        null = rate(pool.result(futures["null"])["flagged"])
        print(f"7c. global null (2,000 faces, all 0.85): any race/gender/age-band group flagged {fmt(*null[:2])} "
              f"(target <= 0.05)  {status([mark('7c any group flagged', *null[:2], 0.05, False)])}")
    for by, f in futures["min"].items():
        fail = rate(pool.result(f)["fail"])
        print(f"7d. min accuracy 0.85 by {by}, every group at 0.85 (2,000 faces): false fail {fmt(*fail[:2])} "
              f"(target <= 0.025)  {status([mark(f'7d {by} min gate false fail', *fail[:2], 0.025, False)])}")
    for gap, f in futures["gates"].items():
        out = pool.result(f)
        key, target = ("pass", 0.80) if gap == 0 else ("fail", 0.80)
        r = rate(out[key])
        names = [x for row in out["inconclusive_names"] for x in str(row).split("; ") if x]
        common = ", ".join(f"{k} {names.count(k)}" for k in sorted(set(names)))
        print(f"7e. faceaudit/gates.toml, {UTK_TEST:,} images, {'fair calibrated' if gap == 0 else f'{gap:.2f} race gap'}: "
              f"{'passes' if key == 'pass' else 'fails'} {fmt(*r[:2])} (target >= {target}); inconclusive: {common or 'none'}  "
              f"{status([mark(f'7e gap={gap} default gates {key}', *r[:2], target, True)])}")
    if futures["planner"]:
        print("7f. planner (faceaudit plan, 80 % power): audits at the planned sizes per race; gate decisive (target >= 0.75)")
    for label, f in futures["planner"].items():
        out = pool.result(f)
        r = rate(out["decisive"])
        planned = np.asarray(out["sizes"]).reshape(-1, K)
        sizes = "/".join(f"{n:,.0f}" for n in np.median(planned, axis=0))
        sizes += f" (median over {len(planned)} pilots)" if PLANNER_CELLS[label][1] == "ece_from" else ""
        print(f"   {label}: planned {sizes}; decisive {fmt(*r[:2])}  "
              f"{status([mark(f'7f {label} decisive', *r[:2], 0.75, True)])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100, help="end-to-end audits per cell (default 100)")
    parser.add_argument("--quick", action="store_true", help="a fast look: 30 end-to-end audits per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument("--cells", default="abcdef", help="with --section decisive: which of 7a-7f to run (e.g. cdef)")
    parser.add_argument("--section", choices=("all", "regression", "decisive", "calibration"), default="all",
                        help="run sections 1-6 (default), only section 6 (age regressors), 7 (decisive verdicts) or "
                             "5 (calibration)")
    args = parser.parse_args()
    reps = 30 if args.quick else args.reps
    draws = 100 * reps
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(args.seed)
    pool = Pool(args.workers, args.seed)
    print(f"faceaudit interval coverage: seed {args.seed}, {reps} end-to-end audits per cell, {draws:,} direct draws "
          f"per cell, {args.workers} worker(s), level 0.95")
    print("coverage = share of simulations whose interval contains the truth; ± = Monte Carlo standard error (SE)")
    print(f"a figure fails (!) when it misses its target by more than {MC_ALLOWANCE:g} SE; ~ marks a miss within "
          f"{MC_ALLOWANCE:g} SE (Monte Carlo noise, not a failure)")
    if args.section == "regression":
        section_6(pool, submit_age(pool, 2 * reps), 2 * reps)
    elif args.section == "decisive":
        section_7(pool, submit_decisive(pool, reps, args.cells), reps)
    elif args.section == "calibration":
        futures = {key: {(n, model): pool.submit(task, (n, model), 2 * reps) for n in ECE_E2E_SIZES
                         for model in CALIBRATION_MODELS} for key, task in (("5b", "ece"), ("5c", "ece_cells"))}
        section_5(pool, futures["5b"], futures["5c"], reps, max(draws // 5, 200), rng)
    else:
        futures = submit_all(pool, reps)
        age_futures = submit_age(pool, 2 * reps)
        section_1a(draws, rng)
        section_1b(pool, futures["1b"], reps)
        section_2(pool, futures["2"], reps)
        section_3(pool, futures["3"], reps, draws, rng)
        section_4(pool, futures["4"], 5 * reps, rng)
        section_4c(2 * reps, rng)
        section_5(pool, futures["5b"], futures["5c"], reps, max(draws // 5, 200), rng)
        section_6(pool, age_futures, 2 * reps)
    if pool.executor is not None:
        pool.executor.shutdown()
    wall = time.perf_counter() - start_wall
    print(f"\n{AUDITS_CHECKED[0]:,} audit.json texts checked (tests/audit_checks.py): none has a zero-width interval")
    print(f"\nwall {wall:.0f} s (main process CPU {time.process_time() - start_cpu:.0f} s), cores {os.cpu_count()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if NEAR_MISSES:
        print(f"{len(NEAR_MISSES)} figure(s) on the wrong side of the target but within {MC_ALLOWANCE:g} Monte Carlo "
              "standard errors (~, not failures; rerun with more --reps to settle them):")
        for line in NEAR_MISSES:
            print(f"  ~ {line}")
    if FAILURES:
        print(f"{len(FAILURES)} target(s) FAILED (beyond {MC_ALLOWANCE:g} Monte Carlo standard errors):")
        for line in FAILURES:
            print(f"  ! {line}")
        sys.exit(1)
    print("every target met")


if __name__ == "__main__":
    main()
