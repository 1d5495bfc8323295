"""The audit's verdict for a review: ``faceaudit summary`` in four forms.

``markdown`` is summary.md (:func:`.summary.summary_markdown`); ``github`` fits a GitHub job summary and a pull-request
comment (a status word, the gates, the worst groups, the longer tables folded in ``<details>``, absolute links to the
report when its URL is known); ``gitlab`` is the same for a GitLab merge-request note (coloured status word);
``json`` is the machine-readable verdict that faceaudit/schemas/summary.schema.json describes. The summary reads; it
never judges again: every verdict comes from audit.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import urlsplit

from faceaudit.auditing.types import BaselineChange, Group, Stat
from faceaudit.auditing.verdict import NOT_GATED, Verdict
from faceaudit.errors import FaceauditError

from .findings import TOO_SMALL, headline, too_small_to_judge
from .formatting import fmt_level, fmt_p, fmt_stat, group_label, main_grouping, pair_grouping, points, schema_of
from .summary import _md, summary_markdown, worst_rows

#: The forms ``faceaudit summary --format`` writes.
FORMATS = ("markdown", "github", "gitlab", "json")
#: Version of the JSON form (faceaudit/schemas/summary.schema.json); a new minor only adds keys.
SUMMARY_SCHEMA_VERSION = "1.0"
#: The status words a reader sees, one per status: clear words, no emoji.
STATUS_WORDS = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", NOT_GATED: "NOT GATED"}
#: The report files a summary links, in order.
REPORT_FILES = (("html", "report.html"), ("pdf", "report.pdf"), ("audit_json", "audit.json"))
#: Gate metrics that are not proportions (shown as plain numbers, not percent).
NOT_PROPORTIONS = ("n", "mae", "bias", "brier", "log_loss")
#: Rows of a folded per-group table at most (a GitHub comment holds 65,536 characters).
MAX_DETAIL_ROWS = 60


@dataclass(frozen=True)
class ReportLinks:
    """Where the rendered report is: the audit folder as given, and optionally the URL it is published under
    (``report_url``: links become ``URL/report.html``) or a CI artifact that holds it (``artifact_url``)."""

    folder: str
    report_url: str | None = None
    artifact_url: str | None = None
    present: frozenset[str] = frozenset()

    def __post_init__(self):
        for option, url in (("--report-url", self.report_url), ("--artifact-url", self.artifact_url)):
            if url is not None:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise FaceauditError(f"{option} must be an absolute http(s) URL (got {url!r})")

    @classmethod
    def of(cls, folder: Path | None, *, report_url: str | None = None,
           artifact_url: str | None = None) -> ReportLinks:
        """The links for an audit folder: only files that are there are linked (an audit run with --no-report
        has no report.html)."""
        present = frozenset(name for _, name in REPORT_FILES if folder is not None and (folder / name).is_file())
        return cls(str(folder) if folder is not None else ".", report_url, artifact_url, present)

    def url(self, name: str) -> str | None:
        """The absolute URL of one report file, or None when no --report-url was given or the file is missing."""
        if self.report_url is None or name not in self.present:
            return None
        return f"{self.report_url.rstrip('/')}/{name}"

    def to_dict(self) -> dict:
        out = {key: self.url(name) for key, name in REPORT_FILES}
        return {"folder": self.folder, **out, "artifact": self.artifact_url,
                "files": [name for _, name in REPORT_FILES if name in self.present]}


# -- the facts every form shares -----------------------------------------------------------------------------------


def status_of(result) -> str:
    """``pass``, ``fail``, ``inconclusive`` or ``not gated``: the audit's status as audit.json states it."""
    return str(result.status)


def _metric(result) -> tuple[str, bool]:
    """The headline metric and whether it is a proportion: accuracy for a classifier, MAE (years) for an age
    regressor."""
    return ("mae", False) if getattr(result, "is_regression", False) else ("accuracy", True)


def _stat(stat: Stat | None) -> dict:
    """A Stat as ``{"value", "ci", "n"}`` (all None without one)."""
    stat = stat or Stat()
    return {"value": stat.value, "ci": stat.ci, "n": stat.n}


def _vs_rest(group: Group, metric: str) -> Stat:
    """A group's difference from the rest of the test set in ``metric`` (an empty Stat when none was computed)."""
    return (group.vs_rest or {}).get(metric) or Stat()


