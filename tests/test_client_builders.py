"""Every request builder (Client methods, Transaction, Pipeline) refuses bad arguments the same
way, before anything is sent, and the connection survives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import zkpy
from zkpy.client import builders
from zkpy.core.types import Perm
from zkpy.errors import BadArgumentsError, InvalidACLError, ZkError
from zkpy.security import ACL, OPEN_ACL_UNSAFE, Id
from zkpy.testing import RunningServer

BAD_PATHS: list[Any] = ["no-slash", "/a//b", "/a/../b", "/trailing/", 5, None, b"/bytes"]
BAD_DATA: list[Any] = ["text", 5, None, ["list"]]
BAD_VERSIONS: list[Any] = ["1", 1.5, -2, 2**31, 2**70, True, None]
BAD_ACLS: list[Any] = [
    "world:anyone:cdrwa",
    [],
    [("world", "anyone")],
    [ACL(0, Id("world", "anyone"))],
    [ACL(64, Id("world", "anyone"))],
    [ACL(Perm.ALL, Id("world", 5))],  # type: ignore[arg-type]
    ACL(Perm.ALL, Id("world", "anyone")),  # one entry, not a list
    5,
]

Call = Callable[[zkpy.Client], Awaitable[Any]]


def client_calls(
    path: Any = "/n", data: Any = b"", version: Any = -1, acl: Any = None
) -> dict[str, Call]:
    """One call per builder, each with the given arguments (defaults valid)."""
    acl_arg = OPEN_ACL_UNSAFE if acl is None else acl
    calls: dict[str, Call] = {
        "create": lambda zk: zk.create(path, data, acl=acl_arg),
        "set": lambda zk: zk.set(path, data, version),
        "delete": lambda zk: zk.delete(path, version),
        "set_acl": lambda zk: zk.set_acl(path, acl_arg, version),
        "get": lambda zk: zk.get(path),
        "exists": lambda zk: zk.exists(path),
        "get_children": lambda zk: zk.get_children(path),
        "get_acl": lambda zk: zk.get_acl(path),
        "sync": lambda zk: zk.sync(path),
        "tx.create": lambda zk: zk.transaction().create(path, data, acl=acl_arg).commit(),
        "tx.set_data": lambda zk: zk.transaction().set_data(path, data, version).commit(),
        "tx.delete": lambda zk: zk.transaction().delete(path, version).commit(),
        "tx.check": lambda zk: zk.transaction().check(path, version).commit(),
        "pipe.create": lambda zk: _piped(zk, lambda p: p.create(path, data, acl=acl_arg)),
        "pipe.set": lambda zk: _piped(zk, lambda p: p.set(path, data, version)),
        "pipe.delete": lambda zk: _piped(zk, lambda p: p.delete(path, version)),
        "pipe.get": lambda zk: _piped(zk, lambda p: p.get(path)),
        "pipe.exists": lambda zk: _piped(zk, lambda p: p.exists(path)),
        "pipe.get_children": lambda zk: _piped(zk, lambda p: p.get_children(path)),
    }
    return calls


async def _piped(zk: zkpy.Client, queue: Callable[[zkpy.Pipeline], int]) -> Any:
    pipe = zk.pipeline()
    queue(pipe)
    return await pipe.execute()


def bad_cases() -> list[tuple[str, Call, type[ZkError]]]:
    cases: list[tuple[str, Call, type[ZkError]]] = []
    for path in BAD_PATHS:
        for name, call in client_calls(path=path).items():
            cases.append((f"{name} path={path!r}", call, BadArgumentsError))
    for data in BAD_DATA:
        for name, call in client_calls(data=data).items():
            if name.split(".")[-1] in ("create", "set", "set_data"):
                cases.append((f"{name} data={data!r}", call, BadArgumentsError))
    for version in BAD_VERSIONS:
        for name, call in client_calls(version=version).items():
            if name.split(".")[-1] in ("set", "set_data", "delete", "check", "set_acl"):
                cases.append((f"{name} version={version!r}", call, BadArgumentsError))
    for acl in BAD_ACLS:
        for name, call in client_calls(acl=acl).items():
            if name.split(".")[-1] in ("create", "set_acl"):
                cases.append((f"{name} acl={acl!r}", call, InvalidACLError))
    return cases


async def test_every_builder_refuses_bad_arguments_and_the_connection_survives(
    server: RunningServer,
) -> None:
    async with zkpy.connect(server.address) as zk:
        states: list[zkpy.ConnectionState] = []
        zk.add_listener(states.append)
        session, connected_to = zk.session_id, zk.server
        await zk.create("/n", b"v")
        failures = []
        for label, call, expected in bad_cases():
            try:
                await call(zk)
            except expected:
                continue
            except Exception as err:
                failures.append(f"{label}: {type(err).__name__}: {err}")
                continue
            failures.append(f"{label}: accepted")
        assert failures == []
        # nothing reached the server to break the connection: same session, same connection,
        # never SUSPENDED, and the node is as it was
        assert states == []
        assert (zk.session_id, zk.server) == (session, connected_to)
        assert (await zk.get("/n"))[0] == b"v"
        assert (await zk.get_acl("/n"))[0] == list(OPEN_ACL_UNSAFE)


async def test_the_reported_transaction_with_text_data(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        states: list[zkpy.ConnectionState] = []
        zk.add_listener(states.append)
        with pytest.raises(BadArgumentsError, match="data must be bytes, not str"):
            await zk.transaction().create("/b", "text").commit()  # type: ignore[arg-type]
        with pytest.raises(BadArgumentsError, match="data must be bytes, not str"):
            await zk.create("/b", "text")  # type: ignore[call-overload]
        assert await zk.transaction().create("/b", b"bytes").commit() == ["/b"]
        assert states == []


async def test_pipeline_reports_a_refused_request_in_its_slot(server: RunningServer) -> None:
    async with zkpy.connect(server.address) as zk:
        pipe = zk.pipeline()
        pipe.create("/ok", b"1")
        pipe.create("/text", "not bytes")  # type: ignore[arg-type]
        pipe.set("/ok", b"2", version=2**40)
        pipe.get("/ok")
        results = await pipe.execute(raise_on_error=False)
        assert results[0] == "/ok"
        assert isinstance(results[1], BadArgumentsError)
        assert isinstance(results[2], BadArgumentsError)
        assert results[3][0] == b"1"
        assert await zk.exists("/text") is None


async def test_a_transaction_over_the_operation_limit_is_refused_before_sending(
    server: RunningServer,
) -> None:
    async with zkpy.connect(server.address) as zk:
        states: list[zkpy.ConnectionState] = []
        zk.add_listener(states.append)
        tx = zk.transaction()
        for index in range(1001):
            tx.check(f"/c{index}", -1)
        with pytest.raises(BadArgumentsError, match="at most 1000 operations"):
            await tx.commit()
        assert not tx.committed
        assert states == []
        assert await zk.exists("/") is not None


def test_auth_arguments_are_checked() -> None:
    with pytest.raises(BadArgumentsError):
        builders.auth("digest", b"user:pw")
    with pytest.raises(BadArgumentsError):
        builders.auth("", "user:pw")
    with pytest.raises(BadArgumentsError):
        zkpy.Client("127.0.0.1:1", auth=[("digest", b"user:pw")])  # type: ignore[list-item]
    assert builders.auth("digest", "user:pw").credential == b"user:pw"


def test_valid_arguments_pass_unchanged() -> None:
    acl = [ACL(Perm.READ, Id("world", "anyone"))]
    request = builders.create("/q/", b"x", acl, ephemeral=True, sequential=True)
    assert (request.path, request.data, request.acl) == ("/q/", b"x", tuple(acl))
    assert request.ephemeral
    assert request.sequential
    assert builders.set_data("/a", b"", 2**31 - 1).version == 2**31 - 1
    assert builders.check("/a", -1).version == -1
    assert builders.acl({acl[0]}) == (acl[0],)
