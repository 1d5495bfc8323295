"""Rendering of comparisons: ``faceaudit compare``'s compare.html/.pdf/.md and figures, ``faceaudit diff``'s text.

The statistics (paired tests, excess change, ranking, the bound's verdict) come typed from
:mod:`faceaudit.auditing.comparison` (``faceaudit.compare`` / ``faceaudit.diff``); this module only draws and writes
them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.auditing.comparison import (
    BoundVerdict,
    Comparison,
    Diff,
    LoadedAudit,
    family_groupings,
    groups_of,
    loss_text,
)
from faceaudit.auditing.paired import LOSES_MORE, NO_CHANGE, NOT_COMPARABLE, TOO_SMALL
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write
from faceaudit.taxonomy import LabelSchema
from faceaudit.templates.figures import PALETTE, Figure, new_figure, png_figure
from faceaudit.templates.layout import Cell, Section, Table, file_name, render_document, write_pdf

from .curves import validation_curves_figure
from .formatting import fmt_stat, group_label, main_grouping, plural_word, points, series_label
from .history import History, load_history, seed_pairs
from .render import find_history
from .summary import _md


def side_by_side_figure(audits: Sequence[LoadedAudit], grouping: str) -> Figure:
    """Per-group accuracy with CIs, one colour per model, groups on the y axis."""
    keys = list(groups_of(audits[0].result, grouping))
    fig, axis = new_figure(7.2, 0.55 * len(keys) * max(1, len(audits) / 2) + 1.2)
    offsets = np.linspace(-0.3, 0.3, len(audits)) if len(audits) > 1 else [0.0]
    for index, (audit, offset) in enumerate(zip(audits, offsets)):
        groups = groups_of(audit.result, grouping)
        colour = PALETTE[index % len(PALETTE)]
        for position, key in enumerate(keys):
            record = groups.get(key)
            if record is None:
                continue
            stat = record.metrics["accuracy"]
            y = len(keys) - 1 - position + offset
            if stat.ci:
                axis.plot(stat.ci, [y, y], color=colour, linewidth=2)
            axis.plot([stat.value], [y], "o", color=colour if not record.too_small else "white",
                      markeredgecolor=colour, label=audit.name if position == 0 else None)
    axis.set_yticks(range(len(keys))[::-1], keys)
    axis.set_xlabel("accuracy (dot) with confidence interval (bar)")
    axis.set_xlim(0, 1)
    axis.grid(axis="y", visible=False)
    # Above the axes: inside, it would hide the lowest accuracies, which are the ones a reviewer needs to see.
    axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(audits), 4), fontsize=8.5, frameon=False)
    return png_figure(fig, caption=(f"Accuracy per {group_label(grouping)} for each model, with its confidence "
                                    "interval. Look for the model whose worst group is highest, not the one with the "
                                    "best average; overlapping bars alone are not a test — the paired tests below are."),
                      alt=f"Side-by-side accuracy per {group_label(grouping)}")


def _gap_text(value, ci) -> str:
    """A gap between groups in percentage points (never negative, so no sign)."""
    if value is None or pd.isna(value):
        return "–"
    text = f"{100 * value:.1f} pts"
    if ci is not None and not (isinstance(ci, float) and pd.isna(ci)):
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def _ci_text(value, ci) -> str:
    return fmt_stat({"value": value, "ci": ci})


def seed_figure_file(histories: list[History], path: Path) -> Path:
    """Redraw the seed's ``model_predict_curves_3.png`` (final-phase validation accuracy and loss) at print size."""
    import matplotlib.pyplot as plt

    runs = [h for h in histories if any("val_accuracy" in p.metrics for p in h.phases)]
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(15, 8))
    for index, history in enumerate(runs):
        phase = history.phases[-1]
        label = history.name if len(history.phases) == 1 else f"{history.name}-{phase.name}"
        colour = PALETTE[index % len(PALETTE)]
        for axis, key in ((acc_ax, "val_accuracy"), (loss_ax, "val_loss")):
            values = phase.metrics.get(key, [])
            axis.plot(range(len(values)), values, "--", color=colour, label=f"{label} {key}")
    for axis, ylabel in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        axis.set_xlabel("epoch", fontsize=14)
        axis.set_ylabel(ylabel, fontsize=14)
        axis.grid(True)
        axis.legend(fontsize=13)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=300, facecolor="white")
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())


