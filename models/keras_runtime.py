"""Keras models (``.keras``, legacy ``.h5``) as a :class:`~faceaudit.models.runtime.Runtime`: faceaudit's contract
layers when present, else the output of the classes' width and the input of the classifier layer as embedding."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from faceaudit.compat import keras_history, node_inputs
from faceaudit.errors import FaceauditError
from faceaudit.seams.contract import ModelContract

from .runtime import Runtime, first_line

#: Keras layers without weights that may sit between the classifier and the model's output.
_PASS_THROUGH = ("Activation", "Softmax", "Dropout", "Identity", "ActivityRegularization", "GaussianNoise")


class KerasRuntime(Runtime):
    """A Keras model: the faceaudit contract's layers when present, else the output whose width is the number of
    classes and the input of the classifier layer before it as the embedding."""

    def __init__(self, path: Path, model, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr,
                 fmt: str, schema_target: str | None = None, contract: ModelContract | None = None):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr, contract=contract)
        import keras

        self.format = fmt
        self.model = model
        shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
        if shape is None or len(shape) != 4 or shape[-1] not in (1, 3):
            raise FaceauditError(f"model input shape {model.input_shape} is not one image input (None, H, W, 3) or "
                                 "(None, H, W, 1)")
        self._set_input(shape, input_size, f"model {path.name}", nchw_possible=False)
        names = [layer.name for layer in model.layers]
        probs_name = contract_probs(names, schema_target)
        if contract is not None:
            embedding_layer = embedding_layer or contract.embedding_layer
        elif output_layer is None and embedding_layer is None and probs_name and "embedding" in names:
            self.contract = "faceaudit"
            output_layer, embedding_layer = probs_name, "embedding"
        outputs = {}
        named = [h.name for h in contract.outputs if h.name] if contract is not None else []
        wanted = named if named else ([output_layer] if output_layer is not None else [])
        model_outputs = {keras_output_name(tensor, i): tensor for i, tensor in enumerate(model.outputs)}
        for name in wanted:
            if name in model_outputs:
                outputs[name] = model_outputs[name]
            elif name in names:
                outputs[name] = model.get_layer(name).output
            else:
                raise FaceauditError(f"model has no layer {name!r}; its outputs are {', '.join(model_outputs)} and "
                                     f"its last layers {', '.join(names[-6:])}")
        if not wanted:
            outputs = model_outputs
        widths = {name: (int(t.shape[-1]) if len(t.shape) == 2 and t.shape[-1] is not None else None)
                  for name, t in outputs.items()}
        self._choose_outputs(widths, output_layer, f"model {path.name}")
        probs = outputs[self.output_name]
        embedding = None
        if embedding_layer is not None:
            if embedding_layer not in names:
                raise FaceauditError(f"model has no layer {embedding_layer!r} (--embedding-layer)")
            embedding = model.get_layer(embedding_layer).output
            self.embedding_name = embedding_layer
        else:
            embedding, self.embedding_name = _penultimate(probs)
            if embedding is None:
                self.embedding_note = "no layer before the classifier exposes a flat embedding; audited without"
            else:
                self.embedding_note = "the input of the classifier layer (the layer before the output)"
        if embedding is not None:
            self.embedding_dim = int(np.prod([d for d in embedding.shape[1:] if d is not None]))
        heads = [outputs[name] for name in self.output_names]
        self.both = keras.Model(model.inputs, [*heads, embedding] if embedding is not None else heads)
        self._details = {"runtime": f"keras {keras.__version__}", "input_name": model.inputs[0].name}

    def _split(self, outs) -> tuple[list[np.ndarray], np.ndarray | None]:
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        k = len(self.output_names)
        return [np.asarray(o) for o in outs[:k]], (np.asarray(outs[k]) if len(outs) > k else None)

    def _run(self, batch):
        return self._split(self.both.predict_on_batch(batch))

    def _keras_predict(self, data, n: int, progress: bool):
        """Keras's own predict over the whole dataset (as faceaudit always ran its models)."""
        if self.preprocess != "raw" or self.bgr or self.channels == 1:
            import tensorflow as tf

            channels = self.channels
            data = data.map(lambda x: tf.ensure_shape(tf.numpy_function(self.prepare, [x], tf.float32),
                                                      [None, None, None, channels]))
        callbacks = []
        if progress:
            from faceaudit.console import keras_bar

            batches = int(data.cardinality())
            callbacks = [keras_bar(batches if batches >= 0 else None, f"predicting {n:,} images")]
        heads, emb = self._split(self.both.predict(data, verbose=0, callbacks=callbacks))
        rows = len(heads[0])
        return ([np.asarray(h, dtype=np.float64).reshape(rows, -1) for h in heads],
                None if emb is None else np.asarray(emb, dtype=np.float32).reshape(rows, -1))

    def predict_dataset(self, data, n: int, progress: bool = False):
        heads, emb = self._keras_predict(data, n, progress)
        return self._probabilities(heads[0]), emb

    def predict_heads(self, data, n: int, progress: bool = False):
        return self._keras_predict(data, n, progress)


#: The probability layer of faceaudit models trained before label schemas (UTKFace races).
LEGACY_PROBS_LAYER = "race_probs"


def contract_probs(names: list[str], target: str | None) -> str | None:
    """faceaudit's probability layer among ``names``: ``<target>_probs``, else ``race_probs`` (models from before
    label schemas), else, with no target given, the one layer ending in ``_probs``; None when there is none."""
    for name in ([f"{target}_probs"] if target else []) + [LEGACY_PROBS_LAYER]:
        if name in names:
            return name
    candidates = [n for n in names if n.endswith("_probs")]
    return candidates[0] if len(candidates) == 1 and target is None else None


def keras_output_name(tensor, index: int) -> str:
    """The name of the layer producing a model output, else ``output_<index>``."""
    history = keras_history(tensor)
    if history is not None:
        return history[0].name
    return f"output_{index}"


def _penultimate(tensor):
    """The input of the weighted layer producing ``tensor`` (past weightless activations), if flat: (tensor, name)."""
    for _ in range(8):
        history = keras_history(tensor)
        if history is None:
            return None, None
        layer, node_index, _ = history
        inputs = node_inputs(layer, node_index)
        if len(inputs) != 1:
            return None, None
        if type(layer).__name__ in _PASS_THROUGH or not layer.weights:
            tensor = inputs[0]
            continue
        source = inputs[0]
        source_history = keras_history(source)
        if source_history is None or type(source_history[0]).__name__ == "InputLayer" or len(source.shape) != 2:
            return None, None
        return source, source_history[0].name
    return None, None


def load_keras(path: Path, fmt: str):
    """A ``.keras`` or ``.h5`` model (no optimizer; safe mode: a Lambda layer is refused in one line)."""
    from faceaudit.extras import require

    require("tensorflow", "train", "loading a Keras model")
    keras = require("keras", "train", "loading a Keras model")
    from faceaudit.models import layers  # noqa: F401  (registers the preprocessing layer)

    if fmt == "keras" and not zipfile.is_zipfile(path):
        raise FaceauditError(f"{path} is not a valid .keras file (not a zip archive)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for corrupt or foreign files
        first = first_line(exc)
        if "safe_mode" in str(exc) or "Lambda" in first:  # Keras's refusal to deserialise Python code
            raise FaceauditError(f"cannot load model {path}: it contains a Lambda layer (Python code saved "
                                 "with the model), which faceaudit never runs; rebuild the model without Lambda "
                                 "layers and save it again") from None
        raise FaceauditError(f"cannot load model {path}: {first}") from None
