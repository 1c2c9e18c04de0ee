"""A userspace TCP proxy per directed peer link, for the chaos nemesis to cut, delay and reset.

Member A reaches member B through the proxy of link (A, B); a member's own connection to B
carries A's messages to B only, so cutting link (A, B) is a one-way cut.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import trio

log = logging.getLogger("zkpy.chaos.proxy")


@dataclass(slots=True)
class Link:
    """One directed link, member `source` to member `target`, and its current fault."""

    source: int
    target: int
    listen_port: int
    target_port: int
    blocked: bool = False
    delay_s: float = 0.0
    scopes: set[trio.CancelScope] = field(default_factory=set)
    resets: int = 0

    def reset(self) -> None:
        """Break every connection on this link (what a lost packet does to a TCP stream)."""
        self.resets += 1
        for scope in list(self.scopes):
            scope.cancel()

    def block(self) -> None:
        """Cut the link: break its connections and refuse new ones until healed."""
        self.blocked = True
        self.reset()

    def heal(self) -> None:
        """Undo `block` and any delay."""
        self.blocked = False
        self.delay_s = 0.0


class LinkProxy:
    """Every link of an ensemble, served from this process."""

    def __init__(self) -> None:
        self.links: dict[tuple[int, int], Link] = {}

    def add(self, source: int, target: int, listen_port: int, target_port: int) -> Link:
        """A link from `source` to `target`: listens on `listen_port`, forwards to
        `target_port`."""
        link = Link(source, target, listen_port, target_port)
        self.links[(source, target)] = link
        return link

    def heal_all(self) -> None:
        """Heal every link."""
        for link in self.links.values():
            link.heal()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve every link until cancelled; started once all of them listen."""
        async with trio.open_nursery() as nursery:
            for link in self.links.values():
                await nursery.start(self._serve, link)
            task_status.started()

    async def _serve(self, link: Link, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(link.listen_port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(functools.partial(self._connection, link), listeners)

    async def _connection(self, link: Link, inbound: trio.abc.Stream) -> None:
        if link.blocked:
            await trio.aclose_forcefully(inbound)
            return
        try:
            outbound = await trio.open_tcp_stream("127.0.0.1", link.target_port)
        except OSError:
            await trio.aclose_forcefully(inbound)
            return
        with trio.CancelScope() as scope:
            link.scopes.add(scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, link, inbound, outbound, nursery.cancel_scope)
                    nursery.start_soon(self._pump, link, outbound, inbound, nursery.cancel_scope)
            finally:
                link.scopes.discard(scope)
        await trio.aclose_forcefully(inbound)
        await trio.aclose_forcefully(outbound)

    async def _pump(
        self,
        link: Link,
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        done: trio.CancelScope,
    ) -> None:
        try:
            while True:
                data = await source.receive_some(1 << 16)
                if not data or link.blocked:
                    break
                if link.delay_s:
                    await trio.sleep(link.delay_s)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        done.cancel()
