"""The dashboard: ``GET /`` on every node, its live fragment, a block explorer and the plot.

Routes
------
``GET /``
    The whole page: header (network, task, height), stat cards, the model
    plot, events, recent blocks, their updates with the rule's verdict, peers.
``GET /dashboard/live``
    The same page without its shell: the page's script fetches it every few
    seconds and swaps it in, so the page follows the chain without reloading.
``GET /blocks/{ident}``
    One block by height or hash: header fields, transactions, updates.
``GET /plot.svg``
    The model plot on its own (image/svg+xml).

Anything that reads the chain state or storage runs on the chain thread
(``node.run_chain``); the loop reads only snapshots (the chain service's,
the evaluator's history, events, peers). The values shown are typed view models
(:mod:`node.api.dashboard_views`) around the same status snapshot
``/api/status`` serves; :mod:`node.api.dashboard_render` turns them into
HTML and SVG through autoescaped templates.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from aiohttp import web

from consensus.block import Block
from consensus.tx import GradientUpdate
from ml.codec import decode_update
from ml.datasets import Dataset
from ml.evaluate import headline_label
from ml.models import param_count, predict
from ml.tasks import TaskSpec
from node.api import dashboard_views as views
from node.api import plot
from node.api.dashboard_render import (
    CONTENT_SECURITY_POLICY,
    LIVE_PATH,
    number,
    render_block_page,
    render_error_page,
    render_figure,
    render_live,
    render_page,
    short_address,
)
from node.api.routes import find_block
from node.api.status import take_status
from node.api.summaries import (
    BondSummary,
    CoinbaseSummary,
    CommitSummary,
    TransferSummary,
    UpdateSummary,
    summarise_block,
)
from node.api.tasks import task_registry

if TYPE_CHECKING:
    from node.service import Node

RECENT_BLOCKS = 12  # rows in the recent-blocks table
RECENT_EVENTS = 40  # newest events listed (the card scrolls)
MAX_NORM_VALUES = 1_000_000  # decode an update for its norm only below this size (cost per refresh)
PREDICTION_DAYS = 120  # test days drawn in a regress task's prediction plot (more is unreadable)
BLOCK_VIEW_CACHE_MAX = 4 * RECENT_BLOCKS  # recent views kept; a short reorg still hits the cache
OUTCOME_CACHE_MAX = 20_000  # blocks whose rejected-update count is remembered (immutable per hash)
MAX_PLOTTED_HEIGHTS = 5000  # matches the evaluator's history; older heights are not plotted
HTML = "text/html"


@dataclass
class DashboardState:
    """Caches kept between requests: each entry is a pure function of a block hash."""

    rejected_by_hash: dict[bytes, int] = field(default_factory=dict)
    main_blocks: dict[bytes, views.BlockView] = field(default_factory=dict)  # connected blocks only
    prediction_tip: bytes = b""
    prediction: views.Prediction | None = None


# -- on the chain thread ------------------------------------------------------------------------
def block_view(node: Node, block: Block, height: int) -> views.BlockView:
    """A block as the API summarises it, with each update's norm and a line per tx."""
    summary = summarise_block(node.chain, block, height)
    size = param_count(node.chain.task)
    txs: list[views.TxView] = []
    miner: str | None = None
    for position, (tx, info) in enumerate(zip(block.txs, summary.txs, strict=True)):
        update: views.UpdateView | None = None
        sender: str | None = None
        if isinstance(info, CoinbaseSummary):
            miner = info.payouts[0].address if info.payouts else None
            paid = ", ".join(f"{short_address(p.address)} {p.amount:,}" for p in info.payouts)
            detail = f"height {info.height}; pays {paid or 'nobody'}"
        elif isinstance(info, UpdateSummary):
            sender = info.sender
            norm = _update_norm(tx, size) if isinstance(tx, GradientUpdate) else None
            update = views.UpdateView(
                txid=info.txid,
                sender=info.sender,
                round=info.round,
                encoding=info.encoding,
                values=info.values,
                norm=norm,
                accepted=info.accepted,
                outcome=info.outcome or "",
            )
            detail = f"committed in round {info.round}; {info.encoding}, {info.values} values; norm {number(norm)}"
        elif isinstance(info, CommitSummary):
            sender = info.sender
            detail = f"commits {info.updates} update(s) for round {info.round}"
        elif isinstance(info, BondSummary):
            sender = info.sender
            verb = "locks" if info.kind == "bond" else "releases"
            detail = f"{verb} a bond; fee {info.fee}; nonce {info.nonce}"
        elif isinstance(info, TransferSummary):
            sender = info.sender
            detail = f"{info.amount:,} to {short_address(info.to)}; fee {info.fee}; nonce {info.nonce}"
        else:
            detail = f"task {info.task.get('name', '?')} (rule {info.task.get('rule', '?')})"
        txs.append(views.TxView(position, info.kind, info.txid, info.size, sender, detail, update))
    return views.BlockView(
        height=height,
        hash=summary.hash,
        prev=summary.prev,
        time=summary.time,
        bits=summary.bits,
        nonce=summary.nonce,
        state_root=summary.state_root,
        main_chain=summary.main_chain,
        miner=miner,
        txs=txs,
        vote=summary.vote.status if summary.vote is not None else "open",
    )


