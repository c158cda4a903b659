"""A price feed for the stock example: one day's close at a time into a node's file.

``gradchain task feed --node URL --data FILE`` plays a market: each day it
asks the node for the chain model's forecast of tomorrow's return (from the
``window`` latest daily returns in FILE), then appends tomorrow's close to
FILE. The node (``node run --train --data FILE``) picks the new row up at its
next training step (node/datafile.py), so the model keeps learning from the
days as they come, with no restart. The feed scores every forecast against
the day that followed:

- the model's squared error of the return, in percent squared;
- the naive forecast "tomorrow = today" (a zero return);
- for the synthetic series, the best possible forecast ``phi * r_today``
  (ml/datasets.py): the floor, ``1 - phi^2`` of naive in the long run.

The closes come from the AR(1) process of the built-in series, continued
from FILE's last return (``--seed``), or are replayed from another
``date,close`` CSV (``--from``): a user's real series is used as it is.
"""

from __future__ import annotations

import datetime
import math
import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ml.datasets import AR_PHI, AR_SIGMA_PERCENT, PERCENT, latest_returns, parse_price_rows

SATURDAY = 5  # datetime.date.weekday(): Monday 0 .. Sunday 6


@dataclass(frozen=True)
class Day:
    """One appended day: its close and the return from the day before, in percent."""

    date: datetime.date
    close: float
    ret: float
    optimum: float | None  # the best possible forecast of ``ret``, when known


@dataclass
class FeedScore:
    """Running squared errors of the forecasts against the days that followed."""

    days: int = 0
    model_sq: float = 0.0
    naive_sq: float = 0.0
    optimum_sq: float = 0.0
    optimum_days: int = 0

    def add(self, forecast: float, day: Day) -> None:
        self.days += 1
        self.model_sq += (forecast - day.ret) ** 2
        self.naive_sq += day.ret**2
        if day.optimum is not None:
            self.optimum_days += 1
            self.optimum_sq += (day.optimum - day.ret) ** 2

    @property
    def ratio(self) -> float:
        """Model MSE over naive MSE (below 1: the model beats "tomorrow = today")."""
        return self.model_sq / self.naive_sq if self.naive_sq > 0 else math.nan

    @property
    def optimum_ratio(self) -> float | None:
        """The best forecast's MSE over naive on the same days (synthetic series only)."""
        if self.optimum_days != self.days or self.naive_sq == 0:
            return None
        return self.optimum_sq / self.naive_sq


def next_trading_day(date: datetime.date) -> datetime.date:
    """The next weekday after ``date``."""
    day = date + datetime.timedelta(days=1)
    while day.weekday() >= SATURDAY:
        day += datetime.timedelta(days=1)
    return day


def read_series(path: pathlib.Path) -> tuple[list[datetime.date], np.ndarray]:
    """Dates and closes of a ``date,close`` file (``ml.datasets.parse_price_csv`` checks it)."""
    return parse_price_rows(path.read_text())


def ar1_days(last_date: datetime.date, last_close: float, last_return: float, seed: int) -> Iterator[Day]:
    """Endless days continuing the synthetic AR(1) return process."""
    rng = np.random.default_rng(seed)
    date, close, ret = last_date, last_close, last_return
    while True:
        optimum = AR_PHI * ret
        ret = optimum + AR_SIGMA_PERCENT * float(rng.standard_normal())
        close *= 1.0 + ret / PERCENT
        date = next_trading_day(date)
        yield Day(date, close, ret, optimum)


def replay_days(source: pathlib.Path, after: datetime.date, last_close: float) -> Iterator[Day]:
    """The days of another ``date,close`` file that come after ``after``, as they are."""
    dates, closes = read_series(source)
    previous = last_close
    for date, close in zip(dates, closes, strict=True):
        if date > after:
            yield Day(date, float(close), (float(close) / previous - 1.0) * PERCENT, None)
            previous = float(close)


def append_day(path: pathlib.Path, day: Day) -> None:
    """Append ``day`` as one ``date,close`` line (after a newline, if the file lacks its last one)."""
    with path.open("rb+") as handle:
        handle.seek(0, 2)
        needs_newline = handle.tell() > 0 and (handle.seek(-1, 2), handle.read(1))[1] != b"\n"
        handle.write((("\n" if needs_newline else "") + f"{day.date.isoformat()},{day.close:.6f}\n").encode())


def run_feed(
    path: pathlib.Path,
    days: Iterator[Day],
    forecast: Callable[[list[float]], float],
    window: int,
    *,
    count: int | None,
    wait: Callable[[], None],
    report: Callable[[Day, float, FeedScore], None],
) -> FeedScore:
    """Forecast, append, score, wait; ``count`` days (None: until ``days`` ends or Ctrl-C)."""
    score = FeedScore()
    done = 0
    for day in days:
        if count is not None and done >= count:
            break
        _, closes = read_series(path)
        predicted = forecast([float(r) for r in latest_returns(closes, window)])
        append_day(path, day)
        score.add(predicted, day)
        report(day, predicted, score)
        done += 1
        wait()
    return score
