"""Valid regtest headers without blocks, for tests of header sync and the block index.

Regtest's target is about 2**255, so a header needs a couple of hashes:
a few thousand of them take milliseconds.
"""

from __future__ import annotations

from consensus.hashing import sha256d
from consensus.header import Header, header_hash
from consensus.pow import bits_to_target


def regtest_headers(parent: Header, count: int, *, salt: bytes = b"fork") -> list[Header]:
    """``count`` valid regtest headers on ``parent``, one second apart (``salt`` makes another branch)."""
    target = bits_to_target(parent.bits)
    out: list[Header] = []
    prev, time_s = parent, parent.time
    for i in range(count):
        time_s += 1
        header = Header(1, header_hash(prev), sha256d(salt + i.to_bytes(4, "little")), time_s, parent.bits, 0)
        while int.from_bytes(header_hash(header), "little") > target:
            header = header.with_nonce(header.nonce + 1)
        out.append(header)
        prev = header
    return out