def write_comparison(comparison: Comparison | None, out_dir: Path, *, history_files: Sequence[Path] = (),
                     pdf: bool = True, curves_runs: list[str] | None = None) -> list[Path]:
    """Write compare.html, compare.pdf, compare.md and the CSV tables of ``comparison`` (from
    ``faceaudit.compare``) into ``out_dir``.

    ``history_files`` are extra training histories (the seed's ``*_history.json``); ``curves_runs`` picks which of
    them the redrawn ``model_predict_curves_3.png`` shows (default: all). ``comparison`` is None when only histories
    are drawn.
    """
    if comparison is None and not history_files:
        raise FaceauditError("compare needs at least two audit folders (or --history files)")
    audits = comparison.audits if comparison is not None else []
    schema = comparison.schema if comparison is not None else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_histories, notes = [], []
    for audit in audits:
        history, note = find_history(audit.result, audit.folder) if audit.folder else (None, "not written to a folder")
        if history:
            history.name = audit.name
            run_histories.append(history)
        else:
            notes.append(f"{audit.name}: {note}")
    extra = seed_pairs([load_history(Path(p)) for p in history_files])
    if curves_runs:
        unknown = sorted(set(curves_runs) - {h.name for h in extra})
        if unknown:
            raise FaceauditError(f"--curves-runs names runs not in --history: {', '.join(unknown)} "
                                 f"(known: {', '.join(h.name for h in extra)})")
        extra = [h for name in curves_runs for h in extra if h.name == name]
    written = []
    sections = []
    if comparison is not None:
        sections.append(_ranking_section(comparison.ranking, audits, schema))
        sections.append(Section("per-group", "Per-group accuracy side by side", "compare/per_group.html", {
            "figures": [side_by_side_figure(audits, g) for g in schema.groups],
            "table": _per_group_table(audits, schema)}))
        sections.append(_tests_section(comparison.paired, schema))
        sections.append(_excess_section(comparison.excess, comparison.bound))
    curves = []
    if run_histories:
        curves.append(validation_curves_figure(run_histories, phase="all"))
    if extra:
        curves.append(validation_curves_figure(extra, phase="last"))
        written.append(seed_figure_file(extra, out_dir / "model_predict_curves_3.png"))
    sections.append(Section("curves", "Validation curves", "compare/curves.html", {
        "figures": [c for c in curves if c], "notes": notes,
        "extra": [(h.name, file_name(h.source), ", ".join(f"{p.name}: {p.epochs}" for p in h.phases)) for h in extra]}))
    names = [a.name for a in audits] or [h.name for h in extra]
    title = ("Model comparison: " if audits else "Training histories: ") + ", ".join(names[:4]) + (
        " …" if len(names) > 4 else "")
    html = render_document(title, sections, running_header=f"faceaudit compare · {', '.join(names[:3])}{' …' if len(names) > 3 else ''}",
                           subtitle="Same test images, paired tests per group" if comparison is not None else "")
    written.insert(0, atomic_write(out_dir / "compare.html", html))
    if pdf:
        written.insert(1, write_pdf(html, out_dir / "compare.pdf"))
    if comparison is not None:
        written.append(atomic_write(out_dir / "paired_tests.csv", comparison.paired.to_csv(index=False)))
        written.append(atomic_write(out_dir / "excess_change.csv", comparison.excess.to_csv(index=False)))
        written.append(atomic_write(out_dir / "ranking.csv", comparison.ranking.to_csv(index=False)))
        written.append(atomic_write(out_dir / "compare.md", compare_markdown(comparison)))
    return written