def _update_norm(tx: GradientUpdate, size: int) -> float | None:
    if tx.update.size > MAX_NORM_VALUES:
        return None
    try:
        vector = decode_update(tx.update, size)
    except ValueError:  # a stored body that never connected may hold anything
        return None
    return float(np.linalg.norm(vector.astype(np.float64)))


def recent_blocks(node: Node, count: int, state: DashboardState) -> list[views.BlockView]:
    """The newest ``count`` main-chain blocks, newest first.

    A connected block's view stops changing when its round closes (its
    updates' verdicts are fixed when it connects, its vote's when the round
    ends), so those views are cached by hash and a refresh reads the open
    round's blocks only.
    """
    chain = node.chain
    cache = state.main_blocks
    out = []
    for height in range(chain.height, max(-1, chain.height - count), -1):
        block_hash = chain.main[height]
        view = cache.get(block_hash)
        if view is None:
            block = chain.get_block(block_hash)
            if block is None:
                continue
            view = block_view(node, block, height)
            if view.vote != "open":  # final: its round has closed
                cache[block_hash] = view
        out.append(view)
    while len(cache) > BLOCK_VIEW_CACHE_MAX:
        del cache[next(iter(cache))]  # oldest first: dicts keep insertion order
    return out


def rejected_heights(node: Node, low: int, state: DashboardState) -> dict[int, int]:
    """Height -> updates the aggregation rule rejected there, plus one for a vote the round
    rejected (an attacker's block), on the main chain from ``low``."""
    chain = node.chain
    cache = state.rejected_by_hash
    if len(cache) > OUTCOME_CACHE_MAX:
        cache.clear()
    out = {}
    for height in range(max(0, low), chain.height + 1):
        block_hash = chain.main[height]
        count = cache.get(block_hash)
        if count is None:
            count = sum(1 for _, accepted in chain.storage.get_outcomes(block_hash) if accepted is False)
            vote = chain.vote_status(block_hash)
            count += vote == "rejected"
            if vote != "open":
                cache[block_hash] = count
        if count:
            out[height] = count
    return out


# -- on the loop ----------------------------------------------------------------------------------
def _peers(node: Node) -> list[views.PeerView]:
    return [
        views.PeerView(p.url, p.height, "outbound" if p.outbound else "inbound", p.user_agent, p.connected_for_s)
        for p in node.peers.peer_infos()
    ]


def _events(node: Node) -> list[views.EventView]:
    recent = list(node.events)[-RECENT_EVENTS:]
    return [views.EventView(e.time, e.kind, e.message, e.height) for e in reversed(recent)]


async def _history(node: Node, height: int) -> dict[int, dict[str, float]]:
    """The evaluator's figures per height, evaluating the tip first if it is new."""
    evaluator = node.evaluator
    if height not in evaluator.history:
        await evaluator.refresh()
    return dict(evaluator.history)


def _tip_model(node: Node) -> tuple[np.ndarray, int, bytes]:
    """On the chain thread: a copy of the tip model's parameters, with the tip's height and hash."""
    chain = node.chain
    return np.array(chain.state.params), chain.height, chain.tip.hash


async def _prediction(node: Node, state: DashboardState) -> views.Prediction | None:
    """The tip model on the last test days of a regress task (cached per tip)."""
    snap = node.chain_service.snapshot
    task, dataset = snap.task, node.evaluator.dataset
    if task.head != "regress" or task.window == 0 or dataset is None:
        return None  # the plot is of a price series' days
    if state.prediction is not None and state.prediction_tip == snap.tip_hash:
        return state.prediction
    params, height, tip = await node.run_chain(_tip_model, node)
    loop = asyncio.get_running_loop()
    prediction = await loop.run_in_executor(None, _predict_test, task, dataset, params, height)
    state.prediction, state.prediction_tip = prediction, tip
    return prediction


