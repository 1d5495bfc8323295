"""Gates: reviewer thresholds read from TOML, judged pass / fail / inconclusive on confidence intervals.

A gate passes when its whole interval lies on the right side of the threshold, fails when the whole interval lies
on the wrong side, and is inconclusive when the interval straddles it or a group is too small to judge.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from xml.etree import ElementTree as ET

from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import LabelSchema

from .calibration import CALIBRATION_METRICS
from .gate_records import REGRESSION_RULES
from .gate_records import gate_disparity as _disparity
from .gate_records import gate_records as _records
from .gate_records import judged_groups as _judged_groups
from .metrics import ALL_METRICS, CLASS_METRICS, DISPARITY_METRICS, MIXED_METRICS
from .types import Gates, GroupingKey, Stat, grouping_name
from .verdict import Verdict, combine
from .verdict import exit_code as verdict_exit_code

RULES = ("min", "max", "max_gap", "min_ratio")
METRICS = (*ALL_METRICS, *CALIBRATION_METRICS, "knn_purity", *(m for m in REGRESSION_RULES if m != "n"), "n")
#: Metrics whose gap and ratio across groups the audit computes, by kind of grouping.
GAP_METRICS = {**DISPARITY_METRICS, "calibration": ("ece",)}
PASS, FAIL, INCONCLUSIVE = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE


def _kind(by: str, target: str) -> str:
    """``class`` for groupings of single-class groups (they contain the target), else ``mixed`` (overall too)."""
    return "class" if by != "overall" and target in GroupingKey.parse(by).attributes else "mixed"


def _check_task(metric: str, rule: str, where: str, schema: LabelSchema) -> None:
    """Refuse a classifier's metric on an age audit and an age metric on a classifier's (one line, naming what
    works)."""
    if schema.regression:
        if metric not in REGRESSION_RULES:
            raise FaceauditError(f"{where}: {metric} is a classifier's metric; an age audit gates "
                                 + ", ".join(f"{m} ({'/'.join(r)})" for m, r in REGRESSION_RULES.items()))
        if rule not in REGRESSION_RULES[metric]:
            raise FaceauditError(f"{where}: {metric} takes {' or '.join(REGRESSION_RULES[metric])}, not {rule}")
    elif metric in REGRESSION_RULES and metric != "n":
        raise FaceauditError(f"{where}: {metric} is an age regressor's metric (--target age); a {schema.target} "
                             f"classifier's audit gates {', '.join(METRICS[:len(ALL_METRICS)])}, "
                             f"{', '.join(CALIBRATION_METRICS)}, knn_purity or n")


def _check_defined(metric: str, by: str, rule: str, where: str, schema: LabelSchema) -> None:
    """Refuse a gate on a metric that means nothing for the grouping (one line, naming what would work)."""
    target = schema.target
    kind = _kind(by, target)
    if metric in MIXED_METRICS[1:] and kind == "class":
        others = [g for g in schema.groups if g != target] or ["overall"]
        raise FaceauditError(f"{where}: {metric} is undefined within a single-{target} group (every face there has "
                             f"the same true {target}); gate accuracy/recall, precision or fpr by {by}, or {metric} by "
                             f"{' or '.join(others)}")
    if metric in CLASS_METRICS and kind == "mixed":
        raise FaceauditError(f"{where}: {metric} is a per-{target} rate; set by = \"{target}\" or an intersection "
                             f"with {target}, not {by}")
    if rule in ("max_gap", "min_ratio"):
        allowed = GAP_METRICS["calibration"] if metric in CALIBRATION_METRICS else GAP_METRICS[kind]
        if metric not in allowed:
            raise FaceauditError(f"{where}: {rule} is available for {', '.join(allowed)} by {by}, not {metric}")


@dataclass(frozen=True)
class Gate:
    """One threshold: ``rule`` (min, max, max_gap, min_ratio) on ``metric`` over the groups of ``by``."""

    name: str
    metric: str
    by: str
    rule: str
    threshold: float


def _grouping_key(text: str) -> str:
    if text.strip().lower() in ("overall", "all"):
        return "overall"
    try:
        return GroupingKey.parse(text).name
    except FaceauditError:
        raise FaceauditError(f"gates: grouping {text!r} has an empty attribute") from None


def check_gates(gates: list[Gate], schema: LabelSchema, source: str = "gates file") -> list[Gate]:
    """The gates with their groupings matched to the audit's (``gender×race`` is ``race×gender``); one line refusing
    a grouping the audit does not compute under ``schema`` or a metric undefined for it. Checked once the
    predictions' schema is known, before any computing."""
    known = {grouping_name(g): g for g in schema.groupings}
    checked = []
    for i, gate in enumerate(gates, 1):
        where = f"{source}, gate {i}"
        by = gate.by
        if by != "overall" and by not in known:
            by = next((name for name, attrs in known.items() if GroupingKey.parse(by).same(attrs)), None)
            if by is None:
                raise FaceauditError(f"{where}: unknown grouping {gate.by!r}; use overall or one of {', '.join(known)}")
        _check_task(gate.metric, gate.rule, where, schema)
        if gate.metric not in ("n", "knn_purity") and not schema.regression:
            _check_defined(gate.metric, by, gate.rule, where, schema)
        checked.append(replace(gate, by=by))
    return checked


