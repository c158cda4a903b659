"""Run an unchanged Flower ``NumPyClient`` as a gradchain participant.

A Flower user's training code is a ``flwr.client.NumPyClient``: ``fit``
takes the global parameters as a list of numpy arrays and a config dict and
returns ``(parameters, num_examples, metrics)``; ``evaluate`` takes the same
and returns ``(loss, num_examples, metrics)``. The bridge plays Flower's
server for that one client, with the chain as the aggregator:

0. The chain's rounds (docs/DESIGN-NOTES.md, "Rounds, bonds and
   commit-reveal") decide the rhythm: the key first bonds (it needs the
   task's ``bond_amount`` in coins, sent to it by anyone), and once the bond
   is mature it takes part in every round. The task is the chain's first
   or any task deployed by a transaction (``task_id``): its spec, model,
   bond, commitments and reveals are that task's.
1. At each new round it fetches the task's flat float32 parameters at the
   round's start height (the model every update of the round is computed on)
   and hands them to the client as per-layer arrays in the task's own order (:func:`to_layers`):
   ``[W0, b0, W1, b1, ...]``, ``W{i}`` of shape ``(fan_in, fan_out)`` and
   ``b{i}`` of shape ``(fan_out,)`` (:func:`ml.models.param_shapes`); a
   layer computes ``x @ W + b``.
2. It calls ``evaluate`` on that model when the client defines one and logs
   the result, then ``fit`` once per update it commits (a round's worth,
   ``round_blocks``, by default) with :func:`fit_config`: the task's local
   training hints (``lr``, ``local_steps``, ``batch_size``), the
   ``base_height``, the ``round``, Flower's ``server_round`` (``round + 1``)
   and the ``update``'s index in the round.
3. It turns each returned set of parameters into the update the chain takes,
   ``base - trained`` as one flat float32 vector, checks it as the node
   would (:func:`node.client.check_update_locally`: shape, finite values,
   norm bound; a refused update is logged with the reason and not sent),
   commits to the round's updates (:class:`node.contributor.Contributor`,
   which keeps the signed reveals) and, as soon as the next round starts,
   pools every one of them (:meth:`Contributor.pending_reveals`, as the
   node's own trainer does): a block counts one per sender, so each block
   of the round finds one at every miner however fast it is found.

The bridge never imports Flower to run a client it is given: a
``NumPyClient`` (or the ``Client`` its ``to_client()`` makes) is driven
through its methods. Flower is needed only to load a ``client_fn(context)``
from a module (:func:`load_client`), and its absence is said plainly.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from consensus.header import hex_to_hash
from consensus.rounds import round_start
from consensus.tx import encode_tx
from ml.models import param_shapes
from ml.tasks import TaskSpec
from node.client import ApiError, NodeClient, UpdateRefused, check_update_locally
from node.contributor import Contributor, KeyStatus
from node.taskfile import TaskFileError, match_task_id
from wallet import KeyPair, address_of

log = logging.getLogger("gradchain.flower")

DEFAULT_POLL_S = 1.0  # how often the node is asked for a new tip; a block takes seconds
FLOWER_MISSING = "Flower is not installed; install it with `pip install -e '.[flower]'` (or `pip install flwr`)"
FIT_RESULT_LEN = 3  # (parameters, num_examples, metrics), Flower's NumPyClient contract
Scalar = bool | bytes | float | int | str


class BridgeError(Exception):
    """The client or the node cannot take part as asked; the message says what to change."""


@dataclass
class Evaluation:
    """What the client's ``evaluate`` said about a model."""

    loss: float
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RoundReport:
    """One round's model handled: its evaluation, the fits, and the commitment sent (or why it was not).

    ``txid`` is the commitment's; its ``updates`` are pooled at the start of
    the next round and revealed one per block. ``update_norm`` is the largest of the round's
    updates, ``num_examples`` and ``fit_metrics`` the last fit's.
    """

    round: int
    base_height: int
    base_hash: str
    evaluation: Evaluation | None
    num_examples: int
    fit_metrics: dict[str, Any]
    update_norm: float
    updates: int = 0
    txid: str | None = None
    refused: str | None = None
    client_s: float = 0.0  # time in the client's evaluate and fits
    bridge_s: float = 0.0  # the bridge's own time: fetch the model, convert, check, sign, submit
    kind: str = "round"

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (numpy scalars as numbers, bytes as hex)."""
        return {key: _plain(value) for key, value in asdict(self).items()}

    def describe(self) -> str:
        """One log line: ``round 3, model 24 a3f0…: loss 0.31 accuracy 0.93 (450) | 8 fits … -> commitment 9c1e…``."""
        parts = [f"round {self.round}, model {self.base_height} {self.base_hash[:12]}…"]
        if self.evaluation is not None:
            figures = " ".join(f"{k} {_short(v)}" for k, v in self.evaluation.metrics.items())
            figures = f" {figures}" if figures else ""
            parts.append(f"evaluate loss {self.evaluation.loss:.4f}{figures} "
                         f"({self.evaluation.num_examples} examples)")
        outcome = (f"commitment {self.txid[:16]}… of {self.updates} update(s), revealed next round" if self.txid
                   else f"NOT SENT: {self.refused}")
        parts.append(f"fit on {self.num_examples} examples, largest update norm {self.update_norm:.3f} -> {outcome}")
        return " | ".join(parts)


@dataclass
class RevealReport:
    """One committed update pooled for the blocks of its reveal round (a block counts one per sender)."""

    round: int  # the round it was committed in
    index: int  # its place in the commitment
    of: int  # updates in the commitment
    height: int  # of the next block when it was pooled (the first block it may go in)
    txid: str
    kind: str = "reveal"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One log line: ``reveal 3/8 of round 2 pooled at block 25 -> tx 9c1e…``."""
        return (f"reveal {self.index + 1}/{self.of} of round {self.round} pooled at block {self.height} "
                f"-> tx {self.txid[:16]}…")


