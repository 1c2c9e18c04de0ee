"""Checkpoints keep restart cheap and the log short, without losing anything."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import zkpy
from zkpy.core.txn import CloseSession, decode_record
from zkpy.server.config import ServerConfig
from zkpy.server.node import Member, _usable_history
from zkpy.server.storage import Storage
from zkpy.testing import running_server


async def test_checkpoints_truncate_the_log_and_restart_restores_everything(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    expected: dict[str, bytes] = {}
    async with running_server(data_dir, checkpoint_every=100) as server:
        async with zkpy.connect(server.address) as zk:
            await zk.create("/c", b"")
            for index in range(1000):
                path = f"/c/n{index:04d}"
                await zk.create(path, str(index).encode())
                expected[path] = str(index).encode()
            for index in range(0, 1000, 3):
                path = f"/c/n{index:04d}"
                await zk.set(path, b"changed")
                expected[path] = b"changed"
            for index in range(0, 1000, 7):
                path = f"/c/n{index:04d}"
                await zk.delete(path)
                del expected[path]

    with Storage.open(data_dir) as storage:
        recovered = storage.load()
        assert recovered.checkpoint_zxid > 0
        first = storage.first_logged_zxid()
        assert first is not None
        # the log keeps at most about two checkpoints' worth, not the whole history of ~1,500
        assert len(storage.read_log(0)) < 400

    async with running_server(data_dir, checkpoint_every=100) as server:
        async with zkpy.connect(server.address) as zk:
            children = await zk.get_children("/c")
            assert sorted(f"/c/{name}" for name in children) == sorted(expected)
            for path in list(expected)[::50]:
                data, _stat = await zk.get(path)
                assert data == expected[path]
            stat = await zk.exists("/c")
            assert stat is not None
            assert stat.num_children == len(expected)


@pytest.mark.parametrize(
    "interval",
    # checkpoints every 50 transactions end at zxid 400, before the client's session closes (402);
    # every 67, the last one is that close
    [50, 67],
    ids=["before-the-close", "at-the-close"],
)
async def test_a_restarted_member_keeps_the_log_before_its_checkpoint_as_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: int
) -> None:
    monkeypatch.setattr("zkpy.server.node.secrets.randbelow", lambda _bound: interval - 50)
    data_dir = tmp_path / "data"
    async with running_server(data_dir, checkpoint_every=100) as server:
        async with zkpy.connect(server.address) as zk:
            for index in range(400):
                await zk.create(f"/h{index:04d}", b"x")

    config = ServerConfig(data_dir=data_dir, checkpoint_every=100)
    with Storage.open(data_dir) as storage:
        recovered = storage.load(include_nodes=False)
        assert recovered.retained, "the log keeps entries back to the previous checkpoint"
        assert recovered.retained[-1][0] == recovered.checkpoint_zxid
        member = Member(config, storage)
        history = [zxid for zxid, _raw in member.replica.history]
        assert history == [zxid for zxid, _raw in (*recovered.retained, *recovered.log)]
        assert member.replica.base_zxid == recovered.log_floor
        assert member.replica.tree.last_zxid == recovered.checkpoint_zxid
        # only what came after the checkpoint counts toward the next one
        assert member.executor.applied_since_checkpoint == len(recovered.log)
        # its change log reaches back as far: a watcher that reconnects after the restart with
        # a zxid from before the checkpoint is told each change it missed, not a summary. (Back
        # to the last session close the retained log holds, if a checkpoint came after the
        # client's session closed: which ephemerals a close deleted only the tree of its moment
        # knew, see `_change_log_from`.)
        retained = [decode_record(raw) for _zxid, raw in recovered.retained]
        closes = [record.zxid for record in retained if isinstance(record.op, CloseSession)]
        last_seen = closes[-1] if closes else retained[0].zxid
        assert member.change_log.covers(last_seen)
        replayed = [zxid for zxid, _changes in member.change_log.since(last_seen)]
        assert replayed == [record.zxid for record in retained if record.zxid > last_seen]
        assert bool(closes) == (interval == 67)
        if closes:  # a reconnect from before the close gets a summary instead
            assert not member.change_log.covers(last_seen - 1)

        # a log whose entries stop short of the checkpoint has gaps: none of it is history
        gap = dataclasses.replace(recovered, retained=recovered.retained[:-1])
        assert _usable_history(gap) == []
        assert _usable_history(recovered) == recovered.retained
