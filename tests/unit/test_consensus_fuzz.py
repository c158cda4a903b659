"""Consensus fuzzing: bad input is ``BlockRejected`` and nothing else; valid blocks are deterministic.

The pinned examples at the top are regressions the fuzzers below found.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from consensus.block import decode_block
from consensus.tx import GradientUpdate, decode_tx, encode_tx, sign_tx
from ml.codec import EncodedUpdate
from tests.chainbuilder import ChainBuilder, key, solo_task

MINER = key(0)
ALICE = key(1)


def _int8_with_chunk(cb: ChainBuilder, chunk: int) -> GradientUpdate:
    """A signed int8 update of the task's size whose one scale covers every value."""
    size = cb.task.param_count
    encoded = EncodedUpdate("int8", size, bytes(size), np.float32(0.0).tobytes(), b"", chunk)
    honest = cb.update(ALICE)
    signed = sign_tx(dataclasses.replace(honest, update=encoded, signature=b""), ALICE, cb.params.chain_id)
    assert isinstance(signed, GradientUpdate)
    return signed


def test_int8_update_with_a_chunk_beyond_intp_is_rejected_or_accepted_never_crashes() -> None:
    """Found by fuzzing: a chunk of 2**62 or 2**64 - 1 made ``np.repeat`` raise ValueError / OverflowError.

    One chunk larger than the vector is canonical (the encoder writes its
    default 256 for shorter vectors), so such an update is valid and decodes
    to the same vector as with ``chunk = size``.
    """
    twin = ChainBuilder(solo_task())
    twin.extend(1)
    expected = twin.add(twin.template([_int8_with_chunk(twin, twin.task.param_count)]))
    for chunk in (2**33, 2**62, 2**64 - 1):
        cb = ChainBuilder(solo_task())
        cb.extend(1)
        tx = _int8_with_chunk(cb, chunk)
        assert decode_tx(encode_tx(tx)) == tx
        block = cb.template([tx])
        assert decode_block(block.encode()).txs == block.txs
        assert cb.add(block).params.tobytes() == expected.params.tobytes()
