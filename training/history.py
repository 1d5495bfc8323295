"""Training histories: the seed's flat Keras ``History.history`` files and faceaudit's per-phase files.

A faceaudit ``history.json`` maps each phase that ran (``freeze``: backbone frozen, head only; ``unfreeze``:
whole network) to the seed's shape, ``{"loss": [...], "accuracy": [...], "val_loss": [...],
"val_accuracy": [...]}`` (plus ``learning_rate``). The run folder also holds ``history-<phase>.json``, each
exactly a seed ``*-freeze_history.json`` / ``*-unfreeze_history.json`` file.
"""

from __future__ import annotations

import json
from pathlib import Path

from faceaudit.errors import FaceauditError

PHASES = ("freeze", "unfreeze")
SEED_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
#: Phase name given to a flat history file whose name does not say freeze or unfreeze.
SINGLE_PHASE = "train"


def _is_flat(data: dict) -> bool:
    return all(isinstance(v, list) for v in data.values()) and "loss" in data


def _phase_from_name(path: Path) -> str:
    stem = path.name.lower()
    if "unfreeze" in stem:
        return "unfreeze"
    if "freeze" in stem:
        return "freeze"
    return SINGLE_PHASE


def load_history(path: Path) -> dict[str, dict[str, list[float]]]:
    """``{phase: {metric: [per-epoch values]}}`` from a seed flat history file or a faceaudit one.

    A flat file (the seed's ``*_history.json``) becomes one phase named from its file name (``freeze``,
    ``unfreeze``, else ``train``); a run folder may be given for its ``history.json``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "history.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FaceauditError(f"cannot read history {path}: {exc}") from None
    if not isinstance(data, dict):
        raise FaceauditError(f"{path} is not a training history (expected a JSON object)")
    if _is_flat(data):
        return {_phase_from_name(path): {k: [float(x) for x in v] for k, v in data.items()}}
    phases = {}
    for phase, metrics in data.items():
        if isinstance(metrics, dict) and _is_flat(metrics):
            phases[phase] = {k: [float(x) for x in v] for k, v in metrics.items()}
    if not phases:
        raise FaceauditError(f"{path} is not a training history (no 'loss' list)")
    return phases


def write_history(history: dict[str, dict[str, list[float]]], out_dir: Path) -> Path:
    """Write ``history.json`` (all phases) and one seed-shaped ``history-<phase>.json`` per phase, atomically."""
    out_dir = Path(out_dir)
    for phase, metrics in history.items():
        _write_json(out_dir / f"history-{phase}.json", metrics)
    return _write_json(out_dir / "history.json", history)


def _write_json(file: Path, data) -> Path:
    partial = file.with_name(f".{file.name}.partial")
    partial.write_text(json.dumps(data, indent=1))
    partial.replace(file)
    return file
