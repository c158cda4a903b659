"""``make_app(node)``: the node's aiohttp application (/p2p, /api, /metrics, /)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node import limits
from node.api import dashboard
from node.api import routes as api_routes
from node.p2p import routes as p2p_routes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(node: Any) -> web.Application:
    # Bodies are read by node.http.read_body against each route's own cap;
    # client_max_size is the ceiling for anything that reads a body another way.
    app = web.Application(client_max_size=limits.MAX_REQUEST_BODY_BYTES, middlewares=[_timing(node)])
    p2p_routes.add_routes(app, node)
    api_routes.add_routes(app, node)
    dashboard.add_routes(app, node)
    return app


def _timing(node: Any) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            node.metrics.request_seconds.labels(route=name).observe(time.perf_counter() - started)

    return middleware
