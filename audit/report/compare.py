"""Several audits side by side (``faceaudit compare``) and one audit against its predecessor (``faceaudit diff``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.audit.paired import (
    BOUND_FAIL,
    BOUND_INCONCLUSIVE,
    LOSES_MORE,
    NO_CHANGE,
    TOO_SMALL,
    Slice,
    excess_bound,
    excess_family,
    match_predictions,
    paired_family,
    unpaired_family,
)
from faceaudit.audit.result import AUDIT_FILE, AuditResult, load_audit
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write
from faceaudit.taxonomy import LabelSchema
from faceaudit.templates.figures import PALETTE, Figure, new_figure, png_figure
from faceaudit.templates.layout import Cell, Section, Table, file_name, render_document, write_pdf

from .curves import validation_curves_figure
from .formatting import (
    fmt_stat,
    group_label,
    main_grouping,
    other_groups,
    pair_grouping,
    plural_word,
    points,
    schema_of,
    series_label,
)
from .history import History, load_history, seed_pairs
from .render import find_history, load_predictions
from .summary import _md


def family_groupings(schema: LabelSchema) -> list[str]:
    """The groupings of one family of paired tests besides overall (compare and diff test the same family, so they
    agree): the lead grouping, each other single attribute, and the lead crossed with the first other one (race,
    gender, age band and race × gender, for UTKFace)."""
    pair = pair_grouping(schema)
    return [main_grouping(schema), *other_groups(schema), *([pair] if pair else [])]


def same_schema(audits: list["LoadedAudit"]) -> LabelSchema:
    """The label schema all the audits share, or one FaceauditError when two predict different targets or classes
    (their groups would not line up)."""
    schemas = [(a, schema_of(a.result)) for a in audits]
    first, schema = schemas[0]
    for other, theirs in schemas[1:]:
        if theirs.target != schema.target or set(theirs.classes) != set(schema.classes):
            named = theirs.target == schema.target and len(theirs.classes) == len(schema.classes)
            raise FaceauditError(f"cannot compare: {first.name} audits {_describe(schema, named)}, {other.name} "
                                 f"audits {_describe(theirs, named)}")
    return schema


def _describe(schema: LabelSchema, named: bool = False) -> str:
    """``race (5 classes)``; ``named`` lists the classes (for two audits that differ only in which classes)."""
    classes = f": {', '.join(schema.classes)}" if named else ""
    return f"{schema.target} ({len(schema.classes)} classes{classes})"


@dataclass
class LoadedAudit:
    """An audit folder's result, predictions (if present) and display name."""

    name: str
    folder: Path
    result: AuditResult
    predictions: pd.DataFrame | None


def load_folder(path: Path) -> LoadedAudit:
    """Read an audit folder (or its audit.json) and the predictions next to it."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / AUDIT_FILE).is_file() and not path.is_file():
        raise FaceauditError(f"{path} has no {AUDIT_FILE}")
    result = load_audit(path)
    return LoadedAudit(str(result.model.get("name") or folder.name), folder, result, load_predictions(folder, result, sample=False))


def _unique_names(audits: list[LoadedAudit]) -> None:
    seen: dict[str, int] = {}
    for audit in audits:
        if audit.name in seen or list(a.name for a in audits).count(audit.name) > 1:
            audit.name = f"{audit.name} ({audit.folder.name})"
        seen[audit.name] = 1


def _groups(result: AuditResult, grouping: str) -> dict[str, dict]:
    return {r["key"]: r for r in result.groupings.get(grouping, {}).get("groups", [])}


def _slices(a: AuditResult, b: AuditResult | None, rows: pd.DataFrame | None) -> list[Slice]:
    """Overall plus every group of :func:`family_groupings` in ``a``; too small when too small in either audit."""
    slices = [Slice("overall", "all", np.ones(0 if rows is None else len(rows), dtype=bool))]
    for grouping in family_groupings(schema_of(a)):
        other = _groups(b, grouping) if b is not None else {}
        for key, record in _groups(a, grouping).items():
            mask = np.zeros(0, dtype=bool) if rows is None else _mask(rows, grouping, key)
            small = bool(record["too_small"] or other.get(key, {}).get("too_small", False))
            slices.append(Slice(grouping, key, mask, small))
    return slices


def _matched(a: LoadedAudit, b: LoadedAudit) -> tuple[pd.DataFrame, list[Slice]]:
    """Both predictions tables joined image by image, and the family's slices on the joined rows."""
    if a.predictions is None or b.predictions is None:
        missing = a if a.predictions is None else b
        if "predictions_sample" in (missing.result.files or {}):
            raise FaceauditError(f"{missing.folder} is a streamed audit that kept a sample of its rows, not all of "
                                 "them; paired tests need every image of both audits")
        raise FaceauditError(f"no predictions.csv next to {missing.folder / AUDIT_FILE}; paired tests need both")
    merged = match_predictions(a.predictions, b.predictions, (a.name, b.name), same_schema([a, b]))
    return merged, _slices(a.result, b.result, merged)


