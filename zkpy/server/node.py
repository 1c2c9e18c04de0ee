"""The loop of one member: prep writes, persist (group commit), commit, apply, answer.

One member is an ensemble of one: writes go through `LeaderBroadcast` with a quorum of one, so
the ensemble work adds followers to the same path instead of a second one.

The order of work is the whole point and is kept by one persister task:
persist a batch (one synced LMDB transaction) -> acknowledge -> apply what is committed ->
send watch events -> send replies. Clients' requests keep arriving while a batch is being written,
and they form the next batch.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Hashable
from typing import Any

import trio

from zkpy.core.errors import Code
from zkpy.core.prep import Prep
from zkpy.core.requests import CloseSessionRequest, CreateSessionRequest, WriteRequest
from zkpy.core.sessions import SessionTracker, TimeoutBounds
from zkpy.core.tree import ApplyResult, DataTree
from zkpy.core.txn import CloseSession, CreateSession, TxnRecord, decode_record, encode_record
from zkpy.core.types import Id, zxid_epoch
from zkpy.core.watches import ChangeLog, WatchRegistry
from zkpy.server.config import ServerConfig
from zkpy.server.storage import Storage
from zkpy.zab.broadcast import LeaderBroadcast

log = logging.getLogger("zkpy.server")


def wall_ms() -> int:
    return int(time.time() * 1000)


def monotonic_ms() -> int:
    return int(trio.current_time() * 1000)


Waiter = Callable[[ApplyResult], None]
"""Called with the outcome when a write commits, right after it is applied."""


class Member:
    """State and write path of one member. Connections call into it from their tasks."""

    def __init__(self, config: ServerConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        recovered = storage.load()
        self.tree = DataTree.from_checkpoint(
            recovered.checkpoint_zxid, recovered.nodes, recovered.sessions
        )
        for _zxid, raw in recovered.log:
            self.tree.apply(decode_record(raw))
        last_epoch = max(recovered.accepted_epoch, zxid_epoch(self.tree.last_zxid))
        self.epoch = last_epoch + 1
        storage.set_epochs(accepted_epoch=self.epoch, current_epoch=self.epoch)
        self.prep = Prep(self.tree, max_data_bytes=config.max_data_bytes)
        self.broadcast = LeaderBroadcast(
            config.server_id, self.epoch, self.tree.last_zxid, frozenset({config.server_id})
        )
        self.bounds = TimeoutBounds.from_tick(config.tick_ms)
        self.tracker = SessionTracker(config.tick_ms)
        self.watches = WatchRegistry()
        self.change_log = ChangeLog(config.change_log_capacity)
        self.change_log.oldest_zxid_known = self.tree.last_zxid
        self._waiters: dict[tuple[int, int], Waiter] = {}
        self._event_sinks: dict[Hashable, Callable[[Any], None]] = {}
        self.session_closed: Callable[[int], None] = lambda session_id: None
        self._work = trio.Event()
        self._applied_since_checkpoint = len(recovered.log)
        self._last_checkpoint_zxid = recovered.checkpoint_zxid
        self._next_session = ((wall_ms() << 24) & ((1 << 56) - 1)) >> 8
        self.started_at = wall_ms()
        self.connections = 0
        self.stats = {"requests": 0, "writes": 0, "batches": 0}

    # ---- sessions ------------------------------------------------------------------------

    def new_session_id(self) -> int:
        self._next_session += 1
        return (self.config.server_id << 56) | (self._next_session & ((1 << 56) - 1))

    def start_tracking_sessions(self) -> None:
        """Every session in the tree gets a fresh deadline, as a new leader gives them."""
        now = monotonic_ms()
        for session_id, info in self.tree.sessions.items():
            self.tracker.add(session_id, info.timeout_ms, now)

    def touch(self, session_id: int) -> bool:
        return self.tracker.touch(session_id, monotonic_ms())

    def create_session(self, timeout_ms: int, waiter: Waiter) -> tuple[int, bytes, int]:
        session_id = self.new_session_id()
        password = secrets.token_bytes(16)
        timeout = self.bounds.negotiate(timeout_ms)
        self.submit(session_id, 0, CreateSessionRequest(session_id, timeout, password), waiter)
        return session_id, password, timeout

    def expire_sessions(self) -> None:
        for session_id in self.tracker.expired(monotonic_ms()):
            if self.prep.session_alive(session_id):
                log.info("session %#x expired", session_id)
                self.submit(session_id, 0, CloseSessionRequest(), None)

    # ---- watches -------------------------------------------------------------------------

    def register_event_sink(self, watcher: int, sink: Callable[[Any], None]) -> None:
        self._event_sinks[watcher] = sink

    def drop_watcher(self, watcher: int) -> None:
        self._event_sinks.pop(watcher, None)
        self.watches.remove_watcher(watcher)

    # ---- the write path ------------------------------------------------------------------

    def submit(
        self,
        session_id: int,
        cxid: int,
        request: WriteRequest,
        waiter: Waiter | None,
        ids: frozenset[Id] = frozenset(),
    ) -> None:
        """Prep a write and propose it; `waiter` hears of its commit."""
        zxid = self.broadcast.next_zxid()
        record = self.prep.prepare(
            request, zxid=zxid, session_id=session_id, cxid=cxid, now_ms=wall_ms(), ids=ids
        )
        self.broadcast.propose(record)
        if waiter is not None:
            self._waiters[(session_id, cxid)] = waiter
        self.stats["writes"] += 1
        self._work.set()

    async def run_persister(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Persist batches, then commit and apply them. One synced LMDB transaction per batch."""
        task_status.started()
        unpersisted: list[TxnRecord] = []
        while True:
            ready = self.broadcast.take_ready()
            self._apply_committed(ready.committed)
            unpersisted += ready.to_persist
            if not unpersisted:
                if self._applied_since_checkpoint >= self.config.checkpoint_every:
                    await self.checkpoint()
                    continue
                await self._work.wait()
                self._work = trio.Event()
                continue
            batch = [(record.zxid, encode_record(record)) for record in unpersisted]
            unpersisted = []
            await trio.to_thread.run_sync(self.storage.append, batch)
            self.stats["batches"] += 1
            self.broadcast.persisted(batch[-1][0])

    async def checkpoint(self) -> None:
        """Write the nodes changed since the last checkpoint; drop the log before the last one."""
        delta = self.tree.take_checkpoint()
        keep_after = self._last_checkpoint_zxid
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
        self._applied_since_checkpoint = 0

    def _apply_committed(self, committed: list[TxnRecord]) -> None:
        for record in committed:
            result = self.tree.apply(record)
            self.prep.applied(record.zxid)
            self._applied_since_checkpoint += 1
            if result.changes:
                self.change_log.record(record.zxid, result.changes)
                for watcher, event in self.watches.trigger(result.changes, record.zxid):
                    sink = self._event_sinks.get(watcher)
                    if sink is not None:
                        sink(event)
            self._session_effects(record, result)
            waiter = self._waiters.pop((record.session_id, record.cxid), None)
            if waiter is not None:
                waiter(result)

    def _session_effects(self, record: TxnRecord, result: ApplyResult) -> None:
        op = record.op
        if isinstance(op, CreateSession):
            self.tracker.add(op.session_id, op.timeout_ms, monotonic_ms())
        elif isinstance(op, CloseSession) and result.result.error == Code.OK:
            self.tracker.remove(op.session_id)
            self.session_closed(op.session_id)

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "server_id": self.config.server_id,
            "role": "standalone",
            "epoch": self.epoch,
            "last_zxid": self.tree.last_zxid,
            "znodes": len(self.tree),
            "sessions": len(self.tree.sessions),
            "watches": len(self.watches),
            "connections": self.connections,
            "outstanding": self.broadcast.in_flight,
            "uptime_ms": wall_ms() - self.started_at,
            **self.stats,
        }
