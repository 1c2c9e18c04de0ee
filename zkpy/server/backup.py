"""Backups of a running member, restoring them into a data directory, and inspecting one.

A backup is the member's tree and sessions as of one applied zxid, in one file::

    header   magic "ZKPYBKUP", format version u16, flags u16 (0), zxid u64, node count u64,
             session count u64, CRC-32 of those 36 bytes
    records  kind u8 (1 node, 2 session), key length u32, value length u32, key, value,
             CRC-32 of everything before it in the record
             (a node's key is its path in UTF-8, a session's its id as u64; the value is the
             encoding the member's checkpoint keeps: `zkpy.core.tree.encode_node` and
             `encode_session`)
    trailer  kind u8 (255), node count u64, session count u64, bytes of the records u64,
             SHA-256 of every byte before the trailer, CRC-32 of the trailer before it

All integers are big-endian. `read_backup` checks all of it (the trailer's digest covers the
header and every record; the counts must agree with the header and with the records read), and
`restore` writes nothing before it has.

Consistency: the member takes the snapshot on its event loop in one step, between two applied
transactions, as the leader does to send a snapshot to a follower that is far behind
(`DataTree.iter_snapshot`): every node is as of the same zxid. Only the encoding of the nodes
stalls the loop (about a microsecond per node); the framing, checksums and digest are computed
in a worker thread, and the file is sent in chunks that wait for the client to take them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import trio

from zkpy.core import acl as acls
from zkpy.core.errors import (
    AuthFailedError,
    ConnectionLossError,
    MarshallingError,
    TooManyRequestsError,
)
from zkpy.core.tree import DataTree
from zkpy.server.node import _decode_recovered, _usable_history
from zkpy.server.storage import (
    DATA_FILE,
    FORMAT_VERSION,
    WAL_DIR,
    Storage,
    StorageError,
    StorageFormatError,
    read_meta,
)
from zkpy.server.wal import LogDamagedError, describe_segments, fsync_dir
from zkpy.wire.client import PROTOCOL_VERSION, pack, unpack
from zkpy.wire.frames import FrameDecoder, encode_frame

if TYPE_CHECKING:
    from zkpy.server.clients import ClientConnection

__all__ = [
    "BACKUP_VERSION",
    "MAGIC",
    "Backup",
    "BackupFormatError",
    "encode_backup",
    "fetch_backup",
    "inspect",
    "read_backup",
    "restore",
    "send_snapshot",
    "snapshot_request",
]

MAGIC: Final = b"ZKPYBKUP"
BACKUP_VERSION: Final = 1
_HEADER: Final = struct.Struct(">8sHHQQQ")
_RECORD: Final = struct.Struct(">BII")
_TRAILER: Final = struct.Struct(">BQQQ32s")
_CRC: Final = struct.Struct(">I")
_NODE: Final = 1
_SESSION: Final = 2
_END: Final = 255
_MAX_KEY: Final = 1 << 20
CHUNK_BYTES: Final = 256 << 10
"""The backup travels in frames of this much of the file (well under any frame limit)."""


class BackupFormatError(Exception):
    """The file is not a zkpy backup this version reads, or it is damaged or truncated."""


@dataclass(frozen=True, slots=True)
class Backup:
    """What a verified backup file holds."""

    zxid: int
    nodes: list[tuple[str, bytes]]
    sessions: list[tuple[int, bytes]]
    size: int


def _crc(data: bytes) -> bytes:
    return _CRC.pack(zlib.crc32(data))


def _record(kind: int, key: bytes, value: bytes) -> bytes:
    head = _RECORD.pack(kind, len(key), len(value)) + key + value
    return head + _crc(head)


def encode_backup(
    zxid: int, nodes: list[tuple[str, bytes]], sessions: list[tuple[int, bytes]]
) -> Iterator[bytes]:
    """The backup file of the encoded `nodes` and `sessions` as of `zxid`, in pieces."""
    digest = hashlib.sha256()
    header = _HEADER.pack(MAGIC, BACKUP_VERSION, 0, zxid, len(nodes), len(sessions))
    header += _crc(header)
    digest.update(header)
    yield header
    records = 0
    pieces: list[bytes] = []
    size = 0
    for kind, key, value in _entries(nodes, sessions):
        record = _record(kind, key, value)
        digest.update(record)
        records += len(record)
        pieces.append(record)
        size += len(record)
        if size >= CHUNK_BYTES:
            yield b"".join(pieces)
            pieces, size = [], 0
    if pieces:
        yield b"".join(pieces)
    trailer = _TRAILER.pack(_END, len(nodes), len(sessions), records, digest.digest())
    yield trailer + _crc(trailer)


def _entries(
    nodes: list[tuple[str, bytes]], sessions: list[tuple[int, bytes]]
) -> Iterator[tuple[int, bytes, bytes]]:
    for path, raw in nodes:
        yield _NODE, path.encode(), raw
    for session_id, raw in sessions:
        yield _SESSION, session_id.to_bytes(8, "big"), raw


# ---------------------------------------------------------------------- reading


class _Reader:
    """Exact reads from a backup file, hashed as they go, with the offset for messages."""

    def __init__(self, file: IO[bytes], size: int, name: str) -> None:
        self.file = file
        self.size = size
        self.name = name
        self.offset = 0
        self.digest = hashlib.sha256()

    def read(self, count: int, what: str, *, hashed: bool = True) -> bytes:
        if count > self.size - self.offset:
            raise BackupFormatError(
                f"{self.name} is truncated or damaged: {what} at offset {self.offset} needs "
                f"{count} bytes, the file has {self.size - self.offset} left"
            )
        data = self.file.read(count)
        if len(data) != count:
            raise BackupFormatError(f"{self.name} changed while it was read")
        if hashed:
            self.digest.update(data)
        self.offset += count
        return data

    def damaged(self, problem: str) -> BackupFormatError:
        return BackupFormatError(f"{self.name} is damaged: {problem}")


def read_backup(path: str | os.PathLike[str]) -> Backup:
    """Read and verify a whole backup file: BackupFormatError if anything does not check out."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as file:
            reader = _Reader(file, os.fstat(file.fileno()).st_size, name)
            return _read(reader)
    except OSError as err:
        raise BackupFormatError(f"cannot read {name}: {err}") from err


