"""Peer-to-peer messages: frozen data, one class per kind, decoded defensively.

Every message travels as a msgpack array of its fields in declaration order
(positional, so there is no key order to agree on). ``decode(kind, raw)``
works in the order Bitcoin Core's net_processing taught us:

1. the body size against the route's cap, before anything is parsed;
2. msgpack with limits fitted to the kind (``max_bin_len``, ``max_array_len``,
   ``max_str_len``, no maps, no ext types, ``raw=False``);
3. the field count, then every field's exact type and length (``True`` is
   not an integer, a list is not bytes);
4. only then the object, which re-checks itself in ``__post_init__``, so an
   invalid message cannot be built by decoding or by hand.

Blocks and transactions stay raw bytes here: the node decodes them with the
consensus decoders, which have their own strict rules and reject codes.
Everything that goes wrong raises :class:`MessageError` with a one-line reason
fit for a 400 response.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import msgpack

from consensus.caps import MAX_BLOCK_BYTES, MAX_TX_BYTES
from consensus.header import HEADER_SIZE
from node import limits

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
ZERO_HASH = bytes(limits.HASH_BYTES)  # GetHeaders.stop when the sender wants as many as fit
SESSION_BYTES = 32  # a per-peer session token: 256 random bits cannot be guessed
# HandshakeReply.session when the replier has not verified the caller's claimed URL yet:
# it grants nothing and calls that URL back to exchange tokens (see node/p2p/session.py).
NO_SESSION = bytes(SESSION_BYTES)

# host: a DNS name or IPv4 (letters, digits, dots, dashes) or a bracketed IPv6 literal;
# port: 1-65535 without leading zeros. Nothing else: no user info, path or query.
# Host: DNS labels of 1..63 letters, digits and inner hyphens joined by single dots (an
# empty label, "a..b", made aiohttp's IDNA encoding raise: found by schemathesis), or an
# IPv6 literal in brackets.
_URL_RE = re.compile(
    r"http://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])"
    r":(?P<port>[1-9][0-9]{0,4})"
)
_PORT_MAX = 65535


class MessageError(ValueError):
    """A peer message that is too large, not msgpack, or has a bad field."""


# -- field specs ------------------------------------------------------------------------------
class Spec(Protocol):
    """How one field is checked; ``check`` returns the value in its Python form."""

    def check(self, value: Any, name: str) -> Any: ...

    def to_wire(self, value: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class UInt:
    """An integer in ``[0, hi]``; ``bool`` is refused although it subclasses ``int``."""

    hi: int

    def check(self, value: Any, name: str) -> int:
        if type(value) is not int or not 0 <= value <= self.hi:
            raise MessageError(f"{name}: expected an integer in [0, {self.hi}]")
        return value

    def to_wire(self, value: Any) -> Any:
        return value


@dataclass(frozen=True, slots=True)
class Bin:
    """Bytes of exactly ``size`` (if given) and at most ``max_size`` bytes."""

    max_size: int
    size: int | None = None

    def check(self, value: Any, name: str) -> bytes:
        if type(value) is not bytes:
            raise MessageError(f"{name}: expected bytes")
        if self.size is not None and len(value) != self.size:
            raise MessageError(f"{name}: expected {self.size} bytes, got {len(value)}")
        if len(value) > self.max_size:
            raise MessageError(f"{name}: {len(value)} bytes > limit {self.max_size}")
        return value

    def to_wire(self, value: Any) -> Any:
        return value


@dataclass(frozen=True, slots=True)
class Text:
    """Printable text of at most ``max_chars`` UTF-8 bytes."""

    max_chars: int

    def check(self, value: Any, name: str) -> str:
        if type(value) is not str:
            raise MessageError(f"{name}: expected a string")
        if len(value.encode("utf-8", "surrogatepass")) > self.max_chars:
            raise MessageError(f"{name}: longer than {self.max_chars} bytes")
        if not value.isprintable():
            raise MessageError(f"{name}: contains unprintable characters")
        return value

    def to_wire(self, value: Any) -> Any:
        return value


@dataclass(frozen=True, slots=True)
class Url:
    """A peer's listen address ``http://host:port``; ``""`` only if ``optional``."""

    optional: bool = False

    def check(self, value: Any, name: str) -> str:
        text = Text(limits.MAX_URL_CHARS).check(value, name)
        if text == "" and self.optional:
            return text
        if not is_listen_url(text):
            raise MessageError(f"{name}: expected http://host:port, got {text[:40]!r}")
        return text

    def to_wire(self, value: Any) -> Any:
        return value


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list of at most ``max_count`` items; held as a tuple, sent as an array."""

    item: Spec
    max_count: int

    def check(self, value: Any, name: str) -> tuple[Any, ...]:
        if type(value) not in (list, tuple):
            raise MessageError(f"{name}: expected an array")
        if len(value) > self.max_count:
            raise MessageError(f"{name}: {len(value)} items > limit {self.max_count}")
        return tuple(self.item.check(v, f"{name}[{i}]") for i, v in enumerate(value))

    def to_wire(self, value: Any) -> Any:
        return [self.item.to_wire(v) for v in value]


def is_listen_url(text: str) -> bool:
    """True for ``http://host:port`` with a port in 1..65535 and nothing more."""
    match = _URL_RE.fullmatch(text)
    return (
        match is not None
        and len(text) <= limits.MAX_URL_CHARS
        and int(match.group("port")) <= _PORT_MAX
    )


