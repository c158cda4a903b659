"""Transactions: the coinbase, transfers, gradient updates and the genesis task.

Each transaction is a msgpack array whose first field is its kind. Signed
transactions are signed over ``signing_digest``: a domain tag, the chain id
and the encoding of every field but the signature, so a signature never
replays on another network; the account nonce stops replays within one.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, replace
from typing import Any

from consensus.caps import MAX_AMOUNT, MAX_COINBASE_EXTRA, MAX_PAYOUTS, MAX_TX_BYTES
from consensus.encoding import expect_bytes, expect_int, expect_list, pack, unpack
from consensus.errors import BlockRejected, Reject
from consensus.header import U32_MAX
from ml.codec import EncodedUpdate
from wallet import KeyPair, address_bytes, sign, verify

SIGNING_DOMAIN = b"gradchain/tx/v1"
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
ADDRESS_SIZE = 21
HASH_SIZE = 32


class TxKind(enum.IntEnum):
    COINBASE = 0
    TRANSFER = 1
    UPDATE = 2
    TASK = 3  # only in the genesis block: carries the training task


@dataclass(frozen=True, slots=True)
class Payout:
    address: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Coinbase:
    """Pays the miner (reward + fees) and the contributors the rule accepted."""

    height: int
    payouts: tuple[Payout, ...]
    extra: bytes = b""


@dataclass(frozen=True, slots=True)
class Transfer:
    sender: bytes  # Ed25519 public key
    nonce: int
    to: bytes  # 21-byte address
    amount: int
    fee: int
    signature: bytes = b""

    @property
    def sender_address(self) -> bytes:
        return address_bytes(self.sender)


@dataclass(frozen=True, slots=True)
class GradientUpdate:
    """A signed pseudo-gradient computed on the model at ``base_height``."""

    sender: bytes
    nonce: int
    fee: int
    base_height: int
    base_hash: bytes
    update: EncodedUpdate
    signature: bytes = b""

    @property
    def sender_address(self) -> bytes:
        return address_bytes(self.sender)


@dataclass(frozen=True, slots=True)
class TaskTx:
    """The training task, committed in genesis as its canonical dict."""

    task: dict[str, Any]


Tx = Coinbase | Transfer | GradientUpdate | TaskTx
SignedTx = Transfer | GradientUpdate


def _update_to_wire(update: EncodedUpdate) -> dict[str, Any]:
    wire = update.to_wire()
    return {key: wire[key] for key in sorted(wire)}


def _fields(tx: Tx, *, with_signature: bool) -> list[Any]:
    if isinstance(tx, Coinbase):
        return [TxKind.COINBASE, tx.height, [[p.address, p.amount] for p in tx.payouts], tx.extra]
    if isinstance(tx, Transfer):
        fields = [TxKind.TRANSFER, tx.sender, tx.nonce, tx.to, tx.amount, tx.fee]
    elif isinstance(tx, GradientUpdate):
        fields = [
            TxKind.UPDATE,
            tx.sender,
            tx.nonce,
            tx.fee,
            tx.base_height,
            tx.base_hash,
            _update_to_wire(tx.update),
        ]
    elif isinstance(tx, TaskTx):
        return [TxKind.TASK, {key: tx.task[key] for key in sorted(tx.task)}]
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"not a transaction: {tx!r}")
    if with_signature:
        fields.append(tx.signature)
    return fields


def _pack_fields(tx: Tx, *, with_signature: bool) -> bytes:
    """msgpack of ``_fields`` with the kind as a plain int (msgpack does not know the enum)."""
    fields = _fields(tx, with_signature=with_signature)
    return pack([int(fields[0]), *fields[1:]])


def encode_tx(tx: Tx) -> bytes:
    """Canonical bytes of ``tx``; ``decode_tx(encode_tx(tx)) == tx``."""
    return _pack_fields(tx, with_signature=True)


def txid(raw: bytes) -> bytes:
    """A transaction's id: sha256d of its canonical bytes (signature included)."""
    return hashlib.sha256(hashlib.sha256(raw).digest()).digest()


def signing_digest(tx: SignedTx, chain_id: int) -> bytes:
    """What the sender signs: domain tag, chain id, every field but the signature."""
    body = _pack_fields(tx, with_signature=False)
    return hashlib.sha256(SIGNING_DOMAIN + struct.pack("<I", chain_id) + body).digest()


