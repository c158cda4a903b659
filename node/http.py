"""Shared HTTP helpers: bounded body reads, error replies, local-only auth."""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from aiohttp import web

from node import limits

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1"})


def body_deadline_s(size: int) -> float:
    """Seconds a body of ``size`` bytes may take to arrive (a floor, plus a minimum rate)."""
    return limits.BODY_TIMEOUT_BASE_S + size / limits.MIN_BODY_BYTES_PER_S


async def read_body(request: web.Request, cap: int) -> bytes:
    """The request body, refusing (413) anything over ``cap`` bytes, or (408) too slow.

    A declared Content-Length over the cap is refused before a byte is read;
    a chunked body is read only until it passes the cap. The whole body must
    arrive within :func:`body_deadline_s` of its declared length (or of the
    cap, if undeclared): a client trickling bytes is cut off.
    """
    declared = request.content_length
    if declared is not None and declared > cap:
        raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=declared,
                                            text=f"body of {declared} bytes > limit {cap}")
    deadline = body_deadline_s(cap if declared is None else declared)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > cap:
                    raise web.HTTPRequestEntityTooLarge(
                        max_size=cap, actual_size=size, text=f"body > limit {cap} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"body too slow: {size} bytes in {deadline:.0f} s", headers={"Connection": "close"}
        ) from None
    return b"".join(chunks)


def json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def json_http_error(kind: type[web.HTTPError], reason: str) -> web.HTTPError:
    """An aiohttp HTTP exception whose body is ``{"error": reason}`` like every /api/ error."""
    return kind(text=json.dumps({"error": reason}), content_type="application/json")


def json_reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def require_local_token(request: web.Request, token: str) -> None:
    """Control routes: only from this machine, and only with the datadir's cookie."""
    if request.remote not in LOCAL_HOSTS:
        raise web.HTTPForbidden(text="control routes answer only on loopback")
    header = request.headers.get("Authorization", "")
    given = header.removeprefix("Bearer ").strip()
    if not header.startswith("Bearer ") or not hmac.compare_digest(given, token):
        raise web.HTTPUnauthorized(text="send 'Authorization: Bearer <token from DATADIR/.cookie>'")
