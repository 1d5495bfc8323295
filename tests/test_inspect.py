"""`faceaudit data inspect` on real UTKFace images with planted problems: copies, re-encodes, dark and noise images."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from faceaudit.cli import main

RE_ENCODED = 8  # near-duplicate copies planted (JPEG re-encoded at quality 40)


def _name(age: int, gender: int, race: int, stamp: int) -> str:
    return f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg"


def _labels(name: str) -> tuple[int, int, int]:
    age, gender, race = name.split("_")[:3]
    return int(age), int(gender), int(race)


@pytest.fixture(scope="module")
def planted(utk_sample_dir, tmp_path_factory) -> dict:
    """A copy of the 400 real images plus an exact copy, re-encoded copies, a darkened image and a noise image."""
    folder = tmp_path_factory.mktemp("planted")
    originals = sorted(utk_sample_dir.iterdir())
    for path in originals:
        shutil.copy(path, folder / path.name)
    stamp = 20990101000000000
    plants = {"exact": [], "near": [], "dark": None, "noise": None}

    source = originals[0]
    copy = folder / _name(*_labels(source.name), stamp)
    shutil.copy(source, copy)
    plants["exact"].append((source.name, copy.name))

    for k, source in enumerate(originals[10:10 + 40:5]):
        stamp += 1
        target = folder / _name(*_labels(source.name), stamp)
        with Image.open(source) as image:
            image.convert("RGB").save(target, format="JPEG", quality=40)
        plants["near"].append((source.name, target.name))

    stamp += 1
    source = originals[100]
    dark = folder / _name(*_labels(source.name), stamp)
    with Image.open(source) as image:
        ImageEnhance.Brightness(image.convert("RGB")).enhance(0.2).save(dark, format="JPEG", quality=95)
    plants["dark"] = dark.name

    stamp += 1
    noise = folder / _name(30, 0, 0, stamp)
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(noise, format="JPEG", quality=95)
    plants["noise"] = noise.name
    plants["folder"] = folder
    return plants


@pytest.fixture(scope="module")
def inspected(planted, tmp_path_factory):
    """One run of the command, with the face check, on the planted folder."""
    out = tmp_path_factory.mktemp("inspect-out")
    code = main(["data", "inspect", str(planted["folder"]), "--out", str(out), "--faces",
                 "--exclude-kinds", "exact-duplicate,leak,nonface,dark"])
    assert code == 0
    return out


def test_outputs_written(inspected):
    facts = json.loads((inspected / "data.json").read_text())
    assert facts["schema"] == "faceaudit.data-inspection"
    assert facts["files"]["usable"] == 400 + 1 + RE_ENCODED + 2
    html = (inspected / "report.html").read_text()
    assert "Data inspection report" in html and "data:image/png;base64," in html and "data:image/jpeg;base64," in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "src=\"/" not in html
    info = subprocess.run(["pdfinfo", str(inspected / "report.pdf")], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info)[1]) >= 5
    exclusions = pd.read_csv(inspected / "exclusions.csv")
    assert list(exclusions.columns) == ["image_id", "reason"]
    for stem in ("composition_race_gender_age", "duplicate_pairs", "leakage", "images", "non_faces"):
        assert (inspected / "tables" / f"{stem}.csv").is_file()


def test_report_in_headless_chromium(inspected):
    from browser import check_page, find_chromium

    if find_chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    page = check_page(inspected / "report.html")
    assert page.images_total >= 40  # figures plus outlier, dark, non-face and duplicate thumbnails
    assert page.images_broken == [] and page.network_requests == [] and page.failed_requests == []
    assert page.console_errors == [] and page.scripts == 0
    assert page.title == "Data inspection report"


def test_planted_exact_duplicate_found_and_excluded(planted, inspected):
    pairs = pd.read_csv(inspected / "tables" / "duplicate_pairs.csv")
    exact = pairs[pairs["kind"] == "exact"]
    (a, b), = planted["exact"]
    assert ((exact["image_id_a"] == min(a, b)) & (exact["image_id_b"] == max(a, b))).any()
    # byte-identical files always share a split, so they never leak
    assert (exact["split_a"] == exact["split_b"]).all()
    exclusions = pd.read_csv(inspected / "exclusions.csv").set_index("image_id")["reason"]
    assert exclusions[max(a, b)].startswith("exact-duplicate: same bytes as " + min(a, b))
    assert min(a, b) not in exclusions.index


def test_planted_near_duplicates_and_leaks(planted, inspected):
    pairs = pd.read_csv(inspected / "tables" / "duplicate_pairs.csv")
    near = pairs[pairs["kind"] == "near"]
    found = {frozenset(p) for p in zip(near["image_id_a"], near["image_id_b"])}
    for original, copy in planted["near"]:
        assert frozenset((original, copy)) in found, f"re-encoded copy {copy} of {original} not found"
    planted_pairs = near[[frozenset(p) in {frozenset(x) for x in planted["near"]}
                          for p in zip(near["image_id_a"], near["image_id_b"])]]
    crossing = planted_pairs[planted_pairs["split_a"] != planted_pairs["split_b"]]
    assert len(crossing) >= 1, "no planted copy landed in another split; plant more"
    leakage = pd.read_csv(inspected / "tables" / "leakage.csv")
    assert leakage["pairs"].sum() >= len(crossing)
    exclusions = pd.read_csv(inspected / "exclusions.csv").set_index("image_id")["reason"]
    order = {"train": 0, "val": 1, "test": 2}
    for row in crossing.itertuples():
        later = row.image_id_b if order[row.split_b] > order[row.split_a] else row.image_id_a
        assert "leak:" in exclusions[later]
        pair = "-".join(sorted((row.split_a, row.split_b), key=order.get))
        assert leakage.loc[(leakage["split_pair"] == pair) & (leakage["kind"] == "near"), "pairs"].item() >= 1


def test_dark_image_listed(planted, inspected):
    flags = pd.read_csv(inspected / "tables" / "exposure_flags.csv").set_index("image_id")
    assert flags.loc[planted["dark"], "flag"] == "dark"
    assert flags.loc[planted["dark"], "brightness"] < 50
    exclusions = pd.read_csv(inspected / "exclusions.csv").set_index("image_id")["reason"]
    assert "dark: very dark" in exclusions[planted["dark"]]


def test_dark_image_is_top_outlier_and_noise_a_non_face(planted, inspected):
    images = pd.read_csv(inspected / "tables" / "images.csv").set_index("image_id")
    ranked = images.sort_values("outlier_score", ascending=False)
    assert ranked.index[0] == planted["dark"] and bool(ranked["outlier"].iloc[0])
    assert images.loc[planted["noise"], "n_faces"] == 0
    non_faces = pd.read_csv(inspected / "tables" / "non_faces.csv")
    assert planted["noise"] in set(non_faces["image_id"])
    exclusions = pd.read_csv(inspected / "exclusions.csv").set_index("image_id")["reason"]
    assert exclusions[planted["noise"]].startswith("nonface: no face found by MTCNN")
    # MTCNN finds a face in nearly all of the real images
    real = images.drop(index=[planted["noise"], planted["dark"]])
    assert (real["n_faces"] >= 1).mean() > 0.95


def test_exclusions_round_trip_through_summary(planted, inspected, capsys):
    capsys.readouterr()
    assert main(["data", "summary", str(planted["folder"])]) == 0
    before = int(re.search(r"usable: ([\d,]+)", capsys.readouterr().out)[1].replace(",", ""))
    assert main(["data", "summary", str(planted["folder"]), "--exclude", str(inspected / "exclusions.csv")]) == 0
    after = int(re.search(r"usable: ([\d,]+)", capsys.readouterr().out)[1].replace(",", ""))
    listed = len(pd.read_csv(inspected / "exclusions.csv"))
    assert listed >= 2 and after == before - listed


def test_composition_counts_match_manifest(utk64_dataset):
    from faceaudit.datasets.inspect.composition import composition, small_groups

    manifest = utk64_dataset.manifest
    tables = composition(manifest)
    for key in ("race", "gender", "age_band"):
        expected = manifest[key].value_counts()
        got = tables[key].set_index(key)["n"]
        assert (got.reindex(expected.index) == expected).all()
        assert tables[key]["share"].sum() == pytest.approx(1.0)
    assert tables["race_gender_age"]["n"].sum() == len(manifest)
    cell = tables["race_gender_age"].iloc[7]
    mask = ((manifest["race"] == cell["race"]) & (manifest["gender"] == cell["gender"])
            & (manifest["age_band"] == cell["age_band"]))
    assert cell["n"] == mask.sum()
    small = small_groups(manifest, min_size=30)
    assert (small["n_test"] < 30).all() and len(small) > 0


def test_isolation_forest_reproducible(utk_sample_dir):
    from faceaudit.datasets.inspect.anomalies import histogram_outliers
    from faceaudit.datasets.inspect.features import image_features
    from faceaudit.datasets.manifest import load_dataset

    dataset = load_dataset(utk_sample_dir, progress=False)
    measured = image_features(dataset.manifest, progress=False)
    first = histogram_outliers(measured.histograms, dataset.manifest["image_id"], share=0.05, seed=7)
    again = histogram_outliers(measured.histograms, dataset.manifest["image_id"], share=0.05, seed=7)
    other = histogram_outliers(measured.histograms, dataset.manifest["image_id"], share=0.05, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert first["outlier"].sum() == 20
    assert not np.allclose(first.sort_values("image_id")["outlier_score"], other.sort_values("image_id")["outlier_score"])


def test_mtcnn_faces_and_blank(utk_sample_dir, tmp_path):
    from faceaudit.datasets.inspect.nonfaces import detect_faces

    faces = sorted(utk_sample_dir.iterdir())[::50][:8]
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(blank)
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise)
    scan = detect_faces([str(p) for p in faces] + [str(blank), str(noise)], batch_size=4, progress=False)
    found = scan.table["n_faces"].to_numpy()
    assert (found[:8] >= 1).sum() >= 7
    assert found[8] == 0 and found[9] == 0
    assert scan.rate > 0


def test_hash_pairs_match_brute_force():
    from faceaudit.datasets.inspect.duplicates import close_hash_pairs

    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**63, size=2500, dtype=np.uint64)
    hashes[100] = hashes[7] ^ np.uint64(0b101)  # 2 bits apart
    hashes[2400] = hashes[7]                      # identical
    found = close_hash_pairs(hashes, 2, progress=False)
    brute = {(i, j) for i in range(len(hashes)) for j in (7, 100, 2400) if i < j
             and bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 2}
    assert {(int(i), int(j)) for i, j, _ in found} == brute == {(7, 100), (7, 2400), (100, 2400)}


def test_cli_errors_exit_2(tmp_path, capsys, planted):
    assert main(["data", "inspect", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["data", "inspect", str(planted["folder"]), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("faceaudit: error: cannot write to") and err.count("\n") == 1
    assert main(["data", "inspect", str(planted["folder"]), "--out", str(tmp_path / "o"),
                 "--exclude-kinds", "exact-duplicate,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert not (tmp_path / "o" / "data.json").exists()


def test_duplicate_groups_and_leakage_table():
    from faceaudit.datasets.inspect.duplicates import duplicate_groups, leakage

    pairs = pd.DataFrame({"image_id_a": ["c", "a", "b"], "image_id_b": ["e", "d", "f"],
                          "kind": ["near", "exact", "near"], "split_a": ["train", "val", "test"],
                          "split_b": ["test", "val", "train"]})
    assert duplicate_groups(pairs, pd.Series(list("abcdefg"))).tolist() == [0, 1, 2, 0, 2, 1, -1]
    table = leakage(pairs).set_index(["split_pair", "kind"])["pairs"]
    assert table[("train-test", "near")] == 2 and table.sum() == 2
