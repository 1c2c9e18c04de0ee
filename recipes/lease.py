"""`NonBlockingLease` and `MultiNonBlockingLease`: a lease held until a wall-clock deadline
(kazoo's leases), for work that must run at most once per period across a fleet ("send the
daily report"), where holding a session for the whole period is not wanted.

    lease = NonBlockingLease(zk, "/leases/report", duration=24 * 3600, identifier="host-1")
    if await lease.obtain(now=time.time()):
        send_report()

The lease is one znode holding its holder and duration; it ends `duration` seconds after its
last write, by the *server's* clock (the node's mtime), so a client whose clock is off cannot
stretch it. Whether it has ended is judged at `now`, the caller's wall-clock time (an input, so
tests and simulations control it). The holder may obtain it again before it ends (renewing it);
anyone may take it over once it has. A take-over is a compare-and-set on the node's version, so
of two clients that find it ended at once, one gets it. Nothing is ephemeral: a lease outlives
its holder's session, which is the point; it is not a lock (no fencing, no cancel scope).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import zkpy
from recipes._nodes import async_client, join, retry
from zkpy.errors import BadVersionError, NodeExistsError, NoNodeError


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """Who holds a lease node, and for how long after its mtime."""

    holder: str
    duration: float

    def encode(self) -> bytes:
        """The node's data (JSON, readable by any client)."""
        return json.dumps({"holder": self.holder, "duration": self.duration}).encode()

    @staticmethod
    def decode(data: bytes) -> LeaseTerms | None:
        """The terms in `data`, or None if it is not a lease (such a node counts as ended)."""
        try:
            fields = json.loads(data)
            return LeaseTerms(str(fields["holder"]), float(fields["duration"]))
        except (ValueError, TypeError, KeyError):
            return None


class NonBlockingLease:
    """One lease at `path` (see the module). `obtain(now)` says whether we hold it now;
    `expires_at` is then when it ends (seconds since the epoch, by the server's clock)."""

    def __init__(
        self, zk: zkpy.Client, path: str, duration: float, identifier: str, *, slots: int = 1
    ) -> None:
        if duration <= 0:
            raise ValueError("a lease's duration must be positive")
        if slots < 1:
            raise ValueError("a lease needs at least one slot")
        self.zk = async_client(zk, "NonBlockingLease")
        self.path = path.rstrip("/") or "/"
        self.terms = LeaseTerms(identifier, float(duration))
        self.slots = slots
        self.expires_at: float | None = None
        self.slot: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} {self.terms.holder!r}>"

    async def obtain(self, now: float) -> bool:
        """Hold the lease from now for `duration` (renewing ours, or taking a free slot):
        True if we do. A slot we hold is renewed before any other is tried, so a holder
        never takes two."""
        self.expires_at = self.slot = None
        slots = [join(self.path, f"lease-{index}") for index in range(self.slots)]
        held = [slot for slot in slots if await self._holder(slot) == self.terms.holder]
        for slot in held + [slot for slot in slots if slot not in held]:
            if await self._obtain_slot(slot, now):
                self.slot = slot
                return True
        return False

    async def _holder(self, slot: str) -> str | None:
        try:
            data, _stat = await retry(self.zk, self.zk.get, slot)
        except NoNodeError:
            return None
        terms = LeaseTerms.decode(data)
        return None if terms is None else terms.holder

    async def _obtain_slot(self, slot: str, now: float) -> bool:
        """Take `slot` if it is missing, ended at `now`, or ours; set `expires_at`."""
        zk, data = self.zk, self.terms.encode()
        try:
            current, stat = await retry(zk, zk.get, slot)
        except NoNodeError:
            try:
                created = await retry(zk, zk.create, slot, data, makepath=True, include_data=True)
            except NodeExistsError:
                return False  # taken by another just now
            self.expires_at = created[1].last_modified + self.terms.duration
            return True
        terms = LeaseTerms.decode(current)
        others = terms is not None and terms.holder != self.terms.holder
        if others and terms is not None and now < stat.last_modified + terms.duration:
            return False  # another's, and not ended
        try:
            stat = await retry(zk, zk.set, slot, data, stat.version)
        except (BadVersionError, NoNodeError):
            return False  # another took it over first
        self.expires_at = stat.last_modified + self.terms.duration
        return True


class MultiNonBlockingLease(NonBlockingLease):
    """Up to `count` holders at once (kazoo's MultiNonBlockingLease): slots ``lease-0`` ..
    ``lease-{count-1}`` under `path`; `obtain` takes the first that is free or ours."""

    def __init__(
        self, zk: zkpy.Client, path: str, count: int, duration: float, identifier: str
    ) -> None:
        super().__init__(zk, path, duration, identifier, slots=count)
