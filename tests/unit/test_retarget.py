"""The ASERT retarget: bit-exact with the aserti3-2d spec, integer-only, and it
keeps blocks on schedule through steady, rising and falling hashrate.

Simulations draw exponential block intervals from a seeded generator for a
given hashrate, so they are deterministic; the rule under test only ever sees
integer times, as it would from real headers.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import random
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus import pow as pow_module
from consensus.params import MAIN, REGTEST, TESTNET, ChainParams
from consensus.pow import bits_to_target, next_bits, target_to_bits, work

ANCHOR_TIME = 1_700_000_000  # genesis time used by the simulations, seconds
SIM_SEED = 20240601

# --- the spec's reference vectors ------------------------------------------------
#
# A selection of the aserti3-2d test runs published with the Bitcoin Cash spec
# (2020-11-15-asert.md): 600 s blocks, a 2-day half-life, pow limit 0x1d00ffff.
# Each run has an anchor (height, its parent's time, its bits); each line gives a
# block's height and time and the bits its child must carry.

BCH = dataclasses.replace(
    MAIN,
    pow_limit=0xFFFF << 208,  # bits 0x1d00ffff
    target_block_time_s=600,
    asert_half_life_s=2 * 24 * 60 * 60,
)


@dataclass(frozen=True)
class AsertRun:
    name: str
    anchor_height: int
    anchor_parent_time: int
    anchor_bits: int
    lines: tuple[tuple[int, int, int], ...]  # (height, time, next bits)


SPEC_RUNS = (
    AsertRun("run1 steady at pow limit", 1, 0, 0x1D00FFFF,
             ((2, 1200, 0x1D00FFFF), (11, 6600, 0x1D00FFFF))),
    AsertRun("run2 steady at arbitrary target", 1, 0, 0x1A2B3C4D,
             ((2, 1200, 0x1A2B3C4D), (11, 6600, 0x1A2B3C4D))),
    AsertRun("run3 steady at minimum target", 1, 0, 0x01010000,
             ((2, 1200, 0x01010000), (11, 6600, 0x01010000))),
    AsertRun("run4 half-life time jumps double the target", 1, 0, 0x01010000,
             ((2, 174000, 0x01020000), (3, 347400, 0x01040000), (8, 1214400, 0x02008000),
              (9, 1387800, 0x02010000), (100, 17167200, 0x0D080000),
              (224, 38668800, 0x1D008000), (225, 38842200, 0x1D00FFFF),
              (226, 39015600, 0x1D00FFFF))),
    AsertRun("run5 half-life height jumps halve the target", 1, 0, 0x1D00FFFF,
             ((2, 0, 0x1D00FEC5), (290, 0, 0x1C7F62C0), (578, 0, 0x1C3FB160),
              (2306, 0, 0x1C00FEC5), (60194, 0, 0x027F6200), (62498, 0, 0x017F0000),
              (64226, 0, 0x01010000), (64514, 0, 0x01010000))),
    AsertRun("run6 random solve times", 1, 0, 0x1802AEE8,
             ((2, 1200, 0x1802AEE8), (3, 1310, 0x1802AD91), (4, 1327, 0x1802ABF8),
              (9, 7099, 0x1802B39C), (10, 7099, 0x1802B1F2), (620, 378438, 0x1802C0EC))),
    AsertRun("run9 across the signed 32-bit height limit", 2147483642, 1234567290, 0x1802AEE8,
             ((2147483643, 1234568190, 0x1802AE16), (2147483647, 1234569390, 0x1802AACD),
              (2147483652, 1234570890, 0x1802A6B7))),
)  # fmt: skip


@pytest.mark.parametrize("run", SPEC_RUNS, ids=lambda r: r.name)
def test_matches_the_spec_vectors(run: AsertRun) -> None:
    """Our anchor is genesis at height 0, so heights shift by the run's anchor height."""
    params = dataclasses.replace(BCH, genesis_bits=run.anchor_bits)
    anchor_time = run.anchor_parent_time + params.target_block_time_s
    for height, time, expected in run.lines:
        got = next_bits(
            params,
            anchor_time=anchor_time,
            parent_height=height - run.anchor_height,
            parent_time=time,
        )
        assert got == expected, f"height {height}: {got:#010x} != {expected:#010x}"


# --- the rule's shape ---------------------------------------------------------------


def test_regtest_never_retargets() -> None:
    for height, time in [(0, 0), (5, ANCHOR_TIME), (10_000, ANCHOR_TIME + 10**6), (3, 1)]:
        bits = next_bits(REGTEST, anchor_time=ANCHOR_TIME, parent_height=height, parent_time=time)
        assert bits == REGTEST.genesis_bits


