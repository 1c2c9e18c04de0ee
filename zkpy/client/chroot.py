"""A chroot: the client's paths taken relative to one znode, as in ZooKeeper and kazoo.

``"h1:2181,h2:2181/app"`` connects to h1 and h2 with the chroot ``/app``: the client's ``/`` is
the server's ``/app`` and its ``/config`` the server's ``/app/config``. Requests are rewritten on
their way out and paths that come back (created names, sync paths, watch events, multi results)
on their way in, in one place: the connection machine (`zkpy.client.connection`), which encodes
every request and decodes every reply. Errors keep the path as the caller gave it. The chroot
znode itself must exist before anything is created in it.

Sans-I/O, as the machine that uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

from zkpy.core import paths
from zkpy.core.errors import ZkError
from zkpy.core.requests import CreateRequest, MultiRequest, Request, SetWatchesRequest, SyncRequest
from zkpy.core.types import WatchedEvent

R = TypeVar("R")


def split_chroot(hosts: str | Sequence[str]) -> tuple[str, str | None]:
    """A connection string split into its servers and its chroot (None if it has none, or ``/``).

    The chroot starts at the first ``/``: ``"h1:2181,h2:2181/app"`` is ``("h1:2181,h2:2181",
    "/app")``. A list of servers may carry it on its last entry. A chroot that is not a valid
    znode path (``/app/``, ``/a//b``) raises ValueError.
    """
    text = hosts if isinstance(hosts, str) else ",".join(hosts)
    servers, slash, rest = text.partition("/")
    if not slash:
        return text, None
    chroot = "/" + rest
    try:
        paths.validate(chroot)
    except ZkError as err:
        raise ValueError(f"bad chroot {chroot!r} in the connection string: {err}") from None
    return servers, None if chroot == "/" else chroot


class Chroot:
    """Rewrites the paths of one session's traffic between the client's and the server's view."""

    def __init__(self, root: str) -> None:
        self.root = paths.validate(root)
        self._prefix = root + "/"

    def server_path(self, path: str) -> str:
        """The server's name for the client's `path`."""
        return self.root if path == "/" else self.root + path

    def client_path(self, path: str) -> str:
        """The client's name for the server's `path` (unchanged if outside the chroot)."""
        if path == self.root:
            return "/"
        if path.startswith(self._prefix):
            return path[len(self.root) :]
        return path

    def outgoing(self, request: Request) -> Request:
        """`request` with every path it carries in the server's terms."""
        kind = type(request)
        if kind is MultiRequest:
            assert isinstance(request, MultiRequest)
            return MultiRequest(tuple(self._outgoing_op(op) for op in request.ops))
        if kind is SetWatchesRequest:
            assert isinstance(request, SetWatchesRequest)
            return self._outgoing_watches(request)
        return self._outgoing_op(request)

    def _outgoing_op(self, request: R) -> R:
        """A request of one path (or none) in the server's terms: the same kind, re-rooted."""
        path = getattr(request, "path", None)
        if type(path) is not str:
            return request
        if path == "/" and isinstance(request, CreateRequest) and request.sequential:
            path = self._prefix  # the counter alone, right below the chroot
        else:
            path = self.server_path(path)
        return cast(R, replace(cast(Any, request), path=path))

    def _outgoing_watches(self, request: SetWatchesRequest) -> SetWatchesRequest:
        def rooted(names: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(self.server_path(name) for name in names)

        return SetWatchesRequest(
            request.last_zxid,
            rooted(request.data),
            rooted(request.exist),
            rooted(request.child),
            rooted(request.persistent),
            rooted(request.recursive),
        )

    def incoming_result(self, request: Request, result: Any) -> Any:
        """A reply's result with the paths it holds in the client's terms."""
        kind = type(request)
        if kind is CreateRequest:
            created, stat = result
            return self.client_path(created), stat
        if kind is SyncRequest:
            return self.client_path(result)
        if kind is MultiRequest and type(result) is list:
            assert isinstance(request, MultiRequest)
            return [
                self.client_path(item) if type(op) is CreateRequest and type(item) is str else item
                for op, item in zip(request.ops, result, strict=True)
            ]
        return result

    def incoming_event(self, event: WatchedEvent) -> WatchedEvent:
        """A watch event with its path in the client's terms."""
        return WatchedEvent(event.type, self.client_path(event.path), event.zxid)
