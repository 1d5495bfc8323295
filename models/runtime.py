"""Model runtimes: one interface over every model format faceaudit audits.

:func:`~faceaudit.models.loading.load_runtime` opens a faceaudit ``.keras`` file (the model contract: float32 RGB [0, 255] input, layers
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

The formats live beside this module (:mod:`.keras_runtime`, :mod:`.savedmodel_runtime`, :mod:`.tflite_runtime`,
:mod:`.onnx_runtime`); :func:`faceaudit.models.loading.load_runtime` picks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.seams.contract import InputSpec, ModelContract, OutputHead

from .formats import FORMATS
from .preprocessing import PREPROCESS, preprocess_images

#: The output a faceaudit export names its embeddings (and the layer name of faceaudit's own models).
EMBEDDING_OUTPUT = "embedding"
#: How far a row of a probability output may sum from 1 (float models; quantised ones add a step per class).
SUM_TOLERANCE = 5e-3


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most ``limit`` characters): what a one-line error quotes."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return first


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
        return SUM_TOLERANCE

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
        from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

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
        from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

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


def cast_input(x: np.ndarray, dtype) -> np.ndarray:
    """A preprocessed batch in a model's input dtype (integer inputs rounded and clipped to the type's range)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def fixed_batches(call, x: np.ndarray, batch: int | None) -> list:
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
