"""Benchmark audits past one machine: streamed audits of 1M, 10M and 100M predictions, and batch inference on Ray.

    python bench/bench_scale.py [--sizes 1M,10M,100M] [--peer-sizes 1M,10M] [--ray-size 10M]
                                [--run runs/cnn64-e4] [--data UTKFace-64px.tar.gz] [--skip-inference]

**Audit.** A simulated predictions table (UTKFace's five races, gender, age, a 10 % validation split, a model
whose accuracy differs by race) is written once as Parquet shards of 2.5M rows under ``$FACEAUDIT_CACHE/bench-scale``
(generation timed separately and reused). Each size is then audited by the command a user runs,
``faceaudit audit --predictions DIR --no-report`` (1,000 bootstrap resamples), in a fresh process that reports its
wall time and peak resident memory (``VmHWM``). The peer is today's in-memory path on the same rows (one
Parquet file, read whole), measured in the same run; ``--ray-size`` also reduces the shards on a local Ray
instance with 2 workers (driver memory shown; each worker holds one batch). Targets: 100M within 10 minutes and
under 4 GB resident.

**Inference.** ``faceaudit predict RUN --data DATA --split all`` (every image of the archive): the local engine (one
process) against ``--engine ray --workers 1`` and ``--workers 2``; images/s over the whole command, and over
``predict_s`` in predict.json (from the model opened to the last shard written: for Ray that includes starting Ray
and loading the model in each worker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("White", "Black", "Asian", "Indian", "Others")
#: Rows per shard and per generated chunk.
SHARD_ROWS, CHUNK_ROWS = 2_500_000, 1_000_000
#: The simulated model's margin for the true class, by race (Others is the hard class, as in UTKFace).
MARGIN = np.array([2.6, 2.3, 2.3, 2.0, 0.6])
#: Runs one command and reports its wall time and peak resident memory: VmHWM of its own address space (ru_maxrss
#: would carry over the forking parent's peak across exec).
RUNNER = ("import json, re, sys, time\n"
          "from faceaudit.cli import main\n"
          "start = time.perf_counter(); code = main(sys.argv[1:]); wall = time.perf_counter() - start\n"
          "peak = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
          "print(json.dumps({'code': code, 'wall_s': wall, 'peak_mb': peak / 1024}), file=sys.stderr)\n")


def _size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


def _chunk(rng: np.random.Generator, start: int, n: int):
    """One chunk of simulated predictions as an Arrow table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    race = rng.integers(0, 5, n)
    logits = rng.normal(0.0, 1.0, (n, 5)).astype(np.float32)
    logits[np.arange(n), race] += MARGIN[race].astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    ids = pc.binary_join_element_wise("img", pc.cast(pa.array(np.arange(start, start + n)), pa.string()), "")
    columns = {"image_id": ids,
               "race": pa.DictionaryArray.from_arrays(pa.array(race.astype(np.int8)), pa.array(CLASSES)),
               "gender": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 2, n).astype(np.int8)),
                                                        pa.array(["Male", "Female"])),
               "age": pa.array(rng.integers(1, 90, n).astype(np.int16)),
               "split": pa.DictionaryArray.from_arrays(pa.array((rng.random(n) < 0.1).astype(np.int8)),
                                                       pa.array(["test", "val"]))}
    for i, name in enumerate(CLASSES):
        columns[f"prob_{name}"] = pa.array(probs[:, i])
    return pa.table(columns)


