"""`faceaudit board` over real audits: scikit-learn classifiers and age regressors trained on real UTKFace pixels
(one model audited three times, an MLP's audit with its report), the page opened in real headless Chromium and its
tables sorted by real mouse clicks and key presses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from faceaudit.auditing.report.formatting import fmt_stat
from faceaudit.auditing.result import load_audit
from faceaudit.cli import main

N_TRAIN, N_TEST = 1500, 700
GATES = {"gates": [{"metric": "accuracy", "by": "race", "max_gap": 0.25},
                   {"metric": "accuracy", "by": "overall", "min": 0.3}]}
#: The three audits of one model, months apart (each audit records when it ran; here the runs are set in the past).
#: axe-core from npm (tools/package.json; .ci/run installs it): the accessibility rules the report is held to.
AXE = Path(__file__).resolve().parents[1] / "tools" / "node_modules" / "axe-core" / "axe.min.js"
RUN_DATES = ("2026-01-15T09:30:00Z", "2026-03-02T14:05:00Z", "2026-06-20T08:45:00Z")


def _pixels(paths) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32).ravel()
                     for p in paths]) / 255.0


@pytest.fixture(scope="module")
def reports(utk64_dataset, tmp_path_factory):
    """A reports/ folder of 10 real audits in nested folders, plus three audit.json files the board cannot read."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    import faceaudit
    from faceaudit.auditing.report import render_report

    root = tmp_path_factory.mktemp("board") / "reports"
    dataset = utk64_dataset
    races = list(faceaudit.UTKFACE.classes)
    train = dataset.split("train").sample(N_TRAIN, random_state=0)
    test = dataset.split("test").sample(N_TEST, random_state=0)
    # every model sees the same features: the first 48 principal components of standardised 16 px grey pixels
    scaler = StandardScaler().fit(pixels := _pixels(train["path"]))
    pca = PCA(48, random_state=0).fit(scaler.transform(pixels))
    x_train, x_test = pca.transform(scaler.transform(pixels)), pca.transform(scaler.transform(_pixels(test["path"])))
    rows = test[["image_id", "race", "gender", "age"]].reset_index(drop=True)
    data = {"source": str(dataset.source), "fingerprint": dataset.fingerprint, "split": "test", "n": N_TEST,
            "synthetic": False, "age_bands": "default", "predictions_sha256": None}
    written = {}

    def write(folder, name, backbone, table, *, date=None, **options):
        result = faceaudit.audit(table, n_boot=20, tsne=False, temperature=False, data_info=data,
                                 model_info={"name": name, "kind": "predictions", "backbone": backbone,
                                             "source": "scikit-learn", "run_hash": None, "synthetic": False,
                                             "run": None}, **options)
        if date is not None:
            result.created_utc = date
        written[folder] = result.write(root / folder)
        return written[folder]

    def classifier(folder, name, backbone, model, size=N_TRAIN, dims=48, **options):
        model.fit(x_train[:size, :dims], train["race"].astype(str).to_numpy()[:size])
        probs = model.predict_proba(x_test[:, :dims])[:, [list(model.classes_).index(r) for r in races]]
        table = rows.assign(**{f"prob_{r}": probs[:, k] for k, r in enumerate(races)})
        return write(folder, name, backbone, table, schema=faceaudit.UTKFACE, **options)

    # one model retrained on more faces each time and audited three times
    for size, date in zip((300, 700, N_TRAIN), RUN_DATES):
        classifier(f"logreg/{date[:10]}", "pca48-logreg", "PCA-48 + logistic regression",
                   LogisticRegression(max_iter=500), size, date=date, gates=GATES)
    classifier("pca/pca16", "pca16-logreg", "PCA-16 + logistic regression", LogisticRegression(max_iter=500),
               dims=16)
    classifier("lda", "pca48-lda", "PCA-48 + linear discriminant", LinearDiscriminantAnalysis(), gates=GATES)
    classifier("nb", "naive-bayes", "PCA-48 + Gaussian naive Bayes", GaussianNB())
    # a gender classifier: its own lead grouping (gender), so its own per-group table
    gender = LogisticRegression(max_iter=500).fit(x_train, train["gender"].astype(str))
    probs = gender.predict_proba(x_test)
    write("gender", "gender-logreg", "PCA-48 + logistic regression",
          rows.assign(**{f"prob_{c}": probs[:, k] for k, c in enumerate(gender.classes_)}), target="gender")
    # an age regressor audited twice
    for alpha, date in ((1000.0, RUN_DATES[0]), (10.0, RUN_DATES[2])):
        ridge = Ridge(alpha=alpha).fit(x_train, train["age"].astype(float))
        write(f"age/ridge-{alpha:g}", "ridge-age", "PCA-48 + ridge regression",
              rows.assign(pred_age=ridge.predict(x_test)), target="age", date=date)
    # a small MLP (its name is markup, to be shown as text), with its report
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: enough epochs for a test model
        mlp = classifier("mlp", "mlp-32 <b>", "PCA-48 + MLP (32 hidden)",
                         MLPClassifier((32,), max_iter=150, random_state=0), gates=GATES)
    render_report(mlp, pdf=False, thumbnails=False)
    # an audit copied into a hidden folder (a half-built output) is not listed
    shutil.copytree(root / "nb", root / ".nb.partial-1")
    # three audit.json files the board cannot read (valid JSON: the suite checks every audit.json it writes)
    newer = json.loads((root / "nb" / "audit.json").read_text())
    newer["schema_version"] = "9.0"
    del newer["faceaudit_version"]
    for folder, content in (("broken/list", []), ("broken/newer", newer), ("broken/partial", {"model": {}})):
        (root / folder).mkdir(parents=True)
        (root / folder / "audit.json").write_text(json.dumps(content))
    return root, written


