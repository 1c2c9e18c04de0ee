"""Settings of one member, with ZooKeeper-like defaults and the limits that protect it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zkpy.core.prep import DEFAULT_MAX_DATA_BYTES
from zkpy.wire.frames import DEFAULT_MAX_FRAME


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path = Path("zkpy-data")
    host: str = "127.0.0.1"
    client_port: int = 2181
    server_id: int = 1
    tick_ms: int = 2000  # sessions may last 2 to 20 ticks, as in ZooKeeper
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    max_frame: int = DEFAULT_MAX_FRAME
    max_connections: int = 4096
    max_connections_per_address: int = 1024
    max_in_flight_per_connection: int = 10_000
    max_outbox_bytes: int = 64 << 20  # a client that stops reading is cut off past this
    max_watches_per_session: int = 100_000
    handshake_timeout_s: float = 10.0
    checkpoint_every: int = 20_000  # applied txns between checkpoints of the tree
    change_log_capacity: int = 100_000  # recent changes kept to replay watches on reconnect
    fsync: bool = True  # False is UNSAFE and only for tests that prove lost writes are detected

    def __post_init__(self) -> None:
        if not 0 < self.server_id < 256:
            raise ValueError("server id must be between 1 and 255")
        if self.tick_ms <= 0:
            raise ValueError("tick must be positive")
        if self.max_frame < self.max_data_bytes:
            raise ValueError("the frame limit must hold the largest value")
