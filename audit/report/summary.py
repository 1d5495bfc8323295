"""``summary.md``: at most 60 lines to paste into a review comment (verdict, gates, worst groups with CIs)."""

from __future__ import annotations

from faceaudit.auditing.types import Group, Stat
from faceaudit.auditing.verdict import Status, Verdict
from faceaudit.taxonomy import AGE_BAND

from .findings import TOO_SMALL, findings, headline, too_small_to_judge
from .formatting import (
    compound_label,
    finest_grouping,
    fmt_level,
    fmt_p,
    fmt_stat,
    group_label,
    main_grouping,
    pair_grouping,
    plural,
    points,
    schema_of,
    target_label,
    temperature_text,
)
from .sections import output_steps
from .vs_baseline import markdown_lines

#: The review-comment budget the issue sets.
MAX_LINES = 60


def worst_rows(schema) -> dict[str, int]:
    """Groupings in the worst-groups table and how many of each are listed: for UTKFace race 2, gender 1,
    age band 2, race × gender 2, race × gender × age band 3."""
    lead = main_grouping(schema)
    rows = {g: 2 if g in (lead, AGE_BAND) else 1 for g in schema.groups}
    for grouping, take in ((pair_grouping(schema), 2), (finest_grouping(schema), 3)):
        if grouping and "×" in grouping:
            rows[grouping] = take
    return rows


def _md(text: object) -> str:
    """Neutralise Markdown/HTML in untrusted strings (model names, group keys) for a review comment."""
    out = str(text).replace("\\", "\\\\")
    for char in "`*_[]<>|#":
        out = out.replace(char, "\\" + char)
    return out.replace("\n", " ")


def _status(result) -> str:
    """The title's verdict: too small to judge first, then the audit's status (``NOT GATED`` without gates)."""
    gates = result.status
    status = gates.upper()
    if gates == Verdict.INCONCLUSIVE and not result.gates.count(Verdict.FAIL):
        status += " (for lack of data: no gate fails)"
    return f"{TOO_SMALL} (gates {status})" if too_small_to_judge(result) else status


def _method_line(result) -> str:
    ci = fmt_level(result.settings.level)
    return (f"Overall accuracy {fmt_stat(result.overall.metrics['accuracy'])} on {result.overall.n} "
            f"{_md(result.data.get('split', 'test'))} images. {ci} intervals: Clopper–Pearson for proportions, built "
            f"from per-{target_label(schema_of(result))} intervals for balanced accuracy and macro-F1; vs-rest intervals Bonferroni-adjusted over one family "
            f"per tier (race, gender and age band together), p-values Holm-adjusted; worst-vs-best, gap and ratio "
            f"simultaneous over all pairs (max-type); ECE a normal bootstrap of the debiased ECE, MCE bin-wise "
            f"Clopper–Pearson bounds, Brier, log loss and embedding figures percentile bootstrap "
            f"(audit.json settings.intervals has each method). Backbone: {_md(result.model.get('backbone') or 'not recorded')}; "
            f"run {_md(str(result.model.get('run_hash') or '')[:12] or 'not recorded')}.")


def _gate_lines(result) -> list[str]:
    gates = result.gates
    if result.status == Status.NOT_GATED:
        return ["**Not gated:** no gates were judged, so this audit passes nothing (`--gates gates.toml` gives "
                "pass / fail / inconclusive; `--require-gates` refuses an ungated audit).", ""]
    lines = ["### Gates", "", "| gate | status | result |", "|---|---|---|"]
    for gate in gates.results[:12]:
        lines.append(f"| {_md(gate.name)} | **{gate.status}** | {_md(gate.message)} |")
    return lines + [""]


def _worst_group_lines(result) -> list[str]:
    """The least accurate ranked groups, with their difference from the rest and its Holm-adjusted p-value."""
    lines = ["### Worst groups (accuracy; ranked groups at or below the rest of the test set)", ""]
    if too_small_to_judge(result):
        return lines + ["Not listed: the test set is too small to judge.", ""]
    lines += ["| grouping | group | n | accuracy [CI] | vs rest, pts [Bonferroni CI] | p (Holm) |", "|---|---|---:|---:|---:|---:|"]
    for grouping, take in worst_rows(schema_of(result)).items():
        found = result.groupings.get(grouping)
        records = [r for r in (found.groups if found is not None else []) if not r.too_small
                   and r.metrics["accuracy"].value is not None and (_vs_rest(r).value or 0) <= 0]
        records.sort(key=lambda r: r.metrics["accuracy"].value)
        for record in records[:take]:
            diff = (record.vs_rest or {}).get("accuracy")
            lines.append(f"| {group_label(grouping)} | {_md(record.key)} | {record.n} | "
                         f"{fmt_stat(record.metrics['accuracy'])} | {points(diff)} | "
                         f"{fmt_p(diff.p_holm if diff else None, short=True)} |")
    return lines + ["", "vs rest: the interval is Bonferroni-adjusted, the p-value Holm-adjusted (step-down, less strict), "
                        "so a p below the level can sit beside an interval that spans 0.", ""]


