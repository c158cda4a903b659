"""A testnet on the participants' own files deploys their task with a transaction.

``gradchain testnet up --task SPEC.json --data DIR`` runs a chain whose
genesis task is the built-in ``digits`` and puts SPEC on it the way anyone
would on a running chain (docs/tasks.md, "Tasks as contracts"): node0 mines
alone until its first reward, signs a deploy of SPEC with ``DIR/eval.csv``
as the task's public evaluation rows and a bounty from that reward, and
mines until a block carries it. Then every node starts training both tasks:
``digits`` on its built-in shard and the deployed task on ``DIR/node{i}.csv``
(``--train --train TASK_ID --data FILE``). Two tasks train at once.
"""

from __future__ import annotations

import pathlib
import subprocess
import time
from collections.abc import Callable

from consensus.caps import MIN_BOUNTY
from ml.tasks import TaskSpec, builtin_task
from node.client import ApiError, NodeClient
from node.keystore_file import read_keystore
from node.taskfile import default_bounty, read_evalset
from wallet import address_of

GENESIS_TASK = "digits"  # what a testnet that deploys its own task runs as its first
DEPLOY_TIMEOUT_S = 300.0  # node0's first block alone, then the block with the deploy
POLL_S = 0.5


def bootstrap_bounty(spec: TaskSpec, balance: int, fee: int) -> int:
    """What node0 locks: the default bounty, or what its balance spares after the deploy's ``fee`` and
    the two bonds it will make."""
    reserve = builtin_task(GENESIS_TASK).bond_amount + spec.bond_amount + fee
    return min(default_bounty(spec), balance - reserve)


def deploy_from_node0(
    api: str, keystore: pathlib.Path, password: str, spec: TaskSpec, eval_file: pathlib.Path,
    alive: Callable[[], bool], say: Callable[[str], None] = print,
) -> str:
    """On node0 (running, mining, not training): wait for its first reward, deploy, wait for the block.

    Returns the new task's id. Raises RuntimeError (with what to look at) if
    node0 stops or the deploy is not mined in time.
    """
    evalset = read_evalset(spec, eval_file)
    keypair = read_keystore(keystore, password)
    client = NodeClient(api, timeout=10)
    address = address_of(keypair.public)
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S

    def wait(what: str, ready: Callable[[], bool]) -> None:
        while True:
            if not alive():
                raise RuntimeError(f"node0 stopped while {what}; see its node.log")
            try:
                if ready():
                    return
            except ApiError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out {what}; see node0's node.log")
            time.sleep(POLL_S)

    wait("waiting for node0's first block reward",
         lambda: bootstrap_bounty(spec, int(client.account(address)["balance"]), client.deploy_fee()) >= MIN_BOUNTY)
    fee = client.deploy_fee()
    bounty = bootstrap_bounty(spec, int(client.account(address)["balance"]), fee)
    task_id = client.deploy(keypair, spec, evalset, bounty, fee)
    say(f"deployed task {spec.name!r} as {task_id[:16]}… with a bounty of {bounty}; waiting for its block…")
    wait("waiting for the deploy's block", lambda: any(t["id"] == task_id for t in client.tasks()))
    return task_id


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a bootstrap node and wait for it to flush and exit."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
