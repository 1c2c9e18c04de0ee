"""Durable state of one member: an LMDB environment and the proposal log, in a data directory.

Storage keeps opaque bytes: the core encodes transactions, znode records and sessions, and this
module never decodes them. It owns durability, ordering of the proposal log and the on-disk format.

Files in the data directory::

    data.mdb        the LMDB environment (everything but the log)
    lock.mdb        LMDB's reader table (created by LMDB, rebuilt freely)
    wal/            the proposal log: segment files of one generation (see zkpy.server.wal)
    zkpy.lock       an ``flock`` held while a server has the directory open
    zkpy-init.tmp/  only while a brand new directory is being initialised

The log is in segment files rather than LMDB because it is written on the path of every request
and a synced append to a preallocated file costs a third of an LMDB commit (zkpy.server.wal).

Named LMDB databases inside ``data.mdb``:

``meta``
    ``format``, ``accepted_epoch``, ``current_epoch``, ``checkpoint_zxid``, ``log_generation``,
    ``log_floor``, ``log_first_segment``, ``node_count`` and ``session_count``: each an unsigned
    integer stored as 8 bytes big-endian; and ``meta_crc``, a CRC-32 (4 bytes) of every other
    key and value, rewritten by every transaction that writes the table. ``format`` is written
    when the directory is initialised (or upgraded) and must equal :data:`FORMAT_VERSION` on every
    later open. The counts are the entries of ``nodes`` and ``sessions`` as of the last commit.
    ``log_generation`` names the segment files that form the log: truncating the log
    or replacing the whole state writes a new generation and switches to it in one LMDB commit,
    so a crash leaves either the old log or the new one. Log entries with zxid <= ``log_floor``
    were dropped by a checkpoint and are never returned, even while their segment still exists;
    ``log_first_segment`` is the first segment the log still needs, so a lost one is noticed.
``nodes``
    The checkpointed tree. key: znode path in UTF-8; value: a CRC-32 (4 bytes, of the path and the
    record) followed by the opaque node record. LMDB keys are at
    most :meth:`lmdb.Environment.max_key_size` bytes (511), shorter than a znode path may be, so a
    longer path is stored under ``b"\\x00" + sha256(path)`` (no path starts with NUL) with the value
    ``CRC + len(path) as 4 bytes big-endian + path + record``. This is invisible through the API.
``sessions``
    key: session id as 8 bytes big-endian; value: a CRC-32 (4 bytes, of the key and the data)
    followed by the opaque data.

LMDB keeps no checksums of its own, so these are what tell a damaged ``data.mdb`` (a flipped
bit, a lost page) from a good one. :meth:`Storage.load` checks every one of them, the counts,
and that ``checkpoint_zxid`` is either ``log_floor`` or a record of the log, whose records
follow each other from ``log_floor`` on (see :func:`zkpy.server.wal.follows`): anything else
raises :class:`StorageFormatError`, and a member refuses to start rather than serve, vote or
lead with what is left.

Format 1 kept the log in an LMDB table ``log`` (key: zxid as 8 bytes big-endian), format 2 kept
no checksums in LMDB and wrote segments of an older layout. Opening a directory of either
format rewrites it as format 3, once and crash-safely: the log records after the floor go to a
new log generation, every node and session record gets its checksum, and one LMDB commit
switches to the result (a crash before it leaves the old format, and the next open starts
again).

Durability: with ``sync=True`` (the default, the only setting fit for a server) everything a
method writes is on disk (fsynced) when it returns. A batch given to :meth:`Storage.append` is
one write and one fdatasync of the log: group commit. If a write method raises
:class:`StorageError` the disk may be failing; the only safe reaction is to close the storage and
stop the server (do not retry an fsync).

``sync=False`` is an UNSAFE switch for tests only: commits then reach the OS page cache but are not
fsynced, so they survive the process being killed but not a power loss or kernel crash.

Threads: the server makes one write call at a time (on its event loop or in a worker thread),
except that :meth:`~Storage.checkpoint` may run in a worker thread while :meth:`~Storage.append`
runs in another: the checkpoint writes LMDB and removes old segments, the append writes the last
segment, and neither changes what the other reads.
Read methods (:meth:`~Storage.load`, :meth:`~Storage.read_log`,
:meth:`~Storage.last_logged_zxid`, ...) may run in another thread while a write is in progress:
they see whole appended batches and the last committed LMDB state. :meth:`~Storage.close` must not
overlap any other call.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import lmdb

from zkpy.server.wal import (
    SEGMENT_BYTES,
    LogDamagedError,
    SegmentLog,
    follows,
    fsync_dir,
    read_legacy_log,
    remove_other_generations,
)

__all__ = [
    "FORMAT_VERSION",
    "REBUILD",
    "Recovered",
    "Storage",
    "StorageError",
    "StorageFormatError",
    "read_meta",
]

FORMAT_VERSION: Final = 3
_LOG_TABLE_FORMAT: Final = 1  # the last format that kept the log in LMDB
_UNCHECKED_FORMAT: Final = 2  # the last format without checksums in LMDB

log = logging.getLogger("zkpy.server")

REBUILD: Final = (
    "do not start this member with it: in an ensemble, move the directory aside and start the "
    "member with an empty one while all the others serve, and it is rebuilt from them "
    "(docs/operations.md, 'Data directory and durability'); alone, restore it from a backup"
)

DATA_FILE: Final = "data.mdb"
LMDB_LOCK_FILE: Final = "lock.mdb"
LOCK_FILE: Final = "zkpy.lock"
INIT_DIR: Final = "zkpy-init.tmp"
WAL_DIR: Final = "wal"

_MAX_DBS: Final = 8
_U64_MAX: Final = (1 << 64) - 1

_DB_META: Final = b"meta"
_DB_LOG: Final = b"log"
_DB_NODES: Final = b"nodes"
_DB_SESSIONS: Final = b"sessions"
_DB_NAMES: Final = (_DB_META, _DB_NODES, _DB_SESSIONS)

_K_FORMAT: Final = b"format"
_K_ACCEPTED_EPOCH: Final = b"accepted_epoch"
_K_CURRENT_EPOCH: Final = b"current_epoch"
_K_CHECKPOINT_ZXID: Final = b"checkpoint_zxid"
_K_LOG_GENERATION: Final = b"log_generation"
_K_LOG_FLOOR: Final = b"log_floor"
_K_LOG_FIRST_SEGMENT: Final = b"log_first_segment"
_K_NODE_COUNT: Final = b"node_count"
_K_SESSION_COUNT: Final = b"session_count"
_K_META_CRC: Final = b"meta_crc"
_CRC_SIZE: Final = 4
_CRC: Final = struct.Struct(">I")

_LONG_PATH_PREFIX: Final = b"\x00"


class StorageError(Exception):
    """The data directory cannot be used: in use, unreadable, full, or a disk error."""


class StorageFormatError(StorageError):
    """The directory is not a zkpy data directory, has an unknown format version, or is damaged.

    Raised before anything in the directory was modified.
    """


@dataclass(frozen=True, slots=True)
class Recovered:
    """Everything :meth:`Storage.load` found on disk."""

    accepted_epoch: int
    current_epoch: int
    checkpoint_zxid: int
    nodes: list[tuple[str, bytes]]  # the checkpointed tree, any order
    sessions: list[tuple[int, bytes]]
    log: list[tuple[int, bytes]]  # entries with zxid > checkpoint_zxid, ascending
    # Committed entries the checkpoint already holds (log_floor < zxid <= checkpoint_zxid), kept
    # so that a leader can still sync a follower by diff after a restart, ascending; they end
    # with checkpoint_zxid (`load` checks it).
    retained: list[tuple[int, bytes]] = field(default_factory=list)
    log_floor: int = 0  # the zxid just before `retained` (or `log`) starts


def _u64(value: int, what: str) -> bytes:
    try:
        return value.to_bytes(8, "big")
    except (OverflowError, AttributeError):
        raise ValueError(f"{what} must be an integer in [0, 2**64), got {value!r}") from None


def _check_u64(value: int, what: str) -> None:
    if not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise ValueError(f"{what} must be an integer in [0, 2**64), got {value!r}")


class Storage:
    """One member's durable state. Create with :meth:`Storage.open`; close with :meth:`close`."""

    __slots__ = (
        "_checkpoint_zxid",
        "_env",
        "_lock_fd",
        "_log_floor",
        "_max_key",
        "_meta",
        "_nodes",
        "_path",
        "_segment_bytes",
        "_sessions",
        "_sync",
        "_wal",
    )

    def __init__(
        self,
        path: Path,
        env: lmdb.Environment,
        lock_fd: int,
        dbs: dict[bytes, lmdb._Database],
        sync: bool,
        segment_bytes: int,
        fresh: bool,
    ) -> None:
        # Private: use Storage.open().
        self._path = path
        self._env: lmdb.Environment | None = env
        self._lock_fd: int | None = lock_fd
        self._meta = dbs[_DB_META]
        self._nodes = dbs[_DB_NODES]
        self._sessions = dbs[_DB_SESSIONS]
        self._max_key = env.max_key_size()
        self._sync = sync
        self._segment_bytes = segment_bytes
        with self._lmdb_errors("open"), env.begin() as txn:
            self._check_meta(txn)
            self._checkpoint_zxid = self._meta_int(txn, _K_CHECKPOINT_ZXID)
            self._log_floor = self._meta_int(txn, _K_LOG_FLOOR)
            generation = self._meta_int(txn, _K_LOG_GENERATION)
            first_segment = self._meta_int(txn, _K_LOG_FIRST_SEGMENT)
        if self._log_floor > self._checkpoint_zxid:
            raise self._damaged(
                f"its log floor {self._log_floor:#x} is above its checkpoint_zxid "
                f"{self._checkpoint_zxid:#x}"
            )
        with self._log_errors("open"):
            self._wal: SegmentLog | None = SegmentLog.open(
                path / WAL_DIR,
                generation,
                first_seq=first_segment,
                sync=sync,
                segment_bytes=segment_bytes,
                new_segment=not fresh,  # a log just created ends in nothing but zeros
            )
            remove_other_generations(path / WAL_DIR, generation)  # left by a crash mid-switch

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        map_size: int = 8 << 30,
        sync: bool = True,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> Storage:
        """Open (or initialise) the data directory ``data_dir``.

        A directory that does not exist, or is empty, is initialised with :data:`FORMAT_VERSION`.
        A directory holding a zkpy ``data.mdb`` is opened after validation (one of format 1 is
        upgraded). Anything else raises :class:`StorageFormatError` without touching the directory.
        If another process (or another :class:`Storage` in this process) has the directory open,
        raises :class:`StorageError`.

        ``map_size`` is the LMDB map size: the largest the data can grow (sparse, costs no disk).
        ``sync=False`` skips fsync on commit: UNSAFE, for tests only. ``segment_bytes`` is the
        size each log segment file is preallocated to.
        """
        path = Path(os.path.abspath(os.fspath(data_dir)))
        if path.exists() and not path.is_dir():
            raise StorageFormatError(
                f"data directory {path} is not a directory; point the server to a directory"
            )
        if not path.exists():
            try:
                path.mkdir(parents=True)
                fsync_dir(path.parent)
            except FileExistsError:
                pass  # created concurrently; the lock below settles who owns it
            except OSError as e:
                raise StorageError(f"cannot create data directory {path}: {e}") from e

        # If zkpy.lock exists (zkpy was here), lock it before looking at anything. If it does not,
        # validate first, so that a foreign directory never gets a lock file; then create and lock
        # it and validate again, since the directory may have changed before we held the lock.
        lock_fd = _lock_existing(path)
        created_lock = False
        try:
            fresh = _classify(path)
            if lock_fd is None:
                lock_fd, created_lock = _lock_new(path)
                fresh = _classify(path)
            if fresh:
                _initialise(path, map_size, segment_bytes)
            env = _open_env(path, map_size, sync)
            try:
                version = _format_of(env)
                if version != FORMAT_VERSION:
                    _upgrade(env, path, version, segment_bytes)
                dbs = _open_dbs(env, path)
                return cls(path, env, lock_fd, dbs, sync, segment_bytes, fresh)
            except BaseException:
                env.close()
                raise
        except BaseException as e:
            if lock_fd is not None:
                if created_lock and isinstance(e, StorageFormatError):
                    with contextlib.suppress(OSError):
                        os.unlink(path / LOCK_FILE)
                os.close(lock_fd)  # releases the flock
            raise

    # ------------------------------------------------------------------ reading

    @property
    def path(self) -> Path:
        """The data directory (absolute)."""
        return self._path

    def load(self, *, include_nodes: bool = True) -> Recovered:
        """Read the whole durable state, checking its shape; raise StorageFormatError if damaged.

        With `include_nodes=False` the checkpointed tree is left out (`nodes` is empty): a member
        streams it with `iter_nodes()` instead of holding a second copy while it rebuilds."""
        env = self._live()
        with self._lmdb_errors("load"), env.begin() as txn:
            accepted = self._meta_int(txn, _K_ACCEPTED_EPOCH)
            current = self._meta_int(txn, _K_CURRENT_EPOCH)
            checkpoint = self._meta_int(txn, _K_CHECKPOINT_ZXID)
            nodes = list(self._checked_nodes(txn)) if include_nodes else []
            sessions = self._checked_sessions(txn)
        with self._log_errors("load"):
            entries = self._log().read(self._log_floor)
        split = bisect.bisect_right(entries, checkpoint, key=lambda entry: entry[0])
        self._check_log_reaches(checkpoint, entries, split)
        return Recovered(
            accepted,
            current,
            checkpoint,
            nodes,
            sessions,
            entries[split:],
            retained=entries[:split],
            log_floor=self._log_floor,
        )

    def iter_nodes(self) -> Iterator[tuple[str, bytes]]:
        """The checkpointed tree, one (path, record) at a time, from one read transaction;
        raises StorageFormatError at a record that fails its check, or at the end if records
        are missing."""
        env = self._live()
        with self._lmdb_errors("load"), env.begin() as txn:
            yield from self._checked_nodes(txn)

    def _checked_nodes(self, txn: lmdb.Transaction[bytes]) -> Iterator[tuple[str, bytes]]:
        """Every node, checked; the common case (a short path that checks out) inline, as this
        runs once per znode when a member starts."""
        count = 0
        crc32, unpack, long_prefix = zlib.crc32, _CRC.unpack_from, _LONG_PATH_PREFIX[0]
        for key, value in txn.cursor(self._nodes):
            count += 1
            record = value[_CRC_SIZE:]
            if (
                key[0] != long_prefix
                and key.isascii()
                and len(value) >= _CRC_SIZE
                and crc32(record, crc32(key)) == unpack(value)[0]
            ):
                yield key.decode("ascii"), record
            else:
                yield self._decode_node(key, value)  # the rest, or the error
        self._check_count(txn, _K_NODE_COUNT, count, "checkpointed nodes")

    def _checked_sessions(self, txn: lmdb.Transaction[bytes]) -> list[tuple[int, bytes]]:
        sessions: list[tuple[int, bytes]] = []
        for key, value in txn.cursor(self._sessions):
            if len(key) != 8:
                raise self._damaged(f"a session key is {len(key)} bytes long, not 8")
            data = value[_CRC_SIZE:]
            if len(value) < _CRC_SIZE or _crc(key, data) != value[:_CRC_SIZE]:
                raise self._damaged(
                    f"the checkpointed session {int.from_bytes(key, 'big'):#x} fails its checksum"
                )
            sessions.append((int.from_bytes(key, "big"), data))
        self._check_count(txn, _K_SESSION_COUNT, len(sessions), "checkpointed sessions")
        return sessions

    def _check_count(self, txn: lmdb.Transaction[bytes], key: bytes, found: int, what: str) -> None:
        expected = self._meta_int(txn, key)
        if found != expected:
            raise self._damaged(f"it holds {found} {what}, but its last commit wrote {expected}")

    def _check_log_reaches(
        self, checkpoint: int, entries: list[tuple[int, bytes]], split: int
    ) -> None:
        """The log must continue the checkpoint: its records after the floor follow the floor,
        and the checkpoint is the floor or one of them (a checkpoint_zxid raised by damage would
        otherwise skip records, and claim a later last zxid than this member has)."""
        floor = self._log_floor
        if entries and not follows(floor, entries[0][0]):
            raise self._damaged(
                f"its log's first record after the floor {floor:#x} is {entries[0][0]:#x}: "
                "records are missing"
            )
        if checkpoint != floor and (split == 0 or entries[split - 1][0] != checkpoint):
            held = f"{entries[0][0]:#x}..{entries[-1][0]:#x}" if entries else "nothing"
            raise self._damaged(
                f"its checkpoint_zxid {checkpoint:#x} is not in its log, which holds {held} "
                f"after the floor {floor:#x}"
            )

    def last_logged_zxid(self) -> int:
        """The zxid the next appended entry must exceed.

        That is the last logged zxid, or the checkpoint zxid if that is higher (the log is empty,
        or holds only entries the checkpoint already covers); 0 for a new directory.
        """
        return max(self._log().last_zxid, self._checkpoint_zxid)

    def first_logged_zxid(self) -> int | None:
        """The lowest zxid still in the log, or None if the log is empty."""
        with self._log_errors("first_logged_zxid"):
            first = self._log().read(self._log_floor, limit=1)
        return first[0][0] if first else None

    def read_log(self, after_zxid: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        """Log entries with zxid > ``after_zxid``, ascending, at most ``limit`` of them."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit!r}")
        with self._log_errors("read_log"):
            return self._log().read(max(after_zxid, self._log_floor), limit)

    def disk_usage(self) -> int:
        """Bytes in use: LMDB pages ever allocated (freed pages are reused) and the log's records
        (its segment files are preallocated, so the disk holds up to a segment more)."""
        env = self._live()
        with self._lmdb_errors("disk_usage"):
            lmdb_bytes = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        return lmdb_bytes + self._log().bytes_used()

    # ------------------------------------------------------------------ writing

    def append(self, entries: Sequence[tuple[int, bytes]]) -> None:
        """Append a batch of ``(zxid, txn bytes)`` to the log: one write, one fdatasync.

        Each zxid must follow the one before it (the first one, :meth:`last_logged_zxid`): the
        next counter of the same epoch, or counter 1 of a later epoch, as the log is checked for
        gaps when it is opened; otherwise ValueError and nothing is written. When this returns
        (sync=True) the whole batch is durable.
        """
        if not entries:
            return
        log = self._log()
        prev = self.last_logged_zxid()
        for zxid, _data in entries:
            if not follows(prev, zxid):
                raise ValueError(
                    f"cannot append zxid {zxid:#x} after {prev:#x}: it must be the next counter "
                    "of the same epoch or counter 1 of a later one"
                )
            _check_u64(zxid, "zxid")
            prev = zxid
        try:  # not `_log_errors`: a generator context manager costs microseconds per write
            log.append(entries)
        except (LogDamagedError, OSError) as e:
            raise self._log_failure("append", e) from e

    def checkpoint(
        self,
        zxid: int,
        node_puts: Iterable[tuple[str, bytes]],
        node_deletes: Iterable[str],
        session_puts: Iterable[tuple[int, bytes]],
        session_deletes: Iterable[int],
        keep_log_after: int,
    ) -> None:
        """Record the tree and sessions as of ``zxid``, in one transaction, synced.

        Applies the puts and deletes (deleting a missing key is fine), sets ``checkpoint_zxid`` to
        ``zxid`` and drops log entries with zxid <= ``keep_log_after`` (which must be <= ``zxid``;
        keeping some older entries lets the leader send a follower a diff instead of a snapshot).
        ``zxid`` may not be lower than the current checkpoint.
        """
        _check_u64(zxid, "checkpoint zxid")
        _check_u64(keep_log_after, "keep_log_after")
        if keep_log_after > zxid:
            raise ValueError(
                f"keep_log_after ({keep_log_after:#x}) must be <= the checkpoint zxid ({zxid:#x}):"
                " entries after the checkpoint are needed to recover"
            )
        env = self._live()
        if zxid < self._checkpoint_zxid:
            raise ValueError(
                f"checkpoint zxid {zxid:#x} is below the current checkpoint "
                f"{self._checkpoint_zxid:#x}"
            )
        floor = max(self._log_floor, keep_log_after)
        if zxid > floor and zxid > self._log().last_zxid:
            raise ValueError(
                f"checkpoint zxid {zxid:#x} is beyond the log ({self._log().last_zxid:#x}): "
                "a checkpoint must be of a logged record, or drop the whole log"
            )
        first_kept = self._log().first_kept_seq(floor)
        with self._lmdb_errors("checkpoint"), env.begin(write=True) as txn:
            encode = self._encode_node
            txn.cursor(db=self._nodes).putmulti(encode(path, record) for path, record in node_puts)
            for path in node_deletes:
                txn.delete(self._node_key(path), db=self._nodes)
            for session_id, data in session_puts:
                key = _u64(session_id, "session id")
                txn.put(key, _crc(key, data) + data, db=self._sessions)
            for session_id in session_deletes:
                txn.delete(_u64(session_id, "session id"), db=self._sessions)
            txn.put(_K_CHECKPOINT_ZXID, _u64(zxid, "zxid"), db=self._meta)
            txn.put(_K_LOG_FLOOR, _u64(floor, "zxid"), db=self._meta)
            txn.put(_K_LOG_FIRST_SEGMENT, _u64(first_kept, "segment"), db=self._meta)
            self._seal_meta(txn)
        self._checkpoint_zxid, self._log_floor = zxid, floor
        with self._log_errors("checkpoint"):
            self._log().remove_before(first_kept)

    def set_epochs(
        self, *, accepted_epoch: int | None = None, current_epoch: int | None = None
    ) -> None:
        """Persist the Zab epochs given (one transaction, synced). None leaves a value as it is."""
        if accepted_epoch is None and current_epoch is None:
            return
        if accepted_epoch is not None:
            _check_u64(accepted_epoch, "accepted_epoch")
        if current_epoch is not None:
            _check_u64(current_epoch, "current_epoch")
        env = self._live()
        with self._lmdb_errors("set_epochs"), env.begin(write=True) as txn:
            if accepted_epoch is not None:
                txn.put(_K_ACCEPTED_EPOCH, _u64(accepted_epoch, "epoch"), db=self._meta)
            if current_epoch is not None:
                txn.put(_K_CURRENT_EPOCH, _u64(current_epoch, "epoch"), db=self._meta)
            self._seal_meta(txn)

    def truncate_log_after(self, zxid: int) -> None:
        """Delete log entries with zxid > ``zxid`` (Zab TRUNC), synced.

        ValueError if ``zxid`` is below the checkpoint: those transactions are already part of the
        checkpointed tree, and only a full state transfer (:meth:`replace_all`) can undo them.
        The entries kept are copied into a new log generation (truncation is rare: a member
        rejoining with proposals the ensemble never committed).
        """
        _check_u64(zxid, "zxid")
        if zxid < self._checkpoint_zxid:
            raise ValueError(
                f"cannot truncate the log after {zxid:#x}: the checkpoint at "
                f"{self._checkpoint_zxid:#x} already contains later transactions; a full state "
                "transfer is needed"
            )
        log = self._log()
        if log.last_zxid <= zxid:
            return
        with self._log_errors("truncate_log_after"):
            kept = [entry for entry in log.read(self._log_floor) if entry[0] <= zxid]
        self._switch_log(kept)

    def replace_all(
        self,
        zxid: int,
        nodes: Iterable[tuple[str, bytes]],
        sessions: Iterable[tuple[int, bytes]],
    ) -> None:
        """Replace the whole state with a snapshot at ``zxid`` (Zab SNAP), in one transaction.

        Clears nodes, sessions and the log, writes the given nodes and sessions and sets
        ``checkpoint_zxid`` to ``zxid``. Epochs are kept. Synced.
        """
        _check_u64(zxid, "zxid")

        def write_snapshot(txn: lmdb.Transaction[bytes]) -> None:
            txn.drop(self._nodes, delete=False)
            txn.drop(self._sessions, delete=False)
            for path, record in nodes:
                key, value = self._encode_node(path, record)
                txn.put(key, value, db=self._nodes)
            for session_id, data in sessions:
                key = _u64(session_id, "session id")
                txn.put(key, _crc(key, data) + data, db=self._sessions)
            txn.put(_K_CHECKPOINT_ZXID, _u64(zxid, "zxid"), db=self._meta)
            txn.put(_K_LOG_FLOOR, _u64(zxid, "zxid"), db=self._meta)

        self._switch_log([], write_snapshot)
        self._checkpoint_zxid = self._log_floor = zxid

    def _switch_log(
        self,
        entries: Sequence[tuple[int, bytes]],
        also: Callable[[lmdb.Transaction[bytes]], None] | None = None,
    ) -> None:
        """Write `entries` as the next log generation and make it current in one LMDB commit
        (with whatever `also` writes); a crash before that commit leaves the old log current."""
        env = self._live()
        old = self._log()
        generation = old.generation + 1
        wal_dir = self._path / WAL_DIR
        with self._log_errors("switch the log"):
            SegmentLog.create(wal_dir, generation, segment_bytes=self._segment_bytes)
            new = SegmentLog.open(
                wal_dir,
                generation,
                sync=self._sync,
                segment_bytes=self._segment_bytes,
                new_segment=False,
            )
        try:
            with self._log_errors("switch the log"):
                new.append(entries)
            with self._lmdb_errors("switch the log"), env.begin(write=True) as txn:
                if also is not None:
                    also(txn)
                txn.put(_K_LOG_GENERATION, _u64(generation, "generation"), db=self._meta)
                txn.put(_K_LOG_FIRST_SEGMENT, _u64(1, "segment"), db=self._meta)
                self._seal_meta(txn)
        except BaseException:
            new.close()
            with contextlib.suppress(OSError):  # so that a retry cannot meet its segments
                remove_other_generations(wal_dir, old.generation)
            raise
        self._wal = new
        old.close()
        with self._log_errors("switch the log"):
            remove_other_generations(wal_dir, generation)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the environment and release the directory lock. Idempotent."""
        env, self._env = self._env, None
        wal, self._wal = self._wal, None
        fd, self._lock_fd = self._lock_fd, None
        try:
            if wal is not None:
                wal.close()
            if env is not None:
                env.close()
        finally:
            if fd is not None:
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._env is not None else "closed"
        return f"<Storage {str(self._path)!r} {state}{'' if self._sync else ' UNSAFE sync=False'}>"

    # ------------------------------------------------------------------ helpers

    def _live(self) -> lmdb.Environment:
        if self._env is None:
            raise StorageError(f"storage for data directory {self._path} is closed")
        return self._env

    def _log(self) -> SegmentLog:
        if self._wal is None:
            raise StorageError(f"storage for data directory {self._path} is closed")
        return self._wal

    @contextlib.contextmanager
    def _log_errors(self, what: str) -> Iterator[None]:
        """Turn errors of the segment files into StorageError or StorageFormatError."""
        try:
            yield
        except (LogDamagedError, OSError) as e:
            raise self._log_failure(what, e) from e

    def _log_failure(self, what: str, error: LogDamagedError | OSError) -> StorageError:
        """The error to raise for a failure of the segment files."""
        if isinstance(error, LogDamagedError):
            return self._damaged(f"its log: {error}")
        return StorageError(
            f"{what} failed on the log in data directory {self._path}: {error}; the disk may be "
            "failing or full: stop this server and check the disk and the directory"
        )

    @contextlib.contextmanager
    def _lmdb_errors(self, what: str) -> Iterator[None]:
        """Turn LMDB errors into StorageError with the directory and a hint."""
        try:
            yield
        except lmdb.MapFullError as e:
            raise StorageError(
                f"{what}: data directory {self._path} is full: the LMDB map size is reached "
                f"({e}); restart with a larger map_size or take a checkpoint to trim the log"
            ) from e
        except lmdb.Error as e:
            raise StorageError(
                f"{what} failed in data directory {self._path}: {e}; the disk may be failing: "
                "stop this server and check the disk and the directory"
            ) from e

    def _damaged(self, problem: str) -> StorageFormatError:
        return StorageFormatError(f"data directory {self._path} is damaged: {problem}; {REBUILD}")

    def _seal_meta(self, txn: lmdb.Transaction[bytes]) -> None:
        """Record the entry counts and the checksum of the meta table, at the end of a write."""
        _seal_meta(txn, self._meta, self._nodes, self._sessions)

    def _check_meta(self, txn: lmdb.Transaction[bytes]) -> None:
        raw = txn.get(_K_META_CRC, db=self._meta)
        if raw is None or raw != _meta_crc(txn, self._meta):
            raise self._damaged(
                "its metadata (checkpoint_zxid, epochs, log position) fails its checksum"
            )

    def _meta_int(self, txn: lmdb.Transaction[bytes], key: bytes) -> int:
        raw = txn.get(key, db=self._meta)
        if raw is None:
            raise self._damaged(f"meta key {key.decode()!r} is missing")
        if len(raw) != 8:
            raise self._damaged(f"meta key {key.decode()!r} is {len(raw)} bytes long, not 8")
        return int.from_bytes(raw, "big")

    def _node_key(self, path: str) -> bytes:
        raw = path.encode("utf-8")
        if not raw:
            raise ValueError("a znode path must not be empty")
        if len(raw) <= self._max_key and not raw.startswith(_LONG_PATH_PREFIX):
            return raw
        return _LONG_PATH_PREFIX + hashlib.sha256(raw).digest()

    def _encode_node(self, path: str, record: bytes) -> tuple[bytes, bytes]:
        raw = path.encode("utf-8")
        if raw and len(raw) <= self._max_key and not raw.startswith(_LONG_PATH_PREFIX):
            return raw, zlib.crc32(record, zlib.crc32(raw)).to_bytes(_CRC_SIZE, "big") + record
        key = self._node_key(path)
        return key, _node_value(key, raw, bytes(record))

    def _decode_node(self, key: bytes, value: bytes) -> tuple[str, bytes]:
        body = value[_CRC_SIZE:]
        if key.startswith(_LONG_PATH_PREFIX):
            size = int.from_bytes(body[:4], "big")
            raw = body[4 : 4 + size]
            if len(raw) != size or _LONG_PATH_PREFIX + hashlib.sha256(raw).digest() != key:
                raise self._damaged("a long-path node entry does not match its key")
            record = body[4 + size :]
        else:
            raw, record = key, body
        if len(value) < _CRC_SIZE or _crc(raw, record) != value[:_CRC_SIZE]:
            shown = raw.decode("utf-8", "replace")
            raise self._damaged(f"the checkpointed node {shown!r} fails its checksum")
        try:
            return raw.decode("utf-8"), record
        except UnicodeDecodeError as e:
            raise self._damaged(f"a node path is not valid UTF-8 ({e})") from None


# ---------------------------------------------------------------------- checksums


def _crc(key: bytes, data: bytes) -> bytes:
    """The 4-byte checksum stored ahead of a node's or a session's record."""
    return zlib.crc32(data, zlib.crc32(key)).to_bytes(_CRC_SIZE, "big")


def _node_value(key: bytes, raw_path: bytes, record: bytes) -> bytes:
    """The stored value of a node: its checksum, then (under a long path's hashed key) the
    path, then the record."""
    crc = _crc(raw_path, record)
    if key.startswith(_LONG_PATH_PREFIX):
        return crc + len(raw_path).to_bytes(4, "big") + raw_path + record
    return crc + record


def _meta_crc(txn: lmdb.Transaction[bytes], meta: lmdb._Database) -> bytes:
    crc = 0
    for key, value in txn.cursor(meta):
        if key != _K_META_CRC:
            crc = zlib.crc32(value, zlib.crc32(len(key).to_bytes(1, "big") + key, crc))
    return crc.to_bytes(_CRC_SIZE, "big")


def _seal_meta(
    txn: lmdb.Transaction[bytes],
    meta: lmdb._Database,
    nodes: lmdb._Database,
    sessions: lmdb._Database,
) -> None:
    """Write the entry counts and the meta table's checksum, last in a write transaction."""
    txn.put(_K_NODE_COUNT, _u64(txn.stat(nodes)["entries"], "count"), db=meta)
    txn.put(_K_SESSION_COUNT, _u64(txn.stat(sessions)["entries"], "count"), db=meta)
    txn.put(_K_META_CRC, _meta_crc(txn, meta), db=meta)


# ---------------------------------------------------------------------- opening helpers


def _in_use(path: Path) -> StorageError:
    return StorageError(
        f"data directory {path} is in use by another process (it holds {path / LOCK_FILE}); "
        "stop that server first, or give this one a different data directory"
    )


def _flock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _in_use(path) from None
    except OSError as e:
        os.close(fd)
        raise StorageError(f"cannot lock data directory {path}: {e}") from e


def _lock_existing(path: Path) -> int | None:
    """Lock ``zkpy.lock`` if it exists (without creating anything); None if it does not."""
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StorageError(f"cannot open lock file {path / LOCK_FILE}: {e}") from e
    _flock(fd, path)
    return fd


def _lock_new(path: Path) -> tuple[int, bool]:
    """Create (if needed) and lock ``zkpy.lock``; returns (fd, whether we created it)."""
    created = True
    try:
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            created = False
            fd = os.open(path / LOCK_FILE, os.O_RDWR)
    except OSError as e:
        raise StorageError(f"cannot create lock file {path / LOCK_FILE}: {e}") from e
    _flock(fd, path)
    return fd, created


def _classify(path: Path) -> bool:
    """True if ``path`` is to be initialised, False if it holds a valid zkpy environment.

    Raises StorageFormatError, touching nothing, for anything else.
    """
    try:
        names = set(os.listdir(path))
    except OSError as e:
        raise StorageError(f"cannot list data directory {path}: {e}") from e
    if DATA_FILE in names:
        _validate(path)
        return False
    if LMDB_LOCK_FILE in names:
        raise StorageFormatError(
            f"data directory {path} has {LMDB_LOCK_FILE} but no {DATA_FILE}: the data file was "
            "deleted or moved. Refusing to start with empty state, which could lose acknowledged "
            "writes. Restore data.mdb, or empty the directory to rejoin as a new member"
        )
    if WAL_DIR in names and INIT_DIR not in names:
        raise StorageFormatError(
            f"data directory {path} has a log ({WAL_DIR}/) but no {DATA_FILE}: the data file was "
            "deleted or moved. Refusing to start with empty state, which could lose acknowledged "
            "writes. Restore data.mdb, or empty the directory to rejoin as a new member"
        )
    foreign = sorted(names - {LOCK_FILE, INIT_DIR, WAL_DIR})
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StorageFormatError(
            f"{path} is not a zkpy data directory: it is not empty ({shown}) and has no "
            f"{DATA_FILE}. Give the server an empty or new directory"
        )
    return True


def _validate(path: Path) -> None:
    """Check ``data.mdb`` is a zkpy environment of our format, opening it strictly read-only."""
    data = path / DATA_FILE
    size = _data_file_size(data)
    try:
        # readonly opens data.mdb with O_RDONLY; lock=False creates no lock.mdb.
        env = lmdb.open(
            str(path),
            readonly=True,
            lock=False,
            subdir=True,
            create=False,
            max_dbs=_MAX_DBS,
        )
    except lmdb.Error as e:
        raise _unusable(data, f"cannot be opened as an LMDB environment ({e})") from e
    try:
        # A truncated file would crash the process with SIGBUS when a missing page is read.
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if size < needed:
            raise _unusable(data, f"is truncated: {size} bytes, its pages need {needed}")
        with env.begin() as txn:
            version = _format_version(env, txn, data)
            if version != _LOG_TABLE_FORMAT and not (path / WAL_DIR).is_dir():
                raise _unusable(
                    data, f"has lost its log: the log directory {path / WAL_DIR} is missing"
                )
            tables = _DB_NAMES + ((_DB_LOG,) if version == _LOG_TABLE_FORMAT else ())
            for name in tables:
                _open_table(env, txn, name, data)
    except lmdb.Error as e:
        raise _unusable(data, f"is damaged ({e})") from e
    finally:
        env.close()


def read_meta(data_dir: str | os.PathLike[str]) -> dict[str, int]:
    """The ``meta`` table of a stopped member's directory, read without writing anything
    (StorageFormatError if it is not a zkpy data directory of a format this zkpy reads)."""
    path = Path(os.path.abspath(os.fspath(data_dir)))
    if not (path / DATA_FILE).exists():
        raise StorageFormatError(f"{path} is not a zkpy data directory: it has no {DATA_FILE}")
    _validate(path)
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, create=False, max_dbs=_MAX_DBS)
    except lmdb.Error as e:
        raise _unusable(path / DATA_FILE, f"cannot be opened ({e})") from e
    try:
        with env.begin() as txn:
            meta = env.open_db(_DB_META, txn=txn, create=False)
            return {
                key.decode(): int.from_bytes(value, "big")
                for key, value in txn.cursor(meta)
                if key != _K_META_CRC
            }
    finally:
        env.close()


