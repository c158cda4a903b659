"""Connection management alone, without a node: slots, eviction, bans by host, dial choices.

``ConnectionManager`` needs only something with a ``snapshot`` (here a
stand-in) and a client it never uses in these tests, which is the point of
the typed services: a wing can be tested without starting a node.
"""

from __future__ import annotations

import pathlib
import secrets
import time
from types import SimpleNamespace
from typing import Any

import pytest

from node import limits
from node.p2p import connections, peerfiles
from node.p2p import messages as m
from node.p2p.connections import ConnectionManager, HandshakeRefused
from node.p2p.penalties import Misbehaviour
from node.p2p.session import Peer, PeerClient, Refusal

GENESIS = bytes(32)
MAGIC = b"\xfbrgt"
CHAIN_ID = 7


def manager(events: list[str] | None = None, datadir: pathlib.Path | None = None,
            dial_learned: bool = True) -> ConnectionManager:
    snapshot = SimpleNamespace(magic=MAGIC, chain_id=CHAIN_ID, genesis_hash=GENESIS, height=5, tip_hash=bytes(32))
    chain: Any = SimpleNamespace(snapshot=snapshot)
    log = events if events is not None else []
    return ConnectionManager(chain, PeerClient(lambda: "http://127.0.0.1:1"), own_url=lambda: "http://127.0.0.1:1",
                             seeds=[], event=lambda kind, msg, *a, **k: log.append(msg), on_ban=lambda: None,
                             on_peers_changed=lambda n: None, datadir=datadir, dial_learned=dial_learned)


def hello(url: str) -> m.Handshake:
    return m.Handshake(magic=MAGIC, protocol_version=limits.PROTOCOL_VERSION, chain_id=CHAIN_ID, genesis=GENESIS,
                       height=5, tip=bytes(32), listen_url=url, nonce=secrets.randbits(64), user_agent="t/1",
                       session=bytes(32))


def test_inbound_slots_hold_and_useful_peers_are_protected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_INBOUND_PEERS", 4)
    monkeypatch.setattr(limits, "INBOUND_PROTECTED_BY_BLOCKS", 1)
    monkeypatch.setattr(limits, "INBOUND_PROTECTED_BY_TXS", 1)
    conns = manager()
    urls = [f"http://10.0.{i}.1:8733" for i in range(4)]
    for url in urls:
        assert conns.register(hello(url), outbound=False) is not None
    conns.peers[urls[0]].last_block_at = time.time()
    conns.peers[urls[1]].last_tx_at = time.time()
    # All are in one /16: each newcomer evicts the youngest unprotected peer.
    for i in range(3):
        newcomer = f"http://10.0.{10 + i}.1:8733"
        assert conns.register(hello(newcomer), outbound=False) is not None
        inbound = conns.inbound()
        assert len(inbound) == 4
        assert urls[0] in conns.peers and urls[1] in conns.peers, "protected peers stay"
    assert conns.has_inbound_room()  # someone unprotected can always give way here


def test_when_every_inbound_peer_is_protected_a_newcomer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_INBOUND_PEERS", 2)
    conns = manager()
    for i in range(2):
        peer = conns.register(hello(f"http://10.{i}.0.1:1"), outbound=False)
        assert isinstance(peer, Peer)
        peer.last_block_at = time.time()
    assert not conns.has_inbound_room()
    assert conns.register(hello("http://10.9.0.1:1"), outbound=False) is None
    assert conns.register(hello("http://10.9.0.1:1"), outbound=True) is not None, "outbound slots are separate"


