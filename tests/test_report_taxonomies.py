"""Other taxonomies end to end, through the API and the command line: a FairFace 7-race classifier (FairFace's age
bins), and a gender classifier audited by race × age band. Reports are rendered (HTML and PDF) and opened in
headless Chromium. Predictions are simulated (tests/simulated.py), so no dataset archive is needed."""

from __future__ import annotations

import json
import re
import subprocess

import pandas as pd
import pytest
import simulated
from commands import FACEAUDIT

import faceaudit
from faceaudit.cli import main

FAIRFACE7 = list(faceaudit.FAIRFACE7.classes)
CLI_FAST = ["--n-boot", "200", "--no-tsne", "--no-thumbnails"]


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _check_in_chromium(folder):
    from browser import check_page, find_chromium

    if find_chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    page = check_page(folder / "report.html")
    assert page.images_total >= 5 and page.images_broken == []
    assert page.network_requests == [] and page.failed_requests == [] and page.console_errors == []
    assert page.scripts == 1  # the inline table-sorting script, nothing else
    assert page.text_chars > 2000 and page.screenshot[:4] == b"\x89PNG"
    return page


def _pdf_pages(pdf) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"Pages:\s+(\d+)", info).group(1))


@pytest.fixture(scope="module")
def fairface_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("fairface") / "fairface7.csv"
    simulated.fairface7().to_csv(path, index=False)
    return path


def _assert_fairface_audit(folder):
    audit = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    assert audit["classes"] == FAIRFACE7 and audit["label_schema"]["target"] == "race"
    assert [g["key"] for g in audit["groupings"]["race"]["groups"]] == FAIRFACE7
    bands = [g["key"] for g in audit["groupings"]["age_band"]["groups"]]
    assert bands == ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
    counts = audit["overall"]["confusion"]["counts"]
    assert len(counts) == 7 and all(len(row) == 7 for row in counts) and sum(map(sum, counts)) == audit["data"]["n"]
    metrics = pd.read_csv(folder / "group_metrics.csv")
    assert list(metrics.loc[metrics["grouping"] == "race", "group"]) == FAIRFACE7
    confusion = pd.read_csv(folder / "confusion.csv")
    overall = confusion[confusion["grouping"] == "overall"] if "overall" in set(confusion["grouping"]) else \
        confusion[confusion["group"] == "all"]
    assert set(overall["true"]) == set(overall["pred"]) == set(FAIRFACE7) and len(overall) == 49
    return audit


def test_fairface7_through_the_api(fairface_csv, tmp_path):
    frame = pd.read_csv(fairface_csv)
    result = faceaudit.audit(frame, schema=faceaudit.FAIRFACE7, n_boot=200, tsne=False)
    table = result.by_group("race", "accuracy")
    assert list(table["group"]) == FAIRFACE7 and table["n"].sum() == len(frame)
    assert table.set_index("group")["value"].idxmin() == "Middle Eastern"  # the smallest simulated margin
    assert "70+" in set(result.by_group("age_band", "accuracy")["group"])
    folder = result.report(tmp_path / "report", thumbnails=False)
    audit = _assert_fairface_audit(folder)
    assert audit["label_schema"]["name"] == "fairface7"
    html = (folder / "report.html").read_text(encoding="utf-8")
    text = _text(html)
    assert "By race" in text and re.search(r"race classification", text, re.I)
    for race in FAIRFACE7:
        assert race in text, race
    assert "Others" not in text  # nothing of UTKFace's taxonomy leaks in
    assert _pdf_pages(folder / "report.pdf") >= 4
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert "race" in summary and "Middle Eastern" in summary
    page = _check_in_chromium(folder)
    assert "model" in page.title


def test_fairface7_through_the_cli(fairface_csv, tmp_path, capsys):
    """``--schema fairface7`` and no --schema (the classes read from the prob_* columns) audit the same way."""
    named, inferred = tmp_path / "named", tmp_path / "inferred"
    assert main(["audit", "--predictions", str(fairface_csv), "--schema", "fairface7", "--out", str(named),
                 *CLI_FAST]) == 0
    assert main(["audit", "--predictions", str(fairface_csv), "--out", str(inferred), "--no-report", *CLI_FAST]) == 0
    console = capsys.readouterr().out
    assert "Middle Eastern" in console
    a, b = _assert_fairface_audit(named), _assert_fairface_audit(inferred)
    assert a["groupings"] == b["groupings"] and a["overall"] == b["overall"]
    assert (named / "report.pdf").is_file() and not (inferred / "report.html").exists()
    html = (named / "report.html").read_text(encoding="utf-8")
    assert all(race in html for race in FAIRFACE7)
    _check_in_chromium(named)


@pytest.fixture(scope="module")
def gender_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("gender") / "gender.csv"
    simulated.gender_classifier().to_csv(path, index=False)
    return path


def _assert_gender_audit(folder):
    audit = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    assert audit["classes"] == ["Male", "Female"] and audit["label_schema"]["target"] == "gender"
    assert list(audit["groupings"]) == ["race", "age_band", "race×age_band"]
    assert {g["kind"] for g in audit["groupings"].values()} == {"mixed"}
    race = audit["groupings"]["race"]
    assert all("balanced_accuracy" in g["metrics"] for g in race["groups"])
    assert race["disparities"]["accuracy"]["worst"] == "Black"
    return audit


def test_gender_classifier_through_the_api(gender_csv, tmp_path):
    result = faceaudit.audit(pd.read_csv(gender_csv), target="gender", groups=("race", "age_band"), n_boot=200,
                             tsne=False, model_info="gender-net")
    balanced = result.by_group("race", "balanced_accuracy").set_index("group")["value"]
    assert balanced.idxmin() == "Black" and len(balanced) == 5
    folder = result.report(tmp_path / "gender", thumbnails=False)
    _assert_gender_audit(folder)
    text = _text((folder / "report.html").read_text(encoding="utf-8"))
    assert re.search(r"gender classification", text, re.I) and "By race" in text and "By age band" in text
    assert _pdf_pages(folder / "report.pdf") >= 4
    page = _check_in_chromium(folder)
    assert "gender-net" in page.title


def test_gender_report_speaks_of_gender(gender_csv, tmp_path):
    """The verdict and headline name the target (gender), not race: race is only a grouping here."""
    out = tmp_path / "gender"
    assert main(["audit", "--predictions", str(gender_csv), "--target", "gender", "--groups", "race,age_band",
                 "--out", str(out), *CLI_FAST]) == 0
    _assert_gender_audit(out)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    lowered = summary.lower()
    for phrase in ("worst race", "race accuracy", "per-race", "single-race", "race classification"):
        assert phrase not in lowered, phrase
    assert "per-gender" in lowered or "gender" in summary.splitlines()[2].lower()
    html = _text((out / "report.html").read_text(encoding="utf-8")).lower()
    for phrase in ("worst race", "race accuracy", "per-race", "single-race", "race classification"):
        assert phrase not in html, phrase


def test_gender_cli_in_a_subprocess(gender_csv, tmp_path):
    """The installed command, as a user starts it; a grouping the table lacks is one line and exit 2."""
    out = tmp_path / "out"
    proc = subprocess.run([*FACEAUDIT, "audit", "--predictions", str(gender_csv), "--target", "gender", "--groups",
                           "race,age_band", "--out", str(out), "--no-report", *CLI_FAST], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _assert_gender_audit(out)
    proc = subprocess.run([*FACEAUDIT, "audit", "--predictions", str(gender_csv), "--target", "gender", "--groups",
                           "race,skin_tone", "--out", str(tmp_path / "bad"), "--no-report"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "skin_tone" in proc.stderr
