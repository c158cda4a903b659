"""The hashing core agrees with hashlib: compression, midstate, every kernel, every thread count.

hashlib is the oracle throughout: a plain Python loop over the same nonces says
which is the lowest one meeting the target, and each compiled kernel must say
the same, including at the boundaries (target equal to a hash, one below it,
targets differing from a hash only in a low limb, the top of the nonce space).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import _sha256_common as common
from consensus import hashing
from consensus.hashing import search_nonce, sha256d

AVAILABLE_KERNELS = [hashing.PORTABLE] + ([hashing.SHA_NI] if hashing.cpu_has_sha_ni() else [])
NONCE_SPACE = 2**32
MAX_TARGET = 2**256 - 1
SMALL_BATCH = 37  # nonces per batch in tests that exercise many batches on a small range
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
JOIN_TIMEOUT_S = 30.0  # hang guard for threaded searches, not a speed assertion

# Bitcoin's genesis block header (the fields as in Bitcoin Core's chainparams).
GENESIS_VERSION = 1
GENESIS_MERKLE_DISPLAY = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
GENESIS_TIME = 1231006505
GENESIS_BITS = 0x1D00FFFF
GENESIS_NONCE = 2083236893
GENESIS_HASH_DISPLAY = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
GENESIS_WINDOW = 1000  # search from nonce - window over 2 * window nonces


def genesis_header(nonce: int = GENESIS_NONCE) -> bytes:
    root = bytes.fromhex(GENESIS_MERKLE_DISPLAY)[::-1]
    return struct.pack(
        "<I32s32sIII", GENESIS_VERSION, bytes(32), root, GENESIS_TIME, GENESIS_BITS, nonce
    )


def target_from_bits(bits: int) -> int:
    """Bitcoin's compact encoding, inline here (pow.py is tested on its own)."""
    exponent, mantissa = bits >> 24, bits & 0xFFFFFF
    return mantissa << (8 * (exponent - 3))


def hash_value(header: bytes, nonce: int) -> int:
    """sha256d of the header with ``nonce``, as a little-endian integer, by hashlib."""
    return int.from_bytes(sha256d(header[:76] + struct.pack("<I", nonce)), "little")


def reference_search(header: bytes, target: int, start: int, count: int) -> int | None:
    """The oracle: a plain hashlib loop over the clipped range."""
    for nonce in range(start, min(start + count, NONCE_SPACE)):
        if hash_value(header, nonce) <= target:
            return nonce
    return None


# ---------------------------------------------------------------- compression


@pytest.mark.parametrize(
    ("message", "digest"),
    [
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ],
)
def test_compression_matches_nist_vectors(message: bytes, digest: str) -> None:
    assert common.sha256_pure(message).hex() == digest


@given(st.binary(min_size=80, max_size=80))
def test_midstate_continues_to_hashlib_digest(header: bytes) -> None:
    """Midstate of bytes 0..63, then the padded second block, gives hashlib's SHA-256."""
    second_block = header[64:] + b"\x80" + bytes(39) + struct.pack(">Q", 640)
    state = common.compress(tuple(int(w) for w in common.midstate(header)), second_block)
    assert struct.pack(">8I", *state) == hashlib.sha256(header).digest()


def test_sha256d_known_values() -> None:
    assert (
        sha256d(b"hello").hex()
        == "9595c9df90075148eb06860365df33584b75bff782a510c6cd4883a419833d50"
    )
    assert sha256d(genesis_header())[::-1].hex() == GENESIS_HASH_DISPLAY


def test_target_limbs_put_most_significant_last() -> None:
    limbs = common.target_limbs((0xDEADBEEF << 224) | 7)
    assert int(limbs[7]) == 0xDEADBEEF and int(limbs[0]) == 7 and not limbs[1:7].any()


# ---------------------------------------------------------------- kernels vs hashlib


@st.composite
def searches(draw: st.DrawFn) -> tuple[bytes, int, int, int]:
    """A random header and range, and a target placed on, just off, or far from a hash."""
    header = draw(st.binary(min_size=80, max_size=80))
    count = draw(st.integers(min_value=1, max_value=160))
    start = draw(
        st.one_of(st.integers(0, NONCE_SPACE - 1), st.integers(NONCE_SPACE - 200, NONCE_SPACE - 1))
    )
    pick = draw(st.integers(0, count - 1))
    nonce = min(start + pick, NONCE_SPACE - 1)
    value = hash_value(header, nonce)
    limb = draw(st.integers(0, 7))
    how = draw(
        st.sampled_from(["equal", "below", "limb_below", "limb_above", "random", "all", "none"])
    )
    target = {
        "equal": value,
        "below": value - 1,
        "limb_below": value - (1 << (32 * limb)),
        "limb_above": value + (1 << (32 * limb)),
        "random": draw(st.integers(0, MAX_TARGET)) >> draw(st.integers(0, 24)),
        "all": MAX_TARGET,
        "none": 0,
    }[how]
    return header, min(max(target, 0), MAX_TARGET), start, count


