"""The UTKFace data layer on the real archives: parsing, exclusions, archives, splits, TFRecords."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceaudit.datasets.labels import AgeBands, parse_utkface_name
from faceaudit.datasets.manifest import MANIFEST_COLUMNS, load_dataset, save_manifest
from faceaudit.datasets.sources import unpack_archive
from faceaudit.datasets.splits import assign_splits
from faceaudit.errors import FaceauditError

IRREGULAR_NO_RACE = [
    "61_1_20170109150557335.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    "39_1_20170116174525125.jpg.chip.jpg",
]
IRREGULAR_SUFFIX = {
    "55_0_0_20170116232725357jpg.chip.jpg": (55, "Male", "White"),
    "24_0_1_20170116220224657 .jpg.chip.jpg": (24, "Male", "Black"),
}


def test_regular_name_parses_every_field():
    labels = parse_utkface_name("26_1_2_20170116174525125.jpg.chip.jpg")
    assert (labels.age, labels.gender, labels.race, labels.problem, labels.warning) == (26, "Female", "Asian", None, None)


@pytest.mark.parametrize("name", IRREGULAR_NO_RACE)
def test_missing_race_field_is_excluded_not_guessed(name):
    labels = parse_utkface_name(name)
    assert labels.race is None and labels.problem == "no race field in file name"


@pytest.mark.parametrize("name,expected", IRREGULAR_SUFFIX.items())
def test_broken_suffix_keeps_labels_with_a_warning(name, expected):
    labels = parse_utkface_name(name)
    assert (labels.age, labels.gender, labels.race) == expected
    assert labels.problem is None and "irregular" in labels.warning


@pytest.mark.parametrize("name", ["117_0_0_20170116174525125.jpg.chip.jpg", "30_2_0_20170116174525125.jpg.chip.jpg",
                                  "30_0_7_20170116174525125.jpg.chip.jpg", "face.jpg"])
def test_impossible_labels_are_problems(name):
    assert parse_utkface_name(name).problem


def test_real_archive_counts_and_irregular_names(utk64_dataset):
    dataset = utk64_dataset
    assert dataset.n_files == 21_352
    assert len(dataset.manifest) == 21_349
    assert dataset.manifest["race"].value_counts().to_dict() == {
        "White": 9_074, "Black": 4_090, "Asian": 3_092, "Indian": 3_578, "Others": 1_515}
    excluded = {Path(i).name: r for i, r in zip(dataset.excluded["image_id"], dataset.excluded["reason"])}
    assert excluded == dict.fromkeys(IRREGULAR_NO_RACE, "no race field in file name")
    assert sorted(Path(i).name for i in dataset.warnings["image_id"]) == sorted(IRREGULAR_SUFFIX)
    assert not dataset.synthetic
    assert dataset.manifest["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


def test_stratified_80_10_10_split(utk64_dataset):
    manifest = utk64_dataset.manifest
    shares = pd.crosstab([manifest["race"], manifest["gender"]], manifest["split"], normalize="index")
    assert np.allclose(shares[["train", "val", "test"]].to_numpy(), [0.8, 0.1, 0.1], atol=0.01)


def test_byte_identical_images_never_cross_splits(utk64_dataset):
    splits_per_hash = utk64_dataset.manifest.groupby("sha256")["split"].nunique()
    assert (splits_per_hash == 1).all()


def test_split_ignores_listing_order(utk64_dataset):
    manifest = utk64_dataset.manifest
    shuffled = manifest.sample(frac=1.0, random_state=7).reset_index(drop=True)
    again = assign_splits(shuffled).set_axis(shuffled["image_id"])
    original = manifest.set_index("image_id")["split"].astype(str)
    assert (again.astype(str).reindex(original.index) == original).all()
    other_seed = assign_splits(manifest, seed=1).astype(str)
    assert (other_seed != original.to_numpy()).mean() > 0.1


def test_duplicates_land_together_in_a_planted_copy(utk_sample_dir, tmp_path):
    folder = tmp_path / "dupes"
    shutil.copytree(utk_sample_dir, folder)
    source = sorted(folder.glob("*.jpg"))[0]
    shutil.copy(source, folder / "40_1_4_20990101000000000.jpg.chip.jpg")  # same bytes, other labels
    manifest = load_dataset(folder, progress=False).manifest
    copies = manifest[manifest["sha256"] == manifest.loc[manifest["image_id"] == source.name, "sha256"].item()]
    assert len(copies) == 2 and copies["split"].nunique() == 1


def test_unreadable_images_are_excluded_and_odd_ones_converted(utk_sample_dir, tmp_path):
    import tensorflow as tf
    import weasyprint  # noqa: F401  (it makes PIL tolerate truncated files process-wide; the check must not)

    from faceaudit.datasets.tfdata import image_dataset

    folder = tmp_path / "mixed"
    real = sorted(utk_sample_dir.glob("*.jpg"))[:5]
    folder.mkdir()
    for path in real:
        shutil.copy(path, folder / path.name)
    data = real[0].read_bytes()
    (folder / "30_0_1_20170101000000001.jpg.chip.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (folder / "30_0_1_20170101000000002.jpg.chip.jpg").write_bytes(b"")  # zero bytes
    (folder / "30_0_1_20170101000000003.jpg.chip.jpg").write_bytes(b"not an image at all")
    face = Image.open(real[1])
    face.convert("L").save(folder / "31_1_2_20170101000000004.jpg.chip.jpg")  # grayscale
    face.convert("RGBA").save(folder / "32_0_3_20170101000000005.png")  # RGBA png
    face.resize((83, 61)).save(folder / "33_1_0_20170101000000006.jpg.chip.jpg")  # odd size

    dataset = load_dataset(folder, progress=False)
    reasons = dict(zip(dataset.excluded["image_id"], dataset.excluded["reason"]))
    assert reasons["30_0_1_20170101000000001.jpg.chip.jpg"].startswith("unreadable image")
    assert reasons["30_0_1_20170101000000002.jpg.chip.jpg"] == "zero-byte file"
    assert reasons["30_0_1_20170101000000003.jpg.chip.jpg"] == "not an image file"
    assert len(dataset.manifest) == 8
    batch = next(iter(image_dataset(dataset.manifest, image_size=48, batch_size=8)))
    assert batch[0].shape == (8, 48, 48, 3) and batch[0].dtype == tf.float32
    assert float(tf.reduce_max(batch[0])) <= 255.0


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, payload: bytes = b"x") -> Path:
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        good = tarfile.TarInfo("UTKFace/20_0_0_20170101000000000.jpg.chip.jpg")
        good.size = 1
        archive.addfile(good, io.BytesIO(b"x"))
        archive.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "fifo"])
def test_hostile_archive_members_are_refused(tmp_path, kind):
    member = tarfile.TarInfo({"dotdot": "UTKFace/../../evil.jpg", "absolute": "/tmp/evil.jpg"}.get(kind, "UTKFace/x.jpg"))
    if kind in ("dotdot", "absolute"):
        member.size = 1
    elif kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        member.type, member.linkname = tarfile.LNKTYPE, "UTKFace/20_0_0_20170101000000000.jpg.chip.jpg"
    else:
        member.type = tarfile.FIFOTYPE
    archive = _tar_with(tmp_path, member)
    cache = tmp_path / "cache"
    with pytest.raises(FaceauditError, match="refusing the archive"):
        unpack_archive(archive, cache)
    written = [p for p in cache.rglob("*")] if cache.exists() else []
    assert all(p.is_dir() for p in written), written  # nothing unpacked, not even the good member
    assert not (tmp_path / "evil.jpg").exists()


def test_tfrecord_round_trip(utk_sample_dir, tmp_path):
    from faceaudit.datasets.tfdata import export_tfrecords, read_tfrecords

    manifest = load_dataset(utk_sample_dir, progress=False).manifest
    shards = export_tfrecords(manifest, tmp_path / "tfr", shards=3, progress=False)
    assert len(shards) == 9 and all(p.name.endswith(".tfrecord.gz") for p in shards)
    assert shards[0].read_bytes()[:2] == b"\x1f\x8b"  # GZIP
    by_id = manifest.set_index("image_id")
    seen = set()
    for example in read_tfrecords(shards):
        image_id = example["image_id"].numpy().decode()
        row = by_id.loc[image_id]
        assert example["image"].numpy() == Path(row["path"]).read_bytes()
        assert example["sha256"].numpy().decode() == row["sha256"]
        assert (int(example["age"]), int(example["gender"]), int(example["race"])) == (
            row["age"], ["Male", "Female"].index(row["gender"]),
            ["White", "Black", "Asian", "Indian", "Others"].index(row["race"]))
        seen.add(image_id)
    assert seen == set(manifest["image_id"])


def test_age_bands_default_decades_and_bad_specs():
    default = AgeBands.parse()
    assert list(default.assign([0, 2, 3, 9, 10, 69, 70, 116])) == ["0-2", "0-2", "3-9", "3-9", "10-19", "60-69", "70+", "70+"]
    decades = AgeBands.parse("decades")
    assert decades.labels[0] == "0-9" and decades.labels[-1] == "110-116"
    for spec in ("0-9,20-116", "5-116", "0-9,10-50", "0-9,ten+"):
        with pytest.raises(FaceauditError):
            AgeBands.parse(spec)


def test_generic_labelled_csv(utk_sample_dir, tmp_path):
    images = sorted(utk_sample_dir.glob("*.jpg"))[:6]
    table = pd.DataFrame({
        "file": [str(p) for p in images],
        "ethnicity": ["white", "Black", "2", "Indian", "other", "Martian"],
        "sex": ["m", "F", 0, 1, "female", "male"],
        "years": [25, 30, 41, 7, 66, 30],
    })
    csv = tmp_path / "faces.csv"
    table.to_csv(csv, index=False)
    with pytest.raises(FaceauditError, match="lacks column"):
        load_dataset(csv, progress=False)
    from faceaudit.datasets.manifest import ColumnMap

    dataset = load_dataset(csv, columns=ColumnMap(path="file", race="ethnicity", gender="sex", age="years"), progress=False)
    assert list(dataset.manifest.sort_values("age")["race"]) == ["Indian", "White", "Black", "Asian", "Others"]
    assert dataset.excluded["reason"].str.contains("unknown race label 'Martian'").item()


def test_saved_manifest_reloads_with_the_same_splits(utk_sample_dir, tmp_path):
    dataset = load_dataset(utk_sample_dir, progress=False)
    for name in ("manifest.csv", "manifest.parquet"):
        path = save_manifest(dataset.manifest, tmp_path / name)
        again = load_dataset(path, progress=False).manifest
        assert again[["image_id", "sha256", "race", "gender", "age", "split"]].astype(str).equals(
            dataset.manifest[["image_id", "sha256", "race", "gender", "age", "split"]].astype(str))


def test_fairface_layout_csv_reads_with_the_fairface_schema(utk64_dataset, tmp_path):
    """FairFace's own label layout (file,age,gender,race; ages as bins; paths relative to the CSV) over real images
    from the unpacked UTKFace cache loads with schema fairface7 and no column options."""
    import os

    from faceaudit.datasets.manifest import manifest_columns, summarise
    from faceaudit.taxonomy import FAIRFACE7

    sample = utk64_dataset.manifest.iloc[::150].head(140)
    races = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
    bins = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
    table = pd.DataFrame({
        "file": [os.path.relpath(p, tmp_path) for p in sample["path"]],
        "age": [bins[i % len(bins)] for i in range(len(sample))],
        "gender": [("Male", "Female")[i % 2] for i in range(len(sample))],
        "race": [races[i % len(races)] for i in range(len(sample))],
        "service_test": True,
    })
    table.loc[0, "race"] = "Martian"
    csv = tmp_path / "fairface_label_val.csv"
    table.to_csv(csv, index=False)

    dataset = load_dataset(csv, schema="fairface", progress=False)
    manifest = dataset.manifest
    assert dataset.schema.name == "fairface7" and dataset.schema.classes == FAIRFACE7.classes
    assert tuple(manifest.columns) == manifest_columns(FAIRFACE7) == tuple(MANIFEST_COLUMNS)
    assert len(manifest) == 139 and dataset.excluded["reason"].str.contains("unknown race label 'Martian'").item()
    assert list(manifest["race"].cat.categories) == list(FAIRFACE7.classes)
    assert set(manifest["race"]) == set(races)
    assert manifest["age"].isna().all() and manifest["age_band"].notna().all()
    by_file = table.set_index("file")
    row = manifest.iloc[0]
    given = by_file.loc[row["image_id"]]
    assert row["path"] == str((tmp_path / row["image_id"]).resolve()) and Path(row["path"]).is_file()
    expected_band = "70+" if given["age"] == "more than 70" else given["age"]
    assert row["age_band"] == expected_band and row["race"] == given["race"] and row["gender"] == given["gender"]
    assert (manifest["age_band"] == "70+").sum() == (table["age"].iloc[1:] == "more than 70").sum()
    assert set(manifest["split"]) == {"train", "val", "test"}
    # Splits are stratified by race x gender: every race x gender cell of 10 images puts 8 in train.
    cells = manifest.groupby(["race", "gender"], observed=True)["split"].apply(lambda s: (s == "train").mean())
    assert cells.between(0.6, 0.95).all()
    assert set(summarise(dataset)) == {"race", "gender", "age_band", "race_x_gender", "split"}
    # A saved manifest (ages NaN, bands given) reloads to the same data.
    again = load_dataset(save_manifest(manifest, tmp_path / "manifest.csv"), schema="fairface7", progress=False)
    assert again.fingerprint == dataset.fingerprint
    assert again.manifest["age_band"].astype(str).equals(manifest["age_band"].astype(str))
    # UTKFace's schema cannot read FairFace's races, and UTKFace file names cannot take FairFace's schema.
    assert len(load_dataset(csv, progress=False).manifest) < len(manifest)
    with pytest.raises(FaceauditError, match="UTKFace file names"):
        load_dataset(Path(sample["path"].iloc[0]).parent, schema="fairface", progress=False)


def test_synthetic_default_is_deterministic_and_marked(tmp_path):
    from faceaudit.datasets.synthetic import generate_synthetic_faces

    first = load_dataset(generate_synthetic_faces(tmp_path / "a", n=60, seed=3), progress=False)
    second = load_dataset(generate_synthetic_faces(tmp_path / "b", n=60, seed=3), progress=False)
    assert first.synthetic and second.synthetic
    assert list(first.manifest["sha256"]) == list(second.manifest["sha256"])
    assert set(first.manifest["race"]) == {"White", "Black", "Asian", "Indian", "Others"}
