"""How tests start faceaudit as a user would: the installed console script beside this interpreter.

``python -m faceaudit`` works too, from the repository root as from anywhere else (in a source checkout
``faceaudit/__init__`` adds the root's ``audit``/``datasets``/``training``/``templates`` folders to its path), but
users start the ``faceaudit`` command that installation puts beside the interpreter, so the tests do the same.
"""

import sys
from pathlib import Path

FACEAUDIT: list[str] = [str(Path(sys.executable).with_name("faceaudit"))]


def user_env(tmp: Path) -> dict[str, str]:
    """This process's environment as a user's shell has it: no $FACEAUDIT_DATA, no PYTHONWARNINGS or
    TF_CPP_MIN_LOG_LEVEL that would hide framework noise, and a faceaudit cache of its own under ``tmp``."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("FACEAUDIT_DATA", "PYTHONWARNINGS", "TF_CPP_MIN_LOG_LEVEL")}
    env["FACEAUDIT_CACHE"] = str(tmp / "cache")
    return env


def _ray_workers(pid: int, marker: str) -> list:
    """The processes under a started command whose command line holds ``marker``: Ray titles its workers after
    what they run (``ray::MapWorker(...)`` for an actor, ``ray::MapBatches(reduce_batch)`` for a task)."""
    import importlib

    importlib.import_module("ray")  # faceaudit[distributed]; importing it puts Ray's bundled psutil on the path
    psutil = importlib.import_module("psutil")
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if marker in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def run_killing_a_ray_worker(argv: list[str], marker: str, ready=lambda: True, timeout: float = 300
                             ) -> tuple[int | None, int, str, str]:
    """Run ``faceaudit ARGV`` and SIGKILL the first Ray worker whose command line holds ``marker`` once
    ``ready()`` says the run is under way: the killed pid (None when no worker was seen), exit code, stdout,
    stderr."""
    import subprocess
    import time

    proc = subprocess.Popen([*FACEAUDIT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            if ready():
                for worker in _ray_workers(proc.pid, marker)[:1]:
                    worker.kill()
                    killed = worker.pid
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return killed, proc.returncode, stdout, stderr
