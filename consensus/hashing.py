"""Block hashing: ``sha256d`` (the reference) and the compiled nonce search.

Design
------
Reference.  :func:`sha256d` is hashlib's SHA-256 applied twice.  Every block a
node accepts is checked with it; the search below only has to find nonces, and
the tests check bit for bit that it finds the same ones a hashlib scan finds.

Midstate.  A header is 80 bytes, so its first SHA-256 is two 64-byte blocks.
The first block (bytes 0..63: version, prev, 28 bytes of root) is the same for
every nonce, so its compression (the *midstate*) is computed once per search
in pure Python (:mod:`consensus._sha256_common`).  Per nonce the kernel does
two compressions: block two of the first hash (root tail, time, bits, nonce
and padding) and the single block of the second hash (32-byte digest and
padding).  No Python runs per nonce.

Kernels.  Two numba kernels with one contract, ``scan(mid, tail, target_limbs,
start, count) -> lowest nonce or -1``, compiled with ``nogil=True`` and
``cache=True`` (a second process loads machine code instead of compiling):

* ``"sha-ni"`` (:mod:`consensus._sha256_shani`): the x86 SHA extensions via
  LLVM's ``sha256rnds2`` / ``sha256msg1`` / ``sha256msg2`` intrinsics, four
  nonces interleaved to hide instruction latency.
* ``"portable"`` (:mod:`consensus._sha256_portable`): 8 (AVX2) or 32
  (AVX-512) nonces in the lanes of unrolled vector code that LLVM lowers to
  whatever SIMD the CPU has.

Both loops run whole inside one compiled function per batch, skip the work
that does not depend on the nonce, stop the second hash once its top 32 bits
(the byte-swapped last digest word, the most significant limb) are known,
and compare only that limb to the target's; a group holding a nonce that
passes is rechecked nonce by nonce with the full 256-bit digest.

Selection.  At import :data:`KERNEL` is chosen: ``GRADCHAIN_HASH_KERNEL``
(``portable`` or ``sha-ni``) if set, otherwise ``sha-ni`` when the CPU reports
it (``sha_ni`` in /proc/cpuinfo on Linux x86-64; other platforms are assumed
not to have it) and ``portable`` otherwise.  Nothing is compiled at import.
Compiling the SHA-NI kernel never aborts (its LLVM function carries its own
target features), but running it on a CPU without SHA-NI would fault, so
asking for it there raises instead.

Threading.  :func:`search_nonce` cuts the range into batches of
:data:`BATCH_NONCES` (tens of milliseconds each) handed out in increasing order
to Python threads, each calling the GIL-free kernel.  Once a batch finds a hit,
no later batch is started, and earlier batches still running finish, so the
answer is the lowest hit whatever the thread count.  The stop event is read
before each batch, so a stop is honoured within one batch.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from consensus import _sha256_common as common

__all__ = ["KERNEL", "KERNELS", "BATCH_NONCES", "sha256d", "search_nonce", "cpu_has_sha_ni"]

HEADER_SIZE = common.HEADER_SIZE
NONCE_OFFSET = 76  # header bytes 76..79 hold the nonce, little-endian u32
NONCE_SPACE = 2**32  # nonces are u32
TARGET_LIMIT = 2**256  # targets are 256-bit
BATCH_NONCES = 1 << 18  # nonces per kernel call: ~10-50 ms, the stop-event latency
KERNEL_ENV = "GRADCHAIN_HASH_KERNEL"
SHA_NI = "sha-ni"
PORTABLE = "portable"
KERNELS: tuple[str, ...] = (SHA_NI, PORTABLE)
CPUINFO = "/proc/cpuinfo"
X86_64_MACHINES = frozenset({"x86_64", "amd64"})

ScanFn = Callable[
    [npt.NDArray[np.uint32], npt.NDArray[np.uint32], npt.NDArray[np.uint32], int, int], int
]


def sha256d(data: bytes) -> bytes:
    """SHA-256 of SHA-256 of ``data``, by hashlib: the reference every block is checked with."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def cpu_has_sha_ni() -> bool:
    """True if this CPU has the SHA extensions (Linux x86-64 only; elsewhere assumed absent)."""
    if platform.system() != "Linux" or platform.machine().lower() not in X86_64_MACHINES:
        return False
    try:
        with open(CPUINFO, encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return "sha_ni" in line.split(":", 1)[1].split()
    except OSError:
        return False
    return False


def _choose_kernel() -> str:
    forced = os.environ.get(KERNEL_ENV, "").strip()
    if forced:
        if forced not in KERNELS:
            raise ValueError(
                f"{KERNEL_ENV}={forced!r} is not a kernel; use one of {', '.join(KERNELS)}"
            )
        if forced == SHA_NI and not cpu_has_sha_ni():
            raise RuntimeError(
                f"{KERNEL_ENV}=sha-ni but this CPU has no SHA-NI; unset it or use portable"
            )
        return forced
    return SHA_NI if cpu_has_sha_ni() else PORTABLE


KERNEL: str = _choose_kernel()


def _scan_function(kernel: str) -> ScanFn:
    """The compiled scan for ``kernel``, imported (and so compiled) only when first needed."""
    if kernel == SHA_NI:
        if not cpu_has_sha_ni():
            raise RuntimeError("the sha-ni kernel needs a CPU with SHA-NI; this one has none")
        from consensus import _sha256_shani

        return _sha256_shani.scan
    if kernel == PORTABLE:
        from consensus import _sha256_portable

        return _sha256_portable.scan
    raise ValueError(f"unknown kernel {kernel!r}; use one of {', '.join(KERNELS)}")


@dataclass(frozen=True)
class _Job:
    """What every batch of one search shares: the per-header precomputation."""

    mid: npt.NDArray[np.uint32]
    tail: npt.NDArray[np.uint32]
    target: npt.NDArray[np.uint32]
    scan: ScanFn


@dataclass
class _Dispatcher:
    """Hands out batches in increasing order and keeps the lowest hit.

    A batch is started only if it begins below the lowest hit so far, so every
    batch that could hold a lower hit is finished before the search returns.
    """

    start: int
    end: int
    stop: threading.Event | None
    next_start: int = field(init=False)
    best: int | None = None
    stopped: bool = False
    error: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.next_start = self.start

    def take(self) -> tuple[int, int] | None:
        """Next ``(first, count)`` batch, or None when the search is over for this worker."""
        with self.lock:
            if self.stop is not None and self.stop.is_set():
                self.stopped = True
            limit = self.end if self.best is None else min(self.end, self.best)
            if self.stopped or self.error is not None or self.next_start >= limit:
                return None
            first = self.next_start
            count = min(BATCH_NONCES, self.end - first)
            self.next_start = first + count
            return first, count

    def fail(self, error: BaseException) -> None:
        """Record a worker's exception; the other workers stop at their next batch."""
        with self.lock:
            if self.error is None:
                self.error = error

    def report(self, nonce: int) -> None:
        with self.lock:
            if self.best is None or nonce < self.best:
                self.best = nonce


def _work(job: _Job, dispatcher: _Dispatcher) -> None:
    try:
        while (batch := dispatcher.take()) is not None:
            first, count = batch
            nonce = job.scan(job.mid, job.tail, job.target, first, count)
            if nonce >= 0:
                dispatcher.report(nonce)
    except BaseException as error:  # handed to the caller's thread, re-raised there
        dispatcher.fail(error)


def _validate(header: bytes, target: int, start: int, count: int, threads: int | None) -> None:
    if not isinstance(header, (bytes, bytearray, memoryview)) or len(header) != HEADER_SIZE:
        size = (
            len(header)
            if isinstance(header, (bytes, bytearray, memoryview))
            else type(header).__name__
        )
        raise ValueError(f"header must be exactly {HEADER_SIZE} bytes, got {size}")
    if not 0 <= target < TARGET_LIMIT:
        raise ValueError(f"target must be in [0, 2**256), got {target}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None for every core, got {threads}")


def search_nonce(
    header: bytes,
    target: int,
    start: int = 0,
    count: int = NONCE_SPACE,
    threads: int | None = None,
    stop: threading.Event | None = None,
    *,
    kernel: str | None = None,
) -> int | None:
    """Lowest nonce in ``[start, start + count)`` (clipped to 2**32) that meets ``target``.

    Parameters
    ----------
    header : bytes
        The 80-byte header; its bytes 76..79 are ignored and replaced by each
        candidate nonce (little-endian u32).
    target : int
        A nonce meets it when ``sha256d(header)`` read as a little-endian
        256-bit integer is ``<= target``.
    start, count : int
        The nonce range; the end is clipped to 2**32, the size of the nonce field.
    threads : int or None
        Worker threads; None uses every core.  The answer does not depend on it.
    stop : threading.Event or None
        When set, the search returns None within one batch.
    kernel : str or None
        ``"sha-ni"`` or ``"portable"`` to pick a kernel (tests, benchmarks);
        None uses :data:`KERNEL`.

    Returns
    -------
    int or None
        The lowest such nonce; None if there is none in the range or ``stop``
        was set before the search finished.
    """
    _validate(header, target, start, count, threads)
    end = min(start + count, NONCE_SPACE)
    if start >= end or (stop is not None and stop.is_set()):
        return None
    raw = bytes(header)
    job = _Job(
        mid=common.midstate(raw),
        tail=common.tail_words(raw),
        target=common.target_limbs(target),
        scan=_scan_function(KERNEL if kernel is None else kernel),
    )
    dispatcher = _Dispatcher(start, end, stop)
    batches = -(-(end - start) // BATCH_NONCES)
    workers = min(threads if threads is not None else (os.cpu_count() or 1), batches)
    if workers <= 1:
        _work(job, dispatcher)
    else:
        pool = [
            threading.Thread(target=_work, args=(job, dispatcher), daemon=True)
            for _ in range(workers)
        ]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    if dispatcher.error is not None:
        raise dispatcher.error
    if dispatcher.stopped:
        return None
    return dispatcher.best
