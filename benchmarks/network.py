"""Block propagation and late-joiner sync between real nodes on loopback (regtest).

Propagation: N in-process regtest nodes (each its own datadir, HTTP port and
chain thread, all in this one process and event loop) are connected in a
line ``n0 - n1 - ... - n(N-1)``, the worst case for a graph of N nodes: every
block crosses N - 1 hops, announce then fetch at each. The nodes run with
``dial_learned=False``: they still learn each other's addresses by gossip but
dial only their seeds, so the line stays a line, and the benchmark checks
after every block that each node's peers are exactly its neighbours. Node 0
mines blocks one at a time with the on-demand regtest miner; a tip listener
on every node records when it connected each block. A block's latency is the
time from its connection on node 0 to its connection on the last node.

The floor, measured in the same run: per hop, one loopback HTTP fetch of the
same block's bytes (aiohttp server and client, as the nodes use) plus one
accept (decode and ``ChainState.accept_block`` of that block on a fresh
datadir, with its disk sync); a block cannot cross the line faster than
hops x that. ratio = floor / measured.

Sync: node ``a`` mines a chain of empty blocks, then a fresh node starts with
``--peer a`` and the clock runs until it holds the same tip (headers first,
then bodies in batches, each block validated and stored). The baseline is
``chain verify`` replaying the same chain on ``a`` (read, decode, validate:
no network, no writes), run right after in the same process; ratio = sync
speed / replay speed, so 1.0 would mean the network and storage cost nothing.

Everything runs in one process on loopback, so these figures measure the
node software (serialization, validation, storage, asyncio scheduling), not a
network: on two shared cores all nodes also compete for the same CPU.
"""

from __future__ import annotations

import asyncio
import pathlib
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks.common import Headline, save_figure, write_result
from consensus.block import decode_block
from ml.tasks import builtin_task
from node.chainstate import ChainState
from node.service import Node
from node.verify import verify_chain
from tests.node.harness import Cluster, connect_line, mine, wait_same_tip

NETWORK = "regtest"
TASK = "digits"  # the harness's default task: the floor's fresh datadir has the same genesis
FETCH_REPEATS = 50
PROPAGATION_TIMEOUT_S = 60.0  # a block that takes longer is an error, not a sample
SYNC_TIMEOUT_S = 600.0
PERCENTILES = 100  # statistics.quantiles cut points: index 49 is p50, 98 is p99
MS_PER_S = 1000.0
WARMUP_BLOCKS = 2  # first blocks open connections and warm caches: not timed
POLL_S = 0.005  # how often the benchmark checks whether every node has a block


@dataclass(frozen=True)
class Sizes:
    """Node counts and block counts: small in quick mode so the run takes seconds."""

    node_counts: tuple[int, ...]
    propagation_blocks: int
    sync_blocks: int


FULL = Sizes(node_counts=(3, 5, 8), propagation_blocks=60, sync_blocks=1000)
QUICK = Sizes(node_counts=(3,), propagation_blocks=6, sync_blocks=30)


async def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def check_line(nodes: list[Node]) -> None:
    """Raise unless every node's peers are exactly its neighbours on the line."""
    for index, node in enumerate(nodes):
        expected = {nodes[j].url for j in (index - 1, index + 1) if 0 <= j < len(nodes)}
        if set(node.peers.peers) != expected:
            raise RuntimeError(f"the line is no longer a line: n{index} peers with {sorted(node.peers.peers)}, "
                               f"expected {sorted(expected)}")


