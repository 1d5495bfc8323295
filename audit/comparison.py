"""Several audits side by side (``faceaudit.compare``) and one audit against its predecessor (``faceaudit.diff``).

The statistics of the comparison, with no rendering: the audits are matched image by image, one family of paired
tests per pair of models (:mod:`.paired`), the excess change per group ("who pays for the change") and a ranking;
the ``--max-excess-loss`` bound is judged into a :class:`~.verdict.Verdict`. Figures, Markdown and text live in the
report layer (:mod:`faceaudit.auditing.report.compare`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.config import DEFAULT_CI, DEFAULT_INCONCLUSIVE
from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import LabelSchema
from faceaudit.validation import validate_params

from .paired import (
    BETTER,
    BOUND_FAIL,
    BOUND_INCONCLUSIVE,
    NO_CHANGE,
    NOT_COMPARABLE,
    WORSE,
    Slice,
    excess_bound,
    excess_family,
    match_predictions,
    paired_family,
    unpaired_family,
)
from .result import AUDIT_FILE, AuditResult, load_audit
from .types import Baseline, BaselineChange, GroupingKey, Stat, lead_grouping, other_groupings, pair_grouping
from .verdict import Verdict, exit_code, policy_words

AuditLike = AuditResult | str | Path


def family_groupings(schema: LabelSchema) -> list[str]:
    """The groupings of one family of paired tests besides overall (compare and diff test the same family, so they
    agree): the lead grouping, each other single attribute, and the lead crossed with the first other one (race,
    gender, age band and race × gender, for UTKFace)."""
    pair = pair_grouping(schema)
    return [lead_grouping(schema), *other_groupings(schema), *([pair] if pair else [])]


def _describe(schema: LabelSchema, named: bool = False) -> str:
    """``race (5 classes)``; ``named`` lists the classes (for two audits that differ only in which classes)."""
    classes = f": {', '.join(schema.classes)}" if named else ""
    return f"{schema.target} ({len(schema.classes)} classes{classes})"


@dataclass
class LoadedAudit:
    """An audit's result, its predictions table (if its folder has one) and its display name."""

    name: str
    folder: Path | None
    result: AuditResult
    predictions: pd.DataFrame | None = field(default=None, repr=False)


def same_schema(audits: Sequence[LoadedAudit]) -> LabelSchema:
    """The label schema all the audits share, or one FaceauditError when two predict different targets or classes
    (their groups would not line up)."""
    first, schema = audits[0], audits[0].result.taxonomy
    for other in audits[1:]:
        theirs = other.result.taxonomy
        if theirs.target != schema.target or set(theirs.classes) != set(schema.classes):
            named = theirs.target == schema.target and len(theirs.classes) == len(schema.classes)
            raise FaceauditError(f"cannot compare: {first.name} audits {_describe(schema, named)}, {other.name} "
                                 f"audits {_describe(theirs, named)}")
    return schema


def audit_predictions(folder: Path | None, result: AuditResult | None = None, *, sample: bool = True
                      ) -> pd.DataFrame | None:
    """An audit folder's predictions table (``files.predictions``, default predictions.csv), or None when absent;
    with ``sample``, a streamed audit's sample of rows (``files.predictions_sample``) stands in for it."""
    if folder is None:
        return None
    files = (result.files or {}) if result else {}
    name = files.get("predictions") or (files.get("predictions_sample") if sample else None) or "predictions.csv"
    path = Path(folder) / name
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"image_id": str, "path": str, "sha256": str}, keep_default_na=True)
    if result is not None and "age_band" in frame and "age_band" in result.groupings:
        order = [r.key for r in result.groupings["age_band"].groups]
        frame["age_band"] = pd.Categorical(frame["age_band"].astype(str), categories=order)
    target = result.taxonomy.target if result is not None else None
    if target is not None and target in frame and not result.is_regression:
        frame[target] = pd.Categorical(frame[target].astype(str), categories=list(result.classes))
    return frame