def _vs_rest(record: Group) -> Stat:
    """A group's accuracy difference from the rest of the test set (an empty Stat when not computed)."""
    return (record.vs_rest or {}).get("accuracy") or Stat()


def _calibration_line(result) -> list[str]:
    calibration = result.calibration
    if not calibration:
        return []
    overall = calibration.overall
    line = (f"Calibration: ECE (debiased) {fmt_stat(overall.ece)} overall; MCE {fmt_stat(overall.mce, digits=0)}"
            f" (bin of {plural(overall.mce.bin_size or 0, 'face')})")
    temperature = calibration.temperature
    if temperature:
        t = temperature.overall
        line += (f"; after temperature scaling ({temperature_text(temperature)}, held fixed) ECE "
                 f"{fmt_stat(t.after.ece)}, change {points(t.ece_change)}")
    return [line + ".", ""]


def summary_markdown(result) -> str:
    """The summary's text, trimmed to :data:`MAX_LINES` lines."""
    if getattr(result, "is_regression", False):
        return _trimmed(_regression_lines(result))
    lines = [f"## faceaudit: {_md(result.model.get('name'))} — {_status(result)}", "", _method_line(result), ""]
    lines += [line for text in headline(result) for line in (f"**{_md(text)}**", "")]
    if result.model.get("synthetic") or result.data.get("synthetic"):
        lines += ["**Synthetic data: these numbers say nothing about real faces.**", ""]
    steps = output_steps(result.model)
    if steps:  # what faceaudit did to the model's outputs: a reviewer must know the numbers are not raw
        lines += [f"Outputs as read: {_md('; '.join(steps))}.", ""]
    lines += _gate_lines(result) + markdown_lines(result, _md)
    found = findings(result)
    if found:
        lines += ["### Findings", ""] + [f"{i}. {_md(f.text)}" for i, f in enumerate(found, 1)] + [""]
    lines += _worst_group_lines(result) + _calibration_line(result)
    schema = schema_of(result)
    finest = result.groupings.get(finest_grouping(schema))
    small = [r for r in (finest.groups if finest is not None else []) if r.too_small]
    if small:
        lines += [f"{len(small)} {compound_label(schema, finest_grouping(schema))} groups have fewer than "
                  f"{result.settings.min_group_size} images and are not ranked.", ""]
    lines += ["Full report: `report.html` / `report.pdf`; numbers: `audit.json`, `group_metrics.csv`."]
    return _trimmed(lines)


def _trimmed(lines: list[str]) -> str:
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + ["(truncated: see report.html)"]
    return "\n".join(lines) + "\n"


def _regression_lines(result) -> list[str]:
    """An age regressor's summary: overall errors, gates, findings, the groups with the largest MAE."""
    from .age_findings import difference_text, metric_text, overall_line, regression_findings

    ci = fmt_level(result.settings.level)
    lines = [f"## faceaudit: {_md(result.model.get('name'))} (age estimation) — {_status(result)}", "",
             f"{overall_line(result)} on {result.overall.n} {_md(result.data.get('split', 'test'))} images. {ci} "
             "intervals: t for bias, t widened by a studentized bootstrap for MAE, Clopper–Pearson for the share within "
             "±5 years; vs-rest and worst-vs-best intervals Bonferroni-adjusted for the groups compared, p-values "
             f"Holm-adjusted. Backbone: {_md(result.model.get('backbone') or 'not recorded')}.", ""]
    lines += [line for text in headline(result) for line in (f"**{_md(text)}**", "")]
    if result.model.get("synthetic") or result.data.get("synthetic"):
        lines += ["**Synthetic data: these numbers say nothing about real faces.**", ""]
    lines += _gate_lines(result)
    found = regression_findings(result)
    if found:
        lines += ["### Findings", ""] + [f"{i}. {_md(f.text)}" for i, f in enumerate(found, 1)] + [""]
    lines += ["### Largest errors (MAE; ranked groups)", ""]
    if too_small_to_judge(result):
        lines += ["Not listed: the test set is too small to judge.", ""]
    else:
        lines += ["| grouping | group | n | MAE [CI] | bias [CI] | within ±5 y [CI] | MAE vs rest [adj. CI] | p (Holm) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for grouping, take in worst_rows(schema_of(result)).items():
            found = result.groupings.get(grouping)
            records = [r for r in (found.groups if found is not None else []) if not r.too_small
                       and r.metrics["mae"].value is not None]
            records.sort(key=lambda r: -r.metrics["mae"].value)
            for record in records[:take]:
                m, diff = record.metrics, (record.vs_rest or {}).get("mae")
                lines.append(f"| {group_label(grouping)} | {_md(record.key)} | {record.n} | "
                             + " | ".join(metric_text(k, m[k]) for k in ("mae", "bias", "within5"))
                             + f" | {difference_text('mae', diff)} | {fmt_p(diff.p_holm if diff else None, short=True)} |")
        lines.append("")
    lines += ["Full report: `report.html` / `report.pdf`; numbers: `audit.json`, `group_metrics.csv`."]
    return lines
