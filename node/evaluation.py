"""Policy figures of the model: test accuracy/loss per height, for API and dashboard.

Computed off the event loop with BLAS (numpy), cached per block hash. These
figures are never consensus (DESIGN.md): they only describe the model.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from ml.datafile import DataFileError, parse_data
from ml.datasets import Dataset, load_dataset
from ml.evaluate import evaluate

log = logging.getLogger("gradchain.evaluation")

MAX_CACHED = 5000  # heights whose figures are kept (the dashboard plots them all)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("evaluating the tip model failed", exc_info=task.exception())


class Evaluator:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.task = node.chain.task
        self._dataset: Dataset | None = None
        self._loaded = False
        if node.config.eval_file is not None:  # a bad --eval file stops the start, with its line and column
            self._dataset, self._loaded = self._load(), True
        self.history: dict[int, dict[str, float]] = {}  # height -> figures on the main chain
        self._by_hash: dict[bytes, dict[str, float]] = {}
        node.on_tip_change(self._schedule)
        self._pending: asyncio.Task[None] | None = None  # the task following the tip

    @property
    def dataset(self) -> Dataset | None:
        """What the model is scored on: ``--eval FILE``, else the task's built-in test split.

        None for a task without built-in data when no file was given: the
        node then reports no figures (it still validates, mines and trains).
        """
        if not self._loaded:
            self._dataset, self._loaded = self._load(), True
        return self._dataset

    def _load(self) -> Dataset | None:
        path = self.node.config.eval_file
        if path is None:
            try:
                return load_dataset(self.task)
            except ValueError as exc:
                log.warning("no figures for task %r: %s; give the node --eval FILE", self.task.name, exc)
                return None
        try:
            table = parse_data(path.read_bytes(), self.task, npz=path.suffix.lower() == ".npz")
        except OSError as exc:
            raise DataFileError(f"--eval {path}: {exc.strerror or exc}") from None
        except DataFileError as exc:
            raise DataFileError(f"--eval {path}: {exc}", line=exc.line, column=exc.column) from None
        return Dataset(self.task.name, table.X[:0], table.y[:0], table.X, table.y)

    def figures(self, params: np.ndarray) -> dict[str, float]:
        dataset = self.dataset
        return {} if dataset is None else evaluate(self.task, params, dataset)

    def _schedule(self) -> None:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._follow_tip())
            self._pending.add_done_callback(_log_failure)

    async def _follow_tip(self) -> None:
        """Evaluate tips until the one evaluated is still the tip (none is skipped for long)."""
        while True:
            tip_hash = self.node.chain.tip.hash
            await self.refresh()
            if self.node.chain.tip.hash == tip_hash:
                return

    async def refresh(self) -> dict[str, float]:
        """Figures of the tip model (computing them if this tip is new)."""
        chain = self.node.chain
        tip_hash, height = chain.tip.hash, chain.height
        cached = self._by_hash.get(tip_hash)
        if cached is not None:
            return cached
        params = np.array(chain.state.params)
        loop = asyncio.get_running_loop()
        figures = await loop.run_in_executor(None, self.figures, params)
        self._by_hash[tip_hash] = figures
        if len(self._by_hash) > MAX_CACHED:
            self._by_hash.pop(next(iter(self._by_hash)))
        # Heights above a reorg's fork point belong to the new branch now.
        for stale in [h for h in self.history if h > height]:
            del self.history[stale]
        self.history[height] = figures
        if len(self.history) > MAX_CACHED:
            del self.history[min(self.history)]
        metrics = self.node.metrics
        if "accuracy" in figures:
            metrics.model_accuracy.set(figures["accuracy"])
            metrics.model_loss.set(figures["loss"])
        elif "mse" in figures:
            metrics.model_loss.set(figures["mse"])
        return figures

    def latest(self) -> dict[str, float] | None:
        return self.history[max(self.history)] if self.history else None
