"""Training inputs: images held in memory as uint8, deterministic per-epoch order and augmentation.

Augmentation is stateless (each batch's flips, rotations and zooms are drawn from ``(seed, epoch, batch)``),
so an epoch is the same whether a run went straight through or resumed from a checkpoint.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

from faceaudit.config import usable_cpus
from faceaudit.datasets.tfdata import image_dataset, label_codes, prefetched


def load_images(manifest: pd.DataFrame, size: int, progress: bool = True, desc: str = "loading images") -> np.ndarray:
    """All manifest images decoded and resized to ``size`` x ``size``, as uint8 [n, size, size, 3]."""
    out = np.empty((len(manifest), size, size, 3), dtype=np.uint8)
    data = image_dataset(manifest, size, batch_size=256, with_labels=False)
    start = 0
    with tqdm(total=len(manifest), desc=desc, unit="img", disable=not progress or None, leave=False) as bar:
        for batch in data:
            values = np.rint(batch.numpy()).astype(np.uint8)
            out[start:start + len(values)] = values
            start += len(values)
            bar.update(len(values))
    return out


def class_prior(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of the training labels, add-one smoothed so that no class has prior 0 (its log is used)."""
    return (np.bincount(labels, minlength=n_classes) + 1.0) / (len(labels) + n_classes)


def class_weight_vector(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights per target class, normalised to mean 1 over the training samples."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = int((counts > 0).sum())
    weights = np.where(counts > 0, len(labels) / (max(present, 1) * np.maximum(counts, 1)), 0.0)
    return weights


def seeded_order(manifest: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows in a random order fixed by ``seed`` and each image id (not by row position), so the first ``n``
    rows are the same random sample however the manifest was sorted or extended."""
    keys = [hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest() for image_id in manifest["image_id"]]
    return manifest.assign(_key=keys).sort_values("_key").drop(columns="_key").reset_index(drop=True)


def subset(manifest: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows: a seeded random sample (the first ``n`` of :func:`seeded_order`), in id order."""
    if n >= len(manifest):
        return manifest
    return seeded_order(manifest, seed).head(n).sort_values("image_id").reset_index(drop=True)


def _augment(images: tf.Tensor, seed: tf.Tensor, rotation_deg: float, zoom: float) -> tf.Tensor:
    """Flip, rotate and zoom a batch with one projective transform per image, drawn from a stateless seed."""
    n = tf.shape(images)[0]
    size = tf.cast(tf.shape(images)[1], tf.float32)
    u = tf.random.stateless_uniform([n, 3], seed=seed)
    flip = tf.where(u[:, 0] < 0.5, -1.0, 1.0)
    theta = (u[:, 1] * 2 - 1) * (rotation_deg * math.pi / 180.0)
    scale = 1.0 + (u[:, 2] * 2 - 1) * zoom
    c = (size - 1) / 2
    a0, a1 = scale * flip * tf.cos(theta), -scale * tf.sin(theta)
    b0, b1 = scale * flip * tf.sin(theta), scale * tf.cos(theta)
    a2, b2 = c - a0 * c - a1 * c, c - b0 * c - b1 * c
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def train_dataset(
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    batch_size: int,
    seed: int,
    epoch: int,
    sample_weights: np.ndarray | None = None,
    augment: bool = False,
    rotation: float = 0.0,
    zoom: float = 0.0,
) -> tf.data.Dataset:
    """One epoch of shuffled batches ``(x, one-hot y[, w])``; order and augmentation depend only on
    ``(seed, epoch)``."""
    order = np.random.default_rng([seed, epoch]).permutation(len(labels))
    tensors = [inputs[order], labels[order]]
    if sample_weights is not None:
        tensors.append(sample_weights[order].astype("float32"))
    data = tf.data.Dataset.from_tensor_slices(tuple(tensors)).batch(batch_size).enumerate()
    images = inputs.ndim == 4

    def prepare(index, batch):
        x, y, *w = batch
        x = tf.cast(x, tf.float32)
        if images and augment:
            x = _augment(x, tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64) * 1_000_003 + index]),
                         rotation, zoom)
        return (x, tf.one_hot(y, n_classes), *w)

    return prefetched(data.map(prepare, num_parallel_calls=usable_cpus()))


def eval_dataset(inputs: np.ndarray, labels: np.ndarray, batch_size: int, n_classes: int) -> tf.data.Dataset:
    """Validation batches ``(x, one-hot y)`` in order, without augmentation."""
    data = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch_size)
    return prefetched(data.map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, n_classes))))


def shard_by_data(data: tf.data.Dataset) -> tf.data.Dataset:
    """Multi-worker input: shard by data (every worker runs the same pipeline and keeps its share of each global
    batch), never by file: the arrays have no files, and the share is the same on every run."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


__all__ = ["load_images", "class_weight_vector", "seeded_order", "subset", "train_dataset", "eval_dataset",
           "shard_by_data", "label_codes"]
