"""Header rules: version, parent, difficulty, proof of work, and time.

``validate_header`` checks a header against the branch it extends alone (a
:class:`~consensus.view.ChainView`), so a node can run it on headers before it
has their bodies (headers-first sync); :func:`consensus.transition.state_transition`
runs it again as the first step of every block.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.errors import BlockRejected, Reject
from consensus.header import Header, header_hash
from consensus.params import ChainParams
from consensus.pow import check_proof_of_work, next_bits
from consensus.view import ChainView, ancestor_times, anchor_time, parent_hash

HEADER_VERSION = 1


def median_time_past(times: Sequence[int]) -> int:
    """Median of the given block times (Bitcoin's rule for the last 11)."""
    ordered = sorted(times)
    return ordered[len(ordered) // 2]


def required_bits(params: ChainParams, *, anchor_time: int | None, parent_height: int, parent_time: int) -> int:
    """The bits the block after ``parent`` must carry.

    Block 1 carries the genesis bits; every later block retargets with ASERT
    anchored at block 1 (``anchor_time`` is block 1's time on this branch,
    slid forward by ``consensus.pow.next_anchor_time`` past drift that
    would only bank free blocks).
    Anchoring at genesis would not work: the genesis time is fixed in the
    past, so a chain started months later would look that far behind
    schedule and its difficulty would collapse to the limit. Bitcoin Cash
    anchors aserti3-2d at its first block after activation for the same
    reason.
    """
    if parent_height == 0 or anchor_time is None:
        return params.genesis_bits
    return next_bits(params, anchor_time=anchor_time, parent_height=parent_height - 1, parent_time=parent_time)


def expected_bits(view: ChainView) -> int:
    """The bits the block after ``view``'s parent must carry (:func:`required_bits` on this branch)."""
    parent = view.header_at(view.height)
    return required_bits(
        view.rules.params, anchor_time=anchor_time(view), parent_height=view.height, parent_time=parent.time
    )


def earliest_time(view: ChainView) -> int:
    """The smallest time the block after ``view``'s parent may carry: one past the median time past."""
    return median_time_past(ancestor_times(view, view.rules.params.median_time_span)) + 1


def validate_header(view: ChainView, header: Header, now: int) -> None:
    """Raise ``BlockRejected`` unless ``header`` may extend ``view``'s parent at time ``now``."""
    params = view.rules.params
    if header.version != HEADER_VERSION:
        raise BlockRejected(Reject.BAD_VERSION, f"version {header.version}, expected {HEADER_VERSION}")
    if header.prev != parent_hash(view):
        raise BlockRejected(Reject.UNKNOWN_PARENT, "prev is not the given parent")
    bits = expected_bits(view)
    if header.bits != bits:
        raise BlockRejected(Reject.BAD_BITS, f"bits {header.bits:#010x}, retarget says {bits:#010x}")
    check_proof_of_work(header_hash(header), header.bits, params)
    mtp = earliest_time(view) - 1
    if header.time <= mtp:
        raise BlockRejected(Reject.TIME_TOO_OLD, f"time {header.time} <= median time past {mtp}")
    if header.time > now + params.max_future_block_time_s:
        raise BlockRejected(
            Reject.TIME_TOO_NEW,
            f"time {header.time} is {header.time - now}s ahead (limit {params.max_future_block_time_s}s)",
        )
