"""Tests of zkpy.server.storage: the LMDB-backed durable state of one member."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import lmdb
import pytest

import zkpy.server.storage as storage_module
import zkpy.server.wal as wal_module
from zkpy.server.storage import (
    FORMAT_VERSION,
    Storage,
    StorageError,
    StorageFormatError,
)
from zkpy.server.wal import segment_name

REPO_ROOT = Path(storage_module.__file__).resolve().parents[2]


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def raw_env(path: Path, **kwargs: object) -> lmdb.Environment:
    """Open a data directory's environment directly, bypassing Storage."""
    return lmdb.open(str(path), max_dbs=8, subdir=True, **kwargs)  # type: ignore[arg-type]


def snapshot(path: Path) -> dict[str, tuple[int, int, str]]:
    """Names, sizes, mtimes and hashes of every file under ``path``: to prove nothing changed."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            p = Path(root) / name
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[str(p.relative_to(path))] = (st.st_size, st.st_mtime_ns, digest)
    return out


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


# ---------------------------------------------------------------------------- a new directory


def test_new_directory_is_initialised_with_format_version(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    with Storage.open(data_dir) as s:
        rec = s.load()
        assert s.path == data_dir
        assert s.last_logged_zxid() == 0
        assert s.first_logged_zxid() is None
    assert (rec.accepted_epoch, rec.current_epoch, rec.checkpoint_zxid) == (0, 0, 0)
    assert (rec.nodes, rec.sessions, rec.log) == ([], [], [])
    assert sorted(os.listdir(data_dir)) == ["data.mdb", "lock.mdb", "wal", "zkpy.lock"]
    assert sorted(os.listdir(data_dir / "wal"))[0] == segment_name(1, 1)
    env = raw_env(data_dir, readonly=True)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            assert txn.get(b"format", db=meta) == u64(FORMAT_VERSION)
    finally:
        env.close()


def test_empty_existing_directory_is_initialised(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(1, b"x")])
    with Storage.open(tmp_path) as s:
        assert s.load().log == [(1, b"x")]


def test_leftover_from_interrupted_initialisation_is_replaced(tmp_path: Path) -> None:
    # A crash while initialising leaves zkpy-init.tmp/ (and zkpy.lock), never a bare data.mdb.
    (tmp_path / "zkpy-init.tmp").mkdir()
    (tmp_path / "zkpy-init.tmp" / "data.mdb").write_bytes(b"half written")
    (tmp_path / "zkpy.lock").touch()
    with Storage.open(tmp_path) as s:
        assert s.load().checkpoint_zxid == 0
    assert not (tmp_path / "zkpy-init.tmp").exists()


def test_reopen_does_not_modify_data_file(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(1, b"x")])
    before = (tmp_path / "data.mdb").read_bytes(), (tmp_path / "data.mdb").stat().st_mtime_ns
    with Storage.open(tmp_path) as s:
        s.load()
        s.read_log(0)
    after = (tmp_path / "data.mdb").read_bytes(), (tmp_path / "data.mdb").stat().st_mtime_ns
    assert before == after


# ---------------------------------------------------------------------------- the log


def test_append_and_load_round_trip(tmp_path: Path) -> None:
    entries = [(z, f"txn {z}".encode() * (z % 7)) for z in (1, 2, 3, 0x1_0000_0001, 0x1_0000_0002)]
    with Storage.open(tmp_path) as s:
        s.append(entries[:2])
        s.append(entries[2:3])
        s.append(entries[3:])
        assert s.last_logged_zxid() == 0x1_0000_0002
        assert s.first_logged_zxid() == 1
    with Storage.open(tmp_path) as s:
        assert s.load().log == entries
        assert s.read_log(0) == entries


def test_big_entry_round_trip(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    with Storage.open(tmp_path) as s:
        s.append([(1, big), (2, b"")])
    with Storage.open(tmp_path) as s:
        assert s.load().log == [(1, big), (2, b"")]


def test_batch_is_one_write_and_one_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def last_txnid() -> int:
        env = raw_env(tmp_path, readonly=True)
        try:
            return env.info()["last_txnid"]
        finally:
            env.close()

    calls: list[str] = []
    real_pwrite, real_fdatasync = os.pwrite, os.fdatasync

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        calls.append("pwrite" if any(data) else "pwrite zeros ahead")  # see _zero_ahead_of
        return real_pwrite(fd, data, offset)

    def fdatasync(fd: int) -> None:
        calls.append("fdatasync")
        real_fdatasync(fd)

    with Storage.open(tmp_path) as s:
        s.append([(1, b"a")])
    before = last_txnid()
    with Storage.open(tmp_path) as s:
        monkeypatch.setattr("zkpy.server.wal.os.pwrite", pwrite)
        monkeypatch.setattr("zkpy.server.wal.os.fdatasync", fdatasync)
        s.append([(z, b"v") for z in range(2, 502)])
        monkeypatch.undo()
    assert [call for call in calls if call != "pwrite zeros ahead"] == ["pwrite", "fdatasync"]
    assert calls[-1] == "fdatasync"  # zeros written ahead, if any, go in the same sync
    assert last_txnid() == before  # the log is not in LMDB: no LMDB commit at all
    with Storage.open(tmp_path) as s:
        assert [z for z, _ in s.read_log(0)] == list(range(1, 502))


def test_non_ascending_batch_raises_and_writes_nothing(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(1, b"a")])
        for bad in (
            [(2, b"b"), (4, b"d"), (3, b"c")],
            [(2, b"b"), (2, b"b")],
            [(2, b"b"), (-1, b"c")],
        ):
            with pytest.raises(ValueError, match="next counter"):
                s.append(bad)
        assert s.read_log(0) == [(1, b"a")]
        assert s.last_logged_zxid() == 1


def test_batch_not_above_last_logged_raises_and_writes_nothing(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(5, b"a")])
        for bad in ([(5, b"b"), (6, b"c")], [(3, b"b"), (7, b"c")]):
            with pytest.raises(ValueError, match="next counter"):
                s.append(bad)
        assert s.read_log(0) == [(5, b"a")]


def test_append_must_be_above_checkpoint_when_log_is_empty(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.replace_all(100, [], [])
        assert s.last_logged_zxid() == 100
        with pytest.raises(ValueError, match="cannot append zxid 0x64 after 0x64"):
            s.append([(100, b"x")])
        s.append([(101, b"x")])
        assert s.load().log == [(101, b"x")]


def test_append_rejects_zxid_out_of_range(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        with pytest.raises(ValueError, match=r"zxid must be an integer in \[0, 2\*\*64\)"):
            s.append([(1 << 64, b"x")])
        s.append([])  # an empty batch is a no-op
        assert s.read_log(0) == []


def test_read_log_after_and_limit(tmp_path: Path) -> None:
    entries = [(z, b"%d" % z) for z in range(1, 11)]
    with Storage.open(tmp_path) as s:
        s.append(entries)
        assert s.read_log(0) == entries
        assert s.read_log(-5) == entries
        assert s.read_log(4) == entries[4:]
        assert s.read_log(4, limit=3) == entries[4:7]
        assert s.read_log(4, limit=0) == []
        assert s.read_log(10) == []
        assert s.read_log((1 << 64) - 1) == []
        with pytest.raises(ValueError, match="limit must be >= 0"):
            s.read_log(0, limit=-1)


def test_truncate_log_after(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(z, b"v") for z in range(1, 11)])
        s.truncate_log_after(6)
        assert [z for z, _ in s.read_log(0)] == [1, 2, 3, 4, 5, 6]
        assert s.last_logged_zxid() == 6
        s.truncate_log_after(100)  # nothing after 100: no change
        assert s.last_logged_zxid() == 6
        s.append([(7, b"new")])  # the truncated zxids can be written again
    with Storage.open(tmp_path) as s:
        assert [z for z, _ in s.load().log] == [1, 2, 3, 4, 5, 6, 7]
        s.truncate_log_after(0)
        assert s.read_log(0) == []
        assert s.first_logged_zxid() is None


def test_truncate_below_checkpoint_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(z, b"v") for z in range(1, 11)])
        s.checkpoint(5, [], [], [], [], keep_log_after=2)
        with pytest.raises(ValueError, match="checkpoint"):
            s.truncate_log_after(4)
        assert [z for z, _ in s.read_log(0)] == list(range(3, 11))
        s.truncate_log_after(5)  # at the checkpoint itself is fine
        assert [z for z, _ in s.read_log(0)] == [3, 4, 5]


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_trims_log_and_load_returns_later_entries(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(z, b"t%d" % z) for z in range(1, 11)])
        s.checkpoint(
            4,
            node_puts=[("/", b"root"), ("/a", b"a1"), ("/b", b"b1")],
            node_deletes=["/never-existed"],
            session_puts=[(7, b"s7"), (8, b"s8")],
            session_deletes=[99],
            keep_log_after=4,
        )
        assert s.first_logged_zxid() == 5
        s.checkpoint(
            8,
            node_puts=[("/a", b"a2"), ("/c", b"c1")],
            node_deletes=["/b"],
            session_puts=[(9, b"s9")],
            session_deletes=[7],
            keep_log_after=6,  # keep 7 and 8 so a follower can still get a diff
        )
        assert s.read_log(0) == [(z, b"t%d" % z) for z in range(7, 11)]
    with Storage.open(tmp_path) as s:
        rec = s.load()
    assert rec.checkpoint_zxid == 8
    assert sorted(rec.nodes) == [("/", b"root"), ("/a", b"a2"), ("/c", b"c1")]
    assert sorted(rec.sessions) == [(8, b"s8"), (9, b"s9")]
    assert rec.log == [(9, b"t9"), (10, b"t10")]
    # what the log keeps before the checkpoint comes back too, for syncs by diff
    assert (rec.log_floor, rec.retained) == (6, [(7, b"t7"), (8, b"t8")])


def test_checkpoint_beyond_log_raises_last_logged(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(1, b"a"), (2, b"b")])
        with pytest.raises(ValueError, match="beyond the log"):
            s.checkpoint(5, [], [], [], [], keep_log_after=0)  # it would skip records 3 and 4
        s.checkpoint(5, [], [], [], [], keep_log_after=5)  # a checkpoint replacing the log
        assert s.last_logged_zxid() == 5
        with pytest.raises(ValueError, match="cannot append zxid 0x3 after 0x5"):
            s.append([(3, b"c")])


def test_checkpoint_rejects_bad_arguments_and_changes_nothing(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(z, b"v") for z in range(1, 6)])
        s.checkpoint(3, [("/a", b"1")], [], [], [], keep_log_after=0)
        with pytest.raises(ValueError, match="keep_log_after"):
            s.checkpoint(4, [("/a", b"2")], [], [], [], keep_log_after=5)
        with pytest.raises(ValueError, match="below the current checkpoint"):
            s.checkpoint(2, [("/a", b"2")], [], [], [], keep_log_after=0)
        rec = s.load()
        assert [z for z, _ in s.read_log(0)] == [1, 2, 3, 4, 5]
    assert rec.checkpoint_zxid == 3
    assert rec.nodes == [("/a", b"1")]
    assert rec.log == [(4, b"v"), (5, b"v")]


def test_failed_checkpoint_is_atomic(tmp_path: Path) -> None:
    def puts() -> list[tuple[str, bytes]]:
        return [("/a", b"new"), ("", b"empty path is invalid")]

    with Storage.open(tmp_path) as s:
        s.append([(1, b"v"), (2, b"v")])
        s.checkpoint(1, [("/a", b"old")], [], [], [], keep_log_after=0)
        with pytest.raises(ValueError, match="a znode path must not be empty"):
            s.checkpoint(2, puts(), [], [], [], keep_log_after=2)
        rec = s.load()
    assert rec.nodes == [("/a", b"old")]
    assert rec.checkpoint_zxid == 1
    assert rec.log == [(2, b"v")]


def test_long_and_unicode_paths_round_trip(tmp_path: Path) -> None:
    long_path = "/" + "x" * 3000
    nodes = [("/é/日本", b"u"), (long_path, b"long"), ("/" + "y" * 511, b"edge")]
    with Storage.open(tmp_path) as s:
        s.append([(1, b"a"), (2, b"b")])
        s.checkpoint(1, nodes, [], [], [], keep_log_after=0)
    with Storage.open(tmp_path) as s:
        assert sorted(s.load().nodes) == sorted(nodes)
        s.checkpoint(2, [], [long_path], [], [], keep_log_after=0)
        assert sorted(s.load().nodes) == sorted(nodes[::2])


def test_replace_all(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.set_epochs(accepted_epoch=3, current_epoch=3)
        s.append([(z, b"v") for z in range(1, 6)])
        s.checkpoint(3, [("/old", b"o")], [], [(1, b"s1")], [], keep_log_after=1)
        s.replace_all(0x4_0000_0007, [("/", b"r"), ("/new", b"n")], [(2, b"s2")])
        assert s.read_log(0) == []
        assert s.last_logged_zxid() == 0x4_0000_0007
    with Storage.open(tmp_path) as s:
        rec = s.load()
    assert rec.checkpoint_zxid == 0x4_0000_0007
    assert sorted(rec.nodes) == [("/", b"r"), ("/new", b"n")]
    assert rec.sessions == [(2, b"s2")]
    assert rec.log == []
    assert (rec.accepted_epoch, rec.current_epoch) == (3, 3)


def test_set_epochs_persists_across_reopen(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.set_epochs(accepted_epoch=5)
        s.set_epochs()  # nothing to do
    with Storage.open(tmp_path) as s:
        rec = s.load()
        assert (rec.accepted_epoch, rec.current_epoch) == (5, 0)
        s.set_epochs(current_epoch=5)
        s.set_epochs(accepted_epoch=6, current_epoch=6)
        with pytest.raises(ValueError, match="accepted_epoch must be an integer"):
            s.set_epochs(accepted_epoch=-1)
    with Storage.open(tmp_path) as s:
        rec = s.load()
        assert (rec.accepted_epoch, rec.current_epoch) == (6, 6)


def test_disk_usage_grows(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        before = s.disk_usage()
        assert before > 0
        s.append([(z, os.urandom(1000)) for z in range(1, 1001)])
        assert s.disk_usage() >= before + 1000 * 1000


def test_unsafe_sync_false_still_works(tmp_path: Path) -> None:
    with Storage.open(tmp_path, sync=False) as s:
        s.append([(1, b"a")])
    with Storage.open(tmp_path) as s:
        assert s.load().log == [(1, b"a")]


def test_full_map_raises_storage_error_and_writes_nothing(tmp_path: Path) -> None:
    with Storage.open(tmp_path, map_size=1 << 20) as s:
        s.append([(1, b"small")])
        s.checkpoint(1, [("/a", b"a")], [], [], [], keep_log_after=0)
        with pytest.raises(StorageError, match="map_size"):
            s.checkpoint(1, [(f"/n{i}", os.urandom(4000)) for i in range(1000)], [], [], [], 0)
        assert s.load().nodes == [("/a", b"a")]
        s.append([(2, b"still usable")])
        assert s.last_logged_zxid() == 2


def test_data_file_and_log_restored_alone_open(tmp_path: Path) -> None:
    with Storage.open(tmp_path / "old") as s:
        s.append([(1, b"a")])
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "data.mdb").write_bytes((tmp_path / "old" / "data.mdb").read_bytes())
    shutil.copytree(tmp_path / "old" / "wal", tmp_path / "new" / "wal")
    with Storage.open(tmp_path / "new") as s:
        assert s.load().log == [(1, b"a")]


def test_data_file_restored_without_its_log_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path / "old") as s:
        s.append([(1, b"acknowledged")])
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "data.mdb").write_bytes((tmp_path / "old" / "data.mdb").read_bytes())
    before = snapshot(tmp_path / "new")
    with pytest.raises(StorageFormatError, match=r"log directory .* is missing"):
        Storage.open(tmp_path / "new")
    assert snapshot(tmp_path / "new") == before


# ---------------------------------------------------------------------------- refusing to start


def test_foreign_directory_is_refused_and_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_bytes(b"precious")
    (home / ".bashrc").write_bytes(b"alias ll='ls -l'")
    before = snapshot(home)
    with pytest.raises(StorageFormatError, match="not a zkpy data directory"):
        Storage.open(home)
    assert snapshot(home) == before


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(StorageFormatError, match="not a directory"):
        Storage.open(f)
    assert f.read_bytes() == b"x"


@pytest.mark.parametrize(
    "content",
    [b"", b"abc", os.urandom(64 << 10), b"\x00" * (64 << 10)],
    ids=["empty", "short", "random", "zeros"],
)
def test_garbage_data_file_is_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "data.mdb").write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(StorageFormatError, match=r"data\.mdb"):
        Storage.open(tmp_path)
    assert snapshot(tmp_path) == before  # byte-identical, and no lock files created


def test_truncated_data_file_is_refused_not_crashed(tmp_path: Path) -> None:
    # Reading a page past the end of a mapped file would kill the process with SIGBUS.
    with Storage.open(tmp_path) as s:
        s.append([(z, os.urandom(200)) for z in range(1, 2001)])
    os.unlink(tmp_path / "lock.mdb")
    os.unlink(tmp_path / "zkpy.lock")
    with open(tmp_path / "data.mdb", "r+b") as f:
        f.truncate(3 * 4096)
    before = snapshot(tmp_path)
    with pytest.raises(StorageFormatError, match="truncated"):
        Storage.open(tmp_path)
    assert snapshot(tmp_path) == before


def test_wrong_format_version_is_refused_and_untouched(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(1, b"a")])
    env = raw_env(tmp_path)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            txn.put(b"format", u64(FORMAT_VERSION + 1), db=meta)
    finally:
        env.close()
    before = snapshot(tmp_path)
    with pytest.raises(StorageFormatError, match=f"format version {FORMAT_VERSION + 1}"):
        Storage.open(tmp_path)
    assert snapshot(tmp_path) == before


def test_foreign_lmdb_environment_is_refused_and_untouched(tmp_path: Path) -> None:
    env = raw_env(tmp_path)
    try:
        other = env.open_db(b"somebody-elses")
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v", db=other)
    finally:
        env.close()
    before = snapshot(tmp_path)
    with pytest.raises(StorageFormatError, match="has no 'meta' table"):
        Storage.open(tmp_path)
    assert snapshot(tmp_path) == before


def test_zkpy_tables_without_format_key_are_refused(tmp_path: Path) -> None:
    env = raw_env(tmp_path)
    try:
        with env.begin(write=True) as txn:
            for name in (b"meta", b"log", b"nodes", b"sessions"):
                env.open_db(name, txn=txn)
    finally:
        env.close()
    before = snapshot(tmp_path)
    with pytest.raises(StorageFormatError, match="no format version"):
        Storage.open(tmp_path)
    assert snapshot(tmp_path) == before


def test_missing_data_file_next_to_lmdb_lock_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(1, b"acknowledged")])
    os.unlink(tmp_path / "data.mdb")
    before = snapshot(tmp_path)
    with pytest.raises(StorageFormatError, match="deleted or moved"):
        Storage.open(tmp_path)
    assert snapshot(tmp_path) == before


def test_load_detects_damaged_meta(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as s:
        s.append([(1, b"a")])
    env = raw_env(tmp_path)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            txn.put(b"checkpoint_zxid", b"\x01\x02", db=meta)
    finally:
        env.close()
    with pytest.raises(StorageFormatError, match="checkpoint_zxid"):
        Storage.open(tmp_path)


# ---------------------------------------------------------------------------- one owner at a time


def test_second_open_in_same_process_is_refused(tmp_path: Path) -> None:
    first = Storage.open(tmp_path)
    try:
        with pytest.raises(StorageError, match="in use by another process") as info:
            Storage.open(tmp_path)
        assert not isinstance(info.value, StorageFormatError)
        first.append([(1, b"still fine")])
    finally:
        first.close()
    with Storage.open(tmp_path) as s:
        assert s.load().log == [(1, b"still fine")]


def test_open_held_by_another_process_is_refused(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from zkpy.server.storage import Storage\n"
        "s = Storage.open(sys.argv[1])\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
        "s.close()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(StorageError, match="in use"):
            Storage.open(tmp_path)
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with Storage.open(tmp_path) as s:
        assert s.load().checkpoint_zxid == 0


def test_closed_storage_raises_and_close_is_idempotent(tmp_path: Path) -> None:
    s = Storage.open(tmp_path)
    s.close()
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.append([(1, b"a")])
    with pytest.raises(StorageError, match="closed"):
        s.load()


# ---------------------------------------------------------------------------- concurrency, crashes


def test_reads_during_writes_see_whole_batches(tmp_path: Path) -> None:
    batch, batches = 5, 60
    failures: list[str] = []
    with Storage.open(tmp_path) as s:

        def writer() -> None:
            for b in range(batches):
                s.append([(b * batch + i + 1, b"v") for i in range(batch)])

        thread = threading.Thread(target=writer)
        thread.start()
        seen = 0
        while True:
            writing = thread.is_alive()
            last = s.last_logged_zxid()
            zxids = [z for z, _ in s.read_log(0)]
            if last < seen or len(zxids) % batch or zxids != list(range(1, len(zxids) + 1)):
                failures.append(f"last={last} seen={seen} n={len(zxids)}")
                break
            seen = max(seen, len(zxids))
            if not writing:
                break
        thread.join()
    assert not failures
    assert seen == batch * batches


CRASH_CHILD = r"""
import sys
from zkpy.server.storage import Storage
s = Storage.open(sys.argv[1])
z = s.last_logged_zxid()
print("ready", z, flush=True)
while True:
    s.append([(z + i, b"entry %d" % (z + i)) for i in (1, 2, 3)])
    z += 3
    print("ok", z, flush=True)
