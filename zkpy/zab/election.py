"""Fast leader election as a pure step/tick state machine: votes in, notifications and a leader out.

A member that looks for a leader starts a round with its own vote (how up to date its history is,
then its id), tells every other member, and adopts any better vote it hears in its round. Once a
quorum of voters agrees on one vote it waits `finalize_ticks` for a better one, then decides.
Members that have already settled (following or leading) answer with their vote and state: a
looking member joins a leader that a quorum of settled voters backs, and leads at once if a quorum
already follows it. Observers never vote; they join whichever leader the settled voters report.

Notifications may be lost, repeated or reordered: every one carries the whole vote and round, and
members repeat theirs on every tick until they decide.

The owner feeds `receive` and `tick`, sends what `take_messages` returns, and acts on `leader`
once it is set. The Election holds no history; `start` hands it the member's vote for a round.
"""

from __future__ import annotations

from zkpy.zab.messages import Notification, ServerState, Vote


def quorum_size(voters: int) -> int:
    """A strict majority: any two quorums share a member."""
    return voters // 2 + 1


class Election:
    """One member's side of leader election; it survives rounds (the round number grows)."""

    def __init__(
        self,
        my_id: int,
        voters: frozenset[int],
        observers: frozenset[int] = frozenset(),
        finalize_ticks: int = 1,
        config_zxid: int = 0,
    ) -> None:
        """`finalize_ticks`: how long a quorum's vote must stand unchallenged to decide.
        `config_zxid`: the zxid of the reconfig that committed `voters` (0: none)."""
        self.my_id = my_id
        self.voters = voters
        self.observers = observers
        self.config_zxid = config_zxid
        self.observer = my_id not in voters  # an observer, or no member (yet, or any more)
        self.finalize_ticks = finalize_ticks
        self.round = 0
        self.vote = Vote(0, 0, my_id)
        self.leader: int | None = None  # decided: the member to follow, or my_id to lead
        self._own = self.vote
        self._peers = sorted((voters | observers) - {my_id})
        # the membership of a reconfig this member has logged and not seen committed: see
        # `expect_also`
        self._logged_members: frozenset[int] = frozenset()
        self._logged_voters: frozenset[int] = frozenset()
        self._quorum = quorum_size(len(voters))
        self._votes: dict[int, Vote] = {}
        self._settled: dict[int, tuple[Vote, ServerState, int]] = {}  # vote, state, round
        self._ticks = 0
        self._quorum_since: int | None = None
        self._messages: list[tuple[int, Notification]] = []

    def start(self, own: Vote) -> None:
        """Begin a new round voting for `own` (this member, with its history as it is now)."""
        self.round += 1
        self.leader = None
        self._own = own
        self.vote = own
        self._votes = {}
        self._settled = {}
        self._quorum_since = None
        if not self.observer:
            self._votes[self.my_id] = own
        self._broadcast()
        if self.voters == frozenset({self.my_id}) and not self._logged_voters:
            self.leader = self.my_id

    def reconfigure(
        self, voters: frozenset[int], observers: frozenset[int], config_zxid: int = 0
    ) -> None:
        """A new membership is committed (by the reconfig at `config_zxid`): count and tell its
        members from now on."""
        self.voters = voters
        self.observers = observers
        self.config_zxid = config_zxid
        self._quorum = quorum_size(len(voters))
        self.expect_also(self._logged_members, self._logged_voters)

    def expect_also(self, members: frozenset[int], voters: frozenset[int]) -> None:
        """This member has logged a reconfig to `members` (of which `voters` vote) and not
        seen it committed: if it has committed, a quorum of its voters may already have
        elected a leader and committed more. Until it is committed here, tell its members
        too, count its voters' votes, and decide only on a vote that a quorum of the voters
        in force and a quorum of its voters agree on (ZooKeeper's rule)."""
        self._logged_members = members
        self._logged_voters = voters
        self.observer = self.my_id not in self.voters | voters
        self._peers = sorted((self.voters | self.observers | members) - {self.my_id})

    def tick(self) -> None:
        """Decide once a quorum has agreed for `finalize_ticks`; otherwise repeat the vote."""
        if self.leader is not None:
            return
        self._ticks += 1
        if self._quorum_since is not None and (
            self._ticks - self._quorum_since >= self.finalize_ticks
        ):
            self.leader = self.vote.leader
            return
        self._broadcast()

    def receive(self, sender: int, note: Notification) -> None:
        """A notification from a looking member (a vote) or a settled one (its leader)."""
        if self.leader is not None:
            return
        if note.state is ServerState.LOOKING:
            if sender not in self.voters | self._logged_voters or self.observer:
                return  # only voters' votes count
            self._on_vote(sender, note)
        else:
            self._settled[sender] = (note.vote, note.state, note.round)
            self._try_join_established()

    def take_messages(self) -> list[tuple[int, Notification]]:
        """The notifications to send since the last call, in order."""
        messages, self._messages = self._messages, []
        return messages

    def _broadcast(self) -> None:
        note = Notification(self.round, self.vote, ServerState.LOOKING)
        self._messages.extend((peer, note) for peer in self._peers)

    def _on_vote(self, sender: int, note: Notification) -> None:
        if note.round > self.round:
            self.round = note.round
            self._votes = {}
            self._quorum_since = None
            self.vote = max(self._own, note.vote)
            self._votes[self.my_id] = self.vote
            self._broadcast()
        elif note.round < self.round:
            self._messages.append(
                (sender, Notification(self.round, self.vote, ServerState.LOOKING))
            )
            return
        elif note.vote > self.vote:
            self.vote = note.vote
            self._votes[self.my_id] = self.vote
            self._quorum_since = None
            self._broadcast()
        self._votes[sender] = note.vote
        if self._agreed():
            if self._quorum_since is None:
                self._quorum_since = self._ticks
        else:
            self._quorum_since = None

    def _agreed(self) -> bool:
        """Whether a quorum of the voters (and of a logged reconfig's, if any) share the vote."""
        agreeing = [member for member, vote in self._votes.items() if vote == self.vote]
        if sum(1 for member in agreeing if member in self.voters) < self._quorum:
            return False
        logged = self._logged_voters
        if not logged:
            return True
        return sum(1 for member in agreeing if member in logged) >= quorum_size(len(logged))

    def _try_join_established(self) -> None:
        """Join a leader that is already leading, as a quorum of settled members report, or
        lead if a quorum already follows this member after voting for it in this very round
        (it missed their votes while they settled, e.g. because its links came up last)."""
        if not self.observer and self._followers_of_me() + 1 >= self._quorum:
            self.leader = self.my_id
            return
        for sender, (vote, state, _round) in self._settled.items():
            if state is not ServerState.LEADING or vote.leader != sender:
                continue
            backers = sum(
                1
                for member, (other, _s, _r) in self._settled.items()
                if other.leader == sender and member in self.voters
            )
            if self.observer or backers + 1 >= self._quorum:
                self.leader = sender
                return
        if self.observer:
            self._join_reported_leader()
        else:
            self._join_leader_outside_view()

    def _join_reported_leader(self) -> None:
        """A member that does not vote (an observer, or one outside the membership it last
        knew) follows the leader a voter it knows reports, even one it has not heard from: a
        removed member's membership may name none of the current leaders. Following a stale
        report costs only a retry; such a member counts in no quorum."""
        for member, (vote, state, _round) in sorted(self._settled.items()):
            settled = state is not ServerState.LOOKING
            if member in self.voters and settled and vote.leader != self.my_id:
                self.leader = vote.leader
                return

    def _join_leader_outside_view(self) -> None:
        """Follow a leader this member's membership does not name when a quorum of its voters
        report following it: a reconfig this member has not seen committed made it a voter
        (this member then learns that membership as it syncs). Following votes for nothing.

        A report of a leader elected with less history than the reconfig that made this
        member's membership (`config_zxid`) is stale: that reconfig may have removed the leader
        it names, and voters that all repeat such reports to each other must not rejoin it."""
        known = self.voters | self.observers
        backers: dict[int, int] = {}
        for member, (vote, state, _round) in self._settled.items():
            settled = state is not ServerState.LOOKING
            current = vote.zxid >= self.config_zxid
            if member in self.voters and settled and current and vote.leader not in known:
                backers[vote.leader] = backers.get(vote.leader, 0) + 1
        for leader, count in sorted(backers.items()):
            if count >= self._quorum:
                self.leader = leader
                return

    def _followers_of_me(self) -> int:
        return sum(
            1
            for member, (vote, state, round_) in self._settled.items()
            if state is ServerState.FOLLOWING
            and vote.leader == self.my_id
            and round_ == self.round
            and member in self.voters
        )