@pytest.mark.parametrize("kernel", AVAILABLE_KERNELS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=searches())
def test_kernel_finds_the_lowest_nonce_like_hashlib(
    kernel: str, case: tuple[bytes, int, int, int]
) -> None:
    header, target, start, count = case
    expected = reference_search(header, target, start, count)
    assert search_nonce(header, target, start, count, threads=1, kernel=kernel) == expected


def kernel_module(kernel: str) -> Any:
    if kernel == hashing.SHA_NI:
        from consensus import _sha256_shani

        return _sha256_shani
    from consensus import _sha256_portable

    return _sha256_portable


@pytest.mark.parametrize("kernel", AVAILABLE_KERNELS)
@settings(max_examples=40, deadline=None)
@given(header=st.binary(min_size=80, max_size=80), nonce=st.integers(0, NONCE_SPACE - 1))
def test_full_digest_recheck_matches_hashlib(kernel: str, header: bytes, nonce: int) -> None:
    """The full-digest path that rechecks a candidate group is sha256d, limb for limb."""
    out = np.zeros(8, dtype=np.uint32)
    kernel_module(kernel).full_digest(common.midstate(header), common.tail_words(header), nonce, out)
    assert int.from_bytes(out.astype("<u4").tobytes(), "little") == hash_value(header, nonce)


@pytest.mark.parametrize("kernel", AVAILABLE_KERNELS)
def test_top_limb_ties_with_lower_limbs_above_are_rejected(kernel: str) -> None:
    """A nonce whose top limb equals the target's passes the filter; the full compare decides."""
    header = bytes(range(3, 83))
    start, count = 4096, 96
    values = {n: hash_value(header, n) for n in range(start, start + count)}
    best = min(values, key=values.__getitem__)
    low_mask = (1 << 224) - 1
    target = (values[best] & ~low_mask) | ((values[best] & low_mask) - 1)  # same top limb, just below
    assert search_nonce(header, target, start, count, threads=1, kernel=kernel) == reference_search(
        header, target, start, count
    )
    assert search_nonce(header, target | low_mask, start, count, threads=1, kernel=kernel) == (
        reference_search(header, target | low_mask, start, count)
    )


AVX2_ONLY_FEATURES = (
    "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,"
    "+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+sahf"
)


def cpu_flags() -> set[str]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines()
                 if line.startswith("flags")), set())


@pytest.mark.skipif("avx2" not in cpu_flags(), reason="needs a CPU that runs AVX2 code")
def test_portable_kernel_on_an_avx2_target_agrees_with_hashlib(tmp_path: pathlib.Path) -> None:
    """The 8-lane build numba makes for a CPU without AVX-512 finds hashlib's nonces too."""
    header = bytes(range(7, 87))
    cases = [(MAX_TARGET >> shift, start, 200) for shift, start in ((4, 0), (7, NONCE_SPACE - 150), (9, 977))]
    code = (
        "import json, sys\n"
        "from consensus import hashing, _sha256_portable as p\n"
        f"cases = {cases!r}\n"
        f"header = {header!r}\n"
        "found = [hashing.search_nonce(header, t, s, c, threads=1, kernel='portable') for t, s, c in cases]\n"
        "print(json.dumps([p.LANES, found]))\n"
    )
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": AVX2_ONLY_FEATURES,
           "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, cwd=REPO_ROOT)
    lanes, found = json.loads(done.stdout)
    assert lanes == 8
    assert found == [reference_search(header, t, s, c) for t, s, c in cases]


@pytest.mark.parametrize("kernel", AVAILABLE_KERNELS)
def test_boundary_target_equal_accepted_one_below_rejected(kernel: str) -> None:
    header = bytes(range(80))
    start, count = 1000, 64
    values = {n: hash_value(header, n) for n in range(start, start + count)}
    best = min(values, key=values.__getitem__)
    assert search_nonce(header, values[best], start, count, threads=1, kernel=kernel) == best
    assert search_nonce(header, values[best] - 1, start, count, threads=1, kernel=kernel) is None


