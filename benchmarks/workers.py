"""Benchmark client processes: one event loop (zkpy on trio or asyncio), one blocking zkpy.sync
client, or one kazoo client (ZooKeeper) each.

The parent (benchmarks.run) starts one process per client with `multiprocessing` (spawn) and talks
to it over a pipe:

    child -> ("ready",)                      connected, nodes created
    parent -> Go(t_go, t_measure, t_end, count)
    child -> ("result", {...}) or ("error", traceback)

Times are `time.monotonic()` values, which on Linux are comparable across processes. A worker
starts issuing at t_go (t_measure - t_go is the warm-up), counts the operations that complete in
[t_measure, t_end] and stops issuing at t_end. With a count instead, it issues `count` operations
and reports how long they took.

The zkpy worker's `backend` is "trio" (the default), "asyncio" (the same async code, through
anyio) or "sync" (the blocking client, one thread per slot).

Workloads, each with `in_flight` concurrent slots (a slot is one task, one thread of the blocking
client, or one chain of kazoo callbacks, that issues its next request when the last one is
answered):

    create      create a new node (`value_size` bytes) under the worker's folder
    set         set the slot's own node
    get         get the slot's own node
    multi       a transaction of `multi_size` set_data on the slot's node and its neighbours
    watch       a second connection leaves a one-shot data watch on the slot's node, then the
                first sets it; latency is from the set to the event arriving at the watcher
    pset, pget  (zkpy only, when the client has `pipeline()`) batches of sets/gets sent as one
                pipeline; each slot sends one batch at a time
    lock        `in_flight` contenders, each with its own client (session), loop on one exclusive
                lock (recipes.Lock, or kazoo's Lock) around an empty body; a latency is a
                hand-off: from the holder starting its release to the next holder's grant
    jset, jwatch  a bare jute client (`benchmarks.bare_jute`), either system: one-at-a-time set
                and write-to-watch without a client library between
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from benchmarks import bare_jute

SESSION_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 30.0
MAX_ERRORS_LOGGED = 5


@dataclass
class Go:
    t_go: float
    t_measure: float
    t_end: float  # math.inf with a count
    count: int | None


class Tally:
    """What a worker measured: completions in the window, their latencies, errors."""

    def __init__(self, go: Go) -> None:
        self.go = go
        self.ops = 0
        self.issued = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.latencies = array("d")
        self.last_done = go.t_go
        self.cpu_start: float | None = None
        self.cpu_end: float | None = None

    def take(self) -> bool:
        """May another operation be issued?"""
        if self.go.count is not None:
            if self.issued >= self.go.count:
                return False
        elif time.monotonic() >= self.go.t_end:
            return False
        self.issued += 1
        return True

    def done(self, n_ops: int, t0: float, t1: float) -> None:
        if self.go.t_measure <= t1 <= self.go.t_end:
            self.ops += n_ops
            latency = t1 - t0
            if n_ops == 1:
                self.latencies.append(latency)
            else:
                self.latencies.extend([latency] * n_ops)
            self.last_done = max(self.last_done, t1)

    def failed(self, err: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERRORS_LOGGED:
            self.error_samples.append(f"{type(err).__name__}: {err}")

    def result(self) -> dict[str, Any]:
        go = self.go
        counted = go.count is not None
        elapsed = self.last_done - go.t_go if counted else go.t_end - go.t_measure
        cpu = (
            None
            if self.cpu_start is None or self.cpu_end is None
            else self.cpu_end - self.cpu_start
        )
        return {
            "ops": self.ops,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "elapsed": elapsed,
            "client_cpu": cpu,
            "latencies": self.latencies,
        }


def _wait_go(conn: Connection) -> Go:
    message = conn.recv()
    if not isinstance(message, Go):
        raise RuntimeError(f"expected Go, got {message!r}")
    return message


def keys_for(base: str, in_flight: int) -> list[str]:
    return [f"{base}/k{i}" for i in range(in_flight)]


def worker_entry(conn: Connection, spec: dict[str, Any]) -> None:
    """multiprocessing target: run one client process's share of a workload."""
    try:
        backend = spec.get("backend", "trio")
        if spec["workload"] in bare_jute.WORKLOADS:
            _bare_jute_main(conn, spec)
        elif spec["workload"] == "lock":
            _lock_main(conn, spec)
        elif spec["system"] == "zkpy" and backend == "sync":
            _zkpy_sync_main(conn, spec)
        elif spec["system"] == "zkpy":
            import anyio

            anyio.run(_zkpy_main, conn, spec, backend=backend)
        else:
            _kazoo_main(conn, spec)
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        conn.close()


