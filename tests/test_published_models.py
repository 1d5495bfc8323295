"""Auditing models other people published (../shared/models): contracts written from their repositories' code, run
on real UTKFace images the way a user runs them, and contracts that are wrong caught before anyone reads a number."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from commands import FACEAUDIT

CONTRACTS = Path(__file__).resolve().parent.parent / "docs" / "contracts"
FAST = ["--n-boot", "100", "--no-tsne"]

pytestmark = pytest.mark.slow

#: The share of each race x gender stratum of an archive that the audits here run on: a fifth of the 64 px archive
#: is 4,270 real faces, 426 in its test split (bench/bench_published.py audits the whole archives).
SAMPLE_SHARE = 0.2
#: UTKFace's file names: ``[age]_[gender]_[race]_[date&time].jpg(.chip.jpg)``.
_UTK_NAME = re.compile(r"^\d{1,3}_([01])_([0-4])_\d+\.jpg")


def _stratified_copy(paths: dict[tuple, list[Path]], folder: Path) -> Path:
    """Copy :data:`SAMPLE_SHARE` of each stratum's files (picked with a fixed seed) into ``folder``."""
    rng = random.Random(0)
    folder.mkdir()
    for key in sorted(paths):
        group = sorted(paths[key])
        for path in rng.sample(group, round(SAMPLE_SHARE * len(group))):
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def utk64_sample(utk64_dataset, tmp_path_factory) -> tuple[Path, int]:
    """A folder of real faces from the 64 px archive (:data:`SAMPLE_SHARE` of every race x gender stratum) and the
    size of the test split faceaudit draws from it: the audits below run on it as a user runs a UTKFace folder."""
    from faceaudit.datasets.splits import assign_splits

    manifest = utk64_dataset.manifest
    strata = {key: [Path(p) for p in group["path"]]
              for key, group in manifest.groupby(["race", "gender"], observed=True)}
    folder = _stratified_copy(strata, tmp_path_factory.mktemp("utk64_sample") / "UTKFace")
    chosen = manifest[manifest["path"].map(lambda p: (folder / Path(p).name).exists())]
    n_test = int((assign_splits(chosen.assign(image_id=chosen["path"].map(lambda p: Path(p).name))) == "test").sum())
    return folder, n_test


@pytest.fixture(scope="module")
def utk200_sample(utk200_archive, tmp_path_factory) -> Path:
    """The same share of the 200 px archive's race x gender strata (read from the file names), as a folder."""
    from faceaudit.datasets.sources import list_images

    strata: dict[tuple, list[Path]] = {}
    for path in list_images(utk200_archive)[1]:
        found = _UTK_NAME.match(path.name)
        if found:
            strata.setdefault(found.groups(), []).append(path)
    return _stratified_copy(strata, tmp_path_factory.mktemp("utk200_sample") / "crop_part1")


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*FACEAUDIT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _model(folder: Path, stem: str) -> Path:
    return next(folder.glob(f"{stem}*"))


def _audit(folder: Path) -> dict:
    return json.loads((folder / "audit.json").read_text())


def _write_contract(path: Path, base: str, **changes) -> Path:
    """A copy of a shipped contract with ``section.key`` values changed (TOML text, written back by hand)."""
    text = (CONTRACTS / f"{base}.toml").read_text()
    for key, value in changes.items():
        section, name = key.split("__")
        lines = text.splitlines()
        start = lines.index(f"[{section}]") if f"[{section}]" in lines else lines.index(f"[[{section}]]")
        for i in range(start + 1, len(lines)):
            if lines[i].startswith(f"{name} ="):
                lines[i] = f"{name} = {value}"
                break
        else:
            lines.insert(start + 1, f"{name} = {value}")
        text = "\n".join(lines) + "\n"
    path.write_text(text)
    return path


