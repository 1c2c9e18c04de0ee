"""zkpy.zab.broadcast: the leader's side of Zab's broadcast phase (zxids, quorum, commit order)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.core.txn import Check, TxnRecord
from zkpy.core.types import make_zxid
from zkpy.zab.broadcast import BroadcastError, LeaderBroadcast, Ready, quorum_size

EPOCH = 3


def record(zxid: int) -> TxnRecord:
    return TxnRecord(zxid, 0x11, zxid & 0xFFFF, 1000, Check("/", -1))


def propose_next(leader: LeaderBroadcast) -> TxnRecord:
    rec = record(leader.next_zxid())
    leader.propose(rec)
    return rec


def test_quorum_size_is_a_strict_majority() -> None:
    assert [quorum_size(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_zxids_start_a_new_epoch_at_counter_one_or_continue_the_current_one() -> None:
    fresh = LeaderBroadcast(1, EPOCH, make_zxid(EPOCH - 1, 57), frozenset({1}))
    assert fresh.next_zxid() == make_zxid(EPOCH, 1)
    assert fresh.last_committed == make_zxid(EPOCH - 1, 57)
    same = LeaderBroadcast(1, EPOCH, make_zxid(EPOCH, 9), frozenset({1}))
    assert same.next_zxid() == make_zxid(EPOCH, 10)


def test_constructor_refuses_a_leader_outside_the_voters_or_behind_its_history() -> None:
    with pytest.raises(BroadcastError):
        LeaderBroadcast(4, EPOCH, 0, frozenset({1, 2, 3}))
    with pytest.raises(BroadcastError):
        LeaderBroadcast(1, EPOCH, make_zxid(EPOCH + 1, 1), frozenset({1}))


def test_counter_exhaustion_needs_a_new_epoch() -> None:
    leader = LeaderBroadcast(1, EPOCH, make_zxid(EPOCH, 0xFFFFFFFF), frozenset({1}))
    with pytest.raises(BroadcastError):
        leader.next_zxid()


def test_quorum_of_one_commits_when_persisted() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1}))
    assert not leader.take_ready()
    r1, r2 = propose_next(leader), propose_next(leader)
    ready = leader.take_ready()
    assert ready.to_persist == [r1, r2]
    assert ready.messages == []  # nobody to send to
    assert ready.committed == []  # not before it is durable
    assert leader.in_flight == 2
    leader.persisted(r1.zxid)
    assert leader.take_ready().committed == [r1]
    leader.persisted(r2.zxid)
    ready = leader.take_ready()
    assert ready == Ready(committed=[r2])
    assert leader.last_committed == r2.zxid == leader.last_proposed
    assert leader.in_flight == 0
    assert not leader.take_ready()


def test_three_voters_commit_after_one_follower_ack_and_the_leaders_own() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3}))
    rec = propose_next(leader)
    ready = leader.take_ready()
    assert ready.to_persist == [rec]
    assert sorted(ready.messages) == [(2, rec), (3, rec)]
    leader.acknowledged(2, rec.zxid)
    assert leader.take_ready().committed == []  # the leader has not persisted it yet
    leader.acknowledged(2, rec.zxid)  # a duplicate ack is still one member
    assert leader.take_ready().committed == []
    leader.persisted(rec.zxid)
    assert leader.take_ready().committed == [rec]
    leader.acknowledged(3, rec.zxid)  # a late ack changes nothing
    assert not leader.take_ready()


def test_leader_alone_is_not_a_quorum_of_three() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3}))
    rec = propose_next(leader)
    leader.take_ready()
    leader.persisted(rec.zxid)
    assert leader.take_ready().committed == []
    assert leader.last_committed == 0
    leader.acknowledged(3, rec.zxid)
    assert leader.take_ready().committed == [rec]


def test_two_followers_are_a_quorum_of_three() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3}))
    rec = propose_next(leader)
    leader.acknowledged(2, rec.zxid)
    leader.acknowledged(3, rec.zxid)
    assert leader.take_ready().committed == [rec]


def test_five_voters_need_three() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3, 4, 5}))
    rec = propose_next(leader)
    leader.persisted(rec.zxid)
    leader.acknowledged(5, rec.zxid)
    assert leader.take_ready().committed == []
    leader.acknowledged(4, rec.zxid)
    assert leader.take_ready().committed == [rec]


def test_an_ack_for_a_later_zxid_acknowledges_everything_before_it() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3}))
    recs = [propose_next(leader) for _ in range(4)]
    leader.take_ready()
    leader.persisted(recs[0].zxid)  # the leader's log is durable up to the first only
    leader.acknowledged(2, recs[2].zxid)  # the follower's up to the third
    assert leader.take_ready().committed == [recs[0]]
    leader.persisted(recs[3].zxid)
    assert leader.take_ready().committed == [recs[1], recs[2]]
    leader.acknowledged(3, recs[3].zxid)
    assert leader.take_ready().committed == [recs[3]]
    assert leader.last_committed == recs[3].zxid


def test_commits_stay_in_zxid_order_when_later_proposals_reach_quorum_first() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3}))
    recs = [propose_next(leader) for _ in range(3)]
    leader.take_ready()
    leader.acknowledged(2, recs[2].zxid)  # out of order: the newest first
    leader.acknowledged(3, recs[2].zxid)
    assert leader.take_ready().committed == recs


def test_proposals_out_of_order_are_refused_and_change_nothing() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3}))
    rec = propose_next(leader)
    leader.take_ready()
    expected = leader.next_zxid()
    for bad in (rec.zxid, expected + 1, make_zxid(EPOCH + 1, 2), make_zxid(EPOCH - 1, 2), 0):
        with pytest.raises(BroadcastError):
            leader.propose(record(bad))
    assert leader.next_zxid() == expected
    assert leader.in_flight == 1
    assert leader.last_proposed == rec.zxid
    assert not leader.take_ready()


def test_an_ack_from_a_stranger_is_refused_and_changes_nothing() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3}))
    rec = propose_next(leader)
    leader.take_ready()
    leader.persisted(rec.zxid)
    with pytest.raises(BroadcastError):
        leader.acknowledged(4, rec.zxid)
    with pytest.raises(BroadcastError):
        leader.acknowledged(0, rec.zxid)
    assert not leader.take_ready()
    assert leader.last_committed == 0


def test_ack_of_a_committed_zxid_is_harmless() -> None:
    leader = LeaderBroadcast(1, EPOCH, 0, frozenset({1, 2, 3}))
    rec = propose_next(leader)
    leader.persisted(rec.zxid)
    leader.acknowledged(2, rec.zxid)
    assert leader.take_ready().committed == [rec]
    leader.acknowledged(3, rec.zxid)
    leader.acknowledged(2, 0)
    assert not leader.take_ready()


broadcast_steps = st.lists(
    st.one_of(
        st.tuples(st.just("propose"), st.integers(1, 3)),
        st.tuples(st.just("ack"), st.integers(0, 4), st.integers(0, 12)),
        st.tuples(st.just("take"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), broadcast_steps)
def test_commits_are_a_prefix_of_proposals_each_acked_by_a_quorum(
    size: int, steps: list[tuple[int, ...]]
) -> None:
    voters = frozenset(range(1, size + 1))
    leader = LeaderBroadcast(1, EPOCH, 0, voters)
    proposed: list[TxnRecord] = []
    committed: list[TxnRecord] = []
    acked_up_to = dict.fromkeys(voters, 0)  # member -> highest counter acknowledged

    def check(ready: Ready) -> None:
        committed.extend(ready.committed)
        assert committed == proposed[: len(committed)]
        for rec in committed:
            counter = rec.zxid & 0xFFFFFFFF
            assert sum(up >= counter for up in acked_up_to.values()) >= quorum_size(size)
        # nothing that has a quorum is left waiting (checked once the ready is taken)
        waiting = proposed[len(committed) :]
        if waiting:
            counter = waiting[0].zxid & 0xFFFFFFFF
            assert sum(up >= counter for up in acked_up_to.values()) < quorum_size(size)

    for step in steps:
        if step[0] == "propose":
            for _ in range(step[1]):
                proposed.append(propose_next(leader))
        elif step[0] == "ack":
            member = 1 + step[1] % size
            counter = min(step[2], len(proposed))
            leader.acknowledged(member, make_zxid(EPOCH, counter) if counter else 0)
            acked_up_to[member] = max(acked_up_to[member], counter)
        else:
            check(leader.take_ready())
    check(leader.take_ready())
    # once everyone has acknowledged everything, everything is committed
    if proposed:
        for member in voters:
            leader.acknowledged(member, proposed[-1].zxid)
            acked_up_to[member] = len(proposed)
        check(leader.take_ready())
        assert committed == proposed
        assert leader.in_flight == 0
