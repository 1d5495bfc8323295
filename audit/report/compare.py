"""Several audits side by side (``faceaudit compare``) and one audit against its predecessor (``faceaudit diff``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.audit.result import AUDIT_FILE, AuditResult, load_audit
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write

from .curves import validation_curves_figure
from .figures import PALETTE, Figure, new_figure, png_figure
from .formatting import fmt_stat, group_label, points
from .history import History, load_history, seed_pairs
from .layout import Cell, Section, Table, render_document, write_pdf
from .paired import holm, match_predictions, mcnemar, paired_bootstrap
from .render import find_history, load_predictions
from .summary import _md

#: Groupings compared group by group.
COMPARE_GROUPINGS = ("race", "gender", "age_band")


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
    return LoadedAudit(str(result.model.get("name") or folder.name), folder, result, load_predictions(folder, result))


def _unique_names(audits: list[LoadedAudit]) -> None:
    seen: dict[str, int] = {}
    for audit in audits:
        if audit.name in seen or list(a.name for a in audits).count(audit.name) > 1:
            audit.name = f"{audit.name} ({audit.folder.name})"
        seen[audit.name] = 1


def _groups(result: AuditResult, grouping: str) -> dict[str, dict]:
    return {r["key"]: r for r in result.groupings.get(grouping, {}).get("groups", [])}


def paired_tests(a: LoadedAudit, b: LoadedAudit, *, n_boot: int = 2000, seed: int = 42) -> pd.DataFrame:
    """Per group: accuracy of each model, paired bootstrap difference (b − a), McNemar p (raw and Holm)."""
    if a.predictions is None or b.predictions is None:
        missing = a if a.predictions is None else b
        raise FaceauditError(f"no predictions.csv next to {missing.folder / AUDIT_FILE}; paired tests need both")
    merged = match_predictions(a.predictions, b.predictions, (a.name, b.name))
    rows = []
    slices = [("overall", "all", np.ones(len(merged), dtype=bool))]
    for grouping in COMPARE_GROUPINGS:
        for key in _groups(a.result, grouping):
            slices.append((grouping, key, (merged[grouping].astype(str) == key).to_numpy()))
    too_small = {(g, k): r["too_small"] for g in COMPARE_GROUPINGS for k, r in _groups(a.result, g).items()}
    for index, (grouping, key, mask) in enumerate(slices):
        ca, cb = merged["correct_a"].to_numpy()[mask], merged["correct_b"].to_numpy()[mask]
        diff = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed + index)
        test = mcnemar(ca, cb)
        rows.append({"grouping": grouping, "group": key, "n": int(mask.sum()),
                     "too_small": bool(too_small.get((grouping, key), False)),
                     "model_a": a.name, "model_b": b.name,
                     "accuracy_a": float(ca.mean()) if len(ca) else np.nan,
                     "accuracy_b": float(cb.mean()) if len(cb) else np.nan,
                     "diff": diff["value"], "diff_lo": (diff["ci"] or [None])[0], "diff_hi": (diff["ci"] or [None, None])[1],
                     "a_only_correct": test["a_only"], "b_only_correct": test["b_only"], "p_value": test["p_value"],
                     "test": test["method"]})
    frame = pd.DataFrame(rows)
    frame["p_holm"] = holm(frame["p_value"].tolist())
    return frame


def ranking(audits: list[LoadedAudit], grouping: str = "race") -> pd.DataFrame:
    """One row per model: overall accuracy, worst ranked group, and largest gap (with CIs)."""
    rows = []
    for audit in audits:
        result = audit.result
        disparity = result.groupings.get(grouping, {}).get("disparities", {}).get("accuracy", {})
        worst = _groups(result, grouping).get(disparity.get("worst")) if disparity.get("worst") else None
        overall = result.overall["metrics"]["accuracy"]
        worst_stat = worst["metrics"]["accuracy"] if worst else {}
        gap = disparity.get("gap") or {}
        rows.append({"model": audit.name, "overall": overall.get("value"), "overall_ci": overall.get("ci"),
                     "worst_group": disparity.get("worst"), "worst_accuracy": worst_stat.get("value"),
                     "worst_ci": worst_stat.get("ci"), "gap": gap.get("value"), "gap_ci": gap.get("ci"),
                     "gates": (result.gates or {}).get("status", "not gated")})
    frame = pd.DataFrame(rows)
    frame["rank_worst_group"] = frame["worst_accuracy"].rank(ascending=False, method="min", na_option="bottom").astype(int)
    frame["rank_gap"] = frame["gap"].rank(ascending=True, method="min", na_option="bottom").astype(int)
    return frame.sort_values(["rank_worst_group", "rank_gap"]).reset_index(drop=True)


def side_by_side_figure(audits: list[LoadedAudit], grouping: str = "race") -> Figure:
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
                      alt=f"Side-by-side accuracy per {grouping}")


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


def compare_audits(folders: list[Path], out_dir: Path, *, history_files: list[Path] = (), n_boot: int = 2000,
                   seed: int = 42, pdf: bool = True, curves_runs: list[str] | None = None) -> list[Path]:
    """Write compare.html, compare.pdf, compare.md and the CSV tables for ``folders`` into ``out_dir``.

    ``history_files`` are extra training histories (the seed's ``*_history.json``); ``curves_runs`` picks which of
    them the redrawn ``model_predict_curves_3.png`` shows (default: all).
    """
    audits = [load_folder(Path(f)) for f in folders]
    if len(audits) < 2 and not history_files:
        raise FaceauditError("compare needs at least two audit folders (or --history files)")
    _unique_names(audits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tests = pd.concat([paired_tests(a, b, n_boot=n_boot, seed=seed)
                       for a, b in itertools.combinations(audits, 2)], ignore_index=True) if len(audits) >= 2 else None
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
        sections.append(_ranking_section(ranks, audits))
        sections.append(Section("per-group", "Per-group accuracy side by side", "compare/per_group.html", {
            "figures": [side_by_side_figure(audits, g) for g in COMPARE_GROUPINGS],
            "table": _per_group_table(audits)}))
    if tests is not None:
        sections.append(_tests_section(tests, n_boot))
    curves = []
    if run_histories:
        curves.append(validation_curves_figure(run_histories, phase="all"))
    if extra:
        curves.append(validation_curves_figure(extra, phase="last"))
        written.append(seed_figure_file(extra, out_dir / "model_predict_curves_3.png"))
    sections.append(Section("curves", "Validation curves", "compare/curves.html", {
        "figures": [c for c in curves if c], "notes": notes,
        "extra": [(h.name, h.source, ", ".join(f"{p.name}: {p.epochs}" for p in h.phases)) for h in extra]}))
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
    if ranks is not None and len(ranks):
        written.append(atomic_write(out_dir / "ranking.csv", ranks.to_csv(index=False)))
        written.append(atomic_write(out_dir / "compare.md", compare_markdown(ranks, tests)))
    return written


def _ranking_section(ranks: pd.DataFrame, audits: list[LoadedAudit]) -> Section:
    table = Table(["Model", "Worst-group rank", "Gap rank", "Overall accuracy", "Worst race", "Worst-race accuracy",
                   "Largest race gap", "Gates"], numeric={1, 2, 3, 5, 6},
                  caption="Ranked by worst-group accuracy (higher is better), then by the largest gap between races "
                          "(smaller is better). Only groups large enough to judge are ranked.")
    for _, row in ranks.iterrows():
        table.add(row["model"], row["rank_worst_group"], row["rank_gap"], _ci_text(row["overall"], row["overall_ci"]),
                  row["worst_group"] or "–", _ci_text(row["worst_accuracy"], row["worst_ci"]),
                  _gap_text(row["gap"], row["gap_ci"]),
                  Cell(str(row["gates"]).upper(), {"pass": "pass", "fail": "fail"}.get(row["gates"], "")))
    data = [(a.name, a.result.data.get("n"), a.result.data.get("fingerprint") or "–", a.result.model.get("backbone") or "–")
            for a in audits]
    return Section("ranking", "Ranking", "compare/ranking.html", {"table": table, "data": data})


def _per_group_table(audits: list[LoadedAudit]) -> Table:
    table = Table(["Grouping", "Group", "n", *[a.name for a in audits]], numeric=set(range(2, 3 + len(audits))),
                  caption="Accuracy [CI] of each model per group; italic grey rows are too small to judge.")
    for grouping in COMPARE_GROUPINGS:
        for key, record in _groups(audits[0].result, grouping).items():
            cells = [fmt_stat(_groups(a.result, grouping).get(key, {}).get("metrics", {}).get("accuracy")) for a in audits]
            table.add(group_label(grouping), key, record["n"], *cells, css="small" if record["too_small"] else "")
    return table


def _tests_section(tests: pd.DataFrame, n_boot: int) -> Section:
    tables = []
    for (a, b), frame in tests.groupby(["model_a", "model_b"], sort=False):
        table = Table(["Grouping", "Group", "n", f"{a}", f"{b}", "Difference (2nd − 1st) [CI]", "Only 1st right",
                       "Only 2nd right", "McNemar p", "Holm p"], numeric=set(range(2, 10)),
                      caption=f"{b} against {a} on the same images. Difference: paired bootstrap ({n_boot} resamples). "
                              "Holm p adjusts for testing every group of this pair.")
        for _, row in frame.iterrows():
            significant = row["p_holm"] < 0.05
            css = ("pass" if row["diff"] > 0 else "fail") if significant else ""
            table.add(group_label(row["grouping"]), row["group"], row["n"], f"{100 * row['accuracy_a']:.1f}%",
                      f"{100 * row['accuracy_b']:.1f}%",
                      Cell(points({"value": row["diff"], "ci": [row["diff_lo"], row["diff_hi"]]}), css),
                      row["a_only_correct"], row["b_only_correct"], f"{row['p_value']:.3g}",
                      Cell(f"{row['p_holm']:.3g}", css), css="small" if row["too_small"] else "")
        tables.append(table)
    return Section("paired", "Paired tests per group", "compare/paired.html", {"tables": tables})


def compare_markdown(ranks: pd.DataFrame, tests: pd.DataFrame | None) -> str:
    """A short Markdown summary of the comparison for a review comment."""
    lines = ["## faceaudit compare", "", "| rank | model | overall | worst race | worst-race accuracy | race gap |",
             "|---:|---|---:|---|---:|---:|"]
    for _, row in ranks.iterrows():
        lines.append(f"| {row['rank_worst_group']} | {_md(row['model'])} | {_ci_text(row['overall'], row['overall_ci'])} | "
                     f"{row['worst_group']} | {_ci_text(row['worst_accuracy'], row['worst_ci'])} | "
                     f"{_gap_text(row['gap'], row['gap_ci'])} |")
    if tests is not None:
        significant = tests[tests["p_holm"] < 0.05]
        lines += ["", f"Paired tests: {len(significant)} of {len(tests)} group comparisons differ at Holm-adjusted p < 0.05."]
        for _, row in significant.head(10).iterrows():
            lines.append(f"- {row['grouping']} {row['group']}: {_md(row['model_b'])} vs {_md(row['model_a'])} "
                         f"{points({'value': row['diff'], 'ci': [row['diff_lo'], row['diff_hi']]})} (p={row['p_holm']:.2g})")
    return "\n".join(lines[:60]) + "\n"


# -- diff -----------------------------------------------------------------------------------------------------

DIFF_GROUPINGS = ("race", "gender", "age_band", "race×gender")


def diff_audits(old: Path, new: Path, *, n_boot: int = 2000, seed: int = 42) -> pd.DataFrame:
    """Per group: old and new accuracy, the change, and whether it exceeds its uncertainty.

    With both predictions tables on the same images the change gets a paired bootstrap CI and McNemar test;
    otherwise the two audits' own CIs are compared (a change counts only when they do not overlap), and the
    ``method`` column says which was used.
    """
    a, b = load_folder(Path(old)), load_folder(Path(new))
    paired = None
    if a.predictions is not None and b.predictions is not None:
        try:
            merged = match_predictions(a.predictions, b.predictions, ("old", "new"))
            paired = merged
        except FaceauditError as exc:
            paired_reason = str(exc)
        else:
            paired_reason = ""
    else:
        paired_reason = "predictions.csv missing next to one audit"
    rows = []
    slices = [("overall", "all", a.result.overall, b.result.overall)]
    for grouping in DIFF_GROUPINGS:
        new_groups = _groups(b.result, grouping)
        for key, record in _groups(a.result, grouping).items():
            slices.append((grouping, key, record, new_groups.get(key)))
    for index, (grouping, key, old_record, new_record) in enumerate(slices):
        old_stat = old_record["metrics"]["accuracy"]
        new_stat = (new_record or {}).get("metrics", {}).get("accuracy", {})
        row = {"grouping": grouping, "group": key, "n_old": old_record["n"], "n_new": (new_record or {}).get("n"),
               "old": old_stat.get("value"), "old_ci": old_stat.get("ci"), "new": new_stat.get("value"),
               "new_ci": new_stat.get("ci"), "too_small": bool(old_record.get("too_small") or (new_record or {}).get("too_small"))}
        if new_stat.get("value") is None or old_stat.get("value") is None:
            row.update(change=None, change_ci=None, p_value=None, method="missing in one audit", verdict="not comparable")
        elif paired is not None:
            mask = np.ones(len(paired), dtype=bool) if grouping == "overall" else _mask(paired, grouping, key)
            ca, cb = paired["correct_a"].to_numpy()[mask], paired["correct_b"].to_numpy()[mask]
            diff = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed + index)
            test = mcnemar(ca, cb)
            row.update(change=diff["value"], change_ci=diff["ci"], p_value=test["p_value"],
                       method=f"paired bootstrap + McNemar ({test['method']})")
            row["verdict"] = _verdict(diff["ci"], row["too_small"], test["p_value"])
        else:
            change = new_stat["value"] - old_stat["value"]
            oc, nc = old_stat.get("ci"), new_stat.get("ci")
            overlap_free = bool(oc and nc and (nc[0] > oc[1] or nc[1] < oc[0]))
            row.update(change=change, change_ci=None, p_value=None, method="CIs compared (unpaired)")
            row["verdict"] = ("better" if change > 0 else "worse") if overlap_free and not row["too_small"] else (
                "too small" if row["too_small"] else "within uncertainty")
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["paired_reason"] = paired_reason
    frame.attrs["names"] = (a.name, b.name)
    return frame


def _mask(frame: pd.DataFrame, grouping: str, key: str) -> np.ndarray:
    parts = grouping.split("×")
    values = key.split(" × ")
    mask = np.ones(len(frame), dtype=bool)
    for part, value in zip(parts, values):
        mask &= (frame[part].astype(str) == value).to_numpy()
    return mask


def _verdict(ci: list[float] | None, too_small: bool, p_value: float) -> str:
    """Better or worse only when the paired CI excludes 0 and McNemar agrees (p < 0.05); small groups never count."""
    if too_small:
        return "too small"
    if not ci or p_value >= 0.05:
        return "within uncertainty"
    if ci[0] > 0:
        return "better"
    if ci[1] < 0:
        return "worse"
    return "within uncertainty"


def _p(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.3g}"


def diff_text(frame: pd.DataFrame) -> str:
    """The diff as an aligned plain-text table (Markdown-compatible) for the terminal and review comments."""
    old_name, new_name = frame.attrs.get("names", ("old", "new"))
    method = frame["method"].iloc[0] if len(frame) else ""
    lines = [f"faceaudit diff: {old_name} -> {new_name} (accuracy; {method})"]
    if frame.attrs.get("paired_reason"):
        lines.append(f"not paired: {frame.attrs['paired_reason']}; comparing the audits' own CIs, which is conservative")
    lines += ["", "| grouping | group | old | new | change | McNemar p | verdict |", "|---|---|---:|---:|---:|---:|---|"]
    for _, row in frame.iterrows():
        change = "–" if row["change"] is None or pd.isna(row["change"]) else points(
            {"value": row["change"], "ci": row["change_ci"]})
        lines.append(f"| {group_label(row['grouping'])} | {row['group']} | {_ci_text(row['old'], row['old_ci'])} | "
                     f"{_ci_text(row['new'], row['new_ci'])} | {change} | {_p(row['p_value'])} | {row['verdict']} |")
    counts = frame["verdict"].value_counts()
    lines += ["", ", ".join(f"{counts.get(k, 0)} {k}" for k in ("better", "worse", "within uncertainty", "too small"))]
    return "\n".join(lines) + "\n"
