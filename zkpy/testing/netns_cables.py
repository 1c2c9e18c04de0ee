"""Cables with latency for `zkpy.testing.netns` on kernels without netem: each cable is a pair
of TAP devices, one end on the bridge and one in a host's namespace, and this process copies
Ethernet frames between the two ends, holding those bound into the host for a delay.

    python -m zkpy.testing.netns_cables OUTER1:INNER1 OUTER2:INNER2 ...

opens (creates) the TAP devices, prints `ready`, then reads delays in milliseconds, one per
line, from standard input, answering each with `ok`; it exits when standard input closes, so a
test that dies takes its cables with it. Moving a TAP device into a namespace keeps it attached
to the descriptor opened here. A frame that meets an end that is down (`ip link set down`) is
dropped, as on a cut cable.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import selectors
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536


def open_tap(name: str) -> int:
    """A non-blocking descriptor of the TAP device `name` (created if absent)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def _write(fd: int, frame: bytes) -> None:
    """Write one frame; drop it where the far end is down or full."""
    try:
        os.write(fd, frame)
    except OSError:
        return


class Cables:
    """The frame copier; see the module docstring."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.selector = selectors.DefaultSelector()
        for outer, inner in pairs:
            outer_fd, inner_fd = open_tap(outer), open_tap(inner)
            # (the other end, whether frames this way go into the host and wait the delay)
            self.selector.register(outer_fd, selectors.EVENT_READ, (inner_fd, True))
            self.selector.register(inner_fd, selectors.EVENT_READ, (outer_fd, False))
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
        self.delay_s = 0.0
        self.held: list[tuple[float, int, int, bytes]] = []  # (due, order, fd, frame)
        self.order = 0
        self.commands = b""

    def run(self) -> None:
        """Copy frames until standard input closes."""
        print("ready", flush=True)
        while True:
            timeout = max(0.0, self.held[0][0] - time.monotonic()) if self.held else None
            for key, _events in self.selector.select(timeout):
                if key.data is None:
                    if not self._command():
                        return
                else:
                    self._copy(key.fd, *key.data)
            now = time.monotonic()
            while self.held and self.held[0][0] <= now:
                _due, _order, fd, frame = heapq.heappop(self.held)
                _write(fd, frame)

    def _command(self) -> bool:
        """Read delay commands; False once standard input is closed."""
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            return False
        self.commands += chunk
        while b"\n" in self.commands:
            line, self.commands = self.commands.split(b"\n", 1)
            self.delay_s = float(line) / 1000
            print("ok", flush=True)
        return True

    def _copy(self, source: int, target: int, delayed: bool) -> None:
        """Move every frame waiting on `source` towards `target`."""
        while True:
            try:
                frame = os.read(source, MAX_FRAME)
            except OSError:  # nothing more waiting (or the end went down)
                return
            if delayed and self.delay_s > 0:
                self.order += 1
                heapq.heappush(
                    self.held, (time.monotonic() + self.delay_s, self.order, target, frame)
                )
            else:
                _write(target, frame)


def main(arguments: list[str]) -> None:
    """Run the cables named OUTER:INNER in `arguments`."""
    pairs = [(outer, inner) for outer, inner in (argument.split(":") for argument in arguments)]
    Cables(pairs).run()


if __name__ == "__main__":
    main(sys.argv[1:])
