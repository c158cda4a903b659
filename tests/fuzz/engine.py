"""Two ways to drive the targets: an in-process mutator (quick, no extra package) and atheris.

The mutator is deterministic for a seed: it takes a seed encoding and applies
a few byte-level edits (bit flips, msgpack/JSON markers, boundary integers,
inserts, deletes, duplicated ranges, splices, deep nesting). atheris adds
coverage guidance for the volume run (``make fuzz``). Both check that one
input's memory stays within a multiple of its size (tracemalloc, on a sample).
"""

from __future__ import annotations

import random
import time
import tracemalloc
from dataclasses import dataclass, field

from tests.fuzz.targets import Target, check_one

MEMORY_FACTOR = 64  # bytes a decoder may allocate per input byte (objects, arrays, copies)
MEMORY_SLACK = 4 << 20  # plus fixed buffers: msgpack's, numpy's, the task-sized update vector
MEMORY_SAMPLE = 97  # measure every 97th input (tracemalloc slows decoding several times)

# Bytes that mean something to the decoders: msgpack type markers, JSON syntax, edges.
MARKERS = bytes([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x90, 0x9F, 0x80, 0x8F, 0xC0, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6,
                 0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD3, 0xD4, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE,
                 0xDF, 0xE0]) + b'[]{}",:0-e.1'
EDGES = [b"\x00" * 8, b"\xff" * 8, b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\xcf" + b"\xff" * 8,
         b"\xd3\x80" + b"\x00" * 7, b"\xcb\x7f\xf0" + b"\x00" * 6, b"\xcb\x7f\xf8" + b"\x00" * 6, b"1e999",
         b"9" * 5000, b"-0", b"NaN"]


@dataclass
class FuzzStats:
    target: str
    runs: int = 0
    decoded: int = 0
    rejected: int = 0
    seconds: float = 0.0
    worst_memory_ratio: float = 0.0  # peak bytes / (MEMORY_FACTOR * len + MEMORY_SLACK): must stay <= 1
    sampled: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0


def mutate(rng: random.Random, seeds: list[bytes], max_len: int) -> bytes:
    """A few random edits of one seed (or of a splice of two)."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        pos = rng.randint(0, len(data))
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # a meaningful byte
            data[rng.randrange(len(data))] = rng.choice(MARKERS)
        elif op == 2:  # insert random bytes
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and data:  # delete a range
            end = min(len(data), pos + rng.randint(1, 64))
            del data[pos:end]
        elif op == 4 and data:  # duplicate a range
            start = rng.randrange(len(data))
            data[pos:pos] = data[start : start + rng.randint(1, 256)]
        elif op == 5:  # truncate
            del data[pos:]
        elif op == 6:  # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randint(0, len(other))
            data = data[:pos] + bytearray(other[cut:])
        elif op == 7:  # an edge-case integer or number
            edge = rng.choice(EDGES)
            data[pos : pos + len(edge)] = edge
        elif op == 8:  # deep nesting: msgpack fixarrays or JSON brackets
            opener = rng.choice([b"\x91", b"[", b"\xdc\x00\x01"])
            data[pos:pos] = opener * rng.randint(100, 3000)
        else:  # overwrite a length-ish byte with a large one
            if data:
                data[rng.randrange(len(data))] = rng.choice([0xFF, 0xFE, 0x7F, 0x80])
    return bytes(data[:max_len])


def memory_ratio(target: Target, data: bytes) -> float:
    """Peak traced memory of one decode as a fraction of its allowance."""
    tracemalloc.start()
    try:
        check_one(target, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / (MEMORY_FACTOR * len(data) + MEMORY_SLACK)


def fuzz(target: Target, runs: int, seed: int = 0) -> FuzzStats:
    """Decode ``runs`` mutated inputs; raises ``Crash`` on the first escape.

    Every seed is decoded as is first (they must decode), then the mutants.
    """
    rng = random.Random(f"{target.name}-{seed}")
    seeds = target.seeds()
    stats = FuzzStats(target.name)
    started = time.perf_counter()
    for raw in seeds:
        if not check_one(target, raw):
            raise AssertionError(f"{target.name}: a seed encoding does not decode")
    for i in range(runs):
        data = mutate(rng, seeds, target.max_len)
        if i % MEMORY_SAMPLE == 0:
            stats.worst_memory_ratio = max(stats.worst_memory_ratio, memory_ratio(target, data))
            stats.sampled += 1
        if check_one(target, data):
            stats.decoded += 1
        else:
            stats.rejected += 1
        stats.runs += 1
    stats.seconds = time.perf_counter() - started
    return stats
