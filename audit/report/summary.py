"""``summary.md``: at most 60 lines to paste into a review comment (verdict, gates, worst groups with CIs)."""

from __future__ import annotations

from .findings import findings
from .formatting import fmt_stat, group_label, points

#: The review-comment budget the issue sets.
MAX_LINES = 60


def _md(text: object) -> str:
    """Neutralise Markdown/HTML in untrusted strings (model names, group keys) for a review comment."""
    out = str(text).replace("\\", "\\\\")
    for char in "`*_[]<>|#":
        out = out.replace(char, "\\" + char)
    return out.replace("\n", " ")


def summary_markdown(result, *, worst: int = 5) -> str:
    """The summary's text, trimmed to :data:`MAX_LINES` lines."""
    gates = result.gates
    status = gates["status"].upper() if gates else "NOT GATED"
    lines = [f"## faceaudit: {_md(result.model.get('name'))} — {status}", "",
             f"Overall accuracy {fmt_stat(result.overall['metrics']['accuracy'])} on {result.overall['n']} "
             f"{_md(result.data.get('split', 'test'))} images; {int(100 * result.settings.get('ci', 0.95))}% bootstrap CIs "
             f"({result.settings.get('n_boot')} resamples). Backbone: {_md(result.model.get('backbone') or 'not recorded')}; "
             f"run {_md(str(result.model.get('run_hash') or '')[:12] or 'not recorded')}.", ""]
    if result.model.get("synthetic") or result.data.get("synthetic"):
        lines += ["**Synthetic data: these numbers say nothing about real faces.**", ""]
    if gates:
        lines += ["### Gates", "", "| gate | status | result |", "|---|---|---|"]
        for gate in gates.get("results", [])[:12]:
            lines.append(f"| {_md(gate.get('name'))} | **{gate['status']}** | {_md(gate.get('message', ''))} |")
        lines.append("")
    else:
        lines += ["No gates were set (`--gates gates.toml` gives pass / fail / inconclusive).", ""]
    lines += ["### Findings", ""]
    lines += [f"{i}. {_md(f.text)}" for i, f in enumerate(findings(result), 1)]
    lines += ["", "### Worst groups (accuracy, ranked groups only)", "",
              "| grouping | group | n | accuracy [CI] | vs overall |", "|---|---|---:|---:|---:|"]
    for grouping in ("race", "gender", "age_band", "race×gender", "race×gender×age_band"):
        records = [r for r in result.groupings.get(grouping, {}).get("groups", []) if not r["too_small"]
                   and r["metrics"]["accuracy"].get("value") is not None]
        records.sort(key=lambda r: r["metrics"]["accuracy"]["value"])
        take = 1 if grouping in ("gender",) else (3 if grouping == "race×gender×age_band" else 2)
        for record in records[:take]:
            lines.append(f"| {group_label(grouping)} | {_md(record['key'])} | {record['n']} | "
                         f"{fmt_stat(record['metrics']['accuracy'])} | {points((record.get('vs_overall') or {}).get('accuracy'))} |")
    calibration = result.calibration
    if calibration:
        lines += ["", f"Calibration: ECE {fmt_stat(calibration['overall']['ece'])} overall"
                  + (f"; after temperature scaling (T = {calibration['temperature']['temperature']:.2f}) "
                     f"{fmt_stat(calibration['temperature']['overall']['after']['ece'])}."
                     if calibration.get("temperature") else ".")]
    small = [r for r in result.groupings.get("race×gender×age_band", {}).get("groups", []) if r["too_small"]]
    if small:
        lines += ["", f"{len(small)} race × gender × age-band groups have fewer than "
                  f"{result.settings.get('min_group_size', 30)} images and are not ranked."]
    lines += ["", "Full report: `report.html` / `report.pdf`; numbers: `audit.json`, `group_metrics.csv`."]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + ["(truncated: see report.html)"]
    return "\n".join(lines) + "\n"