def simulated_shards(n: int, root: Path) -> tuple[Path, float]:
    """The folder of ``n`` simulated predictions in shards (written once, then reused) and the seconds it took."""
    import pyarrow.parquet as pq

    folder = root / f"sim-{_label(n)}"
    done = json.loads((folder / "DONE").read_text()) if (folder / "DONE").exists() else {}
    if done.get("shard_rows") == SHARD_ROWS:
        return folder, done["seconds"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    rng = np.random.default_rng(n)
    for shard, first in enumerate(range(0, n, SHARD_ROWS)):
        rows = min(SHARD_ROWS, n - first)
        with pq.ParquetWriter(folder / f"part-{shard:05d}.parquet", _chunk(rng, 0, 1).schema) as writer:
            for offset in range(0, rows, CHUNK_ROWS):
                writer.write_table(_chunk(rng, first + offset, min(CHUNK_ROWS, rows - offset)))
        print(f"  generated {_label(n)}: shard {shard + 1} of {-(-n // SHARD_ROWS)}", flush=True)
    seconds = time.perf_counter() - start
    (folder / "DONE").write_text(json.dumps({"seconds": seconds, "shard_rows": SHARD_ROWS}))
    return folder, seconds


def one_file(n: int, root: Path) -> Path:
    """The same ``n`` rows as one Parquet file (the in-memory peer's input)."""
    import pyarrow.parquet as pq

    path = root / f"sim-{_label(n)}-one.parquet"
    if not path.exists():  # copied batch by batch, so this process stays small (its children are measured)
        shards = sorted(simulated_shards(n, root)[0].glob("*.parquet"))
        with pq.ParquetWriter(path.with_suffix(".partial"), pq.read_schema(shards[0])) as writer:
            for shard in shards:
                for batch in pq.ParquetFile(shard).iter_batches(batch_size=CHUNK_ROWS):
                    writer.write_batch(batch)
        path.with_suffix(".partial").rename(path)
    return path


def measured(argv: list[str]) -> dict:
    """Run ``faceaudit ARGV`` in a fresh process; its exit code, wall time and peak resident memory."""
    done = subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.startswith("{\"code\"")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"faceaudit {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    result = json.loads(lines[-1])
    result["summary"] = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    return result


def bench_audits(args, root: Path, out: Path) -> list[dict]:
    rows = []
    for n in args.sizes:
        folder, generated = simulated_shards(n, root)
        shards = len(list(folder.glob("*.parquet")))
        size_gb = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 1e9
        got = measured(["audit", "--predictions", str(folder), "--out", str(out / f"s{n}"), "--no-report"])
        rows.append({"rows": n, "how": "streamed, local", "shards": shards, "gb": size_gb, "gen_s": generated, **got})
        print(_line(rows[-1]), flush=True)
        if n in args.peer_sizes:
            path = one_file(n, root)
            got = measured(["audit", "--predictions", str(path), "--out", str(out / f"m{n}"), "--no-report"])
            rows.append({"rows": n, "how": "in memory (peer)", "shards": 1, "gb": path.stat().st_size / 1e9, **got})
            print(_line(rows[-1]), flush=True)
        if n == args.ray_size:
            got = measured(["audit", "--predictions", str(folder), "--out", str(out / f"r{n}"), "--no-report",
                            "--engine", "ray", "--workers", "2"])
            rows.append({"rows": n, "how": "streamed, Ray 2 workers", "shards": shards, "gb": size_gb, **got})
            print(_line(rows[-1]) + " (driver)", flush=True)
    return rows


def _line(row: dict) -> str:
    rate = row["rows"] / row["wall_s"] / 1e6
    return (f"{_label(row['rows']):>5} {row['how']:<24} {row['wall_s']:8.1f} s {rate:6.2f} M rows/s "
            f"peak {row['peak_mb'] / 1024:5.2f} GB   [{row['summary']}]")


def bench_inference(args, out: Path) -> list[dict]:
    rows = []
    for engine, workers in (("local", None), ("ray", 1), ("ray", 2)):
        target = out / f"pred-{engine}-{workers or 1}"
        argv = ["predict", str(args.run), "--out", str(target), "--data", str(args.data), "--split", "all"]
        if workers:
            argv += ["--engine", "ray", "--workers", str(workers)]
        got = measured(argv)
        info = json.loads((target / "predict.json").read_text())
        n = int(info["rows"])
        rows.append({"engine": engine, "workers": workers or 1, "images": n, **got, "inference_s": info["predict_s"]})
        print(f"  predict {engine:<5} {workers or 1} worker(s): {n:,} images, {got['wall_s']:6.1f} s whole command "
              f"({n / got['wall_s']:6.0f} img/s), {n / rows[-1]['inference_s']:6.0f} img/s in predict_s, "
              f"peak {got['peak_mb'] / 1024:4.2f} GB (driver)", flush=True)
    local = {r["engine"] + str(r["workers"]): r for r in rows}
    import pandas as pd

    def shards(folder: Path) -> pd.DataFrame:
        return pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("part-*.parquet"))], ignore_index=True)

    base = shards(out / "pred-local-1")
    for key in ("ray1", "ray2"):
        other = shards(out / f"pred-ray-{key[-1]}")
        probs = [c for c in base.columns if c.startswith("prob_")]
        diff = float(np.abs(base[probs].to_numpy() - other[probs].to_numpy()).max())
        print(f"  {key}: max |Δp| against the local engine {diff:.1e}; "
              f"{local[key]['wall_s'] / local['local1']['wall_s']:.2f}× the local command's time")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,10M,100M")
    parser.add_argument("--peer-sizes", default="1M,10M", help="sizes also audited in memory (the peer)")
    parser.add_argument("--ray-size", default="10M", help="size also reduced on Ray with 2 workers ('' for none)")
    parser.add_argument("--run", type=Path, default=Path("runs/cnn64-e4"), help="model for the inference part")
    parser.add_argument("--data", type=Path, default=None, help="images (default: $FACEAUDIT_UTK64)")
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()
    args.sizes = [_size(s) for s in args.sizes.split(",") if s.strip()]
    args.peer_sizes = {_size(s) for s in args.peer_sizes.split(",") if s.strip()}
    args.ray_size = _size(args.ray_size) if args.ray_size else None
    if not args.skip_inference:
        args.data = args.data or (Path(os.environ["FACEAUDIT_UTK64"]) if os.environ.get("FACEAUDIT_UTK64") else None)
        if args.data is None or not args.data.exists() or not args.run.exists():
            parser.error(f"the inference part needs a run ({args.run}) and images (--data or $FACEAUDIT_UTK64)")
    root = Path(os.environ.get("FACEAUDIT_CACHE", ".cache/faceaudit")) / "bench-scale"
    root.mkdir(parents=True, exist_ok=True)
    print(f"bench_scale on {os.cpu_count()} CPUs; simulated shards under {root}")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        audits = bench_audits(args, root, Path(tmp))
        inference = [] if args.skip_inference else bench_inference(args, Path(tmp))
    if inference:
        print("\n| engine | workers | images | whole command s | img/s (command) | img/s (predict_s) | driver peak GB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in inference:
            print(f"| {r['engine']} | {r['workers']} | {r['images']:,} | {r['wall_s']:.1f} | "
                  f"{r['images'] / r['wall_s']:,.0f} | {r['images'] / r['inference_s']:,.0f} | {r['peak_mb'] / 1024:.2f} |")
    print("\n| rows | how | shards | Parquet GB | wall s | M rows/s | peak GB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in audits:
        print(f"| {_label(r['rows'])} | {r['how']} | {r['shards']} | {r['gb']:.2f} | {r['wall_s']:.1f} | "
              f"{r['rows'] / r['wall_s'] / 1e6:.2f} | {r['peak_mb'] / 1024:.2f} |")
    target_met = True
    if audits:
        biggest = max(audits, key=lambda r: (r["rows"], r["how"] == "streamed, local"))
        target_met = biggest["wall_s"] < 600 and biggest["peak_mb"] < 4096
        print(f"\n{_label(biggest['rows'])} streamed: {biggest['wall_s']:.0f} s, peak "
              f"{biggest['peak_mb'] / 1024:.2f} GB (target < 600 s and < 4 GB: {'met' if target_met else 'NOT met'})")
    for n in sorted(args.peer_sizes):
        pair = {r["how"]: r for r in audits if r["rows"] == n}
        if "in memory (peer)" in pair and "streamed, local" in pair:
            s, m = pair["streamed, local"], pair["in memory (peer)"]
            print(f"{_label(n)}: streamed {s['wall_s'] / m['wall_s']:.2f}× the in-memory time, "
                  f"{s['peak_mb'] / m['peak_mb']:.2f}× its peak memory")
    return 0 if target_met else 1


if __name__ == "__main__":
    sys.exit(main())
