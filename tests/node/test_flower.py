"""Flower clients on a live regtest node: the example joins unchanged and trains the chain's model.

A node runs in a background thread (no miner, no trainer, f = 0 so one
update per block moves the model); the test mines a block whenever a
participant's update reaches the mempool. The example of
``examples/flower/`` runs as a user runs it, ``gradchain flower ...`` in a
subprocess; the bridge's refusals are driven through the Python API.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ml.models import init_params
from ml.tasks import builtin_task
from node.cli.main import main
from node.client import NodeClient
from node.config import NodeConfig
from node.flower import BridgeError, FlowerBridge, run_flower_client
from tests.conftest import wait_until
from tests.node.threaded import NodeThread
from wallet import keypair_from_seed

pytest.importorskip("flwr")  # a dev dependency; the bridge itself runs without it

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO / "examples" / "flower"
PASSWORD = "pw"
BLOCKS = 6  # models handed to the example: genesis and the five its own updates make
UPDATE_TIMEOUT_S = 60.0  # start-up (numba, Flower imports) plus one fit, on a loaded 2-core box
# One participant on a quarter of the digits training split, 20 local steps per block at lr 1.0:
# after six blocks the chain's model reaches 0.911 / 0.942 / 0.944 / 0.920 on the held-out split
# with shards 1 / 0 / 2 / 3 of 4 (measured with the example through run_flower_client); the
# initial model scores 0.136.
MIN_ACCURACY = 0.90


@pytest.fixture()
def live(tmp_path: pathlib.Path) -> Iterator[NodeClient]:
    miner = keypair_from_seed(bytes(32))
    running = NodeThread(NodeConfig(datadir=tmp_path / "node", keypair=miner, byzantine_f=0))
    token = (tmp_path / "node" / ".cookie").read_text()
    try:
        yield NodeClient(running.node.url, token=token)
    finally:
        running.stop()


def mine_when_pooled(node: NodeClient, what: str) -> None:
    """Wait until an update is in the mempool, then mine the block that carries it."""
    wait_until(lambda: node.status()["mempool"] > 0, UPDATE_TIMEOUT_S, interval=0.1, what=what)
    node.mine(1)


def test_the_example_client_joins_unchanged_and_trains_the_chain(
    live: NodeClient, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADCHAIN_PASSWORD", PASSWORD)
    keystore = tmp_path / "me.json"
    assert main(["wallet", "new", "--keystore", str(keystore)]) == 0
    accuracy_at = [live.model()["metrics"]["accuracy"]]
    process = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "flower", "--node", live.url, "--keystore", str(keystore),
         "--app-dir", str(EXAMPLE_DIR), "--client", "flower_digits.client_app:client_fn",
         "--shard", "1/4", "--rounds", str(BLOCKS), "--poll", "0.1", "--json"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for height in range(1, BLOCKS + 1):
            mine_when_pooled(live, f"the example's update on model {height - 1}")
            accuracy_at.append(live.model()["metrics"]["accuracy"])
        out, err = process.communicate(timeout=UPDATE_TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, err
    reports = [json.loads(line) for line in out.splitlines()]

    assert [r["base_height"] for r in reports] == list(range(BLOCKS))
    assert all(r["txid"] and r["refused"] is None for r in reports)
    for report in reports:  # every update was mined, in the block after its base
        assert live.tx(report["txid"])["status"] == "confirmed"
    assert live.model()["version"] == BLOCKS
    params, _ = live.model_params()
    assert not np.array_equal(params, init_params(builtin_task("digits"))), "the model moved"
    assert accuracy_at[-1] >= MIN_ACCURACY > accuracy_at[0]
    # The example evaluates on the chain's own held-out split, so its figure for each model it
    # was handed is the node's figure for that height (up to argmax ties in float32 vs float64).
    held_out = reports[0]["evaluation"]["num_examples"]
    for report in reports:
        client_view = report["evaluation"]["metrics"]["accuracy"]
        assert abs(client_view - accuracy_at[report["base_height"]]) <= 1 / held_out + 1e-9
    assert reports[0]["num_examples"] == 1347 // 4 + (1 < 1347 % 4)  # its quarter of the training split


class Scripted:
    """A NumPyClient stand-in whose fit returns what the test says (no Flower needed to drive it)."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.configs: list[dict[str, Any]] = []

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        self.configs.append(dict(config))
        return self.make(parameters)


def test_bad_updates_are_refused_before_sending_with_the_reason(live: NodeClient) -> None:
    task = live.task_spec()
    me = keypair_from_seed(bytes([7]) * 32)
    tip = live.status()

    def handle(make: Any) -> Any:
        bridge = FlowerBridge(Scripted(make), live, me, task)
        return bridge.handle(tip["height"], tip["tip"])

    nan = handle(lambda p: ([p[0] * np.nan, p[1]], 10, {}))
    assert nan.txid is None and "NaN" in nan.refused
    far = handle(lambda p: ([p[0] + 10.0, p[1]], 10, {}))
    assert far.txid is None and "norm" in far.refused and far.update_norm > task.norm_bound
    assert live.status()["mempool"] == 0, "nothing was sent"

    with pytest.raises(BridgeError, match=r"W0 with shape \[10, 64\]"):
        handle(lambda p: ([p[0].T, p[1]], 10, {}))
    with pytest.raises(BridgeError, match="returned 1 arrays"):
        handle(lambda p: ([p[0]], 10, {}))
    with pytest.raises(BridgeError, match=r"\(parameters, num_examples, metrics\)"):
        handle(lambda p: p)

    fine = Scripted(lambda p: ([p[0] - 0.01, p[1]], 10, {}))
    sent = FlowerBridge(fine, live, me, task).handle(tip["height"], tip["tip"])
    assert sent.txid is not None and live.tx(sent.txid)["status"] == "mempool"
    assert fine.configs == [{"lr": task.lr, "local_steps": task.local_steps, "batch_size": task.batch_size,
                             "base_height": tip["height"], "server_round": tip["height"] + 1, "task": "digits"}]


def test_run_flower_client_follows_new_models_until_its_rounds_are_sent(live: NodeClient) -> None:
    """The Python entry: a client that only moves b0 by a fixed step; two models, two updates."""
    import threading

    me = keypair_from_seed(bytes([9]) * 32)
    client = Scripted(lambda p: ([p[0], p[1] - 0.5], 5, {"seen": 1}))
    reports: list[Any] = []
    worker = threading.Thread(target=lambda: reports.extend(
        run_flower_client(client, live, me, rounds=2, poll_s=0.05)))
    worker.start()
    try:
        mine_when_pooled(live, "the first update")
        mine_when_pooled(live, "the second update")
    finally:
        worker.join(timeout=UPDATE_TIMEOUT_S)
    assert not worker.is_alive()
    assert [r.base_height for r in reports] == [0, 1]
    b0 = live.model_params()[0][-10:]
    assert np.allclose(b0, -1.0), "the chain went where the client's fit went, twice"

    (first,) = live.tasks()
    with pytest.raises(BridgeError, match=f"task ffff is not a task of this chain; its tasks: {first['id']}"):
        run_flower_client(client, live, me, task="ffff", rounds=1)
    reports.clear()
    worker = threading.Thread(target=lambda: reports.extend(
        run_flower_client(client, live, me, task=first["id"][:8], rounds=1, poll_s=0.05)))
    worker.start()
    try:
        mine_when_pooled(live, "an update for the task named by an id prefix")
    finally:
        worker.join(timeout=UPDATE_TIMEOUT_S)
    assert [r.base_height for r in reports] == [2]
