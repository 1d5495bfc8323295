"""faceaudit: fairness audits of face-attribute classifiers, by any attribute and their intersections.

The common case is one call; the parts beneath it are importable on their own::

    import faceaudit
    result = faceaudit.audit(predictions)          # a DataFrame, PredictionsTable or CSV/Parquet path
    result.by_group("race", "accuracy")            # a DataFrame with intervals
    result.report("reports/my-model")              # audit.json, CSV tables, report.html/pdf, summary.md

``faceaudit.audit_model(run_or_model, data)`` runs a Keras model first (``faceaudit[train]``);
``faceaudit.train(...)`` trains one, ``faceaudit.ensemble(runs, out)`` combines runs and
``faceaudit.mitigate(run, out)`` shifts a run's per-class decisions; ``faceaudit.predict(model, data, out, engine="ray")`` writes a model's
predictions as Parquet shards, which ``faceaudit.audit(out)`` streams; ``faceaudit.load_dataset(source)`` reads
labelled images into a manifest.
Heavy modules load on first use, so ``import faceaudit`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
from pathlib import Path

__version__ = "0.1.0"

# From a source checkout the designed top-level folders (audit/, datasets/, training/, templates/) sit beside this
# package; installed, setuptools maps them into it. In a checkout a small finder maps exactly those four, so
# ``faceaudit.audit`` and its siblings import the same way from the repository root as from an installed package.
_ROOT = Path(__file__).resolve().parent.parent
_FOLDERS = ("audit", "datasets", "training", "templates")


class _CheckoutFolders(importlib.abc.MetaPathFinder):
    """Finds ``faceaudit.<folder>`` at ``<checkout>/<folder>`` for the four designed folders, and nothing else."""

    def find_spec(self, name, path=None, target=None):
        prefix, _, folder = name.partition(".")
        if prefix != "faceaudit" or folder not in _FOLDERS:
            return None
        init = _ROOT / folder / "__init__.py"
        return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])


if not (Path(__file__).parent / "audit").is_dir() and (_ROOT / "audit" / "__init__.py").is_file():
    import sys

    if not any(isinstance(finder, _CheckoutFolders) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutFolders())

#: Public name -> module that defines it (imported on first access).
_PUBLIC = {
    "audit": "faceaudit.audit",
    "AuditResult": "faceaudit.audit.result",
    "load_audit": "faceaudit.audit.result",
    "audit_model": "faceaudit.api",
    "audit_heads": "faceaudit.api",
    "check_model": "faceaudit.api",
    "ModelContract": "faceaudit.seams.contract",
    "load_contract": "faceaudit.seams.contract",
    "train": "faceaudit.api",
    "ensemble": "faceaudit.api",
    "mitigate": "faceaudit.api",
    "predict": "faceaudit.api",
    "load_dataset": "faceaudit.api",
    "PredictionsTable": "faceaudit.seams.predictions",
    "LabelSchema": "faceaudit.taxonomy",
    "Attribute": "faceaudit.taxonomy",
    "AgeBands": "faceaudit.taxonomy",
    "UTKFACE": "faceaudit.taxonomy",
    "FAIRFACE7": "faceaudit.taxonomy",
    "FAIRFACE4": "faceaudit.taxonomy",
    "FaceauditError": "faceaudit.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'faceaudit' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    value = module if _PUBLIC[name] == f"faceaudit.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
