"""Helpers for the recipe tests (tests/test_recipes_*.py), and a check of the helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio
import trio.testing

import zkpy
from tests.conftest import TcpProxy, wait_until
from zkpy.client.client import Pipeline
from zkpy.errors import ConnectionLossError
from zkpy.testing import RunningServer

SESSION_TIMEOUT = 2.0  # the longest the test servers (tick_ms=100) grant


@asynccontextmanager
async def clients(
    address: str, count: int, session_timeout: float = SESSION_TIMEOUT
) -> AsyncIterator[list[zkpy.Client]]:
    """`count` clients, each with its own session."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(zkpy.connect(address, session_timeout=session_timeout))
            for _ in range(count)
        ]


async def settle(*zks: zkpy.Client) -> None:
    """Let every event already committed reach these clients and their waiting tasks: a sync's
    reply comes after every event sent before it, then all tasks run until they block."""
    for zk in zks:
        await zk.sync("/")
    await trio.testing.wait_all_tasks_blocked()


async def children(zk: zkpy.Client, path: str) -> list[str]:
    try:
        names: list[str] = await zk.get_children(path)
        return names
    except zkpy.errors.NoNodeError:
        return []


class FlakyClient:
    """A client whose next calls of a method fail with `ConnectionLossError`, either before the
    request is sent (`applied=False`) or after the server applied it (`applied=True`, the reply
    is lost). Everything else is the real client's."""

    def __init__(self, zk: zkpy.Client) -> None:
        self._zk = zk
        self.plans: dict[str, list[bool | None]] = {}  # None: that call goes through
        self.failures: list[str] = []

    def fail(self, method: str, *, applied: bool, times: int = 1, after: int = 0) -> None:
        """Fail the next `times` calls of `method`, once `after` more have gone through."""
        self.plans.setdefault(method, []).extend([None] * after + [applied] * times)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._zk, name)
        if name == "transaction":
            return self._transaction
        if name == "pipeline":
            return self._pipeline
        if name not in self.plans or not callable(attribute):
            return attribute

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            plan = self.plans.get(name)
            applied = plan.pop(0) if plan else None
            if applied is None:
                return await attribute(*args, **kwargs)
            self.failures.append(name)
            if applied:
                await attribute(*args, **kwargs)
            raise ConnectionLossError(f"injected: {name} {'applied' if applied else 'not sent'}")

        return flaky

    def _transaction(self) -> zkpy.Transaction:
        transaction = self._zk.transaction()
        plan = self.plans.get("commit")
        applied = plan.pop(0) if plan else None
        if applied is not None:
            commit = transaction.commit

            async def flaky_commit() -> list[Any]:
                self.failures.append("commit")
                if applied:
                    await commit()
                raise ConnectionLossError("injected: commit")

            transaction.commit = flaky_commit  # type: ignore[method-assign]
        return transaction

    def _pipeline(self) -> Pipeline:
        """A pipeline whose `execute` fails as planned for "pipeline": every request of the
        batch with `ConnectionLossError` (in its slot, or raised), sent first if `applied`."""
        pipeline = self._zk.pipeline()
        plan = self.plans.get("pipeline")
        applied = plan.pop(0) if plan else None
        if applied is not None:
            execute = pipeline.execute

            async def flaky_execute(*, raise_on_error: bool = True) -> list[Any]:
                self.failures.append("pipeline")
                size = len(pipeline)
                if applied:
                    await execute(raise_on_error=False)
                lost = ConnectionLossError("injected: pipeline")
                if raise_on_error:
                    raise lost
                return [lost] * size

            pipeline.execute = flaky_execute  # type: ignore[method-assign]
        return pipeline


class ReplyDroppingProxy(TcpProxy):
    """A `TcpProxy` that can also throw away what the server sends while `dropping` is set: the
    server applies the requests, the client never hears back."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.dropping = False

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        from_server = source.socket.getpeername()[1] == self.target_port
        while True:
            data = await source.receive_some(1 << 16)
            if not data:
                break
            await self._resumed.wait()
            if from_server and self.dropping:
                continue
            await sink.send_all(data)


@asynccontextmanager
async def proxy_to(
    server: RunningServer, factory: Callable[[int], TcpProxy] = TcpProxy
) -> AsyncIterator[Any]:
    proxy = factory(server.port)
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


async def test_flaky_client_injects_connection_loss(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        flaky = FlakyClient(zk)
        flaky.fail("create", applied=True)
        flaky.fail("create", applied=False)
        try:
            await flaky.create("/applied")
        except ConnectionLossError:
            pass
        try:
            await flaky.create("/not-sent")
        except ConnectionLossError:
            pass
        assert await zk.exists("/applied") is not None
        assert await zk.exists("/not-sent") is None
        assert await flaky.create("/fine") == "/fine"
        assert flaky.failures == ["create", "create"]


async def test_reply_dropping_proxy(server: RunningServer) -> None:
    async with (
        proxy_to(server, ReplyDroppingProxy) as proxy,
        zkpy.connect(proxy.address, session_timeout=SESSION_TIMEOUT) as zk,
        zkpy.connect(server.address) as observer,
    ):
        proxy.dropping = True
        async with trio.open_nursery() as nursery:
            outcome: list[str] = []

            async def create() -> None:
                try:
                    await zk.create("/dropped-reply", b"")
                    outcome.append("replied")
                except ConnectionLossError:
                    outcome.append("lost")

            async def applied() -> bool:
                return await observer.exists("/dropped-reply") is not None

            nursery.start_soon(create)
            await wait_until(applied, what="the create applied")
            proxy.dropping = False
            proxy.cut()
        assert outcome == ["lost"]


def test_recipes_use_only_the_public_client_api() -> None:
    """recipes/ imports zkpy's public modules only, and touches no private client attribute."""
    import ast

    from tests.conftest import REPO_ROOT

    public = {"zkpy", "zkpy.errors", "zkpy.security", "zkpy.sync"}
    for source in sorted((REPO_ROOT / "recipes").glob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                modules = []
            for module in modules:
                if module.split(".")[0] == "zkpy":
                    assert module in public, f"{source.name} imports {module}"
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                owner = ast.unparse(node.value)
                assert owner not in {"zk", "self.zk", "zkpy", "client"}, (
                    f"{source.name}:{node.lineno} uses {owner}.{node.attr}"
                )