def paired_tests(a: LoadedAudit, b: LoadedAudit, *, level: float = 0.95) -> pd.DataFrame:
    """One family of paired tests of b against a on the same images (see :func:`faceaudit.audit.paired.paired_family`)."""
    merged, slices = _matched(a, b)
    frame = paired_family(merged["correct_a"].to_numpy(), merged["correct_b"].to_numpy(), slices, level=level)
    frame.insert(4, "model_a", a.name)
    frame.insert(5, "model_b", b.name)
    return frame


def excess_tests(a: LoadedAudit, b: LoadedAudit, *, level: float = 0.95) -> pd.DataFrame:
    """Who pays for the change from a to b: each group's change beyond the whole set's, with simultaneous
    intervals over the groups (see :func:`faceaudit.audit.paired.excess_family`)."""
    merged, slices = _matched(a, b)
    frame = excess_family(merged["correct_a"].to_numpy(), merged["correct_b"].to_numpy(), slices, level=level)
    frame.insert(0, "model_a", a.name)
    frame.insert(1, "model_b", b.name)
    return frame


def excess_gate(frame: pd.DataFrame, max_loss: float, inconclusive: str = "fail") -> tuple[int, str]:
    """Exit code and verdict line of ``--max-excess-loss``: 1 when a group large enough to judge loses, beyond the
    whole set's change, more than ``max_loss`` (its whole interval above it), or when one is inconclusive (its
    interval straddles the bound) under ``inconclusive="fail"``; else 0."""
    judged = frame.assign(bound=excess_bound(frame, max_loss).to_numpy())
    judged = judged[judged["bound"] != ""]
    failed = judged[judged["bound"] == BOUND_FAIL]
    unsure = judged[judged["bound"] == BOUND_INCONCLUSIVE]
    bound = f"{100 * max_loss:.2g} pts"

    def listed(rows: pd.DataFrame) -> str:
        worst = rows.sort_values("excess_loss", ascending=False).head(4)
        text = "; ".join(f"{r['model_b']} vs {r['model_a']}: {group_label(r['grouping'])} {r['group']} "
                         f"{_loss_text(r)}" for _, r in worst.iterrows())
        return text + (f"; and {len(rows) - 4} more" if len(rows) > 4 else "")

    if judged.empty:  # nothing was large enough to judge: that is not a pass
        code = 1 if inconclusive == "fail" else 0
        return code, (f"excess loss bound {bound}: INCONCLUSIVE ({'fails' if code else 'passes'} under --inconclusive "
                      f"{inconclusive}), no group is large enough to judge")
    if len(failed):
        return 1, (f"excess loss bound {bound}: FAIL, {len(failed)} of {len(judged)} groups lose more than {bound} "
                   f"beyond the whole set ({listed(failed)})")
    if len(unsure):
        code = 1 if inconclusive == "fail" else 0
        return code, (f"excess loss bound {bound}: INCONCLUSIVE ({'fails' if code else 'passes'} under "
                      f"--inconclusive {inconclusive}), {len(unsure)} of {len(judged)} groups cannot be shown to lose "
                      f"at most {bound} beyond the whole set ({listed(unsure)})")
    return 0, (f"excess loss bound {bound}: PASS, all {len(judged)} groups large enough to judge lose at most "
               f"{bound} beyond the whole set")


