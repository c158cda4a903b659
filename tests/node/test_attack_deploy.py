"""Deploys that squat task slots or make identities free, as a node meets them from peers and clients.

The rules (consensus/contracts.py; the unit tests in tests/unit/test_contracts.py
and tests/unit/test_round_attacks.py hold them against the pure transition):
a deploy's fee must cover the burn for the tasks training
(``DEPLOY_FEE_TOO_LOW``), and a deployed task's bond is at least
``MIN_DEPLOYED_BOND`` (``BAD_TASK_SPEC``). A real node on loopback; a fake
peer offers each broken deploy in a block on the node's own template, and a
client submits it to the mempool.
"""

from __future__ import annotations

import dataclasses

import pytest

from consensus.caps import DEPLOY_BURN, MIN_BOUNTY, MIN_DEPLOYED_BOND
from consensus.errors import BlockRejected, Reject
from consensus.tx import Deploy, Tx, encode_tx, sign_tx
from ml.tasks import TaskSpec
from node.mining import make_template
from node.service import Node
from tests.chainbuilder import mine as solve
from tests.chainbuilder import quick_task, recommit
from tests.node.harness import Cluster, FakePeer, mine, node_key, scenario
from tests.unit.test_contracts import eval_rows
from wallet import address_bytes

DEPLOYER = node_key("n0")  # the node's miner: its rewards pay the deploys


def spec(**changes: object) -> TaskSpec:
    fields: dict[str, object] = {"f": 0, "round_blocks": 4, "bond_amount": MIN_DEPLOYED_BOND,
                                 **changes}
    return dataclasses.replace(quick_task("digits", **fields), name="squat")


def signed_deploy(node: Node, task: TaskSpec, fee: int) -> Deploy:
    nonce = node.chain.state.account(address_bytes(DEPLOYER.public)).nonce
    tx = Deploy(DEPLOYER.public, nonce, fee, MIN_BOUNTY, task.to_dict(), eval_rows(task))
    return sign_tx(tx, DEPLOYER, node.chain.signing_tag)


async def offer(node: Node, code: Reject, txs: list[Tx]) -> None:
    good = await node.run_chain(make_template, node)
    async with FakePeer(node) as fake:
        await fake.send_blocks([recommit(good, [good.txs[0], *txs])], expect=code)


@scenario
async def test_a_squatting_or_free_identity_deploy_is_refused_from_peers_and_clients(cluster: Cluster) -> None:
    (a,) = await cluster.start_many(1)
    await mine(a, 2)
    height = a.chain.height
    short = signed_deploy(a, spec(), DEPLOY_BURN - 1)
    free = signed_deploy(a, spec(bond_amount=0), DEPLOY_BURN)
    await offer(a, Reject.DEPLOY_FEE_TOO_LOW, [short])
    await offer(a, Reject.BAD_TASK_SPEC, [free])
    assert a.chain.height == height and len(a.chain.state.tasks) == 1
    for tx, code in ((short, Reject.DEPLOY_FEE_TOO_LOW), (free, Reject.BAD_TASK_SPEC)):
        with pytest.raises(BlockRejected) as refused:
            await a.submit_tx(encode_tx(tx), source=None)
        assert refused.value.code is code
    # paid in full, the same deploy goes in; the next one burns twice as much
    await a.submit_tx(encode_tx(signed_deploy(a, spec(), DEPLOY_BURN)), source=None)
    await mine(a, 1)
    assert len(a.chain.state.tasks) == 2
    again = signed_deploy(a, spec(init_seed=9), DEPLOY_BURN)
    await offer(a, Reject.DEPLOY_FEE_TOO_LOW, [again])
    async with FakePeer(a) as honest:  # a valid block still connects from a fresh peer
        await honest.send_blocks([solve(await a.run_chain(make_template, a))])
