"""Report building blocks without the data set: layout and escaping, PDF pipeline, history formats, paired tests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from faceaudit.audit.report import Section, Table, render_document, write_document
from faceaudit.audit.report.history import load_history, seed_pairs
from faceaudit.audit.report.paired import holm, mcnemar, paired_bootstrap

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def partial_dir(tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "one.html").write_text('{% import "macros.html" as ui %}<p>{{ text }}</p>{{ ui.table(table) }}'
                                     '{{ ui.figure(fig) }}')
    return folder


def _document(partial_dir):
    from faceaudit.audit.report.figures import new_figure, png_figure

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

    from faceaudit.audit.report.layout import write_pdf

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
    from faceaudit.audit.report.browser import check_page, find_chromium

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
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    exact = mcnemar(a, b)
    assert (exact["a_only"], exact["b_only"]) == (10, 2)
    assert exact["method"] == "exact binomial"
    assert exact["p_value"] == pytest.approx(0.03857, abs=1e-4)  # 2 * P(X <= 2 | 12, 0.5)
    a = np.array([True] * 40 + [False] * 20)
    b = np.array([False] * 40 + [True] * 20)
    chi = mcnemar(a, b)
    assert chi["method"].startswith("chi-squared")
    assert chi["p_value"] == pytest.approx(0.01417, abs=1e-4)  # (|40-20|-1)^2/60 = 6.017, df 1
    assert mcnemar(a, a)["p_value"] == 1.0


def test_paired_bootstrap_and_holm():
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.7
    b = a.copy()
    flip = rng.random(2000) < 0.1
    b[flip & ~a] = True
    diff = paired_bootstrap(a, b, n_boot=2000)
    assert diff["value"] == pytest.approx((b.sum() - a.sum()) / 2000)
    assert 0 < diff["ci"][0] < diff["value"] < diff["ci"][1]
    same = paired_bootstrap(a, a)
    assert same["ci"] == [0.0, 0.0]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_report_refuses_bad_audit_in_one_line(tmp_path, capsys):
    from faceaudit.cli import main

    (tmp_path / "audit.json").write_text('{"schema_version": "9.0"}')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("faceaudit: error: audit.json schema version 9.0") and err.count("\n") == 1
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
