"""Ephemeral znodes live exactly as long as their session, seen from another client."""

from __future__ import annotations

import zkpy
from tests.conftest import RawConnection, wait_until
from zkpy.core.errors import Code
from zkpy.core.requests import CreateRequest
from zkpy.core.types import OPEN_ACL_UNSAFE
from zkpy.testing import RunningServer


async def test_ephemeral_gone_as_soon_as_owner_closes(server: RunningServer) -> None:
    async with zkpy.connect(server.address, session_timeout=2) as observer:
        async with zkpy.connect(server.address, session_timeout=2) as owner:
            await owner.create("/eph", b"mine", ephemeral=True)
            await owner.create("/dir", b"")
            await owner.create("/dir/child", b"", ephemeral=True)
            stat = await observer.exists("/eph")
            assert stat is not None
            assert stat.ephemeral_owner == owner.session_id
            persistent = await observer.exists("/dir")
            assert persistent is not None
            assert persistent.ephemeral_owner == 0
        # The close was acknowledged after its transaction was applied: no polling needed.
        assert await observer.exists("/eph") is None
        assert await observer.exists("/dir/child") is None
        assert await observer.exists("/dir") is not None
        assert await observer.get_children("/dir") == []


async def test_ephemeral_gone_when_session_expires(server: RunningServer) -> None:
    """A session whose client goes silent expires; its ephemeral goes and watchers hear it."""
    async with (
        zkpy.connect(server.address, session_timeout=2) as observer,
        RawConnection.open(server.port) as raw,
    ):
        reply = await raw.handshake(timeout_ms=200)
        assert reply.error == 0
        assert reply.timeout_ms == 200
        await raw.request(1, CreateRequest("/lease", b"held", OPEN_ACL_UNSAFE, True, False))
        _zxid, error, body = await raw.reply_to(1)
        assert error == 0
        assert body[0] == "/lease"
        # The raw client now stops sending anything, not even pings.

        fired = zkpy.WatchFuture()
        stat = await observer.exists("/lease", watch=fired)
        assert stat is not None
        assert stat.ephemeral_owner == reply.session_id

        async def gone() -> bool:
            return await observer.exists("/lease") is None

        await wait_until(gone, timeout=5, what="the ephemeral of the expired session to go")
        event = await fired.wait()
        assert event.type is zkpy.EventType.DELETED
        assert event.path == "/lease"
        assert event.zxid > stat.czxid
        # The server also hangs up on the expired session's connection.
        await raw.wait_closed(timeout=5)

        # The expired session cannot be resumed.
        async with RawConnection.open(server.port) as again:
            refused = await again.handshake(
                session_id=reply.session_id, password=reply.password, timeout_ms=200
            )
            assert refused.error == Code.SESSION_EXPIRED
            await again.wait_closed(timeout=5)

        # The observer's own session (kept alive by pings) is unaffected.
        assert observer.connected
        assert await observer.create("/after", b"") == "/after"
