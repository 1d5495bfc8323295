"""The model contract (``model.toml``): how to run a model faceaudit did not train, written once, kept with the audit.

A published face-attribute model states nowhere in its file what its pixels must look like or what its outputs
mean: grayscale or RGB, [0, 1] or [-1, 1], which unit is "woman", whether a value is an age in years or a fraction
of 116. A :class:`ModelContract` says it, in a small TOML file a person can read and review:

.. code-block:: toml

    contract_version = "1.0"
    [input]
    size = 64
    channels = "grayscale"      # rgb, bgr or grayscale (ITU-R BT.601 luma, as PIL convert("L") and OpenCV)
    scaling = "-1-1"            # raw, 0-1, -1-1, caffe, torch, or mean-std with mean = [...], std = [...]
    [[outputs]]
    target = "gender"
    kind = "softmax"            # softmax, logits, sigmoid or regression
    classes = ["woman", "man"]  # the model's own names, in output order
    map = { woman = "Female", man = "Male" }
    [provenance]
    source = "oarriaga/face_classification @ b861d21, MIT"
    trained_on = "IMDB-WIKI crops"

This module is the one definition of the file: :func:`load_contract` reads and checks it (every mistake is one
line naming the field), :meth:`ModelContract.to_dict` is what audit.json records, and :meth:`OutputHead.read` turns a
head's raw output into class probabilities in the label schema's order, or ages in years.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.errors import FaceauditError

#: Major.minor of the contract file; a newer major is refused.
CONTRACT_VERSION = "1.0"
CHANNELS = ("rgb", "bgr", "grayscale")
#: How a grayscale model's input is made from RGB: ITU-R BT.601 luma rounded to whole levels (PIL's
#: ``convert("L")``, OpenCV's ``COLOR_RGB2GRAY``), or the plain mean of the channels.
GRAYSCALE = ("bt601", "mean")
SCALINGS = ("raw", "0-1", "-1-1", "caffe", "torch", "mean-std")
#: Resize methods (TensorFlow's ``tf.image.resize`` names); ``antialias`` says whether downscaling is filtered.
RESIZE_METHODS = ("bilinear", "bicubic", "nearest", "area", "lanczos3")
LAYOUTS = ("NHWC", "NCHW")
KINDS = ("softmax", "logits", "sigmoid", "regression")
#: The one regression target faceaudit audits: age in years.
REGRESSION_TARGETS = ("age",)

_TOP_KEYS = {"contract_version", "model", "input", "outputs", "provenance"}
_MODEL_KEYS = {"name", "sha256", "embedding_layer"}
_INPUT_KEYS = {"size", "channels", "grayscale", "scaling", "mean", "std", "resize", "antialias", "layout"}
_OUTPUT_KEYS = {"name", "target", "kind", "classes", "map", "positive", "threshold", "scale", "offset", "unit"}
_PROVENANCE_KEYS = {"source", "licence", "license", "trained_on", "training_datasets", "training_hashes", "notes"}


def _where(path: Path | None) -> str:
    return f"contract {path.name}" if path is not None else "contract"


def _unknown(table: Mapping, allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise FaceauditError(f"{where}: unknown key {extra[0]!r}; expected one of {', '.join(sorted(allowed))}")


def _choice(value: Any, choices: Sequence[str], where: str, *, lower: bool = True) -> str:
    text = str(value).strip()
    text = text.lower() if lower else text.upper()
    if text not in choices:
        raise FaceauditError(f"{where} = {value!r}; expected one of {', '.join(choices)}")
    return text


def _number(value: Any, where: str, *, positive: bool = False, nonzero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise FaceauditError(f"{where} = {value!r} is not a finite number")
    if positive and value <= 0:
        raise FaceauditError(f"{where} = {value!r} must be above 0")
    if nonzero and value == 0:
        raise FaceauditError(f"{where} = 0 would map every output to the same value; give the model's scale")
    return float(value)


def _triple(value: Any, where: str, *, positive: bool = False) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if not isinstance(value, list) or len(value) not in (1, 3):
        raise FaceauditError(f"{where} must be a number or a list of 3 numbers (one per channel)")
    numbers = [_number(v, where, positive=positive) for v in value]
    return tuple(numbers * 3 if len(numbers) == 1 else numbers)  # type: ignore[return-value]


@dataclass(frozen=True)
class InputSpec:
    """What the model's pixels must be: size, channels, scaling, resize and layout."""

    size: int | None = None
    channels: str | None = None
    grayscale: str = "bt601"
    scaling: str = "raw"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: str = "bilinear"
    antialias: bool = True
    layout: str | None = None

    @classmethod
    def parse(cls, table: Mapping, where: str) -> "InputSpec":
        _unknown(table, _INPUT_KEYS, f"{where} [input]")
        size = table.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise FaceauditError(f"{where} [input] size = {size!r} must be a whole number of pixels")
        channels = _choice(table["channels"], CHANNELS, f"{where} [input] channels") if "channels" in table else None
        gray = _choice(table.get("grayscale", "bt601"), GRAYSCALE, f"{where} [input] grayscale")
        scaling = _choice(table.get("scaling", "raw"), SCALINGS, f"{where} [input] scaling")
        mean = std = None
        if scaling == "mean-std":
            if "mean" not in table or "std" not in table:
                raise FaceauditError(f"{where} [input] scaling = 'mean-std' needs mean = [...] and std = [...] "
                                     "(in pixel units of 0-255, or of 0-1 when every value is at most 1)")
            mean = _triple(table["mean"], f"{where} [input] mean")
            std = _triple(table["std"], f"{where} [input] std", positive=True)
        elif "mean" in table or "std" in table:
            raise FaceauditError(f"{where} [input] mean and std go with scaling = 'mean-std'")
        if scaling in ("caffe", "torch") and channels == "grayscale":
            raise FaceauditError(f"{where} [input] scaling = {scaling!r} subtracts ImageNet's per-channel means: "
                                 "it needs 3 channels, not grayscale")
        antialias = table.get("antialias", True)
        if not isinstance(antialias, bool):
            raise FaceauditError(f"{where} [input] antialias = {antialias!r} must be true or false")
        resize = _choice(table.get("resize", "bilinear"), RESIZE_METHODS, f"{where} [input] resize")
        layout = _choice(table["layout"], LAYOUTS, f"{where} [input] layout", lower=False) if "layout" in table \
            else None
        return cls(size, channels, gray, scaling, mean, std, resize, antialias, layout)


