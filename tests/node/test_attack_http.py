"""Attacks on the HTTP surface: bodies that cost CPU, connections that never finish.

Each scenario runs a live node on loopback (regtest, in-process), replays
the attack through real sockets, and checks that the node refuses it
cheaply, keeps answering its API and keeps syncing from an honest peer.
Latencies are printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

from node import limits
from node.service import Node
from tests.node.harness import Cluster, connect, get_json, http, mine, scenario, wait_same_tip

PREDICT_FLOOD = 4  # concurrent maximal predict requests (the review's figure)
FLAT_NUMBERS = 2_000_000  # a 4 MiB flat list: no rows at all


async def still_serving(node: Node, peer: Node) -> None:
    """The node answers /api/status and follows a block its honest peer mines."""
    async with http() as session:
        status, _ = await get_json(session, f"{node.url}/api/status")
        assert status == 200
    await mine(peer, 1)
    await wait_same_tip([node, peer])


async def poll_status(session: Any, node: Node, latencies: list[float], stop: asyncio.Event) -> None:
    """Ask ``node`` for /api/status until ``stop``, noting how long each answer took."""
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = await get_json(session, f"{node.url}/api/status")
        assert status == 200
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)


@scenario
async def test_predict_bodies_are_shape_checked_before_and_parsed_off_the_loop(cluster: Cluster) -> None:
    """Multi-MiB /api/predict bodies: wrong shapes refused unparsed, valid ones parsed in a worker.

    ::

        client --(4 MiB flat list; rows one number too wide)--> a: 422, the JSON parser never runs
        client --(4 x ~8 MiB of valid rows, at once)--------> a: 200 each, parsed off the loop,
                                                                 /api/status answered meanwhile
    """
    from node.api import predict_input

    a, b = await cluster.start_many(2)
    await connect(a, b)
    dim = a.chain.task.input_dim
    loop_thread = threading.current_thread()
    parsed_on: list[bool] = []
    real_parse = predict_input.parse_inputs

    def spy(body: bytes, input_dim: int) -> object:
        parsed_on.append(threading.current_thread() is loop_thread)
        return real_parse(body, input_dim)

    predict_input.parse_inputs = spy  # type: ignore[assignment]
    try:
        async with http() as session:
            flat = b'{"inputs": [' + b"0," * (FLAT_NUMBERS - 1) + b"0]}"
            wide_row = b"[" + b"0.5," * dim + b"0.5]"
            too_wide = b'{"inputs": [' + b",".join([wide_row] * 5_000) + b"]}"
            for body in (flat, too_wide):
                async with session.post(f"{a.url}/api/predict", data=body) as resp:
                    assert resp.status == 422, await resp.text()
            assert parsed_on == [], "a body of the wrong shape must be refused before parsing"

            row = b"[" + b",".join([b"0.123456"] * dim) + b"]"
            rows = min(predict_input.MAX_PREDICT_ROWS, 8 * 1024 * 1024 // (len(row) + 1) - 10)
            valid = b'{"inputs": [' + b",".join([row] * rows) + b"]}"
            latencies: list[float] = []

            async def predict() -> int:
                async with session.post(f"{a.url}/api/predict", data=valid) as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                    return len(body["predictions"])

            stop = asyncio.Event()
            poller = asyncio.create_task(poll_status(session, a, latencies, stop))
            counts = await asyncio.gather(*(predict() for _ in range(PREDICT_FLOOD)))
            stop.set()
            await poller
        assert counts == [rows] * PREDICT_FLOOD
        assert parsed_on == [False] * PREDICT_FLOOD, "every parse ran on a worker thread"
        assert latencies, "/api/status was answered while the predicts ran"
        print(f"\n/api/status during {PREDICT_FLOOD} predicts of {len(valid) / 2**20:.1f} MiB: "
              f"worst {max(latencies) * 1000:.0f} ms over {len(latencies)} requests")
    finally:
        predict_input.parse_inputs = real_parse  # type: ignore[assignment]
    await still_serving(a, b)



TX_FLOOD = 4  # concurrent maximal /api/tx bodies


@scenario
async def test_tx_bodies_that_are_not_a_small_object_are_refused_unparsed(cluster: Cluster, monkeypatch: Any) -> None:
    """``POST /api/tx`` takes ``{"tx": "<hex>"}``: a body of many JSON values is refused before it is parsed.

    Within the body cap (16 MiB, room for one largest tx in hex) a list of
    eight million zeros took ``json.loads`` about half a second each, on the
    event loop and holding the GIL: four at once kept ``/api/status`` waiting
    1.7 s. Now such a body (a long list, a deep nesting, many keys) is a 400
    without parsing; the shape every client sends is parsed as before.
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    parsed: list[int] = []
    real_loads = json.loads

    def spy(text: str | bytes, *args: Any, **kwargs: Any) -> Any:
        parsed.append(len(text))
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", spy)
    room = limits.MAX_API_BODY_BYTES - 64
    flat = b'{"tx": "00", "pad": [' + b"0," * (room // 2 - 16) + b"0]}"
    deep = b'{"tx": "00", "pad": ' + b"[" * (room // 2 - 16) + b"]" * (room // 2 - 16) + b"}"
    keys = b'{"tx": "00", ' + b",".join(b'"k%d": 0' % i for i in range(room // 16)) + b"}"
    latencies: list[float] = []
    async with http() as session:

        async def post(body: bytes) -> tuple[int, str]:
            async with session.post(f"{a.url}/api/tx", data=body, headers={"Content-Type": "application/json"}) as resp:
                return resp.status, await resp.text()

        stop = asyncio.Event()
        poller = asyncio.create_task(poll_status(session, a, latencies, stop))
        answers = await asyncio.gather(*(post(body) for body in [flat, deep, keys] * TX_FLOOD))
        stop.set()
        await poller
        for status, text in answers:
            assert status == 400 and "few fields" in text, (status, text[:200])
        assert not [n for n in parsed if n > 1024], f"bodies of {parsed} bytes were parsed"
        status, text = await post(b'{"tx": "00"}')
        assert status == 422, text  # a body of the right shape is parsed, and its tx decoded
    assert latencies, "/api/status was answered during the flood"
    print(f"\n/api/status during {TX_FLOOD * 3} junk /api/tx bodies: worst {max(latencies) * 1000:.0f} ms")
    await still_serving(a, b)


SLOW_HOST = "127.0.0.2"  # a loopback address that is not the shared 127.0.0.1: per-host caps apply
SLOW_CONNECTIONS = 40  # more than MAX_CONNECTIONS_PER_HOST
DEADLINE_S = 2.0  # the header and body deadlines, shortened for the test
CLOSE_SLACK_S = 15.0  # how long past a deadline the test waits for the node to hang up


async def _open(node: Node, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.config.port, local_addr=(SLOW_HOST, 0))
    writer.write(head)
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the node sent before hanging up; None if it still holds the connection after ``timeout``."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        return None


@scenario
async def test_slow_and_idle_connections_are_capped_and_cut_off(cluster: Cluster, monkeypatch: Any) -> None:
    """A slowloris host opens 40 connections that never finish a request head, and trickles a body.

    ::

        127.0.0.2 x40 --"GET /api/status HTTP/1.1\\r\\nHost: x\\r\\n" (no end)--> a
                       32 held (the per-host cap), 8 answered 503 at once,
                       every held one closed at the header deadline
        127.0.0.2 --POST /api/tx, Content-Length 1 MB, 10 bytes a second--> a: 408 at the body deadline
        meanwhile a answers /api/status from 127.0.0.1 and syncs a block from b
    """
    monkeypatch.setattr(limits, "HEADER_TIMEOUT_S", DEADLINE_S)
    monkeypatch.setattr(limits, "BODY_TIMEOUT_BASE_S", DEADLINE_S)
    monkeypatch.setattr(limits, "MIN_BODY_BYTES_PER_S", 1024 * 1024)
    a, b = await cluster.start_many(2)
    await connect(a, b)
    head = b"GET /api/status HTTP/1.1\r\nHost: x\r\n"
    slow = [await _open(a, head) for _ in range(SLOW_CONNECTIONS)]
    body_head = (b"POST /api/tx HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000000\r\n\r\n{\"tx\": \"")
    async with http() as session:
        status, _ = await get_json(session, f"{a.url}/api/status")
        assert status == 200, "the shared local host is served during the flood"
    await still_serving(a, b)
    answers = await asyncio.gather(*(_answer(r, DEADLINE_S + CLOSE_SLACK_S) for r, _ in slow))
    assert None not in answers, "every slow connection was closed by the node"
    refused = [x for x in answers if x is not None and x.startswith(b"HTTP/1.1 503")]
    assert len(refused) == SLOW_CONNECTIONS - limits.MAX_CONNECTIONS_PER_HOST
    for _, writer in slow:
        writer.close()
    # A body that crawls: 408 once its deadline passes, the connection closed.
    reader, writer = await _open(a, body_head)

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while not reader.at_eof():
                writer.write(b"00" * 5)
                await writer.drain()
                await asyncio.sleep(1.0)

    dripping = asyncio.create_task(trickle())
    answer = await _answer(reader, DEADLINE_S + CLOSE_SLACK_S)
    dripping.cancel()
    writer.close()
    assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
    assert a.connections.per_host[SLOW_HOST] == 0, "no connection of the slow host is left open"
    await still_serving(a, b)
