"""Two tasks training at once on three nodes: the genesis task on each node's shard and a task
deployed by a transaction on each node's own file; `chain verify` and a late joiner agree.

Regtest size: one-second-scale rounds, so the whole scenario takes seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import urllib.request
from typing import Any

import numpy as np

from consensus.caps import DEPLOY_BURN
from consensus.header import hash_hex
from consensus.tx import Deploy, Transfer, encode_tx, sign_tx
from ml.datafile import FirstRunDefaults, Table, infer_spec
from ml.datasets import load_dataset
from ml.evalset import encode_evalset
from ml.tabular import table_csv
from ml.tasks import TaskSpec, builtin_task
from node.client import NodeClient
from node.service import Node
from node.verify import verify_chain
from tests.conftest import until
from tests.node.harness import Cluster, mine, node_key, scenario, wait_same_tip
from wallet import address_bytes

TRAIN_TIMEOUT_S = 120.0  # rounds of a few blocks, on a loaded CI box
BOUNTY = 50_000_000
FUND = 20_000_000  # a genesis bond (10 M) and a deployed one (1 M), with room to spare
BLOCK_INTERVAL_S = 0.3


def deployable(table: Table) -> TaskSpec:
    """What `task init` writes for the rows, with rounds a regtest scenario gets through quickly."""
    defaults = FirstRunDefaults(f=0, round_blocks=4, bond_maturity=1, unbond_delay=2)
    return infer_spec(table, name="digits_own", defaults=defaults)


def write_files(base: pathlib.Path, nodes: int) -> tuple[TaskSpec, bytes, list[pathlib.Path]]:
    data = load_dataset(builtin_task("digits"))
    # the last file is smaller than a batch: every local step is a full batch, yet a round's
    # updates must differ (a commitment takes distinct digests), so the trainer resamples them
    parts = np.array_split(np.arange(280), nodes - 1) + [np.arange(280, 300)]
    files = []
    for i, rows in enumerate(parts):
        path = base / f"node{i}.csv"
        path.write_text(table_csv(Table(data.X_train[rows], data.y_train[rows])))
        files.append(path)
    spec = deployable(Table(data.X_train[:300], data.y_train[:300]))
    return spec, encode_evalset(data.X_test[:200], data.y_test[:200]), files


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def n2_committed(node: Node, task_id: bytes) -> bool:
    """The node with the 20-row file committed a round's worth of distinct updates for the deployed task."""
    n2 = address_bytes(node_key("n2").public)
    commitments = node.chain.state.tasks[task_id].commitments
    return any(who == n2 and len(c.hashes) > 1 for (_, who), c in commitments.items())


def both_moved(node: Node, task_id: bytes, versions: int) -> bool:
    tasks = node.chain.state.tasks
    return task_id in tasks and tasks[task_id].model_version >= versions and node.chain.state.model_version >= versions


@scenario
async def test_two_tasks_train_at_once_and_every_node_agrees(cluster: Cluster) -> None:
    spec, evalset, files = write_files(cluster.base, 3)
    genesis: dict[str, Any] = {"byzantine_f": 0}  # the genesis digits moves on any one update
    seed = await cluster.start("n0", **genesis)
    await mine(seed, 2)
    tag = seed.chain.signing_tag
    deployer = node_key("n0")
    deploy = sign_tx(Deploy(deployer.public, 0, DEPLOY_BURN, BOUNTY, spec.to_dict(), evalset), deployer, tag)
    task_id = await seed.submit_tx(encode_tx(deploy), source=None)
    for nonce, name in enumerate(("n1", "n2"), start=1):
        transfer = Transfer(deployer.public, nonce, address_bytes(node_key(name).public), FUND, 0)
        await seed.submit_tx(encode_tx(sign_tx(transfer, deployer, tag)), source=None)
    await mine(seed, 1)
    assert task_id in seed.chain.state.tasks
    await cluster.stop_node(seed)

    hex_id = hash_hex(task_id)
    training: dict[str, Any] = dict(genesis, train=True, train_task=hex_id, train_first_too=True)
    n0 = await cluster.start("n0", mine=True, min_block_interval_s=BLOCK_INTERVAL_S, data_file=files[0], **training)
    others = [await cluster.start(f"n{i}", peers=[n0], data_file=files[i], **training) for i in (1, 2)]
    nodes = [n0, *others]
    assert {t.task_id for t in n0.trainers} == {hex_id, hash_hex(n0.chain.rules.task_id)}

    await until(lambda: both_moved(n0, task_id, 2), TRAIN_TIMEOUT_S, what="both tasks' models to move twice")
    contract = n0.chain.state.tasks[task_id].contract
    assert contract is not None and contract.bounty < BOUNTY  # its payouts came from the bounty
    await until(lambda: n2_committed(n0, task_id), TRAIN_TIMEOUT_S, what="the small file's node to commit")

    # the API lists both, each with its own figures, and predicts with each model
    client = NodeClient(n0.url)
    loop = asyncio.get_running_loop()
    listed = {t["id"]: t for t in await loop.run_in_executor(None, client.tasks)}
    assert set(listed) == {hex_id, hash_hex(n0.chain.rules.task_id)}
    assert listed[hex_id]["name"] == "digits_own" and listed[hex_id]["status"] == "training"
    assert listed[hex_id]["deployed"] and "accuracy" in listed[hex_id]["metrics"]
    rows = load_dataset(builtin_task("digits")).X_test[:3]
    predictions, height = await loop.run_in_executor(None, client.task_predict, hex_id, rows)
    assert len(predictions) == 3 and height <= n0.chain.height

    # the dashboard lists both tasks and draws the deployed one's curve from its evaluation rows
    page = await loop.run_in_executor(None, fetch, n0.url + "/")
    assert f'src="/tasks/{hex_id}/plot.svg"' in page and "digits_own" in page
    svg = await loop.run_in_executor(None, fetch, n0.url + f"/tasks/{hex_id}/plot.svg")
    assert svg.startswith("<svg") and "accuracy" in svg and "waiting for the first evaluation" not in svg

    # the miner restarts without mining; then every node, a replay from genesis and a late joiner hold one state
    await cluster.stop_node(n0)
    n0 = await cluster.start("n0", peers=others, **genesis)
    nodes = [n0, *others]
    await wait_same_tip(nodes)
    report = verify_chain(n0.chain)
    assert report.error == "" and report.state_root_hex == hash_hex(n0.chain.state.root)
    late = await cluster.start("late", peers=[n0], **genesis)
    await wait_same_tip([*nodes, late])
    assert late.chain.state.root == n0.chain.state.root
    np.testing.assert_array_equal(late.chain.state.tasks[task_id].params, n0.chain.state.tasks[task_id].params)
    assert dataclasses.asdict(late.chain.state.tasks[task_id].contract.spec) == dataclasses.asdict(spec)  # type: ignore[union-attr]
