"""Ctrl-C that is never lost: a SIGINT handler that records the interrupt before raising KeyboardInterrupt.

Python discards an exception raised inside a weakref callback or ``__del__`` (it prints "Exception ignored" and
carries on), so a KeyboardInterrupt that lands there - WeasyPrint's PDF rendering has many - would be swallowed
and the command would finish as if nothing happened. The flag set here survives that: ``check()`` raises again at
the next commit point (before an output folder is swapped in) and ``faceaudit.cli.main`` exits 130 whenever it
is set.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_interrupted = False


def interrupted() -> bool:
    """Whether Ctrl-C (SIGINT) arrived while the handler was installed."""
    return _interrupted


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived, even one that Python swallowed since."""
    if _interrupted:
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:
    global _interrupted
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
    """Install the recording SIGINT handler for the block (main thread only), restoring the previous one after."""
    global _interrupted
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted = False
    previous = signal.signal(signal.SIGINT, _on_sigint)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
        _interrupted = False  # outside the block nothing is recorded, so nothing may be replayed by check()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT back for a short critical section (renames); it is delivered when the block ends."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
