"""The backbone registry: each name builds a feature extractor with its own input size and preprocessing.

Every image backbone is wrapped by :func:`build_image_model` into the model contract (float32 RGB [0, 255]
in, ``embedding`` then ``<target>_probs`` out, e.g. ``race_probs``). ``dlib-resnet`` is a frozen dlib network outside Keras; its head
takes the 128-d descriptors (:func:`build_descriptor_model`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from faceaudit.errors import FaceauditError

#: Environment variable naming a folder of Keras ImageNet weight files for ``--weights imagenet``.
WEIGHTS_ENV = "FACEAUDIT_WEIGHTS_DIR"


@dataclass(frozen=True)
class Backbone:
    """One registered backbone: how to build it and what it expects."""

    name: str
    input_size: int
    preprocess: str  # a faceaudit.models.layers.Preprocess mode
    build: Callable | None  # (input_shape, weights: str | None, alpha) -> keras.Model without top
    imagenet_file: Callable[[int, float], str] | None  # Keras's file name for the no-top ImageNet weights
    default_alpha: float | None = None
    description: str = ""


def _mobilenet_v2(shape, weights, alpha):
    import keras

    return keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=weights)


def _mobilenet(shape, weights, alpha):
    import keras

    return keras.applications.MobileNet(input_shape=shape, alpha=alpha, include_top=False, weights=weights)


def _app(constructor: str, **extra):
    def build(shape, weights, alpha):
        import keras

        return getattr(keras.applications, constructor)(input_shape=shape, include_top=False, weights=weights,
                                                        **extra)
    return build


#: Batch-norm momentum of the from-scratch CNN. Keras's 0.99 lets the moving statistics trail the weights by
#: ~100 steps, longer than a small set's whole training (1,200 images = 19 steps an epoch): evaluation then runs
#: on stale statistics and predicts one class. 0.9 tracks within ~20 steps and costs nothing on large sets.
BN_MOMENTUM = 0.9


def _cnn(shape, weights, alpha):
    """Compact from-scratch CNN for 64x64 faces on two CPU cores: a stride-2 3x3 stem, then four stages of
    two 3x3 convolutions (32-64-128-256 filters, batch norm, ReLU) with max-pooling between them, about
    1.2 M parameters. The stride-2 stem cut training cost about 4x against a full-resolution first stage
    (measured 18 -> 125 img/s under the same load) for 64x64 faces."""
    import keras
    from keras import layers

    widths = [int(round(w * (alpha or 1.0))) for w in (32, 64, 128, 256)]
    inputs = keras.Input(shape)
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, width in enumerate(widths):
        for conv in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"stage{stage}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"stage{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
        if stage < len(widths) - 1:
            x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
    model = keras.Model(inputs, x, name="cnn")
    if weights:
        model.load_weights(weights)
    return model


def _mobilenet_file(size: int, alpha: float) -> str:
    text = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}.get(alpha, str(alpha))
    return f"mobilenet_{text}_{size}_tf_no_top.h5"


def _mobilenet_v2_file(size: int, alpha: float) -> str:
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha:g}_{size}_no_top.h5"


def _fixed(name: str) -> Callable[[int, float], str]:
    return lambda size, alpha: name


_EFFICIENTNETV2 = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "s": 384, "m": 480, "l": 480}

BACKBONES: dict[str, Backbone] = {
    "cnn": Backbone("cnn", 64, "unit", _cnn, None, description="compact CNN trained from scratch"),
    "mobilenetv2": Backbone("mobilenetv2", 96, "tf", _mobilenet_v2, _mobilenet_v2_file, 0.35,
                            "keras.applications.MobileNetV2 (alpha 0.35 or 0.5 with the offline weights)"),
    "mobilenet": Backbone("mobilenet", 96, "tf", _mobilenet, _mobilenet_file, 0.25,
                          "keras.applications.MobileNet (alpha 0.25 with the offline weights)"),
    "vgg16": Backbone("vgg16", 224, "caffe", _app("VGG16"), _fixed("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")),
    "resnet50": Backbone("resnet50", 224, "caffe", _app("ResNet50"),
                         _fixed("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")),
    "xception": Backbone("xception", 299, "tf", _app("Xception"),
                         _fixed("xception_weights_tf_dim_ordering_tf_kernels_notop.h5")),
    **{
        f"efficientnetv2-{v}": Backbone(
            f"efficientnetv2-{v}", size, "none",
            _app(f"EfficientNetV2{v.upper()}", include_preprocessing=True),
            _fixed(f"efficientnetv2-{v}_notop.h5"))
        for v, size in _EFFICIENTNETV2.items()
    },
    "dlib-resnet": Backbone("dlib-resnet", 150, "none", None, None,
                            description="dlib face-recognition ResNet (frozen, 128-d descriptors) + Keras head"),
}


def get_backbone(name: str) -> Backbone:
    """The registered backbone called ``name``, or a one-line error listing the choices."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise FaceauditError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