def test_a_ban_covers_the_host_not_only_the_port() -> None:
    events: list[str] = []
    conns = manager(events)
    conns.register(hello("http://10.1.2.3:1000"), outbound=False)
    for _ in range(limits.BAN_THRESHOLD // (limits.BAN_THRESHOLD // 5)):
        conns.punish("http://10.1.2.3:1000", Misbehaviour.MALFORMED_MESSAGE, "junk")
    assert conns.is_banned("http://10.1.2.3:2000") and conns.is_banned_host("10.1.2.3")
    assert "http://10.1.2.3:1000" not in conns.peers and any("banned" in e for e in events)
    assert not conns.is_banned("http://10.1.2.4:1000")
    conns.punish("http://127.0.0.1:5", Misbehaviour.PROTOCOL_VIOLATION, "x")
    conns.punish("http://127.0.0.1:5", Misbehaviour.PROTOCOL_VIOLATION, "x")
    assert conns.is_banned("http://127.0.0.1:5") and not conns.is_banned("http://127.0.0.1:6"), "local: by port"
    assert not conns.is_banned_host("127.0.0.1")


def test_dials_fill_free_slots_one_per_network_group() -> None:
    conns = manager()
    same_group = [f"http://10.0.{i}.1:8733" for i in range(20)]  # one /16
    spread = [f"http://10.{i}.0.1:8733" for i in range(1, 20)]  # nineteen /16s
    conns.learn(same_group + spread, source="http://192.168.0.1:1")
    picked = conns.dial_candidates(time.monotonic())
    assert len(picked) == limits.MAX_OUTBOUND_PEERS
    groups = [u.split(".")[1] for u in picked]
    assert len(set(groups)) == len(groups), f"two dials in one group: {picked}"


def test_a_handshake_from_elsewhere_is_not_called_back() -> None:
    import asyncio

    conns = manager()

    async def run() -> None:
        with pytest.raises(HandshakeRefused) as info:
            await conns.on_handshake(hello("http://10.5.5.5:8733"), None, "10.6.6.6")
        assert info.value.refusal is Refusal.UNVERIFIABLE_URL
        assert not conns.calling_back

    asyncio.run(run())


# -- memory across restarts ---------------------------------------------------------------------------
def ban_by_junk(conns: ConnectionManager, url: str) -> None:
    for _ in range(limits.BAN_THRESHOLD // (limits.BAN_THRESHOLD // 5)):
        conns.punish(url, Misbehaviour.MALFORMED_MESSAGE, "junk")


def test_a_ban_is_on_disk_the_moment_it_is_made_and_outlives_a_restart(tmp_path: pathlib.Path) -> None:
    """Banned, then the node dies before any shutdown save: the next start still refuses the host."""
    first = manager(datadir=tmp_path)
    ban_by_junk(first, "http://10.1.2.3:1000")
    assert (tmp_path / peerfiles.BANS_FILE).exists(), "written when the ban was made, not at shutdown"
    events: list[str] = []
    restarted = manager(events, datadir=tmp_path)
    restarted.load_saved()
    assert restarted.is_banned("http://10.1.2.3:2000") and restarted.is_banned_host("10.1.2.3")
    assert any("restored 1 bans" in e for e in events)
    restarted.clock = lambda: time.time() + limits.BAN_DURATION_S + 1
    assert not restarted.is_banned("http://10.1.2.3:1000"), "welcome again once the ban has run out"
    later = manager(datadir=tmp_path)
    later.clock = restarted.clock
    later.load_saved()
    assert later.bans.banned(later.clock()) == {}


def test_a_lifted_ban_is_written_by_the_connector_and_scores_are_not_saved(tmp_path: pathlib.Path) -> None:
    conns = manager(datadir=tmp_path)
    ban_by_junk(conns, "http://10.1.2.3:1000")
    conns.punish("http://10.9.9.9:1", Misbehaviour.MALFORMED_MESSAGE, "one bad message")
    conns.bans.unban("10.1.2.3")  # an operator or a test, not punish()
    conns._bans_saved_at -= connections.BANS_SAVE_MIN_INTERVAL_S  # the connector's pass a second later
    conns.save_bans()
    restarted = manager(datadir=tmp_path)
    restarted.load_saved()
    assert restarted.bans.banned(time.time()) == {} and restarted.bans.score("10.9.9.9") == 0


def test_learned_addresses_are_dialled_after_a_restart_unless_dial_learned_is_off(tmp_path: pathlib.Path) -> None:
    first = manager(datadir=tmp_path)
    learned = [f"http://10.{i}.0.1:8733" for i in range(1, 20)]
    first.learn(learned, source="http://192.168.0.1:1")
    first.book.good(learned[0], time.time())
    first.save_book()
    restarted = manager(datadir=tmp_path)
    assert restarted.dial_candidates(time.monotonic()) == []
    restarted.load_saved()
    picked = restarted.dial_candidates(time.monotonic())
    assert len(picked) == limits.MAX_OUTBOUND_PEERS and set(picked) <= set(learned)
    pinned = manager(datadir=tmp_path, dial_learned=False)
    pinned.load_saved()
    assert len(pinned.book) > limits.MAX_OUTBOUND_PEERS, "kept (and passed on), never dialled"
    assert pinned.dial_candidates(time.monotonic()) == []


def test_a_banned_address_saved_in_the_book_is_not_restored(tmp_path: pathlib.Path) -> None:
    conns = manager(datadir=tmp_path)
    conns.learn(["http://10.1.2.3:1000", "http://10.4.0.1:1"], source="http://192.168.0.1:1")
    conns.save_book()  # the book was saved before the ban (the next periodic save would drop it)
    ban_by_junk(conns, "http://10.1.2.3:1000")
    restarted = manager(datadir=tmp_path)
    restarted.load_saved()
    assert "http://10.1.2.3:1000" not in restarted.book and "http://10.4.0.1:1" in restarted.book


def test_bad_files_are_reported_and_the_manager_starts_empty(tmp_path: pathlib.Path) -> None:
    (tmp_path / peerfiles.BANS_FILE).write_bytes(b"\x00garbage")
    (tmp_path / peerfiles.PEERS_FILE).symlink_to("/etc/passwd")
    events: list[str] = []
    conns = manager(events, datadir=tmp_path)
    conns.load_saved()
    assert len(conns.book) == 0 and conns.bans.banned(time.time()) == {}
    assert any(e.startswith("banlist.json ignored: it is not a gradchain-banlist file") for e in events), events
    assert any(e.startswith("peers.json ignored: it is a symbolic link") for e in events), events
    conns.save_bans(now=True)  # no ban changed, yet the bad file is replaced by a clean one (shutdown's save)
    assert peerfiles.load_bans(tmp_path, time.time(), limits.BAN_DURATION_S, 10).notes == []
    ban_by_junk(conns, "http://10.1.2.3:1000")
    conns.save_bans(now=True)
    conns.save_book()
    assert not (tmp_path / peerfiles.PEERS_FILE).is_symlink(), "the next save replaces the link"
    restarted = manager(datadir=tmp_path)
    restarted.load_saved()
    assert restarted.is_banned_host("10.1.2.3")


def test_a_stream_of_bans_is_written_once_a_second_not_once_a_ban(tmp_path: pathlib.Path) -> None:
    """Throw-away hosts banned back to back: the first ban is on disk at once, the rest within a second."""
    conns = manager(datadir=tmp_path)

    def on_disk() -> set[str]:
        return set(peerfiles.load_bans(tmp_path, time.time(), limits.BAN_DURATION_S, 100).items)

    ban_by_junk(conns, "http://10.1.0.1:1")
    ban_by_junk(conns, "http://10.2.0.1:1")
    ban_by_junk(conns, "http://10.3.0.1:1")
    assert on_disk() == {"10.1.0.1"}, "one write, not three"
    conns.save_bans()  # the connector's pass within the same second: still waits
    assert on_disk() == {"10.1.0.1"}
    conns._bans_saved_at -= connections.BANS_SAVE_MIN_INTERVAL_S  # a second later
    conns.save_bans()
    assert on_disk() == {"10.1.0.1", "10.2.0.1", "10.3.0.1"}
    conns.bans.unban("10.2.0.1")
    conns.save_bans(now=True)  # shutdown does not wait
    assert on_disk() == {"10.1.0.1", "10.3.0.1"}


def test_the_connector_saves_the_book_on_its_own_so_a_killed_node_keeps_it(tmp_path: pathlib.Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No shutdown save (SIGKILL): what the book held at the connector's last periodic save survives."""
    import asyncio

    from tests.conftest import until

    monkeypatch.setattr(connections, "BOOK_SAVE_INTERVAL_S", 0.0)
    conns = manager(datadir=tmp_path, dial_learned=False)
    conns.learn(["http://10.1.0.1:1", "http://10.2.0.1:1"], source="http://192.168.0.1:1")

    async def run() -> None:
        connector = asyncio.create_task(conns.run())
        try:
            await until(lambda: len(peerfiles.load_book(tmp_path, time.time()).items) == 2, 10,
                        what="the connector to save the book")
        finally:
            connector.cancel()  # no stop(): the node died
            await asyncio.gather(connector, return_exceptions=True)

    asyncio.run(run())
    restarted = manager(datadir=tmp_path)
    restarted.load_saved()
    assert set(restarted.book) == {"http://10.1.0.1:1", "http://10.2.0.1:1"}
