"""Mining speed in MH/s: the numba nonce search against hashlib loops and the SHA-NI ceiling.

Everything hashes the same header in the same run:

* baselines: the loop a Python miner would write (pack the nonce, sha256d with
  hashlib, compare the little-endian value to the target), on one thread, and
  the same loop in as many processes as there are cores (hashlib holds the
  GIL for short inputs, so processes are how Python would use every core);
* ours: :func:`consensus.hashing.search_nonce` with a target no hash meets
  (0), so every nonce in the range is hashed, on one thread and on every core,
  with the chosen kernel and with the portable one;
* the ceiling (CPUs with SHA-NI): :func:`benchmarks.ceilings.sha256rnds2_rate`
  on one thread and on every core at once, divided by the 62 ``sha256rnds2``
  a nonce needs at least; beside it the instruction-mix ceiling
  (:func:`benchmarks.ceilings.sha256d_mix_rate`: those 62 and the 45 message
  schedule instructions, which on some CPUs share the ``sha256rnds2`` unit);
  and, as a figure of its own, the schedule overlap
  (:func:`benchmarks.ceilings.sha_schedule_overlap`): whether an AVX-512
  message schedule could run under the ``sha256rnds2`` chains for free.

Kernel calls are short (a batch or two) and repeated many times, alternating
with the ceiling probe, and each figure is the best repeat: on a shared
machine a repeat is only ever slowed down, so the best one is the closest to
what the code can do, for the probe and the kernel alike.  Process CPU
seconds are kept beside wall seconds for every kernel repeat.

The C miners' per-core figures are quoted as context from their published
results; they are not measured here.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import struct
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import ceilings
from benchmarks.common import Headline, best, load_average, save_figure, write_result
from consensus import hashing

HEADER = bytes(range(80))  # any header: the work per nonce does not depend on its bytes
NO_HIT_TARGET = 0  # no sha256d is 0, so the whole range is hashed
NONCE_PREFIX = 76  # header bytes before the nonce field
MEGA = 1e6
QUOTED_CONTEXT = {
    "note": "quoted from the C miners' published figures, not measured here",
    "cpuminer_avx2_asm_mhs_per_core": 13.0,
    "cpuminer_opt_sha_ni_mhs_per_core": 21.0,
}


@dataclass(frozen=True)
class Sizes:
    """Nonces per timed call and repeats: small in quick mode so the run takes seconds."""

    hashlib_nonces: int
    hashlib_repeats: int
    kernel_batches: int  # batches of hashing.BATCH_NONCES per thread per timed call
    kernel_repeats: int


FULL = Sizes(hashlib_nonces=200_000, hashlib_repeats=3, kernel_batches=2, kernel_repeats=15)
QUICK = Sizes(hashlib_nonces=20_000, hashlib_repeats=2, kernel_batches=1, kernel_repeats=3)


def hashlib_loop(count: int, header: bytes = HEADER, target: int = NO_HIT_TARGET) -> int | None:
    """The baseline: what a straightforward Python miner does per nonce."""
    prefix = header[:NONCE_PREFIX]
    sha256 = hashlib.sha256
    for nonce in range(count):
        digest = sha256(sha256(prefix + struct.pack("<I", nonce)).digest()).digest()
        if int.from_bytes(digest, "little") <= target:
            return nonce
    return None


def _timed_hashlib(count: int) -> tuple[float, float]:
    """In a worker process: (wall start, wall end) of one hashlib loop, on the shared wall clock."""
    start = time.time()
    hashlib_loop(count)
    return start, time.time()


@dataclass
class Row:
    """Repeats of one timed call hashing ``nonces`` nonces: wall and process CPU seconds."""

    label: str
    nonces: int
    wall_s: list[float]
    cpu_s: list[float]

    @property
    def mhs(self) -> float:
        return self.nonces / best(self.wall_s) / MEGA

    @property
    def cpu_mhs(self) -> float:
        """Nonces per CPU second (per busy thread): what the code does while it runs."""
        return self.nonces / best(self.cpu_s) / MEGA if self.cpu_s else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mhs": self.mhs, "cpu_mhs_per_thread": self.cpu_mhs}


def time_once(fn: Callable[[], object], row: Row) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    row.wall_s.append(time.perf_counter() - wall)
    row.cpu_s.append(time.process_time() - cpu)


def hashlib_rows(sizes: Sizes, cores: int) -> tuple[Row, Row]:
    """The hashlib loop on one thread, and in ``cores`` processes at once."""
    one = Row("hashlib loop, 1 thread", sizes.hashlib_nonces, [], [])
    for _ in range(sizes.hashlib_repeats):
        time_once(lambda: hashlib_loop(sizes.hashlib_nonces), one)
    many = Row(f"hashlib loop, {cores} processes", sizes.hashlib_nonces * cores, [], [])
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_timed_hashlib, [1000] * cores))  # start the workers
        for _ in range(sizes.hashlib_repeats):
            spans = list(pool.map(_timed_hashlib, [sizes.hashlib_nonces] * cores))
            many.wall_s.append(max(end for _, end in spans) - min(start for start, _ in spans))
    return one, many


def kernel_call(kernel: str, threads: int, count: int) -> Callable[[], object]:
    return lambda: hashing.search_nonce(HEADER, NO_HIT_TARGET, 0, count, threads=threads, kernel=kernel)


def measure(sizes: Sizes, cores: int) -> dict[str, Any]:
    chosen = hashing.KERNEL
    per_thread = sizes.kernel_batches * hashing.BATCH_NONCES
    kernels = {
        "kernel_1thread": (Row(f"{chosen}, 1 thread", per_thread, [], []),
                           kernel_call(chosen, 1, per_thread)),
        "kernel_all_threads": (Row(f"{chosen}, {cores} threads", per_thread * cores, [], []),
                               kernel_call(chosen, cores, per_thread * cores)),
        "portable_1thread": (Row("portable, 1 thread", per_thread, [], []),
                             kernel_call(hashing.PORTABLE, 1, per_thread)),
    }
    for _, call in kernels.values():
        call()  # compile or load the cached machine code, start the threads once
    has_sha = hashing.cpu_has_sha_ni()
    probes: dict[str, list[ceilings.Rate]] = {"one": [], "all": []}
    mix: dict[str, list[ceilings.Rate]] = {"one": [], "all": []}
    for _ in range(sizes.kernel_repeats):  # kernels and probe side by side, under the same load
        for row, call in kernels.values():
            time_once(call, row)
        if has_sha:
            probes["one"].append(ceilings.sha256rnds2_rate(1, repeats=1))
            probes["all"].append(ceilings.sha256rnds2_rate(cores, repeats=1))
            mix["one"].append(ceilings.sha256d_mix_rate(1, repeats=1))
            mix["all"].append(ceilings.sha256d_mix_rate(cores, repeats=1))
    hashlib_one, hashlib_many = hashlib_rows(sizes, cores)
    rows = {"hashlib_1thread": hashlib_one, "hashlib_processes": hashlib_many,
            **{name: row for name, (row, _) in kernels.items()}}
    ceiling = {
        name: {"rnds2_per_s": max(r.per_second for r in rates),
               "mhs": ceilings.sha256d_ceiling_mhs(max(rates, key=lambda r: r.per_second)),
               "threads": rates[0].threads, "what": rates[0].what,
               "mix_mhs": max(r.per_second for r in mix[name]) / MEGA, "mix_what": mix[name][0].what}
        for name, rates in probes.items() if rates
    }
    overlap = ceilings.sha_schedule_overlap() if has_sha else None
    return {"kernel": chosen, "rows": rows, "ceiling": ceiling, "schedule_overlap": overlap}


def plot(rows: dict[str, Row], ceiling: dict[str, Any], cores: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(9, 4))
    labels = [row.label for row in rows.values()]
    values = [row.mhs for row in rows.values()]
    colours = ["tab:gray" if name.startswith("hashlib") else "tab:blue" for name in rows]
    if ceiling:
        labels += ["SHA-NI ceiling, 1 thread", f"SHA-NI ceiling, {cores} threads"]
        values += [ceiling["one"]["mhs"], ceiling["all"]["mhs"]]
        colours += ["tab:orange", "tab:orange"]
    axis.barh(labels, values, color=colours)
    axis.set_xscale("log")
    axis.set_xlabel("MH/s (best repeat)")
    axis.invert_yaxis()
    axis.set_title("sha256d nonce scan: hashlib loops (grey), ours (blue), ceiling (orange)")
    axis.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, "hash")
    plt.close(fig)


def headlines(rows: dict[str, Row], ceiling: dict[str, Any], cores: int) -> list[Headline]:
    one, many = rows["hashlib_1thread"], rows["hashlib_processes"]

    def figure(name: str, row: Row, base: Row, limit: dict[str, Any] | None) -> Headline:
        fields: dict[str, Any] = {}
        if limit:
            fields = {"ceiling": f"SHA-NI ceiling, {limit['threads']} thread(s): sha256rnds2 rate / 62 (with the "
                                 f"45 msg1/msg2 a nonce also needs: {limit['mix_mhs']:.1f} MH/s)",
                      "ceiling_value": limit["mhs"], "of_ceiling": row.mhs / limit["mhs"]}
        return Headline(name, row.mhs, "MH/s", base.label, row.mhs / base.mhs, baseline_value=base.mhs,
                        **fields)

    sha = rows["kernel_1thread"].label.startswith(hashing.SHA_NI)
    return [
        figure("hash_mhs_1thread", rows["kernel_1thread"], one, ceiling.get("one") if sha else None),
        figure("hash_mhs_all_threads", rows["kernel_all_threads"], many, ceiling.get("all") if sha else None),
        figure("hash_mhs_portable_1thread", rows["portable_1thread"], one, None),
    ]


def run(quick: bool = False) -> list[Headline]:
    sizes = QUICK if quick else FULL
    cores = os.cpu_count() or 1
    load_before = load_average()
    found = measure(sizes, cores)
    rows: dict[str, Row] = found["rows"]
    ceiling: dict[str, Any] = found["ceiling"]
    scaling = rows["kernel_all_threads"].mhs / rows["kernel_1thread"].mhs
    write_result("hash", {
        "parameters": {"quick": quick, "sizes": asdict(sizes), "batch_nonces": hashing.BATCH_NONCES,
                       "statistic": "best repeat (wall); cpu_mhs_per_thread from process CPU time"},
        "kernel": found["kernel"],
        "threads": {"one": 1, "all": cores},
        "load_average": {"before": load_before, "after": load_average()},
        "rows": {name: row.as_dict() for name, row in rows.items()},
        "ceiling": ceiling,
        "schedule_overlap": found["schedule_overlap"].as_dict() if found["schedule_overlap"] else None,
        "thread_scaling": scaling,
        "quoted_context": QUOTED_CONTEXT,
    })
    print(f"{'run':<28} {'nonces':>10} {'best s':>8} {'MH/s':>8} {'CPU MH/s':>9} {'of ceiling':>10} {'of mix':>7}")
    limits = {"kernel_1thread": ceiling.get("one"), "kernel_all_threads": ceiling.get("all")}
    for name, row in rows.items():
        limit = limits.get(name)
        share = f"{row.mhs / limit['mhs']:10.2f} {row.mhs / limit['mix_mhs']:7.2f}" if limit else f"{'':>18}"
        print(f"{row.label:<28} {row.nonces:>10} {best(row.wall_s):>8.4f} {row.mhs:>8.2f} {row.cpu_mhs:>9.2f} {share}")
    for name, limit in ceiling.items():
        print(f"ceiling ({name} thread(s)): {limit['rnds2_per_s'] / 1e9:.2f}e9 sha256rnds2/s = {limit['mhs']:.1f} MH/s;"
              f" instruction mix {limit['mix_mhs']:.1f} MH/s")
    overlap: ceilings.Overlap | None = found["schedule_overlap"]
    if overlap is not None:
        print(f"schedule overlap {overlap.fraction:.2f} (1: an AVX-512 schedule hides under sha256rnds2, 0: it adds):"
              f" rnds2 {overlap.rnds2_s * 1e9:.1f} ns, schedule {overlap.schedule_s * 1e9:.1f} ns, together "
              f"{overlap.together_s * 1e9:.1f} ns per probe iteration")
    print(f"thread scaling {scaling:.2f}x on {cores} cores; load average {load_before:.1f} before, "
          f"{load_average():.1f} after")
    print("context (quoted, not measured): cpuminer AVX2 asm "
          f"{QUOTED_CONTEXT['cpuminer_avx2_asm_mhs_per_core']} MH/s/core, cpuminer-opt SHA-NI "
          f"{QUOTED_CONTEXT['cpuminer_opt_sha_ni_mhs_per_core']} MH/s/core")
    plot(rows, ceiling, cores)
    return headlines(rows, ceiling, cores)
