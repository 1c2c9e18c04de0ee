"""The proposal log: append-only segment files, one write and one fdatasync per batch.

Every write on the path of a client's request waits for this log to reach the disk, on the
leader and on a quorum of followers. An LMDB transaction holding one entry costs several page
writes and two syncs; a write into a preallocated file followed by ``fdatasync`` costs one, in
about a third of the time (docs/decisions/0001). So the log lives in segment files, and LMDB
keeps what is written rarely and read by key: the checkpointed tree, the sessions and the
metadata, including which *generation* of segment files is the log (see
:mod:`zkpy.server.storage`).

A segment is ``<generation:016x>-<seq:016x>.wal`` in the ``wal/`` directory, preallocated to
``segment_bytes`` and written with zeros a little ahead of its records (``_zero_ahead_of``), so
that a sync flushes data only, not the file system's journal. It starts with a 64-byte header:
magic, generation, seq, the size it was preallocated to, then its *seal* (a mark, the offset
just past its last record and that record's zxid) and a CRC-32 of all of it. Records follow
back to back, each a 24-byte header (a marker, payload length u32, batch offset u32, zxid u64,
CRC-32 u32, all big-endian) and the payload. The batch offset is where the write that carried
the record began in the segment. The CRC covers the segment's generation and sequence number
and the batch offset (XORed into its initial value: any change of them changes the CRC), the
zxid and the payload (a changed length moves the payload), so bytes left over from an older use
of a file never verify; it costs no more per record than a CRC of the zxid and payload alone.

Once the next segment exists (created under a temporary name, synced, renamed), a segment is
sealed: its mark says SEALED and its seal says exactly where its records end. A clean close
seals the last segment the same way with the mark CLOSED. A sealed segment's records must
verify up to exactly its sealed end; a last segment found SEALED means the newest one was lost.

Only a segment that was being written when the machine stopped is unsealed: the last one, or
the one before an empty last one (a crash between creating a segment and sealing the one before
it). Its records are read until a header of zeros, the end of the file, or a record that does
not verify. Only the batch being written at the crash can end there, torn, and it was never
acknowledged (acknowledgements follow the fdatasync). A torn write leaves whole 512-byte sectors
unwritten (zeros), never other bytes, so that end is accepted only if it looks like one: a
record that fails its checksum must have a sector of zeros, a record's length may run past the
end of the file only for the first record of a segment, which grew the file, and no record
after the end may verify with a batch offset beyond it (a batch begun after the end means the
one before was synced, so what was lost there had been acknowledged). Anything else is damage
and raises `LogDamagedError`, as do a segment shorter than it was preallocated, a damaged
header, a missing segment, and zxids that do not follow each other (within an epoch by one; a
new epoch starts at 1). One ambiguity remains: after a crash, damage that zeroes sectors at the
very end of the records (in the last batch, which may have been acknowledged, or reaching from
the end of the batch before over all of the last one) leaves exactly what a torn write of that
batch leaves.

Opening always starts a new segment for what comes next, so later records are never written
next to the remains of a torn batch (which could otherwise verify again, after a new record of
the same length). Opening reads the records and the data the file system holds past them, not
a segment's unwritten preallocated space (``SEEK_DATA``).

Format 2 of the data directory wrote segments of an older layout (magic ``ZKPYWAL1``, 32-byte
segment and 16-byte record headers, no seal positions, no batch offsets);
`read_legacy_log` reads them once, for the storage to rewrite.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import re
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

__all__ = [
    "MAX_SEGMENT_BYTES",
    "MIN_SEGMENT_BYTES",
    "SEGMENT_BYTES",
    "LogDamagedError",
    "SegmentLog",
    "SegmentSummary",
    "describe_segments",
    "follows",
    "fsync_dir",
    "read_legacy_log",
    "remove_other_generations",
]

SEGMENT_BYTES: Final = 64 << 20
MIN_SEGMENT_BYTES: Final = 1 << 20  # smaller segments would roll (create + fsync) too often
MAX_SEGMENT_BYTES: Final = 1 << 30
ZERO_AHEAD_BYTES: Final = 256 << 10

_MAGIC: Final = b"ZKPYWAL2"
_SEGMENT_HEADER: Final = struct.Struct(">8sQQQ")  # magic, generation, seq, preallocated size
_SEAL: Final = struct.Struct(">QQQ")  # mark, offset just past the last record, its zxid
_SEAL_AT: Final = _SEGMENT_HEADER.size
_CRC_AT: Final = _SEAL_AT + _SEAL.size  # a CRC-32 of the header before it
_HEADER_SIZE: Final = 64
_UNSEALED: Final = 0  # while the segment is written to
_SEALED: Final = 0x5345414C4544  # "SEALED": the next segment exists
_CLOSED: Final = 0x434C4F534544  # "CLOSED": closed cleanly, the last segment
_RECORD_MARK: Final = b"\xc1zkr"  # no zero byte: never split by a hole of the file
# marker, payload length, batch offset, zxid, CRC-32
_RECORD_HEADER: Final = struct.Struct(">4sIIQI")
_CRC_SIZE: Final = 4
_RECORD_SIZE: Final = _RECORD_HEADER.size
_EMPTY_RECORD: Final = bytes(_RECORD_SIZE)
_SECTOR: Final = 512  # the unit a disk writes whole, or not at all
_COUNTER_MASK: Final = 0xFFFFFFFF
_NAME: Final = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})\.wal")
_TMP_SUFFIX: Final = ".tmp"
# what posix_fallocate fails with where the file system cannot preallocate
_FALLOCATE_UNSUPPORTED: Final = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
)


class LogDamagedError(Exception):
    """The segment files are damaged, or do not form one log."""


@dataclass(frozen=True, slots=True)
class _Segment:
    """What readers may see of one segment: records up to `end` are written and synced."""

    seq: int
    path: Path
    end: int  # offset just past the last record
    first_zxid: int  # 0 while the segment holds no record
    last_zxid: int
    size: int  # what it was preallocated to, in its header
    mark: int = 0  # its seal's mark: _UNSEALED, or _SEALED or _CLOSED with its end known


def segment_name(generation: int, seq: int) -> str:
    return f"{generation:016x}-{seq:016x}.wal"


def follows(previous: int, zxid: int) -> bool:
    """Whether `zxid` may come right after `previous` in a log: the next counter of the same
    epoch, or the first of a later one. Anything may follow 0 (nothing before it is known)."""
    if previous == 0:
        return zxid > 0
    if zxid == previous + 1:
        return True
    return zxid >> 32 > previous >> 32 and zxid & _COUNTER_MASK == 1


def _salt(generation: int, seq: int) -> int:
    return zlib.crc32(generation.to_bytes(8, "big") + seq.to_bytes(8, "big"))


class SegmentLog:
    """The log of one generation. Appends come from one thread at a time, removals may come
    from another (a checkpoint) and never touch the last segment; reads may come from any
    thread and see whole appended batches."""

    __slots__ = (
        "_capacity",
        "_directory",
        "_fd",
        "_generation",
        "_lock",
        "_salt",
        "_segment_bytes",
        "_segments",
        "_sync",
        "_zero_ahead",
        "_zeroed_end",
    )

    def __init__(
        self,
        directory: Path,
        generation: int,
        segments: list[_Segment],
        *,
        sync: bool,
        segment_bytes: int,
        zero_ahead: int,
    ) -> None:
        # Private: use SegmentLog.create() or SegmentLog.open().
        self._directory = directory
        self._generation = generation
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._zero_ahead = zero_ahead
        self._lock = threading.Lock()
        self._segments: tuple[_Segment, ...] = tuple(segments)
        last = segments[-1]
        self._fd: int | None = os.open(last.path, os.O_RDWR)
        # what it was preallocated to: only a segment's first record may run past it (see
        # `_Walk.accept_end`), so appends to an older segment keep to its own size
        self._capacity = last.size
        self._salt = _salt(generation, last.seq)
        self._zeroed_end = last.end  # what lies past it may still be preallocated, unwritten

    # ------------------------------------------------------------------ opening

    @staticmethod
    def create(directory: Path, generation: int, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        """Create the first (empty) segment of `generation`, synced, for a later `open`."""
        directory.mkdir(exist_ok=True)
        _create_segment(directory, generation, 1, segment_bytes)

    @classmethod
    def open(
        cls,
        directory: Path,
        generation: int,
        *,
        first_seq: int = 1,
        sync: bool = True,
        segment_bytes: int = SEGMENT_BYTES,
        new_segment: bool = True,
        zero_ahead: int = ZERO_AHEAD_BYTES,
    ) -> SegmentLog:
        """Open the log of `generation` for appending, after checking every segment.

        `first_seq` is the first segment the log must still have (the caller records it, see
        `first_kept_seq`); older ones are what a crash left of a removal, and are deleted once
        everything else checked out. Files of other generations are left alone (see
        `remove_other_generations`); a file in the directory that is not a segment raises
        LogDamagedError, as do a damaged or missing segment. With `new_segment` (anything but a
        log just created), appends go to a new segment: the last one may end in the remains of
        a batch torn by a crash, even behind a clean-looking end, and no record may ever be
        written next to them. `zero_ahead` is how far ahead of the records the live segment is
        written with zeros (see `_zero_ahead_of`; 0 = never).
        """
        segments, stale, torn = _check_segments(directory, generation, first_seq)
        for seq in stale:
            os.unlink(directory / segment_name(generation, seq))
            fsync_dir(directory)
        log = cls(
            directory,
            generation,
            segments,
            sync=sync,
            segment_bytes=segment_bytes,
            zero_ahead=zero_ahead,
        )
        if new_segment or torn:
            log._start_fresh_segment()
        return log

    # ------------------------------------------------------------------ reading

    @property
    def generation(self) -> int:
        """Which log this is: a new one replaces the old with the next generation number."""
        return self._generation

    @property
    def last_zxid(self) -> int:
        """The zxid of the last record, 0 if the log holds none."""
        for segment in reversed(self._segments):
            if segment.last_zxid:
                return segment.last_zxid
        return 0

    def bytes_used(self) -> int:
        """Bytes of the segment files written so far (headers and records)."""
        return sum(segment.end for segment in self._segments)

    def read(self, after_zxid: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        """Records with zxid > `after_zxid`, ascending, at most `limit` of them."""
        out: list[tuple[int, bytes]] = []
        if limit == 0:
            return out
        for segment in self._segments:
            if segment.last_zxid <= after_zxid:
                continue
            try:
                records = _records(segment)
            except FileNotFoundError:
                if segment in self._segments:
                    raise
                continue  # removed meanwhile (`remove_before`): its records are no longer kept
            for zxid, payload in records:
                if zxid > after_zxid:
                    out.append((zxid, payload))
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    # ------------------------------------------------------------------ writing

    def append(self, entries: Sequence[tuple[int, bytes]]) -> None:
        """Write `entries` (zxids ascending, above `last_zxid`; the caller checks) and sync them.

        One write and one fdatasync, unless the batch fills the segment: then the part that fits
        is synced before the next segment is created and the rest goes there. Each record
        carries the offset where its part of the batch begins (see the module's docstring).
        """
        fd = self._live()
        segment = self._segments[-1]
        offset = batch = segment.end
        pieces: list[bytes] = []
        first, last = segment.first_zxid, segment.last_zxid
        seed = self._salt ^ batch
        pack, crc32 = _RECORD_HEADER.pack, zlib.crc32
        for zxid, payload in entries:
            size = _RECORD_SIZE + len(payload)
            if offset + size > self._capacity and offset > _HEADER_SIZE:
                self._write_and_publish(fd, pieces, segment, offset, first, last)
                fd = self._roll()
                segment = self._segments[-1]
                offset = batch = _HEADER_SIZE
                pieces, first, seed = [], 0, self._salt ^ batch
            crc = crc32(payload, crc32(zxid.to_bytes(8, "big"), seed))
            pieces.append(pack(_RECORD_MARK, len(payload), batch, zxid, crc))
            pieces.append(payload)
            offset += size
            first = first or zxid
            last = zxid
        self._write_and_publish(fd, pieces, segment, offset, first, last)

    def first_kept_seq(self, zxid: int) -> int:
        """The first segment that `remove_before` keeps when records <= `zxid` are no longer
        needed: the first one (never the last) holding a later record."""
        segments = self._segments
        keep = 0
        while keep < len(segments) - 1 and segments[keep].last_zxid <= zxid:
            keep += 1
        return segments[keep].seq

    def remove_before(self, seq: int) -> None:
        """Delete the segments numbered below `seq`, oldest first (a crash leaves no gap)."""
        with self._lock:
            segments = self._segments
            self._segments = tuple(segment for segment in segments if segment.seq >= seq)
        for segment in segments:
            if segment.seq < seq:
                segment.path.unlink(missing_ok=True)
                fsync_dir(self._directory)

    def close(self) -> None:
        """Seal the last segment as closed cleanly (so that damage to its last batch is told
        from a torn write at the next open), then close it. Idempotent. A seal that fails
        leaves the segment as a crash would: still correct."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            _seal(fd, self._generation, self._segments[-1], _CLOSED)
        except OSError:
            pass  # a failing disk: the next open treats the segment as after a crash
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ helpers

    def _live(self) -> int:
        if self._fd is None:
            raise OSError(f"the log in {self._directory} is closed")
        return self._fd

    def _write_and_publish(
        self, fd: int, pieces: list[bytes], segment: _Segment, end: int, first: int, last: int
    ) -> None:
        if not pieces:
            return
        data = b"".join(pieces)
        _write_all(fd, data, segment.end)
        self._zero_ahead_of(fd, end)
        if self._sync:
            os.fdatasync(fd)
        with self._lock:
            self._segments = (
                *self._segments[:-1],
                # not dataclasses.replace: it costs microseconds on every write
                _Segment(segment.seq, segment.path, end, first, last, segment.size, segment.mark),
            )

    def _zero_ahead_of(self, fd: int, end: int) -> None:
        """Write zeros over the preallocated space ahead of `end` before the records reach it.

        `posix_fallocate` reserves the space as unwritten extents, and on ext4 and XFS the
        first write into one changes the file's extent map, so each fdatasync that covers
        such a write also commits the file system's journal, which made such syncs markedly
        slower (docs/decisions/0001). Zeros are what a reader already finds past the end, so
        writing them changes nothing a reader or a crash can see; they go in chunks, half a
        chunk ahead, to make the one sync in many that carries them only a little longer.
        """
        if not self._zero_ahead or end + self._zero_ahead // 2 <= self._zeroed_end:
            return
        start = max(self._zeroed_end, end)
        stop = min(self._capacity, start + self._zero_ahead)
        if start >= stop:
            return  # the segment is written (or its one record outgrew it)
        _write_all(fd, bytes(stop - start), start)
        self._zeroed_end = stop

    def _start_fresh_segment(self) -> None:
        """After opening: seal a segment a crash left unsealed before the last one, then append
        to a new segment. A last segment without a record is replaced rather than followed:
        restarts of an idle member would otherwise pile up empty preallocated files."""
        segments = self._segments
        if len(segments) > 1 and segments[-2].mark == _UNSEALED:
            _seal_file(segments[-2], self._generation, _SEALED)
        self._roll(replace_last=segments[-1].first_zxid == 0)

    def _roll(self, *, replace_last: bool = False) -> int:
        """Start the next segment (the current one is synced) and return its descriptor; with
        `replace_last`, a fresh file takes the place of the last segment (which holds no record)."""
        last = self._segments[-1]
        seq = last.seq + (0 if replace_last else 1)
        path = _create_segment(self._directory, self._generation, seq, self._segment_bytes)
        fd = os.open(path, os.O_RDWR)
        old, self._fd = self._fd, fd
        if old is not None:
            try:
                if not replace_last:
                    # the next segment is durable: losing it is now detectable
                    _seal(old, self._generation, last, _SEALED)
            finally:
                os.close(old)
        self._capacity = self._segment_bytes
        self._salt = _salt(self._generation, seq)
        self._zeroed_end = _HEADER_SIZE
        segment = _Segment(seq, path, _HEADER_SIZE, 0, 0, self._segment_bytes)
        with self._lock:
            kept = self._segments[:-1] if replace_last else self._segments
            if not replace_last:
                kept = (*kept[:-1], replace(last, mark=_SEALED))
            self._segments = (*kept, segment)
        return fd


def remove_other_generations(directory: Path, generation: int) -> None:
    """Delete the segment files of every generation but `generation`, and unfinished ones."""
    removed = False
    for name in os.listdir(directory):
        match = _NAME.fullmatch(name)
        unfinished = match is None and name.endswith(_TMP_SUFFIX)
        if unfinished or (match is not None and int(match[1], 16) != generation):
            os.unlink(directory / name)
            removed = True
    if removed:
        fsync_dir(directory)


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """One segment of a log, as `describe_segments` found it."""

    seq: int
    first_zxid: int  # 0 if it holds no record
    last_zxid: int
    bytes_used: int  # its header and records
    sealed: bool  # sealed or closed cleanly (see the module docstring)


def describe_segments(directory: Path, generation: int, first_seq: int) -> list[SegmentSummary]:
    """The segments of a log, checked as `SegmentLog.open` checks them, without writing
    anything (LogDamagedError if they do not check out)."""
    segments, _stale, _torn = _check_segments(directory, generation, first_seq)
    return [
        SegmentSummary(s.seq, s.first_zxid, s.last_zxid, s.end, s.mark != _UNSEALED)
        for s in segments
    ]


def _check_segments(
    directory: Path, generation: int, first_seq: int
) -> tuple[list[_Segment], list[int], bool]:
    """Every segment of `generation` from `first_seq` on, checked; the older ones left by a
    removal; and whether the last ends in the remains of a torn write."""
    found = _segment_seqs(directory, generation)
    stale = [seq for seq in found if seq < first_seq]
    seqs = found[len(stale) :]
    if not seqs or seqs[0] != first_seq:
        raise LogDamagedError(
            f"{directory} is missing segment {first_seq} of log generation {generation}"
        )
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise LogDamagedError(f"segments of {directory} are missing: found numbers {seqs}")
    segments: list[_Segment] = []
    last_zxid = 0
    torn = False
    for seq in seqs:
        segment, torn = _scan(directory / segment_name(generation, seq), generation, seq, last_zxid)
        last_zxid = segment.last_zxid or last_zxid
        segments.append(segment)
    _check_seals(segments, generation)
    return segments, stale, torn


def _segment_seqs(directory: Path, generation: int) -> list[int]:
    """Sequence numbers of `generation`'s segments, ascending."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        raise LogDamagedError(f"the log directory {directory} is missing") from None
    seqs = []
    for name in names:
        match = _NAME.fullmatch(name.removesuffix(_TMP_SUFFIX))
        if match is None:
            raise LogDamagedError(f"{directory / name} is not a log segment")
        if not name.endswith(_TMP_SUFFIX) and int(match[1], 16) == generation:
            seqs.append(int(match[2], 16))
    return sorted(seqs)


def _header(generation: int, seq: int, size: int, seal: tuple[int, int, int]) -> bytes:
    """The segment header: fixed fields, the seal, the CRC of both, padding."""
    head = _SEGMENT_HEADER.pack(_MAGIC, generation, seq, size) + _SEAL.pack(*seal)
    crc = zlib.crc32(head).to_bytes(_CRC_SIZE, "big")
    return (head + crc).ljust(_HEADER_SIZE, b"\x00")


def _create_segment(directory: Path, generation: int, seq: int, size: int) -> Path:
    """Write a preallocated segment under a temporary name, sync it, rename it into place."""
    path = directory / segment_name(generation, seq)
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, _header(generation, seq, size, (_UNSEALED, 0, 0)), 0)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as err:
            if err.errno not in _FALLOCATE_UNSUPPORTED:
                raise  # a full disk above all: say so now, not at a later write
            os.ftruncate(fd, size)  # a file system without fallocate: sparse, still correct
        os.fsync(fd)
    except BaseException:
        # a failed preallocation may keep what it got: give a full disk its space back
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory)
    return path


def _check_seals(segments: list[_Segment], generation: int) -> None:
    """Only the last segment may be unsealed, or the one before an empty last one (a crash
    between creating a segment and sealing the one before it); a sealed one must be followed."""
    last = segments[-1]
    if last.mark == _SEALED:
        raise LogDamagedError(
            f"{last.path.parent} is missing segment {last.seq + 1} of log generation "
            f"{generation}: {last.path.name} was sealed when it was created, and it may "
            "have held acknowledged records"
        )
    for index, segment in enumerate(segments[:-1]):
        if segment.mark != _UNSEALED:
            continue
        if index != len(segments) - 2 or last.first_zxid:
            raise LogDamagedError(
                f"{segment.path} was never sealed, yet a later segment holds records: a "
                "damaged header, or segments that do not belong together"
            )


def _scan(path: Path, generation: int, seq: int, previous: int) -> tuple[_Segment, bool]:
    """Check one segment's header and records and find its end; also say whether it ends in
    anything but zeros (the remains of a torn write). `previous` is the zxid of the record
    before it (0: none)."""
    with open(path, "rb") as file:
        fd = file.fileno()
        size = os.fstat(fd).st_size
        if size < _HEADER_SIZE:
            raise LogDamagedError(f"{path} is {size} bytes long, shorter than a segment header")
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
            declared, mark, sealed_end, sealed_last = _read_header(view, path, generation, seq)
            if size < declared:
                raise LogDamagedError(
                    f"{path} is {size} bytes long, shorter than the {declared} it was "
                    "preallocated to: it was truncated"
                )
            walk = _Walk(view, path, _salt(generation, seq), previous)
            if mark != _UNSEALED:
                walk.run(min(sealed_end, size))
                if walk.end != sealed_end:
                    raise walk.damage(f"its seal says its records end at offset {sealed_end}")
                if (walk.last if walk.first else 0) != sealed_last:
                    raise LogDamagedError(
                        f"{path}: its last record has zxid {walk.last:#x}, its seal says "
                        f"{sealed_last:#x}"
                    )
                torn = False
            else:
                walk.run(size)
                torn = walk.accept_end(declared)
                _refuse_later_batch(view, fd, path, walk.end, walk.last or previous, walk.salt)
    last = walk.last if walk.first else 0
    return _Segment(seq, path, walk.end, walk.first, last, declared, mark), torn


def _read_header(
    view: mmap.mmap, path: Path, generation: int, seq: int
) -> tuple[int, int, int, int]:
    """(preallocated size, seal mark, sealed end, sealed last zxid) from a checked header."""
    magic, found_generation, found_seq, declared = _SEGMENT_HEADER.unpack_from(view, 0)
    if (magic, found_generation, found_seq) != (_MAGIC, generation, seq):
        raise LogDamagedError(f"{path} does not start with its segment header")
    crc = int.from_bytes(view[_CRC_AT : _CRC_AT + _CRC_SIZE], "big")
    if zlib.crc32(view[:_CRC_AT]) != crc:
        raise LogDamagedError(f"{path}: its segment header fails its checksum")
    mark, end, last = _SEAL.unpack_from(view, _SEAL_AT)
    if mark not in (_UNSEALED, _SEALED, _CLOSED):
        raise LogDamagedError(f"{path}: its segment header has an unknown seal {mark:#x}")
    return declared, mark, end, last


class _Walk:
    """Reading one segment's records from its header on, as far as they verify."""

    __slots__ = ("end", "first", "last", "path", "salt", "view")

    def __init__(self, view: mmap.mmap, path: Path, salt: int, previous: int) -> None:
        self.view = view
        self.path = path
        self.salt = salt
        self.end = _HEADER_SIZE
        self.first = 0
        self.last = previous

    def run(self, limit: int) -> None:
        """Advance `end` over the records that verify and end by `limit`."""
        view, offset, last, salt = self.view, self.end, self.last, self.salt
        unpack, crc32 = _RECORD_HEADER.unpack_from, zlib.crc32
        while offset + _RECORD_SIZE <= limit:
            marker, length, batch, zxid, crc = unpack(view, offset)
            start = offset + _RECORD_SIZE
            stop = start + length
            if marker != _RECORD_MARK or stop > limit or not _HEADER_SIZE <= batch <= offset:
                break
            if crc32(view[start:stop], crc32(zxid.to_bytes(8, "big"), salt ^ batch)) != crc:
                break
            if not follows(last, zxid):
                raise LogDamagedError(
                    f"{self.path}: the record at offset {offset} has zxid {zxid:#x}, which "
                    f"cannot follow {last:#x}: records are missing or out of order"
                )
            self.first = self.first or zxid
            last = zxid
            offset = stop
        self.end, self.last = offset, last

    def damage(self, why: str) -> LogDamagedError:
        return LogDamagedError(
            f"{self.path}: the record at offset {self.end} is damaged ({self.describe()}), "
            f"and {why}"
        )

    def describe(self) -> str:
        view, offset = self.view, self.end
        header = view[offset : offset + _RECORD_SIZE]
        if len(header) < _RECORD_SIZE:
            return "its header is cut off by the end of the file"
        if not header.strip(b"\x00"):
            return "its header is all zeros"
        marker, length, batch, _zxid, _crc = _RECORD_HEADER.unpack(header)
        if marker != _RECORD_MARK:
            return "it has no record header"
        if offset + _RECORD_SIZE + length > len(view):
            return f"its length {length} runs past the end of the file ({len(view)} bytes)"
        if not _HEADER_SIZE <= batch <= offset:
            return f"its batch offset {batch} is impossible"
        return "it fails its checksum"

    def accept_end(self, declared: int) -> bool:
        """Whether the walk's end in an unsealed segment may be a torn write (raise if it is
        damage); True if anything but zeros lies there (the remains of the torn batch)."""
        view, offset = self.view, self.end
        size = len(view)
        header = view[offset : offset + _RECORD_SIZE]
        if not header.strip(b"\x00"):
            return False  # a clean end, or a torn batch's first header that never got written
        span = offset + _RECORD_SIZE
        if len(header) == _RECORD_SIZE and header[:4] == _RECORD_MARK:
            span += int.from_bytes(header[4:8], "big")
            if span > size:
                if offset == _HEADER_SIZE and span > declared:
                    return True  # one record outgrew the segment: the file's growth was torn
                raise self.damage("a torn write never runs past the end of a file")
        if not _unwritten_sector(view, offset, min(span, size)):
            raise self.damage("every sector of it was written, so it is not a torn write")
        return True


def _refuse_later_batch(
    view: mmap.mmap, fd: int, path: Path, end: int, last_zxid: int, salt: int
) -> None:
    """Raise if a record past `end` verifies and was written by a batch begun after `end`: the
    batch before it was synced (and acknowledged) first, so `end` is damage, not a torn write.

    Only the data the file holds is searched (SEEK_DATA/SEEK_HOLE skip its unwritten
    preallocated space), for record markers, whose records are then checked.
    """
    size = len(view)
    position = end + 1
    while position < size:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        except OSError as err:
            if err.errno == errno.ENXIO:
                return  # nothing but holes from here
            data, hole = position, size  # no SEEK_DATA here: search it all
        at = view.find(_RECORD_MARK, data, hole)
        while at != -1:
            zxid = _later_record(view, at, end, last_zxid, salt)
            if zxid:
                raise LogDamagedError(
                    f"{path}: the records end at offset {end}, yet the record at offset {at} "
                    f"(zxid {zxid:#x}) verifies and was written after that end was synced: "
                    f"the log is damaged at offset {end}"
                )
            at = view.find(_RECORD_MARK, at + 1, hole)
        position = hole


def _later_record(view: mmap.mmap, at: int, end: int, last_zxid: int, salt: int) -> int:
    """The zxid of the record at `at` if it verifies, follows `last_zxid` and belongs to a
    batch begun after `end`; 0 otherwise."""
    start = at + _RECORD_SIZE
    if start > len(view):
        return 0
    _marker, length, batch, zxid, crc = _RECORD_HEADER.unpack_from(view, at)
    stop = start + length
    if not end < batch <= at or zxid <= last_zxid or stop > len(view):
        return 0
    seed = zlib.crc32(zxid.to_bytes(8, "big"), salt ^ batch)
    return zxid if zlib.crc32(view[start:stop], seed) == crc else 0


def _unwritten_sector(view: mmap.mmap | bytes, start: int, end: int) -> bool:
    """Whether some sector's share of [start, end) is all zeros: a write that never reached the
    disk (segments are preallocated with zeros). A record that fails its checksum with every
    sector written is damage, not a torn write, and acknowledged records may follow it."""
    at = start
    while at < end:
        stop = min(end, (at // _SECTOR + 1) * _SECTOR)
        if not view[at:stop].strip(b"\x00"):
            return True
        at = stop
    return False


def _records(segment: _Segment) -> list[tuple[int, bytes]]:
    """The records of a checked segment, up to its published end."""
    with open(segment.path, "rb") as file:
        data = os.pread(file.fileno(), segment.end - _HEADER_SIZE, _HEADER_SIZE)
    records = []
    offset, unpack = 0, _RECORD_HEADER.unpack_from
    while offset < len(data):
        _marker, length, _batch, zxid, _crc = unpack(data, offset)
        start = offset + _RECORD_SIZE
        records.append((zxid, data[start : start + length]))
        offset = start + length
    return records


def _seal(fd: int, generation: int, segment: _Segment, mark: int) -> None:
    """Write a segment's seal (where its records end, `mark`) into its header, durably."""
    header = _header(generation, segment.seq, segment.size, (mark, segment.end, segment.last_zxid))
    _write_all(fd, header[_SEAL_AT:_HEADER_SIZE], _SEAL_AT)
    os.fdatasync(fd)


def _seal_file(segment: _Segment, generation: int, mark: int) -> None:
    fd = os.open(segment.path, os.O_RDWR)
    try:
        _seal(fd, generation, segment, mark)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- the format 2 layout

_LEGACY_MAGIC: Final = b"ZKPYWAL1"
_LEGACY_HEADER: Final = struct.Struct(">8sQQQ")  # magic, generation, seq, sealed mark
_LEGACY_RECORD: Final = struct.Struct(">IIQ")  # payload length, CRC-32, zxid


def read_legacy_log(directory: Path, generation: int, first_seq: int) -> list[tuple[int, bytes]]:
    """Every record of a log written in the older segment layout, by that layout's rules: a
    segment ends at its first record header of zeros or one that does not verify, unless that
    record's sectors were all written (damage). Used once, to rewrite the log."""
    seqs = [seq for seq in _segment_seqs(directory, generation) if seq >= first_seq]
    if not seqs or seqs != list(range(first_seq, first_seq + len(seqs))):
        raise LogDamagedError(f"segments of {directory} are missing: found numbers {seqs}")
    out: list[tuple[int, bytes]] = []
    for seq in seqs:
        path = directory / segment_name(generation, seq)
        data = path.read_bytes()
        if len(data) < _LEGACY_HEADER.size or _LEGACY_HEADER.unpack_from(data)[:3] != (
            _LEGACY_MAGIC,
            generation,
            seq,
        ):
            raise LogDamagedError(f"{path} does not start with its segment header")
        out.extend(_legacy_records(data, path, _salt(generation, seq)))
    for (previous, _), (zxid, _) in itertools.pairwise(out):
        if zxid <= previous:
            raise LogDamagedError(f"{directory}: zxid {zxid:#x} follows {previous:#x}")
    return out


def _legacy_records(data: bytes, path: Path, salt: int) -> list[tuple[int, bytes]]:
    records = []
    offset = _LEGACY_HEADER.size
    while offset + _LEGACY_RECORD.size <= len(data):
        length, crc, zxid = _LEGACY_RECORD.unpack_from(data, offset)
        start = offset + _LEGACY_RECORD.size
        if (length, crc, zxid) == (0, 0, 0) or start + length > len(data):
            break
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(zxid.to_bytes(8, "big"), salt)) != crc:
            if not _unwritten_sector(data, offset, start + length):
                raise LogDamagedError(f"{path}: the record at offset {offset} fails its checksum")
            break
        records.append((zxid, payload))
        offset = start + length
    return records
