"""Run a zkpy member inside your own trio test, on a free loopback port.

async with zkpy.testing.running_server(tmp_path) as server:
    async with zkpy.connect(server.address) as zk:
        ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from zkpy.server.config import ServerConfig
from zkpy.server.main import serve
from zkpy.server.wal import MIN_SEGMENT_BYTES


@dataclass(slots=True)
class RunningServer:
    """A member started by `running_server`: where it listens, its settings, how to stop it."""

    port: int
    config: ServerConfig
    cancel_scope: trio.CancelScope

    @property
    def address(self) -> str:
        """host:port for `zkpy.connect`."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Cancel the member's task: it stops serving at once."""
        self.cancel_scope.cancel()


@asynccontextmanager
async def running_server(data_dir: Path | str, **settings: Any) -> AsyncIterator[RunningServer]:
    """Start one member on 127.0.0.1 (port 0 picks a free one unless `client_port` is given).

    Settings are `ServerConfig` fields; tests usually pass a short `tick_ms`. Log segments
    default to the smallest size, so that a suite of many short-lived servers does not take
    64 MiB of disk for each.
    """
    settings.setdefault("client_port", 0)
    settings.setdefault("tick_ms", 200)
    settings.setdefault("log_segment_bytes", MIN_SEGMENT_BYTES)
    config = ServerConfig(data_dir=Path(data_dir), **settings)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await serve(config, task_status=task_status)

        port = await nursery.start(run)
        server = RunningServer(port, dataclasses.replace(config, client_port=port), scope)
        try:
            yield server
        finally:
            scope.cancel()
