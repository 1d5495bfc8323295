"""``faceaudit report`` (re-render an audit folder), ``faceaudit compare`` (several audits) and ``faceaudit diff``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from faceaudit.commands.common import replaceable_dir, writable_parent
from faceaudit.config import DEFAULT_CI, DEFAULT_INCONCLUSIVE
from faceaudit.errors import FaceauditError
from faceaudit.files import replace_folder
from faceaudit.validation import PARAMETERS, cli_type, metavar


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the report, compare and diff subcommands."""
    report = subparsers.add_parser(
        "report", help="render report.html, report.pdf and summary.md from an audit folder",
        description="Render an audit folder (audit.json + predictions.csv) into a self-contained report.html, an A4 "
                    "report.pdf and a summary.md of at most 60 lines, next to audit.json.")
    report.add_argument("audit", type=Path, metavar="AUDIT", help="audit folder or its audit.json")
    report.add_argument("--out", type=Path, help="write the report here instead of next to audit.json")
    report.add_argument("--no-thumbnails", action="store_true", help="leave faces out of the error gallery")
    report.add_argument("--no-pdf", action="store_true", help="skip report.pdf (HTML and summary only)")
    report.set_defaults(handler=run_report)

    compare = subparsers.add_parser(
        "compare", help="compare audits of several models on the same test images",
        description="Side-by-side per-group accuracy with CIs, paired tests per group on the same test images "
                    "(matched by image_id and sha256): one family per pair of models over overall, each grouping "
                    "attribute and the target x the first other one (race, gender, age band and race x gender for "
                    "UTKFace), with Newcombe paired intervals (simultaneous, Bonferroni), McNemar tests and "
                    "Holm-adjusted p-values (the audits must predict the same target and classes); rankings by "
                    "worst-group accuracy and largest gap; validation curves from the runs' histories.")
    compare.add_argument("audits", nargs="*", type=Path, metavar="AUDIT", help="audit folders (two or more)")
    compare.add_argument("--out", type=Path, default=Path("reports/compare"), help="output folder (default: reports/compare)")
    compare.add_argument("--history", nargs="+", type=Path, default=[], metavar="JSON",
                         help="extra training histories (faceaudit history.json or Keras/seed *_history.json); "
                              "X-freeze/X-unfreeze files are joined into one run X, and the seed's "
                              "model_predict_curves_3.png is redrawn from them")
    compare.add_argument("--curves-runs", nargs="+", metavar="NAME",
                         help="runs from --history to draw in model_predict_curves_3.png, in legend order (default: "
                              "all; the seed's figure shows ResNet50 Xception EfficientnetV2-l-21k-ft1k)")
    _add_paired_test_options(compare)
    compare.add_argument("--no-pdf", action="store_true", help="skip compare.pdf")
    compare.set_defaults(handler=run_compare)

    diff = subparsers.add_parser(
        "diff", help="what got better or worse between two audits, per group",
        description="Per group: old and new accuracy, the change with its interval, and better / worse / no clear "
                    "change. The same family of tests as compare (overall, each grouping attribute, target x first "
                    "other attribute), Holm-adjusted, so the two agree: paired (Newcombe interval, McNemar) when both predictions "
                    "tables cover the same images, otherwise independent samples (Newcombe interval, "
                    "two-proportion test), and the output says which.")
    diff.add_argument("old", type=Path, metavar="OLD", help="the earlier audit.json or audit folder")
    diff.add_argument("new", type=Path, metavar="NEW", help="the later audit.json or audit folder")
    diff.add_argument("--out", type=Path, help="also write the table as Markdown (and CSV next to it)")
    _add_paired_test_options(diff)
    diff.add_argument("--fail-on-worse", action="store_true",
                      help="exit with status 1 when any group got worse (Holm-adjusted p below 1 - level)")
    diff.set_defaults(handler=run_diff)


