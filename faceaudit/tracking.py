"""Log an audit to an MLflow run (``faceaudit[mlflow]``): its numbers as metrics, its gates as tags, its files as
artifacts, so a team's experiment tracker holds the audit beside the model's training runs.

Metric names (MLflow accepts letters, digits, ``_ - . /`` and spaces; faceaudit uses no ``/`` or ``:``), with each
interval's bounds as ``<name>.lower`` and ``<name>.upper``:

- ``accuracy``, ``balanced_accuracy``, ``macro_f1`` (an age audit: ``mae``, ``bias``, ``within5``), ``n``: overall;
- ``<metric>.<grouping>.<group>`` and ``n.<grouping>.<group>``, e.g. ``accuracy.race.Black``,
  ``accuracy.race_x_gender.Black_x_Female``;
- ``ece``, ``mce``, ``brier``, ``log_loss`` overall and ``ece.<grouping>.<group>`` per group;
- ``gap.<metric>.<grouping>``: best group minus worst group, with the adjusted interval the gates judge;
- with ``--baseline``: ``baseline.better``, ``baseline.worse`` (groups clearly better or worse) and the accuracy
  change (new - old) with its simultaneous interval, ``change.accuracy`` overall and
  ``change.accuracy.<grouping>.<group>``.

Names are sanitized deterministically: `` × `` (and ``×``) becomes ``_x_``, any other character MLflow refuses (or
``:``, refused on Windows) becomes ``_``; a name that then collides with an earlier one gets ``_2``, ``_3`` ... in
audit.json's order; a name over MLflow's 250 characters is cut and ends with a hash of the full name. A statistic
without a value (a group too small to compute it) is left out. Parameters: model, data fingerprint, level, n_boot,
seed and a few more; tags: ``faceaudit.status`` (pass, fail, inconclusive or not gated) and
``faceaudit.gate.<gate name>`` per gate; artifacts: audit.json, its tables and, when rendered, report.html,
report.pdf and summary.md (also the run's description).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from faceaudit.errors import FaceauditError
from faceaudit.validation import InvalidParameterError, PathLike, Text, validate_params

if TYPE_CHECKING:
    from faceaudit.auditing.result import AuditResult
    from faceaudit.auditing.types import Stat

#: The experiment an audit is logged to unless told otherwise.
DEFAULT_EXPERIMENT = "faceaudit"
#: MLflow's HTTP settings while faceaudit logs, unless the environment sets them: an unreachable server fails in
#: seconds (MLflow's own defaults retry 7 times with backoff, two minutes each).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
#: MLflow's limits: characters in a metric, param or tag name; entries per log_batch call.
MAX_NAME, MAX_METRICS_PER_BATCH, MAX_TAGS_PER_BATCH, MAX_PARAM_VALUE, MAX_TAG_VALUE = 250, 1000, 100, 6000, 8000
#: The report's files, logged when present beside audit.json.
REPORT_FILES = ("report.html", "report.pdf", "summary.md")
#: Calibration statistics logged overall, and per group (fewer: a run of thousands of metrics is slow to browse).
CALIBRATION_METRICS, GROUP_CALIBRATION_METRICS = ("ece", "mce", "brier", "log_loss"), ("ece",)

#: Connection failures worded by requests/urllib3, the most specific first.
_UNREACHABLE = ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                "No route to host", "Network is unreachable", "timed out", "Failed to establish a new connection",
                "Connection aborted", "Connection reset")
_TIMES = re.compile(r"\s*×\s*")
_REFUSED = re.compile(r"[^\w.\- ]")


def sanitize(part: str) -> str:
    """One component of a metric or tag name as MLflow accepts it: ``race×gender`` -> ``race_x_gender``,
    ``White × 20-29`` -> ``White_x_20-29``, ``60+`` -> ``60_``."""
    return _REFUSED.sub("_", _TIMES.sub("_x_", str(part)))


class _Names:
    """Sanitized, unique names in the order they are asked for (see the module's naming rules)."""

    def __init__(self) -> None:
        self.taken: dict[str, str] = {}  # sanitized name -> original

    def __call__(self, *parts: str) -> str:
        original = ".".join(str(p) for p in parts)
        name = ".".join(sanitize(p) for p in parts)
        if len(name) > MAX_NAME:
            digest = hashlib.sha256(original.encode()).hexdigest()[:10]
            name = f"{name[:MAX_NAME - 11]}_{digest}"
        base, k = name, 1
        while name in self.taken and self.taken[name] != original:
            k += 1
            suffix = f"_{k}"
            name = base[:MAX_NAME - len(suffix)] + suffix
        self.taken[name] = original
        return name


def _stat(metrics: dict[str, float], name: str, value: Stat | None) -> None:
    """A statistic as ``name`` and its bounds ``name.lower``, ``name.upper``."""
    if value is None or value.value is None:
        return
    metrics[name] = float(value.value)
    for bound, number in zip(("lower", "upper"), value.ci or ()):
        if number is not None:
            metrics[f"{name}.{bound}"] = float(number)


def audit_metrics(audit: AuditResult) -> dict[str, float]:
    """Every number logged for an audit result, by metric name."""
    names, metrics = _Names(), {}

    def add(value: Stat | None, *parts: str) -> None:
        if value is not None and value.value is not None:
            _stat(metrics, names(*parts), value)

    overall = audit.overall
    for metric, value in overall.metrics.items():
        add(value, metric)
    metrics[names("n")] = float(overall.n)
    for grouping, block in audit.groupings.items():
        for group in block.groups:
            for metric, value in group.metrics.items():
                add(value, metric, grouping, group.key)
            metrics[names("n", grouping, group.key)] = float(group.n)
        for metric, disparity in block.disparities.items():
            add(disparity.gap if disparity is not None else None, "gap", metric, grouping)
    calibration = audit.calibration
    if calibration is not None:
        for metric in CALIBRATION_METRICS:
            add(getattr(calibration.overall, metric) if calibration.overall is not None else None, metric)
        for grouping, groups in calibration.groupings.items():
            for group in groups:
                for metric in GROUP_CALIBRATION_METRICS:
                    add(getattr(group, metric), metric, grouping, group.key)
        for grouping, block in calibration.disparities.items():
            for metric, disparity in block.items():
                add(disparity.gap if disparity is not None else None, "gap", metric, grouping)
    baseline = audit.baseline
    if baseline is not None:
        for count in ("better", "worse"):
            metrics[names("baseline", count)] = float(getattr(baseline, count))
        for row in baseline.rows:
            where = () if row.grouping == "overall" else (row.grouping, row.group)
            add(row.change_stat, "change", "accuracy", *where)
    return metrics


def audit_tags(audit: AuditResult, summary: str | None = None) -> dict[str, str]:
    """The run's tags: the overall status, each gate's status, what was audited; the summary as its description."""
    names = _Names()
    tags = {"faceaudit.status": str(audit.status), "faceaudit.version": audit.faceaudit_version,
            "faceaudit.schema_version": audit.schema_version, "faceaudit.task": audit.task}
    gates = audit.gates
    if gates is not None:
        for gate in gates.results:
            tags[names("faceaudit", "gate", gate.name or "gate")] = str(gate.status)
        if gates.counts:
            tags["faceaudit.gates"] = ", ".join(f"{int(n)} {status}" for status, n in gates.counts.items())
    baseline = audit.baseline
    if baseline is not None:
        tags["faceaudit.baseline"] = (f"{baseline.better} better, {baseline.worse} worse than "
                                      f"{baseline.model} ({baseline.method})")
        tags["faceaudit.baseline.source"] = str(baseline.source)
    if summary:
        tags["mlflow.note.content"] = summary[:MAX_TAG_VALUE]
    return {k: v for k, v in tags.items() if v}


def audit_params(audit: AuditResult) -> dict[str, str]:
    """The run's parameters: what was audited and how (model, data fingerprint, level, resamples, seed ...)."""
    model, data, settings, schema = audit.model, audit.data, audit.settings, audit.taxonomy
    params = {"model": model.get("name"), "model_kind": model.get("kind"), "backbone": model.get("backbone"),
              "data_fingerprint": data.get("fingerprint"), "data_source": data.get("source"), "n": data.get("n"),
              "predictions_sha256": data.get("predictions_sha256"),
              "level": settings.level, "n_boot": settings.n_boot, "seed": settings.seed,
              "min_group_size": settings.min_group_size, "target": schema.target,
              "label_schema": schema.name, "groupings": ",".join(audit.groupings)}
    return {k: str(v)[:MAX_PARAM_VALUE] for k, v in params.items() if v not in (None, "")}


def artifact_files(audit: AuditResult, folder: Path) -> list[Path]:
    """The files of an audit folder that are logged: audit.json, its tables, and the report when rendered."""
    names = ["audit.json", *(str(v) for v in audit.files.values()), *REPORT_FILES]
    seen, files = set(), []
    for name in names:
        path = folder / name
        if name not in seen and path.is_file():
            seen.add(name)
            files.append(path)
    return files


@contextlib.contextmanager
def _quiet_http() -> Iterator[None]:
    """MLflow's HTTP settings of :data:`HTTP_DEFAULTS` where the environment leaves them unset, its loggers quiet
    unless the console is verbose, and whatever it prints to stdout held back."""
    from faceaudit.console import is_verbose

    added = [k for k in HTTP_DEFAULTS if k not in os.environ]
    for key in added:
        os.environ[key] = HTTP_DEFAULTS[key]
    quiet = ("mlflow", "alembic", "urllib3")  # urllib3: "Retrying (Retry(total=0 ...)) after connection broken"
    loggers = [logging.getLogger(name) for name in quiet] if not is_verbose() else []
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    held = io.StringIO()
    try:
        with contextlib.redirect_stdout(held):
            yield
    finally:
        for key in added:
            os.environ.pop(key, None)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    """An MLflow or connection error in one short line."""
    text = str(exc).strip()
    for reason in _UNREACHABLE:  # the most telling first: requests' message nests several
        if reason.lower() in text.lower():
            return f"cannot reach the server ({reason.lower()})"
    return ((text.splitlines() or [type(exc).__name__])[0])[:300]


def _experiment_id(client, name: str) -> str:
    """The id of the experiment ``name``, created when absent; a deleted one is refused in one line."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except Exception:  # created meanwhile by another process
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise FaceauditError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) or "
                             f"log to another one")
    return experiment.experiment_id


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI a run goes to: ``uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's local default."""
    if uri:
        return uri
    import mlflow

    return mlflow.get_tracking_uri()


@validate_params(uri=[Text(), None], experiment=Text(), run_name=[Text(), None], folder=[PathLike(kind="dir"), None])
def log_to_mlflow(audit, folder: str | Path | None = None, *, uri: str | None = None,
                  experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None) -> str:
    """Log an audit to a new MLflow run and return the run's id.

    ``audit`` is an :class:`~faceaudit.auditing.result.AuditResult` or an audit folder / audit.json path;
    ``folder`` (default: the one the result was written to or read from) holds the files logged as artifacts.
    ``uri`` is the tracking server or store (default: ``$MLFLOW_TRACKING_URI``, else MLflow's local default,
    ``sqlite:///mlflow.db`` in the current folder with artifacts under ``./mlruns``); ``run_name`` defaults to the
    model's name. Any failure (server unreachable, store refused) raises one :class:`FaceauditError` line; the run,
    when it was created, is marked failed."""
    from faceaudit.auditing.result import AuditResult, load_audit
    from faceaudit.extras import require

    if not isinstance(audit, (AuditResult, str, os.PathLike)):
        raise InvalidParameterError(f"audit must be an AuditResult or the path of an audit folder or audit.json "
                                    f"(got {type(audit).__name__})")
    require("mlflow", "mlflow", "logging to MLflow")
    result = audit if isinstance(audit, AuditResult) else load_audit(Path(audit))
    folder = Path(folder) if folder is not None else result.folder
    summary_path = folder / "summary.md" if folder is not None else None
    summary = summary_path.read_text(encoding="utf-8") if summary_path and summary_path.is_file() else None
    files = artifact_files(result, folder) if folder is not None else []
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    stamp = int(time.time() * 1000)
    metrics = [Metric(k, v, stamp, 0) for k, v in audit_metrics(result).items()]
    params = [Param(k, v) for k, v in audit_params(result).items()]
    tags = [RunTag(k, v) for k, v in audit_tags(result, summary).items()]
    where = uri or "the default tracking URI"
    run_id = None
    with _quiet_http():
        try:
            where = uri = resolve_uri(uri)
            client = MlflowClient(tracking_uri=uri)
            run = client.create_run(_experiment_id(client, experiment),
                                    run_name=run_name or str(result.model.get("name") or "model"))
            run_id = run.info.run_id
            client.log_batch(run_id, params=params[:MAX_TAGS_PER_BATCH], tags=tags[:MAX_TAGS_PER_BATCH])
            for start in range(MAX_TAGS_PER_BATCH, max(len(params), len(tags)), MAX_TAGS_PER_BATCH):
                client.log_batch(run_id, params=params[start:start + MAX_TAGS_PER_BATCH],
                                 tags=tags[start:start + MAX_TAGS_PER_BATCH])
            for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])
            for path in files:
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id)
        except FaceauditError:
            raise
        except Exception as exc:  # MlflowException, requests' errors, an OSError of a local store
            if run_id is not None:
                with contextlib.suppress(Exception):
                    client.set_terminated(run_id, status="FAILED")
            raise FaceauditError(f"logging to MLflow at {where} failed: {_first_line(exc)}") from None
    return run_id
