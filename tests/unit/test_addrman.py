"""The bucketed address book: bounded, a flood from one source cannot crowd out the rest."""

from __future__ import annotations

import random

import pytest

from node.p2p import addrman
from node.p2p.addrman import AddressBook
from node.p2p.netgroups import ban_key, host_group, split_url, url_group

NOW = 1_800_000_000.0
FLOOD = 20_000  # addresses one attacker sends: more than the whole new table holds


def book(seed: int = 1) -> AddressBook:
    return AddressBook(key=bytes([seed]) * 32, rng=random.Random(seed))


def fake(i: int) -> str:
    """Addresses spread over many /16s, as a flooder would choose them."""
    return f"http://10.{i % 250}.{(i // 250) % 250}.{i % 7 + 1}:{8000 + i % 50000}"


def test_groups_and_ban_keys() -> None:
    assert split_url("http://[::1]:8733") == ("::1", 8733)
    assert host_group("10.1.2.3") == host_group("10.1.200.9") != host_group("10.2.0.1")
    assert host_group("a.b.example.com") == host_group("example.com") == "dns:example.com"
    assert host_group("2001:db8:1::1") == host_group("2001:db8:ffff::2")
    assert url_group("http://127.0.0.1:1") != url_group("http://127.0.0.1:2"), "local nodes differ by port"
    assert url_group("http://127.0.0.2:1") == url_group("http://127.0.0.9:2"), "other loopback hosts are hosts"
    assert ban_key("http://10.0.0.1:1") == ban_key("http://10.0.0.1:2") == "10.0.0.1"
    assert ban_key("http://127.0.0.1:1") == "http://127.0.0.1:1" != ban_key("http://127.0.0.1:2")
    with pytest.raises(ValueError):
        split_url("ftp://x:1")


def test_a_flood_from_one_source_fills_at_most_its_share_of_the_new_table() -> None:
    b = book()
    honest = [f"http://192.168.{i}.1:8733" for i in range(200)]
    for i, url in enumerate(honest):
        b.add(url, f"src{i % 20}", NOW)
    before = {u for u in honest if u in b}
    assert len(before) > 150, "honest addresses from 20 sources mostly find a slot"
    for i in range(FLOOD):
        b.add(fake(i), "ip:6.6.0.0/16", NOW)
    share = addrman.NEW_BUCKETS_PER_SOURCE_GROUP * addrman.BUCKET_SLOTS
    flooded = sum(1 for u in b if u.startswith("http://10."))
    assert flooded <= share, f"{flooded} flood addresses > the source's {share} slots"
    assert all(u in b for u in before), "nothing the flood sent evicted an honest address"
    later = [f"http://172.16.{i}.1:8733" for i in range(100)]
    for i, url in enumerate(later):
        b.add(url, f"later{i % 10}", NOW)
    assert sum(u in b for u in later) > 60, "honest addresses heard after the flood still get in"
    assert len(b) <= addrman.NEW_BUCKETS * addrman.BUCKET_SLOTS + addrman.TRIED_BUCKETS * addrman.BUCKET_SLOTS


def test_terrible_addresses_give_way_and_good_ones_move_to_tried() -> None:
    b = book()
    first = "http://10.0.0.1:1"
    assert b.add(first, "s", NOW)
    slot = b._new_slot(first, "s")
    # Find another URL from the same source that lands in the same slot.
    rival = next(u for u in (f"http://10.0.{i}.2:1" for i in range(1, 100_000)) if b._new_slot(u, "s") == slot)
    assert not b.add(rival, "s", NOW + 1), "a fresh occupant keeps its slot"
    for _ in range(addrman.MAX_RETRIES):
        b.attempt(first, NOW + 10)
        b.failed(first)
    assert b.add(rival, "s", NOW + 120), "an occupant that never answered gives way"
    assert first not in b and rival in b
    b.good(rival, NOW + 130)
    info = b.info(rival)
    assert info is not None and info.tried and b.tried_count == 1
    assert b.add(first, "s", NOW + 140), "its new slot is free again"


def test_select_prefers_what_is_eligible_and_not_recently_failed() -> None:
    b = book()
    urls = [f"http://10.{i}.0.1:1" for i in range(10)]
    urls = [url for i, url in enumerate(urls) if b.add(url, f"s{i}", NOW)]
    assert len(urls) >= 8
    assert b.select(NOW, lambda u: False) is None
    assert b.select(NOW, lambda u: u == urls[3]) == urls[3]
    for url in urls[1:]:
        b.attempt(url, NOW)
        b.failed(url)
    picks = [b.select(NOW + 1, lambda u: True) for _ in range(200)]
    assert picks.count(urls[0]) > 150, "the one address not just tried is picked nearly always"
    assert set(b.sample(5)) <= set(urls) and len(b.sample(50)) == len(urls)
