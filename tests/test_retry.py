"""zkpy.Retry: which errors are retried, the backoff schedule with seeded jitter, the deadline,
the decorator, the blocking twin, asyncio, and a real call retried across a broken connection.
Waits run on trio's MockClock (autojump): no test here sleeps for real."""

from __future__ import annotations

import asyncio
import random
from itertools import pairwise

import pytest
import trio
import trio.testing

import zkpy
import zkpy.sync
from tests.conftest import wait_until
from tests.test_recipes_helpers import proxy_to
from zkpy.errors import (
    BadVersionError,
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
    SessionMovedError,
    TooManyRequestsError,
    ZkError,
)
from zkpy.testing import RunningServer


class Flaky:
    """An async call that fails with the given errors, one per try, then returns "done";
    it records the (trio) time of every try."""

    def __init__(self, *errors: ZkError) -> None:
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self, value: str = "done") -> str:
        self.times.append(trio.current_time())
        if self.errors:
            raise self.errors.pop(0)
        return value

    def gaps(self) -> list[float]:
        return [later - earlier for earlier, later in pairwise(self.times)]


async def test_retried_errors_back_off_with_seeded_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(
        ConnectionLossError(), OperationTimeoutError(), SessionMovedError(), TooManyRequestsError()
    )
    retry = zkpy.Retry(max_tries=5, delay=0.5, backoff=2.0, jitter=0.5, rng=random.Random(7))
    assert await retry(flaky, value="ok") == "ok"
    same = random.Random(7)
    expected = [0.5 * 2**n * (1 - 0.5 * same.random()) for n in range(4)]
    assert flaky.gaps() == pytest.approx(expected)
    assert all(0.5 * 2**n * 0.5 <= gap <= 0.5 * 2**n for n, gap in enumerate(flaky.gaps()))


async def test_max_delay_caps_the_waits(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(*[ConnectionLossError() for _ in range(4)])
    retry = zkpy.Retry(max_tries=5, delay=1.0, backoff=3.0, max_delay=5.0, jitter=0)
    assert await retry(flaky) == "done"
    assert flaky.gaps() == pytest.approx([1.0, 3.0, 5.0, 5.0])


@pytest.mark.parametrize(
    "error",
    [NoNodeError(), NodeExistsError(), BadVersionError(), SessionExpiredError(), ValueError()],
)
async def test_answers_are_not_retried(
    error: Exception, autojump_clock: trio.testing.MockClock
) -> None:
    async def refused() -> None:
        calls.append(1)
        raise error

    calls: list[int] = []
    with pytest.raises(type(error)):
        await zkpy.Retry(max_tries=5)(refused)
    assert calls == [1]


async def test_gives_up_after_max_tries_with_the_last_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    last = ConnectionLossError("third")
    flaky = Flaky(ConnectionLossError("first"), ConnectionLossError("second"), last)
    with pytest.raises(ConnectionLossError) as raised:
        await zkpy.Retry(max_tries=3, delay=0.1)(flaky)
    assert raised.value is last
    assert len(flaky.times) == 3
    assert "gave up after 3 tries" in "".join(raised.value.__notes__)


async def test_no_try_starts_past_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(*[ConnectionLossError() for _ in range(100)])
    retry = zkpy.Retry(max_tries=None, delay=1.0, backoff=2.0, jitter=0, deadline=10.0)
    start = trio.current_time()
    with pytest.raises(ConnectionLossError):
        await retry(flaky)
    assert flaky.gaps() == pytest.approx([1.0, 2.0, 4.0])  # the next (8 s) would end at 15 s
    assert trio.current_time() - start == pytest.approx(7.0)  # it gave up without waiting


async def test_cancellation_is_never_retried(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(*[ConnectionLossError() for _ in range(100)])
    with trio.move_on_after(2.5):
        await zkpy.Retry(max_tries=None, delay=1.0, backoff=1.0, jitter=0, deadline=100)(flaky)
    assert len(flaky.times) == 3
    assert trio.current_time() == pytest.approx(2.5)


async def test_as_a_decorator(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(ConnectionLossError())
    retry = zkpy.Retry(max_tries=2, delay=0.1)

    @retry.wraps
    async def fetch(value: str) -> str:
        """Fetch a value."""
        return await flaky(value)

    assert await fetch("v") == "v"
    assert len(flaky.times) == 2
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a value."


def test_the_blocking_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("zkpy.retry.time.sleep", waits.append)
    tries: list[int] = []

    def flaky() -> int:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionLossError()
        return len(tries)

    retry = zkpy.sync.Retry(max_tries=3, delay=0.2, backoff=2.0, jitter=0)
    assert zkpy.sync.Retry is zkpy.Retry
    assert retry.call_sync(flaky) == 3
    assert waits == [0.2, 0.4]
    assert retry.wraps(flaky)() == 4  # a plain function stays a plain (blocking) one
    with pytest.raises(NoNodeError):
        retry.call_sync(_raise, NoNodeError())


def _raise(error: Exception) -> None:
    raise error


def test_under_asyncio() -> None:
    async def main() -> str:
        tries: list[int] = []

        async def flaky() -> str:
            tries.append(1)
            if len(tries) < 2:
                raise ConnectionLossError()
            return "asyncio"

        return await zkpy.Retry(max_tries=2, delay=0.0)(flaky)

    assert asyncio.run(main()) == "asyncio"


@pytest.mark.parametrize(
    "settings",
    [
        {"max_tries": 0},
        {"max_tries": None},  # and no deadline: it would never end
        {"delay": -1},
        {"backoff": 0.5},
        {"jitter": 1.5},
        {"deadline": -1},
        {"retry_on": ()},
        {"retry_on": (KeyboardInterrupt,)},
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="Retry"):
        zkpy.Retry(**settings)  # type: ignore[arg-type]


async def test_a_call_is_retried_across_a_broken_connection(server: RunningServer) -> None:
    async with proxy_to(server) as proxy, zkpy.connect(proxy.address) as zk:
        await zk.create("/x", b"value")
        proxy.pause()
        results: list[tuple[bytes, zkpy.Stat]] = []
        failures: list[ConnectionLossError] = []

        async def get(path: str) -> tuple[bytes, zkpy.Stat]:
            try:
                return await zk.get(path)
            except ConnectionLossError as err:
                failures.append(err)
                raise

        async def read() -> None:
            results.append(await zkpy.Retry(max_tries=10, delay=0.05)(get, "/x"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await wait_until(lambda: len(zk._pending) == 1, what="the read in flight")
            proxy.cut()  # the read fails with ConnectionLossError and is sent again
            proxy.resume()
        assert len(failures) >= 1
        assert results[0][0] == b"value"
