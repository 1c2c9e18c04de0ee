"""The broadcast phase of Zab, leader side: zxids, proposals in flight, quorum counting.

The leader gives each prepped transaction the next zxid of its epoch, persists it, sends it to
its followers, and commits it, in zxid order, once a quorum of voters (itself included) has
persisted and acknowledged it. An ensemble of one is the same machine with a quorum of one.

The caller drives it in the shape of raft's Ready loop: after feeding inputs, `take_ready()`
returns the work to do, which MUST be carried out in this order:

1. persist `Ready.to_persist` durably (one synced write for the whole batch), then call
   `persisted(last zxid of the batch)`: this is the leader's own acknowledgement;
2. send `Ready.messages`;
3. apply `Ready.committed` to the tree, in order, and answer the clients.

Nothing is in `committed` before a quorum has persisted it, so an acknowledged write survives as
long as a quorum does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from zkpy.core.txn import TxnRecord
from zkpy.core.types import make_zxid, zxid_counter, zxid_epoch


class BroadcastError(RuntimeError):
    """A caller broke the protocol's rules (a zxid out of order, an ack from a stranger)."""


@dataclass(slots=True)
class Ready:
    to_persist: list[TxnRecord] = field(default_factory=list)
    messages: list[tuple[int, object]] = field(default_factory=list)
    committed: list[TxnRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.to_persist or self.messages or self.committed)


@dataclass(slots=True)
class _InFlight:
    record: TxnRecord
    acks: set[int]


def quorum_size(voters: int) -> int:
    return voters // 2 + 1


class LeaderBroadcast:
    def __init__(self, my_id: int, epoch: int, last_zxid: int, voters: frozenset[int]) -> None:
        if my_id not in voters:
            raise BroadcastError("a leader must be a voter")
        if zxid_epoch(last_zxid) > epoch:
            raise BroadcastError("history is ahead of the leader's epoch")
        self.my_id = my_id
        self.epoch = epoch
        self.voters = voters
        self.quorum = quorum_size(len(voters))
        self._counter = zxid_counter(last_zxid) if zxid_epoch(last_zxid) == epoch else 0
        self.last_proposed = last_zxid
        self.last_committed = last_zxid
        self._in_flight: deque[_InFlight] = deque()
        self._ready = Ready()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def next_zxid(self) -> int:
        """The zxid the next proposal will take (prep needs it before the record exists)."""
        if self._counter >= 0xFFFFFFFF:
            raise BroadcastError("zxid counter exhausted: a new epoch is needed")
        return make_zxid(self.epoch, self._counter + 1)

    def propose(self, record: TxnRecord) -> None:
        if record.zxid != self.next_zxid():
            raise BroadcastError(f"proposal {record.zxid:#x} out of order")
        self._counter += 1
        self.last_proposed = record.zxid
        self._in_flight.append(_InFlight(record, set()))
        self._ready.to_persist.append(record)
        for member in self.voters:
            if member != self.my_id:
                self._ready.messages.append((member, record))

    def persisted(self, zxid: int) -> None:
        """The leader's own log is durable up to `zxid`."""
        self.acknowledged(self.my_id, zxid)

    def acknowledged(self, member: int, zxid: int) -> None:
        """`member` has persisted every proposal up to and including `zxid`."""
        if member not in self.voters:
            raise BroadcastError(f"ack from {member}, who is not a voter")
        for entry in self._in_flight:
            if entry.record.zxid > zxid:
                break
            entry.acks.add(member)
        self._commit_ready()

    def _commit_ready(self) -> None:
        while self._in_flight and len(self._in_flight[0].acks) >= self.quorum:
            entry = self._in_flight.popleft()
            self.last_committed = entry.record.zxid
            self._ready.committed.append(entry.record)

    def take_ready(self) -> Ready:
        ready, self._ready = self._ready, Ready()
        return ready
