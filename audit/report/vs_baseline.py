""""vs baseline": an audit against the earlier one it replaces, in words for the console, summary.md and the report.

Everything comes from the typed ``baseline`` record (:class:`~faceaudit.auditing.types.Baseline`), which holds the
same family of tests as ``faceaudit diff``; nothing is recomputed here.
"""

from __future__ import annotations

from faceaudit.auditing.types import Baseline, BaselineChange
from faceaudit.templates.layout import Cell, Table

from .formatting import fmt_level, fmt_p, group_label, pct, plural, points

#: Changed groups listed by the console and summary.md (all of them are in audit.json's ``baseline.rows``).
LISTED = 6
#: Rows of summary.md's table (a review comment stays short; the report lists every changed group).
MD_LISTED = 8
BETTER, WORSE, NO_CHANGE = "better", "worse", "no clear change"


def _method(baseline: Baseline) -> str:
    if baseline.method == "paired":
        return "paired on the same images (Newcombe interval, McNemar)"
    return "unpaired: the test sets differ (Newcombe interval, two-proportion test)"


def counts_text(baseline: Baseline) -> str:
    """``2 better, 1 worse, 24 no clear change`` (and how many were not comparable or too small, when any)."""
    parts = [f"{baseline.better} better", f"{baseline.worse} worse", f"{baseline.unclear} {NO_CHANGE}"]
    for verdict in ("not comparable", "too small"):
        n = sum(r.verdict == verdict for r in baseline.rows)
        if n:
            parts.append(f"{n} {verdict}")
    return ", ".join(parts)


def summary_sentence(baseline: Baseline) -> str:
    """One sentence: against which audit, how it was tested, and the counts."""
    return (f"vs baseline {baseline.model} ({baseline.source}): {_method(baseline)}; "
            f"{plural(baseline.family, 'test')} Holm-adjusted at {fmt_level(baseline.level)}: {counts_text(baseline)}")


def change_text(row: BaselineChange) -> str:
    """``race Black: 81.0% -> 74.2%, -6.8 pts [-9.9, -3.6], p(Holm) < 0.001``."""
    old = pct(row.old.value) if row.old else "–"
    new = pct(row.new.value) if row.new else "–"
    return (f"{group_label(row.grouping)} {row.group}: {old} -> {new}, "
            f"{points(row.change_stat)}, p(Holm) {fmt_p(row.p_holm, short=True)}")


def per_grouping(baseline: Baseline) -> list[tuple[str, int, int, int]]:
    """(grouping, better, worse, no clear change) per grouping, in the family's order."""
    order: dict[str, list[int]] = {}
    for row in baseline.rows:
        counts = order.setdefault(row.grouping, [0, 0, 0])
        if row.verdict in (BETTER, WORSE, NO_CHANGE):
            counts[(BETTER, WORSE, NO_CHANGE).index(row.verdict)] += 1
    return [(g, *c) for g, c in order.items()]


def console_lines(result) -> list[str]:
    """The console's "vs baseline" lines: the sentence, per-grouping counts, the groups that changed."""
    baseline = result.baseline
    if baseline is None:
        return []
    lines = [summary_sentence(baseline)]
    lines.append("  " + "; ".join(f"{group_label(g)}: {b} better, {w} worse" for g, b, w, _ in per_grouping(baseline)))
    for verdict in (WORSE, BETTER):
        changed = baseline.changed(verdict)
        for row in changed[:LISTED]:
            lines.append(f"  {verdict:6s} {change_text(row)}")
        if len(changed) > LISTED:
            lines.append(f"  ... and {len(changed) - LISTED} more {verdict} (audit.json baseline.rows)")
    return lines


def markdown_lines(result, escape) -> list[str]:
    """summary.md's "vs baseline" part: the sentence and a table of the groups that got better or worse."""
    baseline = result.baseline
    if baseline is None:
        return []
    lines = ["### vs baseline", "", escape(summary_sentence(baseline)) + ".", ""]
    changed = baseline.changed(WORSE) + baseline.changed(BETTER)
    if changed:
        lines += ["| change | grouping | group | baseline | now | change, pts [CI] | p (Holm) |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for row in changed[:MD_LISTED]:
            lines.append(f"| **{row.verdict}** | {escape(group_label(row.grouping))} | {escape(row.group)} | "
                         f"{pct(row.old.value) if row.old else '–'} | {pct(row.new.value) if row.new else '–'} | "
                         f"{points(row.change_stat)} | {fmt_p(row.p_holm, short=True)} |")
        if len(changed) > MD_LISTED:
            lines.append(f"\n{len(changed) - MD_LISTED} more changed groups in audit.json (`baseline.rows`).")
        lines.append("")
    else:
        lines += [f"No group got clearly better or worse ({baseline.unclear} {NO_CHANGE}).", ""]
    return lines


def report_table(result) -> Table | None:
    """The report verdict's compact table: each group that got better or worse (the rest: no clear change)."""
    baseline = result.baseline
    if baseline is None:
        return None
    table = Table(["Change", "Grouping", "Group", "Baseline", "Now", "Change, pts [CI]", "p (Holm)"],
                  caption=f"{summary_sentence(baseline)}. Groups not listed: no clear change.", numeric={3, 4, 5, 6})
    for row in baseline.changed(WORSE) + baseline.changed(BETTER):
        table.add(Cell(row.verdict, "fail" if row.verdict == WORSE else "pass"), group_label(row.grouping),
                  row.group, pct(row.old.value) if row.old else "–", pct(row.new.value) if row.new else "–",
                  points(row.change_stat), fmt_p(row.p_holm, short=True))
    return table
