"""Session liveness: who has been heard from, and who has expired. Time is an input.

Deadlines are rounded up to whole ticks and kept in buckets, as ZooKeeper does, so that a tick
looks at one bucket instead of every session.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_TIMEOUT_TICKS = 2
MAX_TIMEOUT_TICKS = 20


@dataclass(frozen=True, slots=True)
class TimeoutBounds:
    """The session timeouts a member grants: between 2 and 20 ticks, as ZooKeeper does."""

    min_ms: int
    max_ms: int

    @classmethod
    def from_tick(cls, tick_ms: int) -> TimeoutBounds:
        """The bounds for an ensemble whose tick is `tick_ms`."""
        return cls(MIN_TIMEOUT_TICKS * tick_ms, MAX_TIMEOUT_TICKS * tick_ms)

    def negotiate(self, requested_ms: int) -> int:
        """The timeout granted for `requested_ms`: the request clamped into the bounds."""
        return max(self.min_ms, min(self.max_ms, requested_ms))


class SessionTracker:
    """The leader's record of when each session must next be heard from (times in ms, given)."""

    def __init__(self, tick_ms: int) -> None:
        if tick_ms <= 0:
            raise ValueError("tick must be positive")
        self.tick_ms = tick_ms
        self._timeouts: dict[int, int] = {}
        self._deadline: dict[int, int] = {}
        self._buckets: dict[int, set[int]] = {}
        self._next_bucket: int | None = None

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._timeouts

    def __len__(self) -> int:
        return len(self._timeouts)

    def _bucket_for(self, deadline_ms: int) -> int:
        return (deadline_ms // self.tick_ms + 1) * self.tick_ms

    def add(self, session_id: int, timeout_ms: int, now_ms: int) -> None:
        """Start tracking a session, as heard from at `now_ms`."""
        self._timeouts[session_id] = timeout_ms
        self.touch(session_id, now_ms)

    def touch(self, session_id: int, now_ms: int) -> bool:
        """Note that the session was heard from. False if it is unknown or already expired."""
        timeout = self._timeouts.get(session_id)
        if timeout is None:
            return False
        bucket = self._bucket_for(now_ms + timeout)
        old = self._deadline.get(session_id)
        if old == bucket:
            return True
        if old is not None:
            self._buckets[old].discard(session_id)
        self._deadline[session_id] = bucket
        self._buckets.setdefault(bucket, set()).add(session_id)
        if self._next_bucket is None or bucket < self._next_bucket:
            self._next_bucket = bucket
        return True

    def remove(self, session_id: int) -> None:
        """Stop tracking a session (closed, or expired and reported)."""
        self._timeouts.pop(session_id, None)
        bucket = self._deadline.pop(session_id, None)
        if bucket is not None:
            self._buckets[bucket].discard(session_id)

    def expired(self, now_ms: int) -> list[int]:
        """Sessions whose deadline has passed. They are forgotten here: report each once."""
        found: list[int] = []
        while self._next_bucket is not None and self._next_bucket <= now_ms:
            for session_id in sorted(self._buckets.pop(self._next_bucket, set())):
                found.append(session_id)
                self._timeouts.pop(session_id, None)
                self._deadline.pop(session_id, None)
            self._next_bucket = min(self._buckets) if self._buckets else None
        return found

    def next_deadline(self) -> int | None:
        """The earliest time a session can expire, None when none is tracked: when to call
        `expired` next."""
        return self._next_bucket