def load_folder(source: AuditLike) -> LoadedAudit:
    """An audit folder (or its audit.json), or an :class:`AuditResult`, with its predictions: read from the folder,
    or the table a result computed in this process holds (not a streamed audit's sample). An audit already loaded
    comes back as a copy (its display name may change)."""
    if isinstance(source, LoadedAudit):
        return dataclasses.replace(source)
    if isinstance(source, AuditResult):
        result, folder = source, source.folder
        frame = None
        if source.predictions is not None and not source.predictions_sampled:
            table = source.predictions
            frame = table.output_frame() if hasattr(table, "output_frame") else table
        if frame is None:
            frame = audit_predictions(folder, result, sample=False)
        return LoadedAudit(str(result.model.get("name") or (folder.name if folder else "model")), folder, result, frame)
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    if not (folder / AUDIT_FILE).is_file() and not path.is_file():
        raise FaceauditError(f"{path} has no {AUDIT_FILE}")
    result = load_audit(path)
    return LoadedAudit(str(result.model.get("name") or folder.name), folder, result,
                       audit_predictions(folder, result, sample=False))


def _unique_names(audits: list[LoadedAudit]) -> None:
    names = [a.name for a in audits]
    for index, audit in enumerate(audits):
        if names.count(audit.name) > 1:
            audit.name = f"{audit.name} ({audit.folder.name if audit.folder else index + 1})"


def groups_of(result: AuditResult, grouping: str) -> dict[str, object]:
    """A grouping's group records by key (empty when the audit lacks the grouping)."""
    record = result.groupings.get(grouping)
    return {} if record is None else {g.key: g for g in record.groups}


def _mask(frame: pd.DataFrame, grouping: str, key: str) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    if grouping == "overall":
        return mask
    for attribute, value in GroupingKey.parse(grouping).group_values(key).items():
        mask &= (frame[attribute].astype(str) == value).to_numpy()
    return mask


def _slices(a: AuditResult, b: AuditResult | None, rows: pd.DataFrame | None) -> list[Slice]:
    """Overall plus every group of :func:`family_groupings` in ``a``; too small when too small in either audit."""
    slices = [Slice("overall", "all", np.ones(0 if rows is None else len(rows), dtype=bool))]
    for grouping in family_groupings(a.taxonomy):
        other = groups_of(b, grouping) if b is not None else {}
        for key, record in groups_of(a, grouping).items():
            mask = np.zeros(0, dtype=bool) if rows is None else _mask(rows, grouping, key)
            small = bool(record.too_small or (key in other and other[key].too_small))
            slices.append(Slice(grouping, key, mask, small))
    return slices


def _matched(a: LoadedAudit, b: LoadedAudit) -> tuple[pd.DataFrame, list[Slice]]:
    """Both predictions tables joined image by image, and the family's slices on the joined rows."""
    if a.predictions is None or b.predictions is None:
        missing = a if a.predictions is None else b
        where = missing.folder / AUDIT_FILE if missing.folder else missing.name
        if "predictions_sample" in (missing.result.files or {}) or missing.result.predictions_sampled:
            raise FaceauditError(f"{missing.folder or missing.name} is a streamed audit that kept a sample of its "
                                 "rows, not all of them; paired tests need every image of both audits")
        raise FaceauditError(f"no predictions.csv next to {where}; paired tests need both")
    merged = match_predictions(a.predictions, b.predictions, (a.name, b.name), same_schema([a, b]))
    return merged, _slices(a.result, b.result, merged)


def paired_tests(a: LoadedAudit, b: LoadedAudit, *, level: float = DEFAULT_CI) -> pd.DataFrame:
    """One family of paired tests of b against a on the same images (see :func:`.paired.paired_family`)."""
    merged, slices = _matched(a, b)
    frame = paired_family(merged["correct_a"].to_numpy(), merged["correct_b"].to_numpy(), slices, level=level)
    frame.insert(4, "model_a", a.name)
    frame.insert(5, "model_b", b.name)
    return frame


