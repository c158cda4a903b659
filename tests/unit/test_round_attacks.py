"""Issue 18's and 19's consensus rules attacked the way an attacker would, on the pure state transition.

Each test plays one attack with :class:`tests.chainbuilder.ChainBuilder` and
asserts what it buys now. The attacks that still buy something are written
up in docs/security/known-limits.md with their cost; the ones here are closed:

* task-slot squatting: fifteen deploys of the minimum bounty held every task
  slot and cost nothing once the bounties came back (now: each deploy burns
  a fee that doubles with the open tasks, :func:`consensus.contracts.deploy_burn`);
* free identities on a deployed task: ``bond_amount`` 0 let anyone add a
  stake to the state for nothing, and every block rehashes and rewrites every
  stake (now: a deployed task's bond is at least ``MIN_DEPLOYED_BOND``);
* sybil keys revealing one poisoned update: clones, never counted;
* bonded coins are locked: spending them, or re-bonding to skip maturity,
  fails;
* unrevealed commitments and old reveals leave the state, so griefing by
  commitments does not grow it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np
import pytest

import consensus.contracts
from consensus.caps import MAX_DEPLOYED_EVAL_WORK, MAX_OPEN_TASKS, MIN_BOUNTY, MIN_DEPLOYED_BOND
from consensus.contracts import deploy_burn
from consensus.errors import Reject
from consensus.params import REGTEST
from consensus.state import CLOSED
from consensus.tx import GradientUpdate, Tx, encode_tx, txid
from ml.rounds import CLONE_WINDOW_ROUNDS
from ml.tasks import TaskSpec
from node.api.summaries import UpdateSummary, summarise_block
from node.chainstate import ChainState
from node.mempool import Mempool, PolicyRejected, inclusion_ranks
from tests.chainbuilder import ChainBuilder, addr, det_vector, key, quick_task, rejection
from tests.unit.test_contracts import eval_rows
from wallet import KeyPair

MINER = key(0)  # the builder's miner
SQUATTER = key(40)
HONEST = key(41)
SYBILS = [key(50 + i) for i in range(3)]
ROUND = 4
BOND = 5_000_000


def small_task(seed: int, **changes: object) -> TaskSpec:
    """A deployable task of the minimum bond, unique by ``seed`` (its deploy's txid differs)."""
    base: dict[str, object] = dict(init_seed=seed, f=0, block_reward=0, contributor_reward=0,
                                   bond_amount=MIN_DEPLOYED_BOND)
    return dataclasses.replace(quick_task("digits", **{**base, **changes}), name=f"squat{seed}")


def fund(cb: ChainBuilder, to: KeyPair, amount: int) -> None:
    """Mine until the builder's miner can send ``amount`` to ``to``, then send it."""
    while cb.state.account(addr(MINER)).balance < amount:
        cb.extend(1)
    cb.add(cb.template([cb.transfer(MINER, to, amount)]))


# -- tasks as contracts ---------------------------------------------------------------------


def test_holding_every_task_slot_burns_what_the_slots_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A squatter fills every task slot with minimum-bounty tasks nobody can use, then takes the
    bounties back when they idle out. Before the burn that cost it nothing. Now it loses
    ``(2**15 - 1)`` burns for good; at the chain's figure (1 M) that is 32.8 G, 655 digits block
    rewards, and holding the slots again costs as much again. (The burn is scaled down here so
    the builder's miner can pay it in a few blocks.)"""
    monkeypatch.setattr(consensus.contracts, "DEPLOY_BURN", 10_000)
    monkeypatch.setattr(consensus.contracts, "MAX_IDLE_BLOCKS", 6)
    slots = MAX_OPEN_TASKS - 1
    burns = sum(deploy_burn(open_tasks) for open_tasks in range(1, MAX_OPEN_TASKS))
    assert burns == (2**slots - 1) * 10_000
    assert (2**slots - 1) * 1_000_000 // quick_task().block_reward == 655  # the chain's own figure
    cb = ChainBuilder(quick_task(f=0))
    fund(cb, SQUATTER, burns + slots * MIN_BOUNTY)
    start = cb.state.account(addr(SQUATTER)).balance
    deploys = []
    for i in range(slots):
        spec = small_task(100 + i)
        deploys.append(cb.deploy(SQUATTER, spec, eval_rows(spec), MIN_BOUNTY, fee=deploy_burn(1 + i), nonce=i))
    cb.add(cb.template(deploys, miner=HONEST))  # the miner keeps no part of a burn
    assert sum(t.contract is not None and t.contract.open for t in cb.state.tasks.values()) == slots
    spec = small_task(999)
    late = cb.deploy(MINER, spec, eval_rows(spec), MIN_BOUNTY, fee=10**12)
    assert rejection(lambda: cb.add(cb.forge([late]))) is Reject.TOO_MANY_TASKS
    while any(t.contract is not None and t.contract.open for t in cb.state.tasks.values()):
        cb.extend(1)
    assert all(t.contract is None or t.contract.status == CLOSED for t in cb.state.tasks.values())
    assert cb.state.account(addr(SQUATTER)).balance == start - burns  # bounties back, burns gone
    assert cb.state.account(addr(HONEST)).balance == cb.task.block_reward  # no part of the burn


@pytest.mark.parametrize("bond", [0, MIN_DEPLOYED_BOND - 1])
def test_a_deployed_task_with_free_identities_is_refused(bond: int) -> None:
    """With ``bond_amount`` 0 a key with no coins bonds for a zero fee: a stake (and an account)
    in the state for nothing. Every block copies, hashes and writes every stake of every task
    (measured: 100 000 stakes cost about 1.8 s a block in the state digest and its encoding), so
    free stakes would slow every node; the deployer's own task is not the only victim."""
    cb = ChainBuilder(quick_task(f=0))
    cb.extend(1)
    spec = small_task(7, bond_amount=bond)
    assert rejection(lambda: cb.add(cb.forge([cb.deploy(MINER, spec, eval_rows(spec), MIN_BOUNTY)]))) \
        is Reject.BAD_TASK_SPEC


# -- identities, rounds and commit-reveal ---------------------------------------------------------


@pytest.fixture
def rb() -> ChainBuilder:
    """Rounds of four, f=1 median over four updates, bonds of BOND maturing after two blocks; Honest
    and three sybils bonded; the next block opens a round."""
    cb = ChainBuilder(quick_task(round_blocks=ROUND, bond_amount=BOND, bond_maturity=2, unbond_delay=3))
    cb.join(HONEST, *SYBILS)
    while (cb.next_height - 1) % ROUND:
        cb.extend(1)
    return cb


def to_next_round(cb: ChainBuilder) -> None:
    r = cb.round
    while cb.round == r:
        cb.extend(1)


def test_sybils_revealing_one_poisoned_update_are_clones_and_the_block_votes_zero(rb: ChainBuilder) -> None:
    """Three bonded sybils commit the same poisoned update and reveal it in one block beside an
    honest one: the copies are clones, so the median (f=1) has two updates and votes zero: the
    block buys nothing, and no sybil is paid. (Distinct poisons count as three updates: bonded
    identities are the stake half of the claim, docs/security/known-limits.md.)"""
    size = rb.task.param_count
    poison = (np.ones(size, dtype=np.float32) * 0.2).astype(np.float32)
    honest = det_vector(1, size)
    rb.add(rb.template([*[rb.commit(s, [poison]) for s in SYBILS], rb.commit(HONEST, [honest])]))
    to_next_round(rb)
    before = rb.state.task.params.copy()
    rb.add(rb.template([*[rb.update(s) for s in SYBILS], rb.update(HONEST)]))
    vote = rb.state.task.votes[-1]
    assert not vote.ran and not vote.vector.any() and vote.counted == ()
    while rb.next_height % ROUND != 1:
        rb.extend(1)
    np.testing.assert_array_equal(rb.state.task.params, before)  # nothing else voted: the model stayed
    assert all(rb.state.account(addr(s)).balance == 0 for s in SYBILS)


def test_bonded_coins_stay_locked_until_their_release(rb: ChainBuilder) -> None:
    """A bonded key cannot spend its bond, nor its unbonding coins before the delay ends; a
    re-bond after an unbond waits out maturity again (no identity that counts at once)."""
    to = key(60)
    rb.add(rb.template([rb.transfer(MINER, HONEST, 1_000)]))
    assert rejection(lambda: rb.add(rb.forge([rb.transfer(HONEST, to, 1_001)]))) is Reject.INSUFFICIENT_FUNDS
    rb.add(rb.template([rb.unbond(HONEST), rb.transfer(MINER, HONEST, BOND)]))
    release = rb.state.task.unbonding[addr(HONEST)].release
    assert rejection(lambda: rb.add(rb.forge([rb.transfer(HONEST, to, BOND + 1_001)]))) \
        is Reject.INSUFFICIENT_FUNDS  # the unbonding coins are not back yet
    rb.add(rb.template([rb.bond(HONEST)]))  # a fresh bond from fresh coins, while the old ones wait
    assert rejection(lambda: rb.add(rb.forge([rb.commit(HONEST)]))) is Reject.NOT_BONDED  # not mature
    assert len(rb.blocks) < release
    while len(rb.blocks) - 1 < release:
        rb.extend(1)
    assert addr(HONEST) not in rb.state.task.unbonding  # the entry leaves the state with its coins
    rb.add(rb.template([rb.transfer(HONEST, to, BOND + 1_000)]))


def test_commitments_never_revealed_and_old_reveals_leave_the_state(rb: ChainBuilder) -> None:
    """Griefing by commitments: every bonded sybil commits a round's worth of digests it never
    reveals. They leave the state when their reveal round ends, and reveals leave it after the
    clone window: the state grows with the bonded keys, not with the rounds they grief."""
    size = rb.task.param_count
    rb.add(rb.template([rb.commit(s, [det_vector(10 * i + j, size) for j in range(ROUND)])
                        for i, s in enumerate(SYBILS)] + [rb.commit(HONEST, [det_vector(99, size)])]))
    committed = rb.round
    assert len(rb.state.task.commitments) == len(SYBILS) + 1
    to_next_round(rb)
    rb.add(rb.template([rb.update(HONEST)]))
    assert len(rb.state.task.reveals) == 1
    to_next_round(rb)  # the reveal round closed: its commitments are dropped
    assert not [key_ for key_ in rb.state.task.commitments if key_[0] <= committed]
    for _ in range(CLONE_WINDOW_ROUNDS):
        to_next_round(rb)
    assert rb.state.task.reveals == {}
    assert rb.state.task.commitments == {}


# -- what the API says of a deployed task's updates ---------------------------------------------------


def test_a_deployed_tasks_update_is_judged_by_its_own_tasks_vote(tmp_path: pathlib.Path) -> None:
    """One block, two tasks: the genesis task's single update is too few for its median (f=1,
    not applied) while the deployed task's (f=0) runs and is counted. The API judged every update
    by the genesis task's vote, so it showed the deployed update "not applied" (and would have
    shown a deployed update of a block whose genesis vote ran as counted by the genesis rule)."""
    cb = ChainBuilder(quick_task(round_blocks=1))  # digits: median, f=1
    cb.extend(1)
    spec = small_task(5, rule="mean", contributor_reward=1, block_reward=1)
    deploy = cb.deploy(MINER, spec, eval_rows(spec), MIN_BOUNTY)
    task_id = txid(encode_tx(deploy))
    cb.add(cb.template([deploy, cb.transfer(MINER, HONEST, MIN_DEPLOYED_BOND, nonce=deploy.nonce + 1)]))
    cb.add(cb.template([cb.bond(HONEST), cb.bond(HONEST, task_id=task_id, nonce=1)]))
    size = cb.task.param_count
    cb.add(cb.template([cb.commit(HONEST, [det_vector(1, size)]),
                        cb.commit(HONEST, [det_vector(2, size)], task_id=task_id)]))
    block = cb.template([cb.update(HONEST, det_vector(1, size)),
                         cb.update(HONEST, det_vector(2, size), task_id=task_id)])
    cb.add(block)
    assert not cb.state.task.votes and cb.state.tasks[task_id].model_version == 1  # only the deployed one moved
    chain = ChainState.create(tmp_path / "node", REGTEST.name, cb.task)
    for b in cb.blocks[1:]:
        chain.accept_block(b, b.header.time)
    assert [accepted for _, accepted in chain.storage.get_outcomes(block.hash)] == [None, True]
    updates = [tx for tx in summarise_block(chain, block, len(cb.blocks) - 1).txs if isinstance(tx, UpdateSummary)]
    assert updates[0].reason is not None and updates[0].reason.startswith("not applied")
    assert updates[1].reason == "counted by mean and paid"


def test_a_target_checked_on_too_many_rows_for_the_model_is_refused() -> None:
    """Every node checks a deployed task's target on its evaluation rows at each round's end
    whose step moved the model. 3 600 rows of a 64 Ki-parameter mlp took 0.64 s a check, every
    round (four blocks) of a task its deployer trains itself, for a 1 M burn; rows x parameters
    is now capped (MAX_DEPLOYED_EVAL_WORK, ~12 ms). Without a target the rows are only shown."""
    cb = ChainBuilder(quick_task(f=0))
    cb.extend(1)
    heavy = small_task(3, model="mlp", input_dim=14, hidden=(64,), target_metric="accuracy", target_value=0.99)
    rows = MAX_DEPLOYED_EVAL_WORK // heavy.param_count
    for count, code in ((rows + 1, Reject.BAD_EVAL_SET), (rows, None)):
        deploy = cb.deploy(MINER, heavy, eval_rows(heavy, rows=count), MIN_BOUNTY)
        if code is not None:
            assert rejection(lambda deploy=deploy: cb.add(cb.forge([deploy]))) is code  # type: ignore[misc]
        else:
            cb.add(cb.template([deploy]))
    untargeted = small_task(4, model="mlp", input_dim=14, hidden=(64,))
    cb.add(cb.template([cb.deploy(MINER, untargeted, eval_rows(untargeted, rows=rows + 1), MIN_BOUNTY)]))


# -- fair inclusion (policy: node/mempool.py) ---------------------------------------------------------


class Stage:
    """A builder and a node chain on the same tip, for what an honest miner's pool selects."""

    def __init__(self, tmp_path: pathlib.Path, task: TaskSpec) -> None:
        self.builder = ChainBuilder(task)
        self.chain = ChainState.create(tmp_path, REGTEST.name, task)

    def mine(self, txs: Sequence[Tx] = ()) -> None:
        self.builder.add(self.builder.template(txs))
        for block in self.builder.blocks[self.chain.height + 1:]:
            self.chain.accept_block(block, 2**31)

    def to_round_start(self) -> None:
        while (self.builder.next_height - 1) % self.builder.task.round_blocks:
            self.mine()

    def slots(self, pool: Mempool, senders: Sequence[KeyPair], max_updates: int) -> list[list[bytes]]:
        """Mine the round's blocks from ``pool``'s selection; each block's update senders."""
        specs = {self.chain.rules.task_id: self.builder.task}
        blocks = []
        for _ in range(self.builder.task.round_blocks):
            ranks = inclusion_ranks(self.chain.state, specs, self.chain.height + 1, self.chain.main.__getitem__)
            picked = [tx for _, tx in pool.select(max_updates=max_updates, max_txs=1000, max_bytes=10**9,
                                                  ranks=ranks)]
            blocks.append([tx.sender_address for tx in picked if isinstance(tx, GradientUpdate)])
            self.mine(picked)
            pool.remove_for_block(self.builder.tip)
        return blocks


def pooled_round(stage: Stage, senders: Sequence[KeyPair]) -> Mempool:
    """Every sender commits a round's worth of updates; on to the reveal round; all reveals pooled."""
    b = stage.builder
    size, width = b.task.param_count, b.task.round_blocks
    stage.mine([b.commit(k, [det_vector(1000 * i + j, size) for j in range(width)]) for i, k in enumerate(senders)])
    stage.to_round_start()
    pool = Mempool()
    for k in senders:
        for j in range(width):
            reveal = b.update(k, index=j)
            assert pool.add(encode_tx(reveal), reveal, stage.chain, 1_000.0 + j).added
    return pool


def test_an_early_bond_gets_no_more_than_its_share_of_update_slots(tmp_path: pathlib.Path) -> None:
    """Four equal stakes, the attacker's bonded first, two update slots a block, for three rounds.
    Ranked by bond age alone the oldest two bonds filled every slot: a quarter of the bonds (one
    bond) held half of every honest block's updates and the two newest participants got none;
    with slots for four and f=1 two early keys held every honest block's median. Now each gets
    its share: slots in proportion to stake, ties drawn anew each round."""
    stage = Stage(tmp_path, quick_task(round_blocks=2, f=0))
    keys = [key(90 + i) for i in range(4)]  # keys[0], bonded first, is the attacker's
    stage.mine()
    for k in keys:  # one bond a block: the first is the oldest
        stage.mine([stage.builder.bond(k)])
    stage.to_round_start()
    counts = {addr(k): 0 for k in keys}
    for _ in range(3):
        for block in stage.slots(pooled_round(stage, keys), keys, max_updates=2):
            for sender in block:
                counts[sender] += 1
    total = sum(counts.values())
    assert total == 3 * 2 * 2
    assert counts[addr(keys[0])] <= 1.5 * total / len(keys)
    assert min(counts.values()) >= 0.5 * total / len(keys)  # the newest bonds get theirs too


def test_sybil_keys_of_one_unit_get_one_slot_of_an_honest_block_against_topped_up_stakes(
    tmp_path: pathlib.Path,
) -> None:
    """sybil-flood as the inclusion sees it: 24 keys of one bond unit each, bonded before three
    honest trainers whose stakes their mined coins topped up to more units than a round has
    blocks. Every block of the round holds the three honest updates and one sybil's, which the
    block's median (f=1) outvotes; the sybils' 24 units against the honest 15 never get a second
    slot. (Bonded first: ranking by bond age gave them every slot.)"""
    unit, width = 1_000, 4
    stage = Stage(tmp_path, quick_task(round_blocks=width, bond_amount=unit, bond_maturity=1, unbond_delay=2))
    b = stage.builder
    sybils, honest = [key(100 + i) for i in range(24)], [key(140 + i) for i in range(3)]
    honest_units = width + 1
    stage.mine()
    nonce = b.nonce_of(b.miner)
    stage.mine([b.transfer(b.miner, k, unit, nonce=nonce + i) for i, k in enumerate(sybils)]
               + [b.transfer(b.miner, k, honest_units * unit, nonce=nonce + len(sybils) + i)
                  for i, k in enumerate(honest)])
    stage.mine([b.bond(k) for k in sybils])  # the sybils' bonds are the oldest
    stage.mine([b.bond(k, nonce=n) for k in honest for n in range(honest_units)])  # a bond and its top-ups
    assert all(b.state.task.stakes[addr(k)].amount == honest_units * unit for k in honest)
    stage.to_round_start()
    blocks = stage.slots(pooled_round(stage, [*sybils, *honest]), [*sybils, *honest], max_updates=4)
    sybil_addresses = {addr(k) for k in sybils}
    assert [sum(s in sybil_addresses for s in block) for block in blocks] == [1] * width
    assert all({addr(k) for k in honest} <= set(block) for block in blocks)


def test_one_tasks_contributions_fill_only_its_share_of_the_pool(tmp_path: pathlib.Path) -> None:
    """A pool admitted every commitment and update valid for the next block and never evicted
    one; when it was full every newcomer was refused. Bonded keys of a task the attacker deployed
    itself (rounds of 64: a commitment and 64 reveals pooled per key) filled the 5000 entries with
    77 keys (77 M of bonds, returned, plus the deploy's 1 M burn), and every honest node then
    refused its own digits commitments and reveals: training stopped. Now a task holds at most
    1/TASK_SHARES of the pool; shown on a pool of 64 (a share of 2) and twelve sybil commitments."""
    from consensus.rounds import round_of, round_start
    from node.mempool import TASK_SHARES
    from tests.unit.test_mempool import FUNDED, NOW, World

    world = World(tmp_path)
    b = world.builder
    spec = small_task(8, round_blocks=8)
    deploy = b.deploy(b.miner, spec, eval_rows(spec), MIN_BOUNTY)
    task_id = txid(encode_tx(deploy))
    sybils = [key(70 + i) for i in range(12)]
    world.mine([deploy, *[b.transfer(b.miner, s, MIN_DEPLOYED_BOND, nonce=deploy.nonce + 1 + i)
                          for i, s in enumerate(sybils)]])
    world.mine([b.bond(s, task_id=task_id) for s in sybils])
    r = round_of(b.next_height, spec.round_blocks)
    base = b.blocks[round_start(r, spec.round_blocks)].hash
    pool = Mempool(max_txs=2 * TASK_SHARES)
    refused = 0
    for i, s in enumerate(sybils):
        commit = b.commit(s, [det_vector(200 + i, spec.param_count)], round_=r, base_hash=base, task_id=task_id)
        try:
            pool.add(encode_tx(commit), commit, world.chain, NOW)
        except PolicyRejected:
            refused += 1
    assert len(pool) == 2 and refused > 0  # equal stakes: a better-ranked sybil may replace another
    honest = b.commit(FUNDED[0], seeds=(1,))
    assert pool.add(encode_tx(honest), honest, world.chain, NOW + 1).added and len(pool) == 3


def test_at_its_share_a_task_keeps_its_best_ranked_senders(tmp_path: pathlib.Path) -> None:
    """Within one task's full share a sender of more bond units replaces the worst-ranked
    one-unit sender's contribution, so a sybil flood of the genesis task cannot keep honest
    stakes out of the pool either."""
    from node.mempool import TASK_SHARES
    from tests.unit.test_mempool import NOW

    unit = 1_000
    stage = Stage(tmp_path, quick_task(round_blocks=4, bond_amount=unit, bond_maturity=1, unbond_delay=2,
                                       max_updates_per_block=1, f=0))  # the genesis share floor: 2 contributions
    b = stage.builder
    sybils, honest = [key(160 + i) for i in range(3)], key(170)
    stage.mine()
    nonce = b.nonce_of(b.miner)
    stage.mine([b.transfer(b.miner, k, unit, nonce=nonce + i) for i, k in enumerate(sybils)]
               + [b.transfer(b.miner, honest, 5 * unit, nonce=nonce + 3)])
    stage.mine([b.bond(k) for k in sybils] + [b.bond(honest, nonce=n) for n in range(5)])
    stage.to_round_start()
    pool = Mempool(max_txs=2 * TASK_SHARES)  # a share of two contributions
    commits = [b.commit(k, seeds=(i,)) for i, k in enumerate(sybils)]
    for c in commits[:2]:
        assert pool.add(encode_tx(c), c, stage.chain, NOW).added
    result = pool.add(encode_tx(mine := b.commit(honest, seeds=(9,))), mine, stage.chain, NOW + 1)
    assert result.added and len(result.evicted) == 1 and len(pool) == 2
    assert result.evicted[0] in {txid(encode_tx(c)) for c in commits[:2]}


def test_two_pooled_deploys_never_share_a_block(tmp_path: pathlib.Path) -> None:
    """Each deploy in the pool is checked on the tip, so two from different senders may each pay
    just the burn the tip asks; in one block the second would owe twice that, and the miner's
    template would fall back to trying its txs one by one (quadratic in the block's txs) for as
    long as the two stay pooled. A template takes one deploy a block; the other is checked again
    on the next tip, where it falls short and is dropped."""
    from consensus.contracts import open_task_count
    from consensus.tx import Deploy
    from tests.unit.test_mempool import World, add

    world = World(tmp_path)
    b = world.builder
    other = key(80)
    world.mine([b.transfer(b.miner, other, 2 * MIN_BOUNTY)])
    burn = deploy_burn(open_task_count(world.chain.state))
    first, second = small_task(20), small_task(21)
    pool = Mempool()
    add(pool, world, b.deploy(b.miner, first, eval_rows(first), MIN_BOUNTY, fee=burn + 1))
    add(pool, world, b.deploy(other, second, eval_rows(second), MIN_BOUNTY, fee=burn))
    picked = [tx for _, tx in pool.select(max_updates=4, max_txs=100, max_bytes=10**8)]
    assert sum(isinstance(tx, Deploy) for tx in picked) == 1
    world.mine(picked)
    pool.remove_for_block(world.builder.tip)
    assert len(pool) == 1
    pool.revalidate(world.chain)
    assert len(pool) == 0  # the other deploy now owes twice the burn


# -- reorgs across a round's start --------------------------------------------------------------------


def test_a_trainer_commits_again_when_a_reorg_replaces_its_rounds_start_block(rb: ChainBuilder) -> None:
    r"""A commitment names its round's start block. A reorg that replaces that block (a race for
    it, which a selfish miner can try) leaves the commitment on no branch; the trainer kept the
    round's plan and never committed again, so its next round's reveals were lost: one round of
    its updates per such reorg. Now it commits again on the new start block.

        ... - p - s  - c (HONEST commits, base s)
                \ s' - x   (longer: the node follows it)
    """
    from node.contributor import Contributor, KeyStatus

    start = len(rb.blocks) - 1  # s: the last block of the previous round
    me = Contributor(HONEST, rb.task, rb.rules.tag, rb.rules.task_id)

    def status(cb: ChainBuilder) -> KeyStatus:
        account = cb.state.account(addr(HONEST))
        return KeyStatus.read(cb.task, cb.state.task, addr(HONEST), height=cb.next_height,
                              balance=account.balance, next_nonce=account.nonce)

    base = rb.blocks[start].hash
    assert me.wants_commit(status(rb), base)
    rb.add(rb.template([me.commit(status(rb), base, [det_vector(1, rb.task.param_count)])]))
    assert not me.wants_commit(status(rb), base)  # committed on this branch
    fork = rb.fork(start - 1)
    fork.add(fork.template(miner=SYBILS[0]))  # s': another start block for the round
    fork.extend(2)
    assert status(fork).round == status(rb).round and not status(fork).committed
    assert me.wants_commit(status(fork), fork.blocks[start].hash)
    fork.add(fork.template([me.commit(status(fork), fork.blocks[start].hash, [det_vector(2, rb.task.param_count)])]))
    assert not me.wants_commit(status(fork), fork.blocks[start].hash)


def test_an_honest_trainer_tops_up_its_stake_above_a_reserve() -> None:
    """Update slots go by bonded stake, so an honest trainer puts its mined coins above a reserve
    (TOP_UP_RESERVE_UNITS bond amounts) into its stake, one unit a tip; not before it is bonded,
    nor with a bond pooled."""
    from node.contributor import TOP_UP_RESERVE_UNITS, Contributor, KeyStatus

    task = quick_task(bond_amount=BOND)
    me = Contributor(HONEST, task, b"\x00" * 32, b"\x01" * 32)
    enough = (TOP_UP_RESERVE_UNITS + 1) * BOND

    def status(balance: int, *, bonded: bool = True, pending: bool = False) -> KeyStatus:
        return KeyStatus(height=9, round=9, balance=balance, next_nonce=3, bonded=bonded, mature=bonded,
                         bond_pending=pending, committed=True, unrevealed=(), reveal_pending=False)

    bond = me.top_up(status(enough))
    assert bond is not None and bond.nonce == 3 and bond.task_id == b"\x01" * 32
    assert me.top_up(status(enough - 1)) is None  # the reserve stays unbonded
    assert me.top_up(status(enough, pending=True)) is None  # one unit a tip
    assert me.top_up(status(enough, bonded=False)) is None  # a first bond is Contributor.bond's


def test_a_topped_up_whale_key_gets_one_slot_a_block_and_no_more(tmp_path: pathlib.Path) -> None:
    """What a top-up buys: a key that stacks 100 bond units against three one-unit keys still
    takes one update slot a block (one per sender), the others share the rest in turn; stake
    buys a share of the round's slots, never a block's majority through one key."""
    unit, width = 1_000, 4
    stage = Stage(tmp_path, quick_task(round_blocks=width, bond_amount=unit, bond_maturity=1, unbond_delay=2))
    b = stage.builder
    whale, others = key(150), [key(151 + i) for i in range(3)]
    stage.mine()
    nonce = b.nonce_of(b.miner)
    stage.mine([b.transfer(b.miner, whale, 100 * unit, nonce=nonce)]
               + [b.transfer(b.miner, k, unit, nonce=nonce + 1 + i) for i, k in enumerate(others)])
    stage.mine([b.bond(whale, nonce=n) for n in range(100)] + [b.bond(k) for k in others])
    assert b.state.task.stakes[addr(whale)].amount == 100 * unit
    stage.to_round_start()
    blocks = stage.slots(pooled_round(stage, [whale, *others]), [whale, *others], max_updates=2)
    assert all(block.count(addr(whale)) == 1 for block in blocks)
    assert sorted(sum(addr(k) in block for block in blocks) for k in others) == [1, 1, 2]


def test_a_commitment_ranks_by_stake_so_fresh_sybil_keys_cannot_push_it_out(tmp_path: pathlib.Path) -> None:
    """At a task's full share of the pool a commitment was ranked like an update, by the update
    slots its sender already had this round: an honest key whose reveals had landed ranked after
    every fresh sybil key, and a sybil's commitment replaced the honest key's commitment for the
    next round, which then sat that round out. A commitment takes no slot: stake alone ranks it."""
    from node.mempool import TASK_SHARES
    from tests.unit.test_mempool import NOW

    unit = 1_000
    stage = Stage(tmp_path, quick_task(round_blocks=4, bond_amount=unit, bond_maturity=1, unbond_delay=2,
                                       max_updates_per_block=1, f=0))  # the genesis share floor: 2 contributions
    b = stage.builder
    sybils, honest = [key(180 + i) for i in range(3)], key(190)
    stage.mine()
    nonce = b.nonce_of(b.miner)
    stage.mine([b.transfer(b.miner, k, unit, nonce=nonce + i) for i, k in enumerate(sybils)]
               + [b.transfer(b.miner, honest, 2 * unit, nonce=nonce + 3)])
    stage.mine([b.bond(k) for k in sybils] + [b.bond(honest, nonce=n) for n in range(2)])
    stage.to_round_start()
    width = b.task.round_blocks
    stage.mine([b.commit(honest, [det_vector(300 + j, b.task.param_count) for j in range(width)])])
    stage.to_round_start()
    for j in range(width - 1):  # three of its reveals land: as an update sender it ranks (3+1)/2, after 1/1
        stage.mine([b.update(honest, index=j)])
    pool = Mempool(max_txs=2 * TASK_SHARES)  # a share of two contributions
    mine = b.commit(honest, seeds=(9,))
    first = b.commit(sybils[0], seeds=(1,))
    assert pool.add(encode_tx(mine), mine, stage.chain, NOW).added
    assert pool.add(encode_tx(first), first, stage.chain, NOW + 1).added
    for i, sybil in enumerate(sybils[1:], start=2):
        newcomer = b.commit(sybil, seeds=(i,))
        with contextlib.suppress(PolicyRejected):  # equal stakes: it may replace the other sybil
            pool.add(encode_tx(newcomer), newcomer, stage.chain, NOW + i)
    assert txid(encode_tx(mine)) in pool and len(pool) == 2


def test_the_genesis_task_keeps_room_for_two_of_its_fullest_blocks(tmp_path: pathlib.Path) -> None:
    """The 1/TASK_SHARES share is against tasks anyone deploys; applied to the chain's own task it
    left a genesis task with large updates (the caps allow ~8 MiB) room for one or two of them and
    slowed its training to a crawl. The genesis task's share is at least two full blocks."""
    from consensus.caps import max_full_block_size
    from node.mempool import TASK_SHARES
    from tests.unit.test_mempool import NOW

    unit = 1_000
    stage = Stage(tmp_path, quick_task(round_blocks=4, bond_amount=unit, bond_maturity=1, unbond_delay=2))
    b = stage.builder
    keys = [key(200 + i) for i in range(2 * b.task.max_updates_per_block)]
    stage.mine()
    nonce = b.nonce_of(b.miner)
    stage.mine([b.transfer(b.miner, k, unit, nonce=nonce + i) for i, k in enumerate(keys)])
    stage.mine([b.bond(k) for k in keys])
    stage.to_round_start()
    commits = [b.commit(k, seeds=(i,)) for i, k in enumerate(keys)]
    sizes = [len(encode_tx(c)) for c in commits]
    # a pool whose 1/TASK_SHARES would hold two of them by count and by bytes
    pool = Mempool(max_txs=2 * TASK_SHARES, max_bytes=2 * max(sizes) * TASK_SHARES)
    assert 2 * max(sizes) < max_full_block_size(b.task)
    for i, c in enumerate(commits):
        assert pool.add(encode_tx(c), c, stage.chain, NOW + i).added
    assert len(pool) == len(keys)
