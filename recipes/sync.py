"""The recipes for threaded code: blocking wrappers of the async recipes, on a `zkpy.sync` client.

    from recipes.sync import Lock
    with zkpy.sync.connect("127.0.0.1:2181") as zk:
        with Lock(zk, "/locks/db") as held:
            storage.write(data, token=held.token)

Each class drives its async twin (`recipes.Lock`, `recipes.Election` ...) on the client's loop,
so the znodes, the fairness, the fencing tokens and the retry rules are the same; what differs is
what a thread can be told. An async body is cancelled when its hold is lost; a thread cannot be,
so here a lost hold is reported instead:

- `held.lost` / `held.lost_reason` say it at any moment, `held.check()` raises `LockLostError`
  if it happened (call it between the steps of a long body), and `held.wait_lost(timeout)` blocks
  until it happens (or the hold is released);
- leaving ``with lock as held:`` raises `LockLostError` if the hold was lost during the block
  (unless the block raised already), so work done under a lost lock is never mistaken for work
  done under the lock; guard the writes that matter with `held.guarded_transaction()` or the
  fencing token.

Threads take the place of tasks: each thread's holds are its own, a thread asking again for a
lock it holds (or awaits) gets `AlreadyHeldError`, and a timeout (`acquire(timeout=...)`,
`Queue.get(timeout=...)` ...) raises `TimeoutError`, having withdrawn the waiter's node.

The recipes that keep something up while a block lasts (`Party`, `PersistentNode`,
`SetPartitioner`) enter their async twin in a task of the client's loop that stays inside it for
the whole ``with`` block (their background work lives in a task group there), so they also
re-create what they stand for under a new session (``new_session_on_expiry=True``).

Recipes and clients do not mix: these take a `zkpy.sync` client, the async ones a
`zkpy.connect` client; the other kind raises TypeError.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

import trio

import recipes
from recipes import election as _election
from recipes.errors import AlreadyHeldError, LockLostError, NotHeldError
from zkpy.sync import Client, ClientClosedError, SyncTransaction, within

T = TypeVar("T")

# (client id, lock path, thread id) for every acquisition in progress or held through a
# blocking lock: a thread asking again for a lock it holds would wait for itself
_ACTIVE: set[tuple[int, str, int]] = set()
_ACTIVE_MUTEX = threading.Lock()


def _sync_client(zk: object, recipe: str) -> Client:
    """`zk`, checked to be a blocking client."""
    if not isinstance(zk, Client):
        raise TypeError(
            f"recipes.sync.{recipe} takes a zkpy.sync client (zkpy.sync.connect), not "
            f"{type(zk).__module__}.{type(zk).__qualname__}; with zkpy.connect's async client, "
            f"use recipes.{recipe}"
        )
    return zk


async def _keep(held: recipes.Held, over: threading.Event, task_status: Any) -> None:
    """Stand in for the body of a hold in the client's loop: wait in the hold's cancel scope,
    which the async recipe cancels when the hold is lost (or when it is released); then set
    `over`, the thread-side news of it."""
    task_status.started()
    try:
        with held.cancel_scope:
            await trio.sleep_forever()
    finally:
        _ = held.lost  # a suspension that outlasted the session timeout counts from here on
        over.set()


class Held:
    """A blocking lock, lease or leadership: the async `recipes.Held` seen from threads.

    `token` (the fencing token), `path`, `lock_path` and `session_id` are the async hold's;
    `lost`, `check()`, `wait_lost()` report a loss (see the module docstring); `release()`.
    """

    def __init__(self, zk: Client, held: recipes.Held) -> None:
        self.zk = zk
        self.async_held = held
        self.token: int = held.token
        self.path = held.path
        self.lock_path = held.lock_path
        self.session_id = held.session_id
        self._over = threading.Event()
        zk.start_task(_keep, held, self._over)

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "held"
        return f"<recipes.sync.Held {self.path} token={self.token:#x} {state}>"

    @property
    def lost(self) -> bool:
        """True once the hold was lost (not merely released by us)."""
        return self._over.is_set() and self.async_held.lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        """Why the hold was lost, or None."""
        return self.async_held.lost_reason if self._over.is_set() else None

    @property
    def released(self) -> bool:
        """Whether we released it."""
        return self.async_held.released

    def check(self) -> None:
        """Raise `LockLostError` if the hold was lost."""
        if self.lost:
            raise LockLostError(f"{self.path} was lost: {self.lost_reason}")

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the hold is lost or released (or `timeout` s pass); True if lost."""
        self._over.wait(timeout)
        return self.lost

    def release(self) -> None:
        """Give the hold up (delete our node). Idempotent; a no-op once the client is closed."""
        if not self.zk.closed:
            self.zk.run(self.async_held.release)

    resign = release

    def is_held(self) -> bool:
        """Ask the server whether our node still exists and belongs to our session."""
        return self.zk.run(self.async_held.is_held)

    def guarded_transaction(self) -> SyncTransaction:
        """A transaction that commits only while we still hold (see `recipes.Held`)."""
        return SyncTransaction(self.zk, self.async_held.guarded_transaction())

    transaction = guarded_transaction

    def commit_guarded(self, transaction: SyncTransaction) -> list[object]:
        """Commit a `guarded_transaction()`; `NotHeldError` if the hold was lost."""
        return self.zk.run(self.async_held.commit_guarded, transaction.async_transaction)