# ---- zkpy (trio or asyncio) --------------------------------------------------------------------


async def _zkpy_main(conn: Connection, spec: dict[str, Any]) -> None:
    from contextlib import AsyncExitStack

    import anyio

    import zkpy

    workload: str = spec["workload"]
    value = b"v" * spec["value_size"]
    base: str = spec["base"]
    in_flight: int = spec["in_flight"]
    keys = keys_for(base, in_flight)
    multi_size: int = spec["multi_size"]
    monotonic = time.monotonic

    async with AsyncExitStack() as stack:
        zk = await stack.enter_async_context(
            zkpy.connect(spec["target"], session_timeout=SESSION_TIMEOUT_S)
        )
        await zk.ensure_path(base)
        if workload != "create":
            async with anyio.create_task_group() as nursery:
                for key in keys:
                    nursery.start_soon(zk.create, key, value)
        watcher = None
        if workload == "watch":
            watcher = await stack.enter_async_context(
                zkpy.connect(spec["target"], session_timeout=SESSION_TIMEOUT_S)
            )
        counters = [0] * in_flight

        async def op_create(slot: int) -> tuple[int, float, float]:
            counters[slot] += 1
            t0 = monotonic()
            await zk.create(f"{base}/c{slot}-{counters[slot]}", value)
            return 1, t0, monotonic()

        async def op_set(slot: int) -> tuple[int, float, float]:
            t0 = monotonic()
            await zk.set(keys[slot], value)
            return 1, t0, monotonic()

        async def op_get(slot: int) -> tuple[int, float, float]:
            t0 = monotonic()
            await zk.get(keys[slot])
            return 1, t0, monotonic()

        async def op_multi(slot: int) -> tuple[int, float, float]:
            t0 = monotonic()
            tx = zk.transaction()
            for j in range(multi_size):
                tx.set_data(keys[(slot + j) % in_flight], value)
            results = await tx.commit()
            for item in results:
                if isinstance(item, BaseException):
                    raise item
            return 1, t0, monotonic()

        async def op_watch(slot: int) -> tuple[int, float, float]:
            assert watcher is not None
            arrived = anyio.Event()
            at = [0.0]

            def on_event(_event: Any) -> None:
                at[0] = monotonic()
                arrived.set()

            await watcher.get(keys[slot], watch=on_event)
            t0 = monotonic()
            await zk.set(keys[slot], value)
            await arrived.wait()
            return 1, t0, at[0]

        pipeline_batch = max(1, in_flight // max(1, spec["pipeline_slots"]))

        async def op_pipeline(slot: int) -> tuple[int, float, float]:
            batch = keys[slot * pipeline_batch : (slot + 1) * pipeline_batch]
            t0 = monotonic()
            async with zk.pipeline() as pipe:  # results in order; raises the first error
                for key in batch:
                    if workload == "pset":
                        pipe.set(key, value)
                    else:
                        pipe.get(key)
            return len(batch), t0, monotonic()

        ops: dict[str, Callable[[int], Awaitable[tuple[int, float, float]]]] = {
            "create": op_create,
            "set": op_set,
            "get": op_get,
            "multi": op_multi,
            "watch": op_watch,
            "pset": op_pipeline,
            "pget": op_pipeline,
        }
        op = ops[workload]
        slots = spec["pipeline_slots"] if workload in ("pset", "pget") else in_flight
        conn.send(("ready",))
        go = await anyio.to_thread.run_sync(_wait_go, conn)
        tally = Tally(go)

        async def run_slot(slot: int) -> None:
            while tally.take():
                try:
                    n_ops, t0, t1 = await op(slot)
                except zkpy.errors.ZkError as err:
                    tally.failed(err)
                    if tally.errors > 1000:
                        raise RuntimeError(f"too many errors: {tally.error_samples}") from err
                    continue
                tally.done(n_ops, t0, t1)

        async def sample_cpu() -> None:
            await anyio.sleep(max(0.0, go.t_measure - monotonic()))
            tally.cpu_start = time.process_time()
            if go.count is None:
                await anyio.sleep(max(0.0, go.t_end - monotonic()))
                tally.cpu_end = time.process_time()

        await anyio.sleep(max(0.0, go.t_go - monotonic()))
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(sample_cpu)
            with anyio.move_on_after(_drain_budget(go)):
                async with anyio.create_task_group() as slots_nursery:
                    for slot in range(slots):
                        slots_nursery.start_soon(run_slot, slot)
        if tally.cpu_end is None:
            tally.cpu_end = time.process_time()
        conn.send(("result", tally.result()))


def _drain_budget(go: Go) -> float:
    if go.count is not None:
        return math.inf
    return go.t_end - time.monotonic() + DRAIN_TIMEOUT_S


# ---- zkpy.sync (the blocking client, one thread per slot) --------------------------------------


def _zkpy_sync_main(conn: Connection, spec: dict[str, Any]) -> None:
    import zkpy.sync

    workload: str = spec["workload"]
    value = b"v" * spec["value_size"]
    base: str = spec["base"]
    in_flight: int = spec["in_flight"]
    keys = keys_for(base, in_flight)
    watcher: zkpy.sync.Client | None = None
    with zkpy.sync.connect(spec["target"], session_timeout=SESSION_TIMEOUT_S) as zk:
        zk.ensure_path(base)
        if workload != "create":
            with zk.pipeline() as creating:
                for key in keys:
                    creating.create(key, value)
        if workload == "watch":
            watcher = zkpy.sync.connect(spec["target"], session_timeout=SESSION_TIMEOUT_S)
        try:
            op = _sync_op(zk, watcher, spec, keys, value)
            slots = spec["pipeline_slots"] if workload in ("pset", "pget") else in_flight
            conn.send(("ready",))
            tally = Tally(_wait_go(conn))
            _run_threads(tally, op, slots)
        finally:
            if watcher is not None:
                watcher.close()
        conn.send(("result", tally.result()))


def _sync_op(
    zk: Any, watcher: Any, spec: dict[str, Any], keys: list[str], value: bytes
) -> Callable[[int], tuple[int, float, float]]:
    """The blocking client's operation of `spec`'s workload, for one slot (a thread)."""
    workload: str = spec["workload"]
    base: str = spec["base"]
    in_flight = len(keys)
    monotonic = time.monotonic
    counters = [0] * in_flight
    batch_size = max(1, in_flight // max(1, spec["pipeline_slots"]))

    def op(slot: int) -> tuple[int, float, float]:
        t0 = monotonic()
        if workload == "create":
            counters[slot] += 1
            zk.create(f"{base}/c{slot}-{counters[slot]}", value)
        elif workload == "set":
            zk.set(keys[slot], value)
        elif workload == "get":
            zk.get(keys[slot])
        elif workload == "multi":
            tx = zk.transaction()
            for j in range(spec["multi_size"]):
                tx.set_data(keys[(slot + j) % in_flight], value)
            for item in tx.commit():
                if isinstance(item, BaseException):
                    raise item
        elif workload == "watch":
            arrived = threading.Event()
            at = [0.0]

            def on_event(_event: Any) -> None:
                at[0] = monotonic()
                arrived.set()

            watcher.get(keys[slot], watch=on_event)
            t0 = monotonic()
            zk.set(keys[slot], value)
            arrived.wait(SESSION_TIMEOUT_S)
            return 1, t0, at[0]
        else:  # pset, pget
            batch = keys[slot * batch_size : (slot + 1) * batch_size]
            with zk.pipeline() as pipe:
                for key in batch:
                    if workload == "pset":
                        pipe.set(key, value)
                    else:
                        pipe.get(key)
            return len(batch), t0, monotonic()
        return 1, t0, monotonic()

    return op


def _run_threads(tally: Tally, op: Callable[[int], tuple[int, float, float]], slots: int) -> None:
    """Run `op` in `slots` threads, each issuing its next operation when the last one ends,
    from t_go until the tally says stop. An error other than a ZkError (the client itself
    broke: a socket timed out or closed) is raised here, so that the workload fails instead
    of reporting what the broken client left; the other slots issue nothing more (one already
    waiting on an operation finishes it first). As on trio, a slot still busy when the drain
    budget ends is left behind, its operation not counted."""
    import zkpy

    go = tally.go
    lock = threading.Lock()
    fatal: list[BaseException] = []

    def run_slot(slot: int) -> None:
        while True:
            with lock:
                if fatal or not tally.take():
                    return
            try:
                n_ops, t0, t1 = op(slot)
            except zkpy.errors.ZkError as err:
                with lock:
                    tally.failed(err)
                continue
            except BaseException as err:  # the client broke (a timeout, a lost socket)
                with lock:
                    fatal.append(err)
                return
            with lock:
                tally.done(n_ops, t0, t1)

    time.sleep(max(0.0, go.t_go - time.monotonic()))
    sampler = threading.Thread(target=_sample_cpu_thread, args=(go, tally), daemon=True)
    sampler.start()
    threads = [threading.Thread(target=run_slot, args=(n,), daemon=True) for n in range(slots)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + _drain_budget(go) if go.count is None else math.inf
    for thread in threads:
        thread.join(timeout=None if deadline == math.inf else max(0.0, deadline - time.monotonic()))
    sampler.join(timeout=max(0.0, go.t_end - time.monotonic()) + 1 if go.count is None else 0.1)
    with lock:
        if tally.cpu_end is None:
            tally.cpu_end = time.process_time()
        if tally.cpu_start is None:
            tally.cpu_start = tally.cpu_end
        if fatal:
            raise fatal[0]


def _bare_jute_main(conn: Connection, spec: dict[str, Any]) -> None:
    workload = bare_jute.BareWorkload(spec, SESSION_TIMEOUT_S)
    try:
        conn.send(("ready",))
        tally = Tally(_wait_go(conn))
        _run_threads(tally, workload.op, 1)
    finally:
        workload.close()
    conn.send(("result", tally.result()))


# ---- kazoo (threads, callbacks) ----------------------------------------------------------------


def _kazoo_main(conn: Connection, spec: dict[str, Any]) -> None:
    from kazoo.client import KazooClient

    workload: str = spec["workload"]
    value = b"v" * spec["value_size"]
    base: str = spec["base"]
    in_flight: int = spec["in_flight"]
    keys = keys_for(base, in_flight)
    multi_size: int = spec["multi_size"]
    monotonic = time.monotonic
    clients: list[Any] = []
    try:
        zk = KazooClient(hosts=spec["target"], timeout=SESSION_TIMEOUT_S)
        clients.append(zk)
        zk.start(timeout=SESSION_TIMEOUT_S)
        zk.ensure_path(base)
        if workload != "create":
            for pending in [zk.create_async(key, value) for key in keys]:
                pending.get(timeout=SESSION_TIMEOUT_S)
        watcher: Any = None
        if workload == "watch":
            watcher = KazooClient(hosts=spec["target"], timeout=SESSION_TIMEOUT_S)
            clients.append(watcher)
            watcher.start(timeout=SESSION_TIMEOUT_S)
        counters = [0] * in_flight
        lock = threading.Lock()
        finished = threading.Event()
        live = [in_flight]

        conn.send(("ready",))
        go = _wait_go(conn)
        tally = Tally(go)

        def settle(slot: int, t0: float, result: Any, t1: float | None = None) -> None:
            """A slot's operation ended: record it, then issue the slot's next one."""
            end = monotonic() if t1 is None else t1
            with lock:
                if result is not None and result.exception is not None:
                    tally.failed(result.exception)
                else:
                    tally.done(1, t0, end)
            launch(slot)

        def launch(slot: int) -> None:
            with lock:
                more = tally.take()
                if not more:
                    live[0] -= 1
                    if live[0] == 0:
                        finished.set()
                    return
            start = monotonic()
            if workload == "create":
                counters[slot] += 1
                pending = zk.create_async(f"{base}/c{slot}-{counters[slot]}", value)
            elif workload == "set":
                pending = zk.set_async(keys[slot], value)
            elif workload == "get":
                pending = zk.get_async(keys[slot])
            elif workload == "multi":
                tx = zk.transaction()
                for j in range(multi_size):
                    tx.set_data(keys[(slot + j) % in_flight], value)
                pending = tx.commit_async()
            elif workload == "watch":
                watch_cycle(slot)
                return
            else:
                raise ValueError(f"kazoo cannot run workload {workload!r}")
            pending.rawlink(lambda result: settle(slot, start, result))

        def watch_cycle(slot: int) -> None:
            state: dict[str, Any] = {"set": None, "event_at": None, "t0": 0.0}
            cycle_lock = threading.Lock()

            def maybe_done() -> None:
                with cycle_lock:
                    if state["set"] is None or state["event_at"] is None or state.get("done"):
                        return
                    state["done"] = True
                settle(slot, state["t0"], state["set"], state["event_at"])

            def on_event(_event: Any) -> None:
                state["event_at"] = monotonic()
                maybe_done()

            def on_set(result: Any) -> None:
                state["set"] = result
                if result.exception is not None:
                    state["event_at"] = monotonic()  # no event will come
                maybe_done()

            def on_registered(result: Any) -> None:
                if result.exception is not None:
                    settle(slot, monotonic(), result)
                    return
                state["t0"] = monotonic()
                zk.set_async(keys[slot], value).rawlink(on_set)

            watcher.get_async(keys[slot], watch=on_event).rawlink(on_registered)

        time.sleep(max(0.0, go.t_go - monotonic()))
        sampler = threading.Thread(target=_sample_cpu_thread, args=(go, tally), daemon=True)
        sampler.start()
        for slot in range(in_flight):
            launch(slot)
        finished.wait(timeout=_drain_budget(go) if go.count is None else None)
        sampler.join(timeout=max(0.0, go.t_end - monotonic()) + 1 if go.count is None else 0.1)
        with lock:
            if tally.cpu_end is None:
                tally.cpu_end = time.process_time()
            if tally.cpu_start is None:
                tally.cpu_start = tally.cpu_end
            result = tally.result()
        conn.send(("result", result))
    finally:
        for client in clients:
            try:
                client.stop()
                client.close()
            except Exception:
                pass


def _sample_cpu_thread(go: Go, tally: Tally) -> None:
    time.sleep(max(0.0, go.t_measure - time.monotonic()))
    tally.cpu_start = time.process_time()
    if go.count is None:
        time.sleep(max(0.0, go.t_end - time.monotonic()))
        tally.cpu_end = time.process_time()


# ---- lock hand-off (both systems) --------------------------------------------------------------

# (position in the lock's queue, granted at, release started at): one record per acquisition.
LockRecord = tuple[int, float, float]


def _lock_main(conn: Connection, spec: dict[str, Any]) -> None:
    """Contend for one lock, then report the hand-offs between consecutive holders."""
    records: list[LockRecord] = []
    if spec["system"] == "zkpy":
        import trio

        go, cpu = trio.run(_zkpy_lock, conn, spec, records)
    else:
        go, cpu = _kazoo_lock(conn, spec, records)
    tally = Tally(go)
    for released, granted in lock_handoffs(records):
        tally.done(1, released, granted)
    tally.cpu_start, tally.cpu_end = cpu
    conn.send(("result", tally.result()))


def lock_handoffs(records: list[LockRecord]) -> list[tuple[float, float]]:
    """(release started, next holder granted) for each pair of consecutive holders, in the
    order the lock was held; a pair whose grant came before the release (clocks of different
    tasks read late) is left out."""
    ordered = sorted(records)
    return [
        (released, granted)
        for (_, _, released), (_, granted, _) in itertools.pairwise(ordered)
        if granted >= released
    ]


async def _zkpy_lock(
    conn: Connection, spec: dict[str, Any], records: list[LockRecord]
) -> tuple[Go, tuple[float, float]]:
    from contextlib import AsyncExitStack

    import trio

    import zkpy
    from recipes import Lock

    path = spec["base"] + "/lock"
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                zkpy.connect(spec["target"], session_timeout=SESSION_TIMEOUT_S)
            )
            for _ in range(spec["in_flight"])
        ]
        await clients[0].ensure_path(spec["base"])
        conn.send(("ready",))
        go = await trio.to_thread.run_sync(_wait_go, conn)
        tally = Tally(go)

        async def contender(zk: zkpy.Client) -> None:
            lock = Lock(zk, path)
            while tally.take():
                held = await lock.acquire()
                granted = time.monotonic()
                released = time.monotonic()
                await held.release()
                records.append((held.token, granted, released))

        await trio.sleep(max(0.0, go.t_go - time.monotonic()))
        cpu_start = time.process_time()
        with trio.move_on_after(_drain_budget(go)):
            async with trio.open_nursery() as nursery:
                for zk in clients:
                    nursery.start_soon(contender, zk)
        return go, (cpu_start, time.process_time())


def _kazoo_lock(
    conn: Connection, spec: dict[str, Any], records: list[LockRecord]
) -> tuple[Go, tuple[float, float]]:
    from kazoo.client import KazooClient

    path = spec["base"] + "/lock"
    clients = []
    try:
        for _ in range(spec["in_flight"]):
            zk = KazooClient(hosts=spec["target"], timeout=SESSION_TIMEOUT_S)
            clients.append(zk)
            zk.start(timeout=SESSION_TIMEOUT_S)
        clients[0].ensure_path(spec["base"])
        conn.send(("ready",))
        go = _wait_go(conn)
        tally = Tally(go)
        guard = threading.Lock()

        def take() -> bool:
            with guard:
                return tally.take()

        def contender(zk: Any) -> None:
            lock = zk.Lock(path)
            while take():
                lock.acquire()
                granted = time.monotonic()
                released = time.monotonic()
                sequence = int(lock.node[-10:])
                lock.release()
                records.append((sequence, granted, released))

        time.sleep(max(0.0, go.t_go - time.monotonic()))
        cpu_start = time.process_time()
        threads = [threading.Thread(target=contender, args=(zk,), daemon=True) for zk in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return go, (cpu_start, time.process_time())
    finally:
        for client in clients:
            try:
                client.stop()
                client.close()
            except Exception:
                pass
