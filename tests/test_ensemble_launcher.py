"""`zkpy ensemble`: a local ensemble of member processes, run and stopped by one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import zkpy
from tests.ensemble_harness import free_ports, poll, port_is_free, process_gone, try_status
from zkpy.client.client import parse_hosts
from zkpy.testing.ensemble import child_env


def member_pids(config: Path) -> set[int]:
    """Processes whose command line names `config` (the launcher's members)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in command and b"server" in command:
            found.add(int(entry.name))
    return found


async def test_zkpy_ensemble_runs_and_stops_its_members(tmp_path: Path) -> None:
    ports = free_ports(6, consecutive=True)
    client_port, peer_port = ports[0], ports[3]
    data_dir = tmp_path / "ensemble"
    config = data_dir / "ensemble.toml"
    out, err = tmp_path / "ensemble.out", tmp_path / "ensemble.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zkpy",
                "ensemble",
                "--size",
                "3",
                "--data-dir",
                str(data_dir),
                "--client-port",
                str(client_port),
                "--peer-port",
                str(peer_port),
            ],
            stdout=stdout,
            stderr=stderr,
            env=child_env(),
        )
    pids: set[int] = set()
    try:

        def first_line_printed() -> str | None:
            line, newline, _rest = out.read_text().partition("\n")
            return line if newline else None

        first_line = await poll(first_line_printed, timeout=15, what="the connection string")
        expected = [f"127.0.0.1:{client_port + index}" for index in range(3)]
        assert first_line.split(",") == expected
        hosts = parse_hosts(first_line)

        for host, port in hosts:

            async def serving(host: str = host, port: int = port) -> bool:
                assert launcher.poll() is None, err.read_text()
                status = await try_status(host, port)
                return bool(status and status["serving"])

            await poll(serving, timeout=30, interval=0.05, what=f"member on {port} to serve")
        statuses = [await try_status(host, port) for host, port in hosts]
        roles = sorted(str(status["role"]) for status in statuses if status)
        assert roles == ["follower", "follower", "leader"]

        pids = member_pids(config)
        assert len(pids) == 3, pids

        async with zkpy.connect(first_line, session_timeout=10.0) as zk:
            await zk.create("/launched", b"by zkpy ensemble")
            await zk.sync("/")
            assert (await zk.get("/launched"))[0] == b"by zkpy ensemble"
        for host, port in hosts:
            async with zkpy.connect(f"{host}:{port}", session_timeout=10.0) as zk:
                await zk.sync("/")
                assert (await zk.get("/launched"))[0] == b"by zkpy ensemble"

        launcher.send_signal(signal.SIGTERM)
        await poll(lambda: launcher.poll() is not None, timeout=20, what="the launcher to exit")
        assert launcher.returncode == 0, (launcher.returncode, err.read_text())
        await poll(
            lambda: all(process_gone(pid) for pid in pids) and not member_pids(config),
            timeout=5,
            what="every member process to be gone",
        )
        for port in [*range(client_port, client_port + 3), *range(peer_port, peer_port + 3)]:
            assert port_is_free(port), f"port {port} is still in use"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)
        for pid in pids | member_pids(config):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
