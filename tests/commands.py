"""How tests start faceaudit as a user would: the installed console script beside this interpreter.

(``python -m faceaudit`` from the repository root would import the source folder ``faceaudit/``, which lacks
the ``audit``/``training`` packages that installation maps into it.)
"""

import sys
from pathlib import Path

FACEAUDIT: list[str] = [str(Path(sys.executable).with_name("faceaudit"))]
