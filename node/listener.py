"""The node's listening socket: a cap on connections, deadlines on slow requests.

aiohttp serves each connection until the client goes away, so a "slowloris"
client that opens hundreds of connections and never finishes a request
holds sockets and memory for as long as it likes. Three guards bound that:

* **Connection caps.** At most ``MAX_CONNECTIONS`` open connections, and at
  most ``MAX_CONNECTIONS_PER_HOST`` from one remote address; a connection
  over a cap is answered ``503`` and closed before anything is read. The
  loopback address is exempt from the per-host cap (the local testnet and
  the test-suite run many nodes there, and a local attacker owns the
  machine anyway); it still counts towards the total.
* **Header deadline.** A connection must deliver a complete request head
  within ``HEADER_TIMEOUT_S`` of connecting or of its previous response, or
  it is closed (aiohttp's keep-alive timer, which also fires on a
  connection that has sent only part of a head).
* **Body deadline.** :func:`node.http.read_body` reads a body within a time
  that grows with its size (``limits.body_deadline_s``), else answers 408.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import Any

from aiohttp import web

from node import limits

log = logging.getLogger("gradchain.http")

SHARED_LOCAL_HOSTS = frozenset({"127.0.0.1", "::1"})
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 38\r\n\r\ntoo many connections from this address"
)


class ConnectionGuard:
    """Counts open connections in total and per remote host; says whether a new one may stay."""

    def __init__(self, max_total: int, max_per_host: int) -> None:
        self.max_total = max_total
        self.max_per_host = max_per_host
        self.total = 0
        self.per_host: collections.Counter[str] = collections.Counter()
        self.refused = 0

    def admit(self, host: str) -> bool:
        """Count a new connection from ``host`` if it fits under both caps."""
        if self.total >= self.max_total:
            return False
        if host not in SHARED_LOCAL_HOSTS and self.per_host[host] >= self.max_per_host:
            return False
        self.total += 1
        self.per_host[host] += 1
        return True

    def release(self, host: str) -> None:
        self.total -= 1
        self.per_host[host] -= 1
        if self.per_host[host] <= 0:
            del self.per_host[host]


class _GuardedProtocol(asyncio.Protocol):
    """Admits a connection through the guard, then hands every event to aiohttp's handler."""

    def __init__(self, guard: ConnectionGuard, factory: Any) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._host: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        if not self._guard.admit(host):
            self._guard.refused += 1
            log.debug("refused a connection from %s: over the connection cap", host)
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_REFUSAL)
            transport.close()
            return
        self._host = host
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._host is not None:
            self._guard.release(self._host)
            self._host = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedSite(web.BaseSite):
    """A site on an already listening socket, with a :class:`ConnectionGuard` before every connection."""

    __slots__ = ("_sock", "guard")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard) -> None:
        super().__init__(runner)
        self._sock = sock
        self.guard = guard

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = self.guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GuardedProtocol(guard, server), sock=self._sock, backlog=self._backlog
        )


def runner_options() -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` that set the header deadline (module docstring)."""
    return {"keepalive_timeout": limits.HEADER_TIMEOUT_S}
