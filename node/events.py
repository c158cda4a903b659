"""The node's event log: the last things that happened, for the API, the dashboard and the terminal."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("gradchain.node")

MAX_EVENTS = 200  # recent events kept for the API, dashboard and terminal view


@dataclass(frozen=True)
class Event:
    time: float
    kind: str  # "block", "mined", "rejected", "reorg", "peer", "update", "tx", "sync", "node", "trainer"
    message: str
    height: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


class EventLog:
    """A bounded list of :class:`Event`; each one is also logged as one line."""

    def __init__(self, size: int = MAX_EVENTS) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=size)

    def add(self, kind: str, message: str, height: int | None = None, **data: Any) -> None:
        self._events.append(Event(time.time(), kind, message, height, data))
        log.info(message)

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self._events))

    def __len__(self) -> int:
        return len(self._events)
