"""The audit report's ten sections: each turns part of ``audit.json`` into tables, figures and sentences."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from . import charts
from .curves import training_curves_figure
from .findings import findings
from .formatting import excludes_zero, fmt_stat, group_label, points
from .gallery import error_gallery
from .history import History
from .layout import Cell, Section, Table

#: Single-attribute groupings, in the order the report shows them.
MAIN_GROUPINGS = ("race", "gender", "age_band")
#: Rows of the worst intersectional groups shown in the report (all of them are in group_metrics.csv).
WORST_INTERSECTIONS = 15


def _status_css(status: str) -> str:
    return {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive"}.get(status, "")


def verdict_section(result) -> Section:
    gates = result.gates
    rows = Table(["Gate", "Rule", "Status", "Result"], caption="Release gates; a gate passes only when its whole "
                 "confidence interval is on the right side of the threshold.")
    if gates:
        for gate in gates.get("results", []):
            rule = f"{gate.get('metric')} by {group_label(str(gate.get('grouping')))}: {gate.get('rule')} {gate.get('threshold')}"
            rows.add(gate.get("name", ""), rule, Cell(gate["status"].upper(), _status_css(gate["status"])),
                     gate.get("message", ""))
    return Section("verdict", "Verdict", "report/verdict.html", {
        "status": gates["status"] if gates else None, "counts": (gates or {}).get("counts", {}),
        "gates": rows, "findings": [f.text for f in findings(result)], "warnings": result.warnings,
        "overall": fmt_stat(result.overall["metrics"]["accuracy"]), "n": result.overall["n"]})


def _scalar_items(data: dict | None, prefix: str = "") -> list[tuple[str, str]]:
    items = []
    for key, value in (data or {}).items():
        if isinstance(value, dict):
            items += _scalar_items(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            if all(not isinstance(v, (dict, list)) for v in value):
                items.append((f"{prefix}{key}", ", ".join(str(v) for v in value)))
            elif all(isinstance(v, dict) and "name" in v for v in value):  # e.g. run.json's training phases
                for item in value:
                    items += _scalar_items({k: v for k, v in item.items() if k != "name"}, f"{prefix}{key}.{item['name']}.")
        elif value is not None:
            items.append((f"{prefix}{key}", str(value)))
    return items


def model_card_section(result) -> Section:
    model, data, run = result.model, result.data, result.model.get("run") or {}
    weights = run.get("weights") or run.get("pretrained") or run.get("init")
    training = [(k, v) for k, v in _scalar_items(run) if any(w in k.lower() for w in ("data", "split", "fingerprint", "n_train", "n_val", "seed", "epoch", "image_size"))]
    facts = [("Model", model.get("name", "")), ("Kind", model.get("kind", "")),
             ("Backbone", model.get("backbone") or "not recorded"),
             ("Weights", str(weights) if weights else "not recorded"),
             ("Run hash", model.get("run_hash") or "not recorded"),
             ("Evaluated on", f"{data.get('n')} {data.get('split', 'test')} images from {data.get('source')}"),
             ("Synthetic data", "yes — numbers say nothing about real faces" if model.get("synthetic") or data.get("synthetic") else "no")]
    return Section("model-card", "Model card", "report/model_card.html", {
        "facts": facts, "training": training, "run_recorded": bool(run), "classes": result.classes})


def data_section(result) -> Section:
    minimum = result.settings.get("min_group_size", 30)
    cube = result.groupings.get("race×gender×age_band", {}).get("groups", [])
    bands = [r["key"] for r in result.groupings["age_band"]["groups"]]
    table = Table(["Race", "Gender", *bands, "Total"], numeric=set(range(2, len(bands) + 3)),
                  caption=f"Test images per race × gender × age band. Italic grey: fewer than {minimum} images, too "
                          "small to judge (shown, never ranked).")
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for record in cube:
        v = record["values"]
        cells.setdefault((v["race"], v["gender"]), {})[v["age_band"]] = record["n"]
    for record in result.groupings.get("race×gender", {}).get("groups", []):
        v = record["values"]
        counts = cells.get((v["race"], v["gender"]), {})
        row = [Cell(str(counts.get(b, 0)), "small" if counts.get(b, 0) < minimum else "") for b in bands]
        table.add(v["race"], v["gender"], *row, Cell(str(record["n"]), "small" if record["too_small"] else ""))
    totals = [str(r["n"]) for r in result.groupings["age_band"]["groups"]]
    table.add(Cell("All", "pass"), "", *totals, str(result.overall["n"]))
    n_small = sum(1 for r in cube if r["too_small"])
    return Section("data", "The evaluated data", "report/data.html", {
        "table": table, "n": result.overall["n"], "n_small": n_small, "n_cells": len(cube), "minimum": minimum,
        "data": result.data, "counts": result.data.get("counts", {})})


def _group_table(result, grouping: str, caption: str, records: list[dict] | None = None) -> Table:
    table = Table(["Group", "n", "Accuracy [CI]", "vs overall", "Balanced acc. [CI]", "Macro-F1 [CI]"],
                  numeric={1, 2, 3, 4, 5}, caption=caption)
    for record in records if records is not None else result.groupings[grouping]["groups"]:
        diff = (record.get("vs_overall") or {}).get("accuracy")
        css = "fail" if diff and excludes_zero(diff) and diff["value"] < 0 else (
            "pass" if diff and excludes_zero(diff) else "")
        table.add(record["key"], record["n"], fmt_stat(record["metrics"]["accuracy"]), Cell(points(diff), css),
                  fmt_stat(record["metrics"]["balanced_accuracy"]), fmt_stat(record["metrics"]["macro_f1"]),
                  css="small" if record["too_small"] else "")
    return table


def _disparity_line(result, grouping: str) -> str:
    d = result.groupings[grouping].get("disparities", {}).get("accuracy")
    if not d or not d.get("worst"):
        return "Fewer than two groups are large enough to rank."
    return (f"Worst: {d['worst']}; best: {d['best']}; gap {points(d['gap'])}; ratio "
            f"{fmt_stat(d['ratio'], percent=False)} over {d.get('n_ranked')} ranked groups"
            + _too_small_note(d.get("too_small") or []))


def _too_small_note(keys: list[str]) -> str:
    if not keys:
        return "."
    if len(keys) > 6:
        return f" ({len(keys)} more groups are too small to rank; see the data section)."
    return f" ({len(keys)} too small: {', '.join(keys)})."


def metrics_section(result) -> Section:
    overall = Table(["Metric", "Value [CI]", "n"], numeric={1, 2}, caption="All test images.")
    for name, stat in result.overall["metrics"].items():
        overall.add(name.replace("_", " "), fmt_stat(stat), stat.get("n") or result.overall["n"])
    per_class = Table(["True race", "Support", "Precision [CI]", "Recall [CI]", "F1 [CI]"], numeric={1, 2, 3, 4},
                      caption="Per class over all test images (recall = accuracy on that race's faces).")
    for name, record in result.overall.get("per_class", {}).items():
        per_class.add(name, record["support"], fmt_stat(record["precision"]), fmt_stat(record["recall"]),
                      fmt_stat(record["f1"]))
    tables = []
    for grouping in MAIN_GROUPINGS:
        if grouping in result.groupings:
            tables.append((group_label(grouping),
                           _group_table(result, grouping, f"By {group_label(grouping)}. 'vs overall' is the "
                                        "difference in accuracy with its CI; red/green when the CI excludes 0."),
                           _disparity_line(result, grouping)))
    inter = []
    if "race×gender" in result.groupings:
        inter.append(("race × gender", _group_table(result, "race×gender", "By race × gender."),
                      _disparity_line(result, "race×gender")))
    cube = result.groupings.get("race×gender×age_band")
    if cube:
        ranked = [r for r in cube["groups"] if not r["too_small"]]
        ranked.sort(key=lambda r: (r["metrics"]["accuracy"].get("value") is None, r["metrics"]["accuracy"].get("value") or 0))
        inter.append(("race × gender × age band: the worst groups",
                      _group_table(result, "race×gender×age_band",
                                   f"The {min(WORST_INTERSECTIONS, len(ranked))} least accurate of {len(ranked)} "
                                   f"race × gender × age-band groups large enough to judge ({len(cube['groups']) - len(ranked)} "
                                   "more are too small); every group is in group_metrics.csv.",
                                   records=ranked[:WORST_INTERSECTIONS]),
                      _disparity_line(result, "race×gender×age_band")))
    return Section("metrics", "Overall and per-group metrics", "report/metrics.html", {
        "overall": overall, "per_class": per_class, "tables": tables, "intersections": inter,
        "forest": charts.accuracy_forest(result), "heatmap": charts.intersection_heatmap(result),
        "ci": int(100 * result.settings.get("ci", 0.95)), "n_boot": result.settings.get("n_boot"),
        "bootstrap": result.settings.get("bootstrap", "")})


def confusion_section(result) -> Section:
    return Section("confusion", "Per-group confusion matrices", "report/confusion.html", {
        "by_gender": charts.confusion_by_gender(result), "by_race": charts.confusion_by_race(result)})


def calibration_section(result) -> Section:
    calibration = result.calibration
    if not calibration:
        return Section("calibration", "Calibration", "report/calibration.html", {"calibration": None})
    temperature = calibration.get("temperature")
    after = {}
    if temperature:
        for grouping, records in temperature.get("groupings", {}).items():
            for record in records:
                after[(grouping, record["key"])] = record["after"]
    table = Table(["Grouping", "Group", "n", "ECE [CI]", "MCE", "Brier [CI]", "Log loss", "ECE after T"],
                  numeric={2, 3, 4, 5, 6, 7}, caption="Calibration per group (15 equal-width confidence bins). "
                  "ECE after T: after temperature scaling fitted on the validation split.")
    overall = calibration["overall"]
    t_overall = temperature["overall"]["after"]["ece"] if temperature else None
    table.add("all", "all", result.overall["n"], fmt_stat(overall["ece"]), fmt_stat(overall["mce"], digits=0),
              fmt_stat(overall["brier"], percent=False), fmt_stat(overall["log_loss"], percent=False, digits=2),
              fmt_stat(t_overall))
    for grouping in MAIN_GROUPINGS:
        for record in calibration["groupings"].get(grouping, []):
            table.add(group_label(grouping), record["key"], record["n"], fmt_stat(record["ece"]),
                      fmt_stat(record["mce"], digits=0), fmt_stat(record["brier"], percent=False),
                      fmt_stat(record["log_loss"], percent=False, digits=2),
                      fmt_stat((after.get((grouping, record["key"])) or {}).get("ece")),
                      css="small" if record["too_small"] else "")
    return Section("calibration", "Calibration", "report/calibration.html", {
        "calibration": calibration, "table": table, "temperature": temperature,
        "reliability": charts.reliability_diagrams(result, "race"),
        "reliability_gender": charts.reliability_diagrams(result, "gender"),
        "effect": charts.temperature_effect(result)})


def embeddings_section(result, audit_dir: Path) -> Section:
    embeddings = result.embeddings
    if not embeddings:
        return Section("embeddings", "Embedding clusters", "report/embeddings.html", {"embeddings": None})
    tsne = embeddings.get("tsne")
    figure = None
    if tsne and (audit_dir / tsne["file"]).is_file():
        frame = pd.read_csv(audit_dir / tsne["file"])
        for column in ("race", "gender", "age_band"):
            frame[column] = frame[column].astype(str)
        figure = charts.tsne_panels(frame)
    purity = embeddings.get("knn_purity") or {}
    table = Table(["Grouping", "Group", "n", f"kNN race purity (k={purity.get('k', '?')}) [CI]", "Silhouette [CI]"],
                  numeric={2, 3, 4}, caption="kNN purity: share of each face's nearest neighbours in embedding space "
                  "with the same race label. Silhouette: how well the race clusters separate (−1 to 1), per race.")
    silhouette = {r["key"]: r["value"] for r in (embeddings.get("silhouette") or {}).get("by_group", [])}
    table.add("all", "all", embeddings.get("n"), fmt_stat(purity.get("overall")),
              fmt_stat((embeddings.get("silhouette") or {}).get("overall"), percent=False, digits=2))
    for grouping in MAIN_GROUPINGS:
        for record in purity.get("groupings", {}).get(grouping, []):
            sil = silhouette.get(record["key"]) if grouping == "race" else None
            table.add(group_label(grouping), record["key"], record["n"], fmt_stat(record["purity"]),
                      fmt_stat(sil, percent=False, digits=2) if sil else "–",
                      css="small" if record["too_small"] else "")
    return Section("embeddings", "Embedding clusters", "report/embeddings.html", {
        "embeddings": embeddings, "figure": figure, "table": table, "tsne": tsne})


def gallery_section(predictions: pd.DataFrame | None, thumbnails: bool, audit_dir: Path) -> Section:
    groups = None
    if predictions is not None:
        groups = error_gallery(predictions, thumbnails=thumbnails, base_dir=audit_dir)
    return Section("errors", "Error gallery", "report/gallery.html", {"groups": groups, "thumbnails": thumbnails})


def training_section(history: History | None, history_note: str) -> Section:
    figure = training_curves_figure(history) if history else None
    table = None
    if history:
        table = Table(["Phase", "Epochs", "Best val accuracy", "Lowest val loss"], numeric={1, 2, 3})
        for phase in history.phases:
            acc, loss = phase.metrics.get("val_accuracy", []), phase.metrics.get("val_loss", [])
            table.add(phase.name, phase.epochs, f"{max(acc):.3f} (epoch {acc.index(max(acc)) + 1})" if acc else "–",
                      f"{min(loss):.3f} (epoch {loss.index(min(loss)) + 1})" if loss else "–")
    return Section("training", "Training curves", "report/training.html",
                   {"figure": figure, "table": table, "note": history_note})


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def reproducibility_section(result, audit_dir: Path) -> Section:
    settings = result.settings
    command = settings.get("command") or result.model.get("command") or (result.model.get("run") or {}).get("command")
    rows = [("Audited with", f"faceaudit {result.faceaudit_version or '?'} at {result.created_utc or '?'}"),
            ("Model source", str(result.model.get("source"))), ("Model / run hash", str(result.model.get("run_hash"))),
            ("Data source", str(result.data.get("source"))), ("Data fingerprint", str(result.data.get("fingerprint"))),
            ("Predictions SHA-256", str(result.data.get("predictions_sha256"))),
            ("Age bands", str(result.data.get("age_bands"))), ("Seed", str(settings.get("seed"))),
            ("Bootstrap", f"{settings.get('n_boot')} resamples, {int(100 * settings.get('ci', 0.95))}% intervals"),
            ("Minimum group size", str(settings.get("min_group_size"))),
            ("Schema", f"audit.json {result.schema_version}")]
    rows = [(key, "not recorded" if value in ("None", "", "null") else value) for key, value in rows]
    versions = [(name, _version(name)) for name in ("faceaudit", "tensorflow", "tensorflow-cpu", "keras",
                                                    "scikit-learn", "fairlearn", "pandas", "numpy", "matplotlib",
                                                    "seaborn", "jinja2", "weasyprint")]
    versions = [("python", platform.python_version())] + [v for v in versions if v[1] != "not installed"]
    files = sorted((k, v) for k, v in (result.files or {}).items() if isinstance(v, str))
    return Section("reproducibility", "Reproducibility", "report/reproducibility.html", {
        "command": command, "rows": rows, "versions": versions, "files": files,
        "rerender": f"faceaudit report {audit_dir}"})
