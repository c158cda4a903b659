"""Sessions between peers: the token handshake, who a peer is, and the HTTP client that talks to them.

A peer is known by its listen URL. Either side may start a connection with
``POST /p2p/handshake``; after it, both talk by plain HTTP requests in both
directions.

Session tokens make the URL claim unspoofable. For each peer URL a node
issues ``token_in`` (32 random bytes, per node start) and sends it only in a
Handshake it POSTs *to that URL*, so only whoever listens there learns it.
Every later /p2p/ request carries ``X-Gradchain-Peer: <url>`` and
``X-Gradchain-Session: <hex of the token the receiver issued>``; a wrong or
missing token is 403 and punishes nobody. A handshake proves its claimed URL
the same way, by presenting the receiver's token in the session header; a
handshake that cannot (first contact, or the receiver restarted) is answered
with ``NO_SESSION`` and the receiver calls the claimed URL back, presenting
the token the claimant just sent: the genuine owner recognises it and the
exchange completes in that call. A stranger who names an honest peer's URL
thus never receives a token for it.

Refusals carry a machine-readable reason in ``X-Gradchain-Refusal`` (a
:class:`Refusal`), so no caller ever branches on the human text beside it.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from consensus.header import hash_hex
from node import limits
from node.p2p import messages as m
from node.p2p.netgroups import url_group
from node.p2p.penalties import RelayAllowance

PEER_HEADER = "X-Gradchain-Peer"
SESSION_HEADER = "X-Gradchain-Session"
REFUSAL_HEADER = "X-Gradchain-Refusal"
CONTENT_TYPE = "application/msgpack"


class Refusal(enum.Enum):
    """Why a node refused a /p2p/ request; sent in ``X-Gradchain-Refusal``."""

    HANDSHAKE_FIRST = "handshake-first"  # the sender is no peer of ours
    HANDSHAKE_AGAIN = "handshake-again"  # the session token is unknown or stale (we restarted)
    BANNED = "banned"
    NO_SLOT = "no-slot"  # every inbound slot is taken and no peer can be evicted
    UNVERIFIABLE_URL = "unverifiable-url"  # the claimed URL is not on the host the request came from
    WRONG_NETWORK = "wrong-network"
    OTHER_GENESIS = "other-genesis"
    OLD_PROTOCOL = "old-protocol"
    SELF = "self"  # the handshake came from this node itself


class PeerError(Exception):
    """A request to a peer failed (network, timeout, refusal, bad answer)."""

    def __init__(self, message: str, refusal: Refusal | None = None) -> None:
        super().__init__(message)
        self.refusal = refusal


def new_token() -> bytes:
    return secrets.token_bytes(m.SESSION_BYTES)


@dataclass
class Session:
    """The tokens between this node and one peer URL.

    ``token_in`` is what we issued and expect on the peer's requests;
    ``token_out`` is what the peer issued and we present on ours, learnt
    only from a source that proved to be the URL's owner; ``candidate`` is
    a token offered by an unproven handshake claiming the URL, which we
    present once when calling that URL back.
    """

    token_in: bytes = field(default_factory=new_token)
    token_out: bytes | None = None
    candidate: bytes | None = None


class SessionTable:
    """Sessions by peer URL, bounded: a handshake flood cannot grow memory."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}

    def get(self, url: str) -> Session | None:
        return self._sessions.get(url)

    def session_for(self, url: str, *, protected: Callable[[str], bool]) -> Session:
        """The tokens for ``url``, created (a fresh ``token_in``) on first use.

        When the table is full the oldest session whose URL is not
        ``protected`` (a peer, a dial in progress) makes room.
        """
        session = self._sessions.get(url)
        if session is None:
            if len(self._sessions) >= self.max_sessions:
                for old in self._sessions:
                    if not protected(old):
                        del self._sessions[old]
                        break
            session = self._sessions[url] = Session()
        return session

    def authenticate(self, url: str | None, presented: str | None) -> bool:
        """True if ``presented`` (hex) is the token we issued to ``url``: the caller owns that URL."""
        if url is None or presented is None:
            return False
        session = self._sessions.get(url)
        if session is None:
            return False
        try:
            token = bytes.fromhex(presented)
        except ValueError:
            return False
        return hmac.compare_digest(token, session.token_in)

    def forget(self, url: str) -> None:
        self._sessions.pop(url, None)


