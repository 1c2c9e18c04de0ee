"""The one launcher (zkpy.server.launcher.MemberProcess) and the one free-port helper
(zkpy.testing.ports) that the suite, chaos and the benchmarks share."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import trio

from zkpy.server.config import load_config
from zkpy.server.launcher import MemberProcess, stop_all
from zkpy.testing.ensemble import Ensemble, child_env
from zkpy.testing.ports import PORT_RANGE, free_ports, port_is_free


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(PORT_RANGE[0] <= port < PORT_RANGE[1] for port in ports)
    assert all(port_is_free(port) for port in ports)


def test_consecutive_free_ports_are_adjacent() -> None:
    ports = free_ports(6, consecutive=True)
    assert ports == list(range(ports[0], ports[0] + 6))


def test_free_ports_leave_out_the_ports_already_handed_out() -> None:
    low, high = PORT_RANGE
    handed_out = range(low, high - 50)  # all but the last 50
    ports = free_ports(5, besides=handed_out)
    assert all(high - 50 <= port < high for port in ports)


def test_a_taken_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])


def test_the_ensemble_file_takes_booleans_and_per_member_peer_ports(tmp_path: Path) -> None:
    ensemble = Ensemble(tmp_path, 3, fsync=False)  # lays out and writes the file, starts nothing
    assert load_config(ensemble.config_path, 1).fsync is False
    seen_by_1 = ensemble.write_config(tmp_path / "member-1.toml", "s", peer_ports={2: 4242})
    config = load_config(seen_by_1, 1)
    assert config.peer(2).peer_port == 4242
    assert config.peer(3).peer_port == ensemble[3].peer_port


async def test_a_member_that_cannot_start_is_waited_for_and_its_code_kept(
    tmp_path: Path,
) -> None:
    member = MemberProcess(1, ["--no-such-option"], env=child_env())
    member.start(tmp_path / "member.log")
    with trio.fail_after(30):
        code = await member.wait()
    assert code == 2  # click's usage error
    assert member.returncode == 2
    assert not member.running
    assert "no-such-option" in (tmp_path / "member.log").read_text()


async def test_stop_resumes_a_paused_member_and_ends_it_cleanly(tmp_path: Path) -> None:
    with Ensemble(tmp_path, members=1) as ensemble:
        member = ensemble[1]
        member.start()
        await member.wait_serving()
        member.pause()
        with trio.fail_after(30):
            code = await member.process.stop(grace_s=20)
        assert code in (0, -signal.SIGTERM), member.log()
        assert not member.running
        assert not member.paused


async def test_stop_all_kills_what_outlives_its_grace(tmp_path: Path) -> None:
    with Ensemble(tmp_path, members=1) as ensemble:
        member = ensemble[1]
        member.start()
        await member.wait_serving()
        member.process.signal(signal.SIGSTOP)  # frozen without the launcher knowing:
        with trio.fail_after(30):  # SIGTERM stays pending, and only SIGKILL ends it
            await stop_all([member.process], grace_s=0.5)
        assert member.process.returncode == -signal.SIGKILL
