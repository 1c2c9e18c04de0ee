"""The watch registry: which watcher hears about which change.

Watchers are opaque hashable keys (the server uses connection ids). `trigger` takes the changes of
one applied transaction and returns each interested watcher's events, once per watcher per change;
one-shot registrations are removed as they fire. `ChangeLog` keeps recent changes so that a client
that reconnects with the last zxid it saw is told about exactly what it missed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from typing import Final, Protocol

from zkpy.core import paths
from zkpy.core.types import EventType, WatchedEvent, WatchMode

# A change is (kind, path) with the kind a plain int, the EventType's number: the change log
# keeps the last hundred thousand of them, and the garbage collector stops tracking tuples of
# ints and strings, but not tuples holding enum members (which would make every full collection
# walk them all). Events handed to watchers carry the EventType.
Change = tuple[int, str]
CREATED: Final = int(EventType.CREATED)
DELETED: Final = int(EventType.DELETED)
CHANGED: Final = int(EventType.CHANGED)
CHILD: Final = int(EventType.CHILD)

_DATA_EVENTS = frozenset({EventType.CREATED, EventType.CHANGED, EventType.DELETED})
_CHILD_EVENTS = frozenset({EventType.CHILD, EventType.DELETED})
_ONE_SHOT = (WatchMode.DATA, WatchMode.EXIST, WatchMode.CHILD)
_DIRECT = (WatchMode.DATA, WatchMode.EXIST, WatchMode.CHILD, WatchMode.PERSISTENT)


def _fires(mode: WatchMode, event: int) -> bool:
    if mode is WatchMode.CHILD:
        return event in _CHILD_EVENTS
    if mode is WatchMode.PERSISTENT:
        return True
    return event in _DATA_EVENTS


WATCH_BYTES = 400
"""About what one registration costs the registry besides its path: its entries in both indexes
(sets, tuples, dict slots), measured with tracemalloc on CPython 3.11."""


def watch_weight(path: str) -> int:
    """About how many bytes a registration on `path` holds (what `WatchRegistry.weight` sums)."""
    return WATCH_BYTES + len(path)


class WatchRegistry:
    """Who watches what: registrations by mode and path, and by watcher for its cleanup.

    A watcher is any hashable (a member uses one per client connection). Registrations are
    kept once each, and `weight` estimates their memory so that a member can cap it."""

    def __init__(self) -> None:
        self._by_mode: dict[WatchMode, dict[str, set[Hashable]]] = {mode: {} for mode in WatchMode}
        self._by_watcher: dict[Hashable, set[tuple[WatchMode, str]]] = {}
        self.weight = 0  # about the bytes all registrations hold (`watch_weight` of each)

    def count(self, watcher: Hashable) -> int:
        """How many registrations `watcher` holds."""
        return len(self._by_watcher.get(watcher, ()))

    def __len__(self) -> int:
        return sum(len(regs) for regs in self._by_watcher.values())

    def add(self, watcher: Hashable, path: str, mode: WatchMode) -> None:
        """Register `watcher` on `path` in `mode` (no-op if it already is)."""
        owned = self._by_watcher.setdefault(watcher, set())
        registration = (mode, path)
        if registration in owned:
            return
        owned.add(registration)
        self._by_mode[mode].setdefault(path, set()).add(watcher)
        self.weight += watch_weight(path)

    def has(self, watcher: Hashable, path: str, mode: WatchMode) -> bool:
        """Whether `watcher` is registered on `path` in `mode`."""
        return (mode, path) in self._by_watcher.get(watcher, ())

    def remove(self, watcher: Hashable, path: str, mode: WatchMode | None = None) -> bool:
        """Remove one kind (or, with None, every kind) of watch; True if anything was removed."""
        removed = False
        for each in WatchMode if mode is None else (mode,):
            if self._discard(watcher, path, each):
                removed = True
        return removed

    def _discard(self, watcher: Hashable, path: str, mode: WatchMode) -> bool:
        table = self._by_mode[mode]
        holders = table.get(path)
        if holders is None or watcher not in holders:
            return False
        holders.discard(watcher)
        if not holders:
            del table[path]
        owned = self._by_watcher[watcher]
        owned.discard((mode, path))
        if not owned:
            del self._by_watcher[watcher]
        self.weight -= watch_weight(path)
        return True

    def remove_watcher(self, watcher: Hashable) -> None:
        """Drop every registration of `watcher` (its connection closed)."""
        for mode, path in list(self._by_watcher.get(watcher, ())):
            self._discard(watcher, path, mode)

    def registrations(self, watcher: Hashable) -> set[tuple[WatchMode, str]]:
        """A copy of `watcher`'s registrations, as (mode, path), to re-register elsewhere."""
        return set(self._by_watcher.get(watcher, ()))

    def trigger(self, changes: Sequence[Change], zxid: int) -> list[tuple[Hashable, WatchedEvent]]:
        """The events that one transaction's changes cause, in change order."""
        out: list[tuple[Hashable, WatchedEvent]] = []
        if not self._by_watcher:
            return out
        recursive = self._by_mode[WatchMode.PERSISTENT_RECURSIVE]
        for kind, path in changes:
            notified: set[Hashable] = set()
            for mode in _DIRECT:
                table = self._by_mode[mode]
                if not table or not _fires(mode, kind):
                    continue
                holders = table.get(path)
                if holders:
                    notified.update(holders)
                    if mode in _ONE_SHOT:
                        for watcher in list(holders):
                            self._discard(watcher, path, mode)
            if recursive and kind != CHILD:
                for root in (*paths.ancestors(path), path, "/"):
                    holders = recursive.get(root)
                    if holders:
                        notified.update(holders)
            if notified:
                event = WatchedEvent(EventType(kind), path, zxid)
                out.extend((watcher, event) for watcher in notified)
        return out


