"""Regenerate the README's two report figures from the demo on its embedded synthetic faces.

Writes ``report-first-screen.png`` (report.html's first screen in headless Chromium, 1280 x 900) and
``report-pdf-page1.png`` (report.pdf's page 1 through ``pdftoppm``) beside this file, quantised to stay small.
Only a synthetic report is accepted: no UTKFace face may end up in the repository.

    .venv/bin/python docs/images/regenerate.py                        # runs `faceaudit demo` (a few minutes)
    .venv/bin/python docs/images/regenerate.py --report /tmp/x/demo   # reuses a demo's report folder

Needs Debian's ``chromium`` and ``poppler-utils`` (as the report tests do) and Pillow (installed with faceaudit).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
FIRST_SCREEN = HERE / "report-first-screen.png"
PDF_PAGE1 = HERE / "report-pdf-page1.png"
#: Laptop-sized first screen, as a reviewer opening report.html sees it.
WINDOW = (1280, 900)
#: PDF page 1 at 80 dpi: 662 px wide, legible in a README column.
PDF_DPI = 80
#: Colours kept per image: text antialiasing survives, files stay well under 200 KB.
COLOURS = 128
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-extensions")


def _tool(*names: str) -> str:
    """The first of ``names`` on PATH, or exit with what to install."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    sys.exit(f"{names[0]} is not installed (Debian: apt-get install chromium poppler-utils)")


def run_demo(scratch: Path) -> Path:
    """Run ``faceaudit demo`` on the embedded synthetic faces (never $FACEAUDIT_DATA) into ``scratch``."""
    env = {k: v for k, v in os.environ.items() if k != "FACEAUDIT_DATA"}
    faceaudit = Path(sys.executable).with_name("faceaudit")
    command = [str(faceaudit) if faceaudit.exists() else "faceaudit", "demo", "--out", str(scratch / "demo")]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 1 would be failed gates: the report is written either way
        sys.exit(f"faceaudit demo failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return scratch / "demo"


def check_synthetic(report: Path) -> None:
    """Refuse a report whose audit.json does not say its data is synthetic."""
    audit = report / "audit.json"
    if not audit.is_file() or not (report / "report.html").is_file() or not (report / "report.pdf").is_file():
        sys.exit(f"{report} holds no report (report.html, report.pdf, audit.json)")
    if json.loads(audit.read_text(encoding="utf-8")).get("data", {}).get("synthetic") is not True:
        sys.exit(f"{report} is not the synthetic demo: the README's figures must show no real face")


def _save_small(png: bytes, target: Path) -> None:
    """Quantise to ``COLOURS`` colours without dithering (crisp text) and write an optimised PNG."""
    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB").quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT,
                                              dither=Image.Dither.NONE)
    small.save(target, "PNG", optimize=True)


def first_screen(report: Path, scratch: Path) -> bytes:
    """report.html's first screen in headless Chromium at ``WINDOW``."""
    shot = scratch / "first-screen.png"
    with tempfile.TemporaryDirectory(prefix="faceaudit-chromium-") as profile:
        subprocess.run([_tool("chromium", "chromium-browser", "google-chrome"), *CHROMIUM_FLAGS,
                        f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                        f"--screenshot={shot}", (report / "report.html").resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    return shot.read_bytes()


def pdf_page1(report: Path, scratch: Path) -> bytes:
    """report.pdf's page 1 rasterised at ``PDF_DPI``."""
    stem = scratch / "page"
    subprocess.run([_tool("pdftoppm"), "-png", "-r", str(PDF_DPI), "-f", "1", "-l", "1", "-singlefile",
                    str(report / "report.pdf"), str(stem)], check=True, capture_output=True, timeout=120)
    return stem.with_suffix(".png").read_bytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, help="a synthetic demo's report folder (default: run the demo)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="faceaudit-figures-") as tmp:
        scratch = Path(tmp)
        report = args.report or run_demo(scratch)
        check_synthetic(report)
        for png, target in ((first_screen(report, scratch), FIRST_SCREEN), (pdf_page1(report, scratch), PDF_PAGE1)):
            _save_small(png, target)
            print(f"wrote {target} ({target.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
