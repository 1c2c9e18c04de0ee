"""Sentences of the Zab paper as tests, on `Replica` objects driven by hand.

`Cluster` is a tiny harness: one FIFO link per ordered pair of members, a `SimDisk` per member.
`pump(i)` takes member i's Ready, treats its durable parts as persisted at once (writes them to
the disk) and only then queues its messages, as the Ready contract asks. Links can drop messages
silently (a black hole: nobody is told) or be cut (the TCP view: both ends learn it broke), and
members can crash (the disk survives) and restart from their disk. Nothing here sleeps: time is
`tick()`.

Fine-grained tests use `take(i)` (one take_ready, no loop) and `deliver(src, dst)` (one message,
no pump) to watch a single step of the protocol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

from zkpy.core.errors import Code
from zkpy.core.requests import (
    CreateRequest,
    CreateSessionRequest,
    SetDataRequest,
    WriteRequest,
)
from zkpy.core.tree import ApplyResult, DataTree
from zkpy.core.txn import Create, CreateSession, TxnRecord, encode_record
from zkpy.core.types import OPEN_ACL_UNSAFE, make_zxid, zxid_counter, zxid_epoch
from zkpy.testing.sim import SimDisk
from zkpy.zab.messages import (
    Ack,
    AckEpoch,
    AckNewLeader,
    Commit,
    EarlyPropose,
    FollowerInfo,
    Forward,
    Logged,
    LoggedPropose,
    NewEpoch,
    NewLeader,
    Notification,
    PeerMessage,
    Propose,
    ServerState,
    SyncMode,
    UpToDate,
    Vote,
    promises_durability,
)
from zkpy.zab.replica import Phase, Ready, Replica, ReplicaConfig

TICK = 50
ACL = OPEN_ACL_UNSAFE
M = TypeVar("M", bound=PeerMessage)  # a kind of peer message

Link = tuple[int, int]


class Cluster:
    """Replicas wired by FIFO links and driven by hand."""

    def __init__(
        self,
        voters: int = 3,
        observers: int = 0,
        *,
        disks: dict[int, SimDisk] | None = None,
        **settings: Any,
    ) -> None:
        self.voter_ids = frozenset(range(1, voters + 1))
        self.observer_ids = frozenset(range(voters + 1, voters + observers + 1))
        self.ids = sorted(self.voter_ids | self.observer_ids)
        self.configs = {
            i: ReplicaConfig(i, self.voter_ids, self.observer_ids, tick_ms=TICK, **settings)
            for i in self.ids
        }
        self.disks = {i: SimDisk() for i in self.ids}
        self.disks.update(disks or {})
        self.replicas: dict[int, Replica | None] = {i: None for i in self.ids}
        self.links: dict[Link, deque[PeerMessage]] = {}
        self.dropped: set[Link] = set()  # black holes: messages vanish and nobody is told
        self.held: dict[Link, Callable[[PeerMessage], bool]] = {}  # queued, not delivered
        self.sent: list[tuple[int, int, PeerMessage]] = []
        self.readies: dict[int, list[Ready]] = {i: [] for i in self.ids}
        self.applied: dict[int, list[ApplyResult]] = {i: [] for i in self.ids}
        self.rejected: dict[int, list[tuple[int, int]]] = {i: [] for i in self.ids}
        self.synced: dict[int, list[tuple[int, int]]] = {i: [] for i in self.ids}
        self.leaders: dict[int, set[int]] = {}  # epoch -> members that served as its leader
        self.committed: dict[int, bytes] = {}  # zxid -> the record every member applied there
        self.last_applied: dict[int, int] = {}
        self.now = 0
        for i in self.ids:  # everyone is up before anyone's first votes go out
            self.boot(i, pump=False)
        for i in self.ids:
            self.pump(i)
        self.run()

    # ---- members -------------------------------------------------------------------------------

    def r(self, i: int) -> Replica:
        replica = self.replicas[i]
        assert replica is not None, f"member {i} is down"
        return replica

    def boot(self, i: int, *, pump: bool = True) -> None:
        replica = self.disks[i].replica(self.configs[i], self.now)
        self.replicas[i] = replica
        self.last_applied[i] = replica.tree.last_zxid
        if pump:
            self.pump(i)

    def crash(self, i: int) -> None:
        self.replicas[i] = None
        for j in self.ids:
            if j != i:
                self.reset(i, j)

    def restart(self, i: int) -> None:
        self.boot(i)
        self.run()

    @property
    def alive(self) -> list[int]:
        return [i for i in self.ids if self.replicas[i] is not None]

    def serving_leader(self) -> int:
        found = [
            i for i in self.alive if self.r(i).state is ServerState.LEADING and self.r(i).serving
        ]
        assert len(found) == 1, f"expected one serving leader, found {found}"
        return found[0]

    def followers(self) -> list[int]:
        return [i for i in self.alive if self.r(i).state is ServerState.FOLLOWING]

    # ---- the Ready loop ------------------------------------------------------------------------

    def take(self, i: int) -> Ready:
        """One take_ready: record it, make its durable parts durable, then queue its messages."""
        replica = self.r(i)
        ready = replica.take_ready()
        self.readies[i].append(ready)
        for record in ready.committed:
            assert record.zxid > self.last_applied[i], f"{i} applied {record.zxid:#x} twice"
            self.last_applied[i] = record.zxid
            known = self.committed.setdefault(record.zxid, encode_record(record))
            assert known == encode_record(record), f"two records committed at {record.zxid:#x}"
            self.applied[i].append(replica.apply(record))
        self.rejected[i] += ready.rejected
        self.synced[i] += ready.synced
        if ready.serving_changed and replica.serving and replica.state is ServerState.LEADING:
            self.leaders.setdefault(replica.epoch, set()).add(i)
        self.disks[i].write(ready)
        for target, message in ready.messages:
            self.send(i, target, message)
        return ready

    def pump(self, i: int) -> None:
        """An eager shell: take Readies until there is nothing left to do."""
        for _ in range(100):
            if self.replicas[i] is None or not self.take(i):
                return
        raise AssertionError(f"member {i} never went quiet")

    # ---- the network ---------------------------------------------------------------------------

    def send(self, source: int, target: int, message: PeerMessage) -> None:
        self.sent.append((source, target, message))
        if self.replicas[target] is None or (source, target) in self.dropped:
            return
        self.links.setdefault((source, target), deque()).append(message)

    def _deliverable(self, link: Link) -> bool:
        queue = self.links.get(link)
        if not queue:
            return False
        hold = self.held.get(link)
        return hold is None or not hold(queue[0])

    def deliver(self, source: int, target: int) -> PeerMessage:
        """Hand the next message on source -> target to the target, without pumping it."""
        assert self._deliverable((source, target)), f"nothing to deliver on {source}->{target}"
        message = self.links[(source, target)].popleft()
        self.r(target).receive(source, message)
        return message

    def run(self, limit: int = 20_000) -> None:
        """Deliver (round robin over the links) and pump until nothing more can move."""
        for _ in range(limit):
            moved = False
            for link in sorted(self.links):
                if self._deliverable(link):
                    self.deliver(*link)
                    self.pump(link[1])
                    moved = True
            if not moved:
                return
        raise AssertionError("the network never went quiet")

    def reset(self, a: int, b: int) -> None:
        """The connection between a and b breaks: in-flight messages are lost, both ends learn."""
        for pair in ((a, b), (b, a)):
            self.links.pop(pair, None)
        for here, there in ((a, b), (b, a)):
            if self.replicas[here] is not None:
                self.r(here).disconnected(there)
                self.pump(here)

    def blackhole(self, a: int, b: int) -> None:
        self.dropped |= {(a, b), (b, a)}

    def cut(self, a: int, b: int) -> None:
        self.blackhole(a, b)
        self.reset(a, b)

    def isolate(self, i: int, *, tell: bool = True) -> None:
        for j in self.ids:
            if j != i:
                if tell:
                    self.cut(i, j)
                else:
                    self.blackhole(i, j)

    def heal(self) -> None:
        self.dropped.clear()
        self.run()

    # ---- time and clients ----------------------------------------------------------------------

    def tick(self, count: int = 1, only: Iterable[int] | None = None) -> None:
        members = list(only) if only is not None else None
        for _ in range(count):
            self.now += TICK
            for i in members if members is not None else self.alive:
                if self.replicas[i] is not None:
                    self.r(i).tick(self.now)
                    self.pump(i)
            self.run()

    def settle(self, max_ticks: int = 200) -> None:
        """Tick until every member that is up serves."""
        for _ in range(max_ticks):
            if all(self.r(i).serving for i in self.alive):
                return
            self.tick()
        states = {i: (self.r(i).role, self.r(i).phase.value) for i in self.alive}
        raise AssertionError(f"the ensemble did not settle: {states}")

    def submit(self, i: int, session_id: int, cxid: int, request: WriteRequest) -> None:
        self.r(i).submit(session_id, cxid, request)
        self.pump(i)
        self.run()

    def open_session(self, i: int, session_id: int, timeout_ms: int = 60_000) -> None:
        self.submit(i, session_id, 0, CreateSessionRequest(session_id, timeout_ms, b"pw"))
        assert session_id in self.r(i).tree.sessions

    def result_of(self, i: int, session_id: int, cxid: int) -> ApplyResult:
        found = [
            a for a in self.applied[i] if (a.record.session_id, a.record.cxid) == (session_id, cxid)
        ]
        assert len(found) == 1, f"{(session_id, cxid)} applied {len(found)} times on {i}"
        return found[0]

    # ---- checks --------------------------------------------------------------------------------

    def digests(self) -> dict[int, str]:
        return {i: self.r(i).tree.digest() for i in self.alive}

    def assert_identical(self) -> None:
        trees = {i: (self.r(i).tree.last_zxid, self.r(i).tree.digest()) for i in self.alive}
        assert len(set(trees.values())) == 1, f"members differ: {trees}"

    def assert_one_leader_per_epoch(self) -> None:
        for epoch, members in self.leaders.items():
            assert len(members) == 1, f"epoch {epoch} had leaders {sorted(members)}"

    def messages(
        self, kind: type[M], *, source: int | None = None, target: int | None = None
    ) -> list[M]:
        return [
            m
            for s, t, m in self.sent
            if isinstance(m, kind)
            and (source is None or s == source)
            and (target is None or t == target)
        ]


def history(epoch: int, count: int, first: int = 1) -> list[TxnRecord]:
    """`count` logged creates of epoch `epoch`, as a leader of that epoch would have made them."""
    return [
        TxnRecord(make_zxid(epoch, c), 0, 0, 0, Create(f"/h{epoch}-{c}", b"h", ACL, 0, c))
        for c in range(first, first + count)
    ]


def disk(records: list[TxnRecord], accepted: int, current: int | None = None) -> SimDisk:
    """A member that logged `records` (none applied yet) and persisted these epochs."""
    return SimDisk(accepted, accepted if current is None else current, log=list(records))


def create(path: str, data: bytes = b"", *, ephemeral: bool = False) -> CreateRequest:
    return CreateRequest(path, data, ACL, ephemeral=ephemeral)


# ---- a single voter ------------------------------------------------------------------------------


def test_a_single_voter_elects_itself_at_construction_and_serves() -> None:
    replica = Replica(ReplicaConfig(1, frozenset({1}), tick_ms=TICK), DataTree())
    assert replica.state is ServerState.LEADING
    assert replica.serving

    first = replica.take_ready()
    assert first.epochs is not None
    accepted, current = first.epochs
    assert current == accepted == replica.epoch > 0
    assert first.serving_changed
    assert not first.messages

    replica.submit(7, 1, CreateSessionRequest(7, 30_000, b"pw"))
    replica.submit(7, 2, create("/a", b"one"))
    written = replica.take_ready()
    assert [r.zxid for r in written.persist] == [
        make_zxid(current, 1),
        make_zxid(current, 2),
    ]
    # The leader's own acknowledgement is the next take_ready: nothing commits before that.
    assert not written.committed
    assert "/a" not in replica.tree

    done = replica.take_ready()
    zxids = [record.zxid for record in done.committed]
    assert zxids == [current << 32 | 1, current << 32 | 2]
    assert [(r.session_id, r.cxid) for r in done.committed] == [(7, 1), (7, 2)]
    assert isinstance(done.committed[0].op, CreateSession)
    results = [replica.apply(record) for record in done.committed]
    assert all(a.result.error == Code.OK for a in results)
    assert results[1].result.value == "/a"
    node = replica.tree.get("/a")
    assert node is not None
    assert node.data == b"one"
    assert node.czxid == zxids[1]
    assert replica.tree.last_zxid == zxids[1]


def test_a_single_voter_restarts_into_a_new_epoch_with_its_history() -> None:
    cluster = Cluster(1)
    first_epoch = cluster.r(1).epoch
    cluster.open_session(1, 5)
    cluster.submit(1, 5, 1, create("/kept", b"x"))
    cluster.crash(1)
    cluster.restart(1)
    replica = cluster.r(1)
    assert replica.serving
    assert replica.epoch > first_epoch
    assert replica.tree.get("/kept") is not None
    cluster.submit(1, 5, 2, create("/next"))
    assert zxid_epoch(cluster.result_of(1, 5, 2).record.zxid) == replica.epoch
    assert zxid_counter(cluster.result_of(1, 5, 2).record.zxid) == 1


# ---- election ------------------------------------------------------------------------------------


def test_election_among_equals_is_won_by_the_highest_id() -> None:
    cluster = Cluster(3)
    cluster.settle()
    assert cluster.serving_leader() == 3
    assert sorted(cluster.followers()) == [1, 2]
    assert all(cluster.r(i).leader == 3 for i in cluster.ids)


def test_a_longer_log_wins_over_a_higher_id() -> None:
    cluster = Cluster(
        3,
        disks={
            1: disk(history(1, 3), 1),
            2: disk(history(1, 2), 1),
            3: disk(history(1, 2), 1),
        },
    )
    cluster.settle()
    assert cluster.serving_leader() == 1
    # The winner's history is the new epoch's initial history: every member commits all of it.
    cluster.assert_identical()
    assert cluster.r(2).tree.get("/h1-3") is not None


def test_a_higher_current_epoch_wins_over_a_longer_log() -> None:
    cluster = Cluster(
        3,
        disks={
            1: disk(history(1, 2), 2, 2),  # established epoch 2, proposed nothing in it
            2: disk(history(1, 3), 1),  # logged 1:3, which epoch 2 never committed
            3: disk(history(1, 2), 1),
        },
    )
    cluster.settle()
    assert cluster.serving_leader() == 1
    cluster.assert_identical()
    assert cluster.r(2).tree.get("/h1-3") is None
    assert all(zxid != make_zxid(1, 3) for zxid, _raw in cluster.r(2).history)
    assert all(r.zxid != make_zxid(1, 3) for r in cluster.disks[2].log)


# ---- discovery -----------------------------------------------------------------------------------


def test_the_new_epoch_is_above_every_accepted_epoch_of_the_quorum() -> None:
    cluster = Cluster(
        3,
        disks={1: disk([], 6, 1), 2: disk([], 4, 1), 3: disk([], 2, 1)},
    )
    cluster.settle()
    leader = cluster.serving_leader()
    assert leader == 3
    epoch = cluster.r(leader).epoch
    # Everyone whose FollowerInfo reached the leader before it chose the epoch is below it.
    infos: dict[int, int] = {leader: 2}
    for source, target, message in cluster.sent:
        if isinstance(message, NewEpoch) and source == leader:
            break
        if isinstance(message, FollowerInfo) and target == leader:
            infos[source] = message.accepted_epoch
    assert len(infos) >= 2
    assert all(epoch > accepted for accepted in infos.values()), (epoch, infos)
    assert epoch > 6
    for i in cluster.ids:
        assert (cluster.r(i).accepted_epoch, cluster.r(i).current_epoch) == (epoch, epoch)
        assert (cluster.disks[i].accepted_epoch, cluster.disks[i].current_epoch) == (epoch, epoch)


def test_followers_persist_epochs_in_the_ready_that_sends_the_ack() -> None:
    cluster = Cluster(
        3, disks={1: disk(history(1, 1), 1), 2: disk(history(1, 2), 1), 3: disk(history(1, 4), 1)}
    )
    cluster.settle()
    assert cluster.serving_leader() == 3
    epoch = cluster.r(3).epoch
    # The leader's own accepted epoch is durable before its NewEpoch goes out.
    announce = next(
        r for r in cluster.readies[3] if any(isinstance(m, NewEpoch) for _, m in r.messages)
    )
    assert announce.epochs is not None
    assert announce.epochs[0] == epoch
    assert all(isinstance(m, NewEpoch) for _, m in announce.split_messages()[1])
    for follower, logged in ((1, 1), (2, 2)):
        readies = cluster.readies[follower]
        [acked] = [r for r in readies if any(isinstance(m, AckEpoch) for _, m in r.messages)]
        assert acked.epochs is not None
        assert acked.epochs[0] == epoch
        [synced] = [r for r in readies if any(isinstance(m, AckNewLeader) for _, m in r.messages)]
        assert synced.epochs == (epoch, epoch)
        # Messages may leave before the Ready is durable, but never these acknowledgements.
        for ready, kind in ((acked, AckEpoch), (synced, AckNewLeader)):
            early, late = ready.split_messages()
            assert not any(isinstance(m, kind) for _, m in early)
            assert any(isinstance(m, kind) for _, m in late)
        # ... and the records of the NewLeader are persisted by the Ready that acknowledges it.
        [new_leader] = cluster.messages(NewLeader, target=follower)
        assert new_leader.mode is SyncMode.DIFF
        assert synced.persist == list(new_leader.records)
        assert [r.zxid for r in synced.persist] == [make_zxid(1, c) for c in range(logged + 1, 5)]
        assert cluster.disks[follower].log[-1].zxid == make_zxid(1, 4)


def test_a_follower_told_a_lower_epoch_than_it_accepted_goes_back_to_election() -> None:
    config = ReplicaConfig(1, frozenset({1, 2, 3}), tick_ms=TICK)
    follower = Replica(config, DataTree(), accepted_epoch=5, current_epoch=3)
    follower.take_ready()
    # Members 2 and 3 report that 3 leads: follow it.
    follower.receive(3, Notification(9, Vote(3, 0, 3), ServerState.LEADING))
    follower.receive(2, Notification(9, Vote(3, 0, 3), ServerState.FOLLOWING))
    assert (follower.state, follower.leader) == (ServerState.FOLLOWING, 3)
    info = [m for _, m in follower.take_ready().messages if isinstance(m, FollowerInfo)]
    assert info == [FollowerInfo(5, 0, 0, False)]

    follower.receive(3, NewEpoch(4))
    assert follower.state is ServerState.LOOKING
    assert follower.phase is Phase.ELECTION
    assert follower.accepted_epoch == 5
    ready = follower.take_ready()
    assert ready.epochs is None
    assert not any(isinstance(m, AckEpoch) for _, m in ready.messages)


def test_a_member_acks_an_epoch_for_one_leader_only() -> None:
    """Zab: a follower promises an epoch to one prospective leader. Member 1 reports its accepted
    epoch to 3, which picks epoch 2, but 3's NewEpoch is slow; 1 follows 2 meanwhile, which also
    picks epoch 2, and acknowledges it. When 1 comes back to 3 holding epoch 2, 3 must not count
    1's acknowledgement toward its quorum: if it did, 2 and 3 would both establish epoch 2 (with
    1 in both quorums) and commit different histories."""
    cluster = Cluster(
        3,
        disks={
            1: disk(history(1, 2), 1),
            2: disk(history(1, 2), 1),
            3: disk(history(1, 3), 1),
        },
    )
    # 2 and 3 never hear each other; 1 follows 3 first, but 3's NewEpoch is slow.
    cluster.blackhole(2, 3)
    cluster.blackhole(1, 2)
    cluster.held[(3, 1)] = lambda m: not isinstance(m, Notification)
    cluster.tick(3)
    assert cluster.r(1).leader == 3
    assert cluster.r(3).epoch == 2
    # 1 gives up on 3 (whose clock is slow: it does not tick) and follows 2.
    cluster.blackhole(1, 3)
    cluster.dropped -= {(1, 2), (2, 1)}
    cluster.held[(2, 1)] = lambda m: isinstance(m, NewLeader)
    for _ in range(40):
        if cluster.r(1).leader == 2 and cluster.r(2).phase is Phase.SYNCHRONIZATION:
            break
        cluster.tick(only=[1, 2])
    assert cluster.r(2).epoch == 2
    assert cluster.r(1).accepted_epoch == 2
    # 1 gives up on 2 as well (2's clock is slow now) and goes back to 3.
    cluster.blackhole(1, 2)
    cluster.dropped -= {(1, 3), (3, 1)}
    del cluster.held[(3, 1)]
    for _ in range(40):
        if cluster.r(1).leader == 3 and cluster.r(1).phase is not Phase.DISCOVERY:
            break
        cluster.tick(only=[1])
    cluster.run()
    assert cluster.r(3).phase is Phase.DISCOVERY, "3 counted 1's second promise of epoch 2"
    assert not cluster.r(3).serving
    # 1 returns to 2: its votes reach 2, whose answer (it leads) waits on the link behind the
    # NewLeader; a duplicate of that answer overtakes it, as election notifications may.
    cluster.blackhole(1, 3)
    cluster.dropped -= {(1, 2), (2, 1)}
    for _ in range(40):
        if cluster.r(1).state is ServerState.LOOKING:
            break
        cluster.tick(only=[1])
    answer = next(
        m
        for m in cluster.links[(2, 1)]
        if isinstance(m, Notification) and m.state is ServerState.LEADING
    )
    cluster.r(1).receive(2, answer)
    cluster.pump(1)
    assert cluster.r(1).leader == 2
    del cluster.held[(2, 1)]
    cluster.run()
    cluster.tick(only=[1, 2])
    assert cluster.r(2).serving
    assert cluster.r(1).serving
    cluster.assert_one_leader_per_epoch()
    assert not cluster.r(3).serving


def test_two_members_that_follow_each_other_give_up_and_elect() -> None:
    """Stale copies of old 'I lead' notifications (election traffic may be duplicated and
    delayed) make 1 follow 2 while 2 follows 1. Neither leads, so neither may keep the other
    waiting: each hears only FollowerInfo from its 'leader', which is no sign of a leader."""
    cluster = Cluster(3)
    cluster.settle()
    cluster.crash(3)  # 1 and 2 lose their leader and start looking
    for me, other in ((1, 2), (2, 1)):
        replica = cluster.r(me)
        stale = Notification(replica.round, Vote(1, 0, other), ServerState.LEADING)
        replica.receive(other, stale)
        cluster.pump(me)
    cluster.run()
    assert cluster.r(1).leader == 2
    assert cluster.r(2).leader == 1
    cluster.settle(max_ticks=3 * cluster.configs[1].init_limit)
    cluster.serving_leader()
    cluster.open_session(cluster.serving_leader(), 9)
    cluster.assert_identical()


# ---- broadcast -----------------------------------------------------------------------------------


def ensemble(voters: int = 3, observers: int = 0, **settings: Any) -> tuple[Cluster, int]:
    cluster = Cluster(voters, observers, **settings)
    cluster.settle()
    leader = cluster.serving_leader()
    cluster.open_session(leader, 1)
    cluster.run()
    return cluster, leader


@pytest.mark.parametrize("own_ack_first", [True, False])
def test_a_proposal_commits_with_a_follower_ack_and_the_leaders_own_durable_log(
    own_ack_first: bool,
) -> None:
    cluster, leader = ensemble(local_commit=False)  # Zab's own path: Propose, Ack, Commit
    follower = cluster.followers()[0]
    replica = cluster.r(leader)
    replica.submit(1, 10, create("/p", b"v"))
    proposed = cluster.take(leader)
    [record] = proposed.persist
    assert {t for t, m in proposed.messages if m == Propose((record,))} == set(cluster.followers())
    assert not proposed.committed

    def follower_acks() -> None:
        cluster.deliver(leader, follower)
        acked = cluster.take(follower)
        assert acked.persist == [record]
        assert (leader, Ack(record.zxid)) in acked.split_messages()[1], "sent once durable"
        assert "/p" not in cluster.r(follower).tree
        cluster.deliver(follower, leader)

    if own_ack_first:
        assert not cluster.take(leader).committed, "the leader alone is not a quorum of 3"
        assert "/p" not in replica.tree
        follower_acks()
        assert "/p" not in replica.tree, "handed out by the next take_ready, not applied yet"
        committed = cluster.take(leader)
    else:
        follower_acks()
        assert "/p" not in replica.tree, "the leader's own log was not durable yet"
        committed = cluster.take(leader)
    assert committed.committed == [record]
    assert replica.tree.get("/p") is not None
    assert any(isinstance(m, Commit) and m.zxid == record.zxid for _, m in committed.messages)
    cluster.run()
    assert {cluster.r(i).tree.get("/p") is not None for i in cluster.ids} == {True}


def test_a_follower_applies_a_commit_only_after_its_own_log_is_durable() -> None:
    cluster, leader = ensemble(local_commit=False)
    fast, slow = cluster.followers()
    cluster.r(leader).submit(1, 10, create("/q"))
    cluster.pump(leader)
    cluster.deliver(leader, fast)
    cluster.pump(fast)
    cluster.deliver(fast, leader)
    cluster.pump(leader)  # committed: Commit is queued to both followers
    cluster.deliver(leader, slow)  # the Propose
    cluster.deliver(leader, slow)  # the Commit, before slow took its Ready
    assert "/q" not in cluster.r(slow).tree
    logged = cluster.take(slow)
    assert [r.zxid for r in logged.persist]
    assert not logged.committed
    assert cluster.take(slow).committed == logged.persist


def test_where_two_members_are_a_quorum_followers_commit_logged_proposals_themselves() -> None:
    """Three voters: the leader sends a proposal only once it is durable (LoggedPropose), so a
    follower that has made it durable too knows it is on a quorum and applies it without a
    Commit, and the leader, counting that follower's Ack, sends no Commit to voters at all.
    (That is the path under load; propose_early_below=0 takes it for every write.)"""
    cluster, leader = ensemble(propose_early_below=0)
    follower = cluster.followers()[0]
    cluster.sent.clear()
    cluster.r(leader).submit(1, 10, create("/local", b"v"))
    proposed = cluster.take(leader)
    [record] = proposed.persist
    early, late = proposed.split_messages()
    assert not early, "nothing may leave before the leader's own log is durable"
    assert {t for t, m in late if m == LoggedPropose((record,))} == set(cluster.followers())
    cluster.deliver(leader, follower)
    logged = cluster.take(follower)
    assert logged.persist == [record]
    assert not logged.committed
    assert "/local" not in cluster.r(follower).tree, "not before its own log is durable"
    applied = cluster.take(follower)  # taking the next Ready says the last one is durable
    assert applied.committed == [record]
    assert cluster.r(follower).tree.get("/local") is not None
    assert "/local" not in cluster.r(leader).tree, "the follower was first: that is allowed"
    cluster.run()
    assert all(cluster.r(i).tree.get("/local") is not None for i in cluster.ids)
    assert not cluster.messages(Commit), "no Commit to followers that commit themselves"
    cluster.assert_identical()


def test_an_idle_leader_proposes_before_its_sync_and_says_when_it_has_synced() -> None:
    """Three voters, nothing in flight: the proposal leaves before the leader's sync (the syncs
    overlap), a Logged follows once the leader's log is durable, and a follower commits once
    it has both its own durable copy and that word; no Commit goes to a voter."""
    cluster, leader = ensemble()
    follower = cluster.followers()[0]
    cluster.sent.clear()
    cluster.r(leader).submit(1, 10, create("/early", b"v"))
    proposed = cluster.take(leader)
    [record] = proposed.persist
    early, late = proposed.split_messages()
    assert {t for t, m in early if m == EarlyPropose((record,))} == set(cluster.followers())
    assert {t for t, m in late if m == Logged(record.zxid)} == set(cluster.followers())
    assert promises_durability(Logged(record.zxid)), "it leaves once the leader's sync is done"
    cluster.deliver(leader, follower)
    assert cluster.take(follower).persist == [record]
    assert not cluster.take(follower).committed, "durable here, but the leader has not said"
    cluster.deliver(leader, follower)
    assert cluster.take(follower).committed == [record]
    cluster.run()
    assert all(cluster.r(i).tree.get("/early") is not None for i in cluster.ids)
    assert not cluster.messages(Commit), "no Commit to followers that commit themselves"
    cluster.assert_identical()


def test_a_forwarded_write_goes_early_to_its_follower_alone() -> None:
    """A write a follower forwarded: that follower (its client waits) hears it before the
    leader's sync and then the leader's Logged; the other follower hears it once, after the
    sync, as a LoggedPropose, so that its sync does not share the disk with the two the
    client waits for."""
    cluster, leader = ensemble()
    origin, other = cluster.followers()
    cluster.open_session(origin, 2)
    cluster.run()
    cluster.sent.clear()
    cluster.r(origin).submit(2, 10, create("/forwarded", b"v"))
    cluster.take(origin)
    while not isinstance(cluster.deliver(origin, leader), Forward):
        pass  # an Ack it held back for its last write goes ahead of the Forward
    proposed = cluster.take(leader)
    [record] = proposed.persist
    early, late = proposed.split_messages()
    assert early == [(origin, EarlyPropose((record,)))]
    assert late == [(origin, Logged(record.zxid)), (other, LoggedPropose((record,)))], (
        "the client's follower hears of the leader's sync first"
    )
    cluster.deliver(leader, origin)
    logged_here = cluster.take(origin)
    assert logged_here.persist == [record]
    assert not logged_here.messages, "its Ack waits for its next message to the leader"
    assert not cluster.take(origin).committed, "durable here, but the leader has not said"
    cluster.deliver(leader, origin)
    assert cluster.take(origin).committed == [record]
    cluster.run()
    assert all(cluster.r(i).tree.get("/forwarded") is not None for i in cluster.ids)
    assert not cluster.messages(Commit), "no Commit to followers that commit themselves"
    assert [m for _s, t, m in cluster.sent if t == other and isinstance(m, Logged)] == []
    cluster.assert_identical()


def _forwarded_write(cluster: Cluster, leader: int, origin: int, cxid: int) -> None:
    cluster.r(origin).submit(2, cxid, create(f"/held{cxid}", b"v"))
    cluster.pump(origin)
    cluster.run()


def _acks_from(cluster: Cluster, member: int, leader: int) -> list[int]:
    return [m.zxid for s, t, m in cluster.sent if (s, t) == (member, leader) and type(m) is Ack]


def test_a_follower_holds_its_ack_of_its_own_write_until_its_next_message() -> None:
    """Three voters: the other follower's Ack makes the leader's quorum for a write that came
    through this follower, which commits it itself; its own Ack only costs the leader a
    wake-up, so it goes out ahead of its next message to the leader: the next Forward, or at
    the latest its answer to the next heartbeat."""
    cluster, leader = ensemble()
    origin, other = cluster.followers()
    cluster.open_session(origin, 2)
    cluster.run()
    cluster.tick()  # the session's own Ack is paid with the heartbeat answer
    cluster.sent.clear()
    _forwarded_write(cluster, leader, origin, 30)
    first = cluster.r(origin).last_logged
    assert "/held30" in cluster.r(origin).tree
    assert "/held30" in cluster.r(leader).tree
    assert _acks_from(cluster, origin, leader) == [], "held back"
    assert _acks_from(cluster, other, leader) == [first], "the other follower's made the quorum"
    cluster.sent.clear()
    _forwarded_write(cluster, leader, origin, 31)
    forwarded = [m for s, t, m in cluster.sent if (s, t) == (origin, leader)]
    assert type(forwarded[0]) is Ack
    assert forwarded[0].zxid == first
    assert type(forwarded[1]) is Forward, "the held Ack went just ahead of the next Forward"
    cluster.sent.clear()
    cluster.tick()
    assert _acks_from(cluster, origin, leader) == [cluster.r(origin).last_logged]
    cluster.assert_identical()


def test_with_the_other_follower_down_a_held_ack_commits_at_the_next_heartbeat() -> None:
    """The leader then needs this follower's Ack for its own commit: its clients' reads wait at
    most a tick, while the follower's client has its answer at once."""
    cluster, leader = ensemble()
    origin, other = cluster.followers()
    cluster.open_session(origin, 2)
    cluster.run()
    cluster.crash(other)
    _forwarded_write(cluster, leader, origin, 32)
    assert "/held32" in cluster.r(origin).tree, "answered at once"
    assert "/held32" not in cluster.r(leader).tree
    cluster.tick()
    assert "/held32" in cluster.r(leader).tree


