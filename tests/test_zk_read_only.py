"""Read-only mode end to end: kazoo (`read_only=True`) keeps reading from a member whose quorum
is gone, its writes are refused with NotReadOnlyCallError, the four-letter words say so, a
client that did not ask for it is not served; when the quorum returns the member cuts its
read-only clients off and kazoo takes a new session that writes (as against ZooKeeper 3.8).
zkCli.sh -r reads there too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from kazoo.client import KazooClient
from kazoo.exceptions import NotReadOnlyCallError
from kazoo.protocol.states import KeeperState
from kazoo.retry import KazooRetry

from tests.admin_http import get, parse_prometheus, sample
from tests.ensemble_harness import Ensemble, Member, connect_to, poll
from tests.test_zk_ensemble import kz
from tests.test_zk_zkcli import zkcli


async def four_letter(member: Member, word: bytes) -> str:
    assert member.zk_port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", member.zk_port)
    async with stream:
        await stream.send_all(word)
        answer = b""
        with trio.fail_after(10):
            while data := await stream.receive_some(1 << 16):
                answer += data
    return answer.decode()


async def test_kazoo_reads_from_a_member_cut_off_from_its_quorum(tmp_path: Path) -> None:
    with Ensemble(
        tmp_path, zk_ports=True, admin_ports=True, tick_ms=1000, read_only_after_ms=500
    ) as ens:
        await ens.start_serving()
        leader = await ens.leader()
        kept = next(m for m in ens.voters if m is not leader)
        others = [m for m in ens.voters if m is not kept]
        async with connect_to(ens.voters) as zk:
            await zk.create("/config", b"v1")
            await zk.create("/config/child", b"")
        client = KazooClient(hosts=f"127.0.0.1:{kept.zk_port}", read_only=True, timeout=10)
        states: list[str] = []
        client.add_listener(states.append)
        await kz(client.start, timeout=15)
        try:
            assert client.client_state == KeeperState.CONNECTED
            first_session = client.client_id
            assert await four_letter(kept, b"isro") == "rw"

            for member in others:
                await member.kill9()
            await poll(
                lambda: client.client_state == KeeperState.CONNECTED_RO,
                timeout=30,
                what="kazoo connected read-only",
            )
            assert client.client_id != first_session  # the ensemble's session expired
            assert await four_letter(kept, b"isro") == "ro"
            srvr = await four_letter(kept, b"srvr")
            assert "READ-ONLY mode; serving only read-only clients" in srvr
            assert "Mode: read-only" in srvr
            assert "zk_server_state\tread-only" in await four_letter(kept, b"mntr")
            assert json.loads((await get(kept.admin_port, "/status"))[1])["read_only"] is True
            health = await get(kept.admin_port, "/health")
            assert health == (503, "not serving (looking; serving read-only clients)\n")
            metrics = parse_prometheus((await get(kept.admin_port, "/metrics"))[1])
            assert sample(metrics, "zkpy_read_only") == 1

            data, stat = await kz(client.get, "/config")
            assert (data, stat.numChildren) == (b"v1", 1)
            assert await kz(client.get_children, "/config") == ["child"]
            with pytest.raises(NotReadOnlyCallError):
                await kz(client.set, "/config", b"v2")
            with pytest.raises(NotReadOnlyCallError):
                await kz(client.create, "/new", b"")
            with pytest.raises(NotReadOnlyCallError):
                await kz(client.sync, "/config")

            cli = await zkcli(kept, "get /config", "create /from-zkcli", read_only=True)
            assert cli == [
                "WatchedEvent state:ConnectedReadOnly type:None path:null",
                "v1",
                "Not a read-only call: /from-zkcli",
            ]

            writer = KazooClient(hosts=f"127.0.0.1:{kept.zk_port}", timeout=10)
            with pytest.raises(Exception, match="time"):  # never served: no quorum
                await kz(writer.start, timeout=2)
            await kz(writer.stop)
            await kz(writer.close)

            for member in others:
                member.start()
            await poll(
                lambda: client.client_state == KeeperState.CONNECTED,
                timeout=60,
                what="kazoo back on a member that takes writes",
            )
            retry = KazooRetry(max_tries=-1, deadline=30)
            await kz(retry, client.set, "/config", b"v2")
            async with connect_to(ens.voters) as zk:
                assert (await zk.get("/config"))[0] == b"v2"
            assert await four_letter(kept, b"isro") == "rw"
            assert json.loads((await get(kept.admin_port, "/status"))[1])["read_only"] is False
        finally:
            await kz(client.stop)
            await kz(client.close)
