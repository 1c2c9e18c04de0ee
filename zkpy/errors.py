"""The errors zkpy raises, one class per ZooKeeper error code.

Catch them as ``zkpy.errors.NoNodeError`` and so on. Every class has a ``code`` attribute with
ZooKeeper's number (``NoNodeError.code == -101``). The hierarchy::

    ZkError
    ├── SystemZkError          codes -1 .. -99: the request could not be carried out
    │   ├── ConnectionLossError (-4), MarshallingError (-5), UnimplementedError (-6),
    │   ├── OperationTimeoutError (-7), BadArgumentsError (-8), UnknownSessionError (-12),
    │   ├── NewConfigNoQuorumError (-13), ReconfigInProgressError (-14)
    │   └── RuntimeInconsistencyError (-2), DataInconsistencyError (-3)
    └── ApiError               codes -100 and below: the request was understood and refused
        ├── NoNodeError (-101), NoAuthError (-102), BadVersionError (-103),
        ├── NoChildrenForEphemeralsError (-108), NodeExistsError (-110), NotEmptyError (-111),
        ├── SessionExpiredError (-112), InvalidACLError (-114), AuthFailedError (-115),
        ├── SessionMovedError (-118), NoWatcherError (-121), TooManyRequestsError (-127)
        └── RolledBackError    (in a failed multi, an operation that was undone)

SessionMovedError is a ConnectionLossError too: a write sent on a connection that its session
has left (the client reconnected elsewhere meanwhile) is refused, not applied, and a retry on
the new connection is what the caller wants.
"""

import trio

from zkpy.core.errors import (
    ApiError,
    AuthFailedError,
    BadArgumentsError,
    BadVersionError,
    Code,
    ConnectionLossError,
    DataInconsistencyError,
    InvalidACLError,
    InvalidCallbackError,
    MarshallingError,
    NewConfigNoQuorumError,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    NotReadOnlyError,
    NoWatcherError,
    OperationTimeoutError,
    ReconfigInProgressError,
    RequestTimeoutError,
    RolledBackError,
    RuntimeInconsistencyError,
    SessionExpiredError,
    SessionMovedError,
    SystemZkError,
    TooManyRequestsError,
    UnimplementedError,
    UnknownSessionError,
    ZkError,
    error_for_code,
)


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside (possibly nested) exception groups, or the group itself when
    there are several (cancellations do not count). trio wraps errors that leave a nursery in
    groups; a caller of a context manager wants to catch `NoNodeError`, not a group of one."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else group


__all__ = [
    "ApiError",
    "AuthFailedError",
    "BadArgumentsError",
    "BadVersionError",
    "Code",
    "ConnectionLossError",
    "DataInconsistencyError",
    "InvalidACLError",
    "InvalidCallbackError",
    "MarshallingError",
    "NewConfigNoQuorumError",
    "NoAuthError",
    "NoChildrenForEphemeralsError",
    "NoNodeError",
    "NoWatcherError",
    "NodeExistsError",
    "NotEmptyError",
    "NotReadOnlyError",
    "OperationTimeoutError",
    "ReconfigInProgressError",
    "RequestTimeoutError",
    "RolledBackError",
    "RuntimeInconsistencyError",
    "SessionExpiredError",
    "SessionMovedError",
    "SystemZkError",
    "TooManyRequestsError",
    "UnimplementedError",
    "UnknownSessionError",
    "ZkError",
    "error_for_code",
    "single_error",
]
