"""What a gate reads from an audit result: the per-group values of a metric, the gap/ratio block, and how many groups a
``min``/``max`` gate judges. Shared by the gates (:mod:`.gates`) and the planner (:mod:`.planner`), which sizes the
same gates, so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass

from faceaudit.errors import FaceauditError

from .calibration import CALIBRATION_METRICS
from .metrics import ALL_METRICS
from .types import Disparity, Group, Stat

#: An age regressor's metrics (:mod:`.regression`) and the rules each takes: a two-sided bound on bias is a ``max``
#: and a ``min`` gate (e.g. -3 <= bias <= 3 years).
REGRESSION_RULES = {"mae": ("max", "max_gap"), "within5": ("min", "max_gap"), "bias": ("max", "min", "max_gap"),
                    "n": ("min", "max")}


@dataclass(frozen=True)
class Judged:
    """One value a gate judges: the group's key (``all`` for the whole test set), whether it is too small to rank,
    and its stat (None where the audit has none)."""

    key: str
    too_small: bool
    stat: Stat | None


def gate_records(audit, metric: str, by: str) -> list[Judged]:
    """The metric over the groups of ``by`` (or overall) of an audit result (:class:`~.result.AuditResult`).

    For ``n``, groups with no test image at all (a class missing from the test set) are included with n = 0.
    """
    if metric in ALL_METRICS or metric in REGRESSION_RULES:
        if by == "overall":
            return [Judged("all", False, stat_of(audit.overall, metric))]
        grouping = audit.groupings[by]
        records = [Judged(g.key, bool(g.too_small), stat_of(g, metric)) for g in grouping.groups]
        if metric == "n":
            records += [Judged(key, True, Stat(value=0, n=0)) for key in grouping.missing]
        return records
    if metric in CALIBRATION_METRICS:
        cal = audit.calibration
        if not cal:
            raise FaceauditError(f"gate on {metric} needs class probabilities; the predictions have labels only")
        if by == "overall":
            return [Judged("all", False, getattr(cal.overall, metric))]
        return [Judged(g.key, bool(g.too_small), getattr(g, metric)) for g in cal.groupings[by]]
    emb = audit.embeddings
    if not emb:
        raise FaceauditError("gate on knn_purity needs embeddings (a model, or --embeddings)")
    if by == "overall":
        return [Judged("all", False, emb.knn_purity.overall)]
    return [Judged(g.key, bool(g.too_small), g.purity) for g in emb.knn_purity.groupings[by]]


def stat_of(group: Group, metric: str) -> Stat:
    """A group's value of ``metric`` as gates read it (``n`` a count without interval)."""
    if metric == "n":
        return Stat(value=group.n, n=group.n)
    return group.metrics.get(metric) or Stat()


def gate_disparity(audit, metric: str, by: str) -> Disparity | None:
    """The disparities block (gap, ratio) a ``max_gap``/``min_ratio`` gate on ``metric`` over ``by`` reads."""
    if metric in ALL_METRICS or metric in REGRESSION_RULES:
        return audit.groupings[by].disparities.get(metric)
    if metric in CALIBRATION_METRICS:
        if not audit.calibration:
            raise FaceauditError(f"gate on {metric} needs class probabilities; the predictions have labels only")
        return audit.calibration.disparities[by].get(metric)
    raise FaceauditError(f"gate rule max_gap/min_ratio is not available for metric {metric}")


def judged_groups(gate, audit) -> int:
    """How many groups a ``min``/``max`` gate judges (0 for gap and ratio rules and for ``n``): one family over every
    grouping the gates file shows, so a failing group anywhere is a finding at the audit's level."""
    if gate.rule not in ("min", "max") or gate.metric == "n":
        return 0
    try:
        return sum(not r.too_small for r in gate_records(audit, gate.metric, gate.by))
    except (FaceauditError, KeyError):
        return 0
