"""``train(config) -> run folder``: the seed's two-phase transfer-learning recipe as a reproducible, resumable run.

Phase ``freeze`` trains the head on a frozen backbone, phase ``unfreeze`` the whole network at a lower rate.
After every epoch the model with its optimizer state, the best weights and the history so far are
checkpointed, so ``resume=True`` continues a killed run and ends with the same history.

``strategy="multiworker"``: the same call on every worker of ``$TF_CONFIG``'s cluster trains one model; the chief
writes the run folder, every other worker checkpoints into ``<out>/checkpoint/worker-N/`` and leaves only
``<out>/worker-N.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from faceaudit.compat import all_layers, multiworker_steps, seed_generators
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_path, atomic_write
from faceaudit.models.inference import predict_table
from faceaudit.seams.run import MODEL_FILE, PREDICTIONS_FILE, RUN_FILE, RunRecord, write_history
from faceaudit.training.backbones import (
    Backbone,
    build_backbone,
    build_descriptor_model,
    build_image_model,
    get_backbone,
    resolve_weights,
)
from faceaudit.training.config import TrainConfig

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
#: The checkpoint state before the last one: a worker killed one epoch ahead of the others resumes from it.
PREVIOUS_STATE_FILE = "state-previous.json"
SCHEDULES = ("cosine", "plateau")
STRATEGIES = ("none", "mirrored", "multiworker")
#: Plateau schedule: multiply the rate by this after this many epochs without a validation-loss gain.
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.3, 2
#: How much val_loss must fall to count as an improvement (early stopping, plateau, best checkpoint).
MIN_DELTA = 1e-4
_PACKAGES = ("faceaudit", "tensorflow", "tensorflow-cpu", "keras", "numpy", "pandas", "scikit-learn", "dlib-bin",
             "face-recognition-models")


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    found["python"] = platform.python_version()
    return found


def _write_json(file: Path, data: dict) -> None:
    atomic_write(file, json.dumps(data, indent=1, default=str))


def _save_model(model, file: Path) -> None:
    """``model.save`` (or ``save_weights`` for ``*.weights.h5``) under a temporary name, renamed into place."""
    with atomic_path(file) as partial:
        if file.name.endswith(".weights.h5"):
            model.save_weights(partial)
        else:
            model.save(partial)


def configure_devices(cpu_devices: int, deterministic: bool) -> None:
    """Split the CPU into logical devices and request deterministic kernels; must precede any TF op."""
    import tensorflow as tf

    if cpu_devices and cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        current = tf.config.get_logical_device_configuration(cpu)
        if not current or len(current) != cpu_devices:
            try:
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_devices)])
            except RuntimeError:
                raise FaceauditError("--cpu-devices must be set before TensorFlow starts (use a fresh process)") from None
    if deterministic:
        tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class ClusterRole:
    """This process's place in the ``$TF_CONFIG`` cluster of ``--strategy multiworker``."""

    task_type: str
    task_index: int
    workers: int
    chief: bool

    @property
    def name(self) -> str:
        """``worker-1``: the non-chief's folder (``<out>/checkpoint/worker-1/``) and file (``<out>/worker-1.json``)."""
        return f"{self.task_type}-{self.task_index}"


