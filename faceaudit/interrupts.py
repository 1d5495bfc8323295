"""Ctrl-C that is never lost: a SIGINT handler that records the interrupt before raising KeyboardInterrupt.

Python discards an exception raised inside a weakref callback or ``__del__`` (it prints "Exception ignored" and
carries on), so a KeyboardInterrupt that lands there - WeasyPrint's PDF rendering has many - would be swallowed
and the command would finish as if nothing happened. The flag set here survives that: ``check()`` raises again at
the next commit point (before an output folder is swapped in) and ``faceaudit.cli.main`` exits 130 whenever it
is set.

SIGTERM (what ``timeout``, a CI runner, Kubernetes and systemd send) and SIGHUP (a closed terminal) are handled the
same way: the work stops, output folders are cleaned up, and ``main`` exits 128 + the signal's number (143, 129)
with one line naming the signal.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_interrupted = False
_signum = signal.SIGINT
#: The signals that stop a command cleanly (those this platform has).
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def interrupted() -> bool:
    """Whether Ctrl-C (SIGINT), SIGTERM or SIGHUP arrived while the handler was installed."""
    return _interrupted


def exit_code() -> int:
    """The shell's code for the signal that stopped the command: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + int(_signum)


def message() -> str:
    """The one line said when a signal stopped the command."""
    if _signum == signal.SIGINT:
        return "interrupted"
    return f"terminated ({signal.Signals(_signum).name})"


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived, even one that Python swallowed since."""
    if _interrupted:
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:
    """Record the signal (the first one wins: a TERM after a Ctrl-C is still an interrupt) and stop the work."""
    global _interrupted, _signum
    if not _interrupted:
        _signum = signum
    _interrupted = True
    raise KeyboardInterrupt


def _unraisable(hook):
    """An unraisable-exception hook that stays quiet about the KeyboardInterrupt it has already recorded."""

    def quiet(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _interrupted:
            return
        hook(unraisable)

    return quiet


@contextmanager
def trapped() -> Iterator[None]:
    """Install the recording handler of SIGINT, SIGTERM and SIGHUP for the block (main thread only), restoring the
    previous ones after."""
    global _interrupted, _signum
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted, _signum = False, signal.SIGINT
    previous = {signum: signal.signal(signum, _on_sigint) for signum in SIGNALS
                if signum == signal.SIGINT or signal.getsignal(signum) != signal.SIG_IGN}  # nohup's SIG_IGN stays
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(previous_hook)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _interrupted = False  # outside the block nothing is recorded, so nothing may be replayed by check()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back for a short critical section (renames); they are delivered when the
    block ends."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
