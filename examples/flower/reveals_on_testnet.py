"""How many of a Flower participant's updates make it into their reveal round on a live testnet.

A block counts one update per sender, and a participant commits a round's
worth (8 on digits), so each of them must be in one of the next round's 8
blocks. The bridge pools them all when that round starts (as the node's own
trainer does); before, it revealed one per new tip it saw, and a block found
before the next reveal reached its miner went without one, which pushed the
last of the round's updates out of it. This script measures both: it starts
``gradchain testnet up --nodes 2`` (digits on the testnet network: two
mining, training nodes, blocks every 2 s on average), funds a fresh key from
node 0, runs the example client of this directory through the bridge for
``--rounds`` rounds (``--one-per-block``: through the bridge as it was) and
counts, for each committed round, the blocks of its reveal round that carry
one of the participant's updates. It prints one JSON object.

    .venv/bin/python examples/flower/reveals_on_testnet.py [--rounds 3] [--one-per-block] [--dir /tmp/flower-tn]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import secrets
import shutil
import sys
import time

from consensus.tx import encode_tx
from node.cli.main import main as gradchain
from node.client import NodeClient, wait_for
from node.contributor import KeyStatus
from node.flower import FlowerBridge, RevealReport, find_task, load_client, run_config
from node.keystore_file import read_keystore
from node.testnet.launcher import free_port, load_manifest, testnet_password
from wallet import address_bytes, address_of, keypair_from_seed

EXAMPLE_DIR = pathlib.Path(__file__).resolve().parent


class OnePerBlock(FlowerBridge):
    """The bridge as it was: last round's next unrevealed update, once per new tip."""

    def _reveal(self, key: KeyStatus) -> list[RevealReport]:
        reveal = self.me.reveal(key, pooled_ok=True)
        if reveal is None or (key.round - 1, key.unrevealed[0]) in self._revealed:
            return []
        txid = self.node.submit_raw_tx(encode_tx(reveal))
        self._revealed.add((key.round - 1, key.unrevealed[0]))
        return [RevealReport(key.round - 1, key.unrevealed[0], len(self.me.plans[key.round - 1]), key.height, txid)]


def landed(node: NodeClient, address: str, round_: int, width: int) -> int:
    """Blocks of ``round_``'s reveal round (the next one) that carry an update of ``address`` from ``round_``."""
    count = 0
    for height in range((round_ + 1) * width + 1, (round_ + 2) * width + 1):
        txs = node.block(height)["txs"]
        count += any(t["type"] == "update" and t["from"] == address and t["round"] == round_ for t in txs)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-per-block", action="store_true", help="reveal as the bridge did before")
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("/tmp/flower-tn"))
    args = parser.parse_args()
    testnet = args.dir.resolve()
    shutil.rmtree(testnet, ignore_errors=True)
    assert gradchain(["testnet", "up", "--dir", str(testnet), "--nodes", "2", "--detach",
                      "--base-port", str(free_port(22_000))]) == 0
    try:
        node = NodeClient(load_manifest(testnet)[0].api, timeout=30)
        wait_for("node 0 to answer", node.status)
        funder = read_keystore(testnet / "node0" / "wallet.json", testnet_password(testnet))
        me = keypair_from_seed(secrets.token_bytes(32))
        address = address_of(me.public)
        task_id, task = find_task(node, None)
        need = task.bond_amount
        wait_for("node 0 to mine a bond's worth",
                 lambda: int(node.account(address_of(funder.public))["balance"]) >= need)
        node.send(funder, address_bytes(me.public), need)
        client = load_client("flower_digits.client_app:client_fn", app_dir=EXAMPLE_DIR,
                             node_config={"partition-id": 1, "num-partitions": 4}, run_config=run_config(task))
        kind = OnePerBlock if args.one_per_block else FlowerBridge
        bridge = kind(client, node, me, task, task_id=task_id)
        started = time.monotonic()
        reports = bridge.run(rounds=args.rounds)
        width = task.round_blocks
        wait_for("the last reveal round to end",
                 lambda: int(node.status()["height"]) >= (max(r.round for r in reports) + 2) * width)
        per_round = {r.round: landed(node, address, r.round, width) for r in reports if r.txid is not None}
    finally:
        gradchain(["testnet", "down", "--dir", str(testnet)])
    print(json.dumps({
        "bridge": "one reveal per block" if args.one_per_block else "pooled reveals",
        "rounds": args.rounds, "updates_per_round": width,
        "landed_in_reveal_round": per_round,
        "landed": sum(per_round.values()), "of": width * len(per_round),
        "minutes": round((time.monotonic() - started) / 60, 1),
    }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
