"""The loop of one member: feed the replica, then carry out its Ready.

Everything the protocol decides is in `zkpy.zab.replica.Replica`; this shell owns the clocks,
LMDB and the sockets. One task runs the Ready loop, in an order the replica allows:

1. send the messages that promise nothing (proposals, commits) at once, so that the followers
   log and apply in parallel with this member;
2. make the Ready durable in one synced LMDB transaction (group commit: requests arriving
   meanwhile form the next batch), on the event loop while the disk is fast, else in a thread;
3. send the rest of the messages (acknowledgements, which the leader is waiting for);
4. apply what was committed and answer (watch events first, then replies), rejected or synced.

Each step ends with a flush of the outboxes it wrote to (`zkpy._net.outbox`). The task that fed the
replica (a client's reader, a peer link) carries out the Ready itself when nothing in it must
wait (`Member.step`); the loop task takes the rest, and everything while a Ready is in progress.

A single member is an ensemble of one: the same replica elects itself and commits alone.
"""

from __future__ import annotations

import gc
import logging
import secrets
import time
from collections.abc import Callable, Hashable
from typing import Any

import trio

from zkpy._net.outbox import Flusher
from zkpy.core.errors import Code
from zkpy.core.requests import AttachSessionRequest, CreateSessionRequest, WriteRequest
from zkpy.core.sessions import TimeoutBounds
from zkpy.core.tree import ApplyResult, CheckpointDelta, DataTree, changes_of
from zkpy.core.txn import AttachSession, CloseSession, TxnRecord, decode_record, encode_record
from zkpy.core.types import Id
from zkpy.core.watches import ChangeLog, WatchRegistry
from zkpy.server.config import ServerConfig
from zkpy.server.storage import REBUILD, Recovered, Storage, StorageError, StorageFormatError
from zkpy.zab.messages import PeerMessage
from zkpy.zab.replica import Ready, Replica, ReplicaConfig

log = logging.getLogger("zkpy.server")


def wall_ms() -> int:
    return int(time.time() * 1000)


UNSAFE_FLUSH_S = 1.0
# Appends are made durable on the event loop while appends recently took less than this on
# average (an exponentially weighted mean with this weight for the newest), else in a worker
# thread; so are very big batches, which would hold up the member's other work for long.
INLINE_PERSIST_BELOW_S = 0.002
INLINE_PERSIST_MAX_RECORDS = 1024
INLINE_PERSIST_MAX_BYTES = 1 << 20  # big values: a batch of a few is already a long write
PERSIST_TIME_WEIGHT = 0.1

# The client xid of a member's AttachSession: below the int32 range that client xids are held to,
# so that it matches no write of the session's older connection still waiting here.
ATTACH_CXID = -(1 << 31) - 1

Waiter = Callable[[ApplyResult | None], None]
"""Called with the outcome when a write commits, or with None if its outcome is unknown
(the member lost its leader before the write was committed: the client sees ConnectionLoss)."""


