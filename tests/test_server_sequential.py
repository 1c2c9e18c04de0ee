"""Sequential znodes: a 10-digit suffix taken from the parent's cversion, unique and increasing."""

from __future__ import annotations

import re

import trio

import zkpy
from zkpy.testing import RunningServer

SUFFIX = re.compile(r"^(?P<prefix>.*?)(?P<seq>\d{10})$")


def sequence_of(path: str, prefix: str) -> int:
    match = SUFFIX.match(path)
    assert match is not None, path
    assert match["prefix"] == prefix, path
    return int(match["seq"])


async def test_suffix_is_the_parent_cversion(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await zk.create("/p")
        first = await zk.create("/p/job-", b"", sequential=True)
        assert first == "/p/job-0000000000"
        # Deleting a child bumps the cversion too, so numbers are never reused.
        await zk.create("/p/plain")
        await zk.delete("/p/plain")
        await zk.delete(first)
        _data, parent = await zk.get("/p")
        assert parent.cversion == 4
        created = await zk.create("/p/job-", b"", sequential=True)
        assert created == "/p/job-0000000004"
        # A path ending in '/' gets the bare counter as its name.
        bare = await zk.create("/p/", b"", sequential=True)
        assert bare == "/p/0000000005"
        assert await zk.get_children("/p") == ["0000000005", "job-0000000004"]


async def test_concurrent_sequential_creates_are_unique_and_ordered(server: RunningServer) -> None:
    clients, per_client = 3, 50
    made: list[tuple[int, int]] = []  # (czxid, sequence number)

    async with zkpy.connect(server.address) as setup:
        await setup.create("/q")

    async def one_client(index: int) -> None:
        async with zkpy.connect(server.address) as zk:

            async def create_one(i: int) -> None:
                path, stat = await zk.create(
                    "/q/item-", f"{index}:{i}".encode(), sequential=True, include_data=True
                )
                made.append((stat.czxid, sequence_of(path, "/q/item-")))

            async with trio.open_nursery() as nursery:
                for i in range(per_client):
                    nursery.start_soon(create_one, i)

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(one_client, index)

    total = clients * per_client
    numbers = [seq for _czxid, seq in made]
    assert len(made) == total
    assert sorted(numbers) == list(range(total)), "suffixes are unique and without gaps"
    # In commit (zxid) order the suffixes strictly increase.
    by_commit = [seq for _czxid, seq in sorted(made)]
    assert by_commit == sorted(by_commit)
    async with zkpy.connect(server.address) as zk:
        children, stat = await zk.get_children("/q", include_data=True)
        assert len(children) == total
        assert stat.cversion == total
        assert stat.num_children == total
        data, _ = await zk.get("/q/item-0000000000")
        assert re.fullmatch(rb"\d:\d+", data)


async def test_ephemeral_sequential(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as observer:
        await observer.create("/locks")
        async with zkpy.connect(server.address) as owner:
            first = await owner.create("/locks/lock-", b"a", ephemeral=True, sequential=True)
            second = await owner.create("/locks/lock-", b"b", ephemeral=True, sequential=True)
            assert sequence_of(first, "/locks/lock-") == 0
            assert sequence_of(second, "/locks/lock-") == 1
            stat = await observer.exists(second)
            assert stat is not None
            assert stat.ephemeral_owner == owner.session_id
            assert await observer.get_children("/locks") == ["lock-0000000000", "lock-0000000001"]
        assert await observer.get_children("/locks") == []
        # The counter keeps going: the deleted ephemerals' numbers are not handed out again.
        again = await observer.create("/locks/lock-", b"", ephemeral=True, sequential=True)
        assert again == "/locks/lock-0000000004"
