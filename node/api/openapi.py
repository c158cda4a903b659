"""``openapi_document(node)``: an OpenAPI 3.1 description of /api/ and /metrics.

Served at ``GET /api/openapi.json`` so a wallet, explorer or client generator
can read the shapes the node answers with instead of reverse-engineering
them. The document is built from plain dicts (no runtime dependency) and is
specific to the node that serves it: its URL is the server, and the predict
route's row width is the width of the chain's task. tests/node/test_openapi.py
checks that every registered /api/ route is described here and that live
answers validate against these schemas, so the document cannot silently
fall behind node/api/routes.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from aiohttp import web

from node import limits
from node.http import json_reply

OPENAPI_VERSION = "3.1.0"
TITLE = "gradchain node API"
PACKAGE = "gradchain"
FALLBACK_VERSION = "0.1.0"  # the version in setup.cfg, for a tree run without being installed
SECURITY_SCHEME = "cookieToken"

# Limits the handlers in node/api/routes.py enforce (kept equal by hand; the test exercises them).
BLOCKS_COUNT_DEFAULT, BLOCKS_COUNT_MAX = 20, 100
EVENTS_COUNT_DEFAULT, EVENTS_COUNT_MAX = 50, 200
MINE_BLOCKS_MAX = 1000
CONTROL_BODY_MAX_BYTES = 4096  # the cap of POST /api/mine and POST /api/peers bodies

HASH_PATTERN = "^[0-9a-f]{64}$"  # consensus.header.hash_hex: 32 bytes, lowercase, display order
HASH_INPUT_PATTERN = "^[0-9a-fA-F]{64}$"  # what consensus.header.hex_to_hash accepts

JSON = "application/json"
Schema = dict[str, Any]


# -- schema helpers ---------------------------------------------------------------------------------
def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Schema], required: list[str] | None = None, *,
         extra: bool | Schema = True, description: str | None = None) -> Schema:
    """An object schema; ``required`` defaults to every property listed."""
    out: Schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": extra,
    }
    if description:
        out["description"] = description
    return out


def _nullable(kind: str, **more: Any) -> Schema:
    return {"type": [kind, "null"], **more}


INT: Schema = {"type": "integer"}
NAT: Schema = {"type": "integer", "minimum": 0}
NUM: Schema = {"type": "number"}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
HASH: Schema = {"type": "string", "pattern": HASH_PATTERN, "description": "64 lowercase hex digits"}
ADDRESS: Schema = {"type": "string", "description": "a bech32 address (gc1q…)"}
# What a request may name (the checksum is checked by the handler: 400 when it fails).
ADDRESS_INPUT: Schema = {**ADDRESS, "pattern": "^(gc1[02-9ac-hj-np-z]+|GC1[02-9AC-HJ-NP-Z]+)$"}
URL: Schema = {"type": "string", "description": "a peer's listen URL, http://host:port",
               "pattern": (r"^http://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
                           r"|\[[0-9A-Fa-f:.]+\]):[1-9][0-9]{0,4}$"),
               "maxLength": limits.MAX_URL_CHARS}
FLOAT32_MAX = 3.4028234663852886e38  # predict runs in float32: a larger input would become infinite


def _schemas(input_dim: int, max_rows: int) -> dict[str, Schema]:
    """Every named schema of the document's ``components``."""
    payout = _obj({"address": ADDRESS, "amount": NAT})
    tx = _obj(
        {
            "txid": HASH, "size": NAT,
            "type": {"type": "string", "enum": ["coinbase", "transfer", "bond", "unbond", "commit", "update", "task"]},
            "height": NAT, "payouts": {"type": "array", "items": payout},
            "from": ADDRESS, "to": ADDRESS, "amount": NAT, "fee": NAT, "nonce": NAT,
            "round": {**NAT, "description": "commit, update: the round the update was committed in"},
            "base_hash": HASH, "updates": {**NAT, "description": "commit: digests committed to"},
            "encoding": STR, "values": NAT,
            "accepted": _nullable("boolean", description="the rule's verdict; null when it did not run"),
            "outcome": {"type": "string", "enum": ["accepted", "rejected", "not applied"]},
            "reason": {"type": "string", "description": "why the rule counted the update or not, in words"},
            "task": {"description": "the task a task transaction announces; the task id of a bond, commit or update"},
        },
        ["txid", "size", "type"],
        description="A transaction; which fields appear depends on ``type`` (outcome only in a connected block).",
    )
    block = _obj({
        "height": NAT, "hash": HASH, "prev": HASH, "time": NAT,
        "bits": {"type": "string", "pattern": "^0x[0-9a-f]{8}$", "description": "compact target"},
        "nonce": NAT, "version": NAT, "state_root": HASH, "main_chain": BOOL,
        "vote": {"type": ["object", "null"], "description": "the block's vote in its round (null for genesis)",
                 "properties": {
                     "round": NAT, "position": NAT,
                     "status": {"type": "string", "enum": ["open", "counted", "rejected", "zero", "gated"],
                                "description": "what the round made of the vote (open: the round runs)"}}},
        "txs": {"type": "array", "items": _ref("Tx")},
    })
    figures = {"type": "object", "additionalProperties": NUM,
               "description": "test-split figures: accuracy and loss (classify), mse, mae, … (regress)"}
    return {
        "Error": _obj({"error": STR}, extra=False),
        "Hash": HASH,
        "Status": _obj({
            "chain_id": NAT, "genesis": {**HASH, "description": "the genesis hash every signature binds"},
            "network": STR, "task": STR,
            "task_id": {**HASH, "description": "the genesis task's id, which bonds, commitments and updates name"},
            "head": {"type": "string", "enum": ["classify", "regress"], "description": "the task's model head"},
            "rule": {**STR, "description": "the task's aggregation rule"},
            "f": {**NAT, "description": "the Byzantine bound the rule runs with"},
            "height": NAT, "tip": HASH, "state_root": HASH,
            "round": {**NAT, "description": "the round of the next block"},
            "round_blocks": {**NAT, "description": "blocks per round (the model moves at a round's last block)"},
            "model_version": NAT, "peers": NAT,
            "known_peers": {**NAT, "description": "addresses in the address book"},
            "banned_peers": {**NAT, "description": "bans in force"},
            "mining": BOOL, "hashrate": {"type": "number", "minimum": 0},
            "mempool": NAT, "syncing": BOOL, "url": STR, "training": BOOL, "uptime_s": {"type": "number"},
        }, description="The node's status snapshot (the dashboard's header and cards show the same one)."),
        "Tx": tx,
        "TxLookup": {"allOf": [_ref("Tx"), _obj(
            {"status": {"type": "string", "enum": ["mempool", "confirmed"]}, "block": HASH, "height": NAT},
            ["status"])]},
        "TxAccepted": _obj({"txid": HASH}),
        "Block": block,
        "Blocks": {"type": "array", "items": _ref("Block"), "maxItems": BLOCKS_COUNT_MAX,
                   "description": "newest first"},
        "Account": _obj({"address": ADDRESS, "balance": NAT, "nonce": NAT,
                         "next_nonce": {**NAT, "description": "nonce plus this sender's pooled spends"},
                         "height": NAT,
                         "bond": {"type": ["object", "null"], "description": "the locked bond, if any",
                                  "properties": {"amount": NAT, "since": NAT, "mature_at": NAT}},
                         "unbonding": {"type": ["object", "null"], "description": "coins on their way back",
                                       "properties": {"amount": NAT, "release": NAT}},
                         "task_id": {**HASH, "description": "the task the bond and commitments are of"},
                         "round": {**NAT, "description": "that task's round of the next block"},
                         "commitments": {"type": "array", "description": "open commitments (last two rounds)",
                                         "items": _obj({"round": NAT, "updates": NAT, "revealed": NAT,
                                                        "unrevealed": {"type": "array", "items": NAT,
                                                                       "description": "indices not revealed yet"}})}}),
        "Peer": _obj({"url": STR, "height": NAT, "tip": HASH, "user_agent": STR,
                      "direction": {"type": "string", "enum": ["outbound", "inbound"]},
                      "connected_for_s": NUM}),
        "Peers": _obj({
            "peers": {"type": "array", "items": _ref("Peer")},
            "known": {"type": "array", "items": STR},
            "banned": {"type": "object", "additionalProperties": NUM,
                       "description": "peer (host or URL) -> unix time the ban ends"},
        }),
        "PeerAdded": _obj({"connected": BOOL, "url": URL}),
        "Model": _obj({
            "height": NAT, "version": NAT, "state_root": HASH,
            "task": {"type": "object", "description": "the task spec (ml.tasks.TaskSpec.to_dict)"},
            "parameters": NAT, "metrics": figures,
            "history": {"type": "array", "items": {"type": "object", "required": ["height"],
                                                   "properties": {"height": NAT},
                                                   "additionalProperties": NUM}},
        }),
        "ModelSummary": {
            "type": "object", "required": ["height", "label"],
            "properties": {"height": _nullable("integer", minimum=0), "label": STR},
            "additionalProperties": NUM,
            "description": "the tip model's latest figures; height null before the first evaluation",
        },
        "PredictRequest": _obj({"inputs": {
            "type": "array", "minItems": 1, "maxItems": max_rows,
            "items": {"type": "array", "minItems": input_dim, "maxItems": input_dim,
                      "items": {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}},
        }}),
        "Predictions": _obj({
            "predictions": {"type": "array", "items": NUM,
                            "description": "a class id per row (classify) or a value per row (regress)"},
            "height": NAT,
        }),
        "TxSubmit": _obj({"tx": {"type": "string", "pattern": "^([0-9a-fA-F]{2})+$",
                                 "description": "hex of a signed, encoded transaction"}}, extra=False),
        "MineRequest": _obj({"blocks": {"type": "integer", "minimum": 1, "maximum": MINE_BLOCKS_MAX,
                                        "default": 1}}, extra=False),
        "Mined": _obj({"mined": {"type": "array", "items": HASH}, "height": NAT}),
        "AddPeerRequest": _obj({"url": URL}, extra=False),
        "Task": _obj({
            "id": {**HASH, "description": "the txid of the transaction that created the task"},
            "name": STR,
            "status": {"type": "string", "enum": ["training", "closed"],
                       "description": "training: it takes updates; closed: a deployed task's bounty is spent, "
                                      "its target reached or it sat idle (its final model stays served)"},
            "head": {"type": "string", "enum": ["classify", "regress"]}, "model": STR,
            "input_dim": NAT, "output_dim": NAT, "features": {"type": "array", "items": STR},
            "rule": STR, "f": NAT, "height": NAT, "version": NAT,
            "headline": {**STR, "description": "the key of metrics that says how the task is doing"},
            "label": STR, "metrics": figures,
            "deployed": {"type": "boolean", "description": "deployed by a transaction (false: the genesis task)"},
            "bounty_left": NAT, "deployer": STR, "deployed_at": NAT,
            "eval_digest": {"type": "string", "description": "sha256 of the evaluation rows the deploy carried"},
            "eval_rows": NAT, "target_metric": {"type": "string", "enum": ["", "accuracy", "loss"]},
            "target_value": NUM,
        }, required=["id", "name", "status", "head", "model", "input_dim", "output_dim", "features", "rule", "f",
                     "height", "version", "headline", "label", "metrics", "deployed"]),
        "Tasks": _obj({"height": NAT, "tasks": {"type": "array", "items": _ref("Task")}}),
        "TaskDetail": {"allOf": [_ref("Task"), _obj({
            "spec": {"type": "object", "description": "the task spec (ml.tasks.TaskSpec.to_dict)"},
            "history": {"type": "array", "items": {"type": "object", "required": ["height"],
                                                   "properties": {"height": NAT}, "additionalProperties": NUM}},
        })]},
        "Event": _obj(
            {"time": NUM, "kind": STR, "message": STR, "height": _nullable("integer", minimum=0),
             "hash": HASH, "reason": {"type": "string", "description": "the reject code of a rejected block"},
             "source": {"type": "string", "description": "the peer URL that sent it, or local"}},
            ["time", "kind", "message", "height"],
        ),
        "Events": {"type": "array", "items": _ref("Event"), "maxItems": EVENTS_COUNT_MAX,
                   "description": "newest first"},
    }


