"""A bounded flood of transfers over many connections while the node mines: it stays up and bounded.

::

    funding: the miner pays SENDERS fresh keys (25 txs of pending room each)
    flood:   TXS signed transfers from them over CONNECTIONS concurrent keep-alive
             connections (loopback), while a poller reads /api/status every 50 ms
             and the node's miner keeps mining

Stated bounds, checked: no 5xx and no dropped connection; every answer is
202 (pooled) or 409 (the mempool's policy said no); the mempool never holds
more than ``limits.MEMPOOL_MAX_TXS``; p99 latency of the flood's answers and
of /api/status under ``P99_BOUND_S`` (a liveness bound: a starved loop or a
lock held across the flood breaks it, a slow box does not); the node's
resident memory grows by less than ``RSS_GROWTH_BOUND`` from the first half of
the flood to the second (no per-transaction leak); and once the flood stops
every pooled transfer is mined.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from consensus.header import hex_to_hash
from consensus.tx import Transfer, chain_tag, encode_tx, sign_tx
from node import limits
from node.keystore_file import write_keystore
from tests.conftest import until
from tests.node.test_restart import free_port
from tests.reliability import sized
from wallet import KeyPair, address_bytes, address_of, keypair_from_seed

TXS = sized(1_000, 10_000)
CONNECTIONS = sized(50, 200)
PER_SENDER = limits.MEMPOOL_MAX_PER_SENDER
SENDERS = TXS // PER_SENDER
FUNDING = 1_000  # base units each sender gets: 25 transfers of 1 plus a fee of 1
P99_BOUND_S = 5.0
RSS_GROWTH_BOUND = 0.15  # of the resident size after the first half
RSS_SLACK_BYTES = 48 << 20  # allocator noise: arenas, the numba cache, SQLite's page cache
DRAIN_S = sized(120, 600)
STARTUP_S = 60.0
PASSWORD = "load-test-password"


def key(i: int) -> KeyPair:
    return keypair_from_seed(i.to_bytes(4, "big") * 8)


MINER = key(0)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Api:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session

    async def get(self, path: str) -> Any:
        async with self.session.get(self.url + path) as resp:
            assert resp.status == 200, f"GET {path}: {resp.status} {await resp.text()}"
            return await resp.json()

    async def post_tx(self, raw: bytes, session: aiohttp.ClientSession | None = None) -> int:
        async with (session or self.session).post(self.url + "/api/tx", json={"tx": raw.hex()}) as resp:
            await resp.read()
            return resp.status


def transfer(sender: KeyPair, nonce: int, to: bytes, amount: int, tag: bytes) -> bytes:
    return encode_tx(sign_tx(Transfer(sender.public, nonce, to, amount, 1), sender, tag))


async def fund(api: Api, senders: Sequence[KeyPair], tag: bytes) -> None:
    """The miner pays every sender, PER_SENDER transfers per block (its own pending limit)."""
    miner = address_of(MINER.public)
    await until(lambda: height_at_least(api, 2), 60, what="the miner's first rewards")
    for start in range(0, len(senders), PER_SENDER):
        nonce = (await api.get(f"/api/accounts/{miner}"))["nonce"]
        batch = senders[start : start + PER_SENDER]
        for i, sender in enumerate(batch):
            status = await api.post_tx(transfer(MINER, nonce + i, address_bytes(sender.public), FUNDING, tag))
            assert status == 202, f"funding transfer refused: {status}"
        funded = nonce + len(batch)
        await until(lambda n=funded: nonce_at_least(api, miner, n), 60, what="the funding mined")


async def height_at_least(api: Api, height: int) -> bool:
    return int((await api.get("/api/status"))["height"]) >= height


async def nonce_at_least(api: Api, address: str, nonce: int) -> bool:
    return int((await api.get(f"/api/accounts/{address}"))["nonce"]) >= nonce


async def flood(api: Api, raws: list[bytes], answers: list[tuple[int, float]]) -> None:
    """Send ``raws`` over CONNECTIONS workers, each on its own keep-alive connection."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for raw in raws:
        queue.put_nowait(raw)

    async def worker() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            while not queue.empty():
                raw = queue.get_nowait()
                started = time.perf_counter()
                status = await api.post_tx(raw, session)
                answers.append((status, time.perf_counter() - started))

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))


async def poll_status(api: Api, stop: asyncio.Event, samples: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        status = await api.get("/api/status")
        samples.append((time.perf_counter() - started, int(status["mempool"])))
        await asyncio.sleep(0.05)


def p99(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else max(values, default=0.0)


def test_flood_while_mining_stays_bounded(tmp_path: pathlib.Path) -> None:
    keystore, password_file = tmp_path / "miner.json", tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    write_keystore(keystore, MINER, PASSWORD)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADCHAIN_PASSWORD"}
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - the child's output, for a failure's post-mortem
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "node", "run", "--datadir", str(tmp_path / "d"), "--network", "regtest",
         "--f", "0", "--listen", f"127.0.0.1:{port}", "--mine", "--keystore", str(keystore),
         "--password-file", str(password_file), "--block-interval", "0.5"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        asyncio.run(run_flood(f"http://127.0.0.1:{port}", proc))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, "the node stops cleanly after the flood"


async def run_flood(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        api = Api(url, session)

        async def answering() -> bool:
            try:
                return bool(await api.get("/api/status"))
            except (aiohttp.ClientError, OSError):
                return False

        await until(answering, STARTUP_S, interval=0.2, what="the node to answer")
        status = await api.get("/api/status")
        tag = chain_tag(int(status["chain_id"]), hex_to_hash(str(status["genesis"])))  # what signatures bind
        senders = [key(i) for i in range(1, SENDERS + 1)]
        await fund(api, senders, tag)
        sink = address_bytes(key(10**6).public)
        raws = [transfer(s, n, sink, 1, tag) for n in range(PER_SENDER) for s in senders]
        answers: list[tuple[int, float]] = []
        samples: list[tuple[float, int]] = []
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_status(api, stop, samples))
        half = len(raws) // 2
        await flood(api, raws[:half], answers)
        rss_half = rss_bytes(proc.pid)
        await flood(api, raws[half:], answers)
        rss_end = rss_bytes(proc.pid)
        stop.set()
        await poller
        assert proc.poll() is None, "the node is still running"
        codes = {code for code, _ in answers}
        pooled = sum(code == 202 for code, _ in answers)
        print(f"flood of {len(raws)} txs over {CONNECTIONS} connections: answers {sorted(codes)}, {pooled} pooled; "
              f"p99 {p99([t for _, t in answers]):.3f}s (tx), {p99([t for t, _ in samples]):.3f}s (status); "
              f"mempool max {max(m for _, m in samples)}; rss {rss_half >> 20} -> {rss_end >> 20} MiB")
        assert len(answers) == len(raws) and codes <= {202, 409}, f"unexpected answers {codes}"
        assert pooled >= len(raws) // 2, "most of the flood was pooled"
        assert max(m for _, m in samples) <= limits.MEMPOOL_MAX_TXS
        assert p99([t for _, t in answers]) < P99_BOUND_S and p99([t for t, _ in samples]) < P99_BOUND_S
        assert rss_end <= rss_half * (1 + RSS_GROWTH_BOUND) + RSS_SLACK_BYTES, "memory grew with the flood"
        await until(lambda: mempool_empty(api), DRAIN_S, interval=0.5, what="the miner to drain the mempool")


async def mempool_empty(api: Api) -> bool:
    return int((await api.get("/api/status"))["mempool"]) == 0