def _ranking_section(ranks: pd.DataFrame, audits: Sequence[LoadedAudit], schema: LabelSchema) -> Section:
    label = schema.label(main_grouping(schema))
    many = plural_word(label)
    table = Table(["Model", "Worst-group rank", "Gap rank", "Overall accuracy", f"Worst {label}",
                   f"Worst-{label} accuracy", f"Largest {label} gap", "Gates"], numeric={1, 2, 3, 5, 6},
                  caption=f"Ranked by worst-group accuracy (higher is better), then by the largest gap between {many} "
                          f"(smaller is better). Only groups large enough to judge are ranked; the worst {label} is "
                          f"picked from the number of {many} shown, and the gap's interval is simultaneous over every "
                          "pair of them, so it covers the true gap even when that is small. Rank order is by point "
                          "estimate: the paired tests below say which differences are real.")
    for _, row in ranks.iterrows():
        worst = f"{row['worst_group']} (of {row['compared']})" if row["worst_group"] else "–"
        table.add(Cell(str(row["model"]), "id"), row["rank_worst_group"], row["rank_gap"], _ci_text(row["overall"], row["overall_ci"]),
                  worst, _ci_text(row["worst_accuracy"], row["worst_ci"]),
                  _gap_text(row["gap"], row["gap_ci"]),
                  Cell(str(row["gates"]).upper(), {"pass": "pass", "fail": "fail"}.get(row["gates"], "")))
    data = [(a.name, a.result.data.get("n"), a.result.data.get("fingerprint") or "–", a.result.model.get("backbone") or "–")
            for a in audits]
    return Section("ranking", "Ranking", "compare/ranking.html", {"table": table, "data": data})


def _per_group_table(audits: Sequence[LoadedAudit], schema: LabelSchema) -> Table:
    table = Table(["Grouping", "Group", "n", *[a.name for a in audits]], numeric=set(range(2, 3 + len(audits))),
                  caption="Accuracy [CI] of each model per group; italic grey rows are too small to judge.")
    for grouping in schema.groups:
        for key, record in groups_of(audits[0].result, grouping).items():
            stats = [groups_of(a.result, grouping).get(key) for a in audits]
            cells = [fmt_stat(s.metrics.get("accuracy") if s is not None else None) for s in stats]
            table.add(group_label(grouping), key, record.n, *cells, css="small" if record.too_small else "")
    return table


def _family_note(frame: pd.DataFrame) -> str:
    """How the family's intervals and verdicts are adjusted, in one sentence."""
    family, interval, level = (int(frame["family"].iloc[0]), float(frame["interval_level"].iloc[0]),
                               float(frame["level"].iloc[0]))
    return (f"One family of {family} tests: intervals are simultaneous ({100 * interval:.2f}% each, Bonferroni), "
            f"p-values Holm-adjusted; a group is better or worse only when its Holm p < {1 - level:.2g}. "
            "Groups too small to judge are shown but not tested.")


def _tests_section(tests: pd.DataFrame, schema: LabelSchema) -> Section:
    tables = []
    for (a, b), frame in tests.groupby(["model_a", "model_b"], sort=False):
        table = Table(["Grouping", "Group", "n", f"{a}", f"{b}", "Difference (2nd − 1st) [CI]", "Only 1st right",
                       "Only 2nd right", "McNemar p", "Holm p", "Verdict"], numeric=set(range(2, 10)),
                      caption=f"{b} against {a} on the same images. Difference: Newcombe's paired interval. "
                              + _family_note(frame))
        for _, row in frame.iterrows():
            css = {"better": "pass", "worse": "fail"}.get(row["verdict"], "")
            table.add(group_label(row["grouping"]), row["group"], row["n"], f"{100 * row['accuracy_a']:.1f}%",
                      f"{100 * row['accuracy_b']:.1f}%",
                      _wrap(points({"value": row["diff"], "ci": [row["diff_lo"], row["diff_hi"]]}), css),
                      row["a_only_correct"], row["b_only_correct"], _p(row["p_value"]), Cell(_p(row["p_holm"]), css),
                      Cell(row["verdict"], css), css="small" if row["too_small"] else "")
        tables.append(table)
    family = series_label(group_label(g) for g in family_groupings(schema))
    return Section("paired", "Paired tests per group", "compare/paired.html", {"tables": tables, "family": family})


