"""A TFLite flatbuffer as a :class:`~faceaudit.models.runtime.Runtime` (int8/uint8 quantised inputs and outputs
converted with the tensors' quantisation parameters)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from faceaudit.console import native_noise_dropped
from faceaudit.errors import FaceauditError
from faceaudit.seams.contract import ModelContract

from .runtime import SUM_TOLERANCE, Runtime, cast_input, first_line, fixed_batches


class TFLiteRuntime(Runtime):
    """A TFLite flatbuffer run by LiteRT (``ai_edge_litert``) or TensorFlow's ``tf.lite.Interpreter``."""

    format = "tflite"

    def __init__(self, path: Path, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr,
                 contract: ModelContract | None = None):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr, contract=contract)
        interpreter_class, runtime = tflite_interpreter()
        from faceaudit.config import usable_cpus

        try:
            with warnings.catch_warnings(), native_noise_dropped():
                warnings.simplefilter("ignore")
                self.interpreter = interpreter_class(model_path=str(path), num_threads=usable_cpus())
        except Exception as exc:
            raise tflite_load_error(path, exc) from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise FaceauditError(f"TFLite model {path.name} takes {len(inputs)} inputs; faceaudit runs models with "
                                 "one image input")
        self.input = inputs[0]
        shape = [int(d) for d in self.input.get("shape_signature", self.input["shape"])]
        self.batch = self._set_input(shape, input_size, f"TFLite model {path.name}") or None
        self._allocated = None
        outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        signatures = self.interpreter.get_signature_list()
        if len(signatures) == 1:  # name the outputs as the signature does (faceaudit exports: probabilities, embedding)
            by_index = {d["index"]: d for d in outputs.values()}
            named = self.interpreter.get_signature_runner(next(iter(signatures))).get_output_details()
            outputs = {name: by_index[d["index"]] for name, d in named.items() if d["index"] in by_index} or outputs
        widths = {name: (int(d["shape"][-1]) if len(d["shape"]) == 2 else None) for name, d in outputs.items()}
        self.outputs = outputs
        dims = {name: int(np.prod(d["shape"][1:])) for name, d in outputs.items()}
        self._select_outputs(widths, dims, output_layer, embedding_layer, f"TFLite model {path.name}",
                             "the TFLite model exposes no embedding layer")
        out = outputs[self.output_name]
        self._details = {"runtime": runtime, "input_name": self.input["name"],
                         "input_dtype": np.dtype(self.input["dtype"]).name,
                         "input_quantization": _quant(self.input), "output_dtype": np.dtype(out["dtype"]).name,
                         "output_quantization": _quant(out)}

    def _sum_tolerance(self) -> float:
        scale = self.outputs[self.output_name]["quantization"][0]
        return max(SUM_TOLERANCE, 2 * (self.output_width or 1) * float(scale or 0))

    def _run(self, batch):
        x = batch
        scale, zero = self.input["quantization"]
        dtype = np.dtype(self.input["dtype"])
        if np.issubdtype(dtype, np.integer) and scale:
            x = x / scale + zero
        x = cast_input(x, dtype)
        outs = fixed_batches(self._invoke, x, self.batch)
        heads = [np.concatenate([o[0][i] for o in outs])[:len(batch)] for i in range(len(self.output_names))]
        emb = np.concatenate([o[1] for o in outs])[:len(batch)] if self.embedding_name is not None else None
        return heads, emb

    def _invoke(self, x: np.ndarray):
        index = self.input["index"]
        if self._allocated != x.shape:
            if self.batch is None:
                self.interpreter.resize_tensor_input(index, list(x.shape), strict=False)
            with native_noise_dropped():  # the delegate announces itself on the first allocation
                self.interpreter.allocate_tensors()
            self._allocated = x.shape
        self.interpreter.set_tensor(index, x)
        self.interpreter.invoke()
        heads = [_dequantize(self.interpreter.get_tensor(self.outputs[name]["index"]), self.outputs[name]).reshape(
            len(x), -1) for name in self.output_names]
        emb = None
        if self.embedding_name is not None:
            detail = self.outputs[self.embedding_name]
            emb = _dequantize(self.interpreter.get_tensor(detail["index"]), detail).reshape(len(x), -1)
        return heads, emb


def _quant(detail: dict):
    scale, zero = detail.get("quantization", (0.0, 0))
    return {"scale": float(scale), "zero_point": int(zero)} if scale else None


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(values.dtype, np.integer) and scale:
        return (values.astype(np.float64) - zero) * scale
    return values.astype(np.float64)


def tflite_load_error(path: Path, exc: BaseException) -> FaceauditError:
    """Why a TFLite file did not load: not a flatbuffer at all (random bytes, an empty file: the interpreter says
    only "'utf-8' codec can't decode" or "Mmap ... failed"), or the interpreter's own first line."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] != b"TFL3":  # every TFLite flatbuffer carries this file identifier
        return FaceauditError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier: the file is damaged or in "
                              "another format)")
    return FaceauditError(f"cannot load TFLite model {path}: {first_line(exc)}")


def tflite_interpreter():
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '')}".strip()
    except ImportError:
        pass
    from faceaudit.extras import require

    tf = require("tensorflow", "train", "running a TFLite model")
    return tf.lite.Interpreter, f"tensorflow {tf.__version__} tf.lite.Interpreter"
