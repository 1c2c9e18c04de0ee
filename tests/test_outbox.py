"""The outbox writes straight to the socket when it can and leaves the rest to its writer task,
without ever reordering or losing bytes."""

from __future__ import annotations

import trio
import trio.testing

from zkpy._net.outbox import Flusher, Outbox


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    assert isinstance(server, trio.SocketStream)
    return client, server


async def _read_exactly(stream: trio.abc.Stream, count: int) -> bytes:
    received = bytearray()
    while len(received) < count:
        chunk = await stream.receive_some(1 << 16)
        assert chunk, "the stream closed early"
        received += chunk
    return bytes(received)


async def test_a_flush_sends_directly_without_the_writer_task() -> None:
    sender, receiver = await _tcp_pair()
    async with sender, receiver:
        flusher = Flusher()
        outbox = Outbox(sender, flusher)
        outbox.push(b"hello ")
        outbox.push(b"world")
        assert len(outbox) == 11  # nothing leaves before the step's flush
        flusher.flush()
        assert len(outbox) == 0
        # no writer task runs in this test: the bytes went out in flush itself
        assert await _read_exactly(receiver, 11) == b"hello world"


async def test_what_the_socket_cannot_take_goes_through_the_writer_in_order() -> None:
    sender, receiver = await _tcp_pair()
    async with sender, receiver:
        flusher = Flusher()
        outbox = Outbox(sender, flusher)
        # far more than the socket buffers hold, in numbered chunks, flushed as they come
        chunks = [f"{i:08d}".encode() * 1024 for i in range(2000)]
        expected = b"".join(chunks)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run_writer, sender)
            for chunk in chunks:
                outbox.push(chunk)
                flusher.flush()
            assert len(outbox) > 0, "the socket took everything: the test proves nothing"
            received = await _read_exactly(receiver, len(expected))
            nursery.cancel_scope.cancel()
        assert received == expected


async def test_finish_sends_the_rest_then_ends_the_writer() -> None:
    sender, receiver = await _tcp_pair()
    async with sender, receiver:
        flusher = Flusher()
        outbox = Outbox(sender, flusher)
        payload = b"x" * (4 << 20)
        outbox.push(payload)
        outbox.finish()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run_writer, sender)
            received = await _read_exactly(receiver, len(payload))
        assert received == payload  # and the nursery ended: the writer returned


async def test_a_closed_outbox_never_writes_to_the_descriptor() -> None:
    sender, receiver = await _tcp_pair()
    async with sender, receiver:
        flusher = Flusher()
        outbox = Outbox(sender, flusher)
        outbox.close()
        outbox.push(b"late")
        flusher.flush()  # no descriptor any more: the bytes wait for a writer that never runs
        await sender.send_all(b"marker")
        assert await _read_exactly(receiver, 6) == b"marker"


async def test_streams_without_a_socket_such_as_tls_always_use_the_writer() -> None:
    left, right = trio.testing.memory_stream_pair()
    flusher = Flusher()
    outbox = Outbox(left, flusher)
    outbox.push(b"through the writer")
    flusher.flush()
    assert len(outbox) == len(b"through the writer")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.run_writer, left)
        assert await _read_exactly(right, 18) == b"through the writer"
        nursery.cancel_scope.cancel()