def compare_markdown(comparison: Comparison) -> str:
    """A short Markdown summary of the comparison for a review comment."""
    ranks, tests, schema = comparison.ranking, comparison.paired, comparison.schema
    excess, verdict = comparison.excess, comparison.bound
    label = schema.label(main_grouping(schema))
    lines = ["## faceaudit compare", "",
             f"Ranked by worst-{label} accuracy (higher first), then by the {label} gap (smaller first), not by overall "
             "accuracy: a model with the higher overall score can rank below one that fails its worst group less. "
             "Differences are percentage points.", "",
             f"| rank (worst {label}) | model | overall | worst {label} | worst-{label} accuracy | {label} gap |",
             "|---:|---|---:|---|---:|---:|"]
    for _, row in ranks.iterrows():
        lines.append(f"| {row['rank_worst_group']} | {_md(row['model'])} | {_ci_text(row['overall'], row['overall_ci'])} | "
                     f"{row['worst_group']} (of {row['compared']}) | {_ci_text(row['worst_accuracy'], row['worst_ci'])} | "
                     f"{_gap_text(row['gap'], row['gap_ci'])} |")
    if tests is not None and len(tests):
        significant = tests[tests["verdict"].isin(("better", "worse"))]
        lines += ["", f"Paired tests: {len(significant)} of {len(tests)} group comparisons differ, each pair of models "
                  f"tested as one family. {_family_note(tests)}"]
        for _, row in significant.head(10).iterrows():
            lines.append(f"- {row['grouping']} {row['group']}: {_md(row['model_b'])} vs {_md(row['model_a'])} "
                         f"{points({'value': row['diff'], 'ci': [row['diff_lo'], row['diff_hi']]})} "
                         f"({row['verdict']}, Holm p={row['p_holm']:.2g})")
    if excess is not None and len(excess):
        lines += ["", "### Who pays for the change", ""] + excess_lines(excess, verdict, limit=8)
    return "\n".join(lines[:60]) + "\n"


def _wrap(text: str, css: str = "") -> Cell:
    """A difference cell that may break only between its value and its interval, so the paired-tests table fits
    an A4 page (``+3.8 pts`` / ``[+1.6, +6.1]``)."""
    return Cell(text.replace(" pts", "\u00a0pts").replace(", ", ",\u00a0"), f"wrap {css}".strip())


def _p(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.3g}"


