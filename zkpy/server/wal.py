"""The proposal log: append-only segment files, one write and one fdatasync per batch.

Every write on the path of a client's request waits for this log to reach the disk, on the
leader and on a quorum of followers. On the reference machine an LMDB transaction holding one
entry commits in ~0.28 ms (several page writes and two syncs) and costs ~0.13 ms of CPU; a write
into a preallocated file followed by ``fdatasync`` takes ~0.10 ms and ~0.05 ms of CPU. So the log
lives in segment files, and LMDB keeps what is written rarely and read by key: the checkpointed
tree, the sessions and the metadata, including which *generation* of segment files is the log
(see :mod:`zkpy.server.storage`).

A segment is ``<generation:016x>-<seq:016x>.wal`` in the ``wal/`` directory, preallocated to
``segment_bytes`` and written with zeros a little ahead of its records (``_zero_ahead_of``), so
that a sync flushes data only, not the file system's journal. It starts with a 32-byte header
(magic, generation, seq, sealed mark) and holds records back to back, each a 16-byte header
(payload length u32, CRC-32 u32, zxid u64, all big-endian) followed by the payload. The CRC
covers the segment's generation and sequence number, the zxid and the payload, so bytes left
over from an older use of a file never verify.

A segment ends at its first record header that is all zeros or does not verify. Only the batch
being written when the machine stopped can be cut there, and it was never acknowledged
(acknowledgements follow the fdatasync); a record that fails its checksum although every
512-byte sector of it was written is damage, not a torn write, and is refused. Opening always
starts a new segment for what comes next, so later records are never written next to the
remains of a torn batch (which could otherwise verify again, after a new record of the same
length); a torn end also gets its record header zeroed. A segment is only created (under a
temporary name, then renamed) after the one before it is synced, so every other segment must end
cleanly (a zero header, or its last byte), and segments are numbered without gaps from the first
one the log still needs (which the caller records): anything else is damage. Once the next
segment exists (created and synced), a segment's header is marked sealed: a last segment found
sealed means the newest one was lost, with whatever acknowledged records it held, and is
refused as well. (A crash between the two steps leaves an unsealed segment followed by an empty
one: fine.) Opening reads the records only, never a segment's preallocated zeros.
"""

from __future__ import annotations

import errno
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
    "fsync_dir",
    "remove_other_generations",
]

SEGMENT_BYTES: Final = 64 << 20
MIN_SEGMENT_BYTES: Final = 1 << 20  # smaller segments would roll (create + fsync) too often
MAX_SEGMENT_BYTES: Final = 1 << 30
ZERO_AHEAD_BYTES: Final = 256 << 10

_MAGIC: Final = b"ZKPYWAL1"
_SEGMENT_HEADER: Final = struct.Struct(">8sQQQ")  # magic, generation, seq, sealed mark
_SEALED_AT: Final = 24  # the offset of the sealed mark
_SEALED: Final = 0x5345414C4544  # "SEALED"; 0 while the segment is the last one
_RECORD_HEADER: Final = struct.Struct(">IIQ")
_HEADER_SIZE: Final = _SEGMENT_HEADER.size
_RECORD_SIZE: Final = _RECORD_HEADER.size
_EMPTY_RECORD: Final = bytes(_RECORD_SIZE)
_SECTOR: Final = 512  # the unit a disk writes whole, or not at all
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