@pytest.mark.parametrize("params", [MAIN, TESTNET], ids=lambda p: p.name)
def test_on_schedule_chain_keeps_genesis_bits(params: ChainParams) -> None:
    """Genesis' child, and every block of a chain exactly on schedule, carry genesis_bits."""
    spacing = params.target_block_time_s
    for height in (0, 1, 2, 100, 10_000, 1_000_000):
        parent_time = ANCHOR_TIME + spacing * height
        bits = next_bits(
            params, anchor_time=ANCHOR_TIME, parent_height=height, parent_time=parent_time
        )
        assert bits == params.genesis_bits


@pytest.mark.parametrize("half_lives", [-3, -1, 1, 2])
def test_one_half_life_of_drift_doubles_the_target(half_lives: int) -> None:
    params = TESTNET
    height = 500
    drift = half_lives * params.asert_half_life_s
    parent_time = ANCHOR_TIME + params.target_block_time_s * height + drift
    bits = next_bits(params, anchor_time=ANCHOR_TIME, parent_height=height, parent_time=parent_time)
    genesis_target = bits_to_target(params.genesis_bits)
    expected = genesis_target << half_lives if half_lives > 0 else genesis_target >> -half_lives
    assert bits == target_to_bits(expected)


def test_extreme_times_clamp_without_building_huge_numbers() -> None:
    far_future = next_bits(TESTNET, anchor_time=0, parent_height=1, parent_time=2**32 - 1)
    assert bits_to_target(far_future) == TESTNET.pow_limit
    far_past = next_bits(TESTNET, anchor_time=2**32 - 1, parent_height=10**9, parent_time=0)
    assert bits_to_target(far_past) == 1


def test_negative_parent_height_is_refused() -> None:
    with pytest.raises(ValueError):
        next_bits(TESTNET, anchor_time=ANCHOR_TIME, parent_height=-1, parent_time=ANCHOR_TIME)


HEIGHTS = st.integers(min_value=0, max_value=10**7)
TIMES = st.integers(min_value=0, max_value=2**32 - 1)


@given(HEIGHTS, TIMES, TIMES)
def test_later_parent_time_never_makes_mining_harder(height: int, t1: int, t2: int) -> None:
    early, late = sorted((t1, t2))
    kwargs = {"anchor_time": ANCHOR_TIME, "parent_height": height}
    assert bits_to_target(next_bits(TESTNET, parent_time=late, **kwargs)) >= bits_to_target(
        next_bits(TESTNET, parent_time=early, **kwargs)
    )


@given(HEIGHTS, HEIGHTS, TIMES)
def test_more_blocks_by_the_same_time_never_make_mining_easier(h1: int, h2: int, t: int) -> None:
    low, high = sorted((h1, h2))
    kwargs = {"anchor_time": ANCHOR_TIME, "parent_time": t}
    assert bits_to_target(next_bits(TESTNET, parent_height=high, **kwargs)) <= bits_to_target(
        next_bits(TESTNET, parent_height=low, **kwargs)
    )


@given(HEIGHTS, TIMES)
def test_result_is_always_valid_and_within_the_pow_limit(height: int, time: int) -> None:
    bits = next_bits(MAIN, anchor_time=ANCHOR_TIME, parent_height=height, parent_time=time)
    assert 1 <= bits_to_target(bits) <= MAIN.pow_limit


RETARGET_FUNCTIONS: Sequence[Callable[..., int]] = (
    pow_module.next_bits,
    pow_module.asert_target,
    pow_module._pow2_frac,
    pow_module._div_trunc,
    pow_module.bits_to_target,
    pow_module.target_to_bits,
)