def _add_paired_test_options(parser) -> None:
    """The confidence level that ``compare`` and ``diff`` share (one family of tests, Holm-adjusted), and the
    excess-loss bound."""
    parser.add_argument("--ci", type=cli_type("--ci", PARAMETERS["level"]), default=DEFAULT_CI,
                        metavar="LEVEL",
                        help=f"family-wise confidence level of the per-group tests (default: {DEFAULT_CI})")
    parser.add_argument("--max-excess-loss", type=cli_type("--max-excess-loss"), metavar="SHARE",
                        help="gate compression: exit 1 when a group large enough to judge loses more than SHARE "
                             "(0.01 = 1 point) beyond the whole set's accuracy change, its whole simultaneous "
                             "interval above it (every later model against the first); prints the verdict line")
    parser.add_argument("--inconclusive", type=cli_type("--inconclusive"), metavar=metavar("inconclusive"),
                        default=DEFAULT_INCONCLUSIVE,
                        help="with --max-excess-loss: what a group whose interval straddles the bound does to the "
                             f"exit code (default: {DEFAULT_INCONCLUSIVE})")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FaceauditError(f"{path} does not exist")


def run_report(args: argparse.Namespace) -> int:
    from faceaudit.auditing.report import render_report

    _check_exists(args.audit)
    timings: dict = {}
    # Render into a copy of the destination folder and swap it in whole: an interrupted or failed re-render leaves
    # the previous report (and, for the audit folder itself, the audit) as it was.
    home = args.out or (args.audit if args.audit.is_dir() else args.audit.parent)
    with replace_folder(writable_parent(home), copy_existing=True) as work:
        written = render_report(args.audit, thumbnails=not args.no_thumbnails, pdf=not args.no_pdf, out_dir=work,
                                timings=timings, progress=True)
        sizes = [(home / path.relative_to(work), path.stat().st_size) for path in written]
    for path, size in sizes:
        print(f"wrote {path} ({size / 1024:.0f} kB)")
    print(f"rendered in {timings['total_s']:.1f} s")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from faceaudit.auditing.comparison import compare
    from faceaudit.auditing.report.compare import write_comparison

    for path in [*args.audits, *args.history]:
        _check_exists(path)
    if len(args.audits) == 1:
        raise FaceauditError("compare needs at least two audit folders (or only --history files, to draw curves)")
    start = time.perf_counter()
    comparison = (compare(*args.audits, level=args.ci, max_excess_loss=args.max_excess_loss,
                          inconclusive=args.inconclusive) if args.audits else None)
    # built aside and swapped in whole (see run_report)
    with replace_folder(replaceable_dir(args.out, "compare.html", keep=(*args.audits, *args.history))) as work:
        written = write_comparison(comparison, work, history_files=args.history, pdf=not args.no_pdf,
                                   curves_runs=args.curves_runs)
    for path in written:
        print(f"wrote {args.out / path.relative_to(work)}")
    print(f"compared in {time.perf_counter() - start:.1f} s")
    if args.max_excess_loss is None:
        return 0
    if comparison is None:  # not judgeable is not a pass (as in diff)
        from faceaudit.auditing.comparison import excess_verdict

        bound = excess_verdict(None, args.max_excess_loss, args.inconclusive,
                               unjudged="needs at least two audits on the same images")
    else:
        bound = comparison.bound
    print(bound.line)
    return bound.code


def run_diff(args: argparse.Namespace) -> int:
    from faceaudit.auditing.comparison import diff
    from faceaudit.auditing.report.compare import diff_text
    from faceaudit.files import atomic_write

    _check_exists(args.old)
    _check_exists(args.new)
    result = diff(args.old, args.new, level=args.ci, max_excess_loss=args.max_excess_loss,
                  inconclusive=args.inconclusive, fail_on_worse=args.fail_on_worse)
    text = diff_text(result)
    sys.stdout.write(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, text)
        atomic_write(args.out.with_suffix(".csv"), result.table.to_csv(index=False))
        if result.excess is not None:
            atomic_write(args.out.with_name(f"{args.out.stem}-excess.csv"), result.excess.to_csv(index=False))
    if result.bound is not None:
        print(result.bound.line)
    return result.exit_code(args.inconclusive)
