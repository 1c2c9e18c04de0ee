"""Locks with fencing tokens: `Lock`, `ReadLock`, `WriteLock` and `ReadWriteLock`.

The ZooKeeper recipe without the herd effect: every contender creates an ephemeral sequential
znode under the lock's path and waits only for the one contender that blocks it (its predecessor,
or for a reader the nearest writer ahead of it), so a release wakes exactly one waiter (or, for a
writer followed by readers, the readers it was blocking). The lock is fair: it is granted in the
order the contenders arrived.

    async with Lock(zk, "/locks/db") as held:
        await storage.write(data, token=held.token)

`held` is a `Held`: `held.token` is the czxid of our znode (see `recipes.fencing`), and the body
runs inside `held.cancel_scope`, which is cancelled when the session is lost. A body cancelled that
way leaves the ``async with`` quietly, like `anyio.move_on_after`; check `held.lost` afterwards.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal, overload

import anyio

import zkpy
from recipes._nodes import (
    Node,
    async_client,
    create_and_list,
    exists_both,
    join,
    new_uid,
    parse_nodes,
    read_identifiers,
    remove_contender,
    retry,
    to_bytes,
)
from recipes.errors import AlreadyHeldError, LockLostError, NotHeldError
from zkpy.errors import NoNodeError

Blocker = Callable[[list[Node], int], Node | None]

# (client id, lock path, task) for every acquisition in progress or held: a second acquisition of
# the same path by the same task on the same client is refused instead of deadlocking.
_ACTIVE: set[tuple[int, str, int]] = set()


def exclusive_blocker(nodes: list[Node], index: int) -> Node | None:
    """An exclusive contender waits for everyone ahead of it; it watches its predecessor."""
    return nodes[index - 1] if index > 0 else None


def shared_blocker(nodes: list[Node], index: int) -> Node | None:
    """A reader waits only for exclusive contenders ahead of it; it watches the nearest one."""
    for node in reversed(nodes[:index]):
        if node.kind != "read":
            return node
    return None


class _OwnNodeWatch:
    """The one-shot watch on our own contender node: its deletion means the lock is lost."""

    def __init__(self, held: Held) -> None:
        self._held = held

    def __call__(self, event: zkpy.WatchedEvent) -> None:
        self._held._on_node_event(event)

    def fail(self, error: Exception) -> None:
        # A waiter is failed by the client itself (SessionExpiredError); only mark the hold.
        self._held._lose("the session was lost", wake=False)


class Held:
    """A lock, read lock, semaphore lease or leadership, held through one contender znode.

    - `token`: the znode's czxid, the fencing token. A later holder of the same lock always has a
      larger one (zxids only grow, and the queue is served in creation order).
    - `path`: the contender znode; `lock_path`: the lock's directory; `session_id`.
    - `cancel_scope`: cancelled when the hold is lost (session LOST, our znode deleted, or the
      connection SUSPENDED for a whole session timeout, or at once with `cancel_on_suspend`).
      ``async with lock as held`` runs its body inside it; with `acquire()` enter it yourself.
    - `lost` / `lost_reason`: whether (and why) the hold was lost; `released`.
    - `guarded_transaction()`: a multi that only commits while we still hold the lock.
    """

    def __init__(
        self,
        zk: zkpy.Client,
        lock_path: str,
        path: str,
        stat: zkpy.Stat,
        *,
        uid: str,
        cancel_on_suspend: bool,
        sweep: bool = False,
    ) -> None:
        self.zk = zk
        self.lock_path = lock_path
        self.path = path
        self.name = path.rsplit("/", 1)[1]
        self.token: int = stat.czxid
        self.version = stat.version
        self.session_id = stat.ephemeral_owner
        self.cancel_on_suspend = cancel_on_suspend
        self.cancel_scope = anyio.CancelScope()
        self.released = False
        self.lost_reason: str | None = None
        self._uid = uid
        self._sweep = sweep
        self._handoff = False  # granted by `contend`: a release marks the node (`hand_off`)
        self._attached = False
        self._suspend_deadline: float | None = None
        self._waker: zkpy.WatchFuture | None = None
        self._own_watch = _OwnNodeWatch(self)
        self._watching_own = False
        self._on_release: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        state = "lost" if self.lost_reason else "released" if self.released else "held"
        return f"<Held {self.path} token={self.token:#x} {state}>"

    # ---- losing it ---------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        """True once the hold was lost (not merely released by us)."""
        if (
            self.lost_reason is None
            and self._suspend_deadline is not None
            and anyio.current_time() >= self._suspend_deadline
        ):
            self.lost_reason = "the connection was suspended for a whole session timeout"
        return self.lost_reason is not None

    def _lose(self, reason: str, *, wake: bool = True) -> None:
        if self.released or self.lost_reason is not None:
            return
        self.lost_reason = reason
        self.cancel_scope.cancel(reason)
        if wake and self._waker is not None:
            self._waker.fail(LockLostError(reason))  # type: ignore[arg-type]

    def _on_node_event(self, event: zkpy.WatchedEvent) -> None:
        if self.released:
            return
        if event.type is zkpy.EventType.DELETED:
            self._lose("our lock node was deleted")
        elif self._waker is not None:
            self._waker(event)

    def _on_state(self, state: zkpy.ConnectionState) -> None:
        """Connection-state listener (runs in the client's task; must not block)."""
        if self.released:
            return
        if state is zkpy.ConnectionState.LOST:
            self._lose("the session was lost")
        elif state is zkpy.ConnectionState.SUSPENDED:
            if self.cancel_on_suspend:
                self._lose("the connection was suspended")
            elif self._suspend_deadline is None:
                # A partitioned client never hears that its session expired: assume it did once
                # the connection has been down for a whole session timeout (Curator does too).
                self._suspend_deadline = anyio.current_time() + self.zk.session_timeout
                self.cancel_scope.deadline = self._suspend_deadline
        elif state is zkpy.ConnectionState.CONNECTED and not self.lost:
            self._suspend_deadline = None
            self.cancel_scope.deadline = math.inf

    async def _watch_own(
        self, ahead: str | None = None, waker: zkpy.WatchFuture | None = None
    ) -> zkpy.Stat | None:
        """Set the watch on our node (once: its deletion loses the lock), in one round trip
        with the watch on `ahead` when there is one; return `ahead`'s Stat (None: it is gone).
        Raises `LockLostError` if our node is gone already."""
        zk = self.zk
        if self._watching_own:
            return None if ahead is None else await retry(zk, zk.exists, ahead, watch=waker)
        ahead_stat = None
        if ahead is None or waker is None:
            own_stat = await retry(zk, zk.exists, self.path, watch=self._own_watch)
        else:
            own_stat, ahead_stat = await exists_both(zk, self.path, self._own_watch, ahead, waker)
        if own_stat is None:
            raise LockLostError(f"{self.path} vanished right after its creation")
        self._watching_own = True
        return ahead_stat

    def _attach(self) -> None:
        """Start feeling connection-state changes (from the moment the lock is granted)."""
        self._attached = True
        self.zk.add_listener(self._on_state)
        self._on_state(self.zk.state)

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            try:
                self.zk.remove_listener(self._on_state)
            except ValueError:
                pass

    # ---- using it ----------------------------------------------------------------------------

    def guarded_transaction(self) -> zkpy.Transaction:
        """A `zk.transaction()` that begins with a check of our lock node: it commits only while
        we still hold the lock (our node exists, unchanged). Results start with the check's:
        ``results[0]`` is True, or `NoNodeError` if the lock was lost (and nothing was written).
        See `commit_guarded` for a version that raises instead."""
        return self.zk.transaction().check(self.path, self.version)

    transaction = guarded_transaction

    async def commit_guarded(self, transaction: zkpy.Transaction) -> list[object]:
        """Commit a `guarded_transaction()`; raise `NotHeldError` if the lock was lost, else
        return the results of the operations after the check (errors in place, kazoo style)."""
        results = await transaction.commit()
        if isinstance(results[0], NoNodeError | zkpy.errors.BadVersionError):
            raise NotHeldError(f"{self.path} is no longer held") from results[0]
        return results[1:]

    async def is_held(self) -> bool:
        """Ask the server whether our node still exists and belongs to our session."""
        if self.released or self.lost:
            return False
        stat = await retry(self.zk, self.zk.exists, self.path)
        return stat is not None and stat.ephemeral_owner == self.zk.session_id

    async def release(self) -> None:
        """Give the lock up: delete our node (and cancel `cancel_scope`). Idempotent.

        Runs shielded from cancellation. If the ensemble cannot be reached for twice the session
        timeout (for a hold already lost: one session timeout, as the session is most likely
        gone) the node is left to the session, which deletes it when it ends."""
        if self.released:
            return
        lost = self.lost
        self.released = True
        self._detach()
        self.cancel_scope.cancel("released")
        try:
            with anyio.CancelScope(shield=True):
                await remove_contender(
                    self.zk,
                    self.lock_path,
                    self._uid,
                    self.path,
                    sweep=self._sweep,
                    patience=self.zk.session_timeout if lost else None,
                    granted=self._handoff and not lost,
                )
        finally:
            for callback in self._on_release:
                callback()
            self._on_release.clear()

    resign = release


async def contend(
    zk: zkpy.Client,
    lock_path: str,
    kind: str,
    data: bytes,
    blocker: Blocker,
    *,
    blocking: bool = True,
    cancel_on_suspend: bool = False,
    on_wakeup: Callable[[], None] | None = None,
) -> Held | None:
    """Queue a contender node of `kind` under `lock_path` and wait until `blocker` finds nothing
    ahead of it. Returns the `Held`, or None if not `blocking` and the way was not clear.

    On any failure or cancellation the node is deleted again before the exception propagates.
    """
    uid = new_uid()
    path: str | None = None
    held: Held | None = None
    swept = True
    granted = False
    try:
        path, stat, lost_connection, names = await create_and_list(zk, lock_path, uid, kind, data)
        swept = lost_connection
        held = Held(
            zk,
            lock_path,
            path,
            stat,
            uid=uid,
            cancel_on_suspend=cancel_on_suspend,
            sweep=lost_connection,
        )
        own = path
        if names is None:
            names = await retry(zk, zk.get_children, lock_path)
        nodes = parse_nodes(names)
        while True:
            if held.lost_reason is not None:
                raise LockLostError(held.lost_reason)
            index = next((i for i, node in enumerate(nodes) if node.name == held.name), None)
            if index is None:
                raise LockLostError(f"{own} vanished while waiting")
            ahead = blocker(nodes, index)
            if ahead is None:
                await held._watch_own()
                break
            if not blocking:
                return None
            waker = zkpy.WatchFuture()
            held._waker = waker
            ahead_path = join(lock_path, ahead.name)
            ahead_stat = await held._watch_own(ahead_path, waker)
            if ahead_stat is None:
                nodes = parse_nodes(await retry(zk, zk.get_children, lock_path))
                continue
            event = await waker.wait()
            held._waker = None
            if on_wakeup is not None:
                on_wakeup()
            remaining = queue_after(nodes, ahead, event) if event.path == ahead_path else None
            if remaining is not None and blocker(remaining, remaining.index(nodes[index])) is None:
                # Nothing that blocked us is left, and nothing new can queue ahead of us (new
                # nodes get larger sequence numbers): the lock is ours without re-listing.
                nodes = remaining
            else:
                # Whatever else was ahead may be long gone (our listing is as old as our wait):
                # list again rather than walk our stale copy backwards one exists() at a time.
                nodes = parse_nodes(await retry(zk, zk.get_children, lock_path))
        held._attach()
        held._handoff = granted = True
        return held
    finally:
        if not granted:
            if held is not None:
                held.released = True
            with anyio.CancelScope(shield=True):
                await remove_contender(zk, lock_path, uid, path, sweep=swept)


def queue_after(nodes: list[Node], ahead: Node, event: zkpy.WatchedEvent) -> list[Node] | None:
    """The queue as `event` on the node `ahead` of us leaves it, as far as we know it.

    NodeDeleted: `ahead` is gone; whatever else of our listing was ahead may or may not be.
    NodeDataChanged: `ahead` was released by its holder (`hand_off` marks the node as it
    deletes it, in one multi), so everything `ahead` had waited for is gone too: for an
    exclusive node everything before it, for a reader every exclusive node before it. Anything
    else (a session event): None, the queue must be listed again.
    """
    position = nodes.index(ahead)
    if event.type is zkpy.EventType.DELETED:
        return nodes[:position] + nodes[position + 1 :]
    if event.type is zkpy.EventType.CHANGED:
        readers = [node for node in nodes[:position] if node.kind == "read"]
        return (readers if ahead.kind == "read" else []) + nodes[position + 1 :]
    return None


class TaskHolds:
    """``async with recipe as held`` for a recipe object that tasks share: the body runs in the
    hold's cancel scope, the hold is released on exit, and each task's holds are its own."""

    def __init__(self, acquire: Callable[[], Awaitable[Held]]) -> None:
        self._acquire = acquire
        self._contexts: dict[int, list[AbstractAsyncContextManager[Held, bool | None]]] = {}

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Held]:
        """Acquire, run the body in the hold's cancel scope, and release on the way out."""
        held = await self._acquire()
        try:
            with held.cancel_scope:
                yield held
        finally:
            await held.release()

    async def enter(self) -> Held:
        """``__aenter__`` of the recipe: acquire, and remember the context for this task's exit."""
        context = self.hold()
        held = await context.__aenter__()
        self._contexts.setdefault(anyio.get_current_task().id, []).append(context)
        return held

    async def exit(self, *exc_info: object) -> bool | None:
        """``__aexit__`` of the recipe: leave this task's latest context entered with `enter`."""
        task = anyio.get_current_task().id
        stack = self._contexts[task]
        context = stack.pop()
        if not stack:
            del self._contexts[task]
        return await context.__aexit__(*exc_info)  # type: ignore[arg-type]


