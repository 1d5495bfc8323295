"""Training recipes and remedies on real UTKFace, measured on this machine: accuracy, time, per-race recall.

Runs each recipe the way a user does (``faceaudit train`` / ``train --ensemble`` / ``mitigate`` in a fresh
process) into ``--runs``, audits every run's test predictions and prints two tables: accuracy with its 95 %
interval, wall time and per-race recall of every recipe (the ones that did not help included); and each remedy
against the run it remedies, by ``faceaudit compare``'s paired tests (McNemar, Holm-adjusted). A run folder that
already exists is read, not trained again (its wall time is the one its run.json recorded when it was trained
here); ``--fresh`` trains everything again. dlib descriptors are cached once per image and framing; the first
line says how long filling the cache took in this invocation (0 s when warm).

    FACEAUDIT_UTK64=/work/shared/data/UTKFace-64px.tar.gz python bench/bench_recipes.py [--recipes a,b] [--fresh]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from faceaudit.auditing.result import AuditResult, load_audit
from faceaudit.auditing.types import Stat

FACEAUDIT = [str(Path(sys.executable).with_name("faceaudit"))]
DLIB_HEAD = ["--backbone", "dlib-resnet", "--lr", "3e-4", "--patience", "15", "--epochs", "100"]
CNN = ["--backbone", "cnn", "--epochs", "25"]


@dataclass(frozen=True)
class Recipe:
    """One run: ``faceaudit <command> ...`` writing ``<runs>/<name>``; ``base`` names the run a remedy changes."""

    name: str
    argv: tuple[str, ...]
    what: str
    base: str | None = None
    target: str = "race"
    #: Environment variable naming the archive it trains on (every ensemble's members share UTKFace-64px).
    data_env: str = "FACEAUDIT_UTK64"


RECIPES = [
    Recipe("cnn64", ("train", *CNN), "from-scratch CNN, 64 px, 25 epochs"),
    Recipe("cnn64-seed2", ("train", *CNN, "--seed", "2"), "the same CNN, another seed (an ensemble member)"),
    Recipe("dlib-align", ("train", *DLIB_HEAD, "--dlib-framing", "align"), "dlib ResNet descriptors (align) + head"),
    Recipe("dlib-align+mirror", ("train", *DLIB_HEAD, "--dlib-framing", "align+mirror"),
           "dlib descriptors averaged with the mirrored chip's + head"),
    Recipe("mobilenetv2-0.5", ("train", "--backbone", "mobilenetv2", "--alpha", "0.5", "--weights", "imagenet",
                               "--head-epochs", "2", "--epochs", "8"),
           "ImageNet MobileNetV2 alpha 0.5, 96 px (from 64 px faces), 2 head + 8 fine-tuning epochs"),
    Recipe("cnn96-200px", ("train", "--backbone", "cnn", "--image-size", "96", "--epochs", "12"),
           "the CNN at 96 px from the full 200 px set (its own split); needs $FACEAUDIT_UTKFULL200",
           data_env="FACEAUDIT_UTKFULL200"),
    Recipe("ensemble", ("train", "--ensemble", "{runs}/cnn64", "{runs}/cnn64-seed2", "{runs}/dlib-align+mirror"),
           "ensemble: two cnn64 seeds + dlib-align+mirror, combiner fitted on val"),
    Recipe("ensemble4", ("train", "--ensemble", "{runs}/cnn64", "{runs}/cnn64-seed2", "{runs}/cnn64+logit-adjust",
                         "{runs}/dlib-align+mirror"), "ensemble: the three above + cnn64+logit-adjust"),
    Recipe("ensemble+equal-recall", ("mitigate", "{runs}/ensemble", "--method", "equal-recall"),
           "post-hoc per-class bias, val accuracy drop <= 1.5 pts", base="ensemble"),
    Recipe("ensemble+equal-recall-1", ("mitigate", "{runs}/ensemble", "--method", "equal-recall",
                                       "--max-accuracy-drop", "1"),
           "post-hoc per-class bias, val accuracy drop <= 1 pt", base="ensemble"),
    Recipe("ensemble+logit-adjust", ("mitigate", "{runs}/ensemble", "--method", "logit-adjust"),
           "post-hoc logit adjustment, tau 1", base="ensemble"),
    Recipe("ensemble+logit-adjust-0.5", ("mitigate", "{runs}/ensemble", "--method", "logit-adjust", "--tau", "0.5"),
           "post-hoc logit adjustment, tau 0.5", base="ensemble"),
    Recipe("cnn64+class-weights", ("train", *CNN, "--class-weights"), "re-weighted loss (inverse class frequency)",
           base="cnn64"),
    Recipe("cnn64+logit-adjust", ("train", *CNN, "--logit-adjust", "1"), "logit-adjusted loss, tau 1", base="cnn64"),
    Recipe("gender-dlib", ("train", *DLIB_HEAD, "--dlib-framing", "align+mirror", "--target", "gender"),
           "gender classifier, dlib head", target="gender"),
    Recipe("age_band-dlib", ("train", *DLIB_HEAD, "--dlib-framing", "align+mirror", "--target", "age_band"),
           "age-band classifier, dlib head", target="age_band"),
]


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([*FACEAUDIT, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"faceaudit {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def _command(recipe: Recipe, runs: Path, data: Path) -> list[str]:
    argv = [a.format(runs=runs) for a in recipe.argv]
    out = ["--out", str(runs / recipe.name)]
    if argv[0] == "mitigate" or "--ensemble" in argv:
        return [*argv, *out, "--quiet"]
    source = os.environ.get(recipe.data_env) if recipe.data_env != "FACEAUDIT_UTK64" else str(data)
    if not source:
        raise SystemExit(f"recipe {recipe.name} trains on ${recipe.data_env}; set it to that archive")
    return [*argv, "--data", source, *out, "--quiet"]


def _fill_descriptor_cache(data: Path) -> str:
    from faceaudit.datasets.manifest import load_dataset
    from faceaudit.models.dlib_features import descriptors

    manifest = load_dataset(data, progress=False).manifest
    start, parts = time.perf_counter(), []
    for framing in ("align", "align+mirror"):
        _, stats = descriptors(manifest, framing, progress=False)
        parts.append(f"{framing}: {stats['computed']:,} computed, {stats['cached']:,} cached")
    return f"descriptor cache ({len(manifest):,} images; {'; '.join(parts)}) in {time.perf_counter() - start:.0f} s"


def _audit(run: Path, reports: Path, target: str) -> AuditResult:
    out = reports / run.name
    if not (out / "audit.json").exists():
        _run(["audit", "--predictions", str(run / "predictions.csv"), "--target", target, "--out", str(out),
              "--no-report", "--n-boot", "200"])
    return load_audit(out)


def _paired(base: str, remedy: str, reports: Path) -> dict[str, dict]:
    out = reports / f"compare-{remedy}"
    if not (out / "paired_tests.csv").exists():
        _run(["compare", str(reports / base), str(reports / remedy), "--out", str(out), "--no-pdf"])
    with open(out / "paired_tests.csv", newline="") as handle:
        return {f"{r['grouping']}:{r['group']}": r for r in csv.DictReader(handle)}


def _pct(metric: Stat | None) -> str:
    if metric is None or metric.value is None or metric.interval is None:
        return "-"
    lo, hi = metric.interval
    return f"{metric.value:.1%} [{lo:.1%}, {hi:.1%}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="images (default: $FACEAUDIT_UTK64)")
    parser.add_argument("--runs", type=Path, default=Path("runs/recipes"), help="folder of the recipe runs")
    parser.add_argument("--reports", type=Path, default=Path("reports/recipes"), help="folder of their audits")
    parser.add_argument("--recipes", default=",".join(r.name for r in RECIPES), help="comma-separated names")
    parser.add_argument("--fresh", action="store_true", help="train every recipe again")
    args = parser.parse_args(argv)
    data = args.data or (Path(os.environ["FACEAUDIT_UTK64"]) if os.environ.get("FACEAUDIT_UTK64") else None)
    if data is None or not data.exists():
        parser.error("set FACEAUDIT_UTK64 (or --data) to the UTKFace archive")
    chosen = [r for r in RECIPES if r.name in args.recipes.split(",")]
    if args.fresh:
        for recipe in chosen:
            shutil.rmtree(args.runs / recipe.name, ignore_errors=True)
        shutil.rmtree(args.reports, ignore_errors=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    args.reports.mkdir(parents=True, exist_ok=True)
    if any("dlib" in " ".join(r.argv) for r in chosen):
        print(_fill_descriptor_cache(data), flush=True)
    rows = {}
    for recipe in chosen:
        run = args.runs / recipe.name
        if not (run / "run.json").exists():
            seconds = _run(_command(recipe, args.runs, data))
            print(f"  trained {recipe.name} in {seconds:.0f} s", file=sys.stderr, flush=True)
        record = json.loads((run / "run.json").read_text())
        rows[recipe.name] = (recipe, record, _audit(run, args.reports, recipe.target))
    print(f"\nrecipes on {data.name} (test split; 95 % intervals; {os.cpu_count()} CPU cores)")
    print(f"{'recipe':24} {'target':8} {'test accuracy':>24} {'wall':>8}  per-class recall (of its target)")
    for name, (recipe, record, audit) in rows.items():
        wall = record.get("wall_time_s") or 0  # a mitigation's own seconds; an ensemble's plus its members'
        if record.get("ensemble") and not record.get("mitigation"):
            wall += record["ensemble"]["training_time_s"]["members"]
        recalls = {g.key: g.metrics["recall"].value for g in audit.grouping(recipe.target).groups}
        print(f"{name:24} {recipe.target:8} {_pct(audit.overall.metrics['accuracy']):>24} {wall / 60:>6.1f}m  "
              + " ".join(f"{k} {v:.3f}" for k, v in recalls.items()) + f"   ({recipe.what})")
    remedies = [(n, r) for n, (r, _, _) in rows.items() if r.base and r.base in rows]
    if remedies:
        print("\nremedies against the run they change (paired McNemar tests, Holm-adjusted over the comparison's family)")
        print(f"{'remedy':24} {'accuracy change':>26} {'Others recall':>22} {'race gap before':>24} "
              f"{'race gap after':>24}  verdicts")
        for name, recipe in remedies:
            base_audit, audit = rows[recipe.base][2], rows[name][2]
            tests = _paired(recipe.base, name, args.reports)
            overall = tests["overall:all"]
            others = tests.get("race:Others", {})
            gap = {k: a.grouping("race").disparities["accuracy"].gap for k, a in (("before", base_audit),
                                                                                  ("after", audit))}
            change = (f"{float(overall['diff']):+.1%} [{float(overall['diff_lo']):+.1%}, "
                      f"{float(overall['diff_hi']):+.1%}]")
            others_change = (f"{float(others['accuracy_a']):.3f} -> {float(others['accuracy_b']):.3f}"
                             if others else "-")
            verdicts = [f"{k.split(':')[1]} {r['verdict']}" for k, r in tests.items()
                        if k.startswith("race:") and r["verdict"] != "no clear change"]
            print(f"{name:24} {change:>26} {others_change:>22} {_pct(gap['before']):>24} {_pct(gap['after']):>24}  "
                  f"overall {overall['verdict']}; {', '.join(verdicts) or 'no race changes'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
