"""The data report: findings turned into sections, rendered through the shared base layout to HTML and PDF."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

from faceaudit.templates.layout import Cell, Section, Table, file_name, render_document, write_document

from . import charts
from .outputs import summary
from .pipeline import Inspection

#: Rows shown in long tables of the report (the CSVs hold every row).
MAX_ROWS = 30

_CSS = """
.pairs { margin: 0.3rem 0 1rem; }
table.pair { display: inline-table; border-collapse: collapse; margin: 0 0.8rem 0.8rem 0; vertical-align: top;
  break-inside: avoid; font-size: 0.7rem; }
table.pair td { border: 0; padding: 0 2px; width: 84px; vertical-align: top; color: var(--muted); }
table.pair td.what { font-weight: 600; }
table.pair img.data-thumb { width: 80px; height: 80px; display: block; border: 1px solid var(--line); }
.gallery .thumb img.data-thumb { width: 80px; height: 80px; }
.gallery .thumb.data { width: 86px; overflow-wrap: anywhere; }
.numbers td.num { font-weight: 600; }
tr.fail td { color: var(--fail); }
"""


def frame_table(frame: pd.DataFrame, columns: Sequence[str], *, caption: str = "",
                headers: Sequence[str] | None = None, formats: dict[str, Callable] | None = None,
                highlight: Callable[[pd.Series], str] | None = None, limit: int | None = MAX_ROWS) -> Table:
    """A report table from DataFrame columns; numbers right-aligned, at most ``limit`` rows (the rest counted)."""
    formats = formats or {}
    numeric = {i for i, c in enumerate(columns) if c in frame and pd.api.types.is_numeric_dtype(frame[c])}
    shown = frame if limit is None else frame.head(limit)
    if limit is not None and len(frame) > limit:
        caption = f"{caption} (first {limit} of {len(frame):,}; all in the CSV)".strip()
    table = Table(columns=list(headers or columns), caption=caption, numeric=numeric)
    for _, row in shown.iterrows():
        css = highlight(row) if highlight else ""
        cells = []
        for column in columns:
            value = row[column]
            text = formats[column](value) if column in formats else (f"{value:,}" if isinstance(value, int) else str(value))
            cells.append(Cell(text, "id" if column.startswith("image_id") else ""))  # long ids may wrap anywhere
        table.add(*cells, css=css)
    return table


def _with_labels(pairs: pd.DataFrame) -> pd.DataFrame:
    """Label-conflict pairs with each side's race, gender and age in one column (``Asian · Male · 103``), so the
    table keeps six columns and fits an A4 page."""
    pairs = pairs.copy()
    for side in ("a", "b"):
        columns = [f"race_{side}", f"gender_{side}", f"age_{side}"]
        if all(c in pairs for c in columns):
            pairs[f"labels_{side}"] = pairs[columns].astype(str).agg(" · ".join, axis=1) if len(pairs) else ""
        else:
            pairs[f"labels_{side}"] = ""
    return pairs


def flag_rates(ins: Inspection, flagged_ids, by: str, what: str) -> Table:
    """How many of each group's images a check flagged: a flag that falls on one group is a bias, not a cleanup."""
    manifest = ins.dataset.manifest
    hit = manifest["image_id"].isin(set(flagged_ids))
    table = manifest.assign(_hit=hit).groupby(by, observed=False)["_hit"].agg(["size", "sum"]).reset_index()
    table["share"] = table["sum"] / table["size"].clip(lower=1)
    overall = hit.mean() if len(hit) else 0.0
    return frame_table(table, [by, "size", "sum", "share"], headers=[by.replace("_", " "), "images", what, "share"],
                       formats={"share": _share, "size": "{:,}".format, "sum": "{:,}".format}, limit=None,
                       caption=f"{what.capitalize()} by {by.replace('_', ' ')} (overall {overall:.1%}; rows at "
                               "twice that or more in red)",
                       highlight=lambda r: "fail" if overall and r["share"] >= 2 * overall else "")


