"""Benchmark: HTML + PDF report for one audit of a 2,400-image test set (target: under 30 s on 2 cores).

Builds a real audit first (real UTKFace pixels from $FACEAUDIT_UTK64, a scikit-learn pixel classifier, the real
audit engine with embeddings and t-SNE), unless an existing audit folder is given. Prints the render times, the
report's size and page count, and ratios against peers measured in the same run: the audit computation itself
and a bare WeasyPrint page (the fixed cost of starting a PDF).

    FACEAUDIT_UTK64=/work/shared/data/UTKFace-64px.tar.gz python bench/bench_report.py [AUDIT_DIR]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_IMAGES = 2400
TARGET_S = 30.0


def build_audit(folder: Path) -> float:
    """Write a real 2,400-image audit into ``folder``; returns the seconds faceaudit.audit took."""
    from PIL import Image
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import faceaudit
    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.seams.predictions import PredictionsTable

    RACES = faceaudit.UTKFACE.classes
    archive = os.environ.get("FACEAUDIT_UTK64")
    if not archive:
        sys.exit("set FACEAUDIT_UTK64 to UTKFace-64px.tar.gz (or pass an audit folder)")
    import pandas as pd

    dataset = load_dataset(Path(archive), progress=False)
    val = dataset.split("val")
    test = pd.concat([dataset.split("test"), val.iloc[: N_IMAGES - len(dataset.split("test"))]], ignore_index=True)
    val = val.iloc[N_IMAGES - len(dataset.split("test")):]
    train = dataset.split("train").sample(4000, random_state=0)

    def pixels(frame):
        return np.stack([np.asarray(Image.open(p).convert("RGB").resize((20, 20)), dtype=np.float32).ravel()
                         for p in frame["path"]])

    model = make_pipeline(StandardScaler(), PCA(64, random_state=0), LogisticRegression(max_iter=300))
    model.fit(pixels(train), train["race"].astype(str))
    order = [list(model.classes_).index(r) for r in RACES]
    x_test, x_val = pixels(test), pixels(val)
    predictions = PredictionsTable.from_probabilities(test, model.predict_proba(x_test)[:, order])
    val_predictions = PredictionsTable.from_probabilities(val, model.predict_proba(x_val)[:, order])
    start = time.perf_counter()
    result = faceaudit.audit(
        predictions, embeddings=model[:-1].transform(x_test), val=val_predictions,
        gates={"gates": [{"metric": "accuracy", "by": "race", "max_gap": 0.10}, {"metric": "ece", "by": "race", "max": 0.08}]},
        model={"name": "bench-pixels-logreg", "source": "bench", "backbone": "PCA-64 + logistic"},
        data={"source": archive, "fingerprint": dataset.fingerprint, "age_bands": "default"})
    seconds = time.perf_counter() - start
    result.write(folder)
    return seconds


def bare_pdf_seconds() -> float:
    from faceaudit.templates.layout import write_pdf

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_pdf("<html><body><p>peer</p></body></html>", Path(tmp) / "peer.pdf")
        return time.perf_counter() - start


def main() -> None:
    from faceaudit.auditing.report import render_report

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        if len(sys.argv) > 1:
            folder, audit_s = Path(sys.argv[1]), float("nan")
        else:
            folder = Path(tmp) / "audit"
            print(f"building a real {N_IMAGES}-image audit ...", flush=True)
            audit_s = build_audit(folder)
        out = Path(tmp) / "report"
        bare_pdf_seconds()  # warm WeasyPrint's font cache so the peer and the report pay the same
        peer = bare_pdf_seconds()
        timings: dict = {}
        start = time.perf_counter()
        render_report(folder, out_dir=out, timings=timings)
        total = time.perf_counter() - start
        no_thumbs: dict = {}
        render_report(folder, out_dir=Path(tmp) / "plain", thumbnails=False, timings=no_thumbs)
        html, pdf = out / "report.html", out / "report.pdf"
        pages = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(pdf)], capture_output=True,
                                                                  text=True).stdout).group(1))
        import pandas as pd

        n = len(pd.read_csv(folder / "predictions.csv", usecols=["image_id"]))
        print(f"test images:                 {n}")
        print(f"sections + figures:          {timings['sections_s']:.1f} s")
        print(f"HTML written after:          {timings['html_s']:.1f} s")
        print(f"PDF (WeasyPrint):            {timings['pdf_s']:.1f} s")
        print(f"HTML + PDF + summary total:  {total:.1f} s  (target {TARGET_S:.0f} s: {total / TARGET_S:.2f}x of budget)")
        print(f"  without thumbnails:        {no_thumbs['total_s']:.1f} s")
        print(f"report.html:                 {html.stat().st_size / 1e6:.2f} MB (limit 5 MB)")
        print(f"report.pdf:                  {pdf.stat().st_size / 1e6:.2f} MB, {pages} pages")
        print(f"summary.md:                  {len((out / 'summary.md').read_text().splitlines())} lines")
        print(f"peer: bare WeasyPrint page   {peer:.2f} s  (report PDF = {timings['pdf_s'] / peer:.1f}x)")
        if audit_s == audit_s:
            print(f"peer: compute_audit          {audit_s:.1f} s  (report = {total / audit_s:.2f}x of the audit)")
        print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
