"""docs/protocol.md against zkpy: its byte examples, its tables, and a client written from it.

Convention in the doc: every example is a ```python block holding the msgpack value as a Python
literal, immediately followed by a ```hex NAME block holding the frame (4-byte length prefix, then
the payload); ```hex-annotated NAME blocks hold ``bytes | comment`` lines. Every hex block must
decode to its value, re-encode to the same bytes, and equal what zkpy's codec produces for NAME
(`codec_examples` below), so the doc cannot drift from the code.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

import zkpy
from zkpy.core import paths, sessions
from zkpy.core.errors import Code, NoNodeError, SessionExpiredError
from zkpy.core.requests import CreateRequest, GetDataRequest, SetDataRequest
from zkpy.core.types import OPEN_ACL_UNSAFE, EventType, Stat, WatchedEvent
from zkpy.core.watches import WATCH_BYTES
from zkpy.server.clients import MAX_HANDSHAKE_FRAME, MAX_IDENTITIES
from zkpy.server.config import ServerConfig
from zkpy.testing import running_server
from zkpy.wire import client as wire
from zkpy.wire.frames import DEFAULT_MAX_FRAME, encode_frame

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "protocol.md"
RAW_CLIENT = REPO / "examples" / "raw_client.py"

# The illustrative values of the doc's examples.
SESSION_ID = 0x0100_0193_09A4_C001
PASSWORD = bytes.fromhex("8f3c2a71d4e6b9050c1d7e2f93a4b6c8")
CREATED = Stat(
    czxid=0x1_0000_0002,
    mzxid=0x1_0000_0002,
    ctime=1_700_000_000_000,
    mtime=1_700_000_000_000,
    version=0,
    cversion=0,
    aversion=0,
    ephemeral_owner=0,
    data_length=5,
    num_children=0,
    pzxid=0x1_0000_0002,
)
AFTER_SET = CREATED._replace(mzxid=0x1_0000_0003, mtime=1_700_000_000_250, version=1)


def codec_examples() -> dict[str, bytes]:
    """What zkpy's own codec produces for each example the doc shows."""
    return {
        "handshake-request": wire.Handshake(
            session_id=0, password=b"", timeout_ms=10_000, last_zxid=0
        ).encode(),
        "handshake-reply": wire.HandshakeReply(
            session_id=SESSION_ID,
            password=PASSWORD,
            timeout_ms=10_000,
            zxid=0x1_0000_0001,
            max_frame=DEFAULT_MAX_FRAME,
            server_id=1,
        ).encode(),
        "handshake-refusal": wire.HandshakeReply(
            error=Code.SESSION_EXPIRED,
            message=str(SessionExpiredError(f"session {SESSION_ID:#x} has expired")),
        ).encode(),
        "create-request": wire.encode_request(1, CreateRequest("/app", b"hello", OPEN_ACL_UNSAFE)),
        "create-reply": wire.encode_reply(1, CREATED.czxid, Code.OK, ["/app", CREATED.to_wire()]),
        "get-request": wire.encode_request(2, GetDataRequest("/app", watch=True)),
        "get-reply": wire.encode_reply(2, CREATED.mzxid, Code.OK, [b"hello", CREATED.to_wire()]),
        "set-request": wire.encode_request(3, SetDataRequest("/app", b"world", -1)),
        "event": wire.encode_event(WatchedEvent(EventType.CHANGED, "/app", AFTER_SET.mzxid)),
        "set-reply": wire.encode_reply(3, AFTER_SET.mzxid, Code.OK, AFTER_SET.to_wire()),
        "error-reply": wire.encode_reply(
            4, AFTER_SET.mzxid, Code.NO_NODE, str(NoNodeError(path="/missing"))
        ),
        "ping": wire.PING_FRAME,
        "ping-reply": wire.encode_reply(wire.XID_PING, AFTER_SET.mzxid, Code.OK, None),
    }


# ---- reading the doc ------------------------------------------------------------------------

