"""The node's services as the rest of the code may see them: protocols, and the keys to find them.

A route or a background task never receives "the node" as ``Any``: it
finds the service it needs in the aiohttp application under a typed
``web.AppKey`` and sees it through a ``Protocol`` that lists only what it
may use, so a rename is a type error and a module can be tested with a
stand-in. The services are started and stopped by the application's
``cleanup_ctx`` (``node/app.py``), in order, and torn down in reverse.

* :class:`ChainAccess` - the chain service (``node/chain_service.py``): the
  chain state and the mempool on their own thread, a frozen snapshot of the
  tip for the loop, one entry for blocks and one for transactions.
* :class:`PeerAccess` - the peer service (``node/p2p/service.py``).
* ``METRICS`` - the Prometheus registry; ``EVENTS`` - the event log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from consensus.block import Block
from node.chain_service import ChainSnapshot, TipListener, TxAdmission, TxListener
from node.chainstate import Connected
from node.events import EventLog
from node.metrics import NodeMetrics
from node.p2p.addrman import AddressBook
from node.p2p.penalties import BanList
from node.p2p.service import PeerInfo, PeerService
from node.p2p.session import Peer

T = TypeVar("T")


class ChainAccess(Protocol):
    """What other wings may ask of the chain service."""

    @property
    def snapshot(self) -> ChainSnapshot: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def accept_block(self, block: Block | bytes, *, source: str | None, mined: bool = False) -> Connected: ...

    async def submit_tx(self, raw: bytes, *, source: str | None) -> TxAdmission: ...

    def on_tip_change(self, callback: TipListener) -> None: ...

    def on_new_tx(self, callback: TxListener) -> None: ...


class PeerAccess(Protocol):
    """What other wings may ask of the peer service."""

    @property
    def syncing(self) -> bool: ...

    @property
    def known(self) -> AddressBook: ...

    @property
    def bans(self) -> BanList: ...

    def peer_infos(self) -> list[PeerInfo]: ...

    def is_banned(self, url: str) -> bool: ...

    def add_seed(self, url: str) -> None: ...

    async def connect(self, url: str) -> Peer | None: ...


CHAIN = web.AppKey("chain", ChainAccess)
PEERS = web.AppKey("peers", PeerService)  # the p2p routes use the whole service; others see PeerAccess
METRICS = web.AppKey("metrics", NodeMetrics)
EVENTS = web.AppKey("events", EventLog)


def peers_of(app: web.Application) -> PeerAccess:
    """The peer service, seen through :class:`PeerAccess`."""
    return app[PEERS]
