"""``faceaudit export``: a run's model as a servable SavedModel, TFLite or ONNX file beside a manifest.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export", help="export a run's model to SavedModel, TFLite or ONNX (optionally float16 / int8)",
        description="Write a run's model.keras as a servable model (SavedModel folder, .tflite or .onnx) into one "
                    "folder (default RUN/export/FORMAT[-QUANT]) beside manifest.json: format, quantisation, each "
                    "file's size and SHA-256, the input contract (float32 RGB in [0, 255] at the run's size; the "
                    "model preprocesses inside), the outputs (probabilities with the classes in order, and the "
                    "embedding), the source model's SHA-256 and the faceaudit version. int8 is calibrated on "
                    "images drawn from the run's training split. The folder is replaced as a whole.")
    parser.add_argument("run", type=Path, metavar="RUN", help="run folder (model.keras + run.json)")
    parser.add_argument("--format", required=True, choices=("savedmodel", "tflite", "onnx"), dest="fmt",
                        help="savedmodel, tflite or onnx (onnx needs faceaudit[onnx])")
    parser.add_argument("--quantize", choices=("float16", "int8"),
                        help="tflite/onnx only: float16 weights, or int8 weights and activations")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN/export/FORMAT[-QUANT])")
    parser.add_argument("--data", type=Path,
                        help="int8 only: the data whose training split calibrates (default: run.json's data source)")
    parser.add_argument("--representative", type=int, default=300, metavar="N",
                        help="int8 only: training images that calibrate the quantisation (default: 300)")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from faceaudit.models.export import MANIFEST_FILE, export_model

    folder = export_model(args.run, args.fmt, args.quantize, args.out, data=args.data,
                          representative=args.representative)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    check = manifest.get("check_against_keras") or {}
    outputs = ", ".join(o["name"] for o in manifest["outputs"])
    print(f"wrote {folder} ({manifest['format']}, quantisation {manifest['quantization']}, "
          f"{manifest['total_bytes'] / 1e6:.2f} MB, outputs: {outputs})")
    if "max_abs_diff_probabilities" in check:
        print(f"checked against the Keras model: largest probability difference "
              f"{check['max_abs_diff_probabilities']:.2g} on {check['inputs']}")
    if manifest.get("representative_set"):
        rep = manifest["representative_set"]
        print(f"calibrated on {rep['n']} of {rep['of']} {rep['split']} images of {rep['source']}")
    print(f"exported in {manifest['export_s']:.1f} s")
    return 0
