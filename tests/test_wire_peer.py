"""The peer codec: every message kind survives encode + decode, batches keep their order, and bad
input raises MarshallingError instead of anything else."""

from __future__ import annotations

import msgpack
import pytest

from zkpy.core.errors import MarshallingError
from zkpy.core.requests import (
    AttachSessionRequest,
    CreateRequest,
    CreateSessionRequest,
    SetDataRequest,
)
from zkpy.core.txn import SetData, TxnRecord
from zkpy.core.types import OPEN_ACL_UNSAFE, Id
from zkpy.wire.peer import decode_message, encode_message
from zkpy.zab.messages import (
    Ack,
    AckEpoch,
    AckNewLeader,
    Commit,
    EarlyPropose,
    FollowerInfo,
    Forward,
    ForwardedWrite,
    Logged,
    LoggedPropose,
    NewEpoch,
    NewLeader,
    Notification,
    Ping,
    Propose,
    ServerState,
    Snapshot,
    SyncDone,
    SyncMode,
    SyncRequest,
    UpToDate,
    Vote,
)

WRITES: tuple[ForwardedWrite, ...] = (
    (7, 1, SetDataRequest("/a", b"x" * 100, 3), frozenset(), 0),
    (7, 2, CreateRequest("/b", b"", OPEN_ACL_UNSAFE, True, True), frozenset(), 3 << 56 | 5),
    (
        9,
        1,
        SetDataRequest("/c", b"", -1),
        frozenset({Id("digest", "bob:hash"), Id("x509", "CN=bob")}),
        2 << 56 | 1,
    ),
    (11, 0, CreateSessionRequest(11, 4000, b"p" * 16), frozenset(), 1 << 56 | 9),
    (7, -3, AttachSessionRequest(), frozenset(), 2 << 56 | 2),
)


@pytest.mark.parametrize(
    "message",
    [
        Forward(WRITES),
        Forward(WRITES[:1]),
        Propose((TxnRecord(1 << 32 | 1, 7, 1, 123, SetData("/a", b"x", 1)),)),
        LoggedPropose((TxnRecord(1 << 32 | 2, 7, 2, 124, SetData("/a", b"y", 2)),)),
        Ack(1 << 32 | 5),
        Commit(1 << 32 | 5),
        Logged(1 << 32 | 6),
        EarlyPropose((TxnRecord(1 << 32 | 7, 7, 3, 125, SetData("/a", b"z", 3)),)),
        Ping((7, 9), 4),
        SyncRequest(7, 3),
        SyncDone(7, 3),
        Notification(3, Vote(1, 1 << 32 | 5, 2), ServerState.LOOKING),
        FollowerInfo(1, 1 << 32 | 5, 1 << 32 | 4, True),
        NewEpoch(2),
        AckEpoch(1, 1 << 32 | 5, 1 << 32 | 4),
        NewLeader(
            2,
            SyncMode.SNAP,
            0,
            Snapshot(1 << 32 | 4, (("/a", b"node"),), ((7, b"session"),)),
            (TxnRecord(1 << 32 | 5, 7, 3, 125, SetData("/a", b"z", 3)),),
        ),
        NewLeader(2, SyncMode.DIFF, 0, None, ()),
        AckNewLeader(2, 1 << 32 | 5),
        UpToDate(1 << 32 | 5),
    ],
)
def test_messages_round_trip(message: object) -> None:
    assert decode_message(encode_message(message)) == message  # type: ignore[arg-type]


def test_a_forward_batch_keeps_its_order_and_identities() -> None:
    decoded = decode_message(encode_message(Forward(WRITES)))
    assert isinstance(decoded, Forward)
    assert [(w[0], w[1]) for w in decoded.writes] == [(7, 1), (7, 2), (9, 1), (11, 0), (7, -3)]
    assert [w[4] for w in decoded.writes] == [w[4] for w in WRITES]  # each write's owner
    assert decoded.writes[2][3] == frozenset({Id("digest", "bob:hash"), Id("x509", "CN=bob")})


@pytest.mark.parametrize(
    "value",
    [
        [12, [[7, 1, [4, "/a", False], []]]],  # a read cannot be forwarded
        [12, [[7, 1]]],  # a write without its request
        [12, "not a list"],
        [99],
        # well-formed arrays whose fields have the wrong types or counts
        [9, "1"],
        [10, 1.5],
        [9],
        [9, 1, 2],
        [1, "round", 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 9],  # no such server state
        [2, 1, 1, 1, "yes"],
        [5, 1, 0, 0, [1, [["/a", "not bytes"]], []], []],
        [5, 1, 0, 0, None, ["not a record"]],
        [8, [msgpack.packb(["zxid", 7, 1, 123, [5, "/a", b"x", 1]])]],
        [11, ["session"], 1],
        [12, [[7, 1, [-10, 7, "4000", b"p"], []]]],
        [12, [[7, 1, [5, "/a", b"", -1], [["digest", 7]]]]],
        [13, None, 1],
        ["tag"],
        {"not": "an array"},
        [],
    ],
)
def test_bad_peer_messages_raise_marshalling_errors(value: object) -> None:
    with pytest.raises(MarshallingError):
        decode_message(msgpack.packb(value))
