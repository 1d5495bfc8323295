"""One audit folder -> report.html, report.pdf and summary.md next to its audit.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from faceaudit.auditing.comparison import audit_predictions
from faceaudit.auditing.result import AuditResult, load_audit
from faceaudit.console import step
from faceaudit.files import atomic_write
from faceaudit.templates.layout import render_document, write_pdf

from . import age_sections, sections
from .findings import TOO_SMALL, too_small_to_judge
from .formatting import schema_of, series_label, target_label
from .history import History, load_history
from .summary import summary_markdown

log = logging.getLogger(__name__)

REPORT_HTML, REPORT_PDF, SUMMARY_MD = "report.html", "report.pdf", "summary.md"
#: Shown under the title (screen and PDF page 1) when the audited data or model is synthetic.
SYNTHETIC_BANNER = ("Synthetic data: these faces are generated, so every number here exercises the pipeline and "
                    "says nothing about how the model treats real people.")


def load_predictions(audit_dir: Path, result: AuditResult | None = None, *, sample: bool = True
                     ) -> pd.DataFrame | None:
    """The audit's predictions table (``files.predictions``, default predictions.csv), or None when absent; with
    ``sample``, a streamed audit's sample of rows (``files.predictions_sample``) stands in for it."""
    return audit_predictions(Path(audit_dir), result, sample=sample)


def find_history(result: AuditResult, audit_dir: Path) -> tuple[History | None, str]:
    """The run's history.json when audit.json names a run folder that has one, and a sentence saying what was found."""
    model = result.model
    if model.get("kind") != "run" or not model.get("source"):
        given = {"predictions": "a predictions table", "keras": "a .keras model file", "h5": "a legacy Keras .h5 file",
                 "savedmodel": "a TensorFlow SavedModel", "tflite": "a TFLite model", "onnx": "an ONNX model"}.get(
            str(model.get("kind")), f"a {model.get('kind', 'model')}")
        return None, f"No training curves: the audit was given {given}, not a faceaudit run folder with history.json."
    source = Path(str(model["source"]))
    candidates = [source] if source.is_absolute() else [Path.cwd() / source, audit_dir / source]
    for folder in candidates:
        path = folder / "history.json"
        if path.is_file():
            history = load_history(path, name=str(model.get("name") or folder.name))
            return history, f"From history.json in the run folder {folder.resolve().name}."
    return None, f"No training curves: no history.json in the run folder {source.name or source}."


def _subtitle(result: AuditResult) -> str:
    """``Race classification on 4741 test faces, broken down by race, gender and age band``."""
    schema = schema_of(result)
    target = target_label(schema)
    return (f"{target[:1].upper()}{target[1:]} classification on {result.overall.n} "
            f"{result.data.get('split', 'test')} faces, broken down by {series_label(schema.label(g) for g in schema.groups)}")


def _regression_parts(result: AuditResult, predictions, thumbnails: bool, audit_dir: Path, history, history_note: str,
                      home: Path | None) -> list:
    """An age regressor's sections (each built when called): no confusion matrices, calibration or embeddings."""
    return [lambda: sections.verdict_section(result), lambda: age_sections.model_card_section(result),
            lambda: sections.data_section(result), lambda: age_sections.metrics_section(result, predictions),
            lambda: age_sections.gallery_section(result, predictions, thumbnails, audit_dir),
            lambda: sections.training_section(history, history_note),
            lambda: age_sections.reproducibility_section(result, Path(home) if home else audit_dir)]


def report_sections(result: AuditResult, audit_dir: Path, *, thumbnails: bool = True,
                    home: Path | None = None, progress: bool = False) -> list:
    """The report's sections, in order, for the audit ``result`` read from ``audit_dir``; ``progress`` shows their
    figures being drawn as a console step."""
    predictions = load_predictions(audit_dir, result)
    history, history_note = find_history(result, audit_dir)
    if result.is_regression:
        builders = _regression_parts(result, predictions, thumbnails, audit_dir, history, history_note, home)
    else:
        builders = [
            lambda: sections.verdict_section(result), lambda: sections.model_card_section(result),
            lambda: sections.data_section(result), lambda: sections.metrics_section(result),
            lambda: sections.confusion_section(result), lambda: sections.calibration_section(result),
            lambda: sections.embeddings_section(result, audit_dir),
            lambda: sections.gallery_section(result, predictions, thumbnails, audit_dir),
            lambda: sections.training_section(history, history_note),
            lambda: sections.reproducibility_section(result, Path(home) if home else audit_dir),
        ]
    parts = []
    with step("figures", total=len(builders), unit="section", enabled=progress,
              detail=f"{len(builders)} report sections") as bar:
        for build in builders:
            parts.append(build())
            bar.update()
    return parts


def render_report(audit_dir: Path, *, thumbnails: bool = True, pdf: bool = True,
                  out_dir: Path | None = None, timings: dict | None = None, home: Path | None = None,
                  progress: bool = False) -> list[Path]:
    """Write report.html, report.pdf and summary.md for the audit in ``audit_dir``; returns the paths written.
    ``home`` is the folder the audit will live in when it is rendered in a temporary folder first (the report's
    re-render command names it); ``progress`` shows the figures and the PDF as console steps."""
    audit_path = Path(audit_dir)
    audit_dir = audit_path if audit_path.is_dir() else audit_path.parent
    timings = timings if timings is not None else {}
    start = time.perf_counter()
    result = load_audit(audit_path)
    out_dir = Path(out_dir) if out_dir else audit_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = report_sections(result, audit_dir, thumbnails=thumbnails, home=home, progress=progress)
    timings["sections_s"] = time.perf_counter() - start
    name = str(result.model.get("name") or "model")
    date = (result.created_utc or "")[:10]
    status = result.gates.status if result.gates is not None else None
    too_small = too_small_to_judge(result)
    html = render_document(
        f"Fairness audit: {name}", parts,
        running_header=f"faceaudit · {name} · {date}" + (f" · gates {status}" if status else "")
                       + (f" · {TOO_SMALL.lower()}" if too_small else ""),
        subtitle=age_sections.age_subtitle(result) if result.is_regression else _subtitle(result),
        meta=[("Backbone", str(result.model.get("backbone") or "not recorded")),
              ("Audited", result.created_utc or "unknown"),
              *([("Verdict", TOO_SMALL)] if too_small else []),
              ("Gates", status.upper() if status else "not gated")],
        banner=SYNTHETIC_BANNER if result.model.get("synthetic") or result.data.get("synthetic") else "")
    written = [atomic_write(out_dir / REPORT_HTML, html)]
    timings["html_s"] = time.perf_counter() - start
    if pdf:
        pdf_start = time.perf_counter()
        with step("PDF", detail=REPORT_PDF, enabled=progress):  # WeasyPrint reports nothing: the bar shows the time
            written.append(write_pdf(html, out_dir / REPORT_PDF))
        timings["pdf_s"] = time.perf_counter() - pdf_start
    written.append(atomic_write(out_dir / SUMMARY_MD, summary_markdown(result)))
    timings["total_s"] = time.perf_counter() - start
    return written
