"""What the dashboard's pages show, as typed values (no I/O, no node, no markup).

node/api/dashboard.py gathers these from the node; node/api/dashboard_render.py
renders them through autoescaped templates. A page's header and stat cards
read the same :class:`~node.api.status.StatusSnapshot` that ``GET /api/status``
serves.

Adding a panel to the live page takes a field on :class:`PageView` (filled in
``dashboard.page_view``) and a template in ``templates/panels/`` included from
``templates/live.html``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from node.api import plot
from node.api.status import StatusSnapshot


@dataclass(frozen=True)
class UpdateView:
    """One gradient update of a block, with the aggregation rule's verdict."""

    txid: str
    sender: str  # full address; shortened when shown
    round: int  # the round it was committed in (trained on that round's model)
    encoding: str
    values: int
    norm: float | None  # None when decoding it would be too costly
    accepted: bool | None  # None: not applied (too few updates for the rule), or never connected
    outcome: str = ""  # "accepted", "rejected", "not applied"; "" while the block is not connected


@dataclass(frozen=True)
class TxView:
    position: int
    kind: str  # "coinbase", "transfer", "bond", "unbond", "commit", "update", "task"
    txid: str
    size: int
    sender: str | None
    detail: str  # one plain-text line
    update: UpdateView | None = None


@dataclass(frozen=True)
class BlockView:
    height: int
    hash: str
    prev: str
    time: int
    bits: str
    nonce: int
    state_root: str
    main_chain: bool
    miner: str | None
    txs: list[TxView]
    vote: str = "open"  # what the round made of the block's vote: open, counted, rejected, zero, gated

    @property
    def updates(self) -> list[UpdateView]:
        return [tx.update for tx in self.txs if tx.update is not None]

    @property
    def accepted(self) -> int:
        return sum(1 for u in self.updates if u.accepted)

    @property
    def rejected(self) -> int:
        return sum(1 for u in self.updates if u.accepted is False)

    @property
    def not_applied(self) -> int:
        """Updates of a connected block too few for the rule to run on."""
        return sum(1 for u in self.updates if u.outcome == "not applied")

    @property
    def pending(self) -> int:
        """Updates without a verdict: the block is not connected."""
        return len(self.updates) - self.accepted - self.rejected - self.not_applied


@dataclass(frozen=True)
class PeerView:
    url: str
    height: int
    direction: str
    user_agent: str
    connected_for_s: float


@dataclass(frozen=True)
class EventView:
    time: float
    kind: str
    message: str
    height: int | None


@dataclass(frozen=True)
class Prediction:
    """The tip model's predictions on the test split of a regress task."""

    height: int
    predicted: list[float]
    actual: list[float]
    mse: float
    naive_mse: float
    mae: float
    naive_mae: float
    test_days: int  # the figures cover all of them; the plot draws the last len(actual)

    @property
    def ratio(self) -> float:
        """Model MSE over the naive "tomorrow = today" MSE: below 1 the model beats it."""
        return self.mse / self.naive_mse if self.naive_mse > 0 else math.inf

    @property
    def figure(self) -> plot.Figure:
        return plot.prediction_figure(self.actual, self.predicted)


@dataclass(frozen=True)
class TaskRow:
    """One task of the chain in the dashboard's task list."""

    id: str  # hex
    name: str
    status: str
    model: str
    head: str
    inputs: str  # what a row holds, in words
    rule: str
    label: str  # the headline figure, e.g. "acc 0.953"
    deployed: bool = False  # a task deployed by a transaction: its bounty and its own curve are shown
    bounty: int = 0  # what is left of it


@dataclass(frozen=True)
class PageView:
    """Everything the live region shows, gathered once per request."""

    status: StatusSnapshot
    blocks: list[BlockView]  # newest first
    peers: list[PeerView]
    events: list[EventView]  # newest first
    history: Mapping[int, Mapping[str, float]]  # the evaluator's figures per height
    rejected: Mapping[int, int]  # height -> updates the rule rejected there
    prediction: Prediction | None = None  # regress tasks only
    tasks: list[TaskRow] = field(default_factory=list)

    @property
    def now(self) -> float:
        return self.status.taken_at

    @property
    def latest(self) -> Mapping[str, float] | None:
        """The newest evaluated height's figures, if any."""
        return self.history[max(self.history)] if self.history else None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def history_figure(self) -> plot.Figure:
        return plot.history_figure(self.history, self.rejected, self.status.head, self.status.height)

    @property
    def updates(self) -> list[tuple[int, UpdateView]]:
        """(height, update) of every update in the recent blocks, newest block first."""
        return [(b.height, u) for b in self.blocks for u in b.updates]


@dataclass(frozen=True)
class BlockPageView:
    """The explorer page of one block."""

    block: BlockView
    network: str
    task: str
    tip: int  # the main chain's height: whether to link a next block


@dataclass(frozen=True)
class ErrorView:
    status: int
    message: str
    network: str
    task: str
