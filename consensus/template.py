"""Block templates: what a miner assembles before searching for a nonce."""

from __future__ import annotations

from collections.abc import Sequence

from consensus.block import Block, commitment
from consensus.header import Header
from consensus.merkle import merkle_root
from consensus.state import State
from consensus.transition import BlockContext, Execution, execute
from consensus.tx import Coinbase, Tx, encode_tx, txid
from consensus.validation import HEADER_VERSION


def build_block(
    state: State,
    parent_hash: bytes,
    txs: Sequence[Tx],
    ctx: BlockContext,
    *,
    miner: bytes,
    time: int,
    bits: int,
    extra: bytes = b"",
) -> tuple[Block, Execution]:
    """A valid block (nonce 0) extending ``state`` with ``txs`` paying ``miner``.

    ``txs`` must already be valid on ``state``: a transaction that is not
    raises ``BlockRejected``, and the caller drops it and tries again.
    """
    run = execute(state, miner, txs, ctx)
    coinbase = Coinbase(height=state.height + 1, payouts=tuple(run.payouts), extra=extra)
    all_txs: list[Tx] = [coinbase, *txs]
    tx_root = merkle_root([txid(encode_tx(tx)) for tx in all_txs])
    header = Header(
        version=HEADER_VERSION,
        prev=parent_hash,
        root=commitment(tx_root, run.state.root),
        time=time,
        bits=bits,
        nonce=0,
    )
    return Block.build(header, run.state.root, all_txs), run
