"""Mining speed: the numba nonce search against a Python hashlib loop, in MH/s.

Both sides hash the same header in the same process.  The baseline is the
loop a Python miner would write: pack the nonce, sha256d with hashlib, compare
the little-endian value to the target.  Ours is :func:`consensus.hashing.search_nonce`
with a target no hash meets (0), so every nonce in the range is hashed.  Each
side is warmed up first (compilation or cache load, thread start-up) and timed
as the median of several repeats.

The C miners' per-core figures are quoted as context from their published
results; they are not measured here.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.common import Headline, median, time_call, write_result
from consensus import hashing

HEADER = bytes(range(80))  # any header: the work per nonce does not depend on its bytes
NO_HIT_TARGET = 0  # no sha256d is 0, so the whole range is hashed
NONCE_PREFIX = 76  # header bytes before the nonce field
MEGA = 1e6
BASELINE = "hashlib loop, 1 thread"
QUOTED_CONTEXT = {
    "note": "quoted from the C miners' published figures, not measured here",
    "cpuminer_avx2_asm_mhs_per_core": 13.0,
    "cpuminer_opt_sha_ni_mhs_per_core": 21.0,
}


@dataclass(frozen=True)
class Sizes:
    """Nonces per timed call and repeats: small in quick mode so the run takes seconds."""

    hashlib_nonces: int
    kernel_nonces_per_thread: int
    portable_nonces: int
    repeat: int


FULL = Sizes(
    hashlib_nonces=400_000,
    kernel_nonces_per_thread=8 * hashing.BATCH_NONCES,
    portable_nonces=4 * hashing.BATCH_NONCES,
    repeat=5,
)
QUICK = Sizes(
    hashlib_nonces=50_000,
    kernel_nonces_per_thread=2 * hashing.BATCH_NONCES,
    portable_nonces=hashing.BATCH_NONCES,
    repeat=3,
)


def hashlib_loop(header: bytes, target: int, count: int) -> int | None:
    """The baseline: what a straightforward Python miner does per nonce."""
    prefix = header[:NONCE_PREFIX]
    sha256 = hashlib.sha256
    for nonce in range(count):
        digest = sha256(sha256(prefix + struct.pack("<I", nonce)).digest()).digest()
        if int.from_bytes(digest, "little") <= target:
            return nonce
    return None


def measure(label: str, count: int, fn: Any, repeat: int) -> dict[str, Any]:
    """Time ``fn`` (which hashes ``count`` nonces); samples in seconds, median in MH/s.

    Process CPU seconds are kept beside wall seconds: on a shared machine they
    show whether the threads really ran in parallel even when the wall clock
    was stretched by other load.
    """
    cpu_samples: list[float] = []

    def timed() -> None:
        before = time.process_time()
        fn()
        cpu_samples.append(time.process_time() - before)

    samples = time_call(timed, repeat=repeat, warmup=1)
    seconds = median(samples)
    return {
        "label": label,
        "nonces": count,
        "samples_s": samples,
        "cpu_samples_s": cpu_samples[1:],
        "median_s": seconds,
        "mhs": count / seconds / MEGA,
        "cpu_per_wall": median(cpu_samples[1:]) / seconds,
    }


def kernel_run(kernel: str, threads: int, count: int) -> Any:
    return lambda: hashing.search_nonce(
        HEADER, NO_HIT_TARGET, 0, count, threads=threads, kernel=kernel
    )


def run(quick: bool = False) -> list[Headline]:
    sizes = QUICK if quick else FULL
    cores = os.cpu_count() or 1
    chosen = hashing.KERNEL
    rows = {
        "hashlib_1thread": measure(
            BASELINE,
            sizes.hashlib_nonces,
            lambda: hashlib_loop(HEADER, NO_HIT_TARGET, sizes.hashlib_nonces),
            sizes.repeat,
        ),
        "kernel_1thread": measure(
            f"{chosen}, 1 thread",
            sizes.kernel_nonces_per_thread,
            kernel_run(chosen, 1, sizes.kernel_nonces_per_thread),
            sizes.repeat,
        ),
        "kernel_all_threads": measure(
            f"{chosen}, {cores} threads",
            sizes.kernel_nonces_per_thread * cores,
            kernel_run(chosen, cores, sizes.kernel_nonces_per_thread * cores),
            sizes.repeat,
        ),
        "portable_1thread": measure(
            "portable, 1 thread",
            sizes.portable_nonces,
            kernel_run(hashing.PORTABLE, 1, sizes.portable_nonces),
            sizes.repeat,
        ),
    }
    base = rows["hashlib_1thread"]["mhs"]
    ratios = {name: row["mhs"] / base for name, row in rows.items()}
    write_result(
        "hash",
        {
            "parameters": {
                "quick": quick,
                "sizes": asdict(sizes),
                "batch_nonces": hashing.BATCH_NONCES,
            },
            "kernel": chosen,
            "threads": {"one": 1, "all": cores},
            "rows": rows,
            "median_mhs": {name: row["mhs"] for name, row in rows.items()},
            "ratio_vs_hashlib": ratios,
            "thread_scaling": rows["kernel_all_threads"]["mhs"] / rows["kernel_1thread"]["mhs"],
            "quoted_context": QUOTED_CONTEXT,
        },
    )
    header = (
        f"{'run':<28} {'nonces':>10} {'median s':>9} {'MH/s':>8} {'x hashlib':>10} {'cpu/wall':>9}"
    )
    print(header)
    for name, row in rows.items():
        print(
            f"{row['label']:<28} {row['nonces']:>10} {row['median_s']:>9.4f} {row['mhs']:>8.2f}"
            f" {ratios[name]:>10.1f} {row['cpu_per_wall']:>9.2f}"
        )
    print(
        "context (quoted, not measured): cpuminer AVX2 asm "
        f"{QUOTED_CONTEXT['cpuminer_avx2_asm_mhs_per_core']} MH/s/core, cpuminer-opt SHA-NI "
        f"{QUOTED_CONTEXT['cpuminer_opt_sha_ni_mhs_per_core']} MH/s/core"
    )
    return [
        Headline(
            "hash_mhs_1thread",
            rows["kernel_1thread"]["mhs"],
            "MH/s",
            BASELINE,
            ratios["kernel_1thread"],
        ),
        Headline(
            "hash_mhs_all_threads",
            rows["kernel_all_threads"]["mhs"],
            "MH/s",
            BASELINE,
            ratios["kernel_all_threads"],
        ),
        Headline(
            "hash_mhs_portable_1thread",
            rows["portable_1thread"]["mhs"],
            "MH/s",
            BASELINE,
            ratios["portable_1thread"],
        ),
    ]
