"""Start one member: open its data directory, recover, join the ensemble and serve clients."""

from __future__ import annotations

import gc
import logging
from typing import Any

import trio

from zkpy.server.clients import ClientServer
from zkpy.server.config import ServerConfig
from zkpy.server.node import Member
from zkpy.server.peers import PeerNetwork
from zkpy.server.storage import Storage

log = logging.getLogger("zkpy.server")


# The cyclic garbage collector's thresholds in a member: allocations before a young collection,
# young collections per middle one, middle ones per full one (Python's defaults: 700, 10, 10).
# The objects of a batch of writes (requests, records, Readies, the prep overlay) live for a
# few milliseconds; with 700 they outlive young collections, are promoted, and soon make the
# collector walk every znode, about once a second under pipelined writes: 11-14 % of a
# member's CPU with 64,000 znodes. With these they die young and full passes are rare.
GC_THRESHOLDS = (50_000, 20, 100)


def _freeze_recovered_objects() -> None:
    """Move everything alive after recovery (the code, the recovered tree) out of the cyclic
    garbage collector's sight, and make its passes rarer (`GC_THRESHOLDS`). None of it is
    cyclic garbage, and a full collection would otherwise walk every znode again each time the
    younger generations fill up: tens of milliseconds per pass for a big tree, stalling every
    client of the member."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config: ServerConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run one member until cancelled. `task_status.started()` reports the bound client port."""
    storage = await trio.to_thread.run_sync(
        lambda: Storage.open(config.data_dir, sync=config.fsync)
    )
    try:
        member = await trio.to_thread.run_sync(Member, config, storage)
        _freeze_recovered_objects()
        clients = ClientServer(member)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: trio.serve_tcp(
                    clients.handle, config.client_port, host=config.host, task_status=task_status
                )
            )
            port = listeners[0].socket.getsockname()[1]
            member.client_port = port
            if config.members:
                peers = PeerNetwork(
                    config, member.peer_message, member.peer_down, member.output, member.step
                )
                member.send_to_peer = peers.send
                await nursery.start(peers.run)
            await nursery.start(member.run)
            nursery.start_soon(member.run_ticks)
            log.info(
                "zkpy member %d listening for clients on %s:%d, data in %s, last zxid %#x",
                config.server_id,
                config.host,
                port,
                config.data_dir,
                member.replica.last_logged,
            )
            task_status.started(port)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(storage.close)
