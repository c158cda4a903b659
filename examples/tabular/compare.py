"""Federated training on non-IID tables against a centralised scikit-learn model.

For each bundled table (wine, breast_cancer) and each seed: hold out a
stratified quarter as the test set, deal the rest to three participants with
Dirichlet(0.5) label skew (`gradchain task split`), make the task from the
participants' rows (`gradchain task init`), and train it

- federated: `ml.simulation` with the task's own rule (median, f = 1), one
  block a round, every participant training on its own table only;
- centralised: scikit-learn's LogisticRegression on the standardised union.

Both are scored on the same test rows. Run from the repository root:

    .venv/bin/python examples/tabular/compare.py [--seeds 8] [--rounds 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ml.datafile import infer_spec
from ml.datasets import Dataset
from ml.simulation import OwnData, SimConfig, run_simulation
from ml.tabular import SKLEARN_TABLES, centralised_accuracy, concat, sklearn_table, split_table

NODES = 3
ALPHA = 0.5
EVAL_FRACTION = 0.25


def compare(name: str, seed: int, rounds: int) -> dict[str, float]:
    test, parts = split_table(sklearn_table(name), NODES, eval_fraction=EVAL_FRACTION, alpha=ALPHA, seed=seed)
    train = concat(parts)
    spec = infer_spec(train, name=name)
    own = OwnData(spec, tuple((p.X, p.y) for p in parts), Dataset(name, test.X[:0], test.y[:0], test.X, test.y))
    result = run_simulation(SimConfig(nodes=NODES, rounds=rounds, seed=seed, f=spec.f), own_data=own)
    return {"federated": result.final, "centralised": centralised_accuracy(train, test),
            "sizes": [p.rows for p in parts], "test_rows": test.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    report = {}
    for name in SKLEARN_TABLES:
        runs = [compare(name, seed, args.rounds) for seed in range(args.seeds)]
        fed = [r["federated"] for r in runs]
        cen = [r["centralised"] for r in runs]
        report[name] = {"federated": statistics.mean(fed), "centralised": statistics.mean(cen),
                        "gap_points": 100 * (statistics.mean(cen) - statistics.mean(fed)),
                        "per_seed": runs}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"| table | federated (3 nodes, Dirichlet {ALPHA}) | centralised sklearn | gap |")
    print("|---|---:|---:|---:|")
    for name, row in report.items():
        print(f"| {name} | {100 * row['federated']:.1f} % | {100 * row['centralised']:.1f} % "
              f"| {row['gap_points']:+.1f} points |")
    print(f"\n{args.seeds} seeds x {args.rounds} blocks, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
