"""The README's "## Python API" example runs as written, in a fresh interpreter, from an empty folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import faceaudit

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_api_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Python API\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_runs(tmp_path):
    blocks = _python_api_blocks()
    assert blocks, "the README's Python API section has no ```python block"
    code = "\n\n".join(blocks)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(tmp_path.glob("reports/*/report.html"))
    assert written, f"the example wrote no report under {tmp_path / 'reports'}"
    for html in written:
        folder = html.parent
        for name in ("audit.json", "group_metrics.csv", "report.pdf", "summary.md"):
            assert (folder / name).is_file(), folder / name
        assert (folder / "report.pdf").read_bytes()[:5] == b"%PDF-"
    out = proc.stdout
    for race in faceaudit.FAIRFACE7.classes:
        assert race in out, race
    assert re.search(r"\b(pass|fail|inconclusive)\b", out)  # the gender gate's verdict is printed
