"""Shared fixtures and helpers for the end-to-end server tests (tests/test_server_*.py), and
the suite's tiers.

Tiers (markers set here, at collection): `chaos` (runs `zkpy chaos`), `processes` (starts real
processes: members, ensembles, the command line, child interpreters), and unmarked, the fast
deterministic tier. A test is in a tier when it, a fixture it uses or a helper of their module
they call names what the tier's pattern names, or (for `processes`) its module is listed in
PROCESS_MODULES; a test of the fast tier that starts a process anyway fails, saying where to
list it.

- `server`: an in-process member on a free loopback port (`zkpy.testing.running_server`).
- `ServerProcess`: a real `zkpy server` subprocess that can be SIGTERMed, SIGKILLed and restarted.
- `free_port` and `child_env` come from `zkpy.testing` (`ports`, `ensemble`), as for every launcher.
- `RawConnection`: a hand-driven client connection (handshake, raw requests, raw bytes).
- `TcpProxy`: a loopback proxy whose links can be paused and cut.
- `FrameSpy`: records, in arrival order, every frame a `zkpy.Client` receives.
- `wait_until`: poll a condition with a deadline (the only kind of waiting these tests do).
"""

from __future__ import annotations

import inspect
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import zkpy
from zkpy.client.connection import Event
from zkpy.core.requests import Request
from zkpy.server.launcher import MemberProcess
from zkpy.server.wal import MIN_SEGMENT_BYTES
from zkpy.testing import RunningServer, running_server
from zkpy.testing.ensemble import child_env, poll
from zkpy.testing.ports import free_port
from zkpy.wire import client as wire
from zkpy.wire.frames import FrameDecoder