EXAMPLE_RE = re.compile(
    r"```python\n(?P<value>.*?)```\n\n```hex (?P<name>[\w-]+)\n(?P<hex>.*?)```", re.DOTALL
)
ANNOTATED_RE = re.compile(r"```hex-annotated (?P<name>[\w-]+)\n(?P<body>.*?)```", re.DOTALL)
HEX_FENCE_RE = re.compile(r"^```hex\b", re.MULTILINE)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def hex_bytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def doc_examples() -> dict[str, tuple[Any, bytes]]:
    """name -> (the value the doc states, the frame bytes the doc shows)."""
    found: dict[str, tuple[Any, bytes]] = {}
    for match in EXAMPLE_RE.finditer(doc_text()):
        name = match["name"]
        assert name not in found, f"example {name!r} appears twice in the doc"
        found[name] = (ast.literal_eval(match["value"].strip()), hex_bytes(match["hex"]))
    return found


def doc_annotated() -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for match in ANNOTATED_RE.finditer(doc_text()):
        lines = [line.split("|", 1)[0] for line in match["body"].splitlines() if line.strip()]
        found[match["name"]] = hex_bytes(" ".join(lines))
    return found


def section(number: str) -> str:
    """The text of the doc's section ``## <number>. ...`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(number)}\. .*?(?=^## |\Z)", doc_text(), re.M | re.S)
    assert match is not None, f"the doc has no section {number}"
    return match.group(0)


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip().strip("`") for cell in line.strip().strip("|").split("|")])
    return rows


# ---- (a) the examples -----------------------------------------------------------------------


def test_every_hex_block_is_checked() -> None:
    fences = len(HEX_FENCE_RE.findall(doc_text()))
    assert fences == len(doc_examples()) + len(doc_annotated()), (
        "every ```hex block must directly follow its ```python value block"
    )


def test_the_doc_shows_exactly_the_codec_examples() -> None:
    assert sorted(doc_examples()) == sorted(codec_examples())


@pytest.mark.parametrize("name", sorted(codec_examples()))
def test_example_matches_the_codec(name: str) -> None:
    value, frame = doc_examples()[name]
    length = int.from_bytes(frame[:4], "big")
    payload = frame[4:]
    assert length == len(payload), "the length prefix must count the payload"
    assert msgpack.unpackb(payload, raw=False) == value, "the hex must decode to the stated value"
    assert msgpack.packb(value, use_bin_type=True) == payload, "the value must encode to the hex"
    assert frame == codec_examples()[name], "the hex must be what zkpy's codec produces"


@pytest.mark.parametrize("name", ["create-request", "event"])
def test_annotated_examples_match(name: str) -> None:
    assert doc_annotated()[name] == codec_examples()[name]


def test_examples_decode_with_zkpy() -> None:
    frames = {name: frame[4:] for name, (_value, frame) in doc_examples().items()}
    hello = wire.Handshake.decode(frames["handshake-request"])
    assert (hello.session_id, hello.timeout_ms, hello.last_zxid) == (0, 10_000, 0)
    reply = wire.HandshakeReply.decode(frames["handshake-reply"])
    assert (reply.session_id, reply.password, reply.error) == (SESSION_ID, PASSWORD, 0)
    refusal = wire.HandshakeReply.decode(frames["handshake-refusal"])
    assert refusal.error == Code.SESSION_EXPIRED
    assert wire.decode_request(frames["create-request"]) == (
        1,
        wire.OP_CREATE,
        CreateRequest("/app", b"hello", OPEN_ACL_UNSAFE),
    )
    assert wire.decode_request(frames["get-request"]) == (
        2,
        wire.OP_GET_DATA,
        GetDataRequest("/app", True),
    )
    assert wire.decode_request(frames["set-request"]) == (
        3,
        wire.OP_SET_DATA,
        SetDataRequest("/app", b"world", -1),
    )
    assert wire.is_ping(frames["ping"])
    xid, zxid, _error, body = wire.decode_server_frame(frames["event"])
    assert xid == wire.XID_EVENT
    assert wire.decode_event(body, zxid) == WatchedEvent(EventType.CHANGED, "/app", 0x1_0000_0003)
    _, _, _, body = wire.decode_server_frame(frames["create-reply"])
    assert wire.stat_in(body[1]) == CREATED
    _, _, _, body = wire.decode_server_frame(frames["set-reply"])
    assert wire.stat_in(body) == AFTER_SET
    assert wire.decode_server_frame(frames["ping-reply"])[0] == wire.XID_PING


# ---- the doc's tables ------------------------------------------------------------------------


def test_opcode_table_matches_the_wire_module() -> None:
    rows = [row for row in table_rows(section("5")) if re.fullmatch(r"-?\d+", row[0])]
    documented = {int(row[0]) for row in rows}
    defined = {value for key, value in vars(wire).items() if key.startswith("OP_")}
    assert documented == defined


def test_error_table_matches_the_codes() -> None:
    rows = [row for row in table_rows(section("13")) if re.fullmatch(r"-?\d+", row[0])]
    assert {int(row[0]): row[1] for row in rows} == {code.value: code.name for code in Code}


def test_stat_table_matches_the_stat_fields() -> None:
    rows = [row for row in table_rows(section("8")) if re.fullmatch(r"\d+", row[0])]
    assert [(int(row[0]), row[1]) for row in rows] == list(enumerate(Stat._fields))


def test_xid_table_matches_the_wire_module() -> None:
    """Section 5.1's table of special xids (indented in its list item): the reserved ones are
    those the server refuses, and the others are the ones zkpy's client uses."""
    rows = table_rows("\n".join(line.strip() for line in section("5").splitlines()))
    xids = {int(row[0]): row[1] for row in rows if row[1].startswith(("reserved", "not reserved"))}
    reserved = {xid for xid, meaning in xids.items() if meaning.startswith("reserved")}
    assert reserved == wire.RESERVED_XIDS == {wire.XID_EVENT, wire.XID_PING, wire.XID_SESSION}
    assert set(xids) - reserved == {wire.XID_AUTH, wire.XID_SET_WATCHES}


