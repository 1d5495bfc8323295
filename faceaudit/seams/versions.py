"""One check for the version of every seam file (audit.json, run.json, the predictions table's Parquet metadata,
predict.json): a reader refuses a newer major version in one line, and reads older and same-major ones."""

from __future__ import annotations

from faceaudit.errors import FaceauditError


def _major(version: str) -> int | None:
    head = str(version).strip().split(".")[0]
    return int(head) if head.isdigit() else None


def check_version(found, supported: str, what: str, *, required: bool = True, oldest_major: int = 0) -> str | None:
    """``found`` (the version a file carries) as text when this faceaudit can read it.

    ``supported`` is the version this faceaudit writes. A file of a newer major version, of a major below
    ``oldest_major``, or whose version is not a ``major.minor`` number is refused with one FaceauditError naming
    ``what``. A missing version is refused when ``required``, else read as a file older than versioning (None)."""
    newest = _major(supported)
    if found is None or found == "":
        if required:
            raise FaceauditError(f"{what} version (missing) is not supported (this faceaudit reads {newest}.x)")
        return None
    text = found.decode() if isinstance(found, bytes) else str(found)
    major = _major(text)
    if major is None:
        raise FaceauditError(f"{what} version {text!r} is not a major.minor number (this faceaudit reads {newest}.x)")
    if major > newest:
        raise FaceauditError(f"{what} version {text} is newer than this faceaudit reads ({newest}.x, writes "
                             f"{supported}); upgrade faceaudit to read it")
    if major < oldest_major:
        raise FaceauditError(f"{what} version {text} is not supported (this faceaudit reads {newest}.x)")
    return text
