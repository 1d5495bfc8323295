"""Options and helpers shared by subcommands: the data source and how it is labelled."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.config import DEFAULT_SEED
from faceaudit.files import replaceable_dir, writable_dir, writable_parent  # noqa: F401  (re-exported for commands)
from faceaudit.validation import cli_type, metavar


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
    group.add_argument("--seed", type=cli_type("--seed"), default=DEFAULT_SEED,
                       help=f"seed for the split (default: {DEFAULT_SEED})")
    group.add_argument("--exclude", type=Path, metavar="CSV",
                       help="exclusion list (image_id, reason), e.g. from 'faceaudit data inspect'; those images are left out")
    group.add_argument("--path-col", default="path",
                       help="image path column of a labelled CSV (default: path, else file as in FairFace's CSVs)")
    group.add_argument("--race-col", default="race", help="race column of a labelled CSV: names or codes 0-4 (default: race)")
    group.add_argument("--gender-col", default="gender", help="gender column of a labelled CSV: names or 0/1 (default: gender)")
    group.add_argument("--age-col", default="age",
                       help="age column of a labelled CSV: years, or age bands such as 20-29 (default: age)")


def add_model_contract_options(parser: argparse.ArgumentParser, *, contract: bool = True) -> None:
    """The "model contract" options (``--output-layer``, ``--embedding-layer``, ``--input-size``, ``--preprocess``,
    ``--bgr``, ``--classes``, and ``--contract`` where the command reads model.toml): how to run a model that does
    not follow faceaudit's contract."""
    model = parser.add_argument_group(
        "model contract", "how to run a model that does not follow faceaudit's (float32 RGB [0, 255] input, layers "
        "<target>_probs and embedding); the defaults are faceaudit's")
    model.add_argument("--output-layer", default=None, metavar="NAME",
                       help="the class-probability output (layer or output name; default: the one output with one "
                       "value per class)")
    model.add_argument("--embedding-layer", default=None, metavar="NAME",
                       help="the layer (Keras) or output whose values are the embeddings (default: 'embedding', else "
                       "the layer before a Keras model's classifier; other formats: none)")
    model.add_argument("--input-size", type=cli_type("--input-size"), default=None, metavar="N",
                       help="image size in pixels for a model without a fixed input size (default: the model's)")
    model.add_argument("--preprocess", type=cli_type("--preprocess"), default=None, metavar=metavar("preprocess"),
                       help="what the model expects: raw [0, 255] RGB (faceaudit's models), 0-1, -1-1, caffe (BGR "
                       "minus the ImageNet means) or torch ([0, 1] minus the ImageNet mean, over its std) "
                       "(default: raw)")
    model.add_argument("--bgr", action="store_true", help="the model takes BGR channels (default: RGB)")
    model.add_argument("--classes", default=None, metavar="A,B,...",
                       help="the class of each output unit, in order (default: the schema's classes in its order)")
    if not contract:
        return
    model.add_argument("--contract", type=Path, default=None, metavar="TOML",
                       help="a model contract (model.toml) stating the input (size, channels, scaling, resize, "
                       "layout), each output (target, kind: softmax, logits, sigmoid or regression; classes mapped "
                       "to the schema's) and provenance; replaces the options above (see 'faceaudit contract init')")


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
