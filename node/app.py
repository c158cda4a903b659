"""``make_app(node)``: the node's aiohttp application (/p2p, /api, /metrics, /).

The application holds the node's services under typed keys
(``node/services.py``) and starts them with ``cleanup_ctx``: the chain
(datadir lock, chain state, key, cookie), then the peers, then the miner
and trainer; it stops them in reverse order.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from node import limits
from node.api import dashboard
from node.api import routes as api_routes
from node.metrics import NodeMetrics
from node.p2p import routes as p2p_routes
from node.services import CHAIN, EVENTS, METRICS, PEERS

if TYPE_CHECKING:
    from node.service import Node

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(node: Node) -> web.Application:
    # Bodies are read by node.http.read_body against each route's own cap;
    # client_max_size is the ceiling for anything that reads a body another way.
    app = web.Application(client_max_size=limits.MAX_REQUEST_BODY_BYTES, middlewares=[_timing(node.metrics)])
    app[CHAIN] = node.chain_service
    app[PEERS] = node.peers
    app[METRICS] = node.metrics
    app[EVENTS] = node.events
    app.cleanup_ctx.extend([node.chain_context, node.peer_context, node.role_context])
    p2p_routes.add_routes(app)
    api_routes.add_routes(app, node)
    dashboard.add_routes(app, node)
    return app


def _timing(metrics: NodeMetrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            metrics.request_seconds.labels(route=name).observe(time.perf_counter() - started)

    return middleware
