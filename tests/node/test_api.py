"""The public JSON API, /metrics and the token-guarded control routes of a real node.

Each test starts in-process regtest nodes on loopback and talks to them over
HTTP only, as a wallet, explorer or dashboard would.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from consensus.header import hash_hex
from consensus.tx import Transfer, encode_tx, sign_tx
from ml.datasets import load_dataset
from ml.tasks import builtin_task
from node.service import Node
from tests.conftest import until
from tests.node.contrib import contribute, fund, join, settled
from tests.node.harness import (
    Cluster,
    auth,
    connect,
    get_json,
    http,
    mine,
    node_key,
    scenario,
    wait_same_tip,
)
from wallet import address_bytes, encode_address

TRAIN_BLOCKS = 40  # blocks of two training nodes: bonds mature, then four rounds of eight move the model
MIN_TRAINED_ACCURACY = 0.8
MAX_UNTRAINED_ACCURACY = 0.5  # the seeded initial model is far from trained (10 classes)
UPDATE_WAIT_S = 60.0  # one local training step per node per block, on a loaded 2-core box
STATUS_FIELDS = {
    "chain_id", "network", "task", "height", "tip", "state_root", "model_version", "peers", "mining",
    "hashrate", "mempool", "syncing", "url", "training", "uptime_s",
}


async def post_json(session: Any, url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with session.post(url, json=body, headers=headers or {}) as resp:
        text = await resp.text()
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, text


def transfer(node: Node, nonce: int, amount: int, fee: int = 0) -> Transfer:
    """A transfer from ``node``'s key to a fixed recipient, signed for the node's chain."""
    to = address_bytes(node_key("recipient").public)
    tx = sign_tx(Transfer(node.keypair.public, nonce, to, amount, fee), node.keypair, node.chain.signing_tag)
    assert isinstance(tx, Transfer)
    return tx


@scenario
async def test_status_reports_the_chain_and_the_node(cluster: Cluster) -> None:
    """GET /api/status: every documented field, with values that match the node.

    ::

        a - b      a mines 2; a's status says height 2, 1 peer, regtest, digits
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    await mine(a, 2)
    async with http() as session:
        status, body = await get_json(session, f"{a.url}/api/status")
    assert status == 200
    assert set(body) >= STATUS_FIELDS
    assert body["height"] == 2 and body["tip"] == hash_hex(a.chain.tip.hash)
    assert body["state_root"] == hash_hex(a.chain.state.root)
    assert body["network"] == "regtest" and body["task"] == "digits"
    assert body["chain_id"] == a.chain.chain_id and body["url"] == a.url
    assert body["peers"] == 1 and body["mining"] is False and body["training"] is False
    assert body["mempool"] == 0 and body["syncing"] is False


@scenario
async def test_blocks_by_height_and_by_hash_and_404s(cluster: Cluster) -> None:
    """GET /api/blocks[/{height|hash}]: the same block both ways; unknown ones 404, junk 400.

    ::

        genesis - 1 - 2 - 3     (a)
    """
    (a,) = await cluster.start_many(1)
    hashes = await mine(a, 3)
    async with http() as session:
        status, by_height = await get_json(session, f"{a.url}/api/blocks/2")
        assert status == 200
        assert by_height["height"] == 2 and by_height["hash"] == hash_hex(hashes[1])
        assert by_height["prev"] == hash_hex(hashes[0]) and by_height["main_chain"] is True
        assert by_height["txs"][0]["type"] == "coinbase"
        status, by_hash = await get_json(session, f"{a.url}/api/blocks/{hash_hex(hashes[1])}")
        assert status == 200 and by_hash == by_height
        status, recent = await get_json(session, f"{a.url}/api/blocks?count=2")
        assert status == 200 and [blk["height"] for blk in recent] == [3, 2]
        status, genesis = await get_json(session, f"{a.url}/api/blocks/0")
        assert status == 200 and genesis["hash"] == hash_hex(a.chain.genesis_hash)
        for missing in ("4", "999999999999", "ab" * 32):
            status, body = await get_json(session, f"{a.url}/api/blocks/{missing}")
            assert status == 404, missing
            assert "error" in body
        for junk in ("xyz", "-1", "ab" * 31):
            status, body = await get_json(session, f"{a.url}/api/blocks/{junk}")
            assert status == 400, junk
        for count in ("lots", "-3", "0", "101"):
            status, body = await get_json(session, f"{a.url}/api/blocks?count={count}")
            assert status == 400 and "count" in body["error"], count
        for height in ("-1", "999", "x"):
            status, body = await get_json(session, f"{a.url}/api/model?height={height}")
            assert status in (400, 404) and "height" in body["error"], height


