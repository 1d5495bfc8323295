"""Issue 10, part 4: a quiet console. TensorFlow's start-up lines show only with --verbose.

The piped demo and the piped failing audit (no ANSI codes, no framework noise, plain gate words) are checked in
tests/test_demo.py, on the one demo run that module makes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from commands import user_env


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_start_up_lines_only_with_verbose(tmp_path, verbose):
    code = ("from faceaudit import console\n"
            f"console.configure(verbose={verbose})\n"
            "import keras, tensorflow as tf\n"
            "print(int(tf.reduce_sum(tf.constant([3, 4]))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=user_env(tmp_path),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "7"
    if not verbose:
        assert proc.stderr == "", proc.stderr
