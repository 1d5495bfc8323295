"""Issue 10, part 4: a quiet, honest console when output goes through a pipe (not a terminal).

`faceaudit demo` (short) and a failing `faceaudit audit --predictions` print no ANSI escape codes, no TensorFlow /
absl log lines, no Python warnings and no Keras "Epoch 2/2" lines; the gate summary is in plain words.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from commands import FACEAUDIT

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


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FACEAUDIT_DATA", "PYTHONWARNINGS", "TF_CPP_MIN_LOG_LEVEL")}
    env["FACEAUDIT_CACHE"] = str(tmp_path / "cache")
    return env


def _assert_clean(output: str) -> None:
    assert "\x1b[" not in output, "ANSI escape codes in piped output"
    noisy = [line for line in output.splitlines() if NOISE.search(line)]
    assert not noisy, "framework noise in piped output:\n" + "\n".join(noisy[:10])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    out = tmp / "demo"
    proc = subprocess.run([*FACEAUDIT, "demo", "--out", str(out), "--epochs", "2", "--max-train", "300"],
                          capture_output=True, text=True, env=_env(tmp), timeout=900)
    return tmp, out, proc


@pytest.mark.slow
def test_demo_through_a_pipe_is_quiet(demo):
    _, out, proc = demo
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_clean(proc.stdout + proc.stderr)
    # our own plain per-epoch lines, one per epoch, with the numbers that matter
    epochs = [line for line in proc.stdout.splitlines() if re.match(r"\[[\w -]+\] epoch \d+/\d+: ", line)]
    assert len(epochs) == 2, proc.stdout
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
                          capture_output=True, text=True, env=_env(tmp), timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    _assert_clean(proc.stdout + proc.stderr)
    assert "gates: FAIL (1 passed, 1 failed, 0 inconclusive)" in proc.stdout.splitlines(), proc.stdout
    assert "{" not in proc.stdout


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_start_up_lines_only_with_verbose(tmp_path, verbose):
    code = ("from faceaudit import console\n"
            f"console.configure(verbose={verbose})\n"
            "import keras, tensorflow as tf\n"
            "print(int(tf.reduce_sum(tf.constant([3, 4]))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "7"
    if not verbose:
        assert proc.stderr == "", proc.stderr
