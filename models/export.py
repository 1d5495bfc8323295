"""Export a trained run's model to a servable format: a TensorFlow SavedModel, a TFLite flatbuffer or an ONNX graph.

``export_model(run_dir, fmt, quantize=None, out=None)`` writes one folder (default ``<run>/export/<fmt>[-<quant>]``)
holding the model and ``manifest.json``: format, quantisation, every file's size and SHA-256, the input contract
(float32 RGB in [0, 255] at the run's size; faceaudit models preprocess inside, so nothing else is needed; for a
``dlib-resnet`` run, dlib's 128-d face descriptors of the run's chip framing, named ``descriptor``: the export is the
Keras head only, and the descriptors come from ``faceaudit.models.dlib_features.descriptors``), the
outputs (``probabilities`` with the classes in order from the run's label schema, and ``embedding``), the source
model's SHA-256 and the faceaudit version. The folder is built aside and swapped in whole.

Quantisation: ``float16`` stores the weights as float16 (TFLite: float16 weights dequantised at load; ONNX: the
graph in float16 with float32 input and outputs); ``int8`` quantises weights and activations to 8 bits, calibrated
on a representative set drawn from the run's own training split (read through the run record's data source; for
a dlib-resnet head, those images' descriptors, from the descriptor cache), with
float32 input and outputs so the contract does not change. A SavedModel is never quantised.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from faceaudit.console import native_noise_dropped
from faceaudit.errors import FaceauditError

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float16", "int8")
EXPORT_DIR = "export"
MANIFEST_FILE = "manifest.json"
#: The model file each format writes inside the export folder (a SavedModel is the folder itself).
MODEL_FILES = {"savedmodel": "saved_model.pb", "tflite": "model.tflite", "onnx": "model.onnx"}
INPUT_NAME = "image"
#: The input of a dlib-resnet head: dlib's 128-d face descriptors, not pixels.
DESCRIPTOR_INPUT = "descriptor"
PROBS_OUTPUT = "probabilities"
EMBEDDING_OUTPUT = "embedding"
#: Images of the training split that calibrate int8 quantisation.
REPRESENTATIVE_IMAGES = 300
REPRESENTATIVE_SEED = 0
ONNX_OPSET = 17


def read_manifest(model: Path | str) -> dict | None:
    """The ``manifest.json`` of an exported model (given as its folder or its model file), or None when the model was
    not exported by faceaudit."""
    model = Path(model)
    file = (model if model.is_dir() else model.parent) / MANIFEST_FILE
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FaceauditError(f"cannot read {file}: {exc}") from None
    return manifest if isinstance(manifest, dict) and "format" in manifest else None


def default_out(run_dir: Path | str, fmt: str, quantize: str | None = None) -> Path:
    """``<run>/export/<fmt>[-<quantize>]``."""
    return Path(run_dir) / EXPORT_DIR / (fmt if quantize is None else f"{fmt}-{quantize}")


def export_model(run_dir: Path | str, fmt: str, quantize: str | None = None, out: Path | str | None = None, *,
                 data: Path | str | None = None, representative: int = REPRESENTATIVE_IMAGES) -> Path:
    """Export the run's ``model.keras`` as ``fmt`` (``savedmodel``, ``tflite``, ``onnx``), optionally quantised
    (``float16``, ``int8``), into ``out`` (default :func:`default_out`); returns the folder.

    ``data`` overrides the run's recorded data source for int8 calibration (the run's training split of it).
    Needs ``faceaudit[train]``; ONNX also ``faceaudit[onnx]``."""
    from faceaudit.extras import require
    from faceaudit.files import replace_folder, replaceable_dir
    from faceaudit.seams.run import resolve_model

    if fmt not in FORMATS:
        raise FaceauditError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise FaceauditError(f"unknown quantisation {quantize!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if fmt == "savedmodel" and quantize is not None:
        raise FaceauditError("a SavedModel is not quantised: use --format tflite or onnx with --quantize")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FaceauditError(f"{run_dir} is not a run folder")
    model_file, run = resolve_model(run_dir)
    if run is not None and run.backbone == "ensemble":
        raise FaceauditError(f"{run_dir} is an ensemble: its members are separate models combined by faceaudit; "
                             "export each member's run folder (members/<name>) instead")
    purpose = f"faceaudit export --format {fmt}"
    require("tensorflow", "train", purpose)
    if fmt == "onnx":
        require("tf2onnx", "onnx", purpose)
        require("onnx", "onnx", purpose)
        if quantize is not None:
            require("onnxruntime", "onnx", f"{purpose} --quantize {quantize}")
    if quantize == "int8" and representative < 1:
        raise FaceauditError("int8 needs at least one representative image")
    out = Path(out) if out is not None else default_out(run_dir, fmt, quantize)
    replaceable_dir(out, MANIFEST_FILE)

    from faceaudit.datasets.sources import file_sha256
    from faceaudit.models.inference import contract_model, load_model

    start = time.perf_counter()
    schema = run.schema if run is not None else None
    keras_model = load_model(model_file)
    images = run is None or run.backbone != "dlib-resnet"
    both = contract_model(keras_model, expect_images=images, schema=schema)
    input_shape = [None, *(int(d) for d in both.input_shape[1:])]
    calibration, calibration_info = (None, None)
    if quantize == "int8":
        calibration, calibration_info = representative_set(run, input_shape, data=data, count=representative)
    with replace_folder(out) as work:
        if fmt == "savedmodel":
            _write_savedmodel(both, input_shape, work)
        elif fmt == "tflite":
            _write_tflite(both, input_shape, work, quantize, calibration)
        else:
            _write_onnx(both, input_shape, work, quantize, calibration)
        check = _self_check(both, work, fmt, input_shape)
        manifest = _manifest(work, fmt, quantize, run, schema, both, input_shape, model_file,
                             file_sha256(model_file), calibration_info, check, time.perf_counter() - start)
        (work / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, default=str))
    return out


# -- the model as a function ----------------------------------------------------------------------------------


def input_name(input_shape) -> str:
    """``image`` for an image model ([n, H, W, 3]), ``descriptor`` for a dlib-resnet head ([n, 128])."""
    return INPUT_NAME if len(input_shape) == 4 else DESCRIPTOR_INPUT


def _serving_function(both, input_shape):
    """A tf.function from the input (``image`` or ``descriptor``) to ``{probabilities, embedding}`` (inference
    mode)."""
    import tensorflow as tf

    spec = tf.TensorSpec(input_shape, tf.float32, name=input_name(input_shape))
    if spec.name == INPUT_NAME:
        @tf.function(input_signature=[spec])
        def serve(image):
            probs, embedding = both([image], training=False)
            return {PROBS_OUTPUT: probs, EMBEDDING_OUTPUT: embedding}
    else:
        @tf.function(input_signature=[spec])
        def serve(descriptor):
            probs, embedding = both([descriptor], training=False)
            return {PROBS_OUTPUT: probs, EMBEDDING_OUTPUT: embedding}

    return serve, spec


def _write_savedmodel(both, input_shape, folder: Path) -> None:
    import keras

    serve, spec = _serving_function(both, input_shape)
    archive = keras.export.ExportArchive()
    archive.track(both)
    archive.add_endpoint(name="serve", fn=serve, input_signature=[spec])
    archive.write_out(str(folder), verbose=False)


def _write_tflite(both, input_shape, folder: Path, quantize: str | None, calibration: np.ndarray | None) -> None:
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="faceaudit-export-") as tmp:
        _write_savedmodel(both, input_shape, Path(tmp))
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


def _write_onnx(both, input_shape, folder: Path, quantize: str | None, calibration: np.ndarray | None) -> None:
    import tf2onnx

    serve, spec = _serving_function(both, input_shape)
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


# -- int8 calibration ---------------------------------------------------------------------------------------


def representative_set(run, input_shape, *, data: Path | str | None = None,
                       count: int = REPRESENTATIVE_IMAGES) -> tuple[np.ndarray, dict]:
    """``count`` images (or dlib descriptors) of the run's training split, as the model's input, and what they
    were (source, split, n, how drawn, a hash of their ids) for the manifest."""
    import hashlib

    from faceaudit.models.inference import load_run_dataset

    if run is None:
        raise FaceauditError("int8 needs a run folder with run.json: its training split calibrates the quantisation")
    dataset = load_run_dataset(run, data, progress=False, purpose="int8")
    source = dataset.source
    train = dataset.split("train")
    if train.empty:
        raise FaceauditError(f"the training split of {source} is empty: nothing to calibrate int8 on")
    chosen = train.sample(min(count, len(train)), random_state=REPRESENTATIVE_SEED).sort_values("image_id")
    if run.backbone == "dlib-resnet":
        from faceaudit.models.dlib_features import descriptors

        inputs, _ = descriptors(chosen, run.dlib_framing or "align", progress=False)
        inputs = np.asarray(inputs, dtype=np.float32)
    else:
        from faceaudit.datasets.tfdata import image_dataset

        inputs = np.concatenate([np.asarray(batch) for batch in
                                 image_dataset(chosen, int(input_shape[1]), 64, with_labels=False)])
    recorded = (run.data or {}).get("manifest_sha256")
    info = {"source": str(source), "split": "train", "n": int(len(chosen)), "of": int(len(train)),
            "drawn": f"uniformly at random without replacement (seed {REPRESENTATIVE_SEED})",
            "image_ids_sha256": hashlib.sha256("\n".join(chosen["image_id"].astype(str)).encode()).hexdigest(),
            "data_fingerprint": dataset.fingerprint,
            "matches_run_data": None if not recorded else recorded == dataset.fingerprint}
    return inputs, info


# -- checks and the manifest --------------------------------------------------------------------------------


def load_exported(folder: Path | str, fmt: str, batch_size: int = 64):
    """A function from inputs to ``{probabilities, embedding}`` for an exported model (a folder
    :func:`export_model` wrote), loaded once. Image models are run by the runtime that audits them
    (:func:`faceaudit.models.loading.load_runtime`); a dlib-resnet head (input ``[n, 128]`` descriptors) by the
    format's own runtime through its signature (SavedModel ``serving_default``, the TFLite signature runner, an
    onnxruntime session)."""
    if fmt not in MODEL_FILES:
        raise FaceauditError(f"unknown export format {fmt!r}")
    folder = Path(folder)
    manifest = read_manifest(folder) or {}
    if (manifest.get("input") or {}).get("name") == DESCRIPTOR_INPUT:
        return _descriptor_runner(folder, fmt, batch_size)
    from faceaudit.models.loading import load_runtime

    runtime = load_runtime(folder if fmt == "savedmodel" else folder / MODEL_FILES[fmt],
                           output_layer=PROBS_OUTPUT, embedding_layer=EMBEDDING_OUTPUT)

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        probs, embedding = runtime.predict(np.asarray(inputs, dtype=np.float32), batch_size=batch_size)
        return {PROBS_OUTPUT: probs, EMBEDDING_OUTPUT: embedding}

    return run


def _descriptor_runner(folder: Path, fmt: str, batch_size: int):
    """:func:`load_exported` for a model whose input is ``descriptor`` [n, 128]."""
    if fmt == "savedmodel":
        import tensorflow as tf

        fn = tf.saved_model.load(str(folder)).signatures["serving_default"]

        def one(batch):
            return {k: np.asarray(v) for k, v in fn(**{DESCRIPTOR_INPUT: tf.constant(batch)}).items()}
    elif fmt == "tflite":
        import warnings

        from faceaudit.config import usable_cpus
        from faceaudit.console import native_noise_dropped
        from faceaudit.models.tflite_runtime import tflite_interpreter

        interpreter_class, _ = tflite_interpreter()
        with warnings.catch_warnings(), native_noise_dropped():
            warnings.simplefilter("ignore")
            interpreter = interpreter_class(model_path=str(folder / MODEL_FILES["tflite"]), num_threads=usable_cpus())
        runner = interpreter.get_signature_runner("serving_default")

        def one(batch):
            return runner(**{DESCRIPTOR_INPUT: batch})
    else:
        from faceaudit.extras import require

        ort = require("onnxruntime", "onnx", "running an exported ONNX model")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(folder / MODEL_FILES["onnx"]), options, providers=["CPUExecutionProvider"])

        def one(batch):
            return dict(zip((PROBS_OUTPUT, EMBEDDING_OUTPUT),
                            session.run([PROBS_OUTPUT, EMBEDDING_OUTPUT], {DESCRIPTOR_INPUT: batch})))

    def run(inputs: np.ndarray) -> dict[str, np.ndarray]:
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if inputs.ndim != 2:
            raise FaceauditError(f"this model takes descriptors [n, d], not an array of shape {inputs.shape}")
        outs = [one(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
        return {key: np.concatenate([np.asarray(o[key], dtype=np.float32) for o in outs])
                for key in (PROBS_OUTPUT, EMBEDDING_OUTPUT)}

    return run


def run_exported(folder: Path, fmt: str, inputs: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``{probabilities, embedding}`` of an exported model (a folder :func:`export_model` wrote) on ``inputs``
    (images, or descriptors for a dlib-resnet head); see :func:`load_exported`."""
    return load_exported(folder, fmt, batch_size)(inputs)


