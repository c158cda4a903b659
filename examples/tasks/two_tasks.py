"""Two tasks training at once on a 3-node testnet; `chain verify` and a late joiner agree.

Three real node processes (`gradchain testnet up --task SPEC.json --data DIR`
on regtest): the chain's first task is digits, node0 deploys wine (scikit-
learn's table, split non-IID across the nodes) by a transaction, and every
node trains both, digits on its shard and wine on its own file. Once both
models have moved ROUNDS times the script starts a fourth node from an empty
datadir that syncs from node0, stops everything, and replays node1's stored
chain from genesis with `gradchain chain verify`. It prints one JSON object:
each task's version and accuracy, and whether every node, the late joiner
and the replay hold the same state root.

    .venv/bin/python examples/tasks/two_tasks.py [--rounds 3] [--dir /tmp/two-tasks]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

from ml.datafile import parse_csv
from node.cli.main import main as gradchain
from node.client import NodeClient, wait_for
from node.taskfile import read_spec
from node.testnet.launcher import free_port, load_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="model steps each task takes before the checks")
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("/tmp/two-tasks"))
    args = parser.parse_args()
    base: pathlib.Path = args.dir.resolve()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    os.environ.setdefault("GRADCHAIN_PASSWORD", "two-tasks")
    started = time.monotonic()
    for argv in (["task", "example", "wine", "--out", str(base / "wine.csv")],
                 ["task", "init", "--data", str(base / "wine.csv"), "--out", str(base / "wine.json")],
                 ["task", "split", "--data", str(base / "wine.csv"), "--nodes", "3", "--out", str(base / "data")]):
        assert gradchain(argv) == 0
    testnet = base / "tn"
    port = free_port(21_000)
    assert gradchain(["testnet", "up", "--dir", str(testnet), "--network", "regtest", "--task", str(base / "wine.json"),
                      "--data", str(base / "data"), "--detach", "--base-port", str(port)]) == 0
    deployed_s = time.monotonic() - started
    nodes = load_manifest(testnet)
    client = NodeClient(nodes[0].api, timeout=30)
    late_dir = base / "late"
    late = None
    try:
        def both_moved() -> list[dict[str, Any]] | None:
            tasks = client.tasks()
            return tasks if len(tasks) == 2 and all(t["version"] >= args.rounds for t in tasks) else None

        tasks = wait_for(f"both tasks to take {args.rounds} steps", both_moved)
        trained_s = time.monotonic() - started
        spec = read_spec(base / "wine.json")
        rows = parse_csv((base / "data" / "eval.csv").read_text(), spec)
        wine = next(t for t in tasks if t["name"] == "wine")
        predictions, height = client.task_predict(wine["id"], rows.X)
        late_port = free_port(port + 10)
        late = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "node", "run", "--datadir", str(late_dir), "--network", "regtest",
             "--listen", f"127.0.0.1:{late_port}", "--peer", nodes[0].api],
            stdout=open(base / "late.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        joiner = NodeClient(f"http://127.0.0.1:{late_port}", timeout=30)
        target = int(client.status()["height"])
        wait_for("the late joiner to sync", lambda: int(joiner.status()["height"]) >= target)
        # the others keep mining: compare every node at one height
        roots = {n.name: NodeClient(n.api).block(target)["state_root"] for n in nodes}
        roots["late"] = joiner.block(target)["state_root"]
        late_tasks = joiner.tasks(target)
    finally:
        if late is not None:
            late.terminate()
            late.wait(timeout=30)
        gradchain(["testnet", "down", "--dir", str(testnet)])
    verify = subprocess.run(  # node1's stored chain replayed from genesis: ok means its root matches
        [sys.executable, "-m", "node.cli", "chain", "verify", "--datadir", str(testnet / "node1"), "--json"],
        capture_output=True, text=True, check=False,
    )
    report = json.loads(verify.stdout)
    print(json.dumps({
        "deployed_after_s": round(deployed_s, 1), "both_trained_after_s": round(trained_s, 1),
        "tasks": [{"name": t["name"], "version": t["version"], "status": t["status"], "label": t["label"],
                   "bounty_left": t.get("bounty_left")} for t in tasks],
        "wine_eval_accuracy": float(np.mean(np.asarray(predictions) == rows.y)), "at_height": height,
        "state_roots_at": target, "same_root_everywhere": len(set(roots.values())) == 1,
        "late_joiner_tasks": sorted(t["name"] for t in late_tasks),
        "chain_verify": {"ok": report["ok"], "height": report["height"], "blocks_per_second":
                         round(report["blocks_per_second"]), "root": report["state_root"]},
    }, indent=2))


if __name__ == "__main__":
    main()
