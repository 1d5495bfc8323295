"""Atomic file writes: every output is written under a hidden sibling name and renamed into place, so a reader
(or an interrupted run) never sees half a file. New files get the usual umask-based permissions. Whole output
folders are built beside their destination and swapped in (``replace_folder``), so they are never half-written."""

from __future__ import annotations

import atexit
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from glob import escape as glob_escape
from pathlib import Path

from faceaudit.errors import FaceauditError

#: The hidden list, in every folder ``replace_folder`` swaps in, of the entries faceaudit wrote there; anything else
#: in the folder is the user's (a reviewer's NOTES.txt) and is never deleted.
OWNED_FILE = ".faceaudit-files"
#: What faceaudit wrote into output folders before it kept ``OWNED_FILE``: in such a folder only entries matching
#: these (or written again by the new run) count as faceaudit's; anything else is the user's and is kept.
LEGACY_OUTPUTS = (
    "audit.json", "report.html", "report.pdf", "summary.md", "gates.xml", "predict.json", "data.json", "manifest.json",
    "compare.html", "compare.md", "compare.pdf", "predictions.csv", "per_class.csv", "group_metrics.csv",
    "disparities.csv", "confusion.csv", "reliability.csv", "calibration.csv", "embedding_groups.csv", "tsne.csv",
    "ranking.csv", "paired_tests.csv", "excess_change.csv", "exclusions.csv", "predictions_sample.csv",
    "model.keras", "model.tflite", "model.onnx", "float.onnx", "part-*.parquet", "part-*.embeddings.npy",
    "SYNTHETIC", "demo-cnn",
)
_force = False  # --force: replace a folder that holds the user's files (they are kept in the new one)
_held: dict[Path, int] = {}  # output folder -> the open lock file this process holds on it
_parents_made: dict[Path, list[Path]] = {}  # output folder -> the missing parents its lock created (deepest first)


def allow_foreign(force: bool) -> None:
    """Set by ``--force``: a folder holding files faceaudit did not write may be replaced (they are kept)."""
    global _force
    _force = bool(force)


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
        lock_output(path)
        _check_replaceable_tree(path)
        _remove_stale(path)
        if copy_existing and path.is_dir():
            shutil.copytree(path, work, symlinks=True)
        else:
            work.mkdir()
    except BaseException as exc:  # a Ctrl-C during the copy too
        with interrupts.deferred():
            shutil.rmtree(work, ignore_errors=True)
            release_output(path)
            _remove_empty(created)
        if isinstance(exc, OSError):
            raise FaceauditError(f"cannot write to {path}: {exc.strerror or exc}") from None
        raise
    try:
        yield work
        interrupts.check()  # a Ctrl-C that a library swallowed still stops the swap
        foreign = foreign_entries(path, {entry.name for entry in work.iterdir()})
        _carry_foreign(path, work, foreign)  # copied, so a failure before the swap leaves them where they were
        _write_owned(work, foreign)
        with interrupts.deferred():
            _swap(work, path)
            release_output(path)
    except BaseException:
        with interrupts.deferred():
            shutil.rmtree(work, ignore_errors=True)
            release_output(path)
            _remove_empty(created)
        raise


def foreign_entries(path: Path, written: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The entries of the output folder ``path`` that faceaudit did not write: those missing from its list of owned
    entries. In a folder written before faceaudit kept the list, those matching none of ``LEGACY_OUTPUTS`` and not
    among ``written`` (what the new run writes); in a folder of generated images (``SYNTHETIC``), none."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    listed = folder / OWNED_FILE
    entries = [entry.name for entry in folder.iterdir()]
    if listed.is_file():
        try:
            owned = set(listed.read_text(encoding="utf-8").splitlines()) | {OWNED_FILE}
        except (OSError, UnicodeDecodeError):
            owned = set()
        return sorted(name for name in entries if name not in owned)
    if (folder / "SYNTHETIC").is_file():
        return []
    return sorted(name for name in entries
                  if name not in written and not any(fnmatch(name, pattern) for pattern in LEGACY_OUTPUTS))


def _carry_foreign(path: Path, work: Path, names: list[str]) -> None:
    """Copy the user's entries of the old folder into the new one (those the command did not write itself)."""
    for name in names:
        source, target = path / name, work / name
        if target.exists() or target.is_symlink():
            continue
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target, follow_symlinks=False)


def _write_owned(work: Path, foreign: list[str]) -> None:
    """List in ``work`` the entries faceaudit wrote (all but the user's), for the next run to tell them apart."""
    names = sorted(entry.name for entry in work.iterdir() if entry.name not in foreign and entry.name != OWNED_FILE)
    (work / OWNED_FILE).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def _check_replaceable_tree(path: Path) -> None:
    """Refuse, before any work, to replace a folder with a read-only folder inside: its files could not be deleted
    and the old folder would be left aside for good."""
    if not path.is_dir():
        return
    for folder, _, _ in os.walk(path):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise FaceauditError(f"cannot replace {path}: {folder} is read-only; make it writable (chmod -R u+w) or "
                                 f"choose another --out")


def lock_output(path: Path | str) -> None:
    """Hold an exclusive lock on the output folder ``path`` (a ``.NAME.lock`` file beside it) until the folder is
    swapped in or this process ends, so a second faceaudit writing the same folder fails at once in one line
    rather than both printing "wrote" and one output being lost. Re-entrant within this process."""
    import fcntl

    path = Path(path).absolute()
    if path in _held:
        return
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # the lock lives beside the folder: take it now, not at the end
    except OSError:
        return  # an unwritable ancestor: reported in one line by the write that follows
    lock = path.with_name(f".{path.name}.lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            _remove_empty(created)
            return  # an unwritable parent: reported in one line by the write that follows
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            _remove_empty(created)
            raise FaceauditError(f"{path} is being written by another faceaudit{f' (pid {owner})' if owner else ''}; "
                                 f"wait for it to finish or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a file its last holder unlinked meanwhile
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[path] = fd
    _parents_made[path] = created


def release_output(path: Path | str) -> None:
    """Remove and release the lock ``lock_output`` took on ``path`` (nothing when this process holds none)."""
    path = Path(path).absolute()
    fd = _held.pop(path, None)
    if fd is None:
        return
    try:
        path.with_name(f".{path.name}.lock").unlink(missing_ok=True)
    except OSError:
        pass
    os.close(fd)
    _remove_empty(_parents_made.pop(path, []))  # the folders the lock made, when nothing was written into them


@atexit.register
def release_all() -> None:
    """Release every output-folder lock this process holds (at exit, and when a command ends in ``main``)."""
    for path in list(_held):
        release_output(path)


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
    lock_output(path)
    if path.is_dir():
        kept = {Path(p).resolve() for p in keep if p is not None}
        others = [entry for entry in path.iterdir() if entry.resolve() not in kept]
        if others and not (path / marker).exists():
            raise FaceauditError(f"{path} holds other files and no {marker}: it is replaced as a whole, so choose "
                                 f"a new or empty folder")
        foreign = [name for name in foreign_entries(path) if (path / name).resolve() not in kept]
        if foreign and not _force:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise FaceauditError(f"{path} holds {len(foreign)} file{'s' * (len(foreign) > 1)} faceaudit did not "
                                 f"write ({shown}); move {'them' if len(foreign) > 1 else 'it'} out, or pass --force "
                                 f"to replace the folder keeping {'them' if len(foreign) > 1 else 'it'}")
        _check_replaceable_tree(path)
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