def excess_tests(a: LoadedAudit, b: LoadedAudit, *, level: float = DEFAULT_CI) -> pd.DataFrame:
    """Who pays for the change from a to b: each group's change beyond the whole set's, with simultaneous
    intervals over the groups (see :func:`.paired.excess_family`)."""
    merged, slices = _matched(a, b)
    frame = excess_family(merged["correct_a"].to_numpy(), merged["correct_b"].to_numpy(), slices, level=level)
    frame.insert(0, "model_a", a.name)
    frame.insert(1, "model_b", b.name)
    return frame


# -- the excess-loss bound ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoundVerdict:
    """The ``--max-excess-loss`` verdict: pass, fail or inconclusive, its exit code under the policy, one line."""

    verdict: Verdict
    code: int
    line: str


def loss_text(row) -> str:
    """Excess loss in points with its interval (positive: the group loses more than the whole set)."""
    if pd.isna(row["excess_loss"]):
        return "–"
    return (f"{100 * row['excess_loss']:+.1f} pts [{100 * row['excess_loss_lo']:+.1f}, "
            f"{100 * row['excess_loss_hi']:+.1f}]")


def _group_word(grouping: str) -> str:
    return " × ".join(GroupingKey.parse(grouping).attributes).replace("_", " ")


def excess_verdict(frame: pd.DataFrame | None, max_loss: float, inconclusive: str = DEFAULT_INCONCLUSIVE,
                   unjudged: str = "needs both predictions tables on the same images") -> BoundVerdict:
    """Judge ``--max-excess-loss``: fail when a group large enough to judge loses, beyond the whole set's change,
    more than ``max_loss`` (its whole interval above it); inconclusive when one's interval straddles the bound or
    nothing could be judged (no excess table: ``unjudged`` says why); else pass. The exit code follows
    :func:`.verdict.exit_code`."""
    bound = f"{100 * max_loss:.2g} pts"
    if frame is None:
        code = exit_code(Verdict.INCONCLUSIVE, inconclusive)
        return BoundVerdict(Verdict.INCONCLUSIVE, code, f"excess loss bound {bound}: INCONCLUSIVE "
                                                        f"({policy_words(code, inconclusive)}), not judged ({unjudged})")
    judged = frame.assign(bound=excess_bound(frame, max_loss).to_numpy())
    judged = judged[judged["bound"] != ""]
    failed = judged[judged["bound"] == BOUND_FAIL]
    unsure = judged[judged["bound"] == BOUND_INCONCLUSIVE]

    def listed(rows: pd.DataFrame) -> str:
        worst = rows.sort_values("excess_loss", ascending=False).head(4)
        text = "; ".join(f"{r['model_b']} vs {r['model_a']}: {_group_word(r['grouping'])} {r['group']} "
                         f"{loss_text(r)}" for _, r in worst.iterrows())
        return text + (f"; and {len(rows) - 4} more" if len(rows) > 4 else "")

    if judged.empty:  # nothing was large enough to judge: that is not a pass
        verdict = Verdict.INCONCLUSIVE
        code = exit_code(verdict, inconclusive)
        line = (f"excess loss bound {bound}: INCONCLUSIVE ({policy_words(code, inconclusive)}), no group is large "
                "enough to judge")
    elif len(failed):
        verdict = Verdict.FAIL
        code = exit_code(verdict, inconclusive)
        line = (f"excess loss bound {bound}: FAIL, {len(failed)} of {len(judged)} groups lose more than {bound} "
                f"beyond the whole set ({listed(failed)})")
    elif len(unsure):
        verdict = Verdict.INCONCLUSIVE
        code = exit_code(verdict, inconclusive)
        line = (f"excess loss bound {bound}: INCONCLUSIVE ({policy_words(code, inconclusive)}), {len(unsure)} of "
                f"{len(judged)} groups cannot be shown to lose at most {bound} beyond the whole set "
                f"({listed(unsure)})")
    else:
        verdict, code = Verdict.PASS, 0
        line = (f"excess loss bound {bound}: PASS, all {len(judged)} groups large enough to judge lose at most "
                f"{bound} beyond the whole set")
    return BoundVerdict(verdict, code, line)


