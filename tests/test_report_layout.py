"""Every report kind fits its A4 pages: each text block pdftotext finds lies inside the page's printable area, so
nothing (a table's last column, a long file name) is cut off at the right edge, and the reports name files, not
the folders of the machine that made them. Real reports: the audit report and comparison of real UTKFace audits
(tests/test_report_real.py's fixtures) and the data-inspection report of real UTKFace images."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from test_report_real import HOSTILE, audits  # noqa: F401  (module fixture: two real audits)

from faceaudit.cli import main

#: The page margins of templates/base.css (@page: 18mm 14mm 16mm 14mm), in PDF points.
MM = 72 / 25.4
LEFT = RIGHT = 14 * MM
#: How far a text block may reach into the side margins (rounding, italic overhang) before it counts as cut off.
TOLERANCE = 3.0
#: The running header and page numbers sit in the top and bottom margins; nothing may touch the paper's edge.
EDGE = 8.0


def _blocks(pdf: Path):
    """(page, width, height, xMin, yMin, xMax, yMax, text) of every text block, from ``pdftotext -bbox-layout``."""
    xhtml = subprocess.run(["pdftotext", "-bbox-layout", str(pdf), "-"], capture_output=True, text=True,
                           check=True).stdout
    pages = xhtml.split("<page ")[1:]
    assert pages, f"{pdf} has no pages"
    for number, page in enumerate(pages, start=1):
        width, height = map(float, re.match(r'width="([\d.]+)" height="([\d.]+)"', page).groups())
        for block in re.finditer(r'<block xMin="([-\d.]+)" yMin="([-\d.]+)" xMax="([-\d.]+)" yMax="([-\d.]+)">'
                                 r'(.*?)</block>', page, flags=re.S):
            box = tuple(map(float, block.groups()[:4]))
            text = " ".join(re.findall(r">([^<]+)</word>", block.group(5)))
            yield (number, width, height, *box, text)


def outside_page(pdf: Path) -> list[str]:
    """Text blocks that stick out of the page's printable area (left and right margins), or touch the paper's
    edge at the top or bottom; empty when everything fits."""
    found = []
    for page, width, height, x0, y0, x1, y1, text in _blocks(pdf):
        if x0 < LEFT - TOLERANCE or x1 > width - RIGHT + TOLERANCE or y0 < EDGE or y1 > height - EDGE:
            found.append(f"page {page}: [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}] of {width:.0f}x{height:.0f}: "
                         f"{text[:80]!r}")
    return found


def _assert_fits(pdf: Path, min_pages: int = 1) -> None:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "595.28 x 841.89" in info or "A4" in info
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) >= min_pages
    blocks = list(_blocks(pdf))
    assert len(blocks) > 20 * min_pages / 2  # pdftotext really read the text
    overflow = outside_page(pdf)
    assert not overflow, f"{pdf.name}: {len(overflow)} text blocks outside the page:\n" + "\n".join(overflow[:15])


def _pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def test_checker_sees_a_table_cut_off(tmp_path):
    """The check itself: a table wider than the page is reported, a fitting one is not."""
    from faceaudit.templates.layout import Section, Table, render_document, write_pdf

    env_dir = tmp_path / "tpl"
    (env_dir / "t").mkdir(parents=True)
    (env_dir / "t" / "wide.html").write_text('{% import "macros.html" as ui %}{{ ui.table(table) }}')
    for columns, fits in ((2, True), (14, False)):
        table = Table([f"Column {i}" for i in range(columns)], numeric=set(range(columns)))
        table.add(*[f"{i}.123456 [0.000001, 9.999999]" for i in range(columns)])
        html = render_document("Layout check", [Section("t", "Table", "t/wide.html", {"table": table})],
                               template_dirs=[env_dir])
        pdf = write_pdf(html, tmp_path / f"wide{columns}.pdf")
        assert (not outside_page(pdf)) is fits, (columns, outside_page(pdf))


def test_audit_report_fits_a4(audits, tmp_path):  # noqa: F811
    import faceaudit

    folder = tmp_path / "audit"
    shutil.copytree(audits[HOSTILE], folder)
    assert faceaudit.load_audit(folder).report() == folder
    pdf = folder / "report.pdf"
    _assert_fits(pdf, min_pages=6)
    text = _pdf_text(pdf)
    result = json.loads((folder / "audit.json").read_text())
    source = Path(result["data"]["source"])
    assert source.is_absolute() and str(source.parent) not in text  # the data named by file name only
    assert source.name in text
    assert str(folder) not in text and str(tmp_path) not in text


def test_model_card_training_labels_are_readable(audits, tmp_path):  # noqa: F811
    """A run record's dotted keys become labels, flags yes/no, counts with separators, paths file names."""
    folder = tmp_path / "audit"
    shutil.copytree(audits["pixels-weak"], folder)
    result = json.loads((folder / "audit.json").read_text())
    result["model"]["run"] = {
        "seed": 42, "image_size": 64, "weights": "/home/someone/weights/resnet50_notop.h5",
        "phases": [{"name": "freeze", "epochs": 30, "epochs_run": 12}, {"name": "unfreeze", "epochs": 6, "epochs_run": 6}],
        "data": {"source": "/home/someone/data/UTKFace-64px.tar.gz", "synthetic": False,
                 "split_sizes": {"train": 17081, "val": 2135, "test": 2133}}}
    (folder / "audit.json").write_text(json.dumps(result))
    assert main(["report", str(folder), "--no-thumbnails"]) == 0
    html = (folder / "report.html").read_text(encoding="utf-8")
    card = html[html.index('id="model-card"'):html.index('id="data"')]
    for label, value in (("Training images", "17,081"), ("Validation images", "2,135"), ("Test images", "2,133"),
                         ("Freeze phase: epochs run", "12"), ("Unfreeze phase: epochs planned", "6"),
                         ("Synthetic data", "no"), ("Training data", "UTKFace-64px.tar.gz"), ("Seed", "42"),
                         ("Weights", "resnet50_notop.h5")):
        assert re.search(rf"<th scope=\"row\">{re.escape(label)}</th><td>{re.escape(value)}</td>", card), label
    assert "split_sizes" not in card and "epochs_run" not in card and "data.synthetic" not in card
    assert "/home/someone" not in html
    _assert_fits(folder / "report.pdf", min_pages=6)


