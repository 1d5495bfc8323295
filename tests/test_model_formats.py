"""Auditing any common model format: one small trained Keras model converted to a legacy ``.h5`` (with and without
faceaudit's layer names), a SavedModel, a TFLite and an ONNX file, each run on the same real UTKFace test images
through :func:`faceaudit.models.loading.load_runtime`, :func:`faceaudit.audit_model` and ``faceaudit audit``."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from tiny_models import tiny_contract_cnn

from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import UTKFACE

pytestmark = pytest.mark.slow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
CLASSES = UTKFACE.classes
SIZE = 32
#: max |Δp| allowed between a float format and the .keras model.
FLOAT_ATOL = 1e-5


def _plain(keras, units: int = 5, activation: str | None = "softmax", rescale: bool = True):
    """The contract model's architecture as a plain Sequential with Keras's default layer names."""
    layers = [keras.Input((SIZE, SIZE, 3))]
    if rescale:
        layers.append(keras.layers.Rescaling(1 / 255.0))
    layers += [keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
               keras.layers.Dense(16, activation="relu", name="hidden"),
               keras.layers.Dense(units, activation=activation)]
    return keras.Sequential(layers)


@pytest.fixture(scope="module")
def models(utk_sample_dir, tmp_path_factory):
    """One 32px CNN trained for one epoch on the real sample, saved in every format; and the .keras model's
    reference probabilities and embeddings on the test split."""
    import keras
    import tensorflow as tf
    import tf2onnx

    from faceaudit.datasets.tfdata import image_dataset

    model, dataset = tiny_contract_cnn(utk_sample_dir, size=SIZE)

    folder = tmp_path_factory.mktemp("formats")
    paths = {"keras": folder / "model.keras", "h5": folder / "contract.h5", "h5-plain": folder / "plain.h5",
             "savedmodel": folder / "savedmodel", "tflite": folder / "model.tflite", "onnx": folder / "model.onnx",
             "logits": folder / "logits.h5", "unit": folder / "unit.h5"}
    model.save(paths["keras"])
    model.save(paths["h5"])
    weights = model.get_weights()
    for key, options in (("h5-plain", {}), ("logits", {"activation": None}), ("unit", {"rescale": False})):
        plain = _plain(keras, **options)
        plain.set_weights(weights)
        plain.save(paths[key])
    model.export(str(paths["savedmodel"]), verbose=False)
    paths["tflite"].write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(paths["savedmodel"])).convert())
    # Full-integer quantisation (int8 input and output, calibrated on real training images).
    calibration = np.concatenate([np.asarray(b) for b in image_dataset(dataset.split("train"), SIZE, 32,
                                                                      with_labels=False).take(2)])
    converter = tf.lite.TFLiteConverter.from_saved_model(str(paths["savedmodel"]))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    paths["tflite-int8"] = folder / "int8.tflite"
    paths["tflite-int8"].write_bytes(converter.convert())
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_function(tf.function(lambda t: model(t, training=False)), input_signature=spec, opset=17,
                                  output_path=str(paths["onnx"]))

    # Refused models: 7 outputs for 5 classes; a Lambda layer; two 5-wide outputs.
    wide = _plain(keras, units=7)
    wide.save(folder / "wide.h5")
    lam_in = keras.Input((SIZE, SIZE, 3))
    lam = keras.layers.Lambda(lambda t: t / 255.0)(lam_in)
    lam = keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(lam))
    keras.Model(lam_in, lam).save(folder / "lambda.keras")
    two_in = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(two_in)
    keras.Model(two_in, [keras.layers.Dense(5, activation="softmax", name="head_a")(pooled),
                         keras.layers.Dense(5, activation="softmax", name="head_b")(pooled)]).save(folder / "two.h5")

    from faceaudit.models.inference import predict

    test = dataset.split("test")
    ref_probs, ref_emb = predict(paths["keras"], test, progress=False, schema=UTKFACE)
    return {"paths": paths, "folder": folder, "dataset": dataset, "test": test, "probs": ref_probs, "emb": ref_emb}


FLOAT_FORMATS = ("keras", "h5", "h5-plain", "savedmodel", "tflite", "onnx", "logits")


def _runtime(path, **options):
    from faceaudit.models.loading import load_runtime

    return load_runtime(path, classes=CLASSES, target="race", **options)


def test_every_format_gives_the_keras_probabilities(models, capsys):
    from faceaudit.models.inference import predict

    deltas = {}
    for key in (*FLOAT_FORMATS, "unit"):
        runtime = _runtime(models["paths"][key], preprocess="0-1" if key == "unit" else None)
        probs, emb = predict(models["paths"][key], models["test"], progress=False, schema=UTKFACE, runtime=runtime)
        deltas[key] = float(np.abs(probs - models["probs"]).max())
        assert deltas[key] <= FLOAT_ATOL, (key, deltas[key])
        described = runtime.describe()
        assert described["input_size"] == SIZE and described["output_width"] == 5
        assert described["softmax_applied"] is (key == "logits")
        if key in ("keras", "h5", "h5-plain", "logits", "unit"):
            # Keras models expose the layer before the classifier: the same 16-d embedding as the contract's.
            np.testing.assert_allclose(emb, models["emb"], atol=1e-5)
            assert described["embedding_dim"] == 16
        else:
            assert emb is None and described["embeddings"] is None and "no embedding" in described["embedding_note"]
    assert _runtime(models["paths"]["keras"]).contract == "faceaudit"
    assert _runtime(models["paths"]["h5-plain"]).contract == "inferred"
    with capsys.disabled():
        print("\nmax |Δp| against the .keras model: " + ", ".join(f"{k} {v:.1e}" for k, v in deltas.items()))


def test_int8_tflite_is_dequantised(models):
    from faceaudit.models.inference import predict

    runtime = _runtime(models["paths"]["tflite-int8"])
    probs, emb = predict(models["paths"]["tflite-int8"], models["test"], progress=False, schema=UTKFACE,
                         runtime=runtime)
    described = runtime.describe()
    assert described["input_dtype"] == "int8" and described["input_quantization"]["zero_point"] != 0
    assert described["output_dtype"] == "int8" and described["softmax_applied"] is False
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-9)
    assert np.abs(probs - models["probs"]).max() < 0.05 and emb is None
    assert (probs.argmax(axis=1) == models["probs"].argmax(axis=1)).mean() >= 0.9
    print(f"\nint8 TFLite: max |Δp| {np.abs(probs - models['probs']).max():.1e}")


def test_logits_get_a_softmax_and_say_so(models):
    runtime = _runtime(models["paths"]["logits"])
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    probs, _ = runtime.predict(images)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-9)
    described = runtime.describe()
    assert described["softmax_applied"] is True and described["output_kind"].startswith("logits")


def test_a_softmax_faceaudit_applied_is_said_on_the_console_card_and_summary(models, tmp_path, capsys):
    """Issue 23, item 7: a logits model's softmax is told once on stderr, in the model card and in summary.md."""
    from faceaudit.auditing.report.sections import model_card_section
    from faceaudit.auditing.report.summary import summary_markdown
    from faceaudit.auditing.result import AuditResult

    out = tmp_path / "logits"
    code = main(["audit", str(models["paths"]["logits"]), "--data", str(models["dataset"].source), "--out", str(out),
                 "--n-boot", "0", "--no-tsne", "--no-report", "--min-group-size", "5"])
    err = capsys.readouterr().err
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("faceaudit: note: softmax applied")]
    assert len(notes) == 1 and "logits" in notes[0], err
    result = AuditResult.from_json(out)
    assert "Outputs as read: softmax applied" in summary_markdown(result)
    facts = dict(model_card_section(result).context["facts"])
    assert facts["Output read"].startswith("softmax applied")


