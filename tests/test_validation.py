"""One validation layer for the Python API and the command line (:mod:`faceaudit.validation`).

The same bad value is refused by ``faceaudit.audit(...)`` with an :class:`InvalidParameterError` (a ValueError and a
TypeError) and by ``faceaudit audit`` with exit code 2 and one line, and both say the same sentence; nothing is
rounded (``seed=1.5`` is refused, not run as 1). The public functions take explicit keyword-only arguments, and a
name means one thing (and has one default) in all of them.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from numbers import Integral, Real

import numpy as np
import pytest
import simulated

import faceaudit
from faceaudit import api
from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.validation import (
    PARAMETERS,
    Interval,
    InvalidParameterError,
    Options,
    PathLike,
    check,
    cli_type,
    validate_params,
)

FAST = {"n_boot": 0, "tsne": False}

#: (API keyword arguments, the same values as command-line options, what the message says)
BAD = [
    ({"seed": 1.5}, ["--seed", "1.5"], "seed must be a whole number in [0, 4294967295] (got 1.5)"),
    ({"seed": "abc"}, ["--seed", "abc"], "seed must be a whole number in [0, 4294967295] (got 'abc')"),
    ({"ci": 1.0}, ["--ci", "1.0"], "ci must be a number in (0, 1), e.g. 0.95 (got 1.0)"),
    ({"ci": 0}, ["--ci", "0"], "ci must be a number in (0, 1), e.g. 0.95 (got 0)"),
    ({"n_boot": -1}, ["--n-boot", "-1"], "n_boot must be a whole number, at least 0 (got -1)"),
    ({"n_boot": 2.5}, ["--n-boot", "2.5"], "n_boot must be a whole number, at least 0 (got 2.5)"),
    ({"min_group_size": 0}, ["--min-group-size", "0"], "min_group_size must be a whole number, at least 1 (got 0)"),
    ({"inconclusive": "maybe"}, ["--inconclusive", "maybe"],
     "inconclusive must be one of 'pass', 'fail' (got 'maybe')"),
    ({"engine": "spark"}, ["--engine", "spark"], "engine must be one of 'local', 'ray' (got 'spark')"),
    ({"workers": 0}, ["--workers", "0"], "workers must be a whole number, at least 1 (got 0)"),
    ({"id_col": " "}, ["--id-col", " "], "id_col must be a non-empty string (got ' ')"),
]


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """A 600-image simulated UTKFace race classifier's predictions, as a DataFrame and as a CSV file."""
    frame = simulated.utkface(600)
    csv = tmp_path_factory.mktemp("validation") / "preds.csv"
    frame.to_csv(csv, index=False)
    return frame, csv


