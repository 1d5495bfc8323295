"""Every image the README shows is in the repository, described by alt text, a real PNG and small enough to commit."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
#: Largest README figure worth committing (docs/images/regenerate.py quantises them well under it).
MAX_BYTES = 200_000


def _images() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"!\[([^\]]*)\]\(([^)\s]+)\)", text)


def test_readme_figures_exist_with_alt_text_and_stay_small():
    images = _images()
    assert {"docs/images/report-first-screen.png", "docs/images/report-pdf-page1.png"} <= {p for _, p in images}
    for alt, path in images:
        assert not re.match(r"[a-z]+:", path), f"{path}: the README's figures live in the repository"
        file = ROOT / path
        assert file.is_file(), path
        assert len(" ".join(alt.split())) >= 40, f"{path}: alt text should say what the figure shows"
        assert file.stat().st_size < MAX_BYTES, f"{path}: {file.stat().st_size} bytes"
        with Image.open(file) as image:
            assert image.format == "PNG" and image.width >= 600, (path, image.format, image.size)
