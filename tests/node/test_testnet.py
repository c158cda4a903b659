"""`gradchain testnet`: real node processes, as a user starts them.

    node0 (seed) <- node1, node2 ...   every node mines and trains on its own shard

The first test is quick (regtest). The end-to-end ones run the default
testnet the README promises and hold it to issue 8's figures: 3 honest nodes
reach >= 95 % on the digits test split within 5 minutes with one state root,
and a sign-flip attacker among 4 nodes is outvoted by the task's rule.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from ml.datasets import load_dataset
from ml.tasks import builtin_task
from node.cli.main import main
from node.client import ApiError, NodeClient
from node.testnet.launcher import is_alive, load_manifest
from tests.conftest import wait_until

E2E_DEADLINE_S = 300  # issue 8: "within 5 minutes on 2 cores"


@pytest.fixture()
def testnet_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    directory = tmp_path / "tn"
    try:
        yield directory
    finally:
        if (directory / "testnet.json").exists():
            main(["testnet", "down", "--dir", str(directory)])


def statuses(directory: pathlib.Path) -> list[dict[str, object] | None]:
    out: list[dict[str, object] | None] = []
    for entry in load_manifest(directory):
        try:
            out.append(NodeClient(entry.api, timeout=2).status())
        except ApiError:
            out.append(None)
    return out


def heights_at_least(directory: pathlib.Path, height: int) -> bool:
    return all(s is not None and int(s["height"]) >= height for s in statuses(directory))  # type: ignore[call-overload]


def test_up_status_down_and_restart_one_node(testnet_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testnet", "up", "--dir", str(testnet_dir), "--nodes", "2", "--network", "regtest", "--detach"]) == 0
    manifest = json.loads((testnet_dir / "testnet.json").read_text())
    assert [n["name"] for n in manifest["nodes"]] == ["node0", "node1"]
    for node in manifest["nodes"]:
        assert set(node) >= {"name", "api", "pid", "datadir", "attacker", "argv"}
        assert node["api"].startswith("http://127.0.0.1:") and not node["attacker"]
    wait_until(lambda: heights_at_least(testnet_dir, 3), timeout=90, what="both nodes at height 3")
    capsys.readouterr()
    assert main(["testnet", "status", "--dir", str(testnet_dir)]) == 0
    assert capsys.readouterr().out.count("height") == 2

    # Stop node1 by hand and start it again from the manifest's argv: it catches up.
    node1 = manifest["nodes"][1]
    os.kill(node1["pid"], signal.SIGTERM)
    wait_until(lambda: not is_alive(node1["pid"]), timeout=30, what="node1 to stop")
    log = open(pathlib.Path(node1["datadir"]) / "node.log", "ab")
    env = {**os.environ, "GRADCHAIN_PASSWORD": (testnet_dir / ".password").read_text().strip()}
    restarted = subprocess.Popen(node1["argv"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        node0 = NodeClient(manifest["nodes"][0]["api"])
        target = int(node0.status()["height"]) + 2
        wait_until(lambda: heights_at_least(testnet_dir, target), timeout=90, what="node1 to catch up")
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
        log.close()
    assert main(["testnet", "down", "--dir", str(testnet_dir)]) == 0
    assert not any(is_alive(n["pid"]) for n in manifest["nodes"])


def test_settings_mismatch_asks_for_fresh(testnet_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testnet", "up", "--dir", str(testnet_dir), "--nodes", "1", "--network", "regtest", "--detach"]) == 0
    assert main(["testnet", "down", "--dir", str(testnet_dir)]) == 0
    capsys.readouterr()
    assert main(["testnet", "up", "--dir", str(testnet_dir), "--nodes", "2", "--network", "regtest", "--detach"]) == 1
    assert "--fresh" in capsys.readouterr().err


def test_accuracy(api: str) -> float:
    task = builtin_task("digits")
    data = load_dataset(task)
    predictions = NodeClient(api, timeout=30).predict(data.X_test)
    return float(np.mean(np.asarray(predictions) == data.y_test))


test_accuracy.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def run_until_accuracy(directory: pathlib.Path, nodes: int, attackers: int, goal: float) -> float:
    argv = ["testnet", "up", "--dir", str(directory), "--nodes", str(nodes), "--detach"]
    if attackers:
        argv += ["--attackers", str(attackers), "--attack", "sign-flip"]
    assert main(argv) == 0
    honest = [e for e in load_manifest(directory) if not e.attacker]
    best = 0.0

    def reached() -> bool:
        nonlocal best
        try:
            best = max(best, test_accuracy(honest[0].api))
        except ApiError:
            return False
        return best >= goal

    wait_until(reached, timeout=E2E_DEADLINE_S, interval=5, what=f"accuracy >= {goal} (best {best:.3f})")
    return best


def same_state_root_at_a_common_height(directory: pathlib.Path) -> bool:
    clients = [NodeClient(e.api, timeout=5) for e in load_manifest(directory)]
    height = min(int(c.status()["height"]) for c in clients)
    roots = {c.block(height)["state_root"] for c in clients}
    return len(roots) == 1


@pytest.mark.slow
def test_three_honest_nodes_train_digits_to_95_percent(testnet_dir: pathlib.Path) -> None:
    accuracy = run_until_accuracy(testnet_dir, nodes=3, attackers=0, goal=0.95)
    print(f"3 honest nodes: {accuracy:.3f} on the test split", file=sys.stderr)
    wait_until(lambda: same_state_root_at_a_common_height(testnet_dir), timeout=60, what="one state root")


@pytest.mark.slow
def test_a_sign_flip_attacker_is_outvoted(testnet_dir: pathlib.Path) -> None:
    accuracy = run_until_accuracy(testnet_dir, nodes=4, attackers=1, goal=0.93)
    print(f"4 nodes, 1 sign-flip attacker: {accuracy:.3f}", file=sys.stderr)