def test_a_follower_acks_at_once_what_is_not_its_own_clients_write() -> None:
    cluster, leader = ensemble()
    origin, other = cluster.followers()
    cluster.sent.clear()
    cluster.r(leader).submit(1, 33, create("/leaders"))
    cluster.pump(leader)
    cluster.run()
    zxid = cluster.r(leader).last_logged
    assert _acks_from(cluster, origin, leader) == [zxid]
    assert _acks_from(cluster, other, leader) == [zxid]


def test_with_five_voters_a_follower_acks_its_own_clients_write_at_once() -> None:
    cluster, leader = ensemble(5)
    origin = cluster.followers()[0]
    cluster.open_session(origin, 2)
    cluster.run()
    cluster.sent.clear()
    _forwarded_write(cluster, leader, origin, 34)
    assert _acks_from(cluster, origin, leader) == [cluster.r(origin).last_logged]
    assert all("/held34" in cluster.r(i).tree for i in cluster.ids)


def test_a_follower_awaits_the_leader_while_its_clients_wait_on_it() -> None:
    """`Replica.awaits_leader`, the hint a member's shell stays awake on: a follower whose
    client's write is forwarded and not yet answered, and no one else."""
    cluster, leader = ensemble()
    origin, other = cluster.followers()
    cluster.open_session(origin, 2)
    cluster.run()
    assert not any(cluster.r(i).awaits_leader for i in cluster.ids)
    cluster.r(origin).submit(2, 35, create("/awaited"))
    cluster.pump(origin)
    assert cluster.r(origin).awaits_leader
    assert not cluster.r(leader).awaits_leader
    assert not cluster.r(other).awaits_leader
    cluster.run()
    assert "/awaited" in cluster.r(origin).tree
    assert not cluster.r(origin).awaits_leader


