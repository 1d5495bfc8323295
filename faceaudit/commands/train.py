"""``faceaudit train``: train a face-attribute classifier (race, by default) into a reproducible run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.config import DEFAULT_SEED
from faceaudit.taxonomy import DEFAULT_AGE_BANDS
from faceaudit.validation import cli_type


def register(subparsers) -> None:
    """Add the ``train`` subcommand."""
    from faceaudit.api import train as api_train
    from faceaudit.models.dlib_features import FRAMINGS
    from faceaudit.training.backbones import BACKBONES
    from faceaudit.training.config import TrainConfig

    d = TrainConfig()
    parser = subparsers.add_parser(
        "train", help="train a race (or other attribute) classifier (cnn, keras.applications backbones, "
                         "dlib-resnet) into a run folder",
        description="Train a classifier of the label schema's target (race by default) the seed's way (head on a frozen backbone, then the whole network) "
                    "into a run folder: model.keras, history.json, run.json and the test split's predictions.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path,
                        help="UTKFace folder or .tar.gz archive, or a labelled CSV (FairFace's with --schema fairface); "
                             "required, except with --ensemble (default: the members' data)")
    parser.add_argument("--out", type=Path, required=True, help="run folder to create (e.g. runs/cnn64)")
    from faceaudit.commands.common import add_schema_option

    add_schema_option(parser, show_default=False)
    parser.add_argument("--target", metavar="ATTR",
                        help="attribute to predict: one of the schema's (race, gender) or age_band (None: the schema's target, race)")
    parser.add_argument("--backbone", default=d.backbone, metavar="NAME", help=f"one of: {', '.join(BACKBONES)}")
    parser.add_argument("--weights", default=d.weights, metavar="none|imagenet|PATH",
                        help="initial backbone weights; imagenet is looked up offline in $FACEAUDIT_WEIGHTS_DIR or "
                             "~/.keras/models under Keras's file name, never downloaded")
    parser.add_argument("--alpha", type=cli_type("--alpha", of=api_train), help="MobileNet width multiplier (default: 0.35 v2, 0.25 v1)")
    parser.add_argument("--image-size", type=cli_type("--image-size", of=api_train), help="input side in pixels (default: the backbone's)")
    parser.add_argument("--head-epochs", type=cli_type("--head-epochs", of=api_train), help="epochs with the backbone frozen (default: 3 if pretrained, else 0)")
    parser.add_argument("--epochs", type=cli_type("--epochs", of=api_train), default=d.epochs,
                        help="epochs with the whole network unfrozen (dlib-resnet: head epochs); 0 skips")
    parser.add_argument("--batch-size", type=cli_type("--batch-size", of=api_train), default=d.batch_size)
    parser.add_argument("--lr", type=cli_type("--lr", of=api_train), default=d.lr, help="learning rate: head phase and from-scratch training")
    parser.add_argument("--finetune-lr", type=cli_type("--finetune-lr", of=api_train), default=d.finetune_lr, help="learning rate unfreezing pretrained weights")
    parser.add_argument("--weight-decay", type=cli_type("--weight-decay", of=api_train), default=d.weight_decay)
    parser.add_argument("--schedule", type=cli_type("--schedule", of=api_train), metavar="{cosine,plateau}",
                        default=d.schedule)
    parser.add_argument("--label-smoothing", type=cli_type("--label-smoothing", of=api_train), default=d.label_smoothing)
    parser.add_argument("--class-weights", action="store_true",
                        help="re-weighted loss: weight samples by inverse frequency of their target class")
    parser.add_argument("--logit-adjust", type=cli_type("--logit-adjust", of=api_train), default=d.logit_adjust, metavar="TAU",
                        help="logit-adjusted loss (Menon et al. 2021): train on softmax(log p + TAU log prior), a "
                             "larger margin for rare classes; 0: plain cross-entropy, 1: aims at balanced error")
    ensemble = parser.add_argument_group(
        "ensembles", "combine finished runs instead of training a backbone: the members are copied into the new run "
                     "folder and their probabilities combined, fitted on their shared validation split")
    ensemble.add_argument("--ensemble", nargs="+", type=Path, metavar="RUN",
                          help="two or more run folders trained on the same data for the same classes")
    ensemble.add_argument("--combine", choices=("auto", "mean", "stack"), default="auto",
                          help="mean: average the members' log-probabilities; stack: multinomial logistic regression "
                               "on them; auto: the lower cross-validated log loss on validation")
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=argparse.SUPPRESS,
                        help="train without flip/rotation/zoom augmentation (default: augment)")
    parser.add_argument("--rotation", type=cli_type("--rotation", of=api_train), default=d.rotation, help="max rotation, degrees")
    parser.add_argument("--zoom", type=cli_type("--zoom", of=api_train), default=d.zoom, help="zoom range 1 +/- ZOOM")
    parser.add_argument("--dropout", type=cli_type("--dropout", of=api_train), default=d.dropout)
    parser.add_argument("--embedding-dim", type=cli_type("--embedding-dim", of=api_train), default=d.embedding_dim)
    parser.add_argument("--patience", type=cli_type("--patience", of=api_train), default=d.patience, help="early stopping on val loss (0: off)")
    parser.add_argument("--seed", type=cli_type("--seed", of=api_train), default=DEFAULT_SEED, help="data order, augmentation and initialisation")
    parser.add_argument("--strategy", type=cli_type("--strategy", of=api_train), default=d.strategy,
                        metavar="{none,mirrored,multiworker}",
                        help="mirrored: tf.distribute.MirroredStrategy over all GPUs, else all logical CPUs; "
                             "multiworker: tf.distribute.MultiWorkerMirroredStrategy over the cluster in $TF_CONFIG "
                             "(run the same command on every worker; the chief, worker 0, writes the run folder, "
                             "--batch-size is the global batch)")
    parser.add_argument("--cpu-devices", type=cli_type("--cpu-devices", of=api_train), default=d.cpu_devices,
                        help="split the CPU into N logical devices (for --strategy mirrored without GPUs)")
    parser.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    parser.add_argument("--max-train", type=cli_type("--max-train", of=api_train), help="use at most N training images (a random sample fixed by --seed)")
    parser.add_argument("--dlib-framing", choices=FRAMINGS, default=d.dlib_framing,
                        help="dlib-resnet chip: 5-point alignment with dlib.get_face_chip, or a plain resize; "
                             "'+mirror' averages each descriptor with the mirrored chip's (one more extraction pass)")
    parser.add_argument("--age-bands", default=DEFAULT_AGE_BANDS, metavar="SPEC")
    parser.add_argument("--exclude", type=Path, metavar="CSV", help="exclusion list (image_id, reason)")
    parser.add_argument("--nondeterministic", dest="deterministic", action="store_false",
                        default=argparse.SUPPRESS,
                        help="allow non-deterministic TensorFlow kernels: faster, not bit-reproducible "
                             "(default: deterministic kernels)")
    parser.add_argument("--quiet", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="no progress bars or per-epoch lines (default: show them)")
    parser.set_defaults(handler=run)


def _remove_unstarted(created: list[Path]) -> None:
    """Delete the run folder this command created (and parents left empty) if it holds no checkpoint to resume."""
    import shutil

    from faceaudit import interrupts
    from faceaudit.seams.run import RUN_FILE
    from faceaudit.training.trainer import CHECKPOINT_DIR, STATE_FILE

    if not created:
        return
    out = created[0]
    if (out / RUN_FILE).exists() or any((out / CHECKPOINT_DIR).glob(f"**/{STATE_FILE}")):
        return  # a checkpoint to resume (a non-chief worker's is in checkpoint/worker-N/)
    with interrupts.deferred():
        shutil.rmtree(out, ignore_errors=True)
        for folder in created[1:]:
            try:
                folder.rmdir()
            except OSError:
                break


def run(args: argparse.Namespace) -> int:
    """Build the config from the arguments, train, and print where the run went."""
    from faceaudit.extras import require

    require("tensorflow", "train", "faceaudit train")
    require("keras", "train", "faceaudit train")
    from faceaudit.api import train
    from faceaudit.seams.run import RunRecord
    from faceaudit.training.config import TrainConfig
    from faceaudit.training.trainer import cluster_role, worker_file

    if args.ensemble:
        return _ensemble(args)
    if args.data is None:
        from faceaudit.errors import FaceauditError

        raise FaceauditError("--data is required (a UTKFace folder or archive), except with --ensemble")
    fields = TrainConfig.__dataclass_fields__
    options = {k: v for k, v in vars(args).items() if k in fields and k not in ("data", "out", "dataset")}
    # The run folder is written in place, not swapped in like the report folders: --resume continues a killed run
    # from the checkpoints inside it. A run that fails or is interrupted before its first checkpoint leaves nothing.
    created = [p for p in (args.out, *args.out.parents) if not p.exists()]
    try:
        out = train(args.data, args.out, **options)  # the API's checks; an unknown --target fails before writing
    except BaseException:
        _remove_unstarted(created)
        raise
    role = cluster_role() if args.strategy == "multiworker" else None
    if role is not None and not role.chief:
        print(f"worker {role.name} of {role.workers} done: the chief writes the run folder; this worker's history "
              f"is in {worker_file(out, role)}")
        return 0
    acc = RunRecord.read(out).test_accuracy
    print(f"run written to {out}" + (f" (test accuracy {acc:.4f})" if acc is not None else ""))
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    """``--ensemble RUN RUN ...``: the ensemble run folder, and its test accuracy beside its members'."""
    from faceaudit.api import ensemble
    from faceaudit.seams.run import RunRecord

    out = ensemble(args.ensemble, args.out, combine=args.combine, data=args.data,
                         batch_size=args.batch_size, progress=getattr(args, "progress", True))
    record = RunRecord.read(out)
    members = ", ".join(f"{m['name']} {m['test_accuracy']:.4f}" for m in record.ensemble["members"]
                        if m.get("test_accuracy") is not None)
    print(f"ensemble written to {out} (test accuracy {record.test_accuracy:.4f}, "
          f"{record.ensemble['combiner']['chosen']}; members: {members})")
    return 0
