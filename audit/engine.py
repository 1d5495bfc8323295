"""The audit: from a validated predictions table (and optional embeddings) to an :class:`AuditResult` and tables.

A bootstrap (:mod:`.bootstrap`) resampling within the groups of each grouping serves that grouping's metrics,
disparities, comparisons with the overall value and calibration figures; point estimates are replicate 0 of the same computation, so a value and its interval never disagree in method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from faceaudit import __version__
from faceaudit.config import (
    DEFAULT_CI,
    DEFAULT_INCONCLUSIVE,
    DEFAULT_MIN_GROUP_SIZE,
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    RACES,
)

from . import calibration as cal
from . import embeddings as emb
from .bootstrap import Replicates, percentile_interval, stratified_replicates, wilson_interval
from .metrics import GROUP_METRICS, f1, group_metrics, precision, recall, row_normalised
from .result import GROUP_SEPARATOR, GROUPINGS, AuditResult, grouping_name, stat
from .schema import PROB_COLUMNS

ATTRIBUTES = ("race", "gender", "age_band")
BOOTSTRAP_METHOD = ("percentile bootstrap resampling images within each group of each grouping (group sizes fixed); "
                    "up to 50,000 images each resample draws actual images; above that, confusion counts are drawn "
                    "exactly as multinomial resamples of each group's (true, predicted, confidence bin) types and per-image confidence, Brier "
                    "and log-loss sums from a normal with each type's mean and variance")


@dataclass
class AuditSettings:
    """How the audit computes (recorded in audit.json ``settings``)."""

    n_boot: int = DEFAULT_N_BOOT
    ci: float = DEFAULT_CI
    seed: int = DEFAULT_SEED
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    ece_bins: int = cal.ECE_BINS
    knn_k: int = emb.KNN_K
    tsne: bool = True
    inconclusive: str = DEFAULT_INCONCLUSIVE
    progress: bool = False


@dataclass
class AuditOutput:
    """The result plus the tables written next to it as CSV (name -> frame) and extra arrays."""

    result: AuditResult
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _codes(frame: pd.DataFrame) -> dict[str, tuple[np.ndarray, list[str]]]:
    out = {}
    for attribute in ATTRIBUTES:
        column = frame[attribute]
        categories = [str(c) for c in column.cat.categories]
        out[attribute] = (np.asarray(column.cat.codes, dtype=np.int64), categories)
    return out


def _grouping_codes(codes: dict, attributes: tuple[str, ...]) -> tuple[np.ndarray, int, list[dict]]:
    """Mixed-radix group code per row, number of groups, and each group's attribute values."""
    code = np.zeros(len(next(iter(codes.values()))[0]), dtype=np.int64)
    size = 1
    for attribute in attributes:
        values, categories = codes[attribute]
        code = code * len(categories) + values
        size *= len(categories)
    labels = []
    for index in range(size):
        values, rest = {}, index
        for attribute in reversed(attributes):
            categories = codes[attribute][1]
            values[attribute] = categories[rest % len(categories)]
            rest //= len(categories)
        labels.append({a: values[a] for a in attributes})
    return code, size, labels


def _disparity(values: np.ndarray, ranked: np.ndarray, keys: list[str], ci: float, higher_is_better: bool,
               too_small: list[str], sizes: np.ndarray) -> dict:
    """Worst and best ranked group, and the gap (max - min) and ratio (min / max) with bootstrap intervals."""
    out = {"worst": None, "best": None, "gap": stat(None), "ratio": stat(None), "n_ranked": int(ranked.sum()),
           "too_small": too_small}
    sub = values[:, ranked]
    if sub.shape[1] == 0 or np.isnan(sub[0]).all():
        return out
    ranked_keys = [k for k, r in zip(keys, ranked) if r]
    point = sub[0]
    order = np.argsort(np.where(np.isnan(point), np.inf if higher_is_better else -np.inf, point))
    worst, best = (order[0], order[-1]) if higher_is_better else (order[-1], order[0])
    out["worst"], out["best"] = ranked_keys[worst], ranked_keys[best]
    if sub.shape[1] < 2:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gap = np.nanmax(sub, axis=1) - np.nanmin(sub, axis=1)
            ratio = np.nanmin(sub, axis=1) / np.nanmax(sub, axis=1)
    n_total = int(np.asarray(sizes)[ranked].sum())
    for name, series in (("gap", gap), ("ratio", ratio)):
        lo, hi = percentile_interval(series[:, None], ci)
        out[name] = stat(series[0], (lo[0], hi[0]), n_total)
    return out


