"""Tests of the proposal log's segment files (zkpy.server.wal) through Storage: rolling,
trimming, torn and damaged segments, generation switches and the upgrade from format 1."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import zkpy.server.wal as wal_module
from zkpy import connect
from zkpy.server.config import ServerConfig, load_config
from zkpy.server.storage import FORMAT_VERSION, Storage, StorageError, StorageFormatError
from zkpy.server.wal import SegmentLog, segment_name
from zkpy.testing import running_server

SMALL = 4096  # bytes per segment: a few dozen records


def segments(data_dir: Path) -> list[str]:
    return sorted(os.listdir(data_dir / "wal"))


def snapshot(path: Path) -> dict[str, str]:
    out = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def entries(first: int, last: int, size: int = 100) -> list[tuple[int, bytes]]:
    return [(z, b"%08d" % z + b"." * (size - 8)) for z in range(first, last + 1)]


def unseal(path: Path) -> None:
    """Write a segment's header back as it was while the segment was written to: no seal."""
    data = bytearray(path.read_bytes())
    _magic, generation, seq, size = struct.unpack_from(">8sQQQ", data)
    data[: wal_module._HEADER_SIZE] = wal_module._header(generation, seq, size, (0, 0, 0))
    path.write_bytes(bytes(data))


def as_after_a_crash(data_dir: Path) -> None:
    """Undo the seal a clean close wrote into the last segment: the log as a crash left it."""
    unseal(data_dir / "wal" / segments(data_dir)[-1])


def corrupt(path: Path, marker: bytes) -> None:
    """Flip one byte inside the record whose payload starts with `marker`: damage."""
    data = bytearray(path.read_bytes())
    at = data.index(marker)
    data[at + 3] ^= 0xFF
    path.write_bytes(bytes(data))


