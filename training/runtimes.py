"""Model runtimes: one interface over every model format faceaudit audits.

:func:`load_runtime` opens a faceaudit ``.keras`` file (the model contract: float32 RGB [0, 255] input, layers
``<target>_probs`` and ``embedding``), any other Keras model (``.keras`` or a legacy ``.h5`` whole model saved by
Keras 2 or 3, loaded in safe mode), a TensorFlow SavedModel folder (its serving signature, e.g. what
``model.export()`` writes), a TFLite flatbuffer (int8/uint8 quantised inputs and outputs converted with the
tensors' quantisation parameters) or an ONNX file (ONNX Runtime, CPU). Every :class:`Runtime` takes float32 RGB
images in [0, 255] at :attr:`Runtime.input_size`, applies the stated preprocessing (grayscale models get ITU-R
BT.601 luma; ``raw``: as given, the contract's; ``0-1``; ``-1-1``; ``caffe``: BGR minus the ImageNet means;
``torch``: [0, 1] minus the ImageNet mean over its std; ``mean-std``; ``bgr`` swaps the channels; NCHW inputs are
transposed) and returns class probabilities in the model's output order (a softmax applied when the outputs are
logits, which :meth:`Runtime.describe` says) and embeddings where the graph exposes a layer before the output (Keras
models, or a named output), else None.

Without faceaudit's layer names the class-probability output is the one output whose width equals the number of
classes; a model with several such outputs needs ``output_layer``. A model contract
(:class:`faceaudit.seams.contract.ModelContract`) states all of this instead, for several outputs at once:
:meth:`Runtime.predict_heads` returns each contract head's raw output from one inference pass.
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
from faceaudit.seams.contract import InputSpec, ModelContract, OutputHead

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


#: ITU-R BT.601 luma weights: PIL's ``convert("L")`` and OpenCV's ``COLOR_RGB2GRAY``.
_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_grayscale(images: np.ndarray, method: str = "bt601") -> np.ndarray:
    """float32 RGB ``[n, H, W, 3]`` as one channel ``[n, H, W, 1]``: BT.601 luma rounded to whole levels (as PIL and
    OpenCV store an 8-bit gray image), or the channels' mean."""
    x = np.asarray(images, dtype=np.float32)
    gray = np.rint(x @ _BT601) if method == "bt601" else x.mean(axis=-1)
    return np.clip(gray, 0, 255)[..., None].astype(np.float32)