def compute_audit(
    predictions: pd.DataFrame,
    *,
    settings: AuditSettings | None = None,
    embeddings: np.ndarray | None = None,
    embedding_source: str = "model",
    val_predictions: pd.DataFrame | None = None,
    model: dict | None = None,
    data: dict | None = None,
) -> AuditOutput:
    """Audit a validated predictions table (see :func:`faceaudit.audit.predictions.validate_predictions`)."""
    s = settings or AuditSettings()
    frame = predictions.reset_index(drop=True)
    n = len(frame)
    n_classes = len(RACES)
    codes = _codes(frame)
    y_true = codes["race"][0]
    y_pred = np.asarray(frame["pred_race"].cat.codes, dtype=np.int64)
    has_probs = all(c in frame.columns for c in PROB_COLUMNS) and not frame[PROB_COLUMNS[0]].isna().any()
    probs = frame[list(PROB_COLUMNS)].to_numpy(dtype=float) if has_probs else None

    layouts = {"all": (np.zeros(n, dtype=np.int64), 1, [{}])}
    for attributes in GROUPINGS:
        layouts[grouping_name(attributes)] = _grouping_codes(codes, attributes)
    def replicates(p: np.ndarray | None, seed: int, progress: bool):
        """Resamples of each grouping drawn within that grouping's own groups (iid within each group), so a
        group's interval reflects its images only and is not narrowed by holding finer cells fixed."""
        per = cal.per_image(p, y_true) if p is not None else {}
        parts = [
            stratified_replicates(
                code, y_true, y_pred, {name: (code, size)}, n_classes=n_classes, n_boot=s.n_boot,
                seed=seed + index, confidence=per.get("confidence"), brier=per.get("brier"),
                log_loss=per.get("log_loss"), n_bins=s.ece_bins, progress=progress and index == 0)
            for index, (name, (code, size, _)) in enumerate(layouts.items())
        ]
        return Replicates(confusion={k: v for r in parts for k, v in r.confusion.items()},
                          calibration=None if p is None else {k: v for r in parts for k, v in r.calibration.items()},
                          n_boot=s.n_boot)

    reps = replicates(probs, s.seed, s.progress)
    warnings_out: list[str] = []
    tables: dict[str, list[dict]] = {k: [] for k in ("group_metrics", "per_class", "confusion", "disparities",
                                                     "calibration", "reliability")}

    # -- classification metrics ------------------------------------------------------------------------

    def group_block(name: str) -> tuple[list[dict], dict]:
        code, size, labels = layouts[name]
        cm = reps.confusion[name]
        counts = cm[0]
        n_g = counts.sum(axis=(1, 2))
        values = group_metrics(cm)
        intervals = {m: percentile_interval(v, s.ci) for m, v in values.items()}
        per_class = {"precision": precision(cm), "recall": recall(cm), "f1": f1(cm)}
        per_class_ci = {m: percentile_interval(v, s.ci) for m, v in per_class.items()}
        tp = np.diagonal(counts, axis1=1, axis2=2)
        support, predicted = counts.sum(axis=2), counts.sum(axis=1)
        acc_w = wilson_interval(tp.sum(axis=1), n_g, s.ci)
        rec_w = wilson_interval(tp, support, s.ci)
        prec_w = wilson_interval(tp, predicted, s.ci)
        normalised = row_normalised(counts)
        diffs = {}
        if name != "all":
            # The overall value within the same resamples: the sum of this grouping's groups.
            pooled = group_metrics(cm.sum(axis=1, keepdims=True))
            for m, v in values.items():
                d = v - pooled[m]
                diffs[m] = (d, percentile_interval(d, s.ci))
        records = []
        for g in np.flatnonzero(n_g):
            key = GROUP_SEPARATOR.join(labels[g].values()) if name != "all" else "all"
            too_small = bool(name != "all" and n_g[g] < s.min_group_size)
            metrics_out = {}
            for m in GROUP_METRICS:
                extra = {"wilson": (acc_w[0][g], acc_w[1][g])} if m == "accuracy" else {}
                metrics_out[m] = stat(values[m][0, g], (intervals[m][0][g], intervals[m][1][g]), n_g[g], **extra)
            classes = {}
            for k, race in enumerate(RACES):
                classes[race] = {
                    "support": int(support[g, k]),
                    "precision": stat(per_class["precision"][0, g, k], (per_class_ci["precision"][0][g, k],
                                      per_class_ci["precision"][1][g, k]), predicted[g, k],
                                      wilson=(prec_w[0][g, k], prec_w[1][g, k])),
                    "recall": stat(per_class["recall"][0, g, k], (per_class_ci["recall"][0][g, k],
                                   per_class_ci["recall"][1][g, k]), support[g, k],
                                   wilson=(rec_w[0][g, k], rec_w[1][g, k])),
                    "f1": stat(per_class["f1"][0, g, k], (per_class_ci["f1"][0][g, k], per_class_ci["f1"][1][g, k]),
                               support[g, k] + predicted[g, k]),
                }
            record = {"key": key, "values": labels[g], "n": int(n_g[g]), "too_small": too_small,
                      "metrics": metrics_out, "per_class": classes,
                      "confusion": {"counts": counts[g].astype(int).tolist(),
                                    "normalized": [None if np.isnan(row).all() else [round(float(x), 6) for x in row]
                                                   for row in normalised[g]]}}
            if diffs:
                record["vs_overall"] = {m: stat(d[0, g], (ci[0][g], ci[1][g]), n_g[g]) for m, (d, ci) in diffs.items()}
            records.append(record)
            row = {"grouping": name, "group": key, **labels[g], "n": int(n_g[g]), "too_small": too_small}
            for m in GROUP_METRICS:
                row.update({m: metrics_out[m]["value"], f"{m}_lo": (metrics_out[m]["ci"] or [None])[0],
                            f"{m}_hi": (metrics_out[m]["ci"] or [None, None])[1]})
            row.update({"accuracy_wilson_lo": metrics_out["accuracy"]["wilson"][0],
                        "accuracy_wilson_hi": metrics_out["accuracy"]["wilson"][1]})
            tables["group_metrics"].append(row)
            for race, c in classes.items():
                prow = {"grouping": name, "group": key, "class": race, "support": c["support"]}
                for m in ("precision", "recall", "f1"):
                    prow.update({m: c[m]["value"], f"{m}_lo": (c[m]["ci"] or [None])[0],
                                 f"{m}_hi": (c[m]["ci"] or [None, None])[1]})
                tables["per_class"].append(prow)
            for i, t in enumerate(RACES):
                for j, p in enumerate(RACES):
                    tables["confusion"].append({"grouping": name, "group": key, "true": t, "pred": p,
                                                "count": int(counts[g, i, j]),
                                                "rate": None if np.isnan(normalised[g, i, j]) else float(normalised[g, i, j])})
        disparities = {}
        if name != "all":
            present = n_g > 0
            keys = [GROUP_SEPARATOR.join(labels[g].values()) for g in np.flatnonzero(present)]
            ranked = (n_g[present] >= s.min_group_size)
            small = [k for k, r in zip(keys, ranked) if not r]
            for m in GROUP_METRICS:
                disparities[m] = _disparity(values[m][:, present], ranked, keys, s.ci, True, small, n_g[present])
                tables["disparities"].append(_disparity_row(name, m, disparities[m]))
        return records, disparities

    overall_records, _ = group_block("all")
    overall = overall_records[0]
    overall.pop("vs_overall", None)
    groupings_out = {}
    for attributes in GROUPINGS:
        name = grouping_name(attributes)
        records, disparities = group_block(name)
        groupings_out[name] = {"attributes": list(attributes), "groups": records, "disparities": disparities}
        small = sum(r["too_small"] for r in records)
        if small and len(attributes) == 1:
            warnings_out.append(f"{small} {name} group(s) have fewer than {s.min_group_size} images and are not ranked")

    # -- calibration -----------------------------------------------------------------------------------
    calibration_out = None
    if has_probs:
        calibration_out = _calibration_block(reps, layouts, s, tables)
        if val_predictions is not None and len(val_predictions) and all(c in val_predictions for c in PROB_COLUMNS):
            calibration_out["temperature"] = _temperature_block(
                val_predictions, probs, reps, layouts, s, replicates)
    else:
        warnings_out.append("the predictions have labels only: no calibration figures")

    # -- embeddings ------------------------------------------------------------------------------------
    embeddings_out = None
    if embeddings is not None:
        embeddings_out, emb_tables = _embeddings_block(np.asarray(embeddings), frame, codes, layouts, s,
                                                       embedding_source)
        tables.update(emb_tables)

    data = dict(data or {})
    data.setdefault("n", n)
    data.setdefault("split", "test")
    data["counts"] = {a: {str(k): int(v) for k, v in frame[a].value_counts(sort=False).items()} for a in ATTRIBUTES}
    settings_out = {"n_boot": s.n_boot, "ci": s.ci, "seed": s.seed, "min_group_size": s.min_group_size,
                    "ece_bins": s.ece_bins, "knn_k": s.knn_k, "bootstrap": BOOTSTRAP_METHOD,
                    "inconclusive": s.inconclusive}
    result = AuditResult(
        model=dict(model or {}), data=data, settings=settings_out, classes=list(RACES), overall=overall,
        groupings=groupings_out, calibration=calibration_out, embeddings=embeddings_out, warnings=warnings_out,
        faceaudit_version=__version__, created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    frames = {k: pd.DataFrame(v) for k, v in tables.items() if isinstance(v, list) and v}
    frames.update({k: v for k, v in tables.items() if isinstance(v, pd.DataFrame)})
    return AuditOutput(result=result, tables=frames)


def _disparity_row(grouping: str, metric: str, d: dict) -> dict:
    return {"grouping": grouping, "metric": metric, "worst": d["worst"], "best": d["best"], "n_ranked": d["n_ranked"],
            "gap": d["gap"]["value"], "gap_lo": (d["gap"]["ci"] or [None])[0], "gap_hi": (d["gap"]["ci"] or [None, None])[1],
            "ratio": d["ratio"]["value"], "ratio_lo": (d["ratio"]["ci"] or [None])[0],
            "ratio_hi": (d["ratio"]["ci"] or [None, None])[1], "too_small": "; ".join(d["too_small"])}


def _calibration_values(reps, name: str) -> dict[str, np.ndarray]:
    c = reps.calibration[name]
    return cal.from_sums(c["count"], c["confidence"], c["correct"], c["brier"], c["log_loss"])


def _calibration_block(reps, layouts, s: AuditSettings, tables) -> dict:
    out = {"n_bins": s.ece_bins, "binning": "equal-width bins of top-label confidence, (lo, hi]",
           "groupings": {}, "disparities": {}, "temperature": None}
    for name, (code, size, labels) in layouts.items():
        values = _calibration_values(reps, name)
        intervals = {m: percentile_interval(v, s.ci) for m, v in values.items()}
        c0 = reps.calibration[name]
        n_g = c0["count"][0].sum(axis=1)
        records = []
        for g in np.flatnonzero(n_g):
            key = GROUP_SEPARATOR.join(labels[g].values()) if name != "all" else "all"
            too_small = bool(name != "all" and n_g[g] < s.min_group_size)
            record = {"key": key, "values": labels[g], "n": int(n_g[g]), "too_small": too_small}
            for m in cal.CALIBRATION_METRICS:
                record[m] = stat(values[m][0, g], (intervals[m][0][g], intervals[m][1][g]), n_g[g])
            record["reliability"] = cal.reliability_bins(c0["count"][0, g], c0["confidence"][0, g],
                                                         c0["correct"][0, g], s.ece_bins)
            records.append(record)
            tables["calibration"].append({"grouping": name, "group": key, **labels[g], "n": int(n_g[g]),
                                          "too_small": too_small,
                                          **{k: v for m in cal.CALIBRATION_METRICS for k, v in
                                             ((m, record[m]["value"]), (f"{m}_lo", (record[m]["ci"] or [None])[0]),
                                              (f"{m}_hi", (record[m]["ci"] or [None, None])[1]))}})
            for b in record["reliability"]:
                tables["reliability"].append({"grouping": name, "group": key, **b})
        if name == "all":
            out["overall"] = {k: v for k, v in records[0].items() if k not in ("key", "values", "too_small")}
            continue
        out["groupings"][name] = records
        present = n_g > 0
        keys = [GROUP_SEPARATOR.join(labels[g].values()) for g in np.flatnonzero(present)]
        ranked = n_g[present] >= s.min_group_size
        small = [k for k, r in zip(keys, ranked) if not r]
        out["disparities"][name] = {m: _disparity(values[m][:, present], ranked, keys, s.ci, False, small, n_g[present])
                                    for m in cal.CALIBRATION_METRICS}
    return out


def _temperature_block(val: pd.DataFrame, probs: np.ndarray, reps, layouts, s: AuditSettings, replicates) -> dict:
    val_probs = val[list(PROB_COLUMNS)].to_numpy(dtype=float)
    val_true = np.asarray(val["race"].cat.codes, dtype=np.int64)
    temperature, before, after = cal.fit_temperature(val_probs, val_true)
    scaled = replicates(cal.scale_temperature(probs, temperature), s.seed + 1, False)
    out = {"temperature": round(temperature, 6), "fitted_on": "val", "n_fit": int(len(val)),
           "nll_before": round(before, 6), "nll_after": round(after, 6), "groupings": {}}
    for name, (code, size, labels) in layouts.items():
        pre, post = _calibration_values(reps, name), _calibration_values(scaled, name)
        pre_ci = {m: percentile_interval(v, s.ci) for m, v in pre.items()}
        post_ci = {m: percentile_interval(v, s.ci) for m, v in post.items()}
        n_g = reps.calibration[name]["count"][0].sum(axis=1)
        records = []
        for g in np.flatnonzero(n_g):
            record = {"key": GROUP_SEPARATOR.join(labels[g].values()) if name != "all" else "all",
                      "n": int(n_g[g]), "too_small": bool(name != "all" and n_g[g] < s.min_group_size),
                      "before": {m: stat(pre[m][0, g], (pre_ci[m][0][g], pre_ci[m][1][g]), n_g[g])
                                 for m in cal.CALIBRATION_METRICS},
                      "after": {m: stat(post[m][0, g], (post_ci[m][0][g], post_ci[m][1][g]), n_g[g])
                                for m in cal.CALIBRATION_METRICS}}
            records.append(record)
        if name == "all":
            out["overall"] = {"before": records[0]["before"], "after": records[0]["after"]}
        else:
            out["groupings"][name] = records
    return out


def _embeddings_block(vectors: np.ndarray, frame: pd.DataFrame, codes, layouts, s: AuditSettings,
                      source: str) -> tuple[dict, dict]:
    rows = emb.subsample(len(vectors), s.seed)
    x = vectors[rows]
    race = codes["race"][0][rows]
    out = {"n": int(len(rows)), "n_total": int(len(vectors)), "dim": int(vectors.shape[1]), "source": source,
           "subsampled": bool(len(rows) < len(vectors)), "tsne": None}
    tables = {}
    if s.tsne and len(rows) >= 5:
        coords, info = emb.tsne(x, s.seed)
        info["settings"]["subsampled"] = out["subsampled"]
        out["tsne"] = {"file": "tsne.csv", **info}
        tables["tsne"] = pd.DataFrame({"image_id": frame["image_id"].to_numpy()[rows], "x": coords[:, 0],
                                       "y": coords[:, 1], "race": frame["race"].to_numpy()[rows],
                                       "gender": frame["gender"].to_numpy()[rows],
                                       "age_band": frame["age_band"].to_numpy()[rows]})
    sil = emb.silhouette_values(x, race)
    race_names = codes["race"][1]
    mean, lo, hi, n = emb.mean_interval(sil, np.zeros(len(sil), dtype=np.int64), 1, n_boot=s.n_boot, ci=s.ci, seed=s.seed)
    out["silhouette"] = {"label": "race", "overall": stat(mean[0], (lo[0], hi[0]), n[0]), "by_group": []}
    mean, lo, hi, n = emb.mean_interval(sil, race, len(race_names), n_boot=s.n_boot, ci=s.ci, seed=s.seed)
    rows_out = []
    for g in np.flatnonzero(n):
        out["silhouette"]["by_group"].append({"key": race_names[g], "n": int(n[g]),
                                              "value": stat(mean[g], (lo[g], hi[g]), n[g])})
        rows_out.append({"grouping": "race", "group": race_names[g], "measure": "silhouette", "n": int(n[g]),
                         "value": mean[g], "lo": lo[g], "hi": hi[g]})
    purity = emb.knn_purity(x, race, s.knn_k)
    out["knn_purity"] = {"k": s.knn_k, "label": "race", "groupings": {}}
    for name, (code, size, labels) in layouts.items():
        mean, lo, hi, n = emb.mean_interval(purity, code[rows], size, n_boot=s.n_boot, ci=s.ci, seed=s.seed)
        records = []
        for g in np.flatnonzero(n):
            key = GROUP_SEPARATOR.join(labels[g].values()) if name != "all" else "all"
            too_small = bool(name != "all" and n[g] < s.min_group_size)
            records.append({"key": key, "values": labels[g], "n": int(n[g]), "too_small": too_small,
                            "purity": stat(mean[g], (lo[g], hi[g]), n[g])})
            rows_out.append({"grouping": name, "group": key, "measure": "knn_purity", "n": int(n[g]),
                             "value": mean[g], "lo": lo[g], "hi": hi[g]})
        if name == "all":
            out["knn_purity"]["overall"] = records[0]["purity"]
        else:
            out["knn_purity"]["groupings"][name] = records
    tables["embedding_groups"] = pd.DataFrame(rows_out)
    return out, tables
