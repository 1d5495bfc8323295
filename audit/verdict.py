"""One verdict type for gates, ``compare`` and ``diff``, and one rule from verdicts to an exit code.

A verdict rests on an interval against a bound: ``pass`` when the whole interval is on the right side, ``fail`` when
it is wholly on the wrong side, ``inconclusive`` when it straddles the bound or nothing was large enough to judge.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from faceaudit.config import DEFAULT_INCONCLUSIVE
from faceaudit.errors import FaceauditError


class Verdict(StrEnum):
    """``pass``, ``fail`` or ``inconclusive``; equal to its string, so audit.json holds the plain word."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Status(StrEnum):
    """An audit's status (``AuditResult.status``, audit.json's top-level ``status``): its gates' verdict, or
    ``not gated`` when it had no gates to judge, so that an audit nobody gated never reads as a pass."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NOT_GATED = "not gated"


#: The status of an audit without gates (equal to the string ``"not gated"``).
NOT_GATED = Status.NOT_GATED


#: What an inconclusive verdict does to the exit code: ``fail`` (exit 1, the default) or ``pass``.
POLICIES = ("pass", "fail")


def combine(verdicts: Iterable[str]) -> Verdict:
    """The verdict over several: fail when any fails, else inconclusive when any is, else pass (none: pass)."""
    found = {Verdict(v) for v in verdicts}
    return Verdict.FAIL if Verdict.FAIL in found else Verdict.INCONCLUSIVE if Verdict.INCONCLUSIVE in found \
        else Verdict.PASS


def exit_code(verdicts: Iterable[str] | str | None, inconclusive: str = DEFAULT_INCONCLUSIVE) -> int:
    """The exit code of every command that judges: 1 when any verdict fails, or is inconclusive under
    ``inconclusive="fail"``; else 0 (no verdicts: 0)."""
    if inconclusive not in POLICIES:
        raise FaceauditError(f"inconclusive must be 'pass' or 'fail' (got {inconclusive!r})")
    if verdicts is None:
        return 0
    overall = combine([verdicts] if isinstance(verdicts, str) else verdicts)
    return int(overall == Verdict.FAIL or (overall == Verdict.INCONCLUSIVE and inconclusive == "fail"))


def policy_words(code: int, inconclusive: str) -> str:
    """``fails under --inconclusive fail`` / ``passes under --inconclusive pass``: how an inconclusive verdict
    counted."""
    return f"{'fails' if code else 'passes'} under --inconclusive {inconclusive}"
