"""An age regressor's verdict in words: the worst group by MAE, the largest bias, the share within ±5 years.

Built from ``audit.json`` like :mod:`.findings` and under the same rules: a worst group is named with how many
groups it was picked from and an interval adjusted for every pair; a group is called worse than the rest only when
its Holm-adjusted test and its Bonferroni interval agree; a too-small test set gets no findings at all.
"""

from __future__ import annotations

from .findings import Finding, _clear, _noise, _picked, _small_groups_finding, headline, too_small_to_judge
from .formatting import (
    disparity_of,
    excludes_zero,
    fmt_p,
    fmt_stat,
    group_label,
    group_of,
    groups_of,
    intersection_groupings,
    main_grouping,
    other_groups,
    plural,
    points,
    ranks,
    schema_of,
    significant,
)


def years(stat: dict | None, *, signed: bool = False) -> str:
    """``{"value": 4.93, "ci": [4.71, 5.16]}`` -> ``4.9 years [4.7, 5.2]`` (``signed``: ``+0.6 years [+0.4, +0.9]``)."""
    text = fmt_stat(stat, percent=False, digits=1, signed=signed)
    if text == "–":
        return text
    value, _, interval = text.partition(" ")
    return f"{value} years" + (f" {interval}" if interval else "")


def share(stat: dict | None) -> str:
    """The share within ±5 years as a percentage with its interval."""
    return fmt_stat(stat)


def metric_text(metric: str, stat: dict | None) -> str:
    """A regression metric's value as the report writes it."""
    return share(stat) if metric == "within5" else years(stat, signed=metric == "bias")


def difference_text(metric: str, stat: dict | None, *, signed: bool = True) -> str:
    """A difference of a regression metric: years, or percentage points for the share within ±5 years."""
    if metric == "within5":
        return points(stat, signed=signed)
    return years(stat, signed=signed)


def _ranked_difference(result, grouping: str, metric: str):
    """A grouping's disparity of one metric with its worst and best groups, or None when it ranks no two groups or
    has no difference."""
    d = disparity_of(result, grouping, metric)
    if not ranks(d) or d.difference is None or d.difference.value is None:
        return None
    return d, group_of(result, grouping, d.worst), group_of(result, grouping, d.best)


def _mae_finding(result, grouping: str) -> Finding | None:
    """The group with the highest MAE against the lowest."""
    ranked = _ranked_difference(result, grouping, "mae")
    if ranked is None:
        return None
    d, worst, best = ranked
    diff = d.difference
    text = (f"By {group_label(grouping)}, the age estimate is furthest off for {worst.key}: mean absolute error "
            f"{years(worst.metrics['mae'])} (n={worst.n}), against {years(best.metrics['mae'])} for "
            f"{best.key} (n={best.n}): a difference of {years(diff, signed=True)} {_picked(d)}, {_noise(diff)}.")
    return Finding(text, _clear(abs(float(diff.value)), diff), f"worst:{grouping}:mae")


def _bias_finding(result, grouping: str) -> Finding | None:
    """The group the model ages (or rejuvenates) most, with its bias against the rest of the test set."""
    d = disparity_of(result, grouping, "bias")
    if d is None or not d.worst:
        return None
    worst = group_of(result, grouping, d.worst)
    bias = worst.metrics["bias"]
    if bias.value is None:
        return None
    direction = "older" if bias.value > 0 else "younger"
    text = (f"By {group_label(grouping)}, the largest bias is for {worst.key}: the model makes them "
            f"{direction} by {years(bias, signed=True)} on average (n={worst.n})")
    rest = (worst.vs_rest or {}).get("bias")
    if rest and rest.value is not None and rest.p_holm is not None:
        text += (f"; against the rest of the test set {years(rest, signed=True)} (one of "
                 f"{plural(rest.family or 0, 'ranked group')} compared, Holm-adjusted {fmt_p(rest.p_holm)}"
                 f"{', beyond sampling noise' if significant(rest) else ', not clearly beyond sampling noise'})")
    if ranks(d) and d.gap is not None and d.gap.value is not None:
        text += (f". The {group_label(grouping)} groups' biases span {years(d.gap)} (largest − smallest, "
                 f"{_picked(d)[1:-1]})")
    severity = abs(float(bias.value)) if excludes_zero(bias) else 0.5 * abs(float(bias.value))
    return Finding(text + ".", severity, f"bias:{grouping}")