def test_the_outside_gender_model_audits_by_race_and_age_band(published_models, utk64_sample, tmp_path):
    """oarriaga's gender_mini_XCEPTION (64 px grayscale, [-1, 1], softmax [woman, man], trained on IMDB-WIKI):
    the contract maps its classes, the audit groups by race x age band, the report and audit.json record it."""
    data, n_test = utk64_sample
    out = tmp_path / "oarriaga"
    proc = _run("audit", _model(published_models, "oarriaga"), "--contract",
                CONTRACTS / "oarriaga-gender_mini_XCEPTION.toml", "--data", data, "--groups", "race,age_band",
                "--out", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    audit = _audit(out)
    assert audit["label_schema"]["target"] == "gender"
    assert set(audit["groupings"]) == {"race", "age_band", "race×age_band"}
    model = audit["model"]
    assert model["contract"]["input"]["channels"] == "grayscale" and model["runtime"]["input_size"] == 64
    assert model["contract"]["outputs"][0]["map"] == {"woman": "Female", "man": "Male"}
    assert model["sanity"]["status"] == "ok" and not model["overlap"]["same_source"]
    assert any("woman -> Female" in step for step in model["steps"])
    accuracy = audit["overall"]["metrics"]["accuracy"]
    # every image of the data's test split; an outside model: far below its IMDB 0.95
    assert accuracy["n"] == n_test and 0.5 < accuracy["value"] < 0.75
    assert "faceaudit: note: gender: classes mapped woman -> Female, man -> Male" in proc.stderr
    html = (out / "report.html").read_text()
    assert "oarriaga/face_classification" in html and "IMDB-WIKI" in html and "CONTRACT LOOKS WRONG" not in html
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


def test_the_same_model_with_the_issues_flags_as_written(published_models, utk64_sample, tmp_path):
    """Without a contract: ``--preprocess -1-1`` as written (not ``=-1-1``) and a grayscale input converted
    from RGB, with the same predictions as the contract gives."""
    data = utk64_sample[0]
    flags = tmp_path / "flags"
    proc = _run("audit", _model(published_models, "oarriaga"), "--data", data, "--target", "gender",
                "--classes", "Female,Male", "--preprocess", "-1-1", "--out", flags, "--no-report", *FAST)
    assert proc.returncode == 0, proc.stderr
    contract = tmp_path / "contract"
    assert _run("audit", _model(published_models, "oarriaga"), "--contract",
                CONTRACTS / "oarriaga-gender_mini_XCEPTION.toml", "--data", data, "--out", contract,
                "--no-report", "--no-temperature", *FAST).returncode == 0
    import pandas as pd

    # --target gender stratifies the split by gender; the contract keeps the data set's own split: compare the
    # images both test splits hold.
    a = pd.read_csv(flags / "predictions.csv").set_index("image_id")
    b = pd.read_csv(contract / "predictions.csv").set_index("image_id")
    both = a.index.intersection(b.index)
    assert len(both) > 100
    assert np.abs(a.loc[both, "prob_Female"].to_numpy() - b.loc[both, "prob_Female"].to_numpy()).max() < 1e-5
    assert _audit(flags)["model"]["runtime"]["channels"].startswith("grayscale")


def test_the_48px_sigmoid_gender_model_fed_as_trained_and_as_its_own_script_feeds_it(published_models, utk64_sample,
                                                                                     jovanovic_gender_audit, tmp_path):
    """jovanovic's gender model was trained on raw 0-255 pixels; its repository's inference script divides by 255.
    Raw: no warning. /255: the contract check fires, loudly, in the console, audit.json and the verdict."""
    data = utk64_sample[0]
    model = _model(published_models, "jovanovic-gender")
    good, proc = jovanovic_gender_audit
    assert proc.returncode == 0, proc.stderr
    audit = _audit(good)
    assert audit["model"]["sanity"]["status"] == "ok", audit["model"]["sanity"]
    assert audit["overall"]["metrics"]["accuracy"]["value"] > 0.85
    assert audit["model"]["overlap"]["same_source"] and "TRAINED ON THIS DATA SET" in proc.stdout
    assert "CONTRACT LOOKS WRONG" not in proc.stdout + proc.stderr

    scaled = _write_contract(tmp_path / "divided.toml", "jovanovic-gender_model", input__scaling='"0-1"',
                             model__sha256='"' + _sha(model) + '"')
    bad = tmp_path / "divided"
    proc = _run("audit", model, "--contract", scaled, "--data", data, "--out", bad, *FAST)
    assert proc.returncode == 0, proc.stderr
    audit = _audit(bad)
    assert audit["model"]["sanity"]["status"] == "suspect"
    assert {c["check"] for c in audit["model"]["sanity"]["checks"]} & {"collapsed", "constant", "majority"}
    assert "CONTRACT LOOKS WRONG" in proc.stdout and "scaling" in proc.stdout
    assert "CONTRACT LOOKS WRONG" in (bad / "report.html").read_text()
    assert "CONTRACT LOOKS WRONG" in (bad / "summary.md").read_text()

    # --check answers the same question from 200 images, in seconds, writing nothing.
    quick = _run("audit", model, "--contract", scaled, "--data", data, "--check", "--out", tmp_path / "x")
    assert quick.returncode == 1 and "CONTRACT LOOKS WRONG" in quick.stdout
    assert not (tmp_path / "x").exists()
    assert _run("audit", model, "--contract", CONTRACTS / "jovanovic-gender_model.toml", "--data", data,
                "--check").returncode == 0


@pytest.fixture(scope="module")
def jovanovic_gender_audit(published_models, utk64_sample, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """jovanovic's gender model audited through its shipped contract on the sample (no report), once: the 48 px test
    reads its console and verdict, the two-headed model's gender head must give its numbers. (folder, process)"""
    out = tmp_path_factory.mktemp("jovanovic-gender") / "raw"
    proc = _run("audit", _model(published_models, "jovanovic-gender"), "--contract",
                CONTRACTS / "jovanovic-gender_model.toml", "--data", utk64_sample[0], "--out", out, "--no-report", *FAST)
    return out, proc


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_quantised_128px_tflite_gender_model(published_models, utk200_sample, tmp_path):
    """shubham0204's dynamic-range quantised TFLite (128 px RGB, /255, [male, female]) on 200 px originals."""
    out = tmp_path / "tflite-gender"
    proc = _run("audit", _model(published_models, "shubham0204-model_gender"), "--contract",
                CONTRACTS / "shubham0204-model_gender_q.toml", "--data", utk200_sample, "--out", out,
                "--no-report", *FAST)
    assert proc.returncode == 0, proc.stderr
    audit = _audit(out)
    assert audit["model"]["runtime"]["format"] == "tflite" and audit["model"]["runtime"]["input_size"] == 128
    assert audit["overall"]["metrics"]["accuracy"]["value"] > 0.85 and audit["model"]["overlap"]["same_source"]


@pytest.mark.parametrize("stem, contract, sample", [
    ("jovanovic-age", "jovanovic-age_model", "utk64_sample"),
    ("shubham0204-model_lite_age", "shubham0204-model_lite_age_nonq", "utk200_sample")])
def test_age_regressors_are_audited_by_race_and_gender(published_models, stem, contract, sample, request, tmp_path):
    """Both published age regressors (48 px grayscale raw, linear years; 200 px RGB TFLite, age / 116): mean absolute
    error, bias and the share within 5 years, with intervals, by race and gender; no confusion matrices."""
    data = request.getfixturevalue(sample)
    out = tmp_path / stem
    proc = _run("audit", _model(published_models, stem), "--contract", CONTRACTS / f"{contract}.toml", "--data",
                data[0] if isinstance(data, tuple) else data, "--groups", "race,gender", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    audit = _audit(out)
    assert audit["label_schema"]["target"] == "age"
    overall = audit["overall"]["metrics"]
    assert 2 < overall["mae"]["value"] < 15 and overall["mae"]["ci"][0] < overall["mae"]["value"] < overall["mae"]["ci"][1]
    assert -10 < overall["bias"]["value"] < 10 and 0.2 < overall["within5"]["value"] < 0.9
    for group in audit["groupings"]["race"]["groups"]:
        for metric in ("mae", "bias", "within5"):
            lo, hi = group["metrics"][metric]["ci"]
            assert lo < hi
    assert audit["model"]["sanity"]["status"] == "ok" and audit["model"]["overlap"]["same_source"]
    html = (out / "report.html").read_text()
    assert "Confusion" not in html and "absolute error" in html.lower()


def test_a_two_headed_model_is_audited_per_head_from_one_command(published_models, utk64_sample, jovanovic_gender_audit,
                                                                 tmp_path):
    """A real multi-output model (both jovanovic models behind one 48 px input): one command, one inference pass,
    an audit folder per head, and the same numbers as each model audited alone."""
    import keras

    from faceaudit.models.keras_runtime import load_keras

    data = utk64_sample[0]
    gender = load_keras(_model(published_models, "jovanovic-gender"), "h5")
    age = load_keras(_model(published_models, "jovanovic-age"), "h5")
    image = keras.Input((48, 48, 1), name="face")
    both = keras.Model(image, [keras.layers.Identity(name="gender")(gender(image)),
                               keras.layers.Identity(name="age")(age(image))])
    model_file = tmp_path / "two_heads.keras"
    both.save(model_file)
    contract = tmp_path / "two_heads.toml"
    contract.write_text(
        '[input]\nsize = 48\nchannels = "grayscale"\nscaling = "raw"\n'
        '[[outputs]]\nname = "gender"\ntarget = "gender"\nkind = "sigmoid"\nclasses = ["Female", "Male"]\n'
        'positive = "Female"\n[[outputs]]\nname = "age"\ntarget = "age"\nkind = "regression"\n')
    out = tmp_path / "heads"
    proc = _run("audit", model_file, "--contract", contract, "--data", data, "--out", out, "--no-report",
                *FAST)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"gender", "age"}
    assert _audit(out / "age")["label_schema"]["target"] == "age"
    alone, proc = jovanovic_gender_audit  # the gender model audited alone, with the same options
    assert proc.returncode == 0, proc.stderr
    assert (_audit(out / "gender")["overall"]["metrics"]["accuracy"]
            == _audit(alone)["overall"]["metrics"]["accuracy"])


def test_an_nchw_onnx_export_runs_as_a_pytorch_export_would(published_models, utk64_sample, tmp_path):
    """The 48 px gender model converted to ONNX with an NCHW input (PyTorch's layout): the contract says so and
    the predictions equal the Keras model's."""
    import tensorflow as tf
    import tf2onnx

    from faceaudit.models.export import ONNX_OPSET
    from faceaudit.models.keras_runtime import load_keras

    data = utk64_sample[0]
    model = load_keras(_model(published_models, "jovanovic-gender"), "h5")
    spec = tf.TensorSpec((None, 1, 48, 48), tf.float32, name="face")

    @tf.function(input_signature=[spec])
    def serve(face):  # channels first, as torch.onnx.export writes it
        return {"p_female": model(tf.transpose(face, (0, 2, 3, 1)))}

    onnx_file = tmp_path / "gender_nchw.onnx"
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=ONNX_OPSET)
    onnx_file.write_bytes(proto.SerializeToString())
    contract = _write_contract(tmp_path / "nchw.toml", "jovanovic-gender_model", input__layout='"NCHW"',
                               model__sha256='"' + _sha(onnx_file) + '"')
    out = tmp_path / "onnx"
    proc = _run("audit", onnx_file, "--contract", contract, "--data", data, "--out", out, "--no-report",
                "--no-temperature", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert _audit(out)["model"]["runtime"]["layout"] == "NCHW"
    keras_out = tmp_path / "keras"
    assert _run("audit", _model(published_models, "jovanovic-gender"), "--contract",
                CONTRACTS / "jovanovic-gender_model.toml", "--data", data, "--out", keras_out, "--no-report",
                "--no-temperature", *FAST).returncode == 0
    import pandas as pd

    a = pd.read_csv(out / "predictions.csv")["prob_Female"].to_numpy()
    b = pd.read_csv(keras_out / "predictions.csv")["prob_Female"].to_numpy()
    assert np.abs(a - b).max() < 1e-4


def test_a_tflite_file_with_its_batch_fixed_to_one(published_models, utk64_archive, tmp_path):
    """Mobile apps ship TFLite files whose batch dimension is fixed to 1: run image by image, same predictions."""
    import keras
    import tensorflow as tf

    from faceaudit.console import native_noise_dropped
    from faceaudit.models.keras_runtime import load_keras
    from faceaudit.models.loading import load_runtime

    model = load_keras(_model(published_models, "jovanovic-gender"), "h5")
    face = keras.Input((48, 48, 1), batch_size=1)
    tflite = tmp_path / "gender_batch1.tflite"
    with native_noise_dropped():
        tflite.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(face, model(face))).convert())
    from faceaudit.seams.contract import load_contract

    contract = load_contract(_write_contract(tmp_path / "b1.toml", "jovanovic-gender_model",
                                             model__sha256='"' + _sha(tflite) + '"'))
    runtime = load_runtime(tflite, contract=contract)
    assert runtime.batch == 1
    images = np.random.default_rng(0).uniform(0, 255, (5, 48, 48, 3)).astype(np.float32)
    expected = load_runtime(_model(published_models, "jovanovic-gender"), contract=load_contract(
        CONTRACTS / "jovanovic-gender_model.toml")).predict_raw(images)[0][0]
    assert np.abs(runtime.predict_raw(images)[0][0] - expected).max() < 1e-5