def _short(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (float, np.floating)) else str(value)


def _plain(value: Any) -> Any:
    """``value`` with what a client's metrics may hold (Flower's Scalar, numpy scalars) made JSON-ready."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.hex()
    return value


# -- the parameter layout: ml.models.param_shapes, W0, b0, W1, b1, ... -------------------------------
def to_layers(task: TaskSpec, flat: np.ndarray) -> list[np.ndarray]:
    """The flat parameter vector as Flower's list of per-layer arrays (fresh float32 copies)."""
    values = np.asarray(flat, dtype=np.float32)
    if values.shape != (task.param_count,):
        raise BridgeError(f"the node served {values.size} parameters; task {task.name} has {task.param_count}")
    layers, offset = [], 0
    for _, shape in param_shapes(task):
        size = int(np.prod(shape))
        layers.append(values[offset:offset + size].reshape(shape).copy())
        offset += size
    return layers


def from_layers(task: TaskSpec, layers: Sequence[Any], what: str = "fit") -> np.ndarray:
    """The client's per-layer arrays back as one flat float32 vector; a wrong layout is a BridgeError."""
    expected = param_shapes(task)
    described = ", ".join(f"{name} {list(shape)}" for name, shape in expected)
    if not isinstance(layers, (list, tuple)) or len(layers) != len(expected):
        count = len(layers) if isinstance(layers, (list, tuple)) else type(layers).__name__
        raise BridgeError(f"the client's {what} returned {count} arrays; task {task.name} has "
                          f"{len(expected)}: {described}")
    parts = []
    for (name, shape), array in zip(expected, layers, strict=True):
        values = np.asarray(array)
        if values.shape != shape:
            raise BridgeError(f"the client's {what} returned {name} with shape {list(values.shape)}; "
                              f"task {task.name} expects {described}")
        if values.dtype.kind not in "fiu":
            raise BridgeError(f"the client's {what} returned {name} of dtype {values.dtype}; expected floats")
        parts.append(values.astype(np.float32).ravel())
    return np.concatenate(parts)


def fit_config(task: TaskSpec, base_height: int, round_: int = 0, update: int = 0) -> dict[str, Scalar]:
    """The config dict ``fit`` and ``evaluate`` receive: the task's local-training hints, the base
    model's height, the chain's round (Flower's ``server_round`` is one more) and the update's index.

    A task whose model standardises its inputs (``gradchain task init`` makes
    such tasks) adds ``input_shift`` and ``input_scale``, one value per
    feature as a JSON list (a Flower config holds scalars): the client must
    train on ``(x - input_shift) / input_scale``, as the chain's model reads
    its rows.
    """
    config: dict[str, Scalar] = {
        "lr": float(task.lr),
        "local_steps": int(task.local_steps),
        "batch_size": int(task.batch_size),
        "base_height": int(base_height),
        "round": int(round_),
        "server_round": int(round_) + 1,
        "update": int(update),
        "task": task.name,
    }
    if task.standardised:
        config["input_shift"] = json.dumps(list(task.input_shift))
        config["input_scale"] = json.dumps(list(task.input_scale))
    return config


