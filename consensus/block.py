"""A block: the 80-byte header, the post-state root, and the transactions.

The header's ``root`` field commits to both: ``sha256d(tx_root || state_root)``.
The body carries ``state_root`` explicitly so a receiver can tell a body that
does not match its header (BAD_TX_ROOT) from a state transition that computes
a different result (BAD_STATE_ROOT).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from consensus import header as header_codec
from consensus.caps import MAX_BLOCK_BYTES, MAX_BLOCK_TXS, block_size
from consensus.encoding import expect_bytes, expect_list, pack, unpack
from consensus.errors import BlockRejected, Reject
from consensus.header import Header
from consensus.merkle import merkle_root
from consensus.tx import Tx, decode_tx, encode_tx, txid


def commitment(tx_root: bytes, state_root: bytes) -> bytes:
    """The header's ``root`` field."""
    return hashlib.sha256(hashlib.sha256(tx_root + state_root).digest()).digest()


@dataclass(frozen=True)
class Block:
    header: Header
    state_root: bytes
    tx_bytes: tuple[bytes, ...]
    txs: tuple[Tx, ...] = field(compare=False, repr=False)

    @classmethod
    def build(cls, header: Header, state_root: bytes, txs: list[Tx]) -> Block:
        return cls(header, state_root, tuple(encode_tx(t) for t in txs), tuple(txs))

    @cached_property
    def hash(self) -> bytes:
        return header_codec.header_hash(self.header)

    @cached_property
    def txids(self) -> list[bytes]:
        return [txid(raw) for raw in self.tx_bytes]

    @cached_property
    def tx_root(self) -> bytes:
        return merkle_root(self.txids)

    @cached_property
    def size(self) -> int:
        """``len(self.encode())``, computed from the transactions' sizes without encoding."""
        return block_size([len(raw) for raw in self.tx_bytes])

    def encode(self) -> bytes:
        return pack([header_codec.encode(self.header), self.state_root, list(self.tx_bytes)])

    def check_commitment(self) -> None:
        """The body is the one the header commits to."""
        if commitment(self.tx_root, self.state_root) != self.header.root:
            raise BlockRejected(Reject.BAD_TX_ROOT, "transactions and state root do not match the header")


def decode_block(raw: bytes) -> Block:
    """Decode a block strictly: sizes first, then every field, then every tx."""
    obj = unpack(raw, max_bytes=MAX_BLOCK_BYTES, what="block")
    header_raw, state_root, tx_list = expect_list(obj, 3, "block")
    header = header_codec.decode(expect_bytes(header_raw, "header", size=header_codec.HEADER_SIZE))
    state_root = expect_bytes(state_root, "state root", size=32)
    if not isinstance(tx_list, list) or len(tx_list) > MAX_BLOCK_TXS:
        raise BlockRejected(Reject.TOO_MANY_TXS, f"at most {MAX_BLOCK_TXS} transactions")
    tx_bytes = tuple(expect_bytes(t, "transaction") for t in tx_list)
    return Block(header, state_root, tx_bytes, tuple(decode_tx(t) for t in tx_bytes))
