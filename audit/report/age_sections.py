"""The report sections of an age regressor's audit: verdict, per-group errors, error by true age, predicted vs
true, and the largest errors. Model card, data, training and reproducibility are the classifier report's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.auditing.types import Group
from faceaudit.taxonomy import AGE_BAND
from faceaudit.templates.figures import PALETTE, Figure, jpeg_uri, new_figure, png_figure
from faceaudit.templates.layout import Cell, Section, Table

from . import sections
from .age_findings import difference_text, metric_text, years
from .formatting import (
    direction_css,
    disparity_of,
    finest_grouping,
    fmt_level,
    fmt_p,
    group_label,
    grouping_key,
    groups_of,
    level_number,
    main_grouping,
    pair_grouping,
    plural,
    ranks,
    schema_of,
    series_label,
)
from .gallery import THUMB_SIZE, _resolve

#: Rows of the intersectional groups with the largest MAE shown in the report (all are in group_metrics.csv).
WORST_INTERSECTIONS = 15
#: Faces per group in the gallery of largest errors.
PER_GROUP = 6
#: Most points drawn in the predicted-vs-true scatter (a random subset beyond; hexbin-like density otherwise).
SCATTER_POINTS = 6_000
METRIC_HEADS = {"mae": "MAE, years [CI]", "bias": "Bias, years [CI]", "within5": "Within ±5 y [CI]"}


def model_card_section(result) -> Section:
    """The classifier report's model card, worded for a model that predicts age in years."""
    section = sections.model_card_section(result)
    section.context["regression"] = True
    return section


def reproducibility_section(result, audit_dir: Path) -> Section:
    section = sections.reproducibility_section(result, audit_dir)
    ci = fmt_level(result.settings.level)
    section.context["rows"] = [
        (key, f"{ci}: t (bias); t widened by the expanded bootstrap-t ({result.settings.n_boot} resamples "
              "within each group) (MAE); Clopper–Pearson (within ±5 years)") if key == "Intervals" else (key, value)
        for key, value in section.context["rows"]]
    return section


def _vs_rest_cells(record: Group, metric: str) -> list[Cell]:
    diff = (record.vs_rest or {}).get(metric)
    if not diff:
        return [Cell("–")]
    css = direction_css(diff) if metric == "within5" else ""
    if metric == "mae" and css:  # a higher MAE than the rest is worse
        css = "fail" if diff.value > 0 else "pass"
    if metric == "bias" and css:
        css = "fail"
    title = f"{diff.test or ''}; Holm p {fmt_p(diff.p_holm, short=True)}; interval at the {diff.level} level over {diff.family} groups"
    return [sections._wrap(difference_text(metric, diff).replace(" years", ""), css, title)]


def _group_table(result, grouping: str, caption: str, records: list[Group] | None = None) -> Table:
    table = Table(["Group", "n", *METRIC_HEADS.values(), "MAE vs rest [Bonferroni CI]", "Bias vs rest [Bonferroni CI]",
                   "p (Holm), MAE / bias"], numeric=set(range(1, 9)), caption=caption, sortable=True)
    for record in records if records is not None else result.groupings[grouping].groups:
        m = record.metrics
        cells = [sections._wrap(metric_text(k, m.get(k)).replace(" years", "")) for k in METRIC_HEADS]
        rest = record.vs_rest or {}
        p = " / ".join(fmt_p(rest[k].p_holm if rest.get(k) else None, short=True) for k in ("mae", "bias"))
        table.add(record.key, record.n, *cells, *_vs_rest_cells(record, "mae"), *_vs_rest_cells(record, "bias"),
                  Cell(p if rest else "–"), css="small" if record.too_small else "")
    return table


def _caption(result, grouping: str) -> str:
    minimum = result.settings.min_group_size
    missing = result.groupings[grouping].missing
    return (f"By {group_label(grouping)}. Bias is predicted − true age (positive: the model makes the group older). "
            "'vs rest': the group's MAE or bias minus that of every other test face, with an interval adjusted "
            "(Bonferroni) for the ranked groups compared and Welch's test Holm-adjusted over them; red only when both "
            f"say the difference is beyond sampling noise. Italic grey: fewer than {minimum} faces, never ranked."
            + (f" No test images: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}." if missing else ""))


