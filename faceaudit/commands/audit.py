"""``faceaudit audit``: per-group metrics with confidence intervals, calibration, embeddings and gates.

Exit codes: 0 when every gate passes (or there are no gates), 1 when a gate fails (or is inconclusive under
``--inconclusive fail``), 2 on an input error.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from faceaudit.audit.sources import file_sha256
from faceaudit.commands.common import add_data_options, dataset_from_args, replaceable_dir
from faceaudit.config import DEFAULT_CI, DEFAULT_INCONCLUSIVE, DEFAULT_MIN_GROUP_SIZE, DEFAULT_N_BOOT, data_from_env
from faceaudit.errors import FaceauditError
from faceaudit.files import replace_folder

#: What the model card and reproducibility sections take from a run folder's ``run.json`` (as faceaudit train
#: writes it): how the model was built and trained, on which data and split.
RUN_FACTS = ("name", "backbone", "weights", "weights_file", "input", "image_size", "alpha", "dlib_framing",
             "batchnorm", "params", "seed", "phases", "data", "strategy", "test_accuracy", "wall_time_s",
             "finished_at", "run_hash")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="audit a model or a predictions table: who it fails, how sure we are, whether it passes",
        description="Audit a race classifier on a labelled test set: per-group accuracy, balanced accuracy, F1 and "
        "confusion matrices by race, gender, age band and their intersections, with exact confidence intervals "
        "adjusted for the number of groups compared; "
        "calibration; embedding clusters; and pass/fail gates. Writes audit.json, CSV tables and gates.xml.",
    )
    parser.add_argument("source", nargs="?", type=Path, metavar="SOURCE",
                        help="run folder (runs/<name>/) or .keras model file; omit with --predictions")
    parser.add_argument("--predictions", type=Path, metavar="FILE",
                        help="predictions CSV/Parquet (image_id, race, gender, age or age_band, prob_* or pred_race); "
                        "rows with split=val, if any, fit temperature scaling and only split=test rows are audited")
    parser.add_argument("--id-col", default="image_id", metavar="NAME",
                        help="with --predictions: the image id column, e.g. 'id' (default: image_id)")
    parser.add_argument("--prob-prefix", default="prob_", metavar="PREFIX",
                        help="with --predictions: prefix of the five probability columns, e.g. 'p_' for "
                        "p_White ... p_Others (default: prob_)")
    parser.add_argument("--embeddings", type=Path, metavar="NPY",
                        help="with --predictions: embeddings .npy whose rows align with the predictions file")
    parser.add_argument("--data", type=Path, metavar="DATA",
                        help="with a model: UTKFace folder/archive or labelled CSV (default: $FACEAUDIT_DATA)")
    parser.add_argument("--gates", type=Path, metavar="TOML", help="thresholds to judge (see faceaudit/gates.toml)")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<model-name>)")
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT,
                        help="bootstrap resamples for Brier, log loss, the ECE change and embedding measures "
                        f"(default: {DEFAULT_N_BOOT})")
    parser.add_argument("--min-group-size", type=int, default=None,
                        help=f"groups smaller than this are shown but never ranked or judged "
                        f"(default: the gates file's, else {DEFAULT_MIN_GROUP_SIZE})")
    parser.add_argument("--ci", type=float, default=DEFAULT_CI, help=f"confidence level (default: {DEFAULT_CI})")
    parser.add_argument("--inconclusive", choices=("pass", "fail"), default=DEFAULT_INCONCLUSIVE,
                        help="what an inconclusive gate does to the exit code (default: fail)")
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE map (the other embedding figures stay)")
    parser.add_argument("--no-temperature", action="store_true",
                        help="skip temperature scaling (no inference on the validation split)")
    parser.add_argument("--no-report", action="store_true", help="write the audit only, not report.html/pdf")
    parser.add_argument("--no-thumbnails", action="store_true",
                        help="leave face thumbnails out of the report's error gallery")
    parser.add_argument("--batch-size", type=int, default=64, help="inference batch size (default: 64)")
    add_data_options(parser, positional=False)
    parser.set_defaults(handler=run_audit)


def _check_args(args: argparse.Namespace) -> None:
    if (args.source is None) == (args.predictions is None):
        raise FaceauditError("give either a model (SOURCE: run folder or .keras file) or --predictions FILE")
    if args.predictions is None and (args.id_col != "image_id" or args.prob_prefix != "prob_"):
        raise FaceauditError("--id-col and --prob-prefix go with --predictions")
    if args.embeddings is not None and args.predictions is None:
        raise FaceauditError("--embeddings goes with --predictions (a model's embeddings are computed)")
    if args.n_boot < 0:
        raise FaceauditError("--n-boot must be 0 or more")
    if not 0 < args.ci < 1:
        raise FaceauditError("--ci must be between 0 and 1, e.g. 0.95")
    if args.min_group_size is not None and args.min_group_size < 1:
        raise FaceauditError("--min-group-size must be at least 1")


def _from_predictions(args: argparse.Namespace):
    """Test and validation predictions, embeddings and model/data info from a predictions file."""
    import numpy as np

    from faceaudit.audit.labels import AgeBands
    from faceaudit.audit.predictions import load_embeddings, map_columns, read_table, validate_predictions

    path = args.predictions
    table = read_table(path)
    bands = AgeBands.parse(args.age_bands)
    what = f"predictions file {path.name}"
    table, ignored = map_columns(table, id_col=args.id_col, prob_prefix=args.prob_prefix, what=what)
    notes = []
    if ignored:
        notes.append(f"{what}: ignored column(s) {', '.join(ignored)}")
    if "split" in table.columns and not (table["split"].astype(str) == "test").any():
        found = ", ".join(sorted(table["split"].astype(str).unique()))
        notes.append(f"{what} has a split column but no split=test rows (splits: {found}): "
                     f"auditing all {len(table):,} rows as the test set")
    embeddings = None
    if args.embeddings is not None:
        embeddings = load_embeddings(args.embeddings, len(table))
    val_rows = None
    if "split" in table.columns and (table["split"].astype(str) == "test").any():
        split = table["split"].astype(str).to_numpy()
        if (split == "val").any() and not args.no_temperature:
            val_rows = table[split == "val"].reset_index(drop=True)
        if embeddings is not None:
            embeddings = embeddings[split == "test"]
        table = table[split == "test"].reset_index(drop=True)
    predictions = validate_predictions(table, age_bands=bands, what=what)
    val = None if val_rows is None else validate_predictions(val_rows, age_bands=bands, what=f"{what} (val rows)")
    for note in notes:  # after validation, so a refused file gets its one error line only
        print(f"faceaudit: warning: {note}", file=sys.stderr)
    args.input_warnings = notes
    digest = file_sha256(path)
    model = {"name": path.stem, "kind": "predictions", "source": str(path.resolve()), "backbone": None,
             "run_hash": digest, "synthetic": False, "run": None}
    data = {"source": str(path.resolve()), "fingerprint": None, "split": "test", "n": len(predictions),
            "n_val": None if val is None else len(val), "synthetic": False, "age_bands": str(bands),
            "predictions_sha256": digest}
    return predictions, val, (None if embeddings is None else np.asarray(embeddings)), "file", model, data


def _from_model(args: argparse.Namespace):
    """Run inference on the test (and validation) split of the data for a run folder or .keras file."""
    from faceaudit.audit.predictions import predictions_from_manifest
    from faceaudit.training.inference import predict, resolve_model

    source = args.source
    if not source.exists():
        raise FaceauditError(f"model not found: {source}")
    model_file, run = resolve_model(source)
    data_source = args.data or data_from_env()
    if data_source is None:
        raise FaceauditError("no data: pass --data (a UTKFace folder or archive) or set $FACEAUDIT_DATA")
    dataset = dataset_from_args(args, source=data_source)
    from faceaudit.audit.manifest import describe_image_problems

    if note := describe_image_problems(dataset):
        print(f"faceaudit: note: {note}", file=sys.stderr)
        args.input_warnings = [note]
    test = dataset.split("test")
    if test.empty:
        raise FaceauditError(f"the test split of {data_source} is empty: nothing to audit")
    probs, embeddings = predict(source, test, batch_size=args.batch_size, progress=True)
    predictions = predictions_from_manifest(test, probs)
    val = None
    val_rows = dataset.split("val")
    if not args.no_temperature and not val_rows.empty:
        val_probs, _ = predict(source, val_rows, batch_size=args.batch_size, progress=True)
        val = predictions_from_manifest(val_rows, val_probs)
    is_run = source.is_dir()
    name = run.get("name") or (source.name if is_run else model_file.stem)
    synthetic = bool(run.get("synthetic", False) or dataset.synthetic)
    model = {"name": str(name), "kind": "run" if is_run else "keras", "source": str(source.resolve()),
             "backbone": run.get("backbone"), "run_hash": run.get("run_hash") or run.get("hash") or file_sha256(model_file),
             "synthetic": synthetic,
             "run": {k: run[k] for k in RUN_FACTS if k in run} or None}
    data = {"source": str(data_source), "fingerprint": dataset.fingerprint, "split": "test", "n": len(predictions),
            "n_val": None if val is None else len(val), "synthetic": dataset.synthetic, "age_bands": args.age_bands,
            "predictions_sha256": None}
    return predictions, val, embeddings, "model", model, data


def run_audit(args: argparse.Namespace) -> int:
    """Compute the audit, write it, judge the gates, render the report; the exit code is the gates' verdict."""
    _check_args(args)
    from faceaudit.audit import gates as gates_mod

    gate_list, gates_min_size = (gates_mod.load_gates(args.gates) if args.gates else ([], None))
    min_group_size = args.min_group_size or gates_min_size or DEFAULT_MIN_GROUP_SIZE
    inputs = (args.source, args.predictions, args.embeddings, args.gates, args.data)
    if args.out is not None:
        replaceable_dir(args.out, "audit.json", keep=inputs)
    loader = _from_predictions if args.predictions is not None else _from_model
    predictions, val, embeddings, emb_source, model, data = loader(args)
    out_dir = replaceable_dir(args.out or Path("reports") / model["name"], "audit.json", keep=inputs)

    from faceaudit.audit.engine import AuditSettings, compute_audit
    from faceaudit.audit.writer import write_audit

    settings = AuditSettings(n_boot=args.n_boot, ci=args.ci, seed=args.seed, min_group_size=min_group_size,
                             tsne=not args.no_tsne, inconclusive=args.inconclusive, progress=True)
    output = compute_audit(predictions, settings=settings, embeddings=embeddings, embedding_source=emb_source,
                           val_predictions=val, model=model, data=data)
    result = output.result
    result.settings["command"] = shlex.join(["faceaudit", *sys.argv[1:]])
    result.warnings.extend(getattr(args, "input_warnings", []))
    junit = None
    if gate_list:
        result.gates = gates_mod.evaluate_gates(gate_list, result.to_dict(), inconclusive=args.inconclusive,
                                                source=str(args.gates))
        junit = gates_mod.junit_xml(result.gates)
    # The folder is built beside out_dir and swapped in whole: an interrupted or failed audit leaves the previous
    # complete folder (audit and its report) or none, never a new audit.json next to an old report.
    render_error = None
    with replace_folder(out_dir) as work:
        _keep_inputs(args, out_dir, work)
        write_audit(result, output.tables, predictions, work, junit=junit)
        _print_summary(result, out_dir)
        if not args.no_report:
            render_error = _render(work, out_dir, thumbnails=not args.no_thumbnails)
    if render_error is not None:
        raise render_error
    return gates_mod.exit_code(result.gates)


