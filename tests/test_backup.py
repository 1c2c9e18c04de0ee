"""Backups of a running member: one zxid, checksummed, refused whole when damaged; restore
and inspect of data directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

import zkpy
from zkpy.cli import main
from zkpy.core import acl as acls
from zkpy.core.errors import AuthFailedError, ConnectionLossError, TooManyRequestsError
from zkpy.core.membership import CONFIG_PATH
from zkpy.core.tree import DataTree, decode_node
from zkpy.core.txn import decode_record
from zkpy.server.backup import (
    MAGIC,
    Backup,
    BackupFormatError,
    encode_backup,
    fetch_backup,
    inspect,
    read_backup,
    restore,
)
from zkpy.server.storage import Storage
from zkpy.testing import running_server
from zkpy.testing.ports import free_port
from zkpy.wire.client import PROTOCOL_VERSION, pack
from zkpy.wire.frames import encode_frame

from .conftest import TICK_MS


def _backup_bytes(nodes: int = 50) -> bytes:
    tree = DataTree()
    for index in range(nodes):
        tree.nodes[f"/n{index}"] = decode_node(next(tree.iter_snapshot())[1])
    encoded = list(tree.iter_snapshot())
    return b"".join(encode_backup(0x300000007, encoded, [(0x42, b"\x93\x01\x02\x03")]))


def _host_port(address: str) -> tuple[str, int]:
    host, _sep, port = address.rpartition(":")
    return host, int(port)


async def test_a_backup_under_writes_holds_every_node_as_of_its_zxid(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", tick_ms=TICK_MS) as server:
        async with zkpy.connect(server.address) as zk:
            await zk.create("/c", b"")
            for index in range(300):
                await zk.create(f"/c/n{index:03d}", b"0")
            done = trio.Event()
            backups = []

            async def write_on() -> None:
                count = 0
                while not done.is_set():
                    count += 1
                    await zk.set(f"/c/n{count % 300:03d}", str(count).encode())
                    await zk.create(f"/c/new{count}", b"")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_on)
                for attempt in range(3):
                    out = tmp_path / f"b{attempt}.zkb"
                    backups.append(await fetch_backup(*_host_port(server.address), out))
                done.set()
            assert not list(tmp_path.glob("*.partial"))
    assert len({backup.zxid for backup in backups}) == 3  # taken while the tree changed

    # Each backup equals the member's tree as of the backup's zxid: the member's own log
    # replayed up to that zxid (it made no checkpoint: its log starts from the empty tree).
    with Storage.open(tmp_path / "data") as storage:
        recovered = storage.load()
    records = [decode_record(raw) for _zxid, raw in recovered.log]
    assert recovered.checkpoint_zxid == 0
    for backup in backups:
        restored = DataTree.from_checkpoint(backup.zxid, backup.nodes, backup.sessions)
        seeded = restored.get(CONFIG_PATH)  # the member's own membership, at zxid 0
        assert seeded is not None
        assert seeded.mzxid == 0
        assert seeded.data
        tree = DataTree()
        tree.seed_config(seeded.data)
        for record in records:
            if record.zxid <= backup.zxid:
                tree.apply(record)
        assert restored.digest() == tree.digest()


async def test_restore_seeds_a_member_that_serves_the_backup(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", tick_ms=TICK_MS) as server:
        async with zkpy.connect(server.address) as zk:
            await zk.create("/app", b"top")
            await zk.create("/app/x", b"\x00\xff" * 10)
        backup = await fetch_backup(*_host_port(server.address), tmp_path / "b.zkb")
    (tmp_path / "restored").mkdir()  # an empty directory is as good as none
    restore(tmp_path / "b.zkb", tmp_path / "restored")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zkb", "data", "restored"]
    report = inspect(tmp_path / "restored")
    assert report["ok"], report
    assert report["checkpoint_zxid"] == report["last_zxid"] == backup.zxid
    assert report["current_epoch"] == report["accepted_epoch"] == backup.zxid >> 32
    async with running_server(tmp_path / "restored", tick_ms=TICK_MS) as server:
        async with zkpy.connect(server.address) as zk:
            assert (await zk.get("/app"))[0] == b"top"
            assert (await zk.get("/app/x"))[0] == b"\x00\xff" * 10
            await zk.create("/app/after", b"")  # and it takes writes after the backup's zxid


@pytest.mark.parametrize(
    "damage",
    ["flip a record byte", "flip a header byte", "truncate", "wrong magic", "append", "empty"],
)
def test_a_damaged_backup_is_refused_and_nothing_is_written(tmp_path: Path, damage: str) -> None:
    data = bytearray(_backup_bytes())
    if damage == "flip a record byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "flip a header byte":
        data[20] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) - 10]
    elif damage == "wrong magic":
        data[:8] = b"NOTABKUP"
    elif damage == "append":
        data += b"\x00"
    else:
        data = bytearray()
    file = tmp_path / "b.zkb"
    file.write_bytes(bytes(data))
    with pytest.raises(BackupFormatError):
        restore(file, tmp_path / "target")
    assert not (tmp_path / "target").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zkb"]
    result = CliRunner().invoke(main, ["restore", str(file), "--data-dir", str(tmp_path / "t")])
    assert result.exit_code == 1
    assert "nothing written" in result.output
    assert not (tmp_path / "t").exists()


def test_every_truncation_of_a_backup_is_refused(tmp_path: Path) -> None:
    data = _backup_bytes(nodes=3)
    assert read_backup_bytes(tmp_path, data).zxid == 0x300000007
    for length in range(len(data)):
        with pytest.raises(BackupFormatError):
            read_backup_bytes(tmp_path, data[:length])


def read_backup_bytes(tmp_path: Path, data: bytes) -> Backup:
    file = tmp_path / "cut.zkb"
    file.write_bytes(data)
    return read_backup(file)


def test_the_file_starts_with_its_magic_and_restore_refuses_a_used_directory(
    tmp_path: Path,
) -> None:
    data = _backup_bytes()
    assert data.startswith(MAGIC)
    file = tmp_path / "b.zkb"
    file.write_bytes(data)
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        restore(file, used)
    assert [p.name for p in used.iterdir()] == ["keep"]


async def test_a_member_with_a_super_digest_gives_backups_to_the_super_user_only(
    tmp_path: Path,
) -> None:
    super_id = acls.digest_id("root", "s3cret").id
    async with running_server(tmp_path / "data", tick_ms=TICK_MS, super_digest=super_id) as srv:
        address = _host_port(srv.address)
        for auth in (None, "root:wrong", "nobody"):
            with pytest.raises(AuthFailedError):
                await fetch_backup(*address, tmp_path / "b.zkb", auth=auth)
            assert not list(tmp_path.glob("b.zkb*"))
        taken = await fetch_backup(*address, tmp_path / "b.zkb", auth="root:s3cret")
    assert read_backup(tmp_path / "b.zkb").zxid == taken.zxid


async def test_inspect_reports_a_healthy_and_a_damaged_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with running_server(data_dir, tick_ms=TICK_MS) as server:
        async with zkpy.connect(server.address) as zk:
            for index in range(20):
                await zk.create(f"/n{index}", b"v")
            created = (await zk.exists("/n19")).czxid  # type: ignore[union-attr]
    last = created + 1  # the session's close
    result = CliRunner().invoke(main, ["inspect", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"]
    assert report["last_zxid"] == last
    assert report["log"]["last_zxid"] == last
    assert report["log"]["segments"] >= 1
    assert report["log"]["unsealed"] == []  # the member closed its log cleanly
    text = CliRunner().invoke(main, ["inspect", str(data_dir)])
    assert text.exit_code == 0
    assert f"last zxid        {last:#x}" in text.output

    segment = min((data_dir / "wal").iterdir())  # the first, which holds the creates
    raw = bytearray(segment.read_bytes())
    raw[100] ^= 0xFF  # inside the first record
    segment.write_bytes(bytes(raw))
    damaged = CliRunner().invoke(main, ["inspect", str(data_dir), "--json"])
    assert damaged.exit_code == 1
    assert not json.loads(damaged.output)["ok"]
    assert "FAILED" in CliRunner().invoke(main, ["inspect", str(data_dir)]).output
    missing = CliRunner().invoke(main, ["inspect", str(tmp_path / "nothing")])
    assert missing.exit_code == 1
    assert not (tmp_path / "nothing").exists()


async def test_a_backup_fits_the_smallest_outbox_a_member_allows(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", tick_ms=TICK_MS, max_outbox_bytes=1024) as srv:
        async with zkpy.connect(srv.address) as zk:
            for index in range(40):  # 8 MB: more than the sockets between them hold
                await zk.create(f"/n{index}", bytes(200_000))
        taken = await fetch_backup(*_host_port(srv.address), tmp_path / "b.zkb")
    assert sorted(path for path, _raw in taken.nodes if path.startswith("/n")) == sorted(
        f"/n{index}" for index in range(40)
    )


async def _start_a_backup_that_is_not_read(address: tuple[str, int]) -> trio.SocketStream:
    """Ask for a backup, read its first frame (the member is sending it now), read no more."""
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(encode_frame(pack({"v": PROTOCOL_VERSION, "cmd": "snapshot"})))
    head = b""
    while len(head) < 4 or len(head) < 4 + int.from_bytes(head[:4], "big"):
        head += await stream.receive_some(1)  # byte by byte: nothing past the first frame
    return stream


async def test_a_member_sends_one_backup_at_a_time(tmp_path: Path) -> None:
    """Each backup holds a copy of the tree until its reader takes it: while one is being
    sent, another is refused as busy (TooManyRequests); once it ends, backups are taken."""
    async with running_server(tmp_path / "data", tick_ms=TICK_MS, max_outbox_bytes=1024) as srv:
        async with zkpy.connect(srv.address) as zk:
            for index in range(10):
                await zk.create(f"/n{index}", bytes(100_000))
        address = _host_port(srv.address)
        stalled = await _start_a_backup_that_is_not_read(address)
        with pytest.raises(TooManyRequestsError, match="another backup"):
            await fetch_backup(*address, tmp_path / "b.zkb")
        assert not list(tmp_path.glob("b.zkb*"))
        await stalled.aclose()
        with trio.fail_after(10):
            while True:  # the member sees the stalled reader gone at its next write
                try:
                    taken = await fetch_backup(*address, tmp_path / "b.zkb")
                    break
                except TooManyRequestsError:
                    await trio.sleep(0.01)
    assert {f"/n{index}" for index in range(10)} <= {path for path, _raw in taken.nodes}


async def test_the_zookeeper_port_gives_no_backup(tmp_path: Path) -> None:
    """A backup request on the ZooKeeper port is not a ConnectRequest: the connection closes."""
    async with running_server(tmp_path / "data", tick_ms=TICK_MS, zk_port=free_port()) as srv:
        assert srv.config.zk_port is not None
        with pytest.raises(ConnectionLossError, match="closed before the backup"):
            await fetch_backup("127.0.0.1", srv.config.zk_port, tmp_path / "b.zkb", timeout=10)
        assert not list(tmp_path.glob("b.zkb*"))
        taken = await fetch_backup(*_host_port(srv.address), tmp_path / "b.zkb")
    assert taken.nodes
