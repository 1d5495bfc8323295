"""Export to an ONNX graph (tf2onnx; float32, a float16 graph or int8 QDQ quantisation by onnxruntime), and run an
exported descriptor head in an onnxruntime session."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError

from .export_spec import DESCRIPTOR_INPUT, EMBEDDING_OUTPUT, MODEL_FILES, ONNX_OPSET, PROBS_OUTPUT, serving_function


def write_onnx(both, input_shape, folder: Path, quantize: str | None, calibration: np.ndarray | None) -> None:
    import tf2onnx

    serve, spec = serving_function(both, input_shape)
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=ONNX_OPSET)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise FaceauditError(f"ONNX conversion failed: {first}") from None
    _fold_captured_constants(proto, serve.get_concrete_function(spec))
    target = folder / MODEL_FILES["onnx"]
    if quantize is None:
        target.write_bytes(proto.SerializeToString())
    elif quantize == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(proto, keep_io_types=True)
        target.write_bytes(half.SerializeToString())
    else:
        import tempfile

        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.rows = iter(calibration)

            def get_next(self):
                row = next(self.rows, None)
                return None if row is None else {spec.name: row[None, ...].astype(np.float32)}

        with tempfile.TemporaryDirectory(prefix="faceaudit-export-") as tmp:
            source = Path(tmp) / "float.onnx"
            source.write_bytes(proto.SerializeToString())
            import logging

            root = logging.getLogger()
            previous = root.level
            root.setLevel(logging.ERROR)  # its advice to pre-process the graph, printed on every call
            import onnxruntime

            # and onnxruntime's note on the constant initializers it folds away (see _fold_captured_constants)
            onnxruntime.set_default_logger_severity(3)
            try:
                quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.setLevel(previous)
                onnxruntime.set_default_logger_severity(2)


def _fold_captured_constants(proto, concrete) -> None:
    """Turn the graph inputs tf2onnx made of constant tensors the function captured (a Keras ``Normalization``
    built with a given mean and variance holds them as tensors, not variables) into initializers, so the graph
    takes its one real input."""
    from onnx import numpy_helper

    n_args = len(concrete.structured_input_signature[0])
    placeholders = concrete.inputs[n_args:]
    values = {}
    for placeholder, value in zip(placeholders, concrete.captured_inputs):
        if placeholder.dtype.name != "resource":
            values[placeholder.name] = np.asarray(value)
            values[placeholder.name.removesuffix(":0")] = values[placeholder.name]
    keep = [i for i in proto.graph.input if i.name not in values]
    if len(keep) == len(proto.graph.input):
        return
    folded = [i.name for i in proto.graph.input if i.name in values]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    proto.graph.initializer.extend(numpy_helper.from_array(values[name], name) for name in folded)


def descriptor_runner(folder: Path):
    """One batch of descriptors ``[n, 128]`` through an onnxruntime session on the CPU."""
    from faceaudit.extras import require

    ort = require("onnxruntime", "onnx", "running an exported ONNX model")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / MODEL_FILES["onnx"]), options, providers=["CPUExecutionProvider"])

    def one(batch):
        return dict(zip((PROBS_OUTPUT, EMBEDDING_OUTPUT),
                        session.run([PROBS_OUTPUT, EMBEDDING_OUTPUT], {DESCRIPTOR_INPUT: batch})))

    return one
