"""Error codes (ZooKeeper's numbers) and the exception hierarchy.

Every error a client can see has a numeric code that travels on the wire and an exception class
that the client raises. The numbers are ZooKeeper's, so that people who know ZooKeeper can read a
zkpy error code at a glance.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    """Numeric error codes, as in ZooKeeper's ``KeeperException.Code``."""

    OK = 0
    SYSTEM_ERROR = -1
    RUNTIME_INCONSISTENCY = -2
    DATA_INCONSISTENCY = -3
    CONNECTION_LOSS = -4
    MARSHALLING_ERROR = -5
    UNIMPLEMENTED = -6
    OPERATION_TIMEOUT = -7
    BAD_ARGUMENTS = -8
    NEW_CONFIG_NO_QUORUM = -13
    RECONFIG_IN_PROGRESS = -14
    UNKNOWN_SESSION = -12
    API_ERROR = -100
    NO_NODE = -101
    NO_AUTH = -102
    BAD_VERSION = -103
    NO_CHILDREN_FOR_EPHEMERALS = -108
    NODE_EXISTS = -110
    NOT_EMPTY = -111
    SESSION_EXPIRED = -112
    INVALID_CALLBACK = -113
    INVALID_ACL = -114
    AUTH_FAILED = -115
    SESSION_MOVED = -118
    NOT_READ_ONLY = -119
    NO_WATCHER = -121
    REQUEST_TIMEOUT = -122
    TOO_MANY_REQUESTS = -127  # a server-side limit was hit (ZooKeeper's THROTTLEDOP)


class ZkError(Exception):
    """Base class of every error zkpy raises for a ZooKeeper error code."""

    code: Code = Code.SYSTEM_ERROR

    def __init__(self, message: str = "", *, path: str | None = None) -> None:
        self.path = path
        text = message or self.code.name.replace("_", " ").lower()
        if path is not None:
            text = f"{text}: {path}"
        super().__init__(text)


class SystemZkError(ZkError):
    """A server-side problem (codes above -100): connection, marshalling, arguments."""

    code = Code.SYSTEM_ERROR


class ApiError(ZkError):
    """An error in the request's meaning (codes -100 and below): no node, bad version ..."""

    code = Code.API_ERROR


class RuntimeInconsistencyError(SystemZkError):
    """A committed transaction contradicts the member's own tree: a bug, never bad input."""

    code = Code.RUNTIME_INCONSISTENCY


class DataInconsistencyError(SystemZkError):
    """Replicas disagree about data (ZooKeeper's code; zkpy members do not raise it)."""

    code = Code.DATA_INCONSISTENCY


class ConnectionLossError(SystemZkError):
    """The connection broke before the reply came: the request may or may not have taken effect."""

    code = Code.CONNECTION_LOSS


class MarshallingError(SystemZkError):
    """A frame could not be decoded or had the wrong shape."""

    code = Code.MARSHALLING_ERROR


class UnimplementedError(SystemZkError):
    """The operation is not implemented by this server (ZooKeeper's code, kept for its number)."""

    code = Code.UNIMPLEMENTED


class OperationTimeoutError(SystemZkError):
    """An operation took too long on the server (ZooKeeper's code, kept for its number)."""

    code = Code.OPERATION_TIMEOUT


class BadArgumentsError(SystemZkError):
    """A malformed path, an oversize value, a bad version number or any other invalid argument."""

    code = Code.BAD_ARGUMENTS


class UnknownSessionError(SystemZkError):
    """The session is not known to the server (ZooKeeper's code, kept for its number)."""

    code = Code.UNKNOWN_SESSION


class NewConfigNoQuorumError(SystemZkError):
    """A reconfig was refused: the new membership's voters that the leader can reach now are
    not a quorum of it (start and sync the new members first)."""

    code = Code.NEW_CONFIG_NO_QUORUM


class ReconfigInProgressError(SystemZkError):
    """A reconfig was refused: another change of membership is still being committed."""

    code = Code.RECONFIG_IN_PROGRESS


class NoNodeError(ApiError):
    """The node named in the request does not exist."""

    code = Code.NO_NODE


class NoAuthError(ApiError):
    """The session's identities lack the permission the node's ACL asks for."""

    code = Code.NO_AUTH


class BadVersionError(ApiError):
    """A conditional write or check named a version the node no longer has."""

    code = Code.BAD_VERSION


class NoChildrenForEphemeralsError(ApiError):
    """An ephemeral node cannot have children: the create under it was refused."""

    code = Code.NO_CHILDREN_FOR_EPHEMERALS


class NodeExistsError(ApiError):
    """The node to create exists already."""

    code = Code.NODE_EXISTS


class NotEmptyError(ApiError):
    """A node with children cannot be deleted."""

    code = Code.NOT_EMPTY


class SessionExpiredError(ApiError):
    """The session has expired: its ephemerals are gone, and it cannot be used again."""

    code = Code.SESSION_EXPIRED


class InvalidCallbackError(ApiError):
    """ZooKeeper's code for an invalid callback; kept for its number."""

    code = Code.INVALID_CALLBACK


class InvalidACLError(ApiError):
    """The ACL is empty or names a scheme or identity the server refuses."""

    code = Code.INVALID_ACL


class AuthFailedError(ApiError):
    """The server refused the credentials of an auth request."""

    code = Code.AUTH_FAILED


class SessionMovedError(ApiError, ConnectionLossError):
    """The session was attached to another connection since this request was sent: the request
    was not applied. Also a `ConnectionLossError`, so that code that retries after a lost
    connection retries it; the client reconnects by itself."""

    code = Code.SESSION_MOVED


class NotReadOnlyError(ApiError):
    """A write or sync sent to a member in read-only mode (`zkpy.core.readonly`)."""

    code = Code.NOT_READ_ONLY


class NoWatcherError(ApiError):
    """No watch of the kind asked for is set on the path (from remove_watches)."""

    code = Code.NO_WATCHER


class RequestTimeoutError(ApiError):
    """The request was not answered in time (ZooKeeper's code, kept for its number)."""

    code = Code.REQUEST_TIMEOUT


class TooManyRequestsError(ApiError):
    """A server-side limit was hit, such as the most children one reply may list; retry later
    or ask for less."""

    code = Code.TOO_MANY_REQUESTS


class RolledBackError(ApiError):
    """In a failed multi: this operation was fine, but another one failed, so nothing was done."""

    code = Code.OK  # ZooKeeper reports rolled-back operations with code 0 and a RuntimeException


def _all_subclasses(cls: type[ZkError]) -> list[type[ZkError]]:
    found: list[type[ZkError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


_BY_CODE: dict[int, type[ZkError]] = {
    cls.code: cls for cls in _all_subclasses(ZkError) if cls.code not in (Code.OK,)
}
_BY_CODE[Code.SYSTEM_ERROR] = SystemZkError
_BY_CODE[Code.API_ERROR] = ApiError


def error_for_code(code: int, message: str = "", *, path: str | None = None) -> ZkError:
    """The exception for a wire error code; unknown codes become a plain `ZkError`."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = ZkError(message or f"error code {code}", path=path)
        return err
    return cls(message, path=path)
