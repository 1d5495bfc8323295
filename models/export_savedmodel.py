"""Export to a TensorFlow SavedModel (signature ``serving_default``), and run an exported descriptor head in one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .export_spec import DESCRIPTOR_INPUT, serving_function


def write_savedmodel(both, input_shape, folder: Path) -> None:
    import keras

    serve, spec = serving_function(both, input_shape)
    archive = keras.export.ExportArchive()
    archive.track(both)
    archive.add_endpoint(name="serve", fn=serve, input_signature=[spec])
    archive.write_out(str(folder), verbose=False)


def descriptor_runner(folder: Path):
    """One batch of descriptors ``[n, 128]`` through the SavedModel's ``serving_default`` signature."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(folder)).signatures["serving_default"]

    def one(batch):
        return {k: np.asarray(v) for k, v in fn(**{DESCRIPTOR_INPUT: tf.constant(batch)}).items()}

    return one