def preprocess_images(images: np.ndarray, mode: str = "raw", bgr: bool = False, *, channels: int = 3,
                      grayscale: str = "bt601", mean=None, std=None) -> np.ndarray:
    """float32 RGB [0, 255] images as the model wants them (``mode`` one of :data:`PREPROCESS` or ``mean-std``
    with ``mean``/``std`` in 0-255 pixel units; ``channels`` 1 converts to gray first)."""
    x = np.asarray(images, dtype=np.float32)
    if channels == 1:
        x = to_grayscale(x, grayscale)
        bgr = False
    if mode == "mean-std":
        return (x - np.asarray(mean, dtype=np.float32)[:x.shape[-1]]) / np.asarray(std, dtype=np.float32)[:x.shape[-1]]
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

    def __init__(self, path: Path, *, classes: Sequence[str] | None, preprocess: str | None, bgr: bool,
                 contract: ModelContract | None = None):
        self.path = Path(path)
        self.classes = tuple(classes) if classes is not None else None
        self.contract_spec = contract
        spec = contract.input if contract is not None else InputSpec()
        self.input_spec = spec
        self.preprocess = spec.scaling if contract is not None else (preprocess or "raw")
        if self.preprocess not in (*PREPROCESS, "mean-std"):
            raise FaceauditError(f"unknown preprocessing {self.preprocess!r}; expected one of {', '.join(PREPROCESS)}")
        self.bgr = (spec.channels == "bgr") if contract is not None else bool(bgr)
        self.input_size: int | None = None
        #: Input channels the model takes: 3 (RGB/BGR) or 1 (grayscale, converted from RGB).
        self.channels = 3
        self.nchw = False
        self.mean_std = _mean_std(spec)
        self.output_name: str | None = None
        self.output_width: int | None = None
        #: The outputs :meth:`predict_heads` reads, one per contract head (else ``[output_name]``).
        self.output_names: list[str] = []
        self.embedding_name: str | None = None
        self.embedding_dim: int | None = None
        self.embedding_note: str | None = None
        #: None until the first prediction; then whether the outputs were read as logits.
        self.softmax_applied: bool | None = None
        self.renormalised = False
        self.contract = "inferred"
        self._details: dict = {}

    # -- what each format implements ------------------------------------------------------------------------

    def _run(self, batch: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        """The raw outputs named by :attr:`output_names` (and embeddings) of one preprocessed batch."""
        raise NotImplementedError

    def _sum_tolerance(self) -> float:
        return _SUM_TOLERANCE

    @property
    def sum_tolerance(self) -> float:
        """How far a row of the probability output may sum from 1 (wider for quantised outputs)."""
        return self._sum_tolerance()

    # -- the interface ------------------------------------------------------------------------------------

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """float32 RGB [0, 255] images ``[n, H, W, 3]`` as this model's input (channels, scaling, layout)."""
        x = preprocess_images(images, self.preprocess, self.bgr, channels=self.channels,
                              grayscale=self.input_spec.grayscale, mean=self.mean_std[0], std=self.mean_std[1])
        return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))) if self.nchw else x

    def predict_raw(self, images: np.ndarray, batch_size: int = 64) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Each output of :attr:`output_names` as given by the model (float64, ``[n, width]``) and embeddings."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise FaceauditError(f"images must be [n, H, W, 3], got shape {images.shape}")
        outs: list[list[np.ndarray]] = [[] for _ in self.output_names]
        embs = []
        for start in range(0, len(images), max(1, batch_size)):
            batch_outs, emb = self._run(self.prepare(images[start:start + batch_size]))
            for store, out in zip(outs, batch_outs):
                store.append(np.asarray(out, dtype=np.float64).reshape(len(out), -1))
            if emb is not None:
                embs.append(np.asarray(emb, dtype=np.float32).reshape(len(batch_outs[0]), -1))
        raws = [np.concatenate(o) if o else np.zeros((0, 1)) for o in outs]
        n_batches = len(outs[0]) if outs else 0
        return raws, (np.concatenate(embs) if embs and len(embs) == n_batches else None)

    def predict(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities ``[n, K]`` (float64) and embeddings ``[n, d]`` (float32) or None."""
        raws, embeddings = self.predict_raw(images, batch_size)
        raw = raws[0] if len(raws[0]) else np.zeros((0, self.output_width or 0))
        return self._probabilities(raw), embeddings

    def predict_heads(self, data, n: int, progress: bool = False) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Every contract head's raw output ``[n, width]`` (in :attr:`output_names` order) and the embeddings, from
        one pass over a batched ``tf.data`` dataset of float32 RGB [0, 255] images."""
        from tqdm.auto import tqdm

        outs: list[list[np.ndarray]] = [[] for _ in self.output_names]
        embs = []
        with tqdm(total=n, desc=f"predicting {n:,} images", unit="image", disable=None if progress else True,
                  leave=False) as bar:
            for batch in data:
                images = np.asarray(batch[0] if isinstance(batch, tuple) else batch)
                raws, emb = self.predict_raw(images, batch_size=len(images))
                for store, raw in zip(outs, raws):
                    store.append(raw)
                embs.append(emb)
                bar.update(len(images))
        raws = [np.concatenate(o) if o else np.zeros((0, 1)) for o in outs]
        embeddings = np.concatenate(embs) if embs and all(e is not None for e in embs) else None
        return raws, embeddings

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
            "channels": ("grayscale (ITU-R BT.601 luma)" if self.input_spec.grayscale == "bt601"
                         else "grayscale (mean of R, G, B)") if self.channels == 1
            else ("BGR" if (self.bgr or self.preprocess == "caffe") else "RGB"),
            "layout": "NCHW" if self.nchw else "NHWC",
            "resize": f"{self.input_spec.resize}{' (antialiased)' if self.input_spec.antialias else ''}",
            "output": self.output_name,
            "outputs": list(self.output_names),
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

    def _set_input(self, shape: Sequence, input_size: int | None, what: str, *, nchw_possible: bool = True) -> int:
        """Read a 4-D image input shape (NHWC, or NCHW where the format allows): layout, channels and size checked
        against the contract; returns the fixed batch size (0 when free)."""
        shape = [int(d) if isinstance(d, (int, np.integer)) and d >= 1 else None for d in shape]  # -1/None: free
        if len(shape) != 4:
            raise FaceauditError(f"{what}: input shape {shape} is not an image batch [n, H, W, C]")
        spec = self.input_spec
        layout = spec.layout
        if layout is None:
            layout = "NHWC" if shape[3] in (1, 3) else ("NCHW" if nchw_possible and shape[1] in (1, 3) else None)
        if layout is None or (layout == "NCHW" and not nchw_possible):
            raise FaceauditError(f"{what}: input shape {shape} is not [n, H, W, 3], [n, H, W, 1]"
                                 + (", [n, 3, H, W] or [n, 1, H, W]" if nchw_possible else ""))
        self.nchw = layout == "NCHW"
        channels = shape[1] if self.nchw else shape[3]
        if channels not in (1, 3):
            raise FaceauditError(f"{what}: input shape {shape} has {channels} channels in the {layout} layout; "
                                 "faceaudit feeds 1 (grayscale) or 3 (RGB/BGR)")
        if spec.channels is not None and (spec.channels == "grayscale") != (channels == 1):
            raise FaceauditError(f"{what}: the contract says channels = {spec.channels!r} but the model's input "
                                 f"has {channels} channel{'s' if channels != 1 else ''} ({shape})")
        if channels == 1 and self.preprocess in ("caffe", "torch"):
            raise FaceauditError(f"{what}: preprocessing {self.preprocess!r} needs 3 channels; the model takes "
                                 "grayscale")
        self.channels = channels
        height, width = (shape[2], shape[3]) if self.nchw else (shape[1], shape[2])
        if spec.size is not None:
            if input_size is not None and input_size != spec.size:
                raise FaceauditError(f"--input-size {input_size} contradicts the contract's size {spec.size}")
            input_size = spec.size
        self._set_input_size(height, width, input_size, what)
        return shape[0] or 0

    def _set_input_size(self, height, width, input_size: int | None, what: str) -> None:
        height = None if height is None or int(height) < 1 else int(height)
        width = None if width is None or int(width) < 1 else int(width)
        if height is not None and width is not None:
            if height != width:
                raise FaceauditError(f"model input {height}x{width} is not square")
            if input_size is not None and input_size != height:
                said = "the contract's size" if self.input_spec.size is not None else "--input-size"
                raise FaceauditError(f"{said} {input_size} does not match the model's fixed input size "
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
        self._choose_outputs(widths, output_layer, what)
        if embedding_layer is None and self.contract_spec is not None:
            embedding_layer = self.contract_spec.embedding_layer
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

    def _choose_outputs(self, widths: dict[str, int | None], output_layer: str | None, what: str) -> None:
        """Set :attr:`output_names` (each contract head's output, else the class-probability output) and
        :attr:`output_name` / :attr:`output_width` (the first)."""
        heads = self.contract_spec.outputs if self.contract_spec is not None else ()
        if heads:
            self.output_names = [self._head_output(widths, head, what) for head in heads]
        else:
            self.output_names = [self._choose_output(widths, output_layer, what)]
        self.output_name = self.output_names[0]
        self.output_width = widths[self.output_name]

    def _head_output(self, widths: dict[str, int | None], head: OutputHead, what: str) -> str:
        """The model output a contract head reads: its ``name``, else the one output of the head's width."""
        if head.name is not None:
            if head.name not in widths:
                raise FaceauditError(f"{what} has no output {head.name!r} (contract output for {head.target}); it "
                                     f"has {_names(widths)}")
            name = head.name
        else:
            fits = [n for n, w in widths.items() if w == head.width]
            if len(widths) == 1:
                fits = list(widths)
            if len(fits) != 1:
                raise FaceauditError(f"{what}: {'several' if fits else 'no'} outputs of width {head.width} for the "
                                     f"contract's {head.target} output; its outputs are {_names(widths)}; set name "
                                     "in [[outputs]]")
            name = fits[0]
        if widths[name] is not None and widths[name] != head.width:
            raise FaceauditError(f"{what}: output {name!r} has {widths[name]} values per image, but the contract's "
                                 f"{head.kind} output for {head.target} needs {head.width}"
                                 + (f" (classes: {', '.join(head.classes)})" if head.classes else ""))
        return name

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


def _mean_std(spec: InputSpec) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A ``mean-std`` contract's mean and std in 0-255 pixel units (given in 0-1 units when every value is <= 1)."""
    if spec.mean is None or spec.std is None:
        return None, None
    mean, std = np.asarray(spec.mean, dtype=np.float32), np.asarray(spec.std, dtype=np.float32)
    if max(mean.max(), std.max()) <= 1.0:
        mean, std = mean * 255.0, std * 255.0
    return mean, std


def _names(widths: dict) -> str:
    return ", ".join(f"{name} ({'width ' + str(w) if w is not None else 'not [n, K]'})" for name, w in widths.items())


# -- Keras ----------------------------------------------------------------------------------------------------


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
        model_outputs = {_keras_name(tensor, i): tensor for i, tensor in enumerate(model.outputs)}
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

    def __init__(self, path: Path, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr,
                 contract: ModelContract | None = None):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr, contract=contract)
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
        x = tf.convert_to_tensor(_cast(batch, self.dtype.as_numpy_dtype))
        outs = _fixed_batches(lambda b: self.fn(**{self.input_key: tf.convert_to_tensor(b)}), x.numpy(), self.batch)
        heads = [np.concatenate([np.asarray(o[name]) for o in outs])[:len(batch)] for name in self.output_names]
        emb = (np.concatenate([np.asarray(o[self.embedding_name]) for o in outs])
               if self.embedding_name is not None else None)
        return heads, (None if emb is None else emb[:len(batch)])


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

    def __init__(self, path: Path, *, classes, output_layer, embedding_layer, input_size, preprocess, bgr,
                 contract: ModelContract | None = None):
        super().__init__(path, classes=classes, preprocess=preprocess, bgr=bgr, contract=contract)
        interpreter_class, runtime = _tflite_interpreter()
        from faceaudit.config import usable_cpus

        try:
            with warnings.catch_warnings(), native_noise_dropped():
                warnings.simplefilter("ignore")
                self.interpreter = interpreter_class(model_path=str(path), num_threads=usable_cpus())
        except Exception as exc:
            raise _tflite_load_error(path, exc) from None
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
        return max(_SUM_TOLERANCE, 2 * (self.output_width or 1) * float(scale or 0))

    def _run(self, batch):
        x = batch
        scale, zero = self.input["quantization"]
        dtype = np.dtype(self.input["dtype"])
        if np.issubdtype(dtype, np.integer) and scale:
            x = x / scale + zero
        x = _cast(x, dtype)
        outs = _fixed_batches(self._invoke, x, self.batch)
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


def _tflite_load_error(path: Path, exc: BaseException) -> FaceauditError:
    """Why a TFLite file did not load: not a flatbuffer at all (random bytes, an empty file: the interpreter says
    only "'utf-8' codec can't decode" or "Mmap ... failed"), or the interpreter's own first line."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] != b"TFL3":  # every TFLite flatbuffer carries this file identifier
        return FaceauditError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier: the file is damaged or in "
                              "another format)")
    return FaceauditError(f"cannot load TFLite model {path}: {_first_line(exc)}")


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
            raise FaceauditError(f"cannot load ONNX model {path}: {_first_line(exc)}") from None
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
        x = _cast(np.ascontiguousarray(batch), self.dtype)
        names = [*self.output_names] + ([self.embedding_name] if self.embedding_name is not None else [])
        outs = _fixed_batches(lambda b: self.session.run(names, {self.input.name: b}), x, self.batch)
        k = len(self.output_names)
        heads = [np.concatenate([o[i] for o in outs])[:len(batch)] for i in range(k)]
        emb = np.concatenate([o[k] for o in outs])[:len(batch)] if self.embedding_name is not None else None
        return heads, emb


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
    contract: ModelContract | None = None,
) -> Runtime:
    """Open a model file or folder (a run folder's ``model.keras``, ``.keras``, ``.h5``, SavedModel folder,
    ``.tflite``, ``.onnx``) as a :class:`Runtime`, or fail with one line.

    ``classes`` names the model's output units in order (``n_classes`` gives only their number); the output whose
    width is that number is the class-probability one (``output_layer`` names it when there are several).
    ``embedding_layer`` names the embedding layer (Keras) or output (other formats); ``input_size`` is needed when
    the model does not fix it; ``preprocess`` (one of :data:`PREPROCESS`, default ``raw``) and ``bgr`` say what
    the model wants from float32 RGB [0, 255] images. ``target`` picks the faceaudit contract layer
    ``<target>_probs`` of a ``.keras`` model. A ``contract`` (:mod:`faceaudit.seams.contract`) states the input and
    the outputs instead (``preprocess`` and ``bgr`` are then the contract's)."""
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
               "input_size": None if input_size is None else int(input_size), "preprocess": preprocess, "bgr": bgr,
               "contract": contract}
    if fmt in ("keras", "h5"):
        model = load_keras(path, fmt)
        return KerasRuntime(path, model, fmt=fmt, schema_target=target, **options)
    if fmt == "savedmodel":
        return SavedModelRuntime(path, **options)
    if fmt == "tflite":
        return TFLiteRuntime(path, **options)
    return OnnxRuntime(path, **options)


# -- what a model file reveals (for ``faceaudit contract init``) -----------------------------------------------


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
            history = getattr(tensor, "_keras_history", None)
            layer = history[0] if history is not None else None
            outputs.append({"name": _keras_name(tensor, i), "shape": list(tensor.shape),
                            "activation": _keras_activation(layer)})
        shape = model.input_shape if not isinstance(model.input_shape, list) else model.input_shape[0]
        return {"format": fmt, "input": {"shape": list(shape), "dtype": "float32"}, "outputs": outputs,
                "layers": len(model.layers)}
    if fmt == "tflite":
        interpreter_class, _ = _tflite_interpreter()
        with warnings.catch_warnings(), native_noise_dropped():
            warnings.simplefilter("ignore")
            try:
                interpreter = interpreter_class(model_path=str(path))
            except Exception as exc:
                raise _tflite_load_error(path, exc) from None
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
            raise FaceauditError(f"cannot load ONNX model {path}: {_first_line(exc)}") from None
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
        raise FaceauditError(f"cannot load SavedModel {path}: {_first_line(exc)}") from None
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
