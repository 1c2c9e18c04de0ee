"""pytest fixtures for suites that test code using zkpy; installing zkpy registers them (the
``pytest11`` entry point ``zkpy``; ``-p no:zkpy`` turns them off).

- `zkpy_server`: a fresh single member for the test; yields its connection string.
- `zkpy_ensemble`: three member processes shared by the test module; yields the connection
  string of all three.

Both are plain (synchronous) fixtures, so that plain, trio (pytest-trio) and asyncio tests can
use them alike. The members are `zkpy server` processes on free loopback ports with short ticks
(sessions may last 0.4 to 4 s) and small log segments, their data in a temporary directory; on
the way out every member is killed and its directory deleted, whatever the test did.

    def test_config_is_read(zkpy_server):
        with zkpy.sync.connect(zkpy_server) as zk:
            ...
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from zkpy.testing.ensemble import Ensemble

T = TypeVar("T")


def _in_a_thread(afn: Callable[[], Awaitable[T]]) -> T:
    """``trio.run(afn)`` in a thread of its own, so that it works wherever a fixture is set up
    (even where some plugin already runs an event loop in this thread)."""
    result: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

    def run() -> None:
        try:
            result.put((True, trio.run(afn)))
        except BaseException as error:
            result.put((False, error))

    thread = threading.Thread(target=run, name="zkpy fixture")
    thread.start()
    thread.join()
    ok, value = result.get()
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def running_ensemble(members: int) -> Iterator[str]:
    """Start `members` member processes, yield their connection string once every one serves,
    then kill them and delete their data."""
    root = Path(tempfile.mkdtemp(prefix="zkpy-pytest-"))
    try:
        with Ensemble(root, members=members) as ensemble:
            ensemble.start_all()
            _in_a_thread(ensemble.wait_all_serving)
            yield ensemble.addresses()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def zkpy_server() -> Iterator[str]:
    """A fresh single zkpy member for this test; its connection string (``host:port``)."""
    yield from running_ensemble(1)


@pytest.fixture(scope="module")
def zkpy_ensemble() -> Iterator[str]:
    """Three zkpy member processes shared by the test module; their connection string."""
    yield from running_ensemble(3)