def run_config(task: TaskSpec) -> dict[str, Scalar]:
    """What a ``client_fn(context)`` finds in ``context.run_config``: the task's name, its training hints
    and, for a task that standardises its inputs, the standardisation (see :func:`fit_config`)."""
    config = fit_config(task, 0)
    return {key: value for key, value in config.items() if key not in ("base_height", "round", "server_round", "update")}


# -- the client -------------------------------------------------------------------------------------
def unwrap(client: Any) -> Any:
    """The NumPyClient itself, also when given the ``Client`` its ``to_client()`` made."""
    inner = getattr(client, "numpy_client", None)
    return inner if inner is not None else client


def defines(client: Any, method: str) -> bool:
    """Whether the client's own code defines ``method`` (Flower's base class only has placeholders)."""
    for klass in type(client).__mro__:
        if method in vars(klass):
            return not klass.__module__.startswith("flwr.")
    return callable(getattr(client, method, None))  # set on the instance


def require_flwr() -> Any:
    """``flwr``, imported on first use; a BridgeError that says how to install it otherwise."""
    try:
        return importlib.import_module("flwr")
    except ImportError:
        raise BridgeError(FLOWER_MISSING) from None


def flower_context(node_config: dict[str, Scalar], run_config: dict[str, Scalar]) -> Any:
    """A ``flwr.common.Context`` for a ``client_fn(context)``, built across Flower versions."""
    require_flwr()
    common = importlib.import_module("flwr.common")
    record_type = getattr(common, "RecordDict", None) or common.RecordSet
    offered: dict[str, Any] = {"run_id": 0, "node_id": 0, "node_config": node_config, "state": record_type(),
                               "run_config": run_config}
    accepted = inspect.signature(common.Context).parameters
    return common.Context(**{name: value for name, value in offered.items() if name in accepted})