class _Holds:
    """What the blocking lock-like recipes share: each thread's holds, acquired through an async
    ``acquire(blocking)`` on the client's loop, ``with recipe as held``, and `release()`."""

    reentrant = False

    def __init__(self, zk: Client, path: str, acquire: Callable[[bool], Awaitable[Any]]) -> None:
        self.zk = zk
        self.path = path
        self._acquire_async = acquire
        self._mutex = threading.Lock()
        self._holds: dict[int, list[Held]] = {}

    def __repr__(self) -> str:
        return f"<recipes.sync.{type(self).__name__} {self.path}>"

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Held | None:
        """Wait for it (up to `timeout` seconds, then TimeoutError) and return the `Held`; None
        if not `blocking` and it is taken."""
        thread = threading.get_ident()
        key = (id(self.zk), self.path, thread)
        if not self.reentrant:
            with _ACTIVE_MUTEX:
                if key in _ACTIVE:
                    raise AlreadyHeldError(f"this thread already holds or awaits {self.path}")
                _ACTIVE.add(key)
        try:
            acquired = self.zk.run(
                within, timeout, functools.partial(self._acquire_async, blocking)
            )
        except BaseException:
            self._forget(key, None)
            raise
        if acquired is None:
            self._forget(key, None)
            return None
        held = Held(self.zk, acquired)
        with self._mutex:
            self._holds.setdefault(thread, []).append(held)
        acquired._on_release.append(functools.partial(self._forget, key, held))
        return held

    def _forget(self, key: tuple[int, str, int], held: Held | None) -> None:
        if not self.reentrant:
            with _ACTIVE_MUTEX:
                _ACTIVE.discard(key)
        if held is not None:
            with self._mutex:
                holds = self._holds.get(key[2], [])
                if held in holds:
                    holds.remove(held)
                if not holds:
                    self._holds.pop(key[2], None)

    def try_acquire(self) -> Held | None:
        """Take it only if that needs no waiting; else None."""
        return self.acquire(blocking=False)

    @property
    def held(self) -> Held | None:
        """The calling thread's latest hold; or, if this object has exactly one, that one."""
        with self._mutex:
            holds = self._holds.get(threading.get_ident())
            if holds:
                return holds[-1]
            everyone = [held for holds in self._holds.values() for held in holds]
        return everyone[0] if len(everyone) == 1 else None

    @property
    def is_acquired(self) -> bool:
        """Whether some thread holds it through this object."""
        with self._mutex:
            return any(self._holds.values())

    def release(self) -> None:
        """Release the calling thread's latest hold, or this object's only one (else
        `NotHeldError`)."""
        held = self.held
        if held is None:
            raise NotHeldError(f"{self.path} is not held through this object by this thread")
        held.release()

    def __enter__(self) -> Held:
        held = self.acquire()
        assert held is not None
        return held

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        held = self.held
        assert held is not None, "left a `with` block this thread does not hold"
        held.release()
        if kind is None:
            held.check()