async def propagation(base: pathlib.Path, n_nodes: int, blocks: int) -> tuple[list[float], list[bytes]]:
    """Seconds from each block's connection on node 0 to its connection on every node, and the blocks."""
    cluster = Cluster(base / f"prop{n_nodes}")
    try:
        nodes = await cluster.start_many(n_nodes, dial_learned=False)
        await connect_line(nodes)
        arrivals: list[dict[bytes, float]] = [{} for _ in nodes]

        def recorder(seen: dict[bytes, float], node: Node) -> None:
            node.on_tip_change(lambda: seen.setdefault(node.chain.tip.hash, time.perf_counter()))

        for seen, node in zip(arrivals, nodes, strict=True):
            recorder(seen, node)
        latencies = []
        for index in range(WARMUP_BLOCKS + blocks):
            (block_hash,) = await mine(nodes[0], 1)
            await _wait_for(lambda h=block_hash: all(h in seen for seen in arrivals),
                            PROPAGATION_TIMEOUT_S, f"block {index + 1} on all {n_nodes} nodes")
            check_line(nodes)
            if index >= WARMUP_BLOCKS:
                origin = arrivals[0][block_hash]
                latencies.append(max(seen[block_hash] for seen in arrivals[1:]) - origin)
        main = await nodes[0].run_chain(lambda: list(nodes[0].chain.main[1:]))
        raws = [await nodes[0].run_chain(nodes[0].chain.get_raw_block, h) for h in main]
        return latencies, [raw for raw in raws if raw is not None]
    finally:
        await cluster.stop()


async def loopback_fetch_s(body: bytes) -> list[float]:
    """Seconds per HTTP GET of ``body`` from an aiohttp server on loopback, in this event loop."""

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/block", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        samples = []
        async with aiohttp.ClientSession() as session:
            for _ in range(FETCH_REPEATS + 1):
                start = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}/block") as reply:
                    if await reply.read() != body:
                        raise RuntimeError("the loopback fetch returned other bytes")
                samples.append(time.perf_counter() - start)
        return samples[1:]  # the first opens the connection
    finally:
        await runner.cleanup()


def accept_s(base: pathlib.Path, raws: list[bytes]) -> list[float]:
    """Seconds per decode + accept_block of each block, in order, on a fresh datadir."""
    chain = ChainState.create(base / "accept-floor", NETWORK, builtin_task(TASK))
    try:
        samples = []
        for raw in raws:
            start = time.perf_counter()
            block = decode_block(raw)
            outcome = chain.accept_block(block, now=block.header.time)
            samples.append(time.perf_counter() - start)
            if outcome.status != "connected":
                raise RuntimeError(f"floor: block at height {outcome.height} was {outcome.status}")
        return samples
    finally:
        chain.close()


