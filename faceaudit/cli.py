"""The ``faceaudit`` command: one subcommand module per job, heavy imports deferred until a job runs."""

from __future__ import annotations

import argparse
import importlib
import sys

from faceaudit import __version__, console, files, interrupts
from faceaudit.errors import FaceauditError
from faceaudit.validation import CommandLineRefusal

#: Subcommand modules under faceaudit.commands; each defines ``register(subparsers)``.
COMMAND_MODULES = ("demo", "data", "train", "mitigate", "audit", "predict", "report", "export", "contract", "plan", "summary", "board")
#: Options whose values may begin with "-" (``--preprocess -1-1``), which argparse would read as an option.
_DASHED_VALUES = ("--preprocess",)


def _join_dashed_values(argv: list[str]) -> list[str]:
    """``--preprocess -1-1`` as ``--preprocess=-1-1``, so a value that starts with a dash is read as written."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in _DASHED_VALUES:
            value = next(it, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand registered)."""
    parser = argparse.ArgumentParser(
        prog="faceaudit",
        description="Audit face-attribute classifiers for whom they fail: per-group metrics with confidence "
        "intervals by race, gender and age band, rendered as HTML and PDF reports.",
    )
    parser.add_argument("--version", action="version", version=f"faceaudit {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's log lines and Python warnings (hidden by default), and print "
                        "each long step's time as it ends (inference 12.3 s)")
    parser.add_argument("--force", action="store_true",
                        help="replace an output folder that also holds files faceaudit did not write (they are kept "
                        "in the new folder)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"faceaudit.commands.{name}").register(subparsers)
    for sub in subparsers.choices.values():  # also after the command: faceaudit demo --verbose
        sub.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if "--force" not in sub._option_string_actions:  # contract init has its own --force (replace the file)
            sub.add_argument("--force", action="store_true", default=argparse.SUPPRESS,
                             help="replace an output folder that also holds files faceaudit did not write (they "
                             "are kept)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user mistakes end in one line on stderr and a non-zero exit code."""
    with interrupts.trapped():
        code, args = 130, None
        try:
            args = build_parser().parse_args(_join_dashed_values(sys.argv[1:] if argv is None else list(argv)))
            console.configure(verbose=getattr(args, "verbose", False))  # before any command imports TensorFlow
            files.allow_foreign(getattr(args, "force", False))
            code = int(args.handler(args) or 0)
        except (FaceauditError, CommandLineRefusal) as exc:
            if not interrupts.interrupted():
                print(f"faceaudit: error: {exc}", file=sys.stderr)
            code = exc.exit_code
        except ModuleNotFoundError as exc:  # an optional package (faceaudit[train], [inspect]) that is not installed
            from faceaudit.extras import missing_extra

            hint = missing_extra(exc, f"faceaudit {getattr(args, 'command', '')}".strip())
            if interrupts.interrupted():
                pass
            elif hint is None:
                code = _unexpected(exc, args, argv)
            else:
                print(f"faceaudit: error: {hint}", file=sys.stderr)
                code = 2
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            if not interrupts.interrupted():  # an error that a Ctrl-C caused is reported as the interrupt
                code = _unexpected(exc, args, argv)
        finally:
            files.allow_foreign(False)
            files.release_all()  # output-folder locks a failed command still held (main may run again in-process)
        # Ctrl-C ends in 130 (SIGTERM 143, SIGHUP 129) even when a library swallowed the KeyboardInterrupt
        if code == 130 or interrupts.interrupted():
            print(f"faceaudit: {interrupts.message()}", file=sys.stderr)
            return interrupts.exit_code()
        return code


def _unexpected(exc: BaseException, args, argv: list[str] | None) -> int:
    """An error faceaudit did not foresee: one line naming its type and first line (the traceback too with
    --verbose), and exit 2, never a traceback with exit 1 (the code CI reads as "a gate failed")."""
    verbose = getattr(args, "verbose", None)
    if verbose is None:  # the parser itself failed
        verbose = "--verbose" in (sys.argv[1:] if argv is None else list(argv))
    if verbose:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > 300:
        first = first[:300] + " ..."
    hint = "" if verbose else " (rerun with --verbose for the traceback)"
    print(f"faceaudit: error: {type(exc).__name__}: {first}{hint}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