class TreeView(Protocol):
    """What resuming watches needs to know of the tree when the change log does not reach back."""

    def stat_zxids(self, path: str) -> tuple[int, int] | None:
        """(mzxid, pzxid) of the node, or None if it does not exist."""

    def descendants(self, path: str) -> Iterable[str]:
        """Every node below `path` (not `path` itself)."""


class ChangeLog:
    """The changes of the most recent transactions, for replaying watches after a reconnect.

    `start_zxid` is the zxid of the state the log starts from (a member's tree when it starts,
    or a snapshot it installs): the log knows nothing of changes before it.
    """

    def __init__(self, *, start_zxid: int, capacity: int = 100_000) -> None:
        self.capacity = capacity
        # Entries are plain tuples of ints and strings, which the garbage collector stops
        # tracking: a hundred thousand tracked entries would make every full collection walk
        # them (tens of milliseconds of pause, several times a second under load).
        self._entries: deque[tuple[int, tuple[tuple[int, str], ...]]] = deque()
        self._count = 0
        self.oldest_zxid_known = start_zxid  # every change after this zxid is still in the log

    def record(self, zxid: int, changes: Sequence[Change]) -> None:
        """Keep one transaction's changes (their kinds plain ints, see `Change`)."""
        if not changes:
            return
        self._entries.append((zxid, tuple(changes)))
        self._count += len(changes)
        while self._count > self.capacity and self._entries:
            dropped_zxid, dropped = self._entries.popleft()
            self._count -= len(dropped)
            self.oldest_zxid_known = dropped_zxid

    def covers(self, last_zxid: int) -> bool:
        """Whether the log holds every change after `last_zxid`, so that `since` is complete."""
        return last_zxid >= self.oldest_zxid_known

    def since(self, last_zxid: int) -> Iterable[tuple[int, Sequence[Change]]]:
        """The transactions after `last_zxid`, each as (zxid, changes), oldest first."""
        for zxid, changes in self._entries:
            if zxid > last_zxid:
                yield zxid, changes


def resume_watches(
    registry: WatchRegistry,
    watcher: Hashable,
    registrations: Iterable[tuple[WatchMode, str]],
    last_zxid: int,
    log: ChangeLog,
    tree: TreeView,
    current_zxid: int,
) -> list[WatchedEvent]:
    """Register a reconnecting client's watches and return what it missed since `last_zxid`.

    When the change log reaches back far enough, the missed events are replayed exactly, in zxid
    order (one-shot watches fire once and are then gone). Otherwise each watch is compared with
    the node's current stat, as ZooKeeper does, and persistent watches get one CHANGED/CHILD event
    per path that changed, which tells the client to re-read.
    """
    for mode, path in registrations:
        registry.add(watcher, path, mode)
    if last_zxid >= current_zxid:
        return []
    if log.covers(last_zxid):
        replay = WatchRegistry()
        for mode, path in registrations:
            replay.add(watcher, path, mode)
        missed: list[WatchedEvent] = []
        for zxid, changes in log.since(last_zxid):
            missed.extend(event for _w, event in replay.trigger(changes, zxid))
        for mode, path in registrations:
            if mode in _ONE_SHOT and not replay.has(watcher, path, mode):
                registry.remove(watcher, path, mode)
        return missed
    return _compare_stats(registry, watcher, registrations, last_zxid, tree, current_zxid)


def _compare_stats(
    registry: WatchRegistry,
    watcher: Hashable,
    registrations: Iterable[tuple[WatchMode, str]],
    last_zxid: int,
    tree: TreeView,
    current_zxid: int,
) -> list[WatchedEvent]:
    """What changed since `last_zxid`, judged from today's stats (ZooKeeper's way), when the
    change log does not reach back that far. Each event names a path to re-read."""
    missed: list[WatchedEvent] = []
    for mode, path in sorted(registrations, key=lambda reg: (reg[1], reg[0])):
        for event in _stat_events(mode, path, last_zxid, tree):
            missed.append(WatchedEvent(event[0], event[1], current_zxid))
        if mode in _ONE_SHOT and missed and missed[-1].path == path:
            registry.remove(watcher, path, mode)
    return missed


def _stat_events(
    mode: WatchMode, path: str, last_zxid: int, tree: TreeView
) -> list[tuple[EventType, str]]:
    zxids = tree.stat_zxids(path)
    if zxids is None:
        if mode is WatchMode.EXIST:
            return []
        if mode in (WatchMode.DATA, WatchMode.CHILD):
            return [(EventType.DELETED, path)]
        # persistent: only if the parent's children changed since, can the node have gone
        parent = tree.stat_zxids(paths.parent(path)) if path != "/" else None
        return [(EventType.DELETED, path)] if parent is None or parent[1] > last_zxid else []
    mzxid, pzxid = zxids
    if mode is WatchMode.EXIST:
        return [(EventType.CREATED, path)]
    events: list[tuple[EventType, str]] = []
    if mzxid > last_zxid and mode is not WatchMode.CHILD:
        events.append((EventType.CHANGED, path))
    if pzxid > last_zxid and mode in (WatchMode.CHILD, WatchMode.PERSISTENT):
        events.append((EventType.CHILD, path))
    if mode is WatchMode.PERSISTENT_RECURSIVE:
        for below in tree.descendants(path):
            below_zxids = tree.stat_zxids(below)
            if below_zxids is not None and max(below_zxids) > last_zxid:
                events.append((EventType.CHANGED, below))
    return events[:1] if mode in _ONE_SHOT else events
