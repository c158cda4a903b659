"""GET /api/openapi.json: a valid OpenAPI 3.1 document that keeps up with the routes.

The document is written by hand (node/api/openapi.py), so these tests tie it
to the code: every /api/ route the aiohttp app registers must be described
with its method, nothing described may be missing from the app, and live
answers of a real regtest node must validate against the documented schemas.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from openapi_spec_validator import validate

from node.service import Node
from tests.node.harness import Cluster, get_json, http, mine, scenario

DOCUMENTED_PREFIXES = ("/api/",)
DOCUMENTED_EXACT = frozenset({"/metrics"})
UNDOCUMENTED_METHODS = frozenset({"HEAD"})  # aiohttp adds HEAD to every GET route by itself
# GET routes without path parameters: each is called live and checked against its documented answer.
PLAIN_GETS = ("/api/status", "/api/blocks", "/api/peers", "/api/model", "/api/model/params",
              "/api/model/summary", "/api/events", "/api/openapi.json", "/metrics")


def registered_routes(node: Node) -> set[tuple[str, str]]:
    """(path template, lower-case method) of every documented-prefix route in the node's app."""
    runner = node._runner
    assert runner is not None, "the node is not serving"
    out = set()
    for route in runner.app.router.routes():
        resource = route.resource
        path = resource.canonical if resource is not None else ""
        documented = path.startswith(DOCUMENTED_PREFIXES) or path in DOCUMENTED_EXACT
        if documented and route.method not in UNDOCUMENTED_METHODS:
            out.add((path, route.method.lower()))
    return out


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return {(path, method) for path, item in doc["paths"].items() for method in item if method in methods}


def response_of(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The documented response object, with a components/responses $ref followed."""
    response: dict[str, Any] = doc["paths"][path][method]["responses"][str(status)]
    ref = response.get("$ref")
    if ref is not None:
        response = doc["components"]["responses"][ref.rsplit("/", 1)[-1]]
    return response


def check_json(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """Validate ``body`` against the documented JSON schema; its $refs resolve inside ``doc``."""
    schema = response_of(doc, path, method, status)["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": doc["components"]},
                        cls=jsonschema.Draft202012Validator)


async def fetch_document(node: Node) -> dict[str, Any]:
    async with http() as session:
        status, doc = await get_json(session, f"{node.url}/api/openapi.json")
    assert status == 200 and isinstance(doc, dict)
    return doc


@scenario
async def test_document_is_valid_openapi_and_covers_every_route(cluster: Cluster) -> None:
    (a,) = await cluster.start_many(1)
    doc = await fetch_document(a)
    validate(doc)  # raises on anything that is not OpenAPI 3.1
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] == "gradchain node API"
    assert doc["servers"] == [{"url": a.url}]
    registered = registered_routes(a)
    assert ("/api/openapi.json", "get") in registered
    missing = registered - documented_routes(doc)
    assert not missing, f"routes registered but not in the OpenAPI document: {sorted(missing)}"
    stale = documented_routes(doc) - registered
    assert not stale, f"routes in the OpenAPI document but not registered: {sorted(stale)}"
    for path, method in (("/api/mine", "post"), ("/api/peers", "post")):
        assert doc["paths"][path][method]["security"] == [{"cookieToken": []}], path
    assert doc["components"]["securitySchemes"]["cookieToken"]["scheme"] == "bearer"
    width = doc["components"]["schemas"]["PredictRequest"]["properties"]["inputs"]["items"]
    assert width["minItems"] == width["maxItems"] == a.chain.task.input_dim


@scenario
async def test_live_answers_validate_against_the_document(cluster: Cluster) -> None:
    (a,) = await cluster.start_many(1)
    await mine(a, 1)
    doc = await fetch_document(a)
    async with http() as session:
        status, body = await get_json(session, f"{a.url}/api/status")
        assert status == 200
        check_json(doc, "/api/status", "get", 200, body)

        status, body = await get_json(session, f"{a.url}/api/blocks/1")
        assert status == 200 and body["height"] == 1
        check_json(doc, "/api/blocks/{ident}", "get", 200, body)

        status, body = await get_json(session, f"{a.url}/api/blocks/999")
        assert status == 404
        check_json(doc, "/api/blocks/{ident}", "get", 404, body)

        rows = [[0.0] * a.chain.task.input_dim] * 3
        async with session.post(f"{a.url}/api/predict", json={"inputs": rows}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert len(body["predictions"]) == len(rows)
        check_json(doc, "/api/predict", "post", 200, body)

        bad = [[0.0] * (a.chain.task.input_dim + 1)]
        async with session.post(f"{a.url}/api/predict", json={"inputs": bad}) as resp:
            assert resp.status == 422
            check_json(doc, "/api/predict", "post", 422, await resp.json())

        for path in PLAIN_GETS:
            async with session.get(f"{a.url}{path}") as resp:
                assert resp.status == 200, path
                (documented_type,) = response_of(doc, path, "get", 200)["content"]
                assert resp.content_type == documented_type, path
                if documented_type == "application/json":
                    check_json(doc, path, "get", 200, await resp.json())
