"""Time ``faceaudit data inspect`` stage by stage on a real archive (target: UTKFace-64px, no MTCNN, < 3 min).

    python bench/bench_inspect.py /work/shared/data/UTKFace-64px.tar.gz [--faces] [--out /tmp/bench-inspect]

Prints seconds per stage and, as a peer measured in the same run, the ratio of the whole inspection to one
``load_dataset`` (decode + SHA-256 of every image), so the figure travels between machines.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--faces", action="store_true", help="include the MTCNN face check")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from faceaudit.datasets.inspect import InspectOptions, inspect_dataset, render_data_report, write_outputs
    from faceaudit.datasets.manifest import load_dataset

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-inspect-"))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    dataset = load_dataset(args.data)
    timings["load dataset (peer)"] = time.perf_counter() - start
    inspection = inspect_dataset(dataset, InspectOptions(faces=args.faces))
    timings.update(inspection.timings)
    mark = time.perf_counter()
    write_outputs(inspection, out)
    timings["write data.json + CSVs"] = time.perf_counter() - mark
    mark = time.perf_counter()
    render_data_report(inspection, out, pdf=False)
    timings["render HTML"] = time.perf_counter() - mark
    mark = time.perf_counter()
    render_data_report(inspection, out, pdf=True)
    timings["render HTML + PDF"] = time.perf_counter() - mark
    # the command renders once (HTML + PDF): count that, not the HTML-only pass above
    total = sum(v for k, v in timings.items() if k != "render HTML")

    print(f"data: {args.data}  images: {len(dataset.manifest):,}  cores: {os.cpu_count()}  "
          f"load average: {os.getloadavg()[0]:.2f}")
    for stage, seconds in timings.items():
        print(f"  {stage:<28} {seconds:8.1f} s")
    if inspection.face_rate:
        print(f"  MTCNN rate                   {inspection.face_rate:8.1f} img/s")
    print(f"total (load + inspect + write + HTML/PDF): {total:.1f} s   target: < 180 s without MTCNN   "
          f"{'PASS' if total < 180 or args.faces else 'MISS'}")
    print(f"ratio to one load_dataset: {total / timings['load dataset (peer)']:.1f}x")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
