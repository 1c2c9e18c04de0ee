"""A write held up at a stalled member is not applied after the writes its client made since.

The client writes through follower A, whose link to the leader then stalls with the write in it
(a paused TcpProxy on A's outgoing peer link: a GC pause or a VM stall of A's sending side, made
deterministic). The client gives up on A, resumes its session on member B and makes two more
acknowledged writes. When A's link moves again, the leader receives the old write last: it must
refuse it (SESSION_MOVED), as the session was attached to B since; applying it would leave the
stale value on every member and break FIFO client order.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

import zkpy
from tests.conftest import RawConnection, TcpProxy, tcp_proxy
from tests.ensemble_harness import SESSION_TIMEOUT, Ensemble, Member, connect_to, poll
from zkpy.core.requests import CreateRequest, SetDataRequest
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.errors import ConnectionLossError


def config_through_proxies(
    ensemble: Ensemble, member: Member, proxies: dict[tuple[int, int], TcpProxy]
) -> Path:
    """`member`'s own copy of the ensemble file, in which every other member's peer port is the
    proxy of the link from `member` to it (a member dials its peers at these ports)."""
    lines = ensemble.config_path.read_text().splitlines()
    section = 0
    out = []
    for line in lines:
        if line.startswith("[members.") or line.startswith("[observers."):
            section = int(line.split(".")[1].rstrip("]"))
        if line.startswith("peer_port") and section and section != member.id:
            line = f"peer_port = {proxies[(member.id, section)].port}"
        out.append(line)
    path = ensemble.root / f"ensemble-{member.id}.toml"
    path.write_text("\n".join(out) + "\n")
    return path


async def outstanding(member: Member) -> int:
    status = await member.status()
    return 0 if status is None else int(status["outstanding"])


async def test_a_write_held_up_at_a_stalled_follower_is_refused_after_the_session_moved(
    tmp_path: Path,
) -> None:
    with Ensemble(tmp_path / "ensemble") as ensemble:
        async with AsyncExitStack() as stack:
            proxies: dict[tuple[int, int], TcpProxy] = {}
            for source in ensemble.members.values():
                for target in ensemble.members.values():
                    if source is not target:
                        proxy = await stack.enter_async_context(tcp_proxy(target.peer_port))
                        proxies[(source.id, target.id)] = proxy
            for member in ensemble.members.values():
                member.start(config_through_proxies(ensemble, member, proxies))
            await ensemble.wait_all_serving()
            leader = await ensemble.leader()
            late, other = (m for m in ensemble.voters if m is not leader)
            to_late = await stack.enter_async_context(tcp_proxy(late.client_port))
            to_other = await stack.enter_async_context(tcp_proxy(other.client_port))
            to_other.refusing = True  # the session starts on A

            async with zkpy.connect(
                f"{to_late.address},{to_other.address}", session_timeout=SESSION_TIMEOUT
            ) as zk:
                await zk.create("/k", b"v0")
                proxies[(late.id, leader.id)].pause()  # A's writes stay on their way
                stale: list[object] = []

                async def write_stale() -> None:
                    try:
                        stale.append(await zk.set("/k", b"stale"))
                    except ConnectionLossError as err:
                        stale.append(err)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write_stale)
                    await poll(lambda: outstanding(late), timeout=10, what="A to hold the write")
                    to_late.refusing, to_other.refusing = True, False
                    to_late.cut()  # the client gives up on A ...
                await poll(lambda: stale, timeout=10, what="the stale write to fail")
                assert isinstance(stale[0], ConnectionLossError)
                await zk.set("/k", b"w1")  # ... resumes its session on B, and writes on
                await zk.set("/k", b"w2")
                assert zk.server == ("127.0.0.1", to_other.port)

                proxies[(late.id, leader.id)].resume()  # A's old write reaches the leader

                async def answered() -> bool:
                    return await outstanding(late) == 0

                await poll(answered, timeout=15, what="A's write to be answered")
                await zk.sync("/k")
                data, stat = await zk.get("/k")
                assert (data, stat.version) == (b"w2", 2)  # not b"stale", applied last
                assert zk.connected  # the session and its connection to B are unharmed
            await ensemble.wait_converged()
            for member in ensemble.voters:
                async with connect_to(member) as reader:
                    await reader.sync("/k")
                    data, stat = await reader.get("/k")
                    assert (data, stat.version) == (b"w2", 2), member.id
            assert "Traceback" not in late.log()


async def test_resuming_a_session_elsewhere_closes_its_old_connection(tmp_path: Path) -> None:
    """The member that held the session's connection closes it once it applies the attach
    made on another member (before, it stayed open until the client's read timeout, 1.5 T)."""
    with Ensemble(tmp_path / "ensemble") as ensemble:
        await ensemble.start_serving()
        first, second = ensemble.voters[:2]
        async with RawConnection.open(first.client_port) as old:
            hello = await old.handshake(timeout_ms=4000)
            assert hello.error == 0
            await old.request(1, CreateRequest("/k", b"v0", OPEN_ACL_UNSAFE))
            assert (await old.reply_to(1))[1] == 0
            async with RawConnection.open(second.client_port) as new:
                resumed = await new.handshake(session_id=hello.session_id, password=hello.password)
                assert resumed.error == 0
                assert resumed.session_id == hello.session_id
                await old.wait_closed(timeout=3.0)  # well within the 6 s read timeout
                await new.request(1, SetDataRequest("/k", b"v1"))
                assert (await new.reply_to(1))[1] == 0
