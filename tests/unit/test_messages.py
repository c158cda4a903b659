"""P2P messages: every kind round-trips, and nothing malformed gets through.

Decoding is the first thing a node does with a stranger's bytes, so the
tests attack it the way a hostile peer would: garbage, truncation, oversize
bodies, bools for ints, strings for bytes, extra and missing fields, maps,
ext types, and lists one item over their bound.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.caps import MAX_BLOCK_BYTES, MAX_TX_BYTES
from consensus.header import HEADER_SIZE
from node import limits
from node.p2p import messages as m
from node.p2p.messages import MESSAGES, MessageError, decode, encode

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hashes = st.binary(min_size=32, max_size=32)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
hosts = st.sampled_from(["127.0.0.1", "localhost", "node-3.example.org", "[::1]", "10.0.0.7"])
urls = st.builds(lambda h, p: f"http://{h}:{p}", hosts, st.integers(1, 65535))
agents = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=limits.MAX_USER_AGENT_CHARS)


def _hello(cls: type[Any], **extra: Any) -> Any:
    return st.builds(
        cls,
        magic=st.binary(min_size=4, max_size=4),
        protocol_version=u32,
        chain_id=u32,
        genesis=hashes,
        height=u32,
        tip=hashes,
        listen_url=st.one_of(st.just(""), urls),
        nonce=u64,
        user_agent=agents,
        session=st.binary(min_size=m.SESSION_BYTES, max_size=m.SESSION_BYTES),
        **extra,
    )


STRATEGIES: dict[str, Any] = {
    "handshake": _hello(m.Handshake),
    "handshake_reply": _hello(
        m.HandshakeReply, peers=st.lists(urls, max_size=limits.MAX_ADDRS_IN_HANDSHAKE).map(tuple)
    ),
    "announce": st.builds(
        m.Announce, blocks=st.lists(hashes, max_size=20).map(tuple), txs=st.lists(hashes, max_size=20).map(tuple)
    ),
    "get_headers": st.builds(m.GetHeaders, locator=st.lists(hashes, max_size=64).map(tuple), stop=hashes),
    "headers": st.builds(
        m.Headers, headers=st.lists(st.binary(min_size=80, max_size=80), max_size=30).map(tuple)
    ),
    "get_blocks": st.builds(m.GetBlocks, hashes=st.lists(hashes, max_size=16).map(tuple)),
    "blocks": st.builds(m.Blocks, blocks=st.lists(st.binary(max_size=300), max_size=16).map(tuple)),
    "get_txs": st.builds(m.GetTxs, txids=st.lists(hashes, max_size=30).map(tuple)),
    "txs": st.builds(m.Txs, txs=st.lists(st.binary(max_size=300), max_size=30).map(tuple)),
    "addr": st.builds(m.Addr, addrs=st.lists(urls, max_size=30).map(tuple)),
}
any_message = st.one_of(*STRATEGIES.values())


def _hello_fields() -> dict[str, Any]:
    return dict(
        magic=b"gcrt", protocol_version=1, chain_id=7, genesis=b"\x01" * 32, height=12, tip=b"\x02" * 32,
        listen_url="http://127.0.0.1:18444", nonce=2**64 - 1, user_agent="gradchain/0.1",
        session=b"\x03" * m.SESSION_BYTES,
    )


def test_session_tokens_have_exactly_32_bytes() -> None:
    """A short, long or non-bytes session token never builds or decodes."""
    for bad in (b"\x03" * (m.SESSION_BYTES - 1), b"\x03" * (m.SESSION_BYTES + 1), "03" * m.SESSION_BYTES):
        with pytest.raises(MessageError, match="session"):
            m.Handshake(**{**_hello_fields(), "session": bad})
        with pytest.raises(MessageError, match="session"):
            m.HandshakeReply(**{**_hello_fields(), "session": bad}, peers=())


def test_every_kind_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(MESSAGES)


@FAST
@given(any_message)
def test_round_trip(msg: m.Message) -> None:
    assert decode(msg.KIND, encode(msg)) == msg


@FAST
@given(any_message, st.data())
def test_truncated_body_is_refused(msg: m.Message, data: st.DataObject) -> None:
    raw = encode(msg)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MessageError):
        decode(msg.KIND, raw[:cut])


@FAST
@given(any_message, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_refused(msg: m.Message, tail: bytes) -> None:
    with pytest.raises(MessageError):
        decode(msg.KIND, encode(msg) + tail)


@FAST
@given(st.sampled_from(sorted(MESSAGES)), st.binary(max_size=200))
def test_garbage_never_escapes_as_another_error(kind: str, raw: bytes) -> None:
    try:
        msg = decode(kind, raw)
    except MessageError:
        return
    # Whatever decoded is a complete, valid message of that kind: it re-encodes and decodes
    # back to itself (nothing half-built, nothing that only the lenient path accepts).
    assert isinstance(msg, MESSAGES[kind])
    assert decode(kind, encode(msg)) == msg


@FAST
@given(any_message)
def test_extra_and_missing_fields_are_refused(msg: m.Message) -> None:
    fields = msgpack.unpackb(encode(msg), raw=False)
    for wrong in (fields + [0], fields[:-1], []):
        with pytest.raises(MessageError):
            decode(msg.KIND, msgpack.packb(wrong, use_bin_type=True))


@FAST
@given(any_message, st.data())
def test_every_field_checks_its_type(msg: m.Message, data: st.DataObject) -> None:
    """Swap one field for a value of another msgpack type: always refused."""
    fields = msgpack.unpackb(encode(msg), raw=False)
    index = data.draw(st.integers(0, len(fields) - 1))
    original = fields[index]
    wrong: Any = data.draw(
        st.sampled_from([True, None, 1.5, -1, "x", b"\x00" * 5, [b"\x00"], 2**64 - 1]).filter(
            lambda v: type(v) is not type(original) or (type(v) is int and type(original) is int and v < 0)
        )
    )
    fields[index] = wrong
    with pytest.raises(MessageError):
        decode(msg.KIND, msgpack.packb(fields, use_bin_type=True))


def test_bool_is_not_an_integer() -> None:
    fields = list(_hello_fields().values())
    fields[1] = True
    with pytest.raises(MessageError, match="protocol_version"):
        decode("handshake", msgpack.packb(fields, use_bin_type=True))
    with pytest.raises(MessageError, match="protocol_version"):
        m.Handshake(**{**_hello_fields(), "protocol_version": True})


def test_oversize_body_is_refused_before_parsing() -> None:
    for kind, cls in MESSAGES.items():
        with pytest.raises(MessageError, match="> limit"):
            decode(kind, b"\xc1" * (cls.MAX_BYTES + 1))  # 0xc1 is never valid msgpack


def test_maps_and_ext_types_are_refused() -> None:
    for body in (
        msgpack.packb({}, use_bin_type=True),
        msgpack.packb({"blocks": [], "txs": []}, use_bin_type=True),
        msgpack.packb([msgpack.ExtType(1, b""), []], use_bin_type=True),
        msgpack.packb([[msgpack.ExtType(1, b"\x00" * 32)], []], use_bin_type=True),
        msgpack.packb([[{}], []], use_bin_type=True),
    ):
        with pytest.raises(MessageError):
            decode("announce", body)


def test_unknown_kind_and_non_bytes_are_refused() -> None:
    with pytest.raises(MessageError, match="unknown message kind"):
        decode("version", b"\x90")
    with pytest.raises(MessageError, match="expected bytes"):
        decode("addr", "[]")  # type: ignore[arg-type]


def test_str_is_not_bytes_and_bytes_are_not_str() -> None:
    # A kind with no text field admits no string at all, even at the msgpack level ...
    with pytest.raises(MessageError, match="max_str_len"):
        decode("get_blocks", msgpack.packb([["a" * 32]], use_bin_type=True))
    with pytest.raises(MessageError, match="max_bin_len"):
        decode("addr", msgpack.packb([[b"http://a:1"]], use_bin_type=True))
    # ... and what slips under those limits still fails the exact type check.
    with pytest.raises(MessageError, match="expected bytes"):
        decode("get_blocks", msgpack.packb([[""]], use_bin_type=True))
    with pytest.raises(MessageError, match="expected a string"):
        decode("addr", msgpack.packb([[b""]], use_bin_type=True))


@pytest.mark.parametrize(
    ("kind", "build"),
    [
        ("announce", lambda n: [[b"\x00" * 32] * n, []]),
        ("announce", lambda n: [[], [b"\x00" * 32] * n]),
        ("get_headers", lambda n: [[b"\x00" * 32] * n, b"\x00" * 32]),
        ("headers", lambda n: [[b"\x00" * HEADER_SIZE] * n]),
        ("get_blocks", lambda n: [[b"\x00" * 32] * n]),
        ("get_txs", lambda n: [[b"\x00" * 32] * n]),
        ("addr", lambda n: [["http://a:1"] * n]),
    ],
)
def test_list_bounds_are_exact(kind: str, build: Any) -> None:
    """The longest list allowed decodes; one more item is refused."""
    cls = MESSAGES[kind]
    spec = next(f.metadata["spec"] for f in dataclasses.fields(cls) if isinstance(f.metadata["spec"], m.ListOf))
    bound = spec.max_count
    decode(kind, msgpack.packb(build(bound), use_bin_type=True))
    with pytest.raises(MessageError):
        decode(kind, msgpack.packb(build(bound + 1), use_bin_type=True))


def test_hashes_and_headers_have_exact_sizes() -> None:
    for size in (0, 31, 33):
        with pytest.raises(MessageError):
            m.GetBlocks((b"\x00" * size,))
    for size in (79, 81):
        with pytest.raises(MessageError):
            decode("headers", msgpack.packb([[b"\x00" * size]], use_bin_type=True))


def _largest(kind: str) -> Any:
    """The largest valid message of ``kind`` (byte-wise), to check the body caps."""
    h32 = b"\xff" * 32
    host = ("a" * 63 + ".") * 8  # DNS labels of at most 63 characters, cut to the longest host allowed
    url = "http://" + host[: limits.MAX_URL_CHARS - len("http://:65535")].strip(".") + ":65535"
    assert len(url) >= limits.MAX_URL_CHARS - 1
    hello = {**_hello_fields(), "listen_url": url, "user_agent": "u" * limits.MAX_USER_AGENT_CHARS}
    return {
        "handshake": lambda: m.Handshake(**hello),
        "handshake_reply": lambda: m.HandshakeReply(**hello, peers=(url,) * limits.MAX_ADDRS_IN_HANDSHAKE),
        "announce": lambda: m.Announce((h32,) * limits.MAX_INV_PER_ANNOUNCE, (h32,) * limits.MAX_INV_PER_ANNOUNCE),
        "get_headers": lambda: m.GetHeaders((h32,) * limits.MAX_LOCATOR_HASHES, h32),
        "headers": lambda: m.Headers((b"\xff" * HEADER_SIZE,) * limits.MAX_HEADERS_PER_MESSAGE),
        "get_blocks": lambda: m.GetBlocks((h32,) * limits.MAX_BLOCKS_PER_REQUEST),
        # One block of the largest consensus size, and every other slot used.
        "blocks": lambda: m.Blocks((b"\x00" * MAX_BLOCK_BYTES,) + (b"",) * (limits.MAX_BLOCKS_PER_REQUEST - 1)),
        "get_txs": lambda: m.GetTxs((h32,) * limits.MAX_TXS_PER_REQUEST),
        "txs": lambda: m.Txs((b"\x00" * MAX_TX_BYTES,) + (b"",) * (limits.MAX_TXS_PER_REQUEST - 1)),
        "addr": lambda: m.Addr((url,) * limits.MAX_ADDRS_PER_MESSAGE),
    }[kind]()


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_largest_valid_message_fits_its_cap(kind: str) -> None:
    """Body caps are derived from the field limits: a maximal message must pass."""
    msg = _largest(kind)
    raw = encode(msg)
    assert len(raw) <= MESSAGES[kind].MAX_BYTES
    assert decode(kind, raw) == msg


def test_encode_refuses_a_body_over_the_cap() -> None:
    too_big = m.Blocks((b"\x00" * (limits.MAX_BLOCKS_REPLY_BYTES // 2),) * 3)
    with pytest.raises(MessageError, match="> limit"):
        encode(too_big)


def test_fitting_counts_what_a_response_can_carry() -> None:
    items = [b"\x00" * 1000] * 10
    n = m.fitting(items, 3100, max_count=16)
    assert n == 3
    assert len(encode(m.Blocks(tuple(items[:n])))) <= 3100
    assert m.fitting(items, 10**9, max_count=4) == 4
    assert m.fitting([], 100, max_count=16) == 0


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8333", "http://localhost:1", "http://[::1]:65535", "http://a-b.example:80"],
)
def test_listen_urls_accepted(url: str) -> None:
    assert m.is_listen_url(url)
    assert m.decode_as(m.Addr, encode(m.Addr((url,)))).addrs == (url,)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "https://a:1",
        "http://a",
        "http://a:0",
        "http://a:65536",
        "http://a:080",
        "http://a:1/",
        "http://a:1/path",
        "http://user@a:1",
        "http://-a:1",
        "http://a b:1",
        "http://a:1\n",
        "http://" + "a" * limits.MAX_URL_CHARS + ":1",
        "http://a..b:1",  # an empty DNS label: aiohttp's IDNA codec raised on it (500 from POST /api/peers)
        "http://" + "a" * 64 + ":1",  # a label over 63 characters: the same
        "http://a.:1",
    ],
)
def test_listen_urls_refused(url: str) -> None:
    assert not m.is_listen_url(url)
    with pytest.raises(MessageError):
        m.Addr((url,))


def test_handshake_may_omit_its_listen_url_but_addr_may_not() -> None:
    assert m.Handshake(**{**_hello_fields(), "listen_url": ""}).listen_url == ""
    with pytest.raises(MessageError):
        m.HandshakeReply(**_hello_fields(), peers=("",))


def test_user_agent_must_be_short_and_printable() -> None:
    with pytest.raises(MessageError, match="longer"):
        m.Handshake(**{**_hello_fields(), "user_agent": "x" * (limits.MAX_USER_AGENT_CHARS + 1)})
    with pytest.raises(MessageError, match="unprintable"):
        m.Handshake(**{**_hello_fields(), "user_agent": "evil\x1b[2J"})


def test_messages_are_frozen_and_slotted() -> None:
    msg = m.GetBlocks((b"\x00" * 32,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.hashes = ()  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")


def test_lists_are_held_as_tuples() -> None:
    msg = m.GetTxs([b"\x00" * 32])  # type: ignore[arg-type]
    assert msg.txids == (b"\x00" * 32,)
    assert hash(msg) == hash(m.GetTxs((b"\x00" * 32,)))
