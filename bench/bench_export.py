"""Benchmark model export: time, size and inference speed per format, and who pays for compression.

    python bench/bench_export.py [RUN] [--data UTKFace-64px.tar.gz] [--batch-size 64]

For a trained run (default ``runs/cnn64-e4``): export to SavedModel, TFLite float32 / float16 / int8 and ONNX
(float32, float16, int8), then run each exported model over the run's UTKFace test split (images decoded once by
``datasets/tfdata.image_dataset``; the inference timing covers the model only). Each format's predictions become a
predictions table audited by ``faceaudit.audit``, and the original Keras model's audit is compared with each
quantised one by the compare machinery: per-race paired accuracy change (Newcombe, simultaneous over the family)
and the excess loss beyond the whole set's change (group vs rest, MOVER, Bonferroni over the groups).
The dlib-resnet head is not benchmarked (its input is dlib descriptors whose extraction dominates; see the report).
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")

VARIANTS = [("savedmodel", None), ("tflite", None), ("tflite", "float16"), ("tflite", "int8"),
            ("onnx", None), ("onnx", "float16"), ("onnx", "int8")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, default=Path("runs/cnn64-e4"))
    parser.add_argument("--data", type=Path, help="data source (default: run.json's)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import faceaudit
    from faceaudit.audit.report.compare import excess_tests, load_folder, paired_tests
    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.datasets.tfdata import image_dataset
    from faceaudit.seams.predictions import PredictionsTable
    from faceaudit.seams.run import RunRecord
    from faceaudit.training.export import export_model, run_exported
    from faceaudit.training.inference import contract_model, load_model

    run = RunRecord.read(args.run)
    if run.backbone == "dlib-resnet":
        print("dlib-resnet head: skipped (descriptor extraction, not the head, dominates; not benchmarked)")
        return 0
    schema = run.schema
    dataset = load_dataset(args.data or run.data["source"], age_bands=schema.age_bands, schema=schema,
                           progress=False)
    test = dataset.split("test").reset_index(drop=True)
    size = int(run.image_size)
    images = np.concatenate([np.asarray(b) for b in image_dataset(test, size, 256, with_labels=False)])
    print(f"{args.run}: {run.backbone} {size}px, {len(test)} test images, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs")

    rows, probs = [], {}
    keras_model = contract_model(load_model(args.run / "model.keras"), schema=schema)
    keras_model.predict(images[:args.batch_size], verbose=0)  # warm-up
    start = time.perf_counter()
    probs["keras"] = np.asarray(keras_model.predict(images, batch_size=args.batch_size, verbose=0)[0])
    keras_s = time.perf_counter() - start
    rows.append(("keras", "-", (args.run / "model.keras").stat().st_size, float("nan"), len(test) / keras_s))
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for fmt, quant in VARIANTS:
            name = fmt if quant is None else f"{fmt}-{quant}"
            start = time.perf_counter()
            folder = export_model(args.run, fmt, quant, Path(tmp) / name, data=args.data)
            export_s = time.perf_counter() - start
            total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
            run_exported(folder, fmt, images[:args.batch_size], args.batch_size)  # warm-up (and graph load)
            start = time.perf_counter()
            out = run_exported(folder, fmt, images, args.batch_size)
            speed = len(test) / (time.perf_counter() - start)
            probs[name] = out["probabilities"]
            rows.append((fmt, quant or "float32", total, export_s, speed))
            print(f"  {name}: exported in {export_s:.1f} s", file=sys.stderr)

        print()
        print("| format | weights | size (MB) | export (s) | inference (img/s) | test accuracy | max |Δp| vs keras |")
        print("|---|---|---:|---:|---:|---:|---:|")
        labels = test[schema.target].astype(str).to_numpy()
        classes = np.asarray(schema.classes)
        names = ["keras"] + [f if q is None else f"{f}-{q}" for f, q in VARIANTS]
        for name, (fmt, quant, total, export_s, speed) in zip(names, rows):
            acc = float(np.mean(classes[probs[name].argmax(1)] == labels))
            diff = float(np.max(np.abs(probs[name] - probs["keras"])))
            print(f"| {fmt} | {quant} | {total / 1e6:.2f} | {'–' if np.isnan(export_s) else f'{export_s:.1f}'} | "
                  f"{speed:,.0f} | {100 * acc:.2f}% | {diff:.2g} |")

        audits = {}
        for name in ("keras", "tflite-float16", "tflite-int8", "onnx-int8"):
            # int8 outputs are quantised (steps of about 1/256): rows sum to 1 only within ~0.01
            table = PredictionsTable.from_probabilities(test, probs[name] / probs[name].sum(1, keepdims=True), schema)
            result = faceaudit.audit(table, schema=schema, tsne=False, temperature=False, n_boot=200,
                                     model={"name": name, "kind": "predictions", "source": str(args.run)},
                                     data={"source": str(dataset.source), "fingerprint": dataset.fingerprint,
                                           "split": "test", "n": len(test)})
            audits[name] = load_folder(result.write(Path(tmp) / f"audit-{name}"))
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
