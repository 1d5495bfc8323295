"""faceaudit export (SavedModel, TFLite float32/float16/int8, ONNX) and who pays for a change in compare / diff.

A small real run (the 400-image UTKFace sample, 32 px, one epoch); the exported models are run by their own
runtimes on the real images and compared with the Keras model. The excess-loss gate is checked on constructed
predictions tables (one group loses much more than the whole set; an identical pair).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from faceaudit.cli import main
from faceaudit.files import OWNED_FILE
from faceaudit.taxonomy import UTKFACE

TINY = ["--image-size", "32", "--batch-size", "32", "--quiet", "--embedding-dim", "16"]


@pytest.fixture(scope="module")
def cnn_run(utk_sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cnn"
    assert main(["train", "--data", str(utk_sample_dir), "--out", str(out), *TINY, "--epochs", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def sample(utk_sample_dir):
    """All 400 sample images (rows and decoded 32 px pixels) and the Keras model's probabilities on them."""
    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.datasets.tfdata import image_dataset

    rows = load_dataset(utk_sample_dir, progress=False).manifest.sort_values("image_id").reset_index(drop=True)
    images = np.concatenate([np.asarray(b) for b in image_dataset(rows, 32, 128, with_labels=False)])
    return rows, images


@pytest.fixture(scope="module")
def keras_probs(cnn_run, sample):
    from faceaudit.models.inference import contract_model, load_model

    model = contract_model(load_model(cnn_run / "model.keras"), schema=UTKFACE)
    return np.asarray(model.predict(sample[1], batch_size=128, verbose=0)[0])


@pytest.fixture(scope="module")
def exported(cnn_run):
    """Every variant exported once: {name: folder}."""
    folders = {}
    for fmt, quant in (("savedmodel", None), ("tflite", None), ("tflite", "float16"), ("tflite", "int8"),
                       ("onnx", None)):
        args = ["export", str(cnn_run), "--format", fmt] + (["--quantize", quant] if quant else [])
        assert main(args) == 0
        name = fmt if quant is None else f"{fmt}-{quant}"
        folders[name] = cnn_run / "export" / name
    return folders


def test_manifest_describes_the_export(cnn_run, exported):
    from faceaudit import __version__
    from faceaudit.datasets.sources import file_sha256

    for name, folder in exported.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        fmt, _, quant = name.partition("-")
        assert manifest["format"] == fmt and manifest["quantization"] == (quant or "none")
        assert manifest["faceaudit_version"] == __version__
        assert manifest["source_model"]["sha256"] == file_sha256(cnn_run / "model.keras")
        assert manifest["input"]["shape"] == [None, 32, 32, 3] and manifest["input"]["dtype"] == "float32"
        assert manifest["input"]["range"] == [0, 255] and manifest["input"]["color"] == "RGB"
        probs, embedding = manifest["outputs"]
        assert probs["name"] == "probabilities" and probs["classes"] == list(UTKFACE.classes)
        assert embedding["name"] == "embedding" and embedding["shape"] == [None, 16]
        files = {f["path"]: f for f in manifest["files"]}
        assert files and manifest["total_bytes"] == sum(f["bytes"] for f in files.values())
        for path, entry in files.items():
            assert file_sha256(folder / path) == entry["sha256"] and (folder / path).stat().st_size == entry["bytes"]
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert on_disk - {OWNED_FILE} == set(files) | {"manifest.json"}  # and faceaudit's list of its files
        if quant == "int8":
            rep = manifest["representative_set"]
            assert rep["split"] == "train" and rep["n"] == min(300, rep["of"]) and rep["matches_run_data"] is True
        else:
            assert manifest["representative_set"] is None
    assert "saved_model.pb" in {f["path"] for f in json.loads((exported["savedmodel"] / "manifest.json")
                                                                .read_text())["files"]}
    sizes = {n: json.loads((f / "manifest.json").read_text())["total_bytes"] for n, f in exported.items()}
    assert sizes["tflite-int8"] < sizes["tflite-float16"] < sizes["tflite"]


def test_float_formats_match_keras_on_real_images(exported, sample, keras_probs):
    from faceaudit.models.export import run_exported

    for name in ("savedmodel", "tflite", "onnx"):
        out = run_exported(exported[name], name, sample[1])
        assert out["probabilities"].shape == keras_probs.shape and out["embedding"].shape == (len(keras_probs), 16)
        np.testing.assert_allclose(out["probabilities"], keras_probs, atol=1e-5, err_msg=name)
    half = run_exported(exported["tflite-float16"], "tflite", sample[1])["probabilities"]
    assert np.abs(half - keras_probs).max() < 1e-2


