"""The manifest: one row per usable labelled image, built from UTKFace file names or a labelled CSV/Parquet.

Columns (:func:`manifest_columns`; :data:`MANIFEST_COLUMNS` for UTKFace): ``image_id`` (path relative to the data
root, the stable key every later table joins on), ``path`` (absolute), ``sha256`` of the image bytes, ``age``
(NaN where a dataset gives only an age band, as FairFace does), the label schema's attributes (``gender``,
``race``; the target last), ``age_band`` and ``split``. Files that cannot be used are kept in
``Dataset.excluded`` with the reason.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm.std import tqdm  # not tqdm.auto: no "IProgress not found" warning in notebooks

from faceaudit.config import DEFAULT_SEED, SPLITS
from faceaudit.console import shown
from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_path
from faceaudit.taxonomy import AGE_BAND, AGE_MAX, AGE_MIN, UTKFACE, AgeBands, LabelSchema, get_schema

from .labels import parse_utkface_name
from .sources import list_images
from .splits import assign_splits
from .synthetic import is_synthetic


def label_columns(schema: LabelSchema = UTKFACE) -> tuple[str, ...]:
    """The schema's labelled attributes as manifest columns: the others in schema order, then the target."""
    names = [a.name for a in schema.attributes]
    return (*(n for n in names if n != schema.target), *(n for n in names if n == schema.target))


def manifest_columns(schema: LabelSchema = UTKFACE) -> tuple[str, ...]:
    """The manifest's columns for a label schema."""
    return ("image_id", "path", "sha256", "age", *label_columns(schema), AGE_BAND, "split")


MANIFEST_COLUMNS = manifest_columns(UTKFACE)
#: Path columns a labelled table may use when ``--path-col`` is left at its default (FairFace's CSVs say ``file``).
PATH_COLUMN_ALIASES = ("path", "file", "filename", "image_path", "image")
#: Image formats the tf.data pipeline decodes; anything else is converted on read or excluded.
DECODABLE_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
#: Images with more pixels than this are excluded unread: PIL's own warning threshold for decompression bombs.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


@dataclass(frozen=True)
class ColumnMap:
    """Column names of a generic labelled CSV (``--path-col`` and friends). An attribute of the schema without a
    field here is read from the column of its own name."""

    path: str = "path"
    race: str = "race"
    gender: str = "gender"
    age: str = "age"

    def column(self, attribute: str) -> str:
        return getattr(self, attribute, attribute) if attribute in ("race", "gender") else attribute


@dataclass
class Dataset:
    """A labelled image set: the manifest, what was excluded and why, and irregularities kept."""

    manifest: pd.DataFrame
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["image_id", "reason"]))
    warnings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["image_id", "warning"]))
    source: str = ""
    synthetic: bool = False
    #: The label schema the manifest's attributes follow.
    schema: LabelSchema = UTKFACE

    @property
    def n_files(self) -> int:
        """Every file looked at: usable plus excluded."""
        return len(self.manifest) + len(self.excluded)

    def split(self, name: str) -> pd.DataFrame:
        """The manifest rows of one split (``train``, ``val`` or ``test``)."""
        return self.manifest[self.manifest["split"] == name].reset_index(drop=True)

    @property
    def fingerprint(self) -> str:
        """SHA-256 over image ids, bytes' hashes, labels and splits: names this exact data in run records."""
        columns = ["image_id", "sha256", "age", *label_columns(self.schema), "split"]
        text = self.manifest[columns].sort_values("image_id").to_csv(index=False)
        return hashlib.sha256(text.encode()).hexdigest()


def _too_large(width: int, height: int) -> str:
    return (f"image too large ({width}x{height} = {width * height:,} pixels; limit {MAX_IMAGE_PIXELS:,}): "
            "possible decompression bomb")


def _bmp_problem(data: bytes, image: Image.Image) -> str | None:
    """Why TensorFlow's BMP decoder would fail on or miscolour this BMP (it reads 24/32-bit and grey 8-bit only)."""
    header = int.from_bytes(data[14:18], "little")
    bits = int.from_bytes(data[24:26] if header == 12 else data[28:30], "little")
    compression = 0 if header == 12 else int.from_bytes(data[30:34], "little")
    if bits not in (8, 24, 32) or compression not in (0, 3) or (bits == 8 and image.mode != "L"):
        return f"BMP variant TensorFlow cannot decode ({bits}-bit, mode {image.mode}, compression {compression})"
    return None