#: Metrics whose values are proportions (0 to 1), so a min, max or gap outside [0, 1] is a mistake.
PROPORTION_METRICS = frozenset((*ALL_METRICS, "ece", "mce", "knn_purity", "within5"))


def _check_range(where: str, metric: str, rule: str, value: float) -> None:
    """Refuse a threshold no audit could meet or miss: not finite (nan, inf), a proportion's bound outside [0, 1], a
    ratio outside (0, 1], a negative gap, error or count. Such a gate always fails (``min = 7.0``) or always passes
    (``min_ratio = -3``) and says nothing about the model."""
    if not math.isfinite(value):
        raise FaceauditError(f"{where}: {rule} must be a finite number (got {value})")
    if rule == "min_ratio" and not 0 < value <= 1:
        raise FaceauditError(f"{where}: min_ratio is the worst group's share of the best's, above 0 and at most 1 "
                             f"(got {value:g})")
    if rule == "max_gap" and value < 0:
        raise FaceauditError(f"{where}: max_gap is a difference between groups, 0 or more (got {value:g})")
    if metric in PROPORTION_METRICS and rule in ("min", "max", "max_gap") and not 0 <= value <= 1:
        raise FaceauditError(f"{where}: {metric} is a proportion, so {rule} must be between 0 and 1 (got {value:g}; "
                             f"write 0.7, not 70)")
    if metric in ("brier", "log_loss", "mae", "n") and value < 0:
        raise FaceauditError(f"{where}: {metric} is never negative, so {rule} must be 0 or more (got {value:g})")


def parse_gates(data: dict, source: str = "gates file") -> tuple[list[Gate], int | None]:
    """Gates and the optional ``min_group_size`` from parsed TOML."""
    entries = data.get("gates", data.get("gate", []))
    if not isinstance(entries, list) or not entries:
        raise FaceauditError(f"{source} defines no [[gates]]")
    min_size = data.get("min_group_size")
    if min_size is not None and (not isinstance(min_size, int) or min_size < 1):
        raise FaceauditError(f"{source}: min_group_size must be a positive integer")
    gates = []
    for i, entry in enumerate(entries, 1):
        where = f"{source}, gate {i}"
        if not isinstance(entry, dict):
            raise FaceauditError(f"{where}: each gate is a [[gates]] table of keys (metric, by, min ...)")
        metric = entry.get("metric")
        if metric not in METRICS:
            raise FaceauditError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
        rules = [r for r in RULES if r in entry]
        if len(rules) != 1:
            raise FaceauditError(f"{where}: give exactly one of {', '.join(RULES)}")
        rule = rules[0]
        threshold = entry[rule]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise FaceauditError(f"{where}: {rule} must be a number")
        _check_range(where, metric, rule, float(threshold))
        by = _grouping_key(str(entry.get("by", entry.get("grouping", "overall"))))
        if by == "overall" and rule in ("max_gap", "min_ratio"):
            raise FaceauditError(f"{where}: {rule} needs groups; set by = \"race\" or another grouping")
        if metric == "n" and rule not in ("min", "max"):
            raise FaceauditError(f"{where}: metric n takes min or max")
        unknown = set(entry) - {"name", "metric", "by", "grouping", *RULES}
        if unknown:
            raise FaceauditError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = entry.get("name") or f"{by} {metric} {rule.replace('_', ' ')} {threshold}"
        gates.append(Gate(str(name), metric, by, rule, float(threshold)))
    return gates, min_size


