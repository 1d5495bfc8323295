"""The tiny real Keras model the model-running tests share: a 32 px CNN with faceaudit's ``embedding`` and
``race_probs`` layers, trained on the real UTKFace sample's training split."""

from __future__ import annotations

from pathlib import Path

SIZE = 32


def tiny_contract_cnn(sample_dir: Path, *, epochs: int = 1, size: int = SIZE):
    """The trained Keras model and the sample's dataset it was trained on (seeded: the same model every time)."""
    import keras

    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.datasets.tfdata import image_dataset

    keras.utils.set_random_seed(0)
    dataset = load_dataset(sample_dir, progress=False)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu", name="embedding")(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="race_probs")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(image_dataset(dataset.split("train"), size, 32), epochs=epochs, verbose=0)
    return model, dataset