@pytest.mark.parametrize("kernel", AVAILABLE_KERNELS)
def test_range_clipped_at_top_of_nonce_space(kernel: str) -> None:
    header = bytes(reversed(range(80)))
    start, count = NONCE_SPACE - 5, 100
    last = NONCE_SPACE - 1
    assert search_nonce(
        header, hash_value(header, last), start, count, kernel=kernel
    ) == reference_search(header, hash_value(header, last), start, count)
    assert search_nonce(header, MAX_TARGET, start, count, kernel=kernel) == start
    # A kernel that wrapped past 2**32 would find the best of nonces 0..94 here.
    wrapped_best = min(hash_value(header, n) for n in range(count - 5))
    expected = reference_search(header, wrapped_best, start, count)
    assert search_nonce(header, wrapped_best, start, count, kernel=kernel) == expected
    assert search_nonce(header, MAX_TARGET, NONCE_SPACE, 10, kernel=kernel) is None


@pytest.mark.parametrize("kernel", AVAILABLE_KERNELS)
def test_bitcoin_genesis_is_remined(kernel: str) -> None:
    target = target_from_bits(GENESIS_BITS)
    found = search_nonce(
        genesis_header(0), target, GENESIS_NONCE - GENESIS_WINDOW, 2 * GENESIS_WINDOW, kernel=kernel
    )
    assert found == GENESIS_NONCE


# ---------------------------------------------------------------- threads and batches


@settings(max_examples=60, deadline=None)
@given(
    header=st.binary(min_size=80, max_size=80),
    start=st.integers(0, NONCE_SPACE - 1),
    count=st.integers(0, 400),
    shift=st.integers(0, 8),
    threads=st.integers(1, 4),
    kernel=st.sampled_from(AVAILABLE_KERNELS),
)
def test_many_batches_many_threads_still_lowest(
    header: bytes, start: int, count: int, shift: int, threads: int, kernel: str
) -> None:
    """With tiny batches, hits in several batches still give the lowest, for any thread count."""
    target = MAX_TARGET >> shift  # about one nonce in 2**shift meets it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashing, "BATCH_NONCES", SMALL_BATCH)
        found = search_nonce(header, target, start, count, threads=threads, kernel=kernel)
    assert found == reference_search(header, target, start, count)


def test_one_and_two_threads_agree_on_full_batches() -> None:
    """Three real batches around the genesis nonce: the answer does not depend on threads."""
    target = target_from_bits(GENESIS_BITS)
    start = GENESIS_NONCE - 2 * hashing.BATCH_NONCES + 12345
    count = 3 * hashing.BATCH_NONCES
    one = search_nonce(genesis_header(0), target, start, count, threads=1)
    two = search_nonce(genesis_header(0), target, start, count, threads=2)
    assert one == two
    assert one is not None and hash_value(genesis_header(0), one) <= target


# ---------------------------------------------------------------- stop