class Member:
    """State and write path of one member. Connections call into it from their tasks."""

    def __init__(self, config: ServerConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        recovered = storage.load(include_nodes=False)
        retained = _usable_history(recovered)
        tree, tail = _decode_recovered(storage, recovered, retained)
        # the zxid just before the history: the log's floor when it keeps entries the tree holds
        history_base = recovered.log_floor if retained else tree.last_zxid
        self.replica = Replica(
            ReplicaConfig(
                config.server_id,
                config.voters,
                config.observers,
                tick_ms=config.tick_ms,
                init_limit=config.init_limit,
                sync_limit=config.sync_limit,
                history_limit=config.sync_history,
                max_data_bytes=config.max_data_bytes,
            ),
            tree,
            tail,
            accepted_epoch=recovered.accepted_epoch,
            current_epoch=recovered.current_epoch,
            now_ms=wall_ms(),
            history_base=history_base,
        )
        self.bounds = TimeoutBounds.from_tick(config.tick_ms)
        self.watches = WatchRegistry()
        self.change_log = _change_log_from(
            tail[: len(retained)],
            start_zxid=history_base,
            capacity=config.change_log_capacity,
        )
        self._waiters: dict[tuple[int, int], Waiter] = {}
        self._sync_waiters: dict[tuple[int, int], Callable[[bool], None]] = {}
        self._event_sinks: dict[Hashable, Callable[[Any], None]] = {}
        self.session_closed: Callable[[int], None] = lambda session_id: None
        # (session, owner) of each AttachSession applied: older connections of it must go
        self.session_attached: Callable[[int, int], None] = lambda session_id, owner: None
        self.serving_changed: Callable[[bool], None] = lambda serving: None
        self.send_to_peer: Callable[[int, PeerMessage], None] = lambda peer, message: None
        self._work = trio.Event()
        self.output = Flusher()  # the client and peer outboxes written to in the current step
        self._busy = False  # a Ready is being carried out (by the loop or by `step`)
        self._fed = False  # the replica was fed since the last `step`
        self._handed_over: Ready | None = None  # taken by `step`, left to the loop to finish
        self._failure: Exception | None = None  # what `step` met, for the loop to raise
        self._checkpoint_written: trio.Event | None = None  # set while a checkpoint is written
        self._persisted_zxid = self.replica.last_logged
        self._unsafe_buffer: list[tuple[int, bytes]] = []
        self._recent_persist_s = 0.0
        self._unsafe_flushed_at = time.monotonic()
        self._applied_since_checkpoint = len(recovered.log)
        self._checkpoint_after = self._checkpoint_interval()
        self._last_checkpoint_zxid = recovered.checkpoint_zxid
        self._next_session = ((wall_ms() << 24) & ((1 << 56) - 1)) >> 8
        self.started_at = wall_ms()
        self.connections = 0
        self.client_port = config.client_port
        self.stats = {"requests": 0, "writes": 0, "batches": 0}

    @property
    def tree(self) -> DataTree:
        return self.replica.tree

    @property
    def serving(self) -> bool:
        return self.replica.serving

    # ---- sessions --------------------------------------------------------------------------

    def new_session_id(self) -> int:
        self._next_session += 1
        return (self.config.server_id << 56) | (self._next_session & ((1 << 56) - 1))

    def new_owner_id(self) -> int:
        """An id for a client connection that takes a session (see `zkpy.core.prep`): unique
        in the ensemble, and over restarts of this member (from the same counter as session
        ids, which starts from the clock)."""
        return self.new_session_id()

    def touch(self, session_id: int) -> None:
        if session_id:
            self.replica.touch(session_id)

    def session_alive(self, session_id: int) -> bool:
        return session_id in self.tree.sessions

    def create_session(
        self, timeout_ms: int, waiter: Waiter, owner: int = 0
    ) -> tuple[int, bytes, int]:
        """Order a new session, owned by the connection `owner`."""
        session_id = self.new_session_id()
        password = secrets.token_bytes(16)
        timeout = self.bounds.negotiate(timeout_ms)
        request = CreateSessionRequest(session_id, timeout, password)
        self.submit(session_id, 0, request, waiter, owner=owner)
        self._work.set()  # the handshake waits for this write before its reader steps again
        return session_id, password, timeout

    def attach_session(self, session_id: int, owner: int, waiter: Waiter) -> None:
        """Order the move of a session to the connection `owner`, before any of its requests:
        the leader then refuses writes from the session's older connections (SESSION_MOVED),
        and checks that the session still lives (the waiter hears SESSION_EXPIRED if not)."""
        self.submit(session_id, ATTACH_CXID, AttachSessionRequest(), waiter, owner=owner)
        self._work.set()  # the handshake waits for this write before its reader steps again

    # ---- watches ---------------------------------------------------------------------------

    def register_event_sink(self, watcher: Hashable, sink: Callable[[Any], None]) -> None:
        self._event_sinks[watcher] = sink

    def drop_watcher(self, watcher: Hashable) -> None:
        self._event_sinks.pop(watcher, None)
        self.watches.remove_watcher(watcher)

    # ---- requests into the replica -----------------------------------------------------------

    def submit(
        self,
        session_id: int,
        cxid: int,
        request: WriteRequest,
        waiter: Waiter | None,
        ids: frozenset[Id] = frozenset(),
        owner: int = 0,
    ) -> None:
        """Order a write through the ensemble; `waiter` hears of its commit. `owner` is the
        client connection it came on (see `Replica.submit`).

        Like `sync` and `peer_message`, this only feeds the replica: the caller calls `step`
        after its batch. Waking the Ready loop here too would cost a scheduler turn per hop for
        a loop that finds nothing left to do.
        """
        if waiter is not None:
            self._waiters[(session_id, cxid)] = waiter
        self.replica.now_ms = wall_ms()
        self.replica.submit(session_id, cxid, request, ids, owner)
        self.stats["writes"] += 1
        self._fed = True

    def xid_pending(self, session_id: int, cxid: int) -> bool:
        """Whether a write or sync of the session with this cxid still awaits its outcome (the
        replica and the waiters know them by (session, cxid), so a second one would be lost)."""
        key = (session_id, cxid)
        return key in self._waiters or key in self._sync_waiters

    def sync(self, session_id: int, cxid: int, done: Callable[[bool], None]) -> None:
        self._sync_waiters[(session_id, cxid)] = done
        self.replica.sync(session_id, cxid)
        self._fed = True

    def peer_message(self, peer: int, message: PeerMessage) -> None:
        self.replica.now_ms = wall_ms()
        self.replica.receive(peer, message)
        self._fed = True

    def peer_down(self, peer: int) -> None:
        self.replica.disconnected(peer)
        self._work.set()

    async def run_ticks(self) -> None:
        period = self.config.peer_tick_ms / 1000
        while True:
            await trio.sleep(period)
            self.replica.tick(wall_ms())
            self._work.set()

    # ---- the Ready loop ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as checkpoints:  # at most one checkpoint write at a time
            task_status.started()
            await self._run_readies(checkpoints)

    async def _run_readies(self, checkpoints: trio.Nursery) -> None:
        while True:
            if self._failure is not None:
                raise self._failure  # from `step`: the member stops, as if it had failed here
            ready = self._handed_over or self._take_ready()
            self._handed_over = None
            self._busy = True
            try:
                late = self._send_early(ready)
                if ready.needs_storage:
                    await self._make_durable(ready)
                self._finish(ready, late)
            except Exception as err:
                self._failure = err  # `step` takes nothing more before the member stops
                raise
            finally:
                self._busy = False
            if not ready:
                if self._checkpoint_due():
                    self._start_checkpoint(checkpoints)
                    continue
                await self._work.wait()
                self._work = trio.Event()

    def step(self) -> None:
        """Carry out the replica's Readies here and now, as long as they need no waiting.

        Tasks that fed the replica (a client's reader after a batch of requests, a peer link
        after a batch of messages) must call this: feeding does not wake the Ready loop task,
        which saves a scheduler turn on every hop of a write. A Ready that must wait (a persist
        that goes to a thread) is handed over to the loop; so is everything while the loop is
        busy (it takes the next Ready when it is done).
        """
        if not self._fed or self._busy or self._handed_over is not None or self._failure:
            return  # nothing new (a batch of reads), or the loop will take it
        self._fed = False
        self._busy = True
        try:
            # Until the replica has nothing left: taking the next Ready is also what tells it
            # the last one is durable, which may commit and apply more (as the loop would).
            while ready := self._take_ready():
                if ready.needs_storage and not self._persists_inline(ready):
                    self._handed_over = ready
                    self._work.set()
                    return
                late = self._send_early(ready)
                if ready.needs_storage:
                    self._persist(ready)
                self._finish(ready, late)
            if self._checkpoint_due():
                self._work.set()  # the loop takes checkpoints
        except Exception as err:
            # Nothing may be taken from the replica after a Ready that failed (taking says the
            # last one is durable): stop here, and let the loop raise it and stop the member.
            self._failure = err
            self._work.set()
        finally:
            self._busy = False

    def _take_ready(self) -> Ready:
        self.replica.now_ms = wall_ms()  # session deadlines are set from it
        return self.replica.take_ready()

    def _send_early(self, ready: Ready) -> list[tuple[int, PeerMessage]]:
        """Proposals and commits leave before the fsync and the applying; returns the messages
        that must wait until the Ready is durable."""
        early, late = ready.split_messages()
        for peer, message in early:
            self.send_to_peer(peer, message)
        self.output.flush()
        return late

    def _finish(self, ready: Ready, late: list[tuple[int, PeerMessage]]) -> None:
        """After the Ready is durable: the acknowledgements (the leader waits for them), then
        apply and answer."""
        for peer, message in late:
            self.send_to_peer(peer, message)
        self.output.flush()
        self._answer(ready)
        self.output.flush()
        if ready.serving_changed:
            self._serving_changed()

    async def _make_durable(self, ready: Ready) -> None:
        """Persist a Ready on the event loop when the disk is fast, else in a worker thread.

        Handing an append to a thread and back costs about as much as the write and fdatasync
        of the segment log themselves on a fast disk (0.1-0.2 ms against 0.1-0.3 ms here),
        also for batches of a few hundred records, and it adds wake-ups on a machine whose CPUs
        the members share. A slow disk (it would stall the whole member), batches of more than
        INLINE_PERSIST_MAX_RECORDS or INLINE_PERSIST_MAX_BYTES, and snapshots (which can take
        seconds) go to the thread.
        """
        if self._persists_inline(ready):
            self._persist(ready)
            return
        if self._checkpoint_written is not None and _writes_lmdb(ready):
            await self._checkpoint_written.wait()
        await trio.to_thread.run_sync(self._persist, ready)

    def _persists_inline(self, ready: Ready) -> bool:
        return (
            len(ready.persist) <= INLINE_PERSIST_MAX_RECORDS
            and ready.install is None
            and self._recent_persist_s < INLINE_PERSIST_BELOW_S
            and (self._checkpoint_written is None or not _writes_lmdb(ready))
            and sum(len(encode_record(record)) for record in ready.persist)
            <= INLINE_PERSIST_MAX_BYTES
        )

    def _persist(self, ready: Ready) -> None:
        """One synced LMDB transaction per step, in the required order (on the event loop or in a
        worker thread, see `_make_durable`)."""
        started = time.perf_counter()
        self._write_ready(ready)
        if ready.install is None:
            elapsed = time.perf_counter() - started
            self._recent_persist_s += (elapsed - self._recent_persist_s) * PERSIST_TIME_WEIGHT

    def _write_ready(self, ready: Ready) -> None:
        if not self.config.fsync:
            self._persist_unsafely(ready)
            return
        if ready.epochs is not None:
            self.storage.set_epochs(accepted_epoch=ready.epochs[0], current_epoch=ready.epochs[1])
        if ready.install is not None:
            snapshot = ready.install
            self.storage.replace_all(snapshot.zxid, snapshot.nodes, snapshot.sessions)
        if ready.truncate_after is not None:
            self.storage.truncate_log_after(ready.truncate_after)
        if ready.persist:
            self.storage.append([(r.zxid, encode_record(r)) for r in ready.persist])
            self.stats["batches"] += 1
            self._persisted_zxid = ready.persist[-1].zxid
        elif ready.install is not None or ready.truncate_after is not None:
            self._persisted_zxid = self.replica.last_logged

    def _persist_unsafely(self, ready: Ready) -> None:
        """fsync = false, an UNSAFE test switch: log entries are acknowledged before they are
        written, and written (unsynced) only every UNSAFE_FLUSH_S, so a kill -9 loses the recent
        ones, as a power cut loses what a disk had not synced. Chaos runs use it to prove that
        lost acknowledged writes are detected."""
        if (
            ready.epochs is not None
            or ready.install is not None
            or ready.truncate_after is not None
        ):
            self._flush_unsafe_buffer()
            if ready.epochs is not None:
                self.storage.set_epochs(
                    accepted_epoch=ready.epochs[0], current_epoch=ready.epochs[1]
                )
            if ready.install is not None:
                snapshot = ready.install
                self.storage.replace_all(snapshot.zxid, snapshot.nodes, snapshot.sessions)
                self._persisted_zxid = snapshot.zxid
            if ready.truncate_after is not None:
                self.storage.truncate_log_after(ready.truncate_after)
                self._persisted_zxid = min(self._persisted_zxid, ready.truncate_after)
        self._unsafe_buffer.extend((r.zxid, encode_record(r)) for r in ready.persist)
        if time.monotonic() - self._unsafe_flushed_at >= UNSAFE_FLUSH_S:
            self._flush_unsafe_buffer()

    def _flush_unsafe_buffer(self) -> None:
        self._unsafe_flushed_at = time.monotonic()
        if self._unsafe_buffer:
            self.storage.append(self._unsafe_buffer)
            self._persisted_zxid = self._unsafe_buffer[-1][0]
            self._unsafe_buffer = []

    def _answer(self, ready: Ready) -> None:
        if ready.install is not None:
            self.change_log = ChangeLog(
                start_zxid=ready.install.zxid, capacity=self.config.change_log_capacity
            )
            self._last_checkpoint_zxid = ready.install.zxid
        for record in ready.committed:
            # no Stat: a client's reply reads it from the node as it answers, before the next
            # record is applied (`ClientConnection._write_reply`); most records have no client here
            self._applied(self.replica.apply(record, stats=False))
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

    def _applied(self, result: ApplyResult) -> None:
        record = result.record
        self._applied_since_checkpoint += 1
        if result.changes:
            self.change_log.record(record.zxid, result.changes)
            for watcher, event in self.watches.trigger(result.changes, record.zxid):
                sink = self._event_sinks.get(watcher)
                if sink is not None:
                    sink(event)
        op = record.op
        if type(op) is CloseSession and result.result.error == Code.OK:
            self.session_closed(op.session_id)
        elif type(op) is AttachSession:
            self.session_attached(op.session_id, op.owner)
        waiter = self._waiters.pop((record.session_id, record.cxid), None)
        if waiter is not None:
            waiter(result)

    def _serving_changed(self) -> None:
        serving = self.replica.serving
        log.info(
            "member %d %s %s:%d as %s (epoch %d, last zxid %#x)",
            self.config.server_id,
            "serving on" if serving else "stopped serving on",
            self.config.host,
            self.client_port,
            self.replica.role,
            self.replica.current_epoch,
            self.replica.last_logged,
        )
        if not serving:
            waiters, self._waiters = self._waiters, {}
            for waiter in waiters.values():
                waiter(None)
        self.serving_changed(serving)

    # ---- checkpoints -------------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        return (
            self._checkpoint_written is None
            and self._applied_since_checkpoint >= self._checkpoint_after
            and self.tree.last_zxid <= self._persisted_zxid
        )

    def _start_checkpoint(self, nursery: trio.Nursery) -> None:
        """Take the nodes changed since the last checkpoint and write them in a worker thread.

        The member goes on meanwhile: appends go to the segment log, which the LMDB write does
        not touch; a Ready that writes to LMDB itself (epochs, a snapshot, a truncation) waits
        for the checkpoint (`_make_durable`)."""
        collecting = gc.isenabled()
        gc.disable()  # the delta is tens of thousands of new objects: no collection mid-way
        try:
            delta = self.tree.take_checkpoint()
        finally:
            if collecting:
                gc.enable()
        keep_after = min(self._last_checkpoint_zxid, delta.zxid)
        self._applied_since_checkpoint = 0
        self._checkpoint_after = self._checkpoint_interval()
        self._checkpoint_written = trio.Event()
        nursery.start_soon(self._write_checkpoint, delta, keep_after)

    async def _write_checkpoint(self, delta: CheckpointDelta, keep_after: int) -> None:
        await trio.to_thread.run_sync(
            lambda: self.storage.checkpoint(
                delta.zxid,
                delta.node_puts,
                delta.node_deletes,
                delta.session_puts,
                delta.session_deletes,
                keep_log_after=keep_after,
            )
        )
        self._last_checkpoint_zxid = delta.zxid
        written, self._checkpoint_written = self._checkpoint_written, None
        assert written is not None
        written.set()
        self._work.set()  # the loop may have a Ready waiting for this

    def _checkpoint_interval(self) -> int:
        """Applied transactions until the next checkpoint: a random point between half and all
        of `checkpoint_every` (as ZooKeeper rolls its snapCount), so that the members of an
        ensemble, which apply the same transactions, do not all stall for a checkpoint at once."""
        every = self.config.checkpoint_every
        return every // 2 + secrets.randbelow(every - every // 2 + 1)

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        replica = self.replica
        return {
            "server_id": self.config.server_id,
            "role": replica.role
            if len(self.config.voters) > 1 or self.config.observers
            else ("standalone" if replica.serving else "looking"),
            "serving": replica.serving,
            "leader": replica.leader,
            "epoch": replica.current_epoch,
            "last_zxid": replica.last_logged,
            "committed_zxid": replica.tree.last_zxid,
            "znodes": len(replica.tree),
            "sessions": len(replica.tree.sessions),
            "watches": len(self.watches),
            "connections": self.connections,
            "outstanding": replica.outstanding,
            "members": [
                f"{m.host}:{m.client_port}"
                for m in self.config.members
                if m.id != self.config.server_id
            ],
            "uptime_ms": wall_ms() - self.started_at,
            **self.stats,
        }


