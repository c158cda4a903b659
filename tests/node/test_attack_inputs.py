"""Hostile inputs a single node must refuse: forged keys, subnormal floats, planted links.

Each scenario replays one attack against a live node on loopback (regtest,
in-process) and checks that the node refuses it with the rule it broke, keeps
its data, and keeps serving.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

from consensus.errors import Reject
from consensus.tx import GradientUpdate, Transfer, encode_tx, sign_tx
from ml.codec import encode_update
from node.service import FloatEnvironmentError, Node
from tests.floatmode import subnormals_flushed
from tests.node.contrib import commit, join, next_round, reveals
from tests.node.harness import Cluster, config, get_json, http, mine, node_key, scenario
from wallet import address_bytes

IDENTITY_KEY = (1).to_bytes(32, "little")  # the Ed25519 point y = 1: small order (the neutral element)
IDENTITY_SIGNATURE = IDENTITY_KEY + bytes(32)  # R = identity, S = 0: cofactorless-valid for any message
SENT_TO_IDENTITY = 5_000
SUBNORMAL = np.float32(1e-40)


async def post_tx(node: Node, tx: Transfer | GradientUpdate) -> tuple[int, str]:
    async with http() as session:
        async with session.post(f"{node.url}/api/tx", json={"tx": encode_tx(tx).hex()}) as resp:
            return resp.status, await resp.text()


@scenario
async def test_the_identity_key_cannot_spend_what_was_sent_to_it(cluster: Cluster) -> None:
    """Coins sent to the address of the small-order key 01 00..00 stay there.

    ::

        a mines 1, pays 5000 to addr(01 00..00) in block 2
        thief: Transfer(01 00..00 -> thief) signed 01 00..00 | 00..00 -> POST /api/tx

    OpenSSL's cofactorless check accepts that signature for every message;
    the node must answer 422 bad-signature and the balance must stay.
    """
    a = await cluster.start("a")
    await mine(a, 1)
    burn = address_bytes(IDENTITY_KEY)
    pay = sign_tx(Transfer(a.keypair.public, 0, burn, SENT_TO_IDENTITY, 0), a.keypair, a.chain.signing_tag)
    status, body = await post_tx(a, pay)
    assert status == 202, body
    await mine(a, 1)
    assert a.chain.state.account(burn).balance == SENT_TO_IDENTITY
    thief = address_bytes(node_key("thief").public)
    forged = Transfer(IDENTITY_KEY, 0, thief, SENT_TO_IDENTITY, 0, signature=IDENTITY_SIGNATURE)
    status, body = await post_tx(a, forged)
    assert status == 422 and Reject.BAD_SIGNATURE.value in body, body
    await mine(a, 1)
    assert a.chain.state.account(burn).balance == SENT_TO_IDENTITY
    assert a.chain.state.account(thief).balance == 0


@scenario
async def test_an_update_carrying_a_subnormal_is_refused(cluster: Cluster) -> None:
    """An update whose f32 values include 1e-40 (subnormal) is a non-canonical encoding.

    ::

        a (f=0) <- POST /api/tx: update [0.5, 1e-40, 0, ...]   -> 422 bad-update-encoding
                <- the same update with 1e-40 sent as 0        -> 202, and it is mined

    A node whose CPU flushes subnormals would compute other parameters from
    the first one; consensus therefore never lets one in.
    """
    a = await cluster.start("a", byzantine_f=0)
    me = node_key("subnormal-sender")
    await join(a, [me])
    vector = np.zeros(a.chain.task.param_count, dtype=np.float32)
    vector[0] = 0.5
    encoded = encode_update(vector)
    raw = np.frombuffer(encoded.data, dtype="<f4").copy()
    raw[1] = SUBNORMAL
    import dataclasses

    tampered = dataclasses.replace(encoded, data=raw.tobytes())
    update = GradientUpdate(me.public, a.chain.rules.task_id, a.chain.height // a.chain.task.round_blocks, tampered)
    status, body = await post_tx(a, sign_tx(update, me, a.chain.signing_tag))
    assert status == 422 and Reject.BAD_UPDATE_ENCODING.value in body and "subnormal" in body, body
    assert len(a.mempool) == 0
    contributors = await commit(a, {me: [vector]})
    await next_round(a)
    (honest,) = reveals(a, contributors)
    status, body = await post_tx(a, honest)
    assert status == 202, body
    (block_hash,) = await mine(a, 1)
    assert honest in a.chain.get_block(block_hash).txs


def test_a_node_refuses_to_start_on_a_cpu_that_flushes_subnormals(tmp_path: pathlib.Path) -> None:
    """With FTZ/DAZ on (as a -ffast-math library leaves it), the node stops at start-up and says why.

    The chain thread inherits the mode; a node running in it would compute
    other state roots than its peers from the same blocks.
    """
    import asyncio

    async def start() -> None:
        node = Node(config(tmp_path, "ftz"))
        try:
            await node.start()
        finally:
            await node.stop()

    with subnormals_flushed(), pytest.raises(FloatEnvironmentError, match="-ffast-math"):
        asyncio.run(start())
    assert not (tmp_path / "ftz").exists(), "nothing is written before the check"


@scenario
async def test_a_planted_cookie_link_is_replaced_not_followed(cluster: Cluster) -> None:
    """Symlinks at the cookie's temp and final names point at a victim file: it stays intact.

    ::

        DATADIR/.cookie.tmp           -> victim    (the old temp name)
        DATADIR/..cookie.<pid>.0.tmp  -> victim    (the temp name this process tries first)
        DATADIR/.cookie               -> victim

    The node writes its token to a fresh file (O_EXCL | O_NOFOLLOW) and
    renames it over ``.cookie``: the links are replaced, never written through.
    """
    datadir = cluster.base / "a"
    datadir.mkdir()
    victim = cluster.base / "victim.txt"
    victim.write_text("precious\n")
    for name in (".cookie.tmp", f"..cookie.{os.getpid()}.0.tmp", ".cookie"):
        (datadir / name).symlink_to(victim)
    a = await cluster.start("a")
    assert victim.read_text() == "precious\n"
    cookie = a.config.cookie_path
    assert not cookie.is_symlink() and cookie.stat().st_mode & 0o777 == 0o600
    assert cookie.read_text() == a.cookie
    async with http() as session:
        status, _ = await get_json(session, f"{a.url}/api/status")
        assert status == 200
