"""The distributed engine: Ray, started in local mode on this machine or joined at ``$RAY_ADDRESS`` (a cluster).

faceaudit does not run a cluster of its own. ``--engine ray`` uses Ray Data for the two jobs that outgrow one
machine: batch inference (the model loaded once per worker actor) and the audit's aggregation (each block of
predictions reduced to mergeable statistics, merged on the driver). Needs ``pip install 'faceaudit[distributed]'``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

from faceaudit.errors import FaceauditError
from faceaudit.validation import CHOICES, PARAMETERS, check

#: The engines a command can run on: ``local`` (this process) or ``ray``.
ENGINES: tuple[str, ...] = CHOICES["engine"]
#: The environment variable that points Ray at a running cluster (Ray's own).
ADDRESS_VARIABLE = "RAY_ADDRESS"
#: The environment variable that sets how long to wait for the cluster at ``$RAY_ADDRESS`` (seconds).
TIMEOUT_VARIABLE = "FACEAUDIT_RAY_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 15.0
#: A line Ray's driver relays from its other processes: ``(raylet) ...``, ``(MapWorker(...) pid=123) ...``.
_RAY_RELAYED = re.compile(r"^(?:\x1b\[[\d;]*m)?\((?:raylet|\S+ pid=\d+)[^)]*\)")


def check_engine(engine: str, workers: int | None) -> None:
    """Refuse an unknown engine or a worker count that is not a positive whole number (their declarations in
    :mod:`faceaudit.validation`), or workers without Ray, in one line."""
    check("engine", engine, PARAMETERS["engine"])
    check("workers", workers, PARAMETERS["workers"])
    if engine == "local" and workers not in (None, 1):
        raise FaceauditError("--workers needs --engine ray (the local engine is one process)")
    if engine == "ray" and os.environ.get(ADDRESS_VARIABLE):  # before any work: a cluster that is not there
        check_address(os.environ[ADDRESS_VARIABLE], connect_timeout())


def default_workers() -> int:
    """Workers when none are asked for: the CPUs Ray may use on this machine (local mode)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@contextmanager
def ray_session(workers: int, *, verbose: bool | None = None) -> Iterator[dict]:
    """Ray, started for the length of the block: joined at ``$RAY_ADDRESS`` when set (a cluster, which sizes
    itself), else a local instance with one CPU per worker. Yields what audit.json records of it. Ray's own log
    lines and notices show only when ``verbose`` (default: the console's ``--verbose``)."""
    from faceaudit import console
    from faceaudit.extras import require

    if verbose is None:
        verbose = console.is_verbose()

    ray = require("ray", "distributed", "--engine ray")
    require("ray.data", "distributed", "--engine ray")
    address = os.environ.get(ADDRESS_VARIABLE) or None
    started = not ray.is_initialized()
    session_dir = None
    if started:
        if address:
            check_address(address, connect_timeout())
        session_dir = _init(ray, address, workers, verbose)
    from ray.data import DataContext

    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.execution_options.preserve_order,
             getattr(context, "print_on_execution_start", None))  # a caller's own Ray session gets them back
    context.enable_progress_bars = verbose
    context.execution_options.preserve_order = True  # shards come out in input order, as the local engine writes them
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = verbose
    loggers = {name: logging.getLogger(name) for name in ("ray", "ray.data")}
    levels = {name: logger.level for name, logger in loggers.items()}
    with warnings.catch_warnings(), _relays_dropped(verbose):
        if not verbose:  # Ray's own notices (deprecations, "progress bars disabled", run summaries) stay off
            warnings.simplefilter("ignore")
            for logger in loggers.values():
                logger.setLevel(logging.CRITICAL)  # a failure is reported once, in faceaudit's one line
        try:
            yield {"engine": "ray", "workers": int(workers), "cluster": address or "local",
                   "ray_version": ray.__version__}
        finally:
            for name, logger in loggers.items():
                logger.setLevel(levels[name])
            context.enable_progress_bars, context.execution_options.preserve_order = saved[:2]
            if saved[2] is not None:
                context.print_on_execution_start = saved[2]
            if started:
                ray.shutdown()
                _remove_session(session_dir)


def connect_timeout() -> float:
    """Seconds to wait for the Ray cluster at ``$RAY_ADDRESS`` to answer: ``$FACEAUDIT_RAY_TIMEOUT``, else 15."""
    raw = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise FaceauditError(f"{TIMEOUT_VARIABLE} must be a number of seconds above 0 (got {raw!r})")
    return value


