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
    for name in ("report.html", "report.pdf", "summary.md", "audit.json", "gates.xml", "demo-cnn/model.keras"):
        assert (out / name).is_file(), name
    audit = json.loads((out / "audit.json").read_text())
    assert audit["data"]["synthetic"] is True and audit["model"]["synthetic"] is True
    assert audit["model"]["name"] == "demo-cnn"
    assert 280 <= audit["data"]["n"] <= 320  # 10% of 3,000, rounded per race x gender stratum
    accuracy = audit["overall"]["metrics"]["accuracy"]
    assert accuracy["value"] > 0.5, "the demo CNN should learn the generated labels, not predict one class"
    assert accuracy["ci"][0] < accuracy["value"] < accuracy["ci"][1]
    assert "synthetic" in (out / "summary.md").read_text().lower()
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
