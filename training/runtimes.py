"""Model runtimes: one interface over every model format faceaudit audits.

:func:`load_runtime` opens a faceaudit ``.keras`` file (the model contract: float32 RGB [0, 255] input, layers
``<target>_probs`` and ``embedding``), any other Keras model (``.keras`` or a legacy ``.h5`` whole model saved by
Keras 2 or 3, loaded in safe mode), a TensorFlow SavedModel folder (its serving signature, e.g. what
``model.export()`` writes), a TFLite flatbuffer (int8/uint8 quantised inputs and outputs converted with the
tensors' quantisation parameters) or an ONNX file (ONNX Runtime, CPU). Every :class:`Runtime` takes float32 RGB
images in [0, 255] at :attr:`Runtime.input_size`, applies the stated preprocessing (``raw``: as given, the
contract's; ``0-1``; ``-1-1``; ``caffe``: BGR minus the ImageNet means; ``torch``: [0, 1] minus the ImageNet mean
over its std; ``bgr`` swaps the channels) and returns class probabilities in the model's output order (a softmax
applied when the outputs are logits, which :meth:`Runtime.describe` says) and embeddings where the graph exposes a
layer before the output (Keras models, or a named output), else None.

Without faceaudit's layer names the class-probability output is the one output whose width equals the number of
classes; a model with several such outputs needs ``output_layer``.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faceaudit.console import native_noise_dropped
from faceaudit.errors import FaceauditError

#: Model formats by the name recorded in audit.json's model block.
FORMATS = {
    "keras": "Keras model (.keras)",
    "h5": "legacy Keras HDF5 model (.h5)",
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TFLite flatbuffer (.tflite)",
    "onnx": "ONNX model (.onnx)",
}
#: The output a faceaudit export names its embeddings (and the layer name of faceaudit's own models).
EMBEDDING_OUTPUT = "embedding"
#: Preprocessing a runtime applies to float32 RGB [0, 255] images before the model.
PREPROCESS = ("raw", "0-1", "-1-1", "caffe", "torch")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
#: How far a row of a probability output may sum from 1 (float models; quantised ones add a step per class).
_SUM_TOLERANCE = 5e-3
#: Keras layers without weights that may sit between the classifier and the model's output.
_PASS_THROUGH = ("Activation", "Softmax", "Dropout", "Identity", "ActivityRegularization", "GaussianNoise")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return first


def detect_format(source: Path | str) -> str:
    """The format of a model file or folder (a key of :data:`FORMATS`), or one FaceauditError."""
    path = Path(source)
    if not path.exists():
        raise FaceauditError(f"model not found: {path}")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise FaceauditError(f"{path} is not a run folder or a TensorFlow SavedModel (no model.keras, no "
                             "saved_model.pb)")
    suffix = path.suffix.lower()
    with open(path, "rb") as handle:
        head = handle.read(16)
    if suffix == ".keras":
        return "keras"
    if suffix in (".h5", ".hdf5") or head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if suffix == ".tflite" or head[4:8] == b"TFL3":
        return "tflite"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pb" and path.name == "saved_model.pb":
        return "savedmodel"
    raise FaceauditError(f"{path} is not a model faceaudit can run: expected a run folder, a .keras, .h5, .tflite "
                         "or .onnx file, or a TensorFlow SavedModel folder")


def source_sha256(source: Path | str) -> str:
    """Hex SHA-256 of a model file, or of a SavedModel folder (every file's relative path and bytes, in order)."""
    path = Path(source)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def preprocess_images(images: np.ndarray, mode: str = "raw", bgr: bool = False) -> np.ndarray:
    """float32 RGB [0, 255] images as the model wants them (``mode`` one of :data:`PREPROCESS`)."""
    x = np.asarray(images, dtype=np.float32)
    if mode == "caffe":
        return x[..., ::-1] - _CAFFE_MEAN_BGR
    if bgr:
        x = x[..., ::-1]
    if mode == "raw":
        return x
    if mode == "0-1":
        return x / 255.0
    if mode == "-1-1":
        return x / 127.5 - 1.0
    if mode == "torch":
        mean, std = (_IMAGENET_MEAN[::-1], _IMAGENET_STD[::-1]) if bgr else (_IMAGENET_MEAN, _IMAGENET_STD)
        return (x / 255.0 - mean) / std
    raise FaceauditError(f"unknown preprocessing {mode!r}; expected one of {', '.join(PREPROCESS)}")


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Runtime:
    """A loaded model: :meth:`predict` maps float32 RGB [0, 255] images ``[n, H, W, 3]`` (H = W =
    :attr:`input_size`) to ``(probs [n, K], embeddings [n, d] or None)``, probabilities in the output order
    (:attr:`classes` when given)."""

    format: str = "model"

    def __init__(self, path: Path, *, classes: Sequence[str] | None, preprocess: str | None, bgr: bool):
        self.path = Path(path)
        self.classes = tuple(classes) if classes is not None else None
        self.preprocess = preprocess or "raw"
        if self.preprocess not in PREPROCESS:
            raise FaceauditError(f"unknown preprocessing {self.preprocess!r}; expected one of {', '.join(PREPROCESS)}")
        self.bgr = bool(bgr)
        self.input_size: int | None = None
        self.output_name: str | None = None
        self.output_width: int | None = None
        self.embedding_name: str | None = None
        self.embedding_dim: int | None = None
        self.embedding_note: str | None = None
        #: None until the first prediction; then whether the outputs were read as logits.
        self.softmax_applied: bool | None = None
        self.renormalised = False
        self.contract = "inferred"
        self._details: dict = {}

    # -- what each format implements ------------------------------------------------------------------------

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The raw output (and embeddings) of one preprocessed batch."""
        raise NotImplementedError

    def _sum_tolerance(self) -> float:
        return _SUM_TOLERANCE

    # -- the interface ------------------------------------------------------------------------------------

    def predict(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities ``[n, K]`` (float64) and embeddings ``[n, d]`` (float32) or None."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise FaceauditError(f"images must be [n, H, W, 3], got shape {images.shape}")
        outs, embs = [], []
        for start in range(0, len(images), max(1, batch_size)):
            out, emb = self._run(preprocess_images(images[start:start + batch_size], self.preprocess, self.bgr))
            outs.append(np.asarray(out, dtype=np.float64))
            if emb is not None:
                embs.append(np.asarray(emb, dtype=np.float32).reshape(len(out), -1))
        raw = np.concatenate(outs) if outs else np.zeros((0, self.output_width or 0))
        return self._probabilities(raw), (np.concatenate(embs) if embs and len(embs) == len(outs) else None)

    def predict_dataset(self, data, n: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict` over a batched ``tf.data`` dataset of images (as :func:`image_dataset` yields them)."""
        from tqdm.auto import tqdm

        probs, embs = [], []
        with tqdm(total=n, desc=f"predicting {n:,} images", unit="image", disable=None if progress else True,
                  leave=False) as bar:
            for batch in data:
                images = batch[0] if isinstance(batch, tuple) else batch
                p, e = self.predict(np.asarray(images), batch_size=len(images))
                probs.append(p)
                embs.append(e)
                bar.update(len(images))
        if not probs:
            return np.zeros((0, self.output_width or 0)), None
        embeddings = np.concatenate(embs) if all(e is not None for e in embs) else None
        return np.concatenate(probs), embeddings

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        """The output as probabilities: a softmax over logits (negative values, or rows not summing to 1)."""
        if raw.ndim != 2:
            raw = raw.reshape(len(raw), -1)
        if len(raw) == 0:
            return raw
        sums = raw.sum(axis=1)
        logits = bool((raw < 0).any() or (np.abs(sums - 1) > self._sum_tolerance()).any())
        self.softmax_applied = bool(self.softmax_applied) or logits
        if logits:
            return _softmax(raw)
        if (np.abs(sums - 1) > 1e-6).any():  # quantised or float16 outputs: rescale rows to sum to 1
            self.renormalised = True
            raw = raw / sums[:, None]
        return raw

    def describe(self) -> dict:
        """What audit.json's model block records of how the model was run."""
        if self.softmax_applied is None:
            output_kind = "not yet run"
        else:
            output_kind = "logits (softmax applied by faceaudit)" if self.softmax_applied else "probabilities"
        return {
            "format": self.format,
            "format_name": FORMATS.get(self.format, self.format),
            "file": self.path.name,
            "contract": self.contract,
            "input_size": self.input_size,
            "preprocess": self.preprocess,
            "channels": "BGR" if (self.bgr or self.preprocess == "caffe") else "RGB",
            "output": self.output_name,
            "output_width": self.output_width,
            "classes": list(self.classes) if self.classes is not None else None,
            "output_kind": output_kind,
            "softmax_applied": self.softmax_applied,
            "renormalised": self.renormalised,
            "embeddings": self.embedding_name,
            "embedding_dim": self.embedding_dim,
            "embedding_note": self.embedding_note,
            **self._details,
        }

    # -- shared checks ------------------------------------------------------------------------------------

    def _set_input_size(self, height, width, input_size: int | None, what: str) -> None:
        height = None if height is None or int(height) < 1 else int(height)
        width = None if width is None or int(width) < 1 else int(width)
        if height is not None and width is not None:
            if height != width:
                raise FaceauditError(f"model input {height}x{width} is not square")
            if input_size is not None and input_size != height:
                raise FaceauditError(f"--input-size {input_size} does not match the model's fixed input size "
                                     f"{height}x{width}")
            self.input_size = height
        elif input_size is not None:
            self.input_size = int(input_size)
        else:
            raise FaceauditError(f"{what} does not fix its input size; pass --input-size N")

    def _select_outputs(self, widths: dict[str, int | None], dims: dict[str, int | None], output_layer: str | None,
                        embedding_layer: str | None, what: str, absent: str) -> None:
        """The probability output (``--output-layer``, else by its width) and the embedding output
        (``--embedding-layer``, else one named ``embedding`` as faceaudit's exports name it, else none: ``absent``)."""
        self.output_name = self._choose_output(widths, output_layer, what)
        self.output_width = widths[self.output_name]
        if embedding_layer is None and EMBEDDING_OUTPUT in widths:
            embedding_layer = EMBEDDING_OUTPUT
        if embedding_layer is None:
            self.embedding_note = f"{absent}; audited without embeddings"
            return
        if embedding_layer not in widths:
            raise FaceauditError(f"{what} has no output {embedding_layer!r} (--embedding-layer); its outputs are "
                                 f"{_names(widths)}")
        self.embedding_name = embedding_layer
        self.embedding_dim = dims[embedding_layer]

    def _choose_output(self, widths: dict[str, int | None], output_layer: str | None, what: str) -> str:
        """The name of the class-probability output among ``{name: width}``."""
        n = len(self.classes) if self.classes is not None else None
        if output_layer is not None:
            if output_layer not in widths:
                raise FaceauditError(f"{what} has no output {output_layer!r}; it has {_names(widths)}")
            width = widths[output_layer]
            if n is not None and width != n:
                raise FaceauditError(self._width_message(width))
            return output_layer
        if n is not None:
            candidates = [name for name, width in widths.items() if width == n]
        else:
            candidates = [name for name, width in widths.items() if width is not None and width >= 2]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            rank2 = [w for w in widths.values() if w is not None]
            if len(rank2) == 1:
                raise FaceauditError(self._width_message(rank2[0]))
            raise FaceauditError(f"{what} has no output of {n} class probabilities; its outputs are {_names(widths)}; "
                                 "pass --output-layer NAME, --classes or --schema")
        raise FaceauditError(f"{what} has several candidate class-probability outputs ({', '.join(candidates)}); "
                             "pass --output-layer NAME")

    def _width_message(self, width) -> str:
        classes = self.classes or ()
        shown = ", ".join(classes)
        return (f"model outputs {width} values but the schema has {len(classes)} classes ({shown}); "
                "pass --classes or --schema")


def _names(widths: dict) -> str:
    return ", ".join(f"{name} ({'width ' + str(w) if w is not None else 'not [n, K]'})" for name, w in widths.items())


# -- Keras ----------------------------------------------------------------------------------------------------


class KerasRuntime(Runtime):
    """A Keras model: the faceaudit contract's layers when present, else the output whose width is the number of
    classes and the input of the classifier layer before it as the embedding."""

    def __init__(self, path: Path, model, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr,
                 fmt: str, schema_target: str | None = None):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr)
        import keras

        self.format = fmt
        self.model = model
        shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
        if shape is None or len(shape) != 4 or shape[-1] != 3:
            raise FaceauditError(f"model input shape {model.input_shape} is not one image input (None, H, W, 3)")
        self._set_input_size(shape[1], shape[2], input_size, f"model {path.name}")
        names = [layer.name for layer in model.layers]
        probs_name = contract_probs(names, schema_target)
        if output_layer is None and embedding_layer is None and probs_name and "embedding" in names:
            self.contract = "faceaudit"
            output_layer, embedding_layer = probs_name, "embedding"
        outputs = {}
        if output_layer is not None:
            if output_layer not in names:
                raise FaceauditError(f"model has no layer {output_layer!r}; its last layers are "
                                     f"{', '.join(names[-6:])}")
            outputs[output_layer] = model.get_layer(output_layer).output
        else:
            for i, tensor in enumerate(model.outputs):
                outputs[_keras_name(tensor, i)] = tensor
        widths = {name: (int(t.shape[-1]) if len(t.shape) == 2 and t.shape[-1] is not None else None)
                  for name, t in outputs.items()}
        self.output_name = self._choose_output(widths, output_layer, f"model {path.name}")
        probs = outputs[self.output_name]
        self.output_width = widths[self.output_name]
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
        self.both = keras.Model(model.inputs, [probs, embedding] if embedding is not None else [probs])
        self._details = {"runtime": f"keras {keras.__version__}", "input_name": model.inputs[0].name}

    def _run(self, batch):
        outs = self.both.predict_on_batch(batch)
        if isinstance(outs, (list, tuple)):
            return np.asarray(outs[0]), (np.asarray(outs[1]) if len(outs) > 1 else None)
        return np.asarray(outs), None

    def predict_dataset(self, data, n: int, progress: bool = False):
        """Keras's own predict over the whole dataset (as faceaudit always ran its models)."""
        if self.preprocess != "raw" or self.bgr:
            import tensorflow as tf

            mode, bgr = self.preprocess, self.bgr
            data = data.map(lambda x: tf.numpy_function(lambda a: preprocess_images(a, mode, bgr), [x], tf.float32))
        callbacks = []
        if progress:
            from faceaudit.console import keras_bar

            batches = int(data.cardinality())
            callbacks = [keras_bar(batches if batches >= 0 else None, f"predicting {n:,} images")]
        outs = self.both.predict(data, verbose=0, callbacks=callbacks)
        if isinstance(outs, (list, tuple)):
            probs, emb = np.asarray(outs[0]), (np.asarray(outs[1]) if len(outs) > 1 else None)
        else:
            probs, emb = np.asarray(outs), None
        return self._probabilities(np.asarray(probs, dtype=np.float64)), (
            None if emb is None else np.asarray(emb, dtype=np.float32).reshape(len(probs), -1))


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


