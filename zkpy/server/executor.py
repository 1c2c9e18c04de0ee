"""The one executor of a replica's Ready, run by members and by the simulator alike.

`Replica.take_ready` returns the work of one step; this carries it out in the order the Ready
contract requires:

1. the messages that promise nothing (proposals, commits, election traffic) go out at once, so
   that followers log and apply in parallel with this member;
2. the Ready is made durable: new epochs, an installed snapshot, a log truncation and the new
   records, with one sync for the whole batch (`Storage.persist`);
3. the messages that promise durability go out, each peer's in order (a follower's
   acknowledgements only after step 4);
4. the committed records are applied in zxid order; for each, its watch events go out before
   its reply, so a client never sees a reply that shows a change before the change's event;
   a follower's acknowledgements wait until these replies are out (and the replies of the
   Ready taken next, if it only answers): its clients wait for those replies, while the
   leader needs the Acks only for its own commits (decision 0036). The replica hands out
   only records that earlier Readies made durable, so this step runs before step 2 where
   the Ready also has records to persist: an answer never waits for the sync of records it
   does not depend on (decision 0039);
5. writes the replica could not order are failed, syncs are answered;
6. checkpoint bookkeeping: how many records were applied since the last checkpoint.

Taking the next Ready is also what tells the replica the last one is durable, so nothing is
taken while a Ready waits for its storage.

The executor is synchronous and knows no clocks, threads or sockets. Its I/O goes through three
small interfaces: `Storage` (which says whether it persists a Ready right away or later, when a
member hands a big batch to a worker thread or the simulator delays durability in virtual
time), `Transport` (messages to peers) and `Hooks` (what the member does with session and
serving changes). `zkpy.server.node.Member` runs it over its log, LMDB and trio peer links;
`zkpy.testing.sim` runs the same code over in-memory disks and links.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar

from zkpy.core.errors import Code
from zkpy.core.tree import ApplyResult, DataTree
from zkpy.core.txn import AttachSession, CloseSession, TxnRecord
from zkpy.core.types import WatchedEvent
from zkpy.core.watches import ChangeLog, WatchRegistry
from zkpy.zab.messages import Ack, PeerMessage
from zkpy.zab.replica import Ready, Replica

_T = TypeVar("_T")

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # a pure install needs no mypy: the decorator only informs mypyc

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_T], _T]:
        """Stands in for mypy_extensions.mypyc_attr: returns the class unchanged."""
        return lambda cls: cls


Waiter = Callable[[ApplyResult | None], None]
"""Called with the outcome when a write commits, or with None if its outcome is unknown
(the member lost its leader before the write was committed: the client sees ConnectionLoss)."""

SyncDone = Callable[[bool], None]
"""Called with True when a sync is answered, False when it cannot be."""

EventSink = Callable[[WatchedEvent], None]

Messages = list[tuple[int, PeerMessage]]


def answers_early(ready: Ready) -> bool:
    """Whether a Ready's committed records are applied and answered before its sync. The
    replica hands out only records that earlier Readies made durable, so their events and
    replies need not wait for this sync, which writes other records (a follower's Commit that
    arrives with the next proposal, say). A Ready that replaces or truncates the log applies
    its records after the sync, as does one with nothing to write."""
    return (
        ready.needs_storage
        and bool(ready.committed)
        and ready.install is None
        and ready.truncate_after is None
    )


def _ignore(seconds: float) -> None:
    """The default `ReadyExecutor.applied_batch`: no metrics kept."""


class Storage(Protocol):
    """Where a member's Readies become durable."""

    def persists_inline(self, ready: Ready) -> bool:
        """Whether `persist` may run for this Ready right now, inside `ReadyExecutor.advance`;
        if not, the caller persists it later (another thread, later virtual time)."""

    def persist(self, ready: Ready) -> None:
        """Make the Ready's epochs, snapshot, truncation and records durable, in that order,
        with one sync; raise if they cannot be."""

    @property
    def durable_zxid(self) -> int:
        """The last zxid this storage holds durably."""


class Transport(Protocol):
    """The member's links to its peers."""

    def send(self, peer: int, message: PeerMessage) -> None:
        """Queue a message on the link to `peer` (in order after the ones queued before)."""

    def flush(self) -> None:
        """Write out what was queued since the last flush."""


class Hooks(Protocol):
    """What the member does when records change sessions or the replica starts or stops
    serving."""

    def on_ready(self, ready: Ready) -> None:
        """A Ready was taken from the replica, before any of it is carried out."""

    def on_session_closed(self, session_id: int) -> None:
        """A CloseSession was applied: the session's connections end."""

    def on_session_attached(self, session_id: int, owner: int) -> None:
        """An AttachSession was applied: the session's other connections end."""

    def on_serving_changed(self, serving: bool) -> None:
        """The replica started or stopped serving clients (the waiters were failed first)."""