def segment_name(generation: int, seq: int) -> str:
    return f"{generation:016x}-{seq:016x}.wal"


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
        self._capacity = max(os.fstat(self._fd).st_size, segment_bytes)
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
        for index, seq in enumerate(seqs):
            is_last = index == len(seqs) - 1
            segment, torn = _scan(
                directory / segment_name(generation, seq), generation, seq, is_last
            )
            if segment.first_zxid and segment.first_zxid <= last_zxid:
                raise LogDamagedError(
                    f"{segment.path.name} starts at zxid {segment.first_zxid:#x}, not after "
                    f"{last_zxid:#x}"
                )
            last_zxid = segment.last_zxid or last_zxid
            segments.append(segment)
        if torn:  # a batch torn by a crash: end the segment cleanly before it
            _write_zero_header(segments[-1].path, segments[-1].end)
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
            # a last segment without a record is replaced rather than followed: restarts of an
            # idle member would otherwise pile up empty preallocated files
            log._roll(replace_last=segments[-1].first_zxid == 0)
        return log

    # ------------------------------------------------------------------ reading

    @property
    def generation(self) -> int:
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
        is synced before the next segment is created and the rest goes there.
        """
        fd = self._live()
        segment = self._segments[-1]
        offset = segment.end
        pieces: list[bytes] = []
        first, last = segment.first_zxid, segment.last_zxid
        salt = self._salt
        pack, crc32 = _RECORD_HEADER.pack, zlib.crc32
        for zxid, payload in entries:
            size = _RECORD_SIZE + len(payload)
            if offset + size > self._capacity and offset > _HEADER_SIZE:
                self._write_and_publish(fd, pieces, segment, offset, first, last)
                fd = self._roll()
                segment = self._segments[-1]
                offset, pieces, first, salt = _HEADER_SIZE, [], 0, self._salt
            crc = crc32(payload, crc32(zxid.to_bytes(8, "big"), salt))
            pieces.append(pack(len(payload), crc, zxid))
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
        fd, self._fd = self._fd, None
        if fd is not None:
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
                replace(segment, end=end, first_zxid=first, last_zxid=last),
            )

    def _zero_ahead_of(self, fd: int, end: int) -> None:
        """Write zeros over the preallocated space ahead of `end` before the records reach it.

        `posix_fallocate` reserves the space as unwritten extents, and on ext4 and XFS the
        first write into one changes the file's extent map, so each fdatasync that covers
        such a write also commits the file system's journal: a sync of a 20 KiB batch took
        170-180 us and 70 us of CPU that way, 105-130 us and 50 us once the space had been
        written (the same machine). Zeros are what a reader already finds past the end, so
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

    def _roll(self, *, replace_last: bool = False) -> int:
        """Start the next segment (the current one is synced) and return its descriptor; with
        `replace_last`, a fresh file takes the place of the last segment (which holds no record)."""
        seq = self._segments[-1].seq + (0 if replace_last else 1)
        path = _create_segment(self._directory, self._generation, seq, self._segment_bytes)
        fd = os.open(path, os.O_RDWR)
        old, self._fd = self._fd, fd
        if old is not None:
            try:
                if not replace_last:
                    _seal(old)  # the next segment is durable: losing it is now detectable
            finally:
                os.close(old)
        self._capacity = max(os.fstat(fd).st_size, self._segment_bytes)
        self._salt = _salt(self._generation, seq)
        self._zeroed_end = _HEADER_SIZE
        with self._lock:
            kept = self._segments[:-1] if replace_last else self._segments
            self._segments = (*kept, _Segment(seq, path, _HEADER_SIZE, 0, 0))
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


def _create_segment(directory: Path, generation: int, seq: int, size: int) -> Path:
    """Write a preallocated segment under a temporary name, sync it, rename it into place."""
    path = directory / segment_name(generation, seq)
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, _SEGMENT_HEADER.pack(_MAGIC, generation, seq, 0), 0)
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


def _scan(path: Path, generation: int, seq: int, is_last: bool) -> tuple[_Segment, bool]:
    """Check one segment's header and records and find its end; also say whether the end is
    torn (allowed in the last segment only)."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size < _HEADER_SIZE:
            raise LogDamagedError(f"{path} is {size} bytes long, shorter than a segment header")
        with mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) as view:
            magic, found_generation, found_seq, mark = _SEGMENT_HEADER.unpack_from(view, 0)
            if (magic, found_generation, found_seq) != (_MAGIC, generation, seq):
                raise LogDamagedError(f"{path} does not start with its segment header")
            if mark == _SEALED and is_last:
                raise LogDamagedError(
                    f"{path.parent} is missing segment {seq + 1} of log generation "
                    f"{generation}: {path.name} was sealed when it was created, and it may "
                    "have held acknowledged records"
                )
            end, first, last = _verify_records(view, path, _salt(generation, seq))
            after = view[end : end + _RECORD_SIZE]
            torn = after != _EMPTY_RECORD[: len(after)]
    if torn and not is_last:
        raise LogDamagedError(f"{path} holds a damaged record at offset {end}")
    return _Segment(seq, path, end, first, last), torn


def _verify_records(view: mmap.mmap, path: Path, salt: int) -> tuple[int, int, int]:
    """Walk the records that verify; return (end offset, first zxid, last zxid)."""
    size = len(view)
    offset, first, last = _HEADER_SIZE, 0, 0
    unpack, crc32 = _RECORD_HEADER.unpack_from, zlib.crc32
    while offset + _RECORD_SIZE <= size:
        length, crc, zxid = unpack(view, offset)
        start = offset + _RECORD_SIZE
        if length == 0 and crc == 0 and zxid == 0:
            break
        if start + length > size:
            break
        payload = view[start : start + length]
        if crc32(payload, crc32(zxid.to_bytes(8, "big"), salt)) != crc:
            if not _unwritten_sector(view, offset, start + length):
                raise LogDamagedError(f"{path}: the record at offset {offset} fails its checksum")
            break  # a torn write: a sector of the record never reached the disk
        if zxid <= last:
            raise LogDamagedError(f"{path}: zxid {zxid:#x} follows {last:#x}")
        first = first or zxid
        last = zxid
        offset = start + length
    return offset, first, last


def _unwritten_sector(view: mmap.mmap, start: int, end: int) -> bool:
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
        length, _crc, zxid = unpack(data, offset)
        start = offset + _RECORD_SIZE
        records.append((zxid, data[start : start + length]))
        offset = start + length
    return records


def _seal(fd: int) -> None:
    """Mark a segment sealed (its successor exists), durably."""
    _write_all(fd, _SEALED.to_bytes(8, "big"), _SEALED_AT)
    os.fdatasync(fd)


def _write_zero_header(path: Path, offset: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        _write_all(fd, _EMPTY_RECORD, offset)
        os.fsync(fd)
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
