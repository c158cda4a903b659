"""The /api/ routes (JSON) and /metrics (Prometheus).

Read routes are public. ``POST /api/tx`` accepts only signed transactions and
validates them like one from a peer. Routes that control the node (mine on
demand, add a peer) answer only on loopback and only with the token from
DATADIR/.cookie.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from aiohttp import web

from consensus.block import Block
from consensus.contracts import task_of
from consensus.errors import BlockRejected
from consensus.header import hash_hex, hex_to_hash
from consensus.rounds import round_of
from consensus.tx import Tx
from ml.evaluate import headline_label
from ml.tasks import TaskSpec
from node import limits
from node.api.openapi import openapi_handler
from node.api.status import take_status
from node.api.summaries import summarise_block, summarise_tx
from node.api.tasks import add_task_routes, answer_predict, params_response
from node.http import json_error, json_http_error, json_reply, read_body, require_local_token
from node.mempool import PolicyRejected
from node.p2p.messages import is_listen_url
from wallet import AddressError, decode_address

# What a "rejected" event adds: the block's hash (when it decoded), the rule it broke, who sent it.
EVENT_FIELDS = ("hash", "reason", "source")


def tx_summary(
    tx: Tx, raw: bytes, accepted: bool | None = None, connected: bool = False, task: TaskSpec | None = None
) -> dict[str, Any]:
    """JSON of a tx (:func:`node.api.summaries.summarise_tx` says which fields and when)."""
    return summarise_tx(tx, raw, accepted, connected, task).to_json()


def block_summary(node: Any, block: Block, height: int) -> dict[str, Any]:
    """JSON of a stored block with each update's verdict and its vote's (on the chain thread: it reads storage)."""
    return summarise_block(node.chain, block, height).to_json()


def find_block(node: Any, ident: str) -> tuple[Block, int] | None:
    """The block at a height or with a hash, with its height; None if this node has no such block.

    Runs on the chain worker (it reads storage). Raises ValueError for an
    ident that is neither a height nor a 64-digit hash, so callers answer 400.
    """
    chain = node.chain
    if ident.isdigit():
        block_hash = chain.hash_at(int(ident))
        if block_hash is None:
            return None
    else:
        block_hash = hex_to_hash(ident)
    entry = chain.index.get(block_hash)
    block = chain.get_block(block_hash) if entry is not None else None
    return None if block is None or entry is None else (block, entry.height)


def find_tx(node: Any, tx_id: bytes) -> dict[str, Any] | None:
    """On the chain thread: a tx in the mempool or in a stored block, as JSON; None if unknown."""
    entry = node.mempool.get(tx_id)
    if entry is not None:
        return {**tx_summary(entry.tx, entry.raw), "status": "mempool"}
    chain = node.chain
    found = chain.storage.find_tx(tx_id)
    if found is None:
        return None
    block_hash, position = found
    b = chain.get_block(block_hash)
    return {**tx_summary(b.txs[position], b.tx_bytes[position]), "status": "confirmed",
            "block": hash_hex(block_hash), "height": chain.index[block_hash].height}


def model_and_root(node: Any, height: int) -> tuple[np.ndarray, int, bytes]:
    """On the chain thread: the model at ``height`` with its version and the block's state root."""
    params, version = node.chain.model_at(height)
    block = node.chain.get_block(node.chain.hash_at(height))
    return params, version, block.state_root


