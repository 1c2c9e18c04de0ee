"""The type and range of every member setting, checked in one place.

`check_settings(config)` runs when a `ServerConfig` is made, whether from an ensemble file, the
command line or a test, and raises `ValueError` naming the setting, what it must be and what it
was ("tick_ms must be a whole number from 1 to 60000, not 'abc'"); `load_config` puts the
file's name in front. A setting without an entry in `SETTINGS` is still checked for the type of
its default (a whole number at least 0, a number at least 0, true or false, or a string).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zkpy._net.receiver import MAX_SPIN_S
from zkpy.server.sched import MAX_SLICE_US
from zkpy.server.wal import MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES

MAX_PORT = 65535
MAX_FRAME_LIMIT = (1 << 31) - 1  # the 4-byte length prefix of a frame, as a signed size


@dataclass(frozen=True, slots=True)
class Setting:
    """What one setting may be: `kind` int, float, bool, str or Path; a range for numbers;
    the allowed values for a str with `choices`; None too if `optional`."""

    kind: type
    low: float = 0
    high: float = math.inf
    choices: tuple[str, ...] = ()
    unit: str = ""
    optional: bool = False

    def check(self, name: str, value: object) -> None:
        """Raise ValueError, naming `name` and what it may be, unless `value` fits."""
        if value is None and self.optional:
            return
        if not self._well_typed(value):
            raise ValueError(f"{name} must be {self.describe()}, not {value!r}")
        if self.kind in (int, float) and not self.low <= value <= self.high:  # type: ignore[operator]
            raise ValueError(f"{name} must be {self.describe()}, not {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{name} must be {self.describe()}, not {value!r}")

    def _well_typed(self, value: object) -> bool:
        if self.kind is int:
            return type(value) is int
        if self.kind is float:  # TOML writes 10 for 10.0
            return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
        if self.kind is Path:
            return isinstance(value, Path)
        return type(value) is self.kind

    def describe(self) -> str:
        """What the setting may be, in words for an error message."""
        unit = f" {self.unit}" if self.unit else ""
        high = "" if self.high == math.inf else f" to {_number(self.high)}"
        if self.kind is int and self.optional:
            return f"a whole number{unit} from {_number(self.low)}{high}, or none"
        if self.kind is int:
            return f"a whole number{unit} from {_number(self.low)}{high}"
        if self.kind is float:
            return f"a number{unit} from {_number(self.low)}{high}"
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        if self.kind is Path:
            return "a directory path"
        return "a string"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _int(low: int, high: float = math.inf, unit: str = "") -> Setting:
    return Setting(int, low, high, unit=unit)


SETTINGS: dict[str, Setting] = {
    "data_dir": Setting(Path),
    "host": Setting(str),
    "client_port": _int(0, MAX_PORT),  # 0: any free port
    "zk_port": Setting(int, 0, MAX_PORT, optional=True),  # None: no ZooKeeper listener
    "admin_port": _int(0, MAX_PORT),  # 0: no admin port
    "server_id": _int(1, 255),
    "secret": Setting(str),
    "super_digest": Setting(str),
    "sasl_users_file": Setting(str),
    "sasl_super_user": Setting(str),
    "tls_cert": Setting(str),
    "tls_key": Setting(str),
    "tls_ca": Setting(str),
    "tls_client_auth": Setting(str, choices=("none", "optional", "required")),
    "peer_tls": Setting(bool),
    "tick_ms": _int(1, 60_000),
    "peer_tick_ms": _int(1, 60_000),
    "init_limit": _int(1, 1_000_000),
    "sync_limit": _int(1, 1_000_000),
    "max_data_bytes": _int(0, 1 << 30),
    "max_frame": _int(1024, MAX_FRAME_LIMIT),
    "max_peer_frame": _int(1 << 20, MAX_FRAME_LIMIT),
    "max_connections": _int(1, 10_000_000),
    "max_connections_per_address": _int(1, 10_000_000),
    "max_connections_in_handshake": _int(1, 10_000_000),
    "max_in_flight_per_connection": _int(1, 10_000_000),
    "max_outbox_bytes": _int(1024, 1 << 40),
    "max_watches_per_session": _int(0, 1 << 40),
    "max_total_outbox_bytes": _int(1024, 1 << 40, unit="of bytes"),
    "max_total_watch_bytes": _int(1024, 1 << 40, unit="of bytes"),
    "max_total_pending_bytes": _int(1024, 1 << 40, unit="of bytes"),
    "max_children_per_reply": _int(1, 1 << 40),
    "handshake_timeout_s": Setting(float, 0.001, 3600, unit="of seconds"),
    "checkpoint_every": _int(1, 1 << 40),
    "sync_history": _int(0, 1 << 40),
    "sync_history_bytes": _int(0, 1 << 50, unit="of bytes"),
    "log_segment_bytes": _int(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES, unit="of bytes"),
    "change_log_capacity": _int(0, 1 << 40),
    "spin_before_wait_us": _int(0, int(MAX_SPIN_S * 1e6), unit="of microseconds"),
    "stay_awake_us": _int(0, int(MAX_SPIN_S * 1e6), unit="of microseconds"),
    "container_check_interval_ms": _int(1, 1 << 40, unit="of milliseconds"),
    "read_only_mode": Setting(bool),
    "read_only_after_ms": _int(0, 1 << 40, unit="of milliseconds"),
    "yield_background_work": Setting(bool),
    "background_slice_us": _int(0, MAX_SLICE_US, unit="of microseconds"),
    "fsync": Setting(bool),
}


def setting_for(field: dataclasses.Field[Any]) -> Setting:
    """`field`'s entry in SETTINGS, or one made from the type of its default."""
    found = SETTINGS.get(field.name)
    if found is not None:
        return found
    default = field.default
    if isinstance(default, bool):
        return Setting(bool)
    if isinstance(default, int):
        return Setting(int)
    if isinstance(default, float):
        return Setting(float)
    if isinstance(default, str):
        return Setting(str)
    if isinstance(default, Path):
        return Setting(Path)
    raise TypeError(f"no check for the setting {field.name!r}: add it to SETTINGS")


def check_settings(config: object) -> None:
    """Check every field of a ServerConfig except `members` (checked where it is read)."""
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        if field.name != "members":
            setting_for(field).check(field.name, getattr(config, field.name))