def cluster_role(environ=None) -> ClusterRole:
    """This worker's role from ``$TF_CONFIG``; one FaceauditError naming what is missing or wrong.

    The chief is the ``chief`` task if the cluster has one, else worker 0 (TensorFlow's rule).
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not raw.strip():
        raise FaceauditError(f"--strategy multiworker needs $TF_CONFIG on every worker, {example}")
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FaceauditError(f"$TF_CONFIG is not valid JSON ({exc}); {example}") from None
    if not isinstance(spec, dict):
        raise FaceauditError(f"$TF_CONFIG must be a JSON object; {example}")
    cluster, task = spec.get("cluster"), spec.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise FaceauditError(f'$TF_CONFIG has no "cluster" object listing the workers; {example}')
    for job, addresses in cluster.items():
        if job not in ("chief", "worker"):
            raise FaceauditError(f'$TF_CONFIG cluster job {job!r} is not supported by --strategy multiworker '
                                 '(only "chief" and "worker")')
        if not isinstance(addresses, list) or not addresses:
            raise FaceauditError(f'$TF_CONFIG cluster "{job}" must be a non-empty list of "host:port" addresses')
        for address in addresses:
            host, _, port = str(address).rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise FaceauditError(f'$TF_CONFIG cluster "{job}" address {address!r} is not "host:port"')
    if len(cluster.get("chief", [])) > 1:
        raise FaceauditError('$TF_CONFIG cluster "chief" must list one address')
    if not isinstance(task, dict):
        raise FaceauditError('$TF_CONFIG has no "task" object ({"type": "worker", "index": N}) saying which '
                             'worker this is')
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise FaceauditError(f'$TF_CONFIG task type {task_type!r} is not a job of its cluster '
                             f'({", ".join(cluster)})')
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise FaceauditError(f'$TF_CONFIG task index {index!r} is not an index of cluster "{task_type}" '
                             f'(0-{len(cluster[task_type]) - 1})')
    chief = task_type == "chief" or ("chief" not in cluster and index == 0)
    return ClusterRole(task_type, index, sum(len(a) for a in cluster.values()), chief)


def make_strategy(name: str):
    """``tf.distribute`` strategy: the default one, MirroredStrategy over the GPUs (else over all CPUs), or
    MultiWorkerMirroredStrategy over the cluster of ``$TF_CONFIG``."""
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        cluster_role()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


class _Timer:
    """Keras callback separating training time from validation time within each epoch."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.train_seconds = 0.0
                self._start = None

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_test_begin(self, logs=None):
                if self._start is not None:
                    self.train_seconds += time.perf_counter() - self._start
                    self._start = None

            def on_epoch_end(self, epoch, logs=None):
                self.on_test_begin()

        return Timer()


