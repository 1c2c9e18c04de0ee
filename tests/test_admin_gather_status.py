"""`zkpy status` asks members at once, wave by wave: a frozen member costs one timeout however
many there are. Runs on trio's autojump clock: a timeout passes as soon as every task waits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from zkpy.client.admin import gather_statuses
from zkpy.wire.client import pack
from zkpy.wire.frames import FrameDecoder, encode_frame

TIMEOUT_S = 5.0


def _address(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"{host}:{port}"


@asynccontextmanager
async def frozen_member() -> AsyncIterator[str]:
    """A port whose connections the kernel completes but nobody ever answers (a SIGSTOPped
    member looks like this)."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        yield _address(listener)


@asynccontextmanager
async def answering_member(status: dict[str, Any]) -> AsyncIterator[tuple[str, list[int]]]:
    """A member that answers each status query with `status`; yields its address and a list
    holding the count of queries it answered."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    asked = [0]

    async def answer(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        async with stream:
            while not decoder.feed(await stream.receive_some(1 << 16)):
                pass
            asked[0] += 1
            await stream.send_all(encode_frame(pack(status)))

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, answer, [listener])
        yield _address(listener), asked
        nursery.cancel_scope.cancel()


async def test_frozen_members_cost_one_timeout_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with frozen_member() as first, frozen_member() as second:
        started = trio.current_time()
        answers = await gather_statuses([first, second, first], timeout=TIMEOUT_S)
        took = trio.current_time() - started
    assert list(answers) == [first, second]
    assert all(str(found).startswith("unreachable") for found in answers.values())
    assert took < 2 * TIMEOUT_S, took  # asked one after another, it would be two timeouts


async def test_members_named_in_answers_are_asked_next_once_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with frozen_member() as frozen:
        async with answering_member({"serving": True, "members": []}) as (other, other_asked):
            members = [frozen, other]
            status: dict[str, Any] = {"serving": True, "members": members}
            async with answering_member(status) as (named, named_asked):
                members.append(named)  # it names itself too, as members do
                started = trio.current_time()
                answers = await gather_statuses([named], timeout=TIMEOUT_S)
                took = trio.current_time() - started
    assert list(answers) == [named, frozen, other]
    assert answers[named] == status
    assert answers[other] == {"serving": True, "members": []}
    assert str(answers[frozen]).startswith("unreachable")
    assert named_asked == [1]
    assert other_asked == [1]
    assert took < 2 * TIMEOUT_S, took  # the second wave's frozen member: one timeout


async def test_an_address_that_is_no_address_is_reported_not_raised() -> None:
    answers = await gather_statuses(["127.0.0.1:not-a-port"], timeout=TIMEOUT_S)
    assert str(answers["127.0.0.1:not-a-port"]).startswith("unreachable")