def _groups(result, grouping: str) -> list[Group]:
    found = result.groupings.get(grouping)
    return list(found.groups) if found is not None else []


def _worst(result) -> list[tuple[str, Group]]:
    """The groups summary.md lists as worst, with their grouping: per grouping the least accurate ranked groups at or
    below the rest of the test set (an age regressor: the largest MAE)."""
    if too_small_to_judge(result):
        return []
    metric, proportion = _metric(result)
    rows = []
    for grouping, take in worst_rows(schema_of(result)).items():
        records = [r for r in _groups(result, grouping) if not r.too_small
                   and r.metrics.get(metric) is not None and r.metrics[metric].value is not None]
        if proportion:  # at or below the rest, as summary.md ranks them
            records = [r for r in records if (_vs_rest(r, metric).value or 0) <= 0]
        records.sort(key=lambda r: r.metrics[metric].value * (1 if proportion else -1))
        rows += [(grouping, record) for record in records[:take]]
    return rows


def worst_groups(result) -> list[dict]:
    """The worst groups (:func:`_worst`) as the JSON form's records, with the difference from the rest."""
    metric, _ = _metric(result)
    rows = []
    for grouping, record in _worst(result):
        diff = (record.vs_rest or {}).get(metric)
        rows.append({"grouping": grouping, "group": record.key, "n": record.n, "metric": metric,
                     **{k: v for k, v in _stat(record.metrics[metric]).items() if k != "n"},
                     "vs_rest": None if not diff else {"value": diff.value, "ci": diff.ci, "p_holm": diff.p_holm}})
    return rows


def _gate_records(result) -> list[dict]:
    gates = result.gates
    if gates is None:
        return []
    return [{"name": g.name, "metric": g.metric, "grouping": g.grouping, "rule": g.rule, "threshold": g.threshold,
             "status": str(g.status), "message": g.message, "value": _stat(g.value) if g.value is not None else None,
             "groups": [{"key": x.key, "status": str(x.status), "too_small": bool(x.too_small),
                         **_stat(x.value)} for x in g.groups]}
            for g in gates.results]


def _baseline_record(result) -> dict | None:
    """The audit against its baseline (``AuditResult.baseline``), or None when it had none."""
    base = result.baseline
    if base is None:
        return None
    rows = [{"grouping": r.grouping, "group": r.group,
             "old": _stat(r.old) if r.old is not None else None,
             "new": _stat(r.new) if r.new is not None else None,
             "change": r.change, "ci": r.ci, "p_holm": r.p_holm, "verdict": r.verdict}
            for r in base.rows]
    return {"source": base.source, "model": base.model, "method": base.method,
            "level": base.level, "family": base.family, "better": base.better,
            "worse": base.worse, "reason": base.reason, "changes": rows}


def summary_json(result, links: ReportLinks) -> dict:
    """The machine-readable verdict (faceaudit/schemas/summary.schema.json)."""
    metric, _ = _metric(result)
    gates = result.gates
    overall = result.overall
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "audit_schema_version": result.schema_version,
        "faceaudit_version": result.faceaudit_version or None,
        "created_utc": result.created_utc or None,
        "status": status_of(result),
        "too_small_to_judge": too_small_to_judge(result),
        "model": {"name": result.model.get("name"), "backbone": result.model.get("backbone"),
                  "run_hash": result.model.get("run_hash")},
        "task": result.task,
        "target": schema_of(result).target,
        "synthetic": bool(result.model.get("synthetic") or result.data.get("synthetic")),
        "level": result.settings.level,
        "overall": {"metric": metric, **{k: v for k, v in _stat(overall.metrics.get(metric)).items() if k != "n"},
                    "n": overall.n},
        "gates": None if gates is None else {
            "status": str(gates.status), "inconclusive_policy": gates.inconclusive_policy,
            "counts": {str(k): int(v) for k, v in gates.counts.items()}, "file": gates.file, "junit": gates.junit,
            "results": _gate_records(result)},
        "worst_groups": worst_groups(result),
        "baseline": _baseline_record(result),
        "report": links.to_dict(),
    }


# -- Markdown for a pull request / merge request ------------------------------------------------------------------


def _status_word(status: str, flavour: str) -> str:
    word = STATUS_WORDS.get(status, status.upper())
    if flavour == "gitlab" and status in ("pass", "fail"):  # GitLab's inline diff: green / red
        return "**Status:** {+ " + word + " +}" if status == "pass" else "**Status:** {- " + word + " -}"
    return f"**Status: {word}**"


