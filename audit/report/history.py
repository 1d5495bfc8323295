"""Training histories as curves: runs' per-phase ``history.json`` and the seed's flat Keras files, both read
by the run folder's one reader (:mod:`faceaudit.seams.run`) and shown as a list of :class:`Phase` (name plus
per-epoch metric lists)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


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


def run_name(path: Path) -> str:
    """Legend name for a history file: ``VGG16_history.json`` -> ``VGG16``; ``runs/x/history.json`` -> ``x``."""
    stem = re.sub(r"[_-]?history$", "", path.stem)
    return stem or path.parent.name


def load_history(path: Path, name: str | None = None) -> History:
    """One history file of either format, read by :func:`faceaudit.seams.run.load_history`."""
    from faceaudit.seams.run import load_history as read_phases

    path = Path(path)
    phases = read_phases(path)
    return History(name or run_name(path), [Phase(phase, metrics) for phase, metrics in phases.items()], str(path))


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
