"""Numbers as a reviewer reads them: percentages with their interval, never a bare point estimate.

Interval bounds are rounded outwards (the lower bound down, the upper bound up), so a displayed interval is never
narrower than the computed one: a 100 % accurate group of 8,000 faces shows ``100.0% [99.9, 100.0]``, not a
zero-width ``[100.0, 100.0]`` that would claim certainty the data do not give.
"""

from __future__ import annotations

import math

from faceaudit.auditing.types import (
    GroupingKey,
    Stat,
    Temperature,
    lead_grouping,
    ordered_grouping,
    other_groupings,
    pair_grouping,  # noqa: F401  (re-exported for the report modules)
)
from faceaudit.taxonomy import AGE_BAND, UTKFACE, LabelSchema


def _get(stat: Stat | dict | None, key: str):
    """A Stat's field (``value``, ``ci``); the same key of a JSON-shaped stat (a class's rates in ``per_class``, a
    comparison's row)."""
    if stat is None:
        return None
    return getattr(stat, key) if isinstance(stat, Stat) else stat.get(key)


def stat_value(stat: Stat | dict | None) -> float | None:
    """The value of a Stat, or of a JSON-shaped stat (a class's rates in ``per_class``); None without one."""
    return _get(stat, "value")


def level_number(level: float) -> str:
    """A confidence level in percent without trailing zeros: ``0.95`` -> ``95``, ``0.995`` -> ``99.5``."""
    return f"{100 * level:.4f}".rstrip("0").rstrip(".")


def fmt_level(level: float) -> str:
    """A confidence level as a reader sees it: ``0.95`` -> ``95 %``, ``0.995`` -> ``99.5 %`` (never rounded down to
    a level the audit did not use)."""
    return f"{level_number(level)} %"


def pct(value: float | None, digits: int = 1) -> str:
    """``0.8312`` -> ``83.1%``; missing -> an en dash."""
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _outward(lo: float, hi: float, digits: int) -> tuple[float, float]:
    """Bounds rounded outwards to ``digits`` decimals (a tiny tolerance absorbs float noise such as 85.0000001).

    A negative upper bound that rounds to zero keeps its sign (``-0.0``), so an interval that excludes zero never
    reads as touching it from the other side.
    """
    scale = 10 ** digits
    return math.floor(lo * scale + 1e-7) / scale, math.copysign(math.ceil(hi * scale - 1e-7) / scale, hi)


def _interval(ci, scale: float, digits: int, sign: str) -> str:
    lo, hi = _outward(scale * ci[0], scale * ci[1], digits)
    return f" [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"


def fmt_stat(stat: dict | None, *, percent: bool = True, digits: int | None = None, signed: bool = False) -> str:
    """``{"value": .83, "ci": [.81, .85]}`` -> ``83.0% [81.0, 85.0]`` (or plain numbers with ``percent=False``)."""
    value = _get(stat, "value")
    if value is None:
        return "–"
    ci = _get(stat, "ci")
    scale, default_digits, unit = (100, 1, "%") if percent else (1, 3, "")
    d = default_digits if digits is None else digits
    sign = "+" if signed else ""
    return f"{scale * value:{sign}.{d}f}{unit}" + (_interval(ci, scale, d, sign) if ci else "")


def points(stat: dict | None, digits: int = 1, unit: str = " pts", *, signed: bool = True) -> str:
    """A difference of proportions in percentage points: ``-0.081`` -> ``-8.1 pts [-10.1, -6.2]`` (``signed=False``
    for a gap, which is never negative: ``8.1 pts [6.2, 10.1]``)."""
    value = _get(stat, "value")
    if value is None:
        return "–"
    ci = _get(stat, "ci")
    sign = "+" if signed else ""
    return f"{100 * value:{sign}.{digits}f}{unit}" + (_interval(ci, 100, digits, sign) if ci else "")


def fmt_p(p: float | None, *, short: bool = False) -> str:
    """A p-value as ``p = 0.023`` / ``p < 0.001`` (``short``: ``0.023`` / ``<0.001``); missing -> not tested."""
    if p is None:
        return "–" if short else "not tested"
    text = "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"
    if short:
        return text.replace(" ", "")
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def excludes_zero(stat: Stat | None) -> bool:
    """Whether a difference's interval lies wholly on one side of zero."""
    ci = stat.interval if stat is not None else None
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def significant(diff: Stat | None) -> bool:
    """Whether a group's difference from the rest (``vs_rest.accuracy``) holds after adjusting for the groups compared.

    Both must agree: the Holm-adjusted p-value is below the audit's family-wise error rate (1 − level, recovered
    from the stat's Bonferroni ``level`` and ``family``) and the Bonferroni-adjusted interval excludes
    zero (the exact-interval construction is more conservative than the score test, so near the boundary the two
    can differ, and a coloured cell whose interval straddles zero would contradict itself).
    """
    p = diff.p_holm if diff is not None else None
    return p is not None and p < family_alpha(diff) and excludes_zero(diff)


