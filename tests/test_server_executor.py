"""The Ready executor on its own, over recording fakes of its Storage, Transport and Hooks: the
order the Ready contract asks for, step by step, without sockets, threads or the simulator."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from zkpy.core.requests import CreateRequest, CreateSessionRequest, WriteRequest
from zkpy.core.tree import ApplyResult, DataTree
from zkpy.core.txn import Create, SetData, TxnRecord
from zkpy.core.types import OPEN_ACL_UNSAFE, WatchedEvent, WatchMode
from zkpy.core.watches import ChangeLog
from zkpy.server.executor import ReadyExecutor
from zkpy.zab.messages import Ack, Commit, LoggedPropose, PeerMessage, Propose
from zkpy.zab.replica import Ready, Replica, ReplicaConfig

Step = tuple[str, object]


class Recorder:
    """Storage, Transport and Hooks at once, writing every call into one timeline."""

    def __init__(self, *, inline: bool) -> None:
        self.inline = inline
        self.timeline: list[Step] = []
        self.durable = 0

    @property
    def durable_zxid(self) -> int:
        return self.durable

    def persists_inline(self, ready: Ready) -> bool:
        return self.inline

    def persist(self, ready: Ready) -> None:
        self.timeline.append(("persist", [record.zxid for record in ready.persist]))
        if ready.persist:
            self.durable = ready.persist[-1].zxid

    def send(self, peer: int, message: PeerMessage) -> None:
        self.timeline.append(("send", type(message).__name__))

    def flush(self) -> None:
        self.timeline.append(("flush", None))

    def on_ready(self, ready: Ready) -> None:
        self.timeline.append(("take", None))

    def on_session_closed(self, session_id: int) -> None:
        self.timeline.append(("closed", session_id))

    def on_session_attached(self, session_id: int, owner: int) -> None:
        self.timeline.append(("attached", session_id))

    def on_serving_changed(self, serving: bool) -> None:
        self.timeline.append(("serving", serving))

    def without(self, *kinds: str) -> list[Step]:
        return [step for step in self.timeline if step[0] not in kinds]


def single_member(recorder: Recorder) -> ReadyExecutor:
    """An ensemble of one, leading from the start, whose first Ready has been carried out."""
    replica = Replica(ReplicaConfig(1, frozenset({1})), DataTree())
    executor = ReadyExecutor(
        replica,
        recorder,
        recorder,
        recorder,
        change_log=ChangeLog(start_zxid=0),
        checkpoint_interval=lambda: 3,
    )
    ready = executor.advance()
    if ready is not None:
        executor.persist(ready)
        executor.durable()
    assert executor.advance() is None
    assert not executor.busy
    recorder.timeline.clear()
    return executor


def write(executor: ReadyExecutor, recorder: Recorder, cxid: int, request: WriteRequest) -> None:
    def replied(result: ApplyResult | None) -> None:
        assert result is not None
        recorder.timeline.append(("reply", result.record.zxid))

    executor.expect_reply((7, cxid), replied)
    executor.replica.submit(7, cxid, request)


def take_and_persist(executor: ReadyExecutor) -> None:
    """Take the next Ready and persist it: in ``advance`` if the storage persists inline."""
    ready = executor.advance()
    assert ready is not None
    executor.persist(ready)


def watch_everything(executor: ReadyExecutor, recorder: Recorder) -> None:
    def heard(event: WatchedEvent) -> None:
        recorder.timeline.append(("event", event.zxid))

    watcher: Hashable = "client"
    executor.watches.add(watcher, "/", WatchMode.PERSISTENT_RECURSIVE)
    executor.register_event_sink(watcher, heard)


def test_a_write_is_persisted_then_applied_and_its_event_goes_before_its_reply() -> None:
    recorder = Recorder(inline=False)
    executor = single_member(recorder)
    watch_everything(executor, recorder)
    write(executor, recorder, 1, CreateSessionRequest(7, 30_000, b"pw"))
    write(executor, recorder, 2, CreateRequest("/a", b"x", OPEN_ACL_UNSAFE))

    waiting = executor.advance()
    assert waiting is not None
    assert executor.busy
    assert executor.advance() is None, "nothing is taken while a Ready waits for storage"
    assert recorder.without("flush") == [("take", None)], "no reply before the persist"

    executor.persist(waiting)
    executor.durable()
    assert executor.advance() is None
    session, create = (record.zxid for record in waiting.persist)
    assert recorder.without("flush") == [
        ("take", None),
        ("persist", [session, create]),
        ("take", None),  # taking again says the records are durable: they commit
        ("reply", session),
        ("event", create),
        ("reply", create),
        ("take", None),
    ]


def test_inline_storage_carries_everything_out_in_one_advance() -> None:
    recorder = Recorder(inline=True)
    executor = single_member(recorder)
    write(executor, recorder, 1, CreateSessionRequest(7, 30_000, b"pw"))
    assert executor.advance() is None
    assert not executor.busy
    zxid = executor.tree.last_zxid
    assert ("persist", [zxid]) in recorder.timeline
    assert recorder.timeline.index(("persist", [zxid])) < recorder.timeline.index(("reply", zxid))


def test_messages_that_promise_durability_wait_for_the_persist() -> None:
    recorder = Recorder(inline=False)
    executor = single_member(recorder)
    record = TxnRecord(1 << 32 | 5, 7, 1, 0, SetData("/a", b"", 1))
    ready = Ready(
        persist=[record],
        messages=[(2, Propose((record,))), (3, Ack(record.zxid)), (3, Commit(1)), (2, Commit(1))],
    )
    late = executor.send_early(ready)
    assert recorder.without("flush") == [("send", "Propose"), ("send", "Commit")]
    assert late == [(3, Ack(record.zxid)), (3, Commit(1))], "a peer's messages keep their order"
    executor.persist(ready)
    executor.finish(ready, late)
    assert recorder.without("flush")[2:] == [
        ("persist", [record.zxid]),
        ("send", "Ack"),
        ("send", "Commit"),
    ]


def test_a_lost_leadership_fails_the_waiting_writes_before_it_is_announced() -> None:
    recorder = Recorder(inline=True)
    executor = single_member(recorder)
    outcomes: list[ApplyResult | None] = []
    executor.expect_reply((9, 1), outcomes.append)
    executor.finish(Ready(serving_changed=True), [])
    assert executor.replica.serving, "an ensemble of one keeps serving"
    assert outcomes == []
    assert recorder.without("flush") == [("serving", True)]

    executor.replica.serving = False
    executor.finish(Ready(serving_changed=True), [])
    assert outcomes == [None]
    assert recorder.without("flush")[-1] == ("serving", False)


def test_checkpoints_are_due_after_enough_durable_applies() -> None:
    recorder = Recorder(inline=True)
    executor = single_member(recorder)
    write(executor, recorder, 1, CreateSessionRequest(7, 30_000, b"pw"))
    for cxid in range(2, 5):
        write(executor, recorder, cxid, CreateRequest(f"/n{cxid}", b"", OPEN_ACL_UNSAFE))
    executor.advance()
    assert executor.checkpoint_due()
    zxid = executor.tree.last_zxid
    assert executor.checkpoint_started(zxid) == 0, "the log keeps everything after the last one"
    assert not executor.checkpoint_due()
    executor.checkpoint_written(zxid)
    assert executor.checkpoint_started(zxid) == zxid


@pytest.mark.parametrize("inline", [True, False])
def test_an_executor_that_failed_takes_nothing_more(inline: bool) -> None:
    class Failing(Recorder):
        def persist(self, ready: Ready) -> None:
            raise OSError("disk gone")

    recorder = Failing(inline=inline)
    executor = single_member(Recorder(inline=True))
    executor.storage = recorder
    executor.hooks = recorder
    write(executor, recorder, 1, CreateSessionRequest(7, 30_000, b"pw"))
    with pytest.raises(OSError, match="disk gone"):
        take_and_persist(executor)
    assert executor.busy
    taken = len(recorder.timeline)
    assert executor.advance() is None
    assert len(recorder.timeline) == taken, "no Ready is taken after one that failed"


class ScriptedReplica:
    """Hands out the given Readies in turn, then empty ones; applies records to its own tree."""

    def __init__(self, *readies: Ready) -> None:
        self.readies = list(readies)
        self.inner = Replica(ReplicaConfig(1, frozenset({1})), DataTree())
        self.serving = True

    @property
    def tree(self) -> DataTree:
        return self.inner.tree

    def take_ready(self) -> Ready:
        return self.readies.pop(0) if self.readies else Ready()

    def apply(self, record: TxnRecord, *, stats: bool = True) -> ApplyResult:
        return self.inner.apply(record, stats=stats)


def create(n: int) -> TxnRecord:
    """The n-th write of session 7: a create of /n."""
    return TxnRecord(1 << 32 | n, 7, n, 0, Create(f"/{n}", b"", OPEN_ACL_UNSAFE, 0, n))


def scripted(recorder: Recorder, *readies: Ready) -> ReadyExecutor:
    executor = ReadyExecutor(
        ScriptedReplica(*readies),  # type: ignore[arg-type]
        recorder,
        recorder,
        recorder,
        change_log=ChangeLog(start_zxid=0),
        checkpoint_interval=lambda: 1000,
    )
    executor.expect_reply((7, 1), lambda result: recorder.timeline.append(("reply", 1)))
    return executor


def test_a_follower_replies_before_it_sends_the_ack_of_the_records_it_commits() -> None:
    """A follower of three voters commits a write of its own client in the Ready it takes
    after persisting the write (and acknowledging it): the reply leaves before the Ack."""
    recorder = Recorder(inline=True)
    record = create(1)
    executor = scripted(
        recorder, Ready(persist=[record], messages=[(3, Ack(record.zxid))]), Ready([record])
    )
    assert executor.advance() is None
    timeline = recorder.without("flush")
    assert timeline == [
        ("take", None),
        ("persist", [record.zxid]),
        ("take", None),  # the write is durable here and on the leader: it commits
        ("reply", 1),
        ("take", None),
        ("send", "Ack"),
    ]
    replied, acked = recorder.timeline.index(("reply", 1)), recorder.timeline.index(("send", "Ack"))
    assert ("flush", None) in recorder.timeline[replied:acked], "the reply is written out first"


def test_held_acks_leave_before_the_next_persist_and_before_later_messages() -> None:
    recorder = Recorder(inline=True)
    first = create(1)
    second = create(2)
    executor = scripted(
        recorder,
        Ready(persist=[first], messages=[(3, Ack(first.zxid))]),
        Ready(persist=[second], messages=[(3, Ack(second.zxid))]),
        Ready(messages=[(3, Commit(second.zxid))]),
    )
    assert executor.advance() is None
    assert recorder.without("flush", "take") == [
        ("persist", [first.zxid]),
        ("send", "Ack"),
        ("persist", [second.zxid]),
        ("send", "Ack"),
        ("send", "Commit"),
    ]


def test_committed_records_are_answered_before_the_sync_of_the_next_ones() -> None:
    """A Ready that commits records (durable since an earlier Ready) and logs new ones answers
    first and writes the answers out: they do not wait for a sync of records they do not
    depend on. What waits for the sync still does."""
    recorder = Recorder(inline=True)
    applied = create(1)
    logged = create(2)
    executor = scripted(
        recorder,
        Ready([applied], persist=[logged], messages=[(2, LoggedPropose((logged,)))]),
    )
    assert executor.advance() is None
    assert recorder.without("flush", "take") == [
        ("reply", 1),
        ("persist", [logged.zxid]),
        ("send", "LoggedPropose"),
    ]
    replied = recorder.timeline.index(("reply", 1))
    persisted = recorder.timeline.index(("persist", [logged.zxid]))
    assert ("flush", None) in recorder.timeline[replied:persisted], "the reply is written out first"


def test_a_ready_that_truncates_the_log_answers_after_it_is_durable() -> None:
    recorder = Recorder(inline=True)
    applied = create(1)
    logged = create(2)
    executor = scripted(recorder, Ready([applied], truncate_after=0, persist=[logged]))
    assert executor.advance() is None
    assert recorder.without("flush", "take") == [("persist", [logged.zxid]), ("reply", 1)]
