"""Serializable preprocessing layers, so every saved model takes float32 RGB in [0, 255] and needs nothing else.

Importing this module registers the layers (and the training loss) with Keras;
:func:`faceaudit.models.keras_runtime.load_keras` does so before loading any model.
"""

from __future__ import annotations

import keras
from keras import ops

#: keras.applications preprocessing modes: ``tf`` scales to [-1, 1], ``torch`` to ImageNet mean/std,
#: ``caffe`` swaps RGB to BGR and subtracts the ImageNet channel means, ``unit`` scales to [0, 1],
#: ``none`` passes pixels through (EfficientNetV2 preprocesses inside itself).
MODES = ("tf", "torch", "caffe", "unit", "none")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="faceaudit")
class Preprocess(keras.layers.Layer):
    """A backbone's ``preprocess_input`` as a layer (no weights)."""

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torch":
            return (x / 255.0 - ops.convert_to_tensor(_IMAGENET_MEAN)) / ops.convert_to_tensor(_IMAGENET_STD)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="faceaudit")
class ClassBias(keras.layers.Layer):
    """Adds a fixed bias to each class's log-probability and renormalises, ``softmax(log p + bias)``: a post-hoc
    decision shift (logit adjustment, recall equalisation) saved inside the model, so a mitigated model runs
    wherever the original does."""

    def __init__(self, bias=(), **kwargs):
        super().__init__(**kwargs)
        self.bias = [float(b) for b in bias]

    def call(self, probs):
        log_p = ops.log(ops.clip(ops.cast(probs, "float32"), 1e-12, 1.0))
        return ops.softmax(log_p + ops.convert_to_tensor(self.bias, dtype="float32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bias": self.bias}


@keras.saving.register_keras_serializable(package="faceaudit")
class LogitAdjustedLoss(keras.losses.Loss):
    """Logit-adjusted cross-entropy (Menon et al., ICLR 2021, eq. 10) on a softmax output: the loss of
    ``softmax(log p + tau * log prior)``, so training pays rare classes a larger margin while the model itself
    predicts with its plain logits (``log p`` differs from the logits by a per-row constant)."""

    def __init__(self, prior=(), tau: float = 1.0, label_smoothing: float = 0.0, name="logit_adjusted_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.prior = [float(p) for p in prior]
        self.tau = float(tau)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        log_p = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-12, 1.0))
        shift = self.tau * ops.log(ops.convert_to_tensor(self.prior, dtype="float32"))
        return keras.losses.categorical_crossentropy(y_true, log_p + shift, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "prior": self.prior, "tau": self.tau, "label_smoothing": self.label_smoothing}