def disparity_lines(result, grouping: str) -> list[str]:
    """Worst vs best (MAE, within ±5 years) and the largest bias of a grouping, one line each."""
    out = []
    for metric, label in (("mae", "MAE"), ("within5", "Within ±5 years"), ("bias", "Bias")):
        d = disparity_of(result, grouping, metric)
        if not ranks(d):
            out.append(f"{label}: fewer than two groups are large enough to rank.")
            continue
        if metric == "bias":
            text = (f"Bias: largest |bias| {d.worst}, smallest {d.best}, of {plural(d.n_ranked, 'ranked group')}; "
                    f"difference {years(d.difference, signed=True)}; spread of the biases (max − min) "
                    f"{years(d.gap)} ({d.adjustment})")
        else:
            text = (f"{label}: worst {d.worst}, best {d.best}, of {plural(d.n_ranked, 'ranked group')}; "
                    f"worst − best {difference_text(metric, d.difference)} ({d.adjustment}); gap "
                    f"{difference_text(metric, d.gap, signed=False)}")
            omnibus = d.omnibus or {}
            if omnibus.get("p_value") is not None:
                text += f"; all groups equal: {fmt_p(omnibus['p_value'])} ({omnibus.get('method')})"
        small = d.too_small or []
        out.append(text + (f" ({len(small)} too small to rank)." if small else "."))
    return out


def _overall_table(result) -> Table:
    table = Table(["Metric", "Value [CI]", "n", "Interval"], numeric={1, 2}, caption="All test images.")
    methods = {"mae": "t ∪ expanded bootstrap-t", "bias": "Student's t", "within5": "Clopper–Pearson"}
    labels = {"mae": "Mean absolute error", "bias": "Bias (predicted − true)", "within5": "Within ±5 years (CS(5))"}
    for name, stat in result.overall.metrics.items():
        table.add(labels.get(name, name), metric_text(name, stat), stat.n or result.overall.n,
                  methods.get(name, ""))
    return table


def _worst_intersections(result):
    grouping = finest_grouping(schema_of(result))
    cube = result.groupings.get(grouping)
    if cube is None or len(cube.attributes) < 2:
        return None
    ranked = [r for r in cube.groups if not r.too_small]
    ranked.sort(key=lambda r: -(r.metrics["mae"].value or 0))
    caption = (f"The {min(WORST_INTERSECTIONS, len(ranked))} of {len(ranked)} {group_label(grouping)} groups large "
               f"enough to judge with the largest MAE ({len(cube.groups) - len(ranked)} more are too small); every "
               "group is in group_metrics.csv. Sorted by point estimate: only the vs-rest columns say whether a group "
               "is worse than the rest beyond sampling noise. " + _caption(result, grouping))
    return (f"{group_label(grouping)}: the largest errors", _group_table(result, grouping, caption,
                                                                      ranked[:WORST_INTERSECTIONS]),
            disparity_lines(result, grouping))


def metrics_section(result, predictions: pd.DataFrame | None) -> Section:
    schema = schema_of(result)
    tables = [(group_label(g), _group_table(result, g, _caption(result, g)), disparity_lines(result, g))
              for g in schema.groups if g in result.groupings]
    pair = pair_grouping(schema)
    inter = [(group_label(g), _group_table(result, g, _caption(result, g)), disparity_lines(result, g))
             for g in (pair,) if g and g in result.groupings and g != finest_grouping(schema)]
    worst = _worst_intersections(result)
    return Section("metrics", "Errors overall and per group", "report/age_metrics.html", {
        "overall": _overall_table(result), "tables": tables, "intersections": inter + ([worst] if worst else []),
        "by_age": error_by_age_figure(result), "scatter": scatter_figure(result, predictions),
        "ci": level_number(result.settings.level), "min_group_size": result.settings.min_group_size,
        "alpha": round(1 - result.settings.level, 6)})


