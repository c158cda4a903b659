"""Headers-first sync: headers from one peer at a time per peer, bodies from everyone.

Header sync runs per peer, with no lock shared between peers, so a slow or
lying peer never holds up the others. Each batch of headers must

* be continuous (each header's ``prev`` is the one before it),
* start on a header we know,
* and, when the batch is full, reach higher than the last full batch from
  this peer: a peer that answers every request with 2000 headers we already
  have (say, genesis again and again) stops the sync at once and is charged
  ``PROTOCOL_VIOLATION``, instead of keeping us asking forever.

Anti-DoS (Bitcoin Core's "headers presync", simplified). A branch is stored
only once its work comes within ``ANTI_DOS_WORK_BLOCKS`` blocks' worth of our
tip's: headers off an old fork, cheap at an old difficulty, are checked
(continuity, proof of work against their own bits) and counted but not
stored. If a full batch is below the threshold we keep only the hash of its
last header and ask for the next; once the claimed work reaches the
threshold we ask again from the start and store the branch, checking that
each batch ends on the hash we noted, so the peer cannot switch branches in
between. A branch that never gets there costs us memory for one hash per
2000 headers and no disk at all.

Bodies are fetched by :class:`Downloader`, one download at a time for the
node, from every peer that has them (``node.p2p.download``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from consensus import header as header_codec
from consensus.errors import BlockRejected, Reject
from consensus.header import Header, header_hash
from consensus.pow import check_proof_of_work
from node import limits
from node.chain_service import ChainService, header_work
from node.chainstate import min_branch_work
from node.p2p import messages as m
from node.p2p.connections import ConnectionManager
from node.p2p.download import BlockDownloader
from node.p2p.intake import BlockIntake
from node.p2p.penalties import Misbehaviour
from node.p2p.session import PeerError

log = logging.getLogger("gradchain.sync")


class SyncAborted(Exception):
    """The peer broke a sync rule; ``code`` says which (the caller charges it)."""

    def __init__(self, code: Reject | Misbehaviour, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass
class _Presync:
    """A low-work branch being counted, not stored: where it started and its batch ends."""

    locator: list[bytes]  # the locator that started it, to ask again once it proves its work
    work: int  # claimed work up to the last header seen
    ends: list[bytes] = field(default_factory=list)  # hash of the last header of each batch


def continuity_problem(headers: list[Header]) -> str | None:
    """Why ``headers`` are not a chain (each one's prev the hash of the one before), or None."""
    for i in range(1, len(headers)):
        if headers[i].prev != header_hash(headers[i - 1]):
            return f"header {i} does not follow header {i - 1}"
    return None


class HeaderSync:
    """Per-peer header sync (module docstring); wakes the downloader when bodies are missing."""

    def __init__(self, chain: ChainService, conns: ConnectionManager, downloader: Downloader) -> None:
        self.chain = chain
        self.conns = conns
        self.downloader = downloader
        self._active: dict[str, asyncio.Task[None]] = {}

    @property
    def syncing(self) -> bool:
        return bool(self._active) or self.downloader.running

    def request(self, url: str) -> None:
        """Start syncing from ``url`` unless a sync with it is already running."""
        if url not in self._active:
            self.conns.spawn(self.sync_from(url))

    async def sync_from(self, url: str) -> None:
        """Fetch headers from ``url`` until it has no more, then download the missing bodies."""
        task = self._active.get(url)
        if task is None:
            task = asyncio.ensure_future(self._sync(url))
            self._active[url] = task
            task.add_done_callback(lambda _t: self._active.pop(url, None))
        await asyncio.shield(task)

    async def _sync(self, url: str) -> None:
        try:
            await self._headers_from(url)
        except SyncAborted as exc:
            log.info("sync with %s stopped: %s", url, exc)
            self.conns.punish(url, exc.code, str(exc))
        except PeerError as exc:
            self.conns.drop(url, str(exc))
        if self.chain.snapshot.bodies_missing:
            await self.downloader.run()

    async def _get_headers(self, url: str, locator: list[bytes]) -> list[Header]:
        reply = await self.conns.request(url, "headers", m.GetHeaders(locator=tuple(locator), stop=m.ZERO_HASH),
                                         "headers")
        assert isinstance(reply, m.Headers)
        try:
            headers = [header_codec.decode(raw) for raw in reply.headers]
        except BlockRejected as exc:
            raise SyncAborted(exc.code, f"undecodable header: {exc}") from None
        problem = continuity_problem(headers)
        if problem is not None:
            raise SyncAborted(Misbehaviour.PROTOCOL_VIOLATION, f"headers are not a chain: {problem}")
        return headers

    def _check_work(self, headers: list[Header]) -> None:
        """Each header meets its own bits (no chain context: the cheap half of validation)."""
        params = self.chain.snapshot.params
        for header in headers:
            try:
                check_proof_of_work(header_hash(header), header.bits, params)
            except BlockRejected as exc:
                raise SyncAborted(exc.code, f"header without its proof of work: {exc}") from None

    def _threshold(self) -> int:
        snap = self.chain.snapshot
        return min_branch_work(snap.tip_work, snap.tip_bits)

    async def _headers_from(self, url: str) -> None:
        start = await self.chain.run(lambda: self.chain.chain.header_locator())
        locator = list(start)
        presync: _Presync | None = None
        expected: list[bytes] = []  # batch ends a proven branch must repeat, in order
        last_height = -1
        while url in self.conns.peers:
            headers = await self._get_headers(url, locator)
            if not headers:
                return
            full = len(headers) >= limits.MAX_HEADERS_PER_MESSAGE
            end = header_hash(headers[-1])
            if presync is not None:
                if headers[0].prev != presync.ends[-1]:
                    raise SyncAborted(Misbehaviour.PROTOCOL_VIOLATION, "presync batch does not continue the last")
                self._check_work(headers)
                presync.work += header_work(headers)
                if full:
                    presync.ends.append(end)
                if presync.work >= self._threshold():
                    expected, locator, presync = presync.ends, presync.locator, None  # prove it: store it now
                    continue
                if not full:
                    log.info("ignored a branch from %s: its work stays below our anti-DoS threshold", url)
                    return
                if len(presync.ends) > limits.MAX_PRESYNC_BATCHES:
                    return
                locator = [end, *presync.locator[: limits.MAX_LOCATOR_HASHES - 1]]
                continue
            parent_work = await self.chain.run(self.chain.parent_work, headers[0].prev)
            if parent_work is None:
                raise SyncAborted(Misbehaviour.PROTOCOL_VIOLATION, "headers do not connect to anything we know")
            if not expected and parent_work + header_work(headers) < self._threshold():
                # Work is only counted, not trusted, until the branch is stored and validated.
                self._check_work(headers)
                if not full:
                    log.info("ignored %d low-work headers from %s (below the anti-DoS threshold)", len(headers), url)
                    return
                presync = _Presync(list(locator), parent_work + header_work(headers), [end])
                locator = [end, *locator[: limits.MAX_LOCATOR_HASHES - 1]]
                continue
            if expected:  # storing a branch that proved its work: its full batches must end as before
                if not full or end != expected[0]:
                    raise SyncAborted(Misbehaviour.PROTOCOL_VIOLATION, "the branch differs from the one it proved")
                expected = expected[1:]
            try:
                accepted = await self.chain.accept_headers(headers)
            except BlockRejected as exc:
                if exc.code == Reject.UNKNOWN_PARENT:
                    raise SyncAborted(Misbehaviour.PROTOCOL_VIOLATION, "headers do not connect") from None
                raise SyncAborted(exc.code, f"invalid header: {exc}") from None
            if accepted.new:
                self.downloader.intake.connected_by(url)
            if self.chain.snapshot.bodies_missing:
                self.downloader.wake()
            if not full:
                return
            if accepted.last_height <= last_height:
                raise SyncAborted(Misbehaviour.PROTOCOL_VIOLATION,
                                  f"a full batch of headers that ends at height {accepted.last_height} again")
            last_height = accepted.last_height
            locator = [end, *locator[: limits.MAX_LOCATOR_HASHES - 1]]


class Downloader:
    """Runs at most one block download for the node; :meth:`wake` starts one if none runs."""

    def __init__(self, chain: ChainService, conns: ConnectionManager, intake: BlockIntake,
                 event: Callable[[str, str], None]) -> None:
        self.chain = chain
        self.conns = conns
        self.intake = intake
        self._event = event
        self._task: asyncio.Task[None] | None = None
        self._again = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        if self.running:
            self._again = True
        else:
            self._task = self.conns.spawn(self._loop())

    async def run(self) -> None:
        """Wake the downloader and wait until it has nothing more it can fetch."""
        self.wake()
        assert self._task is not None
        await asyncio.shield(self._task)

    async def _loop(self) -> None:
        while True:
            self._again = False
            missing = await self.chain.run(self.chain.chain.missing_bodies, limits.MAX_BLOCKS_IN_FLIGHT_TOTAL * 64)
            if missing:
                before = self.chain.snapshot.tip_hash
                await BlockDownloader(self.conns, self.intake, missing, self._event).run()
                progressed = self.chain.snapshot.tip_hash != before
            else:
                progressed = False
            if not (self._again or progressed and self.chain.snapshot.bodies_missing):
                return