def load_gates(path: Path) -> tuple[list[Gate], int | None]:
    """Read a gates TOML file (see faceaudit/gates.toml)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FaceauditError(f"cannot read gates file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FaceauditError(f"gates file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise FaceauditError(f"gates file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML") from None
    return parse_gates(data, source=f"gates file {Path(path).name}")


# -- evaluation --------------------------------------------------------------------------------------------


def judge(stat: Stat | None, threshold: float, upper: bool) -> str:
    """Verdict for one value: ``upper`` means the value must not exceed the threshold."""
    if stat is None or stat.value is None:
        return INCONCLUSIVE
    if not stat.ci and not isinstance(stat.value, int):
        return INCONCLUSIVE
    lo, hi = stat.interval or (stat.value, stat.value)
    if upper:
        return PASS if hi <= threshold else FAIL if lo > threshold else INCONCLUSIVE
    return PASS if lo >= threshold else FAIL if hi < threshold else INCONCLUSIVE


#: Metrics that are binomial proportions of a group's images: a fail bound is recomputed exactly (Clopper–Pearson).
_GROUP_PROPORTIONS = ("accuracy", "recall", "fnr", "within5")


def adjusted_far_bound(stat: Stat, metric: str, upper: bool, level: float, family: int) -> float | None:
    """The interval bound a ``fail`` verdict must clear when ``family`` groups are judged at once.

    A min/max gate fails when any group's interval lies wholly on the wrong side, so over ``family`` groups it
    is a union of tests: each group's far bound is taken at the Bonferroni level ``1 − (1 − level) / family``
    (Clopper–Pearson from the counts for a group proportion, otherwise the half-width scaled by the ratio of normal
    quantiles). A pass needs every group to pass (an intersection–union test), so passes need no adjustment.
    """
    from scipy import stats as st

    from .intervals import clopper_pearson, simultaneous_level

    ci, value, n = stat.ci, stat.value, stat.n
    if not ci or value is None:
        return None
    adjusted = simultaneous_level(level, family)
    if metric in _GROUP_PROPORTIONS and n:
        hits = value * n
        if abs(hits - round(hits)) <= max(1e-3, 1e-6 * n):
            lo, hi = clopper_pearson(round(hits), n, adjusted)
            return float(hi) if upper is False else float(lo)
    scale = st.norm.ppf(1 - (1 - adjusted) / 2) / st.norm.ppf(1 - (1 - level) / 2)
    return value + (ci[1] - value) * scale if upper is False else value - (value - ci[0]) * scale


def _fmt(stat: Stat | None, metric: str = "", unit: str = "") -> str:
    """A gate's value as messages show it: a proportion in % (a gap in percentage points, ``unit=" pts"``), the
    report's one convention; other numbers with three decimals."""
    if stat is None or stat.value is None:
        return "undefined"
    if isinstance(stat.value, int) and not stat.ci:
        return f"{stat.value:,}"
    ci = stat.ci
    if metric in PROPORTION_METRICS:
        unit = unit or "%"
        return f"{100 * stat.value:.1f}{unit}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
    return f"{stat.value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _fmt_threshold(value: float, metric: str, unit: str = "%") -> str:
    """A gate's threshold in the unit of its message (``25%``, ``25 pts``, ``0.8``)."""
    return f"{100 * value:g}{unit}" if metric in PROPORTION_METRICS else f"{value:g}"


