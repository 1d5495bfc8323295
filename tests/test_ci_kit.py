"""docs/ci: the GitHub Actions workflow and the GitLab CI job, their shell steps run as written against the demo model.

Only what needs the network is replaced, and each replacement is named here:
- fakes first on PATH that record their arguments (and the files they were handed) and succeed: ``pip`` (the
  package is installed already: the venv's ``faceaudit`` is next on PATH), ``apt-get``, ``sudo`` (runs its
  command), ``gh`` and ``curl`` (the pull-request comment and the merge-request note);
- GitHub's ``uses:`` actions, run by :data:`ACTIONS`: checkout copies the repository files the steps read,
  setup-python is the installed environment, cache restores nothing (the demo model is trained by the step as
  written), upload-artifact copies the folder and gives back an artifact URL, the JUnit reporter records its file;
- GitLab's cache: its job runs where the GitHub run left the cached paths (``.faceaudit-cache``,
  ``reports/demo-cnn``), as GitLab's cache would restore them; its predefined variables are given values.
``${{ ... }}`` expressions and ``if:`` conditions are evaluated for a pull-request event; one this file does not
know fails the test, so an edit to the workflow cannot slip past it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CI_DIR = REPO / "docs" / "ci"
VENV_BIN = Path(sys.executable).parent
#: The repository files the steps read (actions/checkout, and GitLab's clone).
CHECKOUT_FILES = ("faceaudit/gates.toml", "pyproject.toml")
#: What GitLab's cache holds between pipelines (the job's cache:paths), checked against the file below.
GITLAB_CACHE = (".faceaudit-cache", "reports/demo-cnn")
ARTIFACT_URL = "https://github.com/octo/faceaudit-demo/actions/runs/1/artifacts/99"
GITHUB = {"token": "fake-gh-token", "repository": "octo/faceaudit-demo", "event_name": "pull_request",
          "event.pull_request.number": "24"}
GITLAB = {"CI_JOB_URL": "https://gitlab.example.com/group/project/-/jobs/42",
          "CI_API_V4_URL": "https://gitlab.example.com/api/v4", "CI_PROJECT_ID": "7", "CI_MERGE_REQUEST_IID": "5",
          "CI_PIPELINE_SOURCE": "merge_request_event", "FACEAUDIT_NOTE_TOKEN": "fake-note-token", "GITLAB_CI": "true"}

#: A fake command: its arguments as one JSON line in $FAKE_LOG/<name>.jsonl; a --body-file / body@FILE it is
#: handed is copied beside the log, as the server would have received it.
FAKE = """#!{python}
import json, os, shutil, sys
from pathlib import Path
log = Path(os.environ["FAKE_LOG"])
name = Path(sys.argv[0]).name
args = sys.argv[1:]
with open(log / (name + ".jsonl"), "a") as handle:
    handle.write(json.dumps(args) + "\\n")
for i, arg in enumerate(args):
    body = args[i + 1] if arg == "--body-file" else arg[5:] if arg.startswith("body@") else None
    if body:
        shutil.copy(body, log / (name + "-body.md"))
if name == "sudo":
    os.execvp(args[0], args)
"""


def _fakes(tmp: Path) -> tuple[Path, Path]:
    bin_dir, log = tmp / "fake-bin", tmp / "fake-log"
    bin_dir.mkdir()
    log.mkdir()
    for name in ("pip", "apt-get", "sudo", "gh", "curl"):
        path = bin_dir / name
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(0o755)
    return bin_dir, log


def _calls(log: Path, name: str) -> list[list[str]]:
    path = log / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _base_env(bin_dir: Path, log: Path) -> dict[str, str]:
    """The runner's environment: this machine's, without faceaudit's or a CI's own variables, fakes first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FACEAUDIT_", "GITHUB_", "CI_", "GITLAB_", "RUNNER_")) and k not in ("GH_TOKEN", "CI")}
    env["PATH"] = os.pathsep.join([str(bin_dir), str(VENV_BIN), env.get("PATH", "/usr/bin:/bin")])
    env["FAKE_LOG"] = str(log)
    env["CI"] = "true"
    return env


def _checkout(workspace: Path) -> None:
    for name in CHECKOUT_FILES:
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, workspace / name)


# -- GitHub Actions -------------------------------------------------------------------------------------------------