def _keras_name(tensor, index: int) -> str:
    history = getattr(tensor, "_keras_history", None)
    if history is not None:
        return history[0].name
    return f"output_{index}"


def _penultimate(tensor):
    """The input of the weighted layer producing ``tensor`` (past weightless activations), if flat: (tensor, name)."""
    for _ in range(8):
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None, None
        layer, node_index, _ = history
        inputs = layer._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            return None, None
        if type(layer).__name__ in _PASS_THROUGH or not layer.weights:
            tensor = inputs[0]
            continue
        source = inputs[0]
        source_history = getattr(source, "_keras_history", None)
        if source_history is None or type(source_history[0]).__name__ == "InputLayer" or len(source.shape) != 2:
            return None, None
        return source, source_history[0].name
    return None, None


def load_keras(path: Path, fmt: str):
    """A ``.keras`` or ``.h5`` model (no optimizer; safe mode: a Lambda layer is refused in one line)."""
    from faceaudit.extras import require

    require("tensorflow", "train", "loading a Keras model")
    keras = require("keras", "train", "loading a Keras model")
    from faceaudit.training import layers  # noqa: F401  (registers the preprocessing layer)

    if fmt == "keras" and not zipfile.is_zipfile(path):
        raise FaceauditError(f"{path} is not a valid .keras file (not a zip archive)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for corrupt or foreign files
        first = _first_line(exc)
        if "safe_mode" in str(exc) or "Lambda" in first:  # Keras's refusal to deserialise Python code
            raise FaceauditError(f"cannot load model {path}: it contains a Lambda layer (Python code saved "
                                 "with the model), which faceaudit never runs; rebuild the model without Lambda "
                                 "layers and save it again") from None
        raise FaceauditError(f"cannot load model {path}: {first}") from None


# -- TensorFlow SavedModel ------------------------------------------------------------------------------------


class SavedModelRuntime(Runtime):
    """A SavedModel's serving signature (``serving_default``, else ``serve``, else its only signature)."""

    format = "savedmodel"

    def __init__(self, path: Path, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr)
        from faceaudit.extras import require

        tf = require("tensorflow", "train", "running a TensorFlow SavedModel")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise FaceauditError(f"cannot load SavedModel {path}: {_first_line(exc)}") from None
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
        if shape is None or len(shape) != 4 or shape[-1] != 3:
            raise FaceauditError(f"SavedModel {path}: input {self.input_key!r} has shape {shape}, not [n, H, W, 3]")
        self._set_input_size(shape[1], shape[2], input_size, f"SavedModel {path.name}")
        self.batch = shape[0]
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
        x = tf.convert_to_tensor(_cast(batch, self.dtype.as_numpy_dtype))
        outs = _fixed_batches(lambda b: self.fn(**{self.input_key: tf.convert_to_tensor(b)}), x.numpy(), self.batch)
        probs = np.concatenate([np.asarray(o[self.output_name]) for o in outs])
        emb = (np.concatenate([np.asarray(o[self.embedding_name]) for o in outs])
               if self.embedding_name is not None else None)
        return probs[:len(batch)], (None if emb is None else emb[:len(batch)])


def _cast(x: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _fixed_batches(call, x: np.ndarray, batch: int | None) -> list:
    """``call`` on ``x`` whole, or in chunks of a model's fixed batch size (the last one padded)."""
    if batch is None or batch < 1 or batch == len(x):
        return [call(x)]
    outs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        outs.append(call(chunk))
    return outs


# -- TFLite ---------------------------------------------------------------------------------------------------


class TFLiteRuntime(Runtime):
    """A TFLite flatbuffer run by LiteRT (``ai_edge_litert``) or TensorFlow's ``tf.lite.Interpreter``."""

    format = "tflite"

    def __init__(self, path: Path, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr)
        interpreter_class, runtime = _tflite_interpreter()
        from faceaudit.config import usable_cpus

        try:
            with warnings.catch_warnings(), native_noise_dropped():
                warnings.simplefilter("ignore")
                self.interpreter = interpreter_class(model_path=str(path), num_threads=usable_cpus())
        except Exception as exc:
            raise FaceauditError(f"cannot load TFLite model {path}: {_first_line(exc)}") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise FaceauditError(f"TFLite model {path.name} takes {len(inputs)} inputs; faceaudit runs models with "
                                 "one image input")
        self.input = inputs[0]
        shape = [int(d) for d in self.input.get("shape_signature", self.input["shape"])]
        if len(shape) != 4 or shape[-1] != 3:
            raise FaceauditError(f"TFLite model {path.name}: input shape {shape} is not [n, H, W, 3]")
        self._set_input_size(shape[1], shape[2], input_size, f"TFLite model {path.name}")
        self.batch = shape[0] if shape[0] > 0 else None
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
        return max(_SUM_TOLERANCE, 2 * (self.output_width or 1) * float(scale or 0))

    def _run(self, batch):
        x = batch
        scale, zero = self.input["quantization"]
        dtype = np.dtype(self.input["dtype"])
        if np.issubdtype(dtype, np.integer) and scale:
            x = x / scale + zero
        x = _cast(x, dtype)
        outs = _fixed_batches(self._invoke, x, self.batch)
        probs = np.concatenate([o[0] for o in outs])[:len(batch)]
        emb = np.concatenate([o[1] for o in outs])[:len(batch)] if self.embedding_name is not None else None
        return probs, emb

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
        probs = _dequantize(self.interpreter.get_tensor(self.outputs[self.output_name]["index"]),
                            self.outputs[self.output_name])
        emb = None
        if self.embedding_name is not None:
            detail = self.outputs[self.embedding_name]
            emb = _dequantize(self.interpreter.get_tensor(detail["index"]), detail).reshape(len(x), -1)
        return probs, emb


def _quant(detail: dict):
    scale, zero = detail.get("quantization", (0.0, 0))
    return {"scale": float(scale), "zero_point": int(zero)} if scale else None


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(values.dtype, np.integer) and scale:
        return (values.astype(np.float64) - zero) * scale
    return values.astype(np.float64)


def _tflite_interpreter():
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '')}".strip()
    except ImportError:
        pass
    from faceaudit.extras import require

    tf = require("tensorflow", "train", "running a TFLite model")
    return tf.lite.Interpreter, f"tensorflow {tf.__version__} tf.lite.Interpreter"