def test_compare_fits_a4(audits, tmp_path):  # noqa: F811
    from test_report_real import _seed_dir

    out = tmp_path / "compare"
    args = ["compare", str(audits[HOSTILE]), str(audits["pixels-weak"]), "--out", str(out)]
    seed_dir = _seed_dir()
    histories = sorted(seed_dir.glob("*_history.json")) if seed_dir else []
    args += ["--history", *map(str, histories)] if histories else []
    assert main(args) == 0
    pdf = out / "compare.pdf"
    _assert_fits(pdf, min_pages=2)
    text = _pdf_text(pdf)
    assert "Holm p" in text  # the paired-tests table's last columns are on the page
    for history in histories:
        assert str(history.parent) not in text
    if histories:
        assert histories[0].name in text.replace("\n", "")


def test_data_inspection_report_fits_a4(utk_sample_dir, tmp_path):
    """Real images, plus a relabelled copy so the label-conflict table (the widest) has rows."""
    folder = tmp_path / "faces"
    shutil.copytree(utk_sample_dir, folder)
    originals = sorted(folder.iterdir())
    for k, path in enumerate(originals[:6]):
        age, gender, race, _ = path.name.split("_", 3)
        other = (int(race) + 1) % 5
        shutil.copy(path, folder / f"{age}_{gender}_{other}_2099010100000000{k}.jpg.chip.jpg")
    out = tmp_path / "inspect"
    assert main(["data", "inspect", str(folder), "--out", str(out)]) == 0
    pdf = out / "report.pdf"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "race · gender · age" in html  # the conflict table is there
    _assert_fits(pdf, min_pages=4)
    assert str(tmp_path) not in _pdf_text(pdf)
