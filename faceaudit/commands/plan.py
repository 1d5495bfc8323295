"""``faceaudit plan``: how many test images per group each gate needs for a decisive verdict (80 % power)."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceaudit.errors import FaceauditError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the plan subcommand."""
    parser = subparsers.add_parser(
        "plan", help="test images per group that each gate needs for a decisive verdict (80%% power)",
        description="For each gate of a gates file: the test images per group that a decisive verdict (pass or "
                    "fail) needs with 80 % power, judged as faceaudit audit judges it (Clopper-Pearson bounds for "
                    "proportions, simultaneous gap intervals, the audit's ECE interval), at the rates observed in an "
                    "audit (--from) or at rates stated before collecting data (--rates).")
    parser.add_argument("--gates", type=Path, required=True, metavar="TOML", help="the gates file to plan for")
    parser.add_argument("--from", dest="source", type=Path, metavar="AUDIT",
                        help="an audit folder or audit.json: plan at its observed rates and group mix")
    parser.add_argument("--rates", nargs="+", default=[], metavar="KEY=VALUE",
                        help="stated rates, overriding --from: accuracy=0.9 (every group), Black=0.8 (one group's "
                        "accuracy or other proportion), ece=0.02, ece:Others=0.04 (a metric of one group); "
                        "comma-separated or repeated")
    parser.add_argument("--ci", type=float, default=None, help="interval level (default: the audit's, else 0.95)")
    parser.set_defaults(handler=run_plan)


def parse_rates(items: list[str]) -> dict[str, float]:
    """``["accuracy=0.9,Black=0.8", "ece=0.02"]`` as a dict; one line refusing what is not KEY=number in [0, 1]."""
    rates: dict[str, float] = {}
    for item in (part.strip() for raw in items for part in raw.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not key.strip() or not 0 <= number <= 1:
            raise FaceauditError(f"--rates: {item!r} is not KEY=VALUE with a value between 0 and 1 (e.g. accuracy=0.9)")
        rates[key.strip().replace(" x ", " × ")] = number
    return rates


def run_plan(args: argparse.Namespace) -> int:
    from faceaudit.auditing.gates import check_gates, load_gates
    from faceaudit.auditing.planner import POWER, plan
    from faceaudit.auditing.report.formatting import fmt_level
    from faceaudit.config import DEFAULT_CI
    from faceaudit.taxonomy import UTKFACE

    gates, _ = load_gates(args.gates)
    rates = parse_rates(args.rates)
    audit = None
    if args.source is not None:
        from faceaudit.auditing.result import load_audit

        path = args.source / "audit.json" if args.source.is_dir() else args.source
        if not path.exists():
            raise FaceauditError(f"--from: no audit.json at {args.source}")
        audit = load_audit(path)
    elif not rates:
        raise FaceauditError("plan needs the rates to plan at: --from AUDIT (observed) or --rates accuracy=0.9 ...")
    schema = audit.taxonomy if audit is not None else UTKFACE
    gates = check_gates(gates, schema, f"gates file {args.gates.name}")
    level = args.ci or (audit.settings.level if audit is not None else DEFAULT_CI)
    if audit is not None:
        audit.settings.ci = level
    rows = plan(gates, audit, rates=rates, level=level, schema=schema)
    where = f"the rates observed in {args.source}" if audit is not None else "the stated rates (equal group sizes)"
    print(f"Test images per group for a decisive verdict with {POWER:.0%} power at {where}; "
          f"{fmt_level(level)} intervals, as faceaudit audit judges them")
    for row in rows:
        gate = row["gate"]
        rule = f"{gate.metric} {gate.rule.replace('_', ' ')} {gate.threshold:g} by {gate.by}"
        print(f"\n{gate.name}  ({rule})")
        if row.get("note"):
            print(f"  {row['note']}")
            continue
        if not row["needs"]:
            print("  no rate to plan at (state one with --rates)")
            continue
        print(f"  {'group':28s}{'rate':>8s}{'has':>10s}{'needs':>14s}")
        for need in row["needs"]:
            needed = f"{need['needs']:,}" if need["needs"] else "out of reach"
            has = f"{need['has']:,}" if audit is not None else "-"
            rate = need.get("rate")
            print(f"  {need['group'][:28]:28s}{'' if rate is None else f'{rate:.3f}':>8s}{has:>10s}{needed:>14s}"
                  + (f"  ({need['note']})" if need.get("note") else "")
                  + ("" if need["needs"] else f"  ({need.get('why', '')})"))
    return 0

