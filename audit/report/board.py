"""The board: one self-contained HTML page over every audit under a folder, to compare models side by side.

Each audit's model, backbone, date, data fingerprint, gates, overall and worst-group accuracy with intervals (MAE
for an age regressor), its lead grouping's groups side by side across models, and, for a model audited several
times, the trend over its audits. Every table sorts by its column heads (templates/tables.js); each row links to its
audit's report.html. An audit.json that cannot be read is listed with the reason, never a crash.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from faceaudit.auditing.result import AUDIT_FILE, AuditResult, load_audit
from faceaudit.auditing.verdict import NOT_GATED
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write
from faceaudit.templates.layout import Section, render_document

from .formatting import (
    disparity_of,
    fmt_level,
    fmt_stat,
    group_label,
    group_of,
    groups_of,
    main_grouping,
    plural,
    plural_word,
)

BOARD_HTML = "board.html"
REPORT_HTML = "report.html"
#: Board-only styles on top of templates/base.css: wider tables and the trend charts.
_CSS = """
.layout { max-width: 1500px; }
td.date { white-space: nowrap; }
td.status-pass, td.status-fail, td.status-inconclusive, td.status-not-gated { white-space: nowrap; }
td.status-pass { color: var(--pass); font-weight: 600; }
td.status-fail { color: var(--fail); font-weight: 600; }
td.status-inconclusive { color: var(--undecided); font-weight: 600; }
td.status-not-gated { color: var(--warn); font-style: italic; }
.trend { break-inside: avoid; }
.trend svg { border: 1px solid var(--line); background: #fff; max-width: 100%; height: auto; }
.trend svg text { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 11px; fill: var(--ink); }
.trend svg .axis { stroke: var(--line); }
.trend svg .overall { stroke: var(--pass); fill: var(--pass); }
.trend svg .worst { stroke: var(--fail); fill: var(--fail); }
.trend svg .line { fill: none; stroke-width: 2; }
.trend svg .worst.line { stroke-dasharray: 5 3; }
.trend svg .whisker { stroke-width: 1.5; }
ul.skipped li { overflow-wrap: anywhere; }
"""


@dataclass(frozen=True)
class Cell:
    """One board table cell: display text, its sort key (a number, or text), a CSS class, a tooltip, a link."""

    text: str
    sort: str | None = None
    css: str = ""
    title: str = ""
    href: str | None = None


@dataclass
class BoardTable:
    """A sortable table: column heads (``numeric`` ones right-aligned) and rows of cells."""

    id: str
    columns: list[str]
    caption: str
    numeric: set[int] = field(default_factory=set)
    rows: list[list[Cell]] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    """One readable audit: where it lies (``name``: its folder relative to the folder scanned) and what it found."""

    name: str
    folder: Path
    result: AuditResult

    @property
    def model(self) -> str:
        return str(self.result.model.get("name") or Path(self.name).name or "unnamed model")

    @property
    def backbone(self) -> str:
        return str(self.result.model.get("backbone") or "not recorded")

    @property
    def target(self) -> str:
        """What the model predicts, as the audit's label schema names it (``race``, ``gender``, ``age``)."""
        schema = self.result.taxonomy
        return schema.label(schema.target)

    @property
    def date(self) -> str:
        """When the audit ran, as audit.json records it (``created_utc``, ISO 8601 in UTC)."""
        return str(self.result.created_utc or "")

    @property
    def status(self) -> str:
        """``pass``, ``fail``, ``inconclusive``, or ``not gated`` when the audit had no gates."""
        return str(self.result.status)

    @property
    def metric(self) -> str:
        """The headline metric: accuracy for a classifier, mean absolute error for an age regressor."""
        return "mae" if self.result.is_regression else "accuracy"

    @property
    def report(self) -> Path | None:
        path = self.folder / REPORT_HTML
        return path if path.is_file() else None


@dataclass(frozen=True)
class Skipped:
    """An audit.json the board could not read, and why (one line)."""

    name: str
    reason: str


@dataclass
class Collection:
    """What was found under ``root``: readable audits (by model, then date) and the files skipped."""

    root: Path
    entries: list[Entry]
    skipped: list[Skipped]


def find_audits(root: str | Path) -> Collection:
    """Every ``audit.json`` under ``root`` (recursively; hidden folders, such as a command's half-built output, are
    left out), read with :func:`load_audit`; one that cannot be read is kept as a :class:`Skipped` with the reason."""
    root = Path(root)
    if not root.exists():
        raise FaceauditError(f"{root} does not exist")
    if not root.is_dir():
        raise FaceauditError(f"{root} is not a folder: give the folder that holds the audits")
    entries, skipped = [], []
    for folder, subfolders, names in os.walk(root, onerror=None, followlinks=False):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if AUDIT_FILE not in names:
            continue
        here = Path(folder)
        name = here.relative_to(root).as_posix()
        try:
            entries.append(Entry(name, here.resolve(), load_audit(here / AUDIT_FILE)))
        except FaceauditError as exc:
            skipped.append(Skipped(name, _reason(str(exc), here / AUDIT_FILE)))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            skipped.append(Skipped(name, f"{type(exc).__name__}: {_reason(str(exc), here / AUDIT_FILE)}"))
    entries.sort(key=lambda e: (e.model.lower(), e.date, e.name))
    return Collection(root, entries, skipped)


def _reason(message: str, path: Path) -> str:
    """The first line of an error, naming the file ``audit.json`` (the board lists its folder beside it)."""
    line = (message.strip().splitlines() or ["unreadable"])[0]
    return line.replace(str(path), AUDIT_FILE)[:300]


# -- cells -----------------------------------------------------------------------------------------------------------


def _stat_cell(stat, metric: str, *, css: str = "") -> Cell:
    """``83.1% [80.2, 85.9]`` (accuracy) or ``6.91 [6.61, 7.22]`` (MAE in years), sorted by its value."""
    value = None if stat is None else stat.value
    if metric == "mae":
        text = fmt_stat(stat, percent=False, digits=2)
    else:
        text = fmt_stat(stat)
    return Cell(text, "" if value is None else repr(float(value)), css)


def _date_cell(entry: Entry) -> Cell:
    """``2026-06-20 08:45`` (UTC, as the column head says), sorted by the full timestamp."""
    date = entry.date
    if not date:
        return Cell("not recorded", "")
    return Cell(date.replace("T", " ")[:16], date, "date", date)


def _status_cell(entry: Entry) -> Cell:
    status = entry.status
    gates = entry.result.gates
    title = "" if gates is None else "; ".join(r.message for r in gates.results)[:500]
    text = status.upper() if status != NOT_GATED else "not gated"
    if gates is not None and gates.results:
        text += f" ({plural(len(gates.results), 'gate')})"
    return Cell(text, status, f"status-{status.replace(' ', '-')}", title)


def _fingerprint_cell(entry: Entry) -> Cell:
    fingerprint = entry.result.data.get("fingerprint")
    if not fingerprint:
        return Cell("not recorded", "")
    source = entry.result.data.get("source")
    where = f" ({Path(str(source)).name})" if source else ""
    return Cell(str(fingerprint)[:8] + "…", str(fingerprint), "", f"data fingerprint {fingerprint}{where}")


def _link_cell(entry: Entry, links_from: Path) -> Cell:
    report = entry.report
    if report is None:
        return Cell("no report", "no report")
    relative = Path(os.path.relpath(report, links_from)).as_posix()
    return Cell("report", "report", href=quote(relative), title=relative)


def _worst(entry: Entry) -> tuple[Cell, Cell]:
    """The worst ranked group of the audit's lead grouping, and its headline metric with its interval."""
    grouping = main_grouping(entry.result.taxonomy)
    disparity = disparity_of(entry.result, grouping, entry.metric)
    worst = disparity.worst if disparity is not None else None
    group = group_of(entry.result, grouping, worst)
    if group is None:
        return Cell("–", ""), _stat_cell(None, entry.metric)
    many = plural_word(group_label(grouping))
    label = f"{worst} (of {disparity.n_ranked} {many})" if disparity.n_ranked else f"{worst} ({group_label(grouping)})"
    return Cell(label, label.lower()), _stat_cell(group.metrics.get(entry.metric), entry.metric)


# -- tables ----------------------------------------------------------------------------------------------------------


def _audits_table(entries: Sequence[Entry], links_from: Path, *, regression: bool, table_id: str) -> BoardTable:
    """One row per audit: who, when, on what data, gates, the headline metric and the worst group's. The target and
    confidence-level columns are shown only when the audits differ in them (else the caption says the level)."""
    metric_name = "MAE (years)" if regression else "Overall accuracy"
    worst_name = "Worst-group MAE" if regression else "Worst-group accuracy"
    levels = {entry.result.level for entry in entries}
    caption = ("One row per audit. " + ("Mean absolute error of the predicted age (lower is better); the worst group "
                                        "has the highest MAE. " if regression else
                                        "The worst group is the lowest-accuracy group large enough to judge in the "
                                        "audit's lead grouping. ") +
               (f"Intervals at {fmt_level(next(iter(levels)))}" if len(levels) == 1 else
                "Intervals at each audit's confidence level") + "; click a column head to sort.")
    table = BoardTable(table_id, ["Model", "Backbone", "Target", "Audit folder", "Date (UTC)", "Data fingerprint",
                                  "Test faces", "Gates", metric_name, "Worst group", worst_name, "CI level", "Report"],
                       caption, numeric={6, 8, 10, 11})
    for entry in entries:
        result = entry.result
        worst, worst_value = _worst(entry)
        n = result.overall.n
        table.rows.append([
            Cell(entry.model, entry.model.lower()), Cell(entry.backbone, entry.backbone.lower()),
            Cell(entry.target, entry.target), Cell(entry.name, entry.name.lower()), _date_cell(entry),
            _fingerprint_cell(entry), Cell(f"{n:,}", str(n)), _status_cell(entry),
            _stat_cell(result.overall.metrics.get(entry.metric), entry.metric), worst, worst_value,
            Cell(fmt_level(result.level), repr(result.level)), _link_cell(entry, links_from)])
    if len(levels) == 1:
        _drop_column(table, "CI level")
    if len({entry.target for entry in entries}) == 1:
        _drop_column(table, "Target")
    return table


def _drop_column(table: BoardTable, name: str) -> None:
    """Remove one column (head, cells, and its place among the numeric ones)."""
    index = table.columns.index(name)
    del table.columns[index]
    for row in table.rows:
        del row[index]
    table.numeric = {i - (i > index) for i in table.numeric if i != index}


def _per_group_tables(entries: Sequence[Entry], links_from: Path, *,
                      regression: bool) -> list[tuple[str, BoardTable]]:
    """For each lead grouping (race for UTKFace's race classifiers), one row per audit and one column per group."""
    by_grouping: dict[str, list[Entry]] = {}
    for entry in entries:
        by_grouping.setdefault(main_grouping(entry.result.taxonomy), []).append(entry)
    tables = []
    for index, (grouping, members) in enumerate(by_grouping.items()):
        keys: list[str] = []
        for entry in members:
            keys += [g.key for g in groups_of(entry.result, grouping) if g.key not in keys]
        label = group_label(grouping)
        what = "MAE in years (lower is better)" if regression else "accuracy"
        table = BoardTable(f"{'mae' if regression else 'accuracy'}-by-{index}",
                           ["Model", "Date (UTC)", *keys, "Report"],
                           f"{what[:1].upper()}{what[1:]} [interval] per {label}, one row per audit, one column per "
                           f"{label}; grey italic cells are groups too small to judge, a dash a group the audit lacks.",
                           numeric=set(range(2, 2 + len(keys))))
        for entry in members:
            cells = [Cell(entry.model, entry.model.lower(), title=f"audit folder {entry.name}"), _date_cell(entry)]
            for key in keys:
                group = group_of(entry.result, grouping, key)
                stat = group.metrics.get(entry.metric) if group is not None else None
                cells.append(_stat_cell(stat, entry.metric, css="small" if group is not None and group.too_small
                                        else ""))
            cells.append(_link_cell(entry, links_from))
            table.rows.append(cells)
        tables.append((label, table))
    return tables


@dataclass
class TrendChart:
    """A small line chart of one model's audits over time: overall and worst group, each with its interval."""

    title: str
    width: int
    height: int
    x: list[float]
    labels: list[str]
    overall: list[tuple[float, float, float] | None]  # (y, y_lo, y_hi) in pixels
    worst: list[tuple[float, float, float] | None]
    ticks: list[tuple[float, str]]
    left: int
    right: int
    top: int
    bottom: int


def _trend_chart(model: str, runs: Sequence[Entry]) -> TrendChart:
    """Overall and worst-group accuracy (MAE) per audit, oldest first, as pixel coordinates for the SVG template."""
    width, height, left, right, top, bottom = 560, 220, 52, 16, 14, 44
    metric = runs[0].metric
    scale = 1.0 if metric == "mae" else 100.0
    series = []
    for entry in runs:
        overall = entry.result.overall.metrics.get(metric)
        grouping = main_grouping(entry.result.taxonomy)
        disparity = disparity_of(entry.result, grouping, metric)
        group = group_of(entry.result, grouping, disparity.worst if disparity is not None else None)
        series.append((overall, group.metrics.get(metric) if group is not None else None))
    values = [scale * v for pair in series for s in pair if s is not None and s.value is not None
              for v in (s.value, *(s.interval or ()))]
    low, high, tick = _nice_axis(min(values, default=0.0), max(values, default=scale),
                                 ceiling=None if metric == "mae" else 100.0)
    span = high - low

    def y(value: float) -> float:
        return round(top + (height - top - bottom) * (high - scale * value) / span, 1)

    def point(stat) -> tuple[float, float, float] | None:
        if stat is None or stat.value is None:
            return None
        lo, hi = stat.interval or (stat.value, stat.value)
        return y(stat.value), y(lo), y(hi)

    n = len(runs)
    step = (width - left - right) / max(n, 1)
    xs = [round(left + step * (i + 0.5), 1) for i in range(n)]
    count = round(span / tick)
    ticks = [(y((low + tick * k) / scale), f"{low + tick * k:g}") for k in range(count + 1)]
    what = "MAE (years)" if metric == "mae" else "accuracy (%)"
    return TrendChart(f"{model}: overall and worst-group {what} per audit, oldest first", width, height, xs,
                      [(e.date[:10] or "no date") for e in runs], [point(o) for o, _ in series],
                      [point(w) for _, w in series], ticks, left, right, top, bottom)


def _nice_axis(low: float, high: float, *, ceiling: float | None) -> tuple[float, float, float]:
    """An axis from ``low`` to ``high`` widened to round steps (1, 2, 2.5 or 5 times a power of ten, 3 to 6 of them),
    never below zero nor above ``ceiling``: ``(bottom, top, step)``."""
    import math

    if high - low < 1e-9:
        low, high = low - 1.0, high + 1.0
    for step in sorted(m * 10.0 ** e for e in range(-2, 4) for m in (1, 2, 2.5, 5)):
        bottom, top = math.floor(low / step) * step, math.ceil(high / step) * step
        if (top - bottom) / step <= 6:
            break
    bottom = max(0.0, bottom)
    top = min(ceiling, top) if ceiling is not None else top
    return bottom, top, step


def _trends(entries: Sequence[Entry], links_from: Path) -> list[dict]:
    """One trend per model audited more than once (same model name and task): a chart and its table."""
    by_model: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        by_model.setdefault((entry.model, entry.result.task), []).append(entry)
    trends = []
    for index, ((model, _), runs) in enumerate((k, v) for k, v in by_model.items() if len(v) > 1):
        runs = sorted(runs, key=lambda e: (e.date, e.name))
        regression = runs[0].result.is_regression
        table = BoardTable(f"trend-{index}", ["Date (UTC)", "Audit folder", "Data fingerprint", "Gates",
                                              "MAE (years)" if regression else "Overall accuracy", "Worst group",
                                              "Worst-group MAE" if regression else "Worst-group accuracy", "Report"],
                           f"{model}: {plural(len(runs), 'audit')}, oldest first.", numeric={4, 6})
        for entry in runs:
            worst, worst_value = _worst(entry)
            table.rows.append([_date_cell(entry), Cell(entry.name, entry.name.lower()),
                               _fingerprint_cell(entry), _status_cell(entry),
                               _stat_cell(entry.result.overall.metrics.get(entry.metric), entry.metric), worst,
                               worst_value, _link_cell(entry, links_from)])
        trends.append({"model": model, "chart": _trend_chart(model, runs), "table": table,
                       "regression": regression})
    return trends


# -- the page --------------------------------------------------------------------------------------------------------


def board_sections(collection: Collection, links_from: Path) -> list[Section]:
    """The board's sections: classifiers, their groups side by side, age regressors, trends, skipped files."""
    links_from = Path(links_from).resolve()
    sections = []
    for regression, key, title, groups_key, groups_title in (
            (False, "classifiers", "Classifier audits", "groups", "Accuracy per group, side by side"),
            (True, "regressors", "Age-regressor audits", "regressor-groups", "Age MAE per group, side by side")):
        entries = [e for e in collection.entries if e.result.is_regression == regression]
        if not entries:
            continue
        sections.append(Section(key, title, "board/audits.html", {
            "table": _audits_table(entries, links_from, regression=regression, table_id=f"{key}-table"),
            "models": len({e.model for e in entries})}))
        sections.append(Section(groups_key, groups_title, "board/groups.html", {
            "tables": _per_group_tables(entries, links_from, regression=regression)}))
    trends = _trends(collection.entries, links_from)
    sections.append(Section("trends", "Models audited several times", "board/trends.html", {"trends": trends}))
    sections.append(Section("skipped", "Files skipped", "board/skipped.html", {"skipped": collection.skipped}))
    return sections


def render_board(collection: Collection, links_from: Path, *, root_label: str | None = None) -> str:
    """The board's self-contained HTML; report links are relative to ``links_from`` (the folder it will live in)."""
    root = root_label or collection.root.as_posix()
    models = len({e.model for e in collection.entries})
    subtitle = (f"{plural(len(collection.entries), 'audit')} of {plural(models, 'model')} found under {root}"
                + (f"; {len(collection.skipped)} audit.json skipped" if collection.skipped else ""))
    dates = sorted(e.date for e in collection.entries if e.date)
    meta = [("Folder", root), ("Audits", str(len(collection.entries))), ("Models", str(models))]
    if dates:
        meta.append(("Audited", f"{dates[0][:10]} to {dates[-1][:10]}"))
    return render_document(f"Audit board: {root}", board_sections(collection, links_from),
                           running_header=f"faceaudit board · {root}", subtitle=subtitle, meta=meta, extra_css=_CSS)


def require_audits(collection: Collection) -> Collection:
    """``collection`` when it holds at least one readable audit; else one line saying what was (not) found."""
    root = collection.root
    if not collection.entries:
        if collection.skipped:
            first = collection.skipped[0]
            raise FaceauditError(f"none of the {len(collection.skipped)} audit.json files under {root} could be "
                                 f"read ({first.name or '.'}/audit.json: {first.reason})")
        raise FaceauditError(f"no audits under {root}: no audit.json in it or its subfolders (faceaudit audit "
                             f"... --out FOLDER writes one)")
    return collection


def write_board(source: str | Path | Collection, out_dir: str | Path, *, links_from: str | Path | None = None,
                root_label: str | None = None) -> tuple[Path, Collection]:
    """Write ``board.html`` for every audit under ``source`` (a folder, or what :func:`find_audits` found there)
    into ``out_dir``; report links are relative to ``links_from`` (default ``out_dir``: pass the final folder when
    ``out_dir`` is a folder built aside). Refuses a folder with no audit, or none readable, in one line."""
    collection = require_audits(source if isinstance(source, Collection) else find_audits(source))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = render_board(collection, Path(links_from or out_dir), root_label=root_label)
    return atomic_write(out_dir / BOARD_HTML, html), collection
