"""The `zkpy` command line against a running `zkpy server` process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ServerProcess, assert_one_line
from zkpy.cli import main
from zkpy.testing.ensemble import child_env
from zkpy.testing.ports import free_port


def zkpy_command() -> list[str]:
    script = shutil.which("zkpy")
    return [script] if script else [sys.executable, "-m", "zkpy.cli"]


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("cli") / "data")
    try:
        proc.start()
        proc.wait_ready_sync()
        yield proc
    finally:
        proc.kill()


def run(*args: str, server: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    command = [*zkpy_command(), *args]
    if server is not None:
        command += ["--server", server]
    return subprocess.run(command, capture_output=True, text=True, env=child_env(**env), timeout=30)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_shell_commands(cli_server: ServerProcess) -> None:
    at = cli_server.address
    assert ok(run("create", "/cli", "hello", server=at)).strip() == "/cli"
    assert ok(run("get", "/cli", server=at)) == "hello\n"
    assert ok(run("set", "/cli", "world", server=at)).strip() == "version 1"
    assert ok(run("get", "/cli", server=at)) == "world\n"
    assert ok(run("create", "/cli/a/b", "deep", "--makepath", server=at)).strip() == "/cli/a/b"
    seq = ok(run("create", "/cli/s-", "--sequential", server=at)).strip()
    assert seq == "/cli/s-0000000001"
    assert ok(run("ls", "/cli", server=at)).split() == ["a", "s-0000000001"]
    stat = ok(run("stat", "/cli", server=at))
    fields = dict(line.split(" = ") for line in stat.splitlines())
    assert fields["version"] == "1"
    assert fields["num_children"] == "2"
    assert fields["data_length"] == "5"
    assert fields["ephemeral_owner"] == "0x0"
    assert int(fields["mzxid"], 16) > int(fields["czxid"], 16)

    # An ephemeral made by a command lives only as long as that command's session.
    assert ok(run("create", "/cli/e", "--ephemeral", server=at)).strip() == "/cli/e"
    assert ok(run("ls", "/cli", server=at)).split() == ["a", "s-0000000001"]

    ok(run("delete", "/cli/s-0000000001", server=at))
    ok(run("delete", "/cli", "--recursive", server=at))
    assert ok(run("ls", "/", server=at)) == "zookeeper\n"


def test_server_from_the_environment(cli_server: ServerProcess) -> None:
    ok(run("create", "/env", "from-env", ZKPY_SERVER=cli_server.address))
    assert ok(run("get", "/env", ZKPY_SERVER=cli_server.address)) == "from-env\n"
    # --server wins over the environment.
    dead = f"127.0.0.1:{free_port()}"
    assert ok(run("get", "/env", server=cli_server.address, ZKPY_SERVER=dead)) == "from-env\n"
    ok(run("delete", "/env", ZKPY_SERVER=cli_server.address))


def test_errors_print_one_line_and_exit_non_zero(cli_server: ServerProcess) -> None:
    at = cli_server.address
    cases = [
        (("get", "/missing"), "NoNodeError"),
        (("stat", "/missing"), "NoNodeError"),
        (("set", "/missing", "x"), "NoNodeError"),
        (("delete", "/missing"), "NoNodeError"),
        (("ls", "/missing"), "NoNodeError"),
        (("create", "/a/b/c"), "NoNodeError"),
        (("get", "no-slash"), "BadArgumentsError"),
    ]
    for args, error in cases:
        result = run(*args, server=at)
        assert result.returncode != 0, args
        assert result.stdout == "", args
        line = assert_one_line(result.stderr)
        assert line.startswith("zkpy: "), (args, line)
        assert error in line, (args, line)

    ok(run("create", "/ver", "v", server=at))
    result = run("set", "/ver", "x", "--version", "5", server=at)
    assert result.returncode != 0
    assert "BadVersionError" in assert_one_line(result.stderr)
    result = run("create", "/ver", "again", server=at)
    assert "NodeExistsError" in assert_one_line(result.stderr)
    ok(run("delete", "/ver", server=at))


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    result = run("get", "/", "--timeout", "1", server=f"127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert assert_one_line(result.stderr).startswith("zkpy: ")


def test_watch_prints_one_line_per_event(cli_server: ServerProcess, tmp_path: Path) -> None:
    at = cli_server.address
    ok(run("create", "/watched", "0", server=at))
    err_path = tmp_path / "watch.err"
    with open(err_path, "w") as err:
        watcher = subprocess.Popen(
            [*zkpy_command(), "watch", "/watched", "--count", "2", "--server", at],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=child_env(),
        )
    try:
        deadline = time.monotonic() + 15
        while "watching /watched" not in err_path.read_text():
            assert watcher.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "the watch did not start"
            time.sleep(0.02)
        ok(run("set", "/watched", "1", server=at))
        ok(run("delete", "/watched", server=at))
        out, _ = watcher.communicate(timeout=15)
        assert watcher.returncode == 0, err_path.read_text()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("CHANGED /watched 0x")
    assert lines[1].startswith("DELETED /watched 0x")
    assert int(lines[0].split()[2], 16) < int(lines[1].split()[2], 16)


def test_server_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                *zkpy_command(),
                "server",
                "--data-dir",
                str(tmp_path / "data"),
                "--client-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
    assert result.returncode != 0
    line = assert_one_line(result.stderr)
    assert line.startswith("zkpy: "), line
    assert str(port) in line, line


def test_server_refuses_a_log_segment_below_the_minimum(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(
        main, ["server", "--data-dir", str(data_dir), "--log-segment-bytes", "4096"]
    )
    assert result.exit_code == 2
    assert "--log-segment-bytes" in result.output
    assert "1048576<=x<=1073741824" in result.output
    assert not data_dir.exists()
