"""Numbers as a reviewer reads them: percentages with their interval, never a bare point estimate."""

from __future__ import annotations


def _get(stat: dict | None, key: str):
    return None if not stat else stat.get(key)


def pct(value: float | None, digits: int = 1) -> str:
    """``0.8312`` -> ``83.1%``; missing -> an en dash."""
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def fmt_stat(stat: dict | None, *, percent: bool = True, digits: int | None = None, signed: bool = False) -> str:
    """``{"value": .83, "ci": [.81, .85]}`` -> ``83.0% [81.0, 85.0]`` (or plain numbers with ``percent=False``)."""
    value = _get(stat, "value")
    if value is None:
        return "–"
    ci = _get(stat, "ci")
    scale, default_digits, unit = (100, 1, "%") if percent else (1, 3, "")
    d = default_digits if digits is None else digits
    sign = "+" if signed else ""
    text = f"{scale * value:{sign}.{d}f}{unit}"
    if ci:
        text += f" [{scale * ci[0]:{sign}.{d}f}, {scale * ci[1]:{sign}.{d}f}]"
    return text


def points(stat: dict | None, digits: int = 1) -> str:
    """A difference of proportions in percentage points: ``-0.081`` -> ``-8.1 pts [-10.1, -6.2]``."""
    value = _get(stat, "value")
    if value is None:
        return "–"
    ci = _get(stat, "ci")
    text = f"{100 * value:+.{digits}f} pts"
    if ci:
        text += f" [{100 * ci[0]:+.{digits}f}, {100 * ci[1]:+.{digits}f}]"
    return text


def excludes_zero(stat: dict | None) -> bool:
    """Whether a difference's interval lies wholly on one side of zero."""
    ci = _get(stat, "ci")
    return bool(ci) and (ci[0] > 0 or ci[1] < 0)


def group_label(key: str) -> str:
    """A grouping or group key for display (``race×gender`` -> ``race × gender``)."""
    return key.replace("×", " × ").replace("  ", " ").replace("_", " ")
