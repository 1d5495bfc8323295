"""The verdict's plain-words findings: the few facts from an audit a reviewer should read first.

Each candidate finding carries a severity (roughly: accuracy points or calibration error at stake); the report
shows the top three. Nothing here is hard-coded to a dataset: every sentence is built from ``audit.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formatting import excludes_zero, fmt_stat, group_label, points  # noqa: F401


@dataclass
class Finding:
    """One sentence for the verdict and how much it matters."""

    text: str
    severity: float
    kind: str


def _unsigned_points(stat: dict) -> str:
    """A gap or shortfall as positive percentage points with its interval: ``78.6 points [75.4, 82.5]``."""
    value, ci = abs(stat["value"]), stat.get("ci")
    text = f"{100 * value:.1f} points"
    if ci:
        lo, hi = sorted(abs(c) for c in ci) if (ci[0] >= 0) == (ci[1] >= 0) else (min(ci), max(ci))
        text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return text


def _record(result, grouping: str, key: str | None) -> dict | None:
    if key is None or grouping not in result.groupings:
        return None
    for record in result.groupings[grouping]["groups"]:
        if record["key"] == key:
            return record
    return None


def _gap_finding(result, grouping: str, label: str) -> Finding | None:
    disparity = result.groupings.get(grouping, {}).get("disparities", {}).get("accuracy")
    if not disparity or not disparity.get("worst") or disparity.get("n_ranked", 0) < 2:
        return None
    worst, best = _record(result, grouping, disparity["worst"]), _record(result, grouping, disparity["best"])
    gap = disparity["gap"]
    if gap.get("value") is None:
        return None
    lo = (gap.get("ci") or [None])[0]
    certain = "larger than sampling noise explains" if lo is not None and lo > 0.01 else \
        "not clearly larger than sampling noise"
    text = (f"By {label}, accuracy is lowest for {worst['key']} at {fmt_stat(worst['metrics']['accuracy'])} "
            f"(n={worst['n']}) and highest for {best['key']} at {fmt_stat(best['metrics']['accuracy'])} "
            f"(n={best['n']}): a gap of {_unsigned_points(gap)}, {certain}.")
    return Finding(text, float(gap["value"]), f"gap:{grouping}")


def _intersection_finding(result) -> Finding | None:
    worst = None
    for grouping in ("race×gender×age_band", "race×age_band", "race×gender", "gender×age_band"):
        for record in result.groupings.get(grouping, {}).get("groups", []):
            diff = (record.get("vs_overall") or {}).get("accuracy")
            if record["too_small"] or not diff or diff.get("value") is None or not excludes_zero(diff):
                continue
            if diff["value"] < 0 and (worst is None or diff["value"] < worst[1]["vs_overall"]["accuracy"]["value"]):
                worst = (grouping, record)
    if worst is None:
        return None
    grouping, record = worst
    diff = record["vs_overall"]["accuracy"]
    text = (f"The worst-served intersectional group is {record['key']} ({group_label(grouping)}, n={record['n']}): "
            f"accuracy {fmt_stat(record['metrics']['accuracy'])}, {_unsigned_points(diff)} below the whole "
            "test set.")
    return Finding(text, -float(diff["value"]), "intersection")


def _calibration_finding(result) -> Finding | None:
    calibration = result.calibration
    if not calibration:
        return None
    disparity = calibration.get("disparities", {}).get("race", {}).get("ece")
    if not disparity or not disparity.get("worst"):
        return None
    record = next((r for r in calibration["groupings"].get("race", []) if r["key"] == disparity["worst"]), None)
    if record is None or record["ece"].get("value") is None:
        return None
    text = (f"Confidence scores are least trustworthy for {record['key']} faces: expected calibration error "
            f"{fmt_stat(record['ece'])} against {fmt_stat(calibration['overall']['ece'])} overall")
    temperature = calibration.get("temperature")
    if temperature:
        after = next((r for r in temperature["groupings"].get("race", []) if r["key"] == record["key"]), None)
        if after and after["after"]["ece"].get("value") is not None:
            text += (f"; temperature scaling (T = {temperature['temperature']:.2f}) brings it to "
                     f"{fmt_stat(after['after']['ece'])}")
    return Finding(text + ".", float(record["ece"]["value"]), "calibration")


def _confusion_finding(result) -> Finding | None:
    matrix = result.overall["confusion"]["normalized"]
    best = None
    for i, row in enumerate(matrix):
        for j, value in enumerate(row or []):
            if i != j and value is not None and (best is None or value > best[2]):
                best = (i, j, value)
    if best is None:
        return None
    i, j, value = best
    text = (f"The most common confusion: {100 * value:.0f}% of {result.classes[i]} faces are classified as "
            f"{result.classes[j]}.")
    return Finding(text, float(value) * 0.5, "confusion")


def _small_groups_finding(result) -> Finding | None:
    groups = result.groupings.get("race×gender×age_band", {}).get("groups", [])
    small = [g for g in groups if g["too_small"]]
    if not small:
        return None
    text = (f"{len(small)} of {len(groups)} race × gender × age-band groups have fewer than "
            f"{result.settings.get('min_group_size', 30)} test faces, so nothing can be concluded about them "
            "(they are shown but never ranked).")
    return Finding(text, 0.02 * len(small) / max(len(groups), 1), "small")


def findings(result, limit: int = 3) -> list[Finding]:
    """The ``limit`` most severe findings, most severe first."""
    candidates = [_gap_finding(result, "race", "race"), _intersection_finding(result),
                  _calibration_finding(result), _gap_finding(result, "gender", "gender"),
                  _gap_finding(result, "age_band", "age band"), _confusion_finding(result),
                  _small_groups_finding(result)]
    ranked = sorted((c for c in candidates if c is not None), key=lambda c: -c.severity)
    return ranked[:limit]
