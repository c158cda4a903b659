"""`python -m benchmarks.report`: regenerate README's Performance section from the results.

The section between ``<!-- perf:start -->`` and ``<!-- perf:end -->`` is
rewritten from ``results/summary.json`` (the headline table) and the PNGs in
``results/``, so the numbers in the README are always the last run's and are
never typed by hand. Only a summary of one complete full-size run is
accepted (``python -m benchmarks`` writes nothing else to ``results/``), and
the section names its commit and time. A README without the markers gets a
new "Performance" section with them appended at the end. Nothing outside the
markers changes.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from typing import Any

from benchmarks.common import RESULTS_DIR

START = "<!-- perf:start -->"
END = "<!-- perf:end -->"
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = (
    ("hash_", "Hashing (mining core vs hashlib loops and the SHA-NI ceiling)"),
    ("aggregation_", "Robust aggregation (vs the faster of Flower and numpy, and the rule's floor)"),
    ("verify_", "Chain replay (vs its unavoidable work)"),
    ("propagation_", "Network (in-process nodes on loopback, line topology held)"),
    ("learning_", "Learning (digits, mean over seeds)"),
)
# Plots shown under the table, in this order when present; any other PNG follows.
PLOTS = ("hash", "aggregation", "chain", "network", "learning", "learning_attack_curves", "learning_rules")
NOT_PLOTS = {"dashboard"}  # screenshots kept in results/ that are not benchmark output
SIGNIFICANT = 4


def fmt(value: float) -> str:
    """A figure with four significant digits, without scientific notation for everyday sizes."""
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        digits = max(SIGNIFICANT - 1 - math.floor(math.log10(abs(value))), 0) if value else 0
        return f"{value:,.{digits}f}"
    return f"{value:.{SIGNIFICANT - 1}e}"


def machine_line(results: pathlib.Path) -> str:
    """Where the figures come from: CPU, cores, Python, from any result file's machine info."""
    for path in sorted(results.glob("*.json")):
        if path.name == "summary.json" or path.name.startswith("worstcase"):
            continue
        try:
            machine: dict[str, Any] = json.loads(path.read_text()).get("machine", {})
        except (OSError, ValueError):
            continue
        if machine:
            return (f"Measured on {machine.get('cpu') or machine.get('machine', 'unknown CPU')}, "
                    f"{machine.get('cores', '?')} cores, Python {machine.get('python', '?')}.")
    return ""


class NotACompleteRun(ValueError):
    """The summary is not one complete full-size run: the README keeps what it has."""


def load_summary(results: pathlib.Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run stamp and rows of ``results/summary.json``; raises unless it is a complete full run."""
    body = json.loads((results / "summary.json").read_text())
    if not isinstance(body, dict) or "run" not in body:
        raise NotACompleteRun(f"{results / 'summary.json'} has no run stamp: rerun `make bench`")
    run = body["run"]
    if run.get("quick") or not run.get("complete"):
        raise NotACompleteRun(f"{results / 'summary.json'} is a quick or partial run: rerun `make bench`")
    rows = body["rows"]
    if {(r.get("commit"), r.get("time")) for r in rows} != {(run["commit"], run["time"])}:
        raise NotACompleteRun("the rows of summary.json come from more than one run")
    return run, rows


def _cell(value: Any) -> str:
    return "" if value is None else fmt(float(value))


def _value(row: dict[str, Any]) -> str:
    if row.get("spread") is not None:
        return f"{fmt(float(row['value']))} ± {fmt(float(row['spread']))} (n={row.get('samples')})"
    return fmt(float(row["value"]))


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for prefix, title in SECTIONS:
        chosen = [r for r in rows if r["name"].startswith(prefix)]
        if not chosen:
            continue
        lines += ["", f"**{title}**", "",
                  "| figure | value | unit | baseline (same run) | baseline value | ratio | ceiling / floor "
                  "(same run) | ceiling value | of ceiling |",
                  "|---|---:|---|---|---:|---:|---|---:|---:|"]
        lines += [f"| `{r['name']}` | {_value(r)} | {r['unit']} | {r['baseline']} | {_cell(r.get('baseline_value'))}"
                  f" | {fmt(float(r['ratio']))} | {r.get('ceiling') or ''} | {_cell(r.get('ceiling_value'))}"
                  f" | {_cell(r.get('of_ceiling'))} |" for r in chosen]
    return lines


def plots(results: pathlib.Path, readme: pathlib.Path) -> list[str]:
    present = {p.stem: p for p in results.glob("*.png") if p.stem not in NOT_PLOTS}
    order = [name for name in PLOTS if name in present] + sorted(set(present) - set(PLOTS))
    lines = []
    for name in order:
        try:
            link = present[name].resolve().relative_to(readme.resolve().parent).as_posix()
        except ValueError:
            link = present[name].resolve().as_posix()
        lines += ["", f"![{name}]({link})"]
    return lines


def section(results: pathlib.Path, readme: pathlib.Path) -> str:
    """The text between the markers (markers excluded)."""
    run, rows = load_summary(results)
    intro = [
        "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/summary.json`, one complete"
        " `make bench` run (`make bench QUICK=1` is a smoke run and never lands here). Each ratio compares"
        " our figure with the named baseline measured in the same run; above 1 means gradchain is better."
        " Where the hardware or the unavoidable work sets a limit, it is measured in the same run too, and"
        " *of ceiling* is the share of it reached (1 = at the limit; for a time, limit / time)."
        " Timings are the best of several repeats; on a shared machine compare ratios, not absolute times.",
        "",
        f"Run of commit `{run['commit']}` at {run['time']}, load average {run['load_average']['before']:.1f}"
        f" before and {run['load_average']['after']:.1f} after on {run.get('cores', '?')} cores.",
    ]
    machine = machine_line(results)
    if machine:
        intro += ["", machine]
    return "\n".join([*intro, *table(rows), *plots(results, readme), ""]) + "\n"


def update_readme(readme: pathlib.Path, body: str) -> str:
    """``readme``'s text with the marked section replaced (or a Performance section appended)."""
    text = readme.read_text() if readme.exists() else ""
    start, end = text.find(START), text.find(END)
    if start != -1 and end > start:
        return text[: start + len(START)] + "\n" + body + text[end:]
    if start != -1 or end != -1:
        raise ValueError(f"{readme} has only one of {START} / {END}: fix the markers by hand")
    return text.rstrip("\n") + f"\n\n## Performance\n\n{START}\n{body}{END}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--readme", type=pathlib.Path, default=README, help="README to update")
    args = parser.parse_args(argv)
    try:
        body = section(args.results, args.readme)
    except NotACompleteRun as exc:
        print(f"README not updated: {exc}", file=sys.stderr)
        return 1
    new = update_readme(args.readme, body)
    args.readme.write_text(new)
    print(f"updated the Performance section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