def check_image(data: bytes) -> str | None:
    """Why these bytes are not a usable image, or None when they decode fully.

    Never raises for bad bytes: oversized images (decompression bombs) are refused from the header before any
    pixel is decoded, and any other decoder failure becomes the reason.
    """
    if not data:
        return "zero-byte file"
    # WeasyPrint sets PIL's process-wide LOAD_TRUNCATED_IMAGES when imported; a check must not inherit that.
    tolerant, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    return _too_large(image.width, image.height)
                image.load()
                if image.format not in DECODABLE_FORMATS:
                    return f"unsupported image format {image.format}"
                if image.width < 8 or image.height < 8:
                    return f"image too small ({image.width}x{image.height})"
                if image.format == "BMP":
                    return _bmp_problem(data, image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels; " if pixels else ""
        return f"image too large ({size}limit {MAX_IMAGE_PIXELS:,}): possible decompression bomb"
    except UnidentifiedImageError:
        return "not an image file"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image ({exc})"
    except MemoryError:
        return "unreadable image (out of memory while decoding)"
    except Exception as exc:  # noqa: BLE001 - a malformed file may trip any error inside a decoder plug-in
        return f"unreadable image ({type(exc).__name__}: {exc})"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant
    return None


#: How the reasons :func:`check_image` and :func:`_scan` give begin: files excluded for their bytes, not their name.
IMAGE_PROBLEMS = ("zero-byte file", "image too large", "image too small", "unreadable image", "not an image file",
                  "unsupported image format", "BMP variant", "cannot read file")


def image_problems(dataset: "Dataset") -> pd.DataFrame:
    """The excluded files whose bytes could not be decoded safely (image_id, reason), as opposed to bad names."""
    excluded = dataset.excluded
    return excluded[excluded["reason"].astype(str).str.startswith(IMAGE_PROBLEMS)].reset_index(drop=True)


def describe_image_problems(dataset: "Dataset", limit: int = 3) -> str | None:
    """One line naming the files excluded as undecodable (the first ``limit`` with reasons), or None."""
    problems = image_problems(dataset)
    if problems.empty:
        return None
    shown = "; ".join(f"{row.image_id}: {row.reason}" for row in problems.head(limit).itertuples())
    more = f"; and {len(problems) - limit:,} more" if len(problems) > limit else ""
    return f"{len(problems):,} image file(s) excluded as unusable: {shown}{more}"


def _scan(rows: list[dict], root: Path, progress: bool) -> tuple[list[dict], list[dict]]:
    """Hash and fully decode each row's image; split rows into usable and excluded."""
    usable, excluded = [], []
    for row in tqdm(rows, desc="checking images", unit="img", disable=not progress or None, leave=False):
        try:
            data = Path(row["path"]).read_bytes()
        except OSError as exc:
            excluded.append({"image_id": row["image_id"], "reason": f"cannot read file ({exc.strerror})"})
            continue
        problem = check_image(data)
        if problem:
            excluded.append({"image_id": row["image_id"], "reason": problem})
            continue
        usable.append({**row, "sha256": hashlib.sha256(data).hexdigest()})
    return usable, excluded


def _finish(
    usable: list[dict],
    excluded: list[dict],
    warnings: list[dict],
    *,
    source: Path,
    age_bands: AgeBands,
    seed: int,
    synthetic: bool = False,
    schema: LabelSchema = UTKFACE,
) -> Dataset:
    age_bands = AgeBands.parse(age_bands)
    schema = schema.with_options(age_bands=age_bands)
    columns = manifest_columns(schema)
    manifest = pd.DataFrame(usable, columns=[c for c in columns if c != "split"])
    if manifest.empty:
        raise FaceauditError(f"no usable labelled images in {source} ({len(excluded)} excluded)")
    ages = pd.to_numeric(manifest["age"], errors="coerce")
    manifest["age"] = ages.astype(int) if ages.notna().all() else ages.astype(float)
    for name in label_columns(schema):
        manifest[name] = pd.Categorical(manifest[name], categories=list(schema.attribute(name).values))
    given_bands = manifest[AGE_BAND]
    manifest[AGE_BAND] = age_bands.assign(manifest["age"])
    if ages.isna().any():  # ages known only as bands (FairFace): the band as given
        banded = pd.Categorical(given_bands.where(ages.isna()), categories=list(age_bands.labels), ordered=True)
        manifest[AGE_BAND] = manifest[AGE_BAND].where(ages.notna(), banded)
    given_split = [row.get("split") for row in usable]
    if all(s in SPLITS for s in given_split):
        manifest["split"] = given_split
    else:
        manifest["split"] = assign_splits(manifest, seed=seed, strata=(schema.target, "gender"))
    manifest["split"] = pd.Categorical(manifest["split"], categories=list(SPLITS))
    manifest = manifest.sort_values("image_id").reset_index(drop=True)[list(columns)]
    return Dataset(
        manifest=manifest,
        excluded=pd.DataFrame(excluded, columns=["image_id", "reason"]),
        warnings=pd.DataFrame(warnings, columns=["image_id", "warning"]),
        source=str(source),
        synthetic=synthetic,
        schema=schema,
    )


def scan_utkface(
    source: Path,
    *,
    age_bands: AgeBands | str | None = None,
    seed: int = DEFAULT_SEED,
    cache: Path | None = None,
    progress: bool = True,
    schema: LabelSchema | str = UTKFACE,
) -> Dataset:
    """A dataset from a folder or archive of UTKFace-named images (the file names carry UTKFace's labels, so the
    schema must have UTKFace's races and genders; its target and age bands may differ)."""
    schema = get_schema(schema)
    if {a.name: a.values for a in schema.attributes} != {a.name: a.values for a in UTKFACE.attributes}:
        raise FaceauditError(f"UTKFace file names carry UTKFace's labels, not those of the {schema.name!r} schema; "
                             "pass a labelled CSV for another taxonomy")
    root, images = list_images(source, cache)
    rows, excluded, warnings = [], [], []
    for path in images:
        image_id = path.relative_to(root).as_posix()
        labels = parse_utkface_name(path.name)
        if labels.problem:
            excluded.append({"image_id": image_id, "reason": labels.problem})
            continue
        if labels.warning:
            warnings.append({"image_id": image_id, "warning": labels.warning})
        rows.append({"image_id": image_id, "path": str(path.resolve()), "age": labels.age,
                     "gender": labels.gender, "race": labels.race})
    usable, unreadable = _scan(rows, root, progress)
    bands = schema.age_bands if age_bands is None else AgeBands.parse(age_bands)
    return _finish(usable, excluded + unreadable, warnings, source=source, age_bands=bands,
                   seed=seed, synthetic=is_synthetic(root), schema=schema)


def _path_column(table: pd.DataFrame, columns: ColumnMap) -> str:
    """The image path column: ``--path-col``, or (left at its default) the first of :data:`PATH_COLUMN_ALIASES`
    present (FairFace's ``file``)."""
    if columns.path in table.columns or columns.path != ColumnMap.path:
        return columns.path
    return next((c for c in PATH_COLUMN_ALIASES if c in table.columns), columns.path)


def _read_age(record: dict, age_col: str, bands: AgeBands) -> tuple[float, str | None]:
    """``(age, band)`` of one row: a whole number of years (band None, assigned later), or an age band as the
    dataset writes it (FairFace's ``20-29``, ``more than 70``; age NaN), from the age column or ``age_band``."""
    value = record.get(age_col)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        value = record.get(AGE_BAND)
    try:
        age = float(value)
    except (TypeError, ValueError):
        band = bands.normalise_label(value) if value is not None else None
        if band is None:
            raise FaceauditError(f"age {shown(value)} is neither a number of years nor one of the age bands "
                                 f"{bands}") from None
        return float("nan"), band
    if not (AGE_MIN <= age <= AGE_MAX and age.is_integer()):
        raise FaceauditError(f"age {shown(value)} is not a whole number of years in {AGE_MIN}-{AGE_MAX}")
    return age, None


def read_labelled_csv(
    csv_path: Path,
    *,
    columns: ColumnMap = ColumnMap(),
    age_bands: AgeBands | str | None = None,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
    schema: LabelSchema | str = UTKFACE,
) -> Dataset:
    """A dataset from any CSV or Parquet of image paths, the schema's labels and ages (paths relative to it).

    FairFace's label files (``file,age,gender,race``, ages as bins such as ``20-29``) read as they are with
    ``schema="fairface"``. A ``split`` column with train/val/test values is kept; otherwise splits are assigned
    as for UTKFace (stratified by the schema's target and gender).
    """
    schema = get_schema(schema)
    bands = schema.age_bands if age_bands is None else AgeBands.parse(age_bands)
    try:
        table = pd.read_parquet(csv_path) if csv_path.suffix.lower() == ".parquet" else pd.read_csv(csv_path)
    except UnicodeDecodeError:
        raise FaceauditError(f"cannot read labelled table {csv_path}: it is not UTF-8 text (a binary file?)") from None
    except (OSError, ValueError) as exc:
        raise FaceauditError(f"cannot read labelled table {csv_path}: {exc}") from None
    path_col = _path_column(table, columns)
    attributes = {name: columns.column(name) for name in label_columns(schema)}
    missing = [c for c in (path_col, *attributes.values()) if c not in table.columns]
    if columns.age not in table.columns and AGE_BAND not in table.columns:
        missing.append(columns.age)
    if missing:
        flags = ", ".join(f"--{n}-col" for n in ("path", "race", "gender", "age") if n in ("path", "age", *attributes))
        raise FaceauditError(f"{csv_path} lacks column(s) {', '.join(missing)} for the {schema.name} schema; map "
                             f"them with {flags} (it has: {', '.join(map(str, table.columns))})")
    base = csv_path.parent.resolve()
    rows, excluded = [], []
    for record in table.to_dict("records"):
        image_id = str(record.get("image_id") or record[path_col])
        try:
            age, band = _read_age(record, columns.age, bands)
            row = {"image_id": image_id, "path": str((base / str(record[path_col])).resolve()), "age": age,
                   AGE_BAND: band, "split": record.get("split")}
            for name, column in attributes.items():
                row[name] = schema.attribute(name).normalise(record[column])
        except (FaceauditError, ValueError, TypeError) as exc:
            excluded.append({"image_id": image_id, "reason": str(exc)})
            continue
        rows.append(row)
    usable, unreadable = _scan(rows, base, progress)
    return _finish(usable, excluded + unreadable, [], source=csv_path, age_bands=bands, seed=seed, schema=schema)


def read_exclusions(path: Path) -> pd.DataFrame:
    """An exclusion list (CSV with ``image_id`` and ``reason``), as written by ``faceaudit data inspect``."""
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:
        raise FaceauditError(f"cannot read exclusion list {path}: {exc}") from None
    if "image_id" not in table.columns:
        raise FaceauditError(f"exclusion list {path} has no image_id column")
    if "reason" not in table.columns:
        table["reason"] = f"listed in {path.name}"
    return table[["image_id", "reason"]].fillna({"reason": f"listed in {path.name}"})


def apply_exclusions(dataset: Dataset, exclusions: pd.DataFrame) -> Dataset:
    """The dataset less the listed images, which move to ``excluded`` with their listed reason.

    Splits are left as they were, so excluding test images never reshuffles the training set.
    """
    reasons = exclusions.drop_duplicates("image_id").set_index("image_id")["reason"]
    dropped = dataset.manifest["image_id"].isin(reasons.index)
    moved = pd.DataFrame({"image_id": dataset.manifest.loc[dropped, "image_id"],
                          "reason": dataset.manifest.loc[dropped, "image_id"].map(reasons).map("excluded: {}".format)})
    return Dataset(
        manifest=dataset.manifest[~dropped].reset_index(drop=True),
        excluded=pd.concat([dataset.excluded, moved], ignore_index=True),
        warnings=dataset.warnings,
        source=dataset.source,
        synthetic=dataset.synthetic,
        schema=dataset.schema,
    )


def load_dataset(
    source: Path | str,
    *,
    exclude: Path | None = None,
    columns: ColumnMap = ColumnMap(),
    age_bands: AgeBands | str | None = None,
    seed: int = DEFAULT_SEED,
    cache: Path | None = None,
    progress: bool = True,
    schema: LabelSchema | str = UTKFACE,
) -> Dataset:
    """A dataset from a UTKFace folder or archive, or a labelled CSV/Parquet (including a saved manifest) whose
    labels follow ``schema`` (a :class:`LabelSchema` or a preset name: ``utkface``, ``fairface``, ``fairface4``).

    ``exclude`` names an exclusion list whose images are dropped after splitting (see :func:`apply_exclusions`).
    """
    schema = get_schema(schema)
    source = Path(source).expanduser()
    exclusions = read_exclusions(Path(exclude)) if exclude is not None else None
    if source.suffix.lower() in (".csv", ".parquet"):
        if not source.is_file():
            raise FaceauditError(f"labelled table {source} does not exist")
        dataset = read_labelled_csv(source, columns=columns, age_bands=age_bands, seed=seed, progress=progress,
                                    schema=schema)
    else:
        dataset = scan_utkface(source, age_bands=age_bands, seed=seed, cache=cache, progress=progress, schema=schema)
    return apply_exclusions(dataset, exclusions) if exclusions is not None else dataset


def save_manifest(manifest: pd.DataFrame, path: Path) -> Path:
    """Write the manifest as CSV or Parquet (by suffix), atomically."""
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise FaceauditError(f"manifest file {path} must end in .csv or .parquet")
    with atomic_path(path) as partial:
        if path.suffix.lower() == ".parquet":
            manifest.to_parquet(partial, index=False)
        else:
            manifest.to_csv(partial, index=False)
    return path


def summarise(dataset: Dataset) -> dict[str, pd.DataFrame | pd.Series]:
    """Counts by each labelled attribute (``race``, ``gender``), ``age_band`` and ``split``, and the target x
    gender table under ``<target>_x_gender`` (``race_x_gender``) when the schema has a gender."""
    manifest, schema = dataset.manifest, dataset.schema
    counts: dict[str, pd.DataFrame | pd.Series] = {
        name: manifest[name].value_counts(sort=False) for name in dict.fromkeys((schema.target, *label_columns(schema), AGE_BAND))
    }
    if "gender" in manifest.columns and schema.target != "gender":
        counts[f"{schema.target}_x_gender"] = pd.crosstab(manifest[schema.target], manifest["gender"], dropna=False)
    counts["split"] = manifest["split"].value_counts(sort=False)
    return counts
