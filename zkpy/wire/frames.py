"""Length-prefixed framing: a 4-byte big-endian length, then that many bytes of payload.

Sans-I/O: feed received bytes in, get whole frames out. A length over the limit is refused as
soon as the 4-byte prefix arrives, before any of the body is buffered.
"""

from __future__ import annotations

import struct

HEADER_BYTES = 4
_LENGTH = struct.Struct(">I")
DEFAULT_MAX_FRAME = (1 << 20) + (64 << 10)  # a 1 MiB value plus room for path and envelope


class FrameTooLargeError(ValueError):
    """A frame's length prefix is over the agreed limit: the stream cannot be read past it."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes is over the limit of {limit}")
        self.length = length
        self.limit = limit


def encode_frame(payload: bytes) -> bytes:
    """`payload` with its 4-byte big-endian length in front."""
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


class FrameDecoder:
    """Cuts a received byte stream into frames, refusing a length over `max_frame`."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._error: FrameTooLargeError | None = None

    @property
    def error(self) -> FrameTooLargeError | None:
        """Set once an oversize length has been seen; the stream cannot be read past it."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a whole frame (a half-sent frame shows here)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add received bytes; return every frame now complete, in order.

        An oversize length raises FrameTooLargeError, but only after the complete frames before
        it have been returned (the error comes on the next call).

        Runs once per received chunk on every connection, so it is written for speed: lengths
        are read with one `struct` call, and a chunk that arrives with nothing buffered is cut
        into frames where it lies (only a trailing partial frame is copied into the buffer).
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        if buffer:
            buffer += data
            data = buffer
        frames: list[bytes] = []
        start = 0
        end = len(data)
        limit = self.max_frame
        read_length = _LENGTH.unpack_from
        while end - start >= HEADER_BYTES:
            (length,) = read_length(data, start)
            if length > limit:
                self._error = FrameTooLargeError(length, limit)
                if not frames:
                    raise self._error
                break
            stop = start + HEADER_BYTES + length
            if stop > end:
                break
            frames.append(bytes(data[start + HEADER_BYTES : stop]))
            start = stop
        if buffer:
            del buffer[:start]
        elif start < end:
            buffer += memoryview(data)[start:]
        return frames