def _spec(s: Spec) -> Any:
    return field(metadata={"spec": s})


HASH = Bin(limits.HASH_BYTES, size=limits.HASH_BYTES)
_MAGIC = Bin(limits.MAGIC_BYTES, size=limits.MAGIC_BYTES)
_U32 = UInt(U32_MAX)
_U64 = UInt(U64_MAX)
_SESSION = Bin(SESSION_BYTES, size=SESSION_BYTES)


class _Validated:
    """Mixin: every field is checked against its spec when the object is built."""

    __slots__ = ()
    KIND: ClassVar[str]
    MAX_BYTES: ClassVar[int]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            checked = f.metadata["spec"].check(getattr(self, f.name), f"{self.KIND}.{f.name}")
            object.__setattr__(self, f.name, checked)
        self._check_whole()

    def _check_whole(self) -> None:
        """Checks across fields; none by default."""


# -- the messages -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Hello(_Validated):
    """The fields a Handshake and its reply share, in their wire order.

    Each side states the same facts about itself; ``session`` is the token the
    sender issued to the recipient (see the two subclasses for when it is sent).
    Subclasses append fields after these, so the shared ones keep their place
    on the wire.
    """

    magic: bytes = _spec(_MAGIC)
    protocol_version: int = _spec(_U32)
    chain_id: int = _spec(_U32)
    genesis: bytes = _spec(HASH)
    height: int = _spec(_U32)
    tip: bytes = _spec(HASH)
    listen_url: str = _spec(Url(optional=True))  # "" for a node that does not listen
    nonce: int = _spec(_U64)  # random per node start: a handshake carrying our own is a self-connection
    user_agent: str = _spec(Text(limits.MAX_USER_AGENT_CHARS))
    session: bytes = _spec(_SESSION)


@dataclass(frozen=True, slots=True)
class Handshake(_Hello):
    """POST /p2p/handshake: who I am, which chain, how far I am.

    ``session`` is the token the sender issued to the receiver: "present this
    when you call me". Sent only to the URL the sender dialled, so only that
    URL's owner learns it.
    """

    KIND: ClassVar[str] = "handshake"
    MAX_BYTES: ClassVar[int] = limits.MAX_HANDSHAKE_BYTES


@dataclass(frozen=True, slots=True)
class HandshakeReply(_Hello):
    """The answer to a handshake: the same facts about the receiver, and a few peers.

    ``session`` is the token the receiver issued to the caller, once the caller
    proved its URL; NO_SESSION before that (the receiver then calls the
    caller's URL back).
    """

    KIND: ClassVar[str] = "handshake_reply"
    MAX_BYTES: ClassVar[int] = limits.MAX_HANDSHAKE_BYTES
    peers: tuple[str, ...] = _spec(ListOf(Url(), limits.MAX_ADDRS_IN_HANDSHAKE))


@dataclass(frozen=True, slots=True)
class Announce(_Validated):
    """POST /p2p/announce: hashes of new blocks and txids (inv); the receiver fetches what it lacks."""

    KIND: ClassVar[str] = "announce"
    MAX_BYTES: ClassVar[int] = limits.MAX_ANNOUNCE_BYTES
    blocks: tuple[bytes, ...] = _spec(ListOf(HASH, limits.MAX_INV_PER_ANNOUNCE))
    txs: tuple[bytes, ...] = _spec(ListOf(HASH, limits.MAX_INV_PER_ANNOUNCE))


