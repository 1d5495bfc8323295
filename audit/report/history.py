"""Training histories for curves: the training module's per-phase history.json and the seed's flat Keras files.

Both become a list of :class:`Phase` (name plus per-epoch metric lists). The training helper's
``faceaudit.training.history.load_history`` is used when present; the seed's flat format
(``{"loss": [...], "val_accuracy": [...]}``) is read here as well, so ``compare --history`` takes either.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from faceaudit.errors import FaceauditError


@dataclass
class Phase:
    """One training phase (e.g. frozen backbone, then fine-tuning): metric name -> value per epoch."""

    name: str
    metrics: dict[str, list[float]] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return max((len(v) for v in self.metrics.values()), default=0)


@dataclass
class History:
    """The phases of one run, in training order, and the name to show in legends."""

    name: str
    phases: list[Phase]
    source: str = ""

    def metric(self, key: str) -> list[float]:
        """One metric over all phases, concatenated in epoch order."""
        return [v for phase in self.phases for v in phase.metrics.get(key, [])]


def _is_series(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, float)) or v is None for v in value)


def _flat(metrics: dict) -> dict[str, list[float]]:
    return {str(k): [float("nan") if v is None else float(v) for v in vals]
            for k, vals in metrics.items() if _is_series(vals)}


def parse_history(data: object, name: str) -> list[Phase]:
    """Phases from any supported JSON shape: flat Keras, ``{"phases": [...]}`` or ``{phase: {metric: [...]}}``."""
    if isinstance(data, dict) and data and all(_is_series(v) for v in data.values()):
        return [Phase(name, _flat(data))]
    if isinstance(data, dict) and isinstance(data.get("phases"), list):
        items = data["phases"]
    elif isinstance(data, dict) and isinstance(data.get("phases"), dict):
        items = [{"name": k, **v} if isinstance(v, dict) else {"name": k, "metrics": v}
                 for k, v in data["phases"].items()]
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        items = [{"name": k, "metrics": v} for k, v in data.items()]
    else:
        raise FaceauditError(f"history of {name} has no per-epoch metric lists")
    phases = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise FaceauditError(f"history of {name}: phase {index} is not an object")
        metrics = item.get("metrics") or item.get("history") or {k: v for k, v in item.items() if _is_series(v)}
        phases.append(Phase(str(item.get("name") or item.get("phase") or f"phase {index + 1}"), _flat(metrics)))
    if not any(p.metrics for p in phases):
        raise FaceauditError(f"history of {name} has no per-epoch metric lists")
    return phases


def run_name(path: Path) -> str:
    """Legend name for a history file: ``VGG16_history.json`` -> ``VGG16``; ``runs/x/history.json`` -> ``x``."""
    stem = re.sub(r"[_-]?history$", "", path.stem)
    return stem or path.parent.name


def load_history(path: Path, name: str | None = None) -> History:
    """Read one history file of either format."""
    path = Path(path)
    name = name or run_name(path)
    try:
        from faceaudit.training.history import load_history as training_load  # type: ignore[attr-defined]
    except ImportError:
        training_load = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FaceauditError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise FaceauditError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if training_load is not None:
        try:
            loaded = training_load(path)
            phases = _from_training(loaded, name)
            if phases:
                return History(name, phases, str(path))
        except Exception:  # noqa: BLE001 - fall back to the formats read here
            pass
    return History(name, parse_history(data, name), str(path))


def _from_training(loaded: object, name: str) -> list[Phase]:
    """Adapt whatever the training module returns (dict of phases, list of dicts, objects with .metrics)."""
    if isinstance(loaded, (dict, list)):
        return parse_history(loaded, name)
    phases = getattr(loaded, "phases", None)
    if phases is not None:
        out = []
        for index, phase in enumerate(phases):
            metrics = getattr(phase, "metrics", None) or getattr(phase, "history", None) or {}
            out.append(Phase(str(getattr(phase, "name", f"phase {index + 1}")), _flat(dict(metrics))))
        return out
    return []


def seed_pairs(histories: list[History]) -> list[History]:
    """Merge the seed's ``X-freeze`` / ``X-unfreeze`` files into one two-phase run ``X``; others stay as they are."""
    by_base: dict[str, list[History]] = {}
    order: list[str] = []
    for history in histories:
        match = re.fullmatch(r"(.+?)[-_](freeze|unfreeze)", history.name)
        base = match.group(1) if match else history.name
        if base not in by_base:
            order.append(base)
        by_base.setdefault(base, []).append(history)
    merged = []
    for base in order:
        items = by_base[base]
        if len(items) == 1:
            merged.append(items[0])
            continue
        items.sort(key=lambda h: 0 if h.name.endswith("-freeze") or h.name.endswith("_freeze") else 1)
        phases = [Phase(h.name.rsplit("-", 1)[-1], p.metrics) for h in items for p in h.phases]
        merged.append(History(base, phases, ", ".join(h.source for h in items)))
    return merged
