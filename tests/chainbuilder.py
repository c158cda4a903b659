"""Build small regtest chains in memory for tests: fixed keys, fixed times.

``ChainBuilder`` keeps the states of one branch and mines blocks on top of
any of them, so a test can build forks, valid blocks and blocks that break
exactly one rule (``tamper`` re-commits the header so only the intended rule
fails).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from consensus import header as header_codec
from consensus.block import Block, commitment
from consensus.genesis import GENESIS_TIME, chain_params_for, make_genesis
from consensus.hashing import search_nonce
from consensus.merkle import merkle_root
from consensus.params import REGTEST, ChainParams
from consensus.pow import bits_to_target
from consensus.state import State
from consensus.template import build_block
from consensus.transition import BlockContext, apply_block
from consensus.tx import GradientUpdate, Transfer, Tx, encode_tx, sign_tx, txid
from ml.codec import encode_update
from ml.tasks import TaskSpec, builtin_task
from wallet import KeyPair, address_bytes, keypair_from_seed

BLOCK_SPACING_S = 5


def key(i: int) -> KeyPair:
    """Deterministic test key number ``i``."""
    return keypair_from_seed(hashlib.sha256(b"gradchain-test-key-%d" % i).digest())


def mine(block: Block) -> Block:
    """Find a nonce for ``block`` (regtest: a few tries)."""
    raw = header_codec.encode(block.header)
    nonce = search_nonce(raw, bits_to_target(block.header.bits), 0, 1 << 20, threads=1)
    assert nonce is not None, "regtest block not found in 2**20 nonces"
    return dataclasses.replace(block, header=block.header.with_nonce(nonce))


def recommit(block: Block, txs: Sequence[Tx], *, state_root: bytes | None = None, mined: bool = True) -> Block:
    """``block`` with ``txs`` (and optionally another state root) and a matching header."""
    state_root = block.state_root if state_root is None else state_root
    tx_root = merkle_root([txid(encode_tx(tx)) for tx in txs])
    header = dataclasses.replace(block.header, root=commitment(tx_root, state_root), nonce=0)
    rebuilt = Block.build(header, state_root, list(txs))
    return mine(rebuilt) if mined else rebuilt


class ChainBuilder:
    """A regtest chain kept in memory: ``states[h]`` and ``blocks[h]`` on one branch."""

    def __init__(self, task: TaskSpec | None = None, params: ChainParams = REGTEST) -> None:
        self.task = task or builtin_task("digits")
        self.params = chain_params_for(params, self.task)
        genesis, state = make_genesis(self.params, self.task)
        self.blocks: list[Block] = [genesis]
        self.states: list[State] = [state]
        self.miner = key(0)

    @property
    def tip(self) -> Block:
        return self.blocks[-1]

    @property
    def state(self) -> State:
        return self.states[-1]

    def context(self, height: int | None = None) -> BlockContext:
        height = len(self.blocks) if height is None else height
        lo = max(0, height - self.task.staleness_window)
        hashes = {h: self.blocks[h].hash for h in range(lo, height)}
        return BlockContext(self.params.chain_id, self.task, hashes)

    def fork(self, height: int) -> ChainBuilder:
        """A copy of this builder cut back to ``height``."""
        other = ChainBuilder.__new__(ChainBuilder)
        other.task, other.params, other.miner = self.task, self.params, self.miner
        other.blocks = self.blocks[: height + 1]
        other.states = self.states[: height + 1]
        return other

    def next_time(self) -> int:
        return self.tip.header.time + BLOCK_SPACING_S if len(self.blocks) > 1 else GENESIS_TIME + BLOCK_SPACING_S

    def template(self, txs: Sequence[Tx] = (), *, miner: KeyPair | None = None, time: int | None = None,
                 extra: bytes = b"") -> Block:
        """A valid, mined next block with ``txs``, not yet added."""
        block, _ = build_block(
            self.state,
            self.tip.hash,
            list(txs),
            self.context(),
            miner=address_bytes((miner or self.miner).public),
            time=self.next_time() if time is None else time,
            bits=self.params.genesis_bits,
            extra=extra,
        )
        return mine(block)

    def add(self, block: Block) -> State:
        """Validate ``block`` on the tip and append it."""
        state, _ = apply_block(self.state, block, self.context())
        self.blocks.append(block)
        self.states.append(state)
        return state

    def extend(self, n: int, txs_for: object = None, *, extra: bytes = b"") -> None:
        for _ in range(n):
            self.add(self.template(extra=extra))

    # -- transactions --------------------------------------------------------------------
    def nonce_of(self, kp: KeyPair) -> int:
        return self.state.account(address_bytes(kp.public)).nonce

    def transfer(self, sender: KeyPair, to: KeyPair, amount: int, fee: int = 0, nonce: int | None = None) -> Transfer:
        tx = Transfer(sender.public, self.nonce_of(sender) if nonce is None else nonce,
                      address_bytes(to.public), amount, fee)
        signed = sign_tx(tx, sender, self.params.chain_id)
        assert isinstance(signed, Transfer)
        return signed

    def update(self, sender: KeyPair, vector: np.ndarray | None = None, *, base_height: int | None = None,
               fee: int = 0, nonce: int | None = None, seed: int = 0, kind: str = "f32") -> GradientUpdate:
        if vector is None:
            rng = np.random.default_rng(seed)
            vector = (rng.standard_normal(self.task.param_count) * 0.01).astype(np.float32)
        base = len(self.blocks) - 1 if base_height is None else base_height
        tx = GradientUpdate(sender.public, self.nonce_of(sender) if nonce is None else nonce, fee, base,
                            self.blocks[base].hash, encode_update(vector, kind))
        signed = sign_tx(tx, sender, self.params.chain_id)
        assert isinstance(signed, GradientUpdate)
        return signed
