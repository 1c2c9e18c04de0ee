"""The admin port of real member processes: /health turns 503 within sync_limit of a quorum's
loss, `zkpy status` exits non-zero for a member that does not serve, and JSON logs parse."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

from tests.admin_http import get, parse_prometheus, sample
from zkpy.server.launcher import MemberProcess
from zkpy.testing.ensemble import FAST_SETTINGS, Ensemble, child_env, poll
from zkpy.testing.ports import free_ports

# What the loop of polling /health adds on a loaded machine, over sync_limit peer ticks.
HEALTH_SLACK_S = 1.0


async def zkpy_status(*args: str) -> tuple[int, str]:
    """`zkpy status ARGS`: (exit code, stdout)."""
    result = await trio.run_process(
        [sys.executable, "-m", "zkpy", "status", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=child_env(),
    )
    return result.returncode, result.stdout.decode()


@pytest.mark.parametrize("kept", ["leader", "follower"])
async def test_health_turns_503_within_sync_limit_of_losing_the_quorum(
    tmp_path: Path, kept: str
) -> None:
    """The other two freeze (SIGSTOP): no link closes, so the one left notices only by
    hearing nothing for sync_limit peer ticks."""
    with Ensemble(tmp_path, admin_ports=True) as ens:
        ens.start_all()
        await ens.wait_all_serving()
        leader = await ens.leader()
        for member in ens.members.values():
            assert (await get(member.admin_port, "/health"))[0] == 200
        families = parse_prometheus((await get(leader.admin_port, "/metrics"))[1])
        assert sample(families, "zkpy_role", role="leading") == 1
        assert sample(families, "zkpy_followers_in_sync") == 2
        left = leader if kept == "leader" else next(m for m in ens.running if m is not leader)
        code, _out = await zkpy_status("--server", left.address)
        assert code == 0

        for member in ens.members.values():
            if member is not left:
                member.pause()
        lost_at = trio.current_time()

        async def unhealthy() -> bool:
            return (await get(left.admin_port, "/health"))[0] == 503

        await poll(unhealthy, timeout=30, what="/health 503")
        took = trio.current_time() - lost_at
        sync_limit_s = FAST_SETTINGS["sync_limit"] * FAST_SETTINGS["peer_tick_ms"] / 1000
        assert took <= sync_limit_s + HEALTH_SLACK_S, (took, sync_limit_s)

        status = json.loads((await get(left.admin_port, "/status"))[1])
        assert status["serving"] is False
        families = parse_prometheus((await get(left.admin_port, "/metrics"))[1])
        assert sample(families, "zkpy_serving") == 0
        code, out = await zkpy_status("--json", "--server", left.address)
        assert code == 1, out
        assert json.loads(out)[left.address]["serving"] is False


async def test_status_exits_non_zero_for_an_unreachable_member() -> None:
    (port,) = free_ports(1)
    code, out = await zkpy_status("--server", f"127.0.0.1:{port}")
    assert code == 1
    assert "unreachable" in out


async def test_server_json_logs_parse_line_by_line(tmp_path: Path) -> None:
    client_port, admin_port = free_ports(2)
    args = ["--data-dir", str(tmp_path / "d"), "--client-port", str(client_port)]
    args += ["--admin-port", str(admin_port), "--log-format", "json"]
    member = MemberProcess(1, args, env=child_env())
    log_path = tmp_path / "member.log"
    member.start(log_path)
    try:

        async def healthy() -> bool:
            try:
                return (await get(admin_port, "/health"))[0] == 200
            except OSError:
                return False

        await poll(healthy, timeout=20, what="the member's /health")
        code, _out = await zkpy_status("--server", f"127.0.0.1:{client_port}")
        assert code == 0
    finally:
        await member.stop()
    lines = log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert entries, "the member logged nothing"
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    assert any("listening for clients" in entry["message"] for entry in entries)
