"""Fencing tokens, on the side of the resource a lock protects.

Every exclusive recipe here (`Lock`, `WriteLock`, `Election`) hands out a token: the czxid of the
holder's znode. zxids only grow, and a lock is granted in the order its contenders' znodes were
created, so each holder of a lock has a larger token than every earlier holder, across sessions,
processes and restarts of the ensemble.

A lock alone cannot stop an old holder that does not know it lost the lock (a long GC or SIGSTOP
pause, a partition, a slow network) from writing after a new holder has started. The resource
can: it remembers the highest token it has accepted and refuses smaller ones. That is
Kleppmann's argument ("How to do distributed locking", 2016) and what etcd's lock notes ask of
the resource (a revision used as a fencing token).

    guard = FencingGuard()

    async def handle_write(resource: str, token: int, data: bytes) -> None:
        async with guard.fence(resource, token):   # raises StaleTokenError if token is old
            await storage.write(resource, data)     # the check and the write cannot interleave

What tokens guarantee, and what not (see docs/recipes.md for the whole argument):

- A write carrying token t is refused once the resource has accepted a write with a token > t.
- They do not make holders exclusive in time: until the new holder touches the resource, the
  old one's writes still get through. Fencing orders writes; it does not prevent overlap.
- The check and the write must be atomic on the resource (`fence` holds a per-resource lock);
  a check followed later by an unguarded write re-opens the race.
- The guard's memory must survive the resource's restarts (pass a persistent `state`), or a
  restarted resource forgets the highest token and accepts an old writer once.
- Compare tokens of one lock only. A token is a creation zxid, so tokens of different locks
  (or of readers of a `ReadWriteLock`, or leases of a `Semaphore`) are not ordered by the time
  their holders acquired.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping

import anyio

from recipes.errors import RecipeError


class StaleTokenError(RecipeError):
    """A write came with a token older than one the resource has already accepted."""

    def __init__(self, resource: str, token: int, highest: int) -> None:
        super().__init__(
            f"stale fencing token {token:#x} for {resource!r}: {highest:#x} was already accepted"
        )
        self.resource = resource
        self.token = token
        self.highest = highest


class FencingGuard:
    """Remembers, per resource, the highest fencing token accepted, and refuses older ones.

    A token equal to the highest is accepted (one holder writing several times). Safe for
    concurrent use from async tasks and from threads: `accept` (alias `check`) is atomic, and
    `fence` holds a per-resource lock across the check and the write.

    `state` is where the highest tokens live, a dict by default; pass a persistent mapping (a
    `shelve`, a table) to keep them across restarts of the resource.
    """

    def __init__(self, state: MutableMapping[str, int] | None = None) -> None:
        self._highest: MutableMapping[str, int] = {} if state is None else state
        self._mutex = threading.Lock()
        self._async_locks: dict[str, anyio.Lock] = {}
        self._thread_locks: dict[str, threading.Lock] = {}
        self.rejected = 0

    def highest(self, resource: str) -> int | None:
        """The highest token accepted for `resource`, or None if none yet."""
        with self._mutex:
            return self._highest.get(resource)

    def is_stale(self, resource: str, token: int) -> bool:
        """Whether `token` would be refused now (records nothing)."""
        with self._mutex:
            highest = self._highest.get(resource)
        return highest is not None and token < highest

    def accept(self, resource: str, token: int) -> None:
        """Check `token` and, if it is not stale, record it as the highest: atomically. Raises
        `StaleTokenError` if a larger token was accepted before.

        The caller's write must not interleave with another write to the resource between this
        call and the write itself (use `fence`, or your own per-resource lock)."""
        if not isinstance(token, int) or isinstance(token, bool) or token < 0:
            raise ValueError(f"a fencing token is a non-negative int, not {token!r}")
        with self._mutex:
            highest = self._highest.get(resource)
            if highest is not None and token < highest:
                self.rejected += 1
                raise StaleTokenError(resource, token, highest)
            if highest is None or token > highest:
                self._highest[resource] = token

    check = accept
    validate = accept

    def fence(self, resource: str, token: int) -> Fence:
        """The write's guard: ``async with guard.fence(resource, token):`` in async code, or
        ``with guard.fence(resource, token):`` in threaded code. Writes to one resource are
        serialized, and each is refused with `StaleTokenError` (before its body runs) if a
        newer token got there first."""
        return Fence(self, resource, token)

    fence_sync = fence

    def _thread_lock(self, resource: str) -> threading.Lock:
        with self._mutex:
            lock = self._thread_locks.get(resource)
            if lock is None:
                lock = self._thread_locks[resource] = threading.Lock()
            return lock

    def _task_lock(self, resource: str) -> anyio.Lock:
        lock = self._async_locks.get(resource)
        if lock is None:
            lock = self._async_locks[resource] = anyio.Lock()
        return lock


class Fence:
    """What `FencingGuard.fence` returns: a context manager for ``with`` (a per-resource thread
    lock) and for ``async with`` (a per-resource task lock). Do not mix the two kinds of writers
    on one resource: they do not exclude each other (`accept` itself stays atomic)."""

    def __init__(self, guard: FencingGuard, resource: str, token: int) -> None:
        self.guard = guard
        self.resource = resource
        self.token = token
        self._lock: threading.Lock | None = None
        self._async_lock: anyio.Lock | None = None

    def __enter__(self) -> Fence:
        lock = self.guard._thread_lock(self.resource)
        lock.acquire()
        try:
            self.guard.accept(self.resource, self.token)
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._lock is not None
        lock, self._lock = self._lock, None
        lock.release()

    async def __aenter__(self) -> Fence:
        lock = self.guard._task_lock(self.resource)
        await lock.acquire()
        try:
            self.guard.accept(self.resource, self.token)
        except BaseException:
            lock.release()
            raise
        self._async_lock = lock
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._async_lock is not None
        lock, self._async_lock = self._async_lock, None
        lock.release()


__all__ = ["Fence", "FencingGuard", "StaleTokenError"]
