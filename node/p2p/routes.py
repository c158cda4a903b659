"""The /p2p/ routes: msgpack in, msgpack out, every body capped and decoded strictly.

Every route but the handshake serves only a caller that names a handshaken
peer in ``X-Gradchain-Peer`` and presents the token we issued to it in
``X-Gradchain-Session`` (see ``node/p2p/session.py``). A wrong token is a 403
that punishes nobody: the caller is not the peer it names, so a stranger
cannot get an honest peer banned by sending garbage in its name. Requests
from a banned host are refused before their body is read. Every refusal
names its reason in ``X-Gradchain-Refusal``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from node.http import read_body
from node.p2p import messages as m
from node.p2p.connections import HandshakeRefused
from node.p2p.penalties import Misbehaviour
from node.p2p.service import PeerService
from node.p2p.session import CONTENT_TYPE, PEER_HEADER, REFUSAL_HEADER, SESSION_HEADER, Refusal
from node.services import PEERS

# route -> (request kind, reply kind or None for 204)
ROUTES: dict[str, tuple[str, str | None]] = {
    "handshake": ("handshake", "handshake_reply"),
    "announce": ("announce", None),
    "headers": ("get_headers", "headers"),
    "blocks": ("get_blocks", "blocks"),
    "txs": ("get_txs", "txs"),
    "addr": ("addr", "addr"),
}

# The HTTP status of each refusal, and the text beside it (for people; code reads the header).
_REFUSALS: dict[Refusal, tuple[type[web.HTTPError], str]] = {
    Refusal.HANDSHAKE_FIRST: (web.HTTPForbidden, f"handshake first (send your URL in {PEER_HEADER})"),
    Refusal.HANDSHAKE_AGAIN: (web.HTTPForbidden, "unknown or stale session token: handshake again"),
    Refusal.BANNED: (web.HTTPForbidden, "banned for misbehaviour"),
    Refusal.NO_SLOT: (web.HTTPServiceUnavailable, "no inbound slot free"),
    Refusal.UNVERIFIABLE_URL: (web.HTTPForbidden, "your listen URL is not on the host you connect from"),
    Refusal.WRONG_NETWORK: (web.HTTPConflict, "refused"),
    Refusal.OTHER_GENESIS: (web.HTTPConflict, "refused"),
    Refusal.OLD_PROTOCOL: (web.HTTPConflict, "refused"),
    Refusal.SELF: (web.HTTPConflict, "refused"),
}


def refuse(refusal: Refusal, detail: str = "") -> web.HTTPError:
    kind, text = _REFUSALS[refusal]
    body = f"{text}: {detail}" if detail and kind is web.HTTPConflict else text
    return kind(text=body, headers={REFUSAL_HEADER: refusal.value})


def msgpack_reply(msg: m.Message) -> web.Response:
    return web.Response(body=m.encode(msg), content_type=CONTENT_TYPE)


def add_routes(app: web.Application) -> None:
    def peers_of(request: web.Request) -> PeerService:
        return request.app[PEERS]

    def authentic(peers: PeerService, request: web.Request, sender: str | None) -> bool:
        """True if the caller presents the token we issued to the peer it names."""
        return sender in peers.peers and peers.conns.authenticate(sender, request.headers.get(SESSION_HEADER))

    async def decode_request(request: web.Request, kind: str) -> tuple[PeerService, m.Message, str | None]:
        peers = peers_of(request)
        sender = request.headers.get(PEER_HEADER)
        if peers.conns.is_banned_host(request.remote) or (sender is not None and peers.is_banned(sender)):
            raise refuse(Refusal.BANNED)
        if kind != "handshake" and sender in peers.peers and not authentic(peers, request, sender):
            raise refuse(Refusal.HANDSHAKE_AGAIN)  # someone naming a peer: not read, not punished
        raw = await read_body(request, m.MESSAGES[kind].MAX_BYTES)
        try:
            msg = m.decode(kind, raw)
        except m.MessageError as exc:
            # Only a caller proven to be the peer is punished: a bad body "from" a URL is
            # otherwise anyone's, and punishing the URL would let strangers ban honest peers.
            if sender is not None and authentic(peers, request, sender):
                peers.conns.punish(sender, Misbehaviour.MALFORMED_MESSAGE, str(exc))
            raise web.HTTPBadRequest(text=str(exc)) from None
        return peers, msg, sender

    def known_sender(peers: PeerService, request: web.Request, sender: str | None) -> str:
        if sender is None or sender not in peers.peers:
            raise refuse(Refusal.HANDSHAKE_FIRST)
        if not authentic(peers, request, sender):
            raise refuse(Refusal.HANDSHAKE_AGAIN)
        return sender

    async def handshake(request: web.Request) -> web.Response:
        peers, msg, _ = await decode_request(request, "handshake")
        assert isinstance(msg, m.Handshake)
        try:
            reply = await peers.conns.on_handshake(msg, request.headers.get(SESSION_HEADER), request.remote)
        except HandshakeRefused as exc:
            raise refuse(exc.refusal, str(exc)) from None
        return msgpack_reply(reply)

    async def announce(request: web.Request) -> web.Response:
        peers, msg, sender = await decode_request(request, "announce")
        assert isinstance(msg, m.Announce)
        peers.conns.spawn(peers.gossip.on_announce(known_sender(peers, request, sender), msg))
        return web.Response(status=204)

    def chain_data(route: str, serve: Callable[[PeerService, Any], m.Message]) -> Handler:
        """A route where a known peer asks for our chain's data: answered on the chain thread."""
        kind = ROUTES[route][0]

        async def handler(request: web.Request) -> web.Response:
            peers, msg, sender = await decode_request(request, kind)
            known_sender(peers, request, sender)
            return msgpack_reply(await peers.chain.run(serve, peers, msg))

        return handler

    async def addr(request: web.Request) -> web.Response:
        peers, msg, sender = await decode_request(request, "addr")
        url = known_sender(peers, request, sender)
        assert isinstance(msg, m.Addr)
        return msgpack_reply(peers.gossip.on_addr(url, msg))

    handlers: dict[str, Handler] = {
        "handshake": handshake,
        "announce": announce,
        "headers": chain_data("headers", PeerService.serve_headers),
        "blocks": chain_data("blocks", PeerService.serve_blocks),
        "txs": chain_data("txs", PeerService.serve_txs),
        "addr": addr,
    }
    for route, handler in handlers.items():
        app.router.add_post(f"/p2p/{route}", handler)
