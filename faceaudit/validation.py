"""Declared parameter constraints, checked the same way by the Python API and the command line.

In the spirit of scikit-learn's ``validate_params``: a parameter's type, range or choices are declared once, as data
(:class:`Interval`, :class:`Options`, :class:`Text`, :class:`Boolean`, :class:`PathLike`, or a list of them meaning
"any of"), and :data:`PARAMETERS` gives every shared parameter name its one meaning. :func:`validate_params` checks a
public function's arguments against it; :func:`cli_type` turns the same declaration into an argparse ``type=`` so
``faceaudit audit --seed 1.5`` and ``faceaudit.audit(frame, seed=1.5)`` are refused with the same sentence.
A refusal is an :class:`InvalidParameterError`: a :class:`~faceaudit.errors.FaceauditError` (so a ``ValueError``)
and a ``TypeError``, one line on the command line with exit code 2.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Iterable
from numbers import Integral, Number, Real
from pathlib import Path, PurePath
from typing import Any

from faceaudit.errors import FaceauditError


class InvalidParameterError(FaceauditError, TypeError):
    """An argument of the wrong type, outside its range or not among its choices (a ValueError and a TypeError,
    as scikit-learn's)."""


class CommandLineRefusal(Exception):
    """An option value refused by its declared constraint while argparse parses. Not a ValueError, because argparse
    would replace the message of one with its own ("invalid int value") and print its usage; ``faceaudit``'s main
    prints this one line and exits 2, as for any :class:`~faceaudit.errors.FaceauditError`."""

    exit_code = 2


class Constraint:
    """One rule a value must follow: :meth:`accepts` says whether it does, :meth:`describe` says the rule in a few
    words ("a whole number, at least 1"), :meth:`parse` reads a command-line string into the value to check."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        return text


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool without importing numpy


def _number(text: str) -> Any:
    """A command-line number as the API would receive it: ``"3"`` an int, ``"1.5"`` a float, else the text."""
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Interval(Constraint):
    """A number of ``kind`` (``Integral``: a whole number, never a float such as 1.5 nor a bool; ``Real``: any
    finite number but a bool) between ``left`` and ``right`` (None: unbounded); ``closed`` says which ends belong
    ("both", "left", "right", "neither")."""

    def __init__(self, kind: type, left: float | None, right: float | None, *, closed: str = "both",
                 hint: str = "") -> None:
        if kind not in (Integral, Real):
            raise TypeError("Interval kind must be numbers.Integral or numbers.Real")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both, left, right or neither, not {closed!r}")
        self.kind, self.left, self.right, self.closed, self.hint = kind, left, right, closed, hint

    def accepts(self, value: Any) -> bool:
        if _is_bool(value) or not isinstance(value, self.kind):
            return False
        if self.kind is Real and not math.isfinite(float(value)):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def describe(self) -> str:
        what = "a whole number" if self.kind is Integral else "a number"
        left_in, right_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.left is not None and self.right is not None:
            text = f"{what} in {'[' if left_in else '('}{self.left}, {self.right}{']' if right_in else ')'}"
        elif self.left is not None:
            text = f"{what}, {'at least' if left_in else 'above'} {self.left}"
        elif self.right is not None:
            text = f"{what}, {'at most' if right_in else 'below'} {self.right}"
        else:
            text = what
        return f"{text}, {self.hint}" if self.hint else text

    def parse(self, text: str) -> Any:
        return _number(text)


class Options(Constraint):
    """One of a few strings, in the order they are listed."""

    def __init__(self, choices: Iterable[str]) -> None:
        self.choices = tuple(choices)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.choices

    def describe(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


class Text(Constraint):
    """A non-empty string (a column name, a layer name, a prefix)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def describe(self) -> str:
        return "a non-empty string"


class Boolean(Constraint):
    """True or False (numpy's bools too, never 0/1 or a string)."""

    def accepts(self, value: Any) -> bool:
        return _is_bool(value)

    def describe(self) -> str:
        return "True or False"


class PathLike(Constraint):
    """A path (``str`` or ``os.PathLike``); with ``exists`` one that is there, with ``kind`` "file" or "dir" one of
    that kind."""

    def __init__(self, *, exists: bool = False, kind: str | None = None) -> None:
        if kind not in (None, "file", "dir"):
            raise ValueError(f"kind must be None, 'file' or 'dir', not {kind!r}")
        self.exists, self.kind = exists or kind is not None, kind

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            return False
        path = Path(value)
        if self.kind == "file":
            return path.is_file()
        if self.kind == "dir":
            return path.is_dir()
        return path.exists() if self.exists else True

    def describe(self) -> str:
        if self.kind == "file":
            return "an existing file"
        if self.kind == "dir":
            return "an existing folder"
        return "an existing path" if self.exists else "a path (str or pathlib.Path)"

    def parse(self, text: str) -> Any:
        return Path(text)


class InstanceOf(Constraint):
    """An instance of one of ``types`` (named ``name`` in messages)."""

    def __init__(self, *types: type, name: str) -> None:
        self.types, self.name = types, name

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.types)

    def describe(self) -> str:
        return self.name


#: A declaration: one constraint, or a list of them (any may hold; ``None`` in the list allows None).
Spec = Constraint | list