class StopAfterChecks(threading.Event):
    """An event that turns itself on at its ``after``-th look: a stop arriving mid-search."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.checks = 0
        self.lock = threading.Lock()

    def is_set(self) -> bool:
        with self.lock:
            self.checks += 1
            if self.checks >= self.after:
                self.set()
        return super().is_set()


def test_stop_set_before_returns_none_without_searching() -> None:
    stop = threading.Event()
    stop.set()
    assert search_nonce(genesis_header(), MAX_TARGET, stop=stop) is None


@pytest.mark.parametrize("threads", [1, 2])
def test_stop_during_search_is_honoured_between_batches(threads: int) -> None:
    """Target 0 never hits; a stop after a few batches ends the whole 2**32 search."""
    stop = StopAfterChecks(after=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashing, "BATCH_NONCES", 4096)
        assert search_nonce(genesis_header(), 0, threads=threads, stop=stop) is None
    # One look before starting, then one per batch per thread, plus each thread's last look.
    assert stop.checks <= 4 + threads


class WatchedStop(StopAfterChecks):
    """A stop event that tells the test once the search has looked at it ``started_after`` times
    (it never turns itself on: the test sets it)."""

    def __init__(self, started_after: int) -> None:
        super().__init__(after=2**62)
        self.started_after = started_after
        self.searching = threading.Event()

    @property
    def looks(self) -> int:
        return self.checks

    def is_set(self) -> bool:
        answer = super().is_set()
        if self.checks >= self.started_after:
            self.searching.set()
        return answer


def test_stop_from_another_thread_ends_search() -> None:
    """The stop arrives while batches are being hashed (not before the search starts)."""
    stop = WatchedStop(started_after=3)  # the look before starting, then batches under way
    result: list[int | None] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashing, "BATCH_NONCES", 4096)
        worker = threading.Thread(
            target=lambda: result.append(search_nonce(genesis_header(), 0, threads=2, stop=stop))
        )
        worker.start()
        assert stop.searching.wait(JOIN_TIMEOUT_S), "the search never started"
        with stop.lock:  # no thread looks between the count and the stop
            looks_at_stop = stop.looks
            stop.set()
        worker.join(JOIN_TIMEOUT_S)
    assert not worker.is_alive()
    assert result == [None]
    # Each thread finishes its batch and looks once more; 2**32 nonces were never all hashed.
    assert stop.looks <= looks_at_stop + 2 * 2


# ---------------------------------------------------------------- validation and selection


@pytest.mark.parametrize(
    "kwargs",
    [
        {"header": bytes(79)},
        {"header": bytes(81)},
        {"target": -1},
        {"target": 2**256},
        {"start": -1},
        {"count": -1},
        {"threads": 0},
        {"kernel": "gpu"},
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"header": bytes(80), "target": MAX_TARGET, "start": 0, "count": 10}
    args.update(kwargs)
    with pytest.raises(ValueError):
        search_nonce(**args)  # type: ignore[arg-type]


def test_empty_range_finds_nothing() -> None:
    assert search_nonce(bytes(80), MAX_TARGET, 5, 0) is None


def test_kernel_choice_follows_cpu_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hashing.KERNEL_ENV, raising=False)
    assert hashing._choose_kernel() == (
        hashing.SHA_NI if hashing.cpu_has_sha_ni() else hashing.PORTABLE
    )
    monkeypatch.setenv(hashing.KERNEL_ENV, "portable")
    assert hashing._choose_kernel() == hashing.PORTABLE
    monkeypatch.setenv(hashing.KERNEL_ENV, "fastest")
    with pytest.raises(ValueError):
        hashing._choose_kernel()


def test_environment_forces_kernel_at_import() -> None:
    code = "from consensus import hashing; print(hashing.KERNEL)"
    env = {**os.environ, hashing.KERNEL_ENV: hashing.PORTABLE}
    env_run = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    assert env_run.stdout.strip() == hashing.PORTABLE


def test_sha_instruction_counts_per_nonce_are_what_the_scan_loop_issues() -> None:
    # The benchmark's ceilings divide by these counts: they must follow the kernel if it changes.
    from llvmlite import ir

    from consensus import _sha256_shani as shani

    scan = shani._define_scan(ir.Module())
    loop = next(block for block in scan.blocks if block.name == "body")
    text = str(loop)
    issued = {name: text.count(f"@{name}(") + text.count(f'@"{name}"(')
              for name in ("llvm.x86.sha256rnds2", "llvm.x86.sha256msg1", "llvm.x86.sha256msg2")}
    assert issued == {"llvm.x86.sha256rnds2": shani.RNDS2_PER_NONCE * shani.WAYS,
                      "llvm.x86.sha256msg1": shani.MSG1_PER_NONCE * shani.WAYS,
                      "llvm.x86.sha256msg2": shani.MSG2_PER_NONCE * shani.WAYS}


def test_schedule_overlap_fraction_is_the_hidden_share_of_the_shorter_stream() -> None:
    from benchmarks.ceilings import Overlap

    assert Overlap(1.0, 3.0, 3.0, "").fraction == pytest.approx(1.0)  # rounds hidden under the schedule
    assert Overlap(1.0, 3.0, 4.0, "").fraction == pytest.approx(0.0)  # one after the other
    assert Overlap(2.0, 3.0, 4.0, "").fraction == pytest.approx(0.5)


@pytest.mark.skipif(not hashing.cpu_has_sha_ni(), reason="the overlap probe runs sha256rnds2")
def test_schedule_overlap_probe_times_all_three_loops() -> None:
    from benchmarks.ceilings import sha_schedule_overlap

    overlap = sha_schedule_overlap(repeats=1)
    assert overlap.rnds2_s > 0 and overlap.schedule_s > 0 and overlap.together_s > 0
    # Interleaved, the two streams take at least as long as the longer one alone, give or take noise.
    assert overlap.together_s > 0.5 * max(overlap.rnds2_s, overlap.schedule_s)
    assert set(overlap.as_dict()) == {"rnds2_s", "schedule_s", "together_s", "fraction", "what"}
