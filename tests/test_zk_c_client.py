"""ZooKeeper's C client (`cli_mt`, the shell of libzookeeper_mt from Debian's `zookeeper-bin`)
against a member's ZooKeeper port: creates of each kind, reads, writes, a child watch and a data
watch that a write through zkpy's own client fires, and the session's ephemeral node gone once
the C client quits.

`cli_mt` answers asynchronously: each command is sent once the previous one's answer is out.
Its `get` and `ls` leave a watch."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import zkpy
from zkpy.testing.ensemble import child_env
from zkpy.testing.ports import free_port
from zkpy.testing.server import RunningServer, running_server

CLI_MT = Path("/usr/lib/zookeeper/bin/cli_mt")
INSTALL_HINT = "cli_mt comes with Debian's zookeeper-bin package: apt-get install zookeeper-bin"
ANSWER_TIMEOUT_S = 20


class CShell:
    """One `cli_mt` process: send a command, wait for a line of its answer."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = ""
        self._printed = trio.Event()  # set when more output came, then replaced

    async def read_forever(self) -> None:
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self.output += chunk.decode(errors="replace")
            self._printed.set()
            self._printed = trio.Event()

    async def send(self, command: str, *expected: str) -> None:
        """Send `command`, then wait until every one of `expected` has been printed since."""
        assert self.process.stdin is not None
        start = len(self.output)
        await self.process.stdin.send_all(f"{command}\n".encode())
        for text in expected:
            await self.wait_for(text, start)

    async def wait_for(self, text: str, start: int = 0) -> None:
        """Wait until `text` has been printed (after the first `start` characters)."""
        with trio.move_on_after(ANSWER_TIMEOUT_S):
            while text not in self.output[start:]:
                await self._printed.wait()
            return
        raise AssertionError(f"no {text!r} from cli_mt; it printed:\n{self.output}")


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[RunningServer]:
    assert CLI_MT.exists(), INSTALL_HINT
    async with running_server(tmp_path / "data", tick_ms=500, zk_port=free_port()) as server:
        yield server


async def test_the_c_client_reads_writes_and_watches(member: RunningServer) -> None:
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            lambda task_status: trio.run_process(
                [str(CLI_MT), f"127.0.0.1:{member.config.zk_port}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=child_env(),
                check=False,
                task_status=task_status,
            )
        )
        shell = CShell(process)
        nursery.start_soon(shell.read_forever)
        await shell.wait_for("state = CONNECTED_STATE")
        await shell.send("create /c", "[/c]: rc = 0")
        await shell.send("create +e /c/e", "[/c/e]: rc = 0")
        await shell.send("create +s /c/s-", "name = /c/s-0000000001")
        await shell.send("set /c world", "/c: rc = 0 Stat:")
        await shell.send("get /c", " value_len = 5\nworld\n")  # and a data watch
        await shell.send("ls /c", "\te\n\ts-0000000001\n")  # and a child watch
        await shell.send(
            "delete /c/e", "/c/e: rc = 0", "Watcher CHILD_EVENT state = CONNECTED_STATE for path /c"
        )
        async with zkpy.connect(member.address) as zk:
            await zk.set("/c", b"from zkpy")
        await shell.wait_for("Watcher CHANGED_EVENT state = CONNECTED_STATE for path /c")
        await shell.send("get /c", " value_len = 9\nfrom zkpy\n")
        await shell.send("get /nope", "/nope: rc = -101")
        await shell.send("config", "server.1=", "version=0")
        await shell.send("create +e /c/gone", "[/c/gone]: rc = 0")
        await shell.send("quit", "Quitting...")
        with trio.fail_after(ANSWER_TIMEOUT_S):
            await process.wait()
        nursery.cancel_scope.cancel()
    async with zkpy.connect(member.address) as zk:
        assert await zk.get_children("/c") == ["s-0000000001"]  # its session closed on quit