def _check_inputs(both, input_shape) -> tuple[np.ndarray, str]:
    """8 seeded random inputs for the self-check: uniform pixels in [0, 255] for an image model; for a
    descriptor head, normal draws at the training descriptors' mean and spread (its ``standardise`` layer)."""
    rng = np.random.default_rng(0)
    if len(input_shape) == 4:
        return (rng.uniform(0, 255, (8, *input_shape[1:])).astype(np.float32),
                "8 uniform random inputs in [0, 255] (seed 0)")
    try:
        layer = both.get_layer("standardise")
        mean = np.asarray(layer.mean, dtype=np.float64).reshape(-1)
        std = np.sqrt(np.asarray(layer.variance, dtype=np.float64).reshape(-1))
        what = "the training descriptors' mean and standard deviation"
    except (ValueError, AttributeError):
        mean, std, what = 0.0, 0.1, "mean 0 and standard deviation 0.1"
    inputs = (mean + std * rng.standard_normal((8, *input_shape[1:]))).astype(np.float32)
    return inputs, f"8 random normal descriptors at {what} (seed 0)"


def _self_check(both, folder: Path, fmt: str, input_shape) -> dict:
    """The exported model against the Keras model on 8 seeded random inputs (largest absolute difference of the
    probabilities); skipped with a note when the runtime is not installed."""
    inputs, what = _check_inputs(both, input_shape)
    try:
        if len(input_shape) == 4:
            got = run_exported(folder, fmt, inputs)
        else:
            got = _descriptor_runner(folder, fmt, 64)(inputs)
    except ImportError as exc:
        return {"skipped": f"{exc.name or 'runtime'} not installed"}
    except FaceauditError as exc:  # the runtime's extra is not installed (one line naming it)
        return {"skipped": str(exc)}
    reference = np.asarray(both([inputs], training=False)[0])
    return {"inputs": what,
            "max_abs_diff_probabilities": float(np.max(np.abs(got[PROBS_OUTPUT] - reference))),
            "same_argmax": int(np.sum(got[PROBS_OUTPUT].argmax(1) == reference.argmax(1)))}