@pytest.mark.parametrize("kwargs, argv, message", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_api_and_cli_refuse_the_same_values_with_the_same_sentence(kwargs, argv, message, predictions, tmp_path,
                                                                     capsys):
    frame, csv = predictions
    with pytest.raises(InvalidParameterError) as caught:
        faceaudit.audit(frame, **kwargs)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TypeError)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    out = tmp_path / "audit"
    assert main(["audit", "--predictions", str(csv), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    option = argv[0]
    name = option.lstrip("-").replace("-", "_")
    assert len(err) == 1 and err[0].startswith(f"faceaudit: error: {option} "), err
    # the sentence after the name is the API's, word for word
    assert err[0].removeprefix(f"faceaudit: error: {option}") == str(caught.value).removeprefix(name)
    assert not out.exists()


def test_good_values_pass_both_ways(predictions, tmp_path, capsys):
    """The control: the same options with accepted values audit (the refusals above are the values, not the
    options)."""
    frame, csv = predictions
    result = faceaudit.audit(frame, seed=np.int64(7), ci=np.float32(0.9), n_boot=0, tsne=False, inconclusive="pass",
                             min_group_size=5)
    assert result.settings["seed"] == 7 and type(result.settings["seed"]) is int
    assert result.settings["ci"] == pytest.approx(0.9)
    out = tmp_path / "audit"
    code = main(["audit", "--predictions", str(csv), "--out", str(out), "--seed", "7", "--ci", "0.9", "--n-boot",
                 "0", "--no-tsne", "--no-report", "--inconclusive", "pass", "--min-group-size", "5"])
    assert code == 0, capsys.readouterr().err
    assert (out / "audit.json").is_file()


@pytest.mark.parametrize("kwargs, kind", [
    ({"tsne": "yes"}, "tsne must be True or False (got 'yes')"),
    ({"temperature": 1}, "temperature must be True or False (got 1)"),
    ({"seed": True}, "seed must be a whole number"),
    ({"n_boot": 10.0}, "n_boot must be a whole number"),
    ({"ci": "0.95"}, "ci must be a number in (0, 1)"),
    ({"model_info": 3}, "model_info must be a dict or a name (got 3)"),
])
def test_wrong_types_are_type_errors(kwargs, kind, predictions):
    frame, _ = predictions
    with pytest.raises(TypeError) as caught:
        faceaudit.audit(frame, **{**FAST, **kwargs})
    assert isinstance(caught.value, InvalidParameterError)
    assert str(caught.value).startswith(kind)


def test_model_functions_refuse_before_loading_anything(tmp_path):
    """Arguments are checked before a model, dataset or TensorFlow is touched (the paths here do not exist)."""
    absent = tmp_path / "absent.keras"
    cases = [
        (lambda: api.audit_model(absent, tmp_path, ci=1.0), "ci must be"),
        (lambda: api.audit_model(absent, tmp_path, preprocess="bgr"), "preprocess must be one of"),
        (lambda: api.audit_heads(absent, tmp_path, contract="model.toml", seed=-3), "seed must be"),
        (lambda: api.check_model(absent, tmp_path, contract="model.toml", n=10),
         "n must be a whole number, at least 20 (got 10)"),
        (lambda: api.predict(absent, tmp_path, shard_size=0), "shard_size must be a whole number, at least 1"),
        (lambda: api.train(tmp_path, tmp_path / "run", lr=0), "lr must be a number, above 0 (got 0)"),
        (lambda: api.ensemble([absent, absent], tmp_path, combine="vote"), "combine must be one of"),
        (lambda: api.mitigate(absent, tmp_path, max_accuracy_drop=1.5), "max_accuracy_drop must be a number in [0, 1)"),
        (lambda: api.load_dataset(tmp_path, seed=2.0), "seed must be a whole number"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidParameterError) as caught:
            call()
        assert str(caught.value).startswith(message), (message, str(caught.value))


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "x", "--out", "y", "--lr", "0"], "--lr must be a number, above 0 (got 0)"),
    (["train", "--data", "x", "--out", "y", "--epochs", "2.5"], "--epochs must be a whole number, at least 0"),
    (["train", "--data", "x", "--out", "y", "--strategy", "tpu"], "--strategy must be one of"),
    (["mitigate", "run", "--out", "y", "--method", "fair"], "--method must be one of 'equal-recall'"),
    (["predict", "model.keras", "--shard-size", "0"], "--shard-size must be a whole number, at least 1 (got 0)"),
    (["audit", "model.keras", "--preprocess", "bgr"], "--preprocess must be one of 'raw'"),
    (["audit", "model.keras", "--check-size", "5"], "--check-size must be a whole number, at least 20 (got 5)"),
    (["demo", "--seed", "-1"], "--seed must be a whole number in [0, 4294967295] (got -1)"),
])
def test_every_command_refuses_in_one_line_with_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"faceaudit: error: {message}"] or (len(err) == 1 and err[0].startswith(
        f"faceaudit: error: {message}")), err
    assert list(tmp_path.iterdir()) == []


def test_errors_are_value_and_type_errors():
    assert issubclass(FaceauditError, ValueError)
    assert issubclass(InvalidParameterError, FaceauditError) and issubclass(InvalidParameterError, TypeError)


def test_faceaudit_audit_is_a_plain_function_and_the_package_is_auditing():
    assert isinstance(faceaudit.audit, types.FunctionType)
    assert faceaudit.audit.__module__ == "faceaudit.auditing.api"
    auditing = importlib.import_module("faceaudit.auditing")
    assert type(auditing) is types.ModuleType  # no module-class swap
    assert auditing.audit is faceaudit.audit
    assert not callable(sys.modules["faceaudit.auditing"])


PUBLIC_FUNCTIONS = ("audit", "audit_model", "audit_heads", "check_model", "predict", "train", "ensemble",
                    "mitigate", "load_dataset")


