"""Typed tx summaries: the fields each kind serves, and a verdict only where a block connected.

node/api/summaries.py is what GET /api/blocks and /api/tx answer with and
what the dashboard's block views are built from; tests/node/test_api.py and
test_openapi.py check the live answers, these check each kind with values.
"""

from __future__ import annotations

import numpy as np

from consensus.header import hash_hex
from consensus.tx import (
    Coinbase,
    GradientUpdate,
    Payout,
    TaskTx,
    Transfer,
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

CHAIN_ID = 7


def update_tx() -> tuple[GradientUpdate, bytes]:
    sender = key(1)
    tx = GradientUpdate(sender.public, 3, 2, 5, b"\x11" * 32, encode_update(np.ones(4, dtype=np.float32)))
    signed = sign_tx(tx, sender, CHAIN_ID)
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
    tx = sign_tx(Transfer(sender.public, 1, addr(key(5)), 900, 3), sender, CHAIN_ID)
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
