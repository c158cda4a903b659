"""Transactions: the coinbase, transfers, bonds, commitments, gradient updates and the task.

Each transaction is a msgpack array whose first field is its kind. Signed
transactions are signed over ``signing_digest``: a domain tag, the chain id,
the **genesis hash** and the encoding of every field but the signature, so a
signature never replays on another network, nor on another chain of the same
network (another task, another ``--rule``/``--f``: another genesis). Within a
chain the account nonce stops replays of what spends coins (transfers, bonds,
unbonds); a commitment is one per sender and round, and an update is spent
once by revealing the commitment it matches (docs/DESIGN-NOTES.md, "Rounds,
bonds and commit-reveal").

Kinds: ``Coinbase``; ``Transfer``; ``Bond``/``Unbond`` (lock the task's bond
amount, release it after the task's delay); ``Commit`` (up to a round's worth
of update digests, :func:`commitment_digest`); ``GradientUpdate`` (the reveal
of one committed update); ``TaskTx`` (genesis only); ``Deploy`` (a task
deployed on a running chain: its spec, its evaluation rows and the bounty
locked from the sender's balance; the task's id is the deploy's txid). Commitments and updates
carry no fee and no nonce: update slots are not for sale.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, replace
from typing import Any

from consensus.caps import (
    MAX_AMOUNT,
    MAX_COINBASE_EXTRA,
    MAX_COMMIT_HASHES,
    MAX_EVAL_BYTES,
    MAX_PAYOUTS,
    MAX_TX_BYTES,
)
from consensus.encoding import expect_bytes, expect_int, expect_list, pack, unpack
from consensus.errors import BlockRejected, Reject
from consensus.header import U32_MAX
from ml.codec import EncodedUpdate
from wallet import KeyPair, address_bytes, sign, verify

SIGNING_DOMAIN = b"gradchain/tx/v2"  # v2: the digest binds the genesis hash
COMMIT_DOMAIN = b"gradchain/commit/v1"
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
ADDRESS_SIZE = 21
HASH_SIZE = 32


class TxKind(enum.IntEnum):
    COINBASE = 0
    TRANSFER = 1
    UPDATE = 2  # the reveal of a committed gradient update
    TASK = 3  # only in the genesis block: carries the training task
    BOND = 4
    UNBOND = 5
    COMMIT = 6
    DEPLOY = 7  # a task deployed on a running chain (its id: this tx's txid)


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
class _BondFields:
    """What a bond and an unbond carry: a spend of the sender's (nonce, fee) about one task."""

    sender: bytes
    nonce: int
    fee: int
    task_id: bytes  # the txid of the transaction that created the task
    signature: bytes = b""

    @property
    def sender_address(self) -> bytes:
        return address_bytes(self.sender)


@dataclass(frozen=True, slots=True)
class Bond(_BondFields):
    """Lock the task's ``bond_amount`` of the sender's coins: its identity as a contributor."""


@dataclass(frozen=True, slots=True)
class Unbond(_BondFields):
    """Stop contributing at once; the bonded coins return after the task's ``unbond_delay``."""


@dataclass(frozen=True, slots=True)
class Commit:
    """A bonded sender's commitment to the updates it will reveal in the next round.

    ``round`` is the round the commitment is made in (its updates are
    computed on the model at that round's start, the block ``base_hash``);
    ``hashes`` are :func:`commitment_digest` of each update, at most one
    round's worth.
    """

    sender: bytes
    task_id: bytes
    round: int
    base_hash: bytes
    hashes: tuple[bytes, ...]
    signature: bytes = b""

    @property
    def sender_address(self) -> bytes:
        return address_bytes(self.sender)


@dataclass(frozen=True, slots=True)
class GradientUpdate:
    """The reveal of a pseudo-gradient its sender committed to in round ``round``.

    The update was computed on the model at that round's start; it counts in
    the round after, and matches one unrevealed digest of the sender's
    commitment (:func:`commitment_digest`).
    """

    sender: bytes
    task_id: bytes
    round: int
    update: EncodedUpdate
    signature: bytes = b""

    @property
    def sender_address(self) -> bytes:
        return address_bytes(self.sender)


