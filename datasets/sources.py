"""Where images come from: a folder, or a ``.tar.gz`` archive unpacked safely into the cache."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from faceaudit.config import IMAGE_SUFFIXES, cache_dir
from faceaudit.errors import FaceauditError

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    """Whether ``path`` names a tar archive by its suffix."""
    return path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_archive_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member, after refusing absolute paths, ``..``, links and anything but files and folders."""
    members = archive.getmembers()
    for member in members:
        name = PurePosixPath(member.name)
        if member.name.startswith(("/", "\\")) or name.is_absolute() or ":" in name.parts[0]:
            raise FaceauditError(f"archive member {member.name!r} has an absolute path; refusing the archive")
        if ".." in name.parts:
            raise FaceauditError(f"archive member {member.name!r} climbs out with '..'; refusing the archive")
        if member.issym() or member.islnk():
            raise FaceauditError(f"archive member {member.name!r} is a link; refusing the archive")
        if not (member.isfile() or member.isdir()):
            raise FaceauditError(f"archive member {member.name!r} is not a regular file; refusing the archive")
    return members


def unpack_archive(archive_path: Path, cache: Path | None = None) -> Path:
    """Unpack a checked archive once into ``cache`` (keyed by its SHA-256) and return that folder.

    Members are validated before anything is written; unpacking goes to a temporary folder renamed into
    place at the end, so an interrupted or refused unpack leaves nothing half-written.
    """
    cache = cache or cache_dir()
    target = cache / "archives" / f"{archive_path.name.split('.')[0]}-{file_sha256(archive_path)[:16]}"
    if target.is_dir():
        return target
    try:
        archive = tarfile.open(archive_path)
    except (tarfile.TarError, OSError) as exc:
        # tarfile's ReadError lists every compression it tried, one per line: the user gets one line
        reason = ("not a tar archive (plain, gzip, bzip2 or xz)" if isinstance(exc, tarfile.ReadError)
                  else (str(exc).strip().splitlines() or [type(exc).__name__])[0])
        raise FaceauditError(f"cannot read archive {archive_path}: {reason}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive:
        members = check_archive_members(archive)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
        try:
            # The "data" filter is a second guard over the checks above; Pythons before 3.11.4 (Debian 12's 3.11.2)
            # lack it and extract the checked members as they are.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            archive.extractall(staging, members=members, **safe)
            staging.rename(target)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise FaceauditError(f"cannot unpack archive {archive_path}: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def list_images(source: Path, cache: Path | None = None) -> tuple[Path, list[Path]]:
    """The folder holding the images and their paths, sorted, for a folder or an archive."""
    if not source.exists():
        raise FaceauditError(f"data source {source} does not exist")
    root = unpack_archive(source, cache) if source.is_file() and is_archive(source) else source
    if not root.is_dir():
        raise FaceauditError(f"data source {source} is neither a folder nor a .tar.gz archive of images")
    images = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise FaceauditError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {source}")
    return root, images
