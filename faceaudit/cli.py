"""The ``faceaudit`` command: one subcommand module per job, heavy imports deferred until a job runs."""

from __future__ import annotations

import argparse
import importlib
import sys

from faceaudit import __version__
from faceaudit.errors import FaceauditError

#: Subcommand modules under faceaudit.commands; each defines ``register(subparsers)``.
COMMAND_MODULES = ("demo", "data", "train", "audit", "report")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand registered)."""
    parser = argparse.ArgumentParser(
        prog="faceaudit",
        description="Audit face-attribute classifiers for whom they fail: per-group metrics with confidence "
        "intervals by race, gender and age band, rendered as HTML and PDF reports.",
    )
    parser.add_argument("--version", action="version", version=f"faceaudit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"faceaudit.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user mistakes end in one line on stderr and a non-zero exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except FaceauditError as exc:
        print(f"faceaudit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("faceaudit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