def _change_log_from(records: list[TxnRecord], *, start_zxid: int, capacity: int) -> ChangeLog:
    """The change log a member starts with: the changes of the committed records its log keeps
    before the checkpoint (the tree holds them already), so that a client that reconnects after
    a restart is still told exactly what it missed back to there. A CloseSession's changes
    were known only to the tree of its moment: the log then starts after it."""
    change_log = ChangeLog(start_zxid=start_zxid, capacity=capacity)
    for record in records:
        changes = changes_of(record.op)
        if changes is None:
            change_log = ChangeLog(start_zxid=record.zxid, capacity=capacity)
        else:
            change_log.record(record.zxid, changes)
    return change_log


def _decode_recovered(
    storage: Storage, recovered: Recovered, retained: list[tuple[int, bytes]]
) -> tuple[DataTree, list[TxnRecord]]:
    """The checkpointed tree and the records of the log, decoded. The storage checked their
    checksums; a record that still does not decode, or a log record whose zxid is not the one
    it was logged under, was written wrong (by a bug, another program or a hand): the member
    refuses to start with it rather than fail later or serve, vote or lead with it."""
    try:
        tree = DataTree.from_checkpoint(
            recovered.checkpoint_zxid, storage.iter_nodes(), recovered.sessions
        )
        tail = []
        for zxid, raw in (*retained, *recovered.log):
            record = decode_record(raw)
            if record.zxid != zxid:
                raise ValueError(f"the log record of zxid {zxid:#x} holds zxid {record.zxid:#x}")
            tail.append(record)
    except StorageError:
        raise
    except Exception as err:  # anything a decoder meets in bytes it did not expect
        raise StorageFormatError(
            f"data directory {storage.path} holds a record this member cannot use "
            f"({type(err).__name__}: {err}); {REBUILD}"
        ) from err
    return tree, tail


def _usable_history(recovered: Recovered) -> list[tuple[int, bytes]]:
    """The committed log entries before the checkpoint, to sync followers by diff from, if they
    reach the checkpoint: an intact log holds the record the checkpoint ends with. One that does
    not (pages lost with `fsync = false`) may have gaps, and a diff from it would skip records."""
    retained = recovered.retained
    if retained and retained[-1][0] != recovered.checkpoint_zxid:
        log.warning(
            "the log before the checkpoint %#x ends at %#x; not used to sync followers",
            recovered.checkpoint_zxid,
            retained[-1][0],
        )
        return []
    return retained


def _writes_lmdb(ready: Ready) -> bool:
    """Whether persisting `ready` writes to LMDB (which a checkpoint being written also does),
    not only to the segment log."""
    return ready.epochs is not None or ready.install is not None or ready.truncate_after is not None