def _status_reason(result, status: str) -> str:
    gates = result.gates
    if status == NOT_GATED:
        return ("no gates were set, so nothing was judged; `--gates gates.toml` makes the audit pass or fail, and "
                "`--require-gates` makes an ungated audit an error in CI.")
    total = len(gates.results)
    parts = [f"{gates.count(k)} of {total} gates {word}"
             for k, word in ((Verdict.FAIL, "fail"), (Verdict.INCONCLUSIVE, "are inconclusive")) if gates.count(k)]
    text = "; ".join(parts) or f"all {total} gates pass"
    if gates.count(Verdict.INCONCLUSIVE):
        text += (f" (an inconclusive gate {'fails' if gates.inconclusive_policy == 'fail' else 'passes'} the run "
                 f"under --inconclusive {gates.inconclusive_policy})")
    return text + "."


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _details(title: str, body: list[str]) -> list[str]:
    """A collapsed section (GitHub and GitLab both render Markdown inside it after a blank line)."""
    return ["<details>", f"<summary>{escape(title)}</summary>", "", *body, "", "</details>", ""]


def _fmt(stat, proportion: bool) -> str:
    return fmt_stat(stat, percent=proportion, digits=None if proportion else 2)


def _diff(stat, proportion: bool) -> str:
    if not stat:
        return "–"
    return points(stat) if proportion else fmt_stat(stat, percent=False, digits=2, signed=True)


def _gate_value(metric: str, stat: Stat | None) -> str:
    """A gate's value as its metric reads: a count, years, a score, or a proportion in percent."""
    if metric == "n":
        return "–" if stat is None or stat.value is None else f"{stat.value:.0f}"
    if metric in NOT_PROPORTIONS:
        return fmt_stat(stat, percent=False, digits=2 if metric in ("mae", "bias") else 3)
    return fmt_stat(stat)


def _gate_lines(result) -> list[str]:
    records = result.gates.results if result.gates is not None else []
    if not records:
        return []
    rows = [[_md(g.name), f"**{STATUS_WORDS[str(g.status)]}**", _md(g.message)] for g in records]
    lines = ["### Gates", "", *_table(["gate", "verdict", "result"], rows), ""]
    per_group = [[_md(g.name), _md(x.key), _gate_value(g.metric, x.value),
                  STATUS_WORDS[str(x.status)] + (" (too small)" if x.too_small else "")]
                 for g in records for x in g.groups]
    if per_group:
        lines += _details("Gates group by group", _table(["gate", "group", "value [CI]", "verdict"],
                                                         per_group[:MAX_DETAIL_ROWS], {2}))
    return lines


def _worst_lines(result) -> list[str]:
    metric, proportion = _metric(result)
    label = "accuracy" if proportion else "MAE (years)"
    lines = [f"### Worst groups ({label})", ""]
    if too_small_to_judge(result):
        return lines + ["Not listed: the test set is too small to judge.", ""]
    rows = [[group_label(grouping), _md(r.key), str(r.n), _fmt(r.metrics[metric], proportion),
             _diff((r.vs_rest or {}).get(metric), proportion), fmt_p(_vs_rest(r, metric).p_holm, short=True)]
            for grouping, r in _worst(result)]
    if not rows:
        return lines + ["No ranked group is below the rest of the test set.", ""]
    return lines + _table(["grouping", "group", "n", f"{label} [CI]", "vs rest [adj. CI]", "p (Holm)"], rows,
                          {2, 3, 4, 5}) + [""]


def _grouping_details(result) -> list[str]:
    """Every group of the lead grouping, the others and the lead × first-other intersection, folded."""
    metric, proportion = _metric(result)
    schema = schema_of(result)
    names = [main_grouping(schema), *(g for g in schema.groups if g != main_grouping(schema))]
    pair = pair_grouping(schema)
    if pair:
        names.append(pair)
    lines = []
    for grouping in dict.fromkeys(names):
        records = _groups(result, grouping)
        if not records:
            continue
        rows = [[_md(r.key), str(r.n), _fmt(r.metrics.get(metric), proportion)
                 + (" (too small)" if r.too_small else ""),
                 _diff((r.vs_rest or {}).get(metric), proportion),
                 fmt_p(_vs_rest(r, metric).p_holm, short=True)]
                for r in records[:MAX_DETAIL_ROWS]]
        lines += _details(f"{'Accuracy' if proportion else 'MAE'} by {group_label(grouping)} "
                          f"({len(records)} groups)",
                          _table(["group", "n", f"{metric} [CI]", "vs rest [adj. CI]", "p (Holm)"], rows,
                                 {1, 2, 3, 4}))
    return lines


