"""Helpers for scenario tests: real nodes in this process, on loopback, regtest.

Every node listens on 127.0.0.1 with a port the OS picks, keeps its data in
its own temporary directory and holds a deterministic key, so a test can
mine on it on demand with :func:`mine` (``node.mining.mine_blocks``) rather
than run a miner thread whose timing it cannot control.

Scenario tests are plain ``async def`` functions wrapped by :func:`scenario`,
which runs them in a fresh event loop and always stops every node they
started, so a failing assertion never leaves sockets or threads behind.

A test checks what a node did through its public surface (the JSON API and
the /metrics text, :func:`events`, :func:`metric`), never through the
node's objects. :meth:`FakePeer.send_blocks` is Bitcoin Core's
``send_blocks_and_test``: one line sends blocks from a peer and checks the
outcome, ``await fake.send_blocks([block], expect=Reject.BAD_COINBASE)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import pathlib
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Self

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from consensus.block import Block
from consensus.errors import NOT_PUNISHED, Reject
from consensus.header import hash_hex
from node import limits
from node.config import NodeConfig
from node.mining import mine_blocks
from node.p2p import messages as m
from node.p2p.netgroups import ban_key
from node.p2p.session import CONTENT_TYPE, PEER_HEADER, SESSION_HEADER
from node.service import Node
from tests.conftest import until
from wallet import KeyPair, keypair_from_seed

# The tip each node's loop has finished handling (announce, metrics, events): the
# chain thread switches ``chain.main`` a moment before the loop runs the tip
# listeners, so "same tip" waits for both.
_SETTLED: weakref.WeakKeyDictionary[Node, bytes] = weakref.WeakKeyDictionary()

CONNECT_TIMEOUT_S = 15.0  # a handshake on loopback takes milliseconds; the slack is for a loaded CI box
SYNC_TIMEOUT_S = 60.0  # generous: the chain worker validates each block's state root in Python
HTTP_TIMEOUT_S = 30.0  # one API call; a predict over the whole test split is the slowest


def node_key(name: str) -> KeyPair:
    """The deterministic key of the test node called ``name``."""
    return keypair_from_seed(hashlib.sha256(b"gradchain-scenario-node-" + name.encode()).digest())


def config(base: pathlib.Path, name: str, **overrides: Any) -> NodeConfig:
    """A regtest NodeConfig with its own datadir ``base/name`` and an OS-chosen port."""
    fields: dict[str, Any] = {
        "network": "regtest", "host": "127.0.0.1", "port": 0, "keypair": node_key(name), **overrides
    }
    return NodeConfig(datadir=base / name, **fields)


class Cluster:
    """The nodes one scenario started; :meth:`stop` stops each of them once."""

    def __init__(self, base: pathlib.Path) -> None:
        self.base = base
        self.nodes: list[Node] = []

    async def start(self, name: str, *, peers: Sequence[str | Node] = (), **overrides: Any) -> Node:
        """Start node ``name`` (datadir ``base/name``) with a key; ``peers`` become ``--peer`` URLs."""
        urls = [p.url if isinstance(p, Node) else p for p in peers]
        node = Node(config(self.base, name, peers=urls, **overrides))
        self.nodes.append(node)
        await node.start()
        _SETTLED[node] = node.chain.tip.hash
        node.on_tip_change(lambda: _SETTLED.__setitem__(node, node.chain.tip.hash))
        return node

    async def start_many(self, count: int, *, prefix: str = "n", **overrides: Any) -> list[Node]:
        """Start ``count`` nodes one after another (each start opens a datadir and a port)."""
        return [await self.start(f"{prefix}{i}", **overrides) for i in range(count)]

    async def stop_node(self, node: Node) -> None:
        """Stop ``node`` cleanly (datadir lock released) and forget it."""
        if node in self.nodes:
            self.nodes.remove(node)
            await node.stop()

    async def stop(self) -> None:
        for node in list(reversed(self.nodes)):
            with contextlib.suppress(Exception):
                await self.stop_node(node)


def scenario(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run ``async def test(cluster, ...)`` in its own loop with a :class:`Cluster` on ``tmp_path``.

    The wrapped test takes ``tmp_path`` (and any other fixture it names after
    ``cluster``); every node started through the cluster is stopped at the end.
    """

    @functools.wraps(fn)
    def run(tmp_path: pathlib.Path, *args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            cluster = Cluster(tmp_path)
            try:
                await fn(cluster, *args, **kwargs)
            finally:
                await cluster.stop()

        asyncio.run(main())

    # pytest reads fixture names from the signature: tmp_path replaces the cluster.
    import inspect

    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    tmp = inspect.Parameter("tmp_path", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    run.__signature__ = sig.replace(parameters=[tmp, *params[1:]])  # type: ignore[attr-defined]
    return run


# -- topology ---------------------------------------------------------------------------------
async def connect(a: Node, b: Node, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """``a`` handshakes with ``b``; returns once each lists the other as a peer (lifting a partition)."""
    for x, y in ((a, b), (b, a)):
        x.peers.bans.unban(ban_key(y.url))
    await a.peers.connect(b.url)
    await until(lambda: b.url in a.peers.peers and a.url in b.peers.peers, timeout,
                what=f"{a.url} and {b.url} to peer")


async def connect_line(nodes: Sequence[Node]) -> None:
    """n0 - n1 - n2 - ...: every block crosses each hop."""
    for a, b in zip(nodes, nodes[1:], strict=False):
        await connect(a, b)


async def connect_star(hub: Node, leaves: Sequence[Node]) -> None:
    """Every leaf peers with ``hub`` only."""
    for leaf in leaves:
        await connect(leaf, hub)


def disconnect(a: Node, b: Node) -> None:
    """Cut the link both ways and keep it cut until :func:`connect` joins them again.

    Each forgets the other's address and refuses it (a ban that ``connect``
    lifts), so neither redials the other or learns it back by gossip.
    """
    for x, y in ((a, b), (b, a)):
        x.peers.drop(y.url, "test partition")
        x.peers.known.discard(y.url)
        if y.url in x.peers.seeds:
            x.peers.seeds.remove(y.url)
        x.peers.bans.ban(ban_key(y.url), time.time())


def partition(left: Sequence[Node], right: Sequence[Node]) -> None:
    """No node of ``left`` talks to one of ``right`` until a :func:`connect` across."""
    for a in left:
        for b in right:
            disconnect(a, b)


# -- chain ---------------------------------------------------------------------------------------
async def mine(node: Node, count: int) -> list[bytes]:
    """Mine ``count`` blocks on ``node`` now (regtest: a few hashes each)."""
    return await mine_blocks(node, count)


def tip_of(node: Node) -> tuple[int, bytes, bytes]:
    """(height, tip hash, state root): what two synced nodes agree on."""
    chain = node.chain
    return chain.height, chain.tip.hash, chain.state.root


def describe(nodes: Sequence[Node]) -> str:
    return ", ".join(f"{n.url} h={n.chain.height} {hash_hex(n.chain.tip.hash)[:12]}" for n in nodes)


async def wait_same_tip(nodes: Sequence[Node], timeout: float = SYNC_TIMEOUT_S,
                        target: bytes | None = None) -> None:
    """Wait until every node has the same tip (``target`` if given) and state root."""
    def agreed() -> bool:
        tips = {tip_of(n) for n in nodes}
        settled = all(_SETTLED.get(n) == n.chain.tip.hash for n in nodes)
        return settled and len(tips) == 1 and (target is None or next(iter(tips))[1] == target)

    try:
        await until(agreed, timeout, what="the same tip everywhere")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {describe(nodes)}") from None


async def wait_height(node: Node, height: int, timeout: float = SYNC_TIMEOUT_S) -> None:
    await until(lambda: node.chain.height >= height, timeout, what=f"{node.url} to reach height {height}")


# -- HTTP -------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def http(local_host: str | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for API and /p2p/ calls from the test (from ``local_host`` if given)."""
    connector = aiohttp.TCPConnector(local_addr=(local_host, 0) if local_host else None)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
                                     connector=connector) as session:
        yield session


def token_of(node: Node) -> str:
    """The control-route token the node wrote to DATADIR/.cookie."""
    return node.config.cookie_path.read_text().strip()


def auth(node: Node) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_of(node)}"}


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


# -- a peer played by hand ---------------------------------------------------------------------------
class FakePeer:
    """A peer the test drives by hand: a tiny aiohttp server that speaks the token handshake.

    It issues ``token_in`` to the node in its Handshake, answers the node's
    call-back handshake (granting ``token_in`` to a caller that presents it),
    and keeps the token the node granted as ``token_out``. ``routes`` adds
    handlers for other /p2p/ routes (``{"blocks": handler}``).
    """

    def __init__(self, node: Node, routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]]
                 | None = None, *, host: str = "127.0.0.1") -> None:
        self.node = node
        self.host = host  # listen here; post from here too (``http(local_host=host)``), or the node won't call back
        self.token_in = secrets.token_bytes(m.SESSION_BYTES)
        self.token_out: bytes | None = None
        self.inventory: dict[bytes, bytes] = {}  # block hash -> bytes, served on /p2p/blocks
        self.app = web.Application(client_max_size=limits.MAX_REQUEST_BODY_BYTES)
        self.app.router.add_post("/p2p/handshake", self._handshake)
        defaults = {"blocks": self._serve_blocks, "headers": self._serve_no_headers}
        for route, handler in {**defaults, **(routes or {})}.items():
            self.app.router.add_post(f"/p2p/{route}", handler)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.url = ""
        self.claimed_height: int | None = None  # the height its handshakes claim (default: the node's)

    async def __aenter__(self) -> Self:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.url = f"http://{self.host}:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def hello(self, session: bytes | None = None) -> m.Handshake:
        chain = self.node.chain
        return m.Handshake(
            magic=chain.network.magic, protocol_version=limits.PROTOCOL_VERSION, chain_id=chain.chain_id,
            genesis=chain.genesis_hash, height=chain.height if self.claimed_height is None else self.claimed_height,
            tip=chain.tip.hash, listen_url=self.url,
            nonce=secrets.randbits(64), user_agent="fake/0.1", session=session or self.token_in,
        )

    async def _handshake(self, request: web.Request) -> web.Response:
        hello = m.decode_as(m.Handshake, await request.read())
        proven = request.headers.get(SESSION_HEADER) == self.token_in.hex()
        if proven:
            self.token_out = hello.session
        reply = m.HandshakeReply(**{f: getattr(self.hello(), f) for f in _HELLO_FIELDS},
                                 session=self.token_in if proven else m.NO_SESSION, peers=())
        return web.Response(body=m.encode(reply), content_type=CONTENT_TYPE)

    def headers(self, token: bytes | None = None) -> dict[str, str]:
        """The headers of a /p2p/ request from this peer (``token`` overrides the granted one)."""
        headers = {"Content-Type": CONTENT_TYPE, PEER_HEADER: self.url}
        presented = token or self.token_out
        if presented is not None:
            headers[SESSION_HEADER] = presented.hex()
        return headers

    async def handshake(self, session: aiohttp.ClientSession) -> int:
        """Handshake with the node; on 200, wait for its call-back to register us and grant a token."""
        async with session.post(f"{self.node.url}/p2p/handshake", data=m.encode(self.hello()),
                                headers={"Content-Type": CONTENT_TYPE}) as resp:
            await resp.read()
            if resp.status != 200:
                return resp.status
        await until(lambda: self.url in self.node.peers.peers and self.token_out is not None,
                    CONNECT_TIMEOUT_S, what=f"{self.node.url} to call the fake peer back")
        return 200

    async def post(self, session: aiohttp.ClientSession, route: str, body: bytes,
                   token: bytes | None = None) -> tuple[int, str]:
        async with session.post(f"{self.node.url}/p2p/{route}", data=body, headers=self.headers(token)) as resp:
            return resp.status, (await resp.read()).decode("utf-8", "replace")

    async def _serve_blocks(self, request: web.Request) -> web.Response:
        wanted = m.decode_as(m.GetBlocks, await request.read())
        found = tuple(self.inventory[h] for h in wanted.hashes if h in self.inventory)
        return web.Response(body=m.encode(m.Blocks(blocks=found)), content_type=CONTENT_TYPE)

    async def _serve_no_headers(self, request: web.Request) -> web.Response:
        return web.Response(body=m.encode(m.Headers(headers=())), content_type=CONTENT_TYPE)

    async def send_blocks(self, blocks: Sequence[Block], *, expect: Reject | None = None,
                          timeout: float = SYNC_TIMEOUT_S) -> None:
        """Offer ``blocks`` to the node as a peer does, and check the outcome through its API.

        The peer handshakes if it has not, announces the blocks' hashes and
        serves them when the node asks. Then, read from GET /api/blocks,
        /api/events and /api/peers:

        * ``expect=None``: the node stores every block and keeps this peer;
        * ``expect=Reject.X``: the node reports a block from this peer
          rejected with X, connects none of the blocks from that one on, and
          bans this peer (every code but the "not yet" ones, which a peer
          cannot be blamed for and which this call does not take).
        """
        if expect in NOT_PUNISHED:
            raise ValueError(f"{expect} is a 'not yet' code: the node neither reports nor punishes it")
        for block in blocks:
            self.inventory[block.hash] = block.encode()
        async with http() as session:
            if self.token_out is None:
                assert await self.handshake(session) == 200, "the node refused the fake peer's handshake"
            announce = m.encode(m.Announce(blocks=tuple(b.hash for b in blocks), txs=()))
            status, text = await self.post(session, "announce", announce)
            assert status == 204, f"announce answered {status}: {text}"
            if expect is None:
                await until(lambda: all_stored(self.node, blocks), timeout,
                            what=f"{self.node.url} to store {len(blocks)} block(s) from {self.url}")
                assert self.url not in (await peers_of(self.node))["banned"]
                return
            rejected = await wait_event(self.node, "rejected", timeout, source=self.url)
            assert rejected.get("reason") == expect.value, f"expected {expect.value}, the node says {rejected}"
            first = next((i for i, b in enumerate(blocks) if hash_hex(b.hash) == rejected.get("hash")), 0)
            status, node_status = await get_json(session, f"{self.node.url}/api/status")
            for block in blocks[first:]:
                assert node_status["tip"] != hash_hex(block.hash)
                status, body = await get_json(session, f"{self.node.url}/api/blocks/{hash_hex(block.hash)}")
                assert status == 404 or body["main_chain"] is False, f"block {hash_hex(block.hash)[:16]} connected"
            await until(lambda: is_banned(self.node, self.url), timeout, what=f"{self.node.url} to ban {self.url}")


