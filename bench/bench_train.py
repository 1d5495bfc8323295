"""Training and inference throughput (images/s) and parameter count of every backbone on this machine.

Reads real UTKFace-64px images from $FACEAUDIT_UTK64 (the archive), resized to each backbone's own input.
A few timed batches each (after one warm-up batch), so the whole table takes a few minutes; ratios are
against the ``cnn`` backbone measured in the same run. dlib-resnet's rate is descriptor extraction (the
frozen network, the slow part) plus its Keras head.

    FACEAUDIT_UTK64=/work/shared/data/UTKFace-64px.tar.gz python bench/bench_train.py [--backbones cnn,vgg16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _images(manifest, size: int, n: int) -> np.ndarray:
    from faceaudit.training.data import load_images

    return load_images(manifest.head(n), size, progress=False).astype("float32")


def _rate(step, batch, repeats: int) -> float:
    step(batch)  # warm-up: tracing and allocation
    start = time.perf_counter()
    for _ in range(repeats):
        step(batch)
    return repeats * len(batch[0] if isinstance(batch, tuple) else batch) / (time.perf_counter() - start)


def bench_image_backbone(name: str, manifest, repeats: int) -> dict:
    from faceaudit.training.backbones import build_backbone, build_image_model, get_backbone

    spec = get_backbone(name)
    size = spec.input_size
    batch = 16 if size <= 128 else (8 if size <= 260 else 4)
    net = build_backbone(spec, size, None, spec.default_alpha)
    model = build_image_model(net, size, spec.preprocess, frozen_statistics=False, embedding_dim=128, dropout=0.3)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = _images(manifest, size, batch)
    y = np.eye(5, dtype="float32")[np.arange(batch) % 5]
    train = _rate(lambda b: model.train_on_batch(*b), (x, y), repeats)
    infer = _rate(lambda b: model.predict_on_batch(b), x, repeats)
    return {"backbone": name, "input": size, "params": model.count_params(), "batch": batch,
            "train_img_s": train, "infer_img_s": infer}


def bench_dlib(manifest, repeats: int) -> dict:
    from faceaudit.models.dlib_features import _describe
    from faceaudit.training.backbones import build_descriptor_model

    paths = manifest["path"].astype(str).head(8 * (repeats + 1)).tolist()
    _describe(paths[:2], "align")
    start = time.perf_counter()
    features = _describe(paths, "align")
    extract = len(paths) / (time.perf_counter() - start)
    head = build_descriptor_model(128, 128, 0.3, mean=features.mean(0), variance=features.var(0) + 1e-6)
    head.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.repeat(features, 8, axis=0)
    y = np.eye(5, dtype="float32")[np.arange(len(x)) % 5]
    head_train = _rate(lambda b: head.train_on_batch(*b), (x, y), repeats)
    head_infer = _rate(lambda b: head.predict_on_batch(b), x, repeats)
    return {"backbone": "dlib-resnet", "input": 150, "params": head.count_params(), "batch": len(paths),
            "train_img_s": 1 / (1 / extract + 1 / head_train), "infer_img_s": 1 / (1 / extract + 1 / head_infer),
            "note": f"descriptors {extract:.1f} img/s (1 process); params = Keras head only"}


def main(argv=None) -> int:
    from faceaudit.training.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated backbone names")
    parser.add_argument("--repeats", type=int, default=2, help="timed batches per measurement")
    args = parser.parse_args(argv)
    source = os.environ.get("FACEAUDIT_UTK64")
    if not source:
        print("set FACEAUDIT_UTK64 to the UTKFace-64px archive", file=sys.stderr)
        return 2
    from faceaudit.datasets.manifest import load_dataset

    manifest = load_dataset(source, progress=False).split("train")
    names = [n for n in args.backbones.split(",") if n]
    if "cnn" not in names:
        names.insert(0, "cnn")
    rows = []
    for name in names:
        start = time.perf_counter()
        row = bench_dlib(manifest, args.repeats) if name == "dlib-resnet" else bench_image_backbone(name, manifest, args.repeats)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(f"  measured {name} in {row['seconds']:.0f}s: {row['params']:,} params, train {row['train_img_s']:.1f} img/s, "
              f"inference {row['infer_img_s']:.1f} img/s", file=sys.stderr, flush=True)
    base = rows[0]
    load = os.getloadavg()[0]
    print(f"\nbackbone throughput on {os.cpu_count()} CPU cores (1-min load average at the end: {load:.1f})")
    print(f"{'backbone':20} {'input':>5} {'params':>12} {'train img/s':>12} {'x cnn':>7} {'infer img/s':>12} {'x cnn':>7}")
    for row in rows:
        print(f"{row['backbone']:20} {row['input']:>5} {row['params']:>12,} {row['train_img_s']:>12.1f} "
              f"{row['train_img_s'] / base['train_img_s']:>7.3f} {row['infer_img_s']:>12.1f} "
              f"{row['infer_img_s'] / base['infer_img_s']:>7.3f}" + (f"  ({row['note']})" if row.get("note") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