def _validate(config: TrainConfig, backbone: Backbone) -> None:
    if config.schedule not in SCHEDULES:
        raise FaceauditError(f"unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if config.strategy not in STRATEGIES:
        raise FaceauditError(f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if config.epochs < 0 or (config.head_epochs or 0) < 0:
        raise FaceauditError("epochs must be >= 0")
    if config.batch_size < 1:
        raise FaceauditError("batch size must be >= 1")
    if not np.isfinite(config.logit_adjust) or config.logit_adjust < 0:
        raise FaceauditError(f"--logit-adjust must be a number >= 0 (got {config.logit_adjust})")
    if backbone.name == "dlib-resnet" and config.weights not in ("none", "", None):
        raise FaceauditError("dlib-resnet always uses its own pretrained network; omit --weights")
    if config.strategy == "multiworker":
        cluster_role()


def checkpoint_dir(out: Path, role: ClusterRole | None = None) -> Path:
    """Where a process checkpoints: ``<out>/checkpoint``, or ``<out>/checkpoint/worker-N`` for a non-chief worker
    (so workers sharing one ``--out`` on a shared file system never write the same file)."""
    return out / CHECKPOINT_DIR if role is None or role.chief else out / CHECKPOINT_DIR / role.name


def worker_file(out: Path, role: ClusterRole) -> Path:
    """``<out>/worker-N.json``: what a non-chief worker leaves behind (its history, to compare with the chief's)."""
    return out / f"{role.name}.json"


def _prepare_out(out: Path, resume: bool, role: ClusterRole | None = None) -> dict | None:
    """Create the run folder; the saved checkpoint state when resuming; refuse to overwrite a run."""
    from faceaudit.files import writable_dir

    writable_dir(out)
    state_file = checkpoint_dir(out, role) / STATE_FILE
    done = out / RUN_FILE if role is None or role.chief else worker_file(out, role)
    if resume:
        if state_file.exists():
            return json.loads(state_file.read_text())
        if done.exists():
            return {"complete": True}
        return None
    if done.exists() or state_file.exists():
        raise FaceauditError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    return None


def _progress(state: dict | None) -> float:
    """A checkpoint's place in training, comparable across workers (-1: not started)."""
    return -1.0 if not state else float(state["phase_index"] * 1_000_000 + state["epochs_done"])


def _gather(strategy, value: float) -> list[float]:
    """``value`` of every replica of every worker (a collective: every worker must call it, in the same order)."""
    import tensorflow as tf

    n = strategy.num_replicas_in_sync

    @tf.function
    def gather():
        def contribute():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            return tf.one_hot(replica, n, dtype=tf.float64) * value
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(contribute), axis=None)

    return gather().numpy().tolist()


def _agree_on_resume(strategy, state: dict | None, ckpt: Path, role: ClusterRole) -> dict | None:
    """The checkpoint state this worker resumes from: the one every worker has.

    Each worker resumes from its own checkpoint; a worker killed while the others were still saving can be one epoch
    ahead of them, and then steps back to its previous checkpoint (``state-previous.json``).
    """
    everyone = _gather(strategy, _progress(state))
    target = min(everyone)
    if _progress(state) == target:
        return state
    file = ckpt / PREVIOUS_STATE_FILE
    previous = json.loads(file.read_text()) if file.exists() else None
    if _progress(previous) == target:
        if previous is not None:
            previous["resumed"] = state.get("resumed", 0)
        return previous

    def describe(v):
        return "no checkpoint" if v < 0 else f"phase {int(v) // 1_000_000} epoch {int(v) % 1_000_000}"
    raise FaceauditError(f"the workers' checkpoints disagree ({', '.join(sorted(set(map(describe, everyone))))}; "
                         f"{role.name} has {describe(_progress(state))}): start every worker again without --resume "
                         "in fresh --out folders")


def _write_state(ckpt: Path, state: dict) -> None:
    """``state.json``, keeping the one before as ``state-previous.json``; delete model files neither names."""
    current = ckpt / STATE_FILE
    if current.exists():
        atomic_write(ckpt / PREVIOUS_STATE_FILE, current.read_text())
    _write_json(current, state)
    keep = {state.get("model_file"), state.get("best_file")}
    if (ckpt / PREVIOUS_STATE_FILE).exists():
        previous = json.loads((ckpt / PREVIOUS_STATE_FILE).read_text())
        keep |= {previous.get("model_file"), previous.get("best_file")}
    for file in ckpt.iterdir():
        if file.is_file() and file.name.startswith(("epoch-", "best-")) and file.name not in keep:
            file.unlink(missing_ok=True)


def _average_batchnorm_statistics(strategy, model) -> None:
    """Multi-worker: replace every worker's batch-norm moving statistics by their mean over the workers.

    Keras updates them from each replica's share of the batch, so they drift apart across workers while the
    trained weights stay identical; averaged after every epoch, every worker (and so every checkpoint and the
    chief's model.keras) holds the same model, with statistics drawn from all of the data.
    """
    import keras
    import tensorflow as tf

    variables = [v for layer in all_layers(model)
                 if isinstance(layer, keras.layers.BatchNormalization)
                 for v in (layer.moving_mean, layer.moving_variance) if v is not None]
    if not variables:
        return

    @tf.function
    def averaged():
        def local():
            return tf.concat([tf.reshape(tf.cast(v.value, tf.float32), [-1]) for v in variables], axis=0)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(local), axis=None)

    flat, start = averaged().numpy(), 0
    for v in variables:
        size = int(np.prod(v.shape))
        v.assign(flat[start:start + size].reshape(v.shape).astype(v.dtype))
        start += size


def _weights_sha256(model) -> dict[str, str]:
    """SHA-256 of each of the model's weights, by path: equal on every worker when they trained one model."""
    return {w.path: hashlib.sha256(np.ascontiguousarray(np.asarray(w.numpy())).tobytes()).hexdigest()
            for w in model.weights}


def _finish_worker(out: Path, ckpt: Path, role: ClusterRole, state: dict, started: float, weights: dict) -> None:
    """A non-chief's end: its history in ``<out>/worker-N.json``, its checkpoint folder deleted."""
    _write_json(worker_file(out, role), {
        "task": role.name, "chief": False, "workers": role.workers, "strategy": "multiworker",
        "note": "the chief (worker 0, or the chief task) writes the run folder; this is the same training seen "
                "from this worker",
        "history": state["history"], "weights_sha256": weights, "resumed": int(state.get("resumed", 0)),
        "wall_time_s": time.perf_counter() - started,
    })
    shutil.rmtree(ckpt, ignore_errors=True)
    try:
        ckpt.parent.rmdir()  # <out>/checkpoint, unless a chief sharing this --out still uses it
    except OSError:
        pass


