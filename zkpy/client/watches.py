"""Client-side watch bookkeeping (sans-I/O): who, on this client, hears about which event.

No trio here: the client's connection state machine (`zkpy.client.connection`) owns the table.

The server sends one event per connection and change; here that event is handed to every local
registration that wants it. One-shot registrations are dropped as they fire. The table also
answers what to re-register after a reconnect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from zkpy.core import paths
from zkpy.core.errors import ZkError
from zkpy.core.requests import SetWatchesRequest
from zkpy.core.types import EventType, WatchedEvent, WatchMode

WatchCallback = Callable[[WatchedEvent], Any]

_DATA = frozenset({EventType.CREATED, EventType.CHANGED, EventType.DELETED})
_CHILD = frozenset({EventType.CHILD, EventType.DELETED})


class WatchSink(Protocol):
    """What a persistent watch registration is to the table: a path, a mode and a queue that
    takes events (`zkpy.client.streams.WatchStream` is the trio one)."""

    path: str
    mode: WatchMode

    def deliver(self, item: WatchedEvent | ZkError) -> None:
        """Queue an event, or the error that ends the registration; must not block or raise."""

    def close(self) -> None:
        """No more items will come."""


class WatchTable:
    """Every watch registered on this client, one-shot and persistent, by mode and path."""

    def __init__(self) -> None:
        self.one_shot: dict[WatchMode, dict[str, list[WatchCallback]]] = {
            WatchMode.DATA: {},
            WatchMode.EXIST: {},
            WatchMode.CHILD: {},
        }
        self.streams: dict[WatchMode, dict[str, set[WatchSink]]] = {
            WatchMode.PERSISTENT: {},
            WatchMode.PERSISTENT_RECURSIVE: {},
        }

    def add_one_shot(self, mode: WatchMode, path: str, callback: WatchCallback) -> None:
        """Register a one-shot watch (a read's ``watch=``), after the read succeeded."""
        self.one_shot[mode].setdefault(path, []).append(callback)

    def remove_one_shot(self, path: str, callback: WatchCallback) -> tuple[bool, list[WatchMode]]:
        """Forget `callback` on `path`: whether it was there, and the modes that no local
        watch on `path` uses any more."""
        found = False
        emptied: list[WatchMode] = []
        for mode, table in self.one_shot.items():
            callbacks = table.get(path)
            if callbacks is None or callback not in callbacks:
                continue
            found = True
            callbacks.remove(callback)
            if not callbacks:
                del table[path]
                emptied.append(mode)
        return found, emptied

    def add_stream(self, stream: WatchSink) -> bool:
        """Add a persistent stream; True if it is the first for its path and mode."""
        holders = self.streams[stream.mode].setdefault(stream.path, set())
        holders.add(stream)
        return len(holders) == 1

    def remove_stream(self, stream: WatchSink) -> bool:
        """Remove a stream; True if it was the last one for its path and mode."""
        table = self.streams[stream.mode]
        holders = table.get(stream.path, set())
        holders.discard(stream)
        if holders:
            return False
        table.pop(stream.path, None)
        return True

    def dispatch(self, event: WatchedEvent) -> list[WatchCallback]:
        """Deliver an event to streams at once; return the one-shot callbacks to run."""
        kind, path = event.type, event.path
        callbacks: list[WatchCallback] = []
        if kind in _DATA:
            callbacks += self.one_shot[WatchMode.DATA].pop(path, [])
            callbacks += self.one_shot[WatchMode.EXIST].pop(path, [])
        if kind in _CHILD:
            callbacks += self.one_shot[WatchMode.CHILD].pop(path, [])
        for stream in self.streams[WatchMode.PERSISTENT].get(path, ()):
            stream.deliver(event)
        recursive = self.streams[WatchMode.PERSISTENT_RECURSIVE]
        if recursive and kind is not EventType.CHILD:
            for root in {*paths.ancestors(path), path, "/"}:
                for stream in recursive.get(root, ()):
                    stream.deliver(event)
        return callbacks

    def resume_request(self, last_zxid: int) -> SetWatchesRequest | None:
        """What to send after a reconnect so the server restores every watch."""

        def keys(table: dict[str, Any]) -> tuple[str, ...]:
            return tuple(path for path, holders in table.items() if holders)

        request = SetWatchesRequest(
            last_zxid,
            keys(self.one_shot[WatchMode.DATA]),
            keys(self.one_shot[WatchMode.EXIST]),
            keys(self.one_shot[WatchMode.CHILD]),
            keys(self.streams[WatchMode.PERSISTENT]),
            keys(self.streams[WatchMode.PERSISTENT_RECURSIVE]),
        )
        if not any(
            (request.data, request.exist, request.child, request.persistent, request.recursive)
        ):
            return None
        return request

    def fail_all(self, error: ZkError) -> list[WatchCallback]:
        """The session is gone: end every stream with `error`; return one-shots to fail."""
        for stream_table in self.streams.values():
            for holders in stream_table.values():
                for stream in holders:
                    stream.deliver(error)
                    stream.close()
            stream_table.clear()
        orphans: list[WatchCallback] = []
        for callback_table in self.one_shot.values():
            for callbacks in callback_table.values():
                orphans.extend(callbacks)
            callback_table.clear()
        return orphans
