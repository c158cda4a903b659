"""A header on a side branch costs the same to check however long the branch is.

The ASERT anchor is kept per index entry and a side branch is read from the
index on demand, so checking a header reads a bounded number of entries:
before, every side-branch header walked back to block 1 (and copied the
branch), and a peer could make each of its headers cost more than the last.
"""

from __future__ import annotations

import pathlib
import time

from ml.tasks import builtin_task
from node.chainstate import ChainState
from tests.headers import regtest_headers

BRANCH = 1200  # headers on one side branch


class CountingIndex(dict):  # type: ignore[type-arg]
    """The block index, counting lookups."""

    reads = 0

    def __getitem__(self, key: object) -> object:
        CountingIndex.reads += 1
        return super().__getitem__(key)

    def get(self, key: object, default: object = None) -> object:
        CountingIndex.reads += 1
        return super().get(key, default)


def test_checking_a_side_branch_header_reads_a_bounded_number_of_entries(tmp_path: pathlib.Path) -> None:
    chain = ChainState.create(tmp_path, "regtest", builtin_task("digits"))
    try:
        chain.index = CountingIndex(chain.index)
        headers = regtest_headers(chain.genesis.header, BRANCH)
        now = int(time.time())
        reads = []
        with chain.storage.group():
            for header in headers:
                before = CountingIndex.reads
                chain.accept_header(header, now)
                reads.append(CountingIndex.reads - before)
        assert chain.best_header.height == BRANCH and chain.height == 0, "all side headers, no block"
        assert max(reads[-100:]) <= max(reads[20:120]), f"late headers cost more: {reads[20:30]} .. {reads[-10:]}"
        assert max(reads) < 100, max(reads)
    finally:
        chain.close()