@scenario
async def test_a_block_says_which_updates_the_rule_counted_and_why(cluster: Cluster) -> None:
    """GET /api/blocks/t: three honest updates counted, a sign-flipped one an outlier.

    ::

        ... - commit - ... - t[3 honest updates + 1 sign flip]     (a, digits: median, f=1)
    """
    (a,) = await cluster.start_many(1)
    rng = np.random.default_rng(4)
    direction = (0.05 * rng.standard_normal(a.chain.task.param_count)).astype(np.float32)
    vectors = [(direction + 0.01 * rng.standard_normal(direction.size)).astype(np.float32) for _ in range(3)]
    vectors.append((-direction).astype(np.float32))
    senders = [node_key(f"updater-{i}") for i in range(4)]
    await join(a, senders)
    await contribute(a, dict(zip(senders, vectors, strict=True)))
    async with http() as session:
        status, block = await get_json(session, f"{a.url}/api/blocks/{a.chain.height}")
    assert status == 200
    updates = [tx for tx in block["txs"] if tx["type"] == "update"]
    by_sender = {tx["from"]: tx for tx in updates}
    assert len(by_sender) == 4
    for kp in senders[:3]:
        honest = by_sender[encode_address(address_bytes(kp.public))]
        assert honest["outcome"] == "accepted" and "paid" in honest["reason"]
    attacker = by_sender[encode_address(address_bytes(senders[3].public))]
    assert attacker["outcome"] == "rejected" and "outlier" in attacker["reason"]