BAD_CONTRACTS = [
    ({"input__colour": '"rgb"'}, "unknown key 'colour'"),
    ({"outputs__map": '{ woman = "Female", WOMAN = "Male", man = "Male" }'}, "maps class 'WOMAN' twice"),
    ({"outputs__map": '{ woman = "Femme", man = "Male" }'}, "'Femme' is not a label"),
    ({"outputs__classes": '["woman", "man", "child"]', "outputs__map": '{ woman = "Female", man = "Male" }'},
     "has 2 values per image"),
]


@pytest.mark.parametrize("changes, message", BAD_CONTRACTS)
def test_bad_contracts_are_refused_in_one_line_naming_the_field(published_models, utk_sample_dir, tmp_path, changes,
                                                               message):
    contract = _write_contract(tmp_path / "bad.toml", "oarriaga-gender_mini_XCEPTION", **changes)
    out = tmp_path / "out"
    proc = _run("audit", _model(published_models, "oarriaga"), "--contract", contract, "--data", utk_sample_dir,
                "--out", out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists()


def test_a_regression_scale_of_zero_and_other_field_errors(tmp_path):
    """Contract mistakes that need no model: each one line naming the field."""
    from faceaudit.errors import FaceauditError
    from faceaudit.seams.contract import ModelContract, load_contract

    base = tomllib.loads((CONTRACTS / "shubham0204-model_lite_age_nonq.toml").read_text())
    cases = [({"scale": 0.0}, "scale = 0"), ({"kind": "softmaxx"}, "kind = 'softmaxx'"),
             ({"classes": ["a", "b"]}, "classes goes with a class output")]
    for change, message in cases:
        data = json.loads(json.dumps(base))
        data["outputs"][0].update(change)
        with pytest.raises(FaceauditError, match=message):
            ModelContract.parse(data)
    assert load_contract(CONTRACTS / "shubham0204-model_lite_age_nonq.toml").outputs[0].scale == 116.0
    proc = _run("contract", "check", tmp_path / "missing.toml")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_contract_init_writes_a_starting_contract_from_the_file(published_models, tmp_path):
    out = tmp_path / "model.toml"
    proc = _run("contract", "init", _model(published_models, "jovanovic-gender"), "--out", out)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    data = tomllib.loads(text)
    assert data["input"]["size"] == 48 and data["input"]["channels"] == "grayscale"
    assert data["outputs"][0]["kind"] == "sigmoid" and "CHECK" in text
    proc = _run("contract", "init", _model(published_models, "jovanovic-gender"), "--out", out)
    assert proc.returncode == 2 and "--force" in proc.stderr


def test_output_heads_read_logits_sigmoids_other_class_names_and_scaled_ages():
    """How each kind of output becomes probabilities over the schema's classes (or years), as the contract says."""
    from faceaudit.seams.contract import ModelContract
    from faceaudit.taxonomy import UTKFACE

    race = UTKFACE.attribute("race")
    contract = ModelContract.parse({"outputs": [
        {"name": "race", "target": "race", "kind": "logits",
         "classes": ["Caucasian", "African", "East Asian", "Indian", "Latino", "Middle Eastern"],
         "map": {"Caucasian": "White", "African": "Black", "East Asian": "Asian", "Latino": "Others",
                 "Middle Eastern": "Others"}},
        {"name": "gender", "target": "gender", "kind": "sigmoid", "classes": ["man", "woman"], "positive": "woman",
         "threshold": 0.7},
        {"name": "age", "target": "age", "kind": "regression", "scale": 116.0}]})
    head = contract.head("race")
    labels = head.labels(race.values, race.normalise)
    assert labels == ("White", "Black", "Asian", "Indian", "Others", "Others")
    logits = np.array([[2.0, 0.0, 0.0, 0.0, 1.0, 1.0]])
    probs = head.read(logits, race.values, labels)
    e = np.exp(logits[0] - 2.0)
    assert np.allclose(probs[0], [e[0], e[1], e[2], e[3], e[4] + e[5]] / e.sum())  # Latino + Middle Eastern added
    assert "probabilities added for Others" in " ".join(head.steps(labels))

    gender = contract.head("gender")
    gender_attr = UTKFACE.attribute("gender")
    glabels = gender.labels(gender_attr.values, gender_attr.normalise)  # woman -> Female by the schema's aliases
    assert glabels == ("Female", "Male")
    p = gender.read(np.array([[0.7], [0.9], [0.5]]), gender_attr.values, glabels)
    assert np.allclose(p[0], [0.5, 0.5]) and p[1, 1] > 0.5 and p[2, 0] > 0.5  # P(woman) at the threshold: even
    assert any("threshold 0.7" in step for step in gender.steps(glabels))

    assert np.allclose(contract.head("age").read(np.array([[0.25], [0.5]])), [29.0, 58.0])


def test_the_python_api_audits_and_checks_through_a_contract(published_models, utk_sample_dir):
    """faceaudit.audit_model(..., contract=), check_model and load_contract, as a notebook user calls them."""
    import faceaudit

    model = _model(published_models, "jovanovic-age")
    contract = faceaudit.load_contract(CONTRACTS / "jovanovic-age_model.toml")
    result = faceaudit.audit_model(model, utk_sample_dir, contract=contract, n_boot=50, tsne=False)
    assert result.taxonomy.target == "age" and result.model["contract"]["outputs"][0]["kind"] == "regression"
    table = result.by_group("race", "mae")
    assert set(table["group"]) == set(faceaudit.UTKFACE.classes) and (table["lo"] < table["hi"]).all()
    checked = faceaudit.check_model(model, utk_sample_dir, contract=contract, n=20)
    assert checked["age"]["sanity"]["status"] == "ok" and "mean absolute error" in checked["age"]["summary"]
    with pytest.raises(faceaudit.FaceauditError, match="contract states the input"):
        faceaudit.audit_model(model, utk_sample_dir, contract=contract, preprocess="0-1")


def test_training_overlap_is_counted_from_the_training_images_hashes(utk64_dataset, tmp_path):
    """A contract that lists its training images' SHA-256: the verdict counts the test images among them."""
    from faceaudit.auditing.overlap import sentence, training_overlap
    from faceaudit.seams.contract import load_contract

    test = utk64_dataset.split("test")
    train = utk64_dataset.split("train")
    (tmp_path / "train-sha256.txt").write_text("\n".join([*train["sha256"], *test["sha256"][:25]]) + "\n")
    contract = tmp_path / "model.toml"
    contract.write_text('[[outputs]]\ntarget = "age"\nkind = "regression"\n'
                        '[provenance]\ntraining_hashes = "train-sha256.txt"\n')
    overlap = training_overlap(load_contract(contract), test, "UTKFace-64px.tar.gz")
    assert overlap["overlapping_images"] == 25 and overlap["test_dataset"] == "UTKFace"
    assert sentence(overlap).startswith("TRAINED ON THESE FACES: 25 of the")
    (tmp_path / "train-sha256.txt").write_text("\n".join(train["sha256"]) + "\n")
    assert sentence(training_overlap(load_contract(contract), test, "x")) is None  # hashes say: none of these
