"""Golden vectors: a fixed regtest chain whose hashes and state roots are checked in.

The chain is built from fixed keys (``key(i)``), fixed times and update
vectors derived from SHA-256 (``det_vector``), on the built-in ``digits``
task: six blocks with gradient updates (3 and 4 per block, so odd and even
medians), a transfer with a fee, an update paying a fee and a second miner.
Any change to encoding, hashing, the Merkle tree, the state root, the
aggregation arithmetic or the payouts changes a hash below and fails this
test -- which is the point: consensus changes must be deliberate.

To regenerate tests/vectors/chain.json after such a deliberate change::

    python -m tests.unit.test_golden_chain --write
    # or: GRADCHAIN_WRITE_VECTORS=1 python -m pytest tests/unit/test_golden_chain.py

and say why in the commit message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
from typing import Any

import pytest

from consensus.block import decode_block
from consensus.genesis import GENESIS_TIME
from consensus.header import hash_hex
from consensus.params import REGTEST
from consensus.state import array_digest
from consensus.tx import Coinbase, Tx
from node.chainstate import ChainState
from tests.chainbuilder import BLOCK_SPACING_S, ChainBuilder, key
from wallet import address_bytes

VECTORS_PATH = pathlib.Path(__file__).resolve().parent.parent / "vectors" / "chain.json"
WRITE_ENV = "GRADCHAIN_WRITE_VECTORS"
TASK_NAME = "digits"
TRANSFER_AMOUNT = 1_000_000
TRANSFER_FEE = 10
UPDATE_FEE = 5
SECOND_MINER = 5  # key index of the miner of block 5
NOW = GENESIS_TIME + 10**6


def _time(height: int) -> int:
    return GENESIS_TIME + BLOCK_SPACING_S * height


def build_golden_chain() -> ChainBuilder:
    """The fixed chain; every input is written out here, nothing comes from a clock or RNG."""
    cb = ChainBuilder()
    miner = key(0)

    def add(txs: list[Tx], miner_index: int = 0) -> None:
        height = len(cb.blocks)
        cb.add(cb.template(txs, miner=key(miner_index), time=_time(height)))

    add([])  # 1: the miner's first reward
    add([cb.update(key(i), seed=100 + i) for i in (1, 2, 3)])  # 2: three updates, odd median
    add([cb.transfer(miner, key(4), TRANSFER_AMOUNT, fee=TRANSFER_FEE)])  # 3: a transfer with a fee
    add(  # 4: an update paying a fee, one based two blocks back, and a third
        [
            cb.update(key(4), seed=104, fee=UPDATE_FEE),
            cb.update(key(1), seed=201, base_height=2),
            cb.update(key(2), seed=202),
        ]
    )
    add([], SECOND_MINER)  # 5: another miner, no transactions
    add([cb.update(key(i), seed=300 + i) for i in (1, 2, 3, 4)])  # 6: four updates, even median
    return cb


def vectors_of(cb: ChainBuilder) -> dict[str, Any]:
    """What is checked in: per block, hashes and roots (hex) and the model's digest."""
    blocks = []
    for height, (block, state) in enumerate(zip(cb.blocks, cb.states, strict=True)):
        blocks.append(
            {
                "height": height,
                "hash": hash_hex(block.hash),
                "state_root": state.root.hex(),
                "tx_root": block.tx_root.hex(),
                "block_sha256": hashlib.sha256(block.encode()).hexdigest(),
                "params_sha256": array_digest(state.params).hex(),
                "model_version": state.model_version,
                "txs": len(block.txs),
            }
        )
    return {
        "about": "tests/unit/test_golden_chain.py builds this chain; regenerate only on purpose",
        "network": REGTEST.name,
        "task": TASK_NAME,
        "blocks": blocks,
    }


def write_vectors(path: pathlib.Path = VECTORS_PATH) -> dict[str, Any]:
    vectors = vectors_of(build_golden_chain())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(vectors, indent=2) + "\n")
    return vectors


def load_vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
    return loaded


def test_golden_chain_matches_the_checked_in_vectors() -> None:
    expected = load_vectors()
    actual = vectors_of(build_golden_chain())
    if os.environ.get(WRITE_ENV) == "1":
        # Compare first, then rewrite: a run that rewrote the file has checked nothing.
        changed = [w["height"] for w, g in zip(expected["blocks"], actual["blocks"], strict=False) if w != g]
        write_vectors()
        pytest.skip(f"{WRITE_ENV}=1 rewrote {VECTORS_PATH.name} (blocks that changed: {changed or 'none'}); "
                    "run again without it to check the vectors")
    for want, got in zip(expected["blocks"], actual["blocks"], strict=True):
        assert got == want, f"block {want['height']} differs from tests/vectors/chain.json"
    assert actual == expected


def test_golden_chain_exercises_what_it_claims() -> None:
    """The recipe keeps its coverage: updates applied, a fee-paying transfer, two miners."""
    cb = build_golden_chain()
    versions = [s.model_version for s in cb.states]
    assert versions == [0, 0, 1, 1, 2, 2, 3]
    recipient = cb.state.account(address_bytes(key(4).public))
    # Received the transfer, paid one update fee, was paid for two accepted updates.
    assert recipient.balance == TRANSFER_AMOUNT - UPDATE_FEE + 2 * cb.task.contributor_reward
    assert recipient.nonce == 2
    miners = {tx.payouts[0].address for tx in (b.txs[0] for b in cb.blocks[1:]) if isinstance(tx, Coinbase)}
    assert len(miners) == 2


def test_a_node_fed_the_golden_chain_reaches_the_same_tip(tmp_path: pathlib.Path) -> None:
    cb = build_golden_chain()
    node = ChainState.create(tmp_path / "node", REGTEST.name, cb.task)
    for block in cb.blocks[1:]:
        node.accept_block(decode_block(block.encode()), NOW)
    assert hash_hex(node.tip.hash) == load_vectors()["blocks"][-1]["hash"]
    assert node.state.root.hex() == load_vectors()["blocks"][-1]["state_root"]
    node.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or regenerate tests/vectors/chain.json.")
    parser.add_argument("--write", action="store_true", help="rewrite the vectors from the current code")
    args = parser.parse_args(argv)
    if args.write:
        vectors = write_vectors()
        print(f"wrote {len(vectors['blocks'])} blocks to {VECTORS_PATH}")
        return 0
    same = vectors_of(build_golden_chain()) == load_vectors()
    print("vectors match" if same else "vectors DIFFER: run with --write only if the change is deliberate")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
