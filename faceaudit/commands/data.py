"""``faceaudit data``: look at a labelled face set, save its manifest, export TFRecords."""

from __future__ import annotations

import argparse
import sys
from numbers import Integral, Real
from pathlib import Path

from faceaudit.errors import FaceauditError
from faceaudit.validation import Interval, cli_type

from .common import add_data_options, dataset_from_args, replaceable_dir, writable_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="summarise a labelled face set, save its manifest, export TFRecords",
                                 description="Work with a labelled face set: UTKFace folder/archive or a labelled CSV.")
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)

    summary = actions.add_parser("summary", help="counts by race, gender, age band and race x gender; excluded files",
                                 description="Print counts by race, gender, age band, race x gender and split, "
                                 "and every excluded or irregular file with the reason.")
    add_data_options(summary, schema=True)
    summary.set_defaults(handler=run_summary)

    manifest = actions.add_parser("manifest", help="write the manifest (CSV or Parquet)",
                                  description="Write the manifest: image path, SHA-256, age, gender, race, age band, split.")
    add_data_options(manifest, schema=True)
    manifest.add_argument("--out", type=Path, required=True, help="output file, .csv or .parquet")
    manifest.set_defaults(handler=run_manifest)

    export = actions.add_parser("export-tfrecords", help="write sharded GZIP TFRecords per split (the seed's format)",
                                description="Write train/val/test as sharded GZIP TFRecords holding the original "
                                "image bytes, image id, SHA-256, age, gender and race codes.")
    add_data_options(export, schema=True)
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument("--shards", type=int, default=4, help="shards per split (default: 4)")
    export.set_defaults(handler=run_export)

    from faceaudit import config

    inspect = actions.add_parser(
        "inspect", help="data report: composition, image properties, anomalies, non-faces, duplicates, labels",
        description="Inspect a labelled face set: composition, brightness and contrast by group, Isolation Forest "
        "outliers, MTCNN non-faces (--faces), exact and near duplicates and leakage across splits, label sanity. "
        "Writes data.json, tables/*.csv, an exclusion list (image_id, reason) for --exclude, report.html and report.pdf.")
    add_data_options(inspect, schema=True)
    inspect.add_argument("--out", type=Path, default=Path(config.INSPECT_OUT_DIR),
                         help=f"output folder (default: {config.INSPECT_OUT_DIR})")
    inspect.add_argument("--faces", action="store_true", help="also run the MTCNN face check (slow: ~50 img/s on 2 cores)")
    inspect.add_argument("--face-confidence", type=cli_type("--face-confidence", Interval(Real, 0, 1, closed="right")), default=config.FACE_CONFIDENCE,
                         help=f"MTCNN confidence an image needs to count as a face (default: {config.FACE_CONFIDENCE})")
    inspect.add_argument("--face-size", type=cli_type("--face-size", Interval(Integral, 48, None)), default=config.FACE_IMAGE_SIZE,
                         help=f"side in px images are resized to for MTCNN (default: {config.FACE_IMAGE_SIZE})")
    inspect.add_argument("--near-distance", type=cli_type("--near-distance", Interval(Integral, 0, 64)), default=config.NEAR_DISTANCE,
                         help=f"largest pHash Hamming distance for a near-duplicate (default: {config.NEAR_DISTANCE})")
    inspect.add_argument("--outlier-share",
                         type=cli_type("--outlier-share", Interval(Real, 0, 0.5, closed="neither")), default=config.OUTLIER_SHARE,
                         help=f"share of images the Isolation Forest flags (default: {config.OUTLIER_SHARE})")
    inspect.add_argument("--min-group-size", type=cli_type("--min-group-size"), default=config.DEFAULT_MIN_GROUP_SIZE,
                         help=f"smallest group worth auditing (default: {config.DEFAULT_MIN_GROUP_SIZE})")
    inspect.add_argument("--exclude-kinds", default=",".join(config.DEFAULT_EXCLUDE_KINDS), metavar="KINDS",
                         help="findings written to exclusions.csv, comma-separated, or 'none'; from "
                         f"{', '.join(config.EXCLUDE_KINDS)} (default: {','.join(config.DEFAULT_EXCLUDE_KINDS)})")
    inspect.add_argument("--no-pdf", action="store_true", help="write report.html only")
    inspect.set_defaults(handler=run_inspect)


