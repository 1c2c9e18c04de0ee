"""Leader election on its own: `Election` objects wired by hand, votes in, notifications out."""

from __future__ import annotations

import random

from zkpy.zab.election import Election
from zkpy.zab.messages import Notification, ServerState, Vote

Outbox = list[tuple[int, int, Notification]]  # (sender, target, notification)


def elections(
    votes: dict[int, Vote], observers: frozenset[int] = frozenset()
) -> dict[int, Election]:
    """One started Election per member; `votes` gives each voter's own vote."""
    voters = frozenset(votes)
    members = {i: Election(i, voters, observers) for i in sorted(voters | observers)}
    for i, election in members.items():
        election.start(votes.get(i, Vote(0, 0, i)))
    return members


def collect(members: dict[int, Election]) -> Outbox:
    return [(i, t, n) for i, e in members.items() for t, n in e.take_messages()]


def settled_answer(election: Election) -> Notification:
    """What a member that has decided tells a looking one (as `Replica` does)."""
    assert election.leader is not None
    state = ServerState.LEADING if election.leader == election.my_id else ServerState.FOLLOWING
    return Notification(election.round, election.vote, state)


def exchange(members: dict[int, Election], *, drop: float = 0.0, seed: int = 0) -> None:
    """Deliver everything (shuffled, some dropped) and tick, until every member has decided;
    members that have decided answer looking ones with their leader."""
    rng = random.Random(seed)
    for _ in range(100):
        outbox = collect(members)
        rng.shuffle(outbox)
        for sender, target, note in outbox:
            if rng.random() < drop:
                continue
            receiver = members[target]
            if receiver.leader is None:
                receiver.receive(sender, note)
            elif note.state is ServerState.LOOKING:
                members[sender].receive(target, settled_answer(receiver))
        if all(e.leader is not None for e in members.values()):
            return
        for election in members.values():
            election.tick()
    raise AssertionError({i: e.vote for i, e in members.items()})


def test_the_most_up_to_date_history_wins_then_the_highest_id() -> None:
    members = elections({1: Vote(2, 7, 1), 2: Vote(2, 9, 2), 3: Vote(1, 20, 3)})
    exchange(members)
    assert {e.leader for e in members.values()} == {2}

    equals = elections({i: Vote(1, 5, i) for i in (1, 2, 3, 4, 5)})
    exchange(equals)
    assert {e.leader for e in equals.values()} == {5}


def test_lost_and_reordered_votes_still_elect_one_leader() -> None:
    for seed in range(20):
        members = elections({i: Vote(1, 10 - i, i) for i in (1, 2, 3, 4, 5)})
        exchange(members, drop=0.3, seed=seed)
        assert {e.leader for e in members.values()} == {1}, seed


def test_a_single_voter_decides_as_it_starts_and_still_tells_its_observer() -> None:
    election = Election(1, frozenset({1}), frozenset({2}))
    election.start(Vote(0, 0, 1))
    assert election.leader == 1
    assert election.take_messages() == [(2, Notification(1, Vote(0, 0, 1), ServerState.LOOKING))]


def test_a_quorum_decides_only_after_finalize_ticks_without_a_better_vote() -> None:
    election = Election(1, frozenset({1, 2, 3, 4, 5}), finalize_ticks=2)
    election.start(Vote(1, 5, 1))
    for member in (2, 3):
        election.receive(member, Notification(1, Vote(1, 5, 1), ServerState.LOOKING))
    election.tick()
    assert election.leader is None  # a quorum agrees, but a better vote may still come
    election.receive(4, Notification(1, Vote(1, 6, 4), ServerState.LOOKING))
    assert election.vote == Vote(1, 6, 4)
    election.tick()
    election.tick()
    assert election.leader is None, "the better vote has only member 4 and this one"
    election.receive(5, Notification(1, Vote(1, 6, 4), ServerState.LOOKING))
    election.tick()
    assert election.leader is None, "a quorum for the better vote, not yet for long enough"
    election.tick()
    assert election.leader == 4