@dataclass(frozen=True, slots=True)
class GetHeaders(_Validated):
    """POST /p2p/headers request: a block locator, and a hash to stop at (zero: none)."""

    KIND: ClassVar[str] = "get_headers"
    MAX_BYTES: ClassVar[int] = limits.MAX_GET_HEADERS_BYTES
    locator: tuple[bytes, ...] = _spec(ListOf(HASH, limits.MAX_LOCATOR_HASHES))
    stop: bytes = _spec(HASH)


@dataclass(frozen=True, slots=True)
class Headers(_Validated):
    """POST /p2p/headers response: consecutive 80-byte headers after the fork point."""

    KIND: ClassVar[str] = "headers"
    MAX_BYTES: ClassVar[int] = limits.MAX_HEADERS_BYTES
    headers: tuple[bytes, ...] = _spec(
        ListOf(Bin(HEADER_SIZE, size=HEADER_SIZE), limits.MAX_HEADERS_PER_MESSAGE)
    )


@dataclass(frozen=True, slots=True)
class GetBlocks(_Validated):
    """POST /p2p/blocks request: the hashes of the blocks wanted."""

    KIND: ClassVar[str] = "get_blocks"
    MAX_BYTES: ClassVar[int] = limits.MAX_GET_BLOCKS_BYTES
    hashes: tuple[bytes, ...] = _spec(ListOf(HASH, limits.MAX_BLOCKS_PER_REQUEST))


@dataclass(frozen=True, slots=True)
class Blocks(_Validated):
    """POST /p2p/blocks response: raw blocks, a leading subset of those asked for."""

    KIND: ClassVar[str] = "blocks"
    MAX_BYTES: ClassVar[int] = limits.MAX_BLOCKS_REPLY_BYTES
    blocks: tuple[bytes, ...] = _spec(ListOf(Bin(MAX_BLOCK_BYTES), limits.MAX_BLOCKS_PER_REQUEST))


@dataclass(frozen=True, slots=True)
class GetTxs(_Validated):
    """POST /p2p/txs request: the txids wanted."""

    KIND: ClassVar[str] = "get_txs"
    MAX_BYTES: ClassVar[int] = limits.MAX_GET_TXS_BYTES
    txids: tuple[bytes, ...] = _spec(ListOf(HASH, limits.MAX_TXS_PER_REQUEST))


@dataclass(frozen=True, slots=True)
class Txs(_Validated):
    """POST /p2p/txs response: raw transactions, a leading subset of those asked for."""

    KIND: ClassVar[str] = "txs"
    MAX_BYTES: ClassVar[int] = limits.MAX_TXS_REPLY_BYTES
    txs: tuple[bytes, ...] = _spec(ListOf(Bin(MAX_TX_BYTES), limits.MAX_TXS_PER_REQUEST))


@dataclass(frozen=True, slots=True)
class Addr(_Validated):
    """POST /p2p/addr, both ways: listen URLs of peers the sender knows."""

    KIND: ClassVar[str] = "addr"
    MAX_BYTES: ClassVar[int] = limits.MAX_ADDR_BYTES
    addrs: tuple[str, ...] = _spec(ListOf(Url(), limits.MAX_ADDRS_PER_MESSAGE))


Message = (
    Handshake | HandshakeReply | Announce | GetHeaders | Headers | GetBlocks | Blocks | GetTxs | Txs | Addr
)

MESSAGES: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (Handshake, HandshakeReply, Announce, GetHeaders, Headers, GetBlocks, Blocks, GetTxs, Txs, Addr)
}
"""Every message kind, by name: the one place a route looks up what it accepts."""


# -- decode limits per kind, derived from the field specs -----------------------------------------
@dataclass(frozen=True, slots=True)
class _UnpackLimits:
    max_bin_len: int
    max_str_len: int
    max_array_len: int


