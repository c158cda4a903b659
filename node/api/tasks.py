"""The chain's training tasks by id: ``GET /api/tasks``, ``GET /api/tasks/{id}``,
``POST /api/tasks/{id}/predict``.

A task's id is the txid of the transaction that created it (shown like every
hash, reversed hex): the same on every node and on every branch that holds
that transaction, unlike a position in a list. The chain's first task is the
one its genesis block carries (``TaskTx``); tasks deployed later by a
transaction get that transaction's id.

Each task is reported with its ``name`` (from the spec), its ``status``
(``training`` while it takes updates) and the figures of its model on its
evaluation set (policy arithmetic, ``ml.evaluate``); ``/predict`` answers
with the model committed at any height, exactly as ``POST /api/predict``
does for the first task.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from ml.evaluate import headline, headline_label
from ml.models import predict
from ml.tasks import TaskSpec
from node import limits
from node.api import predict_input
from node.http import json_error, json_http_error, json_reply, read_body
from node.taskfile import genesis_task_id

TRAINING = "training"  # the task takes updates and its model moves
HISTORY_POINTS = 500  # heights of figures a task's page returns (the newest)


@dataclass(frozen=True)
class TaskEntry:
    """One task of the chain: its id (hex), its spec, and whether it still trains."""

    id: str
    spec: TaskSpec
    status: str


class TaskRegistry:
    """The tasks this node's chain holds, read for the API (today: the genesis task)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._first: TaskEntry | None = None

    async def entries(self) -> list[TaskEntry]:
        if self._first is None:
            task_id = await self.node.run_chain(genesis_task_id, self.node.chain)
            self._first = TaskEntry(task_id, self.node.chain_service.snapshot.task, TRAINING)
        return [self._first]

    async def find(self, task_id: str) -> TaskEntry | None:
        wanted = task_id.lower()
        return next((e for e in await self.entries() if e.id == wanted), None)


def task_json(entry: TaskEntry, height: int, version: int, figures: dict[str, float]) -> dict[str, Any]:
    """A task in a listing: id, name, status and the headline of its model's figures."""
    spec = entry.spec
    return {
        "id": entry.id, "name": spec.name, "status": entry.status, "head": spec.head, "model": spec.model,
        "input_dim": spec.input_dim, "output_dim": spec.output_dim, "features": list(spec.features),
        "rule": spec.rule, "f": spec.f, "height": height, "version": version,
        "headline": headline(spec), "label": headline_label(spec, figures), "metrics": figures,
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

    async def figures_at(height: int) -> tuple[np.ndarray, int, dict[str, float]]:
        params, version = await node.run_chain(lambda: node.chain.model_at(height))
        figures = await asyncio.get_running_loop().run_in_executor(None, node.evaluator.figures, params)
        return params, version, figures

    async def entry_or_404(request: web.Request) -> TaskEntry:
        wanted = request.match_info["task_id"]
        entry = await registry.find(wanted)
        if entry is None:
            raise json_http_error(web.HTTPNotFound, f"no task {wanted[:80]} on this chain; GET /api/tasks lists them")
        return entry

    async def list_tasks(request: web.Request) -> web.Response:
        height = height_param(request)
        _, version, figures = await figures_at(height)
        return json_reply({"height": height, "tasks": [task_json(e, height, version, figures)
                                                       for e in await registry.entries()]})

    async def show_task(request: web.Request) -> web.Response:
        entry = await entry_or_404(request)
        height = height_param(request)
        _, version, figures = await figures_at(height)
        history = sorted(node.evaluator.history.items())[-HISTORY_POINTS:]
        return json_reply({**task_json(entry, height, version, figures), "spec": entry.spec.to_dict(),
                           "history": [{"height": h, **f} for h, f in history]})

    async def predict_task(request: web.Request) -> web.Response:
        entry = await entry_or_404(request)
        return await answer_predict(node, entry.spec, request, height_param(request), predict_parses)

    app.router.add_get("/api/tasks", list_tasks)
    app.router.add_get("/api/tasks/{task_id}", show_task)
    app.router.add_post("/api/tasks/{task_id}/predict", predict_task)


async def answer_predict(node: Any, task: TaskSpec, request: web.Request, height: int,
                         parses: asyncio.Semaphore) -> web.Response:
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
    params, _ = await node.run_chain(lambda: node.chain.model_at(height))
    out = await _off_loop(predict, task, params, X)  # BLAS work stays off the event loop
    return json_reply({"predictions": out.tolist(), "height": height})


def _off_loop(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)
