"""Report building blocks without the data set: layout and escaping, PDF pipeline, history formats, McNemar."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from faceaudit.auditing.report import Section, Table, render_document, write_document
from faceaudit.auditing.report.history import load_history, seed_pairs
from faceaudit.auditing.significance import mcnemar

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def partial_dir(tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "one.html").write_text('{% import "macros.html" as ui %}<p>{{ text }}</p>{{ ui.table(table) }}'
                                     '{{ ui.figure(fig) }}')
    return folder


def _document(partial_dir):
    from faceaudit.templates.figures import new_figure, png_figure

    fig, axis = new_figure(4, 3)
    axis.plot([0, 1, 2], [2, 0, 1], color="#0072B2", linewidth=4)
    figure = png_figure(fig, caption=f"A line; look for {HOSTILE}.", alt=HOSTILE)
    table = Table(["name", "value"], numeric={1}, caption=HOSTILE)
    table.add(HOSTILE, "1.0")
    sections = [Section("first", f"First {HOSTILE}", "one.html", {"text": HOSTILE, "table": table, "fig": figure}),
                Section("second", "Second", "one.html", {"text": "plain", "table": table, "fig": None})]
    return render_document(f"Report for {HOSTILE}", sections, running_header=f"model {HOSTILE} · 2026-11-29",
                           meta=[("Model", HOSTILE)], template_dirs=[partial_dir])


def test_render_document_escapes_everything(partial_dir):
    html = _document(partial_dir)
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 7
    assert '<a href="#first">' in html and 'id="second"' in html
    assert 'src="data:image/png;base64,' in html
    # The stylesheet is inline and intact (quotes are not entity-escaped inside <style>).
    assert '"DejaVu Sans"' in html and "@page" in html


def test_document_pdf_has_running_header_and_page_numbers(partial_dir, tmp_path):
    html = _document(partial_dir)
    paths = write_document(html, tmp_path, "doc")
    assert [p.name for p in paths] == ["doc.html", "doc.pdf"]
    umask = os.umask(0)
    os.umask(umask)
    assert paths[0].stat().st_mode & 0o777 == 0o666 & ~umask  # the usual mode for new files, not mkstemp's 0600
    text = subprocess.run(["pdftotext", "-layout", str(paths[1]), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "Page 1 of" in text and HOSTILE in text


def test_pdf_never_fetches(tmp_path):
    """A remote image in a document is refused by the PDF pipeline: the server never hears a request."""
    import http.server
    import threading

    from faceaudit.templates.layout import write_pdf

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        html = (f'<html><head><link rel="stylesheet" href="http://127.0.0.1:{port}/s.css"></head><body><p>x</p>'
                f'<img src="http://127.0.0.1:{port}/x.png" alt="remote"></body></html>')
        write_pdf(html, tmp_path / "x.pdf")
    finally:
        server.shutdown()
        server.server_close()
    assert hits == []
    assert (tmp_path / "x.pdf").read_bytes()[:4] == b"%PDF"


def test_chromium_checker_sees_remote_requests(tmp_path):
    from browser import check_page, find_chromium

    if find_chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    page = tmp_path / "remote.html"
    page.write_text('<html><head><title>t</title></head><body><img src="http://127.0.0.1:9/x.png" alt="remote">'
                    '</body></html>')
    check = check_page(page)
    assert check.network_requests == ["http://127.0.0.1:9/x.png"]
    assert check.images_broken == ["remote"]


def test_seed_histories_flat_and_paired():
    seed = os.environ.get("FACEAUDIT_SEED_DIR")
    if not seed:
        pytest.skip("$FACEAUDIT_SEED_DIR is not set")
    files = sorted(Path(seed).glob("*_history.json"))
    assert len(files) == 6
    runs = {h.name: h for h in seed_pairs([load_history(f) for f in files])}
    assert set(runs) == {"EfficientnetV2-l-21k-ft1k", "ResNet50", "VGG16", "Xception"}
    assert [(p.name, p.epochs) for p in runs["ResNet50"].phases] == [("freeze", 30), ("unfreeze", 6)]
    raw = json.loads((Path(seed) / "ResNet50-unfreeze_history.json").read_text())
    assert runs["ResNet50"].phases[1].metrics["val_accuracy"] == raw["val_accuracy"]
    assert len(runs["ResNet50"].metric("val_loss")) == 36


def test_per_phase_history_shapes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text(json.dumps({"freeze": {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]},
                                                   "unfreeze": {"loss": [0.4], "val_loss": [0.6]}}))
    history = load_history(run / "history.json")
    assert history.name == "run"
    assert [(p.name, p.epochs) for p in history.phases] == [("freeze", 2), ("unfreeze", 1)]
    assert history.metric("val_loss") == [1.1, 0.7, 0.6]
    bad = tmp_path / "bad_history.json"
    bad.write_text('{"note": "nothing"}')
    from faceaudit.errors import FaceauditError

    with pytest.raises(FaceauditError):
        load_history(bad)


def test_mcnemar_exact_and_chi2():
    p, method = mcnemar(10, 2)
    assert method == "exact binomial"
    assert p == pytest.approx(0.03857, abs=1e-4)  # 2 * P(X <= 2 | 12, 0.5)
    p, method = mcnemar(40, 20)
    assert method.startswith("chi-squared")
    assert p == pytest.approx(0.01417, abs=1e-4)  # (|40-20|-1)^2/60 = 6.017, df 1
    assert mcnemar(0, 0)[0] == 1.0


def test_report_refuses_bad_audit_in_one_line(tmp_path, capsys):
    from faceaudit.cli import main

    (tmp_path / "audit.json").write_text('{"schema_version": "9.0"}')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("faceaudit: error: audit.json schema version 9.0") and err.count("\n") == 1
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2


# -- the report on small audits: honest verdicts, never zero-width intervals -----------------------------------

ZERO_WIDTH = re.compile(r"(\d+\.\d)% \[\1, \1\]")


def _predictions_csv(path, rows):
    """A predictions CSV from ``(true race, predicted race, gender, age)`` rows; the prediction gets 0.9."""
    from faceaudit import UTKFACE

    records = []
    for i, (race, predicted, gender, age) in enumerate(rows):
        probs = {f"prob_{r}": (0.9 if r == predicted else 0.025) for r in UTKFACE.classes}
        records.append({"image_id": f"face{i}", "race": race, "gender": gender, "age": age, **probs})
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def _audit_result(csv, **settings):
    import faceaudit

    return faceaudit.audit(csv, n_boot=50, tsne=False, model_info={"name": "small", "kind": "predictions"},
                           data_info={"source": str(csv)}, **settings)


def test_too_small_audit_says_too_small_to_judge(tmp_path, capsys):
    """A 3-face test set gets one verdict in the console, report and summary: too small to judge; no findings."""
    from faceaudit.cli import main

    csv = _predictions_csv(tmp_path / "tiny.csv", [("White", "Black", "Male", 30), ("Black", "Black", "Female", 40),
                                                   ("Asian", "Asian", "Male", 50)])
    out = tmp_path / "tiny"
    assert main(["audit", "--predictions", str(csv), "--out", str(out), "--n-boot", "50", "--no-tsne"]) == 0
    console = capsys.readouterr().out
    assert "TOO SMALL TO JUDGE: 3 test images" in console and "No test images of Indian, Others" in console
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "TOO SMALL TO JUDGE" in summary.splitlines()[0]
    assert "### Findings" not in summary and "No test images of Indian, Others" in summary
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'class="badge too-small">TOO SMALL TO JUDGE<' in html
    assert "larger than sampling noise" not in html and "classified as" not in html
    for text in (summary, html, console):
        assert not ZERO_WIDTH.search(text), ZERO_WIDTH.search(text).group(0)
    assert "bootstrap confidence interval" not in html and "Clopper–Pearson" in html


def test_small_perfect_group_has_an_interval(tmp_path):
    """A 100%-accurate group keeps a proper interval everywhere it is shown, however large it is."""
    from faceaudit.auditing.report.formatting import fmt_stat, points
    from faceaudit.auditing.report.render import render_report

    rows = [("White", "White", "Male", 30)] * 8 + [("Black", "Asian" if i % 3 == 0 else "Black", "Female", 40)
                                                  for i in range(9)]
    result = _audit_result(_predictions_csv(tmp_path / "p.csv", rows), min_test_size=1, min_group_size=5)
    white = result.group("race", "White")["metrics"]["accuracy"]
    assert white["value"] == 1.0 and white["ci"][0] < 1.0
    assert fmt_stat(white).startswith("100.0% [") and not ZERO_WIDTH.search(fmt_stat(white))
    # Outward rounding: a huge perfect group still shows an interval below 100%, and a bound below zero stays below.
    assert fmt_stat({"value": 1.0, "ci": [0.99951, 1.0]}) == "100.0% [99.9, 100.0]"
    assert points({"value": -0.091, "ci": [-0.126, -0.0003]}) == "-9.1 pts [-12.6, -0.0]"
    folder = result.write(tmp_path / "audit")
    render_report(folder, pdf=False, thumbnails=False)
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "100.0% [" in html and not ZERO_WIDTH.search(html)
    assert not ZERO_WIDTH.search((folder / "summary.md").read_text(encoding="utf-8"))


def test_confusion_finding_needs_enough_faces(tmp_path):
    """No confusion sentence from a handful of faces ("0% of White faces are classified as Black")."""
    from faceaudit.auditing.report.findings import _confusion_finding, findings

    rows = [("White", "Black", "Male", 30), ("Black", "Black", "Female", 40), ("Asian", "Asian", "Male", 50)]
    result = _audit_result(_predictions_csv(tmp_path / "p.csv", rows), min_test_size=1)
    assert _confusion_finding(result) is None
    assert not any("classified as" in f.text for f in findings(result))
    # With enough faces of the class, the finding appears with its count and an adjusted interval.
    rows = [("White", "Black" if i < 12 else "White", "Male", 30) for i in range(40)] + \
        [("Black", "Black", "Female", 40)] * 40
    result = _audit_result(_predictions_csv(tmp_path / "q.csv", rows), min_test_size=1)
    text = _confusion_finding(result).text
    assert "30.0% [" in text and "of White faces (12 of 40) are classified as Black" in text


def test_findings_read_adjusted_differences(tmp_path):
    """The worst-group finding names how many groups it was picked from, the adjusted difference and the omnibus p;
    'larger than sampling noise' only when that interval excludes zero."""
    from faceaudit.auditing.report.findings import _worst_group_finding
    from faceaudit.auditing.report.sections import metrics_section

    rows = ([("White", "White", "Male" if i % 2 else "Female", 30) for i in range(60)]
            + [("Black", "White" if i < 30 else "Black", "Male" if i % 2 else "Female", 30) for i in range(60)]
            + [("Asian", "Asian" if i < 55 else "White", "Male" if i % 2 else "Female", 30) for i in range(60)])
    result = _audit_result(_predictions_csv(tmp_path / "p.csv", rows))
    text = _worst_group_finding(result, "race").text
    assert "lowest for Black at 50.0% [" in text and "picked from 3 ranked groups" in text
    assert "adjusted for all 3 pairs" in text and "larger than sampling noise explains" in text
    assert "test that all 3 groups are equal: p < 0.001" in text
    gender = _worst_group_finding(result, "gender")
    assert gender is None or "not clearly larger than sampling noise" in gender.text
    section = metrics_section(result)
    race_table = section.context["tables"][0][1]
    assert race_table.columns[2] == "Accuracy (recall) [CI]" and "Balanced acc. [CI]" not in race_table.columns
    black = next(row for row in race_table.rows if row.cells[0].text == "Black")
    assert black.cells[-2].css == "wrap fail"  # significantly worse than the rest, after Holm
