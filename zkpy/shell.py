"""`zkpy shell`: zkCli.sh's commands over one session, so that ephemerals, watches and
``addauth`` last as long as the shell does.

`Shell` parses and runs one command line at a time against a `zkpy.sync.Client` and writes to
the streams it is given, so it runs (and is tested) without a terminal; `run_shell` drives it
from a terminal (readline history and completion), from piped standard input, or for one
command given on the command line.
"""

from __future__ import annotations

import getopt
import json
import os
import queue
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import trio

from zkpy import security
from zkpy.client.client import ConnectionState
from zkpy.core import paths, tree
from zkpy.core.errors import BadArgumentsError, NoNodeError, NoWatcherError, ZkError
from zkpy.core.tree import QUOTA_LIMITS, QUOTA_PATH, QUOTA_STATS, format_quota
from zkpy.core.types import ACL, Stat, WatchedEvent
from zkpy.sync import Client

DataFormat = Literal["auto", "hex", "raw"]
DATA_FORMATS: tuple[DataFormat, ...] = ("auto", "hex", "raw")
HISTORY_ENV = "ZKPY_HISTORY"
WATCH_MODES = ("PERSISTENT", "PERSISTENT_RECURSIVE")
# setquota's and delquota's flags: the limit each one sets, in ZooKeeper's StatsTrack keys
QUOTA_FLAGS = {"n": "count", "b": "bytes", "N": "countHardLimit", "B": "byteHardLimit"}


class UsageError(Exception):
    """A command line the shell cannot run as written (unknown command, bad flag, bad value)."""


@dataclass(frozen=True, slots=True)
class Spec:
    """How a command is called: its flags (getopt letters), how many arguments, its usage."""

    flags: str
    min_args: int
    max_args: int
    usage: str


COMMANDS: dict[str, Spec] = {
    "ls": Spec("Rsw", 1, 1, "ls [-R] [-s] [-w] path"),
    "get": Spec("sw", 1, 1, "get [-s] [-w] path"),
    "stat": Spec("w", 1, 1, "stat [-w] path"),
    "create": Spec("escpt:", 1, 3, "create [-e] [-s] [-c] [-t ttl] [-p] path [data] [acl]"),
    "set": Spec("sv:", 2, 2, "set [-s] [-v version] path data"),
    "delete": Spec("v:", 1, 1, "delete [-v version] path"),
    "deleteall": Spec("", 1, 1, "deleteall path"),
    "sync": Spec("", 1, 1, "sync path"),
    "addauth": Spec("", 2, 2, "addauth scheme auth"),
    "getAcl": Spec("s", 1, 1, "getAcl [-s] path"),
    "setAcl": Spec("sv:R", 2, 2, "setAcl [-s] [-v version] [-R] path acl"),
    "addWatch": Spec("m:", 1, 1, "addWatch [-m PERSISTENT|PERSISTENT_RECURSIVE] path"),
    "removewatches": Spec("cda", 1, 1, "removewatches [-c|-d|-a] path"),
    "whoami": Spec("", 0, 0, "whoami"),
    "getEphemerals": Spec("", 0, 1, "getEphemerals [path]"),
    "setquota": Spec("n:b:N:B:", 1, 1, "setquota -n|-b|-N|-B val path"),
    "listquota": Spec("", 1, 1, "listquota path"),
    "delquota": Spec("nbNB", 1, 1, "delquota [-n|-b|-N|-B] path"),
    "history": Spec("", 0, 0, "history"),
    "help": Spec("", 0, 0, "help"),
    "quit": Spec("", 0, 0, "quit"),
}


@dataclass(slots=True)
class Result:
    """What a command prints: `text` for people (bytes for --raw data), `data` for --json."""

    text: str | bytes | None
    data: dict[str, Any]


def parse_quota(data: bytes | None) -> dict[str, int]:
    """The limits or stats zkCli.sh or the members wrote; BadArgumentsError if garbled."""
    try:
        return tree.parse_quota(data)
    except ValueError:
        raise BadArgumentsError(f"not a quota: {data!r}") from None