@pytest.fixture(scope="module")
def board(reports, tmp_path_factory):
    root, _ = reports
    out = tmp_path_factory.mktemp("out") / "board"
    assert main(["board", str(root), "--out", str(out)]) == 0
    return out / "board.html"


def test_board_lists_every_audit(reports, board, capsys):
    root, written = reports
    html = board.read_text(encoding="utf-8")
    assert len(written) == 10
    for folder in written:
        assert f">{folder}<" in html  # each audit's folder, relative to the folder scanned
    assert ".nb.partial-1" not in html
    assert "mlp-32 &lt;b&gt;" in html and "mlp-32 <b>" not in html  # names are text
    assert html.count("no report") >= 10 and html.count('href="../') >= 1
    for item in ("broken/list", "broken/newer", "broken/partial"):
        assert f"<code>{item}/audit.json</code>" in html
    assert "newer" in html and "9.0" in html
    assert "not gated" in html and "(2 gates)" in html
    # nothing is fetched: no external script, stylesheet, font or image
    assert "<link" not in html and "src=" not in html and "@import" not in html and "url(" not in html
    assert "https://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_board_in_chromium_sorts_by_clicks_and_keys(reports, board):
    from browser import drive_page, find_chromium

    if find_chromium() is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `npm ci --prefix tools` (.ci/run does)")
    root, written = reports
    rows = """(() => { const table = document.getElementById('classifiers-table');
      const heads = Array.from(table.tHead.rows[0].cells).map(h => h.textContent.trim());
      return Array.from(table.tBodies[0].rows).map(r => Object.fromEntries(
        Array.from(r.cells).map((c, i) => [heads[i], [c.textContent.trim(), c.getAttribute('data-sort')]])));
    })()"""
    column = """((id, name) => {
      const table = document.getElementById(id);
      const heads = Array.from(table.tHead.rows[0].cells);
      const n = heads.findIndex(h => h.textContent.trim().replace(/\\s+/g, ' ').startsWith(name));
      return {sort: heads[n].getAttribute('aria-sort'), tag: heads[n].firstElementChild.tagName,
              values: Array.from(table.tBodies[0].rows).map(r => r.cells[n].getAttribute('data-sort'))};
    })"""
    head = """((id, name) => { const heads = Array.from(document.getElementById(id).tHead.rows[0].cells);
      heads.find(h => h.textContent.trim().startsWith(name)).id = id + '-sorted-head'; })"""
    overall_head, date_head = "#classifiers-table-sorted-head button", "#trend-0-sorted-head button"
    seen = drive_page(board, [
        ("eval", f"{head}('classifiers-table', 'Overall accuracy')"), ("eval", f"{head}('trend-0', 'Date')"),
        ("eval", rows),
        ("eval", f"{column}('classifiers-table', 'Overall accuracy')"),
        ("click", overall_head),
        ("eval", f"{column}('classifiers-table', 'Overall accuracy')"),
        ("focus", overall_head), ("key", "Enter"),
        ("eval", f"{column}('classifiers-table', 'Overall accuracy')"),
        ("click", date_head), ("click", date_head),
        ("eval", f"{column}('trend-0', 'Date')"),
        ("eval", "document.querySelectorAll('#trends svg circle').length"),
        ("eval", "Array.from(document.querySelectorAll('a[href]')).filter(a => !a.getAttribute('href').startsWith('#'))"
                ".map(a => a.href)"),
        ("eval", AXE.read_text(encoding="utf-8") + "\n;'loaded'"),
        ("eval", "axe.run(document).then(r => r.violations.filter(v => ['serious', 'critical'].includes(v.impact))"
                 ".map(v => ({id: v.id, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))"),
    ])
    assert seen.console_errors == []
    assert seen.network_requests == []
    _, _, table, before, clicked, pressed, dates, circles, links, loaded, serious = seen.values
    assert loaded == "loaded" and serious == []  # axe-core: no serious or critical accessibility violation
    # every classifier audit listed once, with the numbers of its audit.json
    classifiers = {folder: load_audit(path) for folder, path in written.items() if not load_audit(path).is_regression}
    assert sorted(row["Audit folder"][0] for row in table) == sorted(classifiers)
    for row in table:
        result = classifiers[row["Audit folder"][0]]
        assert row["Model"][0] == result.model["name"] and row["Backbone"][0] == result.model["backbone"]
        assert row["Target"][0] == result.taxonomy.target
        assert row["Overall accuracy"][0] == fmt_stat(result.overall.metrics["accuracy"])
        assert row["Date (UTC)"][1] == result.created_utc and row["Data fingerprint"][1] == result.data["fingerprint"]
        assert row["Gates"][1] == str(result.status) if result.gates else row["Gates"][0] == "not gated"
        assert row["Report"][0] == ("report" if (written[row["Audit folder"][0]] / "report.html").exists()
                                    else "no report")
    # a real click sorts ascending, Enter on the focused head descending; aria-sort says which
    values = [float(v) for v in before["values"]]
    assert before["sort"] is None and before["tag"] == "BUTTON" and values != sorted(values)
    assert [float(v) for v in clicked["values"]] == sorted(values) and clicked["sort"] == "ascending"
    assert [float(v) for v in pressed["values"]] == sorted(values, reverse=True) and pressed["sort"] == "descending"
    # the three-times-audited model's trend, newest first after two clicks on its date column
    assert dates["values"] == sorted(RUN_DATES, reverse=True) and dates["sort"] == "descending"
    assert circles == 3 + 2  # one point per audit: the three classifier runs and the two age-regressor runs
    report = written["mlp"] / "report.html"
    assert len(links) == 2 and {Path(unquote(link[len("file://"):])) for link in links} == {report.resolve()}


