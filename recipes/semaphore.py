"""`Semaphore`: at most `max_leases` holders at a time, fair, without the herd effect.

The shape of Curator's InterProcessSemaphoreV2. Under the semaphore's path:

    {path}          data: max_leases, as decimal ASCII (every participant must agree)
    {path}/lock     an exclusive `Lock`: the queue of contenders
    {path}/leases   one ephemeral sequential node per lease

A contender takes the lock, creates its lease node and counts the leases; if it is within
`max_leases` it releases the lock and holds; if not, it waits (still holding the lock, so it is
the only waiter watching the leases) until a lease goes away. Every other contender waits in the
lock's queue, watching only its predecessor: a released lease wakes one task, and the next
contender in line is woken only when the lock passes to it.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Literal, overload

import anyio

import zkpy
from recipes._nodes import (
    async_client,
    create_and_list,
    join,
    new_uid,
    parse_nodes,
    read_identifiers,
    remove_contender,
    retry,
    to_bytes,
)
from recipes.errors import BarrierMismatchError, LockLostError, NotHeldError
from recipes.lock import Held, TaskHolds, contend, exclusive_blocker
from zkpy.errors import BadVersionError, NodeExistsError


class Semaphore:
    """A semaphore with `max_leases` slots at `path`.

    ``async with Semaphore(zk, "/sem/db", max_leases=3) as held:`` (or `acquire()` / `release()`).
    `held` is a `Held` like a lock's: its `token` is the czxid of the lease node and its body is
    cancelled when the session is lost. Since up to `max_leases` tasks hold at once, a lease
    token orders holders in time but does not make them exclusive.

    Unlike the locks, a task may hold several leases (like `anyio.Semaphore`); a task that asks
    for more leases than are free waits for itself. Non-blocking `acquire` may also fail while
    another contender is between taking the queue lock and its lease.
    """

    def __init__(
        self,
        zk: zkpy.Client,
        path: str,
        max_leases: int = 1,
        identifier: bytes | str = b"",
        *,
        cancel_on_suspend: bool = False,
    ) -> None:
        if max_leases < 1:
            raise ValueError("max_leases must be at least 1")
        self.zk = async_client(zk, "Semaphore")
        self.path = path.rstrip("/") or "/"
        self.max_leases = max_leases
        self.identifier = to_bytes(identifier)
        self.cancel_on_suspend = cancel_on_suspend
        self.wakeups = 0
        self._lock_path = join(self.path, "lock")
        self._leases_path = join(self.path, "leases")
        self._checked = False
        self._holds: dict[int, list[Held]] = {}
        self._task_holds = TaskHolds(self.acquire)

    def __repr__(self) -> str:
        return f"<Semaphore {self.path} max_leases={self.max_leases}>"

    def _wakeup(self) -> None:
        self.wakeups += 1

    async def _check_max_leases(self) -> None:
        """Record `max_leases` in the semaphore's node, or check it against the recorded one."""
        if self._checked:
            return
        wanted = str(self.max_leases).encode()
        while True:
            try:
                await retry(self.zk, self.zk.create, self.path, wanted, makepath=True)
            except NodeExistsError:
                pass
            data, stat = await retry(self.zk, self.zk.get, self.path)
            if data == b"":
                try:
                    await self.zk.set(self.path, wanted, version=stat.version)
                except (BadVersionError, zkpy.errors.ConnectionLossError):
                    pass
                continue
            if data != wanted:
                raise BarrierMismatchError(
                    f"{self.path} has max_leases {data.decode(errors='replace')}, "
                    f"not {self.max_leases}"
                )
            self._checked = True
            return

    @overload
    async def acquire(self, blocking: Literal[True] = True) -> Held: ...
    @overload
    async def acquire(self, blocking: bool) -> Held | None: ...

    async def acquire(self, blocking: bool = True) -> Held | None:
        """Wait for a lease and return it (None if not `blocking` and none is free now)."""
        task = anyio.get_current_task().id
        await self._check_max_leases()
        queue = await contend(
            self.zk,
            self._lock_path,
            "lock",
            self.identifier,
            exclusive_blocker,
            blocking=blocking,
            on_wakeup=self._wakeup,
        )
        if queue is None:
            return None
        try:
            held = await self._take_lease(blocking)
        finally:
            await queue.release()
        if held is None:
            return None
        self._holds.setdefault(task, []).append(held)

        def forget() -> None:
            holds = self._holds.get(task, [])
            if held in holds:
                holds.remove(held)
            if not holds:
                self._holds.pop(task, None)

        held._on_release.append(forget)
        return held

    async def _take_lease(self, blocking: bool) -> Held | None:
        zk = self.zk
        uid = new_uid()
        path: str | None = None
        held: Held | None = None
        swept = True
        granted = False
        try:
            changed = zkpy.WatchFuture()
            path, stat, lost_connection, names = await create_and_list(
                zk, self._leases_path, uid, "lease", self.identifier, watch=changed
            )
            swept = lost_connection
            held = Held(
                zk,
                self._leases_path,
                path,
                stat,
                uid=uid,
                cancel_on_suspend=self.cancel_on_suspend,
                sweep=lost_connection,
            )
            own, own_watch = path, held._own_watch
            if await retry(zk, zk.exists, own, watch=own_watch) is None:
                raise LockLostError(f"{own} vanished right after its creation")
            while True:
                if names is None:
                    changed = zkpy.WatchFuture()
                    names = await retry(zk, zk.get_children, self._leases_path, watch=changed)
                nodes = parse_nodes(names)
                index = next((i for i, n in enumerate(nodes) if n.name == held.name), None)
                if index is None or held.lost_reason is not None:
                    raise LockLostError(held.lost_reason or f"{own} vanished while waiting")
                if index < self.max_leases:
                    break
                if not blocking:
                    return None
                held._waker = changed
                await changed.wait()
                held._waker = None
                self._wakeup()
                names = None
            held._attach()
            granted = True
            return held
        finally:
            if not granted:
                if held is not None:
                    held.released = True
                with anyio.CancelScope(shield=True):
                    await remove_contender(zk, self._leases_path, uid, path, sweep=swept)

    async def try_acquire(self) -> Held | None:
        """A lease if one is free at once, else None, without waiting."""
        return await self.acquire(blocking=False)

    @property
    def held(self) -> Held | None:
        """The current task's latest lease, if any."""
        holds = self._holds.get(anyio.get_current_task().id)
        return holds[-1] if holds else None

    @property
    def is_acquired(self) -> bool:
        """Whether some task holds a lease through this object."""
        return any(holds for holds in self._holds.values())

    async def release(self) -> None:
        """Release the current task's latest lease (`NotHeldError` if it has none)."""
        held = self.held
        if held is None:
            raise NotHeldError(f"this task holds no lease of {self.path}")
        await held.release()

    async def lease_holders(self) -> list[bytes]:
        """The identifiers of the current lease holders, oldest lease first."""
        return await read_identifiers(self.zk, self._leases_path)

    def hold(self) -> AbstractAsyncContextManager[Held]:
        """``async with semaphore.hold() as held:`` (what ``async with semaphore`` does)."""
        return self._task_holds.hold()

    async def __aenter__(self) -> Held:
        return await self._task_holds.enter()

    async def __aexit__(self, *exc_info: object) -> bool | None:
        return await self._task_holds.exit(*exc_info)
