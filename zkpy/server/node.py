"""The loop of one member: feed the replica, then have its Readies carried out.

Everything the protocol decides is in `zkpy.zab.replica.Replica`, and the order in which a
Ready is carried out (send what promises nothing, persist, send the acknowledgements, apply,
events, replies) is in `zkpy.server.executor`, which the simulator runs too. This shell owns
the clocks, the log and LMDB, the sockets and the tasks:

- `MemberDisk` persists a Ready in one synced write (group commit: requests arriving meanwhile
  form the next batch), on the event loop while the disk is fast, else in a worker thread;
- the task that fed the replica (a client's reader, a peer link) has the Readies carried out
  itself while nothing in them must wait (`Member.step`); the loop task takes a Ready that
  waits for a thread's fsync, and writes checkpoints in the background.

Each step ends with a flush of the outboxes it wrote to (`zkpy._net.outbox`).

A single member is an ensemble of one: the same replica elects itself and commits alone.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import trio

from zkpy._net.outbox import ByteMeter, Flusher
from zkpy.core.membership import Membership, MemberSpec
from zkpy.core.readonly import ReadOnlyMode
from zkpy.core.requests import AttachSessionRequest, CreateSessionRequest, WriteRequest
from zkpy.core.sessions import TimeoutBounds
from zkpy.core.tree import CheckpointDelta, DataTree, changes_of
from zkpy.core.txn import TxnRecord, decode_record, encode_record
from zkpy.core.types import Id, WatchedEvent
from zkpy.core.watches import ChangeLog, WatchRegistry
from zkpy.server.config import ServerConfig
from zkpy.server.executor import ReadyExecutor, SyncDone, Waiter
from zkpy.server.metrics import Metrics
from zkpy.server.sched import ThreadSlice
from zkpy.server.storage import REBUILD, Recovered, Storage, StorageError, StorageFormatError
from zkpy.zab.messages import PeerMessage
from zkpy.zab.replica import Ready, Replica, ReplicaConfig

log = logging.getLogger("zkpy.server")


def wall_ms() -> int:
    """Milliseconds since the epoch (session deadlines and record times)."""
    return int(time.time() * 1000)


UNSAFE_BUFFER_RECORDS = 100_000  # fsync = false: records held before they are written
# Appends are made durable on the event loop while appends recently took less than this on
# average (an exponentially weighted mean with this weight for the newest), else in a worker
# thread; so are very big batches, which would hold up the member's other work for long.
INLINE_PERSIST_BELOW_S = 0.002
INLINE_PERSIST_MAX_RECORDS = 1024
INLINE_PERSIST_MAX_BYTES = 1 << 20  # big values: a batch of a few is already a long write
PERSIST_TIME_WEIGHT = 0.1

# `Member.stay_awake` keeps the loop turning only while one write is outstanding: with more
# (two contenders of a lock, say), their answers keep it busy anyway, and a turning loop takes
# the CPU that the leader and the clients need (docs/decisions/0039)
STAY_AWAKE_MAX_OUTSTANDING = 1

# The client xid of a member's AttachSession: below the int32 range that client xids are held to,
# so that it matches no write of the session's older connection still waiting here.
ATTACH_CXID = -(1 << 31) - 1


class MemberDisk:
    """Where a member's Readies become durable: the segment log and LMDB (`Storage`), one
    synced write per Ready. Implements `zkpy.server.executor.Storage`."""

    def __init__(
        self, config: ServerConfig, storage: Storage, replica: Replica, metrics: Metrics
    ) -> None:
        self.config = config
        self.storage = storage
        self.replica = replica
        self.metrics = metrics
        self.stats = {"batches": 0}
        self.checkpointing = False  # a checkpoint is being written to LMDB (in a thread)
        self._persisted_zxid = replica.last_logged
        self._unsafe_buffer: list[tuple[int, bytes]] = []
        self._recent_persist_s = 0.0
        self.yield_after_sync = False  # the Readies being persisted are background work

    @property
    def durable_zxid(self) -> int:
        """The last zxid the log holds (written, and synced unless `fsync = false`)."""
        return self._persisted_zxid

    def persists_inline(self, ready: Ready) -> bool:
        """Whether to persist on the event loop: the disk has been fast, the batch is small,
        there is no snapshot, and no checkpoint holds LMDB (see `Member._make_durable`)."""
        return (
            len(ready.persist) <= INLINE_PERSIST_MAX_RECORDS
            and ready.install is None
            and self._recent_persist_s < INLINE_PERSIST_BELOW_S
            and not (self.checkpointing and _writes_lmdb(ready))
            and sum(len(encode_record(record)) for record in ready.persist)
            <= INLINE_PERSIST_MAX_BYTES
        )

    def persist(self, ready: Ready) -> None:
        """One synced write per Ready, in the required order (on the event loop or in a
        worker thread)."""
        started = time.perf_counter()
        self._write_ready(ready)
        if self.yield_after_sync:
            os.sched_yield()  # a process woken while this one synced runs first (0041)
        if ready.install is None:
            elapsed = time.perf_counter() - started
            self._recent_persist_s += (elapsed - self._recent_persist_s) * PERSIST_TIME_WEIGHT
            if ready.persist:
                self.metrics.log_sync.observe(elapsed)

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
        written, and written (unsynced) only when the member must write LMDB (a new epoch, a
        snapshot, a truncation) or holds UNSAFE_BUFFER_RECORDS of them, so a kill -9 loses every
        write acknowledged since, on every member alike, as a power cut loses what a disk had
        not synced. Chaos runs use it to prove that lost acknowledged writes are detected: a run
        that cuts the power always loses some, not only when the cut falls between two members'
        flushes."""
        if _writes_lmdb(ready):
            self.flush_unsafe_buffer()
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
        if len(self._unsafe_buffer) >= UNSAFE_BUFFER_RECORDS:
            self.flush_unsafe_buffer()

    def flush_unsafe_buffer(self) -> None:
        """fsync = false: write what the log holds back (a checkpoint must not get ahead of it)."""
        if self._unsafe_buffer:
            self.storage.append(self._unsafe_buffer)
            self._persisted_zxid = self._unsafe_buffer[-1][0]
            self._unsafe_buffer = []


