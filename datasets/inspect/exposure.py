"""Image properties per group (size, brightness, contrast) and the very dark or washed-out images."""

from __future__ import annotations

import numpy as np
import pandas as pd

from faceaudit import config

DARK_BELOW, DARK_BORDERLINE = config.DARK_BELOW, config.DARK_BORDERLINE
WASHED_OUT_ABOVE, WASHED_OUT_BORDERLINE = config.WASHED_OUT_ABOVE, config.WASHED_OUT_BORDERLINE


def exposure_flags(features: pd.DataFrame, *, dark_below: float = DARK_BELOW,
                   dark_borderline: float = DARK_BORDERLINE, washed_out_above: float = WASHED_OUT_ABOVE,
                   washed_out_borderline: float = WASHED_OUT_BORDERLINE) -> pd.DataFrame:
    """The images outside the normal brightness range, with their flag, darkest/brightest first.

    Flags: ``dark`` (< ``dark_below``), ``dark-borderline`` ([dark_below, dark_borderline)),
    ``washed-out`` (> ``washed_out_above``), ``washed-out-borderline`` ((washed_out_borderline, washed_out_above]).
    """
    brightness = features["brightness"].to_numpy()
    conditions = [brightness < dark_below, brightness < dark_borderline,
                  brightness > washed_out_above, brightness > washed_out_borderline]
    names = ["dark", "dark-borderline", "washed-out", "washed-out-borderline"]
    flag = np.select(conditions, names, default="")
    flagged = features.assign(flag=flag)[flag != ""][["image_id", "flag", "brightness", "contrast"]]
    distance = np.minimum(flagged["brightness"], 255 - flagged["brightness"])
    return flagged.assign(_d=distance).sort_values(["_d", "image_id"]).drop(columns="_d").reset_index(drop=True)


def property_stats(manifest: pd.DataFrame, features: pd.DataFrame, by: tuple[str, ...] = ("race", "gender")) -> pd.DataFrame:
    """Per group: n, the image sizes seen, and mean/median/5th-percentile brightness and mean contrast."""
    joined = manifest[["image_id", *by]].merge(features, on="image_id", how="inner", validate="one_to_one")
    grouped = joined.groupby(list(by), observed=True, sort=True)
    table = grouped.agg(
        n=("image_id", "size"),
        sizes=("width", lambda s: ", ".join(sorted({f"{w}x{h}" for w, h in zip(s, joined.loc[s.index, "height"])}))),
        brightness_mean=("brightness", "mean"),
        brightness_median=("brightness", "median"),
        brightness_p05=("brightness", lambda s: float(np.percentile(s, 5))),
        contrast_mean=("contrast", "mean"),
        dark_share=("brightness", lambda s: float((s < DARK_BELOW).mean())),
    )
    return table.reset_index()
