"""The errors the recipes raise (zkpy's own errors, e.g. `SessionExpiredError`, pass through)."""

from __future__ import annotations


class RecipeError(Exception):
    """Base class of the errors raised by the recipes themselves."""


class LockLostError(RecipeError):
    """The contender znode of a lock, lease or candidacy vanished while we waited or held it
    (deleted by someone else, or gone with the session)."""


class NotHeldError(RecipeError):
    """An operation that needs the lock (release, a guarded write) was made without holding it."""


class AlreadyHeldError(RecipeError, RuntimeError):
    """The task already holds (or is acquiring) this lock path on this client.

    The locks are not reentrant: a second acquisition by the same task would wait for itself
    forever, so it fails at once instead.
    """


class BarrierMismatchError(RecipeError):
    """Participants disagree on a shared parameter (a semaphore's `max_leases`)."""