# -- ONNX -----------------------------------------------------------------------------------------------------


class OnnxRuntime(Runtime):
    """An ONNX model run by ONNX Runtime on the CPU; NHWC or NCHW (PyTorch's) image input."""

    format = "onnx"

    def __init__(self, path: Path, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr)
        from faceaudit.extras import require

        ort = require("onnxruntime", "onnx", "auditing an ONNX model")
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise FaceauditError(f"cannot load ONNX model {path}: {_first_line(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise FaceauditError(f"ONNX model {path.name} takes {len(inputs)} inputs; faceaudit runs models with "
                                 "one image input")
        self.input = inputs[0]
        shape = [d if isinstance(d, int) else None for d in self.input.shape]
        if len(shape) != 4 or (shape[-1] != 3 and shape[1] != 3):
            raise FaceauditError(f"ONNX model {path.name}: input shape {self.input.shape} is not [n, H, W, 3] or "
                                 "[n, 3, H, W]")
        self.nchw = shape[-1] != 3
        height, width = (shape[2], shape[3]) if self.nchw else (shape[1], shape[2])
        self._set_input_size(height, width, input_size, f"ONNX model {path.name}")
        self.batch = shape[0]
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
                         "input_name": self.input.name, "input_dtype": self.input.type,
                         "layout": "NCHW" if self.nchw else "NHWC"}

    def _run(self, batch):
        x = np.transpose(batch, (0, 3, 1, 2)) if self.nchw else batch
        x = _cast(np.ascontiguousarray(x), self.dtype)
        names = [self.output_name] + ([self.embedding_name] if self.embedding_name is not None else [])
        outs = _fixed_batches(lambda b: self.session.run(names, {self.input.name: b}), x, self.batch)
        probs = np.concatenate([o[0] for o in outs])[:len(batch)]
        emb = np.concatenate([o[1] for o in outs])[:len(batch)] if self.embedding_name is not None else None
        return probs, emb


