"""`python -m benchmarks [--quick] [names...]`: run the suite, write summary.json.

Every module in this folder that defines ``run(quick)`` is a benchmark.

Where results go.  A run writes into a fresh staging folder; only a complete
full-size run (every benchmark, none failed, not ``--quick``) replaces the
figures in ``results/``, and then regenerates the README's Performance
section from them, so the README table always comes from one run of one
commit.  A subset run or a run with a failure goes to ``results/partial/``,
a quick run to ``results/quick/``: neither is ever merged with the full
run's rows.  Every row carries the commit and the time of its run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import report
from benchmarks.common import (
    RESULTS_DIR,
    RESULTS_ENV,
    Headline,
    git_commit,
    load_average,
    use_results_dir,
)

NOT_BENCHMARKS = {"__init__", "__main__", "ceilings", "common", "report"}
PARTIAL = "partial"
QUICK = "quick"


def discover() -> list[str]:
    here = pathlib.Path(__file__).resolve().parent
    return sorted(p.stem for p in here.glob("*.py") if p.stem not in NOT_BENCHMARKS)


def progress_bar() -> Progress:
    """One bar over the benchmarks; each benchmark's own lines print above it."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn())


def plot_headlines(name: str, headlines: list[Headline], folder: pathlib.Path) -> None:
    """``<folder>/<name>.png``: the headline ratios of a benchmark that draws no plot of its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 0.5 + 0.45 * max(len(headlines), 1)))
    labels = [f"{h.name}\nvs {h.baseline}" for h in headlines]
    ratios = [h.ratio for h in headlines]
    axis.barh(labels, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    axis.axvline(1.0, color="k", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("ratio to baseline (> 1: gradchain better)")
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=7)
    axis.set_title(f"{name}: headline ratios")
    fig.tight_layout()
    fig.savefig(folder / f"{name}.png", dpi=110)
    plt.close(fig)


def destination(base: pathlib.Path, complete: bool, quick: bool) -> pathlib.Path:
    """Where a run's files belong: the results folder itself only for a complete full run."""
    if quick:
        return base / QUICK
    return base if complete else base / PARTIAL


def publish(staging: pathlib.Path, target: pathlib.Path) -> None:
    """Move a run's files into ``target`` (a partial or quick folder is replaced whole)."""
    if target.name in (PARTIAL, QUICK) and target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        shutil.move(str(path), target / path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (seconds)")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {discover()})")
    args = parser.parse_args(argv)
    names = args.names or discover()
    unknown = set(names) - set(discover())
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {discover()}")
    base = RESULTS_DIR
    base.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".run-", dir=base))
    use_results_dir(staging)
    stamp = {"commit": git_commit(), "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    load_before = load_average()
    headlines: list[Headline] = []
    failed: list[str] = []
    try:
        with progress_bar() as bar:
            task = bar.add_task("benchmarks", total=len(names))
            for index, name in enumerate(names, 1):
                bar.update(task, description=f"[{index}/{len(names)}] {name}")
                bar.console.print(f"[bold][{index}/{len(names)}] {name}[/bold]")
                started = time.time()
                try:
                    found = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
                except Exception:  # one broken benchmark must not hide the others' figures
                    bar.console.print_exception()
                    bar.console.print(f"[red]{name} failed: this run is partial[/red]")
                    failed.append(name)
                    bar.advance(task)
                    continue
                if not any(p.stat().st_mtime >= started for p in staging.glob(f"{name}*.png")):
                    plot_headlines(name, found, staging)
                headlines.extend(found)
                bar.advance(task)
        complete = not failed and set(names) == set(discover())
        run: dict[str, Any] = {
            **stamp,
            "quick": args.quick,
            "complete": complete,
            "benchmarks": names,
            "failed": failed,
            "load_average": {"before": load_before, "after": load_average()},
            "cores": os.cpu_count(),
        }
        rows = [{**h.as_dict(), **stamp} for h in headlines]
        (staging / "summary.json").write_text(json.dumps({"run": run, "rows": rows}, indent=2) + "\n")
        target = destination(base, complete, args.quick)
        publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        use_results_dir(base)
    print_table(rows)
    print(f"\n{len(rows)} figures of commit {stamp['commit']} at {stamp['time']} -> {target}")
    if complete and not args.quick and not os.environ.get(RESULTS_ENV):
        report.main(["--results", str(target)])
    elif not complete:
        print("not a complete run: results/ and the README keep the last complete run's figures")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    width = max((len(r["name"]) for r in rows), default=10)
    print(f"\n{'figure':<{width}}  {'value':>12}  {'unit':<8}  {'ratio':>8}  {'of ceiling':>10}  baseline")
    for r in rows:
        share = f"{r['of_ceiling']:>10.2f}" if r.get("of_ceiling") is not None else f"{'':>10}"
        print(f"{r['name']:<{width}}  {r['value']:>12.4g}  {r['unit']:<8}  {r['ratio']:>8.2f}  {share}  "
              f"{r['baseline']}")


if __name__ == "__main__":
    sys.exit(main())
