"""The audit report's charts, drawn from ``audit.json`` (and ``tsne.csv``): static PNGs with captions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from faceaudit.auditing.types import Group, GroupingKey, Stat
from faceaudit.compat import seaborn_heatmaps_without_redraws
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import AGE_BAND, UTKFACE, LabelSchema
from faceaudit.templates.figures import (
    BETTER,
    NEUTRAL,
    PALETTE,
    SEQUENTIAL,
    WORSE,
    Figure,
    new_figure,
    png_figure,
)

from .formatting import (
    direction_css,
    fmt_level,
    group_label,
    grouping_key,
    main_grouping,
    other_groups,
    plural_word,
    schema_of,
    series_label,
    split_attribute,
    target_label,
    temperature_text,
)

GREY = "#9aa1ab"
#: Annotation text inside heatmaps and on panels: 8.5 pt, so it prints at 8 pt or more.
ANNOT_PT = 8.5


def _value(stat: Stat | None) -> float:
    return np.nan if stat is None or stat.value is None else float(stat.value)


def _ci(stat: Stat | None) -> tuple[float, float]:
    interval = stat.interval if stat is not None else None
    return (np.nan, np.nan) if interval is None else (float(interval[0]), float(interval[1]))


def _metric(record: Group, metric: str) -> Stat | None:
    """A group's stat for ``metric``, or None where the group does not define it (e.g. balanced accuracy inside a
    single-class group)."""
    return record.metrics.get(metric)


def _forest_style(record: Group) -> tuple[str, str]:
    """Colour and marker of a group: grey hollow for groups too small to judge; orange down-triangle / blue
    up-triangle only for groups whose difference from the rest holds after Holm's adjustment; dark grey dot
    otherwise (shape and colour both carry the direction)."""
    if record.too_small:
        return GREY, "o"
    return {"fail": (WORSE, "v"), "pass": (BETTER, "^")}.get(
        direction_css((record.vs_rest or {}).get("accuracy")), (NEUTRAL, "o"))


def accuracy_forest(result, groupings=None, metric: str = "accuracy") -> Figure:
    """Per-group accuracy with its confidence interval, one panel per grouping (default: each single-attribute
    grouping of the schema), the overall value as a line."""
    groupings = groupings or schema_of(result).groups
    groups = {g: result.groupings[g].groups for g in groupings if g in result.groupings}
    heights = [max(0.9, 0.27 * len(v) + 0.5) for v in groups.values()]
    fig, axes = new_figure(7.2, sum(heights) + 0.4, nrows=len(groups), squeeze=False,
                           gridspec_kw={"height_ratios": heights})
    overall = _value(_metric(result.overall, metric))
    lo_all, hi_all = _ci(_metric(result.overall, metric))
    lows = [_ci(_metric(r, metric))[0] for v in groups.values() for r in v]
    low = np.nanmin(lows + [overall, 1.0])
    for axis, (grouping, records) in zip(axes[:, 0], groups.items()):
        labels = [f"{r.key}  (n={r.n})" for r in records]
        y = np.arange(len(records))[::-1]
        for yi, record in zip(y, records):
            value = _value(_metric(record, metric))
            lo, hi = _ci(_metric(record, metric))
            colour, marker = _forest_style(record)
            if not np.isnan(lo):
                axis.plot([lo, hi], [yi, yi], color=colour, linewidth=2.2, solid_capstyle="butt")
            axis.plot([value], [yi], marker, color=colour if not record.too_small else "white",
                      markeredgecolor=colour, markersize=7 if marker != "o" else 6)
        if not np.isnan(lo_all):
            axis.axvspan(lo_all, hi_all, color=GREY, alpha=0.18, linewidth=0)
        axis.axvline(overall, color="black", linewidth=1, linestyle="--")
        axis.set_yticks(y, labels)
        axis.set_title(group_label(grouping), loc="left", fontsize=9, fontweight="bold")
        axis.set_xlim(max(0.0, low - 0.05), 1.015)  # a little past 1 so dots at 100% are not cut by the frame
        axis.grid(axis="y", visible=False)
    axes[-1, 0].set_xlabel(f"{metric.replace('_', ' ')} (dot: estimate; bar: {fmt_level(result.settings.level)} "
                           "Clopper–Pearson interval)")
    return png_figure(
        fig,
        caption=("Accuracy per group with its exact (Clopper–Pearson) confidence interval; the dashed line and shaded "
                 "band are the overall accuracy and its interval. Look for orange bars with a down-pointing triangle "
                 "(▼): groups whose accuracy is below the rest of the test set beyond sampling noise after adjusting "
                 "for the number of groups compared (Holm); blue bars with an up-pointing triangle (▲) are better "
                 "than the rest. A dark grey dot that merely sits left of the band is not evidence of a difference. "
                 "Hollow grey dots are groups too small to judge "
                 f"(n < {result.settings.min_group_size}); their wide bars are the reason."),
        alt=f"Per-group accuracy with confidence intervals by {series_label(group_label(g) for g in groups)}")


def heatmap_axes(schema: LabelSchema) -> tuple[str, str] | None:
    """The heatmap's rows and columns: the lead grouping by the age band (race × age band, for UTKFace), else by
    the first other group; None with a single group."""
    others = other_groups(schema)
    if not others:
        return None
    return main_grouping(schema), AGE_BAND if AGE_BAND in others else others[0]


def intersection_heatmap(result, rows: str | None = None, cols: str | None = None,
                         metric: str = "accuracy") -> Figure | None:
    """Accuracy of every rows × cols cell as an annotated heatmap (default: :func:`heatmap_axes`); too-small cells
    are hatched out."""
    import seaborn as sns

    schema = schema_of(result)
    if rows is None or cols is None:
        axes = heatmap_axes(schema)
        if axes is None:
            return None
        rows, cols = axes
    key = (grouping_key(schema, rows, cols) if rows in schema.groups and cols in schema.groups
           else GroupingKey((rows, cols)).name)
    if key not in result.groupings or rows not in result.groupings or cols not in result.groupings:
        return None
    records = result.groupings[key].groups
    row_names = list(dict.fromkeys(r.values[rows] for r in result.groupings[rows].groups))
    col_names = list(dict.fromkeys(r.values[cols] for r in result.groupings[cols].groups))
    values = pd.DataFrame(np.nan, index=row_names, columns=col_names)
    notes = pd.DataFrame("", index=row_names, columns=col_names)
    small = pd.DataFrame(False, index=row_names, columns=col_names)
    for record in records:
        r, c = record.values[rows], record.values[cols]
        v = _value(record.metrics[metric])
        values.loc[r, c] = v
        small.loc[r, c] = record.too_small
        notes.loc[r, c] = f"{100 * v:.0f}\nn={record.n}" if not np.isnan(v) else ""
    fig, axis = new_figure(7.0, 0.5 * len(row_names) + 1.5)
    with seaborn_heatmaps_without_redraws():
        sns.heatmap(values.where(~small) * 100, annot=notes.where(~small, ""), fmt="", cmap=SEQUENTIAL, vmin=40,
                    vmax=100, linewidths=0.5, linecolor="white", cbar_kws={"label": "accuracy (%)"}, ax=axis,
                    annot_kws={"fontsize": ANNOT_PT})
    for i, r in enumerate(row_names):
        for j, c in enumerate(col_names):
            if small.loc[r, c]:
                axis.add_patch(_hatch(j, i))
                axis.text(j + 0.5, i + 0.5, f"n={int(_n(records, rows, cols, r, c))}", ha="center", va="center",
                          fontsize=ANNOT_PT, color="#333")
    axis.tick_params(axis="y", labelrotation=0)
    axis.set_xlabel(group_label(cols))
    axis.set_ylabel(group_label(rows))
    axis.grid(False)
    return png_figure(
        fig,
        caption=(f"Accuracy (%) of each {group_label(rows)} × {group_label(cols)} cell, with its size, on a "
                 "colour-blind-safe scale (dark blue low, yellow high; the number is printed in every cell). Look for "
                 "dark cells: a group that is fine on each attribute alone can still fail where they meet. Colours are "
                 "point estimates: whether a cell differs from the rest beyond sampling noise is in the vs-rest "
                 "columns of group_metrics.csv (Holm-adjusted). Hatched grey cells are too small to judge; their accuracy is in the table, not "
                 "coloured here."),
        alt=f"Heatmap of accuracy by {group_label(rows)} and {group_label(cols)}")


def _n(records, rows, cols, r, c) -> int:
    for record in records:
        if record.values[rows] == r and record.values[cols] == c:
            return record.n
    return 0


def _hatch(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), 1, 1, fill=True, facecolor="#eeeeee", hatch="///", edgecolor="#bbbbbb", linewidth=0)


def _confusion_panel(axis, matrix, classes, title, *, cbar=False, ylabels=None):
    import seaborn as sns

    frame = pd.DataFrame(np.asarray(matrix, dtype=float), index=ylabels or classes, columns=classes)
    with seaborn_heatmaps_without_redraws():
        sns.heatmap(frame * 100, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, cbar=cbar, ax=axis,
                    linewidths=0.5, linecolor="white", annot_kws={"fontsize": ANNOT_PT}, square=False,
                    xticklabels=list(frame.columns), yticklabels=list(frame.index))
    axis.tick_params(axis="x", labelrotation=45)
    axis.tick_params(axis="y", labelrotation=0)
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("predicted")
    axis.tick_params(axis="both", labelsize=ANNOT_PT)
    axis.grid(False)


#: Confusion panels per row of the per-split figure (three fit the PDF's column with 8 pt text).
SPLIT_COLUMNS = 3


def _catch_all_note(classes) -> str:
    """A caption's note on a catch-all class (UTKFace's 'Others'), when the classes have one."""
    catch_all = next((c for c in classes if str(c).lower() in ("others", "other")), None)
    return (f" The catch-all '{catch_all}' row is usually the weakest because it mixes many populations."
            if catch_all else "")


def confusion_by_split(result) -> Figure:
    """Row-normalised confusion matrices: all test faces, then each group of the split attribute (gender, for a
    race classifier on UTKFace; see :func:`faceaudit.auditing.report.formatting.split_attribute`)."""
    schema = schema_of(result)
    split, target = split_attribute(schema), target_label(schema)
    records = result.groupings[split].groups if split in result.groupings else []
    panels = [("All test faces", result.overall)] + [(r.key, r) for r in records if r.confusion]
    ncols = min(len(panels), SPLIT_COLUMNS)
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = new_figure(2.4 * ncols, 2.9 * nrows, ncols=ncols, nrows=nrows, squeeze=False)
    for index, (axis, (title, record)) in enumerate(zip(axes.ravel(), panels)):
        matrix = [[np.nan if v is None else v for v in (row or [None] * len(result.classes))]
                  for row in record.confusion["normalized"]]
        _confusion_panel(axis, matrix, result.classes, f"{title} (n={record.n})")
        axis.set_ylabel(f"true {target}" if index % ncols == 0 else "")
    for axis in axes.ravel()[len(panels):]:
        axis.axis("off")
    split_label = schema.label(split) if split else ""
    per = f" and for each {split_label}" if split else ""
    stronger = f", and whether the same confusion is much stronger for one {split_label}" if split else ""
    return png_figure(
        fig,
        caption=(f"Row-normalised confusion matrices (% of each true {target} predicted as each class), for all test "
                 f"faces{per}. Look at the off-diagonal cells: which {target} is mistaken for which{stronger}."
                 + _catch_all_note(result.classes)),
        alt=f"Confusion matrices overall{f' and per {split_label}' if split else ''}")


def confusion_rows_by(schema: LabelSchema) -> str | None:
    """What the per-class confusion rows are split by: the age band where the audit groups by it, else the first
    other group; None when the target is not a grouping (there are no single-class groups to split)."""
    if schema.target not in schema.groups:
        return None
    others = [g for g in schema.groups if g != schema.target]
    return AGE_BAND if AGE_BAND in others else (others[0] if others else None)


def confusion_by_class(result, by: str | None = None) -> Figure | None:
    """For each true class, where its faces are predicted, row by row per ``by`` group (default:
    :func:`confusion_rows_by`, the age band)."""
    schema = schema_of(result)
    target, label = schema.target, target_label(schema)
    by = by or confusion_rows_by(schema)
    key = grouping_key(schema, target, by) if by else None
    if key not in result.groupings or target not in result.groupings:
        return None
    truths = [r.key for r in result.groupings[target].groups]
    classes = result.classes
    ncols = min(2, len(truths))
    nrows = int(np.ceil(len(truths) / ncols))
    fig, axes = new_figure(3.6 * ncols, (0.2 * len(result.groupings[by].groups) + 1.25) * nrows, ncols=ncols,
                           nrows=nrows, squeeze=False)
    flat = axes.ravel()
    for axis, truth in zip(flat, truths):
        truth_index = classes.index(truth)
        rows, labels = [], []
        overall = next(r for r in result.groupings[target].groups if r.key == truth)
        rows.append(overall.confusion["normalized"][truth_index])
        labels.append(f"all (n={overall.n})")
        for record in result.groupings[key].groups:
            if record.values[target] != truth:
                continue
            row = record.confusion["normalized"][truth_index]
            rows.append(row if row is not None else [np.nan] * len(classes))
            labels.append(f"{record.values[by]} (n={record.n}){' *' if record.too_small else ''}")
        matrix = [[np.nan if v is None else v for v in row] for row in rows]
        _confusion_panel(axis, matrix, classes, f"True {label}: {truth}", ylabels=labels)
        axis.set_ylabel(group_label(by))
    for axis in flat[len(truths):]:
        axis.axis("off")
    return png_figure(
        fig,
        caption=(f"For each true {label}, the share (%) of its faces predicted as each class, overall and per "
                 f"{group_label(by)}; * marks groups too small to judge. Look for rows whose diagonal cell is much "
                 f"lower than the {label}'s 'all' row: that is where the {label} is confused"
                 + (", e.g. children or older faces drifting into one class." if by == AGE_BAND else ".")),
        alt=f"Per-{label} confusion rows by {group_label(by)}")


def reliability_diagrams(result, grouping: str | None = None) -> Figure | None:
    """Reliability diagram (accuracy vs confidence per bin) for all faces and each group of ``grouping`` (default:
    the lead grouping, each race for UTKFace)."""
    calibration = result.calibration
    if not calibration:
        return None
    grouping = grouping or main_grouping(schema_of(result))
    panels = [("All test faces", calibration.overall, False)] + [
        (r.key, r, r.too_small) for r in calibration.groupings.get(grouping, [])]
    ncols = 3
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = new_figure(7.2, 2.6 * nrows, ncols=ncols, nrows=nrows, squeeze=False)
    for axis, (title, record, small) in zip(axes.ravel(), panels):
        bins = record.reliability or []
        axis.plot([0, 1], [0, 1], color=GREY, linewidth=1, linestyle=":")
        if bins:
            mids = np.array([(b["lo"] + b["hi"]) / 2 for b in bins])
            width = np.array([b["hi"] - b["lo"] for b in bins])
            acc = np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in bins])
            conf = np.array([np.nan if b["confidence"] is None else b["confidence"] for b in bins])
            counts = np.array([b["n"] for b in bins])
            alpha = np.clip(0.25 + 0.75 * counts / max(counts.max(), 1), 0.25, 1.0)
            for m, w, a, al in zip(mids, width, acc, alpha):
                axis.bar(m, a, width=w * 0.95, color=PALETTE[0], alpha=float(al), edgecolor="white")
            axis.plot(conf, acc, "o-", color=WORSE, markersize=3, linewidth=1)
        ece = record.ece
        ece_text = "" if ece is None or ece.value is None else f"  ECE {100 * ece.value:.1f}%"  # debiased
        n = record.n if record.n is not None else result.overall.n
        axis.set_title(f"{title} (n={n}){' *' if small else ''}\n{ece_text.strip()}",
                       fontsize=ANNOT_PT)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
    for axis in axes.ravel()[len(panels):]:
        axis.axis("off")
    return png_figure(
        fig,
        caption=(f"Reliability diagrams per {group_label(grouping)}: bars are the accuracy of faces in each "
                 "confidence bin (darker = more faces), the orange line joins mean confidence to accuracy, the "
                 "dotted diagonal is perfect calibration; ECE in the titles is the debiased estimate. Look for bars "
                 "below the diagonal at high confidence: the model is sure and wrong for that group, which a reviewer "
                 "using its scores would not notice. Pale bars hold few faces and can stray from the diagonal by "
                 "chance. * = too small to judge."),
        alt=f"Reliability diagrams by {group_label(grouping)}")


def temperature_effect(result, groupings=None) -> Figure | None:
    """ECE per group before and after temperature scaling (dumbbell chart), for the lead grouping and the split
    attribute by default (race and gender, for UTKFace)."""
    temperature = result.calibration.temperature if result.calibration is not None else None
    if not temperature:
        return None
    if groupings is None:
        schema = schema_of(result)
        groupings = [g for g in (main_grouping(schema), split_attribute(schema)) if g]
    rows = [("all", temperature.overall.before, temperature.overall.after, False)]
    for grouping in groupings:
        for record in temperature.groupings.get(grouping, []):
            rows.append((record.key, record.before, record.after, record.too_small))
    fig, axis = new_figure(6.5, 0.3 * len(rows) + 1.0)
    y = np.arange(len(rows))[::-1]
    for yi, (label, before, after, small) in zip(y, rows):
        b, a = _value(before.ece), _value(after.ece)
        axis.plot([b, a], [yi, yi], color=GREY, linewidth=1.5)
        axis.plot([b], [yi], "o", color=WORSE, markersize=6, label="before" if yi == y[0] else None)
        axis.plot([a], [yi], "D", color=BETTER, markersize=5.5, label="after" if yi == y[0] else None)
    axis.set_yticks(y, [f"{r[0]}{' *' if r[3] else ''}" for r in rows])
    axis.set_xlabel("expected calibration error (lower is better)")
    axis.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    axis.legend(loc="best")
    axis.grid(axis="y", visible=False)
    return png_figure(
        fig,
        caption=(f"Debiased ECE per group before (orange dot) and after (blue diamond) temperature scaling with "
                 f"{temperature_text(temperature)}, fitted on {temperature.n_fit if temperature.n_fit is not None else '?'} validation faces (its "
                 "uncertainty is not propagated). Look for groups that stay badly calibrated after scaling: one global "
                 "temperature cannot fix confidence that is wrong for one group only; whether a change is real is in "
                 "the table's change interval. * = too small to judge."),
        alt="ECE before and after temperature scaling per group")


def _ordered(schema: LabelSchema, column: str) -> bool:
    """Whether an attribute's values have an order (the age band), so a sequential colour map suits it."""
    try:
        return schema.attribute(column).ordered
    except FaceauditError:  # a column the schema does not name: colour it by category
        return False


