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
