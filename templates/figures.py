"""Static figures for documents: matplotlib (Agg) to inline PNG data URIs, each with a caption.

Every chart is a PNG embedded as ``data:`` so the HTML, the PDF and a mail attachment show the same pixels and
nothing is fetched. Captions say what to look for, not just what is drawn.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Resolution of embedded charts: sharp on a laptop and in print at a few hundred kB per report.
DPI = 110
#: One colour per race, colour-blind safe (Okabe-Ito), used in every figure.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")

plt.rcParams.update({
    "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": DPI,
    "savefig.dpi": DPI, "axes.grid": True, "grid.alpha": 0.3,
})


@dataclass
class Figure:
    """An embedded image: ``src`` is a data URI; ``caption`` says what to look for."""

    src: str
    caption: str
    alt: str
    width: int = 0
    height: int = 0


def png_figure(fig: "plt.Figure", caption: str, alt: str, *, dpi: int = DPI) -> Figure:
    """Render a matplotlib figure to an inline PNG and close it."""
    buffer = io.BytesIO()
    # Figures from new_figure() lay themselves out when drawn; bbox_inches="tight" would draw every figure twice.
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white",
                pil_kwargs={"optimize": False, "compress_level": 6})
    plt.close(fig)
    data = buffer.getvalue()
    width, height = _png_size(data)
    return Figure(src="data:image/png;base64," + base64.b64encode(data).decode("ascii"), caption=caption,
                  alt=alt, width=width, height=height)


def jpeg_uri(image, *, size: int = 96, quality: int = 70) -> str:
    """A small JPEG data URI of a PIL image (thumbnails in the error gallery)."""
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    """A figure and its axes, sized in inches (width ~7 fits an A4 text column), with tight layout at draw time."""
    kwargs.setdefault("layout", "tight")
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)
