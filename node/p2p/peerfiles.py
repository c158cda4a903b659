"""The ban list and the address book on disk: ``DATADIR/banlist.json`` and ``DATADIR/peers.json``.

Without them a restart forgives every banned peer and leaves the node with
its ``--peer`` seeds only (Bitcoin Core keeps banlist.json and peers.dat for
the same two reasons). Both files are JSON Lines, a header line and then one
entry per line, readable and editable by hand::

    {"file": "gradchain-banlist", "version": 1, "entries": 1}
    {"peer": "10.0.0.7", "until": 1800086400.0}

    {"file": "gradchain-peers", "version": 1, "entries": 1}
    {"url": "http://10.0.0.9:8733", "source": "ip:10.3.0.0/16", "tried": true, "first_seen": 1799990000.0,
     "last_try": 1800000000.0, "last_success": 1800000000.0, "attempts": 0}

Times are wall-clock seconds (Unix time), so a ban ends when it was going to
end, whenever the node restarts. Scores of peers not yet banned are not
saved (a restart forgives a few malformed messages, never a ban).

Why lines, not one JSON document: a reader that parses a line at a time and
keeps only the entries that pass holds at most a full table's worth
(``MAX_BANNED_PEERS`` bans, the address book's slots), whatever the file
holds; ``json.loads`` of a whole document of the same size can build 25
times its size in objects (``[{},{},...]``).

Reading never stops the node. A missing file is an empty list. A file that
is not ours to read is ignored whole, with a note saying what and why, and
the node starts with an empty list (and replaces the file at its next save):
a symbolic link (opened with ``O_NOFOLLOW``: the node reads only files it
wrote), not a regular file, larger than a full list can be, a first line
that is not our header (another kind of file, another version), or a file
cut short before the entries its header counts. An entry that fails its
check is dropped alone: a URL or host that is not a listen address, a ban
ending further ahead than a ban lasts, a time in the future, a line over
``MAX_LINE_BYTES``; so are entries beyond the table's size.

Writing goes through ``node.keystore_file.write_private_file``: a fresh
0600 temp file beside the target, fsynced, renamed over it; a symbolic link
planted at the name is replaced, never followed. A write that fails is a
note, and the node runs on.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from node.keystore_file import KeystoreFileError, write_private_file
from node.p2p.addrman import BUCKET_SLOTS, NEW_BUCKETS, TRIED_BUCKETS, AddrInfo
from node.p2p.messages import is_listen_url
from node.p2p.netgroups import ban_key

T = TypeVar("T")

BANS_FILE = "banlist.json"
PEERS_FILE = "peers.json"
BANS_KIND = "gradchain-banlist"
PEERS_KIND = "gradchain-peers"
VERSION = 1
MAX_LINE_BYTES = 1024  # an entry's line; the longest we write (two 128-char URLs and five numbers) is ~400
MAX_BOOK_ENTRIES = (NEW_BUCKETS + TRIED_BUCKETS) * BUCKET_SLOTS  # every slot of both tables
CLOCK_SLACK_S = 3600.0  # how far ahead of our clock a saved time may be (a clock stepped back, NTP)
MAX_SOURCE_CHARS = 300  # "dns:" + a 253-char name is the longest source group
SOURCE_PREFIXES = ("self", "local:", "ip:", "dns:")  # the forms of netgroups.url_group and SELF_SOURCE
MAX_ATTEMPTS = 2**31  # failed dials: any real count is far below


@dataclass
class Loaded(Generic[T]):
    """What a file gave back, and notes in plain words on what was ignored and why."""

    items: T
    notes: list[str] = field(default_factory=list)


# -- reading ----------------------------------------------------------------------------------------
def _open_for_reading(path: Path) -> tuple[int | None, str | None]:
    """A descriptor of ``path`` if it is a regular file we may read; else why not (None, None: absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "it is a symbolic link (the node reads only the files it wrote)"
        return None, f"it cannot be opened ({exc.strerror})"
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None, "it is not a regular file"
    return fd, None


def _lines(data: bytes) -> Iterator[bytes]:
    """The lines of ``data`` one at a time (no list of them all: a file of newlines stays cheap)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        yield data[start:end]
        start = end + 1


def _json_object(line: bytes | None) -> dict[str, Any] | None:
    """``line`` as a JSON object, or None (too long, not JSON, not an object)."""
    if line is None or len(line) > MAX_LINE_BYTES:
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _ignored(name: str, why: str | None) -> list[str]:
    """The note for a file ignored whole (none for a file that is simply not there)."""
    return [] if why is None else [f"{name} ignored: {why}; starting without it (the next save replaces it)"]


def _cap(max_entries: int) -> int:
    """The largest file of ``max_entries`` entries: a header and that many lines, each at most a line long."""
    return (max_entries + 1) * (MAX_LINE_BYTES + 1)


def _read_file(path: Path, max_entries: int) -> tuple[bytes | None, str | None]:
    """The bytes of ``path``, or why it is ignored whole (None, None: there is no such file)."""
    fd, why = _open_for_reading(path)
    if fd is None:
        return None, why
    try:
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > _cap(max_entries):
                return None, f"it holds {size} bytes, more than the {_cap(max_entries)} a full list can take"
            return handle.read(size), None  # never more than the size it had when opened
    except OSError as exc:  # a disk error: the node can run without the file
        return None, f"reading it failed ({exc.strerror})"


def _entries(data: bytes, name: str, kind: str, max_entries: int) -> Loaded[list[dict[str, Any]]]:
    """The entry lines of a file's ``data`` as JSON objects (not yet checked), at most ``max_entries``.

    The whole file is ignored (no entries, one note) if it is not a
    ``kind`` file of this version holding every entry its header counts, or
    larger than such a file can be.
    """
    if len(data) > _cap(max_entries):
        return Loaded([], _ignored(name, f"it holds {len(data)} bytes, more than the {_cap(max_entries)} a full "
                                         "list can take"))
    lines = _lines(data)
    header = _json_object(next(lines, None))
    if header is None or header.get("file") != kind:
        return Loaded([], _ignored(name, f"it is not a {kind} file (no header line naming it)"))
    if header.get("version") != VERSION:
        return Loaded([], _ignored(name, f"it is version {header.get('version')!r} and this node reads "
                                         f"version {VERSION}"))
    count = header.get("entries")
    if type(count) is not int or count < 0:
        return Loaded([], _ignored(name, "its header does not say how many entries follow"))
    entries: list[dict[str, Any]] = []
    unreadable = 0
    for index in range(min(count, max_entries)):
        line = next(lines, None)
        if line is None:
            return Loaded([], _ignored(name, f"it is cut short after {index} of the {count} entries its "
                                             "header counts"))
        entry = _json_object(line)
        if entry is None:
            unreadable += 1
        else:
            entries.append(entry)
    notes = []
    if unreadable:
        notes.append(f"{name}: {unreadable} unreadable entries dropped (not a JSON object of at most "
                     f"{MAX_LINE_BYTES} bytes)")
    if count > max_entries:
        notes.append(f"{name}: {count - max_entries} entries beyond the first {max_entries} (all a full "
                     "list holds) dropped")
    return Loaded(entries, notes)


def _number(value: object) -> float | None:
    """``value`` as a finite float if JSON gave a number (not a bool, not a 400-digit integer)."""
    if type(value) is int and abs(value) < 2**63:
        return float(value)
    if type(value) is float and math.isfinite(value):
        return value
    return None


def _is_time(value: object, now: float) -> bool:
    """A wall-clock time we could have written: a finite number from 0 to a little past ``now``."""
    number = _number(value)
    return number is not None and 0 <= number <= now + CLOCK_SLACK_S


def is_ban_key(peer: object) -> bool:
    """True for what ``netgroups.ban_key`` makes of a listen URL: a host, or a whole shared-local URL."""
    if not isinstance(peer, str) or not peer:
        return False
    if peer.startswith("http://"):
        url = peer
    elif ":" in peer:  # an IPv6 host (the URL pattern takes any hex and colons in brackets)
        try:
            ipaddress.IPv6Address(peer)
        except ValueError:
            return False
        url = f"http://[{peer}]:1"
    else:
        url = f"http://{peer}:1"
    try:
        return is_listen_url(url) and ban_key(url) == peer
    except ValueError:
        return False


def _dropped_note(name: str, reasons: collections.Counter[str]) -> list[str]:
    if not reasons:
        return []
    said = "; ".join(f"{count} {reason}" for reason, count in reasons.most_common())
    return [f"{name}: entries dropped: {said}"]




def load_bans(datadir: Path, now: float, duration_s: float, max_banned: int) -> Loaded[dict[str, float]]:
    """Bans still running at ``now`` from ``DATADIR/banlist.json`` (see :func:`parse_bans`)."""
    data, why = _read_file(datadir / BANS_FILE, max_banned)
    if data is None:
        return Loaded({}, _ignored(BANS_FILE, why))
    return parse_bans(data, now, duration_s, max_banned)


def load_book(datadir: Path, now: float) -> Loaded[list[AddrInfo]]:
    """The addresses saved in ``DATADIR/peers.json`` (see :func:`parse_book`)."""
    data, why = _read_file(datadir / PEERS_FILE, MAX_BOOK_ENTRIES)
    if data is None:
        return Loaded([], _ignored(PEERS_FILE, why))
    return parse_book(data, now)


def parse_bans(data: bytes, now: float, duration_s: float, max_banned: int) -> Loaded[dict[str, float]]:
    """The bans in the text of a banlist.json still running at ``now``: peer -> end time.

    A ban may end at most ``duration_s`` (how long a ban lasts) plus
    ``CLOCK_SLACK_S`` after ``now``; a later end is not one we wrote. Of a
    peer listed twice the later end counts. Ended bans are dropped quietly.
    """
    read = _entries(data, BANS_FILE, BANS_KIND, max_banned)
    bans: dict[str, float] = {}
    reasons: collections.Counter[str] = collections.Counter()
    for entry in read.items:
        peer, until = entry.get("peer"), _number(entry.get("until"))
        if not isinstance(peer, str) or not is_ban_key(peer):
            reasons["naming no host or listen URL"] += 1
        elif until is None:
            reasons["without an end time"] += 1
        elif until > now + duration_s + CLOCK_SLACK_S:
            reasons[f"ending more than {int(duration_s)}s (a ban's length) from now"] += 1
        elif until > now:
            bans[peer] = max(until, bans.get(peer, 0.0))
    return Loaded(bans, read.notes + _dropped_note(BANS_FILE, reasons))


def parse_book(data: bytes, now: float) -> Loaded[list[AddrInfo]]:
    """The addresses in the text of a peers.json, checked one by one (for ``AddressBook.restore``)."""
    read = _entries(data, PEERS_FILE, PEERS_KIND, MAX_BOOK_ENTRIES)
    infos: list[AddrInfo] = []
    reasons: collections.Counter[str] = collections.Counter()
    for entry in read.items:
        url, source, tried, attempts = (entry.get(k) for k in ("url", "source", "tried", "attempts"))
        times = [entry.get(k) for k in ("first_seen", "last_try", "last_success")]
        if not isinstance(url, str) or not is_listen_url(url):
            reasons["without a listen URL"] += 1
        elif (not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS
              or not source.startswith(SOURCE_PREFIXES)):
            reasons["without a source group"] += 1
        elif not all(_is_time(t, now) for t in times):
            reasons["with a time that is not a past wall-clock time"] += 1
        elif type(tried) is not bool or type(attempts) is not int or not 0 <= attempts < MAX_ATTEMPTS:
            reasons["with a malformed table or attempt count"] += 1
        elif tried and times[2] == 0:
            reasons["tried but never reached"] += 1
        else:
            first_seen, last_try, last_success = (_number(t) or 0.0 for t in times)
            infos.append(AddrInfo(url, source, first_seen, last_try, last_success, attempts, tried))
    return Loaded(infos, read.notes + _dropped_note(PEERS_FILE, reasons))


# -- writing ----------------------------------------------------------------------------------------
def _document(kind: str, entries: list[dict[str, Any]]) -> bytes:
    lines = [json.dumps({"file": kind, "version": VERSION, "entries": len(entries)})]
    lines.extend(json.dumps(entry) for entry in entries)
    return ("\n".join(lines) + "\n").encode()


def bans_document(bans: Mapping[str, float]) -> bytes:
    """The text of banlist.json for ``bans`` (peer -> end time), soonest end first."""
    return _document(BANS_KIND, [{"peer": peer, "until": until}
                                 for peer, until in sorted(bans.items(), key=lambda item: item[1])])


def book_document(infos: Iterable[AddrInfo]) -> bytes:
    """The text of peers.json for the address book's entries."""
    return _document(PEERS_KIND, [
        {"url": i.url, "source": i.source_group, "tried": i.tried, "first_seen": i.first_seen,
         "last_try": i.last_try, "last_success": i.last_success, "attempts": i.attempts}
        for i in infos
    ])


def save(path: Path, data: bytes) -> str | None:
    """Replace ``path`` with ``data`` atomically (module docstring); None, or a note if it failed."""
    try:
        write_private_file(path, data)
    except (OSError, KeystoreFileError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"could not save {path.name} in {path.parent} ({why}); the node runs on and tries again later"
    return None