def test_board_separates_regressors_and_trends(reports, board):
    html = board.read_text(encoding="utf-8")
    regressors = html[html.index('id="regressors-table"'):html.index('id="regressor-groups"')]
    assert regressors.count(">ridge-age<") == 2 and "pca48-logreg" not in regressors
    for folder, path in reports[1].items():
        result = load_audit(path)
        if result.is_regression:
            assert fmt_stat(result.overall.metrics["mae"], percent=False, digits=2) in regressors
    groups = html[html.index('id="groups"'):html.index('id="regressors"')]
    assert "By race" in groups and "By gender" in groups
    trends = html[html.index('id="trends"'):html.index('id="skipped"')]
    assert "<h3>pca48-logreg</h3>" in trends and "<h3>ridge-age</h3>" in trends
    assert "naive-bayes" not in trends  # audited once: no trend


def test_board_command_errors_are_one_line(reports, tmp_path, capsys):
    root, _ = reports
    cases = [(["board", str(tmp_path / "missing")], "does not exist"),
             (["board", str(reports[1]["nb"] / "audit.json")], "is not a folder"),
             (["board", str(tmp_path / "empty")], "no audits under"),
             (["board", str(root), "--out", str(root)], "holds the audits"),
             (["board", str(root / "broken")], "none of the 3 audit.json")]
    (tmp_path / "empty").mkdir()
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "reports").exists()  # nothing written by a refused run
    # a folder of someone else's files is never replaced; a board folder is, keeping the user's note in it
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["board", str(root), "--out", str(tmp_path / "mine")]) == 2
    assert "holds other files" in capsys.readouterr().err
    out = tmp_path / "board"
    assert main(["board", str(root), "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["board", str(root), "--out", str(out), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "board.html").is_file()
    assert "10 audits of 7 models" in capsys.readouterr().out
