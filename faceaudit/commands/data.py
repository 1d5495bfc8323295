"""``faceaudit data``: look at a labelled face set, save its manifest, export TFRecords."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.errors import FaceauditError

from .common import add_data_options, dataset_from_args, writable_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="summarise a labelled face set, save its manifest, export TFRecords",
                                 description="Work with a labelled face set: UTKFace folder/archive or a labelled CSV.")
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)

    summary = actions.add_parser("summary", help="counts by race, gender, age band and race x gender; excluded files",
                                 description="Print counts by race, gender, age band, race x gender and split, "
                                 "and every excluded or irregular file with the reason.")
    add_data_options(summary)
    summary.set_defaults(handler=run_summary)

    manifest = actions.add_parser("manifest", help="write the manifest (CSV or Parquet)",
                                  description="Write the manifest: image path, SHA-256, age, gender, race, age band, split.")
    add_data_options(manifest)
    manifest.add_argument("--out", type=Path, required=True, help="output file, .csv or .parquet")
    manifest.set_defaults(handler=run_manifest)

    export = actions.add_parser("export-tfrecords", help="write sharded GZIP TFRecords per split (the seed's format)",
                                description="Write train/val/test as sharded GZIP TFRecords holding the original "
                                "image bytes, image id, SHA-256, age, gender and race codes.")
    add_data_options(export)
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument("--shards", type=int, default=4, help="shards per split (default: 4)")
    export.set_defaults(handler=run_export)


def format_summary(dataset) -> str:
    """The text ``data summary`` prints."""
    from faceaudit.audit.manifest import summarise

    counts = summarise(dataset)
    n_race_missing = int((dataset.excluded["reason"] == "no race field in file name").sum())
    lines = [
        f"source: {dataset.source}" + ("  (SYNTHETIC faces, not real people)" if dataset.synthetic else ""),
        f"files: {dataset.n_files:,}   with a race label: {dataset.n_files - n_race_missing:,}   "
        f"usable: {len(dataset.manifest):,}   excluded: {len(dataset.excluded):,}   "
        f"kept with warnings: {len(dataset.warnings):,}",
        "",
    ]
    for title, key in (("race", "race"), ("gender", "gender"), ("age band", "age_band"), ("split", "split")):
        series = counts[key]
        lines.append(f"by {title}:")
        lines += [f"  {str(label):<10} {count:>7,}  {count / len(dataset.manifest):6.1%}" for label, count in series.items()]
        lines.append("")
    lines.append("race x gender:")
    lines += ["  " + line for line in counts["race_x_gender"].to_string().splitlines()]
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
    from faceaudit.audit.manifest import save_manifest

    if args.out.suffix.lower() not in (".csv", ".parquet"):
        raise FaceauditError(f"--out {args.out} must end in .csv or .parquet")
    writable_dir(args.out.parent)
    dataset = dataset_from_args(args)
    save_manifest(dataset.manifest, args.out)
    print(f"wrote {args.out} ({len(dataset.manifest):,} images, {len(dataset.excluded):,} excluded)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    if args.shards < 1:
        raise FaceauditError("--shards must be at least 1")
    writable_dir(args.out)
    dataset = dataset_from_args(args)
    from faceaudit.audit.tfdata import export_tfrecords

    paths = export_tfrecords(dataset.manifest, args.out, shards=args.shards)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} shards, {total / 1e6:.1f} MB, to {args.out}")
    return 0
