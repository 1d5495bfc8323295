"""The run folder: the seam between training and everything that reads a trained model.

``faceaudit train`` writes a run folder holding ``model.keras``, ``history.json`` (plus one seed-shaped
``history-<phase>.json`` per phase), ``predictions.csv`` (the test split, a :class:`~faceaudit.seams.predictions.
PredictionsTable`) and ``run.json``, the :class:`RunRecord` written last. This module is the one definition of those
file names, of ``run.json`` (:class:`RunRecord`) and of the history files (:func:`load_history`,
:func:`write_history`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_write
from faceaudit.seams.versions import check_version
from faceaudit.taxonomy import UTKFACE, LabelSchema

MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.csv"
HISTORY_FILE = "history.json"

#: What the model card and reproducibility sections show of a run: how the model was built and trained, on which
#: data and split (:meth:`RunRecord.facts`).
FACT_KEYS = ("backbone", "weights", "weights_file", "input", "image_size", "alpha", "dlib_framing", "batchnorm",
             "params", "seed", "phases", "data", "strategy", "workers", "ensemble", "mitigation", "test_accuracy",
             "wall_time_s", "finished_at")


@dataclass
class RunRecord:
    """``run.json``: what a training run was (backbone, weights, hyper-parameters, data, label schema) and what it
    measured (test accuracy, speed, wall time). Every field may be None in a record read from an older run."""

    #: Version of the record's layout; written as ``run_version``.
    VERSION: ClassVar[str] = "1.1"

    status: str | None = None
    backbone: str | None = None
    #: ``none``, ``imagenet``, a weights file as given, or dlib's frozen network.
    weights: str | None = None
    weights_file: str | None = None
    #: ``[size, size, 3]``, or ``"dlib 128-d descriptors"``.
    input: Any = None
    image_size: int | None = None
    alpha: float | None = None
    dlib_framing: str | None = None
    batchnorm: str | None = None
    params: int | None = None
    trainable_params: int | None = None
    seed: int | None = None
    #: Every :class:`~faceaudit.training.config.TrainConfig` field as given.
    hyperparameters: dict | None = None
    #: ``[{name, epochs, lr, epochs_run}]`` in training order.
    phases: list | None = None
    history_format: str | None = None
    #: ``{source, manifest_sha256, synthetic, split_sizes, split_seed_note, excluded_unusable_images}``.
    data: dict | None = None
    #: :meth:`LabelSchema.to_dict` of the taxonomy the model predicts (absent before 1.0: UTKFace's races).
    label_schema: dict | None = None
    strategy: str | None = None
    devices: int | None = None
    #: Processes that trained the model together (``--strategy multiworker``: the cluster's workers; else 1).
    workers: int | None = None
    resumed: int | None = None
    descriptor_cache: dict | None = None
    #: An ensemble run (backbone ``ensemble``, 1.1): its members (``members/<name>/`` run folders), how their
    #: probabilities are combined and what each scored.
    ensemble: dict | None = None
    #: A mitigated run (1.1): the per-class biases inside its model, fitted on the source run's validation split.
    mitigation: dict | None = None
    test_accuracy: float | None = None
    train_images_per_s: float | None = None
    inference_images_per_s: float | None = None
    wall_time_s: float | None = None
    wall_time_note: str | None = None
    finished_at: str | None = None
    versions: dict | None = None
    cpu_count: int | None = None
    tensorflow_devices: list | None = None
    #: ``run_version`` as read (None for a record older than versioning).
    run_version: str | None = None
    #: Keys of the file this class does not know (kept so a read-write round trip loses nothing).
    extra: dict = field(default_factory=dict, repr=False)
    #: The run folder the record was read from or written to (not stored in the file).
    run_dir: Path | None = field(default=None, repr=False, compare=False)

    # -- derived ------------------------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The run's name: its folder's name."""
        return self.run_dir.name if self.run_dir is not None else None

    @property
    def schema(self) -> LabelSchema:
        """The label schema the model predicts (UTKFace's races for runs recorded before schemas)."""
        return LabelSchema.from_dict(self.label_schema) if self.label_schema else UTKFACE

    @property
    def image_model(self) -> bool:
        """Whether ``model.keras`` takes images: not for a dlib-resnet head (descriptors) or an ensemble's combiner
        (its members' log-probabilities), which :mod:`faceaudit.models.inference` feeds itself."""
        return self.backbone not in ("dlib-resnet", "ensemble")

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def facts(self) -> dict:
        """What the model card shows: ``name`` and :data:`FACT_KEYS` (None where the run did not record it)."""
        return {"name": self.name, **{key: getattr(self, key) for key in FACT_KEYS}}

    # -- I/O ----------------------------------------------------------------------------------------------

    @classmethod
    def _known(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in ("extra", "run_dir", "run_version"))

    def to_dict(self) -> dict:
        """The JSON form: ``run_version`` first, then every field, then the unknown keys read."""
        return {"run_version": self.VERSION, **{k: getattr(self, k) for k in self._known()}, **self.extra}

    @classmethod
    def from_dict(cls, data: dict, run_dir: Path | None = None) -> "RunRecord":
        """A record from ``run.json``'s contents; missing fields are None, unknown keys kept in :attr:`extra`."""
        if not isinstance(data, dict):
            raise FaceauditError("run.json is not a JSON object")
        known = cls._known()
        version = check_version(data.get("run_version"), cls.VERSION, "run.json", required=False)
        return cls(**{k: data[k] for k in known if k in data},
                   run_version=None if version is None else str(version),
                   extra={k: v for k, v in data.items() if k not in known and k != "run_version"},
                   run_dir=None if run_dir is None else Path(run_dir))

    @classmethod
    def read(cls, run_dir: Path | str) -> "RunRecord":
        """The record of a run folder; one FaceauditError when it has none or it cannot be read."""
        file = Path(run_dir) / RUN_FILE
        try:
            data = json.loads(file.read_text())
        except FileNotFoundError:
            raise FaceauditError(f"{run_dir} is not a finished run folder: it has no {RUN_FILE}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FaceauditError(f"cannot read {file}: {exc}") from None
        try:
            return cls.from_dict(data, Path(run_dir))
        except FaceauditError as exc:
            raise FaceauditError(f"cannot read {file}: {exc}") from None

    def write(self, run_dir: Path | str) -> Path:
        """Write ``run.json`` into ``run_dir`` atomically and return its path."""
        self.run_dir = Path(run_dir)
        return atomic_write(self.run_dir / RUN_FILE, json.dumps(self.to_dict(), indent=1, default=str))


#: What a run folder is made of: the model, its record, the test predictions, the histories and an ensemble's
#: members (anything else in it, such as exports, belongs to other commands).
RUN_PARTS = (MODEL_FILE, RUN_FILE, PREDICTIONS_FILE, "history*.json", "members")


def copy_run_parts(source: Path | str, dest: Path | str, parts: tuple[str, ...] = RUN_PARTS) -> None:
    """Copy the ``parts`` (file names or glob patterns of :data:`RUN_PARTS`) of run folder ``source`` into ``dest``."""
    import shutil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in parts:
        for entry in sorted(Path(source).glob(pattern)):
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, dest / entry.name)