def load_client(spec: str, *, node_config: dict[str, Scalar] | None = None,
                run_config: dict[str, Scalar] | None = None, app_dir: Path | None = None) -> Any:
    """The NumPyClient named by ``spec`` = ``pkg.module:attr``.

    ``attr`` may be a NumPyClient (or the ``Client`` its ``to_client()``
    made), a function of no arguments returning one, or a Flower
    ``client_fn(context)``: it gets a Context whose ``node_config`` carries
    ``partition-id`` / ``num-partitions`` and whose ``run_config`` carries
    the task's training hints. ``app_dir`` (default: the working directory)
    goes first on ``sys.path``, as ``flwr run`` and uvicorn do.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BridgeError(f"--client must look like pkg.module:factory, got {spec!r}")
    require_flwr()
    directory = str((app_dir or Path.cwd()).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == "flwr" or (exc.name or "").startswith("flwr."):
            raise BridgeError(FLOWER_MISSING) from None
        raise BridgeError(f"cannot import {module_name!r} ({exc}); run from the directory that holds it "
                          "or pass --app-dir") from None
    target: Any = getattr(module, attr, None)
    if target is None:
        raise BridgeError(f"module {module_name} has no {attr!r}; name the NumPyClient, or the function "
                          "that makes one, after the colon")
    if type(target).__name__ == "ClientApp":
        raise BridgeError(f"{spec} is a ClientApp; point --client at the client_fn it wraps "
                          f"(e.g. {module_name}:client_fn)")
    client = target
    if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isclass(target):
        factory: Callable[..., Any] = target
        arity = len(inspect.signature(factory).parameters)
        if arity > 1:
            raise BridgeError(f"{spec} takes {arity} arguments; a factory takes none, a client_fn one (context)")
        arguments = [flower_context(node_config or {}, run_config or {})] if arity else []
        try:
            client = factory(*arguments)
        except Exception as exc:  # the user's code: say where it failed, not a traceback
            raise BridgeError(f"{spec} could not make the client: {type(exc).__name__}: {exc}") from exc
    client = unwrap(client)
    if not callable(getattr(client, "fit", None)):
        raise BridgeError(f"{spec} gave a {type(client).__name__}, which has no fit(parameters, config); "
                          "it must be (or make) a flwr.client.NumPyClient")
    return client


# -- the bridge -------------------------------------------------------------------------------------
@dataclass
class FlowerBridge:
    """One NumPyClient taking part in one task of a node; :meth:`run` follows the chain's rounds.

    ``task_id`` names the task (hex, as ``/api/tasks`` lists it; None: the
    chain's first task) and ``task`` is its spec: bonds, commitments and
    reveals name that task, and its model is what the client trains.
    """

    client: Any
    node: NodeClient
    keypair: KeyPair
    task: TaskSpec
    fee: int = 0  # paid for the bond (commitments and reveals carry no fee)
    poll_s: float = DEFAULT_POLL_S
    updates_per_round: int | None = None  # default: the task's round_blocks
    task_id: str | None = None
    rounds: list[RoundReport] = field(default_factory=list)
    _me: Contributor | None = None
    _bond_txid: str | None = None  # our bond while the node pools it
    _revealed: set[tuple[int, int]] = field(default_factory=set)  # (round, index) of every reveal sent

    def check_layout(self) -> None:
        """Compare the client's own parameters (if it exposes them) with the task's layout, once."""
        if not defines(self.client, "get_parameters"):
            return
        own = self.client.get_parameters(fit_config(self.task, 0))
        if own:  # Flower's convention: [] means "ask the server"
            from_layers(self.task, own, "get_parameters")

    @property
    def me(self) -> Contributor:
        """The key's commitments and their signed reveals (made on first use, for the node's chain)."""
        if self._me is None:
            self._me = self.node.contributor(self.keypair, task_id=self.task_id, task=self.task)
        return self._me

    def key_status(self) -> tuple[KeyStatus, dict[str, Any]]:
        """The key in the bridge's task as the node's tip sees it, and the node's status."""
        return self.node.key_status(self.keypair, self.task_id)

    def handle(self, key: KeyStatus) -> RoundReport:
        """Evaluate the round's model, fit a round's worth of updates on it and commit to them."""
        started = time.perf_counter()
        client_s = 0.0
        round_ = key.round
        base_height = round_start(round_, self.task.round_blocks)
        params, served = self.node.model_params(base_height, self.task_id)
        if served != base_height:
            raise BridgeError(f"asked for the model at {base_height}, the node served {served}")
        base_hash = str(self.node.block(base_height)["hash"])
        config = fit_config(self.task, base_height, round_)
        evaluation = None
        if defines(self.client, "evaluate"):
            layers = to_layers(self.task, params)
            began = time.perf_counter()
            evaluation = self._evaluate(layers, dict(config))
            client_s += time.perf_counter() - began
        deltas: list[np.ndarray] = []
        norms: list[float] = []
        refused: str | None = None
        num_examples = 0
        metrics: dict[str, Any] = {}
        for index in range(self.updates_per_round or self.task.round_blocks):
            layers = to_layers(self.task, params)
            began = time.perf_counter()
            trained, num_examples, metrics = self._fit(layers, {**config, "update": index})
            client_s += time.perf_counter() - began
            delta = params - from_layers(self.task, trained)
            norms.append(float(np.linalg.norm(delta.astype(np.float64))))
            try:
                checked = check_update_locally(self.task, delta)
            except UpdateRefused as exc:
                refused = str(exc)
                log.warning("update %d of round %d not sent: %s", index, round_, exc)
                continue
            if not any(np.array_equal(checked, d) for d in deltas):  # a commitment's digests are distinct
                deltas.append(checked)
        report = RoundReport(round_, base_height, base_hash, evaluation, num_examples, metrics, max(norms),
                             updates=len(deltas), client_s=client_s)
        if not deltas:
            report.refused = refused or "the client's fit returned no update"
        else:
            self._commit(report, key, deltas)
        report.bridge_s = time.perf_counter() - started - client_s
        return report

    def _commit(self, report: RoundReport, key: KeyStatus, deltas: list[np.ndarray]) -> None:
        """Sign the round's updates and commit to them; the report says what became of it."""
        commit = self.me.commit(key, hex_to_hash(report.base_hash), deltas)
        try:
            report.txid = self.node.submit_raw_tx(encode_tx(commit))
        except ApiError as exc:
            if exc.status == 0:
                raise  # the node is unreachable: run() waits and tries again
            report.refused = f"the node refused the commitment: {exc.message}"
            log.warning("round %d's commitment refused by the node: %s", report.round, exc.message)

    def _fit(self, layers: list[np.ndarray], config: dict[str, Scalar]) -> tuple[Any, int, dict[str, Any]]:
        result = self.client.fit(layers, config)
        if not (isinstance(result, tuple) and len(result) == FIT_RESULT_LEN):
            raise BridgeError("the client's fit must return (parameters, num_examples, metrics), as Flower's "
                              f"NumPyClient does; it returned {type(result).__name__}")
        trained, num_examples, metrics = result
        return trained, int(num_examples), dict(metrics or {})

    def _evaluate(self, layers: list[np.ndarray], config: dict[str, Scalar]) -> Evaluation:
        result = self.client.evaluate(layers, config)
        if not (isinstance(result, tuple) and len(result) == FIT_RESULT_LEN):
            raise BridgeError("the client's evaluate must return (loss, num_examples, metrics), as Flower's "
                              f"NumPyClient does; it returned {type(result).__name__}")
        loss, num_examples, metrics = result
        return Evaluation(float(loss), int(num_examples), dict(metrics or {}))

    def _bond(self, key: KeyStatus) -> str | None:
        """Send the bond once the key can afford it; what the key waits for, or None once bonded."""
        need = self.task.bond_amount + self.fee
        if self._bond_txid is not None:
            try:
                if self.node.tx(self._bond_txid)["status"] == "mempool":
                    return "waiting for the bond to be mined"
            except ApiError:
                pass  # dropped: bond again
            self._bond_txid = None
        if key.balance < need:
            address = address_of(self.keypair.public)
            return (f"this key needs {need} base units to bond and holds {key.balance}: send them to it "
                    f"(`gradchain wallet send --node URL --keystore FUNDED.json --to {address} --amount {need}`)")
        self._bond_txid = self.node.bond(self.keypair, fee=self.fee, task_id=self.task_id)
        log.info("bond sent (%s): the key contributes once it is mature", self._bond_txid)
        return "waiting for the bond to be mined"

    def _reveal(self, key: KeyStatus) -> list[RevealReport]:
        """Pool every reveal of last round's commitment the chain has not seen yet; a report for each
        sent for the first time.

        As the node's own trainer does (:meth:`Contributor.pending_reveals`):
        a block counts one update per sender but the mempool holds a round's
        worth, so with all of them pooled at the round's start every miner
        has one for each block of the round, however fast the blocks come.
        Those sent before go again at each new tip (the node answers a
        pooled one with its txid and changes nothing), so one the pool
        dropped is back for the next block.
        """
        reports = []
        plan = self.me.plans.get(key.round - 1, [])
        pooled, refused = self.node.pool_reveals(self.me, key)
        for index, why in refused.items():
            log.info("reveal %d of round %d not pooled: %s", index + 1, key.round - 1, why)
        for index, txid in pooled.items():
            if (key.round - 1, index) not in self._revealed:
                self._revealed.add((key.round - 1, index))
                report = RevealReport(key.round - 1, index, len(plan), key.height, txid)
                log.info("%s", report.describe())
                reports.append(report)
        return reports

    def _done(self, key: KeyStatus, rounds: int | None) -> bool:
        """``rounds`` commitments sent and the last one's updates all revealed on chain (or its reveal
        round over)."""
        sent = [r.round for r in self.rounds if r.txid is not None]
        if rounds is None or len(sent) < rounds:
            return False
        last = max(sent)
        return key.round > last + 1 or (key.round == last + 1 and not key.unrevealed)

    def step(self, key: KeyStatus, *, commit: bool = True) -> tuple[str | None, list[RevealReport], RoundReport | None]:
        """Everything the key owes the next block, sent: its bond, last round's reveals and (if
        ``commit``) this round's commitment, the client's fits. Returns what it waits for (None:
        nothing), the reveals sent and the round handled, if any."""
        waiting = self._bond(key) if not key.bonded else None
        if key.bonded and not key.mature:
            waiting = "waiting for the bond to mature"
        reveals = self._reveal(key)
        report = None
        if commit and self.me.wants_commit(key):
            report = self.handle(key)
            self.rounds.append(report)
            log.info("%s", report.describe())
        self.me.forget_before(key.round)
        return waiting, reveals, report

    def run(self, *, rounds: int | None = None, stop: threading.Event | None = None,
            on_round: Callable[[RoundReport], None] | None = None,
            on_wait: Callable[[str], None] | None = None,
            on_reveal: Callable[[RevealReport], None] | None = None) -> list[RoundReport]:
        """Follow the node: at each new tip :meth:`step` (bond, pool last round's reveals, commit this
        round's updates), until ``rounds`` commitments are made and their updates revealed on chain,
        or ``stop``."""
        stop = stop if stop is not None else threading.Event()
        self.check_layout()
        seen: tuple[int, str] | None = None
        while not stop.is_set():
            try:
                key, status = self.key_status()
                if self._done(key, rounds):
                    break
                tip = (int(status["height"]), str(status["tip"]))
                waiting = f"waiting for a new block after height {tip[0]}…"
                if tip != seen:
                    seen = tip
                    sent = sum(r.txid is not None for r in self.rounds)
                    wait, reveals, report = self.step(key, commit=rounds is None or sent < rounds)
                    waiting = wait or waiting
                    for revealed in reveals:
                        if on_reveal is not None:
                            on_reveal(revealed)
                    if report is not None:
                        if on_round is not None:
                            on_round(report)
                        continue
            except ApiError as exc:  # the node restarts or the network hiccups: keep following it
                waiting = f"node unreachable ({exc.message}); retrying every {self.poll_s:g}s"
                log.warning("%s", waiting)
            if on_wait is not None:
                on_wait(waiting)
            stop.wait(self.poll_s)
        return self.rounds


