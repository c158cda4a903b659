"""Gossip, sync, forks and bans between real nodes on loopback (regtest).

Each test starts in-process nodes through ``tests.node.harness``, mines on
demand, and waits on conditions with deadlines: what it asserts is where the
nodes end up (tips, state roots, peer and ban lists), never how fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time

from consensus.errors import Reject
from consensus.tx import Transfer, encode_tx, sign_tx
from node import limits
from node.mining import make_template
from node.p2p import messages as m
from node.service import Node
from node.storage import BlockStatus
from tests.chainbuilder import recommit
from tests.conftest import until
from tests.node.harness import (
    Cluster,
    FakePeer,
    auth,
    connect,
    connect_line,
    connect_star,
    disconnect,
    get_json,
    http,
    metric,
    mine,
    node_key,
    partition,
    scenario,
    tip_of,
    wait_same_tip,
)
from wallet import address_bytes

LATENCY_BLOCKS = 100  # blocks timed for the propagation figures
JOINER_BLOCKS = 500  # more than 2 * MAX_BLOCKS_IN_FLIGHT_TOTAL: several download rounds
PARTITION_A_BLOCKS = 3
PARTITION_C_BLOCKS = 5
LEARNED_PEERS = 11  # the hub's other peers: more than MAX_OUTBOUND_PEERS for x to learn
CONNECTOR_PASSES = 4  # passes watched after the slots are full (0.5 s each)
COMPETING_HEIGHT = 30  # blocks the racing miners reach: dozens of races, a few seconds


@scenario
async def test_mined_block_reaches_every_node_of_a_star(cluster: Cluster) -> None:
    """A block mined on a leaf crosses the hub to every other leaf.

    ::

        n1   n2          n1 mines one block; n0, n2, n3 must reach it
          \\ /
           n0            (star: the leaves peer only with the hub n0)
           |
           n3

    Address gossip would turn the star into a full mesh within seconds, so
    every node runs ``dial_learned=False`` (dial no learned address) and the test
    asserts the star still holds once the block has arrived everywhere.
    """
    nodes = await cluster.start_many(4, dial_learned=False)
    hub, leaves = nodes[0], nodes[1:]
    await connect_star(hub, leaves)
    # The hub gossips each leaf's address to the others: only the pin keeps them apart.
    await until(lambda: all(o.url in leaf.peers.known for leaf in leaves for o in leaves if o is not leaf),
                15, what="the leaves to learn each other's addresses from the hub")
    (block_hash,) = await mine(leaves[0], 1)
    await wait_same_tip(nodes, target=block_hash)
    assert all(n.chain.height == 1 for n in nodes)
    assert_topology({hub: leaves, **{leaf: [hub] for leaf in leaves}})
    # The block reached n2 and n3 through n0, announce then fetch.
    assert await metric(hub, "gradchain_blocks_received_total") == 1


def assert_topology(links: dict[Node, list[Node]]) -> None:
    """Each node peers with exactly the nodes listed for it (the pinned topology held)."""
    for node, neighbours in links.items():
        assert set(node.peers.peers) == {n.url for n in neighbours}, (
            f"{node.url} peers with {sorted(node.peers.peers)}, expected {sorted(n.url for n in neighbours)}"
        )


@scenario
async def test_block_propagation_latency_over_a_line(cluster: Cluster) -> None:
    """Time from a block's connection on its miner to its connection on the last of 4 nodes.

    ::

        n0 - n1 - n2 - n3      n0 mines 100 blocks one at a time; each must cross 3 hops

    The figures are printed (``pytest -s``), never asserted: speed belongs to
    benchmarks. What is asserted is that all 100 blocks arrive everywhere.
    """
    nodes = await cluster.start_many(4, dial_learned=False)  # keep the line a line: no shortcut links
    await connect_line(nodes)
    arrivals: dict[int, dict[bytes, float]] = {i: {} for i in range(len(nodes))}

    def recorder(i: int, node: Node) -> None:
        node.on_tip_change(lambda: arrivals[i].setdefault(node.chain.tip.hash, time.perf_counter()))

    for i, n in enumerate(nodes):
        recorder(i, n)
    latencies = []
    for _ in range(LATENCY_BLOCKS):
        (block_hash,) = await mine(nodes[0], 1)
        # The tip listeners run on the loop just after each chain thread connects the block.
        await until(lambda h=block_hash: all(h in seen for seen in arrivals.values()), 30,
                    what="every node to connect the block")
        origin = arrivals[0][block_hash]
        latencies.append(max(arrivals[i][block_hash] for i in range(1, len(nodes))) - origin)
    assert all(n.chain.height == LATENCY_BLOCKS for n in nodes)
    assert_topology({n: [m for m in nodes[max(0, i - 1) : i + 2] if m is not n] for i, n in enumerate(nodes)})
    cuts = statistics.quantiles(latencies, n=100)
    print(f"\nblock propagation over 3 hops, {LATENCY_BLOCKS} blocks: "
          f"p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")


@scenario
async def test_late_joiner_syncs_500_blocks_headers_first(cluster: Cluster) -> None:
    """A node started with --peer after 500 blocks reaches the same tip and state root.

    ::

        genesis - 1 - 2 - ... - 500     (node a, mined before j exists)
                                          j starts empty with --peer a

    The joiner fetches headers first (one GetHeaders round for 500 < 2000),
    then downloads the bodies in batches, in order.
    """
    a = await cluster.start("a")
    await mine(a, JOINER_BLOCKS)
    joiner = await cluster.start("j", peers=[a])
    await wait_same_tip([a, joiner], timeout=120)
    assert tip_of(joiner) == tip_of(a)
    assert joiner.chain.best_header.hash == a.chain.tip.hash
    # Headers first: a served the joiner headers, then bodies in batches of at most 16.
    assert await served(a, "/p2p/headers") >= 1
    assert await served(a, "/p2p/blocks") >= JOINER_BLOCKS // limits.MAX_BLOCKS_PER_REQUEST
    assert joiner.peers.is_banned(a.url) is False


@scenario
async def test_partitions_reconnect_on_the_most_work_tip(cluster: Cluster) -> None:
    """Two partitions mine apart, then reconnect; everyone ends on the longer branch.

    ::

        genesis - a1 - a2 - a3                  (a, b: 3 blocks)
                \\ c1 - c2 - c3 - c4 - c5       (c, d: 5 blocks, more work)

    b is told to peer with c (POST /api/peers with the cookie token); a and b
    must reorg onto c5, and all four end with the same state root.
    """
    a, b, c, d = await cluster.start_many(4)
    await connect(a, b)
    await connect(c, d)
    await mine(a, 2)
    await wait_same_tip([a, b])
    await mine(b, 1)  # on a's two blocks: b mines only once it has them
    await wait_same_tip([a, b])
    await mine(c, 3)
    await wait_same_tip([c, d])
    await mine(d, 2)
    await wait_same_tip([c, d])
    assert a.chain.height == PARTITION_A_BLOCKS and c.chain.height == PARTITION_C_BLOCKS
    winner = c.chain.tip.hash
    async with http() as session:
        async with session.post(f"{b.url}/api/peers", json={"url": c.url}, headers=auth(b)) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["connected"] is True
    await wait_same_tip([a, b, c, d], target=winner)
    assert await metric(a, "gradchain_reorgs_total") == 1 and await metric(b, "gradchain_reorgs_total") == 1
    # The losing branch's blocks are still stored, off the main chain.
    assert all(n.chain.height == PARTITION_C_BLOCKS for n in (a, b, c, d))
    # The network keeps going on the merged chain.
    (after,) = await mine(a, 1)
    await wait_same_tip([a, b, c, d], target=after)


@scenario
async def test_branch_known_by_headers_only_connects_when_it_grows(cluster: Cluster) -> None:
    """A tied branch whose headers b holds (bodies not fetched) connects once it pulls ahead.

    ::

        genesis - b1 - b2               (b's tip; a's headers a1, a2 tie with it: no bodies fetched)
                \\ a1 - a2 - a3         (a mines a3: b must fetch a1, a2 and reorg)

    Before the fix b stored a3 as a side block, waiting forever for bodies it
    never asked for: every later block of a's branch met the same fate.
    """
    a, b = await cluster.start_many(2)
    await mine(a, 2)
    await mine(b, 2)
    await connect(b, a)  # equal heights: neither side syncs on the handshake
    await b.peers.sync_from(a.url)  # headers a1, a2 arrive; equal work, so no bodies
    assert b.chain.index[a.chain.tip.hash].status == BlockStatus.HEADER
    assert b.chain.tip.hash != a.chain.tip.hash
    (a3,) = await mine(a, 1)
    await wait_same_tip([a, b], target=a3, timeout=20)
    assert await metric(b, "gradchain_reorgs_total") == 1


@scenario
async def test_competing_miner_threads_converge(cluster: Cluster) -> None:
    """Three mining threads race on a line, forking often; one more block settles them all.

    ::

        m0 - m1 - m2     each mines with its Miner thread (50 ms pause after a block)
                         until all pass height 30; then the threads stop, the node
                         with the most work mines 1 block on demand (breaking any
                         tie) and all must agree on it
    """
    nodes = [await cluster.start(f"m{i}", mine=True, min_block_interval_s=0.05) for i in range(3)]
    await connect_line(nodes)
    await until(lambda: min(n.chain.height for n in nodes) >= COMPETING_HEIGHT, 60,
                what=f"every miner past height {COMPETING_HEIGHT}")
    loop = asyncio.get_running_loop()
    for n in nodes:
        await loop.run_in_executor(None, n.miner.stop)
    # With the threads stopped, one block on the most-work tip is strictly the best chain.
    leader = max(nodes, key=lambda n: n.chain.tip.chain_work)
    (last,) = await mine(leader, 1)
    await wait_same_tip(nodes, target=last, timeout=30)


@scenario
async def test_transfer_on_the_losing_branch_is_mined_by_the_winners(cluster: Cluster) -> None:
    """A tx confirmed only on the losing branch goes back to every mempool and confirms again.

    ::

        genesis - 1 - a2[tx] - a3          (a - b: a's transfer confirmed in a2)
                    \\ c2 - c3 - c4        (c - d: never saw the tx; more work)

    After b links to c, a and b reorg and pool the tx again; c and d, which
    only ever could have learned it loose, must get it announced, and a block
    mined by d confirms it.
    """
    a, b, c, d = await cluster.start_many(4, dial_learned=False)  # no link around the cut
    await connect_line([a, b, c, d])
    await mine(a, 1)  # a's reward pays for the transfer on both branches
    await wait_same_tip([a, b, c, d])
    partition([a, b], [c, d])
    tx = transfer_tx(a, amount=1000)
    tx_id = await a.submit_tx(encode_tx(tx), source=None)
    await mine(a, 2)
    await wait_same_tip([a, b])
    assert tx_id not in a.mempool and tx_id not in c.mempool
    await mine(c, 3)
    await wait_same_tip([c, d])
    await connect(b, c)
    await wait_same_tip([a, b, c, d], target=c.chain.tip.hash)
    await until(lambda: all(tx_id in n.mempool for n in (a, b, c, d)), 15, what="the tx in every mempool")
    (confirming,) = await mine(d, 1)
    await wait_same_tip([a, b, c, d], target=confirming)
    assert tx_id in d.chain.get_block(confirming).txids
    assert all(len(n.mempool) == 0 for n in (a, b, c, d))


@scenario
async def test_learned_addresses_fill_only_the_outbound_slots(cluster: Cluster) -> None:
    """A node that learns 12 addresses from its seed opens at most MAX_OUTBOUND_PEERS links.

    ::

        o0 ... o10 ──> hub <── x (--peer hub)     the hub's handshake reply lists
                                                   its 11 other peers; x dials 8 in all

    Every pass of x's connector is checked while it runs: it never asks for
    more dials than there are free outbound slots.
    """
    hub = await cluster.start("hub")

    def no_relay(addrs: list[str], *, exclude: str) -> None:
        """The hub does not introduce x to the others: they would dial x first."""

    hub.peers.gossip.relay_addresses = no_relay  # type: ignore[method-assign]
    # The others dial nobody they learn of (dial_learned=False): otherwise one that learns x's address
    # first dials x, takes no slot of x's (inbound), and x can never fill its eight.
    others = await cluster.start_many(LEARNED_PEERS, prefix="o", dial_learned=False)
    for other in others:
        await connect(other, hub)
    passes: list[int] = []
    x = await cluster.start("x", peers=[hub])
    choose = x.peers.conns.dial_candidates

    def checked(now: float) -> list[str]:
        picked = choose(now)
        outbound = sum(1 for p in x.peers.peers.values() if p.outbound)
        assert outbound + len(x.peers.conns.connecting) + len(picked) <= limits.MAX_OUTBOUND_PEERS
        passes.append(outbound)
        return picked

    x.peers.conns.dial_candidates = checked  # type: ignore[method-assign]
    outbound = lambda: sum(1 for p in x.peers.peers.values() if p.outbound)  # noqa: E731
    await until(lambda: outbound() == limits.MAX_OUTBOUND_PEERS, 20, what="x to fill its outbound slots")
    seen = len(passes)
    await until(lambda: len(passes) >= seen + CONNECTOR_PASSES, 20, what="more connector passes")
    assert outbound() == limits.MAX_OUTBOUND_PEERS
    assert len(x.peers.known) > limits.MAX_OUTBOUND_PEERS, "x knew more addresses than it dialled"


def transfer_tx(node: Node, amount: int) -> Transfer:
    """``node``'s next transfer (nonce 0 here) of ``amount`` to a fixed test recipient."""
    to = address_bytes(node_key("recipient").public)
    tx = sign_tx(Transfer(node.keypair.public, 0, to, amount, 0), node.keypair, node.chain.signing_tag)
    assert isinstance(tx, Transfer)
    return tx


async def served(node: Node, route: str) -> int:
    """How many requests ``node`` answered on ``route`` (its latency histogram, read from /metrics)."""
    return int(await metric(node, "gradchain_request_seconds_count", route=route))


@scenario
async def test_peer_serving_an_invalid_block_is_banned(cluster: Cluster) -> None:
    """A fake peer announces a block with a wrong state root; b bans it and goes on.

    ::

        genesis - 1 - 2 - 3 - 4 - 5       (a - b - c, honest)
                          \\ X           (the fake's block on 3: wrong state root)

    The fake is a tiny aiohttp server of this test (``FakePeer``): it
    handshakes with b, announces X and serves it (``send_blocks``). b must
    reject X (BAD_STATE_ROOT), list the fake in /api/peers ``banned``, refuse
    its next message (403), and keep following a's blocks 4 and 5.
    """
    a, b, c = await cluster.start_many(3)
    await connect_line([a, b, c])
    await mine(a, 3)
    await wait_same_tip([a, b, c])
    template = await b.run_chain(make_template, b)
    bad = recommit(template, template.txs, state_root=bytes.fromhex("ab" * 32))
    async with FakePeer(b) as fake, http() as session:
        await fake.send_blocks([bad], expect=Reject.BAD_STATE_ROOT)
        assert await metric(b, "gradchain_blocks_rejected_total", reason=Reject.BAD_STATE_ROOT.value) == 1
        status, listing = await get_json(session, f"{b.url}/api/peers")
        assert fake.url not in [p["url"] for p in listing["peers"]]
        # A banned peer is refused at the door, even with a well-formed message.
        announce = m.encode(m.Announce(blocks=(bad.hash,), txs=()))
        assert (await fake.post(session, "announce", announce))[0] == 403
        assert await fake.handshake(session) == 403
    assert not b.chain.has_block(bad.hash) and b.chain.height == 3
    # The honest nodes keep going, through b.
    hashes = await mine(a, 2)
    await wait_same_tip([a, b, c], target=hashes[-1])
    assert not a.peers.is_banned(b.url) and not c.peers.is_banned(b.url)


@scenario
async def test_disconnected_nodes_do_not_redial_without_a_seed(cluster: Cluster) -> None:
    """The harness's partition really partitions: a block on one side stays there.

    ::

        a - b   (linked, then cut)     a mines 1: b must stay at 0 until re-linked
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    disconnect(a, b)
    (block_hash,) = await mine(a, 1)
    assert b.chain.height == 0 and a.url not in b.peers.peers
    await connect(b, a)
    await wait_same_tip([a, b], target=block_hash)


@scenario
async def test_mempool_reaches_a_peer_that_connects_later(cluster: Cluster) -> None:
    """A tx pooled before any peer existed is announced at the handshake.

        a (holds tx) ... b connects later -> b's mempool has the tx
    """
    a = await cluster.start("a", byzantine_f=0)
    await mine(a, 1)
    tx = sign_tx(Transfer(a.keypair.public, 0, address_bytes(node_key("payee").public), 1_000, 1),
                 a.keypair, a.chain.signing_tag)
    tx_id = await a.submit_tx(encode_tx(tx), source=None)
    b = await cluster.start("b", byzantine_f=0)
    await connect(a, b)
    await until(lambda: tx_id in b.mempool, 15, what="b to learn a's pooled tx")


@scenario
async def test_a_restarted_peer_with_new_tokens_keeps_gossiping(cluster: Cluster) -> None:
    """b restarts (same URL, new session tokens); a's stale token is refused, and both re-handshake.

    ::

        a - b            linked; b stops and starts again on its port with no --peer
        a mines 1        a's announce carries b's old token: 403 "handshake first",
                         a re-handshakes, b calls a back, b fetches the block
        b mines 1        and gossip runs the other way too
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    old_token = a.peers.session_for(b.url).token_out
    b_port = b.config.port
    await cluster.stop_node(b)
    b = await cluster.start("n1", port=b_port)
    assert a.url not in b.peers.peers
    (first,) = await mine(a, 1)
    await wait_same_tip([a, b], target=first)
    await until(lambda: b.url in a.peers.peers and a.url in b.peers.peers, 15, what="a and b to peer again")
    assert a.peers.session_for(b.url).token_out not in (None, old_token)
    (second,) = await mine(b, 1)
    await wait_same_tip([a, b], target=second)
    assert not a.peers.is_banned(b.url) and not b.peers.is_banned(a.url)


@scenario
async def test_nodes_given_one_seed_find_each_other(cluster: Cluster) -> None:
    """b and c only know the seed a; address gossip connects them directly.

        b -> a <- c      becomes      b - a - c
                                       \\_____/
    """
    a = await cluster.start("a")
    # The seed lists no peers in its handshake replies (as when b and c dial it at
    # the same moment): only address gossip can introduce them.
    plain_reply = a.peers.conns.handshake_reply
    a.peers.conns.handshake_reply = lambda session=m.NO_SESSION: dataclasses.replace(  # type: ignore[method-assign]
        plain_reply(session), peers=()
    )
    b = await cluster.start("b", peers=[a])
    await until(lambda: a.url in b.peers.peers, 15, what="b to reach the seed")
    c = await cluster.start("c", peers=[a])
    await until(lambda: c.url in b.peers.peers and b.url in c.peers.peers, 20,
                what="b and c to peer without being told about each other")


@scenario
async def test_peers_that_dialled_us_stay_inbound(cluster: Cluster) -> None:
    """The call-back that verifies a dialler's session takes no outbound slot.

        o0 ... o8 ──> hub      the hub has 9 inbound peers and 0 outbound
    """
    hub = await cluster.start("hub")
    others = await cluster.start_many(9, prefix="o", peers=[hub])
    await until(lambda: all(o.url in hub.peers.peers for o in others), 30, what="9 peers at the hub")
    assert not any(p.outbound for p in hub.peers.peers.values())
    assert len(hub.peers.conns.dial_candidates(time.time())) == 0  # nothing to dial: its slots are free, no seeds