def _phases(config: TrainConfig, backbone: Backbone, pretrained: bool) -> list[dict]:
    """The phases to run, in order (a phase with 0 epochs is skipped)."""
    if backbone.name == "dlib-resnet":
        return [{"name": "freeze", "epochs": config.epochs, "lr": config.lr}] if config.epochs else []
    head = config.head_epochs if config.head_epochs is not None else (3 if pretrained else 0)
    phases = []
    if head:
        phases.append({"name": "freeze", "epochs": head, "lr": config.lr, "label": "head only"})
    if config.epochs:
        # history.json keeps the seed's phase key; the console says what the phase really is.
        phases.append({"name": "unfreeze", "epochs": config.epochs,
                       "lr": config.finetune_lr if pretrained else config.lr,
                       "label": "fine-tune" if pretrained else "from scratch"})
    return phases


def _compile(model, phase: dict, config: TrainConfig, steps_per_epoch: int, prior: np.ndarray) -> None:
    import keras

    from faceaudit.models.layers import LogitAdjustedLoss

    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(phase["lr"], decay_steps=max(1, phase["epochs"] * steps_per_epoch),
                                                      alpha=0.01)
    else:
        rate = phase["lr"]
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=rate, weight_decay=config.weight_decay),
        loss=(LogitAdjustedLoss(prior.tolist(), config.logit_adjust, config.label_smoothing) if config.logit_adjust
              else keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def _current_lr(model) -> float:
    optimizer = model.optimizer
    rate = optimizer.learning_rate
    return float(np.asarray(rate))


def _reseed(model, seed: int, phase_index: int, epoch: int) -> None:
    """Set every layer's random state (dropout masks) from ``(seed, phase, epoch)``.

    Keras does not save seed-generator state in ``.keras`` files, so without this a resumed run would draw
    other dropout masks than an uninterrupted one.
    """
    import numpy as np

    index = 0
    for layer in all_layers(model, include_self=True):
        for generator in seed_generators(layer):
            value = np.random.default_rng([seed, phase_index, epoch, index]).integers(0, 2**31 - 1)
            generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))
            index += 1


def _set_trainable(model, backbone_layer: str | None, trainable: bool) -> None:
    if backbone_layer:
        model.get_layer(backbone_layer).trainable = trainable


def _epoch_rules(model, config: TrainConfig, state: dict):
    """Keras's own early-stopping and learning-rate-on-plateau rules for one phase, in step with ``state``.

    ``keras.callbacks.EarlyStopping`` and ``ReduceLROnPlateau`` decide (val_loss improved by more than
    :data:`MIN_DELTA`? patience used up? learning rate times :data:`PLATEAU_FACTOR`), but :func:`train` calls their
    ``on_epoch_end`` itself rather than handing them to ``fit``: it runs ``fit`` once per epoch (each epoch's data
    is rebuilt from its own seed, dropout reseeded, multi-worker batch-norm statistics averaged between epochs) and
    every ``fit`` resets a callback's counters in ``on_train_begin``. Their counters and best value are restored
    from ``state`` (``state.json``) here and written back after every epoch, so a ``--resume`` decides as an
    uninterrupted run would. The best weights are kept on disk, not in memory (``restore_best_weights``), and the
    checkpoints are faceaudit's, not ``BackupAndRestore``'s: a resume needs the optimizer, the history, these
    counters and, across workers, an agreement on which epoch to resume from (:func:`_agree_on_resume`), and
    ``BackupAndRestore`` deletes its backup at the end of every ``fit``."""
    import keras

    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", min_delta=MIN_DELTA,
                                            patience=config.patience or math.inf)  # 0: never stop early
    plateau = None
    if config.schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", min_delta=MIN_DELTA,
                                                    factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE, min_lr=0.0)
    for rule, wait in ((stopper, state["wait"]), (plateau, state["plateau_wait"])):
        if rule is not None:
            rule.set_model(model)
            rule.on_train_begin()
            rule.best, rule.wait = state["best"], wait
    return stopper, plateau


def _judge_epoch(stopper, plateau, state: dict, index: int, logs: dict) -> bool:
    """Run a phase's rules (:func:`_epoch_rules`) on its finished epoch ``index`` (from 0): the learning rate may
    fall, ``state`` takes the best val_loss, the counters and ``stopped``. True when val_loss improved."""
    stopper.on_epoch_end(index, dict(logs))
    if plateau is not None:
        plateau.on_epoch_end(index, dict(logs))
    state["best"] = None if stopper.best is None else float(stopper.best)
    state["wait"] = int(stopper.wait)
    state["plateau_wait"] = int(plateau.wait) if plateau is not None else int(stopper.wait)
    state["stopped"] = bool(state.get("stopped")) or stopper.stopped_epoch > 0
    return stopper.best_epoch == index and stopper.wait == 0


