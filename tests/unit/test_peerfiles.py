"""banlist.json and peers.json: what a restart reads back, and what a bad file cannot do to it.

The attacker here is whatever put bytes in the datadir: a crash half-way
through an edit, a disk error, a user who copied in another node's files,
or a local process that planted a symbolic link or a huge file. None of it
may stop the node, cost it unbounded memory, or bring back a ban's end or
an address we could not have written.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import tracemalloc

import pytest

from node import limits
from node.p2p import addrman, peerfiles
from node.p2p.addrman import AddressBook, AddrInfo
from node.p2p.peerfiles import BANS_FILE, PEERS_FILE, load_bans, load_book

NOW = 1_800_000_000.0
DAY = limits.BAN_DURATION_S
MILLION = 10**6


def bans_of(datadir: pathlib.Path, now: float = NOW) -> peerfiles.Loaded[dict[str, float]]:
    return load_bans(datadir, now, DAY, limits.MAX_BANNED_PEERS)


def write_lines(path: pathlib.Path, header: dict[str, object], entries: list[object]) -> None:
    path.write_text("\n".join(json.dumps(x) for x in [header, *entries]) + "\n")


def bans_header(count: int, **changes: object) -> dict[str, object]:
    return {"file": peerfiles.BANS_KIND, "version": peerfiles.VERSION, "entries": count, **changes}


def saved_bans(datadir: pathlib.Path, bans: dict[str, float]) -> None:
    assert peerfiles.save(datadir / BANS_FILE, peerfiles.bans_document(bans)) is None


# -- bans ---------------------------------------------------------------------------------------------
def test_bans_come_back_with_their_end_and_ended_ones_do_not(tmp_path: pathlib.Path) -> None:
    bans = {"10.0.0.7": NOW + 100, "2001:db8::1": NOW + DAY, "http://127.0.0.1:8733": NOW + 5,
            "peer.example.com": NOW - 1}
    saved_bans(tmp_path, bans)
    loaded = bans_of(tmp_path)
    assert loaded.notes == []
    assert loaded.items == {k: v for k, v in bans.items() if v > NOW}, "an ended ban is dropped quietly"
    assert bans_of(tmp_path, now=NOW + 100).items == {"2001:db8::1": NOW + DAY}
    assert oct((tmp_path / BANS_FILE).stat().st_mode & 0o777) == "0o600"


def test_a_missing_file_is_an_empty_list_without_a_word(tmp_path: pathlib.Path) -> None:
    assert bans_of(tmp_path).items == {} and bans_of(tmp_path).notes == []
    assert load_book(tmp_path, NOW).items == [] and load_book(tmp_path, NOW).notes == []


@pytest.mark.parametrize("peer", [
    "", "evil host", "http://10.0.0.1:1",  # a remote URL: bans of remote peers are by host
    "::1",  # the shared local host is banned by URL, never whole
    "http://127.0.0.1:99999", "a" * 300, "10.0.0.1:80", 42, None, ["10.0.0.1"],
])
def test_an_entry_naming_no_host_is_dropped_alone(tmp_path: pathlib.Path, peer: object) -> None:
    write_lines(tmp_path / BANS_FILE, bans_header(2),
                [{"peer": peer, "until": NOW + 10}, {"peer": "10.0.0.9", "until": NOW + 10}])
    loaded = bans_of(tmp_path)
    assert loaded.items == {"10.0.0.9": NOW + 10}
    assert loaded.notes == [f"{BANS_FILE}: entries dropped: 1 naming no host or listen URL"]


@pytest.mark.parametrize("until", [NOW + DAY + peerfiles.CLOCK_SLACK_S + 1, 1e300, float("inf"), float("nan"),
                                   10**400, "soon", True, None])
def test_a_ban_ending_absurdly_far_ahead_or_never_is_dropped(tmp_path: pathlib.Path, until: object) -> None:
    """An end no ban of ours can have: it would outlive every restart (or never end)."""
    text = json.dumps({"peer": "10.0.0.1", "until": until}, allow_nan=True)
    (tmp_path / BANS_FILE).write_text(json.dumps(bans_header(2)) + "\n" + text + "\n"
                                      + json.dumps({"peer": "10.0.0.2", "until": NOW + DAY}) + "\n")
    loaded = bans_of(tmp_path)
    assert loaded.items == {"10.0.0.2": NOW + DAY}
    assert len(loaded.notes) == 1 and "dropped: 1" in loaded.notes[0]


def test_a_peer_listed_twice_keeps_the_later_end(tmp_path: pathlib.Path) -> None:
    write_lines(tmp_path / BANS_FILE, bans_header(2),
                [{"peer": "10.0.0.1", "until": NOW + 50}, {"peer": "10.0.0.1", "until": NOW + 10}])
    assert bans_of(tmp_path).items == {"10.0.0.1": NOW + 50}


@pytest.mark.parametrize(("content", "why"), [
    (b"\x00\xff garbage \x89PNG", "not a gradchain-banlist file"),
    (b"", "not a gradchain-banlist file"),
    (json.dumps({"file": peerfiles.PEERS_KIND, "version": 1, "entries": 0}).encode(), "not a gradchain-banlist"),
    (json.dumps(bans_header(0, version=2)).encode(), "version 2 and this node reads version 1"),
    (json.dumps(bans_header(0, version="1")).encode(), "version '1'"),
    (json.dumps(bans_header(-1)).encode(), "does not say how many entries"),
    (json.dumps(bans_header(3)).encode() + b'\n{"peer": "10.0.0.1", "until": 1800000100.0}\n',
     "cut short after 1 of the 3 entries"),
])
def test_a_file_that_is_not_ours_is_ignored_whole_and_says_why(tmp_path: pathlib.Path, content: bytes,
                                                                  why: str) -> None:
    (tmp_path / BANS_FILE).write_bytes(content)
    loaded = bans_of(tmp_path)
    assert loaded.items == {}
    assert len(loaded.notes) == 1 and why in loaded.notes[0], loaded.notes
    assert loaded.notes[0].startswith(f"{BANS_FILE} ignored: ") and "starting without it" in loaded.notes[0]


def test_a_symlink_is_not_followed_on_reading_or_writing(tmp_path: pathlib.Path) -> None:
    """A link planted at banlist.json: reading ignores it (even to a valid file), saving replaces it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    saved_bans(elsewhere, {"10.0.0.1": NOW + 10})
    target = elsewhere / BANS_FILE
    before = target.read_bytes()
    datadir = tmp_path / "datadir"
    datadir.mkdir()
    (datadir / BANS_FILE).symlink_to(target)
    loaded = bans_of(datadir)
    assert loaded.items == {} and "symbolic link" in loaded.notes[0]
    saved_bans(datadir, {"10.0.0.2": NOW + 10})
    assert target.read_bytes() == before, "the link's target was not written through"
    assert not (datadir / BANS_FILE).is_symlink() and bans_of(datadir).items == {"10.0.0.2": NOW + 10}


