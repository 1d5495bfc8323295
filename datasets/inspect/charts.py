"""The data report's figures (seaborn on matplotlib's Agg backend, static PNG) and thumbnail galleries."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from faceaudit.templates.figures import PALETTE, Figure, jpeg_uri, new_figure, png_figure  # noqa: E402

from .pipeline import Inspection  # noqa: E402

#: Thumbnail edge in pixels and the most thumbnails per gallery: enough to judge, small enough to mail.
THUMB_SIZE = 80
GALLERY_SIZE = 24


@dataclass
class Thumb:
    """One gallery image: its id, a caption line and the inline JPEG."""

    image_id: str
    caption: str
    src: str


def thumbnail(path: str, caption: str, image_id: str, size: int = THUMB_SIZE) -> Thumb:
    """A small inline JPEG of one image (an unreadable file gets an empty picture and says so)."""
    try:
        with Image.open(path) as image:
            return Thumb(image_id, caption, jpeg_uri(image, size=size))
    except OSError:
        return Thumb(image_id, caption + " (unreadable)", "")


def gallery(ins: Inspection, frame: pd.DataFrame, caption, limit: int = GALLERY_SIZE) -> list[Thumb]:
    """Thumbnails of the first ``limit`` rows of ``frame`` (needs image_id); ``caption(row)`` labels each."""
    paths = ins.dataset.manifest.set_index("image_id")["path"]
    return [thumbnail(paths[row.image_id], caption(row), row.image_id) for row in frame.head(limit).itertuples()]


def pair_gallery(ins: Inspection, pairs: pd.DataFrame, limit: int = 12) -> list[tuple[Thumb, Thumb, str]]:
    """Side-by-side thumbnails of duplicate pairs with a line saying their splits, distance and labels."""
    paths = ins.dataset.manifest.set_index("image_id")["path"]
    out = []
    for row in pairs.head(limit).itertuples():
        left = thumbnail(paths[row.image_id_a], f"{row.split_a} · {row.race_a} {row.gender_a} {row.age_a}", row.image_id_a)
        right = thumbnail(paths[row.image_id_b], f"{row.split_b} · {row.race_b} {row.gender_b} {row.age_b}", row.image_id_b)
        out.append((left, right, f"{row.kind}, distance {row.distance}"))
    return out


def composition_chart(ins: Inspection) -> Figure:
    """Images per race, split by gender."""
    manifest = ins.dataset.manifest
    table = manifest.groupby(["race", "gender"], observed=False).size().rename("n").reset_index()
    fig, ax = new_figure(7, 3)
    sns.barplot(data=table, x="race", y="n", hue="gender", palette=PALETTE[:2], ax=ax)
    ax.set(xlabel="", ylabel="images")
    for container in ax.containers:
        ax.bar_label(container, fmt="%d", fontsize=8.5, padding=1)
    return png_figure(fig, "Images per race and gender. Look for groups far smaller than the rest: their "
                      "metrics in an audit will carry wide intervals.", "bar chart of images per race and gender")


def age_heatmap(ins: Inspection) -> Figure:
    """Race x gender rows by age band columns, counts annotated; cells under the minimum group size outlined."""
    manifest = ins.dataset.manifest
    table = pd.crosstab([manifest["race"], manifest["gender"]], manifest["age_band"], dropna=False)
    table.index = [f"{r} {g}" for r, g in table.index]
    fig, ax = new_figure(7.2, 4.2)
    sns.heatmap(np.log10(table.clip(lower=1)), annot=table.to_numpy(), fmt="d", cmap="Blues", cbar=False,
                annot_kws={"fontsize": 8.5}, linewidths=0.5, linecolor="white", ax=ax)
    small = table.to_numpy() < ins.options.min_group_size
    for i, j in zip(*np.nonzero(small)):
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor=PALETTE[5], linewidth=1.5))
    ax.set(xlabel="age band", ylabel="")
    return png_figure(fig, f"Images per race x gender x age band (colour on a log scale). Cells outlined in red hold "
                      f"fewer than {ins.options.min_group_size} images in the whole set: no audit can say much "
                      "about them. Look at the youngest and oldest bands of the smaller races.",
                      "heatmap of counts by race, gender and age band")


def brightness_chart(ins: Inspection) -> Figure:
    """Mean brightness per race and gender, with the dark and washed-out cuts drawn."""
    joined = ins.dataset.manifest[["image_id", "race", "gender"]].merge(ins.features, on="image_id")
    fig, ax = new_figure(7, 3.2)
    sns.boxplot(data=joined, x="race", y="brightness", hue="gender", palette=PALETTE[:2], fliersize=1.2,
                linewidth=0.8, ax=ax)
    opts = ins.options
    for y, style in ((opts.dark_below, "-"), (opts.dark_borderline, ":"),
                     (opts.washed_out_above, "-"), (opts.washed_out_borderline, ":")):
        ax.axhline(y, color=PALETTE[5], linestyle=style, linewidth=0.8)
    ax.set(xlabel="", ylabel="mean brightness (0-255)", ylim=(0, 255))
    return png_figure(fig, f"Mean brightness of each image by race and gender; red lines mark the very dark "
                      f"(< {opts.dark_below:g}, borderline to {opts.dark_borderline:g}) and washed-out "
                      f"(> {opts.washed_out_above:g}) cuts. Look for groups whose whole box sits lower: exposure "
                      "that differs by group can become accuracy that differs by group.",
                      "box plot of brightness by race and gender")


def outlier_chart(ins: Inspection) -> Figure:
    """Distribution of Isolation Forest scores with the outlier cut."""
    scores = ins.outliers["outlier_score"]
    fig, ax = new_figure(7, 2.6)
    sns.histplot(scores, bins=80, color=PALETTE[0], ax=ax)
    flagged = ins.outliers.loc[ins.outliers["outlier"], "outlier_score"]
    if len(flagged):
        ax.axvline(flagged.min(), color=PALETTE[5], linewidth=1)
    ax.set(xlabel="Isolation Forest anomaly score (higher = more unusual colour histogram)", ylabel="images")
    return png_figure(fig, f"Anomaly scores of all images; the red line is the cut for the "
                      f"{ins.options.outlier_share:.1%} most unusual. A long right tail is what the gallery shows: "
                      "grey-scale, tinted or heavily edited pictures rather than faces of any one group.",
                      "histogram of anomaly scores")


def outlier_share_chart(ins: Inspection) -> Figure:
    """Share of each race flagged as outliers, against the overall share."""
    joined = ins.dataset.manifest[["image_id", "race"]].merge(ins.outliers, on="image_id")
    share = joined.groupby("race", observed=False)["outlier"].mean().rename("share").reset_index()
    fig, ax = new_figure(7, 2.4)
    sns.barplot(data=share, x="race", y="share", color=PALETTE[0], ax=ax)
    ax.axhline(ins.options.outlier_share, color=PALETTE[5], linewidth=0.8, linestyle=":")
    ax.set(xlabel="", ylabel="share flagged")
    return png_figure(fig, "Share of each race's images flagged as colour-histogram outliers; the dotted line is "
                      "the overall share. A group far above it means the detector is partly learning skin tone, "
                      "so excluding outliers would remove that group's images unevenly: review before excluding.",
                      "bar chart of outlier share by race")


def face_chart(ins: Inspection) -> Figure | None:
    """Distribution of MTCNN's best face confidence per image."""
    if ins.faces is None:
        return None
    fig, ax = new_figure(7, 2.4)
    sns.histplot(ins.faces["face_confidence"], bins=50, color=PALETTE[2], ax=ax)
    ax.axvline(ins.options.face_confidence, color=PALETTE[5], linewidth=1)
    ax.set(yscale="log", xlabel="best MTCNN face confidence", ylabel="images (log)")
    return png_figure(fig, f"MTCNN's best face confidence per image (log scale); left of the red line "
                      f"({ins.options.face_confidence:.2f}) an image counts as a non-face. Confidence 0 means no "
                      "face was proposed at all, even with a border added.", "histogram of face confidence")