def check_address(address: str, timeout: float) -> None:
    """Refuse, in one line and within ``timeout`` seconds, a ``$RAY_ADDRESS`` whose host does not resolve or does
    not accept a connection; Ray itself would retry for minutes, printing its own log lines."""
    host, port = _host_port(address)
    if host is None:
        return  # "auto", "local": Ray finds (or starts) the cluster on this machine
    fix = f"start the cluster (ray start --head) or unset {ADDRESS_VARIABLE} to run Ray on this machine"
    if port is None:
        raise FaceauditError(f"{ADDRESS_VARIABLE}={address} is not host:port with a port from 1 to 65535; {fix}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.timeout:
        raise FaceauditError(f"the Ray cluster at {ADDRESS_VARIABLE}={address} did not answer within {timeout:g} s "
                             f"({TIMEOUT_VARIABLE} sets the wait); {fix}") from None
    except (OSError, OverflowError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FaceauditError(f"cannot reach the Ray cluster at {ADDRESS_VARIABLE}={address}: {why}; {fix}") from None


def _host_port(address: str) -> tuple[str | None, int | None]:
    """The host and port of a Ray address (``host:port``, ``ray://host:port``); ``(None, None)`` for ``auto`` and
    ``local``, a port of None when there is none or it is not a port number (0-65535)."""
    if address.strip().lower() in ("auto", "local"):
        return None, None
    rest = re.sub(r"^[a-z]+://", "", address.strip(), flags=re.I)
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        return (host or rest), None
    return host.strip("[]"), int(port)


def _init(ray, address: str | None, workers: int, verbose: bool) -> str | None:
    """``ray.init`` joined at ``address`` or started here with ``workers`` CPUs, keeping faceaudit's SIGTERM handler
    (Ray installs its own, which would exit without cleaning up). Returns the session folder Ray created under
    /tmp/ray when it started one here (removed again at the end), else None."""
    options = {"include_dashboard": False, "log_to_driver": verbose,
               "logging_level": logging.INFO if verbose else logging.ERROR}
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers, **options)
    except Exception as exc:  # noqa: BLE001  (Ray raises many kinds; each is one line here)
        where = f"the Ray cluster at {ADDRESS_VARIABLE}={address}" if address else "a local Ray instance"
        raise FaceauditError(f"cannot start {where}: {str(exc).splitlines()[0]}") from None
    finally:
        if main_thread and handler is not None:
            signal.signal(signal.SIGTERM, handler)
    if address:
        return None
    try:
        return ray._private.worker._global_node.get_session_dir_path()
    except AttributeError:  # another Ray version: its session folder is left as Ray leaves it
        return None


def _remove_session(session_dir: str | None) -> None:
    """Delete the /tmp/ray session folder of a Ray instance faceaudit started and shut down (and the
    ``session_latest`` link when it points there); Ray leaves them behind for good."""
    if not session_dir or not os.path.basename(session_dir).startswith("session_"):
        return
    shutil.rmtree(session_dir, ignore_errors=True)
    latest = os.path.join(os.path.dirname(session_dir), "session_latest")
    if os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(session_dir):
        with contextlib.suppress(OSError):
            os.unlink(latest)


def local_engine() -> dict:
    """What audit.json records of the local engine."""
    return {"engine": "local", "workers": 1, "cluster": None}


def worker_error(exc: BaseException, context: str) -> str:
    """A Ray worker's failure in one line: the FaceauditError a worker raised (its text, found in Ray's traceback),
    else ``context`` and the error's first line."""
    text = re.sub(r"\x1b\[[\d;]*m", "", str(exc))  # Ray colours its traceback headers
    found = re.findall(r"FaceauditError: (.+)", text)
    if found:
        return found[-1].strip()[:500]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{context}: {type(exc).__name__}: {first}"[:400]


@contextmanager
def _relays_dropped(verbose: bool) -> Iterator[None]:
    """Drop the lines Ray's driver relays to stdout from its processes ("(raylet) A worker died...") while Ray
    runs, unless verbose; a lost worker (restarted, its work retried) becomes one warning line on stderr."""
    if verbose:
        yield
        return
    captured = io.StringIO()
    try:
        with redirect_stdout(captured):
            yield
    finally:
        lines = captured.getvalue().splitlines(keepends=True)
        sys.stdout.write("".join(line for line in lines if not _RAY_RELAYED.match(line)))
        if any(_RAY_RELAYED.match(line) and "worker died or was killed" in line for line in lines):
            print("faceaudit: warning: a Ray worker was lost during the run; Ray restarted it and retried its "
                  "work", file=sys.stderr)
