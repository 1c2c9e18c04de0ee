"""Znode path rules: validation, parent and name, joining, and the sequential suffix."""

from __future__ import annotations

import re

from zkpy.core.errors import BadArgumentsError

SEQUENCE_DIGITS = 10
MAX_PATH_BYTES = 4096


# control characters, and the ranges ZooKeeper refuses (surrogates, private use, specials)
_BAD_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\uf8ff\ufff0-\uffff]")
# A path that is certainly valid: "/"-separated segments of allowed characters, none of them
# empty, "." or "..". Most paths match and skip the detailed checks (which explain a refusal).
_PLAIN_PATH = re.compile(
    "(?:/(?!\\.\\.?(?:/|$))[^/\x00-\x1f\x7f-\x9f\ud800-\uf8ff\ufff0-\uffff]+)+"
)
# no UTF-8 encoding of this many characters (4 bytes at most each) can be over MAX_PATH_BYTES
_SURELY_SHORT = 1024


def validate(path: object, *, sequential: bool = False) -> str:
    """Return `path` if it is a valid absolute znode path, else raise `BadArgumentsError`.

    A sequential create may end in ``/`` (``/queue/``): the server then appends only the counter.
    """
    if type(path) is str and len(path) <= _SURELY_SHORT and _PLAIN_PATH.fullmatch(path):
        return path
    return _checked(path, sequential)


def _checked(path: object, sequential: bool) -> str:
    """`validate` step by step, saying what is wrong."""
    if not isinstance(path, str):
        raise BadArgumentsError(f"path must be a string, not {type(path).__name__}")
    if not path.startswith("/"):
        raise BadArgumentsError("path must start with '/'", path=path)
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadArgumentsError(f"path longer than {MAX_PATH_BYTES} bytes", path=path[:64])
    if path == "/":
        if sequential:
            return path
        return path
    body = path[1:-1] if sequential and path.endswith("/") else path[1:]
    for segment in body.split("/"):
        if segment == "":
            raise BadArgumentsError("empty path segment", path=path)
        if segment in (".", ".."):
            raise BadArgumentsError("relative path segment", path=path)
    if _BAD_CHARACTER.search(path):
        raise BadArgumentsError("path contains a control or reserved character", path=repr(path))
    return path


def parent(path: str) -> str:
    """The parent of a valid path other than ``/``."""
    cut = path.rfind("/")
    return "/" if cut == 0 else path[:cut]


def basename(path: str) -> str:
    """The last component of a valid path (empty for ``/``)."""
    return path[path.rfind("/") + 1 :]


def join(parent_path: str, name: str) -> str:
    """The path of child `name` under `parent_path`."""
    return parent_path + name if parent_path.endswith("/") else f"{parent_path}/{name}"


def with_sequence(path: str, counter: int) -> str:
    """The name of a sequential node: the requested path plus a 10-digit counter."""
    return f"{path}{counter:0{SEQUENCE_DIGITS}d}"


def ancestors(path: str) -> list[str]:
    """Every proper ancestor of `path` from the root down, ``/`` excluded."""
    out: list[str] = []
    cut = path.find("/", 1)
    while cut != -1:
        out.append(path[:cut])
        cut = path.find("/", cut + 1)
    return out


def is_within(path: str, root: str) -> bool:
    """True when `path` is `root` or lies below it."""
    if root == "/":
        return True
    return path == root or path.startswith(root + "/")
