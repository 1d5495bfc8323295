"""The verdict's plain-words findings: the few facts from an audit a reviewer should read first.

Each candidate finding carries a severity (roughly: accuracy points or calibration error at stake); the report
shows the top three. Nothing here is hard-coded to a dataset: every sentence is built from ``audit.json``.

The sentences say what the statistics allow and no more: a worst group is named with the number of groups it
was picked from and an interval adjusted for every pair it could have been; a group is called worse than the rest
only when its Holm-adjusted p-value says so; a test set below the audit's minimum size gets one verdict, too
small to judge, instead of per-group findings that would be noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.auditing.intervals import proportion, simultaneous_level
from faceaudit.auditing.metrics import LOWER_IS_BETTER, METRIC_LABELS
from faceaudit.auditing.types import Calibration, Disparity, Group, Stat
from faceaudit.auditing.verdict import Verdict

from .formatting import (
    compound_label,
    disparity_of,
    excludes_zero,
    finest_grouping,
    fmt_p,
    fmt_stat,
    group_label,
    group_of,
    groups_of,
    intersection_groupings,
    main_grouping,
    other_groups,
    plural,
    plural_word,
    points,
    ranks,
    schema_of,
    significant,
    target_label,
    temperature_text,
)

#: The label the report, summary.md and the console give an audit whose test set is below the minimum size.
TOO_SMALL = "TOO SMALL TO JUDGE"


@dataclass
class Finding:
    """One sentence for the verdict and how much it matters."""

    text: str
    severity: float
    kind: str


# -- facts the verdict leads with ------------------------------------------------------------------------------


def too_small_to_judge(result) -> bool:
    """Whether the test set is below the audit's minimum size (``data.too_small_to_judge``)."""
    return bool(result.data.get("too_small_to_judge"))


def inconclusive_sentence(result) -> str | None:
    """Whether the gates' verdict rests on a lack of data rather than a failure: the inconclusive gates, what the
    first needs, and whether any gate fails for cause. None when no gate is inconclusive."""
    gates = result.gates
    open_gates = [g for g in gates.results if g.status == Verdict.INCONCLUSIVE] if gates else []
    if not open_gates or too_small_to_judge(result):
        return None
    failed = gates.count(Verdict.FAIL)
    need = next((g for g in open_gates if g.needs), None)
    example = ""
    if need is not None:
        from faceaudit.auditing.planner import needs_line

        example = f" ({need.name} {needs_line(need.needs[:1])})"
    names = plural(len(open_gates), "gate")
    if failed:
        return (f"{plural(failed, 'gate')} fail{'s' if failed == 1 else ''} for cause; {names} "
                f"{'is' if len(open_gates) == 1 else 'are'} also inconclusive for lack of data{example}.")
    return (f"Inconclusive for lack of data, not a failure: no gate fails, but {names} cannot be decided with "
            f"these test images{example}. `faceaudit plan --gates GATES --from audit.json` sizes the test set.")


def too_small_sentence(result) -> str | None:
    """Why nothing is concluded from a too-small test set, or None when the test set is large enough."""
    if not too_small_to_judge(result):
        return None
    n, minimum = result.overall.n, result.settings.min_test_size
    return (f"{TOO_SMALL}: {plural(n, 'test image')}, below the minimum of {minimum}. The numbers are shown with "
            "their (wide) intervals, but no finding is drawn from them and no gate can pass.")


def missing_classes(result) -> list[str]:
    """Classes with no test image at all (``data.missing_classes``, else those missing from the target's grouping)."""
    target = schema_of(result).target
    grouping = result.groupings.get(target)
    return list(result.data.get("missing_classes") or (grouping.missing if grouping else []))


def missing_sentence(result) -> str | None:
    """What the audit cannot say because classes are absent from the test set, or None when every class is there."""
    missing = missing_classes(result)
    if not missing:
        return None
    names, target = ", ".join(missing), target_label(schema_of(result))
    return (f"No test images of {names}: nothing can be said about how the model serves "
            f"{'that class' if len(missing) == 1 else 'those classes'}, every per-{target} comparison leaves "
            f"{'it' if len(missing) == 1 else 'them'} out, and a gate on per-{target} group size fails.")


def status_line(result) -> str:
    """The console's last line: the gates' status with their counts, or that the audit was not gated (an ungated
    audit exits 0, so the line says how to make it judge something, or refuse)."""
    from faceaudit.auditing.verdict import Status

    if result.status == Status.NOT_GATED:
        return ("status: NOT GATED (no gates judged; --gates gates.toml judges pass/fail, --require-gates or "
                "FACEAUDIT_REQUIRE_GATES=1 refuses an ungated audit)")
    return f"gates: {result.status.upper()} ({result.gates.counts_text()})"


