"""TensorFlow input pipelines from a manifest, and the seed's sharded GZIP TFRecord export.

Images enter models as float32 RGB in [0, 255] at the model's input size; each model does its own
preprocessing inside, so a saved model file needs nothing from this module to be used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from faceaudit.config import GENDERS, RACES, SPLITS, usable_cpus

_TFRECORD_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "image_id": tf.io.FixedLenFeature([], tf.string),
    "sha256": tf.io.FixedLenFeature([], tf.string),
    "age": tf.io.FixedLenFeature([], tf.int64),
    "gender": tf.io.FixedLenFeature([], tf.int64),
    "race": tf.io.FixedLenFeature([], tf.int64),
}


def race_codes(manifest: pd.DataFrame) -> np.ndarray:
    """Race labels as integer class indices 0-4 (the order of :data:`RACES`)."""
    return pd.Categorical(manifest["race"], categories=list(RACES)).codes.astype("int32")


def decode_and_resize(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decode JPEG/PNG/BMP/GIF bytes to float32 RGB (grey and RGBA converted) resized to a square."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


#: Batches each pipeline keeps ready ahead of the model.
PREFETCH_BATCHES = 2


def prefetched(data: tf.data.Dataset) -> tf.data.Dataset:
    """The end of every faceaudit pipeline: a fixed prefetch, deterministic order, and tf.data's autotuner off.

    The autotuner's optimisation thread backs off to sleeps of up to a minute during long epochs and destroying
    the iterator waits for it (measured: 33 s lost after each 50 s cnn epoch on UTKFace-64px), so map
    parallelism (:func:`faceaudit.config.usable_cpus`) and prefetch are set explicitly instead.
    """
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return data.prefetch(PREFETCH_BATCHES).with_options(options)


def image_dataset(
    manifest: pd.DataFrame,
    image_size: int,
    batch_size: int = 64,
    *,
    with_labels: bool = True,
    shuffle: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of ``image`` (and race index) read from the manifest's ``path`` column, prefetched."""
    paths = manifest["path"].astype(str).to_numpy()
    if with_labels:
        data = tf.data.Dataset.from_tensor_slices((paths, race_codes(manifest)))
    else:
        data = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(path, *label):
        image = decode_and_resize(tf.io.read_file(path), image_size)
        return (image, *label) if label else image

    return prefetched(data.map(load, num_parallel_calls=usable_cpus(), deterministic=True).batch(batch_size))


def _example(row: pd.Series) -> bytes:
    def feature(value) -> tf.train.Feature:
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    features = {
        "image": feature(Path(row["path"]).read_bytes()),
        "image_id": feature(str(row["image_id"]).encode()),
        "sha256": feature(str(row["sha256"]).encode()),
        "age": feature(row["age"]),
        "gender": feature(GENDERS.index(row["gender"])),
        "race": feature(RACES.index(row["race"])),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def export_tfrecords(manifest: pd.DataFrame, out_dir: Path, shards: int = 4, progress: bool = True) -> list[Path]:
    """Write each split as ``<split>-NNNNN-of-NNNNN.tfrecord.gz`` shards (GZIP), the seed's layout.

    Rows go round-robin into shards in image-id order; the original encoded bytes are stored, so a
    read-back returns byte-identical images.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    bar = tqdm(total=len(manifest), desc="writing TFRecords", unit="img", disable=not progress or None)
    for split in SPLITS:
        rows = manifest[manifest["split"] == split].sort_values("image_id")
        if rows.empty:
            continue
        names = [out_dir / f"{split}-{i:05d}-of-{shards:05d}.tfrecord.gz" for i in range(shards)]
        partials = [name.with_name(f".{name.name}.partial") for name in names]
        writers = [tf.io.TFRecordWriter(str(p), options) for p in partials]
        try:
            for index, (_, row) in enumerate(rows.iterrows()):
                writers[index % shards].write(_example(row))
                bar.update()
        finally:
            for writer in writers:
                writer.close()
        for partial, name in zip(partials, names):
            partial.replace(name)
        written += names
    bar.close()
    return written


def read_tfrecords(paths: list[Path] | list[str]) -> tf.data.Dataset:
    """Parsed examples (dicts of the exported features) from GZIP TFRecord shards, in file order."""
    data = tf.data.TFRecordDataset([str(p) for p in paths], compression_type="GZIP")
    return data.map(lambda record: tf.io.parse_single_example(record, _TFRECORD_FEATURES))
