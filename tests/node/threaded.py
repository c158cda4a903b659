"""A node on its own event loop in a daemon thread, for tests that drive it from blocking code.

The CLI and the browser tests talk to a node the way an outside user does
(urllib, Selenium), which blocks; the node therefore runs its loop in a
thread of its own and the test hands coroutines to it with :meth:`NodeThread.call`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ml.datafile import FirstRunDefaults
from node.config import NodeConfig
from node.service import Node

T = TypeVar("T")

NODE_TIMEOUT_S = 60.0  # node start/stop and on-demand mining, on a loaded 2-core box
# A task deployed on a one-miner regtest node in a test: f = 0 and short rounds, so it trains in seconds.
QUICK_DEPLOY_DEFAULTS = FirstRunDefaults(f=0, round_blocks=4, bond_maturity=1, unbond_delay=2)


class NodeThread:
    """A started node on its own event loop in a daemon thread; :meth:`stop` shuts both down."""

    def __init__(self, config: NodeConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="node-loop", daemon=True)
        self.thread.start()
        self.node = Node(config)
        self.call(self.node.start())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the node's loop and wait for its result (raises what it raises)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=NODE_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the node, then its loop and thread, even if the node's stop fails."""
        try:
            self.call(self.node.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=NODE_TIMEOUT_S)
            self.loop.close()
