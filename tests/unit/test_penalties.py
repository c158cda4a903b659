"""Misbehaviour scores and bans: every reject code has a price, bans run out."""

from __future__ import annotations

import pytest

from consensus.errors import NOT_PUNISHED, Reject
from node import limits
from node.p2p.penalties import TIP_DEPENDENT, BanList, Misbehaviour, PeerScore, penalty

T0 = 1_700_000_000.0


@pytest.mark.parametrize("code", list(Reject) + list(Misbehaviour))
def test_every_code_has_a_penalty(code: Reject | Misbehaviour) -> None:
    for relayed in (False, True):
        points = penalty(code, relayed_tx=relayed)
        assert 0 <= points <= limits.BAN_THRESHOLD


@pytest.mark.parametrize("code", sorted(NOT_PUNISHED, key=lambda c: c.value))
def test_not_yet_codes_cost_nothing(code: Reject) -> None:
    assert penalty(code) == 0
    assert penalty(code, relayed_tx=True) == 0


@pytest.mark.parametrize(
    "code",
    [Reject.BAD_POW, Reject.BAD_STATE_ROOT, Reject.BAD_SIGNATURE, Reject.BAD_TX_ROOT, Reject.UPDATE_NORM,
     Reject.UPDATE_NOT_FINITE, Reject.BAD_PREV, Reject.BAD_ENCODING],
)
def test_invalid_data_bans_at_once(code: Reject) -> None:
    assert penalty(code) >= limits.BAN_THRESHOLD
    assert penalty(code, relayed_tx=True) >= limits.BAN_THRESHOLD  # invalid whatever the tip


@pytest.mark.parametrize("code", sorted(TIP_DEPENDENT, key=lambda c: c.value))
def test_tip_dependent_codes_are_forgiven_for_relayed_txs_only(code: Reject) -> None:
    assert penalty(code, relayed_tx=True) == 0
    assert penalty(code) >= limits.BAN_THRESHOLD  # in a block they are fatal


def test_protocol_faults_ban_after_a_few() -> None:
    for fault in Misbehaviour:
        assert 0 < penalty(fault) < limits.BAN_THRESHOLD
    assert penalty(Misbehaviour.UNREQUESTED_DATA) < penalty(Misbehaviour.MALFORMED_MESSAGE)
    assert penalty(Misbehaviour.MALFORMED_MESSAGE) < penalty(Misbehaviour.PROTOCOL_VIOLATION)


def test_peer_score_reaches_the_threshold() -> None:
    score = PeerScore()
    assert not score.add(limits.BAN_THRESHOLD - 1)
    assert score.add(1)
    with pytest.raises(ValueError):
        PeerScore().add(-1)


def test_malformed_messages_accumulate_to_a_ban() -> None:
    bans = BanList()
    points = penalty(Misbehaviour.MALFORMED_MESSAGE)
    strikes = -(-limits.BAN_THRESHOLD // points)  # ceiling division
    for _ in range(strikes - 1):
        assert not bans.punish("http://a:1", points, T0)
    assert bans.score("http://a:1") == points * (strikes - 1)
    assert bans.punish("http://a:1", points, T0)
    assert bans.is_banned("http://a:1", T0)
    assert not bans.is_banned("http://b:1", T0)


def test_zero_penalties_never_ban() -> None:
    bans = BanList()
    for _ in range(1000):
        assert not bans.punish("p", penalty(Reject.UNKNOWN_PARENT), T0)
    assert bans.score("p") == 0


def test_ban_expires_after_its_duration() -> None:
    bans = BanList()
    assert bans.punish("p", penalty(Reject.BAD_POW), T0)
    assert bans.is_banned("p", T0 + limits.BAN_DURATION_S - 1)
    assert not bans.is_banned("p", T0 + limits.BAN_DURATION_S)
    # Afterwards the peer starts from a clean score.
    assert bans.score("p") == 0
    assert not bans.punish("p", penalty(Misbehaviour.UNREQUESTED_DATA), T0 + limits.BAN_DURATION_S)


def test_expire_lifts_only_bans_that_ran_out() -> None:
    bans = BanList(duration_s=100)
    bans.ban("early", T0)
    bans.ban("late", T0 + 50)
    assert bans.expire(T0 + 120) == ["early"]
    assert bans.banned(T0 + 120) == {"late": T0 + 150}
    bans.unban("late")
    assert bans.banned(T0 + 120) == {}


def test_banned_peer_stays_banned_without_rescoring() -> None:
    bans = BanList()
    bans.ban("p", T0)
    assert bans.punish("p", 0, T0 + 1)
    assert bans.score("p") == 0


def test_ban_list_is_bounded_and_forgets_the_soonest_expiring() -> None:
    bans = BanList(duration_s=100, max_banned=3)
    for i in range(5):
        bans.ban(f"p{i}", T0 + i)
    assert set(bans.banned(T0 + 5)) == {"p2", "p3", "p4"}


def test_forget_drops_a_score_but_keeps_bans() -> None:
    bans = BanList()
    bans.punish("a", 10, T0)
    bans.ban("b", T0)
    bans.forget("a")
    bans.forget("b")
    assert bans.score("a") == 0
    assert bans.is_banned("b", T0)


def test_relay_allowance_forgives_up_to_its_capacity_then_refills() -> None:
    from node.p2p.penalties import RelayAllowance

    allowance = RelayAllowance(capacity=1000, rate=100)
    assert allowance.spend(600, now=10.0)
    assert allowance.spend(400, now=10.0)
    assert not allowance.spend(1, now=10.0), "empty: the next refusal costs the peer"
    assert not allowance.spend(200, now=11.0), "one second refills 100 bytes, not 200"
    assert allowance.spend(100, now=12.0)
    assert allowance.spend(1000, now=100.0), "a long quiet spell refills it to capacity, no further"
    assert not allowance.spend(1, now=100.0)


def test_wasted_relay_costs_a_quarter_of_a_ban() -> None:
    from node.p2p.penalties import Misbehaviour, penalty

    assert penalty(Misbehaviour.WASTED_RELAY) * 4 == limits.BAN_THRESHOLD


def test_restored_bans_keep_the_bound_and_every_add_or_lift_is_counted() -> None:
    bans = BanList(duration_s=100, max_banned=3)
    bans.restore({f"p{i}": T0 + i for i in range(5)})
    assert set(bans.banned(T0)) == {"p2", "p3", "p4"}, "the latest-ending ones stay"
    seen = bans.changes
    bans.ban("q", T0)  # the list is full: p2, the soonest to end, makes room
    bans.unban("q")
    bans.unban("never-banned")
    assert bans.changes == seen + 2, "an unban of nobody changes nothing on disk"
    bans.punish("r", 1, T0)
    assert bans.changes == seen + 2, "a score alone is not saved"
    assert bans.expire(T0 + 3) == ["p3"] and bans.changes == seen + 3
    assert not bans.is_banned("p4", T0 + 10) and bans.changes == seen + 4