def test_int8_is_close_but_not_equal(exported, sample, keras_probs):
    from faceaudit.models.export import run_exported

    int8 = run_exported(exported["tflite-int8"], "tflite", sample[1])["probabilities"]
    assert np.abs(int8 - keras_probs).max() > 1e-5  # really quantised
    labels = sample[0]["race"].astype(str).to_numpy()
    classes = np.asarray(UTKFACE.classes)
    acc_keras, acc_int8 = (float(np.mean(classes[p.argmax(1)] == labels)) for p in (keras_probs, int8))
    assert abs(acc_int8 - acc_keras) < 0.1, (acc_keras, acc_int8)
    assert np.mean(int8.argmax(1) == keras_probs.argmax(1)) > 0.85


def test_export_refusals_are_one_line(cnn_run, tmp_path, capsys, monkeypatch):
    assert main(["export", str(cnn_run), "--format", "savedmodel", "--quantize", "int8"]) == 2
    assert "not quantised" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["export", str(cnn_run), "--format", "tflite", "--out", str(foreign)]) == 2
    assert (foreign / "keep.txt").exists() and "holds other files" in capsys.readouterr().err
    import sys

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if faceaudit[onnx] were not installed
    assert main(["export", str(cnn_run), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "faceaudit: error: faceaudit export --format onnx needs tf2onnx: pip install 'faceaudit[onnx]'"
    assert not (tmp_path / "o").exists()


def _audit(rows: pd.DataFrame, probs: np.ndarray, name: str, folder):
    import faceaudit
    from faceaudit.seams.predictions import PredictionsTable

    table = PredictionsTable.from_probabilities(rows, probs / probs.sum(1, keepdims=True), UTKFACE)  # int8: ~1/256 steps
    result = faceaudit.audit(table, schema=UTKFACE, tsne=False, temperature=False, n_boot=50,
                             model_info={"name": name, "kind": "predictions", "source": "test"},
                             data_info={"source": "test", "split": "test", "n": len(rows)})
    return result.write(folder)


def test_compare_original_and_int8_shows_who_pays(exported, sample, keras_probs, tmp_path, capsys):
    from faceaudit.models.export import run_exported

    rows = sample[0]
    int8 = run_exported(exported["tflite-int8"], "tflite", sample[1])["probabilities"]
    a = _audit(rows, keras_probs, "keras", tmp_path / "a")
    b = _audit(rows, int8, "int8", tmp_path / "b")
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out), "--no-pdf"]) == 0
    excess = pd.read_csv(out / "excess_change.csv")
    assert {"race", "gender", "age_band", "race×gender"} <= set(excess["grouping"])
    assert "overall" not in set(excess["grouping"])
    races = excess[excess["grouping"] == "race"]
    assert set(races["group"]) == set(UTKFACE.classes)
    judged = excess[~excess["too_small"]]
    assert ((judged["excess_lo"] <= judged["excess"]) & (judged["excess"] <= judged["excess_hi"])).all()
    # the identity behind the interval: excess = group change − whole-set change
    np.testing.assert_allclose(judged["excess"], judged["diff"] - judged["overall_diff"], atol=1e-12)
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert "Who pays for the change" in html and "Excess loss" in html
    assert "Who pays for the change" in (out / "compare.md").read_text()
    capsys.readouterr()


