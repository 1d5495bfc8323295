"""Options and helpers shared by subcommands: the data source and how it is labelled."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.config import DEFAULT_AGE_BANDS, DEFAULT_SEED
from faceaudit.errors import FaceauditError


def add_data_options(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """``DATA`` (or ``--data``) plus the options saying how to label and split it."""
    if positional:
        parser.add_argument("data", type=Path, metavar="DATA",
                            help="UTKFace folder or .tar.gz archive, or a labelled CSV/Parquet (e.g. a saved manifest)")
    group = parser.add_argument_group("labels and splits")
    group.add_argument("--age-bands", default=DEFAULT_AGE_BANDS, metavar="SPEC",
                       help=f"age bands, e.g. '0-9,10-19,...,70+', or a preset: default, decades (default: {DEFAULT_AGE_BANDS})")
    group.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed for the split (default: {DEFAULT_SEED})")
    group.add_argument("--exclude", type=Path, metavar="CSV",
                       help="exclusion list (image_id, reason), e.g. from 'faceaudit data inspect'; those images are left out")
    group.add_argument("--path-col", default="path", help="image path column of a labelled CSV (default: path)")
    group.add_argument("--race-col", default="race", help="race column of a labelled CSV: names or codes 0-4 (default: race)")
    group.add_argument("--gender-col", default="gender", help="gender column of a labelled CSV: names or 0/1 (default: gender)")
    group.add_argument("--age-col", default="age", help="age column of a labelled CSV, in years (default: age)")


def dataset_from_args(args: argparse.Namespace, source: Path | None = None):
    """Load the dataset the data options describe (``source`` overrides ``args.data``)."""
    from faceaudit.audit.labels import AgeBands
    from faceaudit.audit.manifest import ColumnMap, load_dataset

    source = source if source is not None else args.data
    columns = ColumnMap(args.path_col, args.race_col, args.gender_col, args.age_col)
    return load_dataset(source, exclude=args.exclude, columns=columns, age_bands=AgeBands.parse(args.age_bands),
                        seed=args.seed)


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
    import os

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
