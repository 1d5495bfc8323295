"""README command 1: `faceaudit demo` runs the whole flow on the embedded synthetic default and writes a report."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from commands import FACEAUDIT


@pytest.mark.slow
def test_demo_writes_a_synthetic_report_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FACEAUDIT_DATA"}
    env["FACEAUDIT_CACHE"] = str(tmp_path / "cache")
    out = tmp_path / "demo"
    result = subprocess.run([*FACEAUDIT, "demo", "--out", str(out), "--epochs", "3"],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("report.html", "report.pdf", "summary.md", "audit.json", "gates.xml"):
        assert (out / name).is_file(), name
    run = tmp_path / "demo-cnn"  # the trained run lies beside the report folder, not inside it
    assert (run / "model.keras").is_file() and not (out / "demo-cnn").exists()
    assert str(run) in result.stdout
    # A CNN trained from scratch says so: no "[unfreeze]" epochs for a network that was never frozen.
    assert "[from scratch] epoch" in result.stdout + result.stderr
    assert "[unfreeze]" not in result.stdout + result.stderr
    audit = json.loads((out / "audit.json").read_text())
    assert audit["data"]["synthetic"] is True and audit["model"]["synthetic"] is True
    assert audit["model"]["name"] == "demo-cnn"
    assert 280 <= audit["data"]["n"] <= 320  # 10% of 3,000, rounded per race x gender stratum
    accuracy = audit["overall"]["metrics"]["accuracy"]
    assert accuracy["value"] > 0.5, "the demo CNN should learn the generated labels, not predict one class"
    assert accuracy["ci"][0] < accuracy["value"] < accuracy["ci"][1]
    assert "synthetic" in (out / "summary.md").read_text().lower()
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    # The synthetic banner sits in the header (first screen) and on PDF page 1, not only in sections 2-3.
    html = (out / "report.html").read_text(encoding="utf-8")
    header = html[html.index("<header"):html.index("</header>")]
    assert 'class="banner"' in header and "Synthetic data" in header
    page1 = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(out / "report.pdf"), "-"], capture_output=True,
                           text=True, check=True).stdout
    assert "Synthetic data: these faces are generated" in " ".join(page1.split())
