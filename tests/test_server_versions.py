"""Conditional writes: versions on set/delete, and multi (all or nothing, a result per op)."""

from __future__ import annotations

import pytest

import zkpy
from zkpy.errors import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from zkpy.testing import RunningServer


async def test_set_and_delete_check_the_version(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await zk.create("/v", b"zero")
        stat = await zk.set("/v", b"one", version=0)
        assert stat.version == 1

        with pytest.raises(BadVersionError):
            await zk.set("/v", b"stale", version=0)
        data, stat = await zk.get("/v")
        assert (data, stat.version) == (b"one", 1)

        with pytest.raises(BadVersionError):
            await zk.delete("/v", version=0)
        with pytest.raises(BadVersionError):
            await zk.delete("/v", version=2)
        assert await zk.exists("/v") is not None

        # -1 means "any version".
        stat = await zk.set("/v", b"two", version=-1)
        assert stat.version == 2
        await zk.delete("/v", version=2)
        assert await zk.exists("/v") is None
        with pytest.raises(NoNodeError):
            await zk.set("/v", b"x", version=-1)


async def test_versions_race_between_two_clients(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as a, zkpy.connect(server.address) as b:
        await a.create("/counter", b"0")
        _data, seen_by_a = await a.get("/counter")
        _data, seen_by_b = await b.get("/counter")
        await a.set("/counter", b"1", version=seen_by_a.version)
        with pytest.raises(BadVersionError):
            await b.set("/counter", b"1", version=seen_by_b.version)
        assert (await b.get("/counter"))[0] == b"1"


async def test_multi_commits_everything_with_a_result_per_op(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await zk.create("/t")
        await zk.create("/t/x", b"old")
        await zk.create("/t/gone")
        results = await (
            zk.transaction()
            .create("/t/a", b"A")
            .set_data("/t/x", b"new", version=0)
            .check("/t/x", 1)
            .delete("/t/gone", version=0)
            .create("/t/seq-", b"", sequential=True)
            .commit()
        )
        assert results[0] == "/t/a"
        assert isinstance(results[1], zkpy.Stat)
        assert results[1].version == 1
        assert results[2] is True
        assert results[3] is True
        assert results[4] == "/t/seq-0000000004"
        assert (await zk.get("/t/a"))[0] == b"A"
        assert (await zk.get("/t/x"))[0] == b"new"
        assert await zk.exists("/t/gone") is None
        # All ops of a multi share one zxid.
        a_stat = await zk.exists("/t/a")
        x_stat = await zk.exists("/t/x")
        assert a_stat is not None
        assert x_stat is not None
        assert a_stat.czxid == x_stat.mzxid == results[1].mzxid

        # The context-manager form commits on a clean exit.
        async with zk.transaction() as txn:
            txn.create("/t/b", b"B")
        assert txn.committed
        assert (await zk.get("/t/b"))[0] == b"B"


async def test_failed_multi_changes_nothing(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk, zkpy.connect(server.address) as other:
        await zk.create("/m")
        await zk.create("/m/x", b"old")
        _data, before = await zk.get("/m")
        results = await (
            zk.transaction()
            .create("/m/new", b"N")
            .set_data("/m/x", b"lost", version=0)
            .set_data("/m/x", b"bad", version=7)  # fails: /m/x would have version 1
            .delete("/m/x")
            .commit()
        )
        assert isinstance(results[0], RolledBackError)
        assert isinstance(results[1], RolledBackError)
        assert isinstance(results[2], BadVersionError)
        # Ops after the failing one were never tried (ZooKeeper's RUNTIME_INCONSISTENCY).
        assert len(results) == 4
        assert isinstance(results[3], zkpy.errors.RuntimeInconsistencyError)

        # Nothing happened, as seen from another session too.
        assert await other.exists("/m/new") is None
        data, x = await other.get("/m/x")
        assert (data, x.version) == (b"old", 0)
        _data, after = await other.get("/m")
        assert after.cversion == before.cversion
        assert after.num_children == 1

        results = await zk.transaction().create("/m/y").create("/m/x").commit()
        assert isinstance(results[0], RolledBackError)
        assert isinstance(results[1], NodeExistsError)
        assert await other.exists("/m/y") is None