# -- operation helpers ------------------------------------------------------------------------------
ERROR_REASONS = {
    400: "the request is malformed (the body says how)",
    401: "no or wrong bearer token",
    403: "not from loopback",
    404: "no such object",
    409: "refused by node policy",
    413: "body over the route's size limit",
    422: "well-formed but invalid",
}
# read_body and require_local_token raise aiohttp's own errors, whose body is plain text.
PLAIN_TEXT_ERRORS = frozenset({401, 403, 413})


def _json_response(description: str, schema_name: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": _ref(schema_name)}}}


def _errors(*codes: int) -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    for code in codes:
        if code in PLAIN_TEXT_ERRORS:
            out[str(code)] = {"description": ERROR_REASONS[code],
                              "content": {"text/plain": {"schema": STR}}}
        else:
            out[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    return out


def _op(op_id: str, summary: str, ok: Schema, *, status: int = 200, errors: tuple[int, ...] = (),
        params: list[Schema] | None = None, body: str | None = None, body_required: bool = True,
        control: bool = False, tag: str = "chain") -> Schema:
    op: Schema = {"operationId": op_id, "summary": summary, "tags": [tag],
                  "responses": {str(status): ok, **_errors(*errors)}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {JSON: {"schema": _ref(body)}}}
    if control:
        op["security"] = [{SECURITY_SCHEME: []}]
        op["description"] = "Control route: answers only on loopback and only with the DATADIR/.cookie token."
    return op


def _path_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


TASK_PATH: Schema = {"name": "task_id", "in": "path", "required": True, "schema": STR,
                     "description": "a task's id (the txid that created it, 64 hex digits; GET /api/tasks)"}
TASK_QUERY: Schema = {"name": "task", "in": "query", "required": False,
                      "schema": {"type": "string", "pattern": HASH_INPUT_PATTERN},
                      "description": "a task id (default: the chain's first task); 404 for a task not on the chain"}
HEIGHT_QUERY: Schema = {"name": "height", "in": "query", "required": False, "schema": NAT,
                        "description": "a main-chain height (default: the tip); 404 beyond the tip"}


def _paths() -> dict[str, Schema]:
    """One path item per route node/api/routes.py registers."""
    params_headers = {
        name: {"description": text, "schema": schema} for name, text, schema in (
            ("X-Gradchain-Height", "height of the model", INT),
            ("X-Gradchain-Version", "model version", INT),
            ("X-Gradchain-Dtype", "always float32-le", STR),
            ("X-Gradchain-Shape", "number of float32 values", INT),
        )
    }
    params_reply = {"description": "little-endian float32 values", "headers": params_headers,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    return {
        "/api/status": {"get": _op("getStatus", "The chain tip and this node's state",
                                   _json_response("status", "Status"), tag="node")},
        "/api/blocks": {"get": _op(
            "listBlocks", "The most recent main-chain blocks, newest first",
            _json_response("blocks", "Blocks"), errors=(400,),
            params=[{"name": "count", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": BLOCKS_COUNT_MAX,
                                "default": BLOCKS_COUNT_DEFAULT}}])},
        "/api/blocks/{ident}": {"get": _op(
            "getBlock", "A block by main-chain height or by hash, with each update's verdict",
            _json_response("the block", "Block"), errors=(400, 404),
            params=[_path_param("ident", {"type": "string", "pattern": f"^([0-9]+|{HASH_INPUT_PATTERN[1:-1]})$"},
                                "a height or a 64-digit block hash")])},
        "/api/tx": {"post": _op(
            "submitTx", "Submit a signed transaction (validated like one from a peer)",
            _json_response("accepted into the mempool", "TxAccepted"), status=202,
            errors=(400, 409, 413, 422), body="TxSubmit", tag="tx")},
        "/api/tx/{txid}": {"get": _op(
            "getTx", "A transaction from the mempool or the main chain", _json_response("the tx", "TxLookup"),
            errors=(400, 404), params=[_path_param("txid", {"type": "string", "pattern": HASH_INPUT_PATTERN},
                                                   "64 hex digits")], tag="tx")},
        "/api/peers": {
            "get": _op("getPeers", "Connected peers, known addresses and bans", _json_response("peers", "Peers"),
                       tag="node"),
            "post": _op("addPeer", "Dial a peer and keep it as a seed", _json_response("dialled", "PeerAdded"),
                        errors=(400, 401, 403, 413), body="AddPeerRequest", control=True, tag="control"),
        },
        "/api/accounts/{address}": {"get": _op(
            "getAccount", "An account's balance and nonces at the tip", _json_response("account", "Account"),
            errors=(400, 404), params=[_path_param("address", ADDRESS_INPUT, "a gradchain address"), TASK_QUERY],
            tag="wallet")},
        "/api/model": {"get": _op(
            "getModel", "The model at a height: version, task, test-split metrics, history",
            _json_response("model", "Model"), errors=(400, 404), params=[HEIGHT_QUERY], tag="model")},
        "/api/model/params": {"get": _op(
            "getModelParams", "The raw parameters of the model at a height", params_reply,
            errors=(400, 404), params=[HEIGHT_QUERY], tag="model")},
        "/api/model/summary": {"get": _op(
            "getModelSummary", "The tip model's latest figures (cheap)",
            _json_response("summary", "ModelSummary"), tag="model")},
        "/api/predict": {"post": _op(
            "predict", "Run the model at a height on rows of inputs",
            _json_response("one prediction per row", "Predictions"), errors=(400, 404, 413, 422),
            params=[HEIGHT_QUERY], body="PredictRequest", tag="model")},
        "/api/tasks": {"get": _op(
            "listTasks", "The chain's training tasks, each with its id, name, status and headline figure",
            _json_response("tasks", "Tasks"), errors=(400, 404), params=[HEIGHT_QUERY], tag="tasks")},
        "/api/tasks/{task_id}": {"get": _op(
            "getTask", "One task: its spec, status and the figures of its model on its evaluation set",
            _json_response("the task", "TaskDetail"), errors=(400, 404), params=[HEIGHT_QUERY, TASK_PATH],
            tag="tasks")},
        "/api/tasks/{task_id}/params": {"get": _op(
            "getTaskParams", "The raw parameters of one task's model at a height", params_reply,
            errors=(400, 404), params=[HEIGHT_QUERY, TASK_PATH], tag="tasks")},
        "/api/tasks/{task_id}/predict": {"post": _op(
            "predictTask", "Run one task's model at a height on rows of inputs",
            _json_response("one prediction per row", "Predictions"), errors=(400, 404, 413, 422),
            params=[HEIGHT_QUERY, TASK_PATH], body="PredictRequest", tag="tasks")},
        "/api/mine": {"post": _op(
            "mine", "Mine blocks now (regtest and tests)", _json_response("mined", "Mined"),
            errors=(400, 401, 403, 409, 413), body="MineRequest", body_required=False, control=True,
            tag="control")},
        "/api/events": {"get": _op(
            "getEvents", "Recent node events, newest first", _json_response("events", "Events"), errors=(400,),
            params=[{"name": "count", "in": "query", "required": False,
                     "schema": {"type": "integer", "default": EVENTS_COUNT_DEFAULT},
                     "description": f"clamped to 1..{EVENTS_COUNT_MAX}"}], tag="node")},
        "/api/openapi.json": {"get": _op(
            "getOpenApi", "This document",
            {"description": "an OpenAPI 3.1 document", "content": {JSON: {"schema": {"type": "object"}}}},
            tag="node")},
        "/metrics": {"get": _op(
            "getMetrics", "Prometheus metrics",
            {"description": "Prometheus text exposition format", "content": {"text/plain": {"schema": STR}}},
            tag="node")},
    }


def package_version() -> str:
    """The installed gradchain version, or setup.cfg's when run from an uninstalled tree."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def openapi_document(node: Any) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``node``'s /api/ routes and /metrics.

    Parameters
    ----------
    node
        A started ``node.service.Node``: its URL becomes the server and its
        chain's task fixes the width of a predict row.
    """
    from node.api.predict_input import MAX_PREDICT_ROWS

    json_errors = {code: reason for code, reason in ERROR_REASONS.items() if code not in PLAIN_TEXT_ERRORS}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": package_version(),
            "description": ("Read routes are public. Errors answer {\"error\": \"...\"} (JSON), except 401, 403 "
                            "and 413, which answer plain text. Bodies of POST /api/tx and /api/predict are capped "
                            f"at {limits.MAX_API_BODY_BYTES} bytes, control bodies at {CONTROL_BODY_MAX_BYTES}."),
        },
        "servers": [{"url": node.url}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(int(node.chain.task.input_dim), MAX_PREDICT_ROWS),
            "responses": {f"E{code}": _json_response(reason, "Error") for code, reason in json_errors.items()},
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer",
                "description": "the token in DATADIR/.cookie (control routes also require loopback)",
            }},
        },
    }


def openapi_handler(node: Any) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /api/openapi.json`` handler: the document, built per request.

    Built per request rather than once because the node learns its URL (the
    document's server) only after the routes are registered.
    """

    async def serve(request: web.Request) -> web.Response:
        return json_reply(openapi_document(node))

    return serve
