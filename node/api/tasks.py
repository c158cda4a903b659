"""The chain's training tasks by id: ``GET /api/tasks``, ``GET /api/tasks/{id}``,
``GET /api/tasks/{id}/params``, ``POST /api/tasks/{id}/predict``.

A task's id is the txid of the transaction that created it (shown like every
hash, reversed hex): the same on every node and on every branch that holds
that transaction, unlike a position in a list. The chain's first task is the
one its genesis block carries (``TaskTx``); tasks deployed later by a
transaction get that transaction's id.

Each task is reported with its ``name`` (from the spec), its ``status``
(``training`` while it takes updates, ``closed`` once a deployed task's
bounty is spent or its target reached), its contract's terms (bounty left,
deployer, evaluation set) and the figures of its model on its evaluation
set (policy arithmetic, ``ml.evaluate``: the node's ``--eval`` file or the
built-in test split for the genesis task, the rows its deploy carried for a
deployed one); ``/params`` serves the task's model committed at any height
as raw float32 (what a participant trains on) and ``/predict`` answers with
it, exactly as ``GET /api/model/params`` and ``POST /api/predict`` do for
the first task.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from consensus.contracts import task_specs
from consensus.header import hash_hex
from consensus.state import TRAINING, Contract
from ml.datasets import Dataset
from ml.evaluate import evaluate, headline, headline_label
from ml.models import predict
from ml.tasks import TaskSpec
from node import limits
from node.api import predict_input
from node.http import json_error, json_http_error, json_reply, read_body
from wallet import encode_address

HISTORY_POINTS = 500  # heights of figures a task's page returns (the newest)
CURVE_POINTS = 60  # heights a deployed task's curve is scored at, spread from its deploy to the tip


@dataclass(frozen=True)
class TaskEntry:
    """One task of the chain: its id (hex and bytes), spec, status and, if deployed, its contract."""

    id: str
    key: bytes
    spec: TaskSpec
    status: str
    contract: Contract | None = None  # None: the genesis task

    def contract_json(self) -> dict[str, Any]:
        """The contract's terms for the API (empty for the genesis task, whose rewards are new coins)."""
        c = self.contract
        if c is None:
            return {"deployed": False}
        return {
            "deployed": True, "bounty_left": c.bounty, "deployer": encode_address(c.deployer),
            "deployed_at": c.deployed_at, "eval_digest": c.eval_digest.hex(),
            "eval_rows": 0 if c.evalset is None else c.evalset.rows,
            "target_metric": c.spec.target_metric, "target_value": c.spec.target_value,
        }


def read_entries(chain: Any) -> list[TaskEntry]:
    """On the chain thread: every task of the tip's state, the genesis task first."""
    specs = task_specs(chain.rules.task, chain.state.tasks)
    return [
        TaskEntry(hash_hex(key), key, specs[key], TRAINING if t.contract is None else t.contract.status, t.contract)
        for key, t in chain.state.tasks.items()
    ]


class TaskRegistry:
    """The tasks this node's chain holds, read from the tip's state for the API and the dashboard."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def entries(self) -> list[TaskEntry]:
        return list(await self.node.run_chain(read_entries, self.node.chain))

    async def find(self, task_id: str) -> TaskEntry | None:
        wanted = task_id.lower()
        return next((e for e in await self.entries() if e.id == wanted), None)

    async def figures_at(self, entry: TaskEntry, height: int) -> tuple[np.ndarray, int, dict[str, float]]:
        """The task's model at ``height`` and its figures on the task's evaluation rows.

        Raises ValueError if the task was not deployed yet at ``height``.
        """
        node = self.node
        params, version = await node.run_chain(node.chain.model_at, height, entry.key)
        loop = asyncio.get_running_loop()
        if entry.contract is None:
            figures = await loop.run_in_executor(None, node.evaluator.figures, params)
        else:
            figures = await loop.run_in_executor(None, contract_figures, entry, params)
        return params, version, figures

    async def history(self, entry: TaskEntry, height: int) -> list[dict[str, float]]:
        """The task's figures over heights: the evaluator's record for the genesis task, for a
        deployed one :data:`CURVE_POINTS` heights from its deploy to ``height``."""
        if entry.contract is None:
            history = sorted(self.node.evaluator.history.items())[-HISTORY_POINTS:]
            return [{"height": h, **f} for h, f in history if h <= height]
        start = entry.contract.deployed_at
        step = max(1, (height - start) // CURVE_POINTS)
        points = []
        for h in [*range(start, height, step), height]:
            _, version, figures = await self.figures_at(entry, h)
            points.append({"height": h, "version": version, **figures})
        return points


def contract_figures(entry: TaskEntry, params: np.ndarray) -> dict[str, float]:
    """A deployed task's model on the evaluation rows its deploy carried (policy arithmetic)."""
    assert entry.contract is not None and entry.contract.evalset is not None
    rows = entry.contract.evalset
    y = rows.y.astype(np.int64) if entry.spec.head == "classify" else rows.y.astype(np.float32)
    dataset = Dataset(entry.spec.name, rows.X[:0], y[:0], rows.X, y)
    return evaluate(entry.spec, params, dataset)


