"""Opening a model the one way every command runs it: a run folder or model file resolved, its label schema settled
(given, else the run's or export's, shaped by target, groups, age bands and classes) and its runtime loaded once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceaudit.errors import FaceauditError
from faceaudit.seams.contract import ModelContract
from faceaudit.seams.run import RunRecord
from faceaudit.taxonomy import LabelSchema, get_schema, name_list

from .runtime import Runtime


@dataclass
class OpenedModel:
    """A model resolved and loaded the one way every command runs it: its files, label schema and runtime."""

    source: Path
    model_file: Path
    run: RunRecord | None
    exported: dict | None
    schema: LabelSchema
    #: The ``classes``/contract options :func:`faceaudit.models.loading.load_runtime` was given (to load again).
    runtime_options: dict
    #: None for runs whose model does not take images (dlib-resnet heads, ensembles), run by
    #: :func:`faceaudit.models.inference.predict` itself.
    runtime: Runtime | None

    @property
    def image_model(self) -> bool:
        """Whether a runtime runs the model on images (not a dlib-resnet head or an ensemble's combiner)."""
        return self.run is None or self.run.image_model

    def info(self, *, synthetic: bool) -> dict:
        """What audit.json (and predict.json) record of the model; after predicting, so the runtime can tell how
        its outputs were read."""
        from .formats import source_sha256

        run, exported, runtime = self.run, self.exported, self.runtime
        is_run = self.source.is_dir() and self.model_file != self.source
        fmt = runtime.format if runtime is not None else "keras"
        return {"name": self.name,
                "kind": "run" if is_run else fmt, "format": fmt,
                "source": str(self.source.resolve()), "backbone": run.backbone if run is not None
                else ((exported or {}).get("source_model") or {}).get("backbone"),
                "run_hash": source_sha256(self.model_file), "synthetic": synthetic,
                "run": None if run is None else run.facts(),
                "runtime": None if runtime is None else runtime.describe(),
                "export": None if exported is None else {k: exported.get(k) for k in (
                    "format", "quantization", "quantization_detail", "total_bytes", "source_model", "exported_at")}}

    @property
    def name(self) -> str:
        """The run's name, else the file's; an export of a run adds its format and quantisation (output folders
        are named after it)."""
        contract = self.runtime_options.get("contract")
        name = self.run.name if self.run is not None else (self.model_file.stem or self.model_file.name)
        if contract is not None and contract.name and self.run is None:
            name = contract.name
        if self.exported is not None:
            source_run = (self.exported.get("source_model") or {}).get("run") or name
            quantization = self.exported.get("quantization")
            name = "-".join(p for p in (source_run, self.exported["format"],
                                        None if quantization == "none" else quantization) if p)
        return name


def open_model(model: str | Path, *, schema: LabelSchema | str | None = None, target: str | None = None,
               groups: Sequence[str] | None = None, age_bands: Any = None,
               classes: str | Sequence[str] | None = None, output_layer: str | None = None,
               embedding_layer: str | None = None, input_size: int | None = None, preprocess: str | None = None,
               bgr: bool = False, contract: ModelContract | None = None,
               check_schema: Callable[[LabelSchema], None] | None = None) -> OpenedModel:
    """Resolve a run folder or model file, settle its label schema (given, else the run's or export's, shaped by
    ``target``, ``groups``, ``age_bands`` and ``classes``) and load its runtime once, so that auditing and batch
    prediction open a model the same way. ``check_schema`` is called with the settled schema before the model loads
    (the API checks an audit's gates there, so a gate the audit could not judge is refused first). With a
    ``contract`` the runtime reads every output it names (and the model file must match its ``sha256``)."""
    from faceaudit.extras import require
    from faceaudit.seams.run import resolve_model

    source = Path(model)
    model_file, run = resolve_model(source)
    require("tensorflow", "train", "running a model on images")  # images are read by tf.data for every format
    from .export_spec import read_manifest
    from .loading import load_runtime

    exported = read_manifest(model_file)
    if schema is None and run is not None and run.label_schema:
        schema = LabelSchema.from_dict(run.label_schema)
    if schema is None and exported is not None and exported.get("label_schema"):
        schema = LabelSchema.from_dict(exported["label_schema"])
    schema = get_schema(schema)
    # The target, groups and age bands asked for shape the classes the model is run for and the predictions' bands.
    schema = schema.with_options(target=target, groups=None if groups is None else tuple(groups), age_bands=age_bands)
    names = _class_list(classes)
    if check_schema is not None:  # e.g. the audit's gates: refused before the model loads
        check_schema(schema)
    if names is not None and set(names) != set(schema.classes):
        schema = schema.with_classes(names)
    options = {"classes": names or schema.classes, "output_layer": output_layer, "embedding_layer": embedding_layer,
               "input_size": input_size, "preprocess": preprocess, "bgr": bgr, "target": schema.target}
    if contract is not None:
        from .formats import source_sha256

        if contract.sha256 is not None and source_sha256(model_file) != contract.sha256:
            raise FaceauditError(f"{model_file.name} is not the model the contract describes: its SHA-256 differs "
                                 f"from [model] sha256 = {contract.sha256[:12]}...")
        options = {"classes": None, "output_layer": None, "embedding_layer": embedding_layer,
                   "input_size": input_size, "preprocess": None, "bgr": False, "target": None, "contract": contract}
    opened = OpenedModel(source, model_file, run, exported, schema, options, runtime=None)
    if opened.image_model:
        opened.runtime = load_runtime(model_file, **options)
    return opened


def _class_list(classes: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--classes A,B,C`` (or a list) as class names, checked."""
    names = name_list(classes)
    if names is None:
        return None
    if len(names) < 2:
        raise FaceauditError("--classes needs at least two class names, e.g. White,Black,Asian,Indian,Others")
    if len(set(names)) != len(names):
        raise FaceauditError(f"--classes names a class twice: {','.join(names)}")
    return names
