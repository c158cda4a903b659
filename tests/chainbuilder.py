"""Build small regtest chains in memory for tests: fixed keys, fixed times.

``ChainBuilder`` keeps the states of one branch and mines blocks on top of
any of them, so a test can build forks, valid blocks and blocks that break
exactly one rule (``recommit`` re-commits the header so only the intended rule
fails). It judges blocks with the node's own glue: the rules come from
:func:`node.chainstate.chain_rules`, the branch is a
:class:`consensus.view.BranchView`, and every block goes through
:func:`consensus.transition.state_transition`, header rules included.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from consensus import header as header_codec
from consensus.block import Block, commitment
from consensus.errors import BlockRejected, Reject
from consensus.genesis import GENESIS_TIME, make_genesis
from consensus.hashing import search_nonce
from consensus.merkle import merkle_root
from consensus.params import REGTEST, ChainParams
from consensus.pow import bits_to_target
from consensus.state import State
from consensus.template import build_block
from consensus.transition import state_transition
from consensus.tx import Coinbase, GradientUpdate, Payout, Transfer, Tx, encode_tx, sign_tx, txid
from consensus.view import BranchView
from ml.codec import encode_update
from ml.tasks import TaskSpec, builtin_task
from node.chainstate import chain_rules
from wallet import KeyPair, address_bytes, keypair_from_seed

BLOCK_SPACING_S = 5
DEFAULT_UPDATE_SCALE = 0.01  # an honest-looking delta: norm ~0.15 on digits, far below its bound
_U32_SPAN = 2.0**32


def det_vector(seed: int, size: int, scale: float = DEFAULT_UPDATE_SCALE) -> np.ndarray:
    """A float32 vector in ``[-scale/2, scale/2)`` derived from SHA-256 of ``seed``.

    Unlike numpy's Generator streams, which numpy may change between
    releases, these bits depend on nothing but SHA-256, so golden vectors
    built from them stay put.
    """
    stream = bytearray()
    counter = 0
    while len(stream) < 4 * size:
        stream += hashlib.sha256(b"gradchain-test-vector-%d-%d" % (seed, counter)).digest()
        counter += 1
    words = np.frombuffer(bytes(stream[: 4 * size]), dtype="<u4").astype(np.float64)
    return ((words / _U32_SPAN - 0.5) * scale).astype(np.float32)


def solo_task(name: str = "digits") -> TaskSpec:
    """A built-in task with f=0: every block's updates move the model, however few.

    The built-in tasks keep f=1, so a block needs 2f+1 = 3 updates before the
    median moves the model; tests about other rules use this task so a single
    update still trains.
    """
    return dataclasses.replace(builtin_task(name), f=0)


def key(i: int) -> KeyPair:
    """Deterministic test key number ``i``."""
    return keypair_from_seed(hashlib.sha256(b"gradchain-test-key-%d" % i).digest())


def addr(kp: KeyPair) -> bytes:
    """The 21-byte account address of ``kp``."""
    return address_bytes(kp.public)


def assert_same_state(a: State, b: State) -> None:
    """Equal bit for bit: root, accounts, parameter and aggregate bytes, version, height."""
    assert a.root == b.root
    assert a.height == b.height
    assert dict(a.accounts) == dict(b.accounts)
    assert a.params.tobytes() == b.params.tobytes()
    assert a.last_aggregate.tobytes() == b.last_aggregate.tobytes()
    assert a.model_version == b.model_version


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
        self.rules = chain_rules(params, task or builtin_task("digits"))
        self.task = self.rules.task
        self.params = self.rules.params
        genesis, state = make_genesis(self.params, self.task)
        self.blocks: list[Block] = [genesis]
        self.states: list[State] = [state]
        self.headers: dict[bytes, header_codec.Header] = {genesis.hash: genesis.header}  # every branch's
        self.miner = key(0)

    @property
    def tip(self) -> Block:
        return self.blocks[-1]

    @property
    def state(self) -> State:
        return self.states[-1]

    def view(self) -> BranchView:
        """This branch as the next block sees it: the rules and every block up to the tip."""
        return BranchView(self.rules, len(self.blocks) - 1, [b.hash for b in self.blocks], self.headers.__getitem__)

    def fork(self, height: int) -> ChainBuilder:
        """A copy of this builder cut back to ``height``."""
        other = ChainBuilder.__new__(ChainBuilder)
        other.rules, other.task, other.params, other.miner = self.rules, self.task, self.params, self.miner
        other.headers = self.headers
        other.blocks = self.blocks[: height + 1]
        other.states = self.states[: height + 1]
        return other

    def next_time(self) -> int:
        return self.tip.header.time + BLOCK_SPACING_S if len(self.blocks) > 1 else GENESIS_TIME + BLOCK_SPACING_S

    def template(self, txs: Sequence[Tx] = (), *, miner: KeyPair | None = None, time: int | None = None,
                 extra: bytes = b"") -> Block:
        """A valid, mined next block with ``txs``, not yet added."""
        block, _ = build_block(
            self.view(),
            self.state,
            list(txs),
            miner=address_bytes((miner or self.miner).public),
            time=self.next_time() if time is None else time,
            extra=extra,
        )
        return mine(block)

    def add(self, block: Block, now: int | None = None) -> State:
        """Validate ``block`` on the tip (at time ``now``, default the block's own) and append it."""
        state, _ = state_transition(self.view(), self.state, block, block.header.time if now is None else now)
        self.blocks.append(block)
        self.states.append(state)
        self.headers[block.hash] = block.header
        return state

    def extend(
        self, n: int, txs_for: Callable[[ChainBuilder], Sequence[Tx]] | None = None, *, extra: bytes = b""
    ) -> None:
        """Mine and add ``n`` blocks; ``txs_for(self)`` gives each one's transactions."""
        for _ in range(n):
            txs = txs_for(self) if txs_for is not None else ()
            self.add(self.template(txs, extra=extra))

    def forge(
        self,
        txs: Sequence[Tx],
        *,
        payouts: Sequence[Payout] | None = None,
        state_root: bytes | None = None,
        height: int | None = None,
        time: int | None = None,
        miner: KeyPair | None = None,
        coinbase: bool = True,
    ) -> Block:
        """A mined next block assembled by hand, without running the transactions.

        For blocks whose transactions ``build_block`` refuses (a replayed nonce,
        an overspend): the coinbase pays the miner the reward plus every fee and
        each update's sender the contributor reward, as if all were valid, and
        the state root defaults to the parent's. The rule under test fails
        before either is compared.
        """
        miner_address = address_bytes((miner or self.miner).public)
        if payouts is None:
            fees = sum(tx.fee for tx in txs if isinstance(tx, Transfer | GradientUpdate))
            payouts = [Payout(miner_address, self.task.block_reward + fees)]
            payouts += [
                Payout(tx.sender_address, self.task.contributor_reward)
                for tx in txs
                if isinstance(tx, GradientUpdate)
            ]
        cb = Coinbase(height=len(self.blocks) if height is None else height, payouts=tuple(payouts))
        all_txs: list[Tx] = [cb, *txs] if coinbase else list(txs)
        header = header_codec.Header(
            version=self.tip.header.version,
            prev=self.tip.hash,
            root=bytes(32),
            time=self.next_time() if time is None else time,
            bits=self.params.genesis_bits,
            nonce=0,
        )
        shell = Block.build(header, self.state.root, [])
        return recommit(shell, all_txs, state_root=self.state.root if state_root is None else state_root)

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
            vector = det_vector(seed, self.task.param_count)
        base = len(self.blocks) - 1 if base_height is None else base_height
        tx = GradientUpdate(sender.public, self.nonce_of(sender) if nonce is None else nonce, fee, base,
                            self.blocks[base].hash, encode_update(vector, kind))
        signed = sign_tx(tx, sender, self.params.chain_id)
        assert isinstance(signed, GradientUpdate)
        return signed


# -- rule coverage ---------------------------------------------------------------------
COVERED: dict[Reject, list[str]] = {}
"""Reject codes that a test in this suite provokes, with the tests that do."""

_TestFn = TypeVar("_TestFn", bound=Callable[..., None])


def covers(*codes: Reject) -> Callable[[_TestFn], _TestFn]:
    """Mark a test as the one that provokes ``codes`` (see ``test_every_reject_code_is_tested``)."""

    def mark(fn: _TestFn) -> _TestFn:
        for code in codes:
            COVERED.setdefault(code, []).append(f"{fn.__module__}.{fn.__name__}")
        return fn

    return mark


def rejection(fn: Callable[[], object]) -> Reject:
    """The code ``fn()`` is rejected with; fails the test if it is accepted."""
    try:
        fn()
    except BlockRejected as exc:
        return exc.code
    raise AssertionError("expected BlockRejected, the call succeeded")