def _queued(cluster: Cluster, source: int, target: int) -> list[PeerMessage]:
    return list(cluster.links.get((source, target), ()))


def test_the_other_followers_share_of_a_forwarded_write_is_background_work() -> None:
    """`Replica.background`, the hint a member's shell yields the CPU on: the LoggedPropose of
    a write another follower forwarded is awaited by no client (that follower commits it
    itself), so its follower may let others run first; the follower whose client waits may
    not, and a leader never is background."""
    cluster, leader = ensemble()
    origin, other = cluster.followers()
    cluster.open_session(origin, 2)
    cluster.run()
    cluster.r(origin).submit(2, 40, create("/background"))
    cluster.take(origin)
    while not isinstance(cluster.deliver(origin, leader), Forward):
        pass
    cluster.take(leader)
    to_origin, to_other = _queued(cluster, leader, origin), _queued(cluster, leader, other)
    assert [type(m) for m in to_other] == [LoggedPropose]
    assert cluster.r(other).background(leader, to_other)
    assert not cluster.r(origin).background(leader, to_origin), "its client waits"
    assert not cluster.r(other).background(origin, to_other), "only the leader's word"
    cluster.run()
    assert not cluster.r(leader).background(origin, [Ack(cluster.r(leader).last_logged)])
    assert "/background" in cluster.r(other).tree


