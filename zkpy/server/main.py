"""Start one member: open its data directory, recover, and serve clients until cancelled."""

from __future__ import annotations

import logging
from typing import Any

import trio

from zkpy.server.clients import ClientServer
from zkpy.server.config import ServerConfig
from zkpy.server.node import Member
from zkpy.server.storage import Storage

log = logging.getLogger("zkpy.server")


async def _tick(member: Member) -> None:
    period = member.config.tick_ms / 1000
    while True:
        await trio.sleep(period / 2)
        member.expire_sessions()


async def serve(config: ServerConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run one member until cancelled. `task_status.started()` reports the bound client port."""
    storage = await trio.to_thread.run_sync(
        lambda: Storage.open(config.data_dir, sync=config.fsync)
    )
    try:
        member = await trio.to_thread.run_sync(Member, config, storage)
        clients = ClientServer(member)
        async with trio.open_nursery() as nursery:
            await nursery.start(member.run_persister)
            listeners = await nursery.start(
                lambda task_status: trio.serve_tcp(
                    clients.handle, config.client_port, host=config.host, task_status=task_status
                )
            )
            member.start_tracking_sessions()
            nursery.start_soon(_tick, member)
            port = listeners[0].socket.getsockname()[1]
            log.info(
                "zkpy member %d serving on %s:%d, data in %s, last zxid %#x",
                config.server_id,
                config.host,
                port,
                config.data_dir,
                member.tree.last_zxid,
            )
            task_status.started(port)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(storage.close)