def _loss_text(row) -> str:
    """Excess loss in points with its interval (positive: the group loses more than the whole set)."""
    if pd.isna(row["excess_loss"]):
        return "–"
    return (f"{100 * row['excess_loss']:+.1f} pts [{100 * row['excess_loss_lo']:+.1f}, "
            f"{100 * row['excess_loss_hi']:+.1f}]")


def ranking(audits: list[LoadedAudit], grouping: str | None = None) -> pd.DataFrame:
    """One row per model: overall accuracy, worst ranked group of ``grouping`` (default: the lead grouping, race for
    UTKFace), and largest gap (with CIs)."""
    grouping = grouping or main_grouping(schema_of(audits[0].result))
    rows = []
    for audit in audits:
        result = audit.result
        disparity = result.groupings.get(grouping, {}).get("disparities", {}).get("accuracy", {})
        worst = _groups(result, grouping).get(disparity.get("worst")) if disparity.get("worst") else None
        overall = result.overall["metrics"]["accuracy"]
        worst_stat = worst["metrics"]["accuracy"] if worst else {}
        gap = disparity.get("gap") or {}
        rows.append({"model": audit.name, "overall": overall.get("value"), "overall_ci": overall.get("ci"),
                     "worst_group": disparity.get("worst"), "compared": disparity.get("n_ranked"),
                     "worst_accuracy": worst_stat.get("value"),
                     "worst_ci": worst_stat.get("ci"), "gap": gap.get("value"), "gap_ci": gap.get("ci"),
                     "gates": (result.gates or {}).get("status", "not gated")})
    frame = pd.DataFrame(rows)
    frame["rank_worst_group"] = frame["worst_accuracy"].rank(ascending=False, method="min", na_option="bottom").astype(int)
    frame["rank_gap"] = frame["gap"].rank(ascending=True, method="min", na_option="bottom").astype(int)
    return frame.sort_values(["rank_worst_group", "rank_gap"]).reset_index(drop=True)


def side_by_side_figure(audits: list[LoadedAudit], grouping: str) -> Figure:
    """Per-group accuracy with CIs, one colour per model, groups on the y axis."""
    keys = list(_groups(audits[0].result, grouping))
    fig, axis = new_figure(7.2, 0.55 * len(keys) * max(1, len(audits) / 2) + 1.2)
    offsets = np.linspace(-0.3, 0.3, len(audits)) if len(audits) > 1 else [0.0]
    for index, (audit, offset) in enumerate(zip(audits, offsets)):
        groups = _groups(audit.result, grouping)
        colour = PALETTE[index % len(PALETTE)]
        for position, key in enumerate(keys):
            record = groups.get(key)
            if not record:
                continue
            stat = record["metrics"]["accuracy"]
            y = len(keys) - 1 - position + offset
            if stat.get("ci"):
                axis.plot(stat["ci"], [y, y], color=colour, linewidth=2)
            axis.plot([stat["value"]], [y], "o", color=colour if not record["too_small"] else "white",
                      markeredgecolor=colour, label=audit.name if position == 0 else None)
    axis.set_yticks(range(len(keys))[::-1], keys)
    axis.set_xlabel("accuracy (dot) with confidence interval (bar)")
    axis.set_xlim(0, 1)
    axis.grid(axis="y", visible=False)
    # Above the axes: inside, it would hide the lowest accuracies, which are the ones a reviewer needs to see.
    axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(audits), 4), fontsize=7, frameon=False)
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
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=300, facecolor="white")
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())