def test_a_proposal_whose_ack_the_leader_may_await_is_never_background() -> None:
    """A write of the leader's own client goes early to every follower and waits for the
    first Ack; in five voters every proposal needs followers' Acks."""
    cluster, leader = ensemble()
    cluster.r(leader).submit(1, 41, create("/leaders-own"))
    cluster.take(leader)
    for follower in cluster.followers():
        queued = _queued(cluster, leader, follower)
        assert type(queued[0]) is EarlyPropose
        assert not cluster.r(follower).background(leader, queued)
    cluster.run()
    cluster5, leader5 = ensemble(5)
    cluster5.r(leader5).submit(1, 42, create("/five"))
    cluster5.take(leader5)
    follower = cluster5.followers()[0]
    queued = _queued(cluster5, leader5, follower)
    assert Propose in {type(m) for m in queued}
    assert not cluster5.r(follower).background(leader5, queued)
    assert cluster5.r(follower).background(leader5, [Commit(cluster5.r(leader5).last_logged)])


def test_an_observer_without_waiting_clients_does_background_work() -> None:
    cluster, leader = ensemble(3, 1)
    [observer] = sorted(cluster.observer_ids)
    cluster.r(leader).submit(1, 43, create("/observed"))
    cluster.take(leader)
    queued = _queued(cluster, leader, observer)
    assert queued, "the observer hears of the write"
    assert cluster.r(observer).background(leader, queued), "it never acknowledges"
    cluster.run()
    cluster.open_session(observer, 3)
    cluster.run()
    cluster.r(observer).submit(3, 44, create("/observers-own"))
    cluster.pump(observer)
    assert not cluster.r(observer).background(leader, [Commit(cluster.r(leader).last_logged)])
    cluster.run()
    assert "/observers-own" in cluster.r(observer).tree


