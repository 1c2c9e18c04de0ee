"""A member whose disk fails stops: it never acknowledges a write it did not persist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import zkpy
from zkpy.server.storage import Storage, StorageError
from zkpy.testing import running_server


async def test_a_failing_disk_stops_the_member_without_acknowledging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acknowledged: list[str] = []
    original = Storage.append
    failing = trio.Event()

    def append(self: Storage, entries: Any) -> None:
        if failing.is_set():
            raise StorageError(f"{self.path}: disk full (simulated)")
        original(self, entries)

    async def write_after(zk: zkpy.Client) -> None:
        await zk.create("/after", b"")
        acknowledged.append("/after")
        pytest.fail("a write was acknowledged after the disk failed")

    monkeypatch.setattr(Storage, "append", append)
    with pytest.RaisesGroup(StorageError, flatten_subgroups=True, allow_unwrapped=True):
        async with running_server(tmp_path / "data") as server:
            async with zkpy.connect(server.address, session_timeout=4.0) as zk:
                await zk.create("/before", b"")
                acknowledged.append("/before")
                failing.set()
                with pytest.raises(zkpy.errors.ZkError), trio.fail_after(10):
                    await write_after(zk)
    assert acknowledged == ["/before"]
    monkeypatch.setattr(Storage, "append", original)
    async with running_server(tmp_path / "data") as server:
        async with zkpy.connect(server.address) as zk:
            assert await zk.exists("/before") is not None
            assert await zk.exists("/after") is None
