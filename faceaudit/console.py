"""A quiet console: no TensorFlow C++ log lines, Python warnings or Keras progress bars unless ``--verbose``.

``configure()`` runs in ``faceaudit.cli.main`` after the arguments are parsed and before any subcommand imports
TensorFlow (the parser imports none). TensorFlow prints its oneDNN / cpu_feature_guard / "All log messages before
absl::InitializeLog()" lines while it is imported, before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, so the first
``import tensorflow`` runs with file descriptor 2 captured and only those lines dropped; anything else it printed
is passed on. Progress is shown by our own tqdm bars (off when stderr is not a terminal) and plain lines.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager

#: Lines TensorFlow's C++ runtime writes while it starts: glog-style "I0000 00:00:..." records, absl's preamble
#: and the second line of the cpu_feature_guard message; and Ray's C++ records (``--engine ray``).
_NOISE = re.compile(r"^(?:[IWE]\d{4} \d\d:\d\d:[\d.]+\s|WARNING: All log messages before absl::InitializeLog\(\)"
                    r"|To enable the following instructions:|INFO: Created TensorFlow Lite \S+ delegate"
                    r"|fully_quantize: \d, inference_type: "
                    r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IWE] \d+ \d+\] )")  # Ray's C++ core-worker records
#: Whether framework log lines are kept (``faceaudit --verbose``).
_verbose = True


def is_verbose() -> bool:
    """Whether framework log lines and warnings are shown (``--verbose``, or a library caller's default)."""
    return _verbose


def configure(verbose: bool = False) -> None:
    """Silence framework logs and Python warnings (``verbose=False``), or leave them all on."""
    global _verbose
    _verbose = verbose
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING records after start-up
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)  # e.g. "WARNING:tensorflow:... triggered tf.function retracing"
    if not sys.warnoptions:  # -W or $PYTHONWARNINGS from the user win
        warnings.simplefilter("ignore")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


@contextmanager
def native_noise_dropped():
    """Drop the runtime's own log lines written to file descriptor 2 inside the block (TFLite's "INFO: Created
    TensorFlow Lite XNNPACK delegate"), unless the console is verbose; everything else written there passes."""
    if _verbose:
        yield
        return
    with _start_up_lines_dropped():
        yield


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False  # a test's capture, a notebook's stream: not file descriptor 2


@contextmanager
def _start_up_lines_dropped():
    """Capture file descriptor 2 for the block; pass on what it got, less TensorFlow's start-up noise. Python's own
    writes to ``sys.stderr`` (a live progress bar) go straight to the original stream meanwhile, never held back."""
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    live = None
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        if _writes_to_fd2(python_stderr):
            live = open(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace")
            sys.stderr = live
        try:
            yield
        finally:
            if live is not None:
                sys.stderr = python_stderr
                live.close()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Import finder that runs the first ``import tensorflow`` inside :func:`_start_up_lines_dropped`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and find_spec below must not come back here
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with _start_up_lines_dropped():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


def epoch_line(label: str, logs: dict, seconds: float | None = None) -> str:
    """``[fine-tune] epoch 2/8: loss 0.41, accuracy 0.85, val_loss 0.52, val_accuracy 0.83 (12 s)``."""
    order = ("loss", "accuracy", "val_loss", "val_accuracy")
    keys = [k for k in order if k in logs] + sorted(k for k in logs if k not in order and k != "learning_rate")
    parts = ", ".join(f"{k} {float(logs[k]):.3f}" for k in keys)
    return f"{label}: {parts}" + (f" ({seconds:.0f} s)" if seconds is not None else "")


def keras_bar(total: int | None, desc: str, unit: str = "batch", *, fit: bool = False, leave: bool = False):
    """A Keras callback showing one tqdm bar (on a terminal only) over the batches of one fit epoch or predict."""
    import keras
    from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

    class Bar(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bar = None
            self.start = time.perf_counter()

        def _open(self, logs=None):
            self.start = time.perf_counter()
            self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None, leave=leave)

        def _step(self, batch, logs=None):
            if self.bar is not None:
                self.bar.update(1)
                if fit and logs and "loss" in logs:
                    self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

        def _close(self, logs=None):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def on_train_begin(self, logs=None):
            self._open()

        on_train_batch_end = _step

        def on_train_end(self, logs=None):
            self._close()

        def on_predict_begin(self, logs=None):
            self._open()

        on_predict_batch_end = _step

        def on_predict_end(self, logs=None):
            self._close()

    return Bar()


def shown(value) -> str:
    """A value from a user's file as a message shows it: ``'Whte'``, ``7``, ``200.5`` or ``missing`` - never
    ``np.int64(7)``."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalar -> Python scalar
    if value is None or (isinstance(value, float) and value != value):
        return "missing"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)