class Lock:
    """A fair, exclusive lock at `path` (a znode directory), with a fencing token.

    ``async with Lock(zk, "/locks/db") as held:`` waits (cancellably, use cancel scopes for
    a timeout) until the lock is ours and runs the body in `held.cancel_scope`; or call
    `acquire()` / `try_acquire()` and `release()`.

    Not reentrant: a task that holds (or waits for) a lock path on a client and asks for it again,
    through this object or another, gets `AlreadyHeldError` rather than waiting for itself. Other
    tasks sharing one `Lock` object contend for it like separate processes, in arrival order.

    `identifier` is stored in our node (see `contenders()`). With `cancel_on_suspend`, the body is
    cancelled as soon as the connection is suspended, not only when the session is lost.
    `wakeups` counts how often a waiter here was woken by a watch (1 per hand-off: no herd).
    """

    kind = "lock"
    blocker: Blocker = staticmethod(exclusive_blocker)

    def __init__(
        self,
        zk: zkpy.Client,
        path: str,
        identifier: bytes | str = b"",
        *,
        cancel_on_suspend: bool = False,
    ) -> None:
        self.zk = async_client(zk, "Lock")
        self.path = path.rstrip("/") or "/"
        self.identifier = to_bytes(identifier)
        self.cancel_on_suspend = cancel_on_suspend
        self.wakeups = 0
        self._holds: dict[int, Held] = {}
        self._task_holds = TaskHolds(self.acquire)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    def _wakeup(self) -> None:
        self.wakeups += 1

    @overload
    async def acquire(self, blocking: Literal[True] = True) -> Held: ...
    @overload
    async def acquire(self, blocking: bool) -> Held | None: ...

    async def acquire(self, blocking: bool = True) -> Held | None:
        """Wait for the lock and return the `Held` (None if not `blocking` and it is taken)."""
        task = anyio.get_current_task().id
        key = (id(self.zk), self.path, task)
        if key in _ACTIVE:
            raise AlreadyHeldError(f"this task already holds or awaits {self.path}")
        _ACTIVE.add(key)
        held: Held | None = None
        try:
            held = await contend(
                self.zk,
                self.path,
                self.kind,
                self.identifier,
                type(self).blocker,
                blocking=blocking,
                cancel_on_suspend=self.cancel_on_suspend,
                on_wakeup=self._wakeup,
            )
        finally:
            if held is None:
                _ACTIVE.discard(key)
        if held is None:
            return None
        self._holds[task] = held

        def forget() -> None:
            _ACTIVE.discard(key)
            if self._holds.get(task) is held:
                del self._holds[task]

        held._on_release.append(forget)
        return held

    async def try_acquire(self) -> Held | None:
        """Take the lock only if nobody is ahead of us; never waits for another holder."""
        return await self.acquire(blocking=False)

    def _own(self) -> Held:
        held = self.held
        if held is None:
            raise NotHeldError(f"{self.path} is not held through this object by this task")
        return held

    @property
    def held(self) -> Held | None:
        """The current task's hold on this lock; or, if this object has exactly one hold (for
        instance an election campaigned for in a child task), that one."""
        held = self._holds.get(anyio.get_current_task().id)
        if held is None and len(self._holds) == 1:
            (held,) = self._holds.values()
        return held

    @property
    def is_acquired(self) -> bool:
        """Whether some task holds this lock through this object."""
        return any(not held.released for held in self._holds.values())

    async def release(self) -> None:
        """Release the current task's hold, or this object's only hold (else `NotHeldError`)."""
        await self._own().release()

    def guarded_transaction(self) -> zkpy.Transaction:
        """`Held.guarded_transaction()` of the hold `release()` would release."""
        return self._own().guarded_transaction()

    transaction = guarded_transaction

    async def contenders(self) -> list[bytes]:
        """The identifiers of every contender, holder first, in queue order."""
        return await read_identifiers(self.zk, self.path)

    def hold(self) -> AbstractAsyncContextManager[Held]:
        """``async with lock.hold() as held:`` (what ``async with lock`` does)."""
        return self._task_holds.hold()

    async def __aenter__(self) -> Held:
        return await self._task_holds.enter()

    async def __aexit__(self, *exc_info: object) -> bool | None:
        return await self._task_holds.exit(*exc_info)


