"""Every decoder of untrusted bytes, fed mutated encodings: only its reject type gets out.

The quick run here mutates each target's seed encodings in process
(``tests.fuzz.engine``); ``make fuzz`` drives the same targets with atheris
at a million inputs each. Memory per input is sampled and must stay within
``MEMORY_FACTOR`` times the input's size plus ``MEMORY_SLACK``.

The pinned inputs at the bottom are what the fuzzers found.
"""

from __future__ import annotations

import pytest

from tests.fuzz.engine import fuzz
from tests.fuzz.targets import TARGETS, check_one
from tests.reliability import sized
from wallet import KeystoreError
from wallet.keystore import read_keystore_header

RUNS = sized(3000, 100_000)  # mutated inputs per decoder


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_decoder_lets_out_only_its_reject_type(name: str) -> None:
    stats = fuzz(TARGETS[name], RUNS)
    assert stats.runs == RUNS
    # The mutants reach both outcomes: the seeds are deep enough that some survive mutation.
    assert stats.rejected > 0 and stats.decoded > 0, f"{name}: {stats}"
    assert stats.sampled > 0 and stats.worst_memory_ratio <= 1.0, f"{name}: memory {stats.worst_memory_ratio:.2f}"
    print(f"{name}: {stats.runs} inputs, {stats.decoded} decoded, {stats.rejected} rejected, "
          f"{stats.per_second:.0f}/s, worst memory {stats.worst_memory_ratio:.3f} of allowance")


def test_every_decoder_reading_peer_bytes_has_a_target() -> None:
    """A new message kind without a fuzz target fails here."""
    from node.p2p.messages import MESSAGES

    expected = {"header", "tx", "block", "update_codec", "keystore", "address"} | {f"p2p_{k}" for k in MESSAGES}
    assert set(TARGETS) == expected


@pytest.mark.parametrize("blob", [
    b"[" * 60_000,  # RecursionError out of json.loads (found by tests/fuzz)
    b'{"version": ' + b"9" * 5000 + b"}",  # ValueError: past Python's int digit limit
    b"\xff\xfe",
])
def test_keystore_parser_regressions(blob: bytes) -> None:
    with pytest.raises(KeystoreError):
        read_keystore_header(blob)
    assert check_one(TARGETS["keystore"], blob) is False
