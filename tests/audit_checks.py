"""Checks every audit.json the tests (and bench/bench_coverage.py) write must pass, whatever wrote it.

:func:`check_written_audits` finds the audit.json files written under some folders since a moment and fails on
any problem :func:`audit_problems` reports; tests/conftest.py runs it after every test. Add further checks of an
audit.json (a JSON-Schema validation, say) to :func:`audit_problems`, and both the tests and the benchmark get them.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path


def intervals(node, path: str = "$") -> Iterator[tuple[str, list]]:
    """Every interval in a JSON tree: a ``ci`` (or ``*_ci``) list of two numbers, with its path."""
    if isinstance(node, dict):
        for key, child in node.items():
            where = f"{path}.{key}"
            if (key == "ci" or key.endswith("_ci")) and isinstance(child, list) and len(child) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in child):
                yield where, child
            else:
                yield from intervals(child, where)
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from intervals(child, f"{path}[{i}]")


def zero_width_intervals(audit: dict) -> list[tuple[str, list]]:
    """The intervals of an audit whose lower bound is not below their upper bound (finite ones only: an
    unbounded ratio is ``[x, inf]``, written as null)."""
    return [(where, ci) for where, ci in intervals(audit)
            if all(math.isfinite(v) for v in ci) and not ci[1] > ci[0]]


_VALIDATOR = []


def schema_problems(audit: dict) -> list[str]:
    """Where an audit.json faceaudit wrote breaks the shipped JSON Schema (faceaudit/schemas/audit.schema.json),
    one line each. Files without ``faceaudit_version`` were not written by faceaudit (a test's deliberately broken
    audit.json) and are not validated."""
    if "faceaudit_version" not in audit:
        return []
    if not _VALIDATOR:
        import jsonschema

        from faceaudit.auditing.json_schema import shipped_schema

        _VALIDATOR.append(jsonschema.Draft202012Validator(shipped_schema()))
    errors = sorted(_VALIDATOR[0].iter_errors(audit), key=lambda e: list(e.absolute_path))
    lines = [f"schema: $.{'.'.join(str(p) for p in e.absolute_path)}: {e.message[:160]}" for e in errors[:5]]
    return lines + ([f"schema: and {len(errors) - 5} more"] if len(errors) > 5 else [])


def audit_problems(audit: dict) -> list[str]:
    """Everything wrong with one audit.json's content, one line each (empty: sound): zero-width intervals and
    breaks of the shipped JSON Schema."""
    problems = schema_problems(audit)
    zero = zero_width_intervals(audit)
    if not zero:
        return problems
    shown = "; ".join(f"{where} = {ci}" for where, ci in zero[:5])
    return [f"{len(zero)} zero-width interval(s): {shown}" + (" ..." if len(zero) > 5 else ""), *problems]


#: Directory listings kept between walks: path -> (the directory's mtime_ns, its subfolders, holds an audit.json).
#: A directory whose mtime is unchanged has the same entries, so it is not listed again (its subfolders still are
#: visited, and a cached audit.json is still stat-ed: a file rewritten in place leaves its folder's mtime alone).
_LISTINGS: dict[str, tuple[int, list[str], bool]] = {}


def _listing(folder: str) -> tuple[list[str], bool]:
    """A folder's subfolders and whether it holds an audit.json, listed again only when the folder changed."""
    stamp = os.stat(folder).st_mtime_ns
    cached = _LISTINGS.get(folder)
    if cached and cached[0] == stamp:
        return cached[1], cached[2]
    subdirs, has_audit = [], False
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            elif entry.name == "audit.json":
                has_audit = True
    if time.time_ns() - stamp > 1_000_000_000:  # a folder changed this very second may change again within the
        _LISTINGS[folder] = (stamp, subdirs, has_audit)  # file system's timestamp tick, unseen: list it next time
    return subdirs, has_audit


def written_audits(roots: Iterable[str | Path], since: float, skip: Iterable[str | Path] = ()) -> list[Path]:
    """audit.json files under ``roots`` modified at or after ``since`` (seconds since the epoch); folders in
    ``skip`` (an unpacked dataset cache) are not entered. Called after every test over a growing temporary folder,
    so folders that did not change since the last walk are not listed again."""
    skipped = {form(s) for s in skip if s for form in (os.path.abspath, os.path.realpath)}  # symlinks are not entered
    found = []
    stack = [str(root) for root in roots if root and os.path.isdir(root)]
    while stack:
        folder = stack.pop()
        try:
            subdirs, has_audit = _listing(folder)
        except OSError:  # removed while walking
            continue
        stack += [d for d in subdirs if d not in skipped]
        if has_audit:
            path = Path(folder) / "audit.json"
            try:
                if path.stat().st_mtime >= since:
                    found.append(path)
            except OSError:
                continue
    return found


def check_written_audits(roots: Iterable[str | Path], since: float, skip: Iterable[str | Path] = (),
                         seen: dict | None = None) -> list[Path]:
    """Check every audit.json written under ``roots`` since ``since``; raise AssertionError naming each file and
    its problems. ``seen`` (path -> modification time) skips files already checked unchanged. Returns the files
    checked."""
    checked, problems = [], []
    for path in written_audits(roots, since, skip):
        try:
            stamp = path.stat().st_mtime_ns
            if seen is not None and seen.get(path) == stamp:
                continue
            audit = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable ({exc})")
            continue
        if seen is not None:
            seen[path] = stamp
        checked.append(path)
        problems += [f"{path}: {line}" for line in audit_problems(audit)]
    if problems:
        raise AssertionError("audit.json check failed:\n" + "\n".join(problems))
    return checked
