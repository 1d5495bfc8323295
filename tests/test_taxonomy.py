"""Label schemas as data: presets, age bands (FairFace's bins), label spellings, inference from a table, JSON form."""

from __future__ import annotations

import pandas as pd
import pytest
import simulated

import faceaudit
from faceaudit import AgeBands, Attribute, FaceauditError, LabelSchema
from faceaudit.taxonomy import get_schema


def test_presets():
    assert faceaudit.UTKFACE.classes == ("White", "Black", "Asian", "Indian", "Others")
    assert len(faceaudit.FAIRFACE7.classes) == 7 and "Latino_Hispanic" in faceaudit.FAIRFACE7.classes
    assert faceaudit.FAIRFACE4.classes == ("White", "Black", "Asian", "Indian")
    for schema in (faceaudit.UTKFACE, faceaudit.FAIRFACE7, faceaudit.FAIRFACE4):
        assert schema.target == "race" and schema.groups == ("race", "gender", "age_band")
        assert schema.groupings[:3] == (("race",), ("gender",), ("age_band",)) and len(schema.groupings) == 7
        assert schema.prob_columns == tuple(f"prob_{c}" for c in schema.classes)
    assert get_schema("fairface") is faceaudit.FAIRFACE7 and get_schema(None) is faceaudit.UTKFACE
    with pytest.raises(FaceauditError, match="unknown label schema 'fairface9'; presets: utkface"):
        get_schema("fairface9")


def test_fairface_age_bins_are_the_default_bands():
    bands = AgeBands.parse()
    assert bands.labels == ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
    for label in simulated.FAIRFACE_AGES:
        assert bands.normalise_label(label) in bands.labels
    assert bands.normalise_label("more than 70") == "70+" and bands.normalise_label("20 - 29") == "20-29"
    assert bands.normalise_label("25-35") is None
    assert list(bands.assign(pd.Series([0, 2, 3, 69, 70, 116]))) == ["0-2", "0-2", "3-9", "60-69", "70+", "70+"]
    assert AgeBands.parse("decades").labels[-1] == "110-116"


@pytest.mark.parametrize("spec, message", [
    ("0-9,20-116", "contiguous"), ("5-9,10+", "must cover 0-116"), ("0-9,ten+", "not of the form"),
    ("0-9,9-5,10+", "ends before it starts"),
])
def test_bad_age_bands(spec, message):
    with pytest.raises(FaceauditError, match=message):
        AgeBands.parse(spec)


def test_label_spellings():
    race = faceaudit.FAIRFACE7.attribute("race")
    assert race.normalise("latino") == "Latino_Hispanic" and race.normalise("east_asian") == "East Asian"
    assert race.normalise("2") == "Latino_Hispanic" and race.normalise("white") == "White"
    gender = faceaudit.UTKFACE.attribute("gender")
    assert gender.normalise("F") == "Female" and gender.normalise(0) == "Male"
    with pytest.raises(FaceauditError, match="unknown race label 'Martian'; expected one of White"):
        race.normalise("Martian")
    assert faceaudit.FAIRFACE4.attribute("race").normalise("Southeast Asian") == "Asian"


def test_schema_checks_its_names():
    with pytest.raises(FaceauditError, match="has no attribute 'planet'"):
        LabelSchema("x", "planet", (Attribute("race", ("A", "B")),))
    with pytest.raises(FaceauditError, match="at least two classes"):
        LabelSchema("x", "race", (Attribute("race", ("A",)),))
    with pytest.raises(FaceauditError, match="must be a word"):
        Attribute("skin tone", ("I", "II"))
    with pytest.raises(FaceauditError, match="name an attribute twice"):
        faceaudit.UTKFACE.with_options(groups=("race", "race"))


def test_variants_and_json_round_trip():
    gender = faceaudit.FAIRFACE7.with_options(target="gender", groups=("race", "age_band"), age_bands="decades")
    assert gender.classes == ("Male", "Female") and gender.groupings == (("race",), ("age_band",), ("race", "age_band"))
    assert gender.pred_column == "pred_gender" and gender.label("race×age_band") == "race × age band"
    again = LabelSchema.from_dict(gender.to_dict())
    assert again.to_dict() == gender.to_dict() and again.classes == gender.classes and again.groups == gender.groups
    three = faceaudit.UTKFACE.with_classes(["A", "B", "C"])
    assert three.classes == ("A", "B", "C") and three.attribute("gender") == faceaudit.UTKFACE.attribute("gender")


def test_infer_from_tables():
    utk = LabelSchema.infer(simulated.utkface(200))
    assert utk.classes == faceaudit.UTKFACE.classes and utk.groups == ("race", "gender", "age_band")
    fair = LabelSchema.infer(simulated.fairface7(200))
    assert fair.classes == faceaudit.FAIRFACE7.classes  # the prob_* columns' order
    gender = LabelSchema.infer(simulated.gender_classifier(200), target="gender", groups=("race", "age_band"))
    assert set(gender.classes) == {"Male", "Female"} and gender.groups == ("race", "age_band")
    with pytest.raises(FaceauditError, match="lacks column.*to group by: skin_tone"):
        LabelSchema.infer(simulated.utkface(50), groups=("race", "skin_tone"))
    no_age = simulated.utkface(50).drop(columns=["age"])
    assert LabelSchema.infer(no_age).groups == ("race", "gender")