"""


def run_and_kill(data_dir: Path, acks_before_kill: int) -> int:
    """Run a child that appends until killed with SIGKILL; return the last acknowledged zxid."""
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None
    assert child.stderr is not None
    acked = 0
    try:
        first = child.stdout.readline().split()
        assert first[:1] == ["ready"], child.stderr.read()
        for _ in range(acks_before_kill):
            line = child.stdout.readline().split()
            assert line[:1] == ["ok"], f"child stopped early: {child.stderr.read()}"
            acked = int(line[1])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return acked


def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    acked = 0
    for _ in range(3):  # each round also recovers from the previous kill
        acked = run_and_kill(tmp_path, acks_before_kill=40)
        with Storage.open(tmp_path) as s:
            log = s.load().log
        zxids = [z for z, _ in log]
        assert zxids[-1] >= acked  # every acknowledged entry is there ...
        assert zxids == list(range(1, len(zxids) + 1))  # ... as a gapless prefix
        assert len(zxids) % 3 == 0  # and no batch was half written
        assert all(data == b"entry %d" % z for z, data in log)


# ---------------------------------------------------------------------------- damaged checkpoints

VALUE = b"the value of /a, checkpointed"


def checkpointed(path: Path) -> None:
    """A directory with log records 1..20, a checkpoint at 10 (one node, one session) and the
    records after 5 kept."""
    with Storage.open(path) as s:
        s.append([(z, b"t%d" % z) for z in range(1, 21)])
        s.checkpoint(10, [("/a", VALUE)], [], [(7, b"session seven")], [], keep_log_after=5)
        s.set_epochs(accepted_epoch=3, current_epoch=3)


def flip_everywhere(path: Path, marker: bytes) -> None:
    """Flip one bit of `marker` wherever data.mdb holds it (pages are copied on write)."""
    data = bytearray((path / "data.mdb").read_bytes())
    at = data.find(marker)
    assert at >= 0
    while at >= 0:
        data[at + 5] ^= 0x04
        at = data.find(marker, at + 1)
    (path / "data.mdb").write_bytes(bytes(data))


def rewrite_meta(path: Path, key: bytes, value: int, *, keep_checksum_valid: bool) -> None:
    env = raw_env(path)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            txn.put(key, u64(value), db=meta)
            if keep_checksum_valid:
                txn.put(b"meta_crc", storage_module._meta_crc(txn, meta), db=meta)
    finally:
        env.close()


@pytest.mark.parametrize("marker", [VALUE, b"session seven"], ids=["node", "session"])
def test_a_flipped_bit_in_a_checkpointed_record_is_refused(tmp_path: Path, marker: bytes) -> None:
    checkpointed(tmp_path)
    flip_everywhere(tmp_path, marker)
    with Storage.open(tmp_path) as s, pytest.raises(StorageFormatError, match="fails its checksum"):
        s.load()


@pytest.mark.parametrize("change", [1 << 3, -1], ids=["raised-one-bit", "lowered"])
def test_a_damaged_checkpoint_zxid_is_refused(tmp_path: Path, change: int) -> None:
    """Raised, it would skip log records and claim a later last zxid than the member has (and
    win elections with it); lowered, it would apply records the tree already holds."""
    checkpointed(tmp_path)
    rewrite_meta(tmp_path, b"checkpoint_zxid", 10 + change, keep_checksum_valid=False)
    with pytest.raises(StorageFormatError, match=r"metadata .* fails its checksum"):
        Storage.open(tmp_path)


def test_a_checkpoint_zxid_the_log_does_not_reach_is_refused(tmp_path: Path) -> None:
    """Even with a checksum that matches (written wrong rather than damaged later)."""
    checkpointed(tmp_path)
    rewrite_meta(tmp_path, b"checkpoint_zxid", 25, keep_checksum_valid=True)
    with Storage.open(tmp_path) as s, pytest.raises(StorageFormatError, match="not in its log"):
        s.load()


def test_a_lost_checkpoint_record_is_refused(tmp_path: Path) -> None:
    checkpointed(tmp_path)
    env = raw_env(tmp_path)
    try:
        nodes = env.open_db(b"nodes", create=False)
        with env.begin(write=True) as txn:
            assert txn.delete(b"/a", db=nodes)
    finally:
        env.close()
    with Storage.open(tmp_path) as s:
        with pytest.raises(StorageFormatError, match="holds 0 checkpointed nodes"):
            s.load()
        with pytest.raises(StorageFormatError, match="holds 0 checkpointed nodes"):
            list(s.iter_nodes())


def legacy_segment(generation: int, seq: int, records: list[tuple[int, bytes]]) -> bytes:
    """A log segment as format 2 wrote it: 32-byte header, records of a 16-byte header."""
    salt = wal_module._salt(generation, seq)
    out = [b"ZKPYWAL1" + u64(generation) + u64(seq) + u64(0)]
    for zxid, payload in records:
        crc = zlib.crc32(payload, zlib.crc32(u64(zxid), salt))
        out.append(len(payload).to_bytes(4, "big") + crc.to_bytes(4, "big") + u64(zxid) + payload)
    return b"".join(out).ljust(1 << 16, b"\x00")


def test_a_format_2_directory_is_rewritten_with_checksums(tmp_path: Path) -> None:
    long_path = "/" + "x" * 600
    env = raw_env(tmp_path)
    try:
        with env.begin(write=True) as txn:
            dbs = {n: env.open_db(n, txn=txn) for n in (b"meta", b"nodes", b"sessions")}
            for key, value in {
                b"format": 2,
                b"accepted_epoch": 4,
                b"current_epoch": 4,
                b"checkpoint_zxid": 6,
                b"log_generation": 3,
                b"log_floor": 4,
                b"log_first_segment": 2,
            }.items():
                txn.put(key, u64(value), db=dbs[b"meta"])
            txn.put(b"/a", b"record a", db=dbs[b"nodes"])
            raw = long_path.encode()
            key = b"\x00" + hashlib.sha256(raw).digest()
            txn.put(key, len(raw).to_bytes(4, "big") + raw + b"long", db=dbs[b"nodes"])
            txn.put(u64(9), b"session nine", db=dbs[b"sessions"])
    finally:
        env.close()
    (tmp_path / "zkpy.lock").touch()
    wal = tmp_path / "wal"
    wal.mkdir()
    log = [(z, b"r%d" % z) for z in range(2, 10)]
    (wal / segment_name(3, 2)).write_bytes(legacy_segment(3, 2, log[:4]))
    (wal / segment_name(3, 3)).write_bytes(legacy_segment(3, 3, log[4:]))
    (wal / segment_name(4, 1)).write_bytes(b"left by an interrupted upgrade")

    with Storage.open(tmp_path) as s:
        recovered = s.load()
        s.append([(10, b"r10")])
    assert (recovered.accepted_epoch, recovered.checkpoint_zxid) == (4, 6)
    assert sorted(recovered.nodes) == [("/a", b"record a"), (long_path, b"long")]
    assert recovered.sessions == [(9, b"session nine")]
    assert (recovered.log_floor, recovered.retained) == (4, log[3:5])
    assert recovered.log == log[5:]
    assert all(name.startswith(f"{4:016x}") for name in os.listdir(wal))
    env = raw_env(tmp_path, readonly=True)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            assert txn.get(b"format", db=meta) == u64(FORMAT_VERSION)
    finally:
        env.close()
    flip_everywhere(tmp_path, b"session nine")  # now checked like any other record
    with Storage.open(tmp_path) as s, pytest.raises(StorageFormatError, match="checksum"):
        s.load()