_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


# -- the entry point ------------------------------------------------------------------------------------------


def load_runtime(
    source: Path | str,
    *,
    classes: Sequence[str] | None = None,
    n_classes: int | None = None,
    output_layer: str | None = None,
    embedding_layer: str | None = None,
    input_size: int | None = None,
    preprocess: str | None = None,
    bgr: bool = False,
    target: str | None = None,
) -> Runtime:
    """Open a model file or folder (a run folder's ``model.keras``, ``.keras``, ``.h5``, SavedModel folder,
    ``.tflite``, ``.onnx``) as a :class:`Runtime`, or fail with one line.

    ``classes`` names the model's output units in order (``n_classes`` gives only their number); the output whose
    width is that number is the class-probability one (``output_layer`` names it when there are several).
    ``embedding_layer`` names the embedding layer (Keras) or output (other formats); ``input_size`` is needed when
    the model does not fix it; ``preprocess`` (one of :data:`PREPROCESS`, default ``raw``) and ``bgr`` say what
    the model wants from float32 RGB [0, 255] images. ``target`` picks the faceaudit contract layer
    ``<target>_probs`` of a ``.keras`` model."""
    path = Path(source)
    if path.is_dir() and (path / "model.keras").exists():
        path = path / "model.keras"
    fmt = detect_format(path)
    if path.name == "saved_model.pb":
        path = path.parent
    if classes is None and n_classes is not None:
        classes = tuple(f"class_{i}" for i in range(int(n_classes)))
    if input_size is not None and int(input_size) < 1:
        raise FaceauditError("--input-size must be a positive number of pixels")
    options = {"classes": classes, "output_layer": output_layer, "embedding_layer": embedding_layer,
               "input_size": None if input_size is None else int(input_size), "preprocess": preprocess, "bgr": bgr}
    if fmt in ("keras", "h5"):
        model = load_keras(path, fmt)
        return KerasRuntime(path, model, fmt=fmt, schema_target=target, **options)
    if fmt == "savedmodel":
        return SavedModelRuntime(path, **options)
    if fmt == "tflite":
        return TFLiteRuntime(path, **options)
    return OnnxRuntime(path, **options)
