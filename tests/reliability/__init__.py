"""The reliability suite (issue 16): fuzzed API and decoders, crashes, partitions, load, separate hosts.

``make test`` runs each at a quick size; ``make test-long`` sets
``GRADCHAIN_LONG=1`` and runs the full sizes (see :func:`sized`).
"""

from __future__ import annotations

import os

LONG = os.environ.get("GRADCHAIN_LONG") == "1"


def sized(quick: int, long: int) -> int:
    """``long`` under ``make test-long`` (GRADCHAIN_LONG=1), else ``quick``."""
    return long if LONG else quick