def train(config: TrainConfig) -> Path:
    """Train one run into ``config.out`` and return that folder (model, histories, run record, predictions)."""
    from faceaudit.extras import require

    started = time.perf_counter()
    backbone = get_backbone(config.backbone)
    require("tensorflow", "train", "faceaudit train")
    require("keras", "train", "faceaudit train")
    if backbone.name == "dlib-resnet":
        require("dlib", "all", "the dlib-resnet backbone")
        require("face_recognition_models", "all", "the dlib-resnet backbone")
    _validate(config, backbone)
    role = cluster_role() if config.strategy == "multiworker" else None
    chief = role is None or role.chief
    schema = config.label_schema()
    out = Path(config.out)
    state = _prepare_out(out, config.resume, role)
    if state and state.get("complete"):
        return out
    size = config.image_size or backbone.input_size
    alpha = config.alpha if config.alpha is not None else backbone.default_alpha
    weights_file = None if backbone.name == "dlib-resnet" else resolve_weights(backbone, config.weights, size, alpha)
    if config.data is None and config.dataset is None:
        raise FaceauditError("no data: pass a UTKFace folder or archive")
    if config.data is not None and config.dataset is None and not Path(config.data).exists():
        raise FaceauditError(f"data not found: {config.data}")

    configure_devices(config.cpu_devices, config.deterministic)
    import keras
    import tensorflow as tf

    # Before any other TensorFlow op: MultiWorkerMirroredStrategy configures the runtime's collectives.
    strategy = make_strategy(config.strategy)

    from faceaudit.models import layers  # noqa: F401  (registers Preprocess for checkpoint loading)
    from faceaudit.training import data as tdata

    keras.utils.set_random_seed(config.seed)
    dataset = config.dataset
    if dataset is None:
        from faceaudit.datasets.manifest import load_dataset

        dataset = load_dataset(Path(config.data), exclude=config.exclude, age_bands=schema.age_bands,
                               progress=config.progress, schema=schema)
        schema = dataset.schema
    else:  # an already-loaded dataset (the demo's) brings its own schema; the config may pick another target
        schema = dataset.schema.with_options(target=config.target)
    if schema.target not in dataset.manifest.columns:
        raise FaceauditError(f"the data has no {schema.target!r} labels to train on")
    from faceaudit.datasets.manifest import describe_image_problems, image_problems

    if note := describe_image_problems(dataset):
        print(f"faceaudit: note: {note}", file=sys.stderr)
    train_m, val_m, test_m = (dataset.split(s) for s in ("train", "val", "test"))
    if config.max_train:
        train_m = tdata.subset(train_m, config.max_train, config.seed)
    for name, rows in (("train", train_m), ("val", val_m), ("test", test_m)):
        if rows.empty:
            raise FaceauditError(f"the {name} split is empty; training needs train, val and test images")
    y_train, y_val = tdata.label_codes(train_m, schema), tdata.label_codes(val_m, schema)
    n_classes = len(schema.classes)

    if backbone.name == "dlib-resnet":
        from faceaudit.models.dlib_features import descriptors

        x_train, cache_train = descriptors(train_m, config.dlib_framing, progress=config.progress)
        x_val, cache_val = descriptors(val_m, config.dlib_framing, progress=config.progress)
        cache_stats = {"computed": cache_train["computed"] + cache_val["computed"],
                       "cached": cache_train["cached"] + cache_val["cached"]}
    else:
        x_train = tdata.load_images(train_m, size, config.progress, "loading train images")
        x_val = tdata.load_images(val_m, size, config.progress, "loading val images")
        cache_stats = None
    weights = tdata.class_weight_vector(y_train, n_classes)[y_train] if config.class_weights else None
    prior = tdata.class_prior(y_train, n_classes)

    pretrained = weights_file is not None
    phases = _phases(config, backbone, pretrained)
    if not phases:
        raise FaceauditError("nothing to train: every phase has 0 epochs")
    steps = int(np.ceil(len(y_train) / config.batch_size))
    ckpt = checkpoint_dir(out, role)
    ckpt.mkdir(parents=True, exist_ok=True)
    # Multi-worker: every worker builds the same batches of --batch-size (the global batch, as Keras expects) and
    # tf.distribute shards each one by data, so worker i trains on its deterministic share of every step.
    distributed = tdata.shard_by_data if role is not None else (lambda data: data)
    val_data = distributed(tdata.eval_dataset(x_val, y_val, config.batch_size, n_classes))
    from faceaudit import console

    with strategy.scope():
        if role is not None and config.resume:
            state = _agree_on_resume(strategy, state, ckpt, role)
        if state:
            model = keras.saving.load_model(ckpt / state["model_file"])
            backbone_layer = state["backbone_layer"]
        else:
            if backbone.name == "dlib-resnet":
                model = build_descriptor_model(x_train.shape[1], config.embedding_dim, config.dropout,
                                               mean=x_train.mean(axis=0), variance=x_train.var(axis=0) + 1e-6,
                                               n_classes=n_classes, target=schema.target)
                backbone_layer = None
            else:
                net = build_backbone(backbone, size, weights_file, alpha)
                model = build_image_model(net, size, backbone.preprocess, frozen_statistics=pretrained,
                                          embedding_dim=config.embedding_dim, dropout=config.dropout,
                                          n_classes=n_classes, target=schema.target)
                backbone_layer = net.name
            state = {"phase_index": 0, "epochs_done": 0, "stopped": False, "history": {}, "best": None,
                     "wait": 0, "plateau_wait": 0, "backbone_layer": backbone_layer, "train_seconds": 0.0,
                     "train_images": 0, "resumed": 0}
            _set_trainable(model, backbone_layer, phases[0]["name"] != "freeze")
            _compile(model, phases[0], config, steps, prior)
        if config.resume:
            state["resumed"] = state.get("resumed", 0) + 1

        timer = _Timer()
        phase_index = state["phase_index"]
        while phase_index < len(phases):
            phase = phases[phase_index]
            history = state["history"].setdefault(phase["name"], {})
            epoch = state["epochs_done"]
            stopper, plateau = _epoch_rules(model, config, state)
            while epoch < phase["epochs"] and not state["stopped"]:
                label = f"[{phase.get('label', phase['name'])}] epoch {epoch + 1}/{phase['epochs']}"
                callbacks = [timer, console.keras_bar(steps, label, fit=True)] if config.progress else [timer]
                epoch_start = time.perf_counter()
                _reseed(model, config.seed, phase_index, epoch)
                # tf.data's C++ runtime writes "E0000 ... node_def_util.cc ... use_unbounded_threadpool" (after
                # absl's "WARNING: All log messages before absl::InitializeLog()") on fd 2 when the parallel map is
                # built and while fitting: dropped unless --verbose (a live progress bar still shows meanwhile)
                with console.native_noise_dropped():
                    train_data = distributed(tdata.train_dataset(
                        x_train, y_train, n_classes=n_classes, batch_size=config.batch_size,
                        seed=config.seed + 7919 * phase_index, epoch=epoch, sample_weights=weights,
                        augment=config.augment and x_train.ndim == 4, rotation=config.rotation, zoom=config.zoom))
                if role is not None:
                    multiworker_steps(model, train_data.element_spec)

                with console.native_noise_dropped():
                    result = model.fit(train_data, validation_data=val_data, epochs=epoch + 1, initial_epoch=epoch,
                                       verbose=0, callbacks=callbacks)
                logs = {k: float(v[-1]) for k, v in result.history.items()}
                if role is not None:
                    _average_batchnorm_statistics(strategy, model)
                if config.progress:
                    print(console.epoch_line(label, logs, time.perf_counter() - epoch_start), flush=True)
                logs["learning_rate"] = _current_lr(model)
                for key, value in logs.items():
                    history.setdefault(key, []).append(value)
                epoch += 1
                state["train_images"] += len(y_train)
                if _judge_epoch(stopper, plateau, state, epoch - 1, logs):  # improved: the new best checkpoint
                    state["best_file"] = f"best-{phase_index}-{epoch}.weights.h5"
                    _save_model(model, ckpt / state["best_file"])
                if state["stopped"]:
                    if config.progress:
                        print(f"[{phase.get('label', phase['name'])}] early stop: no val_loss gain for {config.patience} epochs", flush=True)
                state["model_file"] = f"epoch-{phase_index}-{epoch}.keras"
                state["epochs_done"] = epoch
                state["train_seconds"] = state.get("train_seconds", 0.0) + timer.train_seconds
                timer.train_seconds = 0.0
                _save_model(model, ckpt / state["model_file"])
                _write_state(ckpt, state)
            # End of phase: restore the best weights, then set up the next phase.
            if state.get("best_file"):
                model.load_weights(ckpt / state["best_file"])
            phase_index += 1
            if phase_index < len(phases):
                state.update(phase_index=phase_index, epochs_done=0, stopped=False, best=None, best_file=None, wait=0,
                             plateau_wait=0)
                _set_trainable(model, backbone_layer, phases[phase_index]["name"] != "freeze")
                _compile(model, phases[phase_index], config, steps, prior)

    if not chief:
        # Every worker saves when the chief does (the standard multi-worker pattern: saving may read variables
        # through collectives); the non-chief's copy is temporary, in its own checkpoint folder.
        _save_model(model, ckpt / MODEL_FILE)
        _gather(strategy, 1.0)  # wait for the chief's run folder: a --resume of a failed chief needs every worker
        _finish_worker(out, ckpt, role, state, started, _weights_sha256(model))
        return out
    # Final artefacts: the model, histories, predictions on test, then the run record (written last).
    _save_model(model, out / MODEL_FILE)
    write_history(state["history"], out)
    infer_start = time.perf_counter()
    # run.json is written last; until then inference reads what it needs from this stand-in.
    pending = RunRecord(status="predicting", backbone=backbone.name, label_schema=schema.to_dict(),
                        dlib_framing=config.dlib_framing if backbone.name == "dlib-resnet" else None)
    from faceaudit import console

    # Keras' predict on arrays builds a parallel tf.data map: the same "E0000 ... use_unbounded_threadpool" line
    with console.native_noise_dropped():
        table, _ = predict_table(out, test_m, batch_size=max(config.batch_size, 64), progress=config.progress,
                                 schema=schema, run=pending)
    infer_seconds = time.perf_counter() - infer_start
    table.write(out / PREDICTIONS_FILE)
    test_accuracy = float((table.y_true == table.y_pred).mean())
    record = RunRecord(
        status="complete",
        backbone=backbone.name,
        weights=config.weights if backbone.name != "dlib-resnet" else "dlib face_recognition_model_v1 (frozen)",
        weights_file=str(weights_file) if weights_file else None,
        input="dlib 128-d descriptors" if backbone.name == "dlib-resnet" else [size, size, 3],
        image_size=size,
        alpha=alpha,
        dlib_framing=config.dlib_framing if backbone.name == "dlib-resnet" else None,
        batchnorm="inference mode (ImageNet statistics kept)" if pretrained else "trained",
        params=int(model.count_params()),
        trainable_params=int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        seed=config.seed,
        label_schema=schema.to_dict(),
        hyperparameters=config.record(),
        phases=[{**p, "epochs_run": len(state["history"].get(p["name"], {}).get("loss", []))} for p in phases],
        history_format="history.json: {phase: {loss, accuracy, val_loss, val_accuracy, learning_rate}}; "
                       "history-<phase>.json: one phase in the seed's flat shape",
        data={"source": str(dataset.source), "manifest_sha256": dataset.fingerprint, "synthetic": dataset.synthetic,
              "split_sizes": {"train": len(train_m), "val": len(val_m), "test": len(test_m)},
              "split_seed_note": f"splits come from the data layer (stratified by {schema.target} x gender)",
              "excluded_unusable_images": dict(image_problems(dataset)[["image_id", "reason"]].to_numpy().tolist())},
        strategy=config.strategy,
        devices=int(strategy.num_replicas_in_sync),
        workers=role.workers if role is not None else 1,
        resumed=int(state.get("resumed", 0)),
        descriptor_cache=cache_stats,
        test_accuracy=test_accuracy,
        train_images_per_s=state["train_images"] / state["train_seconds"] if state.get("train_seconds") else None,
        inference_images_per_s=len(test_m) / infer_seconds,
        wall_time_s=time.perf_counter() - started,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=_versions(),
        cpu_count=os.cpu_count(),
        tensorflow_devices=[d.name for d in tf.config.list_logical_devices()],
    )
    if state.get("resumed"):
        record.wall_time_note = "wall time of the last (resumed) process only"
    record.write(out)
    shutil.rmtree(ckpt, ignore_errors=True)
    if role is not None:
        _gather(strategy, 1.0)  # release the other workers, which wait for the run folder to be complete
    return out