class GitHubRun:
    """One job of the workflow run step by step the way the runner does: ``run:`` scripts under
    ``bash -e`` (the runner's default shell), a failed step skips the steps without an ``if:``."""

    def __init__(self, workflow: dict, workspace: Path, tmp: Path, bin_dir: Path, log: Path):
        self.workflow, self.workspace, self.tmp, self.log = workflow, workspace, tmp, log
        self.env = _base_env(bin_dir, log)
        self.env.update({"GITHUB_WORKSPACE": str(workspace), "GITHUB_ACTIONS": "true",
                         "GITHUB_STEP_SUMMARY": str(tmp / "step_summary.md"), "GITHUB_EVENT_NAME": "pull_request"})
        self.outputs: dict[str, dict[str, str]] = {}
        self.failed = False
        self.results: dict[str, int | None] = {}  # step name -> exit code (None: skipped)
        self.artifacts = tmp / "artifacts"
        self.junit: list[str] = []

    def value(self, expression: str, env: dict) -> str:
        expression = expression.strip()
        if expression.startswith("env."):
            return env[expression[4:]]
        if expression.startswith("github."):
            return GITHUB[expression[7:]]
        found = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expression)
        if found:
            return self.outputs.get(found[1], {}).get(found[2], "")
        found = re.fullmatch(r"hashFiles\('([^']+)'\)", expression)
        if found:
            return "hash-of-" + found[1] if (self.workspace / found[1]).exists() else ""
        pytest.fail(f"the test does not know the workflow expression ${{{{ {expression} }}}}")

    def expand(self, text: str, env: dict) -> str:
        return re.sub(r"\$\{\{(.*?)\}\}", lambda m: self.value(m[1], env), str(text))

    def condition(self, step: dict) -> bool:
        text = step.get("if")
        if text is None:
            return not self.failed  # success()
        text = text.strip().removeprefix("${{").removesuffix("}}").strip()
        verdict = True
        for term in (t.strip() for t in text.split("&&")):
            if term == "!cancelled()":
                continue  # nothing is cancelled here
            found = re.fullmatch(r"github\.event_name == '(\w+)'", term)
            if not found:
                pytest.fail(f"the test does not know the workflow condition {term!r}")
            verdict = verdict and GITHUB["event_name"] == found[1]
        return verdict

    def run(self) -> None:
        self.env.update({k: self.expand(v, self.env) for k, v in (self.workflow.get("env") or {}).items()})
        (job,) = self.workflow["jobs"].values()
        for index, step in enumerate(job["steps"]):
            name = step.get("name") or step.get("uses") or f"step {index}"
            if not self.condition(step):
                self.results[name] = None
                continue
            env = dict(self.env)
            env.update({k: self.expand(v, env) for k, v in (step.get("env") or {}).items()})
            code = self.action(step, env) if "uses" in step else self.script(step, env)
            self.results[name] = code
            self.failed = self.failed or code != 0

    def script(self, step: dict, env: dict) -> int:
        output = self.tmp / f"output-{len(self.results)}"
        output.write_text("")
        env["GITHUB_OUTPUT"] = str(output)
        script = self.tmp / f"step-{len(self.results)}.sh"
        script.write_text(step["run"])  # as written: the runner hands the step's text to bash
        done = subprocess.run(["bash", "-e", str(script)], cwd=self.workspace,
                              env=env, capture_output=True, text=True, timeout=900)
        (self.tmp / f"step-{len(self.results)}.log").write_text(done.stdout + done.stderr)
        if "id" in step:
            self.outputs[step["id"]] = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        return done.returncode

    def action(self, step: dict, env: dict) -> int:
        uses = step["uses"].split("@")[0]
        with_ = {k: self.expand(v, env) for k, v in (step.get("with") or {}).items()}
        if uses not in ACTIONS:
            pytest.fail(f"the test does not know the action {uses}")
        outputs = ACTIONS[uses](self, with_) or {}
        if "id" in step:
            self.outputs[step["id"]] = outputs
        return 0


def _upload(run: GitHubRun, with_: dict) -> dict:
    source = run.workspace / with_["path"]
    if source.exists():
        shutil.copytree(source, run.artifacts / with_["name"])
    return {"artifact-url": ARTIFACT_URL}


#: GitHub actions stood in for (they download or talk to GitHub): what each does here.
ACTIONS = {
    "actions/checkout": lambda run, with_: _checkout(run.workspace),
    "actions/setup-python": lambda run, with_: None,  # the venv running these tests is the Python
    "actions/cache": lambda run, with_: None,  # a cold cache: the steps train the demo model as written
    "actions/upload-artifact": _upload,
    "mikepenz/action-junit-report": lambda run, with_: run.junit.append(with_["report_paths"]),
}


# -- GitLab CI ------------------------------------------------------------------------------------------------------


def _gitlab_job(job: dict, workspace: Path, tmp: Path, bin_dir: Path, log: Path) -> tuple[int, int]:
    """before_script and script in one shell (stopping at the first failing command), then after_script in a new
    one whatever happened, the way GitLab's shell executor runs a job; their exit codes."""
    env = _base_env(bin_dir, log)
    env.update(GITLAB)
    env.update({k: str(v) for k, v in job["variables"].items()})

    def shell(lines: list[str], name: str) -> int:
        script = tmp / f"gitlab-{name}.sh"
        script.write_text("set -eo pipefail\n" + "\n".join(lines) + "\n")
        done = subprocess.run(["bash", "--noprofile", "--norc", str(script)], cwd=workspace, env=env,
                              capture_output=True, text=True, timeout=900)
        (tmp / f"gitlab-{name}.log").write_text(done.stdout + done.stderr)
        return done.returncode

    return shell(job["before_script"] + job["script"], "script"), shell(job["after_script"], "after")


