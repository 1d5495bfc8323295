"""Serializable preprocessing layers, so every saved model takes float32 RGB in [0, 255] and needs nothing else.

Importing this module registers the layers with Keras; :mod:`faceaudit.training.inference` does so before
loading any model.
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
