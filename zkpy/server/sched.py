"""A longer scheduler time slice for the member's thread while it does work no client waits on.

Linux's fair scheduler (EEVDF) gives each task a time slice, and since 6.12 a task may ask for
its own: `sched_setattr`'s `sched_runtime` under SCHED_OTHER, 0.1 to 100 ms, no privileges
needed. A long slice makes a late virtual deadline: a woken process with the default slice is
picked before the task, and `sched_yield` pushes the task's deadline back by the whole long
slice. A follower lengthens its slice around a batch of background work and asks for the
default again once the batch is carried out (docs/decisions/0042); a thread started meanwhile
(one of trio's workers) gets the default (SCHED_FLAG_RESET_ON_FORK).

Python's `os` module has no `sched_setattr`; it is called through `ctypes`. Where the call is
missing (another OS or architecture) or refused (a kernel before 6.12 ignores the slice, an
older one may refuse the call), the slice is left alone.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

# (sched_setattr, sched_getattr) system call numbers by machine
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}
_FAIR_POLICIES = (0, 3)  # SCHED_OTHER, SCHED_BATCH: the policies whose slice is sched_runtime
_RESET_ON_FORK = 0x01  # threads started meanwhile (trio's workers) get the default slice
MAX_SLICE_US = 100_000  # the kernel's upper bound for a fair task's slice


class _SchedAttr(ctypes.Structure):
    """`struct sched_attr` as of Linux 5.3 (with the utilization clamps)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    ]


class ThreadSlice:
    """The time slice of the calling thread: `lengthen` asks for `long_us`, `restore` for the
    default. Does nothing if `long_us` is 0, or where slices cannot be set (`supported`)."""

    def __init__(self, long_us: int, machine: str | None = None) -> None:
        self._long_ns = long_us * 1000
        self._lengthened = False
        self._attr = _SchedAttr()
        self._syscall: Callable[..., int] | None = None
        calls = _SYSCALLS.get(machine or platform.machine())
        self._setattr, self._getattr = calls or (0, 0)
        if long_us and calls is not None and sys.platform == "linux":
            self._syscall = ctypes.CDLL(None, use_errno=True).syscall
            if self.read_ns() is not None and self._attr.sched_policy not in _FAIR_POLICIES:
                self._syscall = None  # a real-time thread: its sched_runtime means something else

    @property
    def supported(self) -> bool:
        """Whether `lengthen` asks the kernel for anything here."""
        return self._syscall is not None

    def read_ns(self) -> int | None:
        """The calling thread's slice in nanoseconds (None where it cannot be read)."""
        if self._syscall is None:
            return None
        size = ctypes.sizeof(self._attr)
        if self._syscall(self._getattr, 0, ctypes.byref(self._attr), size, 0) != 0:
            self._give_up()
            return None
        return int(self._attr.sched_runtime)

    def lengthen(self) -> None:
        """Ask for the long slice (once, until `restore`)."""
        if self._syscall is not None and not self._lengthened:
            self._lengthened = self._set(self._long_ns, _RESET_ON_FORK)

    def restore(self) -> None:
        """Ask for the default slice again, if `lengthen` took another."""
        if self._lengthened:
            self._lengthened = False
            self._set(0, 0)  # 0: the kernel's default

    def _set(self, slice_ns: int, flags: int) -> bool:
        assert self._syscall is not None
        attr = self._attr
        attr.size = ctypes.sizeof(attr)
        attr.sched_flags = flags
        attr.sched_runtime = slice_ns
        if self._syscall(self._setattr, 0, ctypes.byref(attr), 0) != 0:
            self._give_up()
            return False
        return True

    def _give_up(self) -> None:
        log.info(
            "this system does not let a thread set its scheduler slice (errno %d): "
            "background_slice_us has no effect",
            ctypes.get_errno(),
        )
        self._syscall = None
