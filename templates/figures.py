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
#: Worse / better than the rest: orange and blue stay apart under every colour-vision deficiency (never red / green);
#: the charts pair them with a marker (down / up triangle) so colour never carries the meaning alone.
WORSE, BETTER, NEUTRAL = "#D55E00", "#0072B2", "#4d4d4d"
#: Colour map for ordered values (accuracy in a heatmap, an age band): cividis reads the same to colour-blind eyes.
SEQUENTIAL = "cividis"
#: Smallest text in a figure as printed in the PDF, in points; :func:`png_figure` records each figure's.
MIN_PRINT_PT = 8.0
#: The PDF's text column and the tallest figure it shows (A4 less margins; templates/base.css), in inches.
PRINT_WIDTH_IN, PRINT_HEIGHT_IN = (210 - 28) / 25.4, 235 / 25.4

plt.rcParams.update({
    "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8.5, "xtick.labelsize": 8.5, "ytick.labelsize": 8.5, "axes.spines.top": False,
    "axes.spines.right": False, "figure.dpi": DPI, "savefig.dpi": DPI, "axes.grid": True, "grid.alpha": 0.3,
})


@dataclass
class Figure:
    """An embedded image: ``src`` is a data URI; ``caption`` says what to look for."""

    src: str
    caption: str
    alt: str
    width: int = 0
    height: int = 0
    #: The smallest text of the figure as the PDF prints it, in points (see :func:`print_text_pt`).
    min_text_pt: float = 0.0


def png_figure(fig: "plt.Figure", caption: str, alt: str, *, dpi: int = DPI) -> Figure:
    """Render a matplotlib figure to an inline PNG and close it."""
    buffer = io.BytesIO()
    # Figures from new_figure() lay themselves out when drawn; bbox_inches="tight" would draw every figure twice.
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white",
                pil_kwargs={"optimize": False, "compress_level": 6})
    smallest = print_text_pt(fig, dpi)
    plt.close(fig)
    data = buffer.getvalue()
    width, height = _png_size(data)
    return Figure(src="data:image/png;base64," + base64.b64encode(data).decode("ascii"), caption=caption,
                  alt=alt, width=width, height=height, min_text_pt=smallest)


def print_scale(fig: "plt.Figure", dpi: int = DPI) -> float:
    """How much the PDF scales a figure: its natural size (``dpi`` pixels at 96 per CSS inch), shrunk to fit the
    text column and the tallest figure the print stylesheet allows."""
    width, height = fig.get_size_inches()
    return min(dpi / 96, PRINT_WIDTH_IN / width, PRINT_HEIGHT_IN / height)


def print_text_pt(fig: "plt.Figure", dpi: int = DPI) -> float:
    """The smallest visible text of a drawn figure (titles, ticks, labels, legends, annotations) as printed, in pt."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and t.get_figure() is not None]
    return round(min(sizes, default=99.0) * print_scale(fig, dpi), 2)


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
