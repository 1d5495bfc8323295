"""What an export records beside the model: a self-check against the Keras model on seeded random inputs, and
``manifest.json`` (format, quantisation, files with SHA-256, the input contract, the outputs, the source model)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError

from .export_spec import (
    DESCRIPTOR_INPUT,
    EMBEDDING_OUTPUT,
    INPUT_NAME,
    MANIFEST_FILE,
    MODEL_FILES,
    ONNX_OPSET,
    PROBS_OUTPUT,
    input_name,
)
from .exported import descriptor_runner, run_exported


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


def self_check(both, folder: Path, fmt: str, input_shape) -> dict:
    """The exported model against the Keras model on 8 seeded random inputs (largest absolute difference of the
    probabilities); skipped with a note when the runtime is not installed."""
    inputs, what = _check_inputs(both, input_shape)
    try:
        if len(input_shape) == 4:
            got = run_exported(folder, fmt, inputs)
        else:
            got = descriptor_runner(folder, fmt, 64)(inputs)
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


def manifest(folder: Path, fmt, quantize, run, schema, both, input_shape, model_file: Path, model_sha: str,
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