def sign_tx(tx: SignedTx, keypair: KeyPair, chain_id: int) -> SignedTx:
    """Return ``tx`` signed by ``keypair`` (whose public key must be the sender)."""
    if tx.sender != keypair.public:
        raise ValueError("the keypair is not the transaction's sender")
    return replace(tx, signature=sign(keypair, signing_digest(tx, chain_id)))


def check_signature(tx: SignedTx, chain_id: int) -> None:
    if not verify(tx.sender, signing_digest(tx, chain_id), tx.signature):
        raise BlockRejected(Reject.BAD_SIGNATURE, "signature does not match the sender's key")


def _is_sorted_str_map(value: Any) -> bool:
    """A map whose keys are all text, in sorted order (bytes keys would not sort with text)."""
    return isinstance(value, dict) and all(type(k) is str for k in value) and list(value) == sorted(value)


def _decode_update(value: Any) -> EncodedUpdate:
    if not _is_sorted_str_map(value):
        raise BlockRejected(Reject.BAD_ENCODING, "update: expected a map with sorted keys")
    try:
        return EncodedUpdate.from_wire(value)
    except (ValueError, TypeError) as exc:
        raise BlockRejected(Reject.BAD_UPDATE_ENCODING, f"update: {exc}") from None


def decode_tx(raw: bytes) -> Tx:
    """Decode a canonical transaction or raise ``BlockRejected``."""
    obj = unpack(raw, max_bytes=MAX_TX_BYTES, what="transaction")
    if not isinstance(obj, list) or not obj:
        raise BlockRejected(Reject.BAD_ENCODING, "transaction: expected a non-empty array")
    kind = expect_int(obj[0], "transaction kind", hi=max(TxKind))
    tx: Tx
    if kind == TxKind.COINBASE:
        _, height, payouts, extra = expect_list(obj, 4, "coinbase")
        if not isinstance(payouts, list) or len(payouts) > MAX_PAYOUTS:
            raise BlockRejected(Reject.BAD_ENCODING, "coinbase payouts: expected a short array")
        tx = Coinbase(
            height=expect_int(height, "coinbase height", hi=U32_MAX),
            payouts=tuple(
                Payout(
                    expect_bytes(expect_list(p, 2, "payout")[0], "payout address", size=ADDRESS_SIZE),
                    expect_int(p[1], "payout amount", hi=MAX_AMOUNT),
                )
                for p in payouts
            ),
            extra=expect_bytes(extra, "coinbase extra", max_size=MAX_COINBASE_EXTRA),
        )
    elif kind == TxKind.TRANSFER:
        _, sender, nonce, to, amount, fee, signature = expect_list(obj, 7, "transfer")
        tx = Transfer(
            sender=expect_bytes(sender, "sender", size=PUBLIC_KEY_SIZE),
            nonce=expect_int(nonce, "nonce"),
            to=expect_bytes(to, "recipient", size=ADDRESS_SIZE),
            amount=expect_int(amount, "amount", hi=MAX_AMOUNT),
            fee=expect_int(fee, "fee", hi=MAX_AMOUNT),
            signature=expect_bytes(signature, "signature", size=SIGNATURE_SIZE),
        )
    elif kind == TxKind.UPDATE:
        _, sender, nonce, fee, base_height, base_hash, update, signature = expect_list(obj, 8, "update")
        tx = GradientUpdate(
            sender=expect_bytes(sender, "sender", size=PUBLIC_KEY_SIZE),
            nonce=expect_int(nonce, "nonce"),
            fee=expect_int(fee, "fee", hi=MAX_AMOUNT),
            base_height=expect_int(base_height, "base height", hi=U32_MAX),
            base_hash=expect_bytes(base_hash, "base hash", size=HASH_SIZE),
            update=_decode_update(update),
            signature=expect_bytes(signature, "signature", size=SIGNATURE_SIZE),
        )
    else:
        _, task = expect_list(obj, 2, "task")
        if not _is_sorted_str_map(task):
            raise BlockRejected(Reject.BAD_ENCODING, "task: expected a map with sorted keys")
        tx = TaskTx(task)
    if encode_tx(tx) != raw:  # e.g. an update whose wire form is not its own canonical one
        raise BlockRejected(Reject.BAD_ENCODING, "transaction: not in canonical form")
    return tx