def _share(value: float) -> str:
    return f"{value:.1%}"


def _composition_tables(ins: Inspection) -> list[Table]:
    tables = []
    for key, title in (("race", "race"), ("gender", "gender"), ("age_band", "age band")):
        frame = ins.composition[key]
        tables.append(frame_table(frame, [key, "n", "share"], headers=[title, "images", "share"],
                                  caption=f"Images by {title}", formats={"share": _share, "n": "{:,}".format}))
    crossing = ins.composition["race_gender"].copy()
    tables.append(frame_table(crossing, ["race", "gender", "n", "share"], headers=["race", "gender", "images", "share"],
                              caption="Images by race x gender", formats={"share": _share, "n": "{:,}".format},
                              limit=None))
    return tables


def build_sections(ins: Inspection) -> list[Section]:
    """Every section of the data report, in order."""
    facts = summary(ins)
    manifest = ins.dataset.manifest
    opts = ins.options
    pairs = ins.pairs
    cross = pairs[pairs["split_a"] != pairs["split_b"]]
    split_order = {"train-test": 0, "val-test": 1, "train-val": 2}
    cross = cross.assign(_o=[split_order.get("-".join(sorted((a, b), key=["train", "val", "test"].index)), 3)
                             for a, b in zip(cross["split_a"], cross["split_b"])]).sort_values(["_o", "distance"])
    dark = ins.exposure[ins.exposure["flag"] == "dark"].sort_values("brightness")
    washed = ins.exposure[ins.exposure["flag"] == "washed-out"].sort_values("brightness", ascending=False)
    top = ins.outliers[ins.outliers["outlier"]]
    labels = manifest.set_index("image_id")[["race", "gender", "age", "split"]]

    def who(row) -> str:
        lab = labels.loc[row.image_id]
        return f"{lab.race} {lab.gender} {lab.age}"

    sections = [
        Section("overview", "Overview", "data/overview.html", {"facts": facts, "ins": ins}),
        Section("composition", "Composition", "data/composition.html", {
            "tables": _composition_tables(ins),
            "composition_chart": charts.composition_chart(ins), "age_heatmap": charts.age_heatmap(ins),
            "small": frame_table(ins.small_groups, ["race", "gender", "age_band", "n_all", "n_test"],
                                 headers=["race", "gender", "age band", "images", "in test split"],
                                 caption=f"Race x gender x age band cells with fewer than {opts.min_group_size} "
                                         "test images", limit=None,
                                 highlight=lambda r: "small" if r["too_small_overall"] else ""),
            "excluded": frame_table(ins.dataset.excluded, ["image_id", "reason"], caption="Files excluded at parse time"),
            "warnings": frame_table(ins.dataset.warnings, ["image_id", "warning"], caption="Files kept with a warning"),
            "facts": facts}, page_break=True),
        Section("properties", "Image properties", "data/properties.html", {
            "stats": frame_table(ins.property_stats, ["race", "gender", "n", "sizes", "brightness_mean",
                                                      "brightness_p05", "contrast_mean", "dark_share"],
                                 headers=["race", "gender", "images", "sizes", "mean brightness",
                                          "5th pct brightness", "mean contrast", "very dark"],
                                 formats={"brightness_mean": "{:.1f}".format, "brightness_p05": "{:.1f}".format,
                                          "contrast_mean": "{:.1f}".format, "dark_share": "{:.2%}".format,
                                          "n": "{:,}".format},
                                 caption="Size, brightness (mean luma 0-255) and contrast (std of luma) by group"),
            "chart": charts.brightness_chart(ins),
            "dark": charts.gallery(ins, dark, lambda r: f"{r.brightness:.0f} · {who(r)}"),
            "washed": charts.gallery(ins, washed, lambda r: f"{r.brightness:.0f} · {who(r)}"),
            "facts": facts, "opts": opts}),
        Section("anomalies", "Anomalies", "data/anomalies.html", {
            "chart": charts.outlier_chart(ins), "share_chart": charts.outlier_share_chart(ins),
            "thumbs": charts.gallery(ins, top, lambda r: f"{r.outlier_score:.3f} · {who(r)}", limit=36),
            "rates": [flag_rates(ins, top["image_id"], key, "outliers") for key in ("race", "age_band")],
            "facts": facts, "opts": opts}),
        Section("faces", "Non-faces", "data/faces.html", {
            "ran": ins.faces is not None, "chart": charts.face_chart(ins),
            "thumbs": charts.gallery(ins, ins.non_faces, lambda r: f"{r.face_confidence:.2f} · {who(r)}", limit=36)
            if ins.non_faces is not None else [],
            "rates": [flag_rates(ins, ins.non_faces["image_id"], key, "non-faces") for key in ("race", "age_band")]
            if ins.non_faces is not None else [],
            "facts": facts, "opts": opts}),
        Section("duplicates", "Duplicates and split leakage", "data/duplicates.html", {
            "leakage": frame_table(ins.leakage, ["split_pair", "kind", "pairs"],
                                   headers=["split pair", "kind", "pairs"], limit=None,
                                   caption="Duplicate pairs whose two images sit in different splits",
                                   highlight=lambda r: "fail" if r["pairs"] and "test" in r["split_pair"] else ""),
            "cross": charts.pair_gallery(ins, cross, limit=12),
            "exact": charts.pair_gallery(ins, pairs[pairs["kind"] == "exact"], limit=6),
            "near": charts.pair_gallery(ins, pairs[(pairs["kind"] == "near") & (pairs["split_a"] == pairs["split_b"])]
                                        .sort_values("distance", ascending=False), limit=6),
            "facts": facts, "opts": opts}, page_break=True),
        Section("labels", "Label sanity", "data/labels.html", {
            "ages": frame_table(ins.ages_out_of_range, ["image_id", "age", "reason"],
                                caption="Files whose age lies outside 0-116 (excluded at parse)"),
            "conflicts": frame_table(_with_labels(ins.label_conflicts), ["conflict", "image_id_a", "labels_a",
                                                                         "image_id_b", "labels_b", "kind"],
                                     headers=["differs in", "image", "race · gender · age", "same photo as",
                                              "race · gender · age", "kind"],
                                     caption="Copies of one photo labelled differently"),
            "conflict_pairs": charts.pair_gallery(ins, ins.label_conflicts, limit=8),
            "problems": frame_table(ins.label_problems, ["image_id", "problem"], caption="Labels outside the taxonomy"),
            "facts": facts, "opts": opts}),
        Section("exclusions", "Exclusion list", "data/exclusions.html", {
            "exclusion_table": frame_table(ins.exclusions, ["image_id", "reason"], caption="exclusions.csv", limit=40),
            "facts": facts, "opts": opts}),
        Section("method", "Method, settings and timings", "data/method.html", {
            "facts": facts, "opts": opts, "timings": ins.timings}),
    ]
    return sections


def render_data_report(ins: Inspection, out_dir: Path, *, pdf: bool = True, progress: bool = True) -> list[Path]:
    """Write ``report.html`` (self-contained) and ``report.pdf`` for an inspection into ``out_dir``."""
    dataset = ins.dataset
    meta = [("Data", file_name(dataset.source)), ("Images", f"{len(dataset.manifest):,} usable of {dataset.n_files:,} files"),
            ("Fingerprint", dataset.fingerprint[:16]), ("Seed", str(ins.options.seed))]
    with tqdm(total=3, desc="rendering data report", unit="step", disable=not progress or None) as bar:
        sections = build_sections(ins)
        bar.update()
        html = render_document("Data inspection report", sections, running_header="faceaudit data report",
                               subtitle=("SYNTHETIC faces, not real people. " if dataset.synthetic else "")
                               + "Composition, image properties, anomalies, non-faces, duplicates, labels",
                               meta=meta, extra_css=_CSS)
        bar.update()
        written = write_document(html, out_dir, "report", pdf=pdf)
        bar.update()
    return written
