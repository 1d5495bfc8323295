"""faceaudit's version, in the core layer so that every layer can stamp its files without importing the public API
(``faceaudit/__init__.py``, which re-exports it as ``faceaudit.__version__``)."""

__version__ = "0.1.0"
