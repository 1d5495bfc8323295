"""An ONNX model run by ONNX Runtime on the CPU as a :class:`~faceaudit.models.runtime.Runtime`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.seams.contract import ModelContract

from .runtime import Runtime, cast_input, first_line, fixed_batches


class OnnxRuntime(Runtime):
    """An ONNX model run by ONNX Runtime on the CPU; NHWC or NCHW (PyTorch's) image input."""

    format = "onnx"

    def __init__(self, path: Path, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr,
                 contract: ModelContract | None = None):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr, contract=contract)
        from faceaudit.extras import require

        ort = require("onnxruntime", "onnx", "auditing an ONNX model")
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise FaceauditError(f"cannot load ONNX model {path}: {first_line(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise FaceauditError(f"ONNX model {path.name} takes {len(inputs)} inputs; faceaudit runs models with "
                                 "one image input")
        self.input = inputs[0]
        shape = [d if isinstance(d, int) else None for d in self.input.shape]
        self.batch = self._set_input(shape, input_size, f"ONNX model {path.name}") or None
        self.dtype = _ONNX_TYPES.get(self.input.type)
        if self.dtype is None:
            raise FaceauditError(f"ONNX model {path.name}: input type {self.input.type} is not supported")
        outputs = {o.name: o for o in self.session.get_outputs()}
        widths = {name: (o.shape[-1] if len(o.shape) == 2 and isinstance(o.shape[-1], int) else None)
                  for name, o in outputs.items()}
        dims = {name: (int(np.prod(o.shape[1:])) if all(isinstance(d, int) for d in o.shape[1:]) else None)
                for name, o in outputs.items()}
        self._select_outputs(widths, dims, output_layer, embedding_layer, f"ONNX model {path.name}",
                             "the ONNX graph exposes no embedding output")
        self._details = {"runtime": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
                         "input_name": self.input.name, "input_dtype": self.input.type}

    def _run(self, batch):
        x = cast_input(np.ascontiguousarray(batch), self.dtype)
        names = [*self.output_names] + ([self.embedding_name] if self.embedding_name is not None else [])
        outs = fixed_batches(lambda b: self.session.run(names, {self.input.name: b}), x, self.batch)
        k = len(self.output_names)
        heads = [np.concatenate([o[i] for o in outs])[:len(batch)] for i in range(k)]
        emb = np.concatenate([o[k] for o in outs])[:len(batch)] if self.embedding_name is not None else None
        return heads, emb


_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
