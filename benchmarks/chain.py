"""Chain replay speed: `chain verify` and block connection, in blocks per second.

A regtest chain on the digits task is built in memory (``tests.chainbuilder``):
four fixed keys bond, then commit a round's worth of updates in the first
block of every round, and every block of the next round reveals one update of
each (four per block, the task's limit; the round's last block aggregates the
votes, checks the round gate and pays); now and then a transfer. The chain is then stored in a temporary datadir
through :meth:`ChainState.accept_block` (real SQLite writes: body, index,
undo, state), which is the connect figure, and replayed with
:func:`node.verify.verify_chain` (read each body back, decode strictly,
check the header, run the full state transition), which is the verify figure.

One extra replay runs with explicit timers wrapped around the entry point
of each phase (signature checks, update checks, aggregation, state root,
storage read and decode, header checks; they do not nest), and "other" is
the rest of the replay. The wrappers cost about a microsecond per call, far
less than cProfile, which taxes every Python call and made the Python-heavy
phases look several times larger than they are. The blocks/s figures come
from the untimed runs.

Floors, measured in the same run on the same chain: the work a replay
cannot skip, done alone and nothing else -- every signature checked once
(``check_signature``), and every body read back and decoded
(``get_raw_block`` + ``decode_block``). Connecting cannot skip the
signatures either, nor one durable write of each body (a SQLite insert and
commit with the node's pragmas). Each figure's ratio is floor time / its
time: the share of the work that is irreducible, 1 when nothing else costs.
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import consensus.state
import consensus.transition
import node.verify
from benchmarks.common import Headline, best, write_result
from consensus.block import decode_block
from consensus.state import Account, Accounts, accounts_digest
from consensus.tx import GradientUpdate, Transfer, Tx, check_signature
from ml.tasks import builtin_task
from node.chainstate import ChainState
from node.storage import Storage
from node.verify import verify_chain
from tests.chainbuilder import ChainBuilder, key

TASK = "digits"
NETWORK = "regtest"
UPDATERS = 4  # one update per key per block: the digits task's max_updates_per_block
FIRST_UPDATER_KEY = 1  # key(0) mines; keys 1..4 send updates
TRANSFER_EVERY = 10  # blocks between transfers from the miner (after it has a reward)
TRANSFER_TO_KEY = 9
TRANSFER_AMOUNT = 1_000
TRANSFER_FEE = 10
UPDATE_SCALE = 0.01  # honest-sized deltas: norm ~0.15, far below digits' bound of 10
VECTOR_SEED = 20260101
ACCOUNT_COUNTS = (10, 1_000, 10_000)  # state sizes for the state-root scaling figure
CHANGED_PER_BLOCK = 5  # accounts a round's last block touches (4 updaters and the miner) plus one new
ADDRESS_BYTES = 21
VERIFY_FLOOR = "signature checks + read and decode of every block, alone"
CONNECT_FLOOR = "signature checks + one durable SQLite write of every body, alone"


@dataclass(frozen=True)
class Sizes:
    """Chain length and timed replays: small in quick mode so the run takes seconds."""

    blocks: int
    verify_repeats: int
    scaling_blocks: int


FULL = Sizes(blocks=300, verify_repeats=3, scaling_blocks=50)
QUICK = Sizes(blocks=30, verify_repeats=2, scaling_blocks=5)

# Phase -> (owner, attribute) of the functions timed for it. Each is looked up
# through its module (or class) at call time, so wrapping the attribute times
# every call the replay makes. None of them calls another.
PHASES: dict[str, tuple[tuple[Any, str], ...]] = {
    "signatures": ((consensus.transition, "check_signature"),),
    "update_checks": ((consensus.transition, "check_update"), (consensus.transition, "check_reveal")),
    "aggregation": ((consensus.transition, "aggregate_updates"),),
    "state_root": ((consensus.state, "compute_state_root"),),
    "storage_read_decode": ((ChainState, "get_raw_block"), (node.verify, "decode_block")),
    "header_checks": ((consensus.transition, "validate_header"),),
}


def build_chain(n_blocks: int) -> ChainBuilder:
    """About ``n_blocks`` blocks, nearly all with four revealed updates (and a transfer every few)."""
    builder = ChainBuilder(builtin_task(TASK))
    rng = np.random.default_rng(VECTOR_SEED)
    size = builder.task.param_count
    width = builder.task.round_blocks
    updaters = [key(FIRST_UPDATER_KEY + i) for i in range(UPDATERS)]
    recipient = key(TRANSFER_TO_KEY)
    builder.join(*updaters)
    first = builder.round

    def txs_for(b: ChainBuilder) -> list[Tx]:
        txs: list[Tx] = []
        height = len(b.blocks)
        if height > 1 and height % TRANSFER_EVERY == 0:
            txs.append(b.transfer(b.miner, recipient, TRANSFER_AMOUNT, fee=TRANSFER_FEE))
        position = (height - 1) % width
        if position == 0:
            for kp in updaters:
                vectors = [((rng.random(size) - 0.5) * UPDATE_SCALE).astype(np.float32) for _ in range(width)]
                txs.append(b.commit(kp, vectors))
        if b.round > first:
            txs += [b.update(kp, index=position) for kp in updaters]
        return txs

    while (builder.next_height - 1) % width:
        builder.extend(1)
    first = builder.round
    builder.extend(max(0, n_blocks - len(builder.blocks) + 1), txs_for)
    return builder


def store_chain(builder: ChainBuilder, datadir: pathlib.Path) -> tuple[ChainState, float]:
    """A datadir holding ``builder``'s chain, and the seconds ``accept_block`` took in all."""
    chain = ChainState.create(datadir, NETWORK, builder.task)
    if chain.genesis_hash != builder.blocks[0].hash:
        raise RuntimeError("the builder's genesis is not the datadir's: params differ")
    seconds = 0.0
    for block in builder.blocks[1:]:
        start = time.perf_counter()
        outcome = chain.accept_block(block, now=block.header.time)
        seconds += time.perf_counter() - start
        if outcome.status != "connected":
            raise RuntimeError(f"block {outcome.height} was {outcome.status}, expected connected")
    return chain, seconds