@dataclass(frozen=True, slots=True)
class TaskTx:
    """The training task, committed in genesis as its canonical dict."""

    task: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Deploy:
    """A training task deployed on a running chain, as a contract.

    ``task`` is the spec's canonical dict (:meth:`ml.tasks.TaskSpec.to_dict`),
    ``evalset`` the public evaluation rows in :func:`ml.evalset.encode_evalset`'s
    form, ``bounty`` the coins locked from the sender's balance that pay the
    task's miners and contributors (the rest returns when training closes).
    Spent with the sender's nonce and a fee, like a transfer.
    """

    sender: bytes
    nonce: int
    fee: int
    bounty: int
    task: dict[str, Any]
    evalset: bytes
    signature: bytes = b""

    @property
    def sender_address(self) -> bytes:
        return address_bytes(self.sender)


Tx = Coinbase | Transfer | Bond | Unbond | Commit | GradientUpdate | TaskTx | Deploy
SignedTx = Transfer | Bond | Unbond | Commit | GradientUpdate | Deploy


def _update_to_wire(update: EncodedUpdate) -> dict[str, Any]:
    wire = update.to_wire()
    return {key: wire[key] for key in sorted(wire)}


def _fields(tx: Tx, *, with_signature: bool) -> list[Any]:
    if isinstance(tx, Coinbase):
        return [TxKind.COINBASE, tx.height, [[p.address, p.amount] for p in tx.payouts], tx.extra]
    if isinstance(tx, Transfer):
        fields = [TxKind.TRANSFER, tx.sender, tx.nonce, tx.to, tx.amount, tx.fee]
    elif isinstance(tx, Bond | Unbond):
        kind = TxKind.BOND if isinstance(tx, Bond) else TxKind.UNBOND
        fields = [kind, tx.sender, tx.nonce, tx.fee, tx.task_id]
    elif isinstance(tx, Commit):
        fields = [TxKind.COMMIT, tx.sender, tx.task_id, tx.round, tx.base_hash, list(tx.hashes)]
    elif isinstance(tx, GradientUpdate):
        fields = [TxKind.UPDATE, tx.sender, tx.task_id, tx.round, _update_to_wire(tx.update)]
    elif isinstance(tx, Deploy):
        task = {key: tx.task[key] for key in sorted(tx.task)}
        fields = [TxKind.DEPLOY, tx.sender, tx.nonce, tx.fee, tx.bounty, task, tx.evalset]
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


def chain_tag(chain_id: int, genesis_hash: bytes) -> bytes:
    """What a signature binds a transaction to: the network's chain id and the chain's genesis hash."""
    if len(genesis_hash) != HASH_SIZE:
        raise ValueError(f"a genesis hash has {HASH_SIZE} bytes, got {len(genesis_hash)}")
    return struct.pack("<I", chain_id) + genesis_hash


def signing_digest(tx: SignedTx, tag: bytes) -> bytes:
    """What the sender signs: domain tag, chain tag (:func:`chain_tag`), every field but the signature."""
    body = _pack_fields(tx, with_signature=False)
    return hashlib.sha256(SIGNING_DOMAIN + tag + body).digest()


def sign_tx(tx: SignedTx, keypair: KeyPair, tag: bytes) -> SignedTx:
    """Return ``tx`` signed by ``keypair`` (whose public key must be the sender) for the chain ``tag``."""
    if tx.sender != keypair.public:
        raise ValueError("the keypair is not the transaction's sender")
    return replace(tx, signature=sign(keypair, signing_digest(tx, tag)))


def check_signature(tx: SignedTx, tag: bytes) -> None:
    if not verify(tx.sender, signing_digest(tx, tag), tx.signature):
        raise BlockRejected(
            Reject.BAD_SIGNATURE, "signature does not match the sender's key on this chain"
        )


def update_bytes(update: EncodedUpdate) -> bytes:
    """The canonical bytes of an update's wire form (what a commitment hashes)."""
    return pack(_update_to_wire(update))