def add_routes(app: web.Application, node: Any) -> None:
    chain_service = node.chain_service  # the loop reads its snapshot; everything else runs on the chain thread

    async def status(request: web.Request) -> web.Response:
        return json_reply(take_status(node).to_json())

    async def block(request: web.Request) -> web.Response:
        ident = request.match_info["ident"]
        try:
            found = await node.run_chain(find_block, node, ident)
        except ValueError:
            return json_error(400, "give a height or a 64-digit block hash")
        if found is None:
            return json_error(404, f"no block {ident}")
        return json_reply(await node.run_chain(block_summary, node, *found))

    async def blocks(request: web.Request) -> web.Response:
        try:
            count = int(request.query.get("count", "20"))
        except ValueError:
            return json_error(400, "count must be an integer")
        if not 1 <= count <= 100:
            return json_error(400, "count must be 1..100")

        def recent() -> list[dict[str, Any]]:
            chain, out = node.chain, []
            for height in range(chain.height, max(-1, chain.height - count), -1):
                b = chain.get_block(chain.main[height])
                out.append(block_summary(node, b, height))
            return out

        return json_reply(await node.run_chain(recent))

    async def tx_get(request: web.Request) -> web.Response:
        try:
            tx_id = hex_to_hash(request.match_info["txid"])
        except ValueError:
            return json_error(400, "txid must be 64 hex digits")
        found = await node.run_chain(find_tx, node, tx_id)
        if found is None:
            return json_error(404, "unknown transaction")
        return json_reply(found)

    async def tx_post(request: web.Request) -> web.Response:
        body = await read_body(request, limits.MAX_API_BODY_BYTES)
        try:
            raw = bytes.fromhex(_json_field(body, "tx", str))
        except ValueError as exc:
            return json_error(400, f"expected {{\"tx\": \"<hex of a signed transaction>\"}}: {exc}")
        try:  # the chain service counts refusals by reason
            tx_id = await node.submit_tx(raw, source=None)
        except BlockRejected as exc:
            return json_error(422, f"{exc.code.value}: {exc.detail}")
        except PolicyRejected as exc:
            return json_error(409, str(exc))
        return json_reply({"txid": hash_hex(tx_id)}, status=202)

    async def peers(request: web.Request) -> web.Response:
        return json_reply({
            "peers": [p.as_dict() for p in node.peers.peers.values()],
            "known": sorted(node.peers.known),
            "banned": node.peers.banned(),
        })

    async def account(request: web.Request) -> web.Response:
        try:
            address = decode_address(request.match_info["address"])
        except AddressError as exc:
            return json_error(400, str(exc))
        wanted = request.query.get("task")
        try:
            task_key = None if wanted is None else hex_to_hash(wanted)
        except ValueError:
            return json_error(400, "task must be a task id, 64 hex digits (GET /api/tasks lists them)")

        def read() -> dict[str, Any] | None:
            chain = node.chain
            state = chain.state
            key = chain.rules.task_id if task_key is None else task_key
            if key not in state.tasks:
                return None
            task, task_state = task_of(chain.rules.task, state.tasks, key, training=False)
            acc = state.account(address)
            stake = task_state.stakes.get(address)
            unbonding = task_state.unbonding.get(address)
            return {
                "address": request.match_info["address"], "balance": acc.balance, "nonce": acc.nonce,
                "next_nonce": node.mempool.next_nonce(address, chain), "height": chain.height,
                "task_id": hash_hex(key), "round": round_of(chain.height + 1, task.round_blocks),
                "bond": None if stake is None else {
                    "amount": stake.amount, "since": stake.since, "mature_at": stake.since + task.bond_maturity},
                "unbonding": None if unbonding is None else {"amount": unbonding.amount, "release": unbonding.release},
                "commitments": [
                    {"round": r, "updates": len(c.hashes), "revealed": sum(c.revealed),
                     "unrevealed": [i for i, done in enumerate(c.revealed) if not done]}
                    for (r, who), c in sorted(task_state.commitments.items()) if who == address
                ],
            }

        found = await node.run_chain(read)
        if found is None:
            return json_error(404, f"no task {wanted} on this chain; GET /api/tasks lists them")
        return json_reply(found)

    def height_param(request: web.Request) -> int:
        raw = request.query.get("height")
        tip_height = int(chain_service.snapshot.height)
        if raw is None:
            return tip_height
        try:
            height = int(raw)
        except ValueError:
            raise json_http_error(web.HTTPBadRequest, "height must be an integer") from None
        if not 0 <= height <= tip_height:
            raise json_http_error(web.HTTPNotFound, f"height {height} is not in 0..{tip_height}")
        return height

    async def model(request: web.Request) -> web.Response:
        height = height_param(request)
        params, version, state_root = await node.run_chain(model_and_root, node, height)
        figures = await asyncio_run(node.evaluator.figures, params)
        return json_reply({
            "height": height, "version": version, "state_root": hash_hex(state_root),
            "task": chain_service.snapshot.task.to_dict(), "parameters": int(params.size), "metrics": figures,
            "history": [{"height": h, **f} for h, f in sorted(node.evaluator.history.items())][-500:],
        })

    async def model_summary(request: web.Request) -> web.Response:
        """The tip model's latest figures, cheap (computed once per tip, off the loop)."""
        history = node.evaluator.history
        if not history:
            return json_reply({"height": None, "label": "…"})
        height = max(history)
        figures = history[height]
        return json_reply({"height": height, **figures, "label": headline_label(chain_service.snapshot.task, figures)})

    async def model_params(request: web.Request) -> web.Response:
        height = height_param(request)
        params, version = await node.run_chain(lambda: node.chain.model_at(height))
        return params_response(params, height, version)

    predict_parses = asyncio.Semaphore(limits.MAX_CONCURRENT_PREDICT_PARSES)

    async def predict_route(request: web.Request) -> web.Response:
        """The chain's first task's predictions (``POST /api/tasks/{id}/predict`` for any task)."""
        return await answer_predict(node, chain_service.snapshot.task, request, height_param(request), predict_parses)

    add_task_routes(app, node, height_param, predict_parses)

    async def mine(request: web.Request) -> web.Response:
        require_local_token(request, node.cookie)
        body = await read_body(request, 4096)
        try:
            count = _json_field(body, "blocks", int) if body else 1
        except ValueError as exc:
            return json_error(400, str(exc))
        if not 1 <= count <= 1000:
            return json_error(400, "blocks must be 1..1000")
        if node.keypair is None:
            # Without a key the template has no address to pay (it used to end in a 500).
            return json_error(409, "this node has no key to pay block rewards to: "
                                   "restart it with --keystore (or --mine / --train for a node key)")
        from node.mining import mine_blocks

        hashes = await mine_blocks(node, count)
        return json_reply({"mined": [hash_hex(h) for h in hashes], "height": chain_service.snapshot.height})

    async def add_peer(request: web.Request) -> web.Response:
        require_local_token(request, node.cookie)
        body = await read_body(request, 4096)
        try:
            url = _json_field(body, "url", str)
        except ValueError as exc:
            return json_error(400, str(exc))
        if not is_listen_url(url):
            return json_error(400, "url must look like http://host:port")
        node.peers.add_seed(url)
        peer = await node.peers.connect(url)
        return json_reply({"connected": peer is not None, "url": url})

    async def events(request: web.Request) -> web.Response:
        try:
            count = max(1, min(int(request.query.get("count", "50")), 200))
        except ValueError:
            return json_error(400, "count must be an integer")
        recent = list(node.events)[-count:]
        return json_reply([{"time": e.time, "kind": e.kind, "message": e.message, "height": e.height,
                            **{k: e.data[k] for k in EVENT_FIELDS if k in e.data}}
                           for e in reversed(recent)])

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=node.metrics.render(), content_type="text/plain", charset="utf-8")

    app.router.add_get("/api/status", status)
    app.router.add_get("/api/blocks", blocks)
    app.router.add_get("/api/blocks/{ident}", block)
    app.router.add_get("/api/tx/{txid}", tx_get)
    app.router.add_post("/api/tx", tx_post)
    app.router.add_get("/api/peers", peers)
    app.router.add_post("/api/peers", add_peer)
    app.router.add_get("/api/accounts/{address}", account)
    app.router.add_get("/api/model", model)
    app.router.add_get("/api/model/params", model_params)
    app.router.add_get("/api/model/summary", model_summary)
    app.router.add_post("/api/predict", predict_route)
    app.router.add_post("/api/mine", mine)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/openapi.json", openapi_handler(node))
    app.router.add_get("/metrics", metrics)


