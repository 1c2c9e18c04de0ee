"""`delete(path, recursive=True)` and `zkpy delete -r` on subtrees as deep as paths allow."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
from click.testing import CliRunner

import zkpy
from tests.conftest import ServerProcess, assert_one_line
from zkpy.cli import main
from zkpy.core.paths import MAX_PATH_BYTES
from zkpy.testing import RunningServer
from zkpy.testing.ensemble import child_env

DEEPEST = MAX_PATH_BYTES // 2  # "/a" per level: the deepest chain a valid path allows


async def make_chain(zk: zkpy.Client, root: str, depth: int) -> str:
    """Create root/a/a/... `depth` levels deep (root included) in one pipeline; return the
    deepest path."""
    path = root
    async with zk.pipeline() as pipe:
        pipe.create(path, b"")
        for _ in range(depth - 1):
            path += "/a"
            pipe.create(path, b"")
    return path


async def test_recursive_delete_of_the_deepest_valid_chain(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        deepest = await make_chain(zk, "/a", DEEPEST)
        assert len(deepest) == MAX_PATH_BYTES
        await zk.create("/a/b", b"")  # a sibling branch near the top
        await zk.create("/keep", b"")
        await zk.delete("/a", recursive=True)
        assert await zk.exists("/a") is None
        assert await zk.get_children("/") == ["keep", "zookeeper"]


async def test_recursive_delete_of_a_missing_node_is_quiet(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        await zk.delete("/nothing", recursive=True)
        with pytest.raises(zkpy.errors.BadArgumentsError):
            await zk.delete("relative", recursive=True)


@pytest.fixture
def process_server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    proc = ServerProcess(tmp_path_factory.mktemp("delete") / "data")
    proc.start()
    try:
        proc.wait_ready_sync()
    except BaseException:
        proc.kill()
        raise
    return proc


def test_cli_deletes_a_thousand_levels(process_server: ServerProcess) -> None:
    at = process_server.address
    try:

        async def setup() -> None:
            async with zkpy.connect(at) as zk:
                await make_chain(zk, "/deep", 1000)

        trio.run(setup)
        result = subprocess.run(
            [sys.executable, "-m", "zkpy", "delete", "-r", "/deep", "--server", at],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""

        async def gone() -> bool:
            async with zkpy.connect(at) as zk:
                return await zk.exists("/deep") is None

        assert trio.run(gone)
    finally:
        process_server.kill()


def test_cli_reports_an_unexpected_error_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong inside a shell command, the user sees one line, not a traceback."""

    async def broken(self: zkpy.Client, path: str, version: int = -1, **kw: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(zkpy.Client, "delete", broken)
    monkeypatch.setattr(zkpy.Client, "_start", _no_connection)
    result = CliRunner().invoke(main, ["delete", "-r", "/x"])
    assert result.exit_code == 1
    line = assert_one_line(result.output)
    assert line.startswith("zkpy: ")
    assert "RecursionError" in line
    assert "Traceback" not in line


async def _no_connection(self: zkpy.Client, nursery: trio.Nursery) -> None:
    """Stand-in for connecting: the command's session is never used by the broken delete."""
