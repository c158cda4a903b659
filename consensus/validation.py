"""Header rules: version, difficulty, proof of work, and time.

``validate_header`` checks a header against its parent alone, so a node can
run it on headers before it has their bodies (headers-first sync).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.errors import BlockRejected, Reject
from consensus.header import Header, header_hash
from consensus.params import ChainParams
from consensus.pow import check_proof_of_work, next_bits

HEADER_VERSION = 1


@dataclass(frozen=True)
class ParentInfo:
    """The parent header, its height, and the times of the blocks ending at it."""

    header: Header
    height: int
    hash: bytes
    recent_times: Sequence[int]  # up to median_time_span times, oldest first, the parent's last


def median_time_past(times: Sequence[int]) -> int:
    """Median of the given block times (Bitcoin's rule for the last 11)."""
    ordered = sorted(times)
    return ordered[len(ordered) // 2]


def required_bits(params: ChainParams, *, anchor_time: int | None, parent_height: int, parent_time: int) -> int:
    """The bits the block after ``parent`` must carry.

    Block 1 carries the genesis bits; every later block retargets with ASERT
    anchored at block 1 (``anchor_time`` is block 1's time on this branch).
    Anchoring at genesis would not work: the genesis time is fixed in the
    past, so a chain started months later would look that far behind
    schedule and its difficulty would collapse to the limit. Bitcoin Cash
    anchors aserti3-2d at its first block after activation for the same
    reason.
    """
    if parent_height == 0 or anchor_time is None:
        return params.genesis_bits
    return next_bits(params, anchor_time=anchor_time, parent_height=parent_height - 1, parent_time=parent_time)


def validate_header(
    header: Header, parent: ParentInfo, params: ChainParams, now: int, *, anchor_time: int | None
) -> None:
    """Raise ``BlockRejected`` unless ``header`` may extend ``parent`` at time ``now``.

    ``anchor_time`` is the time of block 1 on the parent's branch (None while
    the parent is genesis): see :func:`required_bits`.
    """
    if header.version != HEADER_VERSION:
        raise BlockRejected(Reject.BAD_VERSION, f"version {header.version}, expected {HEADER_VERSION}")
    if header.prev != parent.hash:
        raise BlockRejected(Reject.UNKNOWN_PARENT, "prev is not the given parent")
    expected_bits = required_bits(
        params, anchor_time=anchor_time, parent_height=parent.height, parent_time=parent.header.time
    )
    if header.bits != expected_bits:
        raise BlockRejected(Reject.BAD_BITS, f"bits {header.bits:#010x}, retarget says {expected_bits:#010x}")
    check_proof_of_work(header_hash(header), header.bits, params)
    window = list(parent.recent_times)[-params.median_time_span :]
    mtp = median_time_past(window)
    if header.time <= mtp:
        raise BlockRejected(Reject.TIME_TOO_OLD, f"time {header.time} <= median time past {mtp}")
    if header.time > now + params.max_future_block_time_s:
        raise BlockRejected(
            Reject.TIME_TOO_NEW,
            f"time {header.time} is {header.time - now}s ahead (limit {params.max_future_block_time_s}s)",
        )