class Lock(_Holds):
    """A fair, exclusive lock at `path`, with a fencing token (`recipes.Lock`, blocking).

    ``with Lock(zk, "/locks/db") as held:`` or `acquire(timeout=...)` / `release()`. Not
    reentrant per thread (`AlreadyHeldError`)."""

    async_type: type[recipes.Lock] = recipes.Lock

    def __init__(
        self,
        zk: Client,
        path: str,
        identifier: bytes | str = b"",
        *,
        cancel_on_suspend: bool = False,
    ) -> None:
        zk = _sync_client(zk, type(self).__name__)
        self.async_lock = self.async_type(
            zk.async_client, path, identifier, cancel_on_suspend=cancel_on_suspend
        )
        super().__init__(zk, self.async_lock.path, self.async_lock.acquire)

    @property
    def wakeups(self) -> int:
        """How often a waiter here was woken by a watch."""
        return self.async_lock.wakeups

    def contenders(self) -> list[bytes]:
        """The identifiers of every contender, holder first, in queue order."""
        return self.zk.run(self.async_lock.contenders)


class WriteLock(Lock):
    """The exclusive side of a `ReadWriteLock` (`recipes.WriteLock`, blocking)."""

    async_type = recipes.WriteLock


class ReadLock(Lock):
    """The shared side of a `ReadWriteLock` (`recipes.ReadLock`, blocking): readers hold
    together, and wait only for writers ahead of them."""

    async_type = recipes.ReadLock