def test_a_directory_or_a_fifo_in_its_place_is_ignored(tmp_path: pathlib.Path) -> None:
    (tmp_path / BANS_FILE).mkdir()
    assert "not a regular file" in bans_of(tmp_path).notes[0] or "cannot be opened" in bans_of(tmp_path).notes[0]
    os.mkfifo(tmp_path / PEERS_FILE)  # opened non-blocking: reading never waits for a writer
    assert "not a regular file" in load_book(tmp_path, NOW).notes[0]


def test_a_huge_file_is_refused_by_its_size_without_reading_it(tmp_path: pathlib.Path) -> None:
    """A million real entries (or a sparse 1 TB file): refused from its size, nothing read."""
    path = tmp_path / BANS_FILE
    entry = json.dumps({"peer": "10.0.0.1", "until": NOW + 1}) + "\n"
    path.write_text(json.dumps(bans_header(MILLION)) + "\n" + entry * MILLION)
    tracemalloc.start()
    try:
        loaded = bans_of(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded.items == {} and "more than the" in loaded.notes[0] and "a full list can take" in loaded.notes[0]
    assert peak < 64 * 1024, f"{peak} bytes allocated to refuse a {path.stat().st_size}-byte file"
    with path.open("r+b") as handle:
        handle.truncate(2**40)
    assert bans_of(tmp_path).items == {}


def test_a_million_short_entries_cost_one_table_at_most(tmp_path: pathlib.Path) -> None:
    """Under the size cap but a million lines: only the first full table's worth is read."""
    path = tmp_path / PEERS_FILE
    header = json.dumps({"file": peerfiles.PEERS_KIND, "version": 1, "entries": MILLION})
    path.write_text(header + "\n" + "{}\n" * MILLION)
    tracemalloc.start()
    try:
        loaded = load_book(tmp_path, NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    assert loaded.items == []
    assert f"{MILLION - peerfiles.MAX_BOOK_ENTRIES} entries beyond the first" in " ".join(loaded.notes)
    assert peak < size + 4 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte file"


def test_a_line_too_long_or_not_an_object_is_dropped_alone(tmp_path: pathlib.Path) -> None:
    good = {"peer": "10.0.0.3", "until": NOW + 10}
    long_line = {"peer": "10.0.0.4", "until": NOW + 10, "pad": "x" * peerfiles.MAX_LINE_BYTES}
    (tmp_path / BANS_FILE).write_text("\n".join([
        json.dumps(bans_header(5)), json.dumps(long_line), "[1, 2]", "{not json", "[" * 5000, json.dumps(good)]) + "\n")
    loaded = bans_of(tmp_path)
    assert loaded.items == {"10.0.0.3": NOW + 10}
    assert loaded.notes == [f"{BANS_FILE}: 4 unreadable entries dropped (not a JSON object of at most "
                            f"{peerfiles.MAX_LINE_BYTES} bytes)"]


def test_more_bans_than_the_list_holds_keep_the_first(tmp_path: pathlib.Path) -> None:
    bans = {f"10.0.{i // 256}.{i % 256}": NOW + 1 + i for i in range(30)}
    saved_bans(tmp_path, bans)
    loaded = load_bans(tmp_path, NOW, DAY, max_banned=20)
    assert len(loaded.items) == 20 and "10 entries beyond the first 20" in loaded.notes[0]


def test_a_failed_write_is_a_note_not_an_exception(tmp_path: pathlib.Path) -> None:
    note = peerfiles.save(tmp_path / "no-such-dir" / BANS_FILE, peerfiles.bans_document({}))
    assert note is not None and note.startswith(f"could not save {BANS_FILE}") and "tries again" in note


# -- the address book --------------------------------------------------------------------------------
def book(seed: int) -> AddressBook:
    return AddressBook(key=bytes([seed]) * 32, rng=random.Random(seed))


def test_the_book_comes_back_with_tables_and_history_under_a_new_key(tmp_path: pathlib.Path) -> None:
    before = book(1)
    urls = [f"http://10.{i}.0.1:8733" for i in range(40)]
    for i, url in enumerate(urls):
        before.add(url, f"ip:192.{i % 5}.0.0/16", NOW - 1000)
    reached = urls[:8]
    for url in reached:
        before.good(url, NOW - 10)
    before.attempt(urls[20], NOW - 5)
    before.failed(urls[20])
    assert peerfiles.save(tmp_path / PEERS_FILE, peerfiles.book_document(before.entries())) is None
    loaded = load_book(tmp_path, NOW)
    assert loaded.notes == [] and len(loaded.items) == len(before)
    after = book(2)  # another key: every address is placed again
    placed = after.restore(loaded.items)
    assert placed == len(after) >= len(before) - 3, "a few may collide under the new key, no more"
    for url in after:
        old, new = before.info(url), after.info(url)
        assert old is not None and new is not None
        assert (new.source_group, new.first_seen, new.last_try, new.last_success, new.attempts) == (
            old.source_group, old.first_seen, old.last_try, old.last_success, old.attempts)
        assert new.tried == old.tried or (old.tried and not new.tried), "a tried address never loses its record"
    assert sum(after.info(u).tried for u in reached if u in after) >= len(reached) - 1  # type: ignore[union-attr]


def test_a_flood_saved_before_a_restart_gets_no_more_than_its_share_after(tmp_path: pathlib.Path) -> None:
    """One source's 20000 made-up addresses, saved and restored: still within its 16 buckets."""
    flooded = book(3)
    for i in range(20_000):
        flooded.add(f"http://10.{i % 250}.{(i // 250) % 250}.{i % 7 + 1}:{8000 + i % 50000}", "ip:6.6.0.0/16", NOW)
    share = addrman.NEW_BUCKETS_PER_SOURCE_GROUP * addrman.BUCKET_SLOTS
    assert peerfiles.save(tmp_path / PEERS_FILE, peerfiles.book_document(flooded.entries())) is None
    after = book(4)
    after.restore(load_book(tmp_path, NOW).items)
    assert 0 < len(after) <= share
    honest = [f"http://172.16.{i}.1:8733" for i in range(100)]
    assert sum(after.add(url, f"ip:172.{i % 10}.0.0/16", NOW) for i, url in enumerate(honest)) > 60


def test_a_tried_address_whose_slot_is_taken_falls_back_to_new() -> None:
    b = book(5)
    first = AddrInfo("http://10.0.0.1:1", "self", NOW - 100, NOW - 10, NOW - 10, 0, tried=True)
    slot = b._tried_slot(first.url)
    rival_url = next(u for u in (f"http://10.0.{i}.2:1" for i in range(1, 100_000)) if b._tried_slot(u) == slot)
    rival = AddrInfo(rival_url, "self", NOW - 100, NOW - 20, NOW - 20, 0, tried=True)
    assert b.restore([rival, first]) == 2
    assert b.info(first.url).tried, "the later success takes the tried slot"  # type: ignore[union-attr]
    assert not b.info(rival_url).tried and b.tried_count == 1  # type: ignore[union-attr]


def book_entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {"url": "http://10.1.1.1:8733", "source": "ip:10.2.0.0/16", "tried": True,
                                "first_seen": NOW - 100, "last_try": NOW - 5, "last_success": NOW - 5, "attempts": 0}
    return {**entry, **changes}


@pytest.mark.parametrize("bad", [
    {"url": "ftp://10.1.1.1:1"}, {"url": "http://10.1.1.1:0"}, {"url": "http://" + "a" * 200 + ":1"}, {"url": 5},
    {"source": "somewhere"}, {"source": None}, {"source": "dns:" + "a" * 400},
    {"first_seen": NOW + 2 * peerfiles.CLOCK_SLACK_S}, {"last_try": -1}, {"last_success": float("nan")},
    {"last_try": "yesterday"}, {"last_try": 10**400}, {"tried": 1}, {"attempts": True}, {"attempts": -1}, {"attempts": 2**40},
    {"last_success": 0},  # tried, yet never reached
])
def test_an_address_entry_that_fails_its_check_is_dropped_alone(tmp_path: pathlib.Path,
                                                                 bad: dict[str, object]) -> None:
    header = {"file": peerfiles.PEERS_KIND, "version": 1, "entries": 2}
    good = book_entry(url="http://10.9.9.9:1")
    (tmp_path / PEERS_FILE).write_text("\n".join(
        [json.dumps(header), json.dumps(book_entry(**bad), allow_nan=True), json.dumps(good)]) + "\n")
    loaded = load_book(tmp_path, NOW)
    assert [i.url for i in loaded.items] == ["http://10.9.9.9:1"]
    assert len(loaded.notes) == 1 and loaded.notes[0].startswith(f"{PEERS_FILE}: entries dropped: 1 ")


NASTY_VALUES: list[object] = [10**400, -(10**30), float("nan"), float("inf"), -1, 0, 2**63, True, None, "",
                               "x" * 2000, [1], {"a": 1}, "http://10.0.0.1:1", "::1", 1e308, NOW * 2]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random edit of ``data``: a byte changed, cut, doubled, junk let in, or one field given a nasty value."""
    at = rng.randrange(len(data) + 1)
    move = rng.randrange(7)
    if move >= 5:  # a JSON-aware edit: reaches the checks behind the parser
        lines = data.split(b"\n")
        index = rng.randrange(len(lines))
        try:
            entry = json.loads(lines[index])
        except ValueError:
            return data
        if isinstance(entry, dict) and entry:
            entry[rng.choice(sorted(entry))] = rng.choice(NASTY_VALUES)
            lines[index] = json.dumps(entry, allow_nan=True).encode()
        return b"\n".join(lines)
    if move == 0 and data:
        at = min(at, len(data) - 1)
        return data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
    if move == 1:
        return data[:at]
    if move == 2:
        return data[:at] + data[at:at + rng.randrange(64)] * rng.randrange(2, 50) + data[at:]
    if move == 3:
        junk = rng.choice([b"9" * 400, b"NaN", b"-1e999", b"true", b'"\\ud800"', b"[" * 2000, b"\n", b"{}", b"\x00"])
        return data[:at] + junk + data[at:]
    return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))) + data[at:]


def test_mutated_files_never_raise_and_never_yield_an_entry_we_could_not_have_written() -> None:
    """2000 random edits of real files: every load returns; whatever it keeps passes the checks."""
    rng = random.Random(17)
    original = book(6)
    for i in range(30):
        original.add(f"http://10.{i}.0.1:8733", f"ip:192.{i}.0.0/16", NOW - 1000)
        if i % 3 == 0:
            original.good(f"http://10.{i}.0.1:8733", NOW - 10)
    seeds = {
        BANS_FILE: peerfiles.bans_document({f"10.0.0.{i}": NOW + 10 * i for i in range(1, 30)}
                                           | {"http://127.0.0.1:8733": NOW + 5, "2001:db8::7": NOW + DAY}),
        PEERS_FILE: peerfiles.book_document(original.entries()),
    }
    for _ in range(2000):
        name = rng.choice(sorted(seeds))
        data = seeds[name]
        for _ in range(rng.randrange(1, 4)):
            data = mutate(data, rng)
        if name == BANS_FILE:
            bans = peerfiles.parse_bans(data, NOW, DAY, limits.MAX_BANNED_PEERS).items
            assert len(bans) <= limits.MAX_BANNED_PEERS
            assert all(peerfiles.is_ban_key(p) and NOW < end <= NOW + DAY + peerfiles.CLOCK_SLACK_S
                       for p, end in bans.items()), bans
        else:
            infos = peerfiles.parse_book(data, NOW).items
            assert len(infos) <= peerfiles.MAX_BOOK_ENTRIES
            for info in infos:
                assert peerfiles.is_listen_url(info.url) and isinstance(info.attempts, int)
                assert all(0 <= t <= NOW + peerfiles.CLOCK_SLACK_S
                           for t in (info.first_seen, info.last_try, info.last_success))
            AddressBook(bytes(32)).restore(infos)