def _constructed(n: int, loses: str | None, tmp_path, name: str):
    """Predictions of n images (races, genders and age bands balanced) 80 % correct everywhere; ``loses`` names a
    race that loses 30 of every 100 of its correct answers."""
    rng = np.random.default_rng(7)
    classes = list(UTKFACE.classes)
    rows = pd.DataFrame({"image_id": [f"img{i:05d}" for i in range(n)],
                         "race": [classes[i % 5] for i in range(n)],
                         "gender": ["Male" if (i // 5) % 2 == 0 else "Female" for i in range(n)],
                         "age": [5 + 10 * ((i // 10) % 8) for i in range(n)]})
    correct = rng.random(n) < 0.8
    if loses is not None:
        hit = np.flatnonzero(correct & (rows["race"] == loses).to_numpy())
        correct[hit[: int(0.3 * len(hit))]] = False
    truth = rows["race"].map(classes.index).to_numpy()
    predicted = np.where(correct, truth, (truth + 1) % 5)
    probs = np.full((n, 5), 0.025)
    probs[np.arange(n), predicted] = 0.9
    return _audit(rows, probs, name, tmp_path / name)


def test_max_excess_loss_gate(tmp_path, capsys):
    base = _constructed(6000, None, tmp_path, "base")
    same = _constructed(6000, None, tmp_path, "same")
    worse = _constructed(6000, "Black", tmp_path, "worse")
    out = tmp_path / "cmp"
    assert main(["compare", str(base), str(same), "--out", str(out), "--no-pdf", "--max-excess-loss", "0.01"]) == 0
    assert "excess loss bound 1 pts: PASS" in capsys.readouterr().out
    assert main(["compare", str(base), str(worse), "--out", str(out), "--no-pdf", "--max-excess-loss", "0.01"]) == 1
    stdout = capsys.readouterr().out
    assert "excess loss bound 1 pts: FAIL" in stdout and "race Black" in stdout
    excess = pd.read_csv(out / "excess_change.csv")
    black = excess[(excess["grouping"] == "race") & (excess["group"] == "Black")].iloc[0]
    assert black["verdict"] == "loses more than the whole set" and black["excess_loss_lo"] > 0.01
    others = excess[(excess["grouping"] == "race") & (excess["group"] != "Black")]
    assert (others["verdict"] != "loses more than the whole set").all()
    assert "FAIL" in (out / "compare.html").read_text(encoding="utf-8")
    # diff gates the same way, and says so
    assert main(["diff", str(base), str(worse), "--max-excess-loss", "0.01"]) == 1
    stdout = capsys.readouterr().out
    assert "who pays for the change" in stdout and "loses more than the whole set" in stdout
    assert main(["diff", str(base), str(same), "--max-excess-loss", "0.01", "--out", str(tmp_path / "d.md")]) == 0
    assert "PASS" in capsys.readouterr().out and (tmp_path / "d-excess.csv").is_file()
    # a bound no data can certify on these group sizes is inconclusive: fails by default, passes on request
    assert main(["diff", str(base), str(same), "--max-excess-loss", "0"]) == 1
    assert "INCONCLUSIVE" in capsys.readouterr().out
    assert main(["diff", str(base), str(same), "--max-excess-loss", "0", "--inconclusive", "pass"]) == 0
    capsys.readouterr()


def test_python_api_replaces_the_default_folder(cnn_run, exported):
    from faceaudit.models.export import export_model

    folder = export_model(cnn_run, "tflite", "float16")
    assert folder == cnn_run / "export" / "tflite-float16" and (folder / "model.tflite").is_file()


# -- a dlib-resnet head: its input is dlib's 128-d descriptors, not images -------------------------------------

DLIB_VARIANTS = (("savedmodel", None), ("tflite", None), ("tflite", "float16"), ("tflite", "int8"),
                 ("onnx", None), ("onnx", "float16"), ("onnx", "int8"))


@pytest.fixture(scope="module")
def dlib_run(utk_sample_dir, tmp_path_factory):
    """A one-epoch dlib-resnet head on 100 of the sample's images (descriptors cached in the session cache)."""
    import shutil

    root = tmp_path_factory.mktemp("dlib")
    small = root / "small"
    small.mkdir()
    for path in sorted(utk_sample_dir.iterdir())[::4]:
        shutil.copy(path, small / path.name)
    out = root / "run"
    assert main(["train", "--data", str(small), "--out", str(out), "--backbone", "dlib-resnet", "--epochs", "1",
                 "--batch-size", "32", "--quiet", "--embedding-dim", "16"]) == 0
    return out


@pytest.fixture(scope="module")
def dlib_sample(dlib_run):
    """The run's data rows, their real descriptors (from the cache) and the Keras head's probabilities on them."""
    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.models.dlib_features import descriptors
    from faceaudit.models.inference import contract_model, load_model
    from faceaudit.seams.run import RunRecord

    run = RunRecord.read(dlib_run)
    dataset = load_dataset(run.data["source"], progress=False)
    rows = dataset.manifest.sort_values("image_id").reset_index(drop=True)
    x, stats = descriptors(rows, run.dlib_framing, progress=False)
    assert stats["computed"] == 0  # training computed and cached them all
    model = contract_model(load_model(dlib_run / "model.keras"), expect_images=False, schema=UTKFACE)
    return rows, x, np.asarray(model.predict(x, batch_size=128, verbose=0)[0]), dataset


@pytest.fixture(scope="module")
def dlib_exported(dlib_run):
    folders = {}
    for fmt, quant in DLIB_VARIANTS:
        args = ["export", str(dlib_run), "--format", fmt] + (["--quantize", quant] if quant else [])
        assert main(args) == 0
        name = fmt if quant is None else f"{fmt}-{quant}"
        folders[name] = dlib_run / "export" / name
    return folders


def test_dlib_manifest_states_the_descriptor_contract(dlib_run, dlib_exported):
    from faceaudit.seams.run import RunRecord

    framing = RunRecord.read(dlib_run).dlib_framing
    assert framing == "align+mirror"  # the trainer's default
    for name, folder in dlib_exported.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        contract = manifest["input"]
        assert contract["name"] == "descriptor" and contract["shape"] == [None, 128] and contract["dtype"] == "float32"
        assert "128-d face descriptors" in contract["kind"] and "not images" in contract["kind"]
        assert contract["framing"] == framing and "dlib_features.descriptors" in contract["how"]
        assert not {"range", "color", "layout", "size"} & set(contract)
        assert "descriptor -> probabilities" in manifest["signature"] or "'descriptor'" in manifest["signature"]
        assert manifest["source_model"]["backbone"] == "dlib-resnet"
        probs, embedding = manifest["outputs"]
        assert probs["classes"] == list(UTKFACE.classes) and embedding["shape"] == [None, 16]
        check = manifest["check_against_keras"]
        assert "skipped" not in check and "descriptors" in check["inputs"], (name, check)
        assert check["max_abs_diff_probabilities"] < (1e-5 if "-" not in name else 0.1), (name, check)
        if name.endswith("int8"):
            rep = manifest["representative_set"]
            assert rep["split"] == "train" and rep["n"] == rep["of"] and rep["matches_run_data"] is True
        else:
            assert manifest["representative_set"] is None
    sizes = {n: json.loads((f / "manifest.json").read_text())["total_bytes"] for n, f in dlib_exported.items()}
    assert sizes["tflite-int8"] < sizes["tflite-float16"] < sizes["tflite"]
    assert sizes["onnx-int8"] < sizes["onnx"] and sizes["onnx-float16"] < sizes["onnx"]


def test_dlib_onnx_graph_takes_only_the_descriptors(dlib_exported):
    import onnx

    for name in ("onnx", "onnx-float16", "onnx-int8"):
        graph = onnx.load(str(dlib_exported[name] / "model.onnx")).graph
        assert [i.name for i in graph.input] == ["descriptor"], name  # the standardisation constants folded in


def test_dlib_float_formats_match_keras_on_real_descriptors(dlib_exported, dlib_sample):
    from faceaudit.models.export import run_exported

    _, x, keras_probs, _ = dlib_sample
    for name in ("savedmodel", "tflite", "onnx"):
        out = run_exported(dlib_exported[name], name, x, batch_size=32)
        assert out["probabilities"].shape == keras_probs.shape and out["embedding"].shape == (len(x), 16)
        np.testing.assert_allclose(out["probabilities"], keras_probs, atol=1e-5, err_msg=name)
    for name in ("tflite-float16", "onnx-float16"):
        half = run_exported(dlib_exported[name], name.split("-")[0], x)["probabilities"]
        assert np.abs(half - keras_probs).max() < 1e-2, name
    for name in ("tflite-int8", "onnx-int8"):
        int8 = run_exported(dlib_exported[name], name.split("-")[0], x)["probabilities"]
        assert np.abs(int8 - keras_probs).max() > 1e-5, name  # really quantised
        assert np.mean(int8.argmax(1) == keras_probs.argmax(1)) > 0.85, name
    with pytest.raises(Exception, match="descriptors"):
        run_exported(dlib_exported["onnx"], "onnx", np.zeros((2, 32, 32, 3), np.float32))


def test_dlib_int8_calibrates_on_training_descriptors(dlib_run, dlib_sample):
    from faceaudit.models.dlib_features import descriptors
    from faceaudit.models.export import representative_set
    from faceaudit.seams.run import RunRecord

    run = RunRecord.read(dlib_run)
    inputs, info = representative_set(run, [None, 128])
    train = dlib_sample[3].split("train").sort_values("image_id")
    assert info["n"] == len(train) == len(inputs) and info["split"] == "train"
    np.testing.assert_array_equal(inputs, descriptors(train, run.dlib_framing, progress=False)[0])
