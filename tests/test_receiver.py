"""Tests of zkpy.receiver: reads straight from the socket behave like trio's receive_some."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from zkpy.receiver import Receiver


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