def _quota_node(path: str, name: str) -> str:
    """The node below /zookeeper/quota that keeps `path`'s quota (`name` "": their parent)."""
    node = QUOTA_PATH + path
    return f"{node}/{name}" if name else node


def _ancestors(path: str) -> Iterator[str]:
    """The ancestors of `path` below the root, nearest first."""
    while (path := paths.parent(path)) != "/":
        yield path


def _quota_limit(flag: str, value: str) -> int:
    """A setquota value: a count above 0, a number of bytes of at least 0 (zkCli's rule)."""
    number = parse_int(value, "the quota")
    least = 1 if flag in "nN" else 0
    if number < least:
        raise UsageError(f"the {QUOTA_FLAGS[flag]} quota must be at least {least}")
    return number


def format_time(ms: int) -> str:
    """Milliseconds since the epoch as an ISO 8601 date in UTC."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def stat_fields(stat: Stat) -> dict[str, Any]:
    """A Stat for --json: its eleven fields, and ctime/mtime also as dates."""
    fields: dict[str, Any] = stat._asdict()
    fields["ctime_date"] = format_time(stat.ctime)
    fields["mtime_date"] = format_time(stat.mtime)
    return fields


def stat_text(stat: Stat) -> str:
    """A Stat for people, one ``name = value`` line per field: zxids and the owner in hex,
    times as dates."""
    lines = []
    for name, value in stat._asdict().items():
        if name.endswith("zxid") or name == "ephemeral_owner":
            lines.append(f"{name} = {value:#x}")
        elif name in ("ctime", "mtime"):
            lines.append(f"{name} = {format_time(value)}")
        else:
            lines.append(f"{name} = {value}")
    return "\n".join(lines)


def is_text(data: bytes) -> bool:
    """Whether `data` is UTF-8 text without control characters other than tab and newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\n" for ch in text)


def show_data(data: bytes, data_format: DataFormat) -> str | bytes:
    """A znode's data for the terminal: as it is (raw), in hex, or (auto) as text when it is
    printable UTF-8 and as ``hex:...`` otherwise, so binary never reaches the terminal."""
    if data_format == "raw":
        return data
    if data_format == "hex" or not is_text(data):
        return "hex:" + data.hex()
    return data.decode("utf-8")


def data_fields(data: bytes) -> dict[str, Any]:
    """Data for --json: ``data`` (the UTF-8 text, or null) and always ``data_hex``."""
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"data": text, "data_hex": data.hex()}


def parse_acl_list(text: str) -> list[ACL]:
    """A comma-separated ACL, zkCli.sh's way (``world:anyone:r,digest:bob:pw:cdrwa``)."""
    try:
        return [security.parse_acl(entry) for entry in text.split(",") if entry]
    except ValueError as err:
        raise UsageError(str(err)) from None


def parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} must be an integer, not {text!r}") from None


def event_fields(event: WatchedEvent) -> dict[str, Any]:
    return {"event": event.type.name, "path": event.path, "zxid": event.zxid}


class _Sink:
    """A watch callback that queues its events for the shell to print. It runs on the client's
    loop thread, so it only puts the event on a thread-safe queue."""

    def __init__(self, events: queue.SimpleQueue[WatchedEvent]) -> None:
        self.events = events

    def __call__(self, event: WatchedEvent) -> None:
        self.events.put(event)


