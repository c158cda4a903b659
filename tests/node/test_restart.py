"""Nodes that stop (cleanly or by SIGKILL) resume from their datadir and catch up.

The peer that stays up keeps mining while the other is down, and finds the
restarted node again by retrying its --peer URL, so the restarted node must
both keep what it had and fetch what it missed. Also: a datadir serves one
node at a time.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest

from consensus.header import hash_hex
from node.chainstate import ChainState
from node.service import DatadirLocked, Node
from tests.conftest import until
from tests.node.harness import (
    Cluster,
    config,
    connect,
    connect_line,
    get_json,
    http,
    mine,
    scenario,
    wait_same_tip,
)

BEFORE_STOP = 3  # blocks both nodes hold before the stop
WHILE_DOWN = 4  # blocks the surviving peer mines while the other is down
SUBPROCESS_START_S = 60.0  # `gradchain node run` imports numpy, numba, aiohttp: seconds on a loaded box
CATCH_UP_S = 60.0  # the --peer retry backs off to a few seconds, then the sync itself


@scenario
async def test_clean_restart_resumes_and_is_found_by_peer_retry(cluster: Cluster) -> None:
    """b stops cleanly, a mines on; b restarts on the same URL and a's --peer retry finds it.

    ::

        genesis - 1 - 2 - 3                (a and b)
                          - 4 - 5 - 6 - 7  (a alone, while b is down)

    b restarts with no --peer at all and with ``dial_learned`` off (else b
    would dial a itself, from the address book it saved: that is
    test_a_restarted_node_dials_the_addresses_it_learned): only a's retry of
    its --peer URL can bring them together. b must open at height 3 (its
    datadir) and reach 7.
    """
    b = await cluster.start("b")
    a = await cluster.start("a", peers=[b])
    await until(lambda: b.url in a.peers.peers and a.url in b.peers.peers, 15, what="a to dial b")
    await mine(a, BEFORE_STOP)
    await wait_same_tip([a, b])
    b_url, b_port = b.url, b.config.port
    await cluster.stop_node(b)
    await mine(a, WHILE_DOWN)  # the first announce to b fails: a drops b and schedules a retry
    await until(lambda: b_url not in a.peers.peers, 15, what="a to notice b is gone")

    b2 = await cluster.start("b", port=b_port, dial_learned=False)
    assert b2.url == b_url
    opened = [e.message for e in b2.events if e.message.startswith("listening on")]
    assert opened == [f"listening on {b_url} (regtest, height {BEFORE_STOP})"]
    await wait_same_tip([a, b2], timeout=CATCH_UP_S)
    assert b2.chain.height == BEFORE_STOP + WHILE_DOWN
    assert b_url in a.peers.peers and a.peers.peers[b_url].outbound, "a found b again by dialling it"


CONNECTOR_PASSES = 4  # passes of the restarted node's connector watched for a dial (0.5 s each)


@scenario
async def test_a_restarted_node_dials_the_addresses_it_learned(cluster: Cluster) -> None:
    """A restart keeps the address book (peers.json): not only the seeds are dialled again.

    ::

        n0 - n1 - n2      a line (dial_learned off): n0 learns n2's address through n1
        stop n0
        start n0, no --peer, dial_learned off: it knows n1 and n2 and dials neither
        start n0, no --peer, default:          it dials n1 and n2, addresses it had learned
    """
    n0, n1, n2 = await cluster.start_many(3, dial_learned=False)
    await connect_line([n0, n1, n2])
    await until(lambda: n2.url in n0.peers.known, 20, what="n0 to learn n2's address through n1")
    await cluster.stop_node(n0)

    pinned = await cluster.start("n0", dial_learned=False)
    assert {n1.url, n2.url} <= set(pinned.peers.known), "the book came back"
    passes = [0]
    choose = pinned.peers.conns.dial_candidates

    def counted(now: float) -> list[str]:
        passes[0] += 1
        return choose(now)

    pinned.peers.conns.dial_candidates = counted  # type: ignore[method-assign]
    await until(lambda: passes[0] >= CONNECTOR_PASSES, 20, what="the pinned node's connector to run")
    assert pinned.peers.peers == {}, "a pinned topology stays pinned after a restart"
    await cluster.stop_node(pinned)

    n0 = await cluster.start("n0")
    assert n0.peers.seeds == []
    await until(lambda: {n1.url, n2.url} <= set(n0.peers.peers), 20, what="n0 to dial the addresses it saved")
    assert n0.peers.peers[n1.url].outbound and n0.peers.peers[n2.url].outbound
    assert any(e.message.startswith("restored 0 bans from banlist.json and ") for e in n0.events)


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; we release it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def node_process(datadir: pathlib.Path, port: int, peers: list[str]) -> subprocess.Popen[bytes]:
    """``gradchain node run`` in a child process, output discarded (the test reads the API)."""
    args = [sys.executable, "-m", "node.cli", "node", "run", "--datadir", str(datadir),
            "--listen", f"127.0.0.1:{port}", "--network", "regtest"]
    for url in peers:
        args += ["--peer", url]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def status_of(url: str) -> dict[str, Any] | None:
    """The node's /api/status, or None while it is not answering."""
    try:
        async with http() as session:
            code, body = await get_json(session, f"{url}/api/status")
    except (TimeoutError, OSError):
        return None
    return body if code == 200 and isinstance(body, dict) else None