def describe(spec: Spec) -> str:
    """The rule of a declaration in words ("None or a whole number, at least 1")."""
    if not isinstance(spec, list):
        return spec.describe()
    words = (["None"] if None in spec else []) + [c.describe() for c in spec if c is not None]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def check(name: str, value: Any, spec: Spec) -> Any:
    """``value`` when it follows ``spec``; else an :class:`InvalidParameterError` naming ``name``, the rule and
    the value, in one line."""
    constraints = spec if isinstance(spec, list) else [spec]
    if value is None and None in constraints:
        return value
    if any(c is not None and c.accepts(value) for c in constraints):
        return value
    shown = repr(value) if isinstance(value, (str, Number, PurePath)) else type(value).__name__
    # None (where allowed) is each such parameter's default, so the sentence names the rule a value must follow:
    # the same words whether the value came from Python or from a command line, which cannot pass None.
    rule = describe([c for c in constraints if c is not None])
    raise InvalidParameterError(f"{name} must be {rule} (got {shown})")


SEED = Interval(Integral, 0, 2**32 - 1)
CHOICES = {
    "inconclusive": ("pass", "fail"),
    "engine": ("local", "ray"),
    "preprocess": ("raw", "0-1", "-1-1", "caffe", "torch"),
    "embedding_source": ("file", "model"),
}

#: Every parameter name shared by the public functions and the command line, with its one meaning. A function
#: decorated with :func:`validate_params` checks each of its parameters named here.
PARAMETERS: dict[str, Spec] = {
    "ci": Interval(Real, 0, 1, closed="neither", hint="e.g. 0.95"),
    # compare/diff: the family-wise level of the paired tests, and the excess-loss bound (a share of the images)
    "level": Interval(Real, 0.5, 1, closed="left", hint="e.g. 0.95"),
    "max_excess_loss": [Interval(Real, 0, 1, closed="left", hint="a share: 0.01 = 1 point"), None],
    "fail_on_worse": Boolean(),
    # audit: refuse an audit without gates (``--require-gates``, $FACEAUDIT_REQUIRE_GATES)
    "require_gates": Boolean(),
    "n_boot": Interval(Integral, 0, None),
    "seed": SEED,
    "min_group_size": [Interval(Integral, 1, None), None],
    "min_test_size": Interval(Integral, 0, None),
    "inconclusive": Options(CHOICES["inconclusive"]),
    "engine": Options(CHOICES["engine"]),
    "workers": [Interval(Integral, 1, None), None],
    "batch_size": Interval(Integral, 1, None),
    "shard_size": Interval(Integral, 1, None),
    "input_size": [Interval(Integral, 1, None), None],
    "preprocess": [Options(CHOICES["preprocess"]), None],
    "embedding_source": Options(CHOICES["embedding_source"]),
    "check_size": Interval(Integral, 20, None),
    "tsne": Boolean(),
    "temperature": Boolean(),
    "progress": Boolean(),
    "allow_overlap": Boolean(),
    "bgr": Boolean(),
    "id_col": Text(),
    "prob_prefix": Text(),
    "target": [Text(), None],
    "output_layer": [Text(), None],
    "embedding_layer": [Text(), None],
    "out": [PathLike(), None],
    "dataset_options": [InstanceOf(dict, name="a dict"), None],
    "model_info": [InstanceOf(dict, str, name="a dict or a name"), None],
    "data_info": [InstanceOf(dict, name="a dict"), None],
}


def validate_params(func: Callable | None = None, /, **extra: Spec) -> Callable:
    """Decorate a public function so that each call checks its arguments: those named in :data:`PARAMETERS`
    against their shared meaning, and ``extra`` (this function's own) against theirs. Refusals raise
    :class:`InvalidParameterError` before the function runs.

    >>> @validate_params(n=Interval(Integral, 20, None))      # doctest: +SKIP
    ... def check_model(model, *, n=200, seed=42): ...
    """

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)
        specs = {name: extra.get(name, PARAMETERS.get(name)) for name in signature.parameters}
        specs = {name: spec for name, spec in specs.items() if spec is not None}
        unknown = set(extra) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{function.__qualname__} has no parameter {', '.join(sorted(unknown))}")

        @functools.wraps(function)
        def checked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            for name, value in bound.arguments.items():
                if name in specs:
                    check(name, value, specs[name])
            return function(*args, **kwargs)

        checked.__signature__ = signature
        checked.constraints = specs  # what the command line's options of the same names declare (cli_type(of=))
        return checked

    return decorate if func is None else decorate(func)


def cli_type(option: str, spec: Spec | None = None, *, of: Callable | None = None) -> Callable[[str], Any]:
    """An argparse ``type=`` for ``option`` (``"--n-boot"``) that parses and checks its value against ``spec``
    (default: what the function ``of``, decorated with :func:`validate_params`, declares for the parameter the
    option spells, else :data:`PARAMETERS`'s), refusing with the API's sentence under the option's name."""
    name = option.lstrip("-").replace("-", "_")
    if spec is None:
        spec = of.constraints[name] if of is not None else PARAMETERS[name]
    constraints = [c for c in (spec if isinstance(spec, list) else [spec]) if c is not None]  # no None on a command line
    parser = constraints[0]

    def parse(text: str) -> Any:
        try:
            return check(option, parser.parse(text), constraints)
        except InvalidParameterError as exc:
            raise CommandLineRefusal(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its own messages
    return parse


def metavar(name: str) -> str:
    """``{a,b,c}`` for a parameter with choices, as argparse shows ``choices=``."""
    return "{" + ",".join(CHOICES[name]) + "}"