# -- helpers ---------------------------------------------------------------------------------------------------


def _noise(stat: Stat) -> str:
    """Whether an adjusted difference's interval excludes zero, in words."""
    return "larger than sampling noise explains" if excludes_zero(stat) else "not clearly larger than sampling noise"


def _omnibus(disparity: Disparity) -> str:
    omnibus = disparity.omnibus or {}
    if omnibus.get("p_value") is None:
        return ""
    return f"; test that all {disparity.n_ranked} groups are equal: {fmt_p(omnibus['p_value'])}"


def _picked(disparity: Disparity) -> str:
    """``(picked from 5 ranked groups; interval adjusted for all 10 pairs)``: how a worst-vs-best difference must be
    read."""
    pairs = disparity.pairs
    return (f"(picked from {plural(disparity.n_ranked, 'ranked group')}; interval adjusted for "
            f"{'the one pair' if pairs == 1 else f'all {pairs} pairs'})")


def _clear(severity: float, stat: Stat | None) -> float:
    """Findings backed by an interval that excludes zero outrank equally large ones that are not."""
    return severity if excludes_zero(stat) else 0.5 * severity


# -- candidate findings ----------------------------------------------------------------------------------------


def _basis(metric: str, record: Group, schema) -> str:
    """The faces a group's rate rests on: ``n=52``, or for precision ``n=57 predicted Indian`` (it is not the group's
    size), for FPR ``n=249 of other races``."""
    stat = record.metrics.get(metric)
    n = stat.n if stat is not None and stat.n is not None else record.n
    true_class = (record.values or {}).get(schema.target, record.key)
    return {"precision": f"n={n} predicted {true_class}",
            "fpr": f"n={n} of other {plural_word(target_label(schema))}"}.get(metric, f"n={n}")


def _worst_group_finding(result, grouping: str, metric: str = "accuracy", *, only_if_clear: bool = False
                         ) -> Finding | None:
    """Worst against best group of a grouping on one metric: the signed difference with its simultaneous interval."""
    disparity = disparity_of(result, grouping, metric)
    if not ranks(disparity):
        return None
    difference = disparity.difference
    worst, best = group_of(result, grouping, disparity.worst), group_of(result, grouping, disparity.best)
    if difference is None or difference.value is None or worst is None or best is None \
            or (only_if_clear and not excludes_zero(difference)):
        return None
    low, high = ("highest", "lowest") if metric in LOWER_IS_BETTER else ("lowest", "highest")
    w, b, schema = worst.metrics[metric], best.metrics[metric], schema_of(result)
    text = (f"By {group_label(grouping)}, {METRIC_LABELS[metric]} is {low} for {worst.key} at {fmt_stat(w)} "
            f"({_basis(metric, worst, schema)}) and {high} for {best.key} at {fmt_stat(b)} "
            f"({_basis(metric, best, schema)}): "
            f"a difference of {points(difference)} {_picked(disparity)}, {_noise(difference)}{_omnibus(disparity)}.")
    return Finding(text, _clear(abs(float(difference.value)), difference), f"worst:{grouping}:{metric}")


def _intersection_finding(result) -> Finding | None:
    """The intersectional group furthest below the rest of the test set, among those whose shortfall holds after
    the audit's adjustment (one family over the ranked groups of every intersection: Bonferroni intervals, Holm
    within each grouping at its share of the family's error rate); a plain statement when there is none."""
    worst, compared = None, 0
    for grouping in intersection_groupings(schema_of(result)):
        for record in groups_of(result, grouping):
            diff = (record.vs_rest or {}).get("accuracy")
            if record.too_small or not diff:
                continue
            compared += 1
            if significant(diff) and diff.value < 0 and (worst is None or diff.value < worst[1].value):
                worst = (grouping, diff, record)
    if compared == 0:
        return None
    if worst is None:
        return Finding(f"No intersectional group's accuracy differs from the rest of the test set beyond sampling "
                       f"noise ({compared} ranked groups compared, adjusted as one family across the intersections); "
                       "differences within the intervals shown cannot be ruled out.", 0.0, "intersection")
    grouping, diff, record = worst
    text = (f"The worst-served intersectional group is {record.key} ({group_label(grouping)}, n={record.n}): "
            f"accuracy {fmt_stat(record.metrics['accuracy'])}, {points(diff)} against the rest of the test set "
            f"(one of {plural(diff.family or 0, 'ranked group')} compared across the intersections; interval "
            f"adjusted for all of them, Holm-adjusted {fmt_p(diff.p_holm)}).")
    return Finding(text, -float(diff.value), "intersection")