@scenario
async def test_a_transfer_is_found_in_the_mempool_then_confirmed(cluster: Cluster) -> None:
    """POST /api/tx, GET /api/tx/{id}: status "mempool", then "confirmed" at the next height.

    ::

        a mines 1 (reward to its key) -> a sends 1000 to r -> a mines 1 (tx in block 2)
        b (peer) gets the tx by gossip, then the block
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    await mine(a, 1)
    tx = transfer(a, nonce=0, amount=1000, fee=10)
    async with http() as session:
        status, body = await post_json(session, f"{a.url}/api/tx", {"tx": encode_tx(tx).hex()})
        assert status == 202, body
        tx_id = body["txid"]
        status, found = await get_json(session, f"{a.url}/api/tx/{tx_id}")
        assert status == 200 and found["status"] == "mempool" and found["type"] == "transfer"
        assert found["amount"] == 1000 and found["fee"] == 10
        await until(lambda: len(b.mempool) == 1, 15, what="the tx to reach b")
        status, again = await post_json(session, f"{a.url}/api/tx", {"tx": encode_tx(tx).hex()})
        assert status == 202 and again["txid"] == tx_id, "resubmitting is idempotent"
        assert len(a.mempool) == 1
        await mine(a, 1)
        await wait_same_tip([a, b])
        for node in (a, b):
            status, found = await get_json(session, f"{node.url}/api/tx/{tx_id}")
            assert status == 200 and found["status"] == "confirmed" and found["height"] == 2
        recipient = encode_address(address_bytes(node_key("recipient").public))
        status, account = await get_json(session, f"{a.url}/api/accounts/{recipient}")
        assert status == 200 and account["balance"] == 1000 and account["nonce"] == 0
        sender = encode_address(address_bytes(a.keypair.public))
        status, account = await get_json(session, f"{a.url}/api/accounts/{sender}")
        assert account["nonce"] == 1 and account["next_nonce"] == 1
        status, _ = await get_json(session, f"{a.url}/api/tx/{'00' * 32}")
        assert status == 404
        status, _ = await get_json(session, f"{a.url}/api/tx/nothex")
        assert status == 400
        status, _ = await get_json(session, f"{a.url}/api/accounts/notanaddress")
        assert status == 400


@scenario
async def test_post_tx_refuses_garbage_and_bad_signatures(cluster: Cluster) -> None:
    """Garbage -> 400; a well-formed tx with a bad signature -> 422 naming the rule.

    ::

        client --(not JSON, no "tx", not hex)--> a: 400
        client --(transfer, signature flipped)--> a: 422 bad-signature, mempool unchanged
    """
    (a,) = await cluster.start_many(1)
    await mine(a, 1)
    async with http() as session:
        for body in (b"\x00\xff garbage", b"[]", b'{"tx": 5}', b'{"tx": "zz"}', b'{"nottx": "00"}'):
            async with session.post(f"{a.url}/api/tx", data=body) as resp:
                assert resp.status == 400, body
                assert "error" in await resp.json()
        tx = transfer(a, nonce=0, amount=5)
        forged = dataclasses.replace(tx, signature=bytes([tx.signature[0] ^ 1]) + tx.signature[1:])
        status, body = await post_json(session, f"{a.url}/api/tx", {"tx": encode_tx(forged).hex()})
        assert status == 422 and body["error"].startswith("bad-signature")
        overspend = transfer(a, nonce=0, amount=10**15)
        status, body = await post_json(session, f"{a.url}/api/tx", {"tx": encode_tx(overspend).hex()})
        assert status == 422 and body["error"].startswith("insufficient-funds")
        status, body = await post_json(session, f"{a.url}/api/tx", {"tx": "00"})
        assert status == 422 and body["error"].startswith("bad-encoding")
    assert len(a.mempool) == 0


@scenario
async def test_model_params_are_raw_float32_of_the_task_size(cluster: Cluster) -> None:
    """GET /api/model/params: little-endian float32 bytes, param_count of them, equal to the state.

    ::

        genesis - 1      (a) params at height 0 and 1 (no updates: unchanged)
    """
    (a,) = await cluster.start_many(1)
    await mine(a, 1)
    task = a.chain.task
    async with http() as session:
        for query in ("", "?height=0"):
            async with session.get(f"{a.url}/api/model/params{query}") as resp:
                assert resp.status == 200
                assert resp.headers["X-Gradchain-Dtype"] == "float32-le"
                raw = await resp.read()
            assert len(raw) == task.param_count * 4
            params = np.frombuffer(raw, dtype="<f4")
            assert np.array_equal(params, np.asarray(a.chain.state.params, dtype=np.float32))
        async with session.get(f"{a.url}/api/model/params?height=7") as resp:
            assert resp.status == 404
        async with session.get(f"{a.url}/api/model/params?height=x") as resp:
            assert resp.status == 400
        status, model = await get_json(session, f"{a.url}/api/model")
        assert status == 200 and model["parameters"] == task.param_count and model["height"] == 1
        assert 0.0 <= model["metrics"]["accuracy"] <= 1.0


@scenario
async def test_predict_refuses_wrong_shapes(cluster: Cluster) -> None:
    """POST /api/predict with the wrong shape, type or values: 422 with the expected shape.

    ::

        client --(rows of 63, a flat list, strings, NaN, ragged, 0 rows, 1e400 as an integer, deep nesting)--> a: 422
    """
    (a,) = await cluster.start_many(1)
    dim = a.chain.task.input_dim
    bad_inputs: list[Any] = [
        [[0.0] * (dim - 1)], [0.0] * dim, [["x"] * dim], [[0.0] * dim, [0.0] * (dim + 1)], [],
        [[[0.0] * dim]], "pixels",
    ]
    async with http() as session:
        for inputs in bad_inputs:
            status, body = await post_json(session, f"{a.url}/api/predict", {"inputs": inputs})
            assert status == 422, str(inputs)[:40]
            assert "error" in body
        async with session.post(f"{a.url}/api/predict", data=b'{"inputs": [[NaN' + b", 0" * (dim - 1) + b"]]}") as resp:
            assert resp.status == 422
        # An integer beyond float range, and JSON nested past Python's recursion limit: 422, not 500.
        huge = b"1" + b"0" * 400
        async with session.post(f"{a.url}/api/predict", data=b'{"inputs": [[' + huge + b"]]}") as resp:
            assert resp.status == 422
        async with session.post(f"{a.url}/api/predict", data=b"[" * 100_000 + b"]" * 100_000) as resp:
            assert resp.status == 422
        async with session.post(f"{a.url}/api/tx", data=b'{"tx": ' + b"[" * 100_000 + b"]" * 100_000 + b"}") as resp:
            assert resp.status == 400
        status, body = await post_json(session, f"{a.url}/api/predict", {"inputs": [[0.0] * dim] * 3})
        assert status == 200 and len(body["predictions"]) == 3
        assert all(0 <= p < a.chain.task.output_dim for p in body["predictions"])


@scenario
async def test_two_training_nodes_reach_80_percent_through_predict(cluster: Cluster) -> None:
    """Two --train nodes on disjoint shards; 40 blocks later /api/predict scores > 80%.

    ::

        a (shard 0/2) - b (shard 1/2)    both bond, commit each round and reveal on every tip
        genesis - 1 - ... - 41           a mines each block once both nodes' due txs are in its pool
                                         (a funds b's bond after block 1)

    Accuracy is measured over HTTP against the digits test split, at height 0
    (the seeded model) and at the tip; b, which only receives blocks, serves
    the same predictions as a.
    """
    # f=0: two updates a block must move the model (the task's f=1 needs three).
    a = await cluster.start("a", train=True, shard=(0, 2), byzantine_f=0)
    b = await cluster.start("b", train=True, shard=(1, 2), byzantine_f=0)
    await connect(a, b)
    await fund(a, [b.keypair])  # b does not mine: a pays its bond
    start = a.chain.height
    for _ in range(TRAIN_BLOCKS):
        await until(lambda: a.run_chain(settled, a, [a, b]), UPDATE_WAIT_S,
                    what="both nodes' bonds, commitments and reveals in a's pool")
        await mine(a, 1)
        await wait_same_tip([a, b])
    tip = a.chain.height
    assert tip == start + TRAIN_BLOCKS
    assert a.chain.state.model_version > 0
    data = load_dataset(builtin_task("digits"))
    inputs = data.X_test.tolist()
    async with http() as session:
        results = {}
        for node, height in ((a, 0), (a, tip), (b, tip)):
            status, body = await post_json(
                session, f"{node.url}/api/predict?height={height}", {"inputs": inputs}
            )
            assert status == 200, body
            results[node.url, height] = np.asarray(body["predictions"])
    accuracy = {key: float(np.mean(pred == data.y_test)) for key, pred in results.items()}
    assert accuracy[a.url, 0] < MAX_UNTRAINED_ACCURACY, accuracy
    assert accuracy[a.url, tip] > MIN_TRAINED_ACCURACY, accuracy
    assert np.array_equal(results[a.url, tip], results[b.url, tip])


@scenario
async def test_control_routes_need_the_cookie_token(cluster: Cluster) -> None:
    """POST /api/mine and /api/peers: 401 without or with a wrong token, done with DATADIR/.cookie.

    ::

        a  b     (not linked) -> POST a/api/peers {b} with the token links them
                               -> POST a/api/mine {"blocks": 3} mines 3, b follows
    """
    a, b = await cluster.start_many(2)
    wrong = {"Authorization": "Bearer " + "0" * 64}
    async with http() as session:
        for headers in ({}, wrong, {"Authorization": "Basic xyz"}):
            status, _ = await post_json(session, f"{a.url}/api/mine", {"blocks": 1}, headers)
            assert status == 401
            status, _ = await post_json(session, f"{a.url}/api/peers", {"url": b.url}, headers)
            assert status == 401
        assert a.chain.height == 0 and not a.peers.peers
        status, body = await post_json(session, f"{a.url}/api/peers", {"url": "ftp://x"}, auth(a))
        assert status == 400
        status, body = await post_json(session, f"{a.url}/api/peers", {"url": b.url}, auth(a))
        assert status == 200 and body == {"connected": True, "url": b.url}
        status, body = await post_json(session, f"{a.url}/api/mine", {"blocks": 0}, auth(a))
        assert status == 400
        status, body = await post_json(session, f"{a.url}/api/mine", {"blocks": 3}, auth(a))
        assert status == 200 and body["height"] == 3 and len(body["mined"]) == 3
        assert body["mined"][-1] == hash_hex(a.chain.tip.hash)
    await wait_same_tip([a, b])


@scenario
async def test_api_mine_on_a_node_without_a_key_says_why(cluster: Cluster) -> None:
    """A node started without --mine, --train or a keystore has no key to pay a block to.

    ::

        client --POST /api/mine--> a (no key): 409 with what to do, not a 500
    """
    (a,) = await cluster.start_many(1)
    a.keypair = None  # as `gradchain node run` without --mine/--train/--keystore leaves it
    async with http() as session:
        status, body = await post_json(session, f"{a.url}/api/mine", {"blocks": 1}, auth(a))
    assert status == 409, body
    assert "keystore" in body["error"]
    assert a.chain.height == 0


@scenario
async def test_metrics_are_prometheus_text(cluster: Cluster) -> None:
    """GET /metrics: text exposition with gradchain_height at the tip, peers, mined blocks.

    ::

        a - b    a mines 2
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    await mine(a, 2)
    await wait_same_tip([a, b])
    async with http() as session:
        async with session.get(f"{a.url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert "# TYPE gradchain_height gauge" in text
    assert samples["gradchain_height"] == 2
    assert samples["gradchain_peers"] == 1
    assert samples["gradchain_blocks_mined_total"] == 2
