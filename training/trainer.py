"""``train(config) -> run folder``: the seed's two-phase transfer-learning recipe as a reproducible, resumable run.

Phase ``freeze`` trains the head on a frozen backbone, phase ``unfreeze`` the whole network at a lower rate.
After every epoch the model with its optimizer state, the best weights and the history so far are
checkpointed, so ``resume=True`` continues a killed run and ends with the same history.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_path, atomic_write
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
from faceaudit.training.inference import predict_table

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
SCHEDULES = ("cosine", "plateau")
STRATEGIES = ("none", "mirrored")
#: Plateau schedule: multiply the rate by this after this many epochs without a validation-loss gain.
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.3, 2
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


def make_strategy(name: str):
    """``tf.distribute`` strategy: the default one, or MirroredStrategy over the GPUs, else over all CPUs."""
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
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
    if backbone.name == "dlib-resnet" and config.weights not in ("none", "", None):
        raise FaceauditError("dlib-resnet always uses its own pretrained network; omit --weights")


def _prepare_out(out: Path, resume: bool) -> dict | None:
    """Create the run folder; the saved checkpoint state when resuming; refuse to overwrite a run."""
    from faceaudit.files import writable_dir

    writable_dir(out)
    state_file = out / CHECKPOINT_DIR / STATE_FILE
    if resume:
        if state_file.exists():
            return json.loads(state_file.read_text())
        if (out / RUN_FILE).exists():
            return {"complete": True}
        return None
    if (out / RUN_FILE).exists() or state_file.exists():
        raise FaceauditError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    return None


def _phases(config: TrainConfig, backbone: Backbone, pretrained: bool) -> list[dict]:
    """The phases to run, in order (a phase with 0 epochs is skipped)."""
    if backbone.name == "dlib-resnet":
        return [{"name": "freeze", "epochs": config.epochs, "lr": config.lr}] if config.epochs else []
    head = config.head_epochs if config.head_epochs is not None else (3 if pretrained else 0)
    phases = []
    if head:
        phases.append({"name": "freeze", "epochs": head, "lr": config.lr})
    if config.epochs:
        phases.append({"name": "unfreeze", "epochs": config.epochs,
                       "lr": config.finetune_lr if pretrained else config.lr})
    return phases


def _compile(model, phase: dict, config: TrainConfig, steps_per_epoch: int) -> None:
    import keras

    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(phase["lr"], decay_steps=max(1, phase["epochs"] * steps_per_epoch),
                                                      alpha=0.01)
    else:
        rate = phase["lr"]
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=rate, weight_decay=config.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
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
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", []) or []:
            value = np.random.default_rng([seed, phase_index, epoch, index]).integers(0, 2**31 - 1)
            generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))
            index += 1


def _set_trainable(model, backbone_layer: str | None, trainable: bool) -> None:
    if backbone_layer:
        model.get_layer(backbone_layer).trainable = trainable


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
    schema = config.label_schema()
    out = Path(config.out)
    state = _prepare_out(out, config.resume)
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

    from faceaudit.training import data as tdata
    from faceaudit.training import layers  # noqa: F401  (registers Preprocess for checkpoint loading)

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
        from faceaudit.training.dlib_features import descriptors

        x_train, cache_train = descriptors(train_m, config.dlib_framing, progress=config.progress)
        x_val, cache_val = descriptors(val_m, config.dlib_framing, progress=config.progress)
        cache_stats = {"computed": cache_train["computed"] + cache_val["computed"],
                       "cached": cache_train["cached"] + cache_val["cached"]}
    else:
        x_train = tdata.load_images(train_m, size, config.progress, "loading train images")
        x_val = tdata.load_images(val_m, size, config.progress, "loading val images")
        cache_stats = None
    weights = tdata.class_weight_vector(y_train, n_classes)[y_train] if config.class_weights else None

    strategy = make_strategy(config.strategy)
    pretrained = weights_file is not None
    phases = _phases(config, backbone, pretrained)
    if not phases:
        raise FaceauditError("nothing to train: every phase has 0 epochs")
    steps = int(np.ceil(len(y_train) / config.batch_size))
    ckpt = out / CHECKPOINT_DIR
    ckpt.mkdir(exist_ok=True)
    val_data = tdata.eval_dataset(x_val, y_val, config.batch_size, n_classes)
    from faceaudit import console

    with strategy.scope():
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
            _compile(model, phases[0], config, steps)
        if config.resume:
            state["resumed"] = state.get("resumed", 0) + 1

        timer = _Timer()
        phase_index = state["phase_index"]
        while phase_index < len(phases):
            phase = phases[phase_index]
            history = state["history"].setdefault(phase["name"], {})
            best_file = ckpt / f"best-{phase['name']}.weights.h5"
            epoch = state["epochs_done"]
            while epoch < phase["epochs"] and not state["stopped"]:
                label = f"[{phase['name']}] epoch {epoch + 1}/{phase['epochs']}"
                callbacks = [timer, console.keras_bar(steps, label, fit=True)] if config.progress else [timer]
                epoch_start = time.perf_counter()
                _reseed(model, config.seed, phase_index, epoch)
                train_data = tdata.train_dataset(
                    x_train, y_train, n_classes=n_classes, batch_size=config.batch_size, seed=config.seed + 7919 * phase_index,
                    epoch=epoch, sample_weights=weights, augment=config.augment and x_train.ndim == 4,
                    rotation=config.rotation, zoom=config.zoom)
                result = model.fit(train_data, validation_data=val_data, epochs=epoch + 1, initial_epoch=epoch,
                                   verbose=0, callbacks=callbacks)
                logs = {k: float(v[-1]) for k, v in result.history.items()}
                if config.progress:
                    print(console.epoch_line(label, logs, time.perf_counter() - epoch_start), flush=True)
                logs["learning_rate"] = _current_lr(model)
                for key, value in logs.items():
                    history.setdefault(key, []).append(value)
                epoch += 1
                state["train_images"] += len(y_train)
                improved = state["best"] is None or logs["val_loss"] < state["best"] - 1e-4
                if improved:
                    state["best"], state["wait"], state["plateau_wait"] = logs["val_loss"], 0, 0
                    _save_model(model, best_file)
                else:
                    state["wait"] += 1
                    state["plateau_wait"] += 1
                    if config.schedule == "plateau" and state["plateau_wait"] >= PLATEAU_PATIENCE:
                        model.optimizer.learning_rate.assign(_current_lr(model) * PLATEAU_FACTOR)
                        state["plateau_wait"] = 0
                if config.patience and state["wait"] >= config.patience:
                    state["stopped"] = True
                    if config.progress:
                        print(f"[{phase['name']}] early stop: no val_loss gain for {config.patience} epochs", flush=True)
                previous = state.get("model_file")
                state["model_file"] = f"epoch-{phase_index}-{epoch}.keras"
                state["epochs_done"] = epoch
                state["train_seconds"] = state.get("train_seconds", 0.0) + timer.train_seconds
                timer.train_seconds = 0.0
                _save_model(model, ckpt / state["model_file"])
                _write_json(ckpt / STATE_FILE, state)
                if previous and previous != state["model_file"]:
                    (ckpt / previous).unlink(missing_ok=True)
            # End of phase: restore the best weights, then set up the next phase.
            if best_file.exists():
                model.load_weights(best_file)
            phase_index += 1
            if phase_index < len(phases):
                state.update(phase_index=phase_index, epochs_done=0, stopped=False, best=None, wait=0, plateau_wait=0)
                _set_trainable(model, backbone_layer, phases[phase_index]["name"] != "freeze")
                _compile(model, phases[phase_index], config, steps)

    # Final artefacts: the model, histories, predictions on test, then the run record (written last).
    _save_model(model, out / MODEL_FILE)
    write_history(state["history"], out)
    infer_start = time.perf_counter()
    # run.json is written last; until then inference reads what it needs from this stand-in.
    pending = RunRecord(status="predicting", backbone=backbone.name, label_schema=schema.to_dict(),
                        dlib_framing=config.dlib_framing if backbone.name == "dlib-resnet" else None)
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
    return out