def _predict_test(task: TaskSpec, dataset: Dataset, params: np.ndarray, height: int) -> views.Prediction:
    X, y = dataset.X_test, np.asarray(dataset.y_test, dtype=np.float64)
    predicted = np.asarray(predict(task, params, X), dtype=np.float64).reshape(-1)
    resid = predicted - y
    return views.Prediction(
        height=height,
        predicted=predicted[-PREDICTION_DAYS:].tolist(),
        actual=y[-PREDICTION_DAYS:].tolist(),
        mse=float(np.mean(resid**2)),
        naive_mse=float(np.mean(y**2)),  # "tomorrow = today" predicts a zero return
        mae=float(np.mean(np.abs(resid))),
        naive_mae=float(np.mean(np.abs(y))),
        test_days=int(y.size),
    )


async def _plotted(node: Node, state: DashboardState, height: int) -> tuple[dict[int, dict[str, float]], dict[int, int]]:
    """The evaluator's history and the heights with rejected updates the plot covers."""
    history = await _history(node, height)
    low = max(min(history, default=height), height - MAX_PLOTTED_HEIGHTS)
    rejected = await node.run_chain(rejected_heights, node, low, state)
    return history, rejected


async def page_view(node: Node, state: DashboardState) -> views.PageView:
    history, rejected = await _plotted(node, state, node.chain_service.snapshot.height)
    blocks = await node.run_chain(recent_blocks, node, RECENT_BLOCKS, state)
    return views.PageView(
        status=take_status(node),
        blocks=blocks,
        peers=_peers(node),
        events=_events(node),
        history=history,
        rejected=rejected,
        prediction=await _prediction(node, state),
        tasks=await _tasks(node),
    )


async def _tasks(node: Node) -> list[views.TaskRow]:
    """The chain's tasks with the headline of their latest figures (the same list GET /api/tasks gives)."""
    latest = node.evaluator.latest() or {}
    registry = task_registry(node)
    height = node.chain_service.snapshot.height
    rows = []
    for entry in await registry.entries():
        spec = entry.spec
        figures = latest if entry.contract is None else (await registry.figures_at(entry, height))[2]
        inputs = f"{spec.window} daily returns" if spec.window else f"{spec.input_dim} features"
        if spec.head == "classify":
            inputs += f" → {spec.output_dim} classes"
        rows.append(views.TaskRow(entry.id, spec.name, entry.status, spec.model, spec.head, inputs,
                                  f"{spec.rule} f={spec.f}", headline_label(spec, figures),
                                  entry.contract is not None, 0 if entry.contract is None else entry.contract.bounty))
    return rows


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type=HTML,
        charset="utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


def add_routes(app: web.Application, node: Node) -> None:
    state = DashboardState()

    async def index(request: web.Request) -> web.Response:
        return _html(render_page(await page_view(node, state)))

    async def live(request: web.Request) -> web.Response:
        return _html(render_live(await page_view(node, state)))

    async def block(request: web.Request) -> web.Response:
        snap = node.chain_service.snapshot
        ident = request.match_info["ident"]

        def error(status: int, message: str) -> web.Response:
            page = views.ErrorView(status, message, snap.network, snap.task.name)
            return _html(render_error_page(page), status)

        try:
            found = await node.run_chain(find_block, node, ident)
        except ValueError:
            return error(400, "give a height or a 64-digit block hash")
        if found is None:
            return error(404, f"no block {ident}")
        view = await node.run_chain(block_view, node, *found)
        return _html(render_block_page(views.BlockPageView(view, snap.network, snap.task.name, snap.height)))

    async def plot_svg(request: web.Request) -> web.Response:
        snap = node.chain_service.snapshot
        history, rejected = await _plotted(node, state, snap.height)
        figure = plot.history_figure(history, rejected, snap.task.head, snap.height)
        return web.Response(
            text=render_figure(figure),
            content_type="image/svg+xml",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )

    app.router.add_get("/", index)
    app.router.add_get(LIVE_PATH, live)
    app.router.add_get("/blocks/{ident}", block)
    async def task_plot_svg(request: web.Request) -> web.Response:
        """One task's curve: its model's figures on its evaluation rows per height (the genesis task's
        is ``/plot.svg``'s)."""
        registry = task_registry(node)
        entry = await registry.find(request.match_info["task_id"])
        snap = node.chain_service.snapshot
        if entry is None:
            page = views.ErrorView(404, "no such task; GET /api/tasks lists them", snap.network, snap.task.name)
            return _html(render_error_page(page), 404)
        height = snap.height
        points = await registry.history(entry, height)
        history = {int(p["height"]): {k: v for k, v in p.items() if k not in ("height", "version")} for p in points}
        figure = plot.history_figure(history, {}, entry.spec.head, height)
        return web.Response(
            text=render_figure(figure),
            content_type="image/svg+xml",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )

    app.router.add_get("/plot.svg", plot_svg)
    app.router.add_get("/tasks/{task_id}/plot.svg", task_plot_svg)