def _baseline_lines(result) -> list[str]:
    base = result.baseline
    if base is None:
        return []
    lines = ["### Against the baseline", "",
             f"Baseline {_md(base.model or 'model')} (from {_md(base.source or 'unknown')}), "
             f"{_md(base.method)} tests, Holm-adjusted over {base.family} tests at {fmt_level(base.level)}: "
             f"**{base.better} better, {base.worse} worse**."
             + (f" Not paired: {_md(base.reason)}." if base.reason else ""), ""]

    def row(r: BaselineChange):
        return [group_label(r.grouping), _md(r.group), fmt_stat(r.old), fmt_stat(r.new),
                points(r.change_stat), fmt_p(r.p_holm, short=True), r.verdict]

    header = ["grouping", "group", "old", "new", "change [CI]", "p (Holm)", "verdict"]
    moved = [row(r) for r in base.rows if r.verdict in ("better", "worse")]
    if moved:
        lines += _table(header, moved[:12], {2, 3, 4, 5}) + [""]
    if base.rows:
        lines += _details(f"Every group against the baseline ({len(base.rows)})",
                          _table(header, [row(r) for r in base.rows[:MAX_DETAIL_ROWS]], {2, 3, 4, 5}))
    return lines


def _link_lines(links: ReportLinks) -> list[str]:
    linked = [f"[{name}]({links.url(name)})" for _, name in REPORT_FILES if links.url(name)]
    if linked:
        return ["Full report: " + " · ".join(linked) + "."]
    if links.artifact_url:
        files = " and ".join(f"`{name}`" for name in ("report.html", "report.pdf") if name in links.present)
        return [f"Full report: {files or 'audit.json'} in the [CI artifact]({links.artifact_url}) "
                f"(folder `{_md(links.folder)}`)."]
    if "report.html" not in links.present:
        return [f"No report was rendered; `faceaudit report {_md(links.folder)}` renders report.html and report.pdf."]
    return [f"Full report: `report.html` and `report.pdf` in `{_md(links.folder)}` where the audit ran "
            "(not linked: no `--report-url` was given)."]


def summary_review(result, links: ReportLinks, flavour: str = "github") -> str:
    """The summary for a GitHub job summary / pull-request comment (``github``) or a GitLab merge-request note
    (``gitlab``)."""
    if flavour not in ("github", "gitlab"):
        raise FaceauditError(f"flavour must be github or gitlab (got {flavour!r})")
    metric, proportion = _metric(result)
    status = status_of(result)
    lines = [f"## faceaudit: {_md(result.model.get('name'))}", "",
             f"{_status_word(status, flavour)} — {_status_reason(result, status)}", ""]
    if too_small_to_judge(result):
        lines += [f"**{TOO_SMALL}**: no gate can pass and no finding is drawn.", ""]
    overall = result.overall
    lines += [f"Overall {'accuracy' if proportion else 'MAE'} {_fmt(overall.metrics.get(metric), proportion)} on "
              f"{overall.n:,} {_md(result.data.get('split', 'test'))} images ({fmt_level(result.settings.level)} "
              "intervals).", ""]
    if result.model.get("synthetic") or result.data.get("synthetic"):
        lines += ["**Synthetic data: these numbers say nothing about real faces.**", ""]
    lines += [line for text in headline(result) for line in (f"> {_md(text)}", "")]
    lines += _gate_lines(result) + _baseline_lines(result) + _worst_lines(result) + _grouping_details(result)
    lines += _link_lines(links)
    return "\n".join(lines) + "\n"


def render_summary(result, fmt: str, links: ReportLinks) -> str:
    """The summary of an audit in one of :data:`FORMATS`, as text."""
    if fmt == "markdown":
        return summary_markdown(result)
    if fmt in ("github", "gitlab"):
        return summary_review(result, links, fmt)
    if fmt == "json":
        return json.dumps(summary_json(result, links), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    raise FaceauditError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
