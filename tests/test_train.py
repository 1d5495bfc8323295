"""faceaudit train: run folders, weights, errors, resume after SIGKILL, mirrored strategy, dlib cache.

Real UTKFace images (the 400-image sample), real Keras models, tiny inputs and one or two epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from commands import FACEAUDIT

from faceaudit.cli import main
from faceaudit.seams.predictions import PredictionsTable
from faceaudit.seams.run import RunRecord, load_history, resolve_model
from faceaudit.taxonomy import UTKFACE

PROB_COLUMNS = list(UTKFACE.prob_columns)

SEED_DIR = Path("/work/shared/seed")
TINY = ["--image-size", "32", "--batch-size", "32", "--quiet", "--embedding-dim", "16"]


def _train_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), *TINY, *extra])


def _subprocess_train(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [*FACEAUDIT, "train", "--data", str(data), "--out", str(out), *TINY, *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def cnn_run(utk_sample_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cnn"
    assert _train_cli(utk_sample_dir, out, "--epochs", "2") == 0
    return out


def test_cnn_run_folder_is_complete(cnn_run):
    import keras

    from faceaudit.models.inference import predict

    names = {p.name for p in cnn_run.iterdir()}
    assert {"model.keras", "history.json", "history-unfreeze.json", "run.json", "predictions.csv"} <= names
    assert "checkpoint" not in names
    model = keras.saving.load_model(cnn_run / "model.keras", compile=False)
    assert model.get_layer("race_probs").output.shape[-1] == 5
    assert model.input_shape[1:] == (32, 32, 3)

    history = json.loads((cnn_run / "history.json").read_text())
    assert list(history) == ["unfreeze"]
    flat = json.loads((cnn_run / "history-unfreeze.json").read_text())
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(flat[metric]) == 2 and all(np.isfinite(flat[metric]))

    run = json.loads((cnn_run / "run.json").read_text())
    for key in ("backbone", "weights", "hyperparameters", "seed", "data", "versions", "wall_time_s",
                "train_images_per_s", "inference_images_per_s", "test_accuracy", "params"):
        assert key in run, key
    assert run["backbone"] == "cnn" and run["seed"] == 42 and run["hyperparameters"]["epochs"] == 2
    assert len(run["data"]["manifest_sha256"]) == 64
    sizes = run["data"]["split_sizes"]
    assert sizes["train"] > sizes["test"] > 0 and sum(sizes.values()) == 400

    table = pd.read_csv(cnn_run / "predictions.csv")
    written = PredictionsTable.read(cnn_run / "predictions.csv")
    assert list(table.columns) == list(written.output_frame().columns)
    assert {"image_id", "race", "gender", "age", "age_band", *PROB_COLUMNS, "pred_race", "path", "sha256"} <= set(table)
    assert len(table) == sizes["test"] and set(table["split"]) == {"test"}
    np.testing.assert_allclose(table[list(PROB_COLUMNS)].sum(axis=1), 1.0, atol=1e-4)
    assert run["test_accuracy"] == pytest.approx((table["pred_race"] == table["race"]).mean())

    # The audit's entry point reproduces the stored probabilities from the run folder.
    manifest = table[["image_id", "path", "sha256", "race", "gender", "age", "age_band", "split"]]
    probs, embeddings = predict(cnn_run, manifest.head(8), progress=False)
    np.testing.assert_allclose(probs, table[list(PROB_COLUMNS)].head(8).to_numpy(), atol=1e-4)
    assert embeddings.shape == (8, 16)


def test_run_record_round_trips_through_a_real_run_folder(cnn_run, tmp_path):
    """run.json as the trainer wrote it reads into a RunRecord, writes back unchanged, and names the schema."""
    raw = json.loads((cnn_run / "run.json").read_text())
    record = RunRecord.read(cnn_run)
    assert raw["run_version"] == RunRecord.VERSION == record.run_version and record.complete
    assert record.extra == {}, f"run.json keys RunRecord does not know: {sorted(record.extra)}"
    assert record.name == cnn_run.name and record.schema == UTKFACE
    assert raw["label_schema"] == UTKFACE.to_dict() and record.hyperparameters["schema"] == "utkface"
    copy = tmp_path / "copy"
    record.write(copy)
    assert json.loads((copy / "run.json").read_text()) == raw
    assert RunRecord.read(copy) == record
    facts = RunRecord.read(cnn_run).facts()
    assert facts["name"] == cnn_run.name and facts["backbone"] == "cnn" and facts["data"] == raw["data"]
    assert facts["test_accuracy"] == raw["test_accuracy"] and "versions" not in facts
    model_file, resolved = resolve_model(cnn_run)
    assert model_file == cnn_run / "model.keras" and resolved == record
    assert resolve_model(model_file)[1] == record
    # A run.json from before versioning (no run_version, no label_schema, fields missing) still reads.
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"backbone": "cnn", "test_accuracy": 0.5, "run_hash": "abc"}))
    legacy = RunRecord.read(old)
    assert legacy.run_version is None and legacy.params is None and legacy.schema == UTKFACE
    assert legacy.extra == {"run_hash": "abc"} and legacy.facts()["test_accuracy"] == 0.5


def test_fairface_schema_trains_seven_way_model(utk_sample_dir, tmp_path):
    """--schema fairface on a FairFace-layout CSV: 7 output units named race_probs, a 7-class predictions table."""
    import keras

    races = ("White", "Black", "East Asian", "Indian", "Middle Eastern", "Latino_Hispanic", "Southeast Asian")
    bands = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69")
    rows = []
    for i, path in enumerate(sorted(utk_sample_dir.iterdir())):
        age, gender = (int(part) for part in path.name.split("_")[:2])
        band = "more than 70" if age >= 70 else next(b for b in bands if age <= int(b.split("-")[1]))
        rows.append({"file": os.path.relpath(path, tmp_path), "age": band, "gender": ("Male", "Female")[gender],
                     "race": races[i % 7]})
    labels = tmp_path / "fairface_label_train.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    out = tmp_path / "ff"
    assert _train_cli(labels, out, "--schema", "fairface", "--epochs", "1", "--max-train", "128") == 0
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert model.get_layer("race_probs").output.shape[-1] == 7
    record = RunRecord.read(out)
    assert record.schema.name == "fairface7" and len(record.schema.classes) == 7
    table = PredictionsTable.read(out / "predictions.csv", schema=record.schema)
    assert table.schema.classes == record.schema.classes and table.probabilities.shape[1] == 7
    assert table.frame["age"].isna().all() and table.frame["age_band"].notna().all()
    assert record.test_accuracy == pytest.approx(float((table.y_true == table.y_pred).mean()))



def test_audit_model_card_shows_what_the_run_recorded(cnn_run, utk_sample_dir, tmp_path):
    """An audit of a real run folder carries its weights, split sizes and epochs into the model card."""
    from faceaudit.auditing.report.sections import model_card_section
    from faceaudit.auditing.result import AuditResult

    out = tmp_path / "audit"
    assert main(["audit", str(cnn_run), "--data", str(utk_sample_dir), "--out", str(out), "--n-boot", "50",
                 "--min-group-size", "5", "--no-report", "--no-temperature"]) in (0, 1)
    run = json.loads((cnn_run / "run.json").read_text())
    recorded = AuditResult.from_json(out).model["run"]
    assert recorded["weights"] == "none" and recorded["data"]["split_sizes"] == run["data"]["split_sizes"]
    card = model_card_section(AuditResult.from_json(out)).context
    assert dict(card["facts"])["Weights"] == "none"
    training = dict(card["training"])
    assert training["Test images"] == f"{run['data']['split_sizes']['test']:,}"
    assert training["Unfreeze phase: epochs run"] == "2" and training["Seed"] == "42"

def test_load_history_reads_seed_and_run_shapes(cnn_run):
    ours = load_history(cnn_run)
    assert set(ours) == {"unfreeze"} and len(ours["unfreeze"]["val_accuracy"]) == 2
    assert load_history(cnn_run / "history-unfreeze.json") == {"unfreeze": ours["unfreeze"]}
    if SEED_DIR.exists():
        seed = load_history(SEED_DIR / "Xception-freeze_history.json")
        assert list(seed) == ["freeze"] and len(seed["freeze"]["accuracy"]) == 3
        assert list(load_history(SEED_DIR / "VGG16_history.json")) == ["train"]


def test_weights_path_round_trip_and_frozen_head_phase(utk_sample_dir, tmp_path):
    """Weights saved from a freshly built backbone load back unchanged; the head phase leaves them frozen."""
    import keras

    from faceaudit.training.backbones import build_backbone, get_backbone

    backbone = build_backbone(get_backbone("cnn"), 32, None, None)
    file = tmp_path / "cnn32.weights.h5"
    backbone.save_weights(file)
    out = tmp_path / "run"
    assert _train_cli(utk_sample_dir, out, "--weights", str(file), "--head-epochs", "1", "--epochs", "0") == 0
    run = json.loads((out / "run.json").read_text())
    assert run["weights_file"] == str(file) and [p["name"] for p in run["phases"]] == ["freeze"]
    assert run["batchnorm"].startswith("inference mode")
    trained = keras.saving.load_model(out / "model.keras", compile=False).get_layer("cnn")
    for before, after in zip(backbone.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_imagenet_weights_fail_at_once_offline(utk_sample_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEAUDIT_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    start = time.perf_counter()
    code = _train_cli(utk_sample_dir, tmp_path / "run", "--backbone", "vgg16", "--weights", "imagenet")
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.perf_counter() - start < 5
    assert err.count("\n") == 0
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in err and "--weights PATH" in err


@pytest.mark.parametrize("case", ["backbone", "data", "out"])
def test_user_mistakes_are_one_line_errors(case, utk_sample_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data, out, extra = utk_sample_dir, tmp_path / "run", []
    if case == "backbone":
        extra = ["--backbone", "alexnet"]
    elif case == "data":
        data = tmp_path / "missing.tar.gz"
    else:
        out = blocker / "run"
    assert _train_cli(data, out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceaudit: error:") and err.count("\n") == 0
    assert {"backbone": "alexnet", "data": "missing.tar.gz", "out": "cannot write"}[case] in err


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_history(utk_sample_dir, tmp_path):
    """Kill a real training process after its first checkpoint, resume it, compare with a straight run."""
    args = ("--epochs", "3", "--patience", "0", "--dropout", "0.2")
    straight = _subprocess_train(utk_sample_dir, tmp_path / "straight", *args)
    killed_out = tmp_path / "killed"
    killed = _subprocess_train(utk_sample_dir, killed_out, *args)
    state = killed_out / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.05)
    assert killed.poll() is None, "training finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (killed_out / "run.json").exists()
    done_before = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done_before < 3

    resumed = _subprocess_train(utk_sample_dir, killed_out, *args, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert straight.wait(timeout=300) == 0, straight.stdout.read()
    a = load_history(tmp_path / "straight")["unfreeze"]
    b = load_history(killed_out)["unfreeze"]
    assert json.loads((killed_out / "run.json").read_text())["resumed"] == 1
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert len(a[metric]) == len(b[metric]) == 3
        # Deterministic kernels, stateless augmentation and restored optimizer/seed state: equal to float noise.
        np.testing.assert_allclose(a[metric], b[metric], rtol=1e-5, atol=1e-6, err_msg=metric)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(utk_sample_dir, tmp_path):
    out = tmp_path / "mirrored"
    process = _subprocess_train(utk_sample_dir, out, "--epochs", "1", "--strategy", "mirrored", "--cpu-devices", "2")
    assert process.wait(timeout=300) == 0, process.stdout.read()
    run = json.loads((out / "run.json").read_text())
    assert run["strategy"] == "mirrored" and run["devices"] == 2
    assert sum("CPU" in d for d in run["tensorflow_devices"]) == 2
    assert np.isfinite(load_history(out)["unfreeze"]["loss"]).all()


@pytest.mark.slow
def test_dlib_descriptors_are_cached_by_sha(utk_sample_dir, tmp_path, monkeypatch):
    """A second dlib-resnet run with another head reads every descriptor from the cache."""
    monkeypatch.setenv("FACEAUDIT_CACHE", str(tmp_path / "cache"))
    small = tmp_path / "small"
    small.mkdir()
    for path in sorted(utk_sample_dir.iterdir())[::8]:
        shutil.copy(path, small / path.name)
    first = tmp_path / "dlib-a"
    assert _train_cli(small, first, "--backbone", "dlib-resnet", "--epochs", "2") == 0
    run_a = json.loads((first / "run.json").read_text())
    assert run_a["descriptor_cache"]["computed"] > 0 and run_a["params"] > 0
    start = time.perf_counter()
    second = tmp_path / "dlib-b"
    assert _train_cli(small, second, "--backbone", "dlib-resnet", "--epochs", "1", "--embedding-dim", "32") == 0
    run_b = json.loads((second / "run.json").read_text())
    assert run_b["descriptor_cache"]["computed"] == 0 and run_b["descriptor_cache"]["cached"] > 0
    table = pd.read_csv(second / "predictions.csv")
    np.testing.assert_allclose(table[list(PROB_COLUMNS)].sum(axis=1), 1.0, atol=1e-4)
    assert time.perf_counter() - start < 60


@pytest.mark.slow
def test_mobilenetv2_with_real_imagenet_weights_fine_tunes(utk_sample_dir, weights_dir, tmp_path, monkeypatch):
    import h5py
    import keras

    from faceaudit.training.backbones import get_backbone, resolve_weights

    monkeypatch.setenv("FACEAUDIT_WEIGHTS_DIR", str(weights_dir))
    expected = weights_dir / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert resolve_weights(get_backbone("mobilenetv2"), "imagenet", 48, 0.35) == expected
    out = tmp_path / "mnv2"
    assert _train_cli(utk_sample_dir, out, "--backbone", "mobilenetv2", "--weights", "imagenet",
                      "--head-epochs", "1", "--epochs", "1", "--max-train", "64", "--image-size", "48") == 0
    run = json.loads((out / "run.json").read_text())
    assert run["weights_file"] == str(expected)
    assert [p["epochs_run"] for p in run["phases"]] == [1, 1]
    model = keras.saving.load_model(out / "model.keras", compile=False)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    stem = backbone.get_layer("Conv1").get_weights()[0]
    with h5py.File(expected) as f:
        original = np.asarray(f["Conv1"]["Conv1"]["kernel:0"])
    assert stem.shape == original.shape
    # Fine-tuned from the ImageNet kernel: close to it, but moved by the unfreeze step.
    assert 0 < np.abs(stem - original).max() < 0.1 * np.abs(original).max()


def test_dlib_mirror_framing_averages_the_mirrored_chip(utk64_dataset, tmp_path, monkeypatch):
    """``align+mirror`` is the mean of the aligned chip's descriptor and its mirror's, each cached on its own."""
    from faceaudit.models.dlib_features import descriptor_cache, descriptors, face_chip

    monkeypatch.setenv("FACEAUDIT_CACHE", str(tmp_path / "cache"))
    manifest = utk64_dataset.manifest.head(6)
    chip = face_chip(manifest["path"].iloc[0])
    np.testing.assert_array_equal(face_chip(manifest["path"].iloc[0], mirrored=True), chip[:, ::-1])
    plain, _ = descriptors(manifest, "align", workers=1, progress=False)
    averaged, stats = descriptors(manifest, "align+mirror", workers=1, progress=False)
    mirrored = np.stack([np.load(descriptor_cache("align", mirrored=True) / s[:2] / f"{s}.npy")
                         for s in manifest["sha256"]])
    assert stats == {"images": 6, "cached": 6, "computed": 6, "framing": "align+mirror"}
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=1e-6)
    # A face and its mirror image are the same person: close descriptors (dlib's match threshold is 0.6), not equal.
    distance = np.linalg.norm(plain - mirrored, axis=1)
    assert (distance > 0).all() and (distance < 0.6).all()


def _reference_rules(losses: list[float], patience: int, plateau: bool, lr: float):
    """The rules the trainer followed before it used Keras's callbacks: improvement by more than 1e-4, early stop
    after ``patience`` epochs without one (0: never), learning rate x 0.3 after 2 (plateau schedule)."""
    best, wait, plateau_wait, improved, rates = None, 0, 0, [], []
    for loss in losses:
        if best is None or loss < best - 1e-4:
            best, wait, plateau_wait = loss, 0, 0
            improved.append(True)
        else:
            wait, plateau_wait = wait + 1, plateau_wait + 1
            improved.append(False)
            if plateau and plateau_wait >= 2:
                lr, plateau_wait = lr * 0.3, 0
        rates.append(lr)
        if patience and wait >= patience:
            break
    return improved, rates


@pytest.mark.parametrize("patience,plateau", [(0, True), (3, True), (2, False), (4, True)])
def test_keras_epoch_rules_decide_as_the_loop_did_and_resume(patience, plateau):
    """Keras's EarlyStopping and ReduceLROnPlateau, driven once per epoch and restored from state.json midway,
    give the improvements, learning rates and stopping epoch of the reference rules."""
    keras = pytest.importorskip("keras")
    from faceaudit.training.config import TrainConfig
    from faceaudit.training.trainer import _epoch_rules, _judge_epoch

    losses = [1.0, 0.9, 0.95, 0.90005, 0.91, 0.8, 0.85, 0.86, 0.87, 0.88, 0.7, 0.75]
    expected = _reference_rules(losses, patience, plateau, 0.01)
    config = TrainConfig(patience=patience, schedule="plateau" if plateau else "cosine")

    def fresh_model():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate=0.01), loss="mse")
        return model

    for resume_at in (None, 4):
        model = fresh_model()
        state = {"best": None, "wait": 0, "plateau_wait": 0, "stopped": False}
        stopper, rule = _epoch_rules(model, config, state)
        improved, rates = [], []
        for index, loss in enumerate(losses):
            if index == resume_at:  # a new process: the model (optimizer included) and state.json carry over
                lr = float(np.asarray(model.optimizer.learning_rate))
                model = fresh_model()
                model.optimizer.learning_rate = lr
                state = json.loads(json.dumps(state))
                stopper, rule = _epoch_rules(model, config, state)
            improved.append(_judge_epoch(stopper, rule, state, index, {"val_loss": loss}))
            rates.append(float(np.asarray(model.optimizer.learning_rate)))
            if state["stopped"]:
                break
        assert improved == expected[0]
        np.testing.assert_allclose(rates, expected[1], rtol=1e-6)
