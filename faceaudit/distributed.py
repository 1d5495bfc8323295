"""The distributed engine: Ray, started in local mode on this machine or joined at ``$RAY_ADDRESS`` (a cluster).

faceaudit does not run a cluster of its own. ``--engine ray`` uses Ray Data for the two jobs that outgrow one
machine: batch inference (the model loaded once per worker actor) and the audit's aggregation (each block of
predictions reduced to mergeable statistics, merged on the driver). Needs ``pip install 'faceaudit[distributed]'``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

from faceaudit.errors import FaceauditError

#: The engines a command can run on: ``local`` (this process) or ``ray``.
ENGINES: tuple[str, ...] = ("local", "ray")
#: The environment variable that points Ray at a running cluster (Ray's own).
ADDRESS_VARIABLE = "RAY_ADDRESS"
#: A line Ray's driver relays from its other processes: ``(raylet) ...``, ``(MapWorker(...) pid=123) ...``.
_RAY_RELAYED = re.compile(r"^(?:\x1b\[[\d;]*m)?\((?:raylet|\S+ pid=\d+)[^)]*\)")


def check_engine(engine: str, workers: int | None) -> None:
    """Refuse an unknown engine or a worker count that is not a positive whole number, in one line."""
    if engine not in ENGINES:
        raise FaceauditError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise FaceauditError(f"workers must be a whole number, at least 1 (got {workers!r})")
    if engine == "local" and workers not in (None, 1):
        raise FaceauditError("--workers needs --engine ray (the local engine is one process)")


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
    if started:
        options = {"include_dashboard": False, "log_to_driver": verbose,
                   "logging_level": logging.INFO if verbose else logging.ERROR}
        try:
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=workers, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {ADDRESS_VARIABLE}={address}" if address else "a local Ray instance"
            raise FaceauditError(f"cannot start {where}: {str(exc).splitlines()[0]}") from None
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
