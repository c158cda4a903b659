"""Turning a block template into a mined block with the hashing core.

``solve`` searches the nonce space with ``search_nonce``; when all 2**32
nonces fail it rolls the header time forward one second and searches again
(the header's time is not committed by ``root``, so nothing else changes).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from consensus import header as header_codec
from consensus.block import Block
from consensus.hashing import search_nonce
from consensus.pow import bits_to_target

NONCE_SPACE = 2**32
# Nonces per search call: small enough that a new tip interrupts the miner
# within a fraction of a second even on one slow core.
NONCES_PER_ROUND = 1 << 22


def solve(
    block: Block,
    *,
    threads: int | None = None,
    stop: threading.Event | None = None,
    max_time: Callable[[], int] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Block | None:
    """``block`` with a nonce that meets its target, or None if ``stop`` was set.

    ``max_time`` bounds time rolling (the node passes now + allowed drift).
    ``on_progress`` receives the count of nonces tried after each round.
    """
    header = block.header
    target = bits_to_target(header.bits)
    while True:
        start = 0
        while start < NONCE_SPACE:
            count = min(NONCES_PER_ROUND, NONCE_SPACE - start)
            nonce = search_nonce(header_codec.encode(header), target, start, count, threads=threads, stop=stop)
            if stop is not None and stop.is_set():
                return None
            if on_progress is not None:
                on_progress(count if nonce is None else nonce - start + 1)
            if nonce is not None:
                return dataclasses.replace(block, header=header.with_nonce(nonce))
            start += count
        if max_time is not None and header.time + 1 > max_time():
            return None
        header = header.with_time(header.time + 1)