def test_class_order_from_classes(models):
    """--classes names the output units in order; the probabilities come back in the schema's order."""
    from faceaudit.models.inference import predict

    reordered = tuple(reversed(CLASSES))
    from faceaudit.models.loading import load_runtime

    runtime = load_runtime(models["paths"]["onnx"], classes=reordered)
    probs, _ = predict(models["paths"]["onnx"], models["test"], progress=False, schema=UTKFACE, runtime=runtime)
    np.testing.assert_allclose(probs, models["probs"][:, ::-1], atol=FLOAT_ATOL)


def _accuracy(result) -> float:
    return result.overall["metrics"]["accuracy"]["value"]


AUDIT = {"n_boot": 0, "tsne": False, "min_group_size": 5}


def test_audit_model_every_format(models):
    from faceaudit import audit_model

    reference = audit_model(models["paths"]["keras"], models["dataset"], **AUDIT)
    assert reference.model["kind"] == "keras" and reference.model["runtime"]["contract"] == "faceaudit"
    for key in FLOAT_FORMATS[1:]:
        result = audit_model(models["paths"][key], models["dataset"], temperature=False, **AUDIT)
        assert _accuracy(result) == pytest.approx(_accuracy(reference), abs=1e-12), key
        runtime = result.model["runtime"]
        assert result.model["format"] == runtime["format"] == key.split("-")[0].replace("logits", "h5")
        assert runtime["softmax_applied"] is (key == "logits")
        if key in ("savedmodel", "tflite", "onnx"):
            assert result.embeddings is None
            assert any("no embeddings" in w for w in result.warnings)
        else:
            assert result.embeddings["dim"] == 16