# -- the test -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ci_workflows_run_as_written_against_the_demo_model(tmp_path):
    import jsonschema
    from markdown_it import MarkdownIt

    bin_dir, log = _fakes(tmp_path)
    workflow = yaml.safe_load((CI_DIR / "github-actions.yml").read_text())
    assert workflow[True]["pull_request"] is None  # PyYAML reads the key `on` as True: triggers on pull requests

    # GitHub Actions: a cold run on a pull request.
    gh_space = tmp_path / "github"
    gh_space.mkdir()
    run = GitHubRun(workflow, gh_space, tmp_path / "gh-run", bin_dir, log)
    run.tmp.mkdir()
    run.run()
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(run.tmp.glob("step-*.log")))
    codes = {name: code for name, code in run.results.items()}
    assert codes["Install faceaudit"] == 0 and codes["Get the model (the demo CNN; replace with your own)"] == 0, logs
    # The demo's gates fail on its 300 generated test faces (22 "Others" faces, below the 30 a race needs):
    # the audit exits 1, the documented code for a failed gate, and the job fails on it.
    assert codes["Audit"] == 1, logs
    assert run.failed
    audit = json.loads((gh_space / "reports/audit/audit.json").read_text())
    assert audit["model"]["name"] == "demo-cnn" and audit["status"] == "fail"
    # The steps after the audit run all the same: artifact, JUnit, job summary, pull-request comment.
    assert [codes[name] for name in ("Upload the report", "Gates as test results", "Job summary",
                                     "Comment on the pull request")] == [0, 0, 0, 0], logs
    artifact = run.artifacts / "faceaudit-report"
    assert {"report.html", "report.pdf", "audit.json", "gates.xml"} <= {p.name for p in artifact.iterdir()}
    assert run.junit == ["reports/audit/gates.xml"]
    suite = ET.parse(gh_space / "reports/audit/gates.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) >= 1 and int(suite.get("tests")) == len(audit["gates"]["results"])
    assert [c[:2] for c in _calls(log, "apt-get")] == [["update"], ["install", "-y"]]
    assert _calls(log, "pip") == [["install", ".[train]"]]

    summary = Path(run.env["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.startswith("## faceaudit: demo-cnn") and "**Status: FAIL**" in summary
    html = MarkdownIt("commonmark").enable("table").render(summary)
    assert "<details>" in html and "<table>" in html and f'href="{ARTIFACT_URL}"' in html
    (comment,) = _calls(log, "gh")
    assert comment == ["pr", "comment", "24", "--body-file", "faceaudit-comment.md"]
    assert (log / "gh-body.md").read_text() + "\n" == summary  # the step summary gets one blank line more

    # GitLab CI: a merge-request pipeline whose cache holds what the GitHub run trained.
    job = yaml.safe_load((CI_DIR / "gitlab-ci.yml").read_text())["faceaudit"]
    assert [p.rstrip("/") for p in job["cache"]["paths"] if p.rstrip("/") in GITLAB_CACHE] == list(GITLAB_CACHE)
    gl_space = tmp_path / "gitlab"
    gl_space.mkdir()
    _checkout(gl_space)
    for name in GITLAB_CACHE:
        shutil.copytree(gh_space / name, gl_space / name)
    script_code, after_code = _gitlab_job(job, gl_space, tmp_path, bin_dir, log)
    gl_logs = (tmp_path / "gitlab-script.log").read_text()[-3000:] + (tmp_path / "gitlab-after.log").read_text()
    assert script_code == 1 and after_code == 0, gl_logs  # the gates fail the job; the note is posted anyway
    assert "[from scratch] epoch" not in gl_logs  # the cached model was audited, not retrained
    (post,) = _calls(log, "curl")
    assert post[-1] == "https://gitlab.example.com/api/v4/projects/7/merge_requests/5/notes"
    assert "PRIVATE-TOKEN: fake-note-token" in post and "body@faceaudit-note.md" in post
    note = (log / "curl-body.md").read_text()
    report = "https://gitlab.example.com/group/project/-/jobs/42/artifacts/file/reports/audit/report.html"
    assert "**Status:** {- FAIL -}" in note
    note_html = MarkdownIt("commonmark").enable("table").render(note)
    assert f'href="{report}"' in note_html and "<details>" in note_html
    schema = json.loads((REPO / "faceaudit/schemas/summary.schema.json").read_text())
    verdict = json.loads((gl_space / "faceaudit-summary.json").read_text())
    jsonschema.validate(verdict, schema)
    assert verdict["status"] == "fail" and verdict["report"]["html"] == report
    for path in job["artifacts"]["paths"] + [job["artifacts"]["reports"]["junit"]]:
        assert (gl_space / path).exists(), path
