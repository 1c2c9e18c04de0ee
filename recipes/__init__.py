"""Coordination recipes on the public zkpy client: locks, election, semaphores, barriers, queues,
counters, group membership, caches and watches. Trio-native, and with fencing tokens.

    from recipes import Lock
    async with Lock(zk, "/locks/db") as held:
        await storage.write(data, token=held.token)   # see recipes.fencing

Every exclusive recipe hands out a fencing token (the czxid of its znode: a later holder always
has a larger one), and runs its body in a cancel scope that is cancelled when the session is
lost. See docs/recipes.md.
"""

from recipes import fencing
from recipes.barrier import Barrier, DoubleBarrier
from recipes.cache import Cache, CacheEvent, Snapshot
from recipes.counter import Counter
from recipes.election import Campaign, Election, Leader, LeaderChanges
from recipes.errors import (
    AlreadyHeldError,
    BarrierMismatchError,
    LockLostError,
    NotHeldError,
    RecipeError,
)
from recipes.fencing import FencingGuard, StaleTokenError
from recipes.lease import MultiNonBlockingLease, NonBlockingLease
from recipes.lock import Held, Lock, ReadLock, ReadWriteLock, WriteLock
from recipes.locking_queue import LockingQueue, TakenItem
from recipes.partitioner import Partition, SetPartitioner
from recipes.party import Party
from recipes.persistent import PersistentNode
from recipes.queue import Queue
from recipes.semaphore import Semaphore
from recipes.watchers import ChildrenWatch, DataWatch, children_watch, data_watch

Lease = Held
Leadership = Held

__all__ = [
    "AlreadyHeldError",
    "Barrier",
    "BarrierMismatchError",
    "Cache",
    "CacheEvent",
    "Campaign",
    "ChildrenWatch",
    "Counter",
    "DataWatch",
    "DoubleBarrier",
    "Election",
    "FencingGuard",
    "Held",
    "Leader",
    "LeaderChanges",
    "Leadership",
    "Lease",
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
    "RecipeError",
    "Semaphore",
    "SetPartitioner",
    "Snapshot",
    "StaleTokenError",
    "TakenItem",
    "WriteLock",
    "children_watch",
    "data_watch",
    "fencing",
]
