"""A pytest plugin (`-p zkpy_kazoo_external`) that runs kazoo's own test suite (`kazoo.tests`,
shipped in kazoo's wheel) against an ensemble that is already running, at the ZooKeeper ports
in KAZOO_TEST_HOSTS (host:port,host:port,...), instead of the Java servers kazoo's harness
would start. `.ci/kazoo-suite` starts a zkpy ensemble and runs the suite with it.

The harness is given a cluster whose servers cannot be stopped, restarted or asked for TLS
certificates: the tests that need that are skipped up front, and any other attempt skips the
test that makes it."""

from __future__ import annotations

import os
from typing import Any

import pytest
from kazoo.testing import harness

# Tests that stop or restart server processes, or need certificates made by the harness.
NEEDS_SERVER_CONTROL = frozenset(
    {
        "test_update_host_list",
        "test_request_queuing_session_recovered",
        "test_request_queuing_session_expired",
        "test_read_only",
    }
)


def _cannot(*_args: Any, **_kwargs: Any) -> Any:
    pytest.skip("needs control of the server processes (or the harness's TLS certificates)")


class RunningServer:
    """One member as kazoo's harness sees a server: its address, always running."""

    running = True
    stop = run = reset = _cannot
    secure_address = property(_cannot)

    def __init__(self, address: str) -> None:
        self.address = address

    def destroy(self) -> None:
        """Nothing to clean up: the ensemble belongs to whoever started it."""

    def get_logs(self, num_lines: int = 100) -> list[str]:
        """The harness prints these on a failure; the members log to their own files."""
        return []


class RunningCluster(list[RunningServer]):
    """The ensemble as the harness's cluster: it neither starts nor stops anything."""

    stop = reset = get_ssl_client_configuration = _cannot

    def start(self) -> None:
        """Already running."""

    def terminate(self) -> None:
        """Left running: whoever started it stops it."""

    def get_logs(self) -> list[str]:
        """See `RunningServer.get_logs`."""
        return []


def pytest_configure(config: pytest.Config) -> None:
    """Point kazoo's harness at KAZOO_TEST_HOSTS."""
    hosts = os.environ.get("KAZOO_TEST_HOSTS", "")
    if not hosts:
        raise pytest.UsageError("set KAZOO_TEST_HOSTS=host:port[,host:port...]")
    cluster = RunningCluster(RunningServer(address) for address in hosts.split(","))
    harness.get_global_cluster = lambda: cluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests that need server control."""
    for item in items:
        if item.name in NEEDS_SERVER_CONTROL:
            item.add_marker(pytest.mark.skip(reason="stops or restarts servers"))
