"""``faceaudit summary``: an audit's verdict as summary.md, a GitHub job summary / PR comment, a GitLab MR note or
JSON. It reads and never judges again: exit 0 whatever the verdict, 2 when the audit cannot be read."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from faceaudit.errors import FaceauditError

#: The forms (faceaudit.auditing.report.review_summary.FORMATS; named here so the parser builds without the report
#: layer's imports).
FORMATS = ("markdown", "github", "gitlab", "json")
#: The variable GitHub Actions sets in every step: the job summary file that ``--step-summary`` appends to.
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summary", help="the audit's verdict for a review: Markdown, GitHub, GitLab or JSON",
        description="Print an audit's verdict (status, gates, worst groups, baseline changes) in a form for a review: "
                    "markdown (summary.md), github (a job summary or pull-request comment: folded tables, absolute "
                    "links with --report-url), gitlab (a merge-request note) or json (the machine-readable verdict, "
                    "faceaudit/schemas/summary.schema.json). It reads and never judges: exit 0 whatever the verdict "
                    "(the audit's own exit code is what fails a CI job), 2 when the audit cannot be read.")
    parser.add_argument("audit", type=Path, metavar="AUDIT", help="audit folder or its audit.json")
    parser.add_argument("--format", choices=FORMATS, default="markdown", dest="fmt",
                        help="markdown (default), github, gitlab or json")
    parser.add_argument("--report-url", metavar="URL",
                        help="where the audit folder is published (e.g. a GitLab job's artifacts/file/... URL): "
                             "links become URL/report.html, URL/report.pdf, URL/audit.json")
    parser.add_argument("--artifact-url", metavar="URL",
                        help="a CI artifact that holds the report (e.g. actions/upload-artifact's artifact-url), "
                             "linked when there is no --report-url")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, metavar="FILE", help="write the summary to FILE (default: stdout)")
    where.add_argument("--step-summary", action="store_true",
                       help=f"append the summary to the GitHub job summary (the file ${STEP_SUMMARY_ENV} names)")
    parser.set_defaults(handler=run_summary)


def run_summary(args: argparse.Namespace) -> int:
    from faceaudit.auditing.report.review_summary import ReportLinks, render_summary
    from faceaudit.auditing.result import load_audit
    from faceaudit.files import atomic_write

    step_file = None
    if args.step_summary:  # checked before any work: a misplaced flag is one line, not a half-done run
        step_file = os.environ.get(STEP_SUMMARY_ENV)
        if not step_file:
            raise FaceauditError(f"--step-summary appends to the file ${STEP_SUMMARY_ENV} names, and it is not set "
                                 "(GitHub Actions sets it in each step); use --out FILE elsewhere")
    if not args.audit.exists():
        raise FaceauditError(f"{args.audit} does not exist")
    result = load_audit(args.audit)
    folder = args.audit if args.audit.is_dir() else args.audit.parent
    # an empty URL (a CI variable that is not set) means no link, not an error
    links = ReportLinks.of(folder, report_url=args.report_url or None, artifact_url=args.artifact_url or None)
    text = render_summary(result, args.fmt, links)
    if step_file:
        try:
            with open(step_file, "a", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as exc:
            raise FaceauditError(f"cannot append to ${STEP_SUMMARY_ENV} ({step_file}): {exc.strerror or exc}") from None
        print(f"appended the {args.fmt} summary to ${STEP_SUMMARY_ENV}", file=sys.stderr)
    elif args.out is not None:
        try:
            atomic_write(args.out, text)
        except OSError as exc:
            raise FaceauditError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
