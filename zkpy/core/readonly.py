"""Read-only mode: a member cut off from its quorum answers the clients that ask for read-only
service, from its tree as it last applied it, until it serves again. Time is an input.

A client asks in its handshake (ZooKeeper's `canBeReadOnly`, kazoo's `read_only=True`,
zkCli.sh's `-r`). A member enters the mode once it has been without a quorum for `after_ms`,
and leaves it the moment it serves again, when its read-only clients are cut off so that they
find a member that takes writes, as ZooKeeper's read-only server does.

Such a client gets a *local* session: this member's alone, never ordered through the log, so
it holds no ephemeral nodes and ends with the mode (a client that brings it to a serving
member hears that it expired, and starts a new one). A session of the ensemble cannot resume
here: whether it still lives is the quorum's to say, and the member cannot ask it. Writes and
syncs are refused with NOT_READ_ONLY (`zkpy.core.serving`).
"""

from __future__ import annotations

from dataclasses import dataclass

from zkpy.core.sessions import SessionTracker


@dataclass(frozen=True, slots=True)
class LocalSession:
    """A read-only client's session on this member: what its resumption must show."""

    password: bytes
    timeout_ms: int


class ReadOnlyMode:
    """Whether a member serves read-only clients now, and their local sessions."""

    def __init__(
        self, *, enabled: bool, after_ms: int, tick_ms: int, serving: bool, now_ms: int
    ) -> None:
        """A member that serves read-only clients (if `enabled`) once it has been without a
        quorum for `after_ms`; `serving` is whether it serves at `now_ms`. Local sessions
        expire in buckets of `tick_ms`, as the ensemble's sessions do."""
        self.enabled = enabled
        self.after_ms = after_ms
        self.active = False
        self._cut_off_at: int | None = None if serving else now_ms
        self._sessions: dict[int, LocalSession] = {}
        self._tracker = SessionTracker(tick_ms)

    def __len__(self) -> int:
        return len(self._sessions)

    def serving_changed(self, serving: bool, now_ms: int) -> list[int]:
        """The member joined a quorum (`serving`) or lost it. Joining ends the mode and every
        local session: the ids returned, whose connections must go."""
        if not serving:
            if self._cut_off_at is None:
                self._cut_off_at = now_ms
            return []
        self._cut_off_at = None
        self.active = False
        ended = sorted(self._sessions)
        for session_id in ended:
            self.close(session_id)
        return ended

    def tick(self, now_ms: int) -> list[int]:
        """Enter the mode once the member has been without a quorum for long enough; the
        local sessions whose clients went unheard past their timeout (forgotten here: their
        connections must go)."""
        if not self.active:
            cut_off_at = self._cut_off_at
            if self.enabled and cut_off_at is not None and now_ms - cut_off_at >= self.after_ms:
                self.active = True
            return []
        expired = self._tracker.expired(now_ms)
        for session_id in expired:
            del self._sessions[session_id]
        return expired

    def open(self, session_id: int, password: bytes, timeout_ms: int, now_ms: int) -> None:
        """Start a local session (its id, password and timeout chosen by the caller)."""
        if not self.active:
            raise ValueError("local sessions open only in read-only mode")
        self._sessions[session_id] = LocalSession(password, timeout_ms)
        self._tracker.add(session_id, timeout_ms, now_ms)

    def session(self, session_id: int) -> LocalSession | None:
        """The local session `session_id`, if this member holds it."""
        return self._sessions.get(session_id)

    def touch(self, session_id: int, now_ms: int) -> None:
        """A client of the session was heard from: it stays alive."""
        self._tracker.touch(session_id, now_ms)

    def close(self, session_id: int) -> None:
        """End a local session (its client closed it)."""
        self._sessions.pop(session_id, None)
        self._tracker.remove(session_id)