def _numbers(text: str) -> list[int]:
    return [int(number.replace(",", "")) for number in re.findall(r"\d[\d,]*", text)]


def test_limits_table_matches_the_defaults() -> None:
    """Section 14's defaults are the code's: each row named here starts with these numbers."""
    config = ServerConfig()
    mib = 1 << 20
    expected = {
        "client frame payload": [config.max_frame, 1, 64],
        "node data": [config.max_data_bytes, 1],
        "path": [paths.MAX_PATH_BYTES],
        "ops in one multi": [wire.MAX_MULTI_OPS],
        "session timeout": [
            sessions.MIN_TIMEOUT_TICKS,
            sessions.MAX_TIMEOUT_TICKS,
            config.tick_ms,
            sessions.MIN_TIMEOUT_TICKS * config.tick_ms // 1000,
            sessions.MAX_TIMEOUT_TICKS * config.tick_ms // 1000,
        ],
        "time from connecting to a complete handshake": [int(config.handshake_timeout_s)],
        "a frame before the handshake reply": [MAX_HANDSHAKE_FRAME, MAX_HANDSHAKE_FRAME >> 10],
        "connections still in their handshake": [config.max_connections_in_handshake],
        "requests awaiting a reply, per connection": [config.max_in_flight_per_connection],
        "requests awaiting a reply, of all": [config.max_total_pending_bytes // mib],
        "server output not yet read": [
            config.max_outbox_bytes // 2 // mib,
            config.max_outbox_bytes // mib,
        ],
        "output not yet sent, of all": [config.max_total_outbox_bytes // mib],
        "identities a connection gains": [MAX_IDENTITIES],
        "watches of all connections": [config.max_total_watch_bytes // mib, WATCH_BYTES],
        "watches per connection": [config.max_watches_per_session],
        "children in one": [config.max_children_per_reply],
        "connections per server": [config.max_connections, config.max_connections_per_address],
        "changes kept": [config.change_log_capacity],
    }
    rows = {row[0]: row[1] for row in table_rows(section("14"))[1:]}
    for label, numbers in expected.items():
        matching = [name for name in rows if name.startswith(label)]
        assert len(matching) == 1, f"section 14 has no single row for {label!r}"
        documented = _numbers(rows[matching[0]])
        assert documented[: len(numbers)] == numbers, matching[0]


# ---- the doc's bytes against a live server --------------------------------------------------


class FrameReader:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> Any:
        while True:
            if len(self.buffer) >= 4:
                length = int.from_bytes(self.buffer[:4], "big")
                if len(self.buffer) >= 4 + length:
                    payload = self.buffer[4 : 4 + length]
                    self.buffer = self.buffer[4 + length :]
                    return msgpack.unpackb(payload, raw=False)
            data = await self.stream.receive_some(1 << 16)
            if not data:
                return EOFError
            self.buffer += data


async def test_doc_bytes_work_against_a_server(tmp_path: Path) -> None:
    examples = doc_examples()
    async with running_server(tmp_path) as server:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            frames = FrameReader(stream)

            await stream.send_all(examples["handshake-request"][1])
            hello = await frames.next()
            assert set(hello) == set(examples["handshake-reply"][0])
            assert hello["timeout_ms"] == 20 * server.config.tick_ms  # 10 s clamped to 20 ticks
            assert hello["max_frame"] == DEFAULT_MAX_FRAME

            await stream.send_all(examples["create-request"][1])
            xid, created_zxid, error, (path, stat) = await frames.next()
            assert (xid, error, path, len(stat), stat[8]) == (1, 0, "/app", 11, 5)
            assert stat[0] == stat[1] == stat[10] == created_zxid

            await stream.send_all(examples["get-request"][1])
            xid, _zxid, error, (data, stat) = await frames.next()
            assert (xid, error, data, stat[4]) == (2, 0, b"hello", 0)

            await stream.send_all(examples["set-request"][1])
            event = await frames.next()
            reply = await frames.next()
            assert event[0] == -1
            assert event[2:] == [0, [EventType.CHANGED, "/app"]]
            assert reply[0] == 3
            assert reply[2] == 0
            assert reply[3][4] == 1
            assert event[1] == reply[1] == reply[3][1] > created_zxid

            await stream.send_all(encode_frame(wire.pack([4, wire.OP_GET_DATA, "/missing", False])))
            xid, _zxid, error, message = await frames.next()
            documented = examples["error-reply"][0]
            assert [xid, error, message] == [documented[0], documented[2], documented[3]]

            await stream.send_all(examples["ping"][1])
            xid, _zxid, error, body = await frames.next()
            assert (xid, error, body) == (-2, 0, None)

            await stream.send_all(encode_frame(wire.pack([5, wire.OP_CLOSE])))
            assert (await frames.next())[::2] == [5, 0]
            assert await frames.next() is EOFError
            await stream.aclose()


# ---- (b) a client written from the doc alone ------------------------------------------------


async def test_raw_client_example(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        with trio.fail_after(30):
            result = await trio.run_process(
                [sys.executable, str(RAW_CLIENT), server.address],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode() + out
        created = re.search(r"^created: (/raw-client-\d{10})", out, re.M)
        assert created is not None, out
        path = created.group(1)
        assert "get: b'hello' version 0, watch set" in out
        event = out.index(f"event: CHANGED {path}")
        reply = out.index("set reply: version 1")
        assert event < reply, "the event must come before the set reply"
        assert "get: b'world' version 1" in out
        assert out.rstrip().endswith("closed")
        async with zkpy.connect(server.address) as zk:
            assert await zk.exists(path) is None, "close must delete the ephemeral node"