def evaluate_gate(gate: Gate, audit, family: int | None = None) -> dict:
    """One gate's verdict with the values it rests on.

    ``family`` is how many groups the gates judge together with ``min``/``max`` rules (default: this gate's
    judged groups); a group fails only when its far bound at the family's Bonferroni level is on the wrong side
    (:func:`adjusted_far_bound`), and is otherwise inconclusive.
    """
    out = {"name": gate.name, "metric": gate.metric, "grouping": gate.by, "rule": gate.rule,
           "threshold": gate.threshold, "value": None, "groups": []}
    if gate.rule in ("max_gap", "min_ratio"):
        disparity = _disparity(audit, gate.metric, gate.by)
        stat = None if disparity is None else disparity.gap if gate.rule == "max_gap" else disparity.ratio
        out["value"] = stat
        if disparity is None or (disparity.n_ranked or 0) < 2:
            out["status"] = INCONCLUSIVE
            out["message"] = f"fewer than two {gate.by} groups are large enough to compare"
        else:
            out["status"] = judge(stat, gate.threshold, upper=gate.rule == "max_gap")
            sign = "<=" if gate.rule == "max_gap" else ">="
            word = "gap" if gate.rule == "max_gap" else "ratio"
            gap_unit = " pts" if gate.rule == "max_gap" else ""
            shown = (_fmt(stat, gate.metric, gap_unit), _fmt_threshold(gate.threshold, gate.metric, gap_unit)) \
                if gap_unit else (_fmt(stat), f"{gate.threshold:g}")
            out["message"] = (f"{word} {shown[0]} must be {sign} {shown[1]}: {out['status']} "
                              f"(worst {disparity.worst}, best {disparity.best}, of {disparity.n_ranked} "
                              f"groups; interval simultaneous over {disparity.pairs} "
                              f"{'pair' if disparity.pairs == 1 else 'pairs'})")
        if out["status"] == INCONCLUSIVE:
            _add_needs(out, gate, audit, family or 1)
        return out
    upper = gate.rule == "max"
    verdicts = []
    for record in _records(audit, gate.metric, gate.by):
        status = INCONCLUSIVE if record.too_small and gate.metric != "n" else judge(record.stat, gate.threshold, upper)
        if status == FAIL and gate.metric != "n":
            size = family or max(sum(not r.too_small for r in _records(audit, gate.metric, gate.by)), 1)
            far = adjusted_far_bound(record.stat, gate.metric, upper, audit.settings.level, size)
            if far is not None and not (far > gate.threshold if upper else far < gate.threshold):
                status = INCONCLUSIVE
        verdicts.append(status)
        out["groups"].append({"key": record.key, "status": status, "value": record.stat,
                              **({"too_small": True} if record.too_small else {})})
    if gate.by == "overall":
        out["value"] = out["groups"][0]["value"]
    out["status"] = FAIL if FAIL in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else PASS
    bad = sorted((g for g in out["groups"] if g["status"] != PASS), key=lambda g: g["status"] != FAIL)
    sign = "<=" if upper else ">="
    if not bad:
        out["message"] = f"every {gate.by} group has {gate.metric} {sign} {_fmt_threshold(gate.threshold, gate.metric)}"
    else:
        shown = "; ".join(f"{g['key']} {_fmt(g['value'], gate.metric)} {g['status']}"
                          + (" (too small)" if g.get("too_small") else "") for g in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        out["message"] = f"{gate.metric} must be {sign} {_fmt_threshold(gate.threshold, gate.metric)}: {shown}{more}"
    if out["status"] == INCONCLUSIVE and gate.metric != "n":
        size = family or max(sum(not r.too_small for r in _records(audit, gate.metric, gate.by)), 1)
        _add_needs(out, gate, audit, size, only={g["key"] for g in out["groups"] if g["status"] == INCONCLUSIVE})
    return out


def _add_needs(out: dict, gate: Gate, audit, family: int, only: set | None = None) -> None:
    """An inconclusive gate's ``needs`` (per group: images for a decisive verdict with 80 % power, :mod:`.planner`)
    and its message's "needs about N faces of G (has M)"."""
    from .planner import gate_needs, needs_line

    try:
        needs = gate_needs(gate, audit, family=family, only=only)
    except (FaceauditError, KeyError, ValueError, TypeError, ZeroDivisionError):
        return
    if needs:
        out["needs"] = needs
        out["message"] += f"; {needs_line(needs)} for a decisive verdict with 80 % power"


def evaluate_gates(gates: list[Gate], audit, *, inconclusive: str = FAIL, source: str | None = None) -> Gates:
    """The ``gates`` block of an audit result (:class:`~.result.AuditResult`): each gate's verdict and the overall
    status.

    A test set below the audit's minimum size is too small to judge: every gate is then inconclusive (a
    coverage gate on ``n`` can still fail).
    """
    checked = check_gates(gates, audit.taxonomy, source or "gates")
    family = max(sum(_judged_groups(g, audit) for g in checked), 1)
    results = [evaluate_gate(g, audit, family) for g in checked]
    if audit.data.get("too_small_to_judge"):
        for result in results:
            if result["status"] == PASS or (result["status"] == FAIL and result["metric"] != "n"):
                result["status"] = INCONCLUSIVE
                result["message"] = (f"too small to judge: {audit.overall.n} test images, below the minimum "
                                     f"of {audit.settings.min_test_size}; " + result["message"])
    counts = {s.value: sum(r["status"] == s for r in results) for s in (PASS, FAIL, INCONCLUSIVE)}
    status = combine(r["status"] for r in results)
    return Gates.from_dict({"file": source, "status": status, "inconclusive_policy": inconclusive, "counts": counts,
                            "junit": None, "results": results}, "gates")


def exit_code(gates: Gates | None) -> int:
    """0 when every gate passes (inconclusive counts per the policy), 1 when any fails (:func:`.verdict.exit_code`)."""
    if gates is None:
        return 0
    return verdict_exit_code([r.status for r in gates.results], gates.inconclusive_policy)


def junit_xml(gates: Gates, suite: str = "faceaudit gates") -> str:
    """JUnit XML with one testcase per gate: failure on fail; inconclusive is a failure or a skip per policy."""
    as_failure = gates.inconclusive_policy == FAIL
    failed, inconclusive = gates.count(FAIL), gates.count(INCONCLUSIVE)
    root = ET.Element("testsuites")
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(gates.results)),
                         failures=str(failed + (inconclusive if as_failure else 0)),
                         errors="0", skipped=str(0 if as_failure else inconclusive))
    for result in gates.results:
        case = ET.SubElement(node, "testcase", classname=f"faceaudit.gates.{result.grouping}", name=result.name)
        if result.status == FAIL:
            ET.SubElement(case, "failure", message=result.message, type="GateFailed").text = result.message
        elif result.status == INCONCLUSIVE:
            tag = "failure" if as_failure else "skipped"
            ET.SubElement(case, tag, message=f"inconclusive: {result.message}",
                          **({"type": "GateInconclusive"} if as_failure else {})).text = result.message
        ET.SubElement(case, "system-out").text = result.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
