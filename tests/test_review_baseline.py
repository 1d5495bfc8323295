"""The audit in a review: an ungated audit says so everywhere and can be refused; ``--baseline`` compares the audit
with the one it replaces by ``faceaudit diff``'s family of tests, paired on the same images or unpaired.

Real inputs: the predictions of a small MLP trained on real UTKFace pixels (tests/audit_fixtures.py), a copy of
them worse on Black faces, and a subset of the test images without any Others face.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)

import faceaudit
from faceaudit.auditing.paired import NOT_COMPARABLE
from faceaudit.auditing.result import load_audit
from faceaudit.auditing.types import Baseline
from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.validation import InvalidParameterError

FAST = ["--n-boot", "100", "--no-tsne"]
PASSING_GATES = '[[gates]]\nmetric = "accuracy"\nby = "overall"\nmin = 0.05\n'


def _worse_on_black(csv, out):
    """The same real predictions with 40 % of Black test faces pushed to Others: a model worse on one group."""
    frame = pd.read_csv(csv, dtype={"image_id": str})
    probs = [c for c in frame.columns if c.startswith("prob_")]
    flip = ((frame["race"] == "Black") & (frame["split"] == "test")).to_numpy() & (
        np.random.default_rng(0).random(len(frame)) < 0.4)
    frame.loc[flip, probs] = 0.0
    frame.loc[flip, "prob_Others"] = 1.0
    frame.drop(columns=[c for c in ("pred_race", "correct", "confidence") if c in frame]).to_csv(out, index=False)
    return out


def _one_line_refusal(capsys, args, says):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("faceaudit: error: ") and captured.err.count("\n") == 1, captured.err
    assert says in captured.err and "Traceback" not in captured.err
    return captured


@pytest.fixture(scope="module")
def old_audit(real_predictions, tmp_path_factory):  # noqa: F811
    """The real MLP's audit, written by the command with its report and no gates."""
    out = tmp_path_factory.mktemp("baseline") / "old"
    assert main(["audit", "--predictions", str(real_predictions.csv), "--out", str(out), *FAST,
                 "--no-thumbnails"]) == 0
    return out


