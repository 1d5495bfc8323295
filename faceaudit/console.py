"""A quiet console: no TensorFlow C++ log lines, Python warnings or Keras progress bars unless ``--verbose``.

``configure()`` runs in ``faceaudit.cli.main`` after the arguments are parsed and before any subcommand imports
TensorFlow (the parser imports none). TensorFlow prints its oneDNN / cpu_feature_guard / "All log messages before
absl::InitializeLog()" lines while it is imported, before ``TF_CPP_MIN_LOG_LEVEL`` takes effect, so the first
``import tensorflow`` runs with file descriptor 2 captured and only those lines dropped; anything else it printed
is passed on. Progress is shown by our own tqdm bars (off when stderr is not a terminal) and plain lines.

A long step of a command (model, data, inference, bootstrap resamples, t-SNE, figures, PDF) runs inside
:func:`step`: one bar on a terminal, one plain line on stdout when stderr is piped (a CI log gets no carriage
returns), its elapsed time when it ends under ``--verbose``; nothing at all unless the caller asked for progress (the CLI does;
the library's ``progress=False`` default keeps Python use quiet).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Lines TensorFlow's C++ runtime writes while it starts: glog-style "I0000 00:00:..." records, absl's preamble
#: and the second line of the cpu_feature_guard message; and Ray's C++ records (``--engine ray``).
_NOISE = re.compile(r"^(?:[IWE]\d{4} \d\d:\d\d:[\d.]+\s|WARNING: All log messages before absl::InitializeLog\(\)"
                    r"|To enable the following instructions:|INFO: Created TensorFlow Lite \S+ delegate"
                    r"|fully_quantize: \d, inference_type: "
                    r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IWE] \d+ \d+\] )")  # Ray's C++ core-worker records
#: Whether framework log lines are kept (``faceaudit --verbose``).
_verbose = True
#: Whether each :func:`step` prints its elapsed time when it ends (``faceaudit --verbose``; off for library callers).
_step_times = False
#: Steps running now: a step inside another (an ensemble member's inference) shows nothing of its own.
_depth = 0
#: Seconds between redraws of a live bar whose step has not advanced (its elapsed time keeps moving).
TICK_S = 0.5


def is_verbose() -> bool:
    """Whether framework log lines and warnings are shown (``--verbose``, or a library caller's default)."""
    return _verbose


def configure(verbose: bool = False) -> None:
    """Silence framework logs and Python warnings (``verbose=False``), or leave them all on."""
    global _verbose, _step_times
    _verbose = _step_times = verbose
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


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr`` now) is a terminal: bars there, plain lines anywhere else."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


class Step:
    """A running :func:`step`: ``update`` / ``advance_to`` move its bar (no-ops where no bar is shown)."""

    def __init__(self, bar=None):
        self.bar = bar

    @property
    def live(self) -> bool:
        """Whether a bar is drawn (a terminal, progress asked for): worth extra work to feed it."""
        return self.bar is not None

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        if self.bar is not None:
            self.bar.update(n)

    def advance_to(self, done: int) -> None:
        """``done`` units done in all (never backwards)."""
        if self.bar is not None and done > self.bar.n:
            self.bar.update(done - self.bar.n)


def step_label(name: str, detail: str = "") -> str:
    """``t-SNE (2,133 embeddings)``: a step's name and what it works on."""
    return f"{name} ({detail})" if detail else name


@contextmanager
def step(name: str, *, total: int | None = None, unit: str = "it", detail: str = "", enabled: bool = True,
         bar: bool = True) -> Iterator[Step]:
    """One long step of a command. With ``enabled`` (the caller's ``progress``): a tqdm bar of ``total`` ``unit``
    on stderr, a terminal, while it runs (``bar=False`` where the code inside draws its own, e.g. Keras batches);
    when it ends, one plain line on stdout where stderr is not a terminal (``t-SNE (2,133 embeddings) done``), and
    under ``--verbose`` its elapsed time instead (``t-SNE (2,133 embeddings) 8.1 s``, terminal or not). Lines go to
    stdout with the command's other plain lines (as training's epoch lines do) and come when the step ends, so stderr
    keeps an error to its one line. A step inside another, or with ``enabled=False``, shows nothing."""
    global _depth
    if not enabled or _depth:
        yield Step()
        return
    from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

    stream = _CurrentStderr()
    label = step_label(name, detail)
    started = time.perf_counter()
    drawn, stop, ticker = None, threading.Event(), None
    terminal = is_terminal(stream)
    if terminal and bar:
        drawn = tqdm(total=total, desc=label, unit=unit, file=stream, leave=False, dynamic_ncols=True,
                     bar_format=None if total else "{desc}: {elapsed}")
        ticker = threading.Thread(target=_tick, args=(drawn, stop), daemon=True, name=f"faceaudit {name} bar")
        ticker.start()
    _depth += 1
    try:
        yield Step(drawn)
    finally:
        _depth -= 1
        stop.set()
        if ticker is not None:
            ticker.join()
        if drawn is not None:
            drawn.close()
    if _step_times:
        print(f"{label} {time.perf_counter() - started:.1f} s", flush=True)
    elif not terminal:
        print(f"{label} done", flush=True)


def _tick(bar, stop: threading.Event) -> None:
    """Redraw ``bar`` every :data:`TICK_S` until ``stop``: its elapsed time moves while the step computes."""
    while not stop.wait(TICK_S):
        try:
            bar.refresh()
        except (OSError, ValueError):  # the stream was swapped and closed under it (TensorFlow's start-up capture)
            pass


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at each write: a bar keeps drawing to the terminal while TensorFlow's start-up
    lines are captured (:func:`_start_up_lines_dropped` swaps ``sys.stderr`` for a copy of the terminal)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding: the current stream's
        return getattr(sys.stderr, name)


def total_line(verb: str, started: float) -> str:
    """``audited in 24.1 s``: a command's total time since ``started`` (a ``time.perf_counter()`` value)."""
    return f"{verb} in {time.perf_counter() - started:.1f} s"