REPO_ROOT = Path(zkpy.__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TICK_MS = 100  # sessions may last 0.2 .. 2 s


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll `condition` (sync or async) until it is true; fail after `timeout` seconds
    (`zkpy.testing.ensemble.poll`, which the ensemble harness waits with too)."""
    await poll(condition, timeout=timeout, interval=interval, what=what)


# ---- tiers ---------------------------------------------------------------------------------

RUNS_CHAOS = re.compile(r"\b(_chaos|run_chaos|Chaos)\(")
# modules whose tests start processes in ways the scan below does not see (none today)
PROCESS_MODULES: frozenset[str] = frozenset()
STARTS_PROCESSES = re.compile(
    r"\b(Ensemble|ServerProcess|server_process|MemberProcess|subprocess|sys\.executable)\b"
)
# tests on network namespaces (zkpy.testing.netns): `processes`, and `netns` as well
USES_NETNS = re.compile(r"\b(NetnsEnsemble|HostNetwork)\b")


def _helpers(function: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The functions and classes of its own module that `function` refers to by name."""
    names: set[str] = set()
    pending = [function.__code__]
    while pending:
        current = pending.pop()
        names.update(current.co_names)
        pending += [const for const in current.co_consts if inspect.iscode(const)]
    found: list[Callable[..., Any]] = []
    for name in sorted(names):
        value = function.__globals__.get(name)
        if (inspect.isfunction(value) or inspect.isclass(value)) and (
            value.__module__ == function.__module__
        ):
            found.append(value)
    return found


def _sources(item: pytest.Function) -> list[str]:
    """The source of a test function, of every fixture of the suite's own it uses (not the
    tier guard's, nor pytest's), and of the helpers of their modules they call."""
    functions = [item.function]
    for name in item.fixturenames:
        for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
            if fixturedef.argname != _fast_tier_starts_no_processes.__name__:
                functions.append(fixturedef.func)
    for function in list(functions):
        if inspect.isfunction(function):
            functions += _helpers(function)
    sources = []
    for function in functions:
        try:
            if Path(inspect.getsourcefile(function) or "").is_relative_to(TESTS):
                sources.append(inspect.getsource(function))
        except (OSError, TypeError):
            continue
    return sources


def tier_of(item: pytest.Function) -> str | None:
    """`chaos`, `processes`, or None for the fast deterministic tier."""
    sources = _sources(item)
    if any(RUNS_CHAOS.search(source) for source in sources):
        return "chaos"
    module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
    if module in PROCESS_MODULES or any(
        STARTS_PROCESSES.search(s) or USES_NETNS.search(s) for s in sources
    ):
        return "processes"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and (tier := tier_of(item)) is not None:
            item.add_marker(getattr(pytest.mark, tier))
            if any(USES_NETNS.search(source) for source in _sources(item)):
                item.add_marker(pytest.mark.netns)


class _NoProcessesInTheFastTier:
    """Stands in for subprocess.Popen during fast-tier tests."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(
            "a test of the fast tier started a process: list its module in PROCESS_MODULES "
            "in tests/conftest.py (or use a launcher from zkpy.testing, which the tier scan sees)"
        )


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_processes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks = {mark.name for mark in request.node.iter_markers()}
    if not marks & {"processes", "chaos"}:
        monkeypatch.setattr(subprocess, "Popen", _NoProcessesInTheFastTier)


# ---- in-process server ---------------------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "data", tick_ms=TICK_MS) as running:
        yield running


# ---- subprocess server ---------------------------------------------------------------------


class ServerProcess:
    """A standalone `zkpy server` on a fixed port and data directory; restartable. The process
    itself is the launcher's `MemberProcess`, as for the members of an ensemble."""

    def __init__(self, data_dir: Path, port: int | None = None, *, tick_ms: int = TICK_MS) -> None:
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.tick_ms = tick_ms
        self.process = MemberProcess(0, self.server_args(), env=child_env())
        self.starts = 0
        self.log_path = data_dir.parent / f"{data_dir.name}-server-0.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def server_args(self) -> list[str]:
        return [
            "--data-dir",
            str(self.data_dir),
            "--client-port",
            str(self.port),
            "--tick-ms",
            str(self.tick_ms),
            "--log-segment-bytes",
            str(MIN_SEGMENT_BYTES),
        ]

    def command(self) -> list[str]:
        return self.process.command()

    def start(self) -> None:
        assert not self.process.running, "already running"
        self.starts += 1
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server-{self.starts}.log"
        self.process.start(self.log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _ready(self) -> bool:
        code = self.process.returncode
        if code is not None:
            raise AssertionError(f"server exited with {code}:\n{self.log()}")
        return "serving on" in self.log()

    async def wait_ready(self, timeout: float = 15.0) -> None:
        await wait_until(self._ready, timeout=timeout, what=f"server on {self.port}")

    def wait_ready_sync(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{self.log()}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        self.process.signal(signum)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        with trio.move_on_after(timeout):
            return await self.process.wait()
        raise AssertionError(f"timed out after {timeout} s waiting for server exit")

    async def stop(self) -> int:
        """SIGTERM and wait: a clean stop."""
        self.signal(signal.SIGTERM)
        return await self.wait_exit()

    async def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        await self.wait_exit()

    def kill(self) -> None:
        """Make sure the process is gone (for finally blocks)."""
        self.process.kill()


@contextmanager
def server_process(data_dir: Path, port: int | None = None, **kw: Any) -> Iterator[ServerProcess]:
    """A started (not yet necessarily ready) server process, killed on the way out."""
    proc = ServerProcess(data_dir, port, **kw)
    try:
        proc.start()
        yield proc
    finally:
        proc.kill()


# ---- raw connections -----------------------------------------------------------------------


class RawConnection:
    """One client connection driven by hand, frame by frame."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(1 << 30)
        self.frames: list[bytes] = []
        self.reply: wire.HandshakeReply | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, port: int) -> AsyncIterator[RawConnection]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            yield cls(stream)
        finally:
            await trio.aclose_forcefully(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def handshake(self, **fields: Any) -> wire.HandshakeReply:
        """Send a Handshake and return the server's reply (check `.error`)."""
        await self.send(wire.Handshake(**fields).encode())
        self.reply = wire.HandshakeReply.decode(await self.receive_frame())
        return self.reply

    async def request(self, xid: int, request: Request) -> None:
        await self.send(wire.encode_request(xid, request))

    async def receive_frame(self, timeout: float = 10.0) -> bytes:
        """The next whole frame; fail on EOF or timeout."""
        with trio.fail_after(timeout):
            while not self.frames:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    raise AssertionError("the server closed the connection")
                self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    async def receive_server_frame(self, timeout: float = 10.0) -> tuple[int, int, int, Any]:
        """The next reply or event, decoded: (xid, zxid, error, body)."""
        return wire.decode_server_frame(await self.receive_frame(timeout))

    async def reply_to(self, xid: int, timeout: float = 10.0) -> tuple[int, int, Any]:
        """Skip events and pings until the reply to `xid`: (zxid, error, body)."""
        while True:
            got_xid, zxid, error, body = await self.receive_server_frame(timeout)
            if got_xid == xid:
                return zxid, error, body

    async def wait_closed(self, timeout: float = 10.0) -> bytes:
        """Read until the server closes the connection; return whatever came before the end."""
        received = bytearray()
        with trio.fail_after(timeout):
            while True:
                try:
                    data = await self.stream.receive_some(1 << 16)
                except trio.BrokenResourceError:  # a reset is a close too
                    break
                if not data:
                    break
                received += data
        return bytes(received)


# ---- a proxy whose links we can cut --------------------------------------------------------


LINGER_RESET = struct.pack("ii", 1, 0)  # close() then sends RST instead of FIN


class TcpProxy:
    """Forward 127.0.0.1:`port` to a target port. `cut()` breaks every link; while `refusing`,
    new connections are closed at once (with a TCP reset while `resetting`); while `paused`,
    nothing is forwarded either way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        self.resetting = False
        self.refused = 0
        self.links: list[trio.CancelScope] = []
        self.connections = 0
        self._resumed = trio.Event()
        self._resumed.set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pause(self) -> None:
        self._resumed = trio.Event()

    def resume(self) -> None:
        self._resumed.set()

    def cut(self) -> None:
        for scope in self.links:
            scope.cancel()
        self.links.clear()

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while True:
            data = await source.receive_some(1 << 16)
            if not data:
                break
            await self._resumed.wait()
            await sink.send_all(data)

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.refusing or self.resetting:
            self.refused += 1
            if self.resetting:
                # Wait for the client's first bytes, so that the reset hits its handshake.
                with trio.move_on_after(5):
                    await client.receive_some(1)
                client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            await trio.aclose_forcefully(client)
            return
        self.connections += 1
        scope = trio.CancelScope()
        self.links.append(scope)
        try:
            with scope:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, upstream)
                        await self._pump(upstream, client)
                        nursery.cancel_scope.cancel()
                finally:
                    await trio.aclose_forcefully(upstream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except BaseExceptionGroup as group:
            _, rest = group.split((trio.BrokenResourceError, trio.ClosedResourceError, OSError))
            if rest is not None:
                raise rest from None
        finally:
            if scope in self.links:
                self.links.remove(scope)
            await trio.aclose_forcefully(client)


@asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(target_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: trio.serve_tcp(
                proxy._handle, 0, host="127.0.0.1", task_status=task_status
            )
        )
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            proxy.cut()
            nursery.cancel_scope.cancel()


# ---- watching what a client receives -------------------------------------------------------


class FrameSpy:
    """Record (xid, zxid, error, body) of every frame `client` handles, in arrival order."""

    def __init__(self, client: zkpy.Client) -> None:
        self.frames: list[tuple[int, int, int, Any]] = []
        connection = client._conn
        original = connection._receive_frame

        def spy(payload: bytes, events: list[Event]) -> None:
            self.frames.append(wire.decode_server_frame(payload))
            original(payload, events)

        connection._receive_frame = spy  # type: ignore[method-assign]

    def events(self) -> list[tuple[int, str, int]]:
        """(event type, path, zxid) of every watch event seen so far."""
        return [(body[0], body[1], zxid) for xid, zxid, _e, body in self.frames if xid == -1]


def encode_exact(payload: bytes) -> bytes:
    """A frame around arbitrary payload bytes."""
    return len(payload).to_bytes(4, "big") + payload


def assert_one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {text!r}"
    return lines[0]