class WriteLock(Lock):
    """The exclusive side of a `ReadWriteLock`: waits for every contender ahead of it."""

    kind = "write"


class ReadLock(Lock):
    """The shared side of a `ReadWriteLock`: waits only for writers (and `Lock`s) ahead of it,
    so readers hold together. Each reader has its own token (the czxid of its node)."""

    kind = "read"
    blocker = staticmethod(shared_blocker)


class ReadWriteLock:
    """Shared readers, one exclusive writer, served fairly in arrival order (a writer is not
    starved: readers that arrive after it wait for it).

        rw = ReadWriteLock(zk, "/locks/table")
        async with rw.read_lock() as held: ...
        async with rw.write_lock() as held: ...

    `read_lock()` and `write_lock()` return the same `ReadLock` / `WriteLock` object every time;
    they queue in one directory. A plain `Lock` on the same path counts as a writer. Upgrading
    (asking for the write lock while holding the read lock in the same task) is refused with
    `AlreadyHeldError`, since it would wait for itself.
    """

    def __init__(
        self,
        zk: zkpy.Client,
        path: str,
        identifier: bytes | str = b"",
        *,
        cancel_on_suspend: bool = False,
    ) -> None:
        self.path = path
        self._read = ReadLock(zk, path, identifier, cancel_on_suspend=cancel_on_suspend)
        self._write = WriteLock(zk, path, identifier, cancel_on_suspend=cancel_on_suspend)

    def read_lock(self) -> ReadLock:
        """The read side: the same `ReadLock` every time."""
        return self._read

    def write_lock(self) -> WriteLock:
        """The write side: the same `WriteLock` every time."""
        return self._write

    @property
    def reader(self) -> ReadLock:
        """`read_lock()`, as a property."""
        return self._read

    @property
    def writer(self) -> WriteLock:
        """`write_lock()`, as a property."""
        return self._write
