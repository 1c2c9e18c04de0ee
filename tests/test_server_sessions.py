"""Sessions across connections: resumed after a server restart, refused with a wrong password
or once expired; requests in flight on a broken connection fail with ConnectionLossError."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import zkpy
from tests.conftest import RawConnection, server_process, tcp_proxy, wait_until
from zkpy import ConnectionState
from zkpy.core.errors import Code
from zkpy.errors import ConnectionLossError, SessionExpiredError
from zkpy.testing import RunningServer


async def test_session_and_ephemeral_survive_a_server_restart(tmp_path: Path) -> None:
    with server_process(tmp_path / "data", tick_ms=500) as proc:
        await proc.wait_ready()
        async with (
            zkpy.connect(proc.address, session_timeout=4) as zk,
            zk.state_changes() as states,
        ):
            assert zk.session_timeout == 4
            session_id = zk.session_id
            await zk.create("/mine", b"eph", ephemeral=True)
            await zk.create("/kept", b"persistent")

            assert await proc.stop() == 0  # SIGTERM: a clean stop
            with trio.fail_after(10):
                assert await states.receive() is ConnectionState.SUSPENDED
            assert not zk.connected
            proc.start()
            await proc.wait_ready()
            with trio.fail_after(10):
                assert await states.receive() is ConnectionState.CONNECTED

            assert zk.session_id == session_id
            data, stat = await zk.get("/mine")
            assert data == b"eph"
            assert stat.ephemeral_owner == session_id
            assert (await zk.get("/kept"))[0] == b"persistent"
            await zk.create("/after", b"")

        # Closing the resumed session still removes its ephemeral.
        async with zkpy.connect(proc.address, session_timeout=4) as other:
            assert await other.exists("/mine") is None
            assert await other.exists("/kept") is not None


async def test_handshake_with_a_wrong_password_is_refused(server: RunningServer) -> None:
    async with zkpy.connect(server.address, session_timeout=2) as zk:
        async with RawConnection.open(server.port) as raw:
            wrong = bytes(b ^ 0xFF for b in zk.session_password)
            reply = await raw.handshake(session_id=zk.session_id, password=wrong, timeout_ms=2000)
            assert reply.error == Code.AUTH_FAILED
            assert reply.session_id == 0
            assert reply.password == b""
            await raw.wait_closed(timeout=5)
        # The real owner keeps its session and connection.
        assert zk.connected
        await zk.create("/still-mine", b"", ephemeral=True)


async def test_handshake_for_an_unknown_session_is_expired(server: RunningServer) -> None:
    async with RawConnection.open(server.port) as raw:
        reply = await raw.handshake(session_id=0x0123_4567_89AB, password=b"x" * 16)
        assert reply.error == Code.SESSION_EXPIRED
        await raw.wait_closed(timeout=5)


async def test_requests_in_flight_fail_with_connection_loss(server: RunningServer) -> None:
    async with (
        tcp_proxy(server.port) as proxy,
        zkpy.connect(proxy.address, session_timeout=2) as zk,
    ):
        await zk.create("/flight", b"0")
        session_id = zk.session_id
        proxy.pause()  # requests reach the proxy and stop there
        outcomes: list[BaseException | object] = []
        sent = trio.Event()

        async def request(i: int) -> None:
            try:
                outcomes.append(await zk.set("/flight", str(i).encode()))
            except ConnectionLossError as err:
                outcomes.append(err)
            if len(outcomes) == 10:
                sent.set()

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(request, i)
            await wait_until(lambda: len(zk._pending) == 10, what="10 requests in flight")
            proxy.cut()
            with trio.fail_after(5):
                await sent.wait()
        assert all(isinstance(item, ConnectionLossError) for item in outcomes), outcomes

        # The client reconnects on its own and the session goes on.
        proxy.resume()
        with trio.fail_after(5):
            await zk.wait_connected()
        assert zk.session_id == session_id
        data, _stat = await zk.get("/flight")
        assert data == b"0"  # the paused requests never reached the server


async def test_client_cut_off_past_its_timeout_finds_its_session_expired(
    server: RunningServer,
) -> None:
    async with (
        zkpy.connect(server.address, session_timeout=2) as observer,
        tcp_proxy(server.port) as proxy,
        zkpy.connect(proxy.address, session_timeout=0.4) as zk,
    ):
        states: list[ConnectionState] = []
        zk.add_listener(states.append)
        await zk.create("/cut", b"", ephemeral=True)
        proxy.refusing = True
        proxy.pause()
        proxy.cut()

        async def gone() -> bool:
            return await observer.exists("/cut") is None

        await wait_until(gone, timeout=5, what="the cut-off session to expire")
        proxy.refusing = False
        proxy.resume()
        await wait_until(lambda: zk.state is ConnectionState.LOST, timeout=5, what="LOST")
        assert states[0] is ConnectionState.SUSPENDED
        assert states[-1] is ConnectionState.LOST
        with pytest.raises(SessionExpiredError):
            await zk.get("/")


async def test_connection_reset_during_the_handshake_is_retried(server: RunningServer) -> None:
    """A server that resets the connection in the handshake (e.g. one dying from kill -9) is
    just an unreachable server: the client stays SUSPENDED and tries again."""
    async with (
        tcp_proxy(server.port) as proxy,
        zkpy.connect(proxy.address, session_timeout=2) as zk,
    ):
        await zk.create("/reset", b"", ephemeral=True)
        session_id = zk.session_id
        proxy.resetting = True
        proxy.cut()
        await wait_until(lambda: proxy.refused >= 2, timeout=5, what="reset handshakes")
        assert zk.state is ConnectionState.SUSPENDED
        proxy.resetting = False
        with trio.fail_after(5):
            await zk.wait_connected()
        assert zk.session_id == session_id
        assert (await zk.exists("/reset")) is not None