def _within_finding(result, grouping: str) -> Finding | None:
    """The group with the lowest share within ±5 years against the highest."""
    ranked = _ranked_difference(result, grouping, "within5")
    if ranked is None:
        return None
    d, worst, best = ranked
    diff = d.difference
    text = (f"By {group_label(grouping)}, {share(worst.metrics['within5'])} of {worst.key} faces are estimated "
            f"within ±5 years against {share(best.metrics['within5'])} of {best.key} faces: "
            f"{points(diff)} {_picked(d)}, {_noise(diff)}.")
    return Finding(text, _clear(10 * abs(float(diff.value)), diff), f"within5:{grouping}")


def _intersection_finding(result) -> Finding | None:
    """The intersectional group whose MAE exceeds the rest of the test set's the most, among those where the excess
    holds after Holm's adjustment."""
    worst, compared = None, 0
    for grouping in intersection_groupings(schema_of(result)):
        for record in groups_of(result, grouping):
            diff = (record.vs_rest or {}).get("mae")
            if record.too_small or not diff:
                continue
            compared += 1
            if significant(diff) and diff.value > 0 and (worst is None or diff.value > worst[1].value):
                worst = (grouping, diff, record)
    if compared == 0:
        return None
    if worst is None:
        return Finding(f"No intersectional group's MAE differs from the rest of the test set beyond sampling noise "
                       f"({compared} ranked groups compared, Holm-adjusted within each intersection).", 0.0,
                       "intersection")
    grouping, diff, record = worst
    text = (f"The intersectional group with the largest errors is {record.key} ({group_label(grouping)}, "
            f"n={record.n}): MAE {years(record.metrics['mae'])}, {years(diff, signed=True)} more than the "
            f"rest of the test set (one of {plural(diff.family or 0, 'ranked group')} of {group_label(grouping)} "
            f"compared; interval adjusted for all of them, Holm-adjusted {fmt_p(diff.p_holm)}).")
    return Finding(text, float(diff.value), "intersection")


def regression_findings(result, limit: int = 4) -> list[Finding]:
    """An age audit's findings: the lead grouping's worst MAE and largest bias always (the questions a reviewer of
    an age estimator asks first), then the most severe of the rest, up to ``limit``; none when too small to judge."""
    if too_small_to_judge(result):
        return []
    schema = schema_of(result)
    lead = main_grouping(schema)
    first = [f for f in (_mae_finding(result, lead), _bias_finding(result, lead)) if f is not None]
    candidates = [_within_finding(result, lead), _intersection_finding(result),
                  *(f(result, g) for g in other_groups(schema) for f in (_mae_finding, _bias_finding)),
                  _small_groups_finding(result)]
    rest = sorted((c for c in candidates if c is not None), key=lambda c: -c.severity)
    return (first + rest)[:limit]


def overall_line(result) -> str:
    """``MAE 4.9 years [4.7, 5.1], bias +0.6 years [+0.4, +0.9], within ±5 years 62.3% [60.4, 64.2]``."""
    m = result.overall.metrics
    return (f"MAE {years(m.get('mae'))}, bias {years(m.get('bias'), signed=True)}, within ±5 years "
            f"{share(m.get('within5'))}")


def _disparity_line(result, grouping: str, metric: str) -> str:
    """One grouping's worst-vs-best line for one metric, for the console."""
    d = disparity_of(result, grouping, metric)
    label = {"mae": "MAE", "bias": "bias", "within5": "within ±5 years"}[metric]
    if not ranks(d):
        return f"{grouping} {label}: fewer than two {grouping} groups have enough test images to rank"
    if metric == "bias":
        worst = group_of(result, grouping, d.worst)
        return (f"{grouping} bias: largest {d.worst} {years(worst.metrics['bias'], signed=True)}, smallest "
                f"{d.best}, of {d.n_ranked} ranked; spread {years(d.gap)} (adjusted for "
                f"{plural(d.pairs, 'pair')})")
    return (f"{grouping} {label}: worst {d.worst}, best {d.best} of {d.n_ranked} ranked; worst - best "
            f"{difference_text(metric, d.difference)} (adjusted for {plural(d.pairs, 'pair')})")


def regression_console_lines(result) -> list[str]:
    """The console's lines for an age audit, before the gates: the overall errors, what the verdict leads with,
    and the lead grouping's worst MAE and largest bias (``faceaudit audit`` prints them)."""
    lines = [f"{result.model.get('name', 'model')}: {overall_line(result)} on {result.overall.n:,} test images"]
    lines += [f"  {text}" for text in headline(result)]
    lead = main_grouping(schema_of(result))
    if not too_small_to_judge(result) and lead in result.groupings:
        lines += [f"  {_disparity_line(result, lead, m)}" for m in ("mae", "bias")]
    return lines
