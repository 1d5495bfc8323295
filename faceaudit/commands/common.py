"""Options and helpers shared by subcommands: the data source and how it is labelled."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.config import DEFAULT_SEED
from faceaudit.files import replaceable_dir, writable_dir, writable_parent  # noqa: F401  (re-exported for commands)


def add_schema_option(parser, *, help_suffix: str = "", show_default: bool = True) -> None:
    """``--schema NAME``: the label schema preset (utkface, fairface/fairface7, fairface4)."""
    from faceaudit.taxonomy import SCHEMAS

    default = " (default: utkface)" if show_default else ""
    parser.add_argument("--schema", default="utkface", choices=sorted(SCHEMAS), metavar="NAME",
                        help=f"label schema: {', '.join(SCHEMAS)}{default}{help_suffix}")


def add_data_options(parser: argparse.ArgumentParser, *, positional: bool = True, schema: bool = False) -> None:
    """``DATA`` (or ``--data``) plus the options saying how to label and split it; ``schema`` adds ``--schema``
    (a command that defines its own ``--schema`` leaves it off; :func:`dataset_from_args` reads either)."""
    from faceaudit.taxonomy import DEFAULT_AGE_BANDS

    if positional:
        parser.add_argument("data", type=Path, metavar="DATA",
                            help="UTKFace folder or .tar.gz archive, or a labelled CSV/Parquet (e.g. a saved manifest, "
                                 "or FairFace's file,age,gender,race labels with --schema fairface)")
    group = parser.add_argument_group("labels and splits")
    if schema:
        add_schema_option(group, help_suffix="; a labelled CSV's columns are the schema's attributes")
    group.add_argument("--age-bands", default=DEFAULT_AGE_BANDS, metavar="SPEC",
                       help=f"age bands, e.g. '0-9,10-19,...,70+', or a preset: default, decades (default: {DEFAULT_AGE_BANDS})")
    group.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed for the split (default: {DEFAULT_SEED})")
    group.add_argument("--exclude", type=Path, metavar="CSV",
                       help="exclusion list (image_id, reason), e.g. from 'faceaudit data inspect'; those images are left out")
    group.add_argument("--path-col", default="path",
                       help="image path column of a labelled CSV (default: path, else file as in FairFace's CSVs)")
    group.add_argument("--race-col", default="race", help="race column of a labelled CSV: names or codes 0-4 (default: race)")
    group.add_argument("--gender-col", default="gender", help="gender column of a labelled CSV: names or 0/1 (default: gender)")
    group.add_argument("--age-col", default="age",
                       help="age column of a labelled CSV: years, or age bands such as 20-29 (default: age)")


def dataset_from_args(args: argparse.Namespace, source: Path | None = None):
    """Load the dataset the data options describe (``source`` overrides ``args.data``)."""
    from faceaudit.datasets.labels import AgeBands
    from faceaudit.datasets.manifest import ColumnMap, load_dataset
    from faceaudit.taxonomy import get_schema

    source = source if source is not None else args.data
    columns = ColumnMap(args.path_col, args.race_col, args.gender_col, args.age_col)
    schema = get_schema(getattr(args, "schema", None))
    return load_dataset(source, exclude=args.exclude, columns=columns, age_bands=AgeBands.parse(args.age_bands),
                        seed=args.seed, schema=schema)