def excess_gate(frame: pd.DataFrame, max_loss: float, inconclusive: str = DEFAULT_INCONCLUSIVE) -> tuple[int, str]:
    """Exit code and verdict line of ``--max-excess-loss`` (:func:`excess_verdict`)."""
    judged = excess_verdict(frame, max_loss, inconclusive)
    return judged.code, judged.line


# -- compare --------------------------------------------------------------------------------------------------


def ranking(audits: Sequence[LoadedAudit], grouping: str | None = None) -> pd.DataFrame:
    """One row per model: overall accuracy, worst ranked group of ``grouping`` (default: the lead grouping, race for
    UTKFace), and largest gap (with CIs)."""
    grouping = grouping or lead_grouping(audits[0].result.taxonomy)
    rows = []
    for audit in audits:
        result = audit.result
        record = result.groupings.get(grouping)
        disparity = record.disparities.get("accuracy") if record is not None else None
        worst_key = disparity.worst if disparity is not None else None
        worst = groups_of(result, grouping).get(worst_key) if worst_key else None
        overall = result.overall.metrics["accuracy"]
        worst_stat = worst.metrics["accuracy"] if worst is not None else None
        gap = disparity.gap if disparity is not None else None
        rows.append({"model": audit.name, "overall": overall.value, "overall_ci": overall.ci,
                     "worst_group": worst_key, "compared": disparity.n_ranked if disparity is not None else None,
                     "worst_accuracy": worst_stat.value if worst_stat else None,
                     "worst_ci": worst_stat.ci if worst_stat else None,
                     "gap": gap.value if gap else None, "gap_ci": gap.ci if gap else None,
                     "gates": str(result.gates.status) if result.gates is not None else "not gated"})
    frame = pd.DataFrame(rows)
    frame["rank_worst_group"] = frame["worst_accuracy"].rank(ascending=False, method="min", na_option="bottom").astype(int)
    frame["rank_gap"] = frame["gap"].rank(ascending=True, method="min", na_option="bottom").astype(int)
    return frame.sort_values(["rank_worst_group", "rank_gap"]).reset_index(drop=True)


@dataclass
class Comparison:
    """``faceaudit.compare``: several models audited on the same test images.

    ``ranking`` (one row per model), ``paired`` (one family of paired tests per pair of models), ``excess`` (who
    pays for each change), and with a bound ``bound`` (the ``--max-excess-loss`` verdict of every later model
    against the first)."""

    audits: list[LoadedAudit]
    schema: LabelSchema
    level: float
    ranking: pd.DataFrame
    paired: pd.DataFrame
    excess: pd.DataFrame
    bound: BoundVerdict | None = None

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.audits]

    @property
    def verdict(self) -> Verdict | None:
        """The bound's verdict, or None when no bound was given."""
        return None if self.bound is None else self.bound.verdict

    def exit_code(self) -> int:
        """The command's exit code: the bound's (0 without one)."""
        return 0 if self.bound is None else self.bound.code


@validate_params  # level, max_excess_loss, inconclusive: declared once in faceaudit.validation.PARAMETERS
def compare(*audits: AuditLike | Sequence[AuditLike], level: float = DEFAULT_CI, max_excess_loss: float | None = None,
            inconclusive: str = DEFAULT_INCONCLUSIVE) -> Comparison:
    """Compare two or more audits of models on the same test images: each an :class:`AuditResult` (computed here,
    or read back with its folder's predictions.csv) or an audit folder. The first is the original that
    ``max_excess_loss`` (a share: 0.01 = 1 point) judges every later one against."""
    if len(audits) == 1 and isinstance(audits[0], (list, tuple)):
        audits = tuple(audits[0])
    loaded = [load_folder(a) for a in audits]
    if len(loaded) < 2:
        raise FaceauditError("compare needs at least two audits")
    _unique_names(loaded)
    schema = same_schema(loaded)
    if any(a.result.is_regression for a in loaded):
        raise FaceauditError("compare ranks classifiers by accuracy; an age regressor's audit has mae, bias and "
                             "within5 (compare its by_group tables instead)")
    pairs = list(itertools.combinations(loaded, 2))
    paired = pd.concat([paired_tests(a, b, level=level) for a, b in pairs], ignore_index=True)
    excess = pd.concat([excess_tests(a, b, level=level) for a, b in pairs], ignore_index=True)
    bound = None
    if max_excess_loss is not None:
        bound = excess_verdict(excess[excess["model_a"] == loaded[0].name], max_excess_loss, inconclusive)
    return Comparison(loaded, schema, level, ranking(loaded), paired, excess, bound)


