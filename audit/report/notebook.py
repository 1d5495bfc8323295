"""The notebook view of an audit result (``_repr_html_``): who it was, how it did overall, the gates, and the
target's groups with their intervals, in a few lines of plain HTML (no figures, no scripts)."""

from __future__ import annotations

from html import escape

from .formatting import fmt_level, fmt_stat


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th style='text-align:left'>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def result_html(result) -> str:
    """A summary of an :class:`~faceaudit.auditing.result.AuditResult` for Jupyter."""
    if getattr(result, "is_regression", False):
        return _regression_html(result)
    schema = result.taxonomy
    overall = result.overall.metrics["accuracy"]
    level = fmt_level(result.settings.level)
    parts = [f"<div class='faceaudit-result'><strong>faceaudit audit of {escape(str(result.model.get('name')))}"
             f"</strong> &mdash; {escape(schema.target)} classifier, {len(schema.classes)} classes, "
             f"{result.overall.n:,} test images",
             f"<p>Accuracy {escape(fmt_stat(overall))} ({level} interval){_gates_html(result)}</p>"]
    grouping = schema.target if schema.target in result.groupings else next(iter(result.groupings), None)
    if grouping is not None:
        rows = [[record.key, f"{record.n:,}", fmt_stat(record.metrics["accuracy"]),
                 "too small to rank" if record.too_small else ""]
                for record in result.grouping(grouping).groups]
        label = schema.label(grouping)
        parts.append(_table(rows, [label, "n", f"accuracy [{level}]", ""]))
    for warning in result.warnings:
        parts.append(f"<p style='color:#a33'>&#9888; {escape(warning)}</p>")
    parts.append("<p><code>.by_group(grouping, metric)</code> for any grouping; <code>.report(out)</code> for "
                 "the full report.</p></div>")
    return "".join(parts)


def result_repr(result) -> str:
    """A few plain lines for ``repr(result)``: the model, its overall score, the gates, where it was written (the
    full record is ``result.to_dict()``; the dataclass's own repr would print every group, hundreds of kB)."""
    name = str(result.model.get("name") or "model")
    what = "age regressor" if getattr(result, "is_regression", False) else \
        f"{result.taxonomy.target} classifier, {len(result.classes)} classes"
    if getattr(result, "is_regression", False):
        from .age_findings import overall_line

        score = overall_line(result)
    else:
        score = f"accuracy {fmt_stat(result.overall.metrics.get('accuracy'))}"
    lines = [f"<AuditResult {name!r}: {what}, {result.overall.n:,} test images>", f"  {score}"]
    if result.gates:
        lines.append(f"  gates {result.gates.status.upper()} ({result.gates.counts_text()})")
    else:
        lines.append("  not gated")
    lines.append(f"  groupings: {', '.join(list(result.groupings)[:6])}{' …' if len(result.groupings) > 6 else ''}")
    if result.warnings:
        lines.append(f"  {len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}: "
                     f"{str(result.warnings[0])[:160]}")
    if result.folder is not None:
        lines.append(f"  folder: {result.folder}")
    lines.append("  .by_group(grouping, metric) for a table; .report(out) for the full report")
    text = "\n".join(lines)
    return text if len(text) < 1900 else text[:1899] + "…"


def _gates_html(result) -> str:
    if not result.gates:
        return "; <strong>not gated</strong>"
    return (f"; gates <strong>{escape(result.gates.status.upper())}</strong> "
            f"({escape(result.gates.counts_text())})")


def _regression_html(result) -> str:
    """An age regressor's summary: overall MAE, bias and share within ±5 years, then each lead group's."""
    from .age_findings import metric_text, overall_line
    from .formatting import main_grouping

    schema = result.taxonomy
    level = fmt_level(result.settings.level)
    parts = [f"<div class='faceaudit-result'><strong>faceaudit audit of {escape(str(result.model.get('name')))}"
             f"</strong> &mdash; age regressor, {result.overall.n:,} test images",
             f"<p>{escape(overall_line(result))} ({level} intervals){_gates_html(result)}</p>"]
    grouping = main_grouping(schema)
    if grouping in result.groupings:
        rows = [[record.key, f"{record.n:,}",
                 *(metric_text(m, record.metrics.get(m)) for m in ("mae", "bias", "within5")),
                 "too small to rank" if record.too_small else ""]
                for record in result.grouping(grouping).groups]
        parts.append(_table(rows, [schema.label(grouping), "n", f"MAE [{level}]", f"bias [{level}]",
                                   f"within ±5 years [{level}]", ""]))
    for warning in result.warnings:
        parts.append(f"<p style='color:#a33'>&#9888; {escape(warning)}</p>")
    parts.append("<p><code>.by_group(grouping, 'mae')</code> (or <code>'bias'</code>, <code>'within5'</code>) for any "
                 "grouping; <code>.report(out)</code> for the full report.</p></div>")
    return "".join(parts)