def _keep_inputs(args: argparse.Namespace, out_dir: Path, work: Path) -> None:
    """Carry inputs that live inside the output folder (the demo's run folder ``out/demo-cnn``, a gates file kept
    with its audit) into the new folder, so replacing the folder never deletes what the audit read."""
    import shutil

    root = out_dir.resolve()
    for item in (args.source, args.predictions, args.embeddings, args.gates, args.data):
        if item is None or not Path(item).exists():
            continue
        try:
            inside = Path(item).resolve().relative_to(root)
        except ValueError:
            continue
        target = work / inside
        if Path(item).is_dir():
            shutil.copytree(item, target, symlinks=True, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)


def _render(work: Path, out_dir: Path, thumbnails: bool) -> FaceauditError | None:
    """Render the report for the audit written in ``work`` (to become ``out_dir``); a rendering failure removes the
    partial report and is returned, so the audit itself is still swapped in and the error raised after."""
    from faceaudit.audit.report import render_report
    from faceaudit.audit.report.render import REPORT_HTML, REPORT_PDF, SUMMARY_MD

    try:
        paths = render_report(work, thumbnails=thumbnails, home=out_dir)
    except (FaceauditError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the audit is written; say so, in one line, and exit 2 rather than look like a gate
        for name in (REPORT_HTML, REPORT_PDF, SUMMARY_MD):
            (work / name).unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return FaceauditError(f"audit written to {out_dir}, but rendering the report failed: {first[:300]} "
                              f"(rerun with --no-report, or 'faceaudit report {out_dir}')")
    for path in paths:
        print(f"wrote {out_dir / path.relative_to(work)}")
    return None


def _print_summary(result, out_dir: Path) -> None:
    """The console's few lines: overall accuracy, what the verdict leads with, the race disparity, the gates."""
    from faceaudit.audit.report.findings import headline, too_small_to_judge
    from faceaudit.audit.report.formatting import fmt_stat

    overall = result.overall["metrics"]["accuracy"]
    print(f"{result.model['name']}: accuracy {fmt_stat(overall)} on {overall['n']} test images")
    for line in headline(result):
        print(f"  {line}")
    if not too_small_to_judge(result):
        print(f"  {_race_line(result.grouping('race')['disparities']['accuracy'])}")
    if result.gates:
        for gate in result.gates["results"]:
            print(f"  gate {gate['status'].upper():12s} {gate['name']}: {gate['message']}")
        counts = result.gates["counts"]
        print(f"gates: {result.gates['status'].upper()} ({int(counts.get('pass', 0))} passed, "
              f"{int(counts.get('fail', 0))} failed, {int(counts.get('inconclusive', 0))} inconclusive)")
    print(f"wrote {out_dir / 'audit.json'}")


def _race_line(disparity: dict) -> str:
    """Worst race against best: the adjusted difference, how many races it was picked from, the all-equal test."""
    from faceaudit.audit.report.formatting import fmt_p, plural, points

    if not disparity.get("worst") or disparity.get("n_ranked", 0) < 2:
        return "race accuracy: fewer than two races have enough test images to rank"
    omnibus = (disparity.get("omnibus") or {}).get("p_value")
    return (f"race accuracy: worst {disparity['worst']}, best {disparity['best']} of {disparity['n_ranked']} ranked; "
            f"worst - best {points(disparity['difference'])} (adjusted for {plural(disparity['pairs'], 'pair')})"
            + (f"; all races equal: {fmt_p(omnibus)}" if omnibus is not None else ""))