# -- diff -----------------------------------------------------------------------------------------------------


@dataclass
class Diff:
    """``faceaudit.diff``: per group, old and new accuracy, the change with its simultaneous interval and better /
    worse / no clear change; paired on the same images when both predictions tables match, else independent
    samples (``paired_reason`` says why). ``excess`` (who pays for the change) needs the same images."""

    old: LoadedAudit
    new: LoadedAudit
    level: float
    table: pd.DataFrame
    paired: bool
    paired_reason: str
    excess: pd.DataFrame | None
    bound: BoundVerdict | None = None
    fail_on_worse: bool = False

    @property
    def method(self) -> str:
        return str(self.table.attrs.get("method", ""))

    @property
    def worse(self) -> pd.DataFrame:
        """The groups that got worse (Holm-adjusted p below 1 − level)."""
        return self.table[self.table["verdict"] == WORSE]

    @property
    def verdicts(self) -> list[Verdict]:
        """What the diff judges: no group worse (with ``fail_on_worse``) and the excess-loss bound (when given)."""
        found = []
        if self.fail_on_worse:
            found.append(Verdict.FAIL if len(self.worse) else Verdict.PASS)
        if self.bound is not None:
            found.append(self.bound.verdict)
        return found

    def exit_code(self, inconclusive: str = DEFAULT_INCONCLUSIVE) -> int:
        """The command's exit code over :attr:`verdicts` (:func:`.verdict.exit_code`)."""
        return exit_code(self.verdicts, inconclusive)

    def as_baseline(self, source: str) -> Baseline:
        """This diff as the typed ``baseline`` record of the new audit (``source``: the path the baseline was given
        as): every group's old and new accuracy (as each audit recorded it), the change with its simultaneous
        interval, the Holm-adjusted p and the verdict."""
        table = self.table
        rows = []
        for row in table.to_dict("records"):
            old_stat = _accuracy_stat(self.old.result, row["grouping"], row["group"])
            new_stat = _accuracy_stat(self.new.result, row["grouping"], row["group"])
            lo, hi = _number(row["diff_lo"]), _number(row["diff_hi"])
            rows.append(BaselineChange(
                grouping=row["grouping"], group=row["group"], verdict=str(row["verdict"]), old=old_stat,
                new=new_stat, change=_number(row["diff"]),
                ci=[lo, hi] if lo is not None and hi is not None and hi > lo else None,
                p_holm=_number(row["p_holm"])))
        verdicts = table["verdict"].tolist()
        return Baseline(source=str(source), model=str(self.old.result.model.get("name") or self.old.name),
                        method="paired" if self.paired else "unpaired",
                        level=float(self.level), family=int(table["family"].iloc[0]) if len(table) else 0,
                        better=verdicts.count(BETTER), worse=verdicts.count(WORSE), rows=rows,
                        reason=None if self.paired else self.paired_reason)


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _accuracy_stat(result: AuditResult, grouping: str, key: str) -> Stat | None:
    """A group's accuracy as the audit recorded it (value, interval, images), or None when it lacks the group."""
    record = result.overall if grouping == "overall" else groups_of(result, grouping).get(key)
    if record is None or "accuracy" not in record.metrics:
        return None
    found = record.metrics["accuracy"]
    return Stat(value=found.value, ci=found.ci, n=found.n if found.n is not None else record.n)


