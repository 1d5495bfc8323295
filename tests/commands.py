"""How tests start faceaudit as a user would: the installed console script beside this interpreter.

``python -m faceaudit`` works too, from the repository root as from anywhere else (in a source checkout
``faceaudit/__init__`` adds the root's ``audit``/``datasets``/``training``/``templates`` folders to its path), but
users start the ``faceaudit`` command that installation puts beside the interpreter, so the tests do the same.
"""

import sys
from pathlib import Path

FACEAUDIT: list[str] = [str(Path(sys.executable).with_name("faceaudit"))]


def ray_workers(pid: int, marker: str) -> list:
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