def _read(reader: _Reader) -> Backup:
    zxid, node_count, session_count = _read_header(reader)
    nodes: list[tuple[str, bytes]] = []
    sessions: list[tuple[int, bytes]] = []
    start = reader.offset
    while True:
        kind = reader.read(1, "a record", hashed=False)[0]
        if kind == _END:
            break
        _read_record(reader, kind, nodes, sessions)
    records = reader.offset - 1 - start
    expected = reader.digest.digest()
    rest = reader.read(_TRAILER.size - 1 + _CRC.size, "the trailer", hashed=False)
    trailer, crc = bytes([kind]) + rest[: _TRAILER.size - 1], rest[_TRAILER.size - 1 :]
    if _crc(trailer) != crc:
        raise reader.damaged("the trailer's checksum does not match")
    _end, nodes_said, sessions_said, bytes_said, digest = _TRAILER.unpack(trailer)
    found = (len(nodes), len(sessions), records)
    if (nodes_said, sessions_said, bytes_said) != found or (node_count, session_count) != found[:2]:
        raise reader.damaged(
            f"it says {node_count} nodes and {session_count} sessions in its header, "
            f"{nodes_said}, {sessions_said} and {bytes_said} bytes of records in its trailer, "
            f"and holds {found[0]}, {found[1]} and {found[2]}"
        )
    if digest != expected:
        raise reader.damaged("its SHA-256 digest does not match its contents")
    if reader.offset != reader.size:
        raise reader.damaged(f"{reader.size - reader.offset} bytes follow its trailer")
    return Backup(zxid, nodes, sessions, reader.size)


def _read_header(reader: _Reader) -> tuple[int, int, int]:
    raw = reader.read(_HEADER.size + _CRC.size, "the header")
    header, crc = raw[: _HEADER.size], raw[_HEADER.size :]
    magic, version, _flags, zxid, nodes, sessions = _HEADER.unpack(header)
    if magic != MAGIC:
        raise BackupFormatError(f"{reader.name} is not a zkpy backup (magic {magic!r})")
    if _crc(header) != crc:
        raise reader.damaged("the header's checksum does not match")
    if version != BACKUP_VERSION:
        raise BackupFormatError(
            f"{reader.name} is a backup of format {version}; this zkpy reads format "
            f"{BACKUP_VERSION}: use the zkpy version that wrote it"
        )
    return zxid, nodes, sessions


def _read_record(
    reader: _Reader,
    kind: int,
    nodes: list[tuple[str, bytes]],
    sessions: list[tuple[int, bytes]],
) -> None:
    at = reader.offset - 1
    reader.digest.update(bytes([kind]))
    lengths = reader.read(_RECORD.size - 1, "a record header")
    key_len, value_len = struct.unpack(">II", lengths)
    if kind not in (_NODE, _SESSION) or key_len > _MAX_KEY:
        raise reader.damaged(f"the record at offset {at} has a bad header")
    key = reader.read(key_len, "a record's key")
    value = reader.read(value_len, "a record's value")
    crc = reader.read(_CRC.size, "a record's checksum")
    if _crc(bytes([kind]) + lengths + key + value) != crc:
        raise reader.damaged(f"the record at offset {at} fails its checksum")
    if kind == _NODE:
        try:
            nodes.append((key.decode(), value))
        except UnicodeDecodeError:
            raise reader.damaged(f"the record at offset {at} has a path not in UTF-8") from None
    elif key_len != 8:
        raise reader.damaged(f"the session record at offset {at} has a key of {key_len} bytes")
    else:
        sessions.append((int.from_bytes(key, "big"), value))


