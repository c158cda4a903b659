"""The address book: which peer URLs a node knows, bucketed so no one source can fill it.

After Bitcoin Core's addrman (src/addrman.cpp), in our own terms. Addresses
live in two tables of fixed-size buckets:

* **new**: heard of, never reached. The bucket of an address depends on the
  network group of the address *and of the peer that told us* (its source),
  through a secret key: one source group can reach only
  ``NEW_BUCKETS_PER_SOURCE_GROUP`` of the ``NEW_BUCKETS`` buckets, so a
  peer that floods us with a million fake addresses fills a sixteenth of the
  table at most, and honest addresses heard from other peers keep their
  places. A newcomer whose slot is taken replaces the occupant only if that
  one is "terrible" (long unreachable, or never reached after a few tries).
* **tried**: reached at least once. Only a successful connection moves an
  address here, so an attacker cannot put one there without running a
  node at it; the bucket depends on the address's own group.

Dialling picks tried and new addresses half and half, and within a table
favours addresses not tried recently. Memory is bounded by the table sizes,
whatever a peer sends.

Across restarts the book is saved to ``DATADIR/peers.json``
(``node.p2p.peerfiles``): each address with its source group, its table and
its history (first seen, last try, last success, failed attempts), and
:meth:`AddressBook.restore` rebuilds it - under a **new key**. Bitcoin Core
keeps its key in peers.dat so every address returns to its slot; we draw a
fresh one at every start and store none, because:

* the file then holds nothing secret. With the key, whoever reads the file
  once (a copied datadir, a backup: the cookie in it is stale at the next
  start, a saved key would not be) can compute which addresses it controls
  land in the tried slot of a given honest peer, and displace that peer by
  answering one dial - for as long as the node keeps the key: a step
  towards an eclipse. A fresh key ends that at the next restart.
* a flood that filled new-table slots before a restart does not keep them
  by position: every address is placed again, the proven ones first
  (tried, then by last success; then fewest failures, then the longest
  known, since a flooder's addresses are the newest), and a collision is
  won by the one placed first. The per-source-group bound holds again,
  from each address's saved source group.

The price: addresses that collide under the new key are dropped (a tried
one falls back to the new table first). In a book of tens of addresses, a
testnet's, that is rare; in a nearly full one it is a third of the new
table (measured: 7542 addresses, new table 92 % full, 4965 placed again),
all of it addresses heard of and never reached, which gossip brings back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from node.p2p.netgroups import url_group

NEW_BUCKETS = 256  # x BUCKET_SLOTS = 8192 addresses heard of
TRIED_BUCKETS = 64  # x BUCKET_SLOTS = 2048 addresses reached
BUCKET_SLOTS = 32
NEW_BUCKETS_PER_SOURCE_GROUP = 16  # 1/16 of the new table is all one source group can reach
TRIED_BUCKETS_PER_GROUP = 4  # one group's reached addresses spread over this many tried buckets

HORIZON_S = 30 * 24 * 3600.0  # an address unreached this long after we heard it is terrible
MAX_RETRIES = 3  # failed dials of a never-reached address before it is terrible
MAX_FAILURES = 10  # failed dials since the last success, over MIN_FAIL_S, make a tried address terrible
MIN_FAIL_S = 7 * 24 * 3600.0
RECENT_TRY_S = 600.0  # an address dialled this recently is picked a hundred times less often
RECENT_TRY_CHANCE = 0.01
FAILURE_CHANCE = 0.66  # each failed attempt (up to 8) makes an address this much less likely
SELF_SOURCE = "self"  # the source group of seeds and of addresses a peer gave for itself


@dataclass
class AddrInfo:
    """What the book knows about one URL."""

    url: str
    source_group: str
    first_seen: float
    last_try: float = 0.0
    last_success: float = 0.0
    attempts: int = 0  # failed dials since the last success
    tried: bool = False

    def is_terrible(self, now: float) -> bool:
        """Worth replacing: long unreachable or failing (never when tried in the last minute)."""
        if now - self.last_try < 60.0:
            return False
        if self.last_success == 0.0:
            return now - self.first_seen > HORIZON_S or self.attempts >= MAX_RETRIES
        return now - self.last_success > MIN_FAIL_S and self.attempts >= MAX_FAILURES

    def chance(self, now: float) -> float:
        """Relative odds of being picked for a dial."""
        odds = RECENT_TRY_CHANCE if now - self.last_try < RECENT_TRY_S else 1.0
        return odds * FAILURE_CHANCE ** min(self.attempts, 8)


class AddressBook:
    """Bucketed tables of peer URLs (see the module docstring); not thread-safe (the loop owns it)."""

    def __init__(self, key: bytes, rng: random.Random | None = None) -> None:
        self._key = key
        self._rng = rng or random.Random()
        self._info: dict[str, AddrInfo] = {}
        self._new: dict[tuple[int, int], str] = {}
        self._tried: dict[tuple[int, int], str] = {}
        self._slot_of: dict[str, tuple[int, int]] = {}  # where each URL sits in its table

    # -- hashing -----------------------------------------------------------------------------
    def _hash(self, *parts: object) -> int:
        data = b"\x00".join(str(p).encode() for p in parts)
        return int.from_bytes(hashlib.sha256(self._key + data).digest()[:8], "little")

    def _new_slot(self, url: str, source_group: str) -> tuple[int, int]:
        spread = self._hash("new1", url_group(url), source_group) % NEW_BUCKETS_PER_SOURCE_GROUP
        bucket = self._hash("new2", source_group, spread) % NEW_BUCKETS
        return bucket, self._hash("slot", "new", bucket, url) % BUCKET_SLOTS

    def _tried_slot(self, url: str) -> tuple[int, int]:
        spread = self._hash("tried1", url) % TRIED_BUCKETS_PER_GROUP
        bucket = self._hash("tried2", url_group(url), spread) % TRIED_BUCKETS
        return bucket, self._hash("slot", "tried", bucket, url) % BUCKET_SLOTS

    # -- reading -----------------------------------------------------------------------------
    def __contains__(self, url: object) -> bool:
        return url in self._info

    def __len__(self) -> int:
        return len(self._info)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._info))

    def info(self, url: str) -> AddrInfo | None:
        return self._info.get(url)

    @property
    def tried_count(self) -> int:
        return len(self._tried)

    def sample(self, count: int) -> list[str]:
        """Up to ``count`` random URLs, reached ones first: what an Addr reply shares."""
        tried = [u for u, i in self._info.items() if i.tried]
        new = [u for u, i in self._info.items() if not i.tried]
        picked = self._rng.sample(tried, min(count, len(tried)))
        return picked + self._rng.sample(new, min(count - len(picked), len(new)))

    def select(self, now: float, eligible: Callable[[str], bool]) -> str | None:
        """A URL to dial: tried or new half and half, recent failures less likely; None if none is eligible."""
        tables = [True, False]
        if self._rng.random() < 0.5:
            tables.reverse()
        for tried in tables:
            pool = [i for i in self._info.values() if i.tried == tried and eligible(i.url)]
            if pool:
                return self._rng.choices(pool, weights=[i.chance(now) for i in pool])[0].url
        return None

    # -- writing -----------------------------------------------------------------------------
    def add(self, url: str, source_group: str, now: float) -> bool:
        """Remember ``url``, heard from a peer of ``source_group``; True if it is newly stored.

        A URL already known keeps its place. A taken slot is given up only by
        a terrible occupant; otherwise the newcomer is dropped.
        """
        if url in self._info:
            return False
        slot = self._new_slot(url, source_group)
        occupant = self._new.get(slot)
        if occupant is not None:
            if not self._info[occupant].is_terrible(now):
                return False
            self._forget(occupant)
        self._info[url] = AddrInfo(url, source_group, now)
        self._new[slot] = url
        self._slot_of[url] = slot
        return True

    def attempt(self, url: str, now: float) -> None:
        """A dial of ``url`` is starting; :meth:`good` or :meth:`failed` follows."""
        info = self._info.get(url)
        if info is not None:
            info.last_try = now

    def failed(self, url: str) -> None:
        info = self._info.get(url)
        if info is not None:
            info.attempts += 1

    def good(self, url: str, now: float) -> None:
        """``url`` answered a handshake: move it to the tried table (adding it if unknown).

        An occupant of its tried slot goes back to the new table (heard from
        itself), or is forgotten if that slot is taken too.
        """
        info = self._info.get(url)
        if info is None:
            self.add(url, SELF_SOURCE, now)
            info = self._info.get(url)
            if info is None:  # its new slot was taken: it enters tried directly
                info = self._info[url] = AddrInfo(url, SELF_SOURCE, now)
        info.last_success = info.last_try = now
        info.attempts = 0
        if info.tried:
            return
        self._unslot(url)
        slot = self._tried_slot(url)
        displaced = self._tried.get(slot)
        if displaced is not None:
            self._unslot(displaced)
            old = self._info.pop(displaced)
            old.tried = False
            back = self._new_slot(displaced, SELF_SOURCE)
            if back not in self._new:
                self._info[displaced] = old
                self._new[back] = displaced
                self._slot_of[displaced] = back
        info.tried = True
        self._tried[slot] = url
        self._slot_of[url] = slot

    def entries(self) -> list[AddrInfo]:
        """Every address the book holds (the live records: read them on the loop, do not keep them)."""
        return list(self._info.values())

    def restore(self, saved: Iterable[AddrInfo]) -> int:
        """Place addresses read back from disk, best first; returns how many found a slot.

        Tried addresses go to the tried table (one whose slot is taken falls
        back to the new table, as a displaced one does in :meth:`good`); the
        rest go to the new table's slot for their saved source group, so one
        source group still reaches only its share of the buckets. A taken
        slot stays with the address placed first: the better one.
        """
        def merit(info: AddrInfo) -> tuple[bool, float, int, float]:
            # never reached: fewest failures, then the longest known (a flood's are the newest)
            return (not info.tried, -info.last_success, info.attempts, info.first_seen)

        placed = 0
        for info in sorted(saved, key=merit):
            if info.url in self._info:
                continue
            if info.tried:
                slot = self._tried_slot(info.url)
                if slot not in self._tried:
                    self._place(info, self._tried, slot)
                    placed += 1
                    continue
                info = dataclasses.replace(info, tried=False)
            slot = self._new_slot(info.url, info.source_group)
            if slot not in self._new:
                self._place(info, self._new, slot)
                placed += 1
        return placed

    def _place(self, info: AddrInfo, table: dict[tuple[int, int], str], slot: tuple[int, int]) -> None:
        self._info[info.url] = info
        table[slot] = info.url
        self._slot_of[info.url] = slot

    def discard(self, url: str) -> None:
        """Forget ``url`` (a banned peer, a test's partition)."""
        if url in self._info:
            self._forget(url)

    def clear(self) -> None:
        self._info.clear()
        self._new.clear()
        self._tried.clear()
        self._slot_of.clear()

    def _unslot(self, url: str) -> None:
        slot = self._slot_of.pop(url, None)
        if slot is None:
            return
        table = self._tried if self._info[url].tried else self._new
        if table.get(slot) == url:
            del table[slot]

    def _forget(self, url: str) -> None:
        self._unslot(url)
        del self._info[url]
