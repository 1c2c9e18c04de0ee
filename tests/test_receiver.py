"""Tests of zkpy._net.receiver: reads straight from the socket behave like trio's receive_some."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

import zkpy
from zkpy._net.receiver import Receiver, spinning_readers
from zkpy.server.config import ServerConfig


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


async def test_reads_what_was_sent_then_end_of_stream() -> None:
    left, right = await _socket_pair()
    receiver = Receiver(right)
    await left.send_all(b"hello")
    assert await receiver.receive(1024) == b"hello"
    await left.send_all(b"x" * 10)
    assert await receiver.receive(4) == b"xxxx"  # at most max_bytes
    await left.aclose()
    received = b""
    while chunk := await receiver.receive(1024):
        received += chunk
    assert received == b"x" * 6
    await right.aclose()


async def test_waits_for_bytes_and_can_be_cancelled() -> None:
    left, right = await _socket_pair()
    receiver = Receiver(right)
    got: list[bytes | bytearray] = []

    async def read() -> None:
        got.append(await receiver.receive(1024))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # nothing sent yet: the reader waits
        await left.send_all(b"late")
    assert got == [b"late"]
    with trio.move_on_after(0.01) as scope:
        await receiver.receive(1024)
    assert scope.cancelled_caught
    await left.aclose()
    await right.aclose()


async def test_a_closed_stream_raises_closed_resource_error() -> None:
    left, right = await _socket_pair()
    receiver = Receiver(right)

    async def close_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await right.aclose()  # while the reader waits

    with pytest.RaisesGroup(trio.ClosedResourceError, allow_unwrapped=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_soon)
            await receiver.receive(1024)
    with pytest.raises(trio.ClosedResourceError):
        await receiver.receive(1024)
    await left.aclose()


async def test_a_reset_connection_raises_broken_resource_error() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    # SO_LINGER 0: closing sends a reset instead of a FIN
    server.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    await server.aclose()
    receiver = Receiver(client)
    with pytest.raises(trio.BrokenResourceError):
        await receiver.receive(1024)  # neither data nor the end of the stream
    await client.aclose()
    await listener.aclose()


async def test_other_streams_are_read_with_receive_some() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = Receiver(right)
    await left.send_all(b"through receive_some")
    assert await receiver.receive(1024) == b"through receive_some"


class FrozenClock:
    """Real time stands still until the test moves it: a spin lasts exactly as long as the
    test wants."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _is_asleep(timeout_s: float = 5.0) -> bool:
    """Whether every task gets blocked (a spinning reader never does: it keeps checkpointing)."""
    with trio.move_on_after(timeout_s):
        await trio.testing.wait_all_tasks_blocked()
        return True
    return False


@pytest.mark.parametrize("ending", [False, True], ids=["bytes", "end of stream"])
async def test_a_read_that_finds_no_bytes_spins_then_meets_them_awake(ending: bool) -> None:
    left, right = await _socket_pair()
    receiver = Receiver(right, spin_s=0.001, clock=FrozenClock())
    got: list[bytes | bytearray] = []

    async def read() -> None:
        got.append(await receiver.receive(1024))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        assert not await _is_asleep(0.05)  # it keeps trying instead of sleeping in epoll
        assert spinning_readers() == 1
        if ending:
            await left.aclose()
        else:
            await left.send_all(b"soon")
    assert got == [b"" if ending else b"soon"]
    assert spinning_readers() == 0
    await left.aclose()
    await right.aclose()


async def test_after_long_waits_a_read_sleeps_at_once() -> None:
    left, right = await _socket_pair()
    clock = FrozenClock()
    receiver = Receiver(right, spin_s=0.001, clock=clock)
    got: list[bytes | bytearray] = []

    async def read() -> None:
        got.append(await receiver.receive(1024))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        assert not await _is_asleep(0.05)
        clock.now += 1.0  # the spin runs out: the reader goes to sleep
        assert await _is_asleep()
        await left.send_all(b"late")  # after a wait far longer than the spin
    assert got == [b"late"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        assert await _is_asleep()  # this connection's waits are long: no spin
        await left.send_all(b"again")
    assert got == [b"late", b"again"]
    await left.aclose()
    await right.aclose()


async def test_spinning_can_be_turned_off() -> None:
    left, right = await _socket_pair()
    receiver = Receiver(right, spin_s=0.0, clock=FrozenClock())

    async def read() -> None:
        assert await receiver.receive(1024) == b"x"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        assert await _is_asleep()
        await left.send_all(b"x")
    await left.aclose()
    await right.aclose()


async def test_a_spinning_read_is_cancelled_like_a_sleeping_one() -> None:
    _left, right = await _socket_pair()
    receiver = Receiver(right, spin_s=0.001, clock=FrozenClock())
    with trio.move_on_after(0.01) as scope:
        await receiver.receive(1024)  # spins forever on the frozen clock
    assert scope.cancelled_caught
    await right.aclose()


def test_a_members_spin_setting_is_checked(tmp_path: Path) -> None:
    assert ServerConfig(data_dir=tmp_path).spin_before_wait_us == 200
    assert ServerConfig(data_dir=tmp_path, spin_before_wait_us=0).spin_before_wait_s == 0


async def test_only_so_many_readers_of_a_process_spin_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("zkpy._net.receiver.MAX_SPINNING", 1)
    pairs = [await _socket_pair(), await _socket_pair()]
    first, second = (Receiver(right, spin_s=0.001, clock=FrozenClock()) for _left, right in pairs)
    got: list[bytes | bytearray] = []

    async def read(receiver: Receiver) -> None:
        got.append(await receiver.receive(1024))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, first)
        assert not await _is_asleep(0.05)  # the first one spins
        nursery.start_soon(read, second)
        for _ in range(3):  # the second one starts (and finds no bytes) while the first spins
            await trio.lowlevel.checkpoint()
        await pairs[0][0].send_all(b"one")  # ends the first one's spin
        assert await _is_asleep()  # the second one found no free spin and sleeps
        await pairs[1][0].send_all(b"two")
    assert got == [b"one", b"two"]
    assert spinning_readers() == 0
    for left, right in pairs:
        await left.aclose()
        await right.aclose()