# -- figures ---------------------------------------------------------------------------------------------------


def error_by_age_figure(result) -> Figure | None:
    """Mean signed error and MAE by true age band, one line per group of the lead grouping, with intervals."""
    schema = schema_of(result)
    lead = main_grouping(schema)
    if AGE_BAND not in schema.groups or lead == AGE_BAND:
        return None
    key = grouping_key(schema, lead, AGE_BAND)
    if key not in result.groupings or AGE_BAND not in result.groupings:
        return None
    bands = [r.key for r in groups_of(result, AGE_BAND)]
    leads = [r.key for r in groups_of(result, lead)]
    fig, axes = new_figure(7.2, 5.2, nrows=2, sharex=True)
    x = np.arange(len(bands))
    offsets = np.linspace(-0.25, 0.25, max(len(leads), 1))
    for colour, offset, name in zip(PALETTE * 3, offsets, leads):
        records = {r.values[AGE_BAND]: r for r in groups_of(result, key) if r.values[lead] == name}
        for axis, metric in zip(axes, ("bias", "mae")):
            values, los, his, small = [], [], [], []
            for band in bands:
                record = records.get(band)
                stat = record.metrics.get(metric) if record is not None else None
                lo, hi = (stat.interval if stat is not None else None) or (np.nan, np.nan)
                values.append(np.nan if stat is None or stat.value is None else stat.value)
                los.append(lo)
                his.append(hi)
                small.append(bool(record is not None and record.too_small))
            values, los, his = (np.asarray(v, dtype=float) for v in (values, los, his))
            axis.plot(x + offset, values, "-", color=colour, linewidth=1.2, alpha=0.9,
                      label=name if metric == "bias" else None)
            judged = ~np.asarray(small)
            axis.errorbar((x + offset)[judged], values[judged], yerr=[values[judged] - los[judged],
                          his[judged] - values[judged]], fmt="o", color=colour, markersize=3.5, elinewidth=1, capsize=0)
            axis.plot((x + offset)[~judged], values[~judged], "o", markerfacecolor="white", markeredgecolor=colour,
                      markersize=3.5)
    axes[0].axhline(0, color="black", linewidth=0.8)
    axes[0].set_ylabel("bias, years\n(+: made older)")
    axes[1].set_ylabel("MAE, years")
    axes[1].set_xticks(x, bands)
    axes[1].set_xlabel("true age band")
    axes[0].legend(ncol=min(len(leads), 5), loc="upper left", frameon=False)
    ci = fmt_level(result.settings.level)
    return png_figure(fig, caption=(
        f"Error by true age, one line per {group_label(lead)}: mean signed error (top; above 0 the model makes faces "
        f"older) and mean absolute error (bottom) in each age band, with {ci} intervals (not adjusted for the number "
        f"of cells). Hollow dots: cells with fewer than {result.settings.min_group_size} faces, too small "
        "to judge. Look for a line that leaves the others where the intervals do not overlap: the model's age errors "
        f"depend on {group_label(lead)} there."),
        alt=f"Bias and MAE by true age band for each {group_label(lead)}")


