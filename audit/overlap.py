"""Training-data overlap: is the model being audited on faces it was trained on?

A published model trained on UTKFace and audited on UTKFace has seen most of the test faces: every score is
optimistic, and by how much differs between groups. The contract's provenance names the data sets a model was
trained on (and may point to the SHA-256 hashes of its training images); this module compares them with the test
set and says so in plain words.
"""

from __future__ import annotations

import re

import pandas as pd

from faceaudit.seams.contract import ModelContract, training_hashes

#: UTKFace's file names: ``[age]_[gender]_[race]_[date&time].jpg(.chip.jpg)``.
_UTKFACE_NAME = re.compile(r"(?:^|/)\d{1,3}_[01]_[0-4]_\d+\.jpg", re.IGNORECASE)


def test_dataset_name(rows: pd.DataFrame, source: str | None) -> str:
    """``UTKFace`` when (nearly) every test image carries a UTKFace file name, else the source's name."""
    ids = rows["image_id"].astype(str) if "image_id" in rows else pd.Series([], dtype=str)
    if len(ids) and ids.str.contains(_UTKFACE_NAME).mean() >= 0.9:
        return "UTKFace"
    return str(source or "the test set").rstrip("/").split("/")[-1]


def training_overlap(contract: ModelContract, rows: pd.DataFrame, source: str | None) -> dict | None:
    """``model.overlap`` of audit.json: whether the test set is one the model was trained on, and how many test
    images are among the training hashes the contract gives; None when the contract says nothing of either."""
    provenance = contract.provenance
    hashes = training_hashes(contract)
    if not provenance.training_datasets and hashes is None:
        return None
    name = test_dataset_name(rows, source)
    same = any(d.strip().lower() == name.lower() for d in provenance.training_datasets)
    counted = None
    if hashes is not None and "sha256" in rows:
        counted = int(rows["sha256"].astype(str).str.lower().isin(hashes).sum())
    return {"training_datasets": list(provenance.training_datasets), "test_dataset": name, "same_source": same,
            "training_hashes": None if hashes is None else len(hashes), "overlapping_images": counted,
            "n": int(len(rows))}


def sentence(overlap: dict | None) -> str | None:
    """The verdict's plain words on overlap, or None when there is nothing to say."""
    if not overlap:
        return None
    counted, n = overlap.get("overlapping_images"), overlap.get("n")
    if counted == 0:  # the training images' hashes are the better evidence: none of these faces is among them
        return None
    if counted:
        return (f"TRAINED ON THESE FACES: {counted:,} of the {n:,} test images are among the model's training "
                "images (by SHA-256). Its scores here are optimistic, and the gap between groups may be too: a model "
                "is most accurate on the faces it memorised.")
    if overlap.get("same_source"):
        return (f"TRAINED ON THIS DATA SET: the model was trained on {overlap['test_dataset']}, the source of these "
                "test images, so it has likely seen many of them. Its scores here are optimistic, and the gap between "
                "groups may be too; audit it on faces from another source for numbers that generalise.")
    return None


def split_leak(count: int, example: str, where: str, allow: bool) -> list[str]:
    """What an audit says of ``count`` test image ids that also appear under split(s) ``where`` (val, train): a
    leak (temperature scaling fitted on test images, a model judged on what it saw). One FaceauditError naming the
    count and an example, or, when ``allow`` (``--allow-overlap``), a note that becomes a warning on the console,
    in the report and audit.json; nothing when there is no overlap."""
    from faceaudit.errors import FaceauditError

    if not count:
        return []
    text = f"{count:,} test image id(s) also under split={where} (e.g. {example!r}): the same image is in two splits"
    if not allow:
        raise FaceauditError(f"{text}; remove the duplicates, or pass --allow-overlap to audit anyway with a warning")
    return [f"{text}, audited anyway (--allow-overlap)"]