def test_a_clients_spin_setting_is_checked() -> None:
    assert zkpy.Client("127.0.0.1:2181").spin_before_wait == 0.0002
    assert zkpy.Client("127.0.0.1:2181", spin_before_wait=0).spin_before_wait == 0
    for out_of_range in (-0.001, 200.0):  # seconds: 200 us is 0.0002
        with pytest.raises(ValueError, match="spin_before_wait"):
            zkpy.Client("127.0.0.1:2181", spin_before_wait=out_of_range)


async def test_spinning_comes_back_after_a_long_pause() -> None:
    left, right = await _socket_pair()
    clock = FrozenClock()
    receiver = Receiver(right, spin_s=0.001, clock=clock)

    async def read() -> None:
        await receiver.receive(1024)

    async with trio.open_nursery() as nursery:  # a pause of an hour, counted as 8 ms at most
        nursery.start_soon(read)
        assert not await _is_asleep(0.05)
        clock.now += 3600.0
        assert await _is_asleep()
        await left.send_all(b"x")
    sleeping_reads = 0
    while True:  # quick answers (no time passes on this clock) bring the estimate back down
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            asleep = await _is_asleep(0.05)
            await left.send_all(b"x")
        if not asleep:
            break
        sleeping_reads += 1
        assert sleeping_reads < 10, "spinning never came back"
    assert 1 <= sleeping_reads <= 5
    await left.aclose()
    await right.aclose()


@pytest.mark.parametrize("spin_us", [-1, 10_001])
def test_a_members_spin_setting_out_of_range_is_refused(tmp_path: Path, spin_us: int) -> None:
    with pytest.raises(ValueError, match="spin_before_wait_us"):
        ServerConfig(data_dir=tmp_path, spin_before_wait_us=spin_us)


async def test_a_slow_connection_read_dry_is_not_read_again_until_readable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One write at a time, every message used to start with a read that failed (a system call
    and an exception); a connection whose bytes come slowly now waits for them first."""
    left, right = await _socket_pair()
    receiver = Receiver(right, spin_s=0.0)  # never spins: its waits always count as slow
    failed_reads = 0
    read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        nonlocal failed_reads
        try:
            return read(fd, size)
        except BlockingIOError:
            failed_reads += 1
            raise

    monkeypatch.setattr("zkpy._net.receiver.os.read", counting_read)
    await left.send_all(b"first")
    assert await receiver.receive(1024) == b"first"  # less than asked: read dry
    got: list[bytes | bytearray] = []

    async def read_next() -> None:
        got.append(await receiver.receive(1024))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_next)
        await trio.testing.wait_all_tasks_blocked()
        await left.send_all(b"second")
    assert got == [b"second"]
    assert failed_reads == 0
    await left.send_all(b"y" * 8)
    assert await receiver.receive(4) == b"yyyy"  # as much as asked: maybe more is waiting
    assert await receiver.receive(4) == b"yyyy"  # read at once, without waiting
    monkeypatch.undo()
    await left.aclose()
    await right.aclose()


def test_a_members_stay_awake_setting_is_checked(tmp_path: Path) -> None:
    """`stay_awake_us`: how long a follower whose clients wait on the leader keeps its loop
    turning (decision 0038); 0 turns it off, and it is bounded like the read spin."""
    assert ServerConfig(data_dir=tmp_path).stay_awake_s == 0.0004
    assert ServerConfig(data_dir=tmp_path, stay_awake_us=0).stay_awake_s == 0
    for out_of_range in (-1, 10_001):
        with pytest.raises(ValueError, match="stay_awake_us"):
            ServerConfig(data_dir=tmp_path, stay_awake_us=out_of_range)
