"""The per-network parameters are sane and distinct, and look-ups fail clearly."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.params import (
    MAIN,
    NETWORKS,
    REGTEST,
    TESTNET,
    ChainParams,
    get_params,
    with_block_time,
)
from consensus.pow import bits_to_target, target_to_bits, work

ALL = (MAIN, TESTNET, REGTEST)
TESTNET_DESIGN_HASHRATE_HPS = 40_000_000  # 3 local nodes, 2 SHA-NI cores, numba core
MAIN_DESIGN_HASHRATE_HPS = 72_000_000  # a handful of hosts


def test_networks_are_registered_by_name() -> None:
    assert NETWORKS == {"main": MAIN, "testnet": TESTNET, "regtest": REGTEST}
    for params in ALL:
        assert get_params(params.name) is params


def test_unknown_network_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="main, regtest, testnet"):
        get_params("mainnet")


@pytest.mark.parametrize("field", ["name", "chain_id", "magic", "default_port"])
def test_identities_are_unique(field: str) -> None:
    values = [getattr(p, field) for p in ALL]
    assert len(set(values)) == len(values)


@pytest.mark.parametrize("params", ALL, ids=lambda p: p.name)
def test_numbers_are_positive_and_in_range(params: ChainParams) -> None:
    assert 0 <= params.chain_id < 2**32
    assert len(params.magic) == 4
    for value in (
        params.target_block_time_s,
        params.asert_half_life_s,
        params.max_future_block_time_s,
        params.median_time_span,
        params.default_port,
        params.pow_limit,
    ):
        assert value > 0
    assert params.median_time_span == 11


@pytest.mark.parametrize("params", ALL, ids=lambda p: p.name)
def test_genesis_bits_are_canonical_and_within_the_pow_limit(params: ChainParams) -> None:
    target = bits_to_target(params.genesis_bits)
    assert target <= params.pow_limit
    assert target_to_bits(target) == params.genesis_bits


@pytest.mark.parametrize("params", ALL, ids=lambda p: p.name)
def test_pow_limit_is_exactly_a_compact_target(params: ChainParams) -> None:
    """ASERT clamps to pow_limit then encodes it: no precision may be lost there."""
    assert bits_to_target(target_to_bits(params.pow_limit)) == params.pow_limit


@pytest.mark.parametrize("params", ALL, ids=lambda p: p.name)
def test_future_allowance_moves_difficulty_little(params: ChainParams) -> None:
    """A block stamped at the edge of the future window eases the target by < 2**(1/2)."""
    assert 2 * params.max_future_block_time_s <= params.asert_half_life_s or not params.retarget


def test_regtest_is_trivial_and_fixed() -> None:
    assert REGTEST.retarget is False
    assert work(REGTEST.genesis_bits) <= 2  # every other hash passes
    assert REGTEST.pow_limit > 2**254


def test_main_keeps_bitcoins_future_allowance() -> None:
    assert MAIN.max_future_block_time_s == 2 * 60 * 60
    assert MAIN.target_block_time_s == 60


@pytest.mark.parametrize(
    ("params", "hashrate_hps"),
    [(TESTNET, TESTNET_DESIGN_HASHRATE_HPS), (MAIN, MAIN_DESIGN_HASHRATE_HPS)],
    ids=["testnet", "main"],
)
def test_genesis_difficulty_matches_the_design_hashrate(
    params: ChainParams, hashrate_hps: int
) -> None:
    """At the hashrate the network was sized for, genesis difficulty gives ~the target time."""
    seconds_per_block_x100 = 100 * work(params.genesis_bits) // hashrate_hps
    assert (
        90 * params.target_block_time_s
        <= seconds_per_block_x100
        <= 110 * params.target_block_time_s
    )


def test_main_is_harder_than_testnet_than_regtest() -> None:
    assert work(MAIN.genesis_bits) > work(TESTNET.genesis_bits) > work(REGTEST.genesis_bits)


def test_params_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MAIN.target_block_time_s = 1  # type: ignore[misc]


def test_with_block_time_overrides_only_the_block_time() -> None:
    params = with_block_time(TESTNET, 12)
    assert params.target_block_time_s == 12
    assert dataclasses.replace(params, target_block_time_s=TESTNET.target_block_time_s) == TESTNET
    assert TESTNET.target_block_time_s == 5


@pytest.mark.parametrize(
    "change",
    [
        {"target_block_time_s": 0},
        {"asert_half_life_s": -1},
        {"median_time_span": 10},
        {"magic": b"abc"},
        {"chain_id": 2**32},
        {"pow_limit": 2**256},
        {"default_port": 70000},
    ],
)
def test_invalid_params_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(MAIN, **change)  # type: ignore[arg-type]
