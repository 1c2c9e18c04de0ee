"""`zkpy.Retry`: a retry policy with exponential backoff and jitter, for any call.

    retry = zkpy.Retry(max_tries=5, delay=0.1, backoff=2.0, max_delay=5.0, deadline=30.0)
    data, stat = await retry(zk.get, "/app/config")          # async: trio (or asyncio)
    data, stat = retry.call_sync(zk.get, "/app/config")      # blocking: zkpy.sync clients

    @retry.wraps
    async def publish(zk: zkpy.Client) -> None: ...

By default only the errors that say the request may not have been carried out, and may succeed
if sent again, are retried: `ConnectionLossError` (and `SessionMovedError`, one of them),
`OperationTimeoutError`, `RequestTimeoutError` and `TooManyRequestsError`. An answer such as
`NoNodeError`, `NodeExistsError` or `BadVersionError` is final, and so is an expired session.
A retried write may have taken effect the first time: a retried create can then fail with
`NodeExistsError`, as with ZooKeeper's own clients.

The wait after the n-th failure is ``min(delay * backoff**(n-1), max_delay)``, less a random
fraction of up to `jitter` of it (so that many clients that failed together spread out). The
randomness comes from `rng` (a `random.Random`; pass a seeded one for a repeatable schedule),
the time from the running event loop's clock (trio's, so trio's MockClock drives it in tests),
or for `call_sync` from `time.monotonic` and `time.sleep`. When the tries are used up, or the
next wait would end past `deadline` seconds from the first try, the last error is raised, with
a note saying how many tries were made.
"""

from __future__ import annotations

import functools
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

import trio

from zkpy.core.errors import (
    ConnectionLossError,
    OperationTimeoutError,
    RequestTimeoutError,
    TooManyRequestsError,
)

P = ParamSpec("P")
T = TypeVar("T")

RETRIED_BY_DEFAULT: tuple[type[BaseException], ...] = (
    ConnectionLossError,
    OperationTimeoutError,
    RequestTimeoutError,
    TooManyRequestsError,
)


class Retry:
    """A retry policy (see the module's text); one object may serve many calls at once.

    `max_tries`: how many times a call is made at most (None: no limit but `deadline`);
    `delay`: the first wait, in seconds; `backoff`: the factor each later wait grows by;
    `max_delay`: the longest wait; `jitter`: the largest fraction taken off a wait at random
    (0 to 1); `deadline`: seconds from the first try after which no try starts (None: none);
    `retry_on`: the exception classes that are retried; `rng`: the randomness of the jitter.
    """

    def __init__(
        self,
        max_tries: int | None = 5,
        *,
        delay: float = 0.1,
        backoff: float = 2.0,
        max_delay: float = 10.0,
        jitter: float = 0.5,
        deadline: float | None = None,
        retry_on: tuple[type[BaseException], ...] = RETRIED_BY_DEFAULT,
        rng: random.Random | None = None,
    ) -> None:
        _check(max_tries is None or (type(max_tries) is int and max_tries >= 1), "max_tries >= 1")
        _check(delay >= 0 and max_delay >= 0, "delay and max_delay >= 0")
        _check(backoff >= 1, "backoff >= 1")
        _check(0 <= jitter <= 1, "0 <= jitter <= 1")
        _check(deadline is None or deadline >= 0, "deadline >= 0")
        _check(bool(retry_on) and all(_is_exception(kind) for kind in retry_on), "retry_on")
        if max_tries is None and deadline is None:
            raise ValueError("a Retry needs max_tries or a deadline (or both): it must end")
        self.max_tries = max_tries
        self.delay = delay
        self.backoff = backoff
        self.max_delay = max_delay
        self.jitter = jitter
        self.deadline = deadline
        self.retry_on = retry_on
        self.rng = rng if rng is not None else random.Random()

    def __repr__(self) -> str:
        return (
            f"Retry(max_tries={self.max_tries}, delay={self.delay}, backoff={self.backoff}, "
            f"max_delay={self.max_delay}, jitter={self.jitter}, deadline={self.deadline})"
        )

    def wait_after(self, failures: int, elapsed: float) -> float | None:
        """How long to wait after the `failures`-th failed try, `elapsed` seconds after the
        first one started; None if no try is left (the tries or the deadline are used up)."""
        if self.max_tries is not None and failures >= self.max_tries:
            return None
        wait = min(self.delay * self.backoff ** (failures - 1), self.max_delay)
        wait -= wait * self.jitter * self.rng.random()
        if self.deadline is not None and elapsed + wait >= self.deadline:
            return None
        return wait

    async def __call__(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await retry(fn, *args, **kwargs)``: await `fn(*args, **kwargs)` until it succeeds,
        fails with an error that is not retried, or the policy gives up."""
        clock, sleep = _loop_time()
        start = clock()
        failures = 0
        while True:
            try:
                return await fn(*args, **kwargs)
            except self.retry_on as err:
                failures += 1
                wait = self._wait_or_raise(err, failures, clock() - start)
            await sleep(wait)

    def call_sync(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """The blocking twin of ``await retry(...)``, for `zkpy.sync` clients and other
        blocking calls: waits with `time.sleep`."""
        start = time.monotonic()
        failures = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except self.retry_on as err:
                failures += 1
                wait = self._wait_or_raise(err, failures, time.monotonic() - start)
            time.sleep(wait)

    def _wait_or_raise(self, err: BaseException, failures: int, elapsed: float) -> float:
        wait = self.wait_after(failures, elapsed)
        if wait is None:
            err.add_note(f"zkpy.Retry gave up after {failures} tries in {elapsed:.3f} s")
            raise err
        return wait

    @overload
    def wraps(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def wraps(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def wraps(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """A decorator: calls of `fn` are retried under this policy (``@retry.wraps``); an
        async function stays async, a plain one uses `call_sync`."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def retried(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self(fn, *args, **kwargs)

            return retried

        @functools.wraps(fn)
        def retried_sync(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call_sync(fn, *args, **kwargs)

        return retried_sync


def _check(condition: bool, rule: str) -> None:
    if not condition:
        raise ValueError(f"bad Retry setting: needs {rule}")


def _is_exception(kind: object) -> bool:
    return isinstance(kind, type) and issubclass(kind, Exception)


def _loop_time() -> tuple[Callable[[], float], Callable[[float], Awaitable[None]]]:
    """The running event loop's clock and sleep: trio's, else asyncio's."""
    if trio.lowlevel.in_trio_run():
        return trio.current_time, trio.sleep
    import asyncio  # only here: `import zkpy` does not pay for asyncio

    loop = asyncio.get_running_loop()  # RuntimeError outside any event loop: a clear refusal
    return loop.time, asyncio.sleep


__all__ = ["RETRIED_BY_DEFAULT", "Retry"]
