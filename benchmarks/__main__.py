"""`python -m benchmarks [--quick] [names...]`: run the suite, write summary.json.

Every module in this folder that defines ``run(quick)`` is a benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
import time

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.common import RESULTS_DIR, Headline

NOT_BENCHMARKS = {"__init__", "__main__", "common", "report"}
# The summary.json prefix of each benchmark's headlines (default: "<name>_").
SECTION = {"chain": "verify_", "network": "propagation_"}


def discover() -> list[str]:
    here = pathlib.Path(__file__).resolve().parent
    return sorted(p.stem for p in here.glob("*.py") if p.stem not in NOT_BENCHMARKS)


def progress_bar() -> Progress:
    """One bar over the benchmarks; each benchmark's own lines print above it."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn())


def plot_headlines(name: str, headlines: list[Headline]) -> None:
    """``results/<name>.png``: the headline ratios of a benchmark that draws no plot of its own."""
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
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS_DIR / f"{name}.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (seconds)")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {discover()})")
    args = parser.parse_args(argv)
    names = args.names or discover()
    unknown = set(names) - set(discover())
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {discover()}")
    headlines: list[Headline] = []
    failed: list[str] = []
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
                bar.console.print(f"[red]{name} failed; its previous figures (if any) are kept[/red]")
                failed.append(name)
                bar.advance(task)
                continue
            if not any(p.stat().st_mtime >= started for p in RESULTS_DIR.glob(f"{name}*.png")):
                plot_headlines(name, found)
            headlines.extend(found)
            bar.advance(task)
    summary_path = RESULTS_DIR / "summary.json"
    previous = []
    if summary_path.exists() and (args.names or failed):
        # A subset run, or a failed benchmark, keeps the other sections' last figures.
        prefixes = tuple(SECTION.get(name, f"{name}_") for name in names if name not in failed)
        previous = [row for row in json.loads(summary_path.read_text()) if not row["name"].startswith(prefixes)]
    rows = previous + [h.as_dict() for h in headlines]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(rows, indent=2) + "\n")
    width = max((len(r["name"]) for r in rows), default=10)
    print(f"\n{'figure':<{width}}  {'value':>12}  {'unit':<8}  {'ratio':>7}  baseline")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['value']:>12.4g}  {r['unit']:<8}  {r['ratio']:>7.2f}  {r['baseline']}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
