"""The typed audit result: its JSON Schema (generated, shipped, checked), one grouping-key type, the version check of
every seam file, and the confidence level as the report prints it."""

from __future__ import annotations

import json

import jsonschema
import pytest
from audit_fixtures import real_predictions  # noqa: F401  (session fixture)

import faceaudit
from faceaudit.auditing.json_schema import SCHEMA_FILE, audit_schema, schema_text, shipped_schema
from faceaudit.auditing.result import SCHEMA_VERSION, load_audit
from faceaudit.auditing.types import GroupingKey, Settings, Stat
from faceaudit.auditing.verdict import Verdict, combine, exit_code
from faceaudit.cli import main
from faceaudit.errors import FaceauditError
from faceaudit.seams.predictions import SHARDS_RECORD, read_shards_record, write_shards_record
from faceaudit.seams.run import RUN_FILE, RunRecord

FAST = {"n_boot": 100, "tsne": False, "seed": 3}


@pytest.fixture(scope="module")
def audited(real_predictions, tmp_path_factory):  # noqa: F811
    """A real audit (an MLP on real UTKFace pixels) written to a folder, at a 99.5 % level."""
    result = faceaudit.audit(real_predictions.test_table, ci=0.995, **FAST)
    return result, result.write(tmp_path_factory.mktemp("schema") / "audit")


def test_shipped_schema_is_the_one_the_types_generate():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), \
        "faceaudit/schemas/audit.schema.json is stale: run python -m faceaudit.auditing.json_schema"
    assert shipped_schema() == audit_schema() and shipped_schema()["version"] == SCHEMA_VERSION
    jsonschema.Draft202012Validator.check_schema(shipped_schema())


def test_a_real_audit_validates_and_a_broken_one_does_not(audited):
    result, folder = audited
    data = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(shipped_schema())
    assert list(validator.iter_errors(data)) == [] and data["schema_version"] == SCHEMA_VERSION
    assert load_audit(folder).to_dict() == data  # typed records read back to the same JSON
    for path, value in ((("settings", "ci"), "0.95"), (("overall", "metrics", "accuracy", "ci"), [0.1]),
                        (("groupings", "race", "groups", 0, "too_small"), "no"), (("settings", "surprise"), 1)):
        broken = json.loads(json.dumps(data))
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert list(validator.iter_errors(broken)), path


def test_the_result_is_typed(audited):
    result, folder = audited
    back = load_audit(folder)
    assert isinstance(back.settings, Settings) and back.settings.level == 0.995 == back.level
    race = back.grouping("race")
    assert race.grouping_key == GroupingKey(("race",)) and race.groups[0].metrics["accuracy"].interval is not None
    assert isinstance(race.groups[0].metrics["accuracy"], Stat)
    assert race.groups[0]["metrics"]["accuracy"]["ci"] == race.groups[0].metrics["accuracy"].ci  # JSON-shaped reads
    assert back.grouping_key("gender x race") == back.grouping_key(("gender", "race")) == "race×gender"


def test_level_prints_as_the_audit_used_it(audited):
    result, folder = audited
    assert main(["report", str(folder), "--no-pdf", "--no-thumbnails"]) == 0
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert "99.5 % intervals" in summary and "99 %" not in summary and "99% " not in summary
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "99.5%" in html or "99.5 %" in html
    assert "99.5 %" in result._repr_html_()


def test_grouping_key_is_one_type():
    key = GroupingKey.parse("gender x race")
    assert key.name == "gender×race" and key.same(("race", "gender")) and not key.same(("race",))
    assert GroupingKey.parse("race*gender") == GroupingKey.parse("race, gender") == GroupingKey(("race", "gender"))
    assert key.group_key({"race": "Black", "gender": "Female"}) == "Female × Black"
    assert key.group_values("Female × Black") == {"gender": "Female", "race": "Black"}
    with pytest.raises(FaceauditError, match="empty attribute"):
        GroupingKey.parse("race××gender")
    with pytest.raises(FaceauditError, match="one value per attribute"):
        key.group_values("Female")


def test_one_verdict_type_and_one_exit_rule():
    assert combine([]) == Verdict.PASS and combine(["pass", "inconclusive"]) == Verdict.INCONCLUSIVE
    assert combine(["inconclusive", "fail", "pass"]) == "fail"
    assert exit_code(["pass"]) == 0 and exit_code(["fail"], "pass") == 1
    assert exit_code(["inconclusive"], "fail") == 1 and exit_code(["inconclusive"], "pass") == 0
    assert exit_code(None) == 0 and json.dumps({"status": Verdict.FAIL}) == '{"status": "fail"}'


def _refused(capsys, args: list[str], says: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("faceaudit: error: ") and says in err and err.count("\n") == 1, err


def test_newer_audit_json_is_refused_in_one_line(audited, tmp_path, capsys):
    _, folder = audited
    data = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    for version, says in (("3.0", "audit.json schema version 3.0 is newer than this faceaudit reads (2.x"),
                          ("1.4", "audit.json schema version 1.4 is not supported"),
                          ("two", "audit.json schema version 'two' is not a major.minor number")):
        (tmp_path / "audit.json").write_text(json.dumps({**data, "schema_version": version}))
        _refused(capsys, ["report", str(tmp_path)], says)
    (tmp_path / "audit.json").write_text(json.dumps({**data, "schema_version": "2.99"}))  # a newer minor reads
    assert load_audit(tmp_path).overall.n == data["overall"]["n"]


def test_newer_run_json_predictions_and_predict_json_are_refused(real_predictions, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_FILE).write_text(json.dumps({"run_version": "2.0", "backbone": "cnn"}))
    with pytest.raises(FaceauditError, match="run.json version 2.0 is newer than this faceaudit reads"):
        RunRecord.read(run)
    (run / RUN_FILE).write_text(json.dumps({"run_version": "1.7", "backbone": "cnn"}))
    assert RunRecord.read(run).backbone == "cnn"  # a newer minor adds keys only

    import pyarrow.parquet as pq

    table = tmp_path / "p.parquet"
    real_predictions.test_table.write(table)
    assert faceaudit.audit(table, **FAST).overall.n == len(real_predictions.test_table.frame)
    arrow = pq.read_table(table)
    pq.write_table(arrow.replace_schema_metadata({**arrow.schema.metadata, b"faceaudit.predictions": b"2.0"}), table)
    with pytest.raises(FaceauditError, match="predictions table p.parquet version 2.0 is newer"):
        faceaudit.audit(table, **FAST)

    shards = tmp_path / "shards"
    shards.mkdir()
    write_shards_record(shards, {"model": {"name": "m"}, "shards": []})
    record = json.loads((shards / SHARDS_RECORD).read_text())
    assert record["predict_version"] == "1.0" and read_shards_record(shards)["model"] == {"name": "m"}
    (shards / SHARDS_RECORD).write_text(json.dumps({**record, "predict_version": "2.1"}))
    with pytest.raises(FaceauditError, match="predict.json version 2.1 is newer"):
        read_shards_record(shards)


def test_written_audits_hook_validates_against_the_schema(audited, tmp_path):
    """The autouse check every test runs (tests/audit_checks.py) reports a schema break in a faceaudit audit.json."""
    from audit_checks import audit_problems

    _, folder = audited
    data = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    assert audit_problems(data) == []
    data["settings"]["ci"] = "high"
    problems = audit_problems(data)
    assert problems and problems[0].startswith("schema: $.settings.ci")
