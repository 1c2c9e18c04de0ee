"""Testing helpers: an in-process server for users' own tests (and, later, the simulator)."""

from zkpy.testing.server import RunningServer, running_server

__all__ = ["RunningServer", "running_server"]
