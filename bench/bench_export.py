"""Benchmark model export: time, size and inference speed per format, and who pays for compression.

    python bench/bench_export.py [RUN] [--data UTKFace-64px.tar.gz] [--batch-size 64]
    python bench/bench_export.py --dlib [--max-train 1000] [--max-val 300] [--epochs 3] [--dlib-framing align]

For a trained run (default ``runs/cnn64-e4``): export to SavedModel, TFLite float32 / float16 / int8 and ONNX
(float32, float16, int8), then run each exported model over the run's UTKFace test split (images decoded once by
``datasets/tfdata.image_dataset``; the inference timing covers the model only, loaded and warmed up beforehand).
Each format's predictions become a predictions table audited by ``faceaudit.audit``, and the original Keras
model's audit is compared with each quantised one by the compare machinery: per-race paired accuracy change
(Newcombe, simultaneous over the family) and the excess loss beyond the whole set's change (group vs rest, MOVER,
Bonferroni over the groups).

A dlib-resnet run (or ``--dlib``: a small head trained here, into a temporary folder, on ``--max-train`` training
and ``--max-val`` validation images of ``--data``, default ``$FACEAUDIT_UTK64``) is benchmarked the same way, but
its exported model is the Keras head only: its input is dlib's 128-d descriptors, so the inference speed is in
descriptor rows/s, and dlib's descriptor extraction (the dominant cost, CPU-only) is timed separately in images/s
on ``--extract-sample`` test images with an empty cache. The test split's descriptors come from the descriptor
cache (``$FACEAUDIT_CACHE``), computed first where missing; ``--max-test`` takes a seeded subset of the test split.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")

VARIANTS = [("savedmodel", None), ("tflite", None), ("tflite", "float16"), ("tflite", "int8"),
            ("onnx", None), ("onnx", "float16"), ("onnx", "int8")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="run folder (default runs/cnn64-e4; none with --dlib)")
    parser.add_argument("--data", type=Path, help="data source (default: run.json's; --dlib: $FACEAUDIT_UTK64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dlib", action="store_true", help="train a small dlib-resnet head here and benchmark it")
    parser.add_argument("--max-train", type=int, default=1000, help="--dlib: training images (default 1000)")
    parser.add_argument("--max-val", type=int, default=300, help="--dlib: validation images (default 300)")
    parser.add_argument("--epochs", type=int, default=3, help="--dlib: head epochs (default 3)")
    parser.add_argument("--dlib-framing", default="align", help="--dlib: chip framing (default align: one pass)")
    parser.add_argument("--max-test", type=int, help="dlib: a seeded subset of the test split (default: all of it)")
    parser.add_argument("--extract-sample", type=int, default=256,
                        help="dlib: test images whose descriptor extraction is timed with an empty cache")
    args = parser.parse_args()
    if args.dlib and args.run is not None:
        parser.error("give a run folder or --dlib, not both")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        run_dir = _train_dlib_head(args, Path(tmp)) if args.dlib else (args.run or Path("runs/cnn64-e4"))
        return _bench(run_dir, args, Path(tmp))


def _train_dlib_head(args, tmp: Path) -> Path:
    """A dlib-resnet head on a seeded subset of --data's train and val splits (the whole test split kept)."""
    from dataclasses import replace

    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.training import data as tfdata
    from faceaudit.training.config import TrainConfig
    from faceaudit.training.trainer import train

    data = args.data or Path(os.environ.get("FACEAUDIT_UTK64", "UTKFace-64px.tar.gz"))
    args.data = data
    dataset = load_dataset(data, progress=False)
    parts = [tfdata.subset(dataset.split("train"), args.max_train, 0),
             tfdata.subset(dataset.split("val"), args.max_val, 0), dataset.split("test")]
    subset = replace(dataset, manifest=pd.concat(parts, ignore_index=True))
    out = tmp / "dlib-head"
    print(f"training a dlib-resnet head ({args.dlib_framing}, {args.epochs} epochs) on {len(parts[0])} train and "
          f"{len(parts[1])} val images of {data} ...", file=sys.stderr)
    start = time.perf_counter()
    train(TrainConfig(data=data, dataset=subset, out=out, backbone="dlib-resnet", epochs=args.epochs,
                      dlib_framing=args.dlib_framing, progress=False))
    print(f"  trained in {time.perf_counter() - start:.0f} s (descriptors included)", file=sys.stderr)
    return out


