"""A TensorFlow SavedModel's serving signature as a :class:`~faceaudit.models.runtime.Runtime`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.seams.contract import ModelContract

from .runtime import Runtime, cast_input, first_line, fixed_batches


class SavedModelRuntime(Runtime):
    """A SavedModel's serving signature (``serving_default``, else ``serve``, else its only signature)."""

    format = "savedmodel"

    def __init__(self, path: Path, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr,
                 contract: ModelContract | None = None):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr, contract=contract)
        from faceaudit.extras import require

        tf = require("tensorflow", "train", "running a TensorFlow SavedModel")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise FaceauditError(f"cannot load SavedModel {path}: {first_line(exc)}") from None
        signatures = dict(loaded.signatures)
        name = next((n for n in ("serving_default", "serve") if n in signatures), None)
        if name is None and len(signatures) == 1:
            name = next(iter(signatures))
        if name is None:
            found = f" (it has {', '.join(signatures)})" if signatures else ""
            raise FaceauditError(f"SavedModel {path} has no serving signature{found}; export it with "
                                 "model.export() or tf.saved_model.save(..., signatures=...)")
        self._loaded = loaded  # keeps the variables alive
        self.fn = signatures[name]
        args, kwargs = self.fn.structured_input_signature
        specs = dict(kwargs)
        if args or len(specs) != 1:
            raise FaceauditError(f"SavedModel {path}: signature {name!r} takes {len(args) + len(specs)} inputs; "
                                 "faceaudit runs models with one image input")
        self.input_key, spec = next(iter(specs.items()))
        shape = spec.shape.as_list() if spec.shape.rank is not None else None
        if shape is None or len(shape) != 4:
            raise FaceauditError(f"SavedModel {path}: input {self.input_key!r} has shape {shape}, not [n, H, W, 3]")
        self.batch = self._set_input(shape, input_size, f"SavedModel {path.name}") or None
        self.dtype = spec.dtype
        outputs = self.fn.structured_outputs
        widths = {key: (int(t.shape[-1]) if t.shape.rank == 2 and t.shape[-1] is not None else None)
                  for key, t in outputs.items()}
        dims = {key: (int(np.prod(t.shape[1:])) if t.shape.rank is not None and None not in t.shape[1:] else None)
                for key, t in outputs.items()}
        self._select_outputs(widths, dims, output_layer, embedding_layer, f"SavedModel {path.name}",
                             "the serving signature exposes no embedding layer")
        self._tf = tf
        self._details = {"runtime": f"tensorflow {tf.__version__}", "signature": name, "input_name": self.input_key,
                         "input_dtype": spec.dtype.name}

    def _run(self, batch):
        tf = self._tf
        x = tf.convert_to_tensor(cast_input(batch, self.dtype.as_numpy_dtype))
        outs = fixed_batches(lambda b: self.fn(**{self.input_key: tf.convert_to_tensor(b)}), x.numpy(), self.batch)
        heads = [np.concatenate([np.asarray(o[name]) for o in outs])[:len(batch)] for name in self.output_names]
        emb = (np.concatenate([np.asarray(o[self.embedding_name]) for o in outs])
               if self.embedding_name is not None else None)
        return heads, (None if emb is None else emb[:len(batch)])
