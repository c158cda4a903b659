"""Typed tx summaries: the fields each kind serves, and a verdict only where a block connected.

node/api/summaries.py is what GET /api/blocks and /api/tx answer with and
what the dashboard's block views are built from; tests/node/test_api.py and
test_openapi.py check the live answers, these check each kind with values.
"""

from __future__ import annotations

import numpy as np

from consensus.header import hash_hex
from consensus.tx import (
    Bond,
    Coinbase,
    Commit,
    GradientUpdate,
    Payout,
    TaskTx,
    Transfer,
    Unbond,
    chain_tag,
    encode_tx,
    sign_tx,
    txid,
)
from ml.codec import encode_update
from node.api.summaries import (
    CoinbaseSummary,
    TaskSummary,
    TransferSummary,
    UpdateSummary,
    summarise_tx,
)
from tests.chainbuilder import addr, key, solo_task
from wallet import encode_address

TAG = chain_tag(7, b"\x22" * 32)
TASK = b"\x44" * 32


def update_tx() -> tuple[GradientUpdate, bytes]:
    sender = key(1)
    tx = GradientUpdate(sender.public, TASK, 5, encode_update(np.ones(4, dtype=np.float32)))
    signed = sign_tx(tx, sender, TAG)
    assert isinstance(signed, GradientUpdate)
    return signed, encode_tx(signed)


def test_a_coinbase_names_its_height_and_payouts() -> None:
    tx = Coinbase(4, (Payout(addr(key(2)), 50), Payout(addr(key(3)), 7)))
    raw = encode_tx(tx)
    summary = summarise_tx(tx, raw)
    assert isinstance(summary, CoinbaseSummary) and summary.txid == hash_hex(txid(raw)) and summary.size == len(raw)
    assert summary.to_json() == {
        "txid": summary.txid, "size": len(raw), "type": "coinbase", "height": 4,
        "payouts": [{"address": encode_address(addr(key(2))), "amount": 50},
                    {"address": encode_address(addr(key(3))), "amount": 7}],
    }


def test_a_transfer_names_sender_and_recipient_as_addresses() -> None:
    sender = key(4)
    tx = sign_tx(Transfer(sender.public, 1, addr(key(5)), 900, 3), sender, TAG)
    summary = summarise_tx(tx, encode_tx(tx))
    assert isinstance(summary, TransferSummary)
    body = summary.to_json()
    assert body["type"] == "transfer" and body["from"] == encode_address(addr(sender))
    assert (body["to"], body["amount"], body["fee"], body["nonce"]) == (encode_address(addr(key(5))), 900, 3, 1)


def test_an_update_carries_a_verdict_only_once_its_block_connected() -> None:
    tx, raw = update_tx()
    pooled = summarise_tx(tx, raw)
    assert isinstance(pooled, UpdateSummary) and pooled.outcome is None
    assert not {"accepted", "outcome", "reason"} & set(pooled.to_json())
    assert pooled.to_json()["encoding"] == "f32" and pooled.to_json()["values"] == 4
    assert (pooled.to_json()["round"], pooled.to_json()["task"]) == (5, hash_hex(TASK))

    task = solo_task()
    for accepted, outcome in ((True, "accepted"), (False, "rejected"), (None, "not applied")):
        summary = summarise_tx(tx, raw, accepted, connected=True, task=task)
        assert isinstance(summary, UpdateSummary)
        body = summary.to_json()
        assert body["accepted"] is accepted and body["outcome"] == outcome == summary.outcome
        assert isinstance(body["reason"], str) and body["reason"]
    assert "reason" not in summarise_tx(tx, raw, True, connected=True).to_json(), "no task, no reason"


def test_a_task_tx_serves_its_task_dict() -> None:
    spec = solo_task().to_dict()
    tx = TaskTx(spec)
    summary = summarise_tx(tx, encode_tx(tx))
    assert isinstance(summary, TaskSummary) and summary.to_json()["task"] == spec


def test_bonds_and_commitments_name_their_sender_task_and_round() -> None:
    sender = key(6)
    bond = sign_tx(Bond(sender.public, 2, 5, TASK), sender, TAG)
    summary = summarise_tx(bond, encode_tx(bond))
    assert summary.to_json() | {"txid": None, "size": None} == {
        "txid": None, "size": None, "type": "bond", "from": encode_address(addr(sender)), "task": hash_hex(TASK),
        "fee": 5,
        "nonce": 2,
    }
    unbond = sign_tx(Unbond(sender.public, 3, 0, TASK), sender, TAG)
    assert summarise_tx(unbond, encode_tx(unbond)).to_json()["type"] == "unbond"
    commit = sign_tx(Commit(sender.public, TASK, 4, b"\x33" * 32, (b"\x01" * 32, b"\x02" * 32)), sender, TAG)
    body = summarise_tx(commit, encode_tx(commit)).to_json()
    assert (body["type"], body["round"], body["updates"], body["task"]) == ("commit", 4, 2, hash_hex(TASK))
    assert body["base_hash"] == hash_hex(b"\x33" * 32)
