"""zkpy: a ZooKeeper-style coordination service for Python, and its trio client.

async with zkpy.connect("127.0.0.1:2181") as zk:
    await zk.create("/app/config", b"v1", makepath=True)
    data, stat = await zk.get("/app/config")
"""

from zkpy import errors, security
from zkpy.client import (
    Client,
    ConnectionState,
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

State = ConnectionState

__version__ = "0.1.0"

__all__ = [
    "ACL",
    "CREATOR_ALL_ACL",
    "OPEN_ACL_UNSAFE",
    "READ_ACL_UNSAFE",
    "Client",
    "ConnectionState",
    "EventType",
    "Id",
    "Perm",
    "Pipeline",
    "Stat",
    "State",
    "Transaction",
    "WatchFuture",
    "WatchStream",
    "WatchedEvent",
    "__version__",
    "connect",
    "errors",
    "security",
]