def diff_text(diff: Diff) -> str:
    """The diff as an aligned plain-text table (Markdown-compatible) for the terminal and review comments, with the
    "who pays for the change" block."""
    frame = diff.table
    lines = [f"faceaudit diff: {diff.old.name} -> {diff.new.name} (accuracy; {diff.method})"]
    if diff.paired_reason:
        lines.append(f"not paired: {diff.paired_reason}; comparing the two audits as independent samples")
    lines += ["", "| grouping | group | old | new | change [simultaneous CI] | p | Holm p | verdict |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for _, row in frame.iterrows():
        change = "–" if pd.isna(row["diff"]) else points({"value": row["diff"], "ci": [row["diff_lo"], row["diff_hi"]]})
        lines.append(f"| {group_label(row['grouping'])} | {row['group']} | {_pct(row['accuracy_a'])} | "
                     f"{_pct(row['accuracy_b'])} | {change} | {_p(row['p_value'])} | {_p(row['p_holm'])} | {row['verdict']} |")
    counts = frame["verdict"].value_counts()
    kinds = ["better", "worse", NO_CHANGE, TOO_SMALL, *([NOT_COMPARABLE] if counts.get(NOT_COMPARABLE) else [])]
    lines += ["", ", ".join(f"{counts.get(k, 0)} {k}" for k in kinds), _family_note(frame)]
    return "\n".join(lines) + "\n" + excess_text(diff.excess, diff.bound)


def _pct(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.1f}%"


# -- who pays for the change ----------------------------------------------------------------------------------


def _excess_note(frame: pd.DataFrame) -> str:
    family, interval = int(frame["family"].iloc[0]), float(frame["interval_level"].iloc[0])
    return (f"Excess loss = the whole set's change minus the group's (positive: the group loses more than the whole "
            f"set). Its interval comes from the group against the rest of the test set (disjoint images, each a "
            f"Newcombe paired interval, combined by MOVER and scaled by the rest's share), simultaneous over the "
            f"{family} groups large enough to judge ({100 * interval:.2f}% each, Bonferroni). A group \"loses more "
            f"than the whole set\" when its whole interval is above 0.")


def _excess_section(excess: pd.DataFrame, verdict: BoundVerdict | None) -> Section:
    tables = []
    for (a, b), frame in excess.groupby(["model_a", "model_b"], sort=False):
        overall = frame["overall_diff"].iloc[0]
        table = Table(["Grouping", "Group", "n", "Group's change (2nd − 1st) [CI]", "Whole set's change",
                       "Excess loss [CI]", "Verdict"], numeric={2, 3, 4, 5},
                      caption=f"{b} against {a}: the whole set's accuracy changes by {100 * overall:+.1f} pts. "
                              + _excess_note(frame))
        for _, row in frame.sort_values(["too_small", "excess_loss"], ascending=[True, False]).iterrows():
            css = "fail" if row["verdict"] == LOSES_MORE else ""
            table.add(group_label(row["grouping"]), row["group"], row["n"],
                      _wrap(points({"value": row["diff"], "ci": [row["diff_lo"], row["diff_hi"]]})),
                      f"{100 * row['overall_diff']:+.1f} pts", _wrap(loss_text(row), css),
                      Cell(row["verdict"], css), css="small" if row["too_small"] else "")
        tables.append(table)
    return Section("excess", "Who pays for the change", "compare/excess.html",
                   {"tables": tables, "verdict": verdict})


def excess_lines(excess: pd.DataFrame, verdict: BoundVerdict | None = None, limit: int = 8) -> list[str]:
    """Markdown lines of the excess-change analysis: per pair the whole set's change, the groups that lose more
    than it, and the largest excess losses; the ``--max-excess-loss`` verdict line first when judged."""
    lines = [f"**{verdict.line}**", ""] if verdict else []
    for (a, b), frame in excess.groupby(["model_a", "model_b"], sort=False):
        judged = frame[~frame["too_small"]]
        losers = judged[judged["verdict"] == LOSES_MORE]
        lines.append(f"{_md(b)} vs {_md(a)}: whole set {100 * frame['overall_diff'].iloc[0]:+.1f} pts; "
                     f"{len(losers)} of {len(judged)} groups lose more than the whole set.")
        lines += ["", "| grouping | group | n | group's change | excess loss [CI] | verdict |",
                  "|---|---|---:|---:|---:|---|"]
        for _, row in judged.sort_values("excess_loss", ascending=False).head(limit).iterrows():
            lines.append(f"| {group_label(row['grouping'])} | {_md(row['group'])} | {row['n']} | "
                         f"{points({'value': row['diff'], 'ci': [row['diff_lo'], row['diff_hi']]})} | "
                         f"{loss_text(row)} | {row['verdict']} |")
        lines.append("")
    note = _excess_note(excess) if len(excess) else ""
    return lines + ([note] if note else [])


def excess_text(frame: pd.DataFrame | None, verdict: BoundVerdict | None = None) -> str:
    """The diff's "who pays for the change" block (plain text, Markdown-compatible)."""
    if frame is None:
        return "\nwho pays for the change: not computed (needs both predictions tables on the same images)\n"
    lines = ["", "who pays for the change (excess loss beyond the whole set's change):", ""]
    lines += excess_lines(frame, verdict, limit=len(frame))
    return "\n".join(lines) + "\n"
