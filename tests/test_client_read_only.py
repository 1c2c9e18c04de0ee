"""zkpy's own client in read-only mode, end to end: with ``read_only=True`` it is served by a
member whose quorum is gone (once its session of the ensemble has had time to expire there),
its writes fail with NotReadOnlyError, and it moves by itself to a member that serves once the
quorum is back, with a new session; a client that did not ask is never served read-only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

import zkpy
from tests.ensemble_harness import Ensemble, Member, connect_to, poll
from tests.test_server_cli import zkpy_command
from zkpy.client.client import ConnectionState
from zkpy.errors import ConnectionLossError, NotReadOnlyError
from zkpy.testing.ensemble import child_env


async def zkpy_cli(*args: str) -> tuple[int, str]:
    with trio.fail_after(60):
        done = await trio.run_process(
            [*zkpy_command(), *args],
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            env=child_env(),
            check=False,
        )
    return done.returncode, done.stdout.decode()


async def check_the_command_line(member: Member) -> None:
    """`--read-only` (zkCli.sh's -r) lets the one-shot commands and the shell read there."""
    server = ["--server", member.address, "--timeout", "2"]
    assert await zkpy_cli("get", *server, "--read-only", "/config") == (0, "v1\n")
    code, out = await zkpy_cli("shell", *server, "--read-only", "create", "/from-shell")
    assert code == 1
    assert "NotReadOnly" in out
    code, out = await zkpy_cli("get", *server, "/config")
    assert code == 1
    assert "ConnectionLoss" in out


async def test_a_read_only_client_reads_without_a_quorum_then_moves_back(tmp_path: Path) -> None:
    with Ensemble(tmp_path, read_only_after_ms=300) as ens:
        await ens.start_serving()
        leader = await ens.leader()
        kept = next(m for m in ens.voters if m is not leader)
        others = [m for m in ens.voters if m is not kept]
        async with zkpy.connect(
            ens.addresses(), read_only=True, session_timeout=2.0, connect_timeout=2.0
        ) as zk:
            states: list[ConnectionState] = []
            zk.add_listener(states.append)
            await zk.create("/config", b"v1")
            first_session = zk.session_id
            assert not zk.read_only

            for member in others:
                await member.kill9()
            await poll(lambda: zk.read_only, timeout=30, what="served read-only")
            assert ConnectionState.LOST in states  # its session of the ensemble, given up
            assert zk.session_id != first_session
            assert zk.server == ("127.0.0.1", kept.client_port)
            assert (await zk.get("/config"))[0] == b"v1"
            assert await zk.get_children("/") == ["config", "zookeeper"]
            with pytest.raises(NotReadOnlyError):
                await zk.set("/config", b"v2")
            with pytest.raises(NotReadOnlyError):
                await zk.create("/new", b"")
            with pytest.raises(NotReadOnlyError):
                await zk.sync("/config")

            with pytest.raises(ConnectionLossError):  # a client that did not ask for it
                async with connect_to(kept, connect_timeout=0.5):
                    pass
            await check_the_command_line(kept)

            for member in others:
                member.start()
            await poll(
                lambda: zk.connected and not zk.read_only,
                timeout=60,
                what="back on a member that serves",
            )
            with trio.fail_after(30):
                await zk.set("/config", b"v2")
        async with connect_to(ens.voters) as zk:
            assert (await zk.get("/config"))[0] == b"v2"
