"""The audit report, comparison and diff on real audits: real UTKFace pixels, a real scikit-learn classifier, the
real audit engine, then real headless Chromium and real PDF pages (pdftoppm)."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from faceaudit.cli import main

HOSTILE = "<script>alert(1)</script>"
N_TEST = 700


def _pixels(frame):
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((16, 16)), dtype=np.float32).ravel()
                     for p in frame["path"]])


@pytest.fixture(scope="module")
def audits(utk64_dataset, tmp_path_factory):
    """Two real audits of the same test images: pixel classifiers of different strength, one with a hostile name."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import faceaudit

    dataset = utk64_dataset
    races = list(faceaudit.UTKFACE.classes)
    train = dataset.split("train").sample(1500, random_state=0)
    val = dataset.split("val").sample(400, random_state=0)
    test = dataset.split("test").sample(N_TEST, random_state=0)
    x_train, x_val, x_test = _pixels(train), _pixels(val), _pixels(test)
    gates = {"gates": [{"metric": "accuracy", "by": "race", "max_gap": 0.25},
                       {"metric": "accuracy", "by": "overall", "min": 0.4}]}

    def table(rows, probs):
        """A model's predictions table as a user hands it over: labels, path, one prob_<race> column per class."""
        frame = rows[["image_id", "race", "gender", "age", "path", "sha256"]].reset_index(drop=True).copy()
        for k, race in enumerate(races):
            frame[f"prob_{race}"] = probs[:, k]
        return frame

    folders = {}
    for name, c in ((HOSTILE, 1.0), ("pixels-weak", 0.0005)):
        model = make_pipeline(StandardScaler(), PCA(32, random_state=0), LogisticRegression(C=c, max_iter=300))
        model.fit(x_train, train["race"].astype(str))
        order = [list(model.classes_).index(r) for r in races]
        result = faceaudit.audit(
            table(test, model.predict_proba(x_test)[:, order]), schema=faceaudit.UTKFACE,
            val=table(val, model.predict_proba(x_val)[:, order]), embeddings=model[:-1].transform(x_test),
            embedding_source="model", gates=gates, n_boot=100, tsne=name == HOSTILE,
            model_info={"name": name, "kind": "predictions", "source": "sklearn", "backbone": "PCA + logistic regression",
                   "run_hash": None, "synthetic": False, "run": None},
            data_info={"source": str(dataset.source), "fingerprint": dataset.fingerprint, "split": "test",
                  "n": N_TEST, "n_val": len(val), "synthetic": False, "age_bands": "default",
                  "predictions_sha256": None})
        folders[name] = result.write(tmp_path_factory.mktemp("audit"))
    return folders


@pytest.fixture(scope="module")
def rendered(audits):
    from faceaudit.auditing.report import render_report

    folder = audits[HOSTILE]
    timings: dict = {}
    paths = render_report(folder, timings=timings)
    return folder, paths, timings


def test_report_files_and_sizes(rendered):
    folder, paths, _ = rendered
    assert [p.name for p in paths] == ["report.html", "report.pdf", "summary.md"]
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert (folder / "report.html").stat().st_size < 5 * 1024 * 1024
    # Self-contained: no external resource, every image inline.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert re.findall(r'<img src="([^"]{0,30})', html) and all(
        s.startswith("data:image/") for s in re.findall(r'<img src="([^"]{0,30})', html))
    for section in ("Verdict", "Model card", "The evaluated data", "Overall and per-group metrics",
                    "Per-group confusion matrices", "Calibration", "Embedding clusters", "Error gallery",
                    "Training curves", "Reproducibility"):
        assert f"{section}</a>" in html, section
    # Every figure has a caption that says what to look for.
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html, flags=re.S)
    assert len(captions) >= 7 and all("Look" in c for c in captions)


def test_hostile_model_name_is_text(rendered):
    folder, _, _ = rendered
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert "<script>" not in summary


