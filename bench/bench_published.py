"""Auditing the five published models in ../shared/models with their contracts (docs/contracts/), as a user does.

Each model is audited by ``faceaudit audit MODEL --contract docs/contracts/<model>.toml`` in a fresh process on a
labelled CSV of 2,300 test and 500 validation images drawn (seeded) from real UTKFace: the 64 px archive for the
48, 64 and 128 px models, the 200 px originals for the 200 px age model (the full UTKFace-200px set, as below: on CI's crop_part1 subset the
age model's MAE reads 5.4 years rather than 5.0). Printed per model: the whole command's wall
time, the headline (accuracy or mean absolute error with its interval, worst race), the contract check, and the
peer measured in the same run: the model's bare inference on the same images (runtime only, no audit), so the
ratio says what the audit adds on top of running the model.

    FACEAUDIT_UTK64=../shared/data/UTKFace-64px.tar.gz FACEAUDIT_UTK200=../shared/data/UTKFace-200px.tar.gz \\
        FACEAUDIT_MODELS_DIR=../shared/models python bench/bench_published.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceaudit.auditing.result import AuditResult, load_audit

FACEAUDIT = [str(Path(sys.executable).with_name("faceaudit"))]
ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "docs" / "contracts"
#: (model file prefix, contract, data variable, groups)
MODELS = [("oarriaga", "oarriaga-gender_mini_XCEPTION", "FACEAUDIT_UTK64", "race,age_band"),
          ("jovanovic-gender", "jovanovic-gender_model", "FACEAUDIT_UTK64", "race,gender,age_band"),
          ("jovanovic-age", "jovanovic-age_model", "FACEAUDIT_UTK64", "race,gender"),
          ("shubham0204-model_gender", "shubham0204-model_gender_q", "FACEAUDIT_UTK64", "race,gender,age_band"),
          ("shubham0204-model_lite_age", "shubham0204-model_lite_age_nonq", "FACEAUDIT_UTK200", "race,gender")]
N_TEST, N_VAL = 2300, 500


def labelled_csv(archive: Path, out: Path) -> Path:
    """2,300 test and 500 validation rows (seeded) of a UTKFace archive as a labelled CSV with its split."""
    from faceaudit.datasets.manifest import load_dataset

    manifest = load_dataset(archive, progress=False).manifest
    rows = manifest.sample(n=N_TEST + N_VAL, random_state=0).reset_index(drop=True)
    rows["split"] = ["test"] * N_TEST + ["val"] * N_VAL
    rows[["path", "age", "gender", "race", "split"]].to_csv(out, index=False)
    return out


def bare_inference(model: Path, contract: Path, csv: Path) -> float:
    """Seconds to run the model alone over the CSV's test images (decode, resize, predict), as the audit does."""
    import pandas as pd

    from faceaudit.models.inference import predict_heads
    from faceaudit.models.loading import load_runtime
    from faceaudit.seams.contract import load_contract

    rows = pd.read_csv(csv)
    rows = rows[rows["split"] == "test"].reset_index(drop=True)
    from faceaudit import console

    with console.native_noise_dropped():
        runtime = load_runtime(model, contract=load_contract(contract))
        started = time.perf_counter()
        predict_heads(runtime, rows, 64, progress=False)
        return time.perf_counter() - started


def headline(audit: AuditResult) -> str:
    metric = "mae" if audit.is_regression else "accuracy"
    stat = audit.overall.metrics[metric]
    lo, hi = stat.interval
    scale, unit = (1, " years") if metric == "mae" else (100, " %")
    groups = [g for g in audit.grouping("race").groups if not g.too_small]
    pick = max if metric == "mae" else min
    worst = pick(groups, key=lambda g: g.metrics[metric].value)
    w = worst.metrics[metric]
    return (f"{metric} {stat.value * scale:.1f}{unit} [{lo * scale:.1f}, {hi * scale:.1f}]; worst race {worst.key} "
            f"{w.value * scale:.1f} [{w.ci[0] * scale:.1f}, {w.ci[1] * scale:.1f}] (of {len(groups)})")


def main() -> int:
    from faceaudit import console

    console.configure(verbose="--verbose" in sys.argv)  # the peer's in-process TensorFlow stays as quiet as the CLI
    models = Path(os.environ.get("FACEAUDIT_MODELS_DIR", ROOT.parent / "shared" / "models"))
    with tempfile.TemporaryDirectory() as tmp:
        csvs = {}
        print(f"{'model':32s} {'wall':>7s} {'bare inference':>15s} {'ratio':>6s}  contract  headline")
        for prefix, contract, variable, groups in MODELS:
            if variable not in csvs:
                csvs[variable] = labelled_csv(Path(os.environ[variable]), Path(tmp) / f"{variable}.csv")
            model = next(models.glob(f"{prefix}*"))
            out = Path(tmp) / contract
            started = time.perf_counter()
            proc = subprocess.run([*FACEAUDIT, "audit", str(model), "--contract", str(CONTRACTS / f"{contract}.toml"),
                                   "--data", str(csvs[variable]), "--groups", groups, "--out", str(out)],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - started
            if proc.returncode not in (0, 1):
                print(f"{contract}: failed: {proc.stderr.strip()}")
                return 1
            audit = load_audit(out)
            bare = bare_inference(model, CONTRACTS / f"{contract}.toml", csvs[variable])
            print(f"{contract:32s} {wall:6.1f}s {bare:14.1f}s {wall / bare:5.1f}x  "
                  f"{audit.model['sanity']['status']:8s}  {headline(audit)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
