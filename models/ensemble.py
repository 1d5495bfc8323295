"""An ensemble run folder as inference reads it: its members (``members/<name>/``, listed in ``run.json``) and the
combiner's input features (their log-probabilities). :func:`faceaudit.models.inference.predict` runs it; building
one (choosing and fitting the combiner) is training's, in :mod:`faceaudit.training.ensemble`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.seams.run import MODEL_FILE, RunRecord

#: The folder of an ensemble run holding its member run folders.
MEMBERS_DIR = "members"


def log_probs(probs: np.ndarray) -> np.ndarray:
    """Natural log of class probabilities, clipped at 1e-7: the combiner's input features."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1.0))


def member_folders(run_dir: Path, run: RunRecord) -> list[Path]:
    """The member run folders ``run.json`` lists, each checked to lie inside ``run_dir/members`` and hold a model."""
    members = run.ensemble.get("members") if isinstance(run.ensemble, dict) else None
    if not isinstance(members, list) or len(members) < 2 or not all(
            isinstance(m, dict) and isinstance(m.get("path"), str) for m in members):
        raise FaceauditError(f"{run_dir}: run.json does not list the ensemble's members (two or more, each with a "
                             "path)")
    root = (run_dir / MEMBERS_DIR).resolve()
    folders = []
    for member in members:
        folder = (run_dir / member["path"]).resolve()
        if not folder.is_relative_to(root):
            raise FaceauditError(f"{run_dir}: ensemble member path {member['path']!r} is outside {MEMBERS_DIR}/")
        if not (folder / MODEL_FILE).is_file():
            raise FaceauditError(f"ensemble member {member['path']} is missing: {folder} has no {MODEL_FILE}")
        folders.append(folder)
    return folders