async def wait_matches(url: str, node: Node, timeout: float) -> None:
    """Wait until the process at ``url`` reports ``node``'s tip and state root."""
    async def matches() -> bool:
        status = await status_of(url)
        return status is not None and (status["tip"], status["state_root"]) == (
            hash_hex(node.chain.tip.hash), hash_hex(node.chain.state.root))

    await until(matches, timeout, interval=0.2, what=f"{url} to reach {node.url}'s tip")


@scenario
async def test_sigkilled_node_process_resumes_and_catches_up(cluster: Cluster) -> None:
    """A `gradchain node run` process killed with SIGKILL restarts from its datadir and catches up.

    ::

        genesis - 1 - ... - 5                  (a in this process, p the child: synced)
                            SIGKILL p
                            - 6 - ... - 9      (a alone)
                            restart p (no --peer): a's retry finds it, p reaches 9

    Between the kill and the restart the test opens p's datadir itself: all
    five blocks p had acknowledged (served in /api/status) are there.
    """
    port = free_port()
    p_url, p_dir = f"http://127.0.0.1:{port}", cluster.base / "p"
    a = await cluster.start("a", peers=[p_url])
    await mine(a, 5)
    proc = node_process(p_dir, port, peers=[a.url])
    try:
        await wait_matches(p_url, a, SUBPROCESS_START_S)
        synced_tip = a.chain.tip.hash
        proc.send_signal(signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    await mine(a, WHILE_DOWN)
    chain = ChainState.open(p_dir)  # the killed node's files, as the next start will see them
    try:
        assert chain.height == 5 and chain.tip.hash == synced_tip
    finally:
        chain.close()

    proc = node_process(p_dir, port, peers=[])
    try:
        await wait_matches(p_url, a, SUBPROCESS_START_S + CATCH_UP_S)
        await until(lambda: p_url in a.peers.peers, 15, what="a to list p as its peer again")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "SIGTERM stops a node cleanly"


@scenario
async def test_second_node_on_the_same_datadir_is_refused(cluster: Cluster) -> None:
    """Two nodes, one datadir: the second fails with a clear error, the first serves on.

    ::

        a (datadir d) running;  Node(d).start() -> DatadirLocked;  `gradchain node run --datadir d` -> exit 1
    """
    a = await cluster.start("a")
    await mine(a, 1)
    second = Node(config(cluster.base, "a"))
    with pytest.raises(DatadirLocked, match="another node is running on .*; stop it or use another --datadir"):
        await second.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", "node", "run", "--datadir", str(a.config.datadir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), SUBPROCESS_START_S)
    assert proc.returncode == 1
    message = err.decode().strip().splitlines()[-1]
    assert message.startswith("error: another node is running on") and "--datadir" in message
    # The first node is untouched: same chain, still mining and serving.
    await mine(a, 1)
    assert a.chain.height == 2
    async with http() as session:
        status, body = await get_json(session, f"{a.url}/api/status")
    assert status == 200 and body["height"] == 2
    await connect(a, await cluster.start("b"))


def test_mining_without_a_wallet_is_refused_with_what_to_do(tmp_path: pathlib.Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Keys at rest are encrypted: the node never invents an unencrypted key file."""
    from node.cli.main import main

    assert main(["node", "run", "--datadir", str(tmp_path / "d"), "--mine"]) == 1
    err = capsys.readouterr().err
    assert "--keystore" in err and "wallet new" in err
    assert not any(p.name.endswith(".key") for p in (tmp_path / "d").iterdir())