def compare_audits(folders: list[Path], out_dir: Path, *, history_files: list[Path] = (), level: float = 0.95,
                   pdf: bool = True, curves_runs: list[str] | None = None, max_excess_loss: float | None = None,
                   inconclusive: str = "fail", gate: dict | None = None) -> list[Path]:
    """Write compare.html, compare.pdf, compare.md and the CSV tables for ``folders`` into ``out_dir``.

    ``history_files`` are extra training histories (the seed's ``*_history.json``); ``curves_runs`` picks which of
    them the redrawn ``model_predict_curves_3.png`` shows (default: all). ``max_excess_loss`` judges every other
    model against the first (the original) with :func:`excess_gate`; its exit code and verdict line go into
    ``gate`` (``{"code", "line"}``) when given.
    """
    audits = [load_folder(Path(f)) for f in folders]
    if len(audits) < 2 and not history_files:
        raise FaceauditError("compare needs at least two audit folders (or --history files)")
    _unique_names(audits)
    schema = same_schema(audits) if audits else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tests = pd.concat([paired_tests(a, b, level=level)
                       for a, b in itertools.combinations(audits, 2)], ignore_index=True) if len(audits) >= 2 else None
    pairs = list(itertools.combinations(audits, 2))
    excess = pd.concat([excess_tests(a, b, level=level) for a, b in pairs],
                       ignore_index=True) if len(audits) >= 2 else None
    verdict = None
    if excess is not None and max_excess_loss is not None:
        code, line = excess_gate(excess[excess["model_a"] == audits[0].name], max_excess_loss, inconclusive)
        verdict = {"code": code, "line": line}
        if gate is not None:
            gate.update(verdict)
    ranks = ranking(audits) if audits else None
    run_histories, notes = [], []
    for audit in audits:
        history, note = find_history(audit.result, audit.folder)
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
    if audits:
        sections.append(_ranking_section(ranks, audits, schema))
        sections.append(Section("per-group", "Per-group accuracy side by side", "compare/per_group.html", {
            "figures": [side_by_side_figure(audits, g) for g in schema.groups],
            "table": _per_group_table(audits, schema)}))
    if tests is not None:
        sections.append(_tests_section(tests, schema))
    if excess is not None:
        sections.append(_excess_section(excess, verdict))
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
                           subtitle="Same test images, paired tests per group" if tests is not None else "")
    written.insert(0, atomic_write(out_dir / "compare.html", html))
    if pdf:
        written.insert(1, write_pdf(html, out_dir / "compare.pdf"))
    if tests is not None:
        written.append(atomic_write(out_dir / "paired_tests.csv", tests.to_csv(index=False)))
    if excess is not None:
        written.append(atomic_write(out_dir / "excess_change.csv", excess.to_csv(index=False)))
    if ranks is not None and len(ranks):
        written.append(atomic_write(out_dir / "ranking.csv", ranks.to_csv(index=False)))
        written.append(atomic_write(out_dir / "compare.md", compare_markdown(ranks, tests, schema, excess, verdict)))
    return written


def _ranking_section(ranks: pd.DataFrame, audits: list[LoadedAudit], schema: LabelSchema) -> Section:
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


def _per_group_table(audits: list[LoadedAudit], schema: LabelSchema) -> Table:
    table = Table(["Grouping", "Group", "n", *[a.name for a in audits]], numeric=set(range(2, 3 + len(audits))),
                  caption="Accuracy [CI] of each model per group; italic grey rows are too small to judge.")
    for grouping in schema.groups:
        for key, record in _groups(audits[0].result, grouping).items():
            cells = [fmt_stat(_groups(a.result, grouping).get(key, {}).get("metrics", {}).get("accuracy")) for a in audits]
            table.add(group_label(grouping), key, record["n"], *cells, css="small" if record["too_small"] else "")
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


