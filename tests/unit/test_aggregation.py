"""ml.aggregation: every rule against a plain numpy oracle (bit for bit), against
Flower (within float32 rounding), against golden vectors, and for determinism
across calls and thread counts.

Regenerate the golden vectors (only with a deliberate consensus change) with
``.venv/bin/python -m tests.unit.test_aggregation --regenerate``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import pathlib
import sys
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml import _agg_kernels as kernels
from ml.aggregation import RULES, AggregationError, aggregate

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors" / "aggregation.json"
F64 = np.float64
F32 = np.float32


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def random_updates(seed: int, n: int, d: int, *, byzantine: int = 0) -> np.ndarray:
    """Gaussian honest rows plus ``byzantine`` rows far away (last rows)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    if byzantine:
        x[n - byzantine :] = -20.0 * x[n - byzantine :] + 5.0
    return x


def hashed_updates(seed: int, n: int, d: int, *, levels: int = 0) -> np.ndarray:
    """Inputs from SHA-256 in counter mode, so golden vectors never depend on numpy's RNG.

    ``levels`` > 0 gives small integers (many ties); otherwise multiples of
    2**-23 in [-1, 1), with the last row scaled by 64 as an outlier.
    """
    count = n * d
    blocks = (count * 4 + 31) // 32
    stream = b"".join(
        hashlib.sha256(seed.to_bytes(8, "little") + i.to_bytes(8, "little")).digest()
        for i in range(blocks)
    )
    words = np.frombuffer(stream[: count * 4], dtype="<u4").reshape(n, d)
    if levels:
        return (words % levels).astype(np.float32) - np.float32(levels // 2)
    x = ((words >> 8).astype(np.float64) / 2.0**23 - 1.0).astype(np.float32)
    x[-1] *= np.float32(64.0)
    return x


# --------------------------------------------------------------------------
# Oracles: short numpy versions of each rule, with the documented order
# --------------------------------------------------------------------------


def oracle_mean(x: np.ndarray, rows: list[int] | None = None) -> np.ndarray:
    rows = list(range(x.shape[0])) if rows is None else rows
    acc = np.zeros(x.shape[1], dtype=F64)
    for i in rows:  # elementwise adds, one row at a time: sequential per coordinate
        acc += x[i].astype(F64)
    return (acc / len(rows)).astype(F32)


def oracle_median(x: np.ndarray) -> np.ndarray:
    s = np.sort(x, axis=0)
    n = x.shape[0]
    if n % 2:
        return s[n // 2].copy()
    return ((s[n // 2 - 1].astype(F64) + s[n // 2].astype(F64)) * 0.5).astype(F32)


def oracle_trimmed(x: np.ndarray, f: int) -> np.ndarray:
    s = np.sort(x, axis=0)
    return oracle_mean(s, list(range(f, x.shape[0] - f)))


def oracle_nearest_median(values: np.ndarray, beta: int) -> F32:
    """Mean of the ``beta`` values nearest their median (a tie keeps the smaller), summed ascending."""
    values = np.sort(values).astype(F64)
    n = values.size
    m = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) * 0.5
    nearest = np.lexsort((values, np.abs(values - m)))[:beta]  # by distance, then smaller value
    total = 0.0
    for value in np.sort(values[nearest]):
        total += value
    return F32(total / beta)


def oracle_meamed(x: np.ndarray, f: int) -> np.ndarray:
    n, d = x.shape
    return np.array([oracle_nearest_median(x[:, j], n - f) for j in range(d)], dtype=F32)


def oracle_distances(x: np.ndarray) -> np.ndarray:
    """The documented order: 128 lanes over k mod 128, then the lanes in order."""
    n, d = x.shape
    lanes_n = kernels.DIST_LANES
    padded = -(-d // lanes_n) * lanes_n
    dist = np.zeros((n, n), dtype=F64)
    for i, j in itertools.combinations(range(n), 2):
        sq = np.zeros(padded, dtype=F64)
        sq[:d] = (x[i].astype(F64) - x[j].astype(F64)) ** 2
        lanes = np.zeros(lanes_n, dtype=F64)
        for chunk in sq.reshape(-1, lanes_n):
            lanes += chunk
        total = 0.0
        for value in lanes:
            total += value
        dist[i, j] = dist[j, i] = total
    return dist


def oracle_scores(dist: np.ndarray, alive: list[int], f: int) -> dict[int, float]:
    k = max(1, len(alive) - f - 2)
    scores = {}
    for i in alive:
        near = sorted(dist[i, j] for j in alive if j != i)[:k]
        total = 0.0
        for value in near:
            total += value
        scores[i] = total
    return scores


def oracle_krum_order(x: np.ndarray, f: int) -> list[int]:
    scores = oracle_scores(oracle_distances(x), list(range(x.shape[0])), f)
    return sorted(scores, key=lambda i: (scores[i], i))


def oracle_bulyan(x: np.ndarray, f: int) -> tuple[np.ndarray, list[int]]:
    n, d = x.shape
    theta, beta = n - 2 * f, n - 4 * f
    dist = oracle_distances(x)
    alive = list(range(n))
    for _ in range(theta):
        scores = oracle_scores(dist, alive, f)
        alive.remove(min(alive, key=lambda i: (scores[i], i)))
    picked = sorted(set(range(n)) - set(alive))
    out = np.empty(d, dtype=F32)
    for j in range(d):
        out[j] = oracle_nearest_median(x[picked, j], beta)
    return out, picked


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert bits(a) == bits(b), f"max abs diff {np.max(np.abs(a.astype(F64) - b.astype(F64)))}"


def mask_of(rows: list[int], n: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


# --------------------------------------------------------------------------
# Rules against the oracles, bit for bit
# --------------------------------------------------------------------------

SHAPES = [(1, 7, 0), (2, 33, 0), (7, 100, 1), (11, 257, 2), (16, 130, 3), (20, 64, 4)]


@pytest.mark.parametrize(("n", "d", "f"), SHAPES)
def test_mean_median_trimmed_match_oracles(n: int, d: int, f: int) -> None:
    x = random_updates(n * 1000 + d, n, d, byzantine=f)
    out, mask = aggregate("mean", x)
    assert_same_bits(out, oracle_mean(x))
    assert mask.all() and mask.dtype == np.bool_
    out, mask = aggregate("median", x, f=f)
    assert_same_bits(out, oracle_median(x))
    assert mask.all()
    out, mask = aggregate("trimmed_mean", x, f=f)
    assert_same_bits(out, oracle_trimmed(x, f))
    assert mask.all()


def test_median_matches_numpy_median_on_odd_n() -> None:
    x = random_updates(5, 9, 500)
    assert_same_bits(aggregate("median", x)[0], np.median(x, axis=0).astype(F32))


@pytest.mark.parametrize(("n", "d"), [(3, 5), (5, 129), (12, 1000), (20, 300)])
def test_distances_follow_the_documented_lane_order(n: int, d: int) -> None:
    x = random_updates(n + d, n, d)
    got = kernels.pairwise_sq_distances(x, 3)
    assert_same_bits(got, oracle_distances(x))


def chunk_edge_width(n: int, full_chunks: int, extra_steps: int, tail: int) -> int:
    """A d covering ``full_chunks`` whole distance chunks of n rows, ``extra_steps`` more steps, ``tail`` coords."""
    return (full_chunks * kernels.distance_chunk_steps(n) + extra_steps) * kernels.DIST_LANES + tail


@pytest.mark.parametrize(
    ("n", "full_chunks", "extra_steps", "tail"),
    [
        (3, 1, 0, 0),  # fewer rows than a tile, exactly one chunk, no tail
        (3, 1, 5, 1),  # fewer rows than a tile, a short last chunk, one tail coordinate
        (33, 2, 3, 77),  # rows not a multiple of the tile, two chunks, a short one and a tail
        (8, 0, 1, 127),  # one step only, the longest tail
    ],
)
def test_distances_keep_the_lane_order_across_chunk_edges(
    n: int, full_chunks: int, extra_steps: int, tail: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lanes carry their sums from chunk to chunk: every chunk edge keeps the documented order."""
    x = random_updates(n + tail, n, chunk_edge_width(n, full_chunks, extra_steps, tail), byzantine=1)
    want = oracle_distances(x)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 1)  # every group count through the threads
    for groups in (1, 2, 3):
        assert_same_bits(kernels.pairwise_sq_distances(x, groups), want)


def test_distance_chunks_fill_their_budget_or_the_shortest_run() -> None:
    for n in (2, 3, 32, 33, 200, 5000):
        steps = kernels.distance_chunk_steps(n)
        chunk_bytes = n * steps * kernels.LANE_VECTOR * kernels.F64_BYTES
        assert steps >= kernels.DIST_CHUNK_MIN_STEPS
        assert chunk_bytes <= kernels.DIST_CHUNK_BYTES or steps == kernels.DIST_CHUNK_MIN_STEPS


def test_distances_keep_the_documented_bits_on_awkward_values() -> None:
    """Subnormals, signed zeros, equal coordinates and exponents far apart, in every pair slot.

    The kernel issues some subtractions as ``fma(u, 1.0, -v)`` (kernels.EXACT_FMA_SUBTRACT);
    these are the values where a subtraction done any other way would show.
    """
    rng = np.random.default_rng(17)
    n, d = 12, 9 * kernels.DIST_LANES + 5
    kinds = [
        rng.standard_normal(d).astype(F32) * F32(1e-41),  # subnormal float32
        np.zeros(d, dtype=F32),
        -np.zeros(d, dtype=F32),
        rng.standard_normal(d).astype(F32) * F32(1e30),
        rng.standard_normal(d).astype(F32) * F32(1e-30),
        rng.standard_normal(d).astype(F32),
    ]
    x = np.stack([kinds[i * 5 % len(kinds)] for i in range(n)])  # every kind against every kind
    x[:, ::7] = x[0, ::7]  # some coordinates equal in every row
    assert_same_bits(kernels.pairwise_sq_distances(x, 2), oracle_distances(x))


@pytest.mark.parametrize(("n", "d", "f"), [(5, 40, 1), (11, 257, 2), (15, 300, 6), (20, 64, 3)])
def test_krum_and_multi_krum_match_oracle(n: int, d: int, f: int) -> None:
    x = random_updates(n * 7 + d, n, d, byzantine=f)
    order = oracle_krum_order(x, f)
    out, mask = aggregate("krum", x, f=f)
    assert_same_bits(out, x[order[0]])
    assert mask.tolist() == mask_of(order[:1], n).tolist()
    assert not mask[n - f :].any(), "Krum chose a Byzantine row"
    for m in (None, 1, n - f - 1, n):
        keep = n - f if m is None else m
        chosen = sorted(order[:keep])
        out, mask = aggregate("multi_krum", x, f=f, **({} if m is None else {"m": m}))
        assert_same_bits(out, oracle_mean(x, chosen))
        assert mask.tolist() == mask_of(chosen, n).tolist()


@pytest.mark.parametrize(("n", "d", "f"), [(3, 20, 0), (7, 50, 1), (11, 200, 2), (16, 97, 3)])
def test_bulyan_matches_oracle(n: int, d: int, f: int) -> None:
    x = random_updates(n * 13 + d, n, d, byzantine=f)
    expected, picked = oracle_bulyan(x, f)
    out, mask = aggregate("bulyan", x, f=f)
    assert_same_bits(out, expected)
    assert mask.tolist() == mask_of(picked, n).tolist()
    assert not mask[n - f :].any(), "Bulyan picked a Byzantine row"


@pytest.mark.parametrize(("n", "d", "f"), SHAPES)
def test_meamed_matches_oracle(n: int, d: int, f: int) -> None:
    x = random_updates(n * 17 + d, n, d, byzantine=f)
    out, mask = aggregate("meamed", x, f=f)
    assert_same_bits(out, oracle_meamed(x, f))
    assert mask.all()


def test_meamed_leaves_out_the_one_extreme_update_the_median_of_four_follows() -> None:
    """Three honest updates and one at the norm bound against them (a sybil in the slot the
    honest ones left free): the median of four moves half an honest gap towards the poison
    in every coordinate, meamed keeps the three honest values, their mean."""
    rng = np.random.default_rng(18)
    honest = (np.ones(50) + rng.normal(0.0, 0.5, size=(3, 50))).astype(F32)
    poison = (-20.0 * honest.mean(axis=0) / np.linalg.norm(honest.mean(axis=0))).astype(F32)
    x = np.vstack([honest, poison[None, :]])
    target = honest.astype(F64).mean(axis=0)
    med, _ = aggregate("median", x, f=1)
    mea, _ = aggregate("meamed", x, f=1)
    assert np.max(np.abs(mea - target)) < 1e-6
    bias = np.linalg.norm(med - target) / np.linalg.norm(target)
    assert bias > 0.2, "the median of four was expected to follow the extreme update"
    assert float((med - target) @ poison) > 0.0  # towards the poison


def test_bulyan_tie_in_distance_keeps_the_smaller_value() -> None:
    # Bulyan's own beta = theta - 2f never leaves a choice between two values at equal
    # distance from an even theta's midpoint, so check the window rule on the kernel:
    # picked values 3 and 1, median 2, keep beta = 1 of them; both are 1 away.
    x = np.array([[3.0], [1.0]], dtype=F32)
    lo, hi = kernels.sorting_network(2, 0, 2)
    out = kernels.closest_to_median_cols(x, np.arange(2), 1, lo, hi, 16)
    assert out.tolist() == [1.0]  # median 2.0, both at distance 1: keep the smaller


def test_krum_ties_go_to_the_lowest_index() -> None:
    x = np.zeros((7, 10), dtype=F32)
    x[5:] = 1.0  # rows 0..4 identical: all score 0
    out, mask = aggregate("krum", x, f=1)
    assert mask.tolist() == [True] + [False] * 6
    _, mask = aggregate("multi_krum", x, f=1, m=3)
    assert mask.tolist() == [True, True, True, False, False, False, False]


def test_signed_zeros_and_ties_are_deterministic() -> None:
    x = np.array([[0.0, -0.0, 1.0], [-0.0, 0.0, 1.0], [-0.0, -0.0, 1.0]], dtype=F32)
    for rule in ("median", "trimmed_mean", "meamed", "bulyan"):
        first = bits(aggregate(rule, x)[0])
        assert all(bits(aggregate(rule, x)[0]) == first for _ in range(3))
        assert np.array_equal(aggregate(rule, x)[0], [0.0, 0.0, 1.0])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 24),
    d=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
    levels=st.sampled_from([0, 3]),
)
def test_per_coordinate_rules_match_oracles_on_random_shapes(
    n: int, d: int, seed: int, levels: int
) -> None:
    x = random_updates(seed, n, d)
    if levels:
        # Many ties; "+ 0.0" turns -0.0 into +0.0, whose place among equal zeros
        # is the sort's own business (test_signed_zeros_... covers it).
        x = np.round(x * levels).astype(F32) + F32(0.0)
    f = (n - 1) // 2
    assert_same_bits(aggregate("median", x, f=f)[0], oracle_median(x))
    assert_same_bits(aggregate("trimmed_mean", x, f=f)[0], oracle_trimmed(x, f))
    assert_same_bits(aggregate("meamed", x, f=f)[0], oracle_meamed(x, f))
    assert_same_bits(aggregate("mean", x)[0], oracle_mean(x))


# --------------------------------------------------------------------------
# Sorting networks
# --------------------------------------------------------------------------


def apply_network(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    v = values.copy()
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        swap = v[b] < v[a]
        v[a], v[b] = np.where(swap, v[b], v[a]), np.where(swap, v[a], v[b])
    return v


@pytest.mark.parametrize("n", range(1, 13))
def test_batcher_network_sorts_every_zero_one_input(n: int) -> None:
    # 0-1 principle: a comparator network that sorts all 2**n binary inputs sorts everything.
    lo, hi = kernels.sorting_network(n, 0, n)
    inputs = ((np.arange(2**n)[None, :] >> np.arange(n)[:, None]) & 1).astype(F32)
    assert np.array_equal(apply_network(inputs, lo, hi), np.sort(inputs, axis=0))


@pytest.mark.parametrize("n", [13, 20, 31, 32, 33, 64, 100, 128])
def test_pruned_networks_place_their_wanted_positions(n: int) -> None:
    values = random_updates(n, n, 400)
    expected = np.sort(values, axis=0)
    full = kernels.sorting_network(n, 0, n)
    assert np.array_equal(apply_network(values, *full), expected)
    for lo_pos, hi_pos in [(n // 2, n // 2 + 1), (n // 4, n - n // 4)]:
        lo, hi = kernels.sorting_network(n, lo_pos, hi_pos)
        assert len(lo) <= len(full[0])
        got = apply_network(values, lo, hi)
        assert np.array_equal(got[lo_pos:hi_pos], expected[lo_pos:hi_pos])


# --------------------------------------------------------------------------
# Flower as the oracle users switch from (equal weights: num_examples = 1)
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flwr_aggregate() -> Any:
    """Flower's aggregate module; only these comparisons skip where Flower is missing."""
    return pytest.importorskip("flwr.server.strategy.aggregate")


def as_results(x: np.ndarray) -> list[tuple[list[np.ndarray], int]]:
    return [([row.copy()], 1) for row in x]


def assert_close_to_flower(ours: np.ndarray, theirs: np.ndarray) -> None:
    # Flower adds in float32, we in float64: agree within a few float32 ulps.
    np.testing.assert_allclose(ours, np.asarray(theirs, dtype=F32), rtol=2e-6, atol=2e-6)


FLOWER_CASES = [(11, 50, 2, 0), (11, 1000, 1, 1), (12, 300, 2, 2), (15, 200, 3, 3)]


@pytest.mark.parametrize(("n", "d", "f", "seed"), FLOWER_CASES)
def test_matches_flower(n: int, d: int, f: int, seed: int, flwr_aggregate: Any) -> None:
    x = random_updates(seed, n, d, byzantine=f)
    results = as_results(x)
    assert_close_to_flower(aggregate("mean", x)[0], flwr_aggregate.aggregate(results)[0])
    assert_close_to_flower(
        aggregate("median", x, f=f)[0], flwr_aggregate.aggregate_median(results)[0]
    )
    # Flower cuts int(proportion * n) per end; (f + 0.5) / n avoids float rounding down to f - 1.
    flower_trimmed = flwr_aggregate.aggregate_trimmed_avg(results, (f + 0.5) / n)[0]
    assert_close_to_flower(aggregate("trimmed_mean", x, f=f)[0], flower_trimmed)
    krum_out, _ = aggregate("krum", x, f=f)
    assert_same_bits(krum_out, flwr_aggregate.aggregate_krum(results, f, 0)[0])
    for keep in (n - f, 3):
        multi_out, _ = aggregate("multi_krum", x, f=f, m=keep)
        assert_close_to_flower(multi_out, flwr_aggregate.aggregate_krum(results, f, keep)[0])


@pytest.mark.parametrize(
    ("n", "d", "f", "seed"), [(11, 50, 2, 4), (11, 500, 1, 5), (16, 200, 3, 6)]
)
def test_bulyan_matches_flower(n: int, d: int, f: int, seed: int, flwr_aggregate: Any) -> None:
    # Flower follows the same two steps; it differs only where distances or values tie
    # (argsort/argpartition order) or round differently in float32, which random
    # Gaussian inputs never hit, so on them the results agree.
    x = random_updates(seed, n, d, byzantine=f)
    theirs = flwr_aggregate.aggregate_bulyan(
        as_results(x), f, flwr_aggregate.aggregate_krum, to_keep=0
    )[0]
    assert_close_to_flower(aggregate("bulyan", x, f=f)[0], theirs)


# --------------------------------------------------------------------------
# Determinism and golden vectors
# --------------------------------------------------------------------------


def rule_args(rule: str, f: int) -> dict[str, Any]:
    return {} if rule == "mean" else {"f": f}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_same_bits_for_repeated_calls_and_any_thread_count(rule: str) -> None:
    x = random_updates(99, 19, 20_011, byzantine=4)
    baseline, base_mask = aggregate(rule, x, **rule_args(rule, 4))
    default_threads = numba.get_num_threads()
    try:
        for threads in sorted({1, default_threads}):
            numba.set_num_threads(threads)
            for _ in range(2):
                out, mask = aggregate(rule, x, **rule_args(rule, 4))
                assert bits(out) == bits(baseline) and bits(mask) == bits(base_mask)
    finally:
        numba.set_num_threads(default_threads)


@pytest.mark.parametrize("groups", [1, 2, 3, 5, 16, 17, 64])
def test_lane_groups_split_every_lane_once_in_whole_vectors(groups: int) -> None:
    bounds = kernels.lane_groups(groups)
    assert bounds[0] == 0 and bounds[-1] == kernels.DIST_LANES
    assert len(bounds) - 1 == min(groups, kernels.DIST_LANES // kernels.LANE_VECTOR)
    widths = np.diff(bounds)
    assert (widths > 0).all() and (widths % kernels.LANE_VECTOR == 0).all()


def test_parallel_and_serial_paths_give_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Inputs this small run serially by default; lower the bar to force every
    # parallel driver (and odd group/chunk counts) through the same data.
    x = random_updates(3, 23, 3001, byzantine=5)
    serial = {rule: aggregate(rule, x, **rule_args(rule, 5)) for rule in RULES}
    reference = kernels.pairwise_sq_distances(x, 1)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 1)
    for groups in (2, 3, 7, 23):
        assert bits(kernels.pairwise_sq_distances(x, groups)) == bits(reference)
    for rule in RULES:
        out, mask = aggregate(rule, x, **rule_args(rule, 5))
        assert bits(out) == bits(serial[rule][0]) and bits(mask) == bits(serial[rule][1])


GOLDEN_CASES: list[dict[str, Any]] = [
    {"rule": rule, "seed": seed, "n": n, "d": d, "f": f, "levels": levels}
    for rule in sorted(RULES)
    for seed, n, d, f, levels in [(1, 11, 257, 2, 0), (2, 32, 1000, 6, 0), (3, 16, 333, 3, 5)]
]


def golden_entry(case: dict[str, Any]) -> dict[str, Any]:
    x = hashed_updates(case["seed"], case["n"], case["d"], levels=case["levels"])
    f = 0 if case["rule"] == "mean" else case["f"]
    out, mask = aggregate(case["rule"], x, **rule_args(case["rule"], f))
    return {
        **case,
        "f": f,
        "input_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
        "output_sha256": hashlib.sha256(out.tobytes()).hexdigest(),
        "mask": "".join("1" if m else "0" for m in mask),
    }


def load_vectors() -> list[dict[str, Any]]:
    return list(json.loads(VECTORS.read_text())["cases"])


def case_key(case: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(case[key] for key in ("rule", "seed", "n", "d", "levels"))


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: f"{c['rule']}-{c['seed']}")
def test_golden_vectors(case: dict[str, Any]) -> None:
    stored = {case_key(c): c for c in load_vectors()}
    assert golden_entry(case) == stored[case_key(case)]


def test_golden_vectors_cover_every_rule() -> None:
    assert {c["rule"] for c in load_vectors()} == set(RULES)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_unknown_rule_lists_the_valid_ones() -> None:
    with pytest.raises(AggregationError) as info:
        aggregate("no_such_rule", random_updates(0, 3, 4))
    for name in RULES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "updates",
    [
        np.zeros((3, 4), dtype=np.float64),
        np.zeros(4, dtype=F32),
        np.zeros((2, 3, 4), dtype=F32),
        np.zeros((0, 4), dtype=F32),
        [[1.0, 2.0]],
    ],
)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_bad_arrays_are_refused(rule: str, updates: Any) -> None:
    with pytest.raises(AggregationError):
        aggregate(rule, updates)


@pytest.mark.parametrize(
    ("rule", "n", "f", "needed"),
    [
        ("mean", 5, 1, None),
        ("median", 4, 2, "2f+1 = 5"),
        ("trimmed_mean", 6, 3, "2f+1 = 7"),
        ("krum", 6, 2, "2f+3 = 7"),
        ("multi_krum", 8, 3, "2f+3 = 9"),
        ("bulyan", 10, 2, "4f+3 = 11"),
        ("krum", 9, -1, None),
    ],
)
def test_f_outside_the_rules_bound_is_refused(
    rule: str, n: int, f: int, needed: str | None
) -> None:
    with pytest.raises(AggregationError) as info:
        aggregate(rule, random_updates(1, n, 8), f=f)
    if needed:
        assert needed in str(info.value) and f"n={n}" in str(info.value)


def test_rules_accept_their_smallest_n() -> None:
    for rule, n, f in [("median", 5, 2), ("trimmed_mean", 7, 3), ("krum", 7, 2), ("bulyan", 11, 2)]:
        out, mask = aggregate(rule, random_updates(2, n, 9), f=f)
        assert out.shape == (9,) and mask.shape == (n,)


def test_bad_parameters_are_refused() -> None:
    x = random_updates(1, 9, 8)
    with pytest.raises(AggregationError):
        aggregate("krum", x, f=1, m=3)  # m belongs to multi_krum
    for m in (0, 10, 2.5, True):
        with pytest.raises(AggregationError):
            aggregate("multi_krum", x, f=1, m=m)
    with pytest.raises(AggregationError):
        aggregate("median", x, f=1.0)


def test_non_contiguous_input_gives_the_contiguous_result() -> None:
    x = random_updates(4, 9, 40)
    view = np.asfortranarray(x)
    for rule in RULES:
        args = rule_args(rule, 1)
        assert bits(aggregate(rule, view, **args)[0]) == bits(aggregate(rule, x, **args)[0])


def test_input_is_not_modified() -> None:
    x = random_updates(8, 11, 64, byzantine=2)
    before = x.copy()
    for rule in RULES:
        aggregate(rule, x, **rule_args(rule, 2))
    assert bits(x) == bits(before)


def regenerate() -> None:
    """Rewrite this module's ``cases``; other modules' sections of the file (``robust``) are kept."""
    payload = json.loads(VECTORS.read_text()) if VECTORS.exists() else {}
    payload["about"] = (
        "ml.aggregation golden vectors: inputs from tests.unit.test_aggregation.hashed_updates; "
        "sha256 of the float32 output bytes and the mask as 0/1. Change only with a consensus change."
    )
    payload["cases"] = [golden_entry(case) for case in GOLDEN_CASES]
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
        print(f"wrote {VECTORS}")
