"""One fuzz target per decoder of untrusted bytes, with a seed corpus of valid encodings.

A target is ``decode(data)``; :func:`check_one` runs it and lets through
only the decoder's own reject type. The seeds are real encodings (a chain
with updates, transfers and two miners; one message of every kind; a
keystore; an address), so mutations start from inputs that reach deep
into each decoder rather than failing at the first byte.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from consensus import header as header_codec
from consensus.block import decode_block
from consensus.errors import BlockRejected
from consensus.tx import decode_tx, encode_tx
from ml.checks import UpdateCheckError
from ml.codec import KINDS, EncodedUpdate, decode_update, encode_update
from ml.tasks import builtin_task
from node.p2p import messages as m
from wallet import AddressError, KeystoreError, decode_address, encode_address, keypair_from_seed
from wallet.keystore import ScryptParams, encrypt_keystore, read_keystore_header


class Crash(Exception):
    """A decoder let out something other than its reject type."""


class NotAnInput(Exception):
    """The harness's own framing refused the bytes before the decoder under test saw them."""


@dataclass(frozen=True)
class Target:
    name: str
    decode: Callable[[bytes], object]
    rejects: tuple[type[Exception], ...]
    seeds: Callable[[], list[bytes]]
    max_len: int  # largest input the fuzzer builds (atheris -max_len)


def check_one(target: Target, data: bytes) -> bool:
    """Decode ``data``; True if it decoded, False if rejected the project's way; else :class:`Crash`."""
    try:
        target.decode(data)
    except target.rejects:
        return False
    except Exception as exc:  # the point: anything else is a finding
        raise Crash(f"{target.name}: {type(exc).__name__}: {exc} (input {data[:64]!r}…, {len(data)} bytes)") from exc
    return True


# -- seeds ----------------------------------------------------------------------------------------
@functools.cache
def _golden_blocks() -> list[bytes]:
    from tests.unit.test_golden_chain import build_golden_chain

    return [block.encode() for block in build_golden_chain().blocks]


def _block_seeds() -> list[bytes]:
    return _golden_blocks()


def _header_seeds() -> list[bytes]:
    return [raw[: header_codec.HEADER_SIZE] for raw in _golden_blocks()]


def _tx_seeds() -> list[bytes]:
    return [encode_tx(tx) for raw in _golden_blocks() for tx in decode_block(raw).txs]


HASH = bytes(range(32))
URL = "http://127.0.0.1:18444"


def _message_examples() -> dict[str, m.Message]:
    hello = dict(magic=b"gcrt", protocol_version=1, chain_id=7, genesis=HASH, height=12, tip=HASH[::-1],
                 listen_url=URL, nonce=2**64 - 1, user_agent="gradchain/0.1", session=b"\x03" * m.SESSION_BYTES)
    blocks = _golden_blocks()
    return {
        "handshake": m.Handshake(**hello),  # type: ignore[arg-type]
        "handshake_reply": m.HandshakeReply(**hello, peers=(URL, "http://10.0.0.1:8333")),  # type: ignore[arg-type]
        "announce": m.Announce(blocks=(HASH,), txs=(HASH[::-1], HASH)),
        "get_headers": m.GetHeaders(locator=(HASH, HASH[::-1]), stop=bytes(32)),
        "headers": m.Headers(headers=tuple(raw[: header_codec.HEADER_SIZE] for raw in blocks[:3])),
        "get_blocks": m.GetBlocks(hashes=(HASH,)),
        "blocks": m.Blocks(blocks=(blocks[1], blocks[2])),
        "get_txs": m.GetTxs(txids=(HASH,)),
        "txs": m.Txs(txs=tuple(_tx_seeds()[:3])),
        "addr": m.Addr(addrs=(URL,)),
    }


def _update_task_size() -> int:
    return builtin_task("digits").param_count


def _update_seeds() -> list[bytes]:
    import numpy as np

    size = _update_task_size()
    x = np.linspace(-1, 1, size, dtype=np.float32)
    return [msgpack.packb(encode_update(x, kind, k=7).to_wire(), use_bin_type=True) for kind in KINDS]


def _decode_update_wire(data: bytes) -> object:
    """The update codec as a peer reaches it: a msgpack map -> ``from_wire`` -> ``decode_update``.

    The harness's own msgpack unpack (the tx decoder's job) is not under test:
    bytes it cannot unpack count as rejected.
    """
    try:
        wire = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=1 << 20)
    except Exception as exc:
        raise NotAnInput(str(exc)) from None
    return decode_update(EncodedUpdate.from_wire(wire), _update_task_size())


def _keystore_seeds() -> list[bytes]:
    cheap = ScryptParams(n=2, r=1, p=1)
    return [encrypt_keystore(keypair_from_seed(bytes(32)), "pw", salt=bytes(16), nonce=bytes(12), scrypt=cheap)]


def _address_seeds() -> list[bytes]:
    return [encode_address(bytes(21)).encode(), encode_address(bytes(range(21))).encode()]


def _decode_address_text(data: bytes) -> object:
    return decode_address(data.decode("latin-1"))


def _message_target(kind: str) -> Target:
    return Target(
        f"p2p_{kind}", functools.partial(m.decode, kind), (m.MessageError,),
        lambda: [m.encode(_message_examples()[kind])], max_len=min(MESSAGE_MAX_LEN, m.MESSAGES[kind].MAX_BYTES),
    )


MESSAGE_MAX_LEN = 16384  # big enough for two golden blocks in one Blocks message

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("header", header_codec.decode, (BlockRejected,), _header_seeds, max_len=256),
        Target("tx", decode_tx, (BlockRejected,), _tx_seeds, max_len=8192),
        Target("block", decode_block, (BlockRejected,), _block_seeds, max_len=16384),
        *(_message_target(kind) for kind in sorted(m.MESSAGES)),
        Target("update_codec", _decode_update_wire, (UpdateCheckError, NotAnInput), _update_seeds, max_len=8192),
        Target("keystore", read_keystore_header, (KeystoreError,), _keystore_seeds, max_len=4096),
        Target("address", _decode_address_text, (AddressError,), _address_seeds, max_len=256),
    ]
}


def seed_json() -> str:
    """The seed corpus sizes, for the report."""
    return json.dumps({name: len(t.seeds()) for name, t in TARGETS.items()})