@dataclass(frozen=True)
class OutputHead:
    """One model output: the attribute it predicts, how to read it, and its classes mapped to the label schema."""

    target: str
    kind: str
    name: str | None = None
    #: The model's own class names in output order (softmax/logits), or the two classes of a sigmoid unit
    #: (``positive`` first).
    classes: tuple[str, ...] = ()
    #: Model class name -> label-schema class, as stated (identity where a name already is a schema label).
    mapping: tuple[tuple[str, str], ...] = ()
    positive: str | None = None
    threshold: float = 0.5
    scale: float = 1.0
    offset: float = 0.0
    unit: str = "years"

    @property
    def regression(self) -> bool:
        return self.kind == "regression"

    @property
    def width(self) -> int:
        """How many values the output has per image."""
        return 1 if self.kind in ("sigmoid", "regression") else len(self.classes)

    @classmethod
    def parse(cls, table: Mapping, where: str) -> "OutputHead":
        _unknown(table, _OUTPUT_KEYS, where)
        if "target" not in table:
            raise FaceauditError(f"{where}: target is missing (the attribute this output predicts: race, gender, "
                                 "age, ...)")
        target = str(table["target"]).strip()
        if "kind" not in table:
            raise FaceauditError(f"{where}: kind is missing; expected one of {', '.join(KINDS)}")
        kind = _choice(table["kind"], KINDS, f"{where} kind")
        name = None if table.get("name") is None else str(table["name"])
        if kind == "regression":
            if target not in REGRESSION_TARGETS:
                raise FaceauditError(f"{where}: a regression output must predict {' or '.join(REGRESSION_TARGETS)} "
                                     f"(in years), not {target!r}")
            for key in ("classes", "map", "positive", "threshold"):
                if key in table:
                    raise FaceauditError(f"{where}: {key} goes with a class output, not kind = 'regression'")
            scale = _number(table.get("scale", 1.0), f"{where} scale", nonzero=True)
            offset = _number(table.get("offset", 0.0), f"{where} offset")
            unit = str(table.get("unit", "years"))
            if unit != "years":
                raise FaceauditError(f"{where} unit = {unit!r}: give scale and offset so that scale * value + offset "
                                     "is in years")
            return cls(target, kind, name, scale=scale, offset=offset)
        if target in REGRESSION_TARGETS:
            raise FaceauditError(f"{where}: target {target!r} is read as a regression (kind = 'regression', years); "
                                 "for age bands use target = 'age_band'")
        for key in ("scale", "offset", "unit"):
            if key in table:
                raise FaceauditError(f"{where}: {key} goes with kind = 'regression'")
        classes = table.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, (str, int)) for c in classes):
            raise FaceauditError(f"{where}: classes must list the model's class names in output order, e.g. "
                                 "classes = [\"woman\", \"man\"]")
        classes = tuple(str(c).strip() for c in classes)
        folded = [c.lower() for c in classes]
        twice = next((c for c in classes if folded.count(c.lower()) > 1), None)
        if twice is not None:
            raise FaceauditError(f"{where}: classes names {twice!r} twice")
        positive, threshold = None, 0.5
        if kind == "sigmoid":
            if len(classes) != 2:
                raise FaceauditError(f"{where}: a sigmoid output gives P(one class) of two: classes needs exactly "
                                     f"2 names, got {len(classes)}")
            if "positive" not in table:
                raise FaceauditError(f"{where}: positive is missing: which of {', '.join(classes)} the sigmoid's "
                                     "value is the probability of")
            positive = str(table["positive"]).strip()
            if positive.lower() not in folded:
                raise FaceauditError(f"{where}: positive = {positive!r} is not one of classes ({', '.join(classes)})")
            positive = classes[folded.index(positive.lower())]
            classes = (positive, *(c for c in classes if c != positive))
            threshold = _number(table.get("threshold", 0.5), f"{where} threshold")
            if not 0 < threshold < 1:
                raise FaceauditError(f"{where} threshold = {threshold} must be between 0 and 1")
        else:
            for key in ("positive", "threshold"):
                if key in table:
                    raise FaceauditError(f"{where}: {key} goes with kind = 'sigmoid'")
            if len(classes) < 2:
                raise FaceauditError(f"{where}: classes needs at least 2 names for a {kind} output")
        mapping = table.get("map", {})
        if not isinstance(mapping, dict):
            raise FaceauditError(f"{where}: map must be a table of model class = schema label, e.g. "
                                 "map = { woman = \"Female\" }")
        seen: dict[str, str] = {}
        for key, label in mapping.items():
            folded_key = str(key).strip().lower()
            if folded_key in seen:
                raise FaceauditError(f"{where}: map maps class {key!r} twice (also as {seen[folded_key]!r})")
            seen[folded_key] = str(key)
            if folded_key not in folded:
                raise FaceauditError(f"{where}: map names {key!r}, which is not one of classes ({', '.join(classes)})")
            if not isinstance(label, str) or not label.strip():
                raise FaceauditError(f"{where}: map {key!r} = {label!r} must name a label of the schema")
        pairs = tuple((classes[folded.index(str(k).strip().lower())], str(v).strip()) for k, v in mapping.items())
        return cls(target, kind, name, classes, pairs, positive, threshold)

    # -- against a label schema ---------------------------------------------------------------------------

    def labels(self, schema_classes: Sequence[str], normalise) -> tuple[str, ...]:
        """The schema label of each model class (in :attr:`classes` order), or one line naming the one that has none.

        ``normalise`` reads a name as a schema label (its spellings and aliases) or raises FaceauditError."""
        stated = dict(self.mapping)
        out = []
        for name in self.classes:
            label = stated.get(name, name)
            try:
                label = normalise(label)
            except FaceauditError:
                how = f"map {name!r} = {label!r}" if name in stated else f"class {name!r}"
                raise FaceauditError(f"output {self.describe_name()}: {how} is not a label of the {self.target} "
                                     f"classes ({', '.join(schema_classes)}); add it to map") from None
            out.append(label)
        return tuple(out)

    def describe_name(self) -> str:
        return repr(self.name) if self.name else f"for {self.target}"

    def read(self, raw: np.ndarray, schema_classes: Sequence[str] | None = None,
             labels: Sequence[str] | None = None) -> np.ndarray:
        """The head's raw output ``[n, width]`` as probabilities ``[n, K]`` over ``schema_classes`` (model classes
        mapped through ``labels``, probabilities of classes mapped to one label added), or as ages in years ``[n]``."""
        raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
        if raw.shape[1] != self.width:
            raise FaceauditError(f"output {self.describe_name()} has {raw.shape[1]} values per image, but the "
                                 f"contract's {self.kind} output needs {self.width}"
                                 + (f" (classes: {', '.join(self.classes)})" if self.classes else ""))
        if self.regression:
            return raw[:, 0] * self.scale + self.offset
        if self.kind == "sigmoid":
            p = np.clip(raw[:, 0], 0.0, 1.0)
            if self.threshold != 0.5:  # a stated threshold becomes the 0.5 point by shifting the logit
                eps = 1e-12
                logit = np.log(np.clip(p, eps, 1)) - np.log(np.clip(1 - p, eps, 1))
                p = 1 / (1 + np.exp(-(logit - math.log(self.threshold / (1 - self.threshold)))))
            model_probs = np.stack([p, 1 - p], axis=1)
        elif self.kind == "logits":
            z = raw - raw.max(axis=1, keepdims=True)
            e = np.exp(z)
            model_probs = e / e.sum(axis=1, keepdims=True)
        else:
            model_probs = raw
        assert schema_classes is not None and labels is not None
        out = np.zeros((len(raw), len(schema_classes)))
        for j, label in enumerate(labels):
            out[:, list(schema_classes).index(label)] += model_probs[:, j]
        return out

    def steps(self, labels: Sequence[str] | None = None) -> list[str]:
        """What faceaudit does to this output, in words (console, model card, summary.md)."""
        if self.regression:
            how = "as given" if (self.scale, self.offset) == (1.0, 0.0) else \
                f"x {self.scale:g}" + (f" + {self.offset:g}" if self.offset else "")
            return [f"{self.target}: one value read as years {how}"]
        out = []
        if self.kind == "sigmoid":
            out.append(f"{self.target}: sigmoid value read as P({self.classes[0]}), P({self.classes[1]}) = 1 - value")
            if self.threshold != 0.5:
                out.append(f"{self.target}: threshold {self.threshold:g} applied by shifting the logit (calibration "
                           "figures describe the shifted score)")
        elif self.kind == "logits":
            out.append(f"{self.target}: softmax applied to {len(self.classes)} logits")
        if labels is not None:
            renamed = [f"{c} -> {lab}" for c, lab in zip(self.classes, labels) if c != lab]
            if renamed:
                out.append(f"{self.target}: classes mapped {', '.join(renamed)}")
            merged = {lab for lab in labels if list(labels).count(lab) > 1}
            if merged:
                out.append(f"{self.target}: probabilities added for {', '.join(sorted(merged))}")
        return out