def _in_value_order(schema: LabelSchema, column: str, present: list[str]) -> list[str]:
    """An ordered attribute's values present in the map, youngest (smallest) first, so the sequential colours run
    with the order the legend reads: the schema's order, else by each label's leading number (``70+`` -> 70)."""
    import re

    try:
        known = list(schema.attribute(column).values)
    except FaceauditError:
        known = []
    if set(present) <= set(known):
        return [v for v in known if v in present]
    lead = {v: float(m.group()) if (m := re.match(r"\d+(\.\d+)?", v)) else float("inf") for v in present}
    return sorted(present, key=lambda v: lead[v])


def tsne_panels(tsne: pd.DataFrame, schema: LabelSchema = UTKFACE, columns=None) -> Figure:
    """The t-SNE map coloured by each of ``columns`` (default: the target, then the schema's groups: race, gender
    and age band for UTKFace)."""
    columns = list(columns or [c for c in dict.fromkeys((schema.target, *schema.groups)) if c in tsne])
    ncols = min(2, len(columns))
    nrows = int(np.ceil(len(columns) / ncols))
    fig, axes = new_figure(3.6 * ncols, 3.5 * nrows, ncols=ncols, nrows=nrows, squeeze=False)
    size = max(2.0, min(10.0, 12000 / max(len(tsne), 1)))
    for axis in axes.ravel()[len(columns):]:
        axis.axis("off")
    for axis, column in zip(axes.ravel(), columns):
        values = tsne[column].astype(str)
        order = list(dict.fromkeys(tsne[column].cat.categories if hasattr(tsne[column], "cat") else values))
        order = [v for v in order if v in set(values)]
        if _ordered(schema, column):
            import matplotlib

            order = _in_value_order(schema, column, order)
            cmap = matplotlib.colormaps[SEQUENTIAL]
            colours = {v: cmap(i / max(len(order) - 1, 1)) for i, v in enumerate(order)}
        else:
            colours = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(order)}
        for value in order:
            mask = values == value
            axis.scatter(tsne.loc[mask, "x"], tsne.loc[mask, "y"], s=size, color=colours[value], label=value,
                         alpha=0.7, linewidths=0, rasterized=True)
        axis.set_title(f"coloured by {group_label(column)}")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.grid(False)
        axis.legend(loc="lower left", fontsize=ANNOT_PT, markerscale=2.5 / max(size, 1) ** 0.5 * 2, frameon=True,
                    ncol=2 if len(order) > 5 else 1, handletextpad=0.2, columnspacing=0.6, borderpad=0.3,
                    labelspacing=0.25)
    labels = [group_label(c) for c in columns]
    target = target_label(schema)
    others = [("age" if c == AGE_BAND else group_label(c)) for c in columns if c != schema.target]
    inside = (f"; structure by {' or '.join(others)} inside a {target} island means "
              f"{'that attribute shapes' if len(others) == 1 else 'those attributes shape'} the features too"
              if others else "")
    return png_figure(
        fig,
        caption=(f"t-SNE map of the model's penultimate-layer embeddings for {len(tsne):,} test faces, coloured "
                 f"by {series_label(labels)}. Look for whether {target} forms separate islands (the model encodes "
                 f"it cleanly) and which {plural_word(target)} overlap (those will be confused){inside}. Distances "
                 "between islands in t-SNE are not meaningful; use the purity and silhouette numbers."),
        alt=f"t-SNE panels coloured by {series_label(labels)}")
