"""TensorFlow input pipelines from a manifest, and the seed's sharded GZIP TFRecord export.

Images enter models as float32 RGB in [0, 255] at the model's input size; each model does its own
preprocessing inside, so a saved model file needs nothing from this module to be used.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

from faceaudit.config import SPLITS, usable_cpus
from faceaudit.files import atomic_path
from faceaudit.taxonomy import AGE_BAND, UTKFACE, LabelSchema

#: Written when an image's age is known only as a band (FairFace), and read for a missing ``age_band`` code.
MISSING_CODE = -1


def tfrecord_features(schema: LabelSchema = UTKFACE) -> dict:
    """The parse spec of an exported example: bytes, id, SHA-256, age, and one code per labelled attribute
    (UTKFace: ``gender`` and ``race`` codes, the seed's layout) plus ``age_band`` (-1 when absent)."""
    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "image_id": tf.io.FixedLenFeature([], tf.string),
        "sha256": tf.io.FixedLenFeature([], tf.string),
        "age": tf.io.FixedLenFeature([], tf.int64),
    }
    for name in sorted(a.name for a in schema.attributes):
        features[name] = tf.io.FixedLenFeature([], tf.int64)
    features[AGE_BAND] = tf.io.FixedLenFeature([], tf.int64, default_value=MISSING_CODE)
    return features


def label_codes(manifest: pd.DataFrame, schema: LabelSchema = UTKFACE, attribute: str | None = None) -> np.ndarray:
    """An attribute's labels (the schema's target by default) as integer class indices in the schema's order."""
    values = schema.attribute(attribute or schema.target).values
    column = manifest[attribute or schema.target]
    return pd.Categorical(column.astype(str), categories=list(values)).codes.astype("int32")


def decode_and_resize(encoded: tf.Tensor, image_size: int, method: str = "bilinear",
                      antialias: bool = True) -> tf.Tensor:
    """Decode JPEG/PNG/BMP/GIF bytes to float32 RGB (grey and RGBA converted) resized to a square (``method`` one
    of ``tf.image.resize``'s; a model contract names the one its model was trained with)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(image, (image_size, image_size), method=method, antialias=antialias)
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
    schema: LabelSchema = UTKFACE,
    resize: str = "bilinear",
    antialias: bool = True,
) -> tf.data.Dataset:
    """Batches of ``image`` (and the schema's target index) read from the manifest's ``path`` column, prefetched;
    ``resize`` and ``antialias`` as for :func:`decode_and_resize`."""
    paths = manifest["path"].astype(str).to_numpy()
    if with_labels:
        data = tf.data.Dataset.from_tensor_slices((paths, label_codes(manifest, schema)))
    else:
        data = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(path, *label):
        image = decode_and_resize(tf.io.read_file(path), image_size, resize, antialias)
        return (image, *label) if label else image

    return prefetched(data.map(load, num_parallel_calls=usable_cpus(), deterministic=True).batch(batch_size))


def _example(row: pd.Series, schema: LabelSchema) -> bytes:
    def feature(value) -> tf.train.Feature:
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    features = {
        "image": feature(Path(row["path"]).read_bytes()),
        "image_id": feature(str(row["image_id"]).encode()),
        "sha256": feature(str(row["sha256"]).encode()),
        "age": feature(MISSING_CODE if pd.isna(row["age"]) else row["age"]),
    }
    for attribute in sorted(schema.attributes, key=lambda a: a.name):
        features[attribute.name] = feature(attribute.values.index(str(row[attribute.name])))
    bands = schema.age_bands.labels
    band = row.get(AGE_BAND)
    features[AGE_BAND] = feature(bands.index(str(band)) if not pd.isna(band) and str(band) in bands else MISSING_CODE)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def export_tfrecords(manifest: pd.DataFrame, out_dir: Path, shards: int = 4, progress: bool = True,
                     schema: LabelSchema = UTKFACE) -> list[Path]:
    """Write each split as ``<split>-NNNNN-of-NNNNN.tfrecord.gz`` shards (GZIP), the seed's layout.

    Rows go round-robin into shards in image-id order; the original encoded bytes are stored, so a
    read-back returns byte-identical images. Each shard is written under a temporary name and renamed when its
    split is complete.
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
        with ExitStack() as stack:
            partials = [stack.enter_context(atomic_path(name)) for name in names]
            writers = [tf.io.TFRecordWriter(str(p), options) for p in partials]
            try:
                for index, (_, row) in enumerate(rows.iterrows()):
                    writers[index % shards].write(_example(row, schema))
                    bar.update()
            finally:
                for writer in writers:
                    writer.close()
        written += names
    bar.close()
    return written


def read_tfrecords(paths: list[Path] | list[str], schema: LabelSchema = UTKFACE) -> tf.data.Dataset:
    """Parsed examples (dicts of the exported features) from GZIP TFRecord shards, in file order."""
    data = tf.data.TFRecordDataset([str(p) for p in paths], compression_type="GZIP")
    features = tfrecord_features(schema)
    return data.map(lambda record: tf.io.parse_single_example(record, features))