def commitment_digest(sender_address: bytes, task_id: bytes, round_: int, update: EncodedUpdate) -> bytes:
    """The digest a ``Commit`` lists for one update: it binds the sender, the task and the round.

    ``sha256(COMMIT_DOMAIN || address (21) || task id (32) || round u32 LE || update bytes)``.
    Binding the sender is what makes a copy worthless: another sender's
    reveal of the same update matches no digest of its own commitment.
    """
    head = COMMIT_DOMAIN + sender_address + task_id + struct.pack("<I", round_)
    return hashlib.sha256(head + update_bytes(update)).digest()


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
        _, sender, task_id, round_, update, signature = expect_list(obj, 6, "update")
        tx = GradientUpdate(
            sender=expect_bytes(sender, "sender", size=PUBLIC_KEY_SIZE),
            task_id=expect_bytes(task_id, "task id", size=HASH_SIZE),
            round=expect_int(round_, "round", hi=U32_MAX),
            update=_decode_update(update),
            signature=expect_bytes(signature, "signature", size=SIGNATURE_SIZE),
        )
    elif kind in (TxKind.BOND, TxKind.UNBOND):
        _, sender, nonce, fee, task_id, signature = expect_list(obj, 6, "bond")
        cls = Bond if kind == TxKind.BOND else Unbond
        tx = cls(
            sender=expect_bytes(sender, "sender", size=PUBLIC_KEY_SIZE),
            nonce=expect_int(nonce, "nonce"),
            fee=expect_int(fee, "fee", hi=MAX_AMOUNT),
            task_id=expect_bytes(task_id, "task id", size=HASH_SIZE),
            signature=expect_bytes(signature, "signature", size=SIGNATURE_SIZE),
        )
    elif kind == TxKind.COMMIT:
        _, sender, task_id, round_, base_hash, hashes, signature = expect_list(obj, 7, "commit")
        if not isinstance(hashes, list) or not 1 <= len(hashes) <= MAX_COMMIT_HASHES:
            raise BlockRejected(
                Reject.BAD_ENCODING, f"commit hashes: expected 1..{MAX_COMMIT_HASHES} digests"
            )
        tx = Commit(
            sender=expect_bytes(sender, "sender", size=PUBLIC_KEY_SIZE),
            task_id=expect_bytes(task_id, "task id", size=HASH_SIZE),
            round=expect_int(round_, "round", hi=U32_MAX),
            base_hash=expect_bytes(base_hash, "base hash", size=HASH_SIZE),
            hashes=tuple(expect_bytes(h, "commitment", size=HASH_SIZE) for h in hashes),
            signature=expect_bytes(signature, "signature", size=SIGNATURE_SIZE),
        )
    elif kind == TxKind.TASK:
        _, task = expect_list(obj, 2, "task")
        if not _is_sorted_str_map(task):
            raise BlockRejected(Reject.BAD_ENCODING, "task: expected a map with sorted keys")
        tx = TaskTx(task)
    elif kind == TxKind.DEPLOY:
        _, sender, nonce, fee, bounty, task, evalset, signature = expect_list(obj, 8, "deploy")
        if not _is_sorted_str_map(task):
            raise BlockRejected(Reject.BAD_ENCODING, "deploy task: expected a map with sorted keys")
        tx = Deploy(
            sender=expect_bytes(sender, "sender", size=PUBLIC_KEY_SIZE),
            nonce=expect_int(nonce, "nonce"),
            fee=expect_int(fee, "fee", hi=MAX_AMOUNT),
            bounty=expect_int(bounty, "bounty", hi=MAX_AMOUNT),
            task=task,
            evalset=expect_bytes(evalset, "evaluation set", max_size=MAX_EVAL_BYTES),
            signature=expect_bytes(signature, "signature", size=SIGNATURE_SIZE),
        )
    else:  # pragma: no cover - expect_int bounded the kind
        raise BlockRejected(Reject.BAD_ENCODING, f"unknown transaction kind {kind}")
    if encode_tx(tx) != raw:  # e.g. an update whose wire form is not its own canonical one
        raise BlockRejected(Reject.BAD_ENCODING, "transaction: not in canonical form")
    return tx