async def hop_floor(base: pathlib.Path, raws: list[bytes]) -> dict[str, float]:
    """The least one hop can take: the fastest loopback fetch of a block plus the fastest accept.

    Minima, not medians: a floor is what the work can take, and on a shared
    machine other processes only ever add to a sample.
    """
    fetch = await loopback_fetch_s(raws[len(raws) // 2])
    accepts = accept_s(base, raws)
    return {"fetch_s": min(fetch), "accept_s": min(accepts), "hop_s": min(fetch) + min(accepts),
            "fetch_median_s": statistics.median(fetch), "accept_median_s": statistics.median(accepts),
            "block_bytes": float(len(raws[0]))}


async def late_joiner(base: pathlib.Path, blocks: int) -> dict[str, float]:
    """Seconds for a fresh node to sync ``blocks`` blocks from one peer, and the replay baseline."""
    cluster = Cluster(base / "sync")
    try:
        source = await cluster.start("a")
        t0 = time.perf_counter()
        await mine(source, blocks)
        mine_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        joiner = await cluster.start("j", peers=[source])
        await wait_same_tip([source, joiner], timeout=SYNC_TIMEOUT_S)
        sync_s = time.perf_counter() - t0
        report = await source.run_chain(verify_chain, source.chain)
        if report.error or report.blocks != blocks:
            raise RuntimeError(f"verify of the source chain failed at {report.failed_height}: {report.error}")
        return {"blocks": float(blocks), "mine_s": mine_s, "sync_s": sync_s, "verify_s": report.seconds}
    finally:
        await cluster.stop()


def quantile_ms(samples: list[float], cut: int) -> float:
    """The ``cut``-th percentile of ``samples`` in milliseconds (inclusive method: fine for few samples)."""
    if len(samples) == 1:
        return samples[0] * MS_PER_S
    return statistics.quantiles(samples, n=PERCENTILES, method="inclusive")[cut - 1] * MS_PER_S


def plot(latencies: dict[int, list[float]], sync: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    counts = sorted(latencies)
    left.boxplot([[s * MS_PER_S for s in latencies[n]] for n in counts], whis=(1, 99))
    left.set_xticks(range(1, len(counts) + 1), [f"{n} nodes\n({n - 1} hops)" for n in counts])
    left.set_ylabel("ms from miner to last node")
    left.set_title("block propagation over a line (whiskers p1-p99)")
    left.grid(True, axis="y", alpha=0.3)
    bps = {"late joiner sync": sync["blocks"] / sync["sync_s"],
           "chain verify replay": sync["blocks"] / sync["verify_s"]}
    right.bar(list(bps), list(bps.values()), color=["tab:blue", "tab:gray"])
    right.set_ylabel("blocks/s")
    right.set_title(f"{int(sync['blocks'])} empty regtest blocks")
    right.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, "network")
    plt.close(fig)


async def measure(sizes: Sizes) -> tuple[dict[int, list[float]], dict[str, float], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="gradchain-bench-net-") as tmp:
        base = pathlib.Path(tmp)
        latencies = {}
        raws: list[bytes] = []
        for n in sizes.node_counts:
            latencies[n], raws = await propagation(base, n, sizes.propagation_blocks)
            print(f"  {n} nodes (line held): p50 {quantile_ms(latencies[n], 50):7.1f} ms  "
                  f"p99 {quantile_ms(latencies[n], 99):7.1f} ms", flush=True)
        floor = await hop_floor(base, raws)
        print(f"  floor per hop: fetch {floor['fetch_s'] * MS_PER_S:.2f} ms + accept "
              f"{floor['accept_s'] * MS_PER_S:.2f} ms ({int(floor['block_bytes'])}-byte blocks)", flush=True)
        sync = await late_joiner(base, sizes.sync_blocks)
        print(f"  late joiner: {sync['blocks'] / sync['sync_s']:.1f} blocks/s  "
              f"(verify replay {sync['blocks'] / sync['verify_s']:.1f} blocks/s)", flush=True)
        return latencies, sync, floor


def run(quick: bool = False) -> list[Headline]:
    sizes = QUICK if quick else FULL
    latencies, sync, floor = asyncio.run(measure(sizes))
    headlines = []
    rows = {}
    for n, samples in latencies.items():
        hops = n - 1
        floor_ms = floor["hop_s"] * hops * MS_PER_S
        name = f"{hops} hops x (loopback fetch + accept), same run"
        figures = {"p50": quantile_ms(samples, 50), "p99": quantile_ms(samples, 99)}
        rows[str(n)] = {"hops": hops, "samples_s": samples, **{f"{k}_ms": v for k, v in figures.items()},
                        "median_ms": statistics.median(samples) * MS_PER_S, "floor_ms": floor_ms}
        headlines += [Headline(f"propagation_{k}_ms_n{n}", v, "ms", name, floor_ms / v, baseline_value=floor_ms,
                               ceiling=name, ceiling_value=floor_ms, of_ceiling=floor_ms / v)
                      for k, v in figures.items()]
    sync_bps = sync["blocks"] / sync["sync_s"]
    verify_bps = sync["blocks"] / sync["verify_s"]
    headlines.append(Headline("propagation_sync_blocks_per_s", sync_bps, "blocks/s",
                              "chain verify replay of the same chain", sync_bps / verify_bps,
                              baseline_value=verify_bps))
    write_result("network", {
        "params": {**asdict(sizes), "topology": "line (dial_learned=False, checked after every block)",
                   "network": NETWORK, "warmup_blocks": WARMUP_BLOCKS, "fetch_repeats": FETCH_REPEATS, "quick": quick,
                   "note": "all nodes in one process on loopback, sharing the machine's cores"},
        "propagation": rows,
        "floor_per_hop": floor,
        "sync": {**sync, "sync_blocks_per_s": sync_bps, "verify_blocks_per_s": verify_bps},
        "headlines": [h.as_dict() for h in headlines],
    })
    plot(latencies, sync)
    return headlines
