"""Robust aggregation: ml.aggregation against Flower 1.42, plain numpy, and its floor, same input.

For every rule at n in {8, 32, 128} clients and d in {1e4, 1e5, 1e6}
coordinates (f = min(6, (n - 3) // 4), so Bulyan's n >= 4f + 3 holds), times
our kernel (after a warm-up call that compiles it), Flower's function with
equal weights, and a short numpy version (BLAS and all, no consensus rules),
each the best of a few calls (a shared machine only ever slows a call down).
Flower is skipped where its extrapolated time passes ``FLOWER_BUDGET_S``
(Bulyan and Krum at large n), and the skip is recorded.

Floors, measured in the same run (:mod:`benchmarks.ceilings`), on numba's
thread count:

* read: one summing pass over the (n, d) float32 input;
* network: the comparators of the rule's sorting network (the count the
  kernel uses) x d, at the machine's compare-exchange rate in registers;
* distances: n(n-1)/2 x d terms ``acc + (u - v)**2`` in float64 (subtract,
  multiply, add: Krum's consensus order allows no fused multiply-add), at
  the machine's rate for them.

A rule's floor is the larger of read and compute for each pass it cannot
avoid: mean = read; median and trimmed mean = max(read, network); Krum =
max(read, distances); Multi-Krum adds a read of the n - f rows it averages;
Bulyan adds max(read of its theta rows, its network). The newer rules get no
floor (their iterations make one too loose to mean much).

Writes ``results/aggregation.json`` (raw samples, floors, ratios) and
``results/aggregation.png`` (time against d and against n), and returns
``aggregation_<rule>_n32_d1e6`` headlines for the rules Flower has:
milliseconds, ratio = the faster of Flower and numpy / ours, and the floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from benchmarks import ceilings
from benchmarks.common import (
    Headline,
    best,
    load_average,
    save_figure,
    time_call,
    time_floor,
    write_result,
)
from ml import _agg_kernels as kernels
from ml.aggregation import RULES, aggregate

FULL_NS = (8, 32, 128)
FULL_DS = (10_000, 100_000, 1_000_000)
QUICK_NS = (8, 32)
# The newer rules (issue 10) beside the classic ones; Flower has none of them.
NEW_RULES = ("nnm+median", "nnm+krum", "bucket+median", "bucket+geomed")
BENCH_RULES: tuple[str, ...] = (*RULES, *NEW_RULES)
BUCKET_BENCH_SEED = 1  # on the chain: bucket_seed(parent hash)
QUICK_DS = (10_000, 100_000)
HEADLINE_N = 32
HEADLINE_D = 1_000_000
MAX_F = 6  # the Byzantine bound of the headline figures
OUR_REPEATS = 5
BASELINE_REPEATS = 3
SLOW_CALL_S = 1.0  # a baseline call slower than this is timed once
FLOWER_BUDGET_S = 20.0  # skip Flower where one call would take longer than this
NUMPY_BUDGET_S = 10.0  # skip the plain-numpy baseline where one call would take longer than this
SEED = 2024

FLOWER_NAMES = {
    "mean": "aggregate",
    "median": "aggregate_median",
    "trimmed_mean": "aggregate_trimmed_avg",
    "krum": "aggregate_krum",
    "multi_krum": "aggregate_krum",
    "bulyan": "aggregate_bulyan",
}

Array = np.ndarray[Any, np.dtype[Any]]


def byzantine_bound(n: int) -> int:
    return min(MAX_F, (n - 3) // 4)


def rule_kwargs(rule: str, f: int) -> dict[str, int]:
    if rule == "mean":
        return {}
    if rule.startswith("bucket+"):
        return {"f": f, "seed": BUCKET_BENCH_SEED}
    return {"f": f}


# --------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------


def flower_call(rule: str, x: Array, f: int) -> Callable[[], object] | None:
    """Flower's function on Flower's input shape: a list of ([layer], num_examples=1)."""
    from flwr.server.strategy import aggregate as fa

    results = [([row], 1) for row in x]
    n = x.shape[0]
    calls: dict[str, Callable[[], object]] = {
        "mean": lambda: fa.aggregate(results),
        "median": lambda: fa.aggregate_median(results),
        # int((f + 0.5) / n * n) == f cut from each end, as our trimmed_mean(f).
        "trimmed_mean": lambda: fa.aggregate_trimmed_avg(results, (f + 0.5) / n),
        "krum": lambda: fa.aggregate_krum(results, f, 0),
        "multi_krum": lambda: fa.aggregate_krum(results, f, n - f),
        # aggregate_bulyan pops from its list: give it a fresh one each call.
        "bulyan": lambda: fa.aggregate_bulyan(list(results), f, fa.aggregate_krum, to_keep=0),
    }
    return calls.get(rule)  # None: Flower has no such rule


def numpy_distances(x: Array) -> Array:
    norms = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    gram = x.astype(np.float64) @ x.T.astype(np.float64)
    return np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)  # type: ignore[no-any-return]


def numpy_krum_order(dist: Array, alive: Array, f: int) -> Array:
    sub = dist[np.ix_(alive, alive)]
    k = max(1, len(alive) - f - 2)
    scores = np.sort(sub, axis=1)[:, 1 : k + 1].sum(axis=1)
    return alive[np.argsort(scores, kind="stable")]  # type: ignore[no-any-return]


def numpy_bulyan(x: Array, f: int) -> Array:
    n = x.shape[0]
    theta, beta = n - 2 * f, n - 4 * f
    dist = numpy_distances(x)
    alive = np.arange(n)
    picked = []
    for _ in range(theta):
        best = numpy_krum_order(dist, alive, f)[0]
        picked.append(best)
        alive = alive[alive != best]
    chosen = x[np.sort(picked)]
    med = np.median(chosen, axis=0)
    nearest = np.argsort(np.abs(chosen - med), axis=0)[:beta]
    return np.take_along_axis(chosen, nearest, axis=0).mean(axis=0)  # type: ignore[no-any-return]


def numpy_geomed(x: Array, iters: int = 32, nu: float = 1e-6) -> Array:
    wide = x.astype(np.float64)
    z = wide.mean(axis=0)
    for _ in range(iters):
        w = 1.0 / np.maximum(nu, np.linalg.norm(wide - z, axis=1))
        z = w @ wide / w.sum()
    return z  # type: ignore[no-any-return]


def numpy_cclip(x: Array, tau: float = 1.0, iters: int = 3) -> Array:
    wide = x.astype(np.float64)
    v = np.zeros(x.shape[1])
    for _ in range(iters):
        gaps = wide - v
        scale = np.minimum(1.0, tau / np.maximum(np.linalg.norm(gaps, axis=1), 1e-300))
        v = v + (scale[:, None] * gaps).mean(axis=0)
    return v


def numpy_nnm(x: Array, f: int) -> Array:
    nearest = np.argsort(numpy_distances(x), axis=1, kind="stable")[:, : x.shape[0] - f]
    return x[nearest].mean(axis=1)  # type: ignore[no-any-return]


def numpy_meamed(x: Array, f: int) -> Array:
    """Per coordinate, the mean of the n - f values nearest the median."""
    nearest = np.argsort(np.abs(x - np.median(x, axis=0)), axis=0, kind="stable")[: x.shape[0] - f]
    return np.take_along_axis(x, nearest, axis=0).mean(axis=0)  # type: ignore[no-any-return]


def numpy_buckets(x: Array, size: int = 2) -> Array:
    order = np.random.default_rng(BUCKET_BENCH_SEED).permutation(x.shape[0])
    return np.stack(
        [x[order[i : i + size]].mean(axis=0) for i in range(0, x.shape[0], size)]
    )


def numpy_call(rule: str, x: Array, f: int) -> Callable[[], object]:
    """A short numpy version of each rule: what one would write without our kernels."""
    n = x.shape[0]
    calls: dict[str, Callable[[], object]] = {
        "mean": lambda: x.mean(axis=0),
        "median": lambda: np.median(x, axis=0),
        "trimmed_mean": lambda: np.sort(x, axis=0)[f : n - f].mean(axis=0),
        "krum": lambda: x[numpy_krum_order(numpy_distances(x), np.arange(n), f)[0]],
        "multi_krum": lambda: x[
            numpy_krum_order(numpy_distances(x), np.arange(n), f)[: n - f]
        ].mean(axis=0),
        "bulyan": lambda: numpy_bulyan(x, f),
        "meamed": lambda: numpy_meamed(x, f),
        "geomed": lambda: numpy_geomed(x),
        "centered_clip": lambda: numpy_cclip(x),
        "nnm+median": lambda: np.median(numpy_nnm(x, f), axis=0),
        "nnm+krum": lambda: numpy_call("krum", numpy_nnm(x, f).astype(np.float32), f)(),
        "bucket+median": lambda: np.median(numpy_buckets(x), axis=0),
        "bucket+geomed": lambda: numpy_geomed(numpy_buckets(x)),
    }
    return calls[rule]


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def time_baseline(fn: Callable[[], object]) -> list[float]:
    """One timed call; more only if it was quick (slow baselines would take minutes)."""
    first = time_call(fn, repeat=1, warmup=0)
    if first[0] > SLOW_CALL_S:
        return first
    return first + time_call(fn, repeat=BASELINE_REPEATS - 1, warmup=0)


@dataclass(frozen=True)
class Rates:
    """The compute rates the floors divide by, on numba's threads (best of the run's probes)."""

    compare_exchange: ceilings.Rate
    distance_term: ceilings.Rate


def comparators(rule: str, n: int, f: int) -> int:
    """Comparators of the network ml.aggregation runs for ``rule`` on n rows (0: no network)."""
    half = n // 2
    if rule == "median":
        return len(kernels.sorting_network(n, half - 1 + n % 2, half + 1)[0])
    if rule == "trimmed_mean":
        return len(kernels.sorting_network(n, f, n - f)[0])
    if rule == "meamed":
        return len(kernels.sorting_network(n, 0, n)[0])
    if rule == "bulyan":
        theta = n - 2 * f
        return len(kernels.sorting_network(theta, 0, theta)[0])
    return 0


def floor_s(rule: str, n: int, d: int, f: int, read_s: float, rates: Rates) -> float | None:
    """The least time ``rule`` can take on this machine (see the module docstring), or None."""
    network = comparators(rule, n, f) * d / rates.compare_exchange.per_second
    distances = n * (n - 1) // 2 * d / rates.distance_term.per_second
    floors = {
        "mean": read_s,
        "median": max(read_s, network),
        "trimmed_mean": max(read_s, network),
        "krum": max(read_s, distances),
        "multi_krum": max(read_s, distances) + read_s * (n - f) / n,
        "bulyan": max(read_s, distances) + max(read_s * (n - 2 * f) / n, network),
    }
    return floors.get(rule)


def measure_rates() -> Rates:
    threads = numba.get_num_threads()
    return Rates(ceilings.compare_exchange_rate(threads), ceilings.distance_term_rate(threads))


def best_rates(first: Rates, second: Rates) -> Rates:
    def faster(a: ceilings.Rate, b: ceilings.Rate) -> ceilings.Rate:
        return a if a.per_second >= b.per_second else b

    return Rates(faster(first.compare_exchange, second.compare_exchange),
                 faster(first.distance_term, second.distance_term))


def predicted_s(previous: dict[tuple[str, int], float], rule: str, n: int, d: int) -> float:
    """Extrapolate from the largest smaller d already timed for this rule and n (linear in d)."""
    smaller = [dd for (r, dd) in previous if r == rule and dd < d]
    if not smaller:
        return 0.0
    base = max(smaller)
    return previous[(rule, base)] * d / base


def measure(ns: tuple[int, ...], ds: tuple[int, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(SEED)
    for n in ns:
        f = byzantine_bound(n)
        flower_seen: dict[tuple[str, int], float] = {}
        numpy_seen: dict[tuple[str, int], float] = {}
        for d in ds:
            x = rng.standard_normal((n, d), dtype=np.float32)
            x[n - f :] *= np.float32(-10.0)  # f Byzantine rows: scaled sign flips
            read_s = ceilings.stream_read_seconds(x, numba.get_num_threads())
            first_row = len(rows)
            again: dict[str, tuple[Callable[[], object], dict[str, Any]]] = {}
            for rule in BENCH_RULES:
                kwargs = rule_kwargs(rule, f)

                def ours_call(rule: str = rule, kwargs: dict[str, Any] = kwargs, x: Array = x) -> object:
                    return aggregate(rule, x, **kwargs)

                ours = time_call(ours_call, repeat=1, warmup=1)
                row: dict[str, Any] = {"rule": rule, "n": n, "d": d, "f": f, "ours_s": ours,
                                       "ours_best_s": best(ours), "read_floor_s": read_s}
                if ours[0] < SLOW_CALL_S:  # slow calls are timed once: the run stays a few minutes
                    again[rule] = (ours_call, row)
                expected_numpy = predicted_s(numpy_seen, rule, n, d)
                if expected_numpy > NUMPY_BUDGET_S:
                    row["numpy_skipped"] = f"predicted {expected_numpy:.0f} s per call > {NUMPY_BUDGET_S:.0f} s"
                else:
                    row["numpy_s"] = time_baseline(numpy_call(rule, x, f))
                    row["numpy_best_s"] = best(row["numpy_s"])
                    numpy_seen[(rule, d)] = row["numpy_best_s"]
                expected = predicted_s(flower_seen, rule, n, d)
                flower = flower_call(rule, x, f)
                if flower is None:
                    row["flower_skipped"] = "Flower has no such rule"
                elif expected > FLOWER_BUDGET_S:
                    row["flower_skipped"] = f"predicted {expected:.0f} s per call > {FLOWER_BUDGET_S:.0f} s"
                else:
                    row["flower_s"] = time_baseline(flower)
                    row["flower_best_s"] = best(row["flower_s"])
                    flower_seen[(rule, d)] = row["flower_best_s"]
                rows.append(row)
                # The read is re-timed between rules: the floor is the least of them all.
                read_s = min(read_s, ceilings.stream_read_seconds(x, numba.get_num_threads(), repeats=2))
            # The other repeats go round the rules, so each rule's samples spread over the whole
            # pass: on a shared machine one busy second then cannot spoil every sample of a rule.
            for _ in range(OUR_REPEATS - 1):
                for call, row in again.values():
                    row["ours_s"] += time_call(call, repeat=1, warmup=0)
                    row["ours_best_s"] = best(row["ours_s"])
            for row in rows[first_row:]:
                row["read_floor_s"] = read_s
                for key in ("numpy", "flower"):
                    if f"{key}_best_s" in row:
                        row[f"ratio_vs_{key}"] = row[f"{key}_best_s"] / row["ours_best_s"]
                print_row(row)
    return rows


def print_row(row: dict[str, Any]) -> None:
    flower_ms = f"{row['flower_best_s'] * 1e3:9.1f} ms" if "flower_best_s" in row else "  skipped   "
    numpy_ms = f"{row['numpy_best_s'] * 1e3:8.1f} ms" if "numpy_best_s" in row else " skipped   "
    print(f"  {row['rule']:<13} n={row['n']:<4} d={row['d']:<8} ours {row['ours_best_s'] * 1e3:8.2f} ms"
          f"  flower {flower_ms}  numpy {numpy_ms}  read {row['read_floor_s'] * 1e3:6.2f} ms", flush=True)


def add_floors(rows: list[dict[str, Any]], rates: Rates) -> None:
    """Each row's floor (where its rule has one) and its time as a multiple of it."""
    for row in rows:
        floor = floor_s(row["rule"], row["n"], row["d"], row["f"], row["read_floor_s"], rates)
        if floor is not None:
            row["floor_s"] = floor
            row["x_floor"] = row["ours_best_s"] / floor


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def plot(rows: list[dict[str, Any]], n_fixed: int, d_fixed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_d, by_n) = plt.subplots(1, 2, figsize=(13, 5))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {rule: palette[i % len(palette)] for i, rule in enumerate(BENCH_RULES)}
    for axis, fixed_key, fixed, free_key in ((by_d, "n", n_fixed, "d"), (by_n, "d", d_fixed, "n")):
        for rule in BENCH_RULES:
            sel = sorted((r for r in rows if r["rule"] == rule and r[fixed_key] == fixed),
                         key=lambda r: r[free_key])
            xs = [r[free_key] for r in sel]
            axis.plot(xs, [r["ours_best_s"] * 1e3 for r in sel], "o-", color=colours[rule], label=f"{rule}")
            fl = [(r[free_key], r["flower_best_s"] * 1e3) for r in sel if "flower_best_s" in r]
            if fl:
                axis.plot(*zip(*fl, strict=True), "x--", color=colours[rule], alpha=0.6)
            floors = [(r[free_key], r["floor_s"] * 1e3) for r in sel if "floor_s" in r]
            if floors and rule in ("median", "krum"):
                axis.plot(*zip(*floors, strict=True), ":", color=colours[rule], alpha=0.8)
        read = sorted({(r[free_key], r["read_floor_s"] * 1e3) for r in rows if r[fixed_key] == fixed})
        axis.plot(*zip(*read, strict=True), "k:", label="one read (floor of mean)")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(free_key)
        axis.set_ylabel("ms per call (best)")
        axis.set_title(f"time vs {free_key} at {fixed_key}={fixed:g}\n(solid: ours, dashed: Flower, "
                       "dotted: floor of median, Krum)")
        axis.grid(True, which="both", alpha=0.3)
    by_d.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, "aggregation")
    plt.close(fig)