def lose_sector(path: Path, marker: bytes) -> None:
    """Zero a whole 512-byte sector inside the record whose payload starts with `marker`: a
    write torn by a crash, the sector never having reached the disk."""
    data = bytearray(path.read_bytes())
    at = data.index(marker)
    sector = (at // 512 + 1) * 512
    data[sector : sector + 512] = bytes(512)
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------- segments


def test_segments_roll_and_read_back_in_order(tmp_path: Path) -> None:
    log = entries(1, 300)
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        for start in range(0, 300, 37):  # batches that straddle segment ends
            s.append(log[start : start + 37])
        assert s.read_log(0) == log
    names = segments(tmp_path)
    assert len(names) >= 300 * 116 // SMALL
    assert names == [segment_name(1, seq) for seq in range(1, len(names) + 1)]
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        assert s.load().log == log
        assert s.read_log(150, limit=5) == log[150:155]
        assert s.last_logged_zxid() == 300


def test_a_record_bigger_than_a_segment_is_kept_whole(tmp_path: Path) -> None:
    big = os.urandom(3 * SMALL)
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append([(1, b"small")])
        s.append([(2, big), (3, b"after")])
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        assert s.load().log == [(1, b"small"), (2, big), (3, b"after")]


def test_checkpoint_deletes_whole_segments_below_the_kept_log(tmp_path: Path) -> None:
    log = entries(1, 300)
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(log)
        before = segments(tmp_path)
        s.checkpoint(250, [], [], [], [], keep_log_after=200)
        after = segments(tmp_path)
        assert s.read_log(0) == log[200:]
        assert s.first_logged_zxid() == 201
    assert len(after) < len(before)
    assert after == before[len(before) - len(after) :]  # the oldest ones went
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        assert s.read_log(0) == log[200:]
        assert s.load().log == log[250:]
        s.checkpoint(300, [], [], [], [], keep_log_after=300)
        assert s.read_log(0) == []
        assert s.last_logged_zxid() == 300
    assert len(segments(tmp_path)) == 1  # the last segment is always kept


# ---------------------------------------------------------------------------- crashes, damage


def test_a_torn_batch_is_cut_off_and_never_comes_back(tmp_path: Path) -> None:
    five, six = (5, b"%08d" % 5 + os.urandom(1500)), (6, b"%08d" % 6 + b"." * 92)
    with Storage.open(tmp_path) as s:
        s.append(entries(1, 4))
        s.append([five, six])  # a crash tore this batch: a sector of 5 never reached the disk
    as_after_a_crash(tmp_path)
    lose_sector(tmp_path / "wal" / segment_name(1, 1), b"%08d" % 5)
    with Storage.open(tmp_path) as s:
        assert s.load().log == entries(1, 4)
        # A new record 5 of the same length would end exactly where the torn record 6 begins:
        # record 6 must not come back as a proposal nobody made in this history.
        s.append([(5, b"new five".ljust(len(five[1]), b"!"))])
    with Storage.open(tmp_path) as s:
        assert s.load().log == [*entries(1, 4), (5, b"new five".ljust(len(five[1]), b"!"))]


def test_a_lost_first_header_of_a_torn_batch_hides_nothing(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append(entries(1, 4))
        s.append(entries(5, 6))  # torn: the sector with record 5's header was lost
    as_after_a_crash(tmp_path)
    path = tmp_path / "wal" / segment_name(1, 1)
    data = bytearray(path.read_bytes())
    header = data.index(b"%08d" % 5) - 24
    data[header : header + 24] = bytes(24)
    path.write_bytes(bytes(data))
    with Storage.open(tmp_path) as s:
        assert s.load().log == entries(1, 4)
        s.append(entries(5, 5))  # the same bytes as before: they end where record 6 begins
    with Storage.open(tmp_path) as s:
        assert s.load().log == entries(1, 5)  # and record 6 stays gone


def test_restarts_of_an_idle_log_do_not_pile_up_segments(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append(entries(1, 3))
    for _ in range(5):
        with Storage.open(tmp_path) as s:
            assert s.load().log == entries(1, 3)
    assert len(segments(tmp_path)) == 2  # the records' segment and one fresh, empty one


@pytest.mark.parametrize(
    "segment_bytes", [wal_module.SEGMENT_BYTES, SMALL], ids=["last-segment", "earlier-segment"]
)
def test_a_fully_written_record_failing_its_checksum_is_refused_untouched(
    tmp_path: Path, segment_bytes: int
) -> None:
    # record 10 is in the only (so the last) segment, or in the first of several small ones;
    # records after it were acknowledged, so this is damage, not a torn write
    with Storage.open(tmp_path, segment_bytes=segment_bytes) as s:
        s.append(entries(1, 100))
    corrupt(tmp_path / "wal" / segment_name(1, 1), b"%08d" % 10)
    before = snapshot(tmp_path)
    with pytest.raises(StorageFormatError, match="fails its checksum"):
        Storage.open(tmp_path, segment_bytes=segment_bytes)
    assert snapshot(tmp_path) == before


def write_in_batches(data_dir: Path, last: int = 100, batch: int = 10) -> None:
    with Storage.open(data_dir, segment_bytes=wal_module.MIN_SEGMENT_BYTES) as s:
        for first in range(1, last + 1, batch):
            s.append(entries(first, min(last, first + batch - 1)))


def record_offset(path: Path, zxid: int) -> int:
    """Where the header of the record with payload `entries` gave `zxid` begins."""
    return path.read_bytes().index(b"%08d" % zxid) - 24


def reopen_refused(data_dir: Path, message: str) -> None:
    before = snapshot(data_dir)
    with pytest.raises(StorageFormatError, match=message):
        Storage.open(data_dir, segment_bytes=wal_module.MIN_SEGMENT_BYTES)
    assert snapshot(data_dir) == before


@pytest.mark.parametrize("crashed", [True, False], ids=["after-a-crash", "after-a-clean-stop"])
def test_a_length_past_the_end_of_the_file_mid_segment_is_refused(
    tmp_path: Path, crashed: bool
) -> None:
    write_in_batches(tmp_path)
    if crashed:
        as_after_a_crash(tmp_path)
    path = tmp_path / "wal" / segment_name(1, 1)
    data = bytearray(path.read_bytes())
    at = record_offset(path, 35)
    data[at + 4 : at + 8] = (0xFFFFFF00).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    reopen_refused(tmp_path, f"offset {at}")


@pytest.mark.parametrize("crashed", [True, False], ids=["after-a-crash", "after-a-clean-stop"])
@pytest.mark.parametrize("where", ["header", "payload"])
def test_a_zeroed_sector_mid_segment_is_refused(tmp_path: Path, crashed: bool, where: str) -> None:
    """Records of later batches verify after it: the batch it hit had been synced before they
    were written, so it is damage, not a torn write (which the next test accepts)."""
    write_in_batches(tmp_path)
    if crashed:
        as_after_a_crash(tmp_path)
    path = tmp_path / "wal" / segment_name(1, 1)
    at = record_offset(path, 35) + (0 if where == "header" else 60)
    data = bytearray(path.read_bytes())
    sector = at // 512 * 512
    data[sector : sector + 512] = bytes(512)
    path.write_bytes(bytes(data))
    reopen_refused(tmp_path, "damaged")


def test_a_zeroed_sector_in_the_last_batch_after_a_crash_is_a_torn_write(tmp_path: Path) -> None:
    write_in_batches(tmp_path)
    as_after_a_crash(tmp_path)
    path = tmp_path / "wal" / segment_name(1, 1)
    data = bytearray(path.read_bytes())
    sector = record_offset(path, 95) // 512 * 512
    data[sector : sector + 512] = bytes(512)
    path.write_bytes(bytes(data))
    with Storage.open(tmp_path) as s:
        kept = s.read_log(0)
    assert kept == entries(1, len(kept))
    assert 90 <= len(kept) < 95  # only the last batch is cut


def test_a_truncated_segment_is_refused(tmp_path: Path) -> None:
    write_in_batches(tmp_path)
    as_after_a_crash(tmp_path)
    path = tmp_path / "wal" / segment_name(1, 1)
    os.truncate(path, record_offset(path, 100) + 50)  # in the middle of the last record
    reopen_refused(tmp_path, "truncated")


def test_zxids_that_do_not_follow_each_other_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    SegmentLog.create(directory, 1, segment_bytes=wal_module.MIN_SEGMENT_BYTES)
    log = SegmentLog.open(directory, 1, segment_bytes=wal_module.MIN_SEGMENT_BYTES)
    log.append([*entries(1, 3), *entries(5, 6)])  # the log trusts its caller; Storage checks
    log.close()
    with pytest.raises(wal_module.LogDamagedError, match="cannot follow 0x3"):
        SegmentLog.open(directory, 1, segment_bytes=wal_module.MIN_SEGMENT_BYTES)


@pytest.mark.parametrize(
    ("lost", "message"),
    [(1, "missing segment 1"), (2, "missing"), (-1, "missing segment .* sealed")],
    ids=["oldest", "middle", "newest"],
)
def test_a_lost_segment_is_refused(tmp_path: Path, lost: int, message: str) -> None:
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(entries(1, 100))
    if lost == -1:  # the newest segment, holding the last acknowledged records
        lost = len(segments(tmp_path))
        assert b"%08d" % 100 in (tmp_path / "wal" / segment_name(1, lost)).read_bytes()
    assert segment_name(1, lost) in segments(tmp_path)
    os.unlink(tmp_path / "wal" / segment_name(1, lost))
    before = snapshot(tmp_path)
    with pytest.raises(StorageFormatError, match=message):
        Storage.open(tmp_path, segment_bytes=SMALL)
    assert snapshot(tmp_path) == before


def test_a_crash_before_a_segment_was_sealed_is_harmless(tmp_path: Path) -> None:
    """The next segment is created (and synced) before the one before it is marked sealed: a
    crash in between leaves an unsealed segment followed by an empty one, and that log opens
    with every record."""
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(entries(1, 100))
    with Storage.open(tmp_path, segment_bytes=SMALL):
        pass  # creates an empty segment after the last one, then seals that one
    for name in segments(tmp_path)[-2:]:
        unseal(tmp_path / "wal" / name)
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        assert s.read_log(0) == entries(1, 100)
        s.append(entries(101, 110))
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        assert s.read_log(0) == entries(1, 110)


def test_an_unsealed_segment_before_records_is_refused(tmp_path: Path) -> None:
    """Records are only written to a segment once the one before it is sealed: an unsealed
    one before them means a damaged header (its seal, which said where its records end)."""
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(entries(1, 100))
    unseal(tmp_path / "wal" / segments(tmp_path)[1])
    with pytest.raises(StorageFormatError, match="never sealed"):
        Storage.open(tmp_path, segment_bytes=SMALL)


def test_a_read_racing_a_checkpoints_removal_returns_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader may take the list of segments just before a checkpoint (in another thread)
    removes the oldest: it skips the removed ones instead of failing on a missing file."""
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(entries(1, 100))
        log = s._log()
        keep = log.first_kept_seq(40)
        assert keep > 1
        real_records = wal_module._records
        removed: list[bool] = []

        def records_after_a_removal(segment: Any) -> Any:
            if not removed:
                log.remove_before(keep)  # the checkpoint's removal lands mid-read
                removed.append(True)
            return real_records(segment)

        monkeypatch.setattr(wal_module, "_records", records_after_a_removal)
        got = log.read(0)
        assert removed
        assert got == [e for e in entries(1, 100) if e[0] >= got[0][0]]
        assert got[-1][0] == 100
        assert 1 < got[0][0] <= 41
        os.unlink(tmp_path / "wal" / segment_name(1, keep))  # a kept one lost: still damage
        with pytest.raises(FileNotFoundError):
            log.read(0)


def test_segments_a_checkpoint_dropped_before_a_crash_are_removed(tmp_path: Path) -> None:
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(entries(1, 100))
    kept = {name: (tmp_path / "wal" / name).read_bytes() for name in segments(tmp_path)}
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.checkpoint(100, [], [], [], [], keep_log_after=80)
    for name, data in kept.items():  # a crash before the unlinks reached the disk
        if not (tmp_path / "wal" / name).exists():
            (tmp_path / "wal" / name).write_bytes(data)
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        assert s.read_log(0) == entries(81, 100)
    assert len(segments(tmp_path)) < len(kept) + 2


def test_a_segment_with_a_wrong_header_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append(entries(1, 3))
    path = tmp_path / "wal" / segment_name(1, 1)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StorageFormatError, match="segment header"):
        Storage.open(tmp_path)


def test_a_foreign_file_in_the_log_directory_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append(entries(1, 3))
    (tmp_path / "wal" / "notes.txt").write_bytes(b"mine")
    with pytest.raises(StorageFormatError, match="not a log segment"):
        Storage.open(tmp_path)
    assert (tmp_path / "wal" / "notes.txt").read_bytes() == b"mine"


def test_leftovers_of_a_crash_during_a_log_switch_are_removed(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append(entries(1, 3))
    wal = tmp_path / "wal"
    shutil.copy(wal / segment_name(1, 1), wal / segment_name(2, 1))  # never made current
    (wal / (segment_name(1, 2) + ".tmp")).write_bytes(b"half created")
    with Storage.open(tmp_path) as s:
        assert s.load().log == entries(1, 3)
    assert all(name.startswith(f"{1:016x}-") for name in segments(tmp_path))


@pytest.mark.parametrize(
    ("call", "code"), [("fdatasync", errno.EIO), ("pwrite", errno.ENOSPC)], ids=["sync", "write"]
)
def test_a_failing_write_or_sync_raises_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    def fail(*_args: object) -> None:
        raise OSError(code, os.strerror(code))

    with Storage.open(tmp_path) as s:
        s.append(entries(1, 3))
        monkeypatch.setattr(f"zkpy.server.wal.os.{call}", fail)
        with pytest.raises(StorageError, match="failed on the log") as info:
            s.append(entries(4, 6))
        assert not isinstance(info.value, StorageFormatError)
        monkeypatch.undo()
    with Storage.open(tmp_path) as s:
        assert s.read_log(0)[:3] == entries(1, 3)  # what was synced before is all there


def test_a_full_disk_when_a_segment_rolls_raises_and_loses_nothing_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    log = entries(1, 60)
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(log[:20])
        monkeypatch.setattr("zkpy.server.wal.os.posix_fallocate", no_space)
        with pytest.raises(StorageError, match="failed on the log"):
            s.append(log[20:])  # fills the segment, then cannot make the next one
        monkeypatch.undo()
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "wal"))
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        # what filled the first segment was synced before the roll: (4096 - 64) // 124 records
        assert s.read_log(0) == log[:32]
        s.append(entries(33, 80))
        assert s.read_log(0) == entries(1, 80)


def test_a_failing_preallocation_other_than_unsupported_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        monkeypatch.setattr("zkpy.server.wal.os.posix_fallocate", broken)
        with pytest.raises(StorageError, match="failed on the log"):
            s.append(entries(1, 60))


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL])
def test_a_file_system_without_fallocate_gets_sparse_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def unsupported(*_args: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("zkpy.server.wal.os.posix_fallocate", unsupported)
    log = entries(1, 100)
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(log)
    names = segments(tmp_path)
    assert len(names) > 1
    assert all(os.path.getsize(tmp_path / "wal" / name) >= SMALL for name in names)
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        assert s.read_log(0) == log


# ---------------------------------------------------------------------------- generations


def test_truncate_and_snapshot_switch_generations(tmp_path: Path) -> None:
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        s.append(entries(1, 100))
        s.truncate_log_after(60)
        assert s.read_log(0) == entries(1, 60)
        s.append(entries(61, 70, size=10))
    assert all(name.startswith(f"{2:016x}-") for name in segments(tmp_path))
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        assert s.read_log(0) == entries(1, 60) + entries(61, 70, size=10)
        s.replace_all(500, [("/a", b"a")], [(7, b"session")])
        assert s.read_log(0) == []
        assert s.last_logged_zxid() == 500
        s.append([(501, b"x")])
    assert all(name.startswith(f"{3:016x}-") for name in segments(tmp_path))
    with Storage.open(tmp_path, segment_bytes=SMALL) as s:
        recovered = s.load()
        assert (recovered.checkpoint_zxid, recovered.nodes, recovered.log) == (
            500,
            [("/a", b"a")],
            [(501, b"x")],
        )


def test_a_format_1_directory_is_upgraded(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path), max_dbs=8, subdir=True)
    try:
        with env.begin(write=True) as txn:
            dbs = {n: env.open_db(n, txn=txn) for n in (b"meta", b"log", b"nodes", b"sessions")}
            for key, value in (
                (b"format", 1),
                (b"accepted_epoch", 2),
                (b"current_epoch", 2),
                (b"checkpoint_zxid", 5),
            ):
                txn.put(key, value.to_bytes(8, "big"), db=dbs[b"meta"])
            for zxid, data in entries(3, 9):
                txn.put(zxid.to_bytes(8, "big"), data, db=dbs[b"log"])
            txn.put(b"/a", b"record", db=dbs[b"nodes"])
    finally:
        env.close()
    (tmp_path / "zkpy.lock").touch()
    (tmp_path / "wal").mkdir()  # left by an upgrade interrupted earlier
    (tmp_path / "wal" / "junk").write_bytes(b"x")
    with Storage.open(tmp_path) as s:
        recovered = s.load()
        assert (recovered.accepted_epoch, recovered.checkpoint_zxid) == (2, 5)
        assert recovered.nodes == [("/a", b"record")]
        assert recovered.log == entries(6, 9)
        # entries before the checkpoint stay on disk, but are not taken as history
        assert (recovered.log_floor, recovered.retained) == (5, [])
        assert s.read_log(0) == entries(6, 9)
        s.append([(10, b"ten")])
    env = lmdb.open(str(tmp_path), max_dbs=8, subdir=True, readonly=True)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            assert txn.get(b"format", db=meta) == FORMAT_VERSION.to_bytes(8, "big")
        with pytest.raises(lmdb.NotFoundError):
            env.open_db(b"log", create=False)
    finally:
        env.close()
    with Storage.open(tmp_path) as s:
        assert s.read_log(0) == [*entries(6, 9), (10, b"ten")]


# ---------------------------------------------------------------------------- against a model


class LogModel(RuleBasedStateMachine):
    """Random appends, checkpoints, truncations, snapshots and reopenings, with tiny segments,
    against a plain list: what Storage returns must always match it."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="zkpy-wal-model-"))
        self.storage = Storage.open(self.dir, sync=False, segment_bytes=512)
        self.log: list[tuple[int, bytes]] = []
        self.checkpoint = 0
        self.floor = 0

    def teardown(self) -> None:
        self.storage.close()
        shutil.rmtree(self.dir)

    def last_logged(self) -> int:
        return max(self.log[-1][0] if self.log else 0, self.checkpoint)

    @rule(count=st.integers(1, 12), size=st.integers(0, 300), new_epoch=st.booleans())
    def append(self, count: int, size: int, new_epoch: bool) -> None:
        last = self.last_logged()
        first = ((last >> 32) + 1) << 32 | 1 if new_epoch else last + 1
        batch = [(first + i, os.urandom(size)) for i in range(count)]
        self.storage.append(batch)
        self.log.extend(batch)

    @precondition(lambda self: self.log)
    @rule(data=st.data())
    def checkpoint_somewhere(self, data: st.DataObject) -> None:
        # of a logged record (or the last checkpoint again), as a member takes them
        logged = [zxid for zxid, _ in self.log if zxid > self.checkpoint]
        zxid = data.draw(st.sampled_from([self.checkpoint, *logged]))
        keep = data.draw(st.integers(0, zxid))
        self.storage.checkpoint(zxid, [], [], [], [], keep_log_after=keep)
        self.checkpoint, self.floor = zxid, max(self.floor, keep)

    @precondition(lambda self: self.log)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        zxid = data.draw(st.integers(self.checkpoint, self.last_logged()))
        self.storage.truncate_log_after(zxid)
        self.log = [entry for entry in self.log if entry[0] <= zxid]

    @rule(ahead=st.integers(0, 50))
    def install_snapshot(self, ahead: int) -> None:
        zxid = self.last_logged() + ahead
        self.storage.replace_all(zxid, [], [])
        self.log, self.checkpoint, self.floor = [], zxid, zxid

    @rule()
    def reopen(self) -> None:
        self.storage.close()
        self.storage = Storage.open(self.dir, sync=False, segment_bytes=512)

    @invariant()
    def matches_the_model(self) -> None:
        visible = [entry for entry in self.log if entry[0] > self.floor]
        assert self.storage.read_log(0) == visible
        assert self.storage.last_logged_zxid() == self.last_logged()
        assert self.storage.first_logged_zxid() == (visible[0][0] if visible else None)
        assert self.storage.load().log == [e for e in visible if e[0] > self.checkpoint]


TestLogModel = LogModel.TestCase
TestLogModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


@pytest.mark.parametrize("new_segment", [True, False])
def test_space_ahead_of_the_records_is_zeroed_and_never_over_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_segment: bool
) -> None:
    """The live segment is written with zeros ahead of its records (so that syncs need not
    change the file's extent map), never over a record, never past the segment's size."""
    segment_bytes, zero_ahead = 32 << 10, 4096
    writes: list[tuple[int, int, int, bool]] = []  # fd, offset, length, all zeros
    real_write_all = wal_module._write_all

    def noting_write_all(fd: int, data: bytes, offset: int) -> None:
        writes.append((fd, offset, len(data), not any(data)))
        real_write_all(fd, data, offset)

    monkeypatch.setattr(wal_module, "_write_all", noting_write_all)
    directory = tmp_path / "wal"
    SegmentLog.create(directory, 1, segment_bytes=segment_bytes)
    log = SegmentLog.open(
        directory, 1, segment_bytes=segment_bytes, zero_ahead=zero_ahead, new_segment=new_segment
    )
    records: list[tuple[int, bytes]] = []
    zeroed: dict[int, int] = {}  # segment seq -> how far it is written with zeros
    zxid = 0
    for batch in (1, 3, 1, 40, 2, 7, 90, 1, 5, 33, 1, 60, 4, 120):  # fills two segments
        batch_records = entries(zxid + 1, zxid + batch, size=60 + batch)
        zxid += batch
        writes.clear()
        log.append(batch_records)
        records += batch_records
        for fd, offset, length, zeros in writes:
            if zeros:  # past every record of the batch in its segment, within the segment
                assert all(offset >= o + n for f, o, n, z in writes if f == fd and not z)
                assert offset + length <= segment_bytes
        live_fd, live = writes[-1][0], log._segments[-1]
        zeroed[live.seq] = max(
            [zeroed.get(live.seq, 0)] + [o + n for f, o, n, z in writes if f == live_fd and z]
        )
        assert zeroed[live.seq] >= min(segment_bytes, live.end + zero_ahead // 2)
    assert len(os.listdir(directory)) == 2
    log.close()
    assert all(os.path.getsize(directory / name) == segment_bytes for name in os.listdir(directory))
    reopened = SegmentLog.open(directory, 1, segment_bytes=segment_bytes)
    assert reopened.read(0) == records
    reopened.close()


# ---- the member's log_segment_bytes setting ---------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        wal_module.MIN_SEGMENT_BYTES - 1,
        wal_module.MAX_SEGMENT_BYTES + 1,
        2097152.0,
        "2097152",
        True,
    ],
)
def test_config_refuses_log_segments_of_a_bad_size(tmp_path: Path, size: object) -> None:
    with pytest.raises(ValueError, match="log_segment_bytes must be a whole number of bytes"):
        ServerConfig(data_dir=tmp_path, log_segment_bytes=size)  # type: ignore[arg-type]


def test_config_takes_log_segment_bytes_from_the_ensemble_file(tmp_path: Path) -> None:
    assert ServerConfig(data_dir=tmp_path).log_segment_bytes == wal_module.SEGMENT_BYTES
    path = tmp_path / "ensemble.toml"
    path.write_text(
        'secret = "s"\nlog_segment_bytes = 2097152\n'
        '[members.1]\nhost = "127.0.0.1"\nclient_port = 2181\npeer_port = 2888\n'
    )
    assert load_config(path, 1).log_segment_bytes == 2 << 20
    path.write_text(path.read_text().replace("2097152", "2097152.5"))
    with pytest.raises(ValueError, match="log_segment_bytes"):
        load_config(path, 1)


async def test_member_preallocates_segments_of_the_configured_size(tmp_path: Path) -> None:
    size = 3 << 20
    async with running_server(tmp_path / "data", log_segment_bytes=size) as server:
        async with connect(server.address) as client:
            await client.create("/a", b"x" * 1000)
        files = [tmp_path / "data" / "wal" / name for name in segments(tmp_path / "data")]
        assert files
        assert all(os.path.getsize(path) == size for path in files)
    async with running_server(tmp_path / "small") as server:
        async with connect(server.address) as client:
            await client.create("/a", b"x")
        sizes = {
            os.path.getsize(tmp_path / "small" / "wal" / n) for n in segments(tmp_path / "small")
        }
        assert sizes == {wal_module.MIN_SEGMENT_BYTES}
