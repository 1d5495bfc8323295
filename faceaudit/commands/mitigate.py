"""``faceaudit mitigate``: per-class biases fitted on a run's validation split, written as a new run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.validation import cli_type


def register(subparsers) -> None:
    """Add the ``mitigate`` subcommand."""
    from faceaudit.api import mitigate as api_mitigate

    parser = subparsers.add_parser(
        "mitigate", help="shift a trained run's per-class decisions to lift a failing group; writes a new run folder",
        description="Fit per-class biases on the log-probabilities of a trained run, on its validation split, and "
                    "write a new run folder holding the biased model (it audits, compares and exports like any "
                    "run). Compare the two audits with 'faceaudit compare' to see what the remedy cost. "
                    "Training-time remedies are options of 'faceaudit train': --class-weights, --logit-adjust.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", type=Path, metavar="RUN", help="finished run folder (model.keras and run.json)")
    parser.add_argument("--out", type=Path, required=True, help="new run folder to write")
    parser.add_argument("--method", type=cli_type("--method", of=api_mitigate), metavar="{equal-recall,logit-adjust}",
                        default="equal-recall",
                        help="equal-recall: raise the lowest per-class recall as far as --max-accuracy-drop allows "
                             "(a multiclass analogue of fairlearn's ThresholdOptimizer); logit-adjust: subtract "
                             "TAU x log(training class frequency) (Menon et al. 2021)")
    parser.add_argument("--max-accuracy-drop", type=float, default=1.5, metavar="POINTS",
                        help="equal-recall: validation accuracy may fall by at most this many percentage points")
    parser.add_argument("--tau", type=cli_type("--tau", of=api_mitigate), default=1.0, help="logit-adjust: strength (1: balanced error)")
    parser.add_argument("--data", type=Path, help="the run's images (default: the source run.json names)")
    parser.add_argument("--batch-size", type=cli_type("--batch-size"), default=64)
    parser.add_argument("--quiet", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="no progress bars (default: show them)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Mitigate, then print the validation trade-off the biases were chosen by."""
    from faceaudit.errors import FaceauditError
    from faceaudit.extras import require

    require("tensorflow", "train", "faceaudit mitigate")
    from faceaudit.api import mitigate
    from faceaudit.seams.run import RunRecord

    if not 0 <= args.max_accuracy_drop < 100:
        raise FaceauditError(f"--max-accuracy-drop is in percentage points, 0 to 100 (got {args.max_accuracy_drop})")
    out = mitigate(args.run, args.out, method=args.method, data=args.data, tau=args.tau,
                   max_accuracy_drop=args.max_accuracy_drop / 100, batch_size=args.batch_size,
                   progress=getattr(args, "progress", True))
    record = RunRecord.read(out)
    val = record.mitigation["val"]
    worst = min(val["recall_before"], key=lambda c: val["recall_before"][c])
    print(f"mitigated run written to {out}: validation accuracy {val['accuracy_before']:.1%} -> "
          f"{val['accuracy_after']:.1%}, {worst} recall {val['recall_before'][worst]:.1%} -> "
          f"{val['recall_after'][worst]:.1%}; test accuracy {record.test_accuracy:.1%} "
          f"(audit both and run 'faceaudit compare' for the paired test)")
    return 0
