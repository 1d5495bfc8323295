"""The audit report's ten sections: each turns part of ``audit.json`` into tables, figures and sentences."""

from __future__ import annotations

import platform
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from faceaudit.auditing.metrics import METRIC_LABELS
from faceaudit.auditing.types import Calibration, Disparity, GateResult, Group, PurityGroup, Stat, Temperature
from faceaudit.taxonomy import AGE_BAND
from faceaudit.templates.layout import Cell, Section, Table, file_name

from . import charts
from .curves import training_curves_figure
from .findings import TOO_SMALL, findings, headline, too_small_to_judge
from .formatting import (
    compound_label,
    direction_css,
    excludes_zero,
    finest_grouping,
    fmt_level,
    fmt_p,
    fmt_stat,
    group_label,
    grouping_key,
    groups_of,
    level_number,
    main_grouping,
    pair_grouping,
    pct,
    plural,
    plural_word,
    points,
    ranks,
    schema_of,
    split_attribute,
    stat_value,
    target_label,
    temperature_text,
)
from .gallery import error_gallery
from .history import History

#: Rows of the worst intersectional groups shown in the report (all of them are in group_metrics.csv).
WORST_INTERSECTIONS = 15


def _status_css(status: str) -> str:
    return {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive"}.get(status, "")


def _threshold_text(gate: GateResult) -> str:
    """A gate's threshold in the report's units: a proportion's bound in %, its gap in points (``25 pts``); other
    thresholds as written."""
    from faceaudit.auditing.gates import PROPORTION_METRICS

    threshold, rule = gate.threshold, gate.rule
    if gate.metric not in PROPORTION_METRICS or rule not in ("min", "max", "max_gap"):
        return f"{threshold:g}"  # a count reads 30, not 30.0
    return f"{100 * threshold:g} pts" if rule == "max_gap" else f"{100 * threshold:g}%"


def verdict_section(result) -> Section:
    gates = result.gates
    rows = Table(["Gate", "Rule", "Status", "Result"], caption="Release gates; a gate passes only when its whole "
                 "confidence interval is on the right side of the threshold.")
    if gates:
        for gate in gates.results:
            rule = f"{gate.metric} by {group_label(gate.grouping)}: {gate.rule} {_threshold_text(gate)}"
            rows.add(gate.name, rule, Cell(gate.status.upper(), _status_css(gate.status)), gate.message)
    if result.taxonomy.regression:  # an age regressor: errors in years, its own findings
        from .age_findings import overall_line, regression_findings

        lead = ("Age estimation", overall_line(result), "An overall error hides whom the model misjudges",
                " --target age", regression_findings(result))
    else:
        lead = ("Overall accuracy", fmt_stat(result.overall.metrics["accuracy"]),
                "An overall number hides who the model fails", "", findings(result))
    what, overall, hides, target_flag, found = lead
    from faceaudit.auditing.verdict import Status

    from .vs_baseline import report_table

    gated = result.status != Status.NOT_GATED
    return Section("verdict", "Verdict", "report/verdict.html", {
        "status": result.status if gated else None, "counts": gates.counts_text() if gated else "",
        "baseline": report_table(result),
        "baseline_unclear": result.baseline.unclear if result.baseline is not None else 0,
        "too_small": TOO_SMALL if too_small_to_judge(result) else None, "headline": headline(result),
        "gates": rows, "findings": [f.text for f in found], "warnings": result.warnings,
        "overall": overall, "n": result.overall.n, "what": what, "hides": hides, "target_flag": target_flag})


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


#: Readable labels for the run record's dotted keys in the model card's training table.
TRAINING_LABELS = {
    "seed": "Seed", "image_size": "Image size (pixels)", "n_train": "Training images", "n_val": "Validation images",
    "data.source": "Training data", "data.fingerprint": "Data fingerprint", "data.manifest_sha256": "Data manifest SHA-256",
    "data.synthetic": "Synthetic data", "data.split_sizes.train": "Training images",
    "data.split_sizes.val": "Validation images", "data.split_sizes.test": "Test images", "data.split_seed_note": "Split",
}
#: Labels of the per-phase fields (``phases.<name>.<field>``).
PHASE_LABELS = {"epochs": "epochs planned", "epochs_run": "epochs run", "lr": "learning rate", "label": "what it trains"}


def _training_label(key: str) -> str:
    """``data.split_sizes.train`` -> ``Training images``, ``phases.freeze.epochs_run`` -> ``Freeze phase: epochs
    run``; an unknown key is spelled out (``data.foo_bar`` -> ``Data: foo bar``)."""
    if key in TRAINING_LABELS:
        return TRAINING_LABELS[key]
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "phases":
        field = PHASE_LABELS.get(parts[2], parts[2].replace("_", " "))
        return f"{parts[1][:1].upper()}{parts[1][1:]} phase: {field}"
    text = ": ".join(p.replace("_", " ") for p in parts)
    return text[:1].upper() + text[1:]


def _training_value(key: str, value: str) -> str:
    """Yes/no for flags, thousands separators for counts, file names without the machine's folders."""
    if value in ("True", "False"):
        return "yes" if value == "True" else "no"
    if value.isdigit() and not key.endswith("seed"):
        return f"{int(value):,}"
    if key.endswith("source"):
        return file_name(value)
    return value


def model_card_section(result) -> Section:
    model, data, run = result.model, result.data, result.model.get("run") or {}
    weights = run.get("weights") or run.get("pretrained") or run.get("init")
    # An ensemble's members and a mitigation's biases have rows of their own (_composition_facts), not these.
    plain = {k: v for k, v in run.items() if k not in ("ensemble", "mitigation")}
    training = [(_training_label(k), _training_value(k, v)) for k, v in _scalar_items(plain)
                if any(w in k.lower() for w in ("data", "split", "fingerprint", "n_train", "n_val", "seed", "epoch", "image_size"))]
    facts = [("Model", model.get("name", "")), ("Kind", model.get("kind", "")),
             ("Backbone", model.get("backbone") or "not recorded"),
             ("Weights", file_name(weights) if weights else "not recorded"),
             ("Run hash", model.get("run_hash") or "not recorded"),
             ("Evaluated on", f"{data.get('n')} {data.get('split', 'test')} images from {file_name(data.get('source'))}"),
             ("Synthetic data", "yes — numbers say nothing about real faces" if model.get("synthetic") or data.get("synthetic") else "no"),
             *_composition_facts(run), *_contract_facts(model), *_output_facts(model)]
    return Section("model-card", "Model card", "report/model_card.html", {
        "facts": facts, "training": training, "run_recorded": bool(run), **_taxonomy_context(result)})


def _composition_facts(run: dict) -> list[tuple[str, str]]:
    """Model-card rows for an ensemble's members and a mitigation's biases, as run.json records them."""
    facts = []
    ensemble, mitigation = run.get("ensemble"), run.get("mitigation")
    if isinstance(ensemble, dict) and isinstance(ensemble.get("members"), list):
        members = [m for m in ensemble["members"] if isinstance(m, dict)]
        combiner = ensemble.get("combiner") if isinstance(ensemble.get("combiner"), dict) else {}
        facts.append(("Ensemble", f"{combiner.get('chosen', 'combined')} of {len(members)} runs: " + ", ".join(
            f"{m.get('name')} ({m.get('backbone')})" for m in members)))
    if isinstance(mitigation, dict):
        bias = mitigation.get("bias") if isinstance(mitigation.get("bias"), dict) else {}
        source = mitigation.get("source_run") if isinstance(mitigation.get("source_run"), dict) else {}
        shifts = ", ".join(f"{c} {b:+.2f}" for c, b in bias.items() if isinstance(b, (int, float)))
        facts.append(("Mitigation", f"{mitigation.get('method')} of run {source.get('name')}, per-class biases "
                                    f"fitted on its {mitigation.get('fitted_on', 'validation split')}: {shifts}"))
    return facts


def output_steps(model: dict) -> list[str]:
    """Everything faceaudit did to the model's outputs, one sentence each, for the console's ``note:`` lines, the
    model card and summary.md: a contract's steps as recorded (``model.steps``), else what the runtime recorded of
    a model run without one (softmax over logits, renormalised probabilities, output units mapped to classes)."""
    if model.get("steps"):
        return [str(step) for step in model["steps"]]
    runtime = model.get("runtime") if isinstance(model.get("runtime"), dict) else {}
    steps = []
    if runtime.get("softmax_applied"):
        steps.append(f"softmax applied to output {runtime.get('output') or ''}".rstrip() + ": its values were "
                     "logits, not probabilities (they did not lie in [0, 1] summing to 1)")
    if runtime.get("renormalised"):
        steps.append("probabilities renormalised to sum to 1 (the model's rows drifted from 1)")
    return steps


def _output_facts(model: dict) -> list[tuple[str, str]]:
    """The model card's row for what was done to a model's outputs when it ran without a contract."""
    if isinstance(model.get("contract"), dict):
        return []  # the contract's own rows say it
    steps = output_steps(model)
    return [("Output read", "; ".join(steps))] if steps else []


def _contract_facts(model: dict) -> list[tuple[str, str]]:
    """Model-card rows for a model run through a contract (model.toml): how its input was made, what was done to its
    outputs, where it comes from and what it was trained on."""
    contract = model.get("contract")
    if not isinstance(contract, dict):
        return []
    runtime = model.get("runtime") or {}
    spec = contract.get("input") or {}
    facts = [("Contract", file_name(contract.get("path")) if contract.get("path") else "given in Python"),
             ("Input", f"{runtime.get('input_size')} px, {runtime.get('channels')}, scaling {spec.get('scaling')}, "
                       f"{runtime.get('layout', 'NHWC')}, resized {runtime.get('resize')}")]
    steps = model.get("steps") or []
    facts.append(("Output read", "; ".join(steps) if steps else "as declared (no conversion)"))
    provenance = contract.get("provenance") or {}
    for key, label in (("source", "Source"), ("licence", "Licence"), ("trained_on", "Trained on")):
        if provenance.get(key):
            facts.append((label, str(provenance[key])))
    sanity = model.get("sanity") or {}
    if sanity:
        facts.append(("Contract checks", "ok: no check fired" if sanity.get("status") == "ok" else
                      "SUSPECT: " + "; ".join(c.get("message", "") for c in sanity.get("checks") or [])))
    return facts


#: How the model card names a preset schema's data set.
DATASET_NAMES = {"utkface": "UTKFace", "fairface7": "FairFace", "fairface4": "FairFace"}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def _taxonomy_context(result) -> dict:
    """What the model card's use and limitation notes need to know about the labels (the predicted attribute,
    its classes, a catch-all class, a binary gender label)."""
    schema = schema_of(result)
    names = {a.name: a for a in schema.attributes}
    gender = names.get("gender")
    return {"classes": result.classes, "target": target_label(schema), "social": schema.target in ("race", "gender"),
            "dataset": DATASET_NAMES.get(schema.name, "The data set"),
            "n_classes": NUMBER_WORDS.get(len(result.classes), str(len(result.classes))),
            "catch_all": next((c for c in result.classes if c.lower() in ("others", "other")), None),
            "binary_gender": gender is not None and len(gender.values) == 2}


def _count_table(result, schema, minimum: int) -> Table:
    """Test images per finest group: one row per combination of the grouping attributes other than the age band
    (race × gender, for UTKFace), one column per age band when the audit groups by age."""
    finest = finest_grouping(schema)
    cube = groups_of(result, finest)
    row_attrs = [g for g in schema.groups if g != AGE_BAND]
    by_band = AGE_BAND in schema.groups
    bands = [r.key for r in groups_of(result, AGE_BAND)] if by_band else []
    heads = [schema.label(a)[:1].upper() + schema.label(a)[1:] for a in row_attrs] or ["Group"]
    table = Table([*heads, *bands, "Total"], numeric=set(range(len(heads), len(heads) + len(bands) + 1)),
                  caption=f"Test images per {schema.label(finest)}. Italic grey: fewer than {minimum} images, too "
                          "small to judge (shown, never ranked).")
    cells: dict[tuple[str, ...], dict[str, int]] = {}
    for record in cube if by_band else []:
        v = record.values
        cells.setdefault(tuple(v[a] for a in row_attrs), {})[v[AGE_BAND]] = record.n
    rows = groups_of(result, grouping_key(schema, *row_attrs)) if row_attrs else []
    for record in rows:
        values = tuple(record.values[a] for a in row_attrs)
        counts = cells.get(values, {})
        row = [Cell(str(counts.get(b, 0)), "small" if counts.get(b, 0) < minimum else "") for b in bands]
        table.add(*values, *row, Cell(str(record.n), "small" if record.too_small else ""))
    totals = [str(r.n) for r in groups_of(result, AGE_BAND)] if by_band else []
    table.add(Cell("All", "pass"), *[""] * (len(heads) - 1), *totals, str(result.overall.n))
    return table


def data_section(result) -> Section:
    schema, minimum = schema_of(result), result.settings.min_group_size
    cube = groups_of(result, finest_grouping(schema))
    n_small = sum(1 for r in cube if r.too_small)
    return Section("data", "The evaluated data", "report/data.html", {
        "table": _count_table(result, schema, minimum), "n": result.overall.n, "n_small": n_small,
        "n_cells": len(cube), "minimum": minimum, "cube_label": compound_label(schema, finest_grouping(schema)),
        "data": result.data, "counts": result.data.get("counts", {}), "source": file_name(result.data.get("source"))})


#: How the overall table names each metric's interval (``settings.intervals`` has the full description);
#: ``{target}`` is the predicted attribute.
INTERVAL_NAMES = {"accuracy": "Clopper–Pearson", "balanced_accuracy": "MOVER", "macro_f1": "per-{target} bounds averaged"}
#: Symbols beside a significant vs-rest difference, so the direction never rests on colour alone.
DIRECTION_MARKS = {"fail": "\u25bc ", "pass": "\u25b2 "}
#: Column heads shared by the per-group tables.
VS_REST_COLUMNS = ("vs rest, pts [Bonferroni CI]", "p (Holm)")


def _wrap(text: str, css: str = "", title: str = "") -> Cell:
    """A number cell that may break between the value and its interval (never inside the interval), so wide
    per-group tables fit an A4 page."""
    return Cell(text.replace(", ", ",\u00a0").replace(" / ", "\u00a0/ "), f"wrap {css}".strip(), title)


def _label(metric: str) -> str:
    """A metric's report label with a capital first letter (``macro-F1`` -> ``Macro-F1``)."""
    label = METRIC_LABELS.get(metric, metric)
    return label[:1].upper() + label[1:]


def _vs_rest_cells(record: Group) -> list[Cell]:
    """A group's accuracy minus the rest's (adjusted interval) and its Holm p-value; coloured only when significant."""
    diff = (record.vs_rest or {}).get("accuracy")
    if not diff:
        return [Cell("–"), Cell("–")]
    title = f"{diff.test or ''}; interval at the {diff.level} level over {diff.family} groups"
    css = direction_css(diff)
    mark = DIRECTION_MARKS.get(css, "")
    return [_wrap(mark + points(diff, unit=""), css, title), Cell(fmt_p(diff.p_holm, short=True), css)]


def _share(rates: dict) -> Cell:
    """Selection rate against true share: ``36.8% / 40.8%`` (how often the class is predicted vs how common it is)."""
    return _wrap(f"{pct(stat_value(rates.get('selection_rate')))} / {pct(stat_value(rates.get('true_share')))}")


def _rates_cells(rates: dict, recall: str) -> list[Cell]:
    """Recall [CI], FNR, precision [CI], FPR [CI] of one class (``recall`` names the key: recall or accuracy)."""
    return [_wrap(fmt_stat(rates.get(recall))), Cell(pct(stat_value(rates.get("fnr")))),
            _wrap(fmt_stat(rates.get("precision"))), _wrap(fmt_stat(rates.get("fpr")))]


def _missing_note(result, grouping: str) -> str:
    missing = result.groupings[grouping].missing
    if not missing:
        return ""
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    return f" No test images (not shown): {shown}."


def _rest_caption(result, grouping: str) -> str:
    """How to read the vs-rest columns of one grouping's table."""
    groups = result.groupings[grouping].groups
    family = next(((r.vs_rest or {}).get("accuracy", Stat()).family for r in groups if not r.too_small), 0)
    small = f" Italic grey: fewer than {result.settings.min_group_size} faces, never ranked."
    if not family:
        return (" 'vs rest': accuracy minus that of every other test face, in points; no group is large enough to be "
                "tested, so none is called better or worse." + small)
    return (f" 'vs rest': accuracy minus that of every other test face, in points, with an interval adjusted "
            f"(Bonferroni) for the {plural(family, 'ranked group')} compared; coloured only when the "
            f"Holm-adjusted p < {1 - result.settings.level:.2g} and that interval excludes 0, and marked "
            f"{DIRECTION_MARKS['fail'].strip()} (worse, orange) or {DIRECTION_MARKS['pass'].strip()} (better, blue). "
            "The two adjustments differ on purpose: Holm's step-down p is less strict than Bonferroni for all but the "
            "smallest p, so a p below the level can sit beside an interval that spans 0; such a group is not marked."
            + small)


def _class_table(result, grouping: str, caption: str, records: list[Group] | None = None) -> Table:
    """Single-class groups (one race each, for UTKFace): the class's rates within the group's context, and accuracy
    against the rest."""
    table = Table(["Group", "n", "Accuracy (recall) [CI]", "FNR", "Precision [CI]", "FPR [CI]",
                   "Selected / true share", *VS_REST_COLUMNS], numeric=set(range(1, 9)), caption=caption, sortable=True)
    for record in records if records is not None else result.groupings[grouping].groups:
        table.add(record.key, record.n, *_rates_cells(record.metrics, "accuracy"), _share(record.metrics),
                  *_vs_rest_cells(record), css="small" if record.too_small else "")
    return table


def _mixed_table(result, grouping: str, caption: str, records: list[Group] | None = None) -> Table:
    """Groups in which the true class varies: accuracy, balanced accuracy, macro-F1, and accuracy against the rest."""
    table = Table(["Group", "n", "Accuracy [CI]", "Balanced acc. [CI]", "Macro-F1 [CI]", *VS_REST_COLUMNS],
                  numeric=set(range(1, 7)), caption=caption, sortable=True)
    for record in records if records is not None else result.groupings[grouping].groups:
        m = record.metrics
        table.add(record.key, record.n, *(_wrap(fmt_stat(m.get(k))) for k in ("accuracy", "balanced_accuracy",
                  "macro_f1")), *_vs_rest_cells(record), css="small" if record.too_small else "")
    return table


def _class_caption(result, grouping: str) -> str:
    context = result.groupings[grouping].context or "all"
    within = "the whole test set" if context == "all" else f"the group's {group_label(context)}"
    target = target_label(schema_of(result))
    return (f"By {group_label(grouping)}. Each group's {target} is scored within {within}: accuracy is the recall "
            f"of that {target}'s faces (FNR = 1 − recall), precision is over the faces predicted as that {target}, "
            f"FPR over the faces of other {plural_word(target)}, and 'selected / true share' compares how often the "
            f"{target} is predicted with how common it is. Balanced accuracy and macro-F1 are not shown: every face "
            f"of a single-{target} group has the same true label, so they would only repeat the recall."
            + _rest_caption(result, grouping)
            + _missing_note(result, grouping))


def _group_table(result, grouping: str) -> Table:
    """The table of a grouping, by its kind (single-class groups or mixed groups)."""
    if result.groupings[grouping].kind == "class":
        return _class_table(result, grouping, _class_caption(result, grouping))
    return _mixed_table(result, grouping, f"By {group_label(grouping)}." + _rest_caption(result, grouping)
                        + _missing_note(result, grouping))


def disparity_text(label: str, d: Disparity | None) -> str:
    """One metric's worst-vs-best line: the groups, how many they were picked from, the adjusted difference, gap,
    ratio and the test that all groups are equal."""
    if not ranks(d):
        return f"{label}: fewer than two groups are large enough to rank" + _too_small_note((d and d.too_small) or [])
    text = (f"{label}: worst {d.worst}, best {d.best}, of {plural(d.n_ranked, 'ranked group')}; "
            f"worst − best {points(d.difference)} ({d.adjustment or 'adjusted for every pair'}); "
            f"gap {points(d.gap, signed=False)}; ratio {fmt_stat(d.ratio, percent=False)}")
    omnibus = d.omnibus or {}
    if omnibus.get("p_value") is not None:
        text += f"; all groups equal: {fmt_p(omnibus['p_value'])} ({omnibus.get('method')})"
    return text + _too_small_note(d.too_small or [])


def _disparity_lines(result, grouping: str) -> list[str]:
    """Every disparity the audit computed for a grouping, one line each."""
    disparities = result.groupings[grouping].disparities
    if disparities and all(d is None or (d.n_ranked or 0) < 2 for d in disparities.values()):
        return [disparity_text("Worst and best", next(iter(disparities.values())))]
    return [disparity_text(_label(m), d) for m, d in disparities.items()]


def _too_small_note(keys: list[str]) -> str:
    if not keys:
        return "."
    if len(keys) > 6:
        return f" ({len(keys)} more groups are too small to rank; see the data section)."
    return f" ({len(keys)} too small: {', '.join(keys)})."


def _overall_table(result) -> Table:
    table = Table(["Metric", "Value [CI]", "n", "Interval"], numeric={1, 2}, caption="All test images.")
    for name, stat in result.overall.metrics.items():
        table.add(_label(name), fmt_stat(stat), stat.n or result.overall.n,
                  INTERVAL_NAMES.get(name, "").format(target=target_label(schema_of(result))))
    return table


def _per_class_table(result) -> Table:
    target = target_label(schema_of(result))
    table = Table([f"True {target}", "Support", "Recall [CI]", "FNR", "Precision [CI]", "FPR [CI]", "F1 [CI]",
                   "Selected / true share"], numeric=set(range(1, 8)),
                  caption=f"Per {target} over all test images: recall = accuracy on that {target}'s faces, FNR = 1 − "
                          f"recall, precision over the faces predicted as that {target}, FPR over the faces of other "
                          f"{plural_word(target)}; 'selected / true share': how often the {target} is predicted "
                          "against how common it is.")
    for name, rates in (result.overall.per_class or {}).items():
        table.add(name, rates["support"], *_rates_cells(rates, "recall"), _wrap(fmt_stat(rates.get("f1"))), _share(rates),
                  css="small" if not rates["support"] else "")
    return table


def _worst_intersections(result, grouping: str | None = None):
    """The least accurate ranked groups of the finest intersection (race × gender × age band, for UTKFace), as
    (title, table, lines), or None when the audit has no intersection."""
    grouping = grouping or finest_grouping(schema_of(result))
    cube = result.groupings.get(grouping)
    if cube is None or len(cube.attributes) < 2:
        return None
    ranked = [r for r in cube.groups if not r.too_small]
    ranked.sort(key=lambda r: (r.metrics["accuracy"].value is None, r.metrics["accuracy"].value or 0))
    caption = (f"The {min(WORST_INTERSECTIONS, len(ranked))} least accurate of {len(ranked)} {group_label(grouping)} "
               f"groups large enough to judge ({len(cube.groups) - len(ranked)} more are too small); every group is "
               "in group_metrics.csv. Sorted by point estimate: only the vs-rest columns say whether a group is worse "
               "than the rest beyond sampling noise." + _rest_caption(result, grouping) + _missing_note(result, grouping))
    table = _class_table if cube.kind == "class" else _mixed_table
    return (f"{group_label(grouping)}: the least accurate groups",
            table(result, grouping, caption, records=ranked[:WORST_INTERSECTIONS]), _disparity_lines(result, grouping))


def metrics_section(result) -> Section:
    schema = schema_of(result)
    tables = [(group_label(g), _group_table(result, g), _disparity_lines(result, g))
              for g in schema.groups if g in result.groupings]
    pair = pair_grouping(schema)
    inter = [(group_label(g), _group_table(result, g), _disparity_lines(result, g))
             for g in (pair,) if g in result.groupings and g != finest_grouping(schema)]
    worst = _worst_intersections(result)
    return Section("metrics", "Overall and per-group metrics", "report/metrics.html", {
        "overall": _overall_table(result), "per_class": _per_class_table(result), "tables": tables,
        "intersections": inter + ([worst] if worst else []), "target": target_label(schema),
        "targets": plural_word(target_label(schema)), "single_class": schema.target in schema.groups,
        "contexts": " or ".join(schema.label(g) for g in schema.groups if g != schema.target),
        "forest": charts.accuracy_forest(result), "heatmap": charts.intersection_heatmap(result),
        "ci": level_number(result.settings.level), "alpha": round(1 - result.settings.level, 6),
        "min_group_size": result.settings.min_group_size})


def confusion_section(result) -> Section:
    schema = schema_of(result)
    by = charts.confusion_rows_by(schema)
    return Section("confusion", "Per-group confusion matrices", "report/confusion.html", {
        "target": target_label(schema), "by": schema.label(by) if by else None,
        "by_split": charts.confusion_by_split(result), "by_class": charts.confusion_by_class(result)})


def _calibration_rows(result, block: Calibration | Temperature, n_overall: int) -> list[tuple[str, Any]]:
    """(grouping label, record) for the whole test set then every group of the main groupings of a calibration block
    (the calibration itself or its temperature-scaling part, whose overall record has no key or n)."""
    overall = block.overall
    rows = [("all", replace(overall, key="all", n=n_overall if overall.n is None else overall.n, too_small=False))]
    for grouping in schema_of(result).groups:
        rows += [(group_label(grouping), r) for r in block.groupings.get(grouping, [])]
    return rows


def _mce(stat: Stat | None) -> Cell:
    """MCE with the number of faces in its bin: a bin of a few faces makes a large MCE easy."""
    n = stat.bin_size if stat is not None else None
    return _wrap(fmt_stat(stat, digits=0) + ("" if n is None else f" (bin\u00a0n={n})"))


def _calibration_table(result) -> Table:
    calibration = result.calibration
    table = Table(["Grouping", "Group", "n", "ECE (debiased) [CI]", "MCE [CI] (bin n)", "Brier [CI]", "Log loss [CI]"],
                  numeric={2, 3, 4, 5, 6}, sortable=True,
                  caption=f"Calibration per group over {calibration.n_bins} equal-width confidence bins. "
                          "ECE: debiased estimate, with an interval that bounds the true binned error; MCE: the largest "
                          "bin gap, with that bin's number of faces; Brier and log loss: bootstrap intervals. Italic "
                          "grey: too small to judge.")
    for label, record in _calibration_rows(result, calibration, result.overall.n):
        table.add(label, record.key, record.n, _wrap(fmt_stat(record.ece)), _mce(record.mce),
                  _wrap(fmt_stat(record.brier, percent=False)),
                  _wrap(fmt_stat(record.log_loss, percent=False, digits=2)),
                  css="small" if record.too_small else "")
    return table


def _change_cell(change: Stat | None) -> Cell:
    """ECE after − before, blue ▲ when scaling clearly helped, orange ▼ when it clearly hurt."""
    css = "" if not excludes_zero(change) else "pass" if change.value < 0 else "fail"
    return _wrap(DIRECTION_MARKS.get(css, "") + points(change, unit=""), css)


def _temperature_table(result, temperature: Temperature) -> Table:
    table = Table(["Grouping", "Group", "n", "ECE before [CI]", "ECE after [CI]", "Change, pts [CI]"],
                  numeric={2, 3, 4, 5},
                  caption="ECE (debiased) before and after temperature scaling. The change is computed on the same "
                          "bootstrap resamples before and after, so its interval reflects only the scaling; marked ▲ (blue, "
                          "better calibrated) or ▼ (orange, worse) only when that interval excludes zero.")
    for label, record in _calibration_rows(result, temperature, result.overall.n):
        table.add(label, record.key, record.n, _wrap(fmt_stat(record.before.ece)),
                  _wrap(fmt_stat(record.after.ece)), _change_cell(record.ece_change),
                  css="small" if record.too_small else "")
    return table


def calibration_section(result) -> Section:
    calibration = result.calibration
    if calibration is None:
        return Section("calibration", "Calibration", "report/calibration.html", {"calibration": None})
    temperature = calibration.temperature
    disparities = calibration.disparities
    schema = schema_of(result)
    lines = [disparity_text(f"ECE by {group_label(g)}", disparities[g].get("ece"))
             for g in schema.groups if g in disparities]
    shown = [g for g in (main_grouping(schema), split_attribute(schema)) if g]
    return Section("calibration", "Calibration", "report/calibration.html", {
        "calibration": calibration, "table": _calibration_table(result), "lines": lines, "temperature": temperature,
        "temperature_table": _temperature_table(result, temperature) if temperature else None,
        "t_text": temperature_text(temperature) if temperature else "",
        "reliability": [charts.reliability_diagrams(result, g) for g in shown],
        "effect": charts.temperature_effect(result, shown)})


def embeddings_section(result, audit_dir: Path) -> Section:
    embeddings = result.embeddings
    if embeddings is None:
        return Section("embeddings", "Embedding clusters", "report/embeddings.html", {"embeddings": None})
    tsne = embeddings.tsne
    figure = None
    schema = schema_of(result)
    target = target_label(schema)
    if tsne and (audit_dir / tsne["file"]).is_file():
        frame = pd.read_csv(audit_dir / tsne["file"])
        columns = [c for c in dict.fromkeys((schema.target, *schema.groups)) if c in frame]
        for column in columns:
            frame[column] = frame[column].astype(str)
        figure = charts.tsne_panels(frame, schema, columns) if columns else None
    purity, clusters = embeddings.knn_purity, embeddings.silhouette
    k = purity.k if purity is not None else "?"
    table = Table(["Grouping", "Group", "n", f"kNN {target} purity (k={k}) [CI]", "Silhouette [CI]"],
                  numeric={2, 3, 4}, caption="kNN purity: share of each face's nearest neighbours in embedding space "
                  f"with the same {target} label. Silhouette: how well the {target} clusters separate (−1 to 1), "
                  f"per {target}.")
    by_class = clusters.by_group if clusters is not None else []
    silhouette = {r["key"]: r["value"] for r in by_class}
    table.add("all", "all", embeddings.n, fmt_stat(purity.overall if purity is not None else None),
              fmt_stat(clusters.overall if clusters is not None else None, percent=False, digits=2))
    for grouping in dict.fromkeys((schema.target, *schema.groups)):
        records = purity.groupings.get(grouping, []) if purity is not None else []
        if grouping == schema.target and not records:  # not a grouping: its silhouette per class still shows
            records = [PurityGroup(key=r["key"], n=r.get("n"), too_small=False) for r in by_class]
        for record in records:
            sil = silhouette.get(record.key) if grouping == schema.target else None
            table.add(group_label(grouping), record.key, record.n, fmt_stat(record.purity),
                      fmt_stat(sil, percent=False, digits=2) if sil else "–",
                      css="small" if record.too_small else "")
    return Section("embeddings", "Embedding clusters", "report/embeddings.html", {
        "embeddings": embeddings, "figure": figure, "table": table, "tsne": tsne, "target": target,
        "targets": plural_word(target)})


def gallery_section(result, predictions: pd.DataFrame | None, thumbnails: bool, audit_dir: Path) -> Section:
    schema = schema_of(result)
    groups = None
    if predictions is not None:
        groups = error_gallery(predictions, schema=schema, thumbnails=thumbnails, base_dir=audit_dir)
    streamed = result.data.get("streamed") or {}
    return Section("errors", "Error gallery", "report/gallery.html", {
        "groups": groups, "thumbnails": thumbnails, "target": target_label(schema),
        "sample": streamed if streamed and not streamed.get("exact") else None})


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


def _short_command(command) -> str | None:
    """The recorded command with absolute paths cut to file names (``--data /work/data/UTK.tar.gz`` -> ``--data
    UTK.tar.gz``): the report names files, not the folders of the machine that made it."""
    if not command:
        return command
    import shlex

    try:
        words = shlex.split(str(command))
    except ValueError:
        return str(command)
    return shlex.join(file_name(w) if w.startswith("/") else w for w in words)


def _engine_line(engine: dict | None, streamed: dict | None) -> str:
    """``ray, 2 workers (local); 12 Parquet shards streamed, 100,000,000 rows`` — how the audit was computed."""
    if not engine:
        return "not recorded"
    workers = engine.get("workers") or 1
    line = f"{engine.get('engine')}, {workers} worker{'s' * (workers != 1)}"
    if engine.get("cluster"):
        line += f" ({engine['cluster']})"
    if streamed:
        line += (f"; {streamed['shards']:,} Parquet shard{'s' * (streamed['shards'] != 1)} streamed, "
                 f"{streamed['rows']:,} rows audited" + ("" if streamed.get("exact") else
                                                        f", {streamed['sample_rows']:,}-row sample kept"))
    return line


def _shortened_names(command, short) -> list[str]:
    """The file names in ``short`` that stand for absolute paths of the recorded ``command`` (so the printed command
    reruns only where those files are)."""
    if not command or not short or command == short:
        return []
    import shlex

    try:
        return [file_name(w) for w in shlex.split(str(command)) if w.startswith("/")]
    except ValueError:
        return []


def reproducibility_section(result, audit_dir: Path) -> Section:
    settings = result.settings
    command = settings.command or result.model.get("command") or (result.model.get("run") or {}).get("command")
    rows = [("Audited with", f"faceaudit {result.faceaudit_version or '?'} at {result.created_utc or '?'}"),
            ("Model source", file_name(result.model.get("source"))), ("Model / run hash", str(result.model.get("run_hash"))),
            ("Data source", file_name(result.data.get("source"))), ("Data fingerprint", str(result.data.get("fingerprint"))),
            ("Predictions SHA-256", str(result.data.get("predictions_sha256"))),
            ("Age bands", str(result.data.get("age_bands"))), ("Seed", str(settings.seed)),
            ("Intervals", f"{fmt_level(settings.level)}: Clopper–Pearson, MOVER; bootstrap "
                          f"({settings.n_boot} resamples) for Brier, log loss, ECE change and embeddings"),
            ("Engine", _engine_line(settings.engine, result.data.get("streamed"))),
            ("Minimum group size", str(settings.min_group_size)),
            ("Minimum test size", str(settings.min_test_size)),
            ("Schema", f"audit.json {result.schema_version}")]
    rows = [(key, "not recorded" if value in ("None", "", "null") else value) for key, value in rows]
    versions = [(name, _version(name)) for name in ("faceaudit", "tensorflow", "tensorflow-cpu", "keras",
                                                    "scikit-learn", "fairlearn", "pandas", "numpy", "matplotlib",
                                                    "seaborn", "jinja2", "weasyprint")]
    versions = [("python", platform.python_version())] + [v for v in versions if v[1] != "not installed"]
    files = sorted((k, v) for k, v in (result.files or {}).items() if isinstance(v, str))
    short = _short_command(command)
    return Section("reproducibility", "Reproducibility", "report/reproducibility.html", {
        "command": short, "shortened": _shortened_names(command, short), "rows": rows, "versions": versions,
        "files": files,
        "rerender": f"faceaudit report {Path(audit_dir).resolve().name or audit_dir}"})