# ---------------------------------------------------------------------- restoring


def restore(backup_file: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> Backup:
    """Seed a member's data directory `data_dir` (absent or empty) from a backup.

    The whole file is verified, and its tree rebuilt in memory, before anything is written; the
    directory is built next to `data_dir` and renamed into place, so a failure leaves no
    half-restored directory. The result holds a checkpoint at the backup's zxid and an empty
    log, with the accepted and current epochs of that zxid: every member of a new ensemble
    restored from the same file starts with the same state, and they elect a leader of a new
    epoch as usual.
    """
    target = Path(os.path.abspath(os.fspath(data_dir)))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(
            f"{target} is not an empty directory: restore only into a new or empty one"
        )
    backup = read_backup(backup_file)
    try:
        DataTree.from_checkpoint(backup.zxid, backup.nodes, backup.sessions)
    except Exception as err:  # anything the decoders meet in bytes that checked out
        raise BackupFormatError(
            f"{os.fspath(backup_file)} holds a tree this zkpy cannot rebuild "
            f"({type(err).__name__}: {err})"
        ) from err
    building = target.with_name(target.name + ".restoring")
    if building.exists():
        shutil.rmtree(building)  # left by an interrupted restore
    try:
        with Storage.open(building) as storage:
            storage.replace_all(backup.zxid, backup.nodes, backup.sessions)
            epoch = backup.zxid >> 32
            storage.set_epochs(accepted_epoch=epoch, current_epoch=epoch)
        os.replace(building, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return backup


# ---------------------------------------------------------------------- inspecting


def inspect(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a stopped member's data directory holds, and whether it passes the checks a member
    makes when it starts (`ok`; `error` says why not).

    The summary is read without writing anything; the checks then open the directory as a
    starting member does (which takes its lock, so a running member's directory is refused,
    and starts a new empty log segment, as every start does)."""
    path = Path(os.path.abspath(os.fspath(data_dir)))
    report: dict[str, Any] = {"data_dir": str(path), "ok": False}
    try:
        _summarise(path, report)
        with Storage.open(path) as storage:
            recovered = storage.load(include_nodes=False)
            _decode_recovered(storage, recovered, _usable_history(recovered))
    except (StorageError, LogDamagedError) as err:
        report["error"] = str(err)
        return report
    report["ok"] = True
    return report


def _summarise(path: Path, report: dict[str, Any]) -> None:
    meta = read_meta(path)
    if meta.get("format") != FORMAT_VERSION:
        raise StorageFormatError(
            f"{path} is of format {meta.get('format')}: a member of this zkpy upgrades it to "
            f"format {FORMAT_VERSION} when it starts; inspect it after that"
        )
    checkpoint = meta["checkpoint_zxid"]
    report.update(
        format=meta["format"],
        accepted_epoch=meta["accepted_epoch"],
        current_epoch=meta["current_epoch"],
        checkpoint_zxid=checkpoint,
        checkpoint_nodes=meta["node_count"],
        checkpoint_sessions=meta["session_count"],
        checkpoint_file_bytes=(path / DATA_FILE).stat().st_size,
    )
    segments = describe_segments(path / WAL_DIR, meta["log_generation"], meta["log_first_segment"])
    with_records = [segment for segment in segments if segment.first_zxid]
    first = with_records[0].first_zxid if with_records else 0
    last = with_records[-1].last_zxid if with_records else 0
    report["last_zxid"] = max(checkpoint, last)
    report["log"] = {
        "generation": meta["log_generation"],
        "segments": len(segments),
        "first_zxid": first,
        "last_zxid": last,
        "bytes": sum(segment.bytes_used for segment in segments),
        "unsealed": [segment.seq for segment in segments if not segment.sealed],
    }


# ---------------------------------------------------------------------- the member's side


BUSY: Final = "another backup is being sent from this member: try again when it is done"


def snapshot_request(payload: bytes) -> dict[str, Any] | None:
    """The request, if a connection's first frame asks for a snapshot (`{"cmd": "snapshot"}`)."""
    try:
        first = unpack(payload)
    except (MarshallingError, ValueError):
        return None
    if isinstance(first, dict) and first.get("cmd") == "snapshot":
        return first
    return None


async def send_snapshot(conn: ClientConnection, request: dict[str, Any]) -> None:
    """Answer a snapshot request on `conn`: a map frame (`zxid`, `nodes`, `sessions`, or an
    `error`), the file in frames of up to `CHUNK_BYTES`, and an empty frame; then close.

    With a super digest configured, `auth` must be the super user's ``user:password``: a backup
    holds every node, whatever its ACL. A member sends one backup at a time and refuses
    others meanwhile (`busy`): each holds a copy of the whole tree until its reader has taken
    it, so concurrent requests that read slowly, or not at all, would multiply the member's
    memory."""
    member = conn.member
    refusal = await _refusal(member.config.super_digest, request.get("auth"), conn)
    if refusal is None and member.sending_backup:
        refusal = BUSY
    if refusal is not None:
        _push(conn, pack({"error": refusal, "busy": refusal == BUSY}))
        _end(conn)
        return
    member.sending_backup = True
    try:
        await _send(conn)
    finally:
        member.sending_backup = False


async def _send(conn: ClientConnection) -> None:
    """The backup itself: the tree as of one applied zxid, in frames at its reader's pace (a
    reader that stops is cut off after the handshake timeout, as any client that stops reading
    its replies)."""
    member = conn.member
    conn.server.handshake_done(conn.id)  # no handshake deadline for the transfer
    tree = member.tree
    zxid, nodes, sessions = tree.last_zxid, list(tree.iter_snapshot()), list(tree.iter_sessions())
    _push(conn, pack({"zxid": zxid, "nodes": len(nodes), "sessions": len(sessions)}))
    pieces = await trio.to_thread.run_sync(lambda: list(encode_backup(zxid, nodes, sessions)))
    step = max(1, min(CHUNK_BYTES, member.config.max_outbox_bytes // 4))  # never over the limit
    for piece in pieces:
        for at in range(0, len(piece), step):
            _push(conn, piece[at : at + step])
            member.output.flush()
            await conn._wait_outbox_taken()
    _push(conn, b"")
    _end(conn)


async def _refusal(super_digest: str, auth: object, conn: ClientConnection) -> str | None:
    if not super_digest:
        return None
    if not isinstance(auth, str):
        return "this member has a super digest: a backup needs the super user's --auth"
    try:
        found = await trio.to_thread.run_sync(
            acls.digest_id_from_credential, auth.encode(), limiter=conn.server.hashing
        )
    except AuthFailedError as err:
        return f"authentication failed: {err}"
    if found.id != super_digest:
        return "authentication failed: a backup needs the super user's credentials"
    return None


def _push(conn: ClientConnection, payload: bytes) -> None:
    conn.push(encode_frame(payload))


def _end(conn: ClientConnection) -> None:
    conn.close_after_flush()
    conn.member.output.flush()


# ---------------------------------------------------------------------- the client's side


async def fetch_backup(
    host: str,
    port: int,
    out: Path,
    *,
    auth: str | None = None,
    timeout: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Backup:
    """Take a backup of the member at host:port into `out`: written to `out`.partial, verified
    with `read_backup`, synced, then renamed. A refused or broken backup leaves no file."""
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "wb") as file:
            await _receive(host, port, auth, file, timeout, ssl_context)
            file.flush()
            os.fsync(file.fileno())
        backup = read_backup(partial)
        os.replace(partial, out)
        fsync_dir(out.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return backup


async def _receive(
    host: str,
    port: int,
    auth: str | None,
    file: IO[bytes],
    timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> None:
    request: dict[str, Any] = {"v": PROTOCOL_VERSION, "cmd": "snapshot"}
    if auth is not None:
        request["auth"] = auth
    with trio.fail_after(timeout):
        stream: trio.abc.Stream
        if ssl_context is None:
            stream = await trio.open_tcp_stream(host, port)
        else:
            stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=ssl_context)
        async with stream:
            await stream.send_all(encode_frame(pack(request)))
            frames = _frames(stream, f"{host}:{port}")
            head = unpack(await anext(frames))
            if not isinstance(head, dict) or "error" in head:
                error = head.get("error") if isinstance(head, dict) else head
                busy = isinstance(head, dict) and head.get("busy") is True
                refused = TooManyRequestsError if busy else AuthFailedError
                raise refused(f"{host}:{port} refused the backup: {error}")
            async for payload in frames:
                if not payload:
                    return
                file.write(payload)


async def _frames(stream: trio.abc.Stream, where: str) -> AsyncIterator[bytes]:
    decoder = FrameDecoder(CHUNK_BYTES + 1024)
    while True:
        data = await stream.receive_some(1 << 16)
        if not data:
            raise ConnectionLossError(f"{where} closed before the backup was complete")
        for frame in decoder.feed(data):
            yield frame
        if decoder.error is not None:
            raise MarshallingError(f"{where}: {decoder.error}")
