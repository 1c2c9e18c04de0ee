"""Every member setting is type- and range-checked, from the ensemble file, the command line and
code alike, with a message naming the setting (and the file); the files that hold secrets are
private; a busy port is named correctly."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import zkpy
from tests.conftest import ServerProcess
from tests.ensemble_harness import free_ports
from zkpy.cli import main
from zkpy.security import make_digest_acl, make_digest_acl_credential
from zkpy.server.config import ConfigError, ServerConfig, load_config
from zkpy.server.launcher import ensure_ensemble_file
from zkpy.server.settings import SETTINGS, Setting
from zkpy.testing.ensemble import child_env

FIELDS = [f for f in dataclasses.fields(ServerConfig) if f.name != "members"]
# per member there
IN_FILE = {f.name for f in FIELDS} - {"server_id", "host", "client_port", "zk_port"}


def bad_values(setting: Setting) -> list[Any]:
    """Values of the wrong type, and just out of range, for one setting."""
    if setting.kind is int:
        values: list[Any] = ["abc", 1.5, True] + ([] if setting.optional else [None])
        values += [int(setting.low) - 1]
        if setting.high != math.inf:
            values.append(int(setting.high) + 1)
        return values
    if setting.kind is float:
        return ["abc", True, math.nan, math.inf, setting.low / 2 - 1, setting.high * 2]
    if setting.kind is bool:
        return ["no", "true", 1, 0]
    if setting.choices:
        return ["bogus", 1, True]
    return [5, True, 1.5]


def test_every_setting_has_a_declared_type_and_range() -> None:
    missing = [f.name for f in FIELDS if f.name not in SETTINGS]
    assert missing == [], (
        f"add these ServerConfig fields to zkpy.server.settings.SETTINGS: {missing}"
    )
    assert set(SETTINGS) == {f.name for f in FIELDS}


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_a_bad_value_is_refused_naming_the_setting(tmp_path: Path, field: Any) -> None:
    setting = SETTINGS[field.name]
    for value in bad_values(setting):
        with pytest.raises(ValueError, match=f"^{field.name} must be ") as refused:
            ServerConfig(**{"data_dir": tmp_path, field.name: value})
        message = str(refused.value)
        assert message.startswith(f"{field.name} must be {setting.describe()}, not "), message
        assert repr(value) in message, message


@pytest.mark.parametrize("name", sorted(IN_FILE - {"data_dir"}))
def test_a_bad_value_in_the_ensemble_file_names_the_file_and_key(tmp_path: Path, name: str) -> None:
    setting = SETTINGS[name]
    path = tmp_path / "ensemble.toml"
    for value in bad_values(setting):
        if value is None:
            continue  # TOML has no null
        secret = "" if name == "secret" else "secret = 's'\n"
        path.write_text(f"{secret}{name} = {toml(value)}\n{MEMBER}")
        with pytest.raises(ConfigError) as refused:
            load_config(path, 1)
        assert str(refused.value).startswith(f"{path}: {name} must be "), str(refused.value)


def test_the_reported_values(tmp_path: Path) -> None:
    path = tmp_path / "ensemble.toml"
    for line, message in [
        ("max_data_bytes = -5", "max_data_bytes must be a whole number from 0 to 1073741824"),
        ("tick_ms = 2000.5", "tick_ms must be a whole number from 1 to 60000, not 2000.5"),
        ('fsync = "no"', "fsync must be true or false, not 'no'"),
        ('tick_ms = "abc"', "tick_ms must be a whole number from 1 to 60000, not 'abc'"),
    ]:
        path.write_text(f"secret = 's'\n{line}\n{MEMBER}")
        with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
            load_config(path, 1)


def test_good_values_pass(tmp_path: Path) -> None:
    path = tmp_path / "ensemble.toml"
    path.write_text(
        "secret = 's'\ntick_ms = 500\nhandshake_timeout_s = 3\nfsync = false\n"
        f"tls_client_auth = 'none'\nmax_data_bytes = 0\n{MEMBER}"
    )
    config = load_config(path, 1)
    assert (config.tick_ms, config.handshake_timeout_s, config.fsync) == (500, 3, False)
    assert config.max_data_bytes == 0
    assert config.tls_client_auth == "none"


MEMBER = '[members.1]\nhost = "127.0.0.1"\nclient_port = 2181\npeer_port = 2888\n'


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return repr(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n" + MEMBER, "unknown settings ['bogus']"),
        ("client_port = 1\n" + MEMBER, "unknown settings ['client_port']"),
        (MEMBER + "color = 'red'\n", "[members.1]: unknown keys ['color']"),
        (MEMBER.replace("2181", '"2181"'), "[members.1] client_port must be a whole number"),
        (MEMBER.replace("2888", "70000"), "[members.1] peer_port must be a whole number"),
        (MEMBER.replace('"127.0.0.1"', "5"), "[members.1] host must be a non-empty string"),
        (MEMBER.replace("peer_port = 2888\n", ""), "[members.1] lacks 'peer_port'"),
        (MEMBER.replace("members.1", "members.0"), "tables with N from 1 to 255"),
        ("data_dir = 5\n" + MEMBER, "data_dir must be a non-empty string, not 5"),
        (
            MEMBER + "[members.2]\nclient_port = 2182\npeer_port = 2181\n",
            "member 2's peer_port and member 1's client_port are both 127.0.0.1:2181",
        ),
        (
            MEMBER + MEMBER.replace("members", "observers").replace("2", "3"),
            "member 1 is both a voting member and an observer",
        ),
    ],
)
def test_the_member_tables_are_checked(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ensemble.toml"
    path.write_text("secret = 's'\n" + text)
    with pytest.raises(ConfigError) as refused:
        load_config(path, 1)
    text = str(refused.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text


# ---- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["server", "--tick-ms", "2000.5"], "--tick-ms"),
        (["server", "--tick-ms", "0"], "--tick-ms"),
        (["server", "--max-data-bytes", "-5"], "--max-data-bytes"),
        (["server", "--client-port", "70000"], "--client-port"),
        (["server", "--config", "{file}", "--id", "0"], "--id"),
        (["ensemble", "--size", "0"], "--size"),
        (["ensemble", "--observers", "-1"], "--observers"),
        (["ensemble", "--peer-port", "0"], "--peer-port"),
        (["ensemble", "--client-port", "65535"], "--client-port"),
        (["ensemble", "--tick-ms", "abc"], "--tick-ms"),
    ],
)
def test_command_line_options_are_range_checked(
    tmp_path: Path, args: list[str], option: str
) -> None:
    file = tmp_path / "ensemble.toml"
    file.write_text("secret = 's'\n" + MEMBER)
    args = [arg.replace("{file}", str(file)) for arg in args]
    result = CliRunner().invoke(main, [*args, "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2, result.output
    assert option in result.output, result.output
    assert not (tmp_path / "d").exists()


# ---- files that hold secrets ---------------------------------------------------------------


def test_the_ensemble_file_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path, addresses = ensure_ensemble_file(tmp_path / "e", 3, 0, 2181, 2888, 2000)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "secret = " in path.read_text()
    assert len(addresses) == 3


def test_an_ensemble_layout_that_overlaps_is_refused_before_any_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("are both 127.0.0.1:2182")):
        ensure_ensemble_file(tmp_path / "e", 3, 0, 2181, 2182, 2000)
    assert not (tmp_path / "e" / "ensemble.toml").exists()


def test_super_digest_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--super-digest-file and $ZKPY_SUPER_DIGEST give the digest without showing it in ps;
    two sources at once, or a value that is no digest id, are refused."""
    from zkpy.cli import _super_digest

    monkeypatch.delenv("ZKPY_SUPER_DIGEST", raising=False)
    file = tmp_path / "digest"
    file.write_text("root:abc=\n")
    assert _super_digest("", file) == "root:abc="
    assert _super_digest("", None) == ""
    monkeypatch.setenv("ZKPY_SUPER_DIGEST", "admin:xyz=")
    assert _super_digest("", None) == "admin:xyz="
    with pytest.raises(Exception, match="given twice"):
        _super_digest("", file)
    monkeypatch.delenv("ZKPY_SUPER_DIGEST")
    with pytest.raises(Exception, match="given twice"):
        _super_digest("root:abc=", file)
    file.write_text("no-colon\n")
    with pytest.raises(Exception, match="--super-digest-file must be a digest id"):
        _super_digest("", file)