def compare_markdown(ranks: pd.DataFrame, tests: pd.DataFrame | None, schema: LabelSchema,
                     excess: pd.DataFrame | None = None, verdict: dict | None = None) -> str:
    """A short Markdown summary of the comparison for a review comment."""
    label = schema.label(main_grouping(schema))
    lines = ["## faceaudit compare", "",
             f"| rank | model | overall | worst {label} | worst-{label} accuracy | {label} gap |",
             "|---:|---|---:|---|---:|---:|"]
    for _, row in ranks.iterrows():
        lines.append(f"| {row['rank_worst_group']} | {_md(row['model'])} | {_ci_text(row['overall'], row['overall_ci'])} | "
                     f"{row['worst_group']} (of {row['compared']}) | {_ci_text(row['worst_accuracy'], row['worst_ci'])} | "
                     f"{_gap_text(row['gap'], row['gap_ci'])} |")
    if tests is not None:
        significant = tests[tests["verdict"].isin(("better", "worse"))]
        lines += ["", f"Paired tests: {len(significant)} of {len(tests)} group comparisons differ, each pair of models "
                  f"tested as one family. {_family_note(tests)}"]
        for _, row in significant.head(10).iterrows():
            lines.append(f"- {row['grouping']} {row['group']}: {_md(row['model_b'])} vs {_md(row['model_a'])} "
                         f"{points({'value': row['diff'], 'ci': [row['diff_lo'], row['diff_hi']]})} "
                         f"({row['verdict']}, Holm p={row['p_holm']:.2g})")
    if excess is not None:
        lines += ["", "### Who pays for the change", ""] + excess_lines(excess, verdict, limit=8)
    return "\n".join(lines[:60]) + "\n"


# -- diff -----------------------------------------------------------------------------------------------------


def diff_audits(old: Path, new: Path, *, level: float = 0.95) -> pd.DataFrame:
    """Per group: old and new accuracy, the change with its interval, and better / worse / no clear change.

    The same family as ``compare`` (overall and every group of :func:`family_groupings`): paired on the same
    images when both predictions tables are there and match, otherwise independent samples from the two audits'
    counts. The ``method`` attribute says which.
    """
    a, b = load_folder(Path(old)), load_folder(Path(new))
    a.name, b.name = (a.name, b.name) if a.name != b.name else ("old", "new")
    same_schema([a, b])
    paired_reason = "predictions.csv missing next to one audit"
    if a.predictions is not None and b.predictions is not None:
        try:
            frame = paired_tests(a, b, level=level)
        except FaceauditError as exc:
            paired_reason = str(exc)
        else:
            return _with_names(frame, a, b, "")
    slices = _slices(a.result, b.result, None)
    counts = [[_correct_and_n(audit.result, s.grouping, s.key) for s in slices] for audit in (a, b)]
    frame = unpaired_family(counts[0], counts[1], slices, level=level)
    frame.loc[[x is None or y is None for x, y in zip(*counts)], ["verdict"]] = "not comparable"
    return _with_names(frame, a, b, paired_reason)


def _correct_and_n(result: AuditResult, grouping: str, key: str) -> tuple[int, int] | None:
    """(correct, n) of a group's accuracy as the audit recorded it; None when the group is not in the audit."""
    record = result.overall if grouping == "overall" else _groups(result, grouping).get(key)
    if not record or record["metrics"]["accuracy"].get("value") is None:
        return None
    return int(round(record["metrics"]["accuracy"]["value"] * record["n"])), int(record["n"])


def _with_names(frame: pd.DataFrame, a: LoadedAudit, b: LoadedAudit, paired_reason: str) -> pd.DataFrame:
    frame.attrs.update(names=(a.name, b.name), paired_reason=paired_reason)
    return frame


