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

The work is split the way the runtimes are: :mod:`.export_spec` (names, files, the serving function), one module per
format (:mod:`.export_savedmodel`, :mod:`.export_tflite`, :mod:`.export_onnx`), :mod:`.export_calibration` (the int8
representative set), :mod:`.export_manifest` (self-check and manifest) and :mod:`.exported` (running an export);
this module writes one and keeps every public name importable from ``faceaudit.models.export``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from faceaudit.errors import FaceauditError

from .export_calibration import representative_set
from .export_manifest import manifest, self_check
from .export_onnx import write_onnx
from .export_savedmodel import write_savedmodel
from .export_spec import (
    DESCRIPTOR_INPUT,
    EMBEDDING_OUTPUT,
    EXPORT_DIR,
    FORMATS,
    INPUT_NAME,
    MANIFEST_FILE,
    MODEL_FILES,
    ONNX_OPSET,
    PROBS_OUTPUT,
    QUANTIZATIONS,
    REPRESENTATIVE_IMAGES,
    REPRESENTATIVE_SEED,
    default_out,
    input_name,
    read_manifest,
)
from .export_tflite import write_tflite
from .exported import load_exported, run_exported

__all__ = ["DESCRIPTOR_INPUT", "EMBEDDING_OUTPUT", "EXPORT_DIR", "FORMATS", "INPUT_NAME", "MANIFEST_FILE", "MODEL_FILES",
           "ONNX_OPSET", "PROBS_OUTPUT", "QUANTIZATIONS", "REPRESENTATIVE_IMAGES", "REPRESENTATIVE_SEED", "default_out",
           "export_model", "input_name", "load_exported", "read_manifest", "representative_set", "run_exported"]


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
            write_savedmodel(both, input_shape, work)
        elif fmt == "tflite":
            write_tflite(both, input_shape, work, quantize, calibration)
        else:
            write_onnx(both, input_shape, work, quantize, calibration)
        check = self_check(both, work, fmt, input_shape)
        record = manifest(work, fmt, quantize, run, schema, both, input_shape, model_file,
                          file_sha256(model_file), calibration_info, check, time.perf_counter() - start)
        (work / MANIFEST_FILE).write_text(json.dumps(record, indent=1, default=str))
    return out
