"""The pytest plugin (zkpy.testing.pytest_plugin), loaded the way an installed zkpy loads it:
through the ``pytest11`` entry point that pyproject.toml declares."""

from __future__ import annotations

import os
import socket
import tempfile
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytest_plugins = ["pytester"]

USERS_TESTS = """
import asyncio

import pytest

import zkpy
import zkpy.sync


def record(address):
    with open("addresses.txt", "a") as file:
        file.write(address + "\\n")


def test_plain(zkpy_server):
    record(zkpy_server)
    with zkpy.sync.connect(zkpy_server) as zk:
        zk.create("/mine")  # a fresh member: nobody made it before


@pytest.mark.trio
async def test_trio(zkpy_server):
    record(zkpy_server)
    async with zkpy.connect(zkpy_server) as zk:
        await zk.create("/mine")


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_asyncio(zkpy_server):
    record(zkpy_server)
    asyncio.get_running_loop()  # (raises unless this test runs on asyncio)
    async with zkpy.connect(zkpy_server) as zk:
        assert await zk.create("/mine") == "/mine"


def test_ensemble_first(zkpy_ensemble):
    record(zkpy_ensemble)
    assert len(zkpy_ensemble.split(",")) == 3
    with zkpy.sync.connect(zkpy_ensemble) as zk:
        zk.create("/shared")


@pytest.mark.trio
async def test_ensemble_is_shared_by_the_module(zkpy_ensemble):
    record(zkpy_ensemble)
    async with zkpy.connect(zkpy_ensemble) as zk:
        assert await zk.exists("/shared") is not None
"""


def declared_plugins() -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    plugins: dict[str, str] = project["entry-points"]["pytest11"]
    return plugins


def install_entry_points(site: Path) -> None:
    """A distribution's metadata with the declared pytest11 entry points, as pip would write
    it, so that pytest finds the plugin as it does in an installed zkpy."""
    info = site / "zkpy_entry_points-0.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: zkpy-entry-points\nVersion: 0\n"
    )
    lines = [f"{name} = {target}" for name, target in declared_plugins().items()]
    info.joinpath("entry_points.txt").write_text("[pytest11]\n" + "\n".join(lines) + "\n")


def refused(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_entry_point_names_the_plugin_module() -> None:
    assert declared_plugins() == {"zkpy": "zkpy.testing.pytest_plugin"}


@pytest.mark.processes
def test_fixtures_serve_plain_trio_and_asyncio_tests_and_leave_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = pytester.path / "site"
    install_entry_points(site)
    path = os.pathsep.join(filter(None, [str(site), str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)
    pytester.makepyfile(test_users=USERS_TESTS)
    left_before = set(Path(tempfile.gettempdir()).glob("zkpy-pytest-*"))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")

    result.assert_outcomes(passed=5)
    addresses = (pytester.path / "addresses.txt").read_text().split()
    servers, ensembles = addresses[:3], addresses[3:]
    assert len(set(servers)) == 3  # a fresh member for each test
    assert len(ensembles) == 2  # one for the module
    assert ensembles[0] == ensembles[1]
    members = [*servers, *ensembles[0].split(",")]
    assert all(refused(address) for address in members)  # every member is gone
    assert set(Path(tempfile.gettempdir()).glob("zkpy-pytest-*")) <= left_before
