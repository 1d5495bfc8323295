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

from faceaudit.version import __version__

# From a source checkout the designed top-level folders (audit/, datasets/, models/, training/, templates/) sit
# beside this package; installed, setuptools maps them into it (audit/ as ``faceaudit.auditing``: ``faceaudit.audit`` is the
# one-call function). In a checkout a small finder maps exactly those folders, so ``faceaudit.auditing`` and its
# siblings import the same way from the repository root as from an installed package.
_ROOT = Path(__file__).resolve().parent.parent
#: Import name under ``faceaudit`` -> the checkout folder it lives in.
_FOLDERS = {"auditing": "audit", "datasets": "datasets", "models": "models", "training": "training",
            "templates": "templates"}


class _CheckoutFolders(importlib.abc.MetaPathFinder):
    """Finds ``faceaudit.<name>`` at ``<checkout>/<folder>`` for the designed folders, and nothing else."""

    def find_spec(self, name, path=None, target=None):
        prefix, _, package = name.partition(".")
        if prefix != "faceaudit" or package not in _FOLDERS:
            return None
        init = _ROOT / _FOLDERS[package] / "__init__.py"
        return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])


if not (Path(__file__).parent / "auditing").is_dir() and (_ROOT / "audit" / "__init__.py").is_file():
    import sys

    if not any(isinstance(finder, _CheckoutFolders) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutFolders())

# The audit layer hands rendering up through this slot instead of importing the report layer (both light here).
from faceaudit import hooks as _hooks  # noqa: E402
from faceaudit import presenting as _presenting  # noqa: E402

_hooks.presenter = _presenting

#: Public name -> module that defines it (imported on first access).
_PUBLIC = {
    "audit": "faceaudit.auditing.api",
    "AuditResult": "faceaudit.auditing.result",
    "load_audit": "faceaudit.auditing.result",
    "report": "faceaudit.presenting",
    "compare": "faceaudit.auditing.comparison",
    "diff": "faceaudit.auditing.comparison",
    "Comparison": "faceaudit.auditing.comparison",
    "Diff": "faceaudit.auditing.comparison",
    "Verdict": "faceaudit.auditing.verdict",
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
    "log_to_mlflow": "faceaudit.tracking",
    "PredictionsTable": "faceaudit.seams.predictions",
    "LabelSchema": "faceaudit.taxonomy",
    "Attribute": "faceaudit.taxonomy",
    "AgeBands": "faceaudit.taxonomy",
    "UTKFACE": "faceaudit.taxonomy",
    "FAIRFACE7": "faceaudit.taxonomy",
    "FAIRFACE4": "faceaudit.taxonomy",
    "FaceauditError": "faceaudit.errors",
    "InvalidParameterError": "faceaudit.validation",
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
