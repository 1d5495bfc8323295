"""What a model file says about itself without a contract (for ``faceaudit contract init``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from faceaudit.compat import keras_history
from faceaudit.console import native_noise_dropped
from faceaudit.errors import FaceauditError

from .formats import detect_format
from .keras_runtime import keras_output_name, load_keras
from .runtime import first_line
from .tflite_runtime import tflite_interpreter, tflite_load_error


def inspect_model(source: Path | str) -> dict:
    """What a model file says about itself, without a contract: ``format``, ``input`` (``shape``, ``dtype``) and
    ``outputs`` (``name``, ``shape``, ``activation`` where the graph names one: softmax, sigmoid, linear)."""
    path = Path(source)
    if path.is_dir() and (path / "model.keras").exists():
        path = path / "model.keras"
    fmt = detect_format(path)
    if fmt in ("keras", "h5"):
        model = load_keras(path, fmt)
        outputs = []
        for i, tensor in enumerate(model.outputs):
            history = keras_history(tensor)
            layer = history[0] if history is not None else None
            outputs.append({"name": keras_output_name(tensor, i), "shape": list(tensor.shape),
                            "activation": _keras_activation(layer)})
        shape = model.input_shape if not isinstance(model.input_shape, list) else model.input_shape[0]
        return {"format": fmt, "input": {"shape": list(shape), "dtype": "float32"}, "outputs": outputs,
                "layers": len(model.layers)}
    if fmt == "tflite":
        interpreter_class, _ = tflite_interpreter()
        with warnings.catch_warnings(), native_noise_dropped():
            warnings.simplefilter("ignore")
            try:
                interpreter = interpreter_class(model_path=str(path))
            except Exception as exc:
                raise tflite_load_error(path, exc) from None
        detail = interpreter.get_input_details()[0]
        return {"format": fmt, "input": {"shape": [int(d) for d in detail.get("shape_signature", detail["shape"])],
                                         "dtype": np.dtype(detail["dtype"]).name},
                "outputs": [{"name": d["name"], "shape": [int(x) for x in d["shape"]], "activation": None}
                            for d in interpreter.get_output_details()]}
    if fmt == "onnx":
        from faceaudit.extras import require

        ort = require("onnxruntime", "onnx", "reading an ONNX model")
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise FaceauditError(f"cannot load ONNX model {path}: {first_line(exc)}") from None
        ops = _onnx_output_ops(path)
        first = session.get_inputs()[0]
        return {"format": fmt, "input": {"shape": [d if isinstance(d, int) else None for d in first.shape],
                                         "dtype": first.type},
                "outputs": [{"name": o.name, "shape": [d if isinstance(d, int) else None for d in o.shape],
                             "activation": ops.get(o.name)} for o in session.get_outputs()]}
    from faceaudit.extras import require

    tf = require("tensorflow", "train", "reading a TensorFlow SavedModel")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise FaceauditError(f"cannot load SavedModel {path}: {first_line(exc)}") from None
    fn = next(iter(dict(loaded.signatures).values()))
    spec = next(iter(dict(fn.structured_input_signature[1]).values()))
    return {"format": fmt, "input": {"shape": spec.shape.as_list(), "dtype": spec.dtype.name},
            "outputs": [{"name": k, "shape": t.shape.as_list(), "activation": None}
                        for k, t in fn.structured_outputs.items()]}


def _keras_activation(layer) -> str | None:
    """softmax / sigmoid / linear when the output layer says so, else None."""
    if layer is None:
        return None
    kind = type(layer).__name__
    if kind == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return {"softmax": "softmax", "sigmoid": "sigmoid", "linear": "linear", "relu": "relu"}.get(name or "")


def _onnx_output_ops(path: Path) -> dict[str, str]:
    """The activation op (softmax, sigmoid) producing each graph output, where the ``onnx`` package can say."""
    try:
        import onnx
    except ImportError:
        return {}
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return {}
    producers = {out: node.op_type for node in graph.node for out in node.output}
    return {o.name: {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(producers.get(o.name, ""), None)
            for o in graph.output if producers.get(o.name) in ("Softmax", "Sigmoid")}
