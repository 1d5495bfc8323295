"""``faceaudit predict``: batch inference into a sharded predictions table that ``faceaudit audit --predictions``
reads, on this process or on Ray workers.

Exit codes: 0 when the folder is written, 2 on an input error (nothing is written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.commands.common import add_data_options, add_model_contract_options
from faceaudit.config import data_from_env
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import SCHEMAS
from faceaudit.validation import cli_type, metavar

#: Rows per Parquet shard by default.
DEFAULT_SHARD_SIZE = 50_000


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict", help="run a model on a dataset into a sharded predictions table (local or Ray workers)",
        description="Run a model (run folder, .keras, .h5, SavedModel folder, .tflite or .onnx) on the images of "
        "the chosen splits of a labelled dataset and write a predictions table as a folder: part-00000.parquet, "
        "part-00001.parquet ... (at most --shard-size rows each, in manifest order, with a split column), "
        "part-NNNNN.embeddings.npy beside each when the model gives embeddings, and predict.json (model, data "
        "fingerprint, engine, shards with their SHA-256). 'faceaudit audit --predictions FOLDER' audits it: test "
        "rows are audited and val rows fit temperature scaling. --engine ray runs the model on Ray workers "
        "(a local Ray instance, or the cluster at $RAY_ADDRESS), each loading it once; the predictions are the "
        "same as --engine local's. The folder is replaced as a whole, never left half-written.")
    parser.add_argument("model", type=Path, metavar="MODEL",
                        help="run folder (runs/<name>/), model file (.keras, .h5, .tflite, .onnx) or TensorFlow "
                        "SavedModel folder")
    parser.add_argument("--data", type=Path, metavar="DATA",
                        help="UTKFace folder/archive or labelled CSV/Parquet (default: $FACEAUDIT_DATA)")
    parser.add_argument("--out", type=Path, metavar="FOLDER",
                        help="output folder, replaced as a whole (default: predictions/<model-name>)")
    parser.add_argument("--engine", type=cli_type("--engine"), default="local", metavar=metavar("engine"),
                        help="local: this process; ray: Ray workers, one model per worker; needs "
                        "faceaudit[distributed] (default: local)")
    parser.add_argument("--workers", type=cli_type("--workers"), default=None, metavar="N",
                        help="with --engine ray: worker processes (default: the CPUs of this machine)")
    parser.add_argument("--shard-size", type=cli_type("--shard-size"), default=DEFAULT_SHARD_SIZE, metavar="ROWS",
                        help=f"most rows per Parquet shard (default: {DEFAULT_SHARD_SIZE:,})")
    parser.add_argument("--split", default="test,val", metavar="SPLITS",
                        help="the splits to predict, e.g. test or test,val, or all for every row (default: test,val)")
    parser.add_argument("--batch-size", type=cli_type("--batch-size"), default=64,
                        help="inference batch size (default: 64)")
    parser.add_argument("--schema", choices=sorted(SCHEMAS), default=None,
                        help="label schema preset (default: the run's or export's, else utkface)")
    parser.add_argument("--target", default=None, metavar="ATTR",
                        help="the attribute the classifier predicts, e.g. gender (default: the schema's, race)")
    add_model_contract_options(parser, contract=False)  # predict writes class probabilities only
    add_data_options(parser, positional=False)
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Predict into the sharded table and print one summary line."""
    from faceaudit.api import predict
    from faceaudit.datasets.manifest import ColumnMap
    from faceaudit.distributed import check_engine
    from faceaudit.seams.predictions import read_shards_record

    check_engine(args.engine, args.workers)
    if not args.model.exists():
        raise FaceauditError(f"model not found: {args.model}")
    data = args.data or data_from_env()
    if data is None:
        raise FaceauditError("no data: pass --data (a UTKFace folder or archive) or set $FACEAUDIT_DATA")
    splits = None if args.split.strip().lower() == "all" else tuple(args.split.split(","))
    columns = ColumnMap(args.path_col, args.race_col, args.gender_col, args.age_col)
    folder = predict(
        args.model, data, args.out, engine=args.engine, workers=args.workers, shard_size=args.shard_size,
        splits=splits, batch_size=args.batch_size, schema=args.schema, target=args.target, seed=args.seed,
        dataset_options={"age_bands": args.age_bands, "exclude": args.exclude, "columns": columns}, progress=True,
        verbose=getattr(args, "verbose", False), output_layer=args.output_layer,
        embedding_layer=args.embedding_layer, input_size=args.input_size, preprocess=args.preprocess, bgr=args.bgr,
        classes=args.classes)
    record = read_shards_record(folder)
    engine = record["engine"]
    workers = engine["workers"]
    on = "in this process" if engine["engine"] == "local" else f"on {workers} Ray worker{'s' if workers != 1 else ''}"
    rate = f"{record['images_per_s']:,.0f} images/s" if record.get("images_per_s") else "instant"
    shards = len(record["shards"])
    print(f"wrote {record['rows']:,} predictions in {shards} shard{'s' if shards != 1 else ''} to {folder} "
          f"({rate} {on})")
    return 0
