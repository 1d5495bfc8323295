"""``faceaudit audit``: per-group metrics with confidence intervals, calibration, embeddings and gates.

Exit codes: 0 when every gate passes, or there are no gates (the last line then says ``NOT GATED``); 1 when a gate
fails (or is inconclusive under ``--inconclusive fail``), or with ``--fail-on-worse`` a group got worse than the
``--baseline``; 2 on an input error, and for an ungated audit under ``--require-gates`` / $FACEAUDIT_REQUIRE_GATES.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from faceaudit.commands.common import add_data_options, add_model_contract_options
from faceaudit.config import DEFAULT_CI, DEFAULT_INCONCLUSIVE, DEFAULT_MIN_GROUP_SIZE, DEFAULT_N_BOOT, data_from_env
from faceaudit.console import total_line
from faceaudit.errors import FaceauditError
from faceaudit.files import carry_inside, replace_folder, replaceable_dir
from faceaudit.taxonomy import SCHEMAS
from faceaudit.validation import Text, cli_type, metavar

if TYPE_CHECKING:
    from faceaudit.auditing.types import Disparity


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="audit a model or a predictions table: who it fails, how sure we are, whether it passes",
        description="Audit a face-attribute classifier (race by default; any target and classes with --target and "
        "--schema, or read from the predictions' prob_* columns) on a labelled test set: per-group accuracy, "
        "balanced accuracy, F1 and confusion matrices by race, gender, age band and their intersections, with exact "
        "confidence intervals adjusted for the number of groups compared; "
        "calibration; embedding clusters; and pass/fail gates. An age regressor (--target age, or a contract output "
        "of kind regression) gets mean absolute error, bias and the share within 5 years instead. A model someone "
        "else published runs through its contract (--contract model.toml). Writes audit.json, CSV tables and "
        "gates.xml.",
    )
    parser.add_argument("source", nargs="?", type=Path, metavar="SOURCE",
                        help="run folder (runs/<name>/), model file (.keras, .h5, .tflite, .onnx) or TensorFlow "
                        "SavedModel folder; omit with --predictions")
    parser.add_argument("--predictions", type=Path, metavar="FILE",
                        help="predictions CSV/Parquet (image_id, the true target label, gender, age or age_band, "
                        "prob_<class> columns or pred_<target>); "
                        "rows with split=val, if any, fit temperature scaling and only split=test rows are audited. "
                        "A folder or quoted glob of Parquet shards ('preds/*.parquet', as faceaudit predict writes) "
                        "is streamed shard by shard in bounded memory")
    parser.add_argument("--engine", type=cli_type("--engine"), default="local", metavar=metavar("engine"),
                        help="with sharded --predictions: reduce the shards in this process (local) or on Ray "
                        "workers (ray: a local Ray instance, or the cluster at $RAY_ADDRESS; needs "
                        "faceaudit[distributed]) (default: local)")
    parser.add_argument("--workers", type=cli_type("--workers"), default=None, metavar="N",
                        help="with --engine ray: shards reduced at a time (default: this machine's CPUs)")
    parser.add_argument("--id-col", type=cli_type("--id-col"), default="image_id", metavar="NAME",
                        help="with --predictions: the image id column, e.g. 'id' (default: image_id)")
    parser.add_argument("--prob-prefix", type=cli_type("--prob-prefix"), default="prob_", metavar="PREFIX",
                        help="with --predictions: prefix of the probability columns, e.g. 'p_' for "
                        "p_White ... p_Others (default: prob_)")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="with --predictions: audit although some test image ids are also val or train rows "
                        "(refused by default: a leak between splits); the overlap is reported as a warning")
    parser.add_argument("--schema", choices=sorted(SCHEMAS), default=None,
                        help="label schema preset: classes, attributes and their spellings (default: the run's, else "
                        "UTKFace where the labels fit, else classes read from the prob_* columns)")
    parser.add_argument("--target", default=None, metavar="ATTR",
                        help="the attribute the classifier predicts, e.g. gender or age_band (default: race)")
    parser.add_argument("--groups", default=None, metavar="A,B,...",
                        help="attributes to group by, e.g. race,age_band (default: race, gender, age_band as present)")
    parser.add_argument("--embeddings", type=Path, metavar="NPY",
                        help="with one --predictions file: embeddings .npy whose rows align with it (shards carry "
                        "theirs as part-*.embeddings.npy)")
    parser.add_argument("--data", type=Path, metavar="DATA",
                        help="with a model: UTKFace folder/archive or labelled CSV (default: $FACEAUDIT_DATA)")
    parser.add_argument("--gates", type=Path, metavar="TOML", help="thresholds to judge (see faceaudit/gates.toml)")
    parser.add_argument("--require-gates", action="store_true", default=None,
                        help="refuse an audit without gates: exit 2 with one line before computing or writing "
                        f"anything. Also on when ${REQUIRE_GATES_ENV} is 1, true or yes (a CI can set it; 0, false, "
                        "no or empty leave it off). Without it an ungated audit exits 0 and its last line, "
                        "audit.json's status, summary.md and the report say NOT GATED")
    parser.add_argument("--baseline", type=Path, metavar="OLD",
                        help="an earlier audit folder or its audit.json (the model this one replaces): per group, "
                        "better / worse / no clear change against it, by the same Holm-adjusted family of tests as "
                        "'faceaudit diff OLD NEW' (paired where the images match, unpaired where not), in audit.json "
                        "(baseline), the console, summary.md and the report's verdict")
    parser.add_argument("--fail-on-worse", action="store_true",
                        help="with --baseline: exit 1 when any group got worse than the baseline (as diff does)")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<model-name>)")
    parser.add_argument("--n-boot", type=cli_type("--n-boot"), default=DEFAULT_N_BOOT,
                        help="bootstrap resamples for Brier, log loss, the ECE change and embedding measures "
                        f"(default: {DEFAULT_N_BOOT})")
    parser.add_argument("--min-group-size", type=cli_type("--min-group-size"), default=None,
                        help=f"groups smaller than this are shown but never ranked or judged "
                        f"(default: the gates file's, else {DEFAULT_MIN_GROUP_SIZE})")
    parser.add_argument("--ci", type=cli_type("--ci"), default=DEFAULT_CI,
                        help=f"confidence level (default: {DEFAULT_CI})")
    parser.add_argument("--inconclusive", type=cli_type("--inconclusive"), metavar=metavar("inconclusive"),
                        default=DEFAULT_INCONCLUSIVE,
                        help="what an inconclusive gate does to the exit code (default: fail)")
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE map (the other embedding figures stay)")
    parser.add_argument("--no-temperature", action="store_true",
                        help="skip temperature scaling (no inference on the validation split)")
    parser.add_argument("--no-report", action="store_true", help="write the audit only, not report.html/pdf")
    parser.add_argument("--no-thumbnails", action="store_true",
                        help="leave face thumbnails out of the report's error gallery")
    parser.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                        help="also log the audit to an MLflow run (needs faceaudit[mlflow]): per-group metrics with "
                        "their bounds (accuracy.race.Black, accuracy.race.Black.lower/.upper; '×' becomes '_x_'), "
                        "gates as tags, audit.json, tables and report as artifacts. URI: a tracking server "
                        "(http://host:5000) or store; without it, $MLFLOW_TRACKING_URI, else MLflow's local default "
                        "(works offline: ./mlflow.db, SQLite, with artifacts in ./mlruns; browse with 'mlflow ui'). Bare --mlflow "
                        "takes the next word as its URI: write it after SOURCE")
    parser.add_argument("--mlflow-experiment", type=cli_type("--mlflow-experiment", Text()), default=None,
                        metavar="NAME", help="with --mlflow: the experiment the run goes to (default: faceaudit)")
    parser.add_argument("--batch-size", type=cli_type("--batch-size"), default=64,
                        help="inference batch size (default: 64)")
    parser.add_argument("--check", action="store_true",
                        help="with a model: run it on a sample of test images (--check-size) and say whether its "
                        "contract looks right (outputs collapsed or constant, no better than the majority class, ages "
                        "out of range); writes nothing; exit 0 when it looks right, 1 when not")
    parser.add_argument("--check-size", type=cli_type("--check-size"), default=200, metavar="N",
                        help="test images the --check runs on (default: 200)")
    add_model_contract_options(parser)
    add_data_options(parser, positional=False)
    parser.set_defaults(handler=run_audit)


#: The environment variable that turns --require-gates on (a CI sets it once for every audit it runs).
REQUIRE_GATES_ENV = "FACEAUDIT_REQUIRE_GATES"


def require_gates_from_env() -> bool:
    """Whether $FACEAUDIT_REQUIRE_GATES asks for gates: 1/true/yes on, 0/false/no/empty or unset off, anything
    else refused in one line (a typo must not silently switch the requirement off)."""
    import os

    value = os.environ.get(REQUIRE_GATES_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise FaceauditError(f"${REQUIRE_GATES_ENV} is {value!r}: set it to 1 (require gates) or 0 (do not)")


def _preflight(args: argparse.Namespace):
    """What must hold before any work or any file: gates when they are required, a readable baseline. Returns the
    loaded baseline (or None)."""
    from faceaudit.auditing.api import load_baseline, load_gates, require_gated

    if args.require_gates is None:
        args.require_gates = require_gates_from_env()
    if args.fail_on_worse and args.baseline is None:
        raise FaceauditError("--fail-on-worse goes with --baseline OLD (the audit the groups got worse than)")
    found, _, source = load_gates(args.gates)
    require_gated(found, args.require_gates, source)
    return load_baseline(args.baseline, args.ci)


def _check_args(args: argparse.Namespace) -> None:
    if (args.source is None) == (args.predictions is None):
        raise FaceauditError("give either a model (SOURCE: run folder, model file or SavedModel folder) or "
                             "--predictions FILE")
    from faceaudit.auditing.stream import is_sharded
    from faceaudit.distributed import check_engine

    check_engine(args.engine, args.workers)
    if args.embeddings is not None and args.predictions is not None and is_sharded(args.predictions):
        raise FaceauditError("--embeddings goes with one predictions file; shards carry theirs as "
                             "part-*.embeddings.npy beside each shard")
    if args.predictions is None and (args.engine != "local" or args.workers is not None):
        raise FaceauditError("--engine and --workers go with --predictions shards; to run a model on Ray, use "
                             "faceaudit predict MODEL --engine ray, then faceaudit audit --predictions")
    if args.predictions is None and (args.id_col != "image_id" or args.prob_prefix != "prob_"):
        raise FaceauditError("--id-col and --prob-prefix go with --predictions")
    if args.embeddings is not None and args.predictions is None:
        raise FaceauditError("--embeddings goes with --predictions (a model's embeddings are computed)")
    contract = (args.output_layer, args.embedding_layer, args.input_size, args.preprocess, args.classes)
    if args.predictions is not None and (any(v is not None for v in contract) or args.bgr or args.contract):
        raise FaceauditError("--output-layer, --embedding-layer, --input-size, --preprocess, --bgr, --classes and "
                             "--contract go with a model (SOURCE), not --predictions")
    if args.contract is not None and (any(v is not None for v in contract[:1] + contract[2:]) or args.bgr):
        raise FaceauditError("--contract states the input and outputs: drop --output-layer, --input-size, "
                             "--preprocess, --bgr and --classes (or edit the contract)")
    if args.check and args.contract is None:
        raise FaceauditError("--check tests a model contract: pass --contract model.toml (faceaudit contract init "
                             "MODEL writes one)")


def _groups(args: argparse.Namespace) -> tuple[str, ...] | None:
    if args.groups is None:
        return None
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    if not groups:
        raise FaceauditError("--groups needs at least one attribute, e.g. race,gender")
    return groups


def _compute(args: argparse.Namespace, min_group_size: int | None) -> dict:
    """The audits of a predictions file or of a model on data, through the public API: ``{target: result}`` (one
    entry, unless a contract names several outputs)."""
    options = {"target": args.target, "groups": _groups(args), "schema": args.schema, "gates": args.gates,
               "ci": args.ci, "n_boot": args.n_boot, "seed": args.seed, "min_group_size": min_group_size,
               "inconclusive": args.inconclusive, "tsne": not args.no_tsne, "temperature": not args.no_temperature,
               "progress": True}
    if args.predictions is not None:
        from faceaudit.auditing import audit

        result = audit(args.predictions, embeddings=args.embeddings, id_col=args.id_col,
                       prob_prefix=args.prob_prefix, age_bands=args.age_bands, engine=args.engine,
                       workers=args.workers, allow_overlap=args.allow_overlap, **options)
        return {result.taxonomy.target: result}
    from faceaudit.api import audit_heads, audit_model

    data, dataset_options = _model_data(args)
    if args.contract is not None:
        targets = None if args.target is None else [args.target]
        options.pop("target")
        return audit_heads(args.source, data, contract=args.contract, targets=targets, batch_size=args.batch_size,
                           embedding_layer=args.embedding_layer, dataset_options=dataset_options, **options)
    result = audit_model(args.source, data, batch_size=args.batch_size, output_layer=args.output_layer,
                         embedding_layer=args.embedding_layer, input_size=args.input_size,
                         preprocess=args.preprocess, bgr=args.bgr, classes=args.classes,
                         dataset_options=dataset_options, **options)
    return {result.taxonomy.target: result}


def _model_data(args: argparse.Namespace):
    """The data a model is audited on, and how to read it."""
    from faceaudit.datasets.manifest import ColumnMap

    if not args.source.exists():
        raise FaceauditError(f"model not found: {args.source}")
    data = args.data or data_from_env()
    if data is None:
        raise FaceauditError("no data: pass --data (a UTKFace folder or archive) or set $FACEAUDIT_DATA")
    columns = ColumnMap(args.path_col, args.race_col, args.gender_col, args.age_col)
    return data, {"age_bands": args.age_bands, "exclude": args.exclude, "columns": columns}


def _run_check(args: argparse.Namespace) -> int:
    """``--check``: the contract sanity checks on a sample of test images, printed; nothing written."""
    import time

    from faceaudit.api import check_model
    from faceaudit.auditing import sanity

    started = time.monotonic()
    data, dataset_options = _model_data(args)
    checked = check_model(args.source, data, contract=args.contract, n=args.check_size, seed=args.seed,
                          dataset_options=dataset_options, batch_size=args.batch_size)
    suspect = False
    for target, report in checked.items():
        print(f"{target}: {report['n']:,} test images: {report['summary']}")
        for step in report["steps"]:
            print(f"  {step}")
        line = sanity.sentence(report["sanity"])
        suspect = suspect or line is not None
        print(f"  {line}" if line else "  contract looks right: no check fired")
    print(f"checked in {time.monotonic() - started:.1f} s; nothing written")
    return 1 if suspect else 0


def _slug(name: str) -> str:
    """A folder name for a model name (``oarriaga gender_mini_XCEPTION`` -> ``oarriaga-gender_mini_XCEPTION``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-.") or "model"


def run_audit(args: argparse.Namespace) -> int:
    """Compute the audit, write it, judge the gates, render the report; the exit code is the gates' verdict (the
    worst over a contract's outputs, each audited into its own folder ``OUT/<target>``)."""
    started = time.perf_counter()
    _check_args(args)
    if args.check:
        return _run_check(args)
    baseline = _preflight(args)
    if args.mlflow_experiment is not None and args.mlflow is None:
        raise FaceauditError("--mlflow-experiment goes with --mlflow")
    if args.mlflow is not None:  # before the audit: a missing extra fails at once, not after it
        from faceaudit.extras import require

        require("mlflow", "mlflow", "--mlflow")
    inputs = (args.source, args.predictions, args.embeddings, args.gates, args.data, args.contract)
    if args.contract is not None:  # read once: it decides the folders and runs the model
        from faceaudit.seams.contract import load_contract

        args.contract = load_contract(args.contract)
    several = args.contract is not None and args.target is None and len(args.contract.outputs) > 1
    if several and baseline is not None:
        raise FaceauditError("--baseline compares one audited output: pass --target with a contract of several")
    if args.out is not None and not several:
        replaceable_dir(args.out, "audit.json", keep=inputs)
    results = _compute(args, args.min_group_size)
    if baseline is not None:
        from faceaudit.auditing.api import attach_baseline

        for result in results.values():
            attach_baseline(result, baseline, args.baseline)
    first = next(iter(results.values()))
    for note in first.data.get("notes", []):
        print(f"faceaudit: warning: {note}", file=sys.stderr)
    from faceaudit.auditing.report.sections import output_steps

    for result in results.values():
        for step in output_steps(result.model):  # a contract's steps, or a softmax faceaudit applied
            print(f"faceaudit: note: {step}", file=sys.stderr)
    code = 0
    for target, result in results.items():
        name = result.model["name"]
        if several:
            base = args.out or Path("reports") / _slug(name[:-len(target) - 1] if name.endswith(f"-{target}") else name)
            out_dir = base / target
        else:
            out_dir = args.out or Path("reports") / _slug(name)
        code = max(code, _write(args, result, replaceable_dir(out_dir, "audit.json", keep=inputs), inputs))
    print(total_line("audited", started))  # the total always; each step's time with --verbose (faceaudit.console)
    from faceaudit.auditing.report.findings import status_line

    for target, result in results.items():  # the last line: gated or not, said (per output with several)
        print(f"{target}: {status_line(result)}" if len(results) > 1 else status_line(result))
    return code


def _write(args: argparse.Namespace, result, out_dir: Path, inputs: tuple) -> int:
    """Write one audit folder (swapped in whole), print its summary, render its report; the gates' exit code."""
    result.settings.command = shlex.join(["faceaudit", *sys.argv[1:]])

    from faceaudit.auditing import gates as gates_mod
    from faceaudit.auditing.writer import write_audit

    # The folder is built beside out_dir and swapped in whole: an interrupted or failed audit leaves the previous
    # complete folder (audit and its report) or none, never a new audit.json next to an old report.
    render_error = None
    with replace_folder(out_dir) as work:
        carry_inside(inputs, out_dir, work)
        write_audit(result, work)
        print_summary(result, out_dir, status=False)
        if not args.no_report:
            render_error = _render(work, out_dir, thumbnails=not args.no_thumbnails)
    result.folder = out_dir
    if render_error is not None:
        raise render_error
    if args.mlflow is not None:
        _log_mlflow(args, result, out_dir)
    worse = int(bool(args.fail_on_worse and result.baseline is not None and result.baseline.worse))
    return max(gates_mod.exit_code(result.gates), worse)


def _log_mlflow(args: argparse.Namespace, result, out_dir: Path) -> None:
    """``--mlflow``: log the written (and rendered) audit folder to an MLflow run; a failure is one line saying the
    audit itself is written."""
    from faceaudit.tracking import DEFAULT_EXPERIMENT, log_to_mlflow, resolve_uri

    experiment = args.mlflow_experiment or DEFAULT_EXPERIMENT
    try:
        uri = resolve_uri(args.mlflow or None)
        run_id = log_to_mlflow(result, out_dir, uri=uri, experiment=experiment)
    except FaceauditError as exc:
        raise FaceauditError(f"audit written to {out_dir}, but {exc}") from None
    print(f"logged to MLflow: run {run_id} in experiment {experiment!r} at {uri}")


def _render(work: Path, out_dir: Path, thumbnails: bool) -> FaceauditError | None:
    """Render the report for the audit written in ``work`` (to become ``out_dir``); a rendering failure removes the
    partial report and is returned, so the audit itself is still swapped in and the error raised after."""
    from faceaudit.auditing.report import render_report
    from faceaudit.auditing.report.render import REPORT_HTML, REPORT_PDF, SUMMARY_MD

    try:
        paths = render_report(work, thumbnails=thumbnails, home=out_dir, progress=True)
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


def print_summary(result, out_dir: Path, status: bool = True) -> None:
    """The console's few lines: overall accuracy, what the verdict leads with, the target's disparity, each gate,
    the baseline's changes, and (``status``) the status line, which ``faceaudit audit`` prints last instead."""
    from faceaudit.auditing.report.findings import headline, status_line, too_small_to_judge
    from faceaudit.auditing.report.formatting import fmt_stat
    from faceaudit.auditing.report.vs_baseline import console_lines

    if result.taxonomy.regression:
        from faceaudit.auditing.report.age_findings import regression_console_lines

        print("\n".join(regression_console_lines(result)))
    else:
        overall = result.overall.metrics["accuracy"]
        print(f"{result.model['name']}: accuracy {fmt_stat(overall)} on {overall.n:,} test images")
        for line in headline(result):
            print(f"  {line}")
        target = result.taxonomy.target
        if not too_small_to_judge(result) and target in result.groupings:
            print(f"  {_target_line(target, result.grouping(target).disparities.get('accuracy'))}")
    if result.gates:
        for gate in result.gates.results:
            print(f"  gate {gate.status.upper():12s} {gate.name}: {gate.message}")
    for line in console_lines(result):
        print(line)
    if status:
        print(status_line(result))
    print(f"wrote {out_dir / 'audit.json'}")


def _target_line(target: str, disparity: Disparity | None) -> str:
    """Worst class against best: the adjusted difference, how many classes it was picked from, the all-equal test."""
    from faceaudit.auditing.report.formatting import fmt_p, plural, points

    if disparity is None or not disparity.worst or (disparity.n_ranked or 0) < 2:
        return f"{target} accuracy: fewer than two {target} groups have enough test images to rank"
    omnibus = (disparity.omnibus or {}).get("p_value")
    return (f"{target} accuracy: worst {disparity.worst}, best {disparity.best} of {disparity.n_ranked} "
            f"ranked; worst - best {points(disparity.difference)} (adjusted for {plural(disparity.pairs, 'pair')})"
            + (f"; all {target} groups equal: {fmt_p(omnibus)}" if omnibus is not None else ""))