@dataclass(frozen=True)
class Provenance:
    """Where the model comes from and what it was trained on (shown in the model card; read for overlap)."""

    source: str | None = None
    licence: str | None = None
    trained_on: str | None = None
    #: Data set names (``UTKFace``) the model saw in training; an audit on one of them is flagged optimistic.
    training_datasets: tuple[str, ...] = ()
    #: A file of SHA-256 hashes (one per line) of the training images, relative to the contract.
    training_hashes: str | None = None
    notes: str | None = None

    @classmethod
    def parse(cls, table: Mapping, where: str) -> "Provenance":
        _unknown(table, _PROVENANCE_KEYS, f"{where} [provenance]")
        datasets = table.get("training_datasets", [])
        if isinstance(datasets, str):
            datasets = [datasets]
        if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
            raise FaceauditError(f"{where} [provenance] training_datasets must list data set names, e.g. [\"UTKFace\"]")

        def text(key):
            value = table.get(key)
            return None if value is None else str(value)

        return cls(text("source"), text("licence") or text("license"), text("trained_on"),
                   tuple(d.strip() for d in datasets if d.strip()), text("training_hashes"), text("notes"))


@dataclass(frozen=True)
class ModelContract:
    """A whole contract: input, output heads, provenance; and the file it came from."""

    input: InputSpec = field(default_factory=InputSpec)
    outputs: tuple[OutputHead, ...] = ()
    provenance: Provenance = field(default_factory=Provenance)
    name: str | None = None
    sha256: str | None = None
    embedding_layer: str | None = None
    path: Path | None = None
    version: str = CONTRACT_VERSION

    def head(self, target: str) -> OutputHead:
        for head in self.outputs:
            if head.target == target:
                return head
        raise FaceauditError(f"{_where(self.path)} has no output for target {target!r}; it has "
                             f"{', '.join(h.target for h in self.outputs)}")

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(h.target for h in self.outputs)

    def to_dict(self) -> dict:
        """What audit.json's ``model.contract`` records."""
        data = asdict(self)
        data["path"] = None if self.path is None else str(self.path)
        for head in data["outputs"]:
            head["classes"] = list(head["classes"])
            head["map"] = dict(head.pop("mapping"))
        return data

    @classmethod
    def parse(cls, data: Mapping, path: Path | None = None) -> "ModelContract":
        """A contract from parsed TOML; one FaceauditError naming the field for any mistake."""
        where = _where(path)
        _unknown(data, _TOP_KEYS, where)
        version = str(data.get("contract_version", CONTRACT_VERSION))
        if version.split(".")[0] != CONTRACT_VERSION.split(".")[0]:
            raise FaceauditError(f"{where}: contract_version {version} is newer than this faceaudit reads "
                                 f"({CONTRACT_VERSION.split('.')[0]}.x); upgrade faceaudit")
        model = data.get("model", {})
        if not isinstance(model, dict):
            raise FaceauditError(f"{where}: [model] must be a table")
        _unknown(model, _MODEL_KEYS, f"{where} [model]")
        spec = data.get("input", {})
        if not isinstance(spec, dict):
            raise FaceauditError(f"{where}: [input] must be a table")
        outputs = data.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise FaceauditError(f"{where}: needs at least one [[outputs]] table (target, kind, classes)")
        heads = tuple(OutputHead.parse(o, f"{where} [[outputs]] #{i + 1}") for i, o in enumerate(outputs))
        targets = [h.target for h in heads]
        twice = next((t for t in targets if targets.count(t) > 1), None)
        if twice is not None:
            raise FaceauditError(f"{where}: two [[outputs]] predict {twice!r}; give each target one output")
        if len(heads) > 1 and any(h.name is None for h in heads):
            raise FaceauditError(f"{where}: with several [[outputs]] each needs name = the model output it reads")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise FaceauditError(f"{where}: [provenance] must be a table")
        sha = model.get("sha256")
        return cls(InputSpec.parse(spec, where), heads, Provenance.parse(provenance, where),
                   None if model.get("name") is None else str(model["name"]),
                   None if sha is None else str(sha).strip().lower(),
                   None if model.get("embedding_layer") is None else str(model["embedding_layer"]), path, version)


def load_contract(path: Path | str) -> ModelContract:
    """Read and check a ``model.toml``; one line naming the field for any mistake."""
    path = Path(path)
    if not path.is_file():
        raise FaceauditError(f"contract {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FaceauditError(f"contract {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise FaceauditError(f"contract {path} is not valid TOML: {exc}") from None
    return ModelContract.parse(data, path)


def training_hashes(contract: ModelContract) -> set[str] | None:
    """The training images' SHA-256 hashes the contract points to (relative to the contract file), or None."""
    name = contract.provenance.training_hashes
    if name is None:
        return None
    path = Path(name)
    if not path.is_absolute() and contract.path is not None:
        path = contract.path.parent / path
    try:
        lines = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise FaceauditError(f"{_where(contract.path)} [provenance] training_hashes {path}: cannot read "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
    hashes = {line.strip().lower() for line in lines if line.strip()}
    bad = next((h for h in hashes if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)), None)
    if bad is not None:
        raise FaceauditError(f"{_where(contract.path)} [provenance] training_hashes {path.name}: {bad[:20]!r} is "
                             "not a SHA-256 hex digest")
    return hashes