async def asyncio_run(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# Commas, brackets and braces a request object of a few scalar fields may hold ({"tx": "<hex>"} has one brace).
MAX_REQUEST_JSON_TOKENS = 16


def _json_field(body: bytes, name: str, kind: type) -> Any:
    """The one field ``name`` of the JSON object ``body``, of type ``kind``; ValueError says what is wrong.

    Every request object here has a few scalar fields, so a body with more
    than ``MAX_REQUEST_JSON_TOKENS`` structural characters is refused
    before it is parsed: within ``/api/tx``'s 16 MiB cap a list of millions
    of numbers costs ``json.loads`` half a second on the event loop, with the
    GIL held. Counting bytes costs milliseconds; a hex string has none of them.
    """
    tokens = body.count(b",") + body.count(b"[") + body.count(b"{")
    if tokens > MAX_REQUEST_JSON_TOKENS:
        raise ValueError(f"a request is an object of a few fields, not {tokens} JSON values")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON ({exc})") from None
    except RecursionError:  # a body of nothing but "[[[[…" within the size cap
        raise ValueError("body nests too deeply to be a request") from None
    if not isinstance(data, dict) or name not in data:
        raise ValueError(f"missing field {name!r}")
    if len(data) > 1:  # the schema says so (additionalProperties: false): a typo is not silently ignored
        raise ValueError(f"unknown field(s) {sorted(k for k in data if k != name)}; the object has only {name!r}")
    value = data[name]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's integer: 3.0 is one (found by schemathesis)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"field {name!r} must be {kind.__name__}")
    return value
