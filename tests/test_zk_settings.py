"""The `zk_port` setting: per member in the ensemble file, `zkpy server --zk-port`, and
`zkpy ensemble --zk-port BASE` (member N on BASE+N-1); off unless given."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from zkpy.cli import main
from zkpy.server.config import ConfigError, ServerConfig, config_from_text
from zkpy.server.launcher import MemberProcess, ensure_ensemble_file
from zkpy.server.wal import MIN_SEGMENT_BYTES
from zkpy.testing.ensemble import child_env, poll
from zkpy.testing.ports import free_port

MEMBERS = """secret = "s"
[members.1]
client_port = 2181
peer_port = 2888
zk_port = 2281
[members.2]
client_port = 2182
peer_port = 2889
"""


def test_zk_port_is_off_unless_given() -> None:
    assert ServerConfig().zk_port is None
    assert ServerConfig(zk_port=0).zk_port == 0


def test_zk_port_is_read_per_member(tmp_path: Path) -> None:
    path = tmp_path / "ensemble.toml"
    assert config_from_text(MEMBERS, path, 1).zk_port == 2281
    assert config_from_text(MEMBERS, path, 2).zk_port is None
    assert config_from_text(MEMBERS, path, 2, zk_port=2300).zk_port == 2300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zk_port = 2281\n" + MEMBERS, "unknown settings ['zk_port']"),
        (MEMBERS.replace("2281", '"2281"'), "[members.1] zk_port must be a whole number"),
        (MEMBERS.replace("2281", "70000"), "[members.1] zk_port must be a whole number"),
        (MEMBERS.replace("2281", "2182"), "member 2's client_port and member 1's zk_port"),
    ],
)
def test_a_bad_zk_port_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config_from_text(text, tmp_path / "ensemble.toml", 1)
    assert message in str(refused.value)


def test_zk_port_must_differ_from_client_port() -> None:
    with pytest.raises(ValueError, match="zk_port and client_port are both 2181"):
        ServerConfig(client_port=2181, zk_port=2181)
    with pytest.raises(ValueError, match="zk_port must be a whole number from 0 to 65535, or"):
        ServerConfig(zk_port=-1)


def test_the_ensemble_file_gives_member_n_base_plus_n_minus_1(tmp_path: Path) -> None:
    path, _addresses = ensure_ensemble_file(tmp_path / "e", 3, 1, 2181, 2888, 2000, 2281)
    ports = {m.id: m.zk_port for m in config_from_text(path.read_text(), path, 1).members}
    assert ports == {1: 2281, 2: 2282, 3: 2283, 4: 2284}
    plain, _ = ensure_ensemble_file(tmp_path / "p", 3, 0, 2181, 2888, 2000)
    assert all(m.zk_port is None for m in config_from_text(plain.read_text(), plain, 1).members)
    with pytest.raises(ConfigError, match="does not give its first member zk_port 2281"):
        ensure_ensemble_file(tmp_path / "p", 3, 0, 2181, 2888, 2000, 2281)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["server", "--zk-port", "70000"], "--zk-port"),
        (["server", "--zk-port", "-1"], "--zk-port"),
        (["ensemble", "--zk-port", "0"], "--zk-port"),
        (["ensemble", "--zk-port", "65534"], "--zk-port 65534 leaves no room for 3 ports"),
    ],
)
def test_the_zk_port_options_are_range_checked(
    tmp_path: Path, args: list[str], option: str
) -> None:
    result = CliRunner().invoke(main, [*args, "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2, result.output
    assert option in result.output, result.output
    assert not (tmp_path / "d").exists()


async def test_zkpy_server_serves_zookeeper_clients_on_zk_port(tmp_path: Path) -> None:
    zk_port = free_port()
    args = ["--data-dir", str(tmp_path / "data"), "--client-port", str(free_port())]
    args += ["--zk-port", str(zk_port), "--log-segment-bytes", str(MIN_SEGMENT_BYTES)]
    member = MemberProcess(1, args, env=child_env())
    log = tmp_path / "member.log"
    member.start(log)
    try:
        await poll(lambda: "serving on" in log.read_text(), timeout=20, what="the member")
        assert f"(ZooKeeper's protocol on {zk_port})" in log.read_text()
        stream = await trio.open_tcp_stream("127.0.0.1", zk_port)
        await stream.send_all(b"ruok")
        with trio.fail_after(10):
            assert await stream.receive_some(100) == b"imok"
    finally:
        await member.stop()