def _quantisation_note(fmt: str, quantize: str | None) -> str:
    if quantize is None:
        return "none (float32)"
    if quantize == "float16":
        return {"tflite": "float16 weights (dequantised to float32 at load); float32 input and outputs",
                "onnx": "float16 graph (weights and activations); float32 input and outputs"}[fmt]
    return {"tflite": "int8 weights and activations (full integer ops), calibrated on the representative set; "
                      "float32 input and outputs",
            "onnx": "int8 weights (per channel) and activations (QDQ), calibrated on the representative set; "
                    "float32 input and outputs"}[fmt]


def _files(folder: Path) -> list[dict]:
    from faceaudit.datasets.sources import file_sha256

    return [{"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE]


def _manifest(folder: Path, fmt, quantize, run, schema, both, input_shape, model_file: Path, model_sha: str,
              calibration: dict | None, check: dict, seconds: float) -> dict:
    from faceaudit.version import __version__

    files = _files(folder)
    classes = list(schema.classes) if schema is not None else None
    n_classes = int(both.outputs[0].shape[-1])
    images = len(input_shape) == 4
    framing = (run.dlib_framing or "align") if run is not None else None
    name = input_name(input_shape)
    contract = ({"name": INPUT_NAME, "shape": input_shape, "dtype": "float32", "range": [0, 255], "color": "RGB",
                 "layout": "NHWC", "size": [input_shape[1], input_shape[2]],
                 "preprocessing": "inside the model: feed RGB pixel values in [0, 255], resized to the size "
                                  "(faceaudit resizes with antialiased bilinear)"}
                if images else
                {"name": DESCRIPTOR_INPUT, "shape": input_shape, "dtype": "float32",
                 "kind": "dlib 128-d face descriptors (dlib_face_recognition_resnet_model_v1), not images",
                 "framing": framing,
                 "how": f"dlib's ResNet on each face's 150x150 chip, framing {framing!r} ('align': dlib's 5-point "
                        "landmarks on the whole cropped image, then dlib.get_face_chip with padding 0.25; "
                        "'+mirror': the mean with the mirrored chip's descriptor); in faceaudit: "
                        "faceaudit.models.dlib_features.descriptors(manifest, framing)",
                 "preprocessing": "inside the model: the descriptors are standardised by the training set's mean "
                                  "and variance; feed dlib's raw descriptors"})
    return {
        "format": fmt,
        "quantization": quantize or "none",
        "quantization_detail": _quantisation_note(fmt, quantize),
        "model_file": MODEL_FILES[fmt] if fmt != "savedmodel" else ".",
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files),
        "input": contract,
        "outputs": [{"name": PROBS_OUTPUT, "shape": [None, n_classes], "dtype": "float32",
                     "kind": "softmax probabilities", "target": schema.target if schema is not None else None,
                     "classes": classes,
                     **({"note": "quantised to int8 steps (about 1/256): each row sums to 1 only within about "
                                 "0.01; divide by the row sum before using them as probabilities"}
                        if quantize == "int8" else {})},
                    {"name": EMBEDDING_OUTPUT, "shape": [None, int(both.outputs[1].shape[-1])], "dtype": "float32",
                     "kind": "penultimate embedding"}],
        "signature": {"savedmodel": f"serving_default ({name} -> probabilities, embedding)",
                      "tflite": f"serving_default signature runner ({name} -> probabilities, embedding)",
                      "onnx": f"input '{name}', outputs 'probabilities' and 'embedding' (opset {ONNX_OPSET})"}[fmt],
        "label_schema": run.label_schema if run is not None else None,
        "representative_set": calibration,
        "source_model": {"file": model_file.name, "sha256": model_sha,
                         "run": run.name if run is not None else None,
                         "backbone": run.backbone if run is not None else None,
                         "test_accuracy": run.test_accuracy if run is not None else None},
        "check_against_keras": check,
        "export_s": round(seconds, 2),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "faceaudit_version": __version__,
    }