def format_summary(dataset) -> str:
    """The text ``data summary`` prints."""
    from faceaudit.datasets.manifest import summarise

    counts = summarise(dataset)
    schema = dataset.schema
    crosstab = counts.pop(f"{schema.target}_x_gender", None)
    n_race_missing = int((dataset.excluded["reason"] == "no race field in file name").sum())
    lines = [
        f"source: {dataset.source}" + ("  (SYNTHETIC faces, not real people)" if dataset.synthetic else ""),
        f"files: {dataset.n_files:,}   with a race label: {dataset.n_files - n_race_missing:,}   "
        f"usable: {len(dataset.manifest):,}   excluded: {len(dataset.excluded):,}   "
        f"kept with warnings: {len(dataset.warnings):,}",
        "",
    ]
    if schema.name != "utkface":
        lines[1:1] = [f"label schema: {schema.name} (target: {schema.target})"]
    for key, series in counts.items():
        lines.append(f"by {schema.label(key)}:")
        width = max([10, *(len(str(label)) for label in series.index)])
        lines += [f"  {str(label):<{width}} {count:>7,}  {count / len(dataset.manifest):6.1%}"
                  for label, count in series.items()]
        lines.append("")
    if crosstab is not None:
        lines.append(f"{schema.label(schema.target)} x gender:")
        lines += ["  " + line for line in crosstab.to_string().splitlines()]
    if len(dataset.excluded):
        lines += ["", "excluded:"]
        lines += [f"  {row.image_id}: {row.reason}" for row in dataset.excluded.itertuples()]
    if len(dataset.warnings):
        lines += ["", "kept, with warnings:"]
        lines += [f"  {row.image_id}: {row.warning}" for row in dataset.warnings.itertuples()]
    return "\n".join(lines)


def run_summary(args: argparse.Namespace) -> int:
    print(format_summary(dataset_from_args(args)))
    return 0


def run_manifest(args: argparse.Namespace) -> int:
    from faceaudit.datasets.manifest import save_manifest

    if args.out.suffix.lower() not in (".csv", ".parquet"):
        raise FaceauditError(f"--out {args.out} must end in .csv or .parquet")
    writable_dir(args.out.parent)
    dataset = dataset_from_args(args)
    save_manifest(dataset.manifest, args.out)
    print(f"wrote {args.out} ({len(dataset.manifest):,} images, {len(dataset.excluded):,} excluded)")
    from faceaudit.datasets.manifest import describe_image_problems

    if note := describe_image_problems(dataset):
        print(f"faceaudit: note: {note}", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    if args.shards < 1:
        raise FaceauditError("--shards must be at least 1")
    from faceaudit.extras import require

    require("tensorflow", "train", "faceaudit data export-tfrecords")
    writable_dir(args.out)
    dataset = dataset_from_args(args)
    from faceaudit.datasets.tfdata import export_tfrecords

    paths = export_tfrecords(dataset.manifest, args.out, shards=args.shards, schema=dataset.schema)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} shards, {total / 1e6:.1f} MB, to {args.out}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from faceaudit.datasets.inspect.exclusions import parse_kinds

    try:
        kinds = parse_kinds(args.exclude_kinds)
    except ValueError as exc:
        raise FaceauditError(f"--exclude-kinds: {exc}") from None
    from faceaudit.extras import require

    require("imagehash", "inspect", "faceaudit data inspect")
    if args.faces:  # MTCNN runs on TensorFlow: both extras
        require("tensorflow", "all", "faceaudit data inspect --faces")
        require("mtcnn", "all", "faceaudit data inspect --faces")
    replaceable_dir(args.out, "data.json", keep=(args.data, args.exclude))
    dataset = dataset_from_args(args)
    from faceaudit.datasets.inspect import InspectOptions, inspect_dataset, render_data_report, write_outputs
    from faceaudit.files import replace_folder

    options = InspectOptions(faces=args.faces, face_confidence=args.face_confidence, face_image_size=args.face_size,
                             near_distance=args.near_distance, outlier_share=args.outlier_share,
                             min_group_size=args.min_group_size, exclude_kinds=kinds, seed=args.seed)
    inspection = inspect_dataset(dataset, options)
    with replace_folder(args.out) as work:  # built aside and swapped in whole: never half an old, half a new report
        write_outputs(inspection, work)
        render_data_report(inspection, work, pdf=not args.no_pdf)
    print(inspection_summary(inspection, args.out, args.no_pdf))
    return 0


def inspection_summary(inspection, out: Path, no_pdf: bool = False) -> str:
    """The lines ``data inspect`` prints: the counts found and where the files are."""
    from faceaudit.datasets.inspect.outputs import summary

    facts = summary(inspection)
    leaks = ", ".join(f"{pair} {kinds['exact'] + kinds['near']}" for pair, kinds in facts["duplicates"]["leakage"].items())
    faces = f"{facts['faces']['non_faces']:,} ({facts['faces']['images_per_second']:.1f} img/s)" if facts["faces"] else "not run (--faces)"
    return "\n".join([
        f"images: {facts['files']['usable']:,} usable of {facts['files']['total']:,}",
        f"dark: {facts['exposure']['dark']} (+{facts['exposure']['dark-borderline']} borderline)   "
        f"washed out: {facts['exposure']['washed-out']}   outliers: {facts['outliers']['flagged']}   non-faces: {faces}",
        f"duplicate pairs: {facts['duplicates']['exact_pairs']} exact, {facts['duplicates']['near_pairs']} near   "
        f"cross-split: {leaks}",
        f"label conflicts: {facts['labels']['conflicting_pairs']}   small test cells: "
        f"{facts['small_groups']['cells_too_small_in_test']}   excluded: {facts['exclusions']['images']:,}",
        f"wrote {out}/: report.html{'' if no_pdf else ', report.pdf'}, data.json, exclusions.csv, tables/",
    ])