def _counts(result: AuditResult, grouping: str, key: str) -> tuple[int, int] | None:
    """(correct, n) of a group's accuracy as the audit recorded it; None when the group is not in the audit."""
    record = result.overall if grouping == "overall" else groups_of(result, grouping).get(key)
    if record is None or "accuracy" not in record.metrics or record.metrics["accuracy"].value is None:
        return None
    return int(round(record.metrics["accuracy"].value * record.n)), int(record.n)


@validate_params
def diff(old: AuditLike, new: AuditLike, *, level: float = DEFAULT_CI, max_excess_loss: float | None = None,
         inconclusive: str = DEFAULT_INCONCLUSIVE, fail_on_worse: bool = False) -> Diff:
    """What got better or worse from ``old`` to ``new`` (audits or audit folders), per group of the same family of
    tests as :func:`compare`, so the two agree. Audits of different test images are compared as independent
    samples; groups only one audit has are "not comparable"."""
    a, b = load_folder(old), load_folder(new)
    if a.name == b.name:
        a.name, b.name = "old", "new"
    same_schema([a, b])
    if a.result.is_regression or b.result.is_regression:
        raise FaceauditError("diff compares classifiers' accuracy; an age regressor's audit has mae, bias and "
                             "within5 (compare its by_group tables instead)")
    paired_reason, table, excess = "predictions.csv missing next to one audit", None, None
    if a.predictions is not None and b.predictions is not None:
        try:
            table = paired_tests(a, b, level=level)
            excess = excess_tests(a, b, level=level)
        except FaceauditError as exc:
            paired_reason = str(exc)
    if table is None:
        slices = _slices(a.result, b.result, None)
        slices += [s for s in _slices(b.result, a.result, None)
                   if (s.grouping, s.key) not in {(t.grouping, t.key) for t in slices}]
        counts = [[_counts(audit.result, s.grouping, s.key) for s in slices] for audit in (a, b)]
        table = unpaired_family(counts[0], counts[1], slices, level=level)
    bound = None
    if max_excess_loss is not None:
        bound = excess_verdict(excess, max_excess_loss, inconclusive)
    return Diff(a, b, level, table, excess is not None, "" if excess is not None else paired_reason, excess, bound,
                fail_on_worse)


def baseline_of(result: AuditResult, baseline: AuditLike | LoadedAudit, *, level: float = DEFAULT_CI,
                source: str | None = None) -> Baseline:
    """``result`` against an earlier audit (a folder, its audit.json or an :class:`AuditResult`): :func:`diff` of
    the baseline and ``result`` (the same family, paired where the images match, unpaired where not), as the
    typed record audit.json keeps under ``baseline``."""
    if source is None:
        source = str(baseline.folder if isinstance(baseline, (AuditResult, LoadedAudit)) and baseline.folder
                     else baseline.name if isinstance(baseline, LoadedAudit) else
                     "baseline" if isinstance(baseline, AuditResult) else baseline)
    return diff(baseline, result, level=level).as_baseline(source)


def check_baseline(baseline: AuditLike) -> LoadedAudit:
    """The baseline audit read before any work, with one FaceauditError when it cannot be one (no audit.json
    there, an age regressor's audit)."""
    if isinstance(baseline, (str, Path)) and not Path(baseline).exists():
        raise FaceauditError(f"baseline {baseline} does not exist (give an earlier audit folder or its audit.json)")
    loaded = load_folder(baseline)
    if loaded.result.is_regression:
        raise FaceauditError(f"baseline {baseline if not isinstance(baseline, AuditResult) else loaded.name} is an "
                             "age regressor's audit; a baseline compares classifiers' accuracy")
    return loaded


__all__ = ["BoundVerdict", "Comparison", "Diff", "LoadedAudit", "NO_CHANGE", "NOT_COMPARABLE", "baseline_of",
           "check_baseline", "compare", "diff",
           "excess_gate", "excess_tests", "excess_verdict", "family_groupings", "load_folder", "paired_tests",
           "ranking", "same_schema"]
