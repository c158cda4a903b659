"""The node's status at one moment: one typed snapshot that ``GET /api/status`` and the dashboard render.

Both used to gather the same facts separately (and could drift: the API
rounded the hashrate, the dashboard counted peers its own way). Now
:func:`take_status` is the one place that reads the node for them, and
:meth:`StatusSnapshot.to_json` is the API's answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consensus.genesis import genesis_task_id
from consensus.header import hash_hex

if TYPE_CHECKING:
    from node.service import Node

JSON_DECIMALS = 1  # the API rounds hashrate and uptime to a tenth


@dataclass(frozen=True)
class StatusSnapshot:
    """The chain tip, the task and this node's activity, read together on the event loop."""

    chain_id: int
    genesis: str  # hex: with chain_id, what every signature on this chain binds
    network: str
    task: str  # the task's name
    task_id: str  # hex: the genesis task's id, which bonds, commitments and updates name
    head: str  # "classify" or "regress"
    rule: str  # the task's aggregation rule
    f: int  # the Byzantine bound the rule runs with
    height: int
    round: int  # the round the next block belongs to
    round_blocks: int  # blocks per round: the model moves at each round's last block
    tip: str  # hex
    state_root: str  # hex
    model_version: int
    peers: int  # connected
    known_peers: int  # addresses in the address book
    banned_peers: int  # bans in force
    mining: bool
    hashrate: float  # H/s, 0 when not mining
    mempool: int  # transactions waiting
    syncing: bool
    url: str
    training: bool
    uptime_s: float
    taken_at: float  # unix time of the snapshot

    def to_json(self) -> dict[str, Any]:
        """The body of ``GET /api/status`` (node/api/openapi.py documents each field)."""
        return {
            "chain_id": self.chain_id, "genesis": self.genesis, "network": self.network, "task": self.task,
            "task_id": self.task_id, "head": self.head,
            "rule": self.rule, "f": self.f, "height": self.height, "round": self.round,
            "round_blocks": self.round_blocks, "tip": self.tip,
            "state_root": self.state_root, "model_version": self.model_version, "peers": self.peers,
            "known_peers": self.known_peers, "banned_peers": self.banned_peers, "mining": self.mining,
            "hashrate": round(self.hashrate, JSON_DECIMALS), "mempool": self.mempool, "syncing": self.syncing,
            "url": self.url, "training": self.training, "uptime_s": round(self.uptime_s, JSON_DECIMALS),
        }


def take_status(node: Node, now: float | None = None) -> StatusSnapshot:
    """Read the node's status on the event loop.

    The chain facts come from the chain service's snapshot (replaced whole
    on the chain thread after every change, so height, tip, state root and
    mempool always belong together); the rest are the loop's own.
    """
    now = time.time() if now is None else now
    snap, peers, miner = node.chain_service.snapshot, node.peers, node.miner
    return StatusSnapshot(
        chain_id=snap.chain_id,
        genesis=hash_hex(snap.genesis_hash),
        network=snap.network,
        task=snap.task.name,
        task_id=hash_hex(genesis_task_id(snap.task)),
        head=snap.task.head,
        rule=snap.task.rule,
        f=snap.task.f,
        height=snap.height,
        round=snap.height // snap.task.round_blocks,
        round_blocks=snap.task.round_blocks,
        tip=hash_hex(snap.tip_hash),
        state_root=hash_hex(snap.state_root),
        model_version=snap.model_version,
        peers=len(peers.peers),
        known_peers=len(peers.known),
        banned_peers=len(peers.banned()),
        mining=miner is not None,
        hashrate=float(miner.hashrate) if miner is not None else 0.0,
        mempool=snap.mempool_txs,
        syncing=node.syncing,
        url=node.url,
        training=node.trainer is not None,
        uptime_s=now - node.started_at,
        taken_at=now,
    )