def test_cli_audits_every_format(models, tmp_path, capsys):
    from faceaudit.auditing.result import AuditResult

    accuracy = {}
    for key in ("keras", "h5-plain", "savedmodel", "tflite", "onnx"):
        out = tmp_path / key
        code = main(["audit", str(models["paths"][key]), "--data", str(models["dataset"].source), "--out", str(out),
                     "--n-boot", "0", "--no-tsne", "--no-temperature", "--no-report", "--min-group-size", "5"])
        assert code == 0, capsys.readouterr().err
        result = AuditResult.from_json(out)
        accuracy[key] = _accuracy(result)
        model = json.loads((out / "audit.json").read_text())["model"]
        assert model["format"] == key.split("-")[0] and model["runtime"]["output_width"] == 5
    assert len(set(accuracy.values())) == 1, accuracy
    # The stated contract: a model taking [0, 1] pixels audits to the same accuracy with --preprocess 0-1.
    out = tmp_path / "unit"
    code = main(["audit", str(models["paths"]["unit"]), "--data", str(models["dataset"].source), "--out", str(out),
                 "--n-boot", "0", "--no-tsne", "--no-temperature", "--no-report", "--min-group-size", "5",
                 "--preprocess", "0-1", "--embedding-layer", "hidden"])
    assert code == 0, capsys.readouterr().err
    result = AuditResult.from_json(out)
    assert _accuracy(result) == accuracy["keras"] and result.model["runtime"]["preprocess"] == "0-1"
    assert result.model["runtime"]["embeddings"] == "hidden"


def _refused(argv, capsys, tmp_path) -> str:
    out = tmp_path / "refused"
    code = main(["audit", *map(str, argv), "--out", str(out), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_refusals(models, tmp_path, capsys):
    import tensorflow as tf

    data = ["--data", models["dataset"].source]
    folder = models["folder"]
    err = _refused([folder / "wide.h5", *data], capsys, tmp_path)
    assert "model outputs 7 values but the schema has 5 classes (White, Black, Asian, Indian, Others); " \
           "pass --classes or --schema" in err
    assert "Lambda layer" in _refused([folder / "lambda.keras", *data], capsys, tmp_path)
    unknown = tmp_path / "model.bin"
    unknown.write_bytes(b"\0" * 32)
    assert "not a model file faceaudit can run" in _refused([unknown, *data], capsys, tmp_path)
    bare = tmp_path / "bare-savedmodel"
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(bare))
    assert "no serving signature" in _refused([bare, *data], capsys, tmp_path)
    err = _refused([folder / "two.h5", *data], capsys, tmp_path)
    assert "several candidate class-probability outputs (head_a, head_b); pass --output-layer NAME" in err
    assert "--classes needs at least two" in _refused([folder / "two.h5", *data, "--classes", "White"], capsys,
                                                       tmp_path)
    runtime = _runtime(folder / "two.h5", output_layer="head_b")
    assert runtime.output_name == "head_b" and runtime.embedding_dim == 3


def test_missing_onnxruntime_names_the_extra(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(FaceauditError, match=r"auditing an ONNX model needs ONNX Runtime: pip install "
                                             r"'faceaudit\[onnx\]'"):
        _runtime(models["paths"]["onnx"])


def test_preprocessing_modes():
    from faceaudit.models.preprocessing import preprocess_images

    pixel = np.array([[[[255.0, 128.0, 0.0]]]], dtype=np.float32)
    assert preprocess_images(pixel, "raw").tolist() == pixel.tolist()
    np.testing.assert_allclose(preprocess_images(pixel, "0-1")[0, 0, 0], [1, 128 / 255, 0], rtol=1e-5)
    np.testing.assert_allclose(preprocess_images(pixel, "-1-1")[0, 0, 0], [1, 128 / 127.5 - 1, -1], rtol=1e-4)
    np.testing.assert_allclose(preprocess_images(pixel, "raw", bgr=True)[0, 0, 0], [0, 128, 255])
    np.testing.assert_allclose(preprocess_images(pixel, "caffe")[0, 0, 0], [-103.939, 128 - 116.779, 255 - 123.68],
                               rtol=1e-6)
    np.testing.assert_allclose(preprocess_images(pixel, "torch")[0, 0, 0],
                               [(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, -0.406 / 0.225], rtol=1e-5)
