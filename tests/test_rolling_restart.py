"""The rolling restart of docs/operations.md on a loaded ensemble, and the systemd unit that
runs one member per machine (deploy/zkpy@.service)."""

from __future__ import annotations

import configparser
import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from tests.admin_http import get
from tests.ensemble_harness import Ensemble, Member, connect_to, free_ports, poll, read_tree
from zkpy.client.client import Client
from zkpy.core.errors import ConnectionLossError, NodeExistsError
from zkpy.server.config import load_config
from zkpy.testing.ensemble import child_env

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "zkpy@.service"
T = TypeVar("T")


@dataclass
class Load:
    """What a steady writer saw: every acknowledged write, and the retries it needed."""

    created: dict[str, bytes] = field(default_factory=dict)  # acknowledged creates
    counter: tuple[bytes, int] = (b"", 0)  # the last acknowledged (data, version) of /counter
    losses: int = 0  # ConnectionLoss answers, each retried until it was settled

    async def settle(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it is answered by something other than a connection loss."""
        while True:
            try:
                return await attempt()
            except ConnectionLossError:
                self.losses += 1

    async def create(self, zk: Client, path: str, data: bytes) -> None:
        """Create `path`; after a loss the create may have been applied: its data tells."""
        losses = self.losses
        try:
            await self.settle(lambda: zk.create(path, data))
        except NodeExistsError:
            assert self.losses > losses, f"{path} existed before we first tried to create it"
            found, _stat = await self.settle(lambda: zk.get(path))
            assert found == data, f"{path} holds {found!r}, not ours"
        self.created[path] = data

    async def bump(self, zk: Client, data: bytes) -> None:
        """Set /counter to `data` if nobody changed it since our last acknowledged set (a
        conditional set is not repeated blindly: after a loss, the node says if it landed)."""
        _last, version = self.counter
        while True:
            try:
                stat = await zk.set("/counter", data, version=version)
                break
            except ConnectionLossError:
                self.losses += 1
                found, stat = await self.settle(lambda: zk.get("/counter"))
                if found == data and stat.version == version + 1:
                    break
        self.counter = (data, stat.version)

    async def run(self, zk: Client, stop: trio.Event) -> None:
        """Write until `stop`: a new node and a counter bump per step."""
        number = 0
        while not stop.is_set():
            number += 1
            data = f"write {number}".encode()
            await self.create(zk, f"/load/w{number:06d}", data)
            await self.bump(zk, data)


async def health(member: Member) -> int | None:
    """The HTTP status of the member's admin `/health`, or None while nothing answers."""
    try:
        code, _body = await get(member.admin_port, "/health")
    except (OSError, trio.TooSlowError):
        return None
    return code


async def restart(member: Member, load: Load) -> None:
    """Stop `member` cleanly, start it again, and wait until its /health says it serves and
    the load has been acknowledged again since (the next member may go only then)."""
    assert await member.stop() == 0, member.log()
    member.start()
    await poll(
        lambda: _is_ok(member), timeout=30, interval=0.05, what=f"member {member.id} healthy"
    )
    acked = len(load.created)
    await poll(lambda: len(load.created) > acked + 5, timeout=30, what="writes to flow")


async def _is_ok(member: Member) -> bool:
    return await health(member) == 200


async def test_rolling_restart_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    with Ensemble(tmp_path, admin_ports=True) as ens:
        first_leader = await ens.start_serving()
        followers = [m for m in ens.voters if m is not first_leader]
        load = Load()
        async with connect_to(ens.voters) as zk:
            await zk.create("/load", b"")
            await zk.create("/counter", b"")
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load.run, zk, stop)
                await poll(lambda: len(load.created) >= 20, timeout=15, what="a steady load")
                for member in [*followers, first_leader]:
                    await restart(member, load)
                stop.set()
            assert (await ens.leader()) is not first_leader
            last_data, last_version = load.counter
            statuses = await ens.statuses()
            assert all(status["serving"] for status in statuses.values()), statuses
        await ens.wait_converged()
        for member in ens.voters:
            tree = await read_tree(member, "/load")
            missing = {p: d for p, d in load.created.items() if tree.get(p) != d}
            assert not missing, f"member {member.id} lost acknowledged writes: {missing}"
            assert len(tree) - 1 == len(load.created), "a write nobody acknowledged appeared"
            async with connect_to(member) as reader:
                await reader.sync("/counter")
                data, stat = await reader.get("/counter")
            assert (data, stat.version) == (last_data, last_version)
        # Each restart cost the writer at most a few retries (1 to 3 in a run here): the
        # session moved to a live member and carried on.
        assert load.losses <= 30, load.losses


def read_unit() -> configparser.ConfigParser:
    """The systemd unit template, parsed (systemd's syntax is close enough to INI)."""
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    return unit


def test_unit_runs_member_i_of_the_shared_file() -> None:
    service = read_unit()["Service"]
    command = shlex.split(service["ExecStart"])
    assert Path(command[0]).name == "zkpy"
    assert command[1] == "server"
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert options["--config"] == "/etc/zkpy/ensemble.toml"
    assert options["--id"] == "%i"
    assert options["--log-format"] == "json"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "zkpy"
    assert service["Group"] == "zkpy"
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["StateDirectory"] == "zkpy"
    assert service["KillSignal"] == "SIGTERM"
    # the member writes its data dir and nothing else
    assert service["ProtectSystem"] == "strict"
    assert "/var/lib/zkpy" in service["ReadWritePaths"].split()
    assert read_unit()["Install"]["WantedBy"] == "multi-user.target"


async def test_zkpy_ensemble_passes_log_format_to_its_members(tmp_path: Path) -> None:
    client_port, peer_port = free_ports(2)
    err = tmp_path / "ensemble.err"
    command = [sys.executable, "-m", "zkpy", "ensemble", "--size", "1", "--log-level", "INFO"]
    command += ["--data-dir", str(tmp_path / "data"), "--log-format", "json"]
    command += ["--client-port", str(client_port), "--peer-port", str(peer_port)]
    with open(err, "wb") as stderr:
        launcher = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=child_env()
        )
    try:

        def member_lines() -> list[str]:
            assert launcher.poll() is None, err.read_text()
            lines = err.read_text().splitlines()
            return lines if any("serving" in line for line in lines) else []

        lines = await poll(member_lines, timeout=30, interval=0.05, what="the member's log")
        records = [json.loads(line) for line in lines]
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records), lines
        launcher.send_signal(signal.SIGTERM)
        await poll(lambda: launcher.poll() is not None, timeout=20, what="the launcher to exit")
        assert launcher.returncode == 0, err.read_text()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)


def test_documented_machine_file_gives_each_member_its_own_address(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## Deploying on real machines", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "ensemble.toml"
    path.write_text(example)
    for member_id in (1, 2, 3):
        config = load_config(path, member_id)
        assert config.host == f"10.0.0.1{member_id}"
        assert config.data_dir == Path(f"/var/lib/zkpy/member-{member_id}")
        assert config.admin_port == 8080
