"""The zkpy client: `connect`, `Client`, watches and connection states."""

from zkpy.client.client import Client, ConnectionState, Pipeline, Transaction, connect, parse_hosts
from zkpy.client.streams import Feed, WatchFuture, WatchStream

__all__ = [
    "Client",
    "ConnectionState",
    "Feed",
    "Pipeline",
    "Transaction",
    "WatchFuture",
    "WatchStream",
    "connect",
    "parse_hosts",
]