@dataclass
class Peer:
    """A connected peer: what it told us, and what it has done for us lately."""

    url: str
    height: int
    tip: bytes
    user_agent: str
    outbound: bool
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    last_block_at: float = 0.0  # when it last gave us a block we did not have (eviction protection)
    last_tx_at: float = 0.0  # when it last gave us a tx we did not have
    relay_allowance: RelayAllowance = field(default_factory=RelayAllowance)
    addr_tokens: float = float(limits.MAX_ADDRS_PER_MESSAGE)  # addresses we will still process from it
    addr_updated: float = field(default_factory=time.monotonic)
    asked_for_addrs: bool = False  # we answered its first Addr with a sample; later ones get none
    announced_blocks: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while we fetch what it announced
    announces_pending: int = 0  # its announces we are handling (bounded by MAX_ANNOUNCES_PENDING)

    @property
    def group(self) -> str:
        return url_group(self.url)

    def take_addr_budget(self, count: int, now: float) -> int:
        """How many of ``count`` addresses we process (a token bucket; the rest are ignored)."""
        self.addr_tokens = min(
            float(limits.MAX_ADDRS_PER_MESSAGE),
            self.addr_tokens + (now - self.addr_updated) * limits.ADDR_PROCESS_PER_S,
        )
        self.addr_updated = now
        taken = min(count, int(self.addr_tokens))
        self.addr_tokens -= taken
        return taken

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "height": self.height,
            "tip": hash_hex(self.tip),
            "user_agent": self.user_agent,
            "direction": "outbound" if self.outbound else "inbound",
            "connected_for_s": round(time.time() - self.connected_at, 1),
        }


class PeerClient:
    """POSTs /p2p/ messages to peers and decodes their replies, every reply size-capped."""

    def __init__(self, own_url: Callable[[], str]) -> None:
        self._own_url = own_url
        self._session: aiohttp.ClientSession | None = None

    async def start(self, local_host: str | None = None) -> None:
        """Open the connection pool.

        A node listening on a loopback address sends from it too, so a peer
        that checks "your URL is on the host you connect from" (reflection,
        ``connections.py``) sees the same address: several local nodes on
        127.0.0.x are told apart that way. Other nodes send from whatever
        address the route picks.
        """
        timeout = aiohttp.ClientTimeout(total=limits.REQUEST_TIMEOUT_S, connect=limits.HANDSHAKE_TIMEOUT_S)
        local_addr = (local_host, 0) if local_host and _is_loopback(local_host) else None
        connector = aiohttp.TCPConnector(limit_per_host=limits.MAX_REQUESTS_PER_PEER, local_addr=local_addr)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, url: str, route: str, msg: m.Message, reply_kind: str | None,
                      token: bytes | None) -> m.Message | None:
        """POST ``msg`` to ``url``/p2p/``route``, presenting ``token``; decode the reply as ``reply_kind``.

        Raises ``PeerError`` (with the peer's :class:`Refusal`, if it gave
        one) on any failure, and ``m.MessageError`` for a malformed reply.
        """
        assert self._session is not None, "start() the client first"
        headers = {"Content-Type": CONTENT_TYPE, PEER_HEADER: self._own_url()}
        if token is not None:
            headers[SESSION_HEADER] = token.hex()
        try:
            async with self._session.post(f"{url}/p2p/{route}", data=m.encode(msg), headers=headers) as resp:
                if resp.status >= 400:
                    code = resp.headers.get(REFUSAL_HEADER)
                    refusal = Refusal(code) if code in _REFUSAL_CODES else None
                    text = (await resp.text())[:200]
                    raise PeerError(f"{route}: HTTP {resp.status} {text}", refusal)
                if resp.status == 204 or reply_kind is None:
                    return None
                if resp.status != 200:
                    raise PeerError(f"{route}: HTTP {resp.status}")
                raw = await _read_capped(resp, m.MESSAGES[reply_kind].MAX_BYTES, route)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: a URL aiohttp cannot use (a host its IDNA codec refuses; found by schemathesis)
            raise PeerError(f"{route}: {type(exc).__name__} {exc}") from None
        return m.decode(reply_kind, raw)


_REFUSAL_CODES = frozenset(r.value for r in Refusal)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _read_capped(resp: aiohttp.ClientResponse, cap: int, route: str) -> bytes:
    if resp.content_length is not None and resp.content_length > cap:
        raise PeerError(f"{route}: reply of {resp.content_length} bytes > {cap}")
    raw = await resp.content.read(cap + 1)
    while len(raw) <= cap and not resp.content.at_eof():
        more = await resp.content.read(cap + 1 - len(raw))
        if not more:
            break
        raw += more
    if len(raw) > cap:
        raise PeerError(f"{route}: reply over {cap} bytes")
    return raw
