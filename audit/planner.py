"""How many test images a gate needs for a decisive verdict (pass or fail) with 80 % power.

Each gate is planned at the rates it is judged on — observed in an audit (``--from audit.json``) or stated before
any data are collected (``--rates``) — with the same intervals the audit draws:

- ``min`` / ``max`` on a proportion (accuracy, recall, fnr, within5): exact binomial power of the Clopper–Pearson
  bound, at the audit's level for a pass and at the gates' Bonferroni level for a fail (as :func:`.gates.evaluate_gate`
  judges). Per group.
- ``max_gap`` / ``min_ratio`` on a proportion: simulated audits of the groups (binomial draws, Clopper–Pearson
  intervals at the max-type level, MOVER over every pair), every group grown in its observed proportion (equal
  sizes with stated rates); the smallest group's size is reported.
- anything else (ECE, MCE, Brier, log loss, kNN purity, gaps of these): the observed interval's half-width scaled
  by ``sqrt(n_observed / n)`` (a normal approximation); with stated rates, an ECE's spread is taken as that of the
  group's accuracy, ``sqrt(a (1 − a) / n)`` (the bound an ECE reaches when every bin errs on the same side). An
  ``ece`` ceiling's pass, from an audit or stated rates, is planned on the simulated law of a calibrated model's ECE
  upper bound (:data:`ECE_UPPER_MEAN`) shifted by the ECE (from an audit, the lower end of its interval), at the
  group's accuracy.

Sizes are "about": the binomial power saw-tooths in n, and a planned size is only as good as the rates it rests on.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from faceaudit.config import DEFAULT_CI, DEFAULT_MIN_GROUP_SIZE

from .gate_records import Judged, gate_disparity, gate_records, judged_groups
from .intervals import clopper_pearson, max_type_level, mover_difference, mover_ratio, simultaneous_level
from .types import Stat

POWER = 0.80
#: Beyond this many images per group a verdict is called out of reach rather than planned.
CAP = 10_000_000
#: Simulated audits per candidate size of a gap or ratio gate.
GAP_DRAWS = 1000
PROPORTIONS = ("accuracy", "recall", "fnr", "within5", "selection_rate", "precision", "fpr")
#: Accuracy assumed for an ECE planned from stated rates when none is stated.
DEFAULT_ACCURACY = 0.85
#: A calibrated model's ECE upper bound is about (mean + spread · Z) · sqrt(a (1 − a) / n): measured by simulating
#: :func:`.calibration.ece_interval` (15 bins, confidences 0.25-0.995, n = 200, 800, 1,108, 2,000 per group; the
#: upper tail is heavier than a normal's, so the spread is fitted at the 0.956 quantile).
ECE_UPPER_MEAN, ECE_UPPER_SPREAD = 3.06, 0.92


def _z(level: float) -> float:
    return float(stats.norm.ppf(1 - (1 - level) / 2))


def _search(decisive, start: int = 2) -> int | None:
    """Smallest n (doubling, then bisection) with ``decisive(n)`` true; None beyond :data:`CAP`."""
    lo, hi = 1, max(int(start), 2)
    while not decisive(hi):
        lo, hi = hi, hi * 2
        if hi > CAP:
            return None
    while hi - lo > max(1, hi // 50):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decisive(mid) else (mid, hi)
    return hi


def proportion_power(p: float, n: int, threshold: float, upper: bool, level: float, fail_level: float) -> float:
    """Probability that a ``min`` (``upper`` False) or ``max`` gate on a proportion ``p`` of ``n`` images is decisive:
    its Clopper–Pearson bound at ``level`` clears the threshold (pass), or at ``fail_level`` misses it (fail)."""
    if upper:  # a max gate on p is a min gate on 1 − p
        p, threshold = 1 - p, 1 - threshold
    n = int(n)
    # pass: CP lower bound >= t  <=>  P(X >= x | t) <= alpha/2
    x_pass = int(stats.binom.ppf(1 - (1 - level) / 2, n, threshold)) + 1
    # fail: CP upper bound (at fail_level) < t  <=>  P(X <= x | t) <= alpha'/2 (strictly below for a fail)
    q = (1 - fail_level) / 2
    k = int(stats.binom.ppf(q, n, threshold))
    x_fail = k if stats.binom.cdf(k, n, threshold) < q else k - 1
    power = stats.binom.sf(x_pass - 1, n, p) if x_pass <= n else 0.0
    if x_fail >= 0:
        power += stats.binom.cdf(x_fail, n, p)
    return float(power)


def plan_proportion(p: float, threshold: float, upper: bool, level: float = 0.95, family: int = 1,
                    power: float = POWER) -> int | None:
    """Images of one group that a ``min``/``max`` gate on a proportion needs to be decisive with ``power``."""
    if p is None or not np.isfinite(p) or abs(p - threshold) < 1e-9:
        return None
    fail_level = simultaneous_level(level, family)
    z = _z(level) + stats.norm.ppf(power)
    start = max(2, int(z * z * max(p * (1 - p), 1e-3) / (p - threshold) ** 2 / 2))
    return _search(lambda n: proportion_power(p, n, threshold, upper, level, fail_level) >= power, start)


def plan_normal(value: float, half_width: float, n0: int, threshold: float, upper: bool, level: float = 0.95,
                family: int = 1, power: float = POWER) -> int | None:
    """Images a gate on an approximately normal estimate needs: its standard error ``half_width / z`` at ``n0``
    images shrinks as ``sqrt(n0 / n)``; a pass needs the near bound at ``level``, a fail the far one at the
    Bonferroni level over ``family``."""
    if value is None or not np.isfinite(value) or not half_width or not np.isfinite(half_width) or not n0:
        return None
    distance = (threshold - value) if upper else (value - threshold)
    if abs(distance) < 1e-9:
        return None
    z = _z(level) if distance > 0 else _z(simultaneous_level(level, family))
    se0 = half_width / _z(level)
    n = n0 * (se0 * (z + stats.norm.ppf(power)) / abs(distance)) ** 2
    return None if n > CAP else max(int(math.ceil(n)), 2)


def gap_decisive(rates, sizes, threshold: float, rule: str, level: float = 0.95, draws: int = GAP_DRAWS,
                 seed: int = 0) -> float:
    """Share of simulated audits in which a ``max_gap`` (or ``min_ratio``) gate over groups with true ``rates`` and
    ``sizes`` is decisive, judged as the audit does (Clopper–Pearson at the max-type level, MOVER over pairs)."""
    p, n = np.asarray(rates, dtype=float), np.maximum(np.asarray(sizes, dtype=int), 1)
    m = len(p)
    sd = np.sqrt(np.clip(p * (1 - p), 1e-4, None) / n)
    adjusted = max_type_level(level, sd, seed=seed)
    x = np.random.default_rng(seed).binomial(n, p, size=(draws, m))
    est = x / n
    lo, hi = clopper_pearson(x, n, adjusted)
    a = (est[:, :, None], lo[:, :, None], hi[:, :, None])
    b = (est[:, None, :], lo[:, None, :], hi[:, None, :])
    off = ~np.eye(m, dtype=bool)
    if rule == "max_gap":
        _, d_lo, d_hi = mover_difference(a, b)
        low = np.maximum(d_lo[:, off].max(axis=1), 0.0)
        high = d_hi[:, off].max(axis=1)
        return float(np.mean((high <= threshold) | (low > threshold)))
    _, r_lo, r_hi = mover_ratio(a, b)
    low, high = np.nanmin(r_lo[:, off], axis=1), np.nanmin(r_hi[:, off], axis=1)
    return float(np.mean((low >= threshold) | (high < threshold)))


def plan_gap(rates, sizes, threshold: float, rule: str, level: float = 0.95, power: float = POWER) -> int | None:
    """The smallest group's size at which a gap or ratio gate is decisive with ``power``, every group grown in
    proportion to ``sizes``; None where the true gap sits at the threshold (no size decides it)."""
    p, n0 = np.asarray(rates, dtype=float), np.asarray(sizes, dtype=float)
    if len(p) < 2 or not np.isfinite(p).all():
        return None
    true = p.max() - p.min() if rule == "max_gap" else (p.min() / p.max() if p.max() > 0 else np.nan)
    if not np.isfinite(true) or abs(true - threshold) < 1e-3:
        return None
    share = n0 / n0.min()
    return _search(lambda k: gap_decisive(p, np.ceil(k * share), threshold, rule, level) >= power,
                   start=max(int(n0.min()) // 2, 8))


# -- gates -----------------------------------------------------------------------------------------------------


def _fmt_n(n: int | None) -> str:
    return "more than 10,000,000" if n is None else f"{n:,}"


def needs_line(needs: list[dict]) -> str:
    """``needs about 1,200 faces of Black (has 400)`` for the groups of one inconclusive gate (the largest need first)."""
    parts = []
    for i, row in enumerate(needs[:3]):
        words = ("needs about " if row["needs"] else "needs ") if i == 0 else ""
        faces = " faces" if i == 0 else ""
        why = row.get("why", "estimate at the threshold")
        reach = (f"{words}{_fmt_n(row['needs'])}{faces} of {row['group']} (has {row['has']:,})"
                 if row["needs"] or why.startswith("more than") else
                 f"{row['group']} cannot be sized (has {row['has']:,}; {why})")
        parts.append(reach + (f", {row['note']}" if row.get("note") else ""))
    left = len(needs) - 3
    more = f" and {left} more {'group' if left == 1 else 'groups'}" if left > 0 else ""
    return "; ".join(parts) + more


def gate_needs(gate, audit=None, *, rates: dict | None = None, level: float | None = None,
               family: int = 1, only: set | None = None, min_group_size: int | None = None,
               groups: list[str] | None = None, power: float = POWER) -> list[dict]:
    """Per group of a gate: ``{"group", "has", "needs"}`` (images for a decisive verdict with 80 % power).

    From an ``audit`` result the observed rates and sizes are used (``rates`` override them); without one, ``rates``
    must state them and ``groups`` name the groups (equal sizes). ``only``: restrict a min/max gate to these group
    keys (the inconclusive ones).
    """
    rates = rates or {}
    level = level or (audit.settings.level if audit is not None else DEFAULT_CI)
    if min_group_size is None:
        min_group_size = audit.settings.min_group_size if audit is not None else DEFAULT_MIN_GROUP_SIZE
    upper = gate.rule in ("max", "max_gap")
    if audit is not None:
        observed = gate_records(audit, gate.metric, gate.by)
    else:
        observed = [Judged(g, False, Stat(n=0)) for g in (groups or ["all"])]

    def rate_of(key: str, stat: Stat | None):
        for name in (f"{gate.metric}:{key}", key if gate.metric in PROPORTIONS else None, gate.metric):
            if name and name in rates:
                return float(rates[name])
        return stat.value if stat is not None else None

    out = []
    if gate.rule in ("max_gap", "min_ratio"):
        rows = [r for r in observed if r.stat is not None and (audit is None or not r.too_small)]
        keys = [r.key for r in rows]
        p = [rate_of(r.key, r.stat) for r in rows]
        n = [int(r.stat.n or 0) for r in rows]
        if audit is None:
            n = [100] * len(rows)
        if len(rows) < 2 or any(v is None for v in p):
            return []
        if gate.metric in PROPORTIONS and min(n) > 0:
            k = plan_gap(p, n, gate.threshold, gate.rule, level, power)
            k = None if k is None else max(k, min_group_size)
            small = int(np.argmin(n))
            scale = None if k is None else k / n[small]
            note = ("equal sizes" if audit is None else
                    None if scale is None else f"every {gate.by} group grown in proportion (x{scale:.1f})")
            return [{"group": keys[small] if audit is not None else f"each {gate.by} group", "has": n[small],
                     "needs": k, **({"note": note} if note else {}),
                     **({} if k else {"why": "the true gap is at the threshold"})}]
        disparity = _disparity_stat(audit, gate) if audit is not None else None
        if disparity is None:
            return []
        stat, small = disparity
        lo, hi = stat.interval
        half = (hi - stat.value) if upper == (stat.value <= gate.threshold) else (stat.value - lo)
        n0 = small[1]
        k = plan_normal(stat.value, half, n0, gate.threshold, upper, level, power=power)
        return [{"group": small[0], "has": n0, "needs": None if k is None else max(k, min_group_size),
                 "note": f"every {gate.by} group grown in proportion"}]
    # A gate passes only when every group passes, so the groups on the pass side share the power (each gets
    # POWER ** (1 / k)); one group on the fail side decides the gate alone (POWER).
    values = [rate_of(r.key, r.stat) for r in observed]
    on_pass = sum(v is not None and ((v <= gate.threshold) if upper else (v >= gate.threshold)) for v in values)
    for r, value in zip(observed, values):
        if only is not None and r.key not in only:
            continue
        stat = r.stat or Stat()
        has = int(stat.n or 0)
        if gate.metric == "n" or value is None:
            continue
        key = "the test set" if r.key == "all" else r.key
        passing = (value <= gate.threshold) if upper else (value >= gate.threshold)
        want = power ** (1 / max(on_pass, 1)) if passing else power
        if gate.metric in PROPORTIONS:
            k = plan_proportion(value, gate.threshold, upper, level, family, want)
        elif audit is not None and gate.metric == "ece" and upper and _ece_pass_value(value, stat, gate.threshold) is not None:
            # An ECE ceiling from an audit: the upper bound of a debiased ECE does not shrink around a fixed value
            # as a normal estimate's does (its bias falls with n too), so plan on the same simulated law as from
            # stated rates, at the group's observed accuracy and the smallest ECE its interval allows.
            a = _group_accuracy(audit, gate.by, r.key)
            shift = gate.threshold - _ece_pass_value(value, stat, gate.threshold)
            k = (ECE_UPPER_MEAN + ECE_UPPER_SPREAD * stats.norm.ppf(power ** (1 / max(on_pass, 1)))) * math.sqrt(
                a * (1 - a)) / shift
            k = None if k * k > CAP else max(int(math.ceil(k * k)), 2)
        elif audit is not None and stat.ci and has:
            ci = stat.ci
            half = (ci[1] - value) if passing == upper else (value - ci[0])
            k = plan_normal(value, half, has, gate.threshold, upper, level, family, want)
        elif gate.metric in ("ece", "mce"):
            a = rates.get(f"accuracy:{r.key}", rates.get(r.key, rates.get("accuracy", DEFAULT_ACCURACY)))
            spread = math.sqrt(a * (1 - a))
            if passing and upper and gate.metric == "ece":
                # The upper bound of a calibrated model's ECE interval, times sqrt(n), has mean 3.06 and upper
                # quantiles as of spread 0.92 in units of sqrt(a (1 - a)) (simulated, 15 bins, n = 200-2,000: it
                # carries the debiased ECE's remaining upward bias, which a plain normal model misses).
                k = (ECE_UPPER_MEAN + ECE_UPPER_SPREAD * stats.norm.ppf(want)) * spread / (gate.threshold - value)
                k = None if k * k > CAP else max(int(math.ceil(k * k)), 2)
            else:
                k = plan_normal(value, _z(level) * spread, 1, gate.threshold, upper, level, family, want)
        else:
            k = None
        why = ("no model of its spread without an audit: plan with --from" if k is None and audit is None
               and gate.metric not in PROPORTIONS + ("ece", "mce") else
               "estimate at the threshold" if abs(value - gate.threshold) < 1e-9 else "more than 10,000,000 needed")
        if k is not None and r.too_small:
            k = max(k, min_group_size)
        out.append({"group": key, "has": has, "needs": k, "rate": float(value), **({} if k else {"why": why})})
    return sorted(out, key=lambda row: -(row["needs"] or CAP + 1))


def _ece_pass_value(value: float, stat: Stat, threshold: float) -> float | None:
    """The ECE an ``ece max`` gate is planned to pass at from an audit: the lower end of the observed interval (the
    smallest ECE the data allow; at pilot sizes the estimate is too noisy to plan on: a calibrated model's ranges
    from 0 to above 0.05 on 200 faces), or None when even that is above the threshold (plan a fail)."""
    low = stat.ci[0] if stat.ci else value
    return max(low, 0.0) if low < threshold else None


def _group_accuracy(audit, by: str, key: str) -> float:
    """A group's observed accuracy (the whole test set's for ``overall``); :data:`DEFAULT_ACCURACY` if absent."""
    try:
        group = audit.overall if by == "overall" else next(g for g in audit.groupings[by].groups if g.key == key)
        value = group.metrics["accuracy"].value
    except (KeyError, StopIteration):
        return DEFAULT_ACCURACY
    return float(value) if value is not None and 0 < value < 1 else DEFAULT_ACCURACY


def _disparity_stat(audit, gate) -> tuple[Stat, tuple[str, int]] | None:
    """The gap or ratio stat of a non-proportion gap gate and the smallest ranked group (key, n)."""
    d = gate_disparity(audit, gate.metric, gate.by)
    if d is None:
        return None
    stat = d.gap if gate.rule == "max_gap" else d.ratio
    if stat is None or stat.value is None or not stat.ci:
        return None
    rows = [r for r in gate_records(audit, gate.metric, gate.by) if not r.too_small and r.stat is not None]
    sizes = [(("overall" if r.key == "all" else r.key), int(r.stat.n or 0)) for r in rows]
    sizes = [s for s in sizes if s[1]]
    return (stat, min(sizes, key=lambda s: s[1])) if sizes else None


def plan(gates, audit=None, rates: dict | None = None, level: float = 0.95,
         schema=None) -> list[dict]:
    """Per gate: its name, rule and the per-group sizes a decisive verdict needs (``faceaudit plan``)."""
    family = max(sum(judged_groups(g, audit) for g in gates), 1) if audit is not None else max(
        sum(len(_group_keys(g, schema)) for g in gates if g.rule in ("min", "max") and g.metric != "n"), 1)
    out = []
    for gate in gates:
        if gate.metric == "n":
            out.append({"gate": gate, "needs": [], "note": f"a count: needs {gate.threshold:,.0f} images"})
            continue
        needs = gate_needs(gate, audit, rates=rates, level=level if audit is None else None, family=family,
                           groups=None if audit is not None else _group_keys(gate, schema))
        out.append({"gate": gate, "needs": needs})
    return out


def _group_keys(gate, schema) -> list[str]:
    """The group keys of a gate's grouping under ``schema`` (for planning from stated rates)."""
    from faceaudit.taxonomy import UTKFACE

    from .types import GroupingKey

    schema = schema or UTKFACE
    if gate.by == "overall":
        return ["all"]
    grouping = GroupingKey.parse(gate.by)
    keys = [[]]
    for attribute in grouping.attributes:
        values = _values(schema, attribute)
        keys = [k + [v] for k in keys for v in values]
    return [grouping.group_key(k) for k in keys]


def _values(schema, attribute: str) -> list[str]:
    try:
        return list(schema.attribute(attribute).values)
    except Exception:  # noqa: BLE001 - an attribute the schema does not know: one group of that name
        return [attribute]
