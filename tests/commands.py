"""How tests start faceaudit as a user would: the installed console script beside this interpreter.

``python -m faceaudit`` works too, from the repository root as from anywhere else (in a source checkout
``faceaudit/__init__`` adds the root's ``audit``/``datasets``/``training``/``templates`` folders to its path), but
users start the ``faceaudit`` command that installation puts beside the interpreter, so the tests do the same.
"""

import sys
from pathlib import Path

FACEAUDIT: list[str] = [str(Path(sys.executable).with_name("faceaudit"))]
