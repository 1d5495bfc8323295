"""Issue 22: no zero-width interval in any audit.json, the planner, and inconclusive verdicts that say what they need.

Simulated predictions only (seconds, no dataset archive).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import simulated

import faceaudit
from faceaudit.auditing.gates import evaluate_gates, parse_gates
from faceaudit.auditing.planner import gap_decisive, plan, plan_proportion, proportion_power
from faceaudit.cli import main

FAST = {"n_boot": 200, "tsne": False, "seed": 1}


def _intervals(node, path="$"):
    """Every ``{"value", "ci"}`` in a JSON tree, with its path."""
    if isinstance(node, dict):
        if "value" in node and "ci" in node:
            yield path, node
        for key, child in node.items():
            yield from _intervals(child, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _intervals(child, f"{path}[{i}]")


def _one_hot(frame):
    probs = [c for c in frame.columns if c.startswith("prob_")]
    top = frame[probs].to_numpy().argmax(axis=1)
    hot = np.eye(len(probs))[top]
    return frame.assign(**{c: hot[:, i] for i, c in enumerate(probs)})


def _audits(tmp_path):
    frame = simulated.utkface(1200, seed=3)
    with_val = frame.assign(split=np.where(np.arange(len(frame)) % 4 == 0, "val", "test"))
    # Well-separated embeddings: every face's neighbours share its class (kNN purity 1 everywhere).
    codes = frame["race"].astype("category").cat.codes.to_numpy()
    separated = np.eye(8)[codes] * 100 + np.random.default_rng(0).normal(0, 0.01, (len(frame), 8))
    labels_only = frame.drop(columns=[c for c in frame.columns if c.startswith("prob_")]).assign(
        pred_race=np.array(simulated.UTK_RACES)[frame[[f"prob_{r}" for r in simulated.UTK_RACES]].to_numpy().argmax(1)])
    cases = {"plain": (frame, {}), "val": (with_val, {}), "one_hot_val": (_one_hot(with_val), {}),
             "separated": (frame, {"embeddings": separated}), "labels_only": (labels_only, {})}
    for name, (table, extra) in cases.items():
        result = faceaudit.audit(table, **FAST, **extra)
        out = result.write(tmp_path / name)
        yield name, json.loads((out / "audit.json").read_text())


def test_no_audit_json_has_a_zero_width_interval(tmp_path):
    """Every interval in every audit.json written here has lower < upper (issue 22: kNN purity [1, 1] with
    well-separated embeddings, the ECE change [0, 0] with one-hot probabilities)."""
    checked = 0
    for name, audit in _audits(tmp_path):
        flat = [(path, node["ci"]) for path, node in _intervals(audit)
                if isinstance(node.get("ci"), list) and len(node["ci"]) == 2 and None not in node["ci"]
                and all(np.isfinite(node["ci"]))]
        zero = [(path, ci) for path, ci in flat if not ci[1] - ci[0] > 0]
        assert not zero, f"{name}: {len(zero)} zero-width intervals, e.g. {zero[:3]}"
        checked += len(flat)
    assert checked > 1000


def test_proportion_plan_reaches_its_power():
    n = plan_proportion(0.85, 0.80, upper=False)
    assert 300 < n < 800
    assert proportion_power(0.85, n, 0.80, False, 0.95, 0.95) >= 0.80
    assert proportion_power(0.85, n // 2, 0.80, False, 0.95, 0.95) < 0.80
    # A max gate on an error rate is the min gate on its complement.
    assert plan_proportion(0.15, 0.20, upper=True) == n
    # Below the threshold a fail is planned at the Bonferroni level over the gates' groups: more images.
    assert plan_proportion(0.75, 0.80, upper=False, family=10) > plan_proportion(0.75, 0.80, upper=False)
    assert plan_proportion(0.80, 0.80, upper=False) is None


def test_gap_plan_is_decisive_at_its_size():
    gates, _ = parse_gates({"gates": [{"metric": "accuracy", "by": "race", "max_gap": 0.10}]})
    rows = plan(gates, None, rates={"accuracy": 0.85})
    n = rows[0]["needs"][0]["needs"]
    assert 100 < n < 5000
    assert gap_decisive([0.85] * 5, [n] * 5, 0.10, "max_gap", seed=7) >= 0.75
    assert gap_decisive([0.85] * 5, [n // 3] * 5, 0.10, "max_gap", seed=7) < 0.75


def test_inconclusive_gate_says_what_it_needs():
    frame = simulated.utkface(1200, seed=3)
    result = faceaudit.audit(frame, **FAST)
    value = result.groupings["race"].groups[0].metrics["accuracy"].value
    gates, _ = parse_gates({"gates": [{"name": "floor", "metric": "accuracy", "by": "race", "min": round(value, 2)},
                                      {"name": "gap", "metric": "accuracy", "by": "gender", "max_gap": 0.02}]})
    block = evaluate_gates(gates, result)
    for gate in block["results"]:
        if gate["status"] == "inconclusive":
            assert "needs about" in gate["message"] and "(has " in gate["message"]
            assert gate["needs"] and all(row["needs"] is None or row["needs"] > 0 for row in gate["needs"])


def test_plan_command_prints_a_table(tmp_path, capsys):
    from faceaudit.cli import build_parser

    assert "plan" in build_parser().format_help()  # the subcommand list renders (a bare % in a help string breaks it)
    gates = tmp_path / "gates.toml"
    gates.write_text('[[gates]]\nname = "floor"\nmetric = "accuracy"\nby = "race"\nmin = 0.8\n\n'
                     '[[gates]]\nname = "calibration"\nmetric = "ece"\nby = "overall"\nmax = 0.05\n')
    assert main(["plan", "--gates", str(gates), "--rates", "accuracy=0.85,Others=0.9", "ece=0.01"]) == 0
    out = capsys.readouterr().out
    assert "floor" in out and "Others" in out and "needs" in out and "calibration" in out
    frame = simulated.utkface(1200, seed=3)
    folder = faceaudit.audit(frame, **FAST).write(tmp_path / "audit")
    assert main(["plan", "--gates", str(gates), "--from", str(folder)]) == 0
    assert "observed" in capsys.readouterr().out
    assert main(["plan", "--gates", str(gates)]) == 2
    assert main(["plan", "--gates", str(gates), "--rates", "accuracy=90"]) == 2


@pytest.mark.parametrize("counts, says", [({"pass": 3, "fail": 0, "inconclusive": 2}, "lack of data, not a failure"),
                                          ({"pass": 3, "fail": 1, "inconclusive": 1}, "for cause")])
def test_summary_says_inconclusive_for_lack_of_data(counts, says):
    from faceaudit.auditing.report.findings import inconclusive_sentence
    from faceaudit.auditing.types import Gates

    class Result:
        gates = Gates.from_dict({"status": "fail" if counts["fail"] else "inconclusive", "counts": counts,
                                 "results": [{"name": "g", "metric": "accuracy", "grouping": "race", "rule": "min",
                                              "threshold": 0.8, "status": "inconclusive", "message": "",
                                              "needs": [{"group": "Others", "has": 150, "needs": 900}]}]})
        settings = {"min_test_size": 150}
        overall = {"n": 2000}
        data = {}

    text = inconclusive_sentence(Result())
    assert says in text and "needs about 900 faces of Others (has 150)" in text


def test_written_audit_check_finds_a_zero_width_interval(tmp_path):
    """The check every test runs afterwards (tests/conftest.py) fails on a zero-width interval in an audit.json
    written since the test began, names it, and passes sound files."""
    import time

    from audit_checks import check_written_audits

    start = time.time() - 1.0
    sound = {"overall": {"metrics": {"accuracy": {"value": 0.9, "ci": [0.88, 0.92]}}}}
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "audit.json").write_text(json.dumps(sound))
    assert check_written_audits([tmp_path], start) == [tmp_path / "good" / "audit.json"]
    flat = {"embeddings": {"knn_purity": {"overall": {"value": 1.0, "ci": [1.0, 1.0]}}}, "x": {"gap_ci": [0.1, 0.3]}}
    bad = tmp_path / "bad" / "audit.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(flat))
    try:
        with pytest.raises(AssertionError, match=r"1 zero-width interval.*knn_purity\.overall\.ci"):
            check_written_audits([tmp_path], start)
        assert check_written_audits([tmp_path], time.time() + 60) == []  # only files written since
    finally:
        bad.unlink()  # else the autouse check fails this test too


def test_pooled_runs_never_exceed_the_binned_error():
    """The ECE lower bound rests on two runs of adjacent bins: sums are kept, the runs hold about half the images
    each, and the calibration error over the runs is never above the one over the bins (so bounding it from below
    bounds the binned ECE)."""
    from faceaudit.auditing.calibration import ECE_BINS, pooled_runs

    rng = np.random.default_rng(4)
    count = rng.integers(0, 60, size=(50, ECE_BINS)).astype(float)
    confidence = count * rng.uniform(0.3, 1.0, size=count.shape)
    truth = np.clip(confidence + rng.normal(0, 3, size=count.shape), 0, count)  # expected correct answers per bin
    runs = pooled_runs(count, count, confidence, truth)
    assert all(r.shape == (50, 2) for r in runs)
    assert np.allclose(runs[0].sum(axis=1), count.sum(axis=1)) and np.allclose(runs[2].sum(axis=1), truth.sum(axis=1))
    assert (np.abs(runs[0][:, 0] - count.sum(axis=1) / 2) <= count.max(axis=1)).all()
    fine = np.abs(truth - confidence).sum(axis=1)
    coarse = np.abs(runs[2] - runs[1]).sum(axis=1)
    assert (coarse <= fine + 1e-9).all() and (coarse < fine - 1e-6).any()
