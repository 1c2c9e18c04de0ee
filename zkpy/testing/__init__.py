"""Testing helpers: an in-process server for users' own tests; real ensembles of member
processes on free ports (`zkpy.testing.ensemble`, `zkpy.testing.ports`); the simulator, chaos
and the history checkers."""

from zkpy.testing.server import RunningServer, running_server

__all__ = ["RunningServer", "running_server"]
