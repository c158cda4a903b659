"""`gradchain testnet`: real node processes, as a user starts them.

    node0 (seed) <- node1, node2 ...   every node mines and trains on its own shard

The first test is quick (regtest). The end-to-end ones run the default
testnet the README promises and hold it to issue 8's figures: 3 honest nodes
reach >= 95 % on the digits test split within 5 minutes with one state root,
and (with GRADCHAIN_LONG=1: it runs up to six minutes) a miner with a
quarter of the hashrate poisoning its own blocks (issue 18) does not keep 4
nodes below 93 %.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from ml.datasets import load_dataset
from ml.tasks import builtin_task
from node.cli.main import main
from node.client import ApiError, NodeClient
from node.keystore_file import keystore_address
from node.testnet.launcher import is_alive, load_manifest
from tests.conftest import wait_until
from tests.reliability import LONG

E2E_MAX_HEIGHT = 160  # 20 rounds of 8: the 3-honest testnet reaches 95 % well before (about height 50-100)
E2E_BACKSTOP_S = 900  # only a stalled chain takes this long; "within 5 minutes" is a measurement
                      # (`gradchain testnet measure`), not a timed assertion: a loaded box mines slower
ATTACK_DEADLINE_S = 360  # issue 18: 93 % with a poisoning quarter of the hashrate "within 6 minutes"
MIN_JUDGED_ATTACKS = 3  # the attacker's blocks whose votes a round judged: proof the attack ran
MAX_COUNTED_ATTACKS_RATIO = 4  # at least four refused for every attacker's block whose vote counted


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


def test_up_status_down_and_restart_one_node(testnet_dir: pathlib.Path, tmp_path: pathlib.Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
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

    # Stop node1 by hand and start it again from the manifest's argv exactly as a user
    # would: another working directory, no GRADCHAIN_PASSWORD, no terminal. It catches up.
    node1 = manifest["nodes"][1]
    os.kill(node1["pid"], signal.SIGTERM)
    wait_until(lambda: not is_alive(node1["pid"]), timeout=30, what="node1 to stop")
    assert stat.S_IMODE((testnet_dir / ".password").stat().st_mode) == 0o600
    log = open(pathlib.Path(node1["datadir"]) / "node.log", "ab")
    env = {k: v for k, v in os.environ.items() if k != "GRADCHAIN_PASSWORD"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    restarted = subprocess.Popen(node1["argv"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                 stdin=subprocess.DEVNULL, cwd=elsewhere)
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


def test_accuracy(api: str, height: int | None = None) -> float:
    """Accuracy on the digits test split of the model ``api`` holds at ``height`` (default: its tip)."""
    task = builtin_task("digits")
    data = load_dataset(task)
    predictions = NodeClient(api, timeout=30).predict(data.X_test, height=height)
    return float(np.mean(np.asarray(predictions) == data.y_test))


test_accuracy.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def run_until_accuracy(directory: pathlib.Path, nodes: int, attackers: int, goal: float,
                       attack: str = "miner-poison", deadline: float = E2E_BACKSTOP_S,
                       max_height: int | None = E2E_MAX_HEIGHT) -> tuple[float, int]:
    """Start the testnet and wait until the model at the tip (the latest poll, not the best
    ever seen) reaches ``goal``; returns that accuracy and the height it was measured at.

    Judged by height, not by time: the chain must reach ``goal`` by ``max_height`` (None: no
    height limit), however slowly a loaded machine mines; ``deadline`` is a backstop against a
    chain that stalls."""
    argv = ["testnet", "up", "--dir", str(directory), "--nodes", str(nodes), "--detach"]
    if attackers:
        argv += ["--attackers", str(attackers), "--attack", attack]
    assert main(argv) == 0
    honest = [e for e in load_manifest(directory) if not e.attacker]
    latest = (0.0, 0)

    def reached() -> bool:
        nonlocal latest
        try:
            height = int(NodeClient(honest[0].api, timeout=30).status()["height"])
            latest = (test_accuracy(honest[0].api, height), height)
        except ApiError:
            return False
        if latest[0] < goal and max_height is not None and latest[1] >= max_height:
            raise AssertionError(f"accuracy {latest[0]:.3f} at height {latest[1]}: not {goal} by height {max_height}")
        return latest[0] >= goal

    try:
        wait_until(reached, timeout=deadline, interval=5, what=f"accuracy >= {goal} at the tip")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (the last poll: {latest[0]:.3f} at height {latest[1]})") from None
    return latest


def same_model_everywhere(directory: pathlib.Path, height: int, accuracy: float) -> bool:
    """Every node holds ``height`` with one state root, and every honest node's model there
    scores ``accuracy`` (the model is bit-identical, so the figure is too)."""
    entries = load_manifest(directory)
    clients = [NodeClient(e.api, timeout=30) for e in entries]
    try:
        if min(int(c.status()["height"]) for c in clients) < height:
            return False
        roots = {c.block(height)["state_root"] for c in clients}
    except ApiError:
        return False
    return len(roots) == 1 and all(test_accuracy(e.api, height) == accuracy for e in entries if not e.attacker)


def vote_outcomes(api: str, height: int, miner: str) -> collections.Counter[str]:
    """What the rounds made of the votes of the blocks ``miner`` mined in 1..height (the coinbase
    pays the miner first): counted / rejected / zero / gated / open."""
    client = NodeClient(api, timeout=10)
    outcomes: collections.Counter[str] = collections.Counter()
    for h in range(1, height + 1):
        block = client.block(h)
        coinbase = block["txs"][0]
        if coinbase["payouts"][0]["address"] == miner and block["vote"] is not None:
            outcomes[block["vote"]["status"]] += 1
    return outcomes


@pytest.mark.slow
def test_three_honest_nodes_train_digits_to_95_percent(testnet_dir: pathlib.Path) -> None:
    accuracy, height = run_until_accuracy(testnet_dir, nodes=3, attackers=0, goal=0.95)
    print(f"3 honest nodes: {accuracy:.3f} on the test split at height {height}", file=sys.stderr)
    wait_until(lambda: same_model_everywhere(testnet_dir, height, accuracy), timeout=60,
               what=f"one state root and model at height {height}")


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="six minutes of a 4-node testnet: GRADCHAIN_LONG=1 pytest tests/node/test_testnet.py; "
                    "tests/node/test_chain_attacks.py checks the defence in seconds")
def test_a_poisoning_miner_with_a_quarter_of_the_hashrate_does_not_steer_the_model(testnet_dir: pathlib.Path) -> None:
    """Issue 18: one of four nodes mines blocks that carry only its own poisoned updates, under as
    many bonded keys as a block has slots; the model still reaches 93 %, and that is the rounds'
    doing: the attacker's blocks voted, and their votes were rejected (or the round gate refused them)."""
    accuracy, height = run_until_accuracy(testnet_dir, nodes=4, attackers=1, goal=0.93, attack="miner-poison",
                                          deadline=ATTACK_DEADLINE_S, max_height=None)
    print(f"4 nodes, 1 miner-poison attacker: {accuracy:.3f} at height {height}", file=sys.stderr)
    entries = load_manifest(testnet_dir)
    (attacker,) = [e for e in entries if e.attacker]
    honest = [e for e in entries if not e.attacker]
    bad = vote_outcomes(honest[0].api, height, keystore_address(pathlib.Path(attacker.datadir) / "wallet.json"))
    good = vote_outcomes(honest[0].api, height, keystore_address(pathlib.Path(honest[0].datadir) / "wallet.json"))
    print(f"votes of the attacker's blocks: {dict(bad)}; of an honest miner's: {dict(good)}", file=sys.stderr)
    assert sum(bad.values()) >= MIN_JUDGED_ATTACKS, "the attacker mined too few blocks to judge"
    assert bad["counted"] * MAX_COUNTED_ATTACKS_RATIO <= bad["rejected"] + bad["gated"], "the rounds counted the attacker"
    assert good["counted"] > good["rejected"], "the rounds rejected an honest miner too"


