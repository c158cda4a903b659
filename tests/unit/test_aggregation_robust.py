"""ml.aggregation's newer rules: geomed, centered_clip, nnm+ and bucket+.

Each against a short numpy oracle that follows the documented order (bit for
bit), against golden vectors, for robustness to far outliers, and through
the chain's ``aggregate_updates`` (reference point and parent-hash seed).

Regenerate this file's golden vectors (the ``robust`` key of
tests/vectors/aggregation.json; the ``cases`` key is test_aggregation's) with
``.venv/bin/python -m tests.unit.test_aggregation_robust --regenerate``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from typing import Any

import numpy as np
import pytest

from consensus.errors import BlockRejected
from consensus.transition import aggregate_updates
from ml.aggregation import (
    AggregationError,
    aggregate,
    bucket,
    bucket_order,
    bucket_seed,
    inner_count,
    is_rule,
)
from ml.tasks import builtin_task
from tests.unit.test_aggregation import VECTORS, hashed_updates, oracle_distances, oracle_median

F64 = np.float64
F32 = np.float32


def updates(seed: int, n: int, d: int, *, far: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(F32) + F32(0.5)
    x[n - far :] = F32(1000.0) if far else x[n - far :]
    return x


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


# --------------------------------------------------------------------------
# Oracles: plain numpy, the order each docstring gives
# --------------------------------------------------------------------------


def oracle_norm(row: np.ndarray, z: np.ndarray) -> float:
    total = 0.0
    for gap in row.astype(F64) - z:  # coordinate by coordinate, increasing index
        total += float(gap) * float(gap)
    return math.sqrt(total)


def oracle_rowsum(x: np.ndarray, weights: list[float]) -> np.ndarray:
    acc = np.zeros(x.shape[1], dtype=F64)
    for i, w in enumerate(weights):
        acc += w * x[i].astype(F64)
    return acc


def oracle_geomed(x: np.ndarray, iters: int, nu: float) -> np.ndarray:
    z = oracle_rowsum(x, [1.0] * x.shape[0]) / x.shape[0]
    for _ in range(iters):
        beta = [1.0 / max(nu, oracle_norm(row, z)) for row in x]
        total = 0.0
        for b in beta:
            total += b
        z = oracle_rowsum(x, beta) / total
    return z.astype(F32)


def oracle_cclip(x: np.ndarray, ref: np.ndarray, tau: float, iters: int) -> np.ndarray:
    v = ref.astype(F64)
    n = x.shape[0]
    for _ in range(iters):
        scale = []
        for row in x:
            dist = oracle_norm(row, v)
            scale.append(tau / dist if dist > tau else 1.0)
        acc = np.zeros_like(v)
        for i, row in enumerate(x):
            acc += scale[i] * (row.astype(F64) - v)
        v = v + acc / n
    return v.astype(F32)


def oracle_nnm(x: np.ndarray, f: int) -> np.ndarray:
    dist = oracle_distances(x)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        nearest = sorted(range(x.shape[0]), key=lambda j: (dist[i, j], j))[: x.shape[0] - f]
        chosen = [1.0 if j in nearest else 0.0 for j in range(x.shape[0])]
        out[i] = (oracle_rowsum(x, chosen) / len(nearest)).astype(F32)
    return out


def oracle_buckets(x: np.ndarray, seed: int, size: int) -> np.ndarray:
    keys = {
        i: hashlib.sha256(seed.to_bytes(8, "little") + i.to_bytes(4, "little")).digest()
        for i in range(x.shape[0])
    }
    order = sorted(range(x.shape[0]), key=lambda i: keys[i])
    rows = []
    for start in range(0, len(order), size):
        members = order[start : start + size]
        acc = np.zeros(x.shape[1], dtype=F64)
        for i in members:
            acc += x[i].astype(F64)
        rows.append((acc / len(members)).astype(F32))
    return np.stack(rows)


# --------------------------------------------------------------------------
# Rules match their oracles bit for bit
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "d", "iters", "nu"), [(5, 7, 1, 1e-6), (11, 300, 8, 1e-6), (8, 33, 20, 0.5)]
)
def test_geomed_matches_oracle(n: int, d: int, iters: int, nu: float) -> None:
    x = updates(n * d, n, d, far=n // 4)
    out, mask = aggregate("geomed", x, f=(n - 1) // 2, iters=iters, nu=nu)
    assert bits(out) == bits(oracle_geomed(x, iters, nu)) and mask.all()


@pytest.mark.parametrize(
    ("n", "d", "tau", "iters"), [(5, 7, 0.5, 1), (11, 300, 3.0, 3), (9, 64, 100.0, 2)]
)
def test_centered_clip_matches_oracle(n: int, d: int, tau: float, iters: int) -> None:
    x = updates(n + d, n, d, far=2)
    ref = np.random.default_rng(d).standard_normal(d).astype(F32)
    out, mask = aggregate("centered_clip", x, f=2, tau=tau, iters=iters, reference=ref)
    assert bits(out) == bits(oracle_cclip(x, ref, tau, iters)) and mask.all()


def test_centered_clip_without_reference_starts_at_zero() -> None:
    x = updates(3, 7, 20)
    out, _ = aggregate("centered_clip", x, f=1, tau=2.0, iters=2)
    assert bits(out) == bits(oracle_cclip(x, np.zeros(20, dtype=F32), 2.0, 2))


@pytest.mark.parametrize(("n", "d", "f"), [(5, 9, 2), (10, 130, 2), (7, 260, 0)])
def test_nnm_then_median_matches_oracle(n: int, d: int, f: int) -> None:
    x = updates(n * 7 + d, n, d, far=f)
    out, mask = aggregate("nnm+median", x, f=f)
    assert bits(out) == bits(oracle_median(oracle_nnm(x, f))) and mask.all()


@pytest.mark.parametrize(("n", "size", "seed"), [(10, 2, 0), (7, 3, 2**64 - 1), (5, 1, 12345)])
def test_buckets_match_oracle(n: int, size: int, seed: int) -> None:
    x = updates(n, n, 17)
    rows, owner = bucket(x, seed=seed, bucket_size=size)
    assert bits(rows) == bits(oracle_buckets(x, seed, size))
    assert rows.shape[0] == inner_count("bucket+median", n, bucket_size=size) == -(-n // size)
    order = bucket_order(n, seed)
    assert sorted(order.tolist()) == list(range(n))
    assert owner.tolist() == [order.tolist().index(i) // size for i in range(n)]


def test_bucket_then_median_is_the_median_of_the_buckets() -> None:
    x = updates(8, 10, 40)
    out, mask = aggregate("bucket+median", x, f=2, seed=99)
    assert bits(out) == bits(oracle_median(oracle_buckets(x, 99, 2))) and mask.all()


def test_composed_mask_maps_back_to_the_updates() -> None:
    x = updates(4, 11, 30, far=2)
    _, mask = aggregate("bucket+krum", x, f=1, seed=5, bucket_size=2)
    rows, owner = bucket(x, seed=5, bucket_size=2)
    _, inner = aggregate("krum", rows, f=1)
    assert mask.tolist() == [bool(inner[owner[i]]) for i in range(11)]
    assert mask.sum() in (1, 2)  # one bucket counted: its one or two members
    _, mixed = aggregate("nnm+krum", x, f=2)
    assert mixed.sum() == 1 and not mixed[-2:].any()  # the far rows are not the Krum choice


def test_bucket_seed_is_the_first_eight_bytes_of_the_hash() -> None:
    h = bytes(range(32))
    assert bucket_seed(h) == int.from_bytes(h[:8], "little")
    with pytest.raises(AggregationError):
        bucket_seed(b"short")


# --------------------------------------------------------------------------
# Robustness: far outliers move the new rules little, the mean a lot
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "params"),
    [
        ("geomed", {}),
        ("centered_clip", {"tau": 1.0, "iters": 5}),
        ("nnm+median", {}),
        ("nnm+krum", {}),
        ("nnm+geomed", {}),
        ("bucket+median", {"seed": 3}),
        ("bucket+geomed", {"seed": 3}),
    ],
)
def test_two_far_updates_of_ten_barely_move_the_result(rule: str, params: dict[str, Any]) -> None:
    honest = updates(21, 10, 50)
    attacked = honest.copy()
    attacked[:2] = F32(1000.0)
    clean_mean = honest.astype(F64).mean(axis=0)
    spread = max(float(np.linalg.norm(row - clean_mean)) for row in honest)
    out, _ = aggregate(rule, attacked, f=2, **params)
    assert float(np.linalg.norm(out - clean_mean)) < spread  # inside the honest cloud
    mean_out, _ = aggregate("mean", attacked)
    assert float(np.linalg.norm(mean_out - clean_mean)) > 1000.0


def test_same_bits_on_repeated_calls() -> None:
    x = updates(5, 12, 2000, far=3)
    for rule, params in [("geomed", {}), ("nnm+krum", {}), ("bucket+geomed", {"seed": 1})]:
        first, _ = aggregate(rule, x, f=2, **params)
        assert bits(aggregate(rule, x, f=2, **params)[0]) == bits(first)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_rule_names() -> None:
    for name in ("geomed", "nnm+krum", "bucket+median", "bucket+nnm+geomed"):
        assert is_rule(name)
    for name in ("nnm", "krum+nnm", "nnm+", "avg", "bucket+bucket+avg"):
        assert not is_rule(name)
        with pytest.raises(AggregationError, match="nnm\\+"):
            aggregate(name, updates(0, 5, 3))


@pytest.mark.parametrize(
    ("rule", "params"),
    [
        ("geomed", {"iters": 0}),
        ("geomed", {"nu": 0.0}),
        ("geomed", {"nu": float("nan")}),
        ("centered_clip", {"tau": -1.0}),
        ("centered_clip", {"iters": 1.5}),
        ("centered_clip", {"reference": np.zeros(3, dtype=F64)}),
        ("centered_clip", {"reference": np.zeros(4, dtype=F32)}),
        ("bucket+median", {}),  # no seed: never a local random source
        ("bucket+median", {"seed": -1}),
        ("bucket+median", {"seed": 1, "bucket_size": 0}),
        ("nnm+median", {"seed": 1}),  # bucket parameters without bucket
        ("nnm+median", {"tau": 1.0}),  # a parameter of another rule
    ],
)
def test_bad_parameters_are_refused(rule: str, params: dict[str, Any]) -> None:
    with pytest.raises(AggregationError):
        aggregate(rule, updates(0, 7, 3), f=1, **params)


def test_bounds_are_checked_after_pre_aggregation() -> None:
    x = updates(1, 10, 5)
    with pytest.raises(AggregationError, match="n=5"):  # 5 buckets < 2*3+1
        aggregate("bucket+median", x, f=3, seed=1)
    with pytest.raises(AggregationError, match="2f\\+1"):
        aggregate("nnm+median", x, f=5)


# --------------------------------------------------------------------------
# The chain passes the reference point and the parent-hash seed
# --------------------------------------------------------------------------


def test_chain_clips_around_the_last_aggregate() -> None:
    task = dataclasses.replace(
        builtin_task("digits"), rule="centered_clip", rule_params=(("iters", 2), ("tau", 0.5))
    )
    d = task.param_count
    x = [updates(9, 4, d)[i] for i in range(4)]
    last = np.full(d, 0.25, dtype=F32)
    out, mask = aggregate_updates(task, x, last)
    assert out is not None and mask.all()
    assert bits(out) == bits(oracle_cclip(np.stack(x), last, 0.5, 2))


def test_chain_seeds_bucketing_from_the_parent_hash() -> None:
    task = dataclasses.replace(builtin_task("digits"), rule="bucket+median", rule_params=(("bucket_size", 1),))
    d = task.param_count
    x = [updates(10, 4, d)[i] for i in range(4)]
    parent = hashlib.sha256(b"parent").digest()
    out, _ = aggregate_updates(task, x, np.zeros(d, dtype=F32), parent)
    expected, _ = aggregate(
        "bucket+median", np.stack(x), f=task.f, seed=bucket_seed(parent), bucket_size=1
    )
    assert out is not None and bits(out) == bits(expected)
    with pytest.raises(BlockRejected):
        aggregate_updates(task, x, np.zeros(d, dtype=F32), None)


# --------------------------------------------------------------------------
# Golden vectors
# --------------------------------------------------------------------------

REFERENCE_SCALE = 0.25  # the golden reference point: a quarter of the first row


GOLDEN_CASES: list[dict[str, Any]] = [
    {"rule": rule, "seed": seed, "n": n, "d": d, "f": f, "params": params}
    for rule, params in [
        ("geomed", {"iters": 5, "nu": 0.001}),
        ("centered_clip", {"tau": 0.75, "iters": 4, "reference": "row0/4"}),
        ("nnm+median", {}),
        ("nnm+krum", {}),
        ("nnm+trimmed_mean", {}),
        ("nnm+geomed", {}),
        ("bucket+median", {"seed": 7}),
        ("bucket+geomed", {"seed": 2**63 + 5, "bucket_size": 2}),
        ("bucket+nnm+median", {"seed": 11}),
    ]
    for seed, n, d, f in [(1, 11, 257, 2), (3, 16, 333, 3)]
]


def _params(case: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    params = dict(case["params"])
    if params.get("reference") == "row0/4":
        params["reference"] = (x[0] * F32(REFERENCE_SCALE)).astype(F32)
    return params


def golden_entry(case: dict[str, Any]) -> dict[str, Any]:
    x = hashed_updates(case["seed"], case["n"], case["d"])
    out, mask = aggregate(case["rule"], x, f=case["f"], **_params(case, x))
    return {
        **case,
        "input_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
        "output_sha256": hashlib.sha256(out.tobytes()).hexdigest(),
        "mask": "".join("1" if m else "0" for m in mask),
    }


def case_key(case: dict[str, Any]) -> tuple[Any, ...]:
    return (case["rule"], case["seed"], case["n"], case["d"])


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: f"{c['rule']}-{c['seed']}")
def test_golden_vectors(case: dict[str, Any]) -> None:
    stored = {case_key(c): c for c in json.loads(VECTORS.read_text())["robust"]}
    assert golden_entry(case) == stored[case_key(case)]


def regenerate() -> None:
    payload = json.loads(VECTORS.read_text())
    payload["robust"] = [golden_entry(case) for case in GOLDEN_CASES]
    VECTORS.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
        print(f"wrote the 'robust' cases of {VECTORS}")
