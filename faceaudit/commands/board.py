"""``faceaudit board``: one self-contained HTML page over every audit under a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.commands.common import replaceable_dir
from faceaudit.errors import FaceauditError
from faceaudit.files import replace_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the board subcommand."""
    board = subparsers.add_parser(
        "board", help="one HTML page comparing every audit under a folder",
        description="Find every audit.json under DIR (recursively) and write BOARD_DIR/board.html: one "
                    "self-contained page (no server, nothing fetched) with each audit's model, backbone, date, data "
                    "fingerprint, gates, overall and worst-group accuracy with intervals (MAE for an age regressor), "
                    "the lead grouping's groups side by side across models, the trend of each model audited several "
                    "times, and a link to each report.html. Every table sorts by its column heads. An audit.json "
                    "that cannot be read is listed with the reason.")
    board.add_argument("root", type=Path, metavar="DIR", help="folder holding audit folders (searched recursively)")
    board.add_argument("--out", type=Path, default=Path("reports/board"), metavar="BOARD_DIR",
                       help="output folder for board.html (default: reports/board); replaced as a whole")
    board.set_defaults(handler=run_board)


def run_board(args: argparse.Namespace) -> int:
    from faceaudit.auditing.report.board import BOARD_HTML, find_audits, require_audits, write_board
    from faceaudit.auditing.report.formatting import plural

    root, out = args.root, args.out
    collection = require_audits(find_audits(root))  # a missing or empty folder: one line, before any output
    if out.resolve() == root.resolve() or root.resolve().is_relative_to(out.resolve()):
        raise FaceauditError(f"--out {out} holds the audits it would list ({root}); choose a folder of its own, "
                             f"such as {root / 'board'}")
    with replace_folder(replaceable_dir(out, BOARD_HTML)) as work:
        path, _ = write_board(collection, work, links_from=out, root_label=root.as_posix())
        size = path.stat().st_size
    models = len({entry.model for entry in collection.entries})
    skipped = f"; skipped {len(collection.skipped)} unreadable audit.json" if collection.skipped else ""
    print(f"wrote {out / BOARD_HTML} ({size / 1024:.0f} kB): {plural(len(collection.entries), 'audit')} of "
          f"{plural(models, 'model')}{skipped}")
    for item in collection.skipped:
        print(f"skipped {root / item.name / 'audit.json'}: {item.reason}")
    return 0