class Member:
    """State and write path of one member. Connections call into it from their tasks.

    It is the `Transport` (its peer links) and the `Hooks` (its client listener's callbacks)
    of its `ReadyExecutor`."""

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
                history_limit_bytes=config.sync_history_bytes,
                max_data_bytes=config.max_data_bytes,
                reap_interval_ms=config.container_check_interval_ms,
                membership=file_membership(config),
            ),
            tree,
            tail,
            accepted_epoch=recovered.accepted_epoch,
            current_epoch=recovered.current_epoch,
            now_ms=wall_ms(),
            history_base=history_base,
        )
        self.bounds = TimeoutBounds.from_tick(config.tick_ms)
        self.read_only_mode = ReadOnlyMode(
            enabled=config.read_only_mode,
            after_ms=config.read_only_after_ms,
            tick_ms=config.tick_ms,
            serving=self.replica.serving,
            now_ms=wall_ms(),
        )
        self.metrics = Metrics()
        self.disk = MemberDisk(config, storage, self.replica, self.metrics)
        self.executor = ReadyExecutor(
            self.replica,
            self.disk,
            self,
            self,
            change_log=_change_log_from(
                tail[: len(retained)],
                start_zxid=history_base,
                capacity=config.change_log_capacity,
            ),
            checkpoint_interval=self._checkpoint_interval,
            applied_since_checkpoint=len(recovered.log),
            last_checkpoint_zxid=recovered.checkpoint_zxid,
        )
        self.executor.clock = time.perf_counter
        self.executor.applied_batch = self.metrics.apply.observe
        self.session_closed: Callable[[int], None] = lambda session_id: None
        # (session, owner) of each AttachSession applied: older connections of it must go
        self.session_attached: Callable[[int, int], None] = lambda session_id, owner: None
        self.serving_changed: Callable[[bool], None] = lambda serving: None
        self.send_to_peer: Callable[[int, PeerMessage], None] = lambda peer, message: None
        # called with the membership in force whenever it changes (the peer links follow it)
        self.membership_changed: Callable[[Membership], None] = lambda membership: None
        self._membership_seen = self.replica.config.membership
        self._work = trio.Event()
        self.output = Flusher()  # the client and peer outboxes written to in the current step
        self.sending_backup = False  # one backup at a time: each holds a copy of the tree
        self._fed = False  # the replica was fed since the last `step`
        self._awaiting_leader = trio.Event()  # set when `step` leaves the replica awaiting it
        self.stay_awake_s = config.stay_awake_s
        self.yield_background = config.yield_background_work
        # which batches of peer messages are background work: the replica's rule
        self.background_work: Callable[[int, Sequence[PeerMessage]], bool] = self.replica.background
        # the event loop thread's scheduler slice, long while it carries out background work
        slice_ = ThreadSlice(config.background_slice_us)
        self.lengthen_slice: Callable[[], None] = slice_.lengthen
        self.restore_slice: Callable[[], None] = slice_.restore
        self._handed_over: Ready | None = None  # taken by `step`, left to the loop to persist
        self._failure: Exception | None = None  # what `step` met, for the loop to raise
        self._checkpoint_written: trio.Event | None = None  # set while a checkpoint is written
        self._next_session = ((wall_ms() << 24) & ((1 << 56) - 1)) >> 8
        self.started_at = wall_ms()
        self.connections = 0
        self.outbox_bytes = ByteMeter()  # the client connections' unsent bytes (clients.py)
        self.pending_bytes = ByteMeter()  # their requests read and not yet answered
        self.client_port = config.client_port
        self.stats = {"requests": 0, "writes": 0}

    @property
    def tree(self) -> DataTree:
        """The replica's tree (replaced when a snapshot is installed)."""
        return self.replica.tree

    @property
    def serving(self) -> bool:
        """Whether the replica serves clients (in a quorum that broadcasts)."""
        return self.replica.serving

    @property
    def watches(self) -> WatchRegistry:
        """The watches of this member's clients (kept by the executor)."""
        return self.executor.watches

    @property
    def change_log(self) -> ChangeLog:
        """Recent changes, to tell a reconnecting client what it missed."""
        return self.executor.change_log

    # ---- sessions --------------------------------------------------------------------------

    def new_session_id(self) -> int:
        """A session id unique in the ensemble: this member's id, then a counter."""
        self._next_session += 1
        return (self.config.server_id << 56) | (self._next_session & ((1 << 56) - 1))

    def new_owner_id(self) -> int:
        """An id for a client connection that takes a session (see `zkpy.core.prep`): unique
        in the ensemble, and over restarts of this member (from the same counter as session
        ids, which starts from the clock)."""
        return self.new_session_id()

    def touch(self, session_id: int) -> None:
        """A client of the session was heard from: it stays alive."""
        if session_id:
            if self.read_only_mode.active:  # a local session: the replica knows none
                self.read_only_mode.touch(session_id, wall_ms())
            else:
                self.replica.touch(session_id)

    def session_alive(self, session_id: int) -> bool:
        """Whether the session is open in this member's tree."""
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

    def open_local_session(self, timeout_ms: int) -> tuple[int, bytes, int]:
        """Start a read-only client's session, this member's alone (`ReadOnlyMode`)."""
        session_id = self.new_session_id()
        password = secrets.token_bytes(16)
        timeout = self.bounds.negotiate(timeout_ms)
        self.read_only_mode.open(session_id, password, timeout, wall_ms())
        return session_id, password, timeout

    def attach_session(self, session_id: int, owner: int, waiter: Waiter) -> None:
        """Order the move of a session to the connection `owner`, before any of its requests:
        the leader then refuses writes from the session's older connections (SESSION_MOVED),
        and checks that the session still lives (the waiter hears SESSION_EXPIRED if not)."""
        self.submit(session_id, ATTACH_CXID, AttachSessionRequest(), waiter, owner=owner)
        self._work.set()  # the handshake waits for this write before its reader steps again

    # ---- watches ---------------------------------------------------------------------------

    def register_event_sink(self, watcher: Hashable, sink: Callable[[WatchedEvent], None]) -> None:
        """Watch events of `watcher` go to `sink`."""
        self.executor.register_event_sink(watcher, sink)

    def drop_watcher(self, watcher: Hashable) -> None:
        """Forget a watcher (a closed connection): its sink and its watches."""
        self.executor.drop_watcher(watcher)

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
            self.executor.expect_reply((session_id, cxid), waiter)
        self.replica.now_ms = wall_ms()
        self.replica.submit(session_id, cxid, request, ids, owner)
        self.stats["writes"] += 1
        self._fed = True

    def xid_pending(self, session_id: int, cxid: int) -> bool:
        """Whether a write or sync of the session with this cxid still awaits its outcome (the
        replica and the waiters know them by (session, cxid), so a second one would be lost)."""
        return self.executor.pending((session_id, cxid))

    def sync(self, session_id: int, cxid: int, done: SyncDone) -> None:
        """Order a sync; `done` hears once this member applied what the leader had."""
        self.executor.expect_sync((session_id, cxid), done)
        self.replica.sync(session_id, cxid)
        self._fed = True

    def peer_messages(self, peer: int, messages: Sequence[PeerMessage]) -> None:
        """A batch of messages read from `peer`'s link: feed it to the replica and carry it
        out, yielding the CPU around it if it is background work (`before_peer_messages`)."""
        self.before_peer_messages(peer, messages)
        for message in messages:
            self.peer_message(peer, message)
        self.after_peer_messages()

    def before_peer_messages(self, peer: int, messages: Sequence[PeerMessage]) -> None:
        """A batch of messages from `peer` is about to be fed. If carrying it out is work no
        client waits on (`Replica.background`), let the processes waiting for a CPU run first,
        now and after its sync: where the members share a machine's CPUs, the other follower's
        work on a write would otherwise hold up the next write's leader or the client's wake-up
        (`yield_background_work`, docs/decisions/0041). Until the batch is carried out, the
        thread's scheduler slice is long (`background_slice_us`, docs/decisions/0042): a woken
        process takes the CPU from it, and the yield puts it behind the others for longer.
        With nothing else waiting for the CPU, a yield is one system call that returns at
        once."""
        background = self.yield_background and self.background_work(peer, messages)
        self.disk.yield_after_sync = background
        if background:
            self.lengthen_slice()
            os.sched_yield()

    def after_peer_messages(self) -> None:
        """A peer link's batch is fed: carry it out (`step`), yielding after its sync if it
        is background work (`before_peer_messages`), then take the default slice again."""
        self.step()
        if self.disk.yield_after_sync:
            self.disk.yield_after_sync = False
            self.restore_slice()

    def peer_message(self, peer: int, message: PeerMessage) -> None:
        """Feed a peer's message to the replica (`peer_messages` steps after a batch)."""
        self.replica.now_ms = wall_ms()
        self.replica.receive(peer, message)
        self._fed = True

    def peer_down(self, peer: int) -> None:
        """The link to `peer` broke: whatever was in flight on it is lost."""
        self.replica.disconnected(peer)
        self._work.set()

    async def stay_awake(self) -> None:
        """While the replica awaits the leader's word soon (`Replica.awaits_leader`: a follower
        whose clients wait on writes it forwarded), keep the event loop turning for up to
        `stay_awake_us` (a setting; 0: never) instead of letting it sleep in epoll: the
        leader's message is then read as it comes, and its write does not have to wake this
        process (on a VM whose idle CPUs halt, a wake-up costs the sender and the sleeper tens
        of microseconds each)."""
        clock = time.perf_counter
        while True:
            await self._awaiting_leader.wait()
            self._awaiting_leader = trio.Event()
            until = clock() + self.stay_awake_s
            while self._awaits_leader() and clock() < until:
                await trio.lowlevel.checkpoint()

    def _awaits_leader(self) -> bool:
        """The replica awaits the leader's word, with few enough writes outstanding that the
        loop would otherwise sleep until it comes."""
        replica = self.replica
        return replica.awaits_leader and replica.outstanding <= STAY_AWAKE_MAX_OUTSTANDING

    async def run_ticks(self) -> None:
        """Tick the replica every `peer_tick_ms` (timeouts, heartbeats, elections)."""
        period = self.config.peer_tick_ms / 1000
        while True:
            await trio.sleep(period)
            now = wall_ms()
            self.replica.tick(now)
            self._tick_read_only(now)
            self._work.set()

    def _tick_read_only(self, now_ms: int) -> None:
        """Enter read-only mode when it is due; cut off the clients of local sessions that
        expired."""
        mode = self.read_only_mode
        was_active = mode.active
        for session_id in mode.tick(now_ms):
            log.info("read-only session %#x expired", session_id)
            self.session_closed(session_id)
        if mode.active and not was_active:
            log.warning(
                "member %d has had no quorum for %d ms: serving read-only clients",
                self.config.server_id,
                mode.after_ms,
            )

    # ---- the executor's Transport and Hooks ---------------------------------------------------

    def send(self, peer: int, message: PeerMessage) -> None:
        """Queue a message on the link to `peer` (its outbox is flushed by `flush`)."""
        self.send_to_peer(peer, message)

    def flush(self) -> None:
        """Write out the client and peer outboxes written to since the last flush."""
        self.output.flush()

    def on_ready(self, ready: Ready) -> None:
        """Tell the peer links of a membership that a reconfig (or a snapshot) brought; the
        executor carries the rest of the Ready out."""
        membership = self.replica.config.membership
        if membership is not self._membership_seen and membership is not None:
            self._membership_seen = membership
            log.info("membership in force: %s", membership.to_text().replace("\n", ", "))
            self.membership_changed(membership)

    def on_session_closed(self, session_id: int) -> None:
        """The session's connections here end."""
        self.session_closed(session_id)

    def on_session_attached(self, session_id: int, owner: int) -> None:
        """The session's connections here other than `owner` end."""
        self.session_attached(session_id, owner)

    def on_serving_changed(self, serving: bool) -> None:
        """Log it, and tell the client listener (which drops its clients when not serving)."""
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
        if self.read_only_mode.active and serving:
            log.info("member %d leaves read-only mode", self.config.server_id)
        self.read_only_mode.serving_changed(serving, wall_ms())
        self.serving_changed(serving)

    # ---- the Ready loop ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The Ready loop: persists what waits for a thread, writes checkpoints."""
        async with trio.open_nursery() as checkpoints:  # at most one checkpoint write at a time
            task_status.started()
            await self._run_readies(checkpoints)

    async def _run_readies(self, checkpoints: trio.Nursery) -> None:
        while True:
            if self._failure is not None:
                raise self._failure  # from `step`: the member stops, as if it had failed here
            try:
                ready, self._handed_over = self._handed_over, None
                if ready is None:
                    ready = self._advance()
                if ready is not None:
                    await self._make_durable(ready)
                    self.executor.durable()
                    continue
            except Exception as err:
                self._failure = err  # `step` takes nothing more before the member stops
                raise
            if self._checkpoint_due():
                self._start_checkpoint(checkpoints)
                continue
            await self._work.wait()
            self._work = trio.Event()

    def step(self) -> None:
        """Have the replica's Readies carried out here and now, as long as they need no waiting.

        Tasks that fed the replica (a client's reader after a batch of requests, a peer link's
        batch of messages in `peer_messages`) must call this: feeding does not wake the Ready
        loop task, which saves a scheduler turn on every hop of a write. A Ready that must wait
        (a persist that goes to a thread) is handed over to the loop; so is everything while
        the loop is busy (it advances again when it is done).
        """
        if not self._fed or self._handed_over is not None or self._failure:
            return  # nothing new (a batch of reads), or the loop will take it
        self._fed = False
        try:
            ready = self._advance()
        except Exception as err:
            # Nothing may be taken from the replica after a Ready that failed (taking says the
            # last one is durable): the executor stays busy; the loop raises it and stops.
            self._failure = err
            self._work.set()
            return
        if ready is not None:
            self._handed_over = ready
            self._work.set()
        elif self._checkpoint_due():
            self._work.set()  # the loop takes checkpoints
        if self.stay_awake_s and self._awaits_leader():
            self._awaiting_leader.set()

    def _advance(self) -> Ready | None:
        self.replica.now_ms = wall_ms()  # session deadlines are set from it
        return self.executor.advance()

    async def _make_durable(self, ready: Ready) -> None:
        """Persist a Ready on the event loop when the disk is fast, else in a worker thread.

        Handing an append to a thread and back costs about as much as the write and fdatasync
        of the segment log themselves on a fast disk, also for batches of a few hundred
        records, and it adds wake-ups on a machine whose CPUs the members share. A slow disk
        (it would stall the whole member), batches of more than INLINE_PERSIST_MAX_RECORDS or
        INLINE_PERSIST_MAX_BYTES, and snapshots (which can take seconds) go to the thread.
        """
        if self.disk.persists_inline(ready):
            self.executor.persist(ready)
            return
        if self._checkpoint_written is not None and _writes_lmdb(ready):
            await self._checkpoint_written.wait()
        await trio.to_thread.run_sync(self.executor.persist, ready)

    # ---- checkpoints -------------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        return self._checkpoint_written is None and self.executor.checkpoint_due()

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
        self.disk.flush_unsafe_buffer()
        keep_after = self.executor.checkpoint_started(delta.zxid)
        self._checkpoint_written = trio.Event()
        self.disk.checkpointing = True
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
        self.executor.checkpoint_written(delta.zxid)
        written, self._checkpoint_written = self._checkpoint_written, None
        self.disk.checkpointing = False
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
        """What `zkpy status` shows of this member."""
        replica = self.replica
        return {
            "server_id": self.config.server_id,
            "role": replica.role
            if len(self.config.voters) > 1 or self.config.observers
            else ("standalone" if replica.serving else "looking"),
            "serving": replica.serving,
            "read_only": self.read_only_mode.active,
            "leader": replica.leader,
            "epoch": replica.current_epoch,
            "last_zxid": replica.last_logged,
            "committed_zxid": replica.tree.last_zxid,
            "znodes": len(replica.tree),
            "sessions": len(replica.tree.sessions),
            "watches": len(self.watches),
            "connections": self.connections,
            "outbox_bytes": self.outbox_bytes.total,
            "pending_bytes": self.pending_bytes.total,
            "watch_bytes": self.watches.weight,
            "outstanding": replica.outstanding,
            "members": [
                f"{m.host}:{m.client_port}"
                for m in self.config.members
                if m.id != self.config.server_id
            ],
            "uptime_ms": wall_ms() - self.started_at,
            **self.stats,
            **self.disk.stats,
        }


def file_membership(config: ServerConfig) -> Membership:
    """The ensemble file's members as a membership (version 0); a member alone has no peer
    port, and its line says 0."""
    if not config.members:
        return Membership((MemberSpec(config.server_id, config.host, config.client_port),))
    return Membership(
        tuple(
            MemberSpec(m.id, m.host, m.client_port, m.peer_port, m.observer)
            for m in sorted(config.members, key=lambda m: m.id)
        )
    )


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