def _temperature_clause(calibration: Calibration, grouping: str, key: str) -> str:
    temperature = calibration.temperature
    if temperature is None:
        return ""
    record = next((r for r in temperature.groupings.get(grouping, []) if r.key == key), None)
    change = record.ece_change if record is not None else None
    if change is None or change.value is None:
        return ""
    return (f" Temperature scaling ({temperature_text(temperature)}) changes its ECE by {points(change)}, "
            f"{'a real change' if excludes_zero(change) else 'not clearly a change'}.")


def _calibration_finding(result) -> Finding | None:
    """The group of the lead grouping (each race, for UTKFace) whose confidence scores are furthest from its accuracy
    (debiased ECE), read against the best."""
    calibration = result.calibration
    if calibration is None:
        return None
    grouping = main_grouping(schema_of(result))
    disparity = calibration.disparities.get(grouping, {}).get("ece")
    if not ranks(disparity):
        return None
    record = next((r for r in calibration.groupings.get(grouping, []) if r.key == disparity.worst), None)
    if record is None or record.ece is None or record.ece.value is None:
        return None
    difference = disparity.difference
    text = (f"Confidence scores are least trustworthy for {record.key} faces: expected calibration error "
            f"(debiased) {fmt_stat(record.ece)} against {fmt_stat(calibration.overall.ece)} overall")
    if difference is not None and difference.value is not None:
        text += (f"; it exceeds that of the best-calibrated group ({disparity.best}) by {points(difference)} "
                 f"{_picked(disparity)}, {_noise(difference)}")
    text += "." + _temperature_clause(calibration, grouping, record.key)
    return Finding(text, _clear(float(record.ece.value), difference), "calibration")


def _confusion_finding(result) -> Finding | None:
    """The largest off-diagonal share of the confusion matrix, among true classes with enough faces to read it.

    Its interval is adjusted for the K(K − 1) off-diagonal cells it was picked from.
    """
    counts = np.asarray(result.overall.confusion["counts"], dtype=float)
    support = counts.sum(axis=1)
    usable = support >= result.settings.min_group_size
    off = counts * (1 - np.eye(len(counts))) * usable[:, None]
    if not usable.any() or off.max() <= 0:
        return None
    i, j = np.unravel_index(np.argmax(off / np.maximum(support, 1)[:, None]), off.shape)
    cells = len(counts) * (len(counts) - 1)
    value, lo, hi = (float(v) for v in proportion(counts[i, j], support[i], simultaneous_level(
        result.settings.level, cells)))
    share = {"value": value, "ci": [lo, hi]}
    text = (f"The most common confusion: {fmt_stat(share)} of {result.classes[i]} faces ({int(counts[i, j])} of "
            f"{int(support[i])}) are classified as {result.classes[j]} (interval adjusted for the {cells} "
            "off-diagonal cells it was picked from).")
    return Finding(text, value * 0.5, "confusion")


def _small_groups_finding(result) -> Finding | None:
    """How many of the finest groups (race × gender × age band, for UTKFace) are too small to judge."""
    schema = schema_of(result)
    groups = groups_of(result, finest_grouping(schema))
    small = [g for g in groups if g.too_small]
    if not small:
        return None
    text = (f"{len(small)} of {len(groups)} {compound_label(schema, finest_grouping(schema))} groups have fewer than "
            f"{result.settings.min_group_size} test faces, so nothing can be concluded about them "
            "(they are shown but never ranked).")
    return Finding(text, 0.02 * len(small) / max(len(groups), 1), "small")


def headline(result) -> list[str]:
    """What the verdict must lead with, before any finding: a model contract that looks wrong, a model trained on
    these faces, a too-small test set, classes absent from it."""
    from faceaudit.auditing import overlap, sanity

    model = result.model or {}
    return [text for text in (sanity.sentence(model.get("sanity")), overlap.sentence(model.get("overlap")),
                              too_small_sentence(result), missing_sentence(result), inconclusive_sentence(result))
            if text]


def findings(result, limit: int = 3) -> list[Finding]:
    """A classifier's ``limit`` most severe findings, most severe first; none when the test set is too small to
    judge (:func:`headline` then says so). An age regressor's are :func:`.age_findings.regression_findings` (which
    builds on this module, so this one never imports it)."""
    if getattr(result, "is_regression", False):
        raise TypeError("an age regressor's findings are faceaudit.auditing.report.age_findings.regression_findings")
    if too_small_to_judge(result):
        return []
    schema = schema_of(result)
    lead = main_grouping(schema)
    candidates = [_worst_group_finding(result, lead),
                  _worst_group_finding(result, lead, "precision", only_if_clear=True),
                  _intersection_finding(result), _calibration_finding(result),
                  *(_worst_group_finding(result, g) for g in other_groups(schema)),
                  _confusion_finding(result), _small_groups_finding(result)]
    ranked = sorted((c for c in candidates if c is not None), key=lambda c: -c.severity)
    return ranked[:limit]
