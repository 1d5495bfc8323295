"""The layers of faceaudit, lowest first, and which may import which: the one table tests/test_import_layers.py checks.

A module may import modules of its own layer and of layers of a lower rank, never a higher rank and never a
sibling layer of the same rank (training and audit both sit on models and know nothing of each other). Function-level
imports count the same as module-level ones: an import hidden in a function is still an arrow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    """A named layer: ``packages`` cover a module and everything under it, ``modules`` only themselves."""

    name: str
    rank: int
    packages: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    why: str = ""


LAYERS: tuple[Layer, ...] = (
    Layer("core", 0, packages=(
        "faceaudit.errors", "faceaudit.config", "faceaudit.taxonomy", "faceaudit.seams", "faceaudit.version",
        "faceaudit.console", "faceaudit.files", "faceaudit.interrupts", "faceaudit.extras", "faceaudit.distributed",
        "faceaudit.compat", "faceaudit.architecture", "faceaudit.templates", "faceaudit.validation", "faceaudit.hooks",
    ), why="leaf utilities every stage shares: errors, settings, label schemas, seam files, quiet console, atomic "
           "files, signals, optional extras, the Ray session, third-party private APIs, the document layout, "
           "argument validation, the slots a higher layer fills"),
    Layer("datasets", 1, packages=("faceaudit.datasets",), why="labelled images into manifests, tf.data, inspection"),
    Layer("models", 2, packages=("faceaudit.models",),
          why="every model runtime, inference, batch prediction, export and open_model"),
    Layer("training", 3, packages=("faceaudit.training",), why="trains, ensembles and mitigates run folders"),
    Layer("audit", 3, packages=("faceaudit.auditing",), why="a predictions table in, an audit result out"),
    Layer("report", 4, packages=("faceaudit.auditing.report",), why="audit folders into HTML, PDF and Markdown"),
    Layer("api", 5, packages=("faceaudit.api", "faceaudit.presenting", "faceaudit.tracking"), modules=("faceaudit",),
          why="the public Python API"),
    Layer("cli", 6, packages=("faceaudit.cli", "faceaudit.commands", "faceaudit.__main__"), why="the command line"),
)


def layer_of(module: str) -> Layer | None:
    """The layer a dotted module name belongs to (the most specific entry wins), or None when the table misses it."""
    best: tuple[int, Layer] | None = None
    for layer in LAYERS:
        for name in layer.modules:
            if module == name and (best is None or len(name) > best[0]):
                best = (len(name), layer)
        for name in layer.packages:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[0]):
                best = (len(name), layer)
    return best[1] if best else None


def allowed(importer: Layer, imported: Layer) -> bool:
    """Whether a module of ``importer`` may import one of ``imported``: same layer or a lower rank."""
    return importer.name == imported.name or imported.rank < importer.rank