def family_alpha(diff: Stat) -> float:
    """The family-wise error rate a Bonferroni-adjusted stat was made for: ``(1 − level) × family``."""
    return (1 - diff.level) * diff.family


def direction_css(diff: Stat | None) -> str:
    """``fail`` / ``pass`` for a group significantly worse / better than the rest, else no colour."""
    if not significant(diff):
        return ""
    return "fail" if diff.value < 0 else "pass"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 group``, ``5 groups``."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def temperature_text(temperature: Temperature) -> str:
    """``T = 1.07 [0.97, 1.19]``: the fitted temperature with its profile-likelihood interval."""
    ci = temperature.ci
    return f"T = {temperature.temperature:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def group_label(key: str) -> str:
    """A grouping or group key for display (``race×gender`` -> ``race × gender``)."""
    return key.replace("×", " × ").replace("  ", " ").replace("_", " ")


# -- the label schema: which attribute the audited model predicts and what the report groups by ---------------


def schema_of(result) -> LabelSchema:
    """The audit's label schema: ``result.taxonomy``, else its recorded ``label_schema``, else UTKFace (audits
    written before schemas were recorded)."""
    taxonomy = getattr(result, "taxonomy", None)
    if isinstance(taxonomy, LabelSchema):
        return taxonomy
    recorded = getattr(result, "label_schema", None)
    return LabelSchema.from_dict(recorded) if recorded else UTKFACE


def plural_word(word: str) -> str:
    """``race`` -> ``races``, ``age band`` -> ``age bands``, ``class`` -> ``classes``."""
    return word + ("es" if word.endswith(("s", "x", "sh", "ch")) else "s")


def target_label(schema: LabelSchema) -> str:
    """The predicted attribute as the report names it (``race``, ``gender``, ``age band``)."""
    return schema.label(schema.target)


def compound_label(schema: LabelSchema, grouping: str) -> str:
    """A grouping's label before a noun (``race × gender × age-band groups``)."""
    return " × ".join(part.replace(" ", "-") for part in schema.label(grouping).split(" × "))


def series_label(names) -> str:
    """``race, gender and age band``: attribute labels joined as a sentence lists them."""
    names = list(names)
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def grouping_key(schema: LabelSchema, *attributes: str) -> str:
    """The ``audit.json`` key of the grouping by ``attributes``, in the schema's ``groups`` order
    (``age_band``, ``race`` -> ``race×age_band``; :func:`faceaudit.auditing.types.ordered_grouping`)."""
    return ordered_grouping(schema, *attributes).name


#: The grouping the report leads with: the target's when the audit groups by it, else the first group.
main_grouping = lead_grouping
#: The single-attribute groupings other than :func:`main_grouping`, in ``groups`` order.
other_groups = other_groupings


def split_attribute(schema: LabelSchema) -> str | None:
    """The attribute to split whole-test-set views by (gender for UTKFace): the first other group that is not
    the age band, else the first other group; None when the audit groups by one attribute only."""
    others = other_groups(schema)
    return next((g for g in others if g != AGE_BAND), others[0] if others else None)


def finest_grouping(schema: LabelSchema) -> str:
    """Every grouping attribute crossed (``race×gender×age_band``): the smallest groups the audit has."""
    return GroupingKey(tuple(schema.groups)).name


def intersection_groupings(schema: LabelSchema) -> list[str]:
    """Every grouping of two or more attributes, finest first."""
    combos = sorted((c for c in schema.groupings if len(c) > 1), key=len, reverse=True)
    return [GroupingKey(tuple(c)).name for c in combos]


# -- reading the typed result ------------------------------------------------------------------------------------


def groups_of(result, grouping: str) -> list:
    """The groups (:class:`~faceaudit.auditing.types.Group`) of one grouping of the audit; none when it lacks it."""
    record = result.groupings.get(grouping)
    return record.groups if record is not None else []


def group_of(result, grouping: str, key: str | None):
    """One group of a grouping by its key, or None (no such grouping or group)."""
    return next((g for g in groups_of(result, grouping) if g.key == key), None) if key is not None else None


def disparity_of(result, grouping: str, metric: str):
    """A grouping's worst-vs-best :class:`~faceaudit.auditing.types.Disparity` of one metric, or None."""
    record = result.groupings.get(grouping)
    return record.disparities.get(metric) if record is not None else None


def ranks(disparity) -> bool:
    """Whether a disparity names a worst and a best group out of two or more ranked ones."""
    return disparity is not None and bool(disparity.worst) and (disparity.n_ranked or 0) >= 2
