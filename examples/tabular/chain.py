"""The tabular comparison on a real chain: a 3-node testnet per table, against centralised sklearn.

For each bundled table: `gradchain task split` (seed S, Dirichlet 0.5, a
quarter held out), `gradchain task init` on the participants' rows, then
`gradchain testnet up --task SPEC.json --data DIR` (three real node
processes on regtest; node0 deploys the task by a transaction on a chain
whose first task is digits, then each node mines and trains both, the
deployed one on its own file, blocks carrying the median of their updates).
BLOCKS blocks after the deploy the task's model's accuracy on the held-out
rows (``POST /api/tasks/{id}/predict``) is compared with scikit-learn's
LogisticRegression fitted on the union of the three files.

    .venv/bin/python examples/tabular/chain.py [--blocks 60] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import tempfile
import time

import numpy as np

from ml.datafile import infer_spec
from ml.tabular import (
    SKLEARN_TABLES,
    centralised_accuracy,
    concat,
    sklearn_table,
    split_table,
    table_csv,
)
from node.cli.main import main as gradchain
from node.client import ApiError, NodeClient
from node.testnet.launcher import load_manifest

NODES = 3
ALPHA = 0.5
POLL_S = 2.0


def height(api: str) -> int:
    try:
        return int(NodeClient(api, timeout=5).status()["height"])
    except ApiError:
        return -1


def run(name: str, seed: int, blocks: int, base: pathlib.Path) -> dict[str, float]:
    test, parts = split_table(sklearn_table(name), NODES, eval_fraction=0.25, alpha=ALPHA, seed=seed)
    data = base / f"{name}-{seed}"
    data.mkdir()
    (data / "eval.csv").write_text(table_csv(test))
    for i, part in enumerate(parts):
        (data / f"node{i}.csv").write_text(table_csv(part))
    spec = infer_spec(concat(parts), name=name)
    (base / f"{name}.json").write_text(json.dumps(spec.to_dict()))
    testnet = base / f"tn-{name}-{seed}"
    port = random.Random().randrange(20_000, 60_000)
    assert gradchain(["testnet", "up", "--dir", str(testnet), "--nodes", str(NODES), "--network", "regtest",
                      "--task", str(base / f"{name}.json"), "--data", str(data), "--detach",
                      "--base-port", str(port)]) == 0
    started = time.monotonic()
    try:
        api = load_manifest(testnet)[0].api
        client = NodeClient(api, timeout=30)
        while height(api) < 0:
            time.sleep(POLL_S)
        task = next(t for t in client.tasks() if t["name"] == name)  # deployed by `testnet up`
        end = int(task["deployed_at"]) + blocks
        while height(api) < end:
            time.sleep(POLL_S)
        predictions, _ = client.task_predict(task["id"], test.X, height=end)
        chain = float(np.mean(np.asarray(predictions) == test.y))
        roots = {NodeClient(e.api).block(end)["state_root"] for e in load_manifest(testnet)}
    finally:
        gradchain(["testnet", "down", "--dir", str(testnet)])
    return {"chain": chain, "centralised": centralised_accuracy(concat(parts), test),
            "seconds": time.monotonic() - started, "state_roots": len(roots)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in SKLEARN_TABLES:
            runs = []
            for seed in args.seeds:
                runs.append(run(name, seed, args.blocks, pathlib.Path(tmp)))
                print(name, seed, runs[-1], flush=True)
            chain = sum(r["chain"] for r in runs) / len(runs)
            central = sum(r["centralised"] for r in runs) / len(runs)
            rows.append(f"| {name} | {100 * chain:.1f} % | {100 * central:.1f} % | {100 * (central - chain):+.1f} points |")
    print("| table | chain (3 node processes, Dirichlet 0.5) | centralised sklearn | gap |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\n{len(args.seeds)} seeds x {args.blocks} blocks")


if __name__ == "__main__":
    main()
