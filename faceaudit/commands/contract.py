"""``faceaudit contract init MODEL``: a commented starting model contract from what the model file reveals.

What a file cannot say (the scaling it was trained with, its class names and their order, what it predicts, where
it comes from) is written as a visible ``CHECK`` comment with a guess, never left silently at a default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceaudit.errors import FaceauditError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "contract", help="write or check a model contract (model.toml): how to run a model faceaudit did not train",
        description="Model contracts say how to run a published model: input size, channels, scaling, resize, "
        "layout; each output's target, kind and classes mapped to the label schema; provenance.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="write a commented starting contract from what the model file reveals",
                              description="Read a model file (.keras, .h5, .tflite, .onnx, SavedModel folder) and "
                              "write a commented model.toml: what the file fixes (input shape, outputs, activations) "
                              "filled in, what it cannot know marked CHECK.")
    init.add_argument("model", type=Path, metavar="MODEL", help="the model file or SavedModel folder")
    init.add_argument("--out", type=Path, default=None, metavar="TOML",
                      help="where to write the contract (default: print it)")
    init.add_argument("--force", action="store_true", help="replace an existing --out file")
    init.set_defaults(handler=run_init)
    check = actions.add_parser("check", help="read a contract and say whether it is valid (no model is run)")
    check.add_argument("contract", type=Path, metavar="TOML")
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    from faceaudit.seams.contract import load_contract

    contract = load_contract(args.contract)
    print(json.dumps(contract.to_dict(), indent=1, default=str))
    return 0


def run_init(args: argparse.Namespace) -> int:
    from faceaudit.extras import require
    from faceaudit.files import atomic_write

    if not args.model.exists():
        raise FaceauditError(f"model not found: {args.model}")
    if args.out is not None and args.out.exists() and not args.force:
        raise FaceauditError(f"{args.out} exists; pass --force to replace it")
    require("tensorflow", "train", "reading a model file")
    from faceaudit.models.formats import source_sha256
    from faceaudit.models.introspection import inspect_model

    facts = inspect_model(args.model)
    text = contract_text(args.model, facts, source_sha256(args.model))
    if args.out is None:
        print(text, end="")
    else:
        atomic_write(args.out, text)
        print(f"wrote {args.out}: fill in every CHECK, then faceaudit audit {args.model} --contract {args.out} "
              "--check")
    return 0


def _toml_string(text: str) -> str:
    return json.dumps(str(text), ensure_ascii=False)


def contract_text(model: Path, facts: dict, sha256: str) -> str:
    """The commented TOML of a starting contract for ``model`` (``facts`` from ``inspect_model``)."""
    shape = facts["input"]["shape"]
    layout = "NHWC"
    channels_axis = shape[-1] if len(shape) == 4 else None
    if len(shape) == 4 and channels_axis not in (1, 3) and shape[1] in (1, 3):
        layout, channels_axis = "NCHW", shape[1]
    size = (shape[2] if layout == "NCHW" else shape[1]) if len(shape) == 4 else None
    lines = [f"# faceaudit model contract for {model.name} ({facts['format']}), written by 'faceaudit contract init'.",
             "# Lines marked CHECK are guesses: the file cannot say them. Take each from the model's own training or",
             "# inference code (and name the file and line in a comment), then run",
             f"#   faceaudit audit {model} --contract THIS.toml --data DATA --check",
             'contract_version = "1.0"', "", "[model]", f"name = {_toml_string(model.stem)}",
             f'sha256 = "{sha256}"   # the file this contract describes', "", "[input]",
             f"# the file's input: shape {shape}, {facts['input']['dtype']}"]
    if isinstance(size, int):
        lines.append(f"size = {size}")
    else:
        lines.append("size = 224                # CHECK: the model does not fix its input size")
    if channels_axis == 1:
        lines += ['channels = "grayscale"    # the model takes one channel', 'grayscale = "bt601"       # CHECK: '
                  'ITU-R BT.601 luma (PIL convert("L"), OpenCV COLOR_RGB2GRAY), or "mean"']
    else:
        lines.append('channels = "rgb"          # CHECK: rgb, or bgr for models trained through OpenCV/caffe')
    lines += ['scaling = "0-1"           # CHECK: raw (0-255), 0-1, -1-1, caffe, torch, or mean-std with mean/std',
              'resize = "bilinear"       # CHECK: bilinear, bicubic, nearest, area, lanczos3',
              f'layout = "{layout}"']
    for output in facts["outputs"]:
        width = output["shape"][-1] if output["shape"] else None
        activation = output.get("activation")
        lines += ["", "[[outputs]]", f"name = {_toml_string(output['name'])}   # shape {output['shape']}"]
        if width == 1:
            if activation == "sigmoid":
                lines += ['target = "gender"         # CHECK: the attribute this sigmoid gives P(one class) of',
                          'kind = "sigmoid"          # the output layer is a sigmoid',
                          'classes = ["Female", "Male"]   # CHECK: the two classes',
                          'positive = "Female"       # CHECK: which class the value is the probability of',
                          "threshold = 0.5"]
            else:
                lines += ['target = "age"            # CHECK: one value: an age regression?',
                          f'kind = "regression"       # {"linear output" if activation == "linear" else "CHECK"}',
                          "scale = 1.0               # CHECK: years = scale * value + offset (e.g. 116 for age/116)",
                          "offset = 0.0"]
        else:
            kind = "softmax" if activation == "softmax" else "logits"
            note = "the output layer is a softmax" if activation == "softmax" else \
                "CHECK: softmax if the values are probabilities, logits if not"
            guess = ", ".join(f'"class_{i}"' for i in range(width or 2))
            lines += ['target = "race"           # CHECK: race, gender or age_band', f'kind = "{kind}"          # {note}',
                      f"classes = [{guess}]   # CHECK: the model's own names, in output order",
                      "# map = { class_0 = \"White\" }   # CHECK: a model name -> the schema's label, where they differ"]
    lines += ["", "[provenance]", 'source = ""               # CHECK: repository @ commit, or where you got the file',
              'licence = ""              # CHECK', 'trained_on = ""           # CHECK: data set and split',
              "training_datasets = []    # CHECK: e.g. [\"UTKFace\"]: an audit on the same data is flagged optimistic",
              ""]
    return "\n".join(lines)
