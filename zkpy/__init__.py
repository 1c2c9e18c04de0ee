"""zkpy: a ZooKeeper-style coordination service for Python, and its client (trio or asyncio).

async with zkpy.connect("127.0.0.1:2181") as zk:
    await zk.create("/app/config", b"v1", makepath=True)
    data, stat = await zk.get("/app/config")
"""

from zkpy import errors, security
from zkpy.client import (
    Client,
    ConnectionState,
    Feed,
    Pipeline,
    Transaction,
    WatchFuture,
    WatchStream,
    connect,
)
from zkpy.core.types import (
    ACL,
    CREATOR_ALL_ACL,
    OPEN_ACL_UNSAFE,
    READ_ACL_UNSAFE,
    EventType,
    Id,
    Perm,
    Stat,
    WatchedEvent,
)
from zkpy.retry import Retry

State = ConnectionState

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`zkpy.sync` and `zkpy.tls` after a plain `import zkpy`, imported on first use: the
    blocking client starts nothing until it is used, and TLS needs `ssl` only where it is used."""
    if name in ("sync", "tls"):
        import importlib

        return importlib.import_module(f"zkpy.{name}")
    raise AttributeError(f"module 'zkpy' has no attribute {name!r}")


def compiled() -> bool:
    """Whether this zkpy is the compiled build (``ZKPY_COMPILE=1 pip install .``: the request
    path compiled by mypyc, see setup.py) rather than pure Python."""
    from zkpy.zab import replica

    return not replica.__file__.endswith(".py")


__all__ = [
    "ACL",
    "CREATOR_ALL_ACL",
    "OPEN_ACL_UNSAFE",
    "READ_ACL_UNSAFE",
    "Client",
    "ConnectionState",
    "EventType",
    "Feed",
    "Id",
    "Perm",
    "Pipeline",
    "Retry",
    "Stat",
    "State",
    "Transaction",
    "WatchFuture",
    "WatchStream",
    "WatchedEvent",
    "__version__",
    "compiled",
    "connect",
    "errors",
    "security",
]