def test_a_follower_never_commits_what_the_leader_has_not_announced_as_synced() -> None:
    """A follower holding proposals it has made durable commits none of them while the
    leader's Logged is held back, and then only up to the zxid the Logged names."""
    cluster, leader = ensemble(propose_early_below=2)
    follower, other = cluster.followers()
    cluster.held[(leader, other)] = lambda message: True
    replica = cluster.r(follower)
    cluster.r(leader).submit(1, 11, create("/a"))
    cluster.take(leader)
    cluster.r(leader).submit(1, 12, create("/b"))
    cluster.take(leader)  # with one proposal in flight the second goes early too (below 2)
    link = cluster.links[(leader, follower)]
    first, second = (m for m in link if isinstance(m, EarlyPropose))
    logged = [m for m in link if isinstance(m, Logged)]
    assert logged == [Logged(first.records[0].zxid), Logged(second.records[0].zxid)]
    link.clear()
    for proposal in (first, second):
        replica.receive(leader, proposal)
        cluster.take(follower)
    assert not cluster.take(follower).committed  # taking it says both are durable here
    assert replica.durable_zxid == second.records[0].zxid
    assert "/a" not in replica.tree
    assert replica.commit_zxid < first.records[0].zxid
    replica.receive(leader, logged[0])
    assert [r.cxid for r in cluster.take(follower).committed] == [11]
    assert "/b" not in replica.tree
    replica.receive(leader, logged[1])
    assert [r.cxid for r in cluster.take(follower).committed] == [12]


def test_a_logged_note_from_another_epoch_commits_nothing() -> None:
    cluster, leader = ensemble()
    follower = cluster.followers()[0]
    replica = cluster.r(follower)
    cluster.held[(leader, follower)] = lambda message: isinstance(message, Logged)
    cluster.r(leader).submit(1, 13, create("/c"))
    cluster.take(leader)
    cluster.run()
    cluster.take(follower)
    zxid = replica.last_logged
    stale = make_zxid(zxid_epoch(zxid) - 1, zxid_counter(zxid))
    replica.receive(leader, Logged(stale))
    assert not cluster.take(follower).committed
    assert "/c" not in replica.tree