def _walk(spec: Spec) -> tuple[int, int, int]:
    """(largest bin, largest str, largest array) a field of ``spec`` may hold."""
    if isinstance(spec, Bin):
        return spec.max_size, 0, 0
    if isinstance(spec, Text):
        return 0, spec.max_chars, 0
    if isinstance(spec, Url):
        return 0, limits.MAX_URL_CHARS, 0
    if isinstance(spec, ListOf):
        b, s, a = _walk(spec.item)
        return b, s, max(a, spec.max_count)
    return 0, 0, 0


def _limits_for(cls: type[Message]) -> _UnpackLimits:
    fields = dataclasses.fields(cls)
    walked = [_walk(f.metadata["spec"]) for f in fields]
    return _UnpackLimits(
        max_bin_len=max(w[0] for w in walked),
        max_str_len=max(w[1] for w in walked),
        max_array_len=max([len(fields), *(w[2] for w in walked)]),
    )


_LIMITS: dict[str, _UnpackLimits] = {kind: _limits_for(cls) for kind, cls in MESSAGES.items()}


def _no_ext(code: int, data: bytes) -> Any:
    raise MessageError(f"msgpack ext type {code} is not allowed")


def encode(msg: Message) -> bytes:
    """The body for ``msg``: a msgpack array of its fields.

    Raises ``MessageError`` if the result is over the kind's body cap, so a
    sender learns to send less before a peer refuses it (see ``fitting``).
    """
    fields = [f.metadata["spec"].to_wire(getattr(msg, f.name)) for f in dataclasses.fields(msg)]
    raw: bytes = msgpack.packb(fields, use_bin_type=True, strict_types=False)
    if len(raw) > msg.MAX_BYTES:
        raise MessageError(f"{msg.KIND}: {len(raw)} bytes > limit {msg.MAX_BYTES}")
    return raw


def decode(kind: str, raw: bytes) -> Message:
    """Parse the body of a ``kind`` message, or raise ``MessageError`` saying why."""
    cls = MESSAGES.get(kind)
    if cls is None:
        raise MessageError(f"unknown message kind {kind[:32]!r}")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MessageError(f"{kind}: expected bytes")
    if len(raw) > cls.MAX_BYTES:
        raise MessageError(f"{kind}: {len(raw)} bytes > limit {cls.MAX_BYTES}")
    lim = _LIMITS[kind]
    try:
        obj = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            ext_hook=_no_ext,
            max_bin_len=lim.max_bin_len,
            max_str_len=lim.max_str_len,
            max_array_len=lim.max_array_len,
            max_map_len=0,
            max_ext_len=0,
        )
    except MessageError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types, all meaning "bad bytes"
        reason = str(exc)[:80] or type(exc).__name__
        raise MessageError(f"{kind}: not a valid msgpack body ({reason})") from None
    fields = dataclasses.fields(cls)
    if type(obj) is not list or len(obj) != len(fields):
        raise MessageError(f"{kind}: expected an array of {len(fields)} fields")
    values = [f.metadata["spec"].check(v, f"{kind}.{f.name}") for f, v in zip(fields, obj, strict=True)]
    return cls(*values)


M = TypeVar("M", bound=Message)


def decode_as(cls: type[M], raw: bytes) -> M:
    """``decode(cls.KIND, raw)``, typed: what a route that expects one kind calls."""
    msg = decode(cls.KIND, raw)
    assert isinstance(msg, cls)
    return msg


def fitting(items: Sequence[bytes], cap: int, *, max_count: int) -> int:
    """How many leading ``items`` fit in one Blocks/Txs body of at most ``cap`` bytes.

    A responder sends ``items[:fitting(...)]`` and the requester asks again
    for the rest. Counts the worst-case msgpack framing of every item, so the
    real body is never larger than the estimate.
    """
    total = 2 * limits.MSGPACK_ARRAY_OVERHEAD
    n = 0
    for item in items[:max_count]:
        total += limits.MSGPACK_BIN_OVERHEAD + len(item)
        if total > cap:
            break
        n += 1
    return n


__all__ = [
    "MESSAGES",
    "Addr",
    "Announce",
    "Blocks",
    "GetBlocks",
    "GetHeaders",
    "GetTxs",
    "Handshake",
    "HandshakeReply",
    "Headers",
    "Message",
    "MessageError",
    "NO_SESSION",
    "SESSION_BYTES",
    "Txs",
    "ZERO_HASH",
    "decode",
    "decode_as",
    "encode",
    "fitting",
    "is_listen_url",
]