def size_tag(n: int, d: int) -> str:
    exponent = round(math.log10(d))
    return f"n{n}_d1e{exponent}"


def headlines(rows: list[dict[str, Any]], n: int, d: int) -> list[Headline]:
    """Per rule Flower has: ours vs the faster of Flower and numpy (those that ran), and vs its floor."""
    out = []
    for row in rows:
        if row["n"] != n or row["d"] != d or row["rule"] not in FLOWER_NAMES:
            continue
        flower = (row.get("flower_best_s", math.inf), f"flwr 1.42 {FLOWER_NAMES[row['rule']]}")
        numpy_ = (row.get("numpy_best_s", math.inf), "numpy")
        base_s, base_name = min(flower, numpy_)
        if not math.isfinite(base_s):
            continue  # neither baseline ran within its budget
        floor = time_floor("floor: " + FLOOR_NAMES[row["rule"]], row["ours_best_s"], row["floor_s"])
        out.append(Headline(
            name=f"aggregation_{row['rule']}_{size_tag(n, d)}",
            value=row["ours_best_s"] * 1e3,
            unit="ms",
            baseline=f"faster of Flower and numpy: {base_name}",
            ratio=base_s / row["ours_best_s"],
            baseline_value=base_s * 1e3,
            **floor,
        ))
    return out