def test_an_ungated_audit_says_so_everywhere(old_audit, real_predictions, tmp_path, capsys, monkeypatch):  # noqa: F811
    # The console's last line (the audit above printed it; rerun without the report to read it here).
    assert main(["audit", "--predictions", str(real_predictions.csv), "--out", str(tmp_path / "again"), *FAST,
                 "--no-report"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("status: NOT GATED") and "--require-gates" in last
    data = json.loads((old_audit / "audit.json").read_text(encoding="utf-8"))
    assert data["status"] == "not gated" and "gates" in data and data["gates"] is None
    assert load_audit(old_audit).status == "not gated"
    summary = (old_audit / "summary.md").read_text(encoding="utf-8")
    assert summary.splitlines()[0].endswith("— NOT GATED") and "**Not gated:**" in summary
    html = (old_audit / "report.html").read_text(encoding="utf-8")
    verdict = html[html.index('id="verdict"'):][:3000]
    assert "NOT GATED" in verdict
    # A gated audit's last line is the gates' verdict.
    gates = tmp_path / "gates.toml"
    gates.write_text(PASSING_GATES)
    assert main(["audit", "--predictions", str(real_predictions.csv), "--out", str(tmp_path / "gated"), *FAST,
                 "--no-report", "--gates", str(gates), "--require-gates"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "gates: PASS (1 passed, 0 failed, 0 inconclusive)"
    assert load_audit(tmp_path / "gated").to_dict()["status"] == "pass"


def test_require_gates_refuses_before_anything_is_written(real_predictions, tmp_path, capsys, monkeypatch):  # noqa: F811
    out = tmp_path / "refused"
    args = ["audit", "--predictions", str(real_predictions.csv), "--out", str(out), *FAST]
    _one_line_refusal(capsys, [*args, "--require-gates"], "gates are required")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    empty = tmp_path / "no-gates.toml"
    empty.write_text("min_group_size = 30\n")
    _one_line_refusal(capsys, [*args, "--require-gates", "--gates", str(empty)], "defines no [[gates]]")
    monkeypatch.setenv("FACEAUDIT_REQUIRE_GATES", "1")
    _one_line_refusal(capsys, args, "gates are required")
    monkeypatch.setenv("FACEAUDIT_REQUIRE_GATES", "perhaps")
    _one_line_refusal(capsys, args, "FACEAUDIT_REQUIRE_GATES is 'perhaps'")
    assert not out.exists()
    monkeypatch.delenv("FACEAUDIT_REQUIRE_GATES")
    _one_line_refusal(capsys, [*args, "--fail-on-worse"], "--fail-on-worse goes with --baseline")
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--require-gates" in help_text and "$FACEAUDIT_REQUIRE_GATES" in help_text and "--baseline" in help_text
    # The Python API: the same refusal, validated like every other parameter, before any work.
    with pytest.raises(FaceauditError, match="gates are required"):
        faceaudit.audit(real_predictions.test_table, require_gates=True)
    with pytest.raises(InvalidParameterError, match="require_gates must be True or False"):
        faceaudit.audit(real_predictions.test_table, require_gates="yes")
    with pytest.raises(InvalidParameterError, match="baseline must be"):
        faceaudit.audit(real_predictions.test_table, baseline=3)
    with pytest.raises(FaceauditError, match="does not exist"):
        faceaudit.audit(real_predictions.test_table, baseline=tmp_path / "nowhere")


def _same_as_diff(baseline: Baseline, table: pd.DataFrame) -> None:
    """Every row of the baseline record equals the diff's: the same family, numbers and verdicts."""
    assert [(r.grouping, r.group, r.verdict) for r in baseline.rows] == list(
        zip(table["grouping"], table["group"], table["verdict"]))
    for row, (_, expected) in zip(baseline.rows, table.iterrows()):
        if row.change is None:
            assert np.isnan(expected["diff"])
        else:
            assert row.change == pytest.approx(expected["diff"])
        if row.p_holm is not None:
            assert row.p_holm == pytest.approx(expected["p_holm"])
    assert baseline.family == int(table["family"].iloc[0])
    assert baseline.better == (table["verdict"] == "better").sum() and baseline.worse == (table["verdict"] == "worse").sum()


def test_baseline_on_the_same_images_is_diff_paired(old_audit, real_predictions, tmp_path, capsys):  # noqa: F811
    worse = _worse_on_black(real_predictions.csv, tmp_path / "worse.csv")
    out = tmp_path / "new"
    code = main(["audit", "--predictions", str(worse), "--out", str(out), *FAST, "--no-thumbnails",
                 "--baseline", str(old_audit), "--fail-on-worse"])
    assert code == 1  # a group got worse, and --fail-on-worse says so (no gates: still not gated)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("status: NOT GATED")
    said = next(line for line in lines if line.startswith("vs baseline "))
    assert "paired on the same images" in said and "worse" in said
    assert any("; race: 0 better, 1 worse;" in line for line in lines)  # per-grouping counts
    assert any(line.strip().startswith("worse  race Black:") for line in lines)
    result = load_audit(out)
    baseline = result.baseline
    assert isinstance(baseline, Baseline) and baseline.method == "paired" and baseline.reason is None
    assert baseline.source == str(old_audit) and baseline.worse >= 2
    _same_as_diff(baseline, faceaudit.diff(old_audit, out).table)
    black = next(r for r in baseline.rows if (r.grouping, r.group) == ("race", "Black"))
    assert black.verdict == "worse" and black.ci[1] < 0 and black.old.value > black.new.value
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "### vs baseline" in summary and "| **worse** | race | Black |" in summary and len(summary.splitlines()) <= 60
    html = (out / "report.html").read_text(encoding="utf-8")
    verdict = html[html.index('id="verdict"'):]
    verdict = verdict[:verdict.index("</section>")]
    assert "vs baseline" in verdict and "Black" in verdict and "no clear change" in verdict
    # Without --fail-on-worse a worse group is reported, not judged: exit 0.
    assert main(["audit", "--predictions", str(worse), "--out", str(tmp_path / "n2"), *FAST, "--no-report",
                 "--baseline", str(old_audit / "audit.json")]) == 0
    # The Python API gives the same record.
    api = faceaudit.audit(worse, n_boot=100, tsne=False, baseline=old_audit)
    assert api.baseline.to_dict() == baseline.to_dict()


def test_baseline_on_other_test_images_is_diff_unpaired(old_audit, real_predictions, tmp_path, capsys):  # noqa: F811
    frame = pd.read_csv(real_predictions.csv, dtype={"image_id": str})
    test = frame[frame["split"] == "test"]
    subset = test[test["race"] != "Others"].sample(frac=0.7, random_state=2)
    csv = tmp_path / "subset.csv"
    subset.drop(columns=["split"]).to_csv(csv, index=False)
    out = tmp_path / "subset"
    assert main(["audit", "--predictions", str(csv), "--out", str(out), *FAST, "--no-report",
                 "--baseline", str(old_audit)]) == 0
    stdout = capsys.readouterr().out
    assert "Traceback" not in stdout and "unpaired: the test sets differ" in stdout
    baseline = load_audit(out).baseline
    assert baseline.method == "unpaired" and "test sets differ" in baseline.reason
    others = next(r for r in baseline.rows if (r.grouping, r.group) == ("race", "Others"))
    assert others.verdict == NOT_COMPARABLE and others.change is None and others.ci is None
    _same_as_diff(baseline, faceaudit.diff(old_audit, out).table)
    judged = [r for r in baseline.rows if r.verdict != NOT_COMPARABLE and r.ci]
    assert judged and all(r.ci[0] < r.ci[1] for r in judged)
