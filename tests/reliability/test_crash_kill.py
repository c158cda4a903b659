"""SIGKILL a node that mines, trains and syncs, at random moments: it never loses a connected block.

::

    a (this process: mines a block every ~0.4 s)  <---  p (`gradchain node run --mine --train --peer a`)
    repeat KILLS times: start p, let it sync, mine and train for a random while
    (or kill it while it is still starting), SIGKILL, then open its datadir:

      - the database is intact (no repair needed) and `chain verify` passes;
      - every tip p reported in /api/status is still stored, and the stored
        tip has at least the work of the last one reported.

The peer makes p sync and reorg (both mine on the same regtest chain), the
trainer makes it sign and mine gradient updates: the kill lands in block
download, validation, connection, mining, training or start-up.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import aiohttp

from consensus.header import hex_to_hash
from consensus.tx import Coinbase, GradientUpdate
from node.chainstate import ChainState
from node.keystore_file import write_keystore
from node.verify import verify_chain
from tests.node.harness import Cluster, get_json, http, scenario
from tests.node.test_restart import free_port
from tests.reliability import sized
from wallet import address_bytes, keypair_from_seed

KILLS = sized(10, 50)
STARTUP_S = 60.0  # a child imports numpy, numba, aiohttp: seconds on a loaded box
RUN_AT_MOST_S = 2.5  # how long p runs before its kill, at most (uniformly random)
EARLY_KILLS = 0.3  # share of kills that land at a random moment of start-up instead
PASSWORD = "crash-test-password"
P_SEED = b"\x07" * 32


def work_of_p(datadir: pathlib.Path, address: bytes) -> tuple[int, int]:
    """(blocks p mined, p's gradient updates) on its stored main chain."""
    chain = ChainState.open(datadir, repair=False)
    try:
        mined = updates = 0
        for block_hash in chain.main[1:]:
            block = chain.get_block(block_hash)
            assert block is not None
            coinbase = block.txs[0]
            mined += isinstance(coinbase, Coinbase) and coinbase.payouts[0].address == address
            updates += sum(isinstance(tx, GradientUpdate) and tx.sender_address == address for tx in block.txs)
        return mined, updates
    finally:
        chain.close()


def p_argv(datadir: pathlib.Path, port: int, keystore: pathlib.Path, password_file: pathlib.Path,
           seed: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", "node", "run", "--datadir", str(datadir), "--network", "regtest",
            "--f", "0", "--listen", f"127.0.0.1:{port}", "--peer", seed, "--mine", "--train",
            "--keystore", str(keystore), "--password-file", str(password_file), "--block-interval", "0.2"]


async def has_worked(session: aiohttp.ClientSession, url: str) -> bool:
    """p has mined a block and submitted an update of its own (its /api/events say so)."""
    code, events = await get_json(session, f"{url}/api/events?count=200")
    kinds = {e["kind"] for e in events} if code == 200 and isinstance(events, list) else set()
    return {"mined", "update"} <= kinds


async def tips_until_killed(url: str, proc: asyncio.subprocess.Process, rng: random.Random,
                            *, after_work: bool = False) -> list[str]:
    """Poll p's /api/status, recording every tip it reports, then SIGKILL it at a random moment
    (``after_work``: only once p has mined and trained, so the kills hit a node doing all three)."""
    reported: list[str] = []
    early = not after_work and rng.random() < EARLY_KILLS
    deadline = None
    started = time.monotonic()
    if early:
        deadline = started + rng.uniform(0.0, 3.0)
    async with http() as session:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now - started > STARTUP_S:
                raise AssertionError("p never answered /api/status (or never mined and trained)")
            try:
                code, body = await get_json(session, f"{url}/api/status")
            except (TimeoutError, OSError):
                code, body = 0, None
            if code == 200 and isinstance(body, dict):
                if not reported or reported[-1] != body["tip"]:
                    reported.append(body["tip"])
                if deadline is None and (not after_work or await has_worked(session, url)):
                    deadline = time.monotonic() + rng.uniform(0.0, RUN_AT_MOST_S)
            await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    return reported


def check_after_kill(datadir: pathlib.Path, reported: list[str], run: int) -> int:
    """The invariants of a restart; returns the stored height."""
    if not (datadir / "chain.sqlite").exists():
        assert not reported, f"run {run}: p reported tips but has no database"
        return 0
    chain = ChainState.open(datadir, repair=False)
    try:
        assert chain.storage.integrity_problems() == [], f"run {run}: a kill damaged the database"
        report = verify_chain(chain)
        assert report.error == "", f"run {run}: chain verify failed: {report.error}"
        for tip in reported:
            assert chain.has_block(hex_to_hash(tip)), f"run {run}: reported tip {tip[:16]} was lost"
        if reported:
            assert chain.tip.chain_work >= chain.index[hex_to_hash(reported[-1])].chain_work, (
                f"run {run}: the stored tip has less work than the last one reported")
        return chain.height
    finally:
        chain.close()


@scenario
async def test_sigkill_at_random_moments_loses_no_connected_block(cluster: Cluster) -> None:
    a = await cluster.start("a", byzantine_f=0, mine=True, min_block_interval_s=0.4)
    base = cluster.base
    keystore, password_file, datadir = base / "p.json", base / "password", base / "p"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    write_keystore(keystore, keypair_from_seed(P_SEED), PASSWORD)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rng = random.Random(16)
    env = {k: v for k, v in os.environ.items() if k != "GRADCHAIN_PASSWORD"}
    heights, reported_total = [], 0
    log = open(base / "p.log", "ab")  # noqa: SIM115 - p's output across restarts, for a failure's post-mortem
    for run in range(KILLS):
        proc = await asyncio.create_subprocess_exec(
            *p_argv(datadir, port, keystore, password_file, a.url),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            reported = await tips_until_killed(url, proc, rng, after_work=run == 0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"run {run}: p exited by itself ({proc.returncode})"
        heights.append(check_after_kill(datadir, reported, run))
        reported_total += len(reported)
    mined, updates = work_of_p(datadir, address_bytes(keypair_from_seed(P_SEED).public))
    print(f"{KILLS} SIGKILLs: stored heights {heights}, {reported_total} reported tips all kept, "
          f"p mined {mined} blocks and {updates} of its updates are on its chain; a at {a.chain.height}")
    assert heights[-1] > 0 and reported_total > KILLS // 2, "p synced between the kills"
    assert mined > 0, "p's own blocks survived the kills"  # (run 0 waited for p to mine and train)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", "chain", "verify", "--datadir", str(datadir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0 and b"matches" in out, err.decode()
