"""Atomic file writes: every output is written under a hidden sibling name and renamed into place, so a reader
(or an interrupted run) never sees half a file. New files get the usual umask-based permissions. Whole output
folders are built beside their destination and swapped in (``replace_folder``), so they are never half-written."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path

from faceaudit.errors import FaceauditError


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so format-sniffing writers work) to write inside the block;
    renamed onto ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def atomic_write(path: Path | str, data: bytes | str) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically and return it."""
    with atomic_path(path) as partial:
        partial.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def replace_folder(path: Path | str, *, copy_existing: bool = False) -> Iterator[Path]:
    """Build the whole output folder ``path`` in a hidden sibling, yielded to the block, and swap it in when the
    block succeeds (old folder renamed aside, new one renamed in, old one deleted). When the block fails or is
    interrupted the sibling is deleted, so ``path`` stays the previous complete folder, or absent if there was none
    (parent folders this created are removed again when left empty). ``copy_existing`` starts the sibling as a copy
    of the current folder, for commands that add to it (re-rendering a report)."""
    from faceaudit import interrupts

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FaceauditError(f"cannot write to {path}: it exists and is not a folder")
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        raise FaceauditError(f"cannot replace {path}: it is (or holds) the current folder; run from elsewhere")
    path = path.absolute()
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    work = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        if copy_existing and path.is_dir():
            shutil.copytree(path, work, symlinks=True)
        else:
            work.mkdir()
    except BaseException as exc:  # a Ctrl-C during the copy too
        with interrupts.deferred():
            shutil.rmtree(work, ignore_errors=True)
            _remove_empty(created)
        if isinstance(exc, OSError):
            raise FaceauditError(f"cannot write to {path}: {exc.strerror or exc}") from None
        raise
    try:
        yield work
        interrupts.check()  # a Ctrl-C that a library swallowed still stops the swap
        with interrupts.deferred():
            _swap(work, path)
    except BaseException:
        with interrupts.deferred():
            shutil.rmtree(work, ignore_errors=True)
            _remove_empty(created)
        raise


def _swap(new: Path, path: Path) -> None:
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if not path.exists():
        os.rename(new, path)
        return
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(path: Path) -> None:
    """Delete siblings left by an earlier process of this kind that was killed (its pid is gone)."""
    for sibling in path.parent.glob(f".{glob_escape(path.name)}.*-*"):
        kind, _, pid = sibling.name[len(path.name) + 2:].rpartition("-")
        if kind not in ("partial", "old") or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(sibling, ignore_errors=True)
        except OSError:
            pass


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check it can be written, or fail with one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".faceaudit-write-check"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise FaceauditError(f"cannot write to {path}: {exc.strerror or exc}") from None
    return path


def writable_parent(path: Path) -> Path:
    """Check, without creating anything, that the output folder ``path`` can be created or replaced (its nearest
    existing ancestor is a writable folder), or fail with one line; the folder itself is built by
    ``faceaudit.files.replace_folder``."""
    if path.exists() and not path.is_dir():
        raise FaceauditError(f"cannot write to {path}: it exists and is not a folder")
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FaceauditError(f"cannot write to {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise FaceauditError(f"cannot write to {path}: {ancestor} is not writable")
    return path


def new_output_dir(path: Path | str) -> Path:
    """``path`` checked before any work for a command that never overwrites (a run folder): new, or empty."""
    path = Path(path)
    writable_parent(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FaceauditError(f"{path} already exists and is not empty; choose a new --out")
    return path


def replaceable_dir(path: Path, marker: str, keep: tuple[Path | None, ...] = ()) -> Path:
    """Check that ``path`` may be replaced as a whole: new, empty, or an earlier output of the command (it holds
    ``marker``, e.g. audit.json). A folder of other files is refused rather than deleted; entries that are the
    command's own inputs (``keep``, carried into the new folder) do not count."""
    writable_parent(path)
    if path.is_dir():
        kept = {Path(p).resolve() for p in keep if p is not None}
        others = [entry for entry in path.iterdir() if entry.resolve() not in kept]
        if others and not (path / marker).exists():
            raise FaceauditError(f"{path} holds other files and no {marker}: it is replaced as a whole, so choose "
                                 f"a new or empty folder")
    return path


def carry_inside(paths, out_dir: Path, work: Path) -> None:
    """Copy the given inputs that live inside ``out_dir`` (the demo's run folder ``out/demo-cnn``, a gates file kept
    with its audit) into ``work``, the folder about to replace it, so replacing never deletes what was read."""
    root = Path(out_dir).resolve()
    for item in paths:
        if item is None or not Path(item).exists():
            continue
        try:
            inside = Path(item).resolve().relative_to(root)
        except ValueError:
            continue
        target = Path(work) / inside
        if Path(item).is_dir():
            shutil.copytree(item, target, symlinks=True, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)
