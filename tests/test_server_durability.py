"""Durability of a real `zkpy server` process: kill -9 loses no acknowledged write, and a
damaged data directory is refused with a clear message and left untouched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import zkpy
from tests.conftest import assert_one_line, server_process
from zkpy.core.tree import DataTree
from zkpy.core.txn import CloseSession, TxnRecord, decode_record, encode_record
from zkpy.errors import ConnectionLossError, ZkError
from zkpy.server.storage import Storage
from zkpy.testing.ensemble import child_env
from zkpy.testing.ports import free_port


def last_zxid_on_disk(data_dir: Path) -> int:
    with Storage.open(data_dir) as storage:
        recovered = storage.load()
    tree = DataTree.from_checkpoint(recovered.checkpoint_zxid, recovered.nodes, recovered.sessions)
    for _zxid, raw in recovered.log:
        tree.apply(decode_record(raw))
    return tree.last_zxid


def value_for(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest() * 4


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    target = 300
    acked: dict[str, int] = {}  # path -> czxid, for every create the server acknowledged
    failed = 0

    with server_process(data_dir) as proc:
        await proc.wait_ready()
        async with zkpy.connect(proc.address, session_timeout=2) as zk:
            await zk.create("/d")
            enough = trio.Event()
            all_cut_off = trio.Event()

            async def writer(w: int) -> None:
                nonlocal failed
                i = 0
                while True:
                    name = f"/d/w{w}-{i}"
                    i += 1
                    try:
                        _path, stat = await zk.create(name, value_for(name), include_data=True)
                    except (ConnectionLossError, ZkError):
                        failed += 1
                        if failed == 16:
                            all_cut_off.set()
                        return
                    acked[name] = stat.czxid
                    if len(acked) >= target:
                        enough.set()

            async with trio.open_nursery() as nursery:
                for w in range(16):  # 16 creates in flight at any time
                    nursery.start_soon(writer, w)
                with trio.fail_after(30):
                    await enough.wait()
                await proc.kill9()  # while the writers keep going
                with trio.fail_after(10):
                    await all_cut_off.wait()
            assert len(acked) >= target
            max_acked = max(acked.values())

        # Nothing acknowledged is missing from the disk, before the server even restarts.
        assert last_zxid_on_disk(data_dir) >= max_acked

        proc.start()
        await proc.wait_ready()
        async with zkpy.connect(proc.address, session_timeout=2) as zk:
            present = set(await zk.get_children("/d"))
            missing = {name for name in acked if name.rsplit("/", 1)[1] not in present}
            assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
            for name, czxid in acked.items():
                data, stat = await zk.get(name)
                assert data == value_for(name)
                assert stat.czxid == czxid
            # Writes that were in flight may or may not have landed, but never half-written.
            for child in present:
                name = f"/d/{child}"
                assert (await zk.get(name))[0] == value_for(name)
            assert zk.last_zxid >= max_acked

        # A clean restart keeps the same history.
        assert await proc.stop() == 0
        before = last_zxid_on_disk(data_dir)
        assert before >= max_acked
        proc.start()
        await proc.wait_ready()
        assert await proc.stop() == 0
        assert last_zxid_on_disk(data_dir) == before


async def refused_to_start(data_dir: Path) -> str:
    """Start `zkpy server` on `data_dir`; it must exit with one clear line (returned)."""
    command = [
        sys.executable,
        "-m",
        "zkpy.cli",
        "server",
        "--data-dir",
        str(data_dir),
        "--client-port",
        str(free_port()),
    ]
    result = await trio.to_thread.run_sync(
        lambda: subprocess.run(command, capture_output=True, env=child_env(), timeout=30)
    )
    assert result.returncode not in (0, None)
    assert result.returncode > 0, "exited through an error path, not a signal"
    line = assert_one_line(result.stderr.decode())
    assert line.startswith("zkpy: ")
    assert "Traceback" not in result.stderr.decode()
    return line


async def test_damaged_data_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    garbage = bytes(range(256)) * 64
    (data_dir / "data.mdb").write_bytes(garbage)
    before = sorted(p.name for p in data_dir.iterdir())

    line = await refused_to_start(data_dir)
    assert str(data_dir) in line or "data.mdb" in line, line
    assert (data_dir / "data.mdb").read_bytes() == garbage
    after = sorted(p.name for p in data_dir.iterdir())
    assert after == before or set(after) - set(before) <= {"zkpy.lock"}, after


@pytest.mark.parametrize("damage", ["mistyped-node", "mistyped-log-record", "flipped-bit"])
async def test_a_checkpoint_or_log_record_it_cannot_use_is_refused(
    tmp_path: Path, damage: str
) -> None:
    """Records that pass their checksums but do not decode (written wrong) end in the same
    clear refusal as damaged ones, never in a traceback or a member that serves them."""
    data_dir = tmp_path / "data"
    node, record = b"\xc1 not a node record", encode_record(TxnRecord(1, 0, 0, 0, CloseSession(5)))
    if damage == "mistyped-log-record":
        record = b"\xc1 not a transaction"
    with Storage.open(data_dir) as storage:
        storage.append([(1, record)])
        if damage != "mistyped-log-record":
            storage.checkpoint(1, [("/a", node)], [], [], [], keep_log_after=0)
    if damage == "flipped-bit":
        data = bytearray((data_dir / "data.mdb").read_bytes())
        at = data.find(node)
        data[at + 3] ^= 0x10
        (data_dir / "data.mdb").write_bytes(bytes(data))
    line = await refused_to_start(data_dir)
    assert f"data directory {data_dir}" in line, line
    expected = "fails its checksum" if damage == "flipped-bit" else "cannot use"
    assert expected in line, line
    assert "start the member with an empty one" in line, line