def test_under_load_the_leader_syncs_first_and_sends_logged_proposals() -> None:
    """With a proposal already in flight, the next waits for the leader's sync and travels as
    a LoggedPropose: the path of docs/decisions/0004."""
    cluster, leader = ensemble()
    cluster.sent.clear()
    cluster.r(leader).submit(1, 14, create("/first"))
    cluster.r(leader).submit(1, 15, create("/second"))
    proposed = cluster.take(leader)
    first, second = proposed.persist
    early, late = proposed.split_messages()
    assert {m for _t, m in early} == {EarlyPropose((first,))}
    assert {m for _t, m in late} == {Logged(first.zxid), LoggedPropose((second,))}
    cluster.run()
    assert all(cluster.r(i).tree.get("/second") is not None for i in cluster.ids)
    cluster.assert_identical()


def test_a_logged_proposal_commits_nothing_beyond_what_the_follower_has_made_durable() -> None:
    cluster, leader = ensemble(propose_early_below=0)
    follower = cluster.followers()[0]
    replica = cluster.r(follower)
    for cxid in (11, 12):
        cluster.r(leader).submit(1, cxid, create(f"/n{cxid}"))
        cluster.take(leader)
    cluster.deliver(leader, follower)  # the first proposal
    first = cluster.take(follower)
    cluster.deliver(leader, follower)  # the second arrives while the first is being synced
    assert [r.cxid for r in cluster.take(follower).committed] == [11]
    assert replica.commit_zxid == first.persist[0].zxid
    assert [r.cxid for r in cluster.take(follower).committed] == [12]


def test_observers_and_five_voter_followers_still_wait_for_commits() -> None:
    for voters, observers in ((3, 1), (5, 0)):
        cluster, leader = ensemble(voters, observers, propose_early_below=0)
        cluster.sent.clear()
        cluster.submit(leader, 1, 20, create("/classic"))
        cluster.run()
        waiting = set(cluster.observer_ids) if voters == 3 else set(cluster.ids) - {leader}
        assert {t for _s, t, m in cluster.sent if isinstance(m, Propose)} == waiting
        assert {t for _s, t, m in cluster.sent if isinstance(m, Commit)} == waiting
        assert all(cluster.r(i).tree.get("/classic") is not None for i in cluster.ids)
        cluster.assert_identical()


def test_acks_are_cumulative_and_a_quorum_commits_what_all_of_it_has_logged() -> None:
    """Five voters: a follower's Ack covers every proposal up to it, and the leader commits up
    to the highest zxid that three voters (itself included) have logged."""
    cluster, leader = ensemble(5)
    fast, slow, *_silent = cluster.followers()
    replica = cluster.r(leader)
    for cxid in (31, 32, 33):
        replica.submit(1, cxid, create(f"/c{cxid}"))
    records = cluster.take(leader).persist
    z1, _z2, z3 = (record.zxid for record in records)
    assert not cluster.take(leader).committed, "the leader's own log alone is no quorum"

    replica.receive(fast, Ack(z3))
    assert not cluster.take(leader).committed, "two of five"
    replica.receive(slow, Ack(z1))
    assert cluster.take(leader).committed == records[:1]
    replica.receive(fast, Ack(z1))  # late and lower: changes nothing
    assert not cluster.take(leader).committed
    assert replica.outstanding == 2
    replica.receive(slow, Ack(z3))
    assert cluster.take(leader).committed == records[1:]
    assert replica.outstanding == 0
    assert replica.commit_zxid == z3


def test_an_observer_never_commits_on_its_own() -> None:
    """The leader and an observer are no quorum: even sent a logged proposal (which a leader
    does not do), an observer waits for the Commit."""
    cluster, leader = ensemble(3, 1)
    [observer] = sorted(cluster.observer_ids)
    cluster.r(leader).submit(1, 40, create("/obs"))
    [record] = cluster.take(leader).persist
    proposal = cluster.links[(leader, observer)].popleft()
    assert proposal == Propose((record,))
    cluster.r(observer).receive(leader, LoggedPropose((record,)))
    assert cluster.take(observer).persist == [record]
    assert not cluster.take(observer).committed
    assert "/obs" not in cluster.r(observer).tree
    cluster.run()
    assert cluster.r(observer).tree.get("/obs") is not None  # with the leader's Commit


def test_a_second_new_leader_in_one_following_sends_the_follower_back_to_election() -> None:
    """A follower that went back to election and joined the same leader again may receive the
    NewLeader answering the AckEpoch it sent the first time as well as the one answering its
    new AckEpoch (the link was never reset). It takes the first and treats the second as
    stale: it elects again rather than logging records it already has."""
    cluster = Cluster()
    for a in cluster.ids:
        for b in cluster.ids:
            cluster.held[(a, b)] = lambda message: isinstance(message, UpToDate)
    for _ in range(50):
        cluster.tick()
        synchronizing = [
            i
            for i in cluster.followers()
            if cluster.r(i).phase is Phase.SYNCHRONIZATION and cluster.r(i).current_epoch
        ]
        if synchronizing:
            break
    follower = synchronizing[0]
    replica = cluster.r(follower)
    [(leader, new_leader)] = [
        (source, m)
        for source, target, m in cluster.sent
        if target == follower and isinstance(m, NewLeader)
    ]
    replica.receive(leader, new_leader)
    assert replica.state is ServerState.LOOKING
    cluster.held.clear()
    cluster.settle()
    cluster.run()
    cluster.assert_identical()


def test_a_follower_that_joins_with_uncommitted_history_gets_a_commit_for_it() -> None:
    """The records a joining follower gets in NewLeader are not logged proposals: if some are
    not committed yet when it is up to date, the leader still sends it a Commit for them."""
    cluster, leader = ensemble(propose_early_below=0)
    late, other = cluster.followers()
    cluster.isolate(late)
    cluster.held[(leader, other)] = lambda message: isinstance(message, LoggedPropose)
    cluster.r(leader).submit(1, 30, create("/while-away"))
    cluster.take(leader)  # proposed; `other` does not get it yet, so it is not committed
    cluster.sent.clear()
    cluster.heal()
    cluster.settle()  # `late` rejoins: NewLeader carries the record, UpToDate does not commit it
    assert cluster.r(late).tree.get("/while-away") is not None
    assert cluster.messages(Commit, target=late), "the join committed it: the leader says so"
    del cluster.held[(leader, other)]
    cluster.run()
    assert cluster.r(other).tree.get("/while-away") is not None
    cluster.assert_identical()


def test_a_leader_cut_off_from_its_followers_stops_serving_after_sync_limit() -> None:
    cluster, leader = ensemble(sync_limit=4)
    cluster.isolate(leader, tell=False)  # messages vanish; no link reports a failure
    cluster.submit(leader, 1, 11, create("/lost"))
    for _ in range(4):
        cluster.tick(only=[leader])
        assert cluster.r(leader).serving
    cluster.tick(only=[leader])
    replica = cluster.r(leader)
    assert not replica.serving
    assert replica.state is ServerState.LOOKING
    assert (1, 11) in cluster.rejected[leader]
    assert "/lost" not in replica.tree
    assert all(a.record.cxid != 11 for a in cluster.applied[leader])


def test_writes_submitted_at_a_follower_are_forwarded_and_applied_everywhere() -> None:
    cluster, _leader = ensemble()
    follower = cluster.followers()[0]
    cluster.submit(follower, 1, 20, create("/via-follower", b"f"))
    cluster.submit(follower, 1, 21, SetDataRequest("/via-follower", b"g"))
    first = cluster.result_of(follower, 1, 20)
    second = cluster.result_of(follower, 1, 21)
    assert first.result.error == second.result.error == Code.OK
    assert first.record.zxid < second.record.zxid
    for i in cluster.ids:
        node = cluster.r(i).tree.get("/via-follower")
        assert node is not None
        assert node.data == b"g"
        assert node.version == 1
    cluster.assert_identical()


