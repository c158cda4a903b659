"""The /p2p/ routes: msgpack in, msgpack out, every body capped and decoded strictly.

Every route but the handshake serves only a caller that names a handshaken
peer in ``X-Gradchain-Peer`` and presents the token we issued to it in
``X-Gradchain-Session`` (see ``node/p2p/peers.py``). A wrong token is a 403
that punishes nobody: the caller is not the peer it names, so a stranger
cannot get an honest peer banned by sending garbage in its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from node.http import read_body
from node.p2p import messages as m
from node.p2p.peers import CONTENT_TYPE, HANDSHAKE_AGAIN, PEER_HEADER, SESSION_HEADER
from node.p2p.penalties import Misbehaviour

# route -> (request kind, reply kind or None for 204)
ROUTES: dict[str, tuple[str, str | None]] = {
    "handshake": ("handshake", "handshake_reply"),
    "announce": ("announce", None),
    "headers": ("get_headers", "headers"),
    "blocks": ("get_blocks", "blocks"),
    "txs": ("get_txs", "txs"),
    "addr": ("addr", "addr"),
}


def msgpack_reply(msg: m.Message) -> web.Response:
    return web.Response(body=m.encode(msg), content_type=CONTENT_TYPE)


def add_routes(app: web.Application, node: Any) -> None:
    peers = node.peers

    def authentic(request: web.Request, sender: str | None) -> bool:
        """True if the caller presents the token we issued to the peer it names."""
        return sender in peers.peers and peers.authenticate(sender, request.headers.get(SESSION_HEADER))

    async def decode_request(request: web.Request, kind: str) -> tuple[m.Message, str | None]:
        sender = request.headers.get(PEER_HEADER)
        if sender is not None and peers.is_banned(sender):
            raise web.HTTPForbidden(text="banned for misbehaviour")
        if kind != "handshake" and sender in peers.peers and not authentic(request, sender):
            raise web.HTTPForbidden(text=HANDSHAKE_AGAIN)  # someone naming a peer: not read, not punished
        raw = await read_body(request, m.MESSAGES[kind].MAX_BYTES)
        try:
            msg = m.decode(kind, raw)
        except m.MessageError as exc:
            # Only a caller proven to be the peer is punished: a bad body "from" a URL is
            # otherwise anyone's, and punishing the URL would let strangers ban honest peers.
            if sender is not None and authentic(request, sender):
                peers.punish(sender, Misbehaviour.MALFORMED_MESSAGE, str(exc))
            raise web.HTTPBadRequest(text=str(exc)) from None
        return msg, sender

    def known_sender(request: web.Request, sender: str | None) -> str:
        if sender is None or sender not in peers.peers:
            raise web.HTTPForbidden(text=f"handshake first (send your URL in {PEER_HEADER})")
        if not authentic(request, sender):
            raise web.HTTPForbidden(text=HANDSHAKE_AGAIN)
        return sender

    async def handshake(request: web.Request) -> web.Response:
        msg, _ = await decode_request(request, "handshake")
        assert isinstance(msg, m.Handshake)
        if msg.listen_url and peers.is_banned(msg.listen_url):
            # Tell a banned node so: a 200 would make it list us as a peer it can talk to.
            raise web.HTTPForbidden(text="banned for misbehaviour")
        refusal = peers.check_hello(msg)
        if refusal is not None:
            raise web.HTTPConflict(text=f"refused: {refusal}")
        return msgpack_reply(peers.on_handshake(msg, request.headers.get(SESSION_HEADER)))

    async def announce(request: web.Request) -> web.Response:
        msg, sender = await decode_request(request, "announce")
        assert isinstance(msg, m.Announce)
        peers.spawn(peers.on_announce(known_sender(request, sender), msg))
        return web.Response(status=204)

    def chain_data(route: str, serve: Callable[[Any], m.Message]) -> Handler:
        """A route where a known peer asks for our chain's data: answered on the chain thread."""
        kind = ROUTES[route][0]

        async def handler(request: web.Request) -> web.Response:
            msg, sender = await decode_request(request, kind)
            known_sender(request, sender)
            return msgpack_reply(await node.run_chain(serve, msg))

        return handler

    async def addr(request: web.Request) -> web.Response:
        msg, sender = await decode_request(request, "addr")
        known_sender(request, sender)
        assert isinstance(msg, m.Addr)
        peers.learn(msg.addrs)
        sample = sorted(peers.peers)[: 100]
        return msgpack_reply(m.Addr(addrs=tuple(sample)))

    handlers: dict[str, Handler] = {
        "handshake": handshake,
        "announce": announce,
        "headers": chain_data("headers", peers.serve_headers),
        "blocks": chain_data("blocks", peers.serve_blocks),
        "txs": chain_data("txs", peers.serve_txs),
        "addr": addr,
    }
    for route, handler in handlers.items():
        app.router.add_post(f"/p2p/{route}", handler)
