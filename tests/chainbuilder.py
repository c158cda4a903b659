"""Build small regtest chains in memory for tests: fixed keys, fixed times.

``ChainBuilder`` keeps the states of one branch and mines blocks on top of
any of them, so a test can build forks, valid blocks and blocks that break
exactly one rule (``recommit`` re-commits the header so only the intended rule
fails). It judges blocks with the node's own glue: the rules come from
:func:`node.chainstate.chain_rules`, the branch is a
:class:`consensus.view.BranchView`, and every block goes through
:func:`consensus.transition.state_transition`, header rules included.

Contributions follow the chain's rounds (:mod:`consensus.rounds`):
:meth:`ChainBuilder.join` funds, bonds and matures keys; :meth:`ChainBuilder.commit`
signs a round's updates and returns their commitment; :meth:`ChainBuilder.update`
then hands out the reveals, one at a time; :meth:`ChainBuilder.contribute`
does all of it for one vote per key. :func:`quick_task` is a task whose
rounds are one block and whose bonds are free and mature at once, for tests
about a block's rule rather than the rounds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from consensus import header as header_codec
from consensus.block import Block, commitment
from consensus.contracts import deploy_burn, open_task_count
from consensus.errors import BlockRejected, Reject
from consensus.genesis import GENESIS_TIME, make_genesis
from consensus.hashing import search_nonce
from consensus.merkle import merkle_root
from consensus.params import REGTEST, ChainParams
from consensus.pow import bits_to_target
from consensus.rounds import is_mature, round_of, round_start
from consensus.state import State
from consensus.template import build_block
from consensus.transition import state_transition
from consensus.tx import (
    Bond,
    Coinbase,
    Commit,
    Deploy,
    GradientUpdate,
    Payout,
    SignedTx,
    Transfer,
    Tx,
    Unbond,
    commitment_digest,
    encode_tx,
    sign_tx,
    txid,
)
from consensus.view import BranchView
from ml.codec import EncodedUpdate, encode_update
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


def quick_task(name: str = "digits", **changes: object) -> TaskSpec:
    """A built-in task whose rounds are one block, with free bonds that mature at once and no gate.

    Then a vote is a round: updates committed in block ``h`` are revealed in
    block ``h + 1``, whose vote is the round's step. Tests about a block's
    rule use it; ``changes`` override any field (``f=0``, ``round_blocks=4``).
    """
    base = dict(
        round_blocks=1, bond_amount=0, bond_maturity=0, unbond_delay=2,
        gate_examples=0, gate_tolerance=0.0, gate_data_sha256="", gate_scope="update",
    )
    return dataclasses.replace(builtin_task(name), **{**base, **changes})  # type: ignore[arg-type]


def solo_task(name: str = "digits") -> TaskSpec:
    """:func:`quick_task` with f=0: every vote moves the model, however few updates it has.

    The built-in tasks keep f=1, so a block needs 2f+1 = 3 updates before the
    median moves the model; tests about other rules use this task so a single
    update still trains.
    """
    return quick_task(name, f=0)


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
        self.plans: dict[tuple[int, bytes], list[GradientUpdate]] = {}  # committed reveals, by (round, sender)

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
        other.plans = dict(self.plans)
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
            fees = sum(tx.fee for tx in txs if isinstance(tx, Transfer | Bond | Unbond | Deploy))
            payouts = [Payout(miner_address, self.task.block_reward + fees)]
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
        return _signed(tx, sender, self.rules.tag)

    def bond(self, sender: KeyPair, *, fee: int = 0, nonce: int | None = None, task_id: bytes | None = None) -> Bond:
        tid = self.rules.task_id if task_id is None else task_id
        tx = Bond(sender.public, self.nonce_of(sender) if nonce is None else nonce, fee, tid)
        return _signed(tx, sender, self.rules.tag)

    def unbond(self, sender: KeyPair, *, fee: int = 0, nonce: int | None = None, task_id: bytes | None = None) -> Unbond:
        tid = self.rules.task_id if task_id is None else task_id
        tx = Unbond(sender.public, self.nonce_of(sender) if nonce is None else nonce, fee, tid)
        return _signed(tx, sender, self.rules.tag)

    def deploy(self, sender: KeyPair, spec: TaskSpec | dict[str, Any], evalset: bytes, bounty: int, *,
               fee: int | None = None, nonce: int | None = None) -> Deploy:
        """A signed deploy of ``spec`` (a spec, or the dict to carry as is) with ``evalset``'s rows;
        its fee is by default the burn the tip's open tasks ask (:func:`consensus.contracts.deploy_burn`)."""
        task = spec.to_dict() if isinstance(spec, TaskSpec) else spec
        if fee is None:
            fee = deploy_burn(open_task_count(self.state))
        tx = Deploy(sender.public, self.nonce_of(sender) if nonce is None else nonce, fee, bounty, task, evalset)
        return _signed(tx, sender, self.rules.tag)

    # -- rounds ----------------------------------------------------------------------------
    @property
    def next_height(self) -> int:
        return len(self.blocks)

    @property
    def round(self) -> int:
        """The round of the next block."""
        return round_of(self.next_height, self.task.round_blocks)

    def join(self, *keys: KeyPair) -> None:
        """Fund (from the miner's rewards), bond and mature ``keys``: they may commit in the next block."""
        need = self.task.bond_amount
        if need:
            while self.state.account(addr(self.miner)).balance < need * len(keys):
                self.extend(1)
            nonce = self.nonce_of(self.miner)
            self.add(self.template([self.transfer(self.miner, k, need, nonce=nonce + i) for i, k in enumerate(keys)]))
        self.add(self.template([self.bond(k) for k in keys]))
        while not all(
            is_mature(self.state.task.stakes.get(addr(k)), self.next_height, self.task.bond_maturity) for k in keys
        ):
            self.extend(1)

    def commit(self, sender: KeyPair, vectors: Sequence[np.ndarray | EncodedUpdate] | None = None, *,
               seeds: Sequence[int] = (0,), round_: int | None = None, base_hash: bytes | None = None,
               kind: str = "f32", task_id: bytes | None = None, digests: Sequence[bytes] | None = None) -> Commit:
        """A commitment of ``sender`` in the next block's round to ``vectors`` (default: one
        :func:`det_vector` per seed; an ``EncodedUpdate`` is committed as is); their reveals
        come from :meth:`update`."""
        r = self.round if round_ is None else round_
        tid = self.rules.task_id if task_id is None else task_id
        if vectors is None:
            vectors = [det_vector(seed, self.task.param_count) for seed in seeds]
        encoded = [v if isinstance(v, EncodedUpdate) else encode_update(v, kind) for v in vectors]
        reveals = [
            _signed(GradientUpdate(sender.public, tid, r, e), sender, self.rules.tag) for e in encoded
        ]
        self.plans[(r, addr(sender))] = reveals
        if digests is None:
            digests = [commitment_digest(addr(sender), tid, r, u.update) for u in reveals]
        if base_hash is None:
            start = round_start(r, self.task.round_blocks)
            base_hash = self.blocks[start].hash if start < len(self.blocks) else bytes(32)
        return _signed(Commit(sender.public, tid, r, base_hash, tuple(digests)), sender, self.rules.tag)

    def update(self, sender: KeyPair, vector: np.ndarray | None = None, *, index: int = 0,
               round_: int | None = None, seed: int = 0, kind: str = "f32", task_id: bytes | None = None) -> GradientUpdate:
        """The reveal of ``sender``'s committed update number ``index`` (round: the previous one);
        with ``vector``, a reveal of that vector instead (committed or not)."""
        r = self.round - 1 if round_ is None else round_
        tid = self.rules.task_id if task_id is None else task_id
        plan = self.plans.get((r, addr(sender)))
        if vector is None and plan is not None:
            return plan[index]
        if vector is None:
            vector = det_vector(seed, self.task.param_count)
        return _signed(GradientUpdate(sender.public, tid, r, encode_update(vector, kind)), sender, self.rules.tag)

    def contribute(self, updates: dict[KeyPair, np.ndarray], extra: Sequence[Tx] = (), *,
                   miner: KeyPair | None = None) -> Block:
        """Commit one update per key and mine until the next round, then add the block that reveals
        them (with ``extra`` txs); returns that block. The keys must be mature (:meth:`join`)."""
        self.add(self.template([self.commit(k, [v]) for k, v in updates.items()]))
        while (self.next_height - 1) % self.task.round_blocks:
            self.extend(1)
        block = self.template([*[self.update(k) for k in updates], *extra], miner=miner)
        self.add(block)
        return block


_T = TypeVar("_T", bound=SignedTx)


def _signed(tx: _T, sender: KeyPair, tag: bytes) -> _T:
    signed = sign_tx(tx, sender, tag)
    assert type(signed) is type(tx)
    return signed  # type: ignore[return-value]


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