def test_writes_submitted_together_at_a_follower_travel_as_one_forward_in_order() -> None:
    cluster, leader = ensemble()
    follower = cluster.followers()[0]
    replica = cluster.r(follower)
    for cxid in range(30, 35):
        replica.submit(1, cxid, create(f"/batch-{cxid}"))
    cluster.sent.clear()
    cluster.pump(follower)
    cluster.run()
    forwards = [m for src, _dst, m in cluster.sent if src == follower and isinstance(m, Forward)]
    assert len(forwards) == 1
    assert [write[1] for write in forwards[0].writes] == list(range(30, 35))
    zxids = [cluster.result_of(follower, 1, cxid).record.zxid for cxid in range(30, 35)]
    assert zxids == sorted(zxids)  # prepped by the leader in the order the client sent them
    assert all(f"/batch-{cxid}" in cluster.r(leader).tree for cxid in range(30, 35))
    cluster.assert_identical()


def test_sync_at_a_follower_answers_after_earlier_writes_are_applied_there() -> None:
    cluster, leader = ensemble()
    fast, slow = cluster.followers()
    cluster.r(leader).submit(1, 30, create("/before-sync"))
    cluster.pump(leader)
    cluster.deliver(leader, fast)
    cluster.pump(fast)
    cluster.deliver(fast, leader)
    cluster.pump(leader)  # committed and applied on the leader; slow has not seen it yet
    cluster.r(slow).sync(1, 31)
    cluster.pump(slow)
    cluster.deliver(slow, leader)  # the SyncRequest
    cluster.pump(leader)
    # The leader answers the sync once a quorum answered a heartbeat sent after it (it is
    # still the leader); the slow follower answers once it has applied what came before.
    for _ in range(10):
        while cluster.links.get((leader, slow)):
            cluster.deliver(leader, slow)
        ready = cluster.take(slow)
        if (1, 31) in ready.synced:
            break
        for follower in (fast, slow):  # heartbeat answers reach the leader
            while cluster.links.get((follower, leader)):
                cluster.deliver(follower, leader)
        cluster.pump(leader)
        while cluster.links.get((leader, fast)):
            cluster.deliver(leader, fast)
        cluster.pump(fast)
    else:
        raise AssertionError("the sync never completed")
    assert cluster.r(slow).tree.get("/before-sync") is not None
    assert cluster.result_of(slow, 1, 30).record.zxid <= cluster.r(slow).tree.last_zxid


def test_sync_at_the_leader_answers_once_the_earlier_write_is_applied() -> None:
    cluster, leader = ensemble()
    replica = cluster.r(leader)
    replica.submit(1, 40, create("/s"))
    cluster.take(leader)  # proposed; the leader's own log is not durable yet
    replica.sync(1, 41)
    for follower in cluster.followers():  # both followers ack: committed without the leader
        cluster.deliver(leader, follower)
        cluster.pump(follower)
        cluster.deliver(follower, leader)
    assert replica.commit_zxid == cluster.r(cluster.followers()[0]).last_logged
    assert not replica._ready.committed
    assert not replica._ready.synced
    done = cluster.take(leader)  # durable here: the record is handed out
    assert [record.cxid for record in done.committed] == [40]
    assert replica.tree.get("/s") is not None
    # not answered before a quorum has answered a heartbeat sent after the sync came
    assert (1, 41) not in done.synced
    for follower in cluster.followers():
        while cluster.links.get((leader, follower)):
            cluster.deliver(leader, follower)
        cluster.pump(follower)
        while cluster.links.get((follower, leader)):
            cluster.deliver(follower, leader)
    assert (1, 41) in cluster.take(leader).synced


def test_a_pending_sync_is_rejected_when_its_member_stops_serving() -> None:
    cluster, leader = ensemble()
    follower = cluster.followers()[0]
    cluster.isolate(leader, tell=False)
    cluster.r(follower).sync(1, 60)
    cluster.pump(follower)
    cluster.tick(only=[follower], count=cluster.configs[follower].sync_limit + 1)
    assert not cluster.r(follower).serving
    assert (1, 60) in cluster.rejected[follower]
    assert (1, 60) not in cluster.synced[follower]


def test_a_follower_that_timed_out_rejoins_its_leader_over_the_same_link() -> None:
    """The leader stalls (no ticks, its inbox waits) long enough for a follower to give up on
    it, then resumes; the TCP link never broke. The follower's new FollowerInfo starts a new
    session with the same leader, which must synchronize it again."""
    cluster, leader = ensemble()
    follower, other = cluster.followers()
    for source in cluster.ids:
        if source != leader:
            cluster.held[(source, leader)] = lambda m: True
    cluster.tick(only=[follower, other], count=cluster.configs[follower].sync_limit + 1)
    assert cluster.r(follower).state is ServerState.LOOKING
    cluster.held.clear()
    cluster.run()
    cluster.submit(leader, 1, 70, create("/while-away"))
    cluster.settle(max_ticks=60)
    assert cluster.r(follower).leader == leader
    cluster.submit(follower, 1, 71, create("/back"))
    cluster.assert_identical()


# ---- synchronization -----------------------------------------------------------------------------


def new_leader_for(cluster: Cluster, member: int, after: int) -> NewLeader:
    found = [m for s, t, m in cluster.sent[after:] if isinstance(m, NewLeader) and t == member]
    assert found, f"no NewLeader was sent to {member}"
    return found[-1]


def test_a_follower_missing_a_suffix_is_synchronized_by_diff() -> None:
    cluster, leader = ensemble()
    behind = cluster.followers()[0]
    cluster.isolate(behind)
    for n in range(5):
        cluster.submit(leader, 1, 100 + n, create(f"/d{n}"))
    its_last = cluster.r(behind).last_logged
    mark = len(cluster.sent)
    cluster.heal()
    cluster.settle()
    message = new_leader_for(cluster, behind, mark)
    assert message.mode is SyncMode.DIFF
    assert message.snapshot is None
    assert [r.zxid for r in message.records] == [
        zxid for zxid, _raw in cluster.r(leader).history if zxid > its_last
    ]
    assert len(message.records) == 5
    cluster.assert_identical()


def test_a_divergent_uncommitted_tail_is_truncated_back_to_the_committed_zxid() -> None:
    cluster, old = ensemble()
    for n in range(3):
        cluster.submit(old, 1, 200 + n, create(f"/c{n}"))
    committed = cluster.r(old).tree.last_zxid
    cluster.disks[old].checkpoint(cluster.r(old).tree, cluster.r(old).commit_zxid)
    # The leader logs a proposal nobody else ever sees, then crashes.
    cluster.isolate(old, tell=False)
    cluster.submit(old, 1, 299, create("/uncommitted"))
    tail = cluster.r(old).last_logged
    assert tail > committed
    assert tail in {r.zxid for r in cluster.disks[old].log}
    cluster.crash(old)
    cluster.dropped.clear()
    cluster.settle()
    new = cluster.serving_leader()
    for n in range(3):
        cluster.submit(new, 1, 300 + n, create(f"/n{n}"))
    mark = len(cluster.sent)
    cluster.restart(old)
    cluster.settle()
    message = new_leader_for(cluster, old, mark)
    assert message.mode is SyncMode.TRUNC
    assert message.truncate_after == committed
    cluster.assert_identical()
    assert all(cluster.r(i).tree.get("/uncommitted") is None for i in cluster.ids)
    assert tail not in {r.zxid for r in cluster.disks[old].log}
    assert tail not in {zxid for zxid, _raw in cluster.r(old).history}
    assert cluster.r(old).tree.get("/n2") is not None