_HELLO_FIELDS = ("magic", "protocol_version", "chain_id", "genesis", "height", "tip", "listen_url", "nonce",
                 "user_agent")


# -- the node's public surface ------------------------------------------------------------------------
async def events(node: Node, kind: str | None = None) -> list[dict[str, Any]]:
    """GET /api/events (newest first), only those of ``kind`` if given."""
    async with http() as session:
        status, body = await get_json(session, f"{node.url}/api/events?count=200")
    assert status == 200, body
    return [e for e in body if kind is None or e["kind"] == kind]


async def wait_event(node: Node, kind: str, timeout: float = SYNC_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
    """The newest event of ``kind`` whose fields include ``fields``, waited for with a deadline."""
    found: list[dict[str, Any]] = []

    async def seen() -> bool:
        found[:] = [e for e in await events(node, kind) if all(e.get(k) == v for k, v in fields.items())]
        return bool(found)

    await until(seen, timeout, interval=0.1, what=f"a {kind} event with {fields} at {node.url}")
    return found[0]


async def peers_of(node: Node) -> dict[str, Any]:
    """GET /api/peers: connected peers, known addresses, bans."""
    async with http() as session:
        status, body = await get_json(session, f"{node.url}/api/peers")
    assert status == 200, body
    return dict(body)


async def is_banned(node: Node, url: str) -> bool:
    """Whether GET /api/peers lists ``url`` among the node's bans."""
    return url in (await peers_of(node))["banned"]


async def metric(node: Node, name: str, **labels: str) -> float:
    """A sample from GET /metrics (Prometheus text), 0.0 if the node has not reported it yet."""
    async with http() as session, session.get(f"{node.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def all_stored(node: Node, blocks: Sequence[Block]) -> Awaitable[bool]:
    """Whether GET /api/blocks/{hash} finds every one of ``blocks`` (on any branch)."""
    async def check() -> bool:
        async with http() as session:
            for block in blocks:
                status, _ = await get_json(session, f"{node.url}/api/blocks/{hash_hex(block.hash)}")
                if status != 200:
                    return False
        return True

    return check()
