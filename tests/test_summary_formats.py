"""`faceaudit summary`: the JSON verdict against its shipped schema, the GitHub and GitLab forms through a Markdown
renderer, summary.md unchanged, --out / --step-summary and the exit codes, on real audits of real predictions."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
from audit_fixtures import GAP_AND_FLOOR_GATES, SIZE_GATE, real_predictions  # noqa: F401  (session fixture)
from markdown_it import MarkdownIt

from faceaudit.auditing.report.review_summary import FORMATS, SUMMARY_SCHEMA_VERSION
from faceaudit.auditing.report.summary import summary_markdown
from faceaudit.auditing.result import load_audit
from faceaudit.cli import main
from faceaudit.commands.summary import FORMATS as CLI_FORMATS

GATES = GAP_AND_FLOOR_GATES + SIZE_GATE
URL = "https://reports.example.org/faceaudit/run-7/"


@pytest.fixture(scope="module")
def audits(real_predictions, tmp_path_factory):  # noqa: F811
    """A gated audit with its report (HTML only); and, without gates or report, the same model made blind to Black
    faces (their probabilities flattened), audited against the first as its baseline."""
    root = tmp_path_factory.mktemp("summary")
    gates = root / "gates.toml"
    gates.write_text(GATES)
    common = ["--n-boot", "200", "--no-tsne", "--no-report"]
    gated, ungated = root / "gated", root / "ungated"
    assert main(["audit", "--predictions", str(real_predictions.csv), *common, "--gates", str(gates),
                 "--out", str(gated)]) == 1
    assert main(["report", str(gated), "--no-pdf", "--no-thumbnails"]) == 0
    frame = pd.read_csv(real_predictions.csv)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("pred_")])  # recomputed from the probs
    probs = [c for c in frame.columns if c.startswith("prob_")]
    frame.loc[frame["race"] == "Black", probs] = [1.0 if c == "prob_White" else 0.0 for c in probs]
    blind = root / "blind.csv"
    frame.to_csv(blind, index=False)
    assert main(["audit", "--predictions", str(blind), *common, "--baseline", str(gated), "--out", str(ungated)]) == 0
    return {"gated": gated, "ungated": ungated}


def _summary(capsys, folder: Path, *options: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["summary", str(folder), *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _html(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_json_summary_is_the_audit_verdict_and_validates_against_the_shipped_schema(audits, capsys, tmp_path):
    schema = json.loads((resources.files("faceaudit") / "schemas" / "summary.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["version"] == SUMMARY_SCHEMA_VERSION and FORMATS == CLI_FORMATS
    for name, folder in audits.items():
        code, out, _ = _summary(capsys, folder, "--format", "json", "--report-url", URL)
        assert code == 0  # a reader: a failed gate is the audit's exit code, not the summary's
        verdict = json.loads(out)
        jsonschema.Draft202012Validator(schema).validate(verdict)
        audit = json.loads((folder / "audit.json").read_text())
        assert verdict["status"] == audit["status"] == ("fail" if name == "gated" else "not gated")
        assert verdict["audit_schema_version"] == audit["schema_version"]
        overall = audit["overall"]["metrics"]["accuracy"]
        assert (verdict["overall"]["value"], verdict["overall"]["ci"]) == (overall["value"], overall["ci"])
        assert verdict["overall"]["n"] == audit["overall"]["n"] and verdict["level"] == audit["settings"]["ci"]
        # the worst groups are summary.md's, in its order
        summary_md = summary_markdown(load_audit(folder))
        worst = summary_md[summary_md.index("### Worst groups"):].split("\n\n")[1].splitlines()[2:]
        assert [row.split(" | ")[1] for row in worst] == [g["group"] for g in verdict["worst_groups"]]
        if name == "gated":
            assert [(g["name"], g["status"]) for g in verdict["gates"]["results"]] == \
                [(g["name"], g["status"]) for g in audit["gates"]["results"]]
            gap = next(g for g in verdict["gates"]["results"] if g["rule"] == "max_gap")
            assert gap["status"] == "fail" and gap["value"]["ci"][0] > 0.05  # the whole interval above the bound
            assert verdict["report"]["html"] == URL + "report.html" and verdict["report"]["pdf"] is None  # --no-pdf
        else:
            assert verdict["gates"] is None and verdict["report"]["html"] is None  # no report rendered
        if name == "gated":
            assert verdict["baseline"] is None
        else:  # paired on the same images: Black faces got worse, as audit.json's baseline says
            base = verdict["baseline"]
            assert base["method"] == "paired" and base["worse"] == audit["baseline"]["worse"] >= 1
            black = next(r for r in base["changes"] if (r["grouping"], r["group"]) == ("race", "Black"))
            assert black["verdict"] == "worse" and black["new"]["value"] == 0 and black["ci"][1] < 0
    # a schema violation is caught: the validator is not vacuous
    verdict["status"] = "passed"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(verdict, schema)


def test_github_summary_renders_with_details_tables_and_absolute_links(audits, capsys):
    code, text, _ = _summary(capsys, audits["gated"], "--format", "github", "--report-url", URL)
    assert code == 0
    assert "**Status: FAIL**" in text.splitlines()[2]
    html = _html(text)
    assert html.count("<details>") >= 3 and "<summary>Gates group by group</summary>" in html
    assert "<table>" in html and "<th>verdict</th>" in html and "race accuracy gap" in html
    # tables inside <details> render as tables (a blank line after <summary>), not as literal pipes
    details = html[html.index("<details>"):]
    assert "<table>" in details and "| ---" not in details
    links = re.findall(r'href="([^"]+)"', html)
    assert URL + "report.html" in links and URL + "audit.json" in links
    assert all(link.startswith("https://") for link in links)  # nothing relative that means nothing in a PR
    # Without --report-url: no link, and it says where the report is.
    _, plain, _ = _summary(capsys, audits["gated"], "--format", "github")
    assert "href" not in _html(plain) and f"`{audits['gated']}`" in plain and "no `--report-url`" in plain
    # An ungated audit says so, with the clear word, and that no report was rendered.
    _, ungated, _ = _summary(capsys, audits["ungated"], "--format", "github")
    assert "**Status: NOT GATED**" in ungated and "### Gates" not in ungated
    assert "No report was rendered" in ungated
    baseline = _html(ungated[ungated.index("### Against the baseline"):])
    assert "<td>Black</td>" in baseline.split("</table>")[0] and "<td>worse</td>" in baseline


def test_gitlab_summary_renders_in_a_merge_request_note(audits, capsys):
    job = "https://gitlab.example.com/g/p/-/jobs/42/artifacts/file/reports/audit"
    code, text, _ = _summary(capsys, audits["gated"], "--format", "gitlab", "--report-url", job)
    assert code == 0 and "**Status:** {- FAIL -}" in text  # GitLab's inline diff colours the word red
    html = _html(text)
    assert "<details>" in html and "<table>" in html and f'href="{job}/report.html"' in html


def test_markdown_is_summary_md_and_out_writes_the_same_text(audits, capsys, tmp_path):
    code, text, _ = _summary(capsys, audits["gated"])
    assert code == 0 and text == (audits["gated"] / "summary.md").read_text()  # as the report wrote it
    code, text, _ = _summary(capsys, audits["ungated"])  # no report rendered: no summary.md, the same text
    assert code == 0 and text == summary_markdown(load_audit(audits["ungated"])) and "NOT GATED" in text
    out = tmp_path / "nested" / "comment.md"
    code, printed, err = _summary(capsys, audits["gated"], "--format", "github", "--out", str(out))
    assert code == 0 and printed == "" and out.read_text() == _summary(capsys, audits["gated"], "--format", "github")[1]
    assert not list(out.parent.glob(".partial-*"))  # written atomically


def test_step_summary_appends_to_the_github_job_summary(audits, capsys, tmp_path, monkeypatch):
    step = tmp_path / "step_summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    code, out, _ = _summary(capsys, audits["gated"], "--format", "github", "--step-summary")
    assert code == 0 and out == ""
    body = step.read_text()
    assert body.startswith("earlier step\n## faceaudit:") and "**Status: FAIL**" in body
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    code, out, err = _summary(capsys, audits["gated"], "--format", "github", "--step-summary")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "$GITHUB_STEP_SUMMARY" in err


@pytest.mark.parametrize("case", ["missing", "not json", "not an audit", "relative url"])
def test_unreadable_audit_or_bad_url_is_one_line_and_exit_2(audits, capsys, tmp_path, case):
    target, options = tmp_path / "nothing", []
    if case == "not json":  # (named other than audit.json: the suite checks every audit.json a test writes)
        target = tmp_path / "broken.json"
        target.write_text("{not json")
    elif case == "not an audit":
        target = tmp_path / "table.json"
        pd.DataFrame({"a": [1]}).to_json(target)
    elif case == "relative url":
        target, options = audits["gated"], ["--format", "github", "--report-url", "reports/audit"]
    code, out, err = _summary(capsys, target, *options)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("faceaudit: error:")


def test_untrusted_names_cannot_inject_markup_into_a_comment(audits, capsys, tmp_path):
    audit = json.loads((audits["gated"] / "audit.json").read_text())
    audit["model"]["name"] = "<img src=x onerror=alert(1)> | **bold** [link](http://evil.example)"
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "audit.json").write_text(json.dumps(audit))
    for fmt in ("github", "gitlab"):
        code, text, _ = _summary(capsys, folder, "--format", fmt)
        html = _html(text)
        assert code == 0 and "<img" not in html and "<strong>bold" not in html
        assert not any("evil.example" in href for href in re.findall(r'href="([^"]+)"', html))
        assert "&lt;img src=x onerror=alert(1)&gt;" in html.splitlines()[0]  # shown as text, in the title
