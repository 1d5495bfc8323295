"""README command 1: `faceaudit demo` runs the whole flow on the embedded synthetic default and writes a report.

Issue 10, part 4: through a pipe (not a terminal) the demo and a failing `faceaudit audit --predictions` of the
model it trained print no ANSI escape codes, no TensorFlow / absl log lines, no Python warnings and no Keras
"Epoch 2/2" lines; the gate summary is in plain words. One demo run, piped as every test captures it, serves all
three tests (tests/test_console.py holds the console tests that need no demo).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from commands import FACEAUDIT, user_env

EPOCHS = 3
NOISE = re.compile(r"oneDNN|cpu_feature_guard|absl|InitializeLog|^[IWE]\d{4} \d\d:\d\d|Warning|WARNING|"
                   r"tf\.function retracing|^Epoch \d+/\d+|\d+/\d+ \S+ \d+m?s/step|np\.(int|float)\d+\(", re.M)

FAILING_GATES = """
[[gates]]
name = "overall accuracy floor"
metric = "accuracy"
by = "overall"
min = 0.99

[[gates]]
name = "loose floor"
metric = "accuracy"
by = "overall"
min = 0.01
"""


def _assert_clean(output: str) -> None:
    assert "\x1b[" not in output, "ANSI escape codes in piped output"
    noisy = [line for line in output.splitlines() if NOISE.search(line)]
    assert not noisy, "framework noise in piped output:\n" + "\n".join(noisy[:10])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`faceaudit demo` on the synthetic default, its output captured through pipes: (folder, report folder, run)."""
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "demo"
    proc = subprocess.run([*FACEAUDIT, "demo", "--out", str(out), "--epochs", str(EPOCHS)],
                          capture_output=True, text=True, env=user_env(tmp), timeout=900)
    return tmp, out, proc


@pytest.mark.slow
def test_demo_writes_a_synthetic_report_end_to_end(demo):
    tmp, out, result = demo
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("report.html", "report.pdf", "summary.md", "audit.json", "gates.xml"):
        assert (out / name).is_file(), name
    run = tmp / "demo-cnn"  # the trained run lies beside the report folder, not inside it
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


@pytest.mark.slow
def test_demo_through_a_pipe_is_quiet(demo):
    _, out, proc = demo
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_clean(proc.stdout + proc.stderr)
    # our own plain per-epoch lines, one per epoch, with the numbers that matter
    epochs = [line for line in proc.stdout.splitlines() if re.match(r"\[[\w -]+\] epoch \d+/\d+: ", line)]
    assert len(epochs) == EPOCHS, proc.stdout
    assert all(re.search(r"loss \d\.\d{3}, .*val_accuracy \d\.\d{3}", line) for line in epochs), epochs
    assert re.search(r"^gates: (PASS|FAIL|INCONCLUSIVE) \(\d+ passed, \d+ failed, \d+ inconclusive\)$",
                     proc.stdout, re.M), proc.stdout
    assert (out / "report.html").is_file()


@pytest.mark.slow
def test_failing_audit_through_a_pipe_is_quiet(demo):
    tmp, out, _ = demo
    predictions = tmp / "demo-cnn" / "predictions.csv"  # the run folder lies beside the report folder
    assert predictions.is_file()
    gates = tmp / "gates.toml"
    gates.write_text(FAILING_GATES)
    proc = subprocess.run([*FACEAUDIT, "audit", "--predictions", str(predictions), "--gates", str(gates),
                           "--out", str(tmp / "audit"), "--n-boot", "200", "--no-tsne"],
                          capture_output=True, text=True, env=user_env(tmp), timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    _assert_clean(proc.stdout + proc.stderr)
    assert "gates: FAIL (1 passed, 1 failed, 0 inconclusive)" in proc.stdout.splitlines(), proc.stdout
    assert "{" not in proc.stdout
