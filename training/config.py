"""Every training hyper-parameter, with its default and the reason for it, in one dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from faceaudit.config import DEFAULT_SEED
from faceaudit.taxonomy import DEFAULT_AGE_BANDS, LabelSchema, get_schema


@dataclass
class TrainConfig:
    """What :func:`faceaudit.training.trainer.train` needs; each field is recorded in ``run.json``.

    Phases: ``freeze`` trains the head with the backbone frozen (``head_epochs`` at ``lr``); ``unfreeze``
    trains the whole network (``epochs`` at ``finetune_lr`` for pretrained weights, ``lr`` from scratch).
    For ``dlib-resnet`` the extractor is always frozen, so ``epochs`` counts head epochs.
    """

    #: UTKFace folder/archive or labelled CSV (ignored when ``dataset`` is given).
    data: Path | None = None
    #: Label schema: a preset name (``utkface``, ``fairface``/``fairface7``, ``fairface4``) or a LabelSchema. The
    #: model has one output unit per class of its target, in the schema's class order.
    schema: str | LabelSchema = "utkface"
    #: The attribute to predict (None: the schema's target, ``race`` for the presets).
    target: str | None = None
    #: Run folder to create (model.keras, history.json, run.json, predictions.csv).
    out: Path = Path("runs/run")
    backbone: str = "cnn"
    #: ``none`` (random init), ``imagenet`` (the file Keras would download, looked up offline) or a file path.
    weights: str = "none"
    #: MobileNet width multiplier (None: the backbone's default: 0.35 for mobilenetv2, 0.25 for mobilenet).
    alpha: float | None = None
    #: Input side in pixels (None: the backbone's own: 64 cnn, 96 mobilenets, 224 vgg16/resnet50, ...).
    image_size: int | None = None
    #: Head-only epochs with the backbone frozen (None: 3 with pretrained weights, 0 from scratch).
    head_epochs: int | None = None
    #: Whole-network epochs (head epochs for dlib-resnet); 0 skips the phase. Early stopping may end sooner.
    epochs: int = 30
    batch_size: int = 64
    #: Learning rate of the head phase and of from-scratch training (AdamW).
    lr: float = 1e-3
    #: Learning rate when unfreezing pretrained weights: lower, so ImageNet features are adjusted, not erased.
    finetune_lr: float = 1e-4
    weight_decay: float = 1e-4
    #: ``cosine`` (decay to 1% over the phase) or ``plateau`` (x0.3 after 2 epochs without val-loss gain).
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    #: Weight samples by inverse frequency of their target class (UTKFace is 42% White, 7% Others).
    class_weights: bool = False
    #: Logit-adjusted loss (Menon et al. 2021): train on ``softmax(log p + tau * log prior)`` so rare classes get
    #: a larger margin; 0 is plain cross-entropy, 1 targets balanced error. The model predicts with plain logits.
    logit_adjust: float = 0.0
    #: Augmentation: horizontal flip, rotation up to ``rotation`` degrees, zoom within 1 +/- ``zoom``.
    augment: bool = True
    rotation: float = 10.0
    zoom: float = 0.1
    dropout: float = 0.3
    embedding_dim: int = 128
    #: Early stopping on validation loss (best weights restored); 0 disables it.
    patience: int = 5
    #: One seed for data order, augmentation and initialisation (the split uses the data layer's seed).
    seed: int = DEFAULT_SEED
    #: ``none``, ``mirrored`` (tf.distribute.MirroredStrategy over all GPUs, else all logical CPUs) or
    #: ``multiworker`` (tf.distribute.MultiWorkerMirroredStrategy over the cluster in ``$TF_CONFIG``; the same
    #: command runs on every worker, the chief writes the run folder, ``batch_size`` is the global batch).
    strategy: str = "none"
    #: Split the CPU into this many logical devices before TensorFlow starts (0: leave it as one).
    cpu_devices: int = 0
    #: Continue a killed run from its last completed epoch.
    resume: bool = False
    #: Use at most this many training images (a random sample fixed by ``seed``); None: all.
    max_train: int | None = None
    #: dlib-resnet chip framing: ``align`` (5-point landmarks + dlib.get_face_chip) or ``resize``; a ``+mirror``
    #: suffix averages each descriptor with the mirrored chip's. Default measured on UTKFace-64px with one head:
    #: align 0.859 val / 0.859 test, align+mirror 0.864 / 0.866, for twice the one-off extraction.
    dlib_framing: str = "align+mirror"
    age_bands: str = DEFAULT_AGE_BANDS
    exclude: Path | None = None
    #: Ask TensorFlow for deterministic kernels (slightly slower; makes --resume reproduce a run exactly).
    deterministic: bool = True
    progress: bool = True
    #: An already-loaded faceaudit Dataset (e.g. `faceaudit demo`'s synthetic set); not recorded.
    dataset: object | None = field(default=None, repr=False)

    def label_schema(self) -> LabelSchema:
        """The schema the model is trained on: the preset or schema given, with ``target`` and ``age_bands``."""
        return get_schema(self.schema).with_options(target=self.target, age_bands=self.age_bands)

    def record(self) -> dict:
        """JSON-ready hyper-parameters for ``run.json`` (the schema by name; ``run.json`` holds it in full)."""
        values = asdict(self)
        values.pop("dataset")
        if isinstance(self.schema, LabelSchema):
            values["schema"] = self.schema.name
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