def test_a_restarted_leader_syncs_a_follower_behind_its_checkpoint_by_diff() -> None:
    """After a restart, a member's history reaches back past its checkpoint to what its log
    still keeps, so a follower a few records behind that checkpoint gets a diff (whose changes
    it records, for watches to replay) instead of a snapshot."""
    cluster, leader = ensemble()
    behind, other = cluster.followers()
    cluster.isolate(behind)
    for n in range(5):
        cluster.submit(leader, 1, 500 + n, create(f"/r{n}"))
    its_last = cluster.r(behind).last_logged
    for member in (leader, other):
        cluster.disks[member].checkpoint(cluster.r(member).tree, cluster.r(member).commit_zxid)
        assert cluster.disks[member].snapshot.zxid > its_last
    cluster.submit(leader, 1, 505, create("/after-checkpoint"))
    for member in (leader, other):
        cluster.crash(member)
    mark = len(cluster.sent)
    for member in (leader, other):
        cluster.restart(member)
        restarted = cluster.r(member)
        assert restarted.history[0][0] <= its_last < restarted.tree.last_zxid
    cluster.heal()
    cluster.settle()
    new = cluster.serving_leader()
    message = new_leader_for(cluster, behind, mark)
    assert message.mode is SyncMode.DIFF
    assert message.snapshot is None
    assert message.records[0].zxid == its_last + 1
    cluster.assert_identical()
    cluster.submit(new, 1, 599, create("/after-diff"))
    cluster.assert_identical()


def _rejoin_from_behind_the_history(
    cluster: Cluster, leader: int, far: int
) -> tuple[int, NewLeader]:
    """Heal the isolated follower `far`, whose last record the leader's history no longer
    holds: (its last zxid, the leader's sync message to it), which must be a snapshot."""
    its_last = cluster.r(far).last_logged
    assert cluster.r(leader).history[0][0] > its_last
    mark = len(cluster.sent)
    cluster.heal()
    cluster.settle()
    message = new_leader_for(cluster, far, mark)
    assert message.mode is SyncMode.SNAP
    return its_last, message


def test_a_follower_behind_the_history_window_gets_a_snapshot() -> None:
    cluster, leader = ensemble(history_limit=3)
    far = cluster.followers()[0]
    cluster.isolate(far)
    for n in range(12):
        cluster.submit(leader, 1, 400 + n, create(f"/s{n}"))
    its_last, message = _rejoin_from_behind_the_history(cluster, leader, far)
    assert message.snapshot is not None
    assert message.snapshot.zxid >= its_last
    assert cluster.disks[far].snapshot == message.snapshot
    cluster.assert_identical()
    cluster.submit(leader, 1, 499, create("/after-snap"))
    cluster.assert_identical()


def test_the_history_keeps_at_most_its_bytes_and_a_follower_behind_them_gets_a_snapshot() -> None:
    """Writes of big values shorten the history instead of growing every member's memory."""
    cluster, leader = ensemble(history_limit_bytes=5_000)
    far = cluster.followers()[0]
    cluster.isolate(far)
    for n in range(12):
        cluster.submit(leader, 1, 400 + n, create(f"/big{n}", bytes(1_000)))
    for member in cluster.replicas:
        replica = cluster.r(member)
        assert replica.history_bytes == sum(len(raw) for _zxid, raw in replica.history)
        if member != far:
            assert 0 < replica.history_bytes <= 5_000
            assert len(replica.history) < 12
    _rejoin_from_behind_the_history(cluster, leader, far)
    cluster.assert_identical()


# ---- observers -----------------------------------------------------------------------------------


def test_one_voter_commits_alone_and_its_observer_applies_the_history() -> None:
    cluster = Cluster(1, 1)
    cluster.settle()
    assert cluster.serving_leader() == 1
    assert cluster.r(2).state is ServerState.OBSERVING
    cluster.open_session(1, 1)
    cluster.blackhole(1, 2)  # the observer hears nothing, acknowledges nothing
    cluster.submit(1, 1, 1, create("/voter-only"))
    assert cluster.r(1).tree.get("/voter-only") is not None
    assert cluster.r(2).tree.get("/voter-only") is None
    cluster.dropped.clear()
    cluster.isolate(2)  # a clean break: the observer reconnects and is synchronized
    cluster.heal()
    cluster.settle()
    cluster.submit(1, 1, 2, create("/both"))
    cluster.assert_identical()
    assert not cluster.messages(Ack, source=2), "an observer never acknowledges proposals"


def test_an_observer_does_not_make_a_quorum() -> None:
    cluster, leader = ensemble(3, 1, sync_limit=4)
    observer = 4
    assert cluster.r(observer).state is ServerState.OBSERVING
    cluster.submit(leader, 1, 1, create("/seen"))
    assert cluster.r(observer).tree.get("/seen") is not None
    # The two other voters go silent; the observer is up and connected to the leader.
    for voter in cluster.followers():
        cluster.blackhole(voter, leader)
        cluster.blackhole(voter, observer)
    cluster.submit(leader, 1, 2, create("/never"))
    for _ in range(8):
        cluster.tick(only=[leader, observer])
    assert all(cluster.r(i).tree.get("/never") is None for i in cluster.ids)
    assert (1, 2) in cluster.rejected[leader]
    # A voter and an observer cannot elect a leader either.
    cluster.tick(30, only=[leader, observer])
    assert not cluster.r(leader).serving
    assert not cluster.r(observer).serving
    assert cluster.r(leader).state is ServerState.LOOKING
    cluster.dropped.clear()
    cluster.settle()
    cluster.submit(cluster.serving_leader(), 1, 3, create("/later"))
    cluster.assert_identical()


# ---- sessions ------------------------------------------------------------------------------------


def test_ephemerals_vanish_with_their_session_on_every_member() -> None:
    cluster, leader = ensemble()
    follower = cluster.followers()[0]
    cluster.open_session(follower, 50, timeout_ms=300)
    cluster.open_session(follower, 51, timeout_ms=300)
    cluster.submit(follower, 50, 1, create("/eph", b"e", ephemeral=True))
    cluster.submit(follower, 51, 1, create("/kept-eph", b"k", ephemeral=True))
    for i in cluster.ids:
        assert cluster.r(i).tree.ephemerals_of(50) == {"/eph"}
    for _ in range(20):  # 1 s: three times the timeout; only session 51 is heard from
        cluster.r(follower).touch(51)
        cluster.tick()
    for i in cluster.ids:
        tree = cluster.r(i).tree
        assert tree.get("/eph") is None
        assert 50 not in tree.sessions
        assert not tree.ephemerals_of(50)
        assert tree.get("/kept-eph") is not None
        assert 51 in tree.sessions
    cluster.assert_identical()
    assert cluster.r(leader).serving


def test_quorum_size_is_a_strict_majority() -> None:
    from zkpy.zab.replica import quorum_size

    assert [quorum_size(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_a_deposed_leader_that_has_not_noticed_cannot_answer_a_sync() -> None:
    """sync + read must not return state older than a write committed by a newer leader:
    the old leader needs a quorum to answer a heartbeat sent after the sync (Raft's ReadIndex)."""
    cluster, old = ensemble()
    others = [i for i in cluster.alive if i != old]
    cluster.isolate(old, tell=False)  # nobody tells the old leader; its clock stands still
    cluster.tick(only=others, count=cluster.configs[others[0]].sync_limit + 2)
    cluster.run()
    cluster.tick(only=others, count=cluster.configs[others[0]].init_limit)
    cluster.run()
    (new,) = [i for i in others if cluster.r(i).state is ServerState.LEADING]
    assert cluster.r(new).serving
    assert cluster.r(new).epoch > cluster.r(old).epoch
    assert cluster.r(old).state is ServerState.LEADING
    assert cluster.r(old).serving  # not noticed
    cluster.r(new).submit(1, 70, create("/after-the-change"))
    cluster.pump(new)
    cluster.run()
    assert cluster.r(new).tree.get("/after-the-change") is not None
    cluster.r(old).sync(1, 71)
    cluster.pump(old)
    assert (1, 71) not in cluster.synced[old]  # no quorum answers: it may not claim currency
    cluster.tick(only=[old], count=cluster.configs[old].sync_limit + 2)
    cluster.pump(old)
    assert not cluster.r(old).serving
    assert (1, 71) in cluster.rejected[old]
    assert (1, 71) not in cluster.synced[old]