def test_summary_is_short_and_complete(rendered, audits):
    folder, _, _ = rendered
    lines = (folder / "summary.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 60
    text = "\n".join(lines)
    result = json.loads((folder / "audit.json").read_text())
    assert result["gates"]["status"].upper() in lines[0]
    assert "### Gates" in text and "### Worst groups" in text
    assert re.search(r"\d+\.\d% \[\d+\.\d, \d+\.\d\]", text)  # values come with their CIs


def test_report_states_its_statistics(rendered):
    """The report says how each interval is made and how many comparisons it is adjusted for, shows single-race
    groups without balanced accuracy, and never prints a zero-width interval."""
    folder, _, _ = rendered
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "bootstrap confidence interval" not in html
    for phrase in ("Clopper–Pearson", "MOVER", "Holm", "Bonferroni", "vs rest", "ECE (debiased)",
                   "stated here, not propagated", "ranked groups"):
        assert phrase in html, phrase
    assert not re.search(r"(\d+\.\d)% \[\1, \1\]", html)
    metrics = html[html.index('id="metrics"'):html.index('id="confusion"')]
    race = metrics[metrics.index("<h3>By race</h3>"):metrics.index("<h3>By gender</h3>")]
    assert "Balanced acc." not in race and "FPR [CI]" in race and "Selected / true share" in race
    gender = metrics[metrics.index("<h3>By gender</h3>"):metrics.index("<h3>By age band</h3>")]
    assert "Balanced acc. [CI]" in gender and "Macro-F1 [CI]" in gender
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert "vs rest, pts [Bonferroni CI]" in summary and "p (Holm)" in summary and "Holm-adjusted (step-down" in summary


def test_report_in_headless_chromium(rendered, tmp_path):
    from browser import check_page, find_chromium

    if find_chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    folder, _, _ = rendered
    page = check_page(folder / "report.html")
    (tmp_path / "screenshot.png").write_bytes(page.screenshot)
    assert page.images_total >= 30  # figures plus the gallery's thumbnails
    assert page.images_broken == []
    assert page.network_requests == []
    assert page.failed_requests == []
    assert page.scripts == 1  # only the inline table-sorting script: the hostile name did not become a script
    assert "alert(1)" in page.title
    assert len(page.screenshot) > 10_000 and page.screenshot[:4] == b"\x89PNG"
    from PIL import Image

    with Image.open(tmp_path / "screenshot.png") as shot:
        assert shot.size == (1366, 900)
        assert len(shot.convert("L").getcolors(1 << 16) or []) > 20  # not a blank page


def _figure_areas(pdf) -> list[tuple[int, float]]:
    """(page, top of the caption in points) for every "Figure N." caption, from pdftotext's word boxes."""
    xhtml = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    found = []
    for number, page in enumerate(xhtml.split("<page ")[1:], start=1):
        words = re.findall(r'<word xMin="([\d.]+)" yMin="([\d.]+)"[^>]*>([^<]*)</word>', page)
        for (x, y, word), (_, _, following) in zip(words, words[1:]):
            if word == "Figure" and re.fullmatch(r"\d+\.", following):
                found.append((number, float(y)))
    return found


def test_pdf_pages_and_figures(rendered, tmp_path):
    folder, _, _ = rendered
    pdf = folder / "report.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert 6 <= pages <= 30
    assert "A4" in info or "595.28 x 841.89" in info
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    rendered_pages = sorted(tmp_path.glob("page-*.png"))
    assert len(rendered_pages) == pages
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    image_pages = sorted({int(line.split()[0]) for line in listing.splitlines()[2:] if line.split()[2] == "image"})
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert sum(1 for line in listing.splitlines()[2:] if line.split()[2] == "image") == html.count("<img ")
    # Figures are really drawn: every embedded picture has content, and each page carrying one shows colour.
    subprocess.run(["pdfimages", "-png", str(pdf), str(tmp_path / "img")], check=True)
    kinds = [line.split()[2] for line in listing.splitlines()[2:]]
    pictures = [p for p, kind in zip(sorted(tmp_path.glob("img-*.png")), kinds) if kind == "image"]
    from PIL import Image

    for picture in pictures:
        with Image.open(picture) as image:
            assert np.asarray(image.convert("L"), dtype=float).std() > 10, f"{picture.name} is blank"
    # Each figure's area (just above its "Figure N." caption) is drawn on the rendered page, not left blank.
    figures = _figure_areas(pdf)
    assert len(figures) == html.count("<figcaption>")
    assert {page for page, _ in figures} <= set(image_pages)
    for page, caption_top in figures:
        with Image.open(rendered_pages[page - 1]) as image:
            grey = np.asarray(image.convert("L"), dtype=float)
        scale = grey.shape[0] / 841.89  # pixels per PDF point (A4 height)
        area = grey[max(0, int((caption_top - 90) * scale)):int((caption_top - 4) * scale), :]
        assert np.mean(area < 235) > 0.04 and area.std() > 15, f"figure above y={caption_top:.0f} on page {page} is blank"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert f"Page 1 of {pages}" in text and f"Page {pages} of {pages}" in text
    assert "alert(1)" in text  # the running header and title show the hostile name as text


def test_no_thumbnails_leaves_faces_out(audits, tmp_path):
    assert main(["report", str(audits["pixels-weak"]), "--out", str(tmp_path), "--no-thumbnails", "--no-pdf"]) == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "data:image/jpeg" not in html
    assert "--no-thumbnails" in html
    assert not (tmp_path / "report.pdf").exists()


def test_compare_two_audits(audits, tmp_path, capsys):
    seed_dir = _seed_dir()
    out = tmp_path / "compare"
    args = ["compare", str(audits[HOSTILE]), str(audits["pixels-weak"]), "--out", str(out)]
    histories = sorted(seed_dir.glob("*_history.json")) if seed_dir else []
    if histories:
        args += ["--history", *map(str, histories)]
    assert main(args) == 0
    for name in ("compare.html", "compare.pdf", "paired_tests.csv", "ranking.csv", "compare.md"):
        assert (out / name).is_file(), name
    import pandas as pd

    tests = pd.read_csv(out / "paired_tests.csv")
    overall = tests[tests["grouping"] == "overall"].iloc[0]
    assert overall["n"] == N_TEST
    # The weak model is far worse overall: the paired test must see it.
    assert overall["diff"] < 0 and overall["diff_hi"] < 0 and overall["p_value"] < 0.001
    assert set(tests["grouping"]) == {"overall", "race", "gender", "age_band", "race×gender"}
    # One family per pair: Holm over every tested group, intervals at the matching Bonferroni level.
    family = int((~tests["too_small"]).sum())
    assert (tests["family"] == family).all() and tests["interval_level"].iloc[0] == pytest.approx(1 - 0.05 / family)
    assert (tests["p_holm"].dropna() >= tests["p_value"].dropna()).all()
    ranks = pd.read_csv(out / "ranking.csv")
    assert list(ranks["rank_worst_group"]) == sorted(ranks["rank_worst_group"])
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert HOSTILE not in html
    from browser import check_page

    page = check_page(out / "compare.html")
    assert page.images_total >= 3 and page.images_broken == [] and page.network_requests == [] and page.scripts == 0
    assert not re.search(r"(?<!\\)<script", (out / "compare.md").read_text())  # Markdown-escaped: \<script\>
    if histories:
        assert (out / "model_predict_curves_3.png").is_file()
        from PIL import Image

        with Image.open(out / "model_predict_curves_3.png") as image:
            assert image.size == (4500, 2400)  # the seed figure's size
        assert "ResNet50" in html and "Xception" in html and "EfficientnetV2" in html


def test_compare_refuses_different_test_sets(audits, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(audits["pixels-weak"], other)
    predictions = (other / "predictions.csv").read_text().splitlines()
    (other / "predictions.csv").write_text("\n".join(predictions[:-5]) + "\n")
    code = main(["compare", str(audits[HOSTILE]), str(other), "--out", str(tmp_path / "c"), "--no-pdf"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("faceaudit: error: test sets differ") and "\n" not in err
    assert not (tmp_path / "c" / "compare.html").exists()


def test_diff_paired_and_unpaired(audits, tmp_path, capsys):
    old, new = audits["pixels-weak"], audits[HOSTILE]
    assert main(["diff", str(old / "audit.json"), str(new / "audit.json"), "--out", str(tmp_path / "d.md")]) == 0
    out = capsys.readouterr().out
    assert "paired: Newcombe method 10 interval, McNemar test, Holm over the family" in out
    assert re.search(r"\| overall \| all \|.*\| better \|", out), out
    assert main(["diff", str(new), str(old), "--fail-on-worse"]) == 1
    capsys.readouterr()
    # Without predictions the diff treats the two audits as independent samples, and says so.
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(old / "audit.json", bare / "audit.json")
    assert main(["diff", str(bare), str(new)]) == 0
    out = capsys.readouterr().out
    assert "unpaired: Newcombe interval, two-proportion test" in out and "not paired" in out
    # Less power without pairing (the overall gain is no longer clear), but never a wrong direction.
    assert "| better |" in out and "| worse |" not in out


def _seed_dir():
    import os
    from pathlib import Path

    value = os.environ.get("FACEAUDIT_SEED_DIR")
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"$FACEAUDIT_SEED_DIR names {path}, which does not exist")
    return path


def test_training_curves_from_run_history(audits, tmp_path):
    """An audit of a run folder shows that run's per-phase history.json (here the seed's ResNet50 phases)."""
    import shutil

    seed_dir = _seed_dir()
    if seed_dir is None:
        pytest.skip("$FACEAUDIT_SEED_DIR is not set")
    run = tmp_path / "run"
    run.mkdir()
    phases = {phase: json.loads((seed_dir / f"ResNet50-{phase}_history.json").read_text())
              for phase in ("freeze", "unfreeze")}
    (run / "history.json").write_text(json.dumps(phases))
    folder = tmp_path / "audit"
    shutil.copytree(audits["pixels-weak"], folder)
    result = json.loads((folder / "audit.json").read_text())
    result["model"].update(kind="run", source=str(run))
    (folder / "audit.json").write_text(json.dumps(result))
    assert main(["report", str(folder), "--no-pdf", "--no-thumbnails"]) == 0
    html = (folder / "report.html").read_text(encoding="utf-8")
    training = html[html.index('id="training"'):html.index('id="reproducibility"')]
    assert "<img " in training and "freeze (30 epochs), unfreeze (6 epochs)" in training


def test_report_without_optional_parts(audits, tmp_path):
    """Labels-only predictions, no embeddings, no gates, no predictions.csv: the report says so instead of failing."""
    import shutil

    folder = tmp_path / "bare"
    folder.mkdir()
    result = json.loads((audits["pixels-weak"] / "audit.json").read_text())
    result.update(calibration=None, embeddings=None, gates=None)
    (folder / "audit.json").write_text(json.dumps(result))
    assert main(["report", str(folder / "audit.json"), "--no-pdf"]) == 0
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "NOT GATED" in html and "labels only, no class probabilities" in html
    assert "predictions.csv was not found" in html and "had no embeddings" in html
    assert len((folder / "summary.md").read_text().splitlines()) <= 60
    shutil.rmtree(folder)
