"""`python -m benchmarks [--quick] [names...]`: run the suite, write summary.json.

Every module in this folder that defines ``run(quick)`` is a benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys

from benchmarks.common import RESULTS_DIR, Headline

NOT_BENCHMARKS = {"__init__", "__main__", "common", "report"}


def discover() -> list[str]:
    here = pathlib.Path(__file__).resolve().parent
    return sorted(p.stem for p in here.glob("*.py") if p.stem not in NOT_BENCHMARKS)


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
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        headlines.extend(module.run(quick=args.quick))
    summary_path = RESULTS_DIR / "summary.json"
    previous = []
    if summary_path.exists() and args.names:
        # Running a subset keeps the other sections' figures.
        prefixes = tuple(h.name.split("_")[0] + "_" for h in headlines)
        previous = [row for row in json.loads(summary_path.read_text()) if not row["name"].startswith(prefixes)]
    rows = previous + [h.as_dict() for h in headlines]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(rows, indent=2) + "\n")
    width = max((len(r["name"]) for r in rows), default=10)
    print(f"\n{'figure':<{width}}  {'value':>12}  {'unit':<8}  {'ratio':>7}  baseline")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['value']:>12.4g}  {r['unit']:<8}  {r['ratio']:>7.2f}  {r['baseline']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
