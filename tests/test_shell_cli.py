"""`zkpy shell` as a command: a script piped on standard input, one-shot commands, and `-s`
meaning stat (not the server) as zkCli.sh users expect."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess
from tests.test_server_cli import zkpy_command
from zkpy.testing.ensemble import child_env


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("shell") / "data")
    try:
        proc.start()
        proc.wait_ready_sync()
        yield proc
    finally:
        proc.kill()


def shell(
    member: ServerProcess, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*zkpy_command(), "shell", "--server", member.address, *args],
        input=stdin,
        capture_output=True,
        env=child_env(),
        timeout=60,
    )


def test_a_piped_script_is_one_session(member: ServerProcess) -> None:
    script = b"create -e /piped eph\nls /\nget -w /piped\nset /piped v2\nnonsense\nget /piped\n"
    result = shell(member, stdin=script)
    assert result.stdout.decode().splitlines() == [
        "Created /piped",
        "piped",
        "zookeeper",
        "eph",
        result.stdout.decode().splitlines()[4],
        "v2",
    ]
    assert result.stdout.decode().splitlines()[4].startswith("WATCHER:: CHANGED /piped ")
    assert result.stderr.decode() == "zkpy: unknown command 'nonsense' (try help)\n"
    assert result.returncode == 1  # one command failed
    after = shell(member, stdin=b"ls /\n")
    assert after.returncode == 0
    assert after.stdout == b"zookeeper\n"  # the ephemeral went with the first shell


def test_one_shot_commands_and_s_is_stat(member: ServerProcess) -> None:
    created = shell(member, "create", "/one", "-", stdin=b"\x00\x01 from stdin")
    assert created.stdout == b"Created /one\n", created.stderr
    listed = shell(member, "ls", "-s", "/")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert lines[:2] == ["one", "zookeeper"]
    assert "num_children = 2" in lines
    got = json.loads(shell(member, "--json", "get", "-s", "/one").stdout)
    assert got["data_hex"] == "00012066726f6d20737464696e"
    assert got["stat"]["ctime_date"].endswith("+00:00")
    assert shell(member, "get", "/one").stdout == b"hex:00012066726f6d20737464696e\n"
    assert shell(member, "--raw", "get", "/one").stdout == b"\x00\x01 from stdin\n"
    missing = shell(member, "get", "/absent")
    assert missing.returncode == 1
    assert missing.stderr == b"zkpy: NoNodeError: no node: /absent\n"
    # -s is no longer short for --server, in the shell or the one-shot commands
    old = subprocess.run(
        [*zkpy_command(), "ls", "/", "-s", member.address],
        capture_output=True,
        env=child_env(),
        timeout=60,
    )
    assert old.returncode == 2
    assert b"No such option '-s'" in old.stderr