def find_task(node: NodeClient, task: str | None) -> tuple[str | None, TaskSpec]:
    """The id and spec of the task to train: ``task`` (an id, or a unique prefix of one, as ``gradchain
    task`` commands take it) or, for None, the chain's first task (id None: its routes are the default)."""
    if task is None:
        return None, node.task_spec()
    tasks = node.tasks()
    ids = [str(t["id"]) for t in tasks]
    try:
        task_id = match_task_id(task, ids)
    except TaskFileError as exc:
        raise BridgeError(f"{exc}; pass one of them to --task (`gradchain task list` shows them) or leave it "
                          "out for the chain's first") from None
    spec = node.task_spec(task_id)
    listed = next(t for t in tasks if t["id"] == task_id)
    if listed["status"] != "training":
        raise BridgeError(f"task {spec.name} ({task_id[:16]}…) has closed its training ({listed['status']}); "
                          "`gradchain task list` shows the tasks still training")
    return task_id, spec


def resolve_task(node: NodeClient, task: str | None) -> TaskSpec:
    """The spec of the task :func:`find_task` picks."""
    return find_task(node, task)[1]


def run_flower_client(client: Any, node_url: str | NodeClient, keypair: KeyPair, task: str | None = None, *,
                      rounds: int | None = None, fee: int = 0, poll_s: float = DEFAULT_POLL_S,
                      stop: threading.Event | None = None,
                      on_round: Callable[[RoundReport], None] | None = None,
                      on_wait: Callable[[str], None] | None = None,
                      on_reveal: Callable[[RevealReport], None] | None = None) -> list[RoundReport]:
    """Run a Flower NumPyClient as a participant of the node's task until ``rounds`` updates or ``stop``.

    Parameters
    ----------
    client
        A ``flwr.client.NumPyClient`` (or the ``Client`` from its ``to_client()``).
    node_url
        The node's API URL (or a ready :class:`NodeClient`).
    keypair
        The participant's key: it signs every update.
    task
        The id of the task to train (or a unique prefix of it; ``gradchain task list`` shows them).
        ``None`` takes the chain's first task.
    rounds
        Stop once this many rounds' updates are committed and revealed (default: run until ``stop`` is set).
    on_round, on_reveal, on_wait
        Called with each :class:`RoundReport` (a round's fits and commitment), each
        :class:`RevealReport`, and with a line while waiting.

    Returns the report of every model handled, in order.
    """
    node = node_url if isinstance(node_url, NodeClient) else NodeClient(node_url)
    task_id, spec = find_task(node, task)
    bridge = FlowerBridge(unwrap(client), node, keypair, spec, fee=fee, poll_s=poll_s, task_id=task_id)
    return bridge.run(rounds=rounds, stop=stop, on_round=on_round, on_wait=on_wait, on_reveal=on_reveal)