def test_public_functions_take_explicit_keyword_only_arguments():
    """No ``**options``: each function lists what it takes; past the leading inputs everything is keyword-only."""
    leading = {"audit": ["predictions"], "audit_model": ["model", "data"], "audit_heads": ["model", "data"],
               "check_model": ["model", "data"], "predict": ["model", "data", "out"], "train": ["data", "out"],
               "ensemble": ["runs", "out"], "mitigate": ["run", "out"], "load_dataset": ["source"]}
    for name in PUBLIC_FUNCTIONS:
        params = inspect.signature(getattr(faceaudit, name)).parameters.values()
        kinds = {p.kind for p in params}
        assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds, name
        positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert positional == leading[name], name


def test_a_name_means_one_thing_with_one_default():
    """Every parameter name shared by two public functions has one default; ``model`` and ``data`` are the model
    and the data everywhere (audit's metadata blocks are ``model_info`` and ``data_info``)."""
    defaults: dict[str, dict] = {}
    for name in PUBLIC_FUNCTIONS:
        for p in inspect.signature(getattr(faceaudit, name)).parameters.values():
            if p.default is not inspect.Parameter.empty:
                defaults.setdefault(p.name, {})[name] = p.default
    for param, by_function in defaults.items():
        if param in ("data", "out"):  # required in some, optional (default $FACEAUDIT_DATA, a folder) in others
            continue
        if param == "progress":  # a library call is quiet by default; train, ensemble and mitigate take minutes
            assert set(by_function.values()) <= {True, False}
            continue
        assert len({repr(v) for v in by_function.values()}) == 1, (param, by_function)
    audit_params = inspect.signature(faceaudit.audit).parameters
    assert "model" not in audit_params and "data" not in audit_params
    assert {"model_info", "data_info"} <= set(audit_params)
    for name in ("audit_model", "audit_heads", "check_model", "predict"):
        assert list(inspect.signature(getattr(faceaudit, name)).parameters)[:2] == ["model", "data"]


def test_train_arguments_are_the_train_config_fields():
    """``faceaudit.train``'s keywords are TrainConfig's fields, with the same defaults (``data`` may also be a
    loaded dataset, which replaces TrainConfig's ``dataset``)."""
    from dataclasses import MISSING, fields

    from faceaudit.training.config import TrainConfig

    params = inspect.signature(api.train).parameters
    config = {f.name: f.default for f in fields(TrainConfig) if f.name not in ("dataset",)}
    assert set(params) == set(config)
    for name, default in config.items():
        if name in ("data", "out", "schema", "age_bands"):  # paths; None: TrainConfig's preset and default bands
            continue
        assert default is not MISSING and params[name].default == default, name


def test_declarations():
    """The constraint types on their own: ends of intervals, choices, paths, the command line's parsing."""
    open_unit = Interval(Real, 0, 1, closed="neither")
    assert [open_unit.accepts(v) for v in (0, 0.5, 1, float("nan"), True)] == [False, True, False, False, False]
    closed_left = Interval(Integral, 0, 10, closed="left")
    assert [closed_left.accepts(v) for v in (0, 10, 9, np.int32(3), 3.0)] == [True, False, True, True, False]
    assert Options(("a", "b")).accepts("a") and not Options(("a", "b")).accepts("c")
    assert check("x", None, [Interval(Integral, 1, None), None]) is None
    with pytest.raises(InvalidParameterError, match=r"x must be an existing file \(got "):
        check("x", "/nonexistent/file.csv", PathLike(kind="file"))
    assert check("x", __file__, PathLike(kind="file")) == __file__
    assert cli_type("--n-boot")("12") == 12 and cli_type("--ci")("0.9") == 0.9
    assert set(PARAMETERS) >= {"ci", "n_boot", "seed", "inconclusive", "engine", "workers", "batch_size"}

    @validate_params(k=Interval(Integral, 2, None))
    def pick(k, *, seed=0):
        return k, seed

    assert pick(3, seed=5) == (3, 5)
    with pytest.raises(InvalidParameterError, match="k must be a whole number, at least 2"):
        pick(1)
    with pytest.raises(InvalidParameterError, match="seed must be"):
        pick(3, seed=-1)
    with pytest.raises(TypeError, match="has no parameter"):
        validate_params(missing=Interval(Integral, 0, None))(pick)
