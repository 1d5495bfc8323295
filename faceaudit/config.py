"""Every default faceaudit uses, in one place, with the reason for each.

Modules take these as parameters; nothing reads them as hidden globals. Environment variables are read
only here, by :func:`data_from_env` and :func:`cache_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

#: UTKFace's race labels, in the order of the file-name codes 0-4 and of every model's output units.
RACES: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
#: UTKFace's binary gender labels, file-name codes 0 and 1.
GENDERS: tuple[str, ...] = ("Male", "Female")
#: Age range the UTKFace labels promise.
AGE_MIN, AGE_MAX = 0, 116

#: Default age bands: finer where faces change fastest (children), then decades, 70+ pooled because
#: UTKFace has few older faces per race.
DEFAULT_AGE_BANDS = "0-2,3-9,10-19,20-29,30-39,40-49,50-59,60-69,70+"
#: The seed repo's decades.
DECADE_AGE_BANDS = "0-9,10-19,20-29,30-39,40-49,50-59,60-69,70-79,80-89,90-99,100-109,110-116"
AGE_BAND_PRESETS = {"default": DEFAULT_AGE_BANDS, "decades": DECADE_AGE_BANDS}

#: Train/val/test fractions, stratified by race x gender (the seed's 80/10/10).
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("train", "val", "test")
#: One seed for split hashing, data order, augmentation, initialisation and bootstrap.
DEFAULT_SEED = 42

#: Image file extensions read from folders and archives.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

#: Environment variable naming a UTKFace archive or folder for `faceaudit demo` and the tests.
DATA_ENV = "FACEAUDIT_DATA"
#: Environment variable overriding where archives are unpacked (default: ~/.cache/faceaudit).
CACHE_ENV = "FACEAUDIT_CACHE"


def cache_dir() -> Path:
    """Folder where archives are unpacked and descriptors cached; ``$FACEAUDIT_CACHE`` overrides it."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "faceaudit"


def data_from_env() -> Path | None:
    """The data source named by ``$FACEAUDIT_DATA``, or None when it is unset or empty."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None