@mypyc_attr(allow_interpreted_subclasses=True)
class ReadyExecutor:
    """Carries out a replica's Readies over a Storage, a Transport and Hooks.

    `advance` takes and carries out Readies until the replica has nothing left or a Ready must
    wait for its storage; the caller then persists that Ready (`persist`, wherever it likes)
    and calls `durable`, then `advance` again. Client replies, sync answers and watch events
    reach the waiters and sinks registered here.
    """

    def __init__(
        self,
        replica: Replica,
        storage: Storage,
        transport: Transport,
        hooks: Hooks,
        *,
        change_log: ChangeLog,
        checkpoint_interval: Callable[[], int],
        applied_since_checkpoint: int = 0,
        last_checkpoint_zxid: int = 0,
    ) -> None:
        self.replica = replica
        self.storage = storage
        self.transport = transport
        self.hooks = hooks
        self.watches = WatchRegistry()
        self.change_log = change_log
        self.checkpoint_interval = checkpoint_interval
        self.applied_since_checkpoint = applied_since_checkpoint
        self.checkpoint_after = checkpoint_interval()
        self.last_checkpoint_zxid = last_checkpoint_zxid
        self._waiters: dict[tuple[int, int], Waiter] = {}
        self._sync_waiters: dict[tuple[int, int], SyncDone] = {}
        self._event_sinks: dict[Hashable, EventSink] = {}
        self._busy = False  # a Ready is being carried out, or waits for its storage
        self._waiting: tuple[Ready, Messages] | None = None  # the Ready `durable` finishes
        # a member's metrics: how long applying each batch of committed records took
        self.clock: Callable[[], float] | None = None
        self.applied_batch: Callable[[float], None] = _ignore

    @property
    def tree(self) -> DataTree:
        """The replica's tree (replaced when a snapshot is installed)."""
        return self.replica.tree

    @property
    def busy(self) -> bool:
        """Whether a Ready is being carried out or waits for its storage."""
        return self._busy

    # ---- who hears the results --------------------------------------------------------------

    def expect_reply(self, key: tuple[int, int], waiter: Waiter) -> None:
        """`waiter` hears the outcome of the write (session, cxid) `key`."""
        self._waiters[key] = waiter

    def expect_sync(self, key: tuple[int, int], done: SyncDone) -> None:
        """`done` hears when the sync (session, cxid) `key` is answered."""
        self._sync_waiters[key] = done

    def pending(self, key: tuple[int, int]) -> bool:
        """Whether a write or sync with this (session, cxid) still awaits its outcome."""
        return key in self._waiters or key in self._sync_waiters

    def register_event_sink(self, watcher: Hashable, sink: EventSink) -> None:
        """Watch events of `watcher` (as registered in `watches`) go to `sink`."""
        self._event_sinks[watcher] = sink

    def drop_watcher(self, watcher: Hashable) -> None:
        """Forget a watcher: its sink and its watches."""
        self._event_sinks.pop(watcher, None)
        self.watches.remove_watcher(watcher)

    # ---- carrying out Readies ----------------------------------------------------------------

    def advance(self) -> Ready | None:
        """Carry out Readies until the replica has nothing left, or one must wait for storage:
        that one is returned, its early messages sent; persist it, then call `durable`.

        Returns None at once while a Ready is in progress (its caller advances afterwards). If
        anything raises, the executor stays busy: nothing more may be taken from the replica,
        since taking says the last Ready is durable.
        """
        if self._busy:
            return None
        self._busy = True
        acks: Messages = []  # a follower's, held until the replies of the next Ready are out
        while ready := self._take():
            if acks and (ready.messages or ready.needs_storage):
                self._send(acks)  # they never wait behind a sync, nor change a peer's order
                acks = []
            late = self.send_early(ready)
            if ready.needs_storage:
                self.apply_early(ready)
                if not self.storage.persists_inline(ready):
                    self._waiting = (ready, late)
                    return ready
                self.storage.persist(ready)
            acks = self.carry_out(ready, acks + late)
        if acks:
            self._send(acks)
        self._busy = False
        return None

    def persist(self, ready: Ready) -> None:
        """Persist the Ready `advance` returned (callable from a worker thread)."""
        self.storage.persist(ready)

    def durable(self) -> None:
        """The Ready `advance` returned is durable: send the rest of its messages, apply and
        answer. Call `advance` afterwards for what arrived meanwhile."""
        waiting, self._waiting = self._waiting, None
        assert waiting is not None, "durable() without a Ready waiting for storage"
        ready, late = waiting
        self.finish(ready, late)
        self._busy = False

    def _take(self) -> Ready:
        ready = self.replica.take_ready()
        self.hooks.on_ready(ready)
        return ready

    def split(self, ready: Ready) -> tuple[Messages, Messages]:
        """(the messages that may leave before the Ready is durable, those that must wait)."""
        return ready.split_messages()

    def send_early(self, ready: Ready) -> Messages:
        """Send what promises nothing at once; return the messages that wait for durability."""
        early, late = self.split(ready)
        self._send(early)
        return late

    def finish(self, ready: Ready, late: Messages) -> None:
        """After the Ready is durable: send the messages that waited for it, apply and
        answer."""
        acks = self.carry_out(ready, late)
        if acks:
            self._send(acks)

    def apply_early(self, ready: Ready) -> None:
        """Before a Ready's sync: apply and answer its committed records (`answers_early`)."""
        if answers_early(ready):
            self._apply(ready.committed)
            self.transport.flush()

    def carry_out(self, ready: Ready, late: Messages) -> Messages:
        """After the Ready is durable: send `late`, apply and answer. Returns the messages
        left to send: `late` itself when it holds only a follower's acknowledgements, which
        then leave after this Ready's replies (and after the next one's, if `advance` takes
        one that only answers: the replies of a follower's own writes, which it commits when
        the records it just acknowledged are durable)."""
        acks_only = bool(late) and all(type(message) is Ack for _, message in late)
        if not acks_only:
            self._send(late)
        self.answer(ready)
        self.transport.flush()
        if ready.serving_changed:
            self._serving_changed()
        return late if acks_only else []

    def _send(self, messages: Messages) -> None:
        transport = self.transport
        for peer, message in messages:
            transport.send(peer, message)
        transport.flush()

    def answer(self, ready: Ready) -> None:
        """Apply the committed records (events, then replies) unless `apply_early` did, then
        fail what was rejected and answer the syncs."""
        if ready.install is not None:
            self.change_log = ChangeLog(
                start_zxid=ready.install.zxid, capacity=self.change_log.capacity
            )
            self.last_checkpoint_zxid = ready.install.zxid
        if not answers_early(ready):
            self._apply(ready.committed)
        for key in ready.rejected:
            waiter = self._waiters.pop(key, None)
            if waiter is not None:
                waiter(None)
            sync_done = self._sync_waiters.pop(key, None)
            if sync_done is not None:
                sync_done(False)
        for key in ready.synced:
            sync_done = self._sync_waiters.pop(key, None)
            if sync_done is not None:
                sync_done(True)

    def _apply(self, records: list[TxnRecord]) -> None:
        """Apply committed records in order, each one's events and reply before the next."""
        if not records:
            return
        replica, clock = self.replica, self.clock
        started = clock() if clock is not None else 0.0
        for record in records:
            # no Stat: a client's reply reads it from the node as it answers, before the next
            # record is applied; most records have no client here
            self.applied(replica.apply(record, stats=False))
        if clock is not None:
            self.applied_batch(clock() - started)

    def applied(self, result: ApplyResult) -> None:
        """One record was applied: its watch events, its session effects, then its reply."""
        self.applied_since_checkpoint += 1
        self.notify(result)
        record = result.record
        op = record.op
        if type(op) is CloseSession and result.result.error == Code.OK:
            self.hooks.on_session_closed(op.session_id)
        elif type(op) is AttachSession:
            self.hooks.on_session_attached(op.session_id, op.owner)
        self.reply(result)

    def notify(self, result: ApplyResult) -> None:
        """Record the changes of an applied record and send the watch events they cause."""
        if result.changes:
            zxid = result.record.zxid
            self.change_log.record(zxid, result.changes)
            for watcher, event in self.watches.trigger(result.changes, zxid):
                sink = self._event_sinks.get(watcher)
                if sink is not None:
                    sink(event)

    def reply(self, result: ApplyResult) -> None:
        """Hand the outcome of an applied record to its waiter, if it has one here."""
        record = result.record
        waiter = self._waiters.pop((record.session_id, record.cxid), None)
        if waiter is not None:
            waiter(result)

    def _serving_changed(self) -> None:
        serving = self.replica.serving
        if not serving:
            waiters, self._waiters = self._waiters, {}
            for waiter in waiters.values():
                waiter(None)
        self.hooks.on_serving_changed(serving)

    # ---- checkpoint bookkeeping --------------------------------------------------------------

    def checkpoint_due(self) -> bool:
        """Whether enough was applied for a checkpoint, and the tree holds nothing the storage
        has not made durable (with `fsync = false` it may lag)."""
        return (
            self.applied_since_checkpoint >= self.checkpoint_after
            and self.replica.tree.last_zxid <= self.storage.durable_zxid
        )

    def checkpoint_started(self, zxid: int) -> int:
        """A checkpoint of the tree at `zxid` is being written: count afresh. Returns the zxid
        after which the log must keep its records (back to the previous checkpoint, to sync
        followers by diff from)."""
        self.applied_since_checkpoint = 0
        self.checkpoint_after = self.checkpoint_interval()
        return min(self.last_checkpoint_zxid, zxid)

    def checkpoint_written(self, zxid: int) -> None:
        """The checkpoint at `zxid` is durable."""
        self.last_checkpoint_zxid = zxid