async def test_super_digest_from_the_environment_takes_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real member started with $ZKPY_SUPER_DIGEST lets that user past every ACL, and the
    digest is not on its command line."""
    digest = make_digest_acl_credential("root", "pw")
    monkeypatch.setenv("ZKPY_SUPER_DIGEST", digest)  # the member inherits the environment
    proc = ServerProcess(tmp_path / "data")
    proc.start()
    try:
        await proc.wait_ready()
        assert digest not in " ".join(proc.command())
        async with zkpy.connect(proc.address, auth=[("digest", "alice:secret")]) as zk:
            await zk.create("/locked", b"x", acl=[make_digest_acl("alice", "secret", all=True)])
        async with zkpy.connect(proc.address) as zk:
            with pytest.raises(zkpy.errors.NoAuthError):
                await zk.get("/locked")
        async with zkpy.connect(proc.address, auth=[("digest", "root:pw")]) as zk:
            assert (await zk.get("/locked"))[0] == b"x"
    finally:
        proc.kill()


# ---- a busy port is named right ------------------------------------------------------------


def test_ensemble_names_the_busy_peer_port(tmp_path: Path) -> None:
    ports = free_ports(6, consecutive=True)
    client_port, peer_port = ports[0], ports[3]
    busy_port = peer_port + 1  # member 2's peer port
    err_path = tmp_path / "ensemble.err"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", busy_port))
        busy.listen()
        with open(err_path, "wb") as err:
            launcher = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zkpy",
                    "ensemble",
                    "--data-dir",
                    str(tmp_path / "e"),
                    "--client-port",
                    str(client_port),
                    "--peer-port",
                    str(peer_port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=child_env(),
            )
        try:
            deadline = time.monotonic() + 60
            while "member 2 exited" not in err_path.read_text():
                assert launcher.poll() is None, err_path.read_text()
                assert time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.05)
        finally:
            launcher.send_signal(signal.SIGTERM)
            launcher.wait(timeout=30)
    text = err_path.read_text()
    assert f"cannot listen for peers on 127.0.0.1:{busy_port}" in text, text
    assert f":{client_port + 1}" not in text, text
