"""ASERT never banks drift beyond the pow limit: an early block 1 or a long pause buys one cheap block, not millions.

The retarget is anchored at block 1, and the genesis time is fixed in the
past, so a first miner could stamp block 1 just after genesis (the only
lower bound its time has) and block 2 with the real time: with a fixed
anchor the chain would then look months behind schedule and mine at the pow
limit until it had caught up, one block per five seconds of backlog.
``consensus.pow.next_anchor_time`` slides the anchor so the schedule is at
most ``asert_max_drift_s`` behind: the block after the gap is at the limit,
and the difficulty climbs back as soon as blocks come faster than schedule.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.genesis import GENESIS_TIME
from consensus.header import Header
from consensus.params import MAIN, TESTNET, ChainParams
from consensus.pow import asert_max_drift_s, bits_to_target, next_anchor_time
from consensus.validation import expected_bits
from consensus.view import BranchView, ChainRules, scan_anchor
from ml.tasks import builtin_task

MONTHS_LATER = GENESIS_TIME + 200 * 24 * 3600  # when the chain really starts
FAST_S = 1  # the attacker's blocks come every second against a 5 s target
CLIMB_BLOCKS = 200  # within this many fast blocks the target must leave the pow limit


def rules(params: ChainParams) -> ChainRules:
    task = dataclasses.replace(builtin_task("digits"), gate_examples=0, gate_data_sha256="", gate_scope="update")
    return ChainRules(params, task, None)


def _branch(params: ChainParams, times: list[int]) -> tuple[list[bytes], dict[bytes, Header]]:
    """Hashes and headers of a branch whose blocks 1.. carry ``times`` (bits do not matter here)."""
    hashes = [bytes(32)]
    headers = {bytes(32): Header(1, bytes(32), bytes(32), GENESIS_TIME, params.genesis_bits, 0)}
    for i, t in enumerate(times, start=1):
        h = i.to_bytes(32, "big")
        headers[h] = Header(1, hashes[-1], bytes(32), t, params.genesis_bits, 0)
        hashes.append(h)
    return hashes, headers


def targets_after_early_block_one(params: ChainParams, blocks: int) -> list[int]:
    """Targets of blocks 3.. when block 1 is stamped right after genesis and later blocks every second."""
    times = [GENESIS_TIME + 1] + [MONTHS_LATER + FAST_S * i for i in range(blocks)]
    hashes, headers = _branch(params, times)
    r = rules(params)
    out = []
    anchor = None
    for height in range(1, len(times) + 1):
        anchor = next_anchor_time(params, anchor, height, headers[hashes[height]].time)
        if height >= 2:
            view = BranchView(r, height, hashes, headers.__getitem__, anchor)
            out.append(bits_to_target(expected_bits(view)))
    return out


@pytest.mark.parametrize("params", [TESTNET, MAIN], ids=lambda p: p.name)
def test_an_early_block_one_buys_one_block_at_the_limit_not_a_backlog(params: ChainParams) -> None:
    targets = targets_after_early_block_one(params, CLIMB_BLOCKS + 2)
    assert targets[0] == params.pow_limit, "the block after the gap is at the limit"
    assert targets[CLIMB_BLOCKS] < params.pow_limit, "fast blocks bring the difficulty back"
    assert targets[-1] < targets[1], "and it keeps climbing"


def test_the_cap_is_where_asert_reaches_the_limit() -> None:
    for params in (TESTNET, MAIN):
        cap = asert_max_drift_s(params)
        assert cap % params.asert_half_life_s == 0
        genesis = bits_to_target(params.genesis_bits)
        halvings = cap // params.asert_half_life_s
        assert genesis << halvings >= params.pow_limit > genesis << (halvings - 1)
    assert asert_max_drift_s(TESTNET) == 12 * TESTNET.asert_half_life_s  # 2**16 vs ~2**27.6 hashes


def test_regtest_keeps_block_one_as_the_anchor() -> None:
    from consensus.params import REGTEST

    assert next_anchor_time(REGTEST, 100, 5, 10**9) == 100


def test_an_on_schedule_chain_never_slides() -> None:
    anchor = None
    for height in range(1, 500):
        anchor = next_anchor_time(TESTNET, anchor, height, MONTHS_LATER + TESTNET.target_block_time_s * (height - 1))
    assert anchor == MONTHS_LATER


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4 * 3600), min_size=1, max_size=40))
def test_the_running_anchor_equals_a_scan_of_the_branch(gaps: list[int]) -> None:
    """What the node keeps per block and what a view works out from the headers agree."""
    times = []
    t = MONTHS_LATER
    for gap in gaps:
        t += gap
        times.append(t)
    hashes, headers = _branch(TESTNET, times)
    anchor = None
    for height, time_s in enumerate(times, start=1):
        anchor = next_anchor_time(TESTNET, anchor, height, time_s)
    view = BranchView(rules(TESTNET), len(times), hashes, headers.__getitem__)
    assert scan_anchor(view) == anchor == view.asert_anchor()
