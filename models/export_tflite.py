"""Export to a TFLite flatbuffer (float32, float16 weights or full int8), converted from the SavedModel, and run an
exported descriptor head through its signature runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceaudit.console import native_noise_dropped
from faceaudit.errors import FaceauditError

from .export_savedmodel import write_savedmodel
from .export_spec import DESCRIPTOR_INPUT, MODEL_FILES


def write_tflite(both, input_shape, folder: Path, quantize: str | None, calibration: np.ndarray | None) -> None:
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="faceaudit-export-") as tmp:
        write_savedmodel(both, input_shape, Path(tmp))
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serving_default"])
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]

            def samples():
                for row in calibration:
                    yield [row[None, ...].astype(np.float32)]

            converter.representative_dataset = samples
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            # float32 input and outputs: the contract stays [0, 255] RGB in, probabilities out
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
        try:
            with native_noise_dropped():  # the converter's "fully_quantize: 0, ..." line
                flatbuffer = converter.convert()
        except Exception as exc:  # the converter raises ConverterError and others
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise FaceauditError(f"TFLite conversion failed: {first}") from None
    (folder / MODEL_FILES["tflite"]).write_bytes(flatbuffer)


def descriptor_runner(folder: Path):
    """One batch of descriptors ``[n, 128]`` through the flatbuffer's ``serving_default`` signature runner."""
    import warnings

    from faceaudit.config import usable_cpus

    from .tflite_runtime import tflite_interpreter

    interpreter_class, _ = tflite_interpreter()
    with warnings.catch_warnings(), native_noise_dropped():
        warnings.simplefilter("ignore")
        interpreter = interpreter_class(model_path=str(folder / MODEL_FILES["tflite"]), num_threads=usable_cpus())
    runner = interpreter.get_signature_runner("serving_default")

    def one(batch):
        return runner(**{DESCRIPTOR_INPUT: batch})

    return one
