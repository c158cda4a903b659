"""Block templates: what a miner assembles before searching for a nonce."""

from __future__ import annotations

from collections.abc import Sequence

from consensus.block import Block, commitment
from consensus.header import Header
from consensus.merkle import merkle_root
from consensus.state import State
from consensus.transition import Execution, apply_body
from consensus.tx import Coinbase, Tx, encode_tx, txid
from consensus.validation import HEADER_VERSION, expected_bits
from consensus.view import ChainView, parent_hash


def build_block(
    view: ChainView,
    state: State,
    txs: Sequence[Tx],
    *,
    miner: bytes,
    time: int,
    bits: int | None = None,
    extra: bytes = b"",
) -> tuple[Block, Execution]:
    """A valid block (nonce 0) on ``view``'s parent, whose post-state ``state`` is.

    ``txs`` must already be valid on ``state``: a transaction that is not
    raises ``BlockRejected``, and the caller drops it and tries again. The
    bits default to what the retarget requires on this branch.
    """
    run = apply_body(view, state, miner, txs)
    coinbase = Coinbase(height=state.height + 1, payouts=tuple(run.payouts), extra=extra)
    all_txs: list[Tx] = [coinbase, *txs]
    tx_root = merkle_root([txid(encode_tx(tx)) for tx in all_txs])
    header = Header(
        version=HEADER_VERSION,
        prev=parent_hash(view),
        root=commitment(tx_root, run.state.root),
        time=time,
        bits=expected_bits(view) if bits is None else bits,
        nonce=0,
    )
    return Block.build(header, run.state.root, all_txs), run