def weights_dirs() -> list[Path]:
    """Where ``--weights imagenet`` looks: ``$FACEAUDIT_WEIGHTS_DIR``, then Keras's cache ``~/.keras/models``."""
    dirs = []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    dirs.append(keras_home / "models")
    return dirs


def resolve_weights(backbone: Backbone, weights: str | None, size: int, alpha: float | None) -> Path | None:
    """The weights file to load (None for random initialisation); never downloads anything.

    ``imagenet`` looks for the file name Keras would download (at this input size, then at 224 px: no-top
    convolutional weights do not depend on the input size) and otherwise fails at once naming it.
    """
    if weights in (None, "", "none"):
        return None
    if weights == "imagenet":
        if backbone.imagenet_file is None:
            raise FaceauditError(f"backbone {backbone.name!r} has no ImageNet weights; use --weights none or PATH")
        names = list(dict.fromkeys([backbone.imagenet_file(size, alpha), backbone.imagenet_file(224, alpha)]))
        for folder in weights_dirs():
            for name in names:
                if (folder / name).is_file():
                    return folder / name
        where = " or ".join(str(d) for d in weights_dirs())
        raise FaceauditError(
            f"ImageNet weights for {backbone.name} are not available offline: Keras expects the file {names[-1]} "
            f"(not found in {where}); download it elsewhere and pass --weights PATH/{names[-1]}, "
            f"or set ${WEIGHTS_ENV} to its folder")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FaceauditError(f"weights file not found: {path}")
    return path


def build_backbone(backbone: Backbone, size: int, weights_file: Path | None, alpha: float | None):
    """The backbone network (no top) with random or file weights; one-line error if the file does not fit."""
    try:
        return backbone.build((size, size, 3), str(weights_file) if weights_file else None, alpha)
    except FaceauditError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        what = f"with weights {weights_file}" if weights_file else f"at {size}px"
        raise FaceauditError(f"cannot build {backbone.name} {what}: {first[:300]}") from None


def probs_layer_name(target: str) -> str:
    """The softmax layer of a model predicting ``target``: ``race_probs``."""
    return f"{target}_probs"


def add_head(features, embedding_dim: int, dropout: float, n_classes: int = 5, target: str = "race"):
    """The shared head: pooled features -> dropout -> ``embedding`` (ReLU) -> dropout -> ``<target>_probs``
    (``n_classes`` units, in the label schema's class order)."""
    from keras import layers

    x = features
    if len(x.shape) == 4:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(embedding_dim, activation="relu", name="embedding")(x)
    if dropout:
        x = layers.Dropout(dropout, name="embedding_dropout")(x)
    return layers.Dense(n_classes, activation="softmax", name=probs_layer_name(target), dtype="float32")(x)


def build_image_model(backbone, size: int, preprocess: str, *, frozen_statistics: bool, embedding_dim: int,
                      dropout: float, n_classes: int = 5, target: str = "race"):
    """Backbone + head under the model contract. With ``frozen_statistics`` (pretrained weights) the backbone
    runs with ``training=False``, so batch norm keeps its ImageNet statistics even once unfrozen (Keras's
    fine-tuning recipe); from-scratch backbones learn their statistics."""
    import keras

    from faceaudit.models.layers import Preprocess

    inputs = keras.Input((size, size, 3), name="image")
    x = Preprocess(preprocess, name="preprocess")(inputs)
    x = backbone(x, training=False) if frozen_statistics else backbone(x)
    return keras.Model(inputs, add_head(x, embedding_dim, dropout, n_classes, target), name=f"faceaudit_{backbone.name}")


def build_descriptor_model(dim: int, embedding_dim: int, dropout: float, mean=None, variance=None, *,
                           n_classes: int = 5, target: str = "race"):
    """The Keras head over dlib's descriptors: standardised (training-set ``mean``/``variance``), a hidden
    layer, ``embedding``, ``<target>_probs``."""
    import keras
    from keras import layers

    inputs = keras.Input((dim,), name="descriptor")
    x = inputs
    if mean is not None:
        x = layers.Normalization(mean=mean, variance=variance, name="standardise")(x)
    x = layers.Dense(512, activation="relu", name="hidden")(x)
    x = layers.Dropout(dropout, name="hidden_dropout")(x) if dropout else x
    return keras.Model(inputs, add_head(x, embedding_dim, dropout, n_classes, target), name="faceaudit_dlib_head")