def _mask(frame: pd.DataFrame, grouping: str, key: str) -> np.ndarray:
    if grouping == "overall":
        return np.ones(len(frame), dtype=bool)
    mask = np.ones(len(frame), dtype=bool)
    for part, value in zip(grouping.split("×"), key.split(" × ")):
        mask &= (frame[part].astype(str) == value).to_numpy()
    return mask


def _wrap(text: str, css: str = "") -> Cell:
    """A difference cell that may break only between its value and its interval, so the paired-tests table fits
    an A4 page (``+3.8 pts`` / ``[+1.6, +6.1]``)."""
    return Cell(text.replace(" pts", "\u00a0pts").replace(", ", ",\u00a0"), f"wrap {css}".strip())


def _p(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.3g}"


def diff_text(frame: pd.DataFrame) -> str:
    """The diff as an aligned plain-text table (Markdown-compatible) for the terminal and review comments."""
    old_name, new_name = frame.attrs.get("names", ("old", "new"))
    lines = [f"faceaudit diff: {old_name} -> {new_name} (accuracy; {frame.attrs.get('method', '')})"]
    if frame.attrs.get("paired_reason"):
        lines.append(f"not paired: {frame.attrs['paired_reason']}; comparing the two audits as independent samples")
    lines += ["", "| grouping | group | old | new | change [simultaneous CI] | p | Holm p | verdict |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for _, row in frame.iterrows():
        change = "–" if pd.isna(row["diff"]) else points({"value": row["diff"], "ci": [row["diff_lo"], row["diff_hi"]]})
        lines.append(f"| {group_label(row['grouping'])} | {row['group']} | {_pct(row['accuracy_a'])} | "
                     f"{_pct(row['accuracy_b'])} | {change} | {_p(row['p_value'])} | {_p(row['p_holm'])} | {row['verdict']} |")
    counts = frame["verdict"].value_counts()
    lines += ["", ", ".join(f"{counts.get(k, 0)} {k}" for k in ("better", "worse", NO_CHANGE, TOO_SMALL)),
              _family_note(frame)]
    return "\n".join(lines) + "\n"


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


def _excess_section(excess: pd.DataFrame, verdict: dict | None) -> Section:
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
                      f"{100 * row['overall_diff']:+.1f} pts", _wrap(_loss_text(row), css),
                      Cell(row["verdict"], css), css="small" if row["too_small"] else "")
        tables.append(table)
    return Section("excess", "Who pays for the change", "compare/excess.html",
                   {"tables": tables, "verdict": verdict})


def excess_lines(excess: pd.DataFrame, verdict: dict | None = None, limit: int = 8) -> list[str]:
    """Markdown lines of the excess-change analysis: per pair the whole set's change, the groups that lose more
    than it, and the largest excess losses; the ``--max-excess-loss`` verdict line first when judged."""
    lines = [f"**{verdict['line']}**", ""] if verdict else []
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
                         f"{_loss_text(row)} | {row['verdict']} |")
        lines.append("")
    note = _excess_note(excess) if len(excess) else ""
    return lines + ([note] if note else [])


def diff_excess(old: Path, new: Path, *, level: float = 0.95) -> pd.DataFrame | None:
    """The excess change of ``new`` against ``old`` per group, or None when the two cannot be paired (no
    predictions next to one of them, or different test images): an excess change needs the same images."""
    a, b = load_folder(Path(old)), load_folder(Path(new))
    a.name, b.name = (a.name, b.name) if a.name != b.name else ("old", "new")
    try:
        return excess_tests(a, b, level=level)
    except FaceauditError:
        return None


def excess_text(frame: pd.DataFrame | None, verdict: dict | None = None) -> str:
    """The diff's "who pays for the change" block (plain text, Markdown-compatible)."""
    if frame is None:
        return "\nwho pays for the change: not computed (needs both predictions tables on the same images)\n"
    lines = ["", "who pays for the change (excess loss beyond the whole set's change):", ""]
    lines += excess_lines(frame, verdict, limit=len(frame))
    return "\n".join(lines) + "\n"