async def _persistent_watch(
    client: Client,
    path: str,
    recursive: bool,
    sink: _Sink,
    done: threading.Event,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep an addWatch registration on the client's loop until cancelled, queueing its events;
    `done` once the registration is removed. A lost session just ends it."""
    try:
        with trio.CancelScope() as scope:
            async with client.async_client.watch(path, recursive=recursive) as stream:
                task_status.started(scope)
                try:
                    async for event in stream:
                        sink(event)
                except ZkError:
                    return
    finally:
        done.set()


class Shell:
    """zkCli.sh's commands over one `zkpy.sync.Client`.

    `execute` runs one command line (a string, split as a POSIX shell would, or tokens) and
    returns whether it succeeded; output goes to `out`, one-line errors to `err`. Watch events
    are queued as they arrive and printed by `print_events`, which the drivers call between
    commands (or from a thread, in a terminal).
    """

    def __init__(
        self,
        zk: Client,
        out: IO[str],
        err: IO[str],
        *,
        as_json: bool = False,
        data_format: DataFormat = "auto",
        stdin: IO[bytes] | None = None,
        identities: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.zk = zk
        self.out = out
        self.err = err
        self.as_json = as_json
        self.data_format = data_format
        self.stdin = stdin
        self.identities: list[tuple[str, str]] = [
            (scheme, _identity(scheme, credential)) for scheme, credential in identities
        ]
        self.history: list[str] = []
        self.failures = 0
        self.done = False
        self.events: queue.SimpleQueue[WatchedEvent] = queue.SimpleQueue()
        self._output = threading.Lock()
        self._sinks: dict[tuple[str, str], _Sink] = {}
        self._persistent: dict[str, list[tuple[trio.CancelScope, threading.Event]]] = {}

    # ---- driving --------------------------------------------------------------------------

    def execute(self, line: str | list[str]) -> bool:
        """Run one command; print its result or a one-line error. True if it succeeded."""
        try:
            tokens = shlex.split(line) if isinstance(line, str) else list(line)
        except ValueError as err:
            return self._fail(f"cannot parse the line: {err}")
        if not tokens:
            return True
        self.history.append(line if isinstance(line, str) else shlex.join(line))
        try:
            result = self._dispatch(tokens)
        except UsageError as err:
            return self._fail(str(err))
        except ZkError as err:
            return self._fail(str(err), kind=type(err).__name__)
        except (OSError, TimeoutError, ValueError) as err:
            return self._fail(str(err), kind=type(err).__name__)
        self._print(result, tokens)
        return True

    def session_lost(self) -> bool:
        """Whether the session has ended (expired, refused auth, closed): nothing more can run."""
        return self.zk.closed or self.zk.state is ConnectionState.LOST

    def print_events(self) -> None:
        """Print the watch events that have arrived, one line each."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._print_event(event)

    def wait_events(self, stop: threading.Event) -> None:
        """Print events as they arrive until `stop` is set (a terminal's printer thread)."""
        while not stop.is_set():
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            self._print_event(event)

    def complete(self, text: str, line: str) -> list[str]:
        """Tab completion: command names for the first word, else the paths under the parent
        of `text` (one getChildren request)."""
        if not line.strip() or (line.count(" ") == 0 and not line.endswith(" ")):
            return sorted(name + " " for name in COMMANDS if name.startswith(text))
        if not text.startswith("/"):
            return []
        parent, _sep, prefix = text.rpartition("/")
        try:
            children = self.zk.get_children(parent or "/")
        except (ZkError, ValueError):
            return []
        base = parent + "/"
        return [base + child for child in children if child.startswith(prefix)]

    def close_watches(self) -> None:
        """Remove the shell's persistent watches (before the session closes)."""
        for path in list(self._persistent):
            self._remove_persistent(path)

    # ---- output ---------------------------------------------------------------------------

    def _fail(self, message: str, kind: str = "UsageError") -> bool:
        self.failures += 1
        with self._output:
            if self.as_json:
                self.err.write(json.dumps({"error": kind, "message": message}) + "\n")
            elif kind == "UsageError":
                self.err.write(f"zkpy: {message}\n")
            else:
                self.err.write(f"zkpy: {kind}: {message}\n")
            self.err.flush()
        return False

    def _print(self, result: Result, tokens: list[str]) -> None:
        with self._output:
            if self.as_json or "--json" in tokens:
                self.out.write(json.dumps(result.data) + "\n")
            elif isinstance(result.text, bytes):
                self.out.flush()
                buffer = getattr(self.out, "buffer", None)
                if buffer is None:
                    self.out.write(result.text.decode("utf-8", "backslashreplace") + "\n")
                else:
                    buffer.write(result.text + b"\n")
                    buffer.flush()
            elif result.text is not None:
                self.out.write(result.text + "\n")
            self.out.flush()

    def _print_event(self, event: WatchedEvent) -> None:
        with self._output:
            if self.as_json:
                self.out.write(json.dumps({"watch": event_fields(event)}) + "\n")
            else:
                self.out.write(f"WATCHER:: {event.type.name} {event.path} zxid={event.zxid:#x}\n")
            self.out.flush()

    # ---- parsing ----------------------------------------------------------------------------

    def _dispatch(self, tokens: list[str]) -> Result:
        name, rest = tokens[0], tokens[1:]
        spec = COMMANDS.get(name)
        if spec is None:
            raise UsageError(f"unknown command {name!r} (try help)")
        try:
            pairs, args = getopt.gnu_getopt(rest, spec.flags, ["json"])
        except getopt.GetoptError as err:
            raise UsageError(f"{err}; usage: {spec.usage}") from None
        if not spec.min_args <= len(args) <= spec.max_args:
            raise UsageError(f"usage: {spec.usage}")
        flags = {flag.lstrip("-"): value for flag, value in pairs}
        method: Callable[[dict[str, str], list[str]], Result] = getattr(self, "_cmd_" + name)
        return method(flags, args)

    def _value(self, text: str) -> bytes:
        """A data argument: ``-`` reads standard input to its end, ``@FILE`` reads a file,
        ``@@...`` is the text ``@...``; anything else is the text itself (UTF-8)."""
        if text == "-":
            if self.stdin is None:
                raise UsageError("'-' reads standard input, which carries the commands here")
            return self.stdin.read()
        if text.startswith("@@"):
            return text[1:].encode()
        if text.startswith("@"):
            try:
                return Path(text[1:]).read_bytes()
            except OSError as err:
                raise UsageError(f"cannot read {text[1:]}: {err.strerror}") from None
        return text.encode()

    def _sink(self, path: str, kind: str) -> _Sink:
        key = (paths.validate(path), kind)
        if key not in self._sinks:
            self._sinks[key] = _Sink(self.events)
        return self._sinks[key]

    # ---- commands ---------------------------------------------------------------------------

    def _cmd_ls(self, flags: dict[str, str], args: list[str]) -> Result:
        path = args[0]
        sink = self._sink(path, "child") if "w" in flags else None

        async def read() -> tuple[list[str], Stat]:
            return await self.zk.async_client.get_children(path, watch=sink, include_data=True)

        children, stat = self.zk.run(read)
        data: dict[str, Any] = {"path": path, "children": children}
        lines = list(children)
        if "R" in flags:
            data["paths"] = lines = [each for each, _stat in self._walk(path)]
        if "s" in flags:
            data["stat"] = stat_fields(stat)
            lines.append(stat_text(stat))
        return Result("\n".join(lines) if lines else None, data)

    def _walk(self, root: str) -> Iterator[tuple[str, Stat]]:
        """`root` and every node below it with its Stat, parents before children, in order
        (iterative: trees nest deeper than Python recurses)."""
        pending = [paths.validate(root)]
        while pending:
            path = pending.pop()
            try:
                children, stat = self.zk.get_children(path, include_data=True)
            except NoNodeError:
                continue
            yield path, stat
            pending.extend(paths.join(path, child) for child in reversed(children))

    def _cmd_get(self, flags: dict[str, str], args: list[str]) -> Result:
        path = args[0]
        if "w" in flags:
            value, stat = self.zk.run(
                self.zk.async_client.get, path, watch=self._sink(path, "data")
            )
        else:
            value, stat = self.zk.get(path)
        shown = show_data(value, self.data_format)
        data = {"path": path, **data_fields(value)}
        if "s" in flags:
            data["stat"] = stat_fields(stat)
            if isinstance(shown, bytes):
                shown += b"\n" + stat_text(stat).encode()
            else:
                shown += "\n" + stat_text(stat)
        return Result(shown, data)

    def _cmd_stat(self, flags: dict[str, str], args: list[str]) -> Result:
        path = args[0]
        watch = self._sink(path, "data") if "w" in flags else None
        stat: Stat | None = self.zk.run(self.zk.async_client.exists, path, watch=watch)
        if stat is None:
            raise NoNodeError(path=path)
        return Result(stat_text(stat), {"path": path, "stat": stat_fields(stat)})

    def _cmd_create(self, flags: dict[str, str], args: list[str]) -> Result:
        path = args[0]
        value = self._value(args[1]) if len(args) > 1 else b""
        acl = parse_acl_list(args[2]) if len(args) > 2 else None
        ttl = parse_int(flags["t"], "the ttl") if "t" in flags else None
        created = self.zk.create(
            path,
            value,
            acl=acl,
            ephemeral="e" in flags,
            sequential="s" in flags,
            container="c" in flags,
            ttl=ttl,
            makepath="p" in flags,
        )
        return Result(f"Created {created}", {"created": created})

    def _cmd_set(self, flags: dict[str, str], args: list[str]) -> Result:
        path, text = args
        version = parse_int(flags.get("v", "-1"), "the version")
        stat = self.zk.set(path, self._value(text), version)
        return Result(stat_text(stat) if "s" in flags else None, {"path": path, **_stat(stat)})

    def _cmd_delete(self, flags: dict[str, str], args: list[str]) -> Result:
        self.zk.delete(args[0], parse_int(flags.get("v", "-1"), "the version"))
        return Result(None, {"deleted": args[0]})

    def _cmd_deleteall(self, flags: dict[str, str], args: list[str]) -> Result:
        if self.zk.exists(args[0]) is None:
            raise NoNodeError(path=args[0])
        self.zk.delete(args[0], recursive=True)
        return Result(None, {"deleted": args[0]})

    def _cmd_sync(self, flags: dict[str, str], args: list[str]) -> Result:
        self.zk.sync(args[0])
        return Result(f"Sync is OK: {args[0]}", {"synced": args[0]})

    def _cmd_addauth(self, flags: dict[str, str], args: list[str]) -> Result:
        scheme, credential = args
        self.zk.add_auth(scheme, credential)
        identity = _identity(scheme, credential)
        self.identities.append((scheme, identity))
        return Result(None, {"scheme": scheme, "id": identity})

    def _cmd_getAcl(self, flags: dict[str, str], args: list[str]) -> Result:
        acl, stat = self.zk.get_acl(args[0])
        entries = [security.format_acl(entry) for entry in acl]
        data: dict[str, Any] = {"path": args[0], "acl": entries}
        lines = list(entries)
        if "s" in flags:
            data["stat"] = stat_fields(stat)
            lines.append(stat_text(stat))
        return Result("\n".join(lines), data)

    def _cmd_setAcl(self, flags: dict[str, str], args: list[str]) -> Result:
        path, text = args
        acl = parse_acl_list(text)
        version = parse_int(flags.get("v", "-1"), "the version")
        targets = [each for each, _stat in self._walk(path)] if "R" in flags else [path]
        stat = self.zk.set_acl(targets[0] if targets else path, acl, version)
        for each in targets[1:]:
            self.zk.set_acl(each, acl)
        return Result(stat_text(stat) if "s" in flags else None, {"path": path, **_stat(stat)})

    def _cmd_addWatch(self, flags: dict[str, str], args: list[str]) -> Result:
        path = paths.validate(args[0])
        mode = flags.get("m", "PERSISTENT_RECURSIVE")
        if mode not in WATCH_MODES:
            raise UsageError(f"the mode is one of {', '.join(WATCH_MODES)}, not {mode!r}")
        done = threading.Event()
        scope: trio.CancelScope = self.zk.start_task(
            _persistent_watch,
            self.zk,
            path,
            mode == "PERSISTENT_RECURSIVE",
            _Sink(self.events),
            done,
        )
        self._persistent.setdefault(path, []).append((scope, done))
        return Result(None, {"path": path, "mode": mode})

    def _cmd_removewatches(self, flags: dict[str, str], args: list[str]) -> Result:
        path = paths.validate(args[0])
        kinds = [kind for kind, flag in (("child", "c"), ("data", "d")) if flag in flags]
        everything = not kinds or "a" in flags
        if everything:
            kinds = ["child", "data"]
        removed = 0
        for kind in kinds:
            sink = self._sinks.pop((path, kind), None)
            if sink is not None and self.zk.remove_watch(path, sink):
                removed += 1
        if everything:
            removed += self._remove_persistent(path)
        if not removed:
            raise NoWatcherError(path=path)
        return Result(None, {"path": path, "removed": removed})

    def _remove_persistent(self, path: str) -> int:
        """End the addWatch registrations on `path`; wait until the server has forgotten them."""
        registrations = self._persistent.pop(path, [])
        for scope, done in registrations:
            if not self.zk.closed:
                self.zk.run_sync(scope.cancel)
                done.wait()
        return len(registrations)

    def _cmd_whoami(self, flags: dict[str, str], args: list[str]) -> Result:
        found = [{"scheme": scheme, "id": ident} for scheme, ident in self.identities]
        text = "\n".join(f"{each['scheme']}:{each['id']}" for each in found)
        return Result(text or None, {"identities": found})

    def _cmd_getEphemerals(self, flags: dict[str, str], args: list[str]) -> Result:
        root = args[0] if args else "/"
        owner = self.zk.session_id
        found = [path for path, stat in self._walk(root) if stat.ephemeral_owner == owner]
        return Result("\n".join(found) or None, {"ephemerals": found})

    def _cmd_setquota(self, flags: dict[str, str], args: list[str]) -> Result:
        """Set limits on a path's subtree, as zkCli.sh's setquota writes them: the members
        then count the subtree into its stats node (docs/protocol.md, Quotas). A quota may not
        nest in another one."""
        path = paths.validate(args[0])
        if not flags:
            raise UsageError(f"usage: {COMMANDS['setquota'].usage}")
        given = {QUOTA_FLAGS[flag]: _quota_limit(flag, value) for flag, value in flags.items()}
        if path == "/" or path.startswith(QUOTA_PATH):
            raise BadArgumentsError("no quota may be set on / or under /zookeeper/quota", path=path)
        if self.zk.exists(path) is None:
            raise NoNodeError(path=path)
        self._refuse_nested_quota(path)
        limits = _quota_node(path, QUOTA_LIMITS)
        if self.zk.exists(limits) is None:
            values = {key: -1 for key in QUOTA_FLAGS.values()} | given
            self.zk.create(limits, format_quota(values).encode(), makepath=True)
            self.zk.create(_quota_node(path, QUOTA_STATS), b"count=0,bytes=0")
        else:
            values = parse_quota(self.zk.get(limits)[0]) | given
            self.zk.set(limits, format_quota(values).encode())
        return Result(None, {"path": path, "quota": values})

    def _refuse_nested_quota(self, path: str) -> None:
        for ancestor in _ancestors(path):
            if self.zk.exists(_quota_node(ancestor, QUOTA_LIMITS)) is not None:
                raise BadArgumentsError(f"{path} has a parent {ancestor} which has a quota")
        for each, _stat in self._walk(_quota_node(path, "")):
            child = each[len(QUOTA_PATH) : -len(QUOTA_LIMITS) - 1]
            if each.endswith("/" + QUOTA_LIMITS) and child != path:
                raise BadArgumentsError(f"{path} has a child {child} which has a quota")

    def _cmd_listquota(self, flags: dict[str, str], args: list[str]) -> Result:
        path = paths.validate(args[0])
        try:
            limits = parse_quota(self.zk.get(_quota_node(path, QUOTA_LIMITS))[0])
            stats = parse_quota(self.zk.get(_quota_node(path, QUOTA_STATS))[0])
        except NoNodeError:
            raise NoNodeError(f"no quota on {path}", path=path) from None
        text = (
            f"Output quota for {path} {format_quota(limits)}\n"
            f"Output stat for {path} {format_quota(stats)}"
        )
        return Result(text, {"path": path, "quota": limits, "stat": stats})

    def _cmd_delquota(self, flags: dict[str, str], args: list[str]) -> Result:
        """Without flags, remove the path's quota (and the quota nodes left empty above it);
        with flags, lift only those limits."""
        path = paths.validate(args[0])
        limits = _quota_node(path, QUOTA_LIMITS)
        try:
            values = parse_quota(self.zk.get(limits)[0])
        except NoNodeError:
            raise NoNodeError(f"no quota on {path}", path=path) from None
        if flags:
            values |= {QUOTA_FLAGS[flag]: -1 for flag in flags}
            self.zk.set(limits, format_quota(values).encode())
            return Result(None, {"path": path, "quota": values})
        node = _quota_node(path, "")
        for child in self.zk.get_children(node):
            self.zk.delete(paths.join(node, child))
        while node != QUOTA_PATH and not self.zk.get_children(node):
            self.zk.delete(node)
            node = paths.parent(node)
        return Result(None, {"path": path, "quota": None})

    def _cmd_history(self, flags: dict[str, str], args: list[str]) -> Result:
        numbered = list(enumerate(self.history))
        return Result(
            "\n".join(f"{number}: {line}" for number, line in numbered),
            {"history": [line for _number, line in numbered]},
        )

    def _cmd_help(self, flags: dict[str, str], args: list[str]) -> Result:
        usages = [spec.usage for spec in COMMANDS.values()]
        return Result("\n".join(usages), {"commands": usages})

    def _cmd_quit(self, flags: dict[str, str], args: list[str]) -> Result:
        self.done = True
        return Result(None, {"quit": True})


def _stat(stat: Stat) -> dict[str, Any]:
    return {"stat": stat_fields(stat)}


def _identity(scheme: str, credential: str) -> str:
    """The id a credential authenticates as: the user of a digest ``user:password``."""
    return credential.partition(":")[0] if scheme == "digest" else credential


# ---- drivers --------------------------------------------------------------------------------


def run_script(shell: Shell, lines: Iterable[str]) -> int:
    """Run commands line by line (a piped script; lines starting with # are comments) until
    the lines end, `quit` or the session is lost; print watch events between commands.
    Exit status: 0 if every command succeeded, 1 if any failed."""
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        shell.print_events()
        shell.execute(line.rstrip("\n"))
        shell.print_events()
        if shell.done:
            break
        if shell.session_lost():
            shell._fail("the session has ended")
            break
    shell.print_events()
    return 1 if shell.failures else 0


def run_terminal(shell: Shell, server: str) -> int:
    """The interactive shell: a prompt with readline history (kept in $ZKPY_HISTORY or
    ~/.zkpy_history) and completion of commands and paths; events printed as they come."""
    import readline

    history = Path(os.environ.get(HISTORY_ENV) or Path.home() / ".zkpy_history")
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_completer_delims(" \t\n")
    readline.parse_and_bind("tab: complete")
    matches: list[str] = []

    def completer(text: str, state: int) -> str | None:
        if state == 0:
            matches[:] = shell.complete(text, readline.get_line_buffer())
        return matches[state] if state < len(matches) else None

    readline.set_completer(completer)
    stop = threading.Event()
    printer = threading.Thread(target=shell.wait_events, args=(stop,), daemon=True)
    printer.start()
    try:
        while not shell.done and not shell.session_lost():
            try:
                line = input(f"[zkpy: {server}] {len(shell.history)}> ")
            except EOFError:
                break
            except KeyboardInterrupt:
                print(file=shell.out)
                continue
            try:
                shell.execute(line)
            except KeyboardInterrupt:
                shell._fail("interrupted")
    finally:
        stop.set()
        printer.join()
        try:
            readline.write_history_file(history)
        except OSError:
            pass
    return 0


def run_shell(
    zk: Client,
    command: list[str],
    server: str,
    *,
    as_json: bool,
    data_format: DataFormat,
    identities: Iterable[tuple[str, str]],
) -> int:
    """`zkpy shell`: one command from `command`, else a terminal session, else the commands
    piped on standard input. Returns the exit status."""
    interactive = not command and sys.stdin.isatty()
    piped = not command and not interactive
    shell = Shell(
        zk,
        sys.stdout,
        sys.stderr,
        as_json=as_json,
        data_format=data_format,
        stdin=None if piped else sys.stdin.buffer,
        identities=identities,
    )
    try:
        if command:
            ok = shell.execute(command)
            shell.print_events()
            return 0 if ok else 1
        if interactive:
            return run_terminal(shell, server)
        return run_script(shell, sys.stdin)
    except KeyboardInterrupt:
        return 130
    finally:
        if not zk.closed:
            shell.close_watches()


__all__ = [
    "COMMANDS",
    "DATA_FORMATS",
    "Shell",
    "UsageError",
    "run_script",
    "run_shell",
    "show_data",
    "stat_text",
]
