"""The retarget is anchored at block 1, not at the fixed-in-the-past genesis."""

from __future__ import annotations

from consensus.genesis import GENESIS_TIME
from consensus.params import TESTNET
from consensus.pow import bits_to_target
from consensus.validation import required_bits

MONTHS_LATER = GENESIS_TIME + 300 * 24 * 3600  # a chain started long after its genesis date


def test_block_one_carries_the_genesis_bits() -> None:
    assert required_bits(TESTNET, anchor_time=None, parent_height=0, parent_time=GENESIS_TIME) == TESTNET.genesis_bits


def test_a_late_start_does_not_collapse_the_difficulty() -> None:
    """Block 2 right on schedule after a block 1 stamped months after genesis: unchanged bits."""
    bits = required_bits(TESTNET, anchor_time=MONTHS_LATER, parent_height=1, parent_time=MONTHS_LATER)
    assert bits == TESTNET.genesis_bits
    assert bits_to_target(bits) < TESTNET.pow_limit


def test_blocks_faster_than_schedule_raise_the_difficulty() -> None:
    fast = required_bits(
        TESTNET, anchor_time=MONTHS_LATER, parent_height=100, parent_time=MONTHS_LATER + 100
    )  # 100 blocks in 100 s against a 5 s target
    assert bits_to_target(fast) < bits_to_target(TESTNET.genesis_bits)