def timed_verify(chain: ChainState) -> tuple[float, dict[str, float]]:
    report = verify_chain(chain)
    if report.error or report.blocks != chain.height:
        raise RuntimeError(f"verify failed at {report.failed_height}: {report.error}")
    return report.seconds, report.phases


def _timed(fn: Callable[..., Any], phase: str, totals: dict[str, float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[phase] += time.perf_counter() - start

    return timed


@contextlib.contextmanager
def phase_timers(totals: dict[str, float]) -> Iterator[None]:
    """Wrap each phase's functions with a timer adding to ``totals``; unwrap on exit."""
    originals: list[tuple[Any, str, Any]] = []
    try:
        for phase, entries in PHASES.items():
            totals.setdefault(phase, 0.0)
            for owner, name in entries:
                fn = owner.__dict__[name]
                originals.append((owner, name, fn))
                setattr(owner, name, _timed(fn, phase, totals))
        yield
    finally:
        for owner, name, fn in reversed(originals):
            setattr(owner, name, fn)


def phase_split(chain: ChainState) -> dict[str, float]:
    """Seconds per phase of one timed replay (plus ``other`` and ``total``)."""
    split: dict[str, float] = {}
    with phase_timers(split):
        total, _ = timed_verify(chain)
    split["other"] = max(0.0, total - sum(split.values()))
    split["total"] = total
    return split


def _address(i: int) -> bytes:
    return hashlib.sha256(b"bench-account-%d" % i).digest()[:ADDRESS_BYTES]


def accounts_scaling(counts: tuple[int, ...], blocks: int) -> dict[str, dict[str, float]]:
    """Microseconds per block to apply a block's account changes and hash all accounts.

    The replay above has a handful of accounts; a long-lived chain has
    thousands, and every block's state root covers all of them. ``plain``
    is the dict way (copy, sort, encode each account), ``incremental`` the
    :class:`Accounts` map the state keeps; both give the same digest.
    """
    out: dict[str, dict[str, float]] = {}
    for count in counts:
        base = {_address(i): Account(i + 1, i) for i in range(count)}
        changes = [
            {_address((b * CHANGED_PER_BLOCK + j) % count): Account(b + 2, b) for j in range(CHANGED_PER_BLOCK)}
            | {_address(count + b): Account(1, 0)}
            for b in range(blocks)
        ]
        plain: dict[bytes, Account] = dict(base)
        start = time.perf_counter()
        for delta in changes:
            plain = {**plain, **delta}
            plain_digest = accounts_digest(plain)
        plain_s = time.perf_counter() - start
        fast = Accounts(base)
        start = time.perf_counter()
        for delta in changes:
            fast = fast.updated(delta)
            fast_digest = fast.digest()
        fast_s = time.perf_counter() - start
        if plain_digest != fast_digest:
            raise RuntimeError("the incremental accounts digest differs from the plain one")
        out[str(count)] = {"plain_us": plain_s / blocks * 1e6, "incremental_us": fast_s / blocks * 1e6}
    return out


def unavoidable_work(chain: ChainState, builder: ChainBuilder, scratch: pathlib.Path) -> dict[str, float]:
    """Seconds of each part of a replay or a connect that cannot be skipped, each done alone."""
    blocks = builder.blocks[1:]
    start = time.perf_counter()
    for height in range(1, chain.height + 1):
        raw = chain.get_raw_block(chain.main[height])
        if raw is None:
            raise RuntimeError(f"block {height} has no body in storage")
        decode_block(raw)
    read_decode = time.perf_counter() - start
    signed = [tx for block in blocks for tx in block.txs if isinstance(tx, Transfer | GradientUpdate)]
    start = time.perf_counter()
    for tx in signed:
        check_signature(tx, chain.signing_tag)
    signatures = time.perf_counter() - start
    storage = Storage(scratch / "bodies.sqlite")
    try:
        bodies = [(block.hash, block.encode()) for block in blocks]
        start = time.perf_counter()
        for block_hash, body in bodies:
            with storage.transaction():
                storage.put_body(block_hash, body)
        writes = time.perf_counter() - start
    finally:
        storage.close()
    return {"read_decode_s": read_decode, "signatures_s": signatures, "durable_writes_s": writes,
            "signed_txs": float(len(signed))}


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def run(quick: bool = False) -> list[Headline]:
    sizes = QUICK if quick else FULL
    t0 = time.perf_counter()
    builder = build_chain(sizes.blocks)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="gradchain-bench-") as tmp:
        chain, connect_s = store_chain(builder, pathlib.Path(tmp) / "node")
        try:
            runs = [timed_verify(chain) for _ in range(sizes.verify_repeats)]
            split = phase_split(chain)
            floors = unavoidable_work(chain, builder, pathlib.Path(tmp))
        finally:
            chain.close()
    scaling = accounts_scaling(ACCOUNT_COUNTS, sizes.scaling_blocks)
    samples = [seconds for seconds, _ in runs]
    verify_s = best(samples)
    verify_bps = sizes.blocks / verify_s
    connect_bps = sizes.blocks / connect_s
    verify_floor_s = floors["signatures_s"] + floors["read_decode_s"]
    connect_floor_s = floors["signatures_s"] + floors["durable_writes_s"]
    total = split["total"] or 1.0
    print_table(
        [
            ("chain", f"{sizes.blocks} blocks x {UPDATERS} updates ({TASK}), built in {build_s:.1f} s"),
            ("verify", f"{verify_bps:8.1f} blocks/s  (best of {len(samples)}: {verify_s:.3f} s); floor "
                       f"{sizes.blocks / verify_floor_s:8.1f} blocks/s = {verify_floor_s / verify_s:.2f} of it"),
            ("connect", f"{connect_bps:8.1f} blocks/s  (accept_block with SQLite writes); floor "
                        f"{sizes.blocks / connect_floor_s:8.1f} blocks/s = {connect_floor_s / connect_s:.2f} of it"),
            ("floor parts", f"signatures {floors['signatures_s'] * 1e3 / sizes.blocks:.3f} ms/block, "
                            f"read+decode {floors['read_decode_s'] * 1e3 / sizes.blocks:.3f} ms/block, "
                            f"durable write {floors['durable_writes_s'] * 1e3 / sizes.blocks:.3f} ms/block"),
            *(
                (f"  {phase}", f"{seconds * 1e3 / sizes.blocks:7.3f} ms/block  {100 * seconds / total:5.1f} %")
                for phase, seconds in split.items()
                if phase != "total"
            ),
            *(
                (f"state root, {count} accounts",
                 f"{row['plain_us']:7.0f} us/block plain dict, {row['incremental_us']:5.0f} us/block Accounts")
                for count, row in scaling.items()
            ),
        ]
    )
    write_result(
        "chain",
        {
            "params": {**asdict(sizes), "task": TASK, "updates_per_block": UPDATERS,
                       "transfer_every": TRANSFER_EVERY, "quick": quick},
            "build_s": build_s,
            "connect_s": connect_s,
            "verify_samples_s": samples,
            "verify_phases_s": [phases for _, phases in runs],
            "verify_blocks_per_s": verify_bps,
            "connect_blocks_per_s": connect_bps,
            "phase_split_s": split,
            "floors_s": {**floors, "verify": verify_floor_s, "connect": connect_floor_s},
            "floor_definitions": {"verify": VERIFY_FLOOR, "connect": CONNECT_FLOOR},
            "phase_note": "explicit timers around each phase's entry points, one extra replay",
            "accounts_scaling_us_per_block": scaling,
        },
    )
    return [floor_headline("verify_blocks_per_s", verify_bps, sizes.blocks / verify_floor_s, VERIFY_FLOOR),
            floor_headline("verify_connect_blocks_per_s", connect_bps, sizes.blocks / connect_floor_s,
                           CONNECT_FLOOR)]


def floor_headline(name: str, bps: float, floor_bps: float, floor: str) -> Headline:
    """A rate whose only same-run comparison is its floor: baseline and ceiling are both the floor."""
    share = bps / floor_bps
    return Headline(name, bps, "blocks/s", floor, share, baseline_value=floor_bps, ceiling=floor,
                    ceiling_value=floor_bps, of_ceiling=share)


if __name__ == "__main__":
    for headline in run(quick=True):
        print(headline)