def task_json(entry: TaskEntry, height: int, version: int, figures: dict[str, float]) -> dict[str, Any]:
    """A task in a listing: id, name, status and the headline of its model's figures."""
    spec = entry.spec
    return {
        "id": entry.id, "name": spec.name, "status": entry.status, "head": spec.head, "model": spec.model,
        "input_dim": spec.input_dim, "output_dim": spec.output_dim, "features": list(spec.features),
        "rule": spec.rule, "f": spec.f, "height": height, "version": version,
        "headline": headline(spec), "label": headline_label(spec, figures), "metrics": figures,
        **entry.contract_json(),
    }


_REGISTRIES: weakref.WeakKeyDictionary[Any, TaskRegistry] = weakref.WeakKeyDictionary()


def task_registry(node: Any) -> TaskRegistry:
    """The one registry of ``node``'s tasks, shared by the API and the dashboard."""
    registry = _REGISTRIES.get(node)
    if registry is None:
        registry = _REGISTRIES[node] = TaskRegistry(node)
    return registry


HeightParam = Callable[[web.Request], int]


def add_task_routes(app: web.Application, node: Any, height_param: HeightParam,
                    predict_parses: asyncio.Semaphore) -> None:
    """Register the three task routes; ``height_param`` reads ``?height=`` as the other routes do."""
    registry = task_registry(node)

    async def entry_or_404(request: web.Request) -> TaskEntry:
        wanted = request.match_info["task_id"]
        entry = await registry.find(wanted)
        if entry is None:
            raise json_http_error(web.HTTPNotFound, f"no task {wanted[:80]} on this chain; GET /api/tasks lists them")
        return entry

    async def figures_or_404(entry: TaskEntry, height: int) -> tuple[np.ndarray, int, dict[str, float]]:
        try:
            return await registry.figures_at(entry, height)
        except ValueError as exc:
            raise json_http_error(web.HTTPNotFound, f"task {entry.id[:16]}…: {exc}") from None

    async def list_tasks(request: web.Request) -> web.Response:
        height = height_param(request)
        listed = []
        for entry in await registry.entries():
            if entry.contract is not None and entry.contract.deployed_at > height:
                continue  # not deployed yet at that height
            _, version, figures = await registry.figures_at(entry, height)
            listed.append(task_json(entry, height, version, figures))
        return json_reply({"height": height, "tasks": listed})

    async def show_task(request: web.Request) -> web.Response:
        entry = await entry_or_404(request)
        height = height_param(request)
        _, version, figures = await figures_or_404(entry, height)
        return json_reply({**task_json(entry, height, version, figures), "spec": entry.spec.to_dict(),
                           "history": await registry.history(entry, height)})

    async def task_params(request: web.Request) -> web.Response:
        entry = await entry_or_404(request)
        height = height_param(request)
        try:
            params, version = await node.run_chain(node.chain.model_at, height, entry.key)
        except ValueError as exc:
            raise json_http_error(web.HTTPNotFound, f"task {entry.id[:16]}…: {exc}") from None
        return params_response(params, height, version)

    async def predict_task(request: web.Request) -> web.Response:
        entry = await entry_or_404(request)
        return await answer_predict(node, entry.spec, request, height_param(request), predict_parses, entry.key)

    app.router.add_get("/api/tasks", list_tasks)
    app.router.add_get("/api/tasks/{task_id}", show_task)
    app.router.add_get("/api/tasks/{task_id}/params", task_params)
    app.router.add_post("/api/tasks/{task_id}/predict", predict_task)


def params_response(params: np.ndarray, height: int, version: int) -> web.Response:
    """A model's raw parameters as little-endian float32 bytes, its height and version in headers."""
    return web.Response(
        body=np.ascontiguousarray(params, dtype="<f4").tobytes(), content_type="application/octet-stream",
        headers={"X-Gradchain-Height": str(height), "X-Gradchain-Version": str(version),
                 "X-Gradchain-Dtype": "float32-le", "X-Gradchain-Shape": str(params.size)},
    )


async def answer_predict(node: Any, task: TaskSpec, request: web.Request, height: int,
                         parses: asyncio.Semaphore, task_id: bytes | None = None) -> web.Response:
    """``{"inputs": [[...], ...]}`` -> ``{"predictions": [...], "height": H}`` with the model at ``height``.

    Cheap checks first, the parse off the loop (see ``node.api.predict_input``).
    """
    body = await read_body(request, min(limits.MAX_API_BODY_BYTES, predict_input.body_cap(task.input_dim)))
    try:
        predict_input.sniff_shape(body, task.input_dim)
        async with parses:
            X = await _off_loop(predict_input.parse_inputs, body, task.input_dim)
    except predict_input.PredictInputError as exc:
        return json_error(422, str(exc))
    try:
        params, _ = await node.run_chain(node.chain.model_at, height, task_id)
    except ValueError as exc:
        return json_error(404, f"no model at height {height}: {exc}")
    out = await _off_loop(predict, task, params, X)  # BLAS work stays off the event loop
    return json_reply({"predictions": out.tolist(), "height": height})


def _off_loop(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)