FLOOR_NAMES = {
    "mean": "one read",
    "median": "max(read, network)",
    "trimmed_mean": "max(read, network)",
    "krum": "max(read, distances)",
    "multi_krum": "max(read, distances) + read of n-f rows",
    "bulyan": "max(read, distances) + max(read of theta rows, network)",
}


def run(quick: bool = False) -> list[Headline]:
    ns, ds = (QUICK_NS, QUICK_DS) if quick else (FULL_NS, FULL_DS)
    threads = numba.get_num_threads()
    print(f"  aggregation: n in {ns}, d in {ds}, numba threads {threads}", flush=True)
    load_before = load_average()
    rates_before = measure_rates()
    rows = measure(ns, ds)
    rates = best_rates(rates_before, measure_rates())
    add_floors(rows, rates)
    head_n, head_d = (HEADLINE_N, max(ds)) if quick else (HEADLINE_N, HEADLINE_D)
    print(f"  floors on {threads} threads: {rates.compare_exchange.per_second / 1e9:.1f}e9 compare-exchanges/s, "
          f"{rates.distance_term.per_second / 1e9:.1f}e9 distance terms/s")
    for row in rows:
        if row["n"] == head_n and row["d"] == head_d and "floor_s" in row:
            print(f"  {row['rule']:<13} {row['ours_best_s'] * 1e3:8.2f} ms = {row['x_floor']:5.2f} x floor "
                  f"({row['floor_s'] * 1e3:.2f} ms: {FLOOR_NAMES[row['rule']]})")
    write_result("aggregation", {
        "params": {
            "ns": list(ns),
            "ds": list(ds),
            "f": "min(6, (n - 3) // 4)",
            "our_repeats": OUR_REPEATS,
            "baseline_repeats": BASELINE_REPEATS,
            "statistic": "best of the repeats",
            "flower_budget_s": FLOWER_BUDGET_S,
            "numba_threads": threads,
            "quick": quick,
            "seed": SEED,
        },
        "load_average": {"before": load_before, "after": load_average()},
        "rates": {"compare_exchange": rates.compare_exchange.as_dict(),
                  "distance_term": rates.distance_term.as_dict()},
        "floor_definitions": FLOOR_NAMES,
        "rows": rows,
    })
    plot(rows, head_n, head_d)
    return headlines(rows, head_n, head_d)
