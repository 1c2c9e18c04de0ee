"""ZooKeeper's four-letter words on the ZooKeeper port, with the fields monitoring tools parse,
as ZooKeeper 3.8 prints them: real latencies and packet counts in `srvr`, `stat` and `mntr`,
the connections in `cons`, sessions and ephemerals in `dump`, watches in `wchs`, `wchc` and
`wchp`; and a word that arrives split over two reads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from kazoo.client import KazooClient

from tests.test_zk_kazoo import kz, started, stopped, zk_port
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ports import free_port


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data", tick_ms=500, zk_port=free_port()) as server:
        yield server


@pytest.fixture
async def kazoo(member: RunningServer) -> AsyncIterator[KazooClient]:
    client = await started(member)
    try:
        yield client
    finally:
        await stopped(client)


async def ask(member: RunningServer, *parts: bytes) -> str:
    """Send a word (in `parts`, each one read by the member before the next is sent) and read
    the answer until the member closes the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", zk_port(member))
    async with stream:
        for part in parts:
            await stream.send_all(part)
            await trio.testing.wait_all_tasks_blocked()  # the member has read it
        answer = b""
        with trio.fail_after(10):
            while data := await stream.receive_some(1 << 16):
                answer += data
    return answer.decode()


async def test_a_word_split_over_two_reads_is_answered(member: RunningServer) -> None:
    assert await ask(member, b"ru", b"ok") == "imok"
    assert "Mode: standalone" in await ask(member, b"s", b"rvr\n")


async def test_srvr_reports_real_latencies_and_packets(
    member: RunningServer, kazoo: KazooClient
) -> None:
    for index in range(20):
        await kz(kazoo.create, f"/n{index}", b"x")
    text = await ask(member, b"srvr")
    found = re.search(r"Latency min/avg/max: (\d+)/(\d+\.\d+)/(\d+)\n", text)
    assert found is not None, text
    low, average, high = int(found[1]), float(found[2]), int(found[3])
    assert low <= average <= high
    received = int(re.search(r"Received: (\d+)", text)[1])  # type: ignore[index]
    sent = int(re.search(r"Sent: (\d+)", text)[1])  # type: ignore[index]
    assert received >= 20  # the creates
    assert sent >= 20
    lines = text.splitlines()
    assert lines[0].startswith("Zookeeper version: 3.8.0")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "Latency min/avg/max",
        "Received",
        "Sent",
        "Connections",
        "Outstanding",
        "Zxid",
        "Mode",
        "Node count",
    ]
    mntr = dict(line.split("\t") for line in (await ask(member, b"mntr")).splitlines())
    assert float(mntr["zk_avg_latency"]) >= 0
    assert int(mntr["zk_packets_sent"]) >= sent
    assert int(mntr["zk_max_latency"]) >= int(mntr["zk_min_latency"])
    assert int(mntr["zk_global_sessions"]) == 1


async def test_stat_and_cons_list_the_connections(
    member: RunningServer, kazoo: KazooClient
) -> None:
    await kz(kazoo.create, "/c", b"x")
    await kz(kazoo.get, "/c")
    session = kazoo.client_id[0]
    stat = await ask(member, b"stat")
    assert re.search(r"Clients:\n /127\.0\.0\.1:\d+\[1\]\(queued=0,recved=\d+,sent=\d+\)\n", stat)
    cons = await ask(member, b"cons")
    line = next(line for line in cons.splitlines() if f"sid={session:#x}" in line)
    inside = re.search(r"\((.*)\)", line)
    assert inside is not None
    fields = dict(item.split("=", 1) for item in inside[1].split(","))
    assert fields["lop"] == "GETD"
    assert fields["to"] == "5000"
    assert int(fields["recved"]) >= 2
    assert int(fields["lzxid"], 16) > 0
    assert int(fields["maxlat"]) >= int(fields["minlat"])
    assert set(fields) >= {"queued", "sent", "est", "lcxid", "lresp", "llat", "avglat"}
    assert cons.endswith(")\n\n")


async def test_dump_lists_sessions_and_their_ephemerals(
    member: RunningServer, kazoo: KazooClient
) -> None:
    await kz(kazoo.create, "/e", b"", ephemeral=True)
    session = kazoo.client_id[0]
    text = await ask(member, b"dump")
    assert f"{session:#x}\t5000ms" in text
    assert f"Sessions with Ephemerals (1):\n{session:#x}:\n\t/e\n" in text
    assert text.startswith("SessionTracker dump:\n")


async def test_the_watch_words(member: RunningServer, kazoo: KazooClient) -> None:
    await kz(kazoo.create, "/w", b"")
    await kz(kazoo.get, "/w", watch=lambda event: None)
    await kz(kazoo.get_children, "/w", watch=lambda event: None)
    session = kazoo.client_id[0]
    assert await ask(member, b"wchs") == "1 connections watching 1 paths\nTotal watches:2\n"
    assert await ask(member, b"wchc") == f"{session:#x}\n\t/w\n"
    assert await ask(member, b"wchp") == f"/w\n\t{session:#x}\n"


async def test_srst_starts_the_server_stats_over(member: RunningServer, kazoo: KazooClient) -> None:
    for index in range(5):
        await kz(kazoo.create, f"/s{index}", b"x")
    before = int(re.search(r"Received: (\d+)", await ask(member, b"srvr"))[1])  # type: ignore[index]
    assert before >= 5
    assert await ask(member, b"srst") == "Server stats reset.\n"
    text = await ask(member, b"srvr")
    assert "Latency min/avg/max: 0/0.0/0\n" in text
    assert int(re.search(r"Received: (\d+)", text)[1]) <= 1  # type: ignore[index]  # a ping
    await kz(kazoo.get, "/s0")
    assert int(re.search(r"Received: (\d+)", await ask(member, b"srvr"))[1]) >= 1  # type: ignore[index]


async def test_crst_starts_each_connections_stats_over(
    member: RunningServer, kazoo: KazooClient
) -> None:
    await kz(kazoo.get, "/")
    session = kazoo.client_id[0]
    assert await ask(member, b"crst") == "Connection stats reset.\n"
    line = next(
        line for line in (await ask(member, b"cons")).splitlines() if f"{session:#x}" in line
    )
    inside = re.search(r"\((.*)\)", line)
    assert inside is not None
    fields = dict(item.split("=", 1) for item in inside[1].split(","))
    assert fields["lop"] == "NA"
    assert "lcxid" not in fields
    assert int(fields["recved"]) <= 1  # a ping may come meanwhile
    assert (fields["minlat"], fields["avglat"], fields["maxlat"]) == ("0", "0", "0")


async def test_dirs_reports_the_checkpoint_and_the_log(member: RunningServer) -> None:
    found = re.fullmatch(r"datadir_size: (\d+)\nlogdir_size: (\d+)\n", await ask(member, b"dirs"))
    assert found is not None
    assert int(found[1]) > 0
    assert int(found[2]) > 0


async def test_gtmk_and_stmk_read_and_set_the_trace_mask(member: RunningServer) -> None:
    assert await ask(member, b"gtmk") == "306"  # ZooKeeper's default
    assert await ask(member, b"stmk" + (511).to_bytes(8, "big")) == "511"
    assert await ask(member, b"gtmk") == "511"
    assert await ask(member, b"stmk") == ""  # no mask: closed without a word, as by ZooKeeper