def test_a_spec_with_data_is_deployed_and_every_node_trains_both_tasks(tmp_path: pathlib.Path) -> None:
    """`testnet up --task SPEC.json --data DIR`: digits is the genesis task; node0 first mines alone
    (no training, no file); then each node trains digits on its shard and the deployed task on its file."""
    from node.cli.errors import CliError
    from node.cli.node import train_targets
    from node.testnet.launcher import TestnetPlan, node_argv

    plan = TestnetPlan(task=str(tmp_path / "wine.json"), data=str(tmp_path / "wine-data"))
    datadir = tmp_path / "node1"
    boot = node_argv(plan, 0, tmp_path / "node0", 1, None, False, train=False)
    assert boot[boot.index("--task") + 1] == "digits" and "--mine" in boot
    assert "--train" not in boot and "--data" not in boot and "--eval" not in boot
    argv = node_argv(plan, 1, datadir, 2, "http://127.0.0.1:1", False, "ab" * 32)
    assert argv[argv.index("--task") + 1] == "digits" and "--eval" not in argv
    assert argv[argv.index("--data") + 1] == str(tmp_path / "wine-data" / "node1.csv")
    trains = [argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else "" for i, a in
              enumerate(argv) if a == "--train"]
    assert train_targets(trains) == ("ab" * 32, True)
    assert train_targets([""]) == (None, False) and train_targets(["abcd"]) == ("abcd", False)
    with pytest.raises(CliError, match="at most one task"):
        train_targets(["abcd", "ef01"])
    own = node_argv(TestnetPlan(task="digits"), 0, datadir, 2, None, False)
    assert own.count("--train") == 1 and "--data" not in own  # the built-in task alone: as before
