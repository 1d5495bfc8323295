"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class FaceauditError(ValueError):
    """A problem with the user's input or environment, explained in one line (no traceback). A ``ValueError``, so
    callers of the Python API catch it as they would any bad value; :class:`faceaudit.validation.InvalidParameterError`
    (an argument of the wrong type or range) is also a ``TypeError``."""

    exit_code = 2
