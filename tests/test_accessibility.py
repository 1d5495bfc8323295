"""A report for every reader, on a real audit of real UTKFace faces: axe-core in headless Chromium, a tagged PDF whose
page 1 carries the verdict, colours that survive colour-vision deficiencies, figure text of 8 pt or more in print,
group tables sortable in the browser, a short repr for notebooks, and no gallery tiles for absent images."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_real import HOSTILE, audits  # noqa: F401 - the module's real audits fixture

ROOT = Path(__file__).resolve().parents[1]
#: axe-core from npm (tools/package.json, installed by .ci/run with `npm ci --prefix tools`); no network at test time.
AXE = ROOT / "tools" / "node_modules" / "axe-core" / "axe.min.js"
#: Two colours of one categorical palette count as distinguishable when they are at least this far apart in
#: CAM02-UCS (ΔE, ~1 = just noticeable side by side; 10 keeps small markers and legend swatches apart).
MIN_DELTA_E = 10.0
#: Colour-vision deficiencies simulated, at full severity (dichromacy).
DEFICIENCIES = ("deuteranomaly", "protanomaly", "tritanomaly")
#: Diverging colour maps that run red to green (or pink / purple / brown to green); none may appear in the code.
RED_GREEN_MAPS = ("RdYlGn", "RdGn", "PiYG", "PRGn", "BrBG")


@pytest.fixture(scope="module")
def report(audits, tmp_path_factory):  # noqa: F811
    """The hostile-named real audit rendered to HTML, PDF and summary.md in a folder of its own."""
    from faceaudit.auditing.report import render_report

    folder = tmp_path_factory.mktemp("a11y") / "audit"
    shutil.copytree(audits[HOSTILE], folder)
    render_report(folder)
    return folder


def _axe_violations(html: Path) -> tuple[list[dict], list[str]]:
    from browser import find_chromium, run_in_page

    if find_chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `npm ci --prefix tools` (.ci/run does)")
    run = ("axe.run(document).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, "
           "nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))")
    values, errors = run_in_page(html, [AXE.read_text(encoding="utf-8") + "\n;'loaded'", run])
    assert values[0] == "loaded"
    return values[1], errors


def test_axe_finds_no_serious_violations(report):
    violations, errors = _axe_violations(report / "report.html")
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
    assert errors == []


def test_html_landmarks_alt_text_and_keyboard_contents(report):
    html = (report / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    for landmark in ("<header", "<nav", "<main", "<footer"):
        assert landmark in html, landmark
    assert '<a class="skip" href="#main">' in html and '<main id="main"' in html
    images = re.findall(r"<img [^>]*>", html)
    assert images and all(re.search(r'alt="[^"]{3,}"', img) for img in images)
    contents = html[html.index('<nav class="toc screen-toc"'):html.index("</nav>")]
    assert len(re.findall(r'<a href="#[\w-]+">', contents)) >= 8  # every section reachable by Tab from the top
    # One inline script (sorting and filtering); the hostile model name stayed text.
    assert html.count("<script") == 1 and "<script>alert(1)" not in html
    # With scripts off the group tables are complete plain tables.
    table = html[html.index('<table class="sortable">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr") >= 3 and 'scope="col"' in table


def _pdf_text(pdf: Path, *args: str) -> str:
    return subprocess.run(["pdftotext", *args, str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def _catalog_language(pdf: Path) -> set[bytes]:
    """The /Lang entries of a PDF, read from its plain and Flate-compressed objects."""
    data = pdf.read_bytes()
    found = set(re.findall(rb"/Lang\s*\(([^)]*)\)", data))
    for match in re.finditer(rb"stream\r?\n", data):
        end = data.find(b"endstream", match.end())
        try:
            found |= set(re.findall(rb"/Lang\s*\(([^)]*)\)", zlib.decompress(data[match.end():end])))
        except zlib.error:
            continue
    return found


def test_pdf_is_tagged_with_the_verdict_on_page_one(report):
    from faceaudit.auditing.report.findings import findings
    from faceaudit.auditing.result import load_audit

    pdf = report / "report.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Tagged:\s+yes", info)
    assert "alert(1)" in re.search(r"Title:\s+(.*)", info).group(1)
    assert b"en" in _catalog_language(pdf)
    structure = subprocess.run(["pdfinfo", "-struct", str(pdf)], capture_output=True, text=True, check=True).stdout
    tags = {line.split()[0].rstrip(":") for line in structure.splitlines() if line.strip()}
    assert {"H1", "H2", "H3", "Table", "TH", "TD", "Figure", "Caption"} <= tags, tags
    page_one = " ".join(_pdf_text(pdf, "-f", "1", "-l", "1").split())
    result = load_audit(report)
    status = result.gates["status"].upper()
    assert f"Gates: {status}" in page_one  # the verdict
    first = " ".join(findings(result)[0].text.split())
    assert first[:120] in page_one  # the first finding, whole sentence start
    assert page_one.index("What matters most") < page_one.index("Contents")  # contents follow the verdict


def _delta_e(a: str, b: str, deficiency: str | None) -> float:
    from colorspacious import cspace_convert
    from matplotlib.colors import to_rgb

    def seen(colour: str) -> np.ndarray:
        rgb = np.array(to_rgb(colour))
        if deficiency:
            rgb = np.clip(cspace_convert(rgb, {"name": "sRGB1+CVD", "cvd_type": deficiency, "severity": 100},
                                         "sRGB1"), 0, 1)
        return cspace_convert(rgb, "sRGB1", "CAM02-UCS")

    return float(np.linalg.norm(seen(a) - seen(b)))


def _css_colours(*names: str) -> tuple[str, ...]:
    css = (ROOT / "templates" / "base.css").read_text(encoding="utf-8")
    return tuple(re.search(rf"--{name}:\s*(#[0-9a-fA-F]{{6}})", css).group(1) for name in names)


def test_palettes_stay_distinguishable_under_colour_blindness():
    from faceaudit.auditing.report.charts import GREY
    from faceaudit.templates.figures import BETTER, NEUTRAL, PALETTE, WORSE

    palettes = {
        "groups (t-SNE, curves; up to 8 classes)": PALETTE,
        "forest plot: worse / better / neither / too small": (WORSE, BETTER, NEUTRAL, GREY),
        "tables and badges: fail / pass / inconclusive": _css_colours("fail", "pass", "undecided"),
    }
    closest = {}
    for name, palette in palettes.items():
        for deficiency in (None, *DEFICIENCIES):
            distance, a, b = min((_delta_e(a, b, deficiency), a, b) for a, b in itertools.combinations(palette, 2))
            closest[(name, deficiency)] = distance
            assert distance >= MIN_DELTA_E, f"{name}: {a} and {b} are ΔE {distance:.1f} apart under {deficiency}"
    assert min(closest.values()) >= MIN_DELTA_E


def test_no_red_green_colour_map_in_the_code():
    sources = [p for folder in ("audit", "templates", "datasets", "faceaudit", "training")
               for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".html", ".css", ".js")]
    assert len(sources) > 50
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for name in RED_GREEN_MAPS:
            assert not re.search(rf"['\"]{name}(_r)?['\"]", text), f"{path.relative_to(ROOT)} uses {name}"


def test_every_figure_prints_text_of_8pt_or_more(report):
    from faceaudit.auditing.report.render import report_sections
    from faceaudit.auditing.result import load_audit
    from faceaudit.templates.figures import MIN_PRINT_PT, Figure

    def figures(value):
        if isinstance(value, Figure):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from figures(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from figures(item)

    found = [(section.id, figure) for section in report_sections(load_audit(report), report, thumbnails=False)
             for figure in figures(section.context)]
    assert len(found) >= 7  # forest, heatmap, two confusion figures, reliability, temperature, t-SNE
    small = [(sid, f.alt, f.min_text_pt) for sid, f in found if f.min_text_pt < MIN_PRINT_PT]
    assert small == []


_SORT = """(() => {
  const table = document.querySelector('table.sortable');
  const heads = Array.from(table.tHead.rows[0].cells);
  const n = heads.findIndex(h => h.textContent.trim().startsWith('n'));
  const column = () => Array.from(table.tBodies[0].rows).map(r => parseInt(r.cells[n].textContent.replace(/,/g, '')));
  const before = column();
  heads[n].querySelector('button').click();
  const ascending = column();
  const state1 = heads[n].getAttribute('aria-sort');
  heads[n].querySelector('button').click();
  const descending = column();
  const state2 = heads[n].getAttribute('aria-sort');
  const filter = document.getElementById('filter-0');
  const first = table.tBodies[0].rows[0].cells[0].textContent.trim();
  filter.value = first;
  filter.dispatchEvent(new Event('input'));
  const visible = Array.from(table.tBodies[0].rows).filter(r => !r.hidden).length;
  return {before, ascending, descending, state1, state2, visible, rows: table.tBodies[0].rows.length,
          focusable: heads[n].querySelector('button').tabIndex};
})()"""


def test_sorting_a_group_table_by_its_header(report):
    from browser import find_chromium, run_in_page

    if find_chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    (seen,), errors = run_in_page(report / "report.html", [_SORT])
    assert errors == []
    assert len(seen["before"]) >= 3 and seen["before"] != sorted(seen["before"])  # not already in order
    assert seen["ascending"] == sorted(seen["before"]) and seen["state1"] == "ascending"
    assert seen["descending"] == sorted(seen["before"], reverse=True) and seen["state2"] == "descending"
    assert 1 <= seen["visible"] < seen["rows"]  # filtering by a group's name leaves that group
    assert seen["focusable"] == 0  # a real button: reachable with Tab, sorted with Enter


def test_repr_and_notebook_view_are_short(audits):  # noqa: F811
    import faceaudit

    result = faceaudit.load_audit(audits[HOSTILE])
    text, html = repr(result), result._repr_html_()
    assert len(text) < 2000 and 3 <= len(text.splitlines()) <= 10
    assert "AuditResult" in text and result.gates["status"].upper() in text
    assert len(html) < 20000 and "<table>" in html
    assert "<script>alert(1)" not in html  # the hostile name is escaped


def test_gallery_has_no_tiles_for_absent_images(audits, tmp_path):  # noqa: F811
    """Predictions whose image paths do not exist (a predictions-only audit elsewhere): no tiles, one sentence."""
    from faceaudit.auditing.report import render_report

    folder = tmp_path / "audit"
    shutil.copytree(audits["pixels-weak"], folder)
    predictions = pd.read_csv(folder / "predictions.csv", dtype=str)
    predictions["path"] = [f"elsewhere/{Path(p).name}" for p in predictions["path"]]
    predictions.to_csv(folder / "predictions.csv", index=False)
    render_report(folder, pdf=False)
    html = (folder / "report.html").read_text(encoding="utf-8")
    gallery = html[html.index('id="errors"'):html.index('id="training"')]
    assert gallery.count("The gallery is empty") == 1
    assert 'class="thumb"' not in gallery and "image file not found" not in gallery
    assert "data:image/jpeg" not in gallery


def test_reproducibility_command_says_how_to_rerun(audits, tmp_path):  # noqa: F811
    """A command recorded with absolute paths prints file names (no machine folders) and says how to rerun it."""
    from faceaudit.auditing.report import render_report

    folder = tmp_path / "audit"
    shutil.copytree(audits["pixels-weak"], folder)
    audit = json.loads((folder / "audit.json").read_text())
    audit["settings"]["command"] = f"faceaudit audit --predictions {tmp_path}/in/preds.csv --out {folder}"
    (folder / "audit.json").write_text(json.dumps(audit))
    render_report(folder, pdf=False)
    html = (folder / "report.html").read_text(encoding="utf-8")
    section = html[html.index('id="reproducibility"'):]
    assert "faceaudit audit --predictions preds.csv --out audit" in section
    assert str(tmp_path) not in html
    note = section[section.index("To rerun it as printed"):]
    assert "preds.csv" in note[:200] and "audit.json records the full paths" in note


def test_progress_bars_need_no_notebook_widgets():
    """tqdm.auto (and tqdm.notebook) warn "IProgress not found" in a notebook without ipywidgets: plain bars only."""
    sources = [p for folder in ("audit", "datasets", "faceaudit", "training", "models")
               for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 50
    offenders = [str(p.relative_to(ROOT)) for p in sources
                 if re.search(r"^\s*(from tqdm\.(auto|notebook) import|import tqdm\.(auto|notebook))",
                              p.read_text(encoding="utf-8"), re.M)]
    assert offenders == []