class ReadWriteLock:
    """Shared readers and one writer, served fairly in arrival order (`recipes.ReadWriteLock`):
    ``with rw.read_lock() as held:`` / ``with rw.write_lock() as held:``. A thread that holds
    the read lock and asks for the write lock gets `AlreadyHeldError` (it would wait for
    itself)."""

    def __init__(
        self,
        zk: Client,
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


class _Candidacy(Lock):
    async_type = _election._Candidacy


class Election:
    """Leader election with a fencing token (`recipes.Election`, blocking).

    election = Election(zk, "/election/service", identifier=b"host-1")
    with election.campaign() as leadership:     # blocks until we lead
        serve_as_leader(leadership.token)       # leadership.lost / check() report a loss
    election.run(serve_as_leader)               # kazoo's way: lead, run, resign
    for leader in election.leader_changes(): ...
    """

    def __init__(
        self,
        zk: Client,
        path: str,
        identifier: bytes | str = b"",
        *,
        cancel_on_suspend: bool = False,
    ) -> None:
        self.zk = _sync_client(zk, "Election")
        self._candidacy = _Candidacy(zk, path, identifier, cancel_on_suspend=cancel_on_suspend)
        self.async_election = _election.Election(zk.async_client, path, identifier)
        self.path = self.async_election.path

    def __repr__(self) -> str:
        return f"<recipes.sync.Election {self.path}>"

    def campaign(self) -> _Candidacy:
        """Stand for election: ``with election.campaign() as leadership:`` (or
        ``.acquire(timeout=...)``, then ``leadership.resign()``)."""
        return self._candidacy

    def run(self, func: Callable[..., T], *args: Any) -> T:
        """Wait until we lead, run ``func(*args)`` in this thread, resign; its result."""
        with self._candidacy:
            return func(*args)

    @property
    def leadership(self) -> Held | None:
        """The calling thread's leadership, if it leads through this object."""
        return self._candidacy.held

    def resign(self) -> None:
        """Give up the calling thread's leadership."""
        self._candidacy.release()

    def leader(self) -> _election.Leader | None:
        """The current leader, or None if there are no candidates."""
        return self.zk.run(self.async_election.leader)

    def contenders(self) -> list[bytes]:
        """The identifiers of all candidates, leader first."""
        return self.zk.run(self.async_election.contenders)

    def leader_changes(self) -> Iterator[_election.Leader | None]:
        """The current leader (or None) at once, then each time it changes (blocking)."""
        changes = self.async_election.leader_changes()
        while True:
            yield self.zk.run(changes.__anext__)


class Semaphore(_Holds):
    """At most `max_leases` holders at a time (`recipes.Semaphore`, blocking). A thread may
    hold several leases."""

    reentrant = True

    def __init__(
        self,
        zk: Client,
        path: str,
        max_leases: int = 1,
        identifier: bytes | str = b"",
        *,
        cancel_on_suspend: bool = False,
    ) -> None:
        zk = _sync_client(zk, "Semaphore")
        self.async_semaphore = recipes.Semaphore(
            zk.async_client, path, max_leases, identifier, cancel_on_suspend=cancel_on_suspend
        )
        self.max_leases = max_leases
        super().__init__(zk, self.async_semaphore.path, self.async_semaphore.acquire)

    def lease_holders(self) -> list[bytes]:
        """The identifiers of the current lease holders, oldest lease first."""
        return self.zk.run(self.async_semaphore.lease_holders)


class Barrier:
    """A barrier held up while its znode exists (`recipes.Barrier`, blocking)."""

    def __init__(self, zk: Client, path: str) -> None:
        self.zk = _sync_client(zk, "Barrier")
        self.async_barrier = recipes.Barrier(self.zk.async_client, path)
        self.path = path

    def create(self) -> bool:
        """Put the barrier up; False if it was already up."""
        return self.zk.run(self.async_barrier.create)

    def remove(self) -> bool:
        """Take the barrier down, releasing every waiter; False if it was not up."""
        return self.zk.run(self.async_barrier.remove)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the barrier is down (TimeoutError after `timeout` seconds)."""
        self.zk.run(within, timeout, self.async_barrier.wait)


class DoubleBarrier:
    """`num_clients` participants enter together and leave together (`recipes.DoubleBarrier`,
    blocking): ``with DoubleBarrier(zk, path, 3):``."""

    def __init__(
        self, zk: Client, path: str, num_clients: int, identifier: bytes | str = b""
    ) -> None:
        self.zk = _sync_client(zk, "DoubleBarrier")
        self.async_barrier = recipes.DoubleBarrier(
            self.zk.async_client, path, num_clients, identifier
        )
        self.path = self.async_barrier.path

    def enter(self, timeout: float | None = None) -> None:
        """Join, and block until everyone has (TimeoutError after `timeout`, withdrawn)."""
        self.zk.run(within, timeout, self.async_barrier.enter)

    def leave(self, timeout: float | None = None) -> None:
        """Leave, and block until everyone has left."""
        self.zk.run(within, timeout, self.async_barrier.leave)

    def __enter__(self) -> DoubleBarrier:
        self.enter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.zk.run(self.async_barrier.__aexit__, kind, value, traceback)


class _Puts:
    """What both blocking queues share: adding items to the async queue they drive."""

    zk: Client
    async_queue: recipes.Queue | recipes.LockingQueue

    def put(self, data: bytes, priority: int = 100) -> str:
        """Add an item (`priority` 0..999, lower first); its znode path."""
        return self.zk.run(self.async_queue.put, data, priority)

    def put_all(self, items: Iterable[bytes], priority: int = 100) -> list[str]:
        """Add several items atomically, in order."""
        return self.zk.run(self.async_queue.put_all, list(items), priority)


class Queue(_Puts):
    """A distributed FIFO queue with priorities (`recipes.Queue`, blocking)."""

    def __init__(self, zk: Client, path: str) -> None:
        self.zk = _sync_client(zk, "Queue")
        self.async_queue: recipes.Queue = recipes.Queue(self.zk.async_client, path)
        self.path = self.async_queue.path

    def __repr__(self) -> str:
        return f"<recipes.sync.Queue {self.path}>"

    def get(self, timeout: float | None = None) -> bytes:
        """Take the first item, blocking for one (TimeoutError after `timeout` seconds)."""
        item: bytes = self.zk.run(within, timeout, self.async_queue.get)
        return item

    take = get

    def get_nowait(self) -> bytes | None:
        """Take the first item, or None if the queue is empty."""
        return self.zk.run(self.async_queue.get_nowait)

    def peek(self) -> bytes | None:
        """The first item, without taking it (None if empty)."""
        return self.zk.run(self.async_queue.peek)

    def length(self) -> int:
        """The number of items now in the queue."""
        return self.zk.run(self.async_queue.length)

    __len__ = length

    def __iter__(self) -> Iterator[bytes]:
        """Take items for ever, blocking for each."""
        while True:
            yield self.get()


class TakenItem:
    """An item taken from a blocking `LockingQueue` (`recipes.TakenItem`): `data`, `name`;
    `consume()` or `release()`; ``with`` consumes it if the block ends cleanly, else releases."""

    def __init__(self, zk: Client, item: recipes.TakenItem) -> None:
        self.zk = zk
        self.async_item = item
        self.data = item.data
        self.name = item.name

    def __repr__(self) -> str:
        return f"<recipes.sync.TakenItem {self.async_item.entry_path}>"

    @property
    def done(self) -> bool:
        """Whether it was consumed or released."""
        return self.async_item.done

    def consume(self) -> None:
        """Remove the item for good (`NotHeldError` if the hold on it was lost)."""
        self.zk.run(self.async_item.consume)

    def release(self) -> None:
        """Put the item back in the queue."""
        self.zk.run(self.async_item.release)

    def __enter__(self) -> TakenItem:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.consume()
        else:
            self.release()


class LockingQueue(_Puts):
    """A queue whose items are taken, then consumed or released (`recipes.LockingQueue`,
    blocking)."""

    def __init__(self, zk: Client, path: str) -> None:
        self.zk = _sync_client(zk, "LockingQueue")
        self.async_queue: recipes.LockingQueue = recipes.LockingQueue(self.zk.async_client, path)
        self.path = self.async_queue.path

    def __repr__(self) -> str:
        return f"<recipes.sync.LockingQueue {self.path}>"

    def take(self, timeout: float | None = None) -> TakenItem:
        """Take the first free item, blocking for one (TimeoutError after `timeout` s)."""
        item: recipes.TakenItem = self.zk.run(within, timeout, self.async_queue.take)
        return TakenItem(self.zk, item)

    get = take

    def take_nowait(self) -> TakenItem | None:
        """Take the first free item, or None if there is none now."""
        item = self.zk.run(self.async_queue.take_nowait)
        return None if item is None else TakenItem(self.zk, item)

    def length(self) -> int:
        """The number of items (taken or not)."""
        return self.zk.run(self.async_queue.length)


class NonBlockingLease:
    """A lease held until a wall-clock deadline (`recipes.NonBlockingLease`, blocking)."""

    def __init__(
        self, zk: Client, path: str, duration: float, identifier: str, *, slots: int = 1
    ) -> None:
        self.zk = _sync_client(zk, "NonBlockingLease")
        self.async_lease = recipes.NonBlockingLease(
            self.zk.async_client, path, duration, identifier, slots=slots
        )
        self.path = self.async_lease.path

    def __repr__(self) -> str:
        return f"<recipes.sync.{type(self).__name__} {self.path}>"

    @property
    def expires_at(self) -> float | None:
        """When the lease obtained last ends (seconds since the epoch, the server's clock)."""
        return self.async_lease.expires_at

    def obtain(self, now: float) -> bool:
        """Hold the lease from `now` (wall-clock seconds) for its duration: True if we do."""
        return self.zk.run(self.async_lease.obtain, now)


class MultiNonBlockingLease(NonBlockingLease):
    """Up to `count` holders at once (`recipes.MultiNonBlockingLease`, blocking)."""

    def __init__(self, zk: Client, path: str, count: int, duration: float, identifier: str) -> None:
        super().__init__(zk, path, duration, identifier, slots=count)


class Counter:
    """A shared integer counter (`recipes.Counter`, blocking); ``counter += 1`` works too."""

    def __init__(self, zk: Client, path: str, default: int = 0) -> None:
        self.zk = _sync_client(zk, "Counter")
        self.async_counter = recipes.Counter(self.zk.async_client, path, default)
        self.path = self.async_counter.path

    def __repr__(self) -> str:
        return f"<recipes.sync.Counter {self.path}>"

    @property
    def pre_value(self) -> int | None:
        """The value before this object's last change."""
        return self.async_counter.pre_value

    @property
    def post_value(self) -> int | None:
        """The value after this object's last change."""
        return self.async_counter.post_value

    def get(self) -> int:
        """The current value."""
        return self.zk.run(self.async_counter.get)

    @property
    def value(self) -> int:
        """The current value (read from the server)."""
        return self.get()

    def add(self, delta: int = 1) -> int:
        """Add `delta` (may be negative); the new value."""
        return self.zk.run(self.async_counter.add, delta)

    def increment(self, delta: int = 1) -> int:
        """`add(delta)`."""
        return self.add(delta)

    def decrement(self, delta: int = 1) -> int:
        """`add(-delta)`."""
        return self.add(-delta)

    def set(self, value: int) -> None:
        """Set the value regardless of the current one."""
        self.zk.run(self.async_counter.set, value)

    def compare_and_set(self, expected: int, value: int) -> bool:
        """Set `value` only if the counter holds `expected`; True if it did."""
        return self.zk.run(self.async_counter.compare_and_set, expected, value)

    def changes(self) -> Iterator[int]:
        """The value at once, then after every change (blocking): `recipes.Counter.changes`."""
        changes = self.async_counter.changes()
        while True:
            yield self.zk.run(changes.__anext__)

    def __iadd__(self, delta: int) -> Counter:
        self.add(delta)
        return self

    def __isub__(self, delta: int) -> Counter:
        self.add(-delta)
        return self


class _Exit:
    """How a recipe entered on the loop (`_inside`) left: `done` once out, with its `error`."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Exception | None = None


async def _inside(
    manager: AbstractAsyncContextManager[Any],
    leaving: trio.Event,
    out: _Exit,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """``async with manager:`` in this task until `leaving` is set. An error on the way in
    goes to the thread that started this; one on the way out (the recipe's background task
    failed) to `out`, for the thread that leaves."""
    entered = False
    try:
        async with manager:
            entered = True
            task_status.started()
            await leaving.wait()
    except Exception as error:
        if not entered:
            raise
        out.error = error
    finally:
        out.done.set()


class _InLoop(Generic[T]):
    """An async recipe entered by a task of the client's loop, from `enter()` to `exit()`: an
    async context manager that starts background tasks must be left by the task that entered
    it, and each blocking call runs in a task of its own."""

    def __init__(self, zk: Client, manager: AbstractAsyncContextManager[T]) -> None:
        self.zk = zk
        self._manager = manager
        self._leaving: trio.Event | None = None
        self._out = _Exit()

    def enter(self) -> None:
        """Enter the recipe on the loop; raise what entering it raised."""
        if self._leaving is not None:
            raise RuntimeError("already entered")
        self._leaving = self.zk.run_sync(trio.Event)
        self._out = _Exit()
        self.zk.start_task(_inside, self._manager, self._leaving, self._out)

    def exit(self) -> None:
        """Leave the recipe and wait until it is left; raise what leaving it raised."""
        leaving, self._leaving = self._leaving, None
        if leaving is None:
            return
        try:
            self.zk.run_sync(leaving.set)
        except ClientClosedError:
            pass  # the loop is gone, and the recipe's task with it
        self._out.done.wait()
        if self._out.error is not None:
            raise self._out.error


class Party:
    """Group membership (`recipes.Party`, blocking).

        with Party(zk, "/parties/workers", b"worker-1") as party:
            print(party.members())

    A member while the block lasts (joining again under a new session); or `join()` and
    `leave()` by hand.
    """

    def __init__(self, zk: Client, path: str, identifier: bytes | str = b"") -> None:
        self.zk = _sync_client(zk, "Party")
        self.async_party = recipes.Party(self.zk.async_client, path, identifier)
        self.path = self.async_party.path
        self.identifier = self.async_party.identifier
        self._inside = _InLoop(self.zk, self.async_party)

    def __repr__(self) -> str:
        return f"<recipes.sync.Party {self.path}>"

    def join(self) -> None:
        """Join the party (no-op if already in it)."""
        self.zk.run(self.async_party.join)

    def leave(self) -> None:
        """Leave the party (no-op if not in it)."""
        self.zk.run(self.async_party.leave)

    def members(self) -> list[bytes]:
        """The identifiers of the members present."""
        return self.zk.run(self.async_party.members)

    def size(self) -> int:
        """How many members are present."""
        return self.zk.run(self.async_party.size)

    __len__ = size

    def changes(self) -> Iterator[list[bytes]]:
        """The member list at once, then after every change (blocking)."""
        changes = self.async_party.changes()
        while True:
            yield self.zk.run(changes.__anext__)

    def __enter__(self) -> Party:
        self._inside.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._inside.exit()


class PersistentNode:
    """Keeps `path` (with `data`) in existence while the ``with`` block runs
    (`recipes.PersistentNode`, blocking): created again when it is deleted, or under a new
    session; deleted when the block ends."""

    def __init__(self, zk: Client, path: str, data: bytes = b"", *, ephemeral: bool = True) -> None:
        self.zk = _sync_client(zk, "PersistentNode")
        self.async_node = recipes.PersistentNode(
            self.zk.async_client, path, data, ephemeral=ephemeral
        )
        self.path = path
        self._inside = _InLoop(self.zk, self.async_node)

    def __repr__(self) -> str:
        return f"<recipes.sync.PersistentNode {self.path}>"

    @property
    def created(self) -> int:
        """How many times the node was created."""
        return self.async_node.created

    @property
    def active(self) -> bool:
        """Whether the node is being kept."""
        return self.async_node.active

    @property
    def data(self) -> bytes:
        """The data kept."""
        return self.async_node.data

    def set_data(self, data: bytes) -> None:
        """Keep `data` from now on, and write it to the node now."""
        self.zk.run(self.async_node.set_data, data)

    def __enter__(self) -> PersistentNode:
        self._inside.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._inside.exit()


class Partition:
    """The items this member holds now (`recipes.Partition`, seen from a thread), until
    `changed`: then take the next partition from the partitioner."""

    def __init__(self, zk: Client, partition: recipes.Partition) -> None:
        self.zk = zk
        self.async_partition = partition
        self.items = partition.items

    def __repr__(self) -> str:
        return f"<recipes.sync.Partition {self.items}>"

    @property
    def changed(self) -> bool:
        """Whether this split is over (the next one is coming)."""
        return self.async_partition.changed

    def wait_changed(self, timeout: float | None = None) -> bool:
        """Block until this split is over (True), or `timeout` seconds pass (False)."""
        try:
            self.zk.run(within, timeout, self.async_partition.wait_changed)
        except TimeoutError:
            return False
        return True


class SetPartitioner:
    """Split `items` among the members of `path` (`recipes.SetPartitioner`, blocking).

    with SetPartitioner(zk, "/partitions/jobs", items) as partitioner:
        for partition in partitioner:     # the first split at once, then after each change
            work_on(partition.items)      # check partition.changed between steps
    """

    def __init__(
        self, zk: Client, path: str, items: Iterable[str], identifier: bytes | str = b""
    ) -> None:
        self.zk = _sync_client(zk, "SetPartitioner")
        self.async_partitioner = recipes.SetPartitioner(
            self.zk.async_client, path, items, identifier
        )
        self.path = self.async_partitioner.path
        self.items = self.async_partitioner.items
        self._inside = _InLoop(self.zk, self.async_partitioner)

    def __repr__(self) -> str:
        return f"<recipes.sync.SetPartitioner {self.path}>"

    def __iter__(self) -> SetPartitioner:
        return self

    def __next__(self) -> Partition:
        """The next partition: at once the first time, then once the membership changed."""
        return Partition(self.zk, self.zk.run(self.async_partitioner.__anext__))

    def __enter__(self) -> SetPartitioner:
        self._inside.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._inside.exit()


__all__ = [
    "AlreadyHeldError",
    "Barrier",
    "Counter",
    "DoubleBarrier",
    "Election",
    "Held",
    "Lock",
    "LockLostError",
    "LockingQueue",
    "MultiNonBlockingLease",
    "NonBlockingLease",
    "NotHeldError",
    "Partition",
    "Party",
    "PersistentNode",
    "Queue",
    "ReadLock",
    "ReadWriteLock",
    "Semaphore",
    "SetPartitioner",
    "TakenItem",
    "WriteLock",
]
