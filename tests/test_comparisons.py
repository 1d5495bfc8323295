"""``faceaudit.compare`` and ``faceaudit.diff``: typed results, the same numbers and text as the commands, and a diff
of audits of different test sets that reports unpaired changes instead of a traceback."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)

import faceaudit
from faceaudit.auditing.comparison import Comparison, Diff
from faceaudit.auditing.paired import NOT_COMPARABLE
from faceaudit.auditing.report.compare import compare_markdown, diff_text
from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import UTKFACE

FAST = {"n_boot": 100, "tsne": False, "seed": 5}


def _worse_on_black(frame: pd.DataFrame) -> pd.DataFrame:
    """The same real predictions with 40 % of Black faces pushed to Others: a model worse on one group."""
    worse = frame.copy()
    flip = (worse["race"].astype(str) == "Black").to_numpy() & (np.random.default_rng(0).random(len(worse)) < 0.4)
    probs = [c for c in worse.columns if c.startswith("prob_")]
    worse.loc[flip, probs] = 0.0
    worse.loc[flip, "prob_Others"] = 1.0
    return worse.drop(columns=[c for c in ("pred_race", "correct", "confidence") if c in worse])


@pytest.fixture(scope="module")
def two_audits(real_predictions, tmp_path_factory):  # noqa: F811
    """The real MLP's test predictions and a copy worse on Black faces, audited and written to folders."""
    base = real_predictions.test_table.output_frame().drop(columns=["correct", "confidence", "pred_race"])
    root = tmp_path_factory.mktemp("comparisons")
    old = faceaudit.audit(base, schema=UTKFACE, **FAST)
    new = faceaudit.audit(_worse_on_black(base), schema=UTKFACE, **FAST)
    return old, old.write(root / "old"), new, new.write(root / "new"), base


def test_compare_equals_the_command(two_audits, tmp_path, capsys):
    old, old_dir, new, new_dir, _ = two_audits
    comparison = faceaudit.compare(old, new, max_excess_loss=0.01)
    assert isinstance(comparison, Comparison) and comparison.verdict == "fail" and comparison.exit_code() == 1
    out = tmp_path / "cmp"
    assert main(["compare", str(old_dir), str(new_dir), "--out", str(out), "--no-pdf",
                 "--max-excess-loss", "0.01"]) == 1
    stdout = capsys.readouterr().out
    assert comparison.bound.line in stdout and "excess loss bound 1 pts: FAIL" in stdout
    from_folders = faceaudit.compare(old_dir, new_dir, max_excess_loss=0.01)
    for frame, name in ((from_folders.paired, "paired_tests.csv"), (from_folders.excess, "excess_change.csv")):
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), pd.read_csv(out / name), check_dtype=False,
                                      check_exact=False, rtol=1e-9)
    assert compare_markdown(from_folders) == (out / "compare.md").read_text(encoding="utf-8")
    # The same statistics whether the results come from this process or from their folders.
    same = comparison.paired.drop(columns=["model_a", "model_b"])
    pd.testing.assert_frame_equal(same, from_folders.paired.drop(columns=["model_a", "model_b"]))
    black = comparison.paired.query("grouping == 'race' and group == 'Black'").iloc[0]
    assert black["verdict"] == "worse" and black["diff_hi"] < 0


def test_diff_equals_the_command(two_audits, tmp_path, capsys):
    _, old_dir, _, new_dir, _ = two_audits
    result = faceaudit.diff(old_dir, new_dir, fail_on_worse=True)
    assert isinstance(result, Diff) and result.paired and result.exit_code() == 1
    assert set(result.worse["group"]) >= {"Black", "all"}
    assert main(["diff", str(old_dir), str(new_dir), "--out", str(tmp_path / "d.md"), "--fail-on-worse"]) == 1
    assert capsys.readouterr().out == diff_text(result)
    pd.testing.assert_frame_equal(result.table, pd.read_csv(tmp_path / "d.csv"), check_dtype=False,
                                  check_exact=False, rtol=1e-9)
    assert faceaudit.diff(old_dir, new_dir).exit_code() == 0  # without --fail-on-worse nothing is judged


def test_diff_of_different_test_sets_reports_unpaired_changes(two_audits, tmp_path, capsys):
    """Audits of different test images, one without any Others face: an unpaired diff, Others not comparable."""
    old, old_dir, _, _, base = two_audits
    rows = base[(base["race"].astype(str) != "Others")].sample(frac=0.7, random_state=1)
    other = faceaudit.audit(rows, schema=UTKFACE, **FAST).write(tmp_path / "other")
    assert main(["diff", str(old_dir), str(other), "--max-excess-loss", "0.02"]) == 1  # not judgeable: inconclusive
    text = capsys.readouterr().out
    assert "not paired: test sets differ" in text and "unpaired: Newcombe interval" in text
    assert "Traceback" not in text and "| Others | " in text and NOT_COMPARABLE in text
    result = faceaudit.diff(old, other)
    assert not result.paired and result.excess is None
    others = result.table[(result.table["grouping"] == "race") & (result.table["group"] == "Others")].iloc[0]
    assert others["verdict"] == NOT_COMPARABLE and np.isnan(others["p_value"])
    judged = result.table[result.table["verdict"] != NOT_COMPARABLE]
    assert (judged["diff_hi"] > judged["diff_lo"]).all() and judged["p_holm"].notna().any()
    assert result.table.loc[result.table["group"] == "all", "n_b"].iloc[0] == len(rows)
    # The other way round, judged: Others is only in the second audit; still a table, no traceback.
    assert main(["diff", str(other), str(old_dir), "--fail-on-worse"]) in (0, 1)
    text = capsys.readouterr().out
    assert "Traceback" not in text and NOT_COMPARABLE in text and "unpaired: Newcombe interval" in text
    # The same images, but one audit's predictions.csv is gone: unpaired, and the reason is said.
    bare = tmp_path / "bare"
    shutil.copytree(old_dir, bare)
    (bare / "predictions.csv").unlink()
    result = faceaudit.diff(bare, old_dir)
    assert not result.paired and "predictions.csv missing" in result.paired_reason
    assert set(result.table["verdict"]) <= {"no clear change", "too small"}  # the same model: nothing changed


def test_compare_refuses_in_one_line(two_audits):
    old, *_ = two_audits
    with pytest.raises(FaceauditError, match="at least two audits"):
        faceaudit.compare(old)
    with pytest.raises(FaceauditError, match="level must be"):
        faceaudit.compare(old, old, level=1.5)