def _extraction_speed(rows, framing: str, n: int) -> tuple[float, int]:
    """dlib descriptor extraction images/s on the first n rows, with an empty cache (all CPUs this process may use)."""
    from faceaudit.models.dlib_features import descriptors

    sample = rows.iloc[:n]
    previous = os.environ.get("FACEAUDIT_CACHE")
    with tempfile.TemporaryDirectory(prefix="bench-dlib-cache-") as cache:
        os.environ["FACEAUDIT_CACHE"] = cache
        try:
            start = time.perf_counter()
            descriptors(sample, framing, progress=False)
            seconds = time.perf_counter() - start
        finally:
            if previous is None:
                os.environ.pop("FACEAUDIT_CACHE", None)
            else:
                os.environ["FACEAUDIT_CACHE"] = previous
    return len(sample) / seconds, len(sample)


def _bench(run_dir: Path, args, tmp: Path) -> int:
    import faceaudit
    from faceaudit.auditing.comparison import excess_tests, load_folder, paired_tests
    from faceaudit.config import usable_cpus
    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.models.export import export_model, load_exported
    from faceaudit.models.inference import contract_model, load_model
    from faceaudit.seams.predictions import PredictionsTable
    from faceaudit.seams.run import RunRecord

    run = RunRecord.read(run_dir)
    dlib = run.backbone == "dlib-resnet"
    schema = run.schema
    data = args.data or run.data["source"]
    dataset = load_dataset(data, age_bands=schema.age_bands, schema=schema, progress=False)
    test = dataset.split("test").reset_index(drop=True)
    label = "runs/<tmp>/dlib-head (trained here)" if args.dlib else str(run_dir)
    if dlib:
        from faceaudit.models.dlib_features import descriptors

        framing = run.dlib_framing or "align"
        if args.max_test and args.max_test < len(test):
            test = test.sample(args.max_test, random_state=0).sort_values("image_id").reset_index(drop=True)
        extract_speed, extract_n = _extraction_speed(test, framing, args.extract_sample)
        start = time.perf_counter()
        inputs, stats = descriptors(test, framing, progress=False)
        fill_s = time.perf_counter() - start
        unit = "rows"
        print(f"{label}: dlib-resnet head on 128-d descriptors ({framing}), {len(test)} test images"
              f"{' (a seeded subset)' if args.max_test and len(test) == args.max_test else ''}, batch "
              f"{args.batch_size}, {os.cpu_count()} CPUs ({usable_cpus()} usable)")
        print(f"dlib descriptor extraction: {extract_speed:.1f} images/s ({extract_n} test images, empty cache, "
              f"{usable_cpus()} worker processes, {'2 passes (chip + mirror)' if '+mirror' in framing else '1 pass'} "
              f"per image); test descriptors: {stats['cached']} cached, {stats['computed']} computed in "
              f"{fill_s:.0f} s")
    else:
        from faceaudit.datasets.tfdata import image_dataset

        size = int(run.image_size)
        inputs = np.concatenate([np.asarray(b) for b in image_dataset(test, size, 256, with_labels=False)])
        unit = "img"
        print(f"{label}: {run.backbone} {size}px, {len(test)} test images, batch {args.batch_size}, "
              f"{os.cpu_count()} CPUs")

    rows, probs = [], {}
    keras_model = contract_model(load_model(run_dir / "model.keras"), expect_images=not dlib, schema=schema)
    keras_model.predict(inputs[:args.batch_size], verbose=0)  # warm-up
    start = time.perf_counter()
    probs["keras"] = np.asarray(keras_model.predict(inputs, batch_size=args.batch_size, verbose=0)[0])
    keras_s = time.perf_counter() - start
    rows.append(("keras", "-", (run_dir / "model.keras").stat().st_size, float("nan"), len(test) / keras_s))
    for fmt, quant in VARIANTS:
        name = fmt if quant is None else f"{fmt}-{quant}"
        start = time.perf_counter()
        folder = export_model(run_dir, fmt, quant, tmp / name, data=args.data)
        export_s = time.perf_counter() - start
        total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
        predict = load_exported(folder, fmt, args.batch_size)
        predict(inputs[:args.batch_size])  # warm-up
        start = time.perf_counter()
        out = predict(inputs)
        speed = len(test) / (time.perf_counter() - start)
        probs[name] = out["probabilities"]
        rows.append((fmt, quant or "float32", total, export_s, speed))
        print(f"  {name}: exported in {export_s:.1f} s", file=sys.stderr)

    print()
    print(f"| format | weights | size (MB) | export (s) | inference ({unit}/s) | "
          + ("end to end with extraction (img/s) | " if dlib else "") + "test accuracy | max |Δp| vs keras |")
    print("|---|---|---:|---:|---:|" + ("---:|" if dlib else "") + "---:|---:|")
    labels = test[schema.target].astype(str).to_numpy()
    classes = np.asarray(schema.classes)
    names = ["keras"] + [f if q is None else f"{f}-{q}" for f, q in VARIANTS]
    for name, (fmt, quant, total, export_s, speed) in zip(names, rows):
        acc = float(np.mean(classes[probs[name].argmax(1)] == labels))
        diff = float(np.max(np.abs(probs[name] - probs["keras"])))
        both = f"{1 / (1 / extract_speed + 1 / speed):.1f} | " if dlib else ""
        print(f"| {fmt} | {quant} | {total / 1e6:.2f} | {'–' if np.isnan(export_s) else f'{export_s:.1f}'} | "
              f"{speed:,.0f} | {both}{100 * acc:.2f}% | {diff:.2g} |")

    audits = {}
    for name in ("keras", "tflite-float16", "tflite-int8", "onnx-int8"):
        # int8 outputs are quantised (steps of about 1/256): rows sum to 1 only within ~0.01
        table = PredictionsTable.from_probabilities(test, probs[name] / probs[name].sum(1, keepdims=True), schema)
        result = faceaudit.audit(table, schema=schema, tsne=False, temperature=False, n_boot=200,
                                 model={"name": name, "kind": "predictions", "source": str(run_dir)},
                                 data={"source": str(dataset.source), "fingerprint": dataset.fingerprint,
                                       "split": "test", "n": len(test)})
        audits[name] = load_folder(result.write(tmp / f"audit-{name}"))
    for name in ("tflite-float16", "tflite-int8", "onnx-int8"):
        tests = paired_tests(audits["keras"], audits[name])
        excess = excess_tests(audits["keras"], audits[name])
        level = float(tests["interval_level"].iloc[0])
        print(f"\n{name} vs keras, per race (change: Newcombe paired, {100 * level:.2f}% each, family of "
              f"{int(tests['family'].iloc[0])}; excess loss: group vs rest, Bonferroni over "
              f"{int(excess['family'].iloc[0])} groups)")
        print("| race | n | keras | quantised | change [CI] (pts) | only keras right | only quantised right | "
              "excess loss [CI] (pts) | verdict |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for _, t in tests[tests["grouping"].isin(["overall", schema.target])].iterrows():
            e = excess[(excess["grouping"] == t["grouping"]) & (excess["group"] == t["group"])]
            loss = "–" if e.empty else (f"{100 * e['excess_loss'].iloc[0]:+.2f} [{100 * e['excess_loss_lo'].iloc[0]:+.2f}, "
                                        f"{100 * e['excess_loss_hi'].iloc[0]:+.2f}]")
            verdict = t["verdict"] if e.empty else e["verdict"].iloc[0]
            print(f"| {t['group']} | {t['n']} | {100 * t['accuracy_a']:.2f}% | {100 * t['accuracy_b']:.2f}% | "
                  f"{100 * t['diff']:+.2f} [{100 * t['diff_lo']:+.2f}, {100 * t['diff_hi']:+.2f}] | "
                  f"{t['a_only_correct']} | {t['b_only_correct']} | {loss} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