@pytest.mark.parametrize("function", RETARGET_FUNCTIONS, ids=lambda f: f.__name__)
def test_retarget_code_is_integer_only(function: Callable[..., int]) -> None:
    """No true division, no float literal, no float()/math call: bits are the same everywhere."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    for node in ast.walk(tree):
        assert not isinstance(node, ast.BinOp) or not isinstance(node.op, ast.Div | ast.Pow)
        assert not isinstance(node, ast.AugAssign) or not isinstance(node.op, ast.Div | ast.Pow)
        assert not (isinstance(node, ast.Constant) and isinstance(node.value, float))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"float", "round", "pow"}
        assert not (isinstance(node, ast.Name) and node.id == "math")


# --- simulated histories ------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    bits: int
    time: int  # integer header time, seconds


def simulate(params: ChainParams, hashrates_hps: Sequence[float], seed: int) -> list[Block]:
    """Mine one block per entry of ``hashrates_hps`` (hashes per second at that block).

    Real time runs continuously; each header carries its integer floor, as a
    miner stamping ``int(now)`` would.
    """
    rng = random.Random(seed)
    now = float(ANCHOR_TIME)
    parent_time, blocks = ANCHOR_TIME, []
    for height, hashrate in enumerate(hashrates_hps):
        bits = next_bits(
            params, anchor_time=ANCHOR_TIME, parent_height=height, parent_time=parent_time
        )
        now += rng.expovariate(1.0) * work(bits) / hashrate
        parent_time = int(now)
        blocks.append(Block(bits, parent_time))
    return blocks


def equilibrium_hashrate(params: ChainParams) -> float:
    """The hashrate at which genesis difficulty gives exactly the target block time."""
    return work(params.genesis_bits) / params.target_block_time_s


def mean_interval_s(blocks: Sequence[Block]) -> float:
    return (blocks[-1].time - blocks[0].time) / (len(blocks) - 1)


@pytest.mark.parametrize("params", [TESTNET, MAIN], ids=lambda p: p.name)
def test_steady_hashrate_holds_the_target_block_time(params: ChainParams) -> None:
    blocks = simulate(params, [equilibrium_hashrate(params)] * 10_000, seed=SIM_SEED)
    assert mean_interval_s(blocks) == pytest.approx(params.target_block_time_s, rel=0.05)
    # ...and the difficulty stays near where it started: no drift, no oscillation.
    ratios = [work(b.bits) / work(params.genesis_bits) for b in blocks]
    assert 0.7 < min(ratios) and max(ratios) < 1.4


BLOCKS_BEFORE_CHANGE = 1_000
BLOCKS_AFTER_CHANGE = 4_000
SETTLE_BLOCKS = 2_000  # blocks after the change before we measure the new steady state
CHANGE_SEEDS = range(SIM_SEED, SIM_SEED + 5)


def simulate_change(
    params: ChainParams, factor: float, seed: int
) -> tuple[list[Block], list[Block]]:
    """Blocks before and after the hashrate is multiplied by ``factor``."""
    base = equilibrium_hashrate(params)
    rates = [base] * BLOCKS_BEFORE_CHANGE + [base * factor] * BLOCKS_AFTER_CHANGE
    blocks = simulate(params, rates, seed=seed)
    return blocks[:BLOCKS_BEFORE_CHANGE], blocks[BLOCKS_BEFORE_CHANGE:]


def difficulty_ratio(params: ChainParams, block: Block, factor: float) -> float:
    """Work of ``block`` relative to the new equilibrium (1.0 = fully adjusted)."""
    return work(block.bits) / (work(params.genesis_bits) * factor)


def first_within_factor_2(params: ChainParams, after: Sequence[Block], factor: float) -> int:
    return next(i for i, b in enumerate(after) if 0.5 <= difficulty_ratio(params, b, factor) <= 2.0)


def assert_settled(params: ChainParams, after: Sequence[Block], factor: float) -> None:
    """Long after the change, difficulty sits at the new level and blocks on target."""
    settled = after[SETTLE_BLOCKS:]
    assert all(0.7 < difficulty_ratio(params, b, factor) < 1.4 for b in settled)
    assert mean_interval_s(settled) == pytest.approx(params.target_block_time_s, rel=0.05)


def test_tenfold_hashrate_jump_is_absorbed_within_a_half_life() -> None:
    """Blocks rush in, the schedule runs ahead, the target shrinks ~10x.

    Getting within 2x of the new level needs a lead of log2(5) half-lives;
    with blocks arriving 10x fast, then slowing, that takes
    ``half_life * log2(0.9 / 0.5)``, about 0.85 half-life of wall time, on
    average. Over a few seeds the median stays under one half-life.
    """
    params, factor = TESTNET, 10.0
    seconds_to_adjust = []
    for seed in CHANGE_SEEDS:
        before, after = simulate_change(params, factor, seed)
        i = first_within_factor_2(params, after, factor)
        seconds_to_adjust.append(after[i].time - before[-1].time)
        assert_settled(params, after, factor)
    assert sorted(seconds_to_adjust)[len(CHANGE_SEEDS) // 2] <= params.asert_half_life_s
    assert max(seconds_to_adjust) <= 3 * params.asert_half_life_s // 2


def test_tenfold_hashrate_drop_is_absorbed_within_a_half_life_of_blocks() -> None:
    """Blocks crawl, the schedule falls behind, the target grows ~10x.

    ASERT must fall log2(5) half-lives behind schedule to get within 2x, so a
    drop is absorbed within a half-life's worth of blocks (on average
    ``log2(1.8)``, about 0.85 of the 120 blocks on testnet) rather than of
    wall time: the first slow blocks take ~50 s each.
    """
    params, factor = TESTNET, 0.1
    blocks_per_half_life = params.asert_half_life_s // params.target_block_time_s
    blocks_to_adjust = []
    for seed in CHANGE_SEEDS:
        before, after = simulate_change(params, factor, seed)
        i = first_within_factor_2(params, after, factor)
        blocks_to_adjust.append(i + 1)
        assert after[i].time - before[-1].time <= 4 * params.asert_half_life_s
        assert_settled(params, after, factor)
    assert sorted(blocks_to_adjust)[len(CHANGE_SEEDS) // 2] <= blocks_per_half_life
    assert max(blocks_to_adjust) <= 3 * blocks_per_half_life // 2


def test_simulation_is_deterministic() -> None:
    rates = [equilibrium_hashrate(TESTNET)] * 200
    assert simulate(TESTNET, rates, seed=7) == simulate(TESTNET, rates, seed=7)
