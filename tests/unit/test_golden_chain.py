"""Golden vectors: a fixed regtest chain whose hashes and state roots are checked in.

The chain is built from fixed keys (``key(i)``), fixed times and update
vectors derived from SHA-256 (``det_vector``) and from the task's own
fixed-order validation loss (:func:`descent`), on the built-in ``digits``
task (rounds of 8, bonds, the round gate): transfers with fees, five bonds
(one paying a fee), an unbond, a second miner, one round of commitments
(one of them a clone of another sender's update) and the next round of
reveals (4, 3 and 2 per block: even and odd medians, a zero vote), whose
last block moves the model through the gate and pays the counted
contributors. Any change to encoding, hashing, the Merkle tree, the state
root, the aggregation or vote arithmetic, the gate or the payouts changes a
hash below and fails this test -- which is the point: consensus changes must
be deliberate.

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

import numpy as np
import pytest

from consensus.block import decode_block
from consensus.genesis import GENESIS_TIME
from consensus.header import hash_hex
from consensus.params import REGTEST
from consensus.state import array_digest
from consensus.tx import Coinbase, Tx
from ml.gate import validation_loss
from node.chainstate import ChainState
from tests.chainbuilder import BLOCK_SPACING_S, ChainBuilder, det_vector, key
from wallet import address_bytes

VECTORS_PATH = pathlib.Path(__file__).resolve().parent.parent / "vectors" / "chain.json"
WRITE_ENV = "GRADCHAIN_WRITE_VECTORS"
TASK_NAME = "digits"
TRANSFER_AMOUNT = 1_000_000
TRANSFER_FEE = 10
BOND_FEE = 5
SECOND_MINER = 5  # key index of the miner of block 5
FD_PROBE = 1e-3  # central-difference probe of the validation loss, per parameter
DESCENT_STEP = 0.01  # per coordinate: norm ~0.25, a sure step down the loss at the start
NOISE_SCALE = 0.002  # per-update noise around the descent direction
NOW = GENESIS_TIME + 10**6


def _time(height: int) -> int:
    return GENESIS_TIME + BLOCK_SPACING_S * height


def descent(cb: ChainBuilder, step: float) -> np.ndarray:
    """``-step * sign`` of the validation loss's central difference in each parameter.

    Built from :func:`ml.gate.validation_loss` alone (fixed-order, the same bits
    everywhere), so the golden updates move the model down the loss -- and
    through the round gate -- on every machine.
    """
    gate_set = cb.rules.gate_set
    assert gate_set is not None
    params = cb.state.params
    signs = np.zeros(params.shape[0], dtype=np.float32)
    probe = np.float32(FD_PROBE)
    for i in range(params.shape[0]):
        up, down = params.copy(), params.copy()
        up[i] += probe
        down[i] -= probe
        delta = validation_loss(cb.task, up, gate_set.X, gate_set.y) - validation_loss(
            cb.task, down, gate_set.X, gate_set.y
        )
        signs[i] = np.float32(1.0) if delta > 0 else (np.float32(-1.0) if delta < 0 else np.float32(0.0))
    return (np.float32(step) * signs).astype(np.float32)


def build_golden_chain() -> ChainBuilder:
    """The fixed chain; every input is written out here, nothing comes from a clock or RNG."""
    cb = ChainBuilder()
    miner = key(0)
    width = cb.task.round_blocks
    bond = cb.task.bond_amount
    contributors = [key(i) for i in (1, 2, 3, 4)]
    leaver = key(6)

    def add(txs: list[Tx], miner_index: int = 0) -> None:
        height = len(cb.blocks)
        cb.add(cb.template(txs, miner=key(miner_index), time=_time(height)))

    add([])  # 1, 2: the miner's first rewards
    add([])
    funded = [*contributors, leaver]
    add([  # 3: bonds' worth to five keys, the last with a fee and extra
        cb.transfer(miner, k, bond + (TRANSFER_AMOUNT if k is contributors[3] else 0), nonce=i,
                    fee=TRANSFER_FEE if k is contributors[3] else 0)
        for i, k in enumerate(funded)
    ])
    add([cb.bond(k, fee=BOND_FEE if k is contributors[3] else 0) for k in funded])  # 4: five bonds
    while len(cb.blocks) <= width:  # 5 .. 8: bonds mature; 5: another miner
        add([], SECOND_MINER if len(cb.blocks) == 5 else 0)
    base = descent(cb, DESCENT_STEP)
    plans = {
        k: [(base + det_vector(100 * i + j, base.size, NOISE_SCALE)).astype(np.float32) for j in range(width)]
        for i, k in enumerate(contributors)
    }
    plans[contributors[3]][0] = plans[contributors[0]][0]  # a clone of another sender's update
    add([cb.commit(k, plans[k]) for k in contributors])  # 9: round 1 opens with four commitments
    while len(cb.blocks) <= 2 * width:  # 10 .. 16; 12: a transfer with a fee and an unbond
        add([cb.transfer(miner, key(5), TRANSFER_AMOUNT, nonce=len(funded), fee=TRANSFER_FEE), cb.unbond(leaver)]
            if len(cb.blocks) == 12 else [])
    revealing = {0: 4, 1: 4, 2: 3, 3: 2, 4: 4, 5: 4, 6: 3, 7: 4}  # updates per block of round 2
    for position in range(width):  # 17 .. 24: the reveals; 24 closes the round
        add([cb.update(k, index=position) for k in contributors[: revealing[position]]])
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
    width = cb.task.round_blocks
    versions = [s.model_version for s in cb.states]
    assert versions == [0] * (3 * width) + [1]  # one step, at the last block, through the gate
    last = cb.tip.txs[0]
    assert isinstance(last, Coinbase)
    paid = [p.address for p in last.payouts[1:]]
    clone_sender = address_bytes(key(4).public)
    # every counted reveal is paid; the clone (key 4's first) is not; the block of two voted zero
    assert len(paid) == 4 + 4 + 3 + 4 + 4 + 3 + 4 - 1
    assert paid.count(clone_sender) == 4
    assert cb.state.task.unbonding[address_bytes(key(6).public)].amount == cb.task.bond_amount
    assert cb.state.task.stakes[clone_sender].amount == cb.task.bond_amount
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