#: File suffixes of the model formats :mod:`faceaudit.models` runs (a SavedModel is a folder).
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5", ".tflite", ".onnx")


def resolve_model(source: Path | str) -> tuple[Path, RunRecord | None]:
    """The model a source names and its run record: a run folder's ``model.keras`` (with ``run.json`` when it has
    one), a model file (``.keras``, ``.h5``, ``.tflite``, ``.onnx``; a ``model.keras`` inside a run folder gets
    that folder's record) or a TensorFlow SavedModel folder (no record)."""
    source = Path(source)
    if source.is_dir():
        model_file = source / MODEL_FILE
        if not model_file.exists():
            if (source / "saved_model.pb").exists() or (source / "saved_model.pbtxt").exists():
                return source, None
            raise FaceauditError(f"{source} is not a run folder (it has no {MODEL_FILE}) or a TensorFlow SavedModel "
                                 "(no saved_model.pb)")
        return model_file, RunRecord.read(source) if (source / RUN_FILE).exists() else None
    if not source.exists():
        raise FaceauditError(f"model not found: {source}")
    if source.suffix.lower() not in MODEL_SUFFIXES:
        raise FaceauditError(f"{source} is not a model file faceaudit can run ({', '.join(MODEL_SUFFIXES)}), a "
                             "SavedModel folder or a run folder")
    run_dir = source.parent
    if source.name == MODEL_FILE and (run_dir / RUN_FILE).exists():
        return source, RunRecord.read(run_dir)
    return source, None


# -- training histories ---------------------------------------------------------------------------------------
#
# A faceaudit ``history.json`` maps each phase that ran (``freeze``: backbone frozen, head only; ``unfreeze``: whole
# network) to the seed's shape, ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]}``
# (plus ``learning_rate``). The run folder also holds ``history-<phase>.json``, each exactly a seed
# ``*-freeze_history.json`` / ``*-unfreeze_history.json`` file.

PHASES = ("freeze", "unfreeze")
SEED_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
#: Phase name given to a flat history file whose name does not say freeze or unfreeze.
SINGLE_PHASE = "train"


def _is_flat(data: dict) -> bool:
    return all(isinstance(v, list) for v in data.values()) and "loss" in data


def _phase_from_name(path: Path) -> str:
    stem = path.name.lower()
    if "unfreeze" in stem:
        return "unfreeze"
    if "freeze" in stem:
        return "freeze"
    return SINGLE_PHASE


def load_history(path: Path | str) -> dict[str, dict[str, list[float]]]:
    """``{phase: {metric: [per-epoch values]}}`` from a seed flat history file or a faceaudit one.

    A flat file (the seed's ``*_history.json``) becomes one phase named from its file name (``freeze``,
    ``unfreeze``, else ``train``); a run folder may be given for its ``history.json``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FaceauditError(f"cannot read history {path}: {exc}") from None
    if not isinstance(data, dict):
        raise FaceauditError(f"{path} is not a training history (expected a JSON object)")
    try:
        if _is_flat(data):
            return {_phase_from_name(path): {k: [float(x) for x in v] for k, v in data.items()}}
        phases = {}
        for phase, metrics in data.items():
            if isinstance(metrics, dict) and _is_flat(metrics):
                phases[phase] = {k: [float(x) for x in v] for k, v in metrics.items()}
    except (TypeError, ValueError):
        raise FaceauditError(f"{path} is not a training history (a metric holds a non-number)") from None
    if not phases:
        raise FaceauditError(f"{path} is not a training history (no 'loss' list)")
    return phases


def write_history(history: dict[str, dict[str, list[float]]], run_dir: Path | str) -> Path:
    """Write ``history.json`` (all phases) and one seed-shaped ``history-<phase>.json`` per phase, atomically."""
    run_dir = Path(run_dir)
    for phase, metrics in history.items():
        atomic_write(run_dir / f"history-{phase}.json", json.dumps(metrics, indent=1))
    return atomic_write(run_dir / HISTORY_FILE, json.dumps(history, indent=1))
