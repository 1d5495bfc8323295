"""faceaudit.compat against the installed Keras and seaborn: every private internal it reaches for still exists and
does what faceaudit relies on, on a real Keras model; the versions it was checked on name the installed ones."""

from __future__ import annotations

from importlib import metadata
from types import SimpleNamespace

import numpy as np
import pytest

from faceaudit import compat

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


def _model():
    """Input -> nested backbone model (conv, batch norm) -> dropout -> embedding -> softmax, seeded."""
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inner_in)
    x = keras.layers.BatchNormalization(name="bn")(x)
    backbone = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D()(x), name="backbone")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dropout(0.5, name="drop")(backbone(inputs))
    embedding = keras.layers.Dense(6, name="embedding")(x)
    probs = keras.layers.Dense(3, activation="softmax", name="race_probs")(embedding)
    return keras.Model(inputs, probs)


@pytest.mark.parametrize("library", sorted(compat.CHECKED))
def test_installed_versions_were_checked(library):
    installed = metadata.version(library)
    assert installed in compat.CHECKED[library], (
        f"{library} {installed} is installed but faceaudit.compat was checked on {compat.CHECKED[library]}: "
        "re-check every function there and add the version")


def test_all_layers_finds_nested_layers():
    model = _model()
    names = [layer.name for layer in compat.all_layers(model)]
    assert {"backbone", "conv", "bn", "drop", "embedding", "race_probs"} <= set(names)
    assert model not in compat.all_layers(model)
    assert model in compat.all_layers(model, include_self=True)
    # The public fallback walks nested models' layers when the private method is gone.
    leaf = SimpleNamespace(name="leaf")
    outer = SimpleNamespace(layers=[SimpleNamespace(name="inner", layers=[leaf])])
    assert [getattr(x, "name") for x in compat.all_layers(outer)] == ["inner", "leaf"]


def test_seed_generators_drive_dropout():
    model = _model()
    generators = compat.seed_generators(model.get_layer("drop"))
    assert generators, "Dropout's seed generator not found: Keras renamed Layer._seed_generators"
    x = np.random.default_rng(0).uniform(0, 1, (4, 6)).astype("float32")
    drop = model.get_layer("drop")

    def masks():
        generators[0].state.assign(np.array([7, 0], dtype=generators[0].state.dtype))
        return np.asarray(drop(x, training=True))

    np.testing.assert_array_equal(masks(), masks())  # the same state gives the same mask
    assert compat.seed_generators(model.get_layer("embedding")) == []


def test_keras_history_walks_the_graph():
    model = _model()
    layer, node_index, _ = compat.keras_history(model.outputs[0])
    assert layer.name == "race_probs"
    (source,) = compat.node_inputs(layer, node_index)
    assert compat.keras_history(source)[0].name == "embedding"
    assert compat.keras_history(np.zeros(3)) is None


def test_multiworker_steps_train_with_a_symbolic_build():
    model = _model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(1)
    data = tf.data.Dataset.from_tensor_slices((rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32"),
                                               np.eye(3, dtype="float32")[rng.integers(0, 3, 16)])).batch(8)
    compat.multiworker_steps(model, data.element_spec)
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    logs = model.train_step(next(iter(data)))
    assert all(tuple(v.shape) == (1,) for v in logs.values() if tf.is_tensor(v))


def test_seaborn_redraws_are_skipped_and_restored():
    import seaborn.matrix as matrix

    original = matrix._draw_figure
    with compat.seaborn_heatmaps_without_redraws():
        assert matrix._draw_figure is not original
        assert matrix._draw_figure(None) is None
    assert matrix._draw_figure is original
