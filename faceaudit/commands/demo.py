"""``faceaudit demo``: the whole flow on one default, with no download: train a CNN, audit it, write the report."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from faceaudit.config import DATA_ENV, data_from_env
from faceaudit.validation import cli_type

#: Epochs when no --epochs is given: the generated set learns in a few; real UTKFace gets a short taste.
DEMO_EPOCHS = {"synthetic": 8, "real": 3}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train a small CNN, audit it and write the report (no download needed)",
        description="Run the main job end to end: images -> manifest -> CNN training -> predictions -> audit -> "
        f"report (HTML, PDF, summary.md, audit.json). Uses --data or ${DATA_ENV} when given (e.g. the UTKFace "
        "archive), otherwise an embedded default: 3,000 generated cartoon faces with UTKFace-style labels, which "
        "the report names as synthetic.",
    )
    parser.add_argument("--data", type=Path, metavar="DATA",
                        help=f"UTKFace folder or .tar.gz archive, or a labelled CSV (default: ${DATA_ENV}, else synthetic faces)")
    parser.add_argument("--out", type=Path, default=Path("reports/demo"),
                        help="report folder (default: reports/demo); the trained run goes beside it, to OUT-cnn "
                        "(reports/demo-cnn), so the report folder holds only the report")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs (default: {DEMO_EPOCHS['synthetic']} on synthetic faces, "
                        f"{DEMO_EPOCHS['real']} on real data)")
    parser.add_argument("--max-train", type=int, default=None, metavar="N",
                        help="train on at most N images (stratified by race) to keep the demo short (default: all)")
    parser.add_argument("--seed", type=cli_type("--seed"), default=42,
                        help="one seed for split, training and bootstrap (default: 42)")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Train the demo CNN into OUT-cnn (beside the report folder), audit it on the test split through the public API,
    write the report into OUT."""
    from faceaudit.api import audit_model, load_dataset, train
    from faceaudit.commands.audit import print_summary
    from faceaudit.datasets.synthetic import default_synthetic_folder
    from faceaudit.errors import FaceauditError
    from faceaudit.extras import require
    from faceaudit.files import replaceable_dir

    if args.epochs is not None and args.epochs < 1:
        raise FaceauditError("--epochs must be at least 1")
    require("tensorflow", "train", "faceaudit demo (it trains a CNN)")
    out = replaceable_dir(args.out, "audit.json")
    run_out = out.parent / f"{out.name}-cnn"
    data = args.data or data_from_env()
    if data is None:
        data = default_synthetic_folder(seed=args.seed)
        print(f"no --data or ${DATA_ENV}: using {data} (generated cartoon faces, SYNTHETIC)")
    dataset = load_dataset(data, seed=args.seed)
    epochs = args.epochs or DEMO_EPOCHS["synthetic" if dataset.synthetic else "real"]
    run_dir = train(dataset, run_out, backbone="cnn", epochs=epochs, max_train=args.max_train,
                    seed=args.seed)
    with resources.as_file(resources.files("faceaudit") / "gates.toml") as gates_file:
        result = audit_model(run_dir, dataset, gates=gates_file, seed=args.seed, progress=True)
    result.settings.command = "faceaudit demo"
    result.write(out, report=True)
    print_summary(result, out)
    print(f"trained run (model.keras, history.json, run.json): {run_dir}")
    verdict = "all gates pass" if result.status == "pass" else "some gates fail or are inconclusive"
    print(f"demo done ({verdict}): open {out / 'report.html'} or attach {out / 'report.pdf'}")
    return 0