def _unusable(data: Path, problem: str) -> StorageFormatError:
    return StorageFormatError(
        f"{data} {problem}; this is not a usable zkpy data directory (left untouched). "
        "Restore it from a backup, or give the server an empty directory"
    )


def _data_file_size(data: Path) -> int:
    """The size of ``data.mdb``, refusing anything but a non-empty regular file."""
    try:
        st = os.stat(data)
    except OSError as e:
        raise StorageError(f"cannot read {data}: {e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise _unusable(data, "is not a regular file")
    if st.st_size == 0:
        raise _unusable(data, "is empty (0 bytes): damaged or truncated")
    return st.st_size


def _open_table(
    env: lmdb.Environment, txn: lmdb.Transaction[bytes], name: bytes, data: Path
) -> lmdb._Database:
    try:
        return env.open_db(name, txn=txn, create=False)
    except lmdb.Error:
        raise _unusable(data, f"has no {name.decode()!r} table") from None


def _format_version(env: lmdb.Environment, txn: lmdb.Transaction[bytes], data: Path) -> int:
    """The format version in the meta table, refusing one this zkpy cannot read."""
    raw = txn.get(_K_FORMAT, db=_open_table(env, txn, _DB_META, data))
    if raw is None:
        raise _unusable(data, "has no format version")
    if len(raw) != 8:
        raise _unusable(data, f"has a damaged format version ({raw!r})")
    version = int.from_bytes(raw, "big")
    if version not in (_LOG_TABLE_FORMAT, _UNCHECKED_FORMAT, FORMAT_VERSION):
        raise _unusable(
            data,
            f"has format version {version}, but this zkpy reads versions "
            f"{_LOG_TABLE_FORMAT} to {FORMAT_VERSION}; run the zkpy version that wrote it",
        )
    return version


def _initialise(path: Path, map_size: int, segment_bytes: int) -> None:
    """Create ``data.mdb`` with the format version, and an empty log, atomically.

    Both are built and synced in ``zkpy-init.tmp/`` and renamed into place, the log first, so a
    ``data.mdb`` in the data directory always carries a format version and has its log, even
    after a crash here; a ``wal/`` next to ``zkpy-init.tmp/`` is such a crash's leftover.
    """
    tmp = path / INIT_DIR
    try:
        for leftover in (tmp, path / WAL_DIR):
            if leftover.exists():
                shutil.rmtree(leftover)
        tmp.mkdir()
        env = lmdb.open(
            str(tmp),
            map_size=map_size,
            subdir=True,
            max_dbs=_MAX_DBS,
            lock=False,
            sync=True,
            metasync=True,
        )
        try:
            with env.begin(write=True) as txn:
                dbs = {name: env.open_db(name, txn=txn) for name in _DB_NAMES}
                meta = dbs[_DB_META]
                txn.put(_K_FORMAT, _u64(FORMAT_VERSION, "format"), db=meta)
                for key in (_K_ACCEPTED_EPOCH, _K_CURRENT_EPOCH, _K_CHECKPOINT_ZXID, _K_LOG_FLOOR):
                    txn.put(key, _u64(0, "zero"), db=meta)
                txn.put(_K_LOG_GENERATION, _u64(1, "generation"), db=meta)
                txn.put(_K_LOG_FIRST_SEGMENT, _u64(1, "segment"), db=meta)
                _seal_meta(txn, meta, dbs[_DB_NODES], dbs[_DB_SESSIONS])
        finally:
            env.close()
        SegmentLog.create(tmp / WAL_DIR, 1, segment_bytes=segment_bytes)
        fsync_dir(tmp)
        os.rename(tmp / WAL_DIR, path / WAL_DIR)
        fsync_dir(path)  # the log is in place before the data file that needs it
        os.rename(tmp / DATA_FILE, path / DATA_FILE)
        fsync_dir(path)
        shutil.rmtree(tmp)
    except (OSError, lmdb.Error) as e:
        raise StorageError(f"cannot initialise data directory {path}: {e}") from e


def _format_of(env: lmdb.Environment) -> int:
    meta = env.open_db(_DB_META, create=False)
    with env.begin() as txn:
        raw = txn.get(_K_FORMAT, db=meta)
    return int.from_bytes(raw or b"", "big")


def _upgrade(env: lmdb.Environment, path: Path, version: int, segment_bytes: int) -> None:
    """Rewrite a directory of format 1 or 2 as the current format (see the module docstring).

    The log records after the floor go to a new log generation; then one LMDB commit gives every
    node and session record its checksum, writes the counts, the meta checksum and the format,
    and switches to the new log. A crash before that commit leaves the old format."""
    wal_dir = path / WAL_DIR
    try:
        meta = env.open_db(_DB_META, create=False)
        with env.begin() as txn:
            if txn.get(_K_META_CRC, db=meta) is not None:
                raise StorageFormatError(
                    f"data directory {path} is damaged: its format version says {version}, but it "
                    f"holds checksums only later formats write; {REBUILD}"
                )
            value = {key: int.from_bytes(raw, "big") for key, raw in txn.cursor(meta)}
        checkpoint = value.get(_K_CHECKPOINT_ZXID, 0)
        if version == _LOG_TABLE_FORMAT:
            # Format 1 kept no floor: the entries before its checkpoint may have gaps, so none
            # of them count as history (a leader must not diff from them).
            floor, generation = checkpoint, 1
            if wal_dir.exists():
                shutil.rmtree(wal_dir)  # left by an interrupted upgrade
            with env.begin() as txn:
                table = env.open_db(_DB_LOG, txn=txn, create=False)
                entries = [(int.from_bytes(k, "big"), v) for k, v in txn.cursor(table)]
        else:
            floor, old = value[_K_LOG_FLOOR], value[_K_LOG_GENERATION]
            remove_other_generations(wal_dir, old)  # left by an interrupted upgrade
            entries = read_legacy_log(wal_dir, old, value[_K_LOG_FIRST_SEGMENT])
            generation = old + 1
        entries = _after_floor(entries, floor, path)
        SegmentLog.create(wal_dir, generation, segment_bytes=segment_bytes)
        new_log = SegmentLog.open(
            wal_dir, generation, segment_bytes=segment_bytes, new_segment=False
        )
        try:
            new_log.append(entries)
        finally:
            new_log.close()
        fsync_dir(path)
        _checksum_records_and_switch(env, floor, generation)
        remove_other_generations(wal_dir, generation)
    except (OSError, lmdb.Error, LogDamagedError, KeyError) as e:
        raise StorageError(
            f"cannot upgrade data directory {path} to format {FORMAT_VERSION}: {e}"
        ) from e
    log.warning(
        "upgraded data directory %s from format %d to %d: its checkpoint and log now carry "
        "checksums (%d log records after zxid %#x rewritten)",
        path,
        version,
        FORMAT_VERSION,
        len(entries),
        floor,
    )


def _after_floor(
    entries: list[tuple[int, bytes]], floor: int, path: Path
) -> list[tuple[int, bytes]]:
    """The records after `floor`, which must follow it and each other."""
    kept = [entry for entry in entries if entry[0] > floor]
    previous = floor
    for zxid, _data in kept:
        if not follows(previous, zxid):
            raise StorageFormatError(
                f"data directory {path} is damaged: its log has zxid {zxid:#x} after "
                f"{previous:#x}, records are missing; {REBUILD}"
            )
        previous = zxid
    return kept


def _checksum_records_and_switch(env: lmdb.Environment, floor: int, generation: int) -> None:
    """The LMDB half of `_upgrade`, in one commit."""
    with env.begin(write=True) as txn:
        dbs = {name: env.open_db(name, txn=txn, create=False) for name in _DB_NAMES}
        nodes, sessions, meta = dbs[_DB_NODES], dbs[_DB_SESSIONS], dbs[_DB_META]
        rewritten = [(key, _checksummed_node(key, value)) for key, value in txn.cursor(nodes)]
        txn.cursor(db=nodes).putmulti(rewritten)
        rewritten = [(key, _crc(key, value) + value) for key, value in txn.cursor(sessions)]
        txn.cursor(db=sessions).putmulti(rewritten)
        txn.put(_K_LOG_FLOOR, _u64(floor, "zxid"), db=meta)
        txn.put(_K_LOG_GENERATION, _u64(generation, "generation"), db=meta)
        txn.put(_K_LOG_FIRST_SEGMENT, _u64(1, "segment"), db=meta)
        txn.put(_K_FORMAT, _u64(FORMAT_VERSION, "format"), db=meta)
        with contextlib.suppress(lmdb.NotFoundError):
            txn.drop(env.open_db(_DB_LOG, txn=txn, create=False), delete=True)
        _seal_meta(txn, meta, nodes, sessions)


def _checksummed_node(key: bytes, value: bytes) -> bytes:
    if key.startswith(_LONG_PATH_PREFIX):
        size = int.from_bytes(value[:4], "big")
        return _node_value(key, value[4 : 4 + size], value[4 + size :])
    return _node_value(key, key, value)


def _open_env(path: Path, map_size: int, sync: bool) -> lmdb.Environment:
    try:
        return lmdb.open(
            str(path),
            map_size=map_size,
            subdir=True,
            create=False,
            max_dbs=_MAX_DBS,
            lock=True,
            sync=sync,
            metasync=sync,
        )
    except lmdb.Error as e:
        raise StorageError(f"cannot open the LMDB environment in {path}: {e}") from e


def _open_dbs(env: lmdb.Environment, path: Path) -> dict[bytes, lmdb._Database]:
    try:
        # Handles opened in a write txn stay valid after it commits (a read txn would close them).
        # Nothing changes, so the commit writes nothing.
        with env.begin(write=True) as txn:
            return {name: env.open_db(name, txn=txn, create=False) for name in _DB_NAMES}
    except lmdb.Error as e:
        raise StorageFormatError(f"{path / DATA_FILE} lost a table while opening: {e}") from e