def scatter_figure(result, predictions: pd.DataFrame | None) -> Figure | None:
    """Predicted against true age, one colour per group of the lead grouping, the identity line drawn."""
    if predictions is None or "pred_age" not in predictions or "age" not in predictions:
        return None
    lead = main_grouping(schema_of(result))
    frame = predictions
    if len(frame) > SCATTER_POINTS:
        frame = frame.sample(SCATTER_POINTS, random_state=0)
    fig, axis = new_figure(7.2, 5.0)
    true = pd.to_numeric(frame["age"], errors="coerce")
    pred = pd.to_numeric(frame["pred_age"], errors="coerce")
    names = ([r.key for r in groups_of(result, lead)] if lead in result.groupings
             else list(pd.unique(frame[lead].astype(str))) if lead in frame else ["all"])
    for colour, name in zip(PALETTE * 3, names):
        mask = (frame[lead].astype(str) == name) if lead in frame else np.ones(len(frame), dtype=bool)
        axis.scatter(true[mask], pred[mask], s=5, alpha=0.35, color=colour, label=name, linewidths=0)
    top = float(np.nanmax([true.max(), pred.max(), 1.0]))
    low = float(min(np.nanmin([true.min(), pred.min()]), 0.0))
    axis.plot([low, top], [low, top], color="black", linewidth=0.8)
    axis.fill_between([low, top], [low - 5, top - 5], [low + 5, top + 5], color="grey", alpha=0.12, linewidth=0)
    axis.set_xlabel("true age, years")
    axis.set_ylabel("predicted age, years")
    axis.legend(markerscale=3, frameon=False, loc="upper left")
    shown = f" ({len(frame):,} of {len(predictions):,} faces, a random sample)" if len(frame) < len(predictions) else ""
    return png_figure(fig, caption=(
        f"Predicted against true age, one colour per {group_label(lead)}{shown}. The line is a perfect estimate and "
        "the grey band ±5 years. Points above the line are faces the model makes older; a colour that sits above or "
        "below the others is a group the model systematically ages or rejuvenates. A flattening at the ends "
        "(children predicted older, the old younger) is the usual regression towards the mean."),
        alt=f"Scatter of predicted against true age coloured by {group_label(lead)}")


# -- the largest errors ----------------------------------------------------------------------------------------


def largest_errors(predictions: pd.DataFrame, by: str, *, per_group: int = PER_GROUP, thumbnails: bool = True,
                   base_dir: Path | None = None) -> list[dict]:
    """The ``per_group`` largest absolute errors of each ``by`` group, with thumbnails when asked."""
    from PIL import Image

    frame = predictions.copy()
    frame["_abs"] = (pd.to_numeric(frame["pred_age"], errors="coerce") - pd.to_numeric(frame["age"], errors="coerce")).abs()
    groups = []
    for key, group in frame.groupby(frame[by].astype(str), sort=False):
        chosen = []
        for _, row in group.sort_values("_abs", ascending=False, kind="stable").head(per_group).iterrows():
            item = {"image_id": str(row["image_id"]), "true": float(row["age"]), "pred": float(row["pred_age"]),
                    "details": ", ".join(str(row[c]) for c in ("gender", "race") if c in row and c != by), "src": "",
                    "missing": False}
            if thumbnails:
                resolved = _resolve(row.get("path"), base_dir)
                if resolved is None:
                    item["missing"] = True
                else:
                    try:
                        with Image.open(resolved) as image:
                            item["src"] = jpeg_uri(image, size=THUMB_SIZE)
                    except OSError:
                        item["missing"] = True
            chosen.append(item)
        groups.append({"key": str(key), "n": len(group), "n_off": int((group["_abs"] > 5).sum()), "faces": chosen})
    order = list(predictions[by].cat.categories) if hasattr(predictions[by], "cat") else []
    groups.sort(key=lambda g: order.index(g["key"]) if g["key"] in order else len(order))
    return groups


def gallery_section(result, predictions: pd.DataFrame | None, thumbnails: bool, audit_dir: Path) -> Section:
    lead = main_grouping(schema_of(result))
    groups = None
    if predictions is not None and lead in predictions:
        groups = largest_errors(predictions, lead, thumbnails=thumbnails, base_dir=audit_dir)
    return Section("errors", "Largest errors", "report/age_gallery.html", {
        "groups": groups, "thumbnails": thumbnails, "by": group_label(lead)})


def age_subtitle(result) -> str:
    """``Age estimation on 2400 test faces, broken down by race, gender and age band``."""
    schema = schema_of(result)
    return (f"Age estimation on {result.overall.n} {result.data.get('split', 'test')} faces, broken down by "
            f"{series_label(schema.label(g) for g in schema.groups)}")
