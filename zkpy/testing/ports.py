"""Free loopback ports for test and benchmark ensembles: the one helper everything uses."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection

# Ports below the kernel's ephemeral range, so that no outgoing connection (a peer link, a
# client) can be given the port of a member that is down at the moment and is to restart.
PORT_RANGE = (12000, 32000)
ATTEMPTS = 200


def free_ports(
    count: int, *, consecutive: bool = False, besides: Collection[int] = ()
) -> list[int]:
    """`count` loopback ports that are free now, outside the ephemeral range and not in
    `besides` (ports already handed out); with `consecutive`, a run of adjacent ports (for
    `zkpy ensemble`, which numbers them itself).

    Every candidate is bound at once and released before returning, so the ports differ from
    each other; nothing holds them afterwards, and another process may take one in between."""
    low, high = PORT_RANGE
    taken = set(besides)
    pool = [port for port in range(low, high) if port not in taken]
    for _attempt in range(ATTEMPTS):
        if consecutive:
            base = random.randrange(low, high - count)
            candidates = list(range(base, base + count))
            if taken.intersection(candidates):
                continue
        else:
            candidates = random.sample(pool, count)
        if all_free(candidates):
            return candidates
    raise RuntimeError(f"no {count} free loopback ports found in {low}-{high}")


def free_port() -> int:
    """One loopback port that is free now (see `free_ports`)."""
    return free_ports(1)[0]


def all_free(ports: list[int]) -> bool:
    """Whether every port in `ports` can be bound on loopback right now, all at once."""
    held: list[socket.socket] = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for sock in held:
            sock.close()


def port_is_free(port: int) -> bool:
    """Whether `port` can be bound on loopback now (with SO_REUSEADDR, as a member binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