def test_a_later_round_restarts_the_count_and_an_earlier_one_is_answered() -> None:
    election = Election(1, frozenset({1, 2, 3}))
    election.start(Vote(1, 9, 1))
    election.take_messages()
    election.receive(2, Notification(4, Vote(1, 3, 2), ServerState.LOOKING))
    assert election.round == 4
    assert election.vote == Vote(1, 9, 1)  # its own is better
    assert {t for t, _n in election.take_messages()} == {2, 3}
    election.receive(3, Notification(2, Vote(1, 3, 3), ServerState.LOOKING))
    assert election.take_messages() == [(3, Notification(4, Vote(1, 9, 1), ServerState.LOOKING))]


def test_a_voter_joins_an_established_leader_only_with_a_quorum_behind_it() -> None:
    election = Election(5, frozenset({1, 2, 3, 4, 5}))
    election.start(Vote(0, 0, 5))
    election.receive(1, Notification(3, Vote(2, 9, 1), ServerState.LEADING))
    assert election.leader is None  # the leader and this member are not a quorum of five
    election.receive(2, Notification(3, Vote(2, 9, 4), ServerState.FOLLOWING))
    assert election.leader is None, "member 2 follows someone else"
    election.receive(3, Notification(3, Vote(2, 9, 1), ServerState.FOLLOWING))
    assert election.leader == 1


def test_a_voter_does_not_rejoin_a_leader_that_a_reconfig_it_applied_removed() -> None:
    """Voters 2, 3, 4 applied the reconfig at zxid 0x1_0000_0009 that removed leader 1; reports
    of following 1, from its election before that reconfig, are stale and must not be joined
    (voters repeating them to each other would all rejoin it). A leader elected after the
    reconfig (with its history) outside the membership is still followed."""
    reconfig_zxid = (1 << 32) + 9
    election = Election(4, frozenset({2, 3, 4}), config_zxid=reconfig_zxid)
    election.start(Vote(1, reconfig_zxid, 4))
    before_the_reconfig = Vote(1, 1 << 32, 1)
    election.receive(2, Notification(3, before_the_reconfig, ServerState.FOLLOWING))
    election.receive(3, Notification(3, before_the_reconfig, ServerState.FOLLOWING))
    assert election.leader is None
    after_the_reconfig = Vote(2, reconfig_zxid + 5, 7)
    election.receive(2, Notification(4, after_the_reconfig, ServerState.FOLLOWING))
    election.receive(3, Notification(4, after_the_reconfig, ServerState.FOLLOWING))
    assert election.leader == 7


def test_an_observer_never_votes_and_joins_a_reported_leader() -> None:
    election = Election(4, frozenset({1, 2, 3}), frozenset({4}))
    election.start(Vote(0, 0, 4))
    election.take_messages()
    election.receive(1, Notification(1, Vote(1, 0, 3), ServerState.LOOKING))
    assert election.take_messages() == []
    assert election.vote == Vote(0, 0, 4)
    election.receive(3, Notification(1, Vote(1, 0, 3), ServerState.LEADING))
    assert election.leader == 3


def test_a_voter_leads_at_once_when_a_quorum_already_follows_it_in_this_round() -> None:
    election = Election(1, frozenset({1, 2, 3}))
    election.start(Vote(1, 9, 1))
    election.receive(2, Notification(0, Vote(1, 9, 1), ServerState.FOLLOWING))
    assert election.leader is None, "a follower of an earlier round does not count"
    election.receive(2, Notification(1, Vote(1, 9, 1), ServerState.FOLLOWING))
    assert election.leader == 1


def test_undecided_members_repeat_their_vote_every_tick() -> None:
    election = Election(1, frozenset({1, 2, 3}))
    election.start(Vote(1, 1, 1))
    first = election.take_messages()
    election.tick()
    assert election.take_messages() == first
