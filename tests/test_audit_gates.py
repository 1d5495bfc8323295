"""Gate verdicts (pass / fail / inconclusive), too-small groups, JUnit XML and the gates file format."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)

from faceaudit.auditing.engine import AuditSettings, compute_audit
from faceaudit.auditing.gates import (
    Gate,
    check_gates,
    evaluate_gates,
    exit_code,
    judge,
    junit_xml,
    load_gates,
    parse_gates,
)
from faceaudit.auditing.types import Stat
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import UTKFACE

ROOT = Path(__file__).resolve().parents[1]


def _stat(value, lo, hi):
    return Stat(value=value, ci=[lo, hi], n=100)


@pytest.mark.parametrize(
    "stat, threshold, upper, expected",
    [
        (_stat(0.80, 0.78, 0.82), 0.75, False, "pass"),
        (_stat(0.70, 0.68, 0.72), 0.75, False, "fail"),
        (_stat(0.76, 0.73, 0.79), 0.75, False, "inconclusive"),
        (_stat(0.03, 0.02, 0.04), 0.05, True, "pass"),
        (_stat(0.08, 0.06, 0.10), 0.05, True, "fail"),
        (_stat(0.05, 0.03, 0.07), 0.05, True, "inconclusive"),
        (Stat(value=None, ci=None, n=0), 0.05, True, "inconclusive"),
    ],
)
def test_judge(stat, threshold, upper, expected):
    assert judge(stat, threshold, upper) == expected


@pytest.fixture(scope="module")
def small_groups_audit(real_predictions):  # noqa: F811
    """A real audit with a high minimum group size so that some race groups are too small to judge."""
    sizes = real_predictions.test["race"].value_counts()
    threshold = int(sizes.sort_values().iloc[1]) + 1  # the two smallest races fall below it
    settings = AuditSettings(n_boot=200, seed=1, tsne=False, min_group_size=threshold)
    return compute_audit(real_predictions.test_table, settings=settings), sizes, threshold


def test_too_small_groups_are_never_ranked(small_groups_audit):
    result, sizes, threshold = small_groups_audit
    small = set(sizes[sizes < threshold].index)
    assert len(small) == 2
    for grouping in result.groupings.values():
        for metric, disparity in grouping["disparities"].items():
            flagged = {g["key"] for g in grouping["groups"] if g["too_small"]}
            assert set(disparity["too_small"]) == flagged
            assert disparity["worst"] not in flagged and disparity["best"] not in flagged
    race = result.grouping("race")
    assert {g["key"] for g in race["groups"] if g["too_small"]} == small
    # "Others" (among the smallest races) is the least accurate here; the worst *ranked* group must be another.
    ranked = {g["key"]: g["metrics"]["accuracy"]["value"] for g in race["groups"] if not g["too_small"]}
    assert race["disparities"]["accuracy"]["worst"] == min(ranked, key=ranked.get)
    assert race["disparities"]["accuracy"]["n_ranked"] == len(ranked)


def test_gates_on_real_audit(small_groups_audit):
    result, sizes, threshold = small_groups_audit
    audit = result
    gates = [
        Gate("floor", "accuracy", "race", "min", 0.0),          # small groups make it inconclusive
        Gate("gap", "accuracy", "race", "max_gap", 1.0),        # ranked groups only
        Gate("sizes", "n", "race", "min", threshold),           # deterministic, small groups fail
        Gate("ece", "ece", "overall", "max", 1.0),
    ]
    block = evaluate_gates(gates, audit, inconclusive="pass", source="g.toml")
    statuses = {r["name"]: r["status"] for r in block["results"]}
    assert statuses == {"floor": "inconclusive", "gap": "pass", "sizes": "fail", "ece": "pass"}
    assert block["status"] == "fail" and exit_code(block) == 1
    floor = next(r for r in block["results"] if r["name"] == "floor")
    assert {g["key"] for g in floor["groups"] if g["status"] == "inconclusive"} == set(sizes[sizes < threshold].index)

    only_inconclusive = evaluate_gates(gates[:2], audit, inconclusive="pass")
    assert only_inconclusive["status"] == "inconclusive" and exit_code(only_inconclusive) == 0
    assert exit_code(evaluate_gates(gates[:2], audit, inconclusive="fail")) == 1
    assert exit_code(evaluate_gates(gates[1:2], audit)) == 0

    root = ET.fromstring(junit_xml(block))
    suite = root.find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    by_name = {c.get("name"): c for c in suite.findall("testcase")}
    assert by_name["sizes"].find("failure") is not None
    assert by_name["floor"].find("skipped") is not None
    assert by_name["gap"].find("failure") is None and by_name["gap"].find("skipped") is None


def test_example_gates_file_parses():
    gates, min_size = load_gates(ROOT / "faceaudit" / "gates.toml")
    assert min_size == 30
    assert {g.rule for g in gates} >= {"max_gap", "min", "max"}
    # The shipped defaults are decidable at UTKFace's test-set size (issue 22): a per-race minimum, not race × gender.
    assert any(g.by == "race" and g.rule == "min" for g in gates)


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "no [[gates]]"),
        ({"gates": [{"metric": "accuracy", "by": "race"}]}, "exactly one of"),
        ({"gates": [{"metric": "accurcy", "min": 0.5}]}, "not one of"),
        ({"gates": [{"metric": "accuracy", "by": "planet", "min": 0.5}]}, "unknown grouping"),
        ({"gates": [{"metric": "accuracy", "max_gap": 0.1}]}, "needs groups"),
        ({"gates": [{"metric": "accuracy", "by": "race", "min": 0.5, "colour": "red"}]}, "unknown key"),
        ({"min_group_size": 0, "gates": [{"metric": "accuracy", "min": 0.5}]}, "positive integer"),
    ],
)
def test_bad_gates_files(data, message):
    with pytest.raises(FaceauditError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_gates(parse_gates(data)[0], UTKFACE)


def test_grouping_spellings():
    gates, _ = parse_gates({"gates": [{"metric": "accuracy", "by": "race x gender", "min": 0.5},
                                      {"metric": "ece", "by": "race×gender×age_band", "max": 0.1},
                                      {"metric": "accuracy", "by": "overall", "min": 0.5}]})
    assert [g.by for g in gates] == ["race×gender", "race×gender×age_band", "overall"]
    # Matched to the schema's groupings whatever the order the attributes are written in.
    gates, _ = parse_gates({"gates": [{"metric": "accuracy", "by": "gender x race", "min": 0.5},
                                      {"metric": "accuracy", "by": "age_band*race", "min": 0.5}]})
    assert [g.by for g in check_gates(gates, UTKFACE)] == ["race×gender", "race×age_band"]
