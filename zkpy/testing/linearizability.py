"""A linearizability checker for recorded client histories.

A *history* is a list of `Operation`s, each recorded by a client: who (process), on which key,
what (kind, input), what came back (output), when it was called and when it returned, and its
outcome:

- ``OK``: it returned normally; it took effect exactly once, somewhere between call and return.
- ``FAIL``: it certainly did not take effect. The checker drops it. Recording a write as FAIL is
  only sound when the system guarantees the write was not applied: in ZooKeeper, an answer of
  BadVersion, NoNode or NodeExists is decided by the leader's prep stage and the request commits
  as an error txn, so it changed nothing. A ConnectionLoss, OperationTimeout, SessionExpired,
  a client-side timeout or a closed connection is NOT such a guarantee: record those as UNKNOWN.
  A wrong FAIL hides real violations (or invents some).
- ``UNKNOWN``: it may or may not have taken effect, at any time after its call (a request lost
  with its connection can still be applied later). Its return time is +infinity. The checker may
  linearize it anywhere after its call, or leave it out; its output, if any, is not checked.

The history is linearizable when there is a total order of the OK operations (plus any subset of
the UNKNOWN ones) that respects real time (if A returned before B was called, A comes first) and
is a legal run of a sequential specification, the *model*. Operations that returned and were
called at the same instant are treated as concurrent.

The search is Wing & Gong's, with Lowe's memoization (as in porcupine, Anish Athalye's Go
checker): walk the history's call/return events in time order, try to linearize each pending
call, remember every (set of linearized operations, model state) already explored, and backtrack
when a return is reached whose operation has not been linearized yet. The history is first split
by key (P-compositionality: linearizability is compositional, so each key is checked alone),
which keeps each search small.

Models are small classes with ``init() -> state`` and ``step(state, op) -> (ok, new_state)``;
states must be hashable (they are memoized) and steps deterministic. Three are provided:

- `RegisterModel`: a ZooKeeper-style versioned register (a znode's data and version);
- `SequentialCreateModel`: sequential children of one parent (counters and children lists);
- `CounterModel`: an integer counter.

Reads and linearizability in ZooKeeper: plain reads are served by the member a client is
connected to and are only sequentially consistent, so a linearizability check of plain reads
will (rightly) flag stale reads. Record reads made linearizable (``sync`` then read, with the
call time taken before the sync), or leave reads out.

History files are JSON lines, one operation per line (`dump_history` / `load_history`); lines
without a ``call`` field (watch events, annotations) are skipped on load. From a shell::

    python -m zkpy.testing.linearizability HISTORY.jsonl [--model auto|register|sequential|counter]

prints a report and exits 0 when every key is linearizable, 1 on a violation, 3 when the check
gave up (``--timeout``) without finding one.

The search is deterministic: the same history gives the same verdict and the same explanation.
Time is read only through the injected ``clock``, to honour ``timeout_s``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import enum
import json
import math
import re
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CheckResult",
    "CounterModel",
    "KeyResult",
    "Model",
    "Operation",
    "Outcome",
    "RegisterModel",
    "SequentialCreateModel",
    "check",
    "dump_history",
    "load_history",
    "lost_writes",
    "main",
]


# ---- the history ---------------------------------------------------------------------------


class Outcome(enum.Enum):
    """How an operation ended, as far as its caller knows."""

    OK = "ok"
    FAIL = "fail"  # certainly did not take effect: dropped by the checker
    UNKNOWN = "unknown"  # may or may not have taken effect; return time +infinity


def _freeze(value: Any) -> Any:
    """Lists become tuples and sets frozensets, all the way down, so values are hashable."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, set | frozenset):
        return frozenset(_freeze(item) for item in value)
    if isinstance(value, dict):
        raise TypeError("operation values must be hashable; a dict is not")
    return value


@dataclass(frozen=True, slots=True)
class Operation:
    """One recorded client operation.

    `input` and `output` are plain values (None, bool, int, float, str, bytes, tuples and
    frozensets of those); lists are turned into tuples. An UNKNOWN operation's `ret` is always
    +infinity, whatever was passed. OK and FAIL operations need a finite `ret` >= `call`.
    """

    process: int | str
    key: str
    kind: str
    input: Any
    output: Any
    call: float
    ret: float
    outcome: Outcome = Outcome.OK

    def __post_init__(self) -> None:
        """Freeze input and output (they are hashed) and check the outcome."""
        object.__setattr__(self, "input", _freeze(self.input))
        object.__setattr__(self, "output", _freeze(self.output))
        if not isinstance(self.outcome, Outcome):
            object.__setattr__(self, "outcome", Outcome(self.outcome))
        if self.outcome is Outcome.UNKNOWN:
            object.__setattr__(self, "ret", math.inf)
        elif not math.isfinite(self.ret):
            raise ValueError(f"an {self.outcome.name} operation needs a finite return time: {self}")
        if not math.isfinite(self.call) or self.ret < self.call:
            raise ValueError(f"return before call, or no call time: {self}")

    def __str__(self) -> str:
        """The operation as a person reads it in a report."""
        args = "" if self.input is None else repr(self.input)
        if self.outcome is Outcome.OK:
            result = f" -> {self.output!r}"
        else:
            result = f" -> {self.outcome.name}"
        ret = "inf" if math.isinf(self.ret) else f"{self.ret:.6f}"
        return f"[{self.process}] {self.kind}({args}){result}  @[{self.call:.6f}, {ret}]"


# ---- models --------------------------------------------------------------------------------


@runtime_checkable
class Model(Protocol):
    """A sequential specification. States are hashable; `step` is deterministic and pure.

    `step` is given every operation the checker tries to linearize, UNKNOWN ones included: for
    those it must not check the output (there is none to trust). It may raise ValueError for an
    operation it does not understand.

    Optional extras the checker uses when present:

    - ``read_only(op) -> bool``: True when `op` never changes the state (whatever the state, a
      step that accepts it returns the same state). UNKNOWN read-only operations are dropped
      before the search, and a pending read-only operation that the model accepts is
      linearized at once, without branching on the alternatives (it loses nothing). Saying
      True of an operation that can change the state makes the checker wrong.
    - ``canonicalize(ops) -> list[Operation]``: the same operations, one for one and in order,
      rewritten so that operations with the same effect are equal (e.g. a register merges the
      values no read returned). Only the search sees them: reports show the originals. UNKNOWN
      operations that end up with equal kind and input are interchangeable in the search.
    - ``lost_writes(ops, final) -> list[Operation]`` (see `lost_writes`).

    A step may depend on an operation's kind, input, outcome and (for OK ones) output only.
    """

    def init(self) -> Hashable:
        """The state before any operation."""

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        """Whether `op` may take effect in `state`, and the state after it."""


def _version_of(output: Any) -> int | None:
    """The new version a write reported: an int, or the first item of a tuple such as
    (version, mzxid). None when it was not recorded."""
    if isinstance(output, tuple):
        output = output[0] if output else None
    if output is None or isinstance(output, int):
        return output
    raise ValueError(f"a write's output must be its new version, not {output!r}")


class RegisterModel:
    """A ZooKeeper-style versioned register: one znode's data and version.

    State: ``(value, version)``; ``value is None`` means the node does not exist (version -1).
    `initial` None starts with a missing node, anything else with that value at version 0 (a
    freshly created znode). Operations (`kind`, `input` -> `output`):

    - ``read``, None -> ``(value, version)``, or None when the node is missing.
    - ``write``, value -> the new version (``version + 1``; the first write gives 0, as a create
      does). The output may also be a tuple whose first item is the version, e.g.
      ``(version, mzxid)``, or None when the version was not recorded (then it is not checked).
    - ``cas``, ``(expected_version, value)`` -> the new version: ZooKeeper's conditional setData.
      It takes effect iff the node exists and its version equals `expected_version`. An OK cas
      whose output is None records an observed BadVersion: it is checked as "the version was not
      `expected_version`" and changes nothing. (A BadVersion recorded as FAIL is simply dropped.)
      An unconditional setData (version -1) is a ``write``, not a ``cas``.
    """

    def __init__(self, initial: Hashable = None) -> None:
        self.initial: tuple[Hashable, int] = (initial, -1 if initial is None else 0)

    def init(self) -> tuple[Hashable, int]:
        """The state before any operation."""
        return self.initial

    def read_only(self, op: Operation) -> bool:
        """Reads, and cas operations answered BadVersion, never change the register."""
        return op.kind == "read" or (
            op.kind == "cas" and op.outcome is Outcome.OK and op.output is None
        )

    def step(self, state: tuple[Hashable, int], op: Operation) -> tuple[bool, tuple[Hashable, int]]:
        """Whether `op` may take effect in `state`, and the state after it."""
        value, version = state
        checked = op.outcome is Outcome.OK
        if op.kind == "read":
            seen = None if value is None else (value, version)
            return (not checked or op.output == seen), state
        if op.kind == "write":
            if op.input is None:
                raise ValueError(f"a register write needs a value: {op}")
            reported = _version_of(op.output) if checked else None
            return reported is None or reported == version + 1, (op.input, version + 1)
        if op.kind == "cas":
            expected, new_value = _cas_input(op)
            matches = value is not None and version == expected
            if checked and op.output is None:  # an observed BadVersion
                return not matches, state
            if not matches:
                return False, state
            reported = _version_of(op.output) if checked else None
            return reported is None or reported == version + 1, (new_value, version + 1)
        raise ValueError(f"RegisterModel does not know the operation kind {op.kind!r}: {op}")

    def canonicalize(self, ops: Sequence[Operation]) -> list[Operation]:
        """Merge the values no read returned into one: registers holding two such values at
        the same version behave alike from then on, and so do the writes of them."""
        observed = {
            op.output[0]
            for op in ops
            if op.kind == "read" and op.outcome is Outcome.OK and isinstance(op.output, tuple)
        }
        canonical: list[Operation] = []
        for op in ops:
            if op.kind == "write" and op.input is not None and op.input not in observed:
                op = dataclasses.replace(op, input=UNOBSERVED)
            elif op.kind == "cas" and _cas_input(op)[1] not in observed:
                op = dataclasses.replace(op, input=(op.input[0], UNOBSERVED))
            canonical.append(op)
        return canonical

    def lost_writes(self, ops: Sequence[Operation], final: Any) -> list[Operation]:
        """Acknowledged writes and successful cas operations that `final` (a read's output after
        the system healed: ``(value, version)`` or None) does not reflect.

        A write that reported version v is lost when the final version is below v, or equals v
        with another value: versions only grow, so a surviving write leaves the node at v or
        later. A write whose version was not recorded is judged lost only when it is the last
        write in real time (every other write that may have taken effect returned before it was
        called) and the final value is not its value.
        """
        final = _freeze(final)
        if final is not None and not (isinstance(final, tuple) and len(final) == 2):
            raise ValueError(f"a register's final read is (value, version) or None, not {final!r}")
        mutations = [op for op in ops if _register_mutation(op)]
        lost: list[Operation] = []
        for op in mutations:
            if op.outcome is not Outcome.OK:
                continue
            value = op.input if op.kind == "write" else _cas_input(op)[1]
            if final is None:
                lost.append(op)
                continue
            final_value, final_version = final
            reported = _version_of(op.output)
            if reported is not None:
                if final_version < reported or (final_version == reported and final_value != value):
                    lost.append(op)
            elif final_value != value and all(
                other is op or other.ret < op.call for other in mutations
            ):
                lost.append(op)
        return lost


class _Unobserved:
    """The one value standing for every value no read returned (see `canonicalize`)."""

    def __repr__(self) -> str:
        return "<unobserved>"


UNOBSERVED = _Unobserved()


def _cas_input(op: Operation) -> tuple[int, Hashable]:
    if not (isinstance(op.input, tuple) and len(op.input) == 2):
        raise ValueError(f"a cas input is (expected_version, value): {op}")
    expected, value = op.input
    if not isinstance(expected, int) or value is None:
        raise ValueError(f"a cas input is (expected_version, value): {op}")
    return expected, value


def _register_mutation(op: Operation) -> bool:
    """A write or cas that may have changed the register (not FAIL, not an observed BadVersion)."""
    if op.kind not in ("write", "cas") or op.outcome is Outcome.FAIL:
        return False
    return not (op.kind == "cas" and op.outcome is Outcome.OK and op.output is None)


_COUNTER = re.compile(r"(\d+)$")


def sequence_counter(name: str) -> int:
    """The counter of a sequential node's name or path (its trailing digits)."""
    found = _COUNTER.search(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"not a sequential node name: {name!r}")
    return int(found.group(1))


def _basename(name: str) -> str:
    return name.rsplit("/", 1)[-1]


# (lower, upper): an UNKNOWN create linearized before its name was seen has a counter strictly
# between them; upper None is unbounded.
_Pending = tuple[tuple[int, int | None], ...]
_SeqState = tuple[frozenset[str], int, _Pending]


class SequentialCreateModel:
    """Sequential children of one parent znode (the key is the parent).

    - ``create``, anything (e.g. the node's data) -> the created node's name or path, ending in
      its counter (ZooKeeper's ``%010d``). In linearization order counters strictly increase
      (so they are unique, and each exceeds every earlier create's); gaps are allowed.
    - ``children``, None -> the parent's children (any collection of names or paths), which must
      be exactly the nodes created so far (plus `initial`). Names are compared by their last
      path segment. There is no delete.

    An UNKNOWN create that the checker linearizes has a name nobody saw. It is carried as
    "pending" with the counter range it must fall in, and the next ``children`` read resolves it:
    the names that read shows beyond the known ones must be exactly the pending creates, and
    since counters increase in linearization order, the smallest goes to the earliest.

    State: ``(names, largest known counter, pending ranges)``.
    """

    def __init__(self, initial: Iterable[str] = ()) -> None:
        names = frozenset(_basename(name) for name in initial)
        top = max((sequence_counter(name) for name in names), default=-1)
        self.initial: _SeqState = (names, top, ())

    def init(self) -> _SeqState:
        """The state before any operation."""
        return self.initial

    def read_only(self, op: Operation) -> bool:
        """Listing the children never changes them."""
        return op.kind == "children"

    def step(self, state: _SeqState, op: Operation) -> tuple[bool, _SeqState]:
        """Whether `op` may take effect in `state`, and the state after it."""
        names, top, pending = state
        if op.kind == "create":
            if op.outcome is not Outcome.OK:
                return True, (names, top, (*pending, (top, None)))
            if not isinstance(op.output, str):
                raise ValueError(f"a create outputs the created node's name: {op}")
            name = _basename(op.output)
            counter = sequence_counter(name)
            if counter <= top:
                return False, state
            bounded = tuple(
                (lower, counter if upper is None else min(upper, counter))
                for lower, upper in pending
            )
            if not _pending_feasible(bounded):
                return False, state
            return True, (names | {name}, counter, bounded)
        if op.kind == "children":
            if op.outcome is not Outcome.OK:
                return True, state
            return self._children(state, op)
        raise ValueError(f"SequentialCreateModel does not know the operation kind {op.kind!r}")

    @staticmethod
    def _children(state: _SeqState, op: Operation) -> tuple[bool, _SeqState]:
        names, top, pending = state
        if not isinstance(op.output, tuple | frozenset):
            raise ValueError(f"a children read outputs a collection of names: {op}")
        seen = frozenset(_basename(name) for name in op.output)
        if len(seen) != len(op.output) or not names <= seen:
            return False, state
        extra = sorted(seen - names, key=sequence_counter)
        if len(extra) != len(pending):
            return False, state
        previous = -1
        for name, (lower, upper) in zip(extra, pending, strict=True):
            counter = sequence_counter(name)
            if counter <= lower or counter <= previous or (upper is not None and counter >= upper):
                return False, state
            previous = counter
        return True, (seen, max(top, previous), ())

    def canonicalize(self, ops: Sequence[Operation]) -> list[Operation]:
        """A create's input (its data) plays no part: drop it."""
        return [dataclasses.replace(op, input=None) if op.kind == "create" else op for op in ops]

    def lost_writes(self, ops: Sequence[Operation], final: Any) -> list[Operation]:
        """Acknowledged creates whose node is not among `final` (the children read after the
        system healed; None when the parent itself is gone)."""
        final = _freeze(final)
        present = frozenset() if final is None else frozenset(_basename(n) for n in final)
        return [
            op
            for op in ops
            if op.kind == "create"
            and op.outcome is Outcome.OK
            and _basename(op.output) not in present
        ]


def _pending_feasible(pending: _Pending) -> bool:
    """Can the pending creates get strictly increasing counters, each inside its range?"""
    previous = -math.inf
    for lower, upper in pending:
        counter = max(previous + 1, lower + 1)
        if upper is not None and counter >= upper:
            return False
        previous = counter
    return True


class CounterModel:
    """An integer counter. ``add``, delta -> the new value (or None: unchecked);
    ``read``, None -> the value."""

    def __init__(self, initial: int = 0) -> None:
        self.initial = initial

    def init(self) -> int:
        """The state before any operation."""
        return self.initial

    def read_only(self, op: Operation) -> bool:
        """Reads never change the counter."""
        return op.kind == "read"

    def step(self, state: int, op: Operation) -> tuple[bool, int]:
        """Whether `op` may take effect in `state`, and the state after it."""
        checked = op.outcome is Outcome.OK
        if op.kind == "read":
            return (not checked or op.output == state), state
        if op.kind == "add":
            new = state + op.input
            return (not checked or op.output is None or op.output == new), new
        raise ValueError(f"CounterModel does not know the operation kind {op.kind!r}: {op}")


# ---- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyResult:
    """The verdict on one key.

    `ops`: operations searched (FAIL ones and UNKNOWN read-only ones are `dropped` first).
    `prefix`: when ok, a linearization (UNKNOWN operations left out did not happen); otherwise
    the longest linearizable prefix the search found, in order, ending in model `state`.
    `unplaced`: on a violation, first the operation that had to take effect next (it returned)
    but could not, then the other pending operations the model rejected in that state.
    A timed-out key is not ok and says so: the search gave up without a verdict.
    """

    key: str
    ok: bool
    ops: int
    dropped: int = 0
    timed_out: bool = False
    prefix: tuple[Operation, ...] = ()
    unplaced: tuple[Operation, ...] = ()
    state: Any = None
    explanation: str = ""


@dataclass(frozen=True)
class CheckResult:
    """The verdict for every key of a history."""

    per_key: dict[str, KeyResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True only when every key was checked and found linearizable."""
        return all(result.ok for result in self.per_key.values())

    @property
    def timed_out(self) -> tuple[str, ...]:
        """Keys whose check gave up (no verdict: neither ok nor a violation)."""
        return tuple(key for key, result in self.per_key.items() if result.timed_out)

    @property
    def violations(self) -> tuple[str, ...]:
        """Keys proven not linearizable."""
        return tuple(
            key for key, result in self.per_key.items() if not result.ok and not result.timed_out
        )

    def report(self) -> str:
        """A verdict for a person: a line per key, and what broke where it broke."""
        total = sum(result.ops for result in self.per_key.values())
        lines = [
            f"{len(self.per_key)} keys, {total} operations checked: "
            + (
                "linearizable"
                if self.ok
                else f"{len(self.violations)} not linearizable, {len(self.timed_out)} timed out"
            )
        ]
        for key, result in self.per_key.items():
            if result.ok:
                lines.append(f"  {key!r}: ok ({result.ops} ops, {result.dropped} dropped)")
            else:
                lines.append(result.explanation)
        return "\n".join(lines)


# ---- the search ----------------------------------------------------------------------------

_CHECK_CLOCK_EVERY = 256
_SHOW_PREFIX = 8


def _event_list(
    ops: Sequence[Operation],
) -> tuple[list[int], list[int], list[bool], list[int], list[int]]:
    """The calls and returns of `ops` in time order as a doubly linked list (node 0 is the
    head, -1 the end): (next, previous, is-a-return and op of each node, return node of each
    op or -1)."""
    events = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)]
        + [(op.ret, 1, i) for i, op in enumerate(ops) if op.outcome is Outcome.OK]
    )
    size = len(events)
    nxt = [*range(1, size + 1), -1]
    prv = list(range(-1, size))
    is_return = [False] * (size + 1)
    op_at = [0] * (size + 1)
    return_node = [-1] * len(ops)
    for node, (_t, is_ret, i) in enumerate(events, start=1):
        is_return[node], op_at[node] = bool(is_ret), i
        if is_ret:
            return_node[i] = node
    return nxt, prv, is_return, op_at, return_node


def _unknown_classes(ops: Sequence[Operation]) -> tuple[list[list[int]], list[int]]:
    """The UNKNOWN ops grouped by (kind, input): each class's members' memo bits, and each
    op's class (-1 for OK ops)."""
    classes: dict[tuple[str, Hashable], list[int]] = {}
    for i, op in enumerate(ops):
        if op.outcome is Outcome.UNKNOWN:
            classes.setdefault((op.kind, op.input), []).append(i)
    members = [[1 << i for i in class_ops] for class_ops in classes.values()]
    class_of = [-1] * len(ops)
    for c, class_ops in enumerate(classes.values()):
        for i in class_ops:
            class_of[i] = c
    return members, class_of


class _Walk:
    """The state of one depth-first search over one key's operations, and its moves.

    Linearizing an op unlinks its call and return from the event list and undoing it links
    them back, so the pending ops are always the calls before the first return in the list
    (there is one while `remaining` OK ops are not linearized: their returns are listed).
    """

    __slots__ = (
        "best",
        "best_score",
        "class_of",
        "is_return",
        "linearized",
        "members",
        "model",
        "nxt",
        "op_at",
        "ops",
        "passive",
        "phase",
        "placed_unknown",
        "prv",
        "rejected",
        "remaining",
        "return_node",
        "seen",
        "stack",
        "state",
        "unknown",
        "used",
    )

    def __init__(self, ops: Sequence[Operation], model: Model) -> None:
        self.ops, self.model = ops, model
        self.nxt, self.prv, self.is_return, self.op_at, self.return_node = _event_list(ops)
        read_only: Callable[[Operation], bool] | None = getattr(model, "read_only", None)
        self.passive = [read_only is not None and read_only(op) for op in ops]
        self.unknown = [op.outcome is Outcome.UNKNOWN for op in ops]
        self.members, self.class_of = _unknown_classes(ops)
        self.used = [0] * len(self.members)  # linearized members of each class
        self.state: Hashable = model.init()
        self.linearized = 0  # the memo key's bitset
        self.seen: set[tuple[int, Hashable]] = set()
        # Per linearized op: (call node, op index, state before, ops the model rejected before
        # it in that configuration, the phase it was chosen in).
        self.stack: list[tuple[int, int, Hashable, list[int], int]] = []
        self.rejected: list[int] = []
        self.remaining = sum(1 for op in ops if op.outcome is Outcome.OK)
        self.placed_unknown = 0
        self.phase = 0  # 0: trying the pending OK ops; 1: the pending UNKNOWN ones
        # The explanation of a failure: the configuration that placed the most OK ops (with
        # the fewest UNKNOWN ones) when it got stuck.
        self.best: tuple[list[int], int | None, list[int], Any] = ([], None, [], self.state)
        self.best_score = (-1, 0)

    def bit(self, i: int) -> int:
        """The memo bit linearizing op i would set."""
        c = self.class_of[i]
        return 1 << i if c < 0 else self.members[c][self.used[c]]

    def unlink(self, node: int) -> None:
        nxt, prv = self.nxt, self.prv
        nxt[prv[node]] = nxt[node]
        if nxt[node] != -1:
            prv[nxt[node]] = prv[node]

    def relink(self, node: int) -> None:
        nxt, prv = self.nxt, self.prv
        nxt[prv[node]] = node
        if nxt[node] != -1:
            prv[nxt[node]] = node

    def try_push(self, node: int, i: int, new_state: Hashable) -> bool:
        """Linearize op i unless that configuration was explored already."""
        key = (self.linearized | self.bit(i), new_state)
        if key in self.seen:
            return False
        self.seen.add(key)
        self.stack.append((node, i, self.state, self.rejected, self.phase))
        self.rejected = []
        self.state, self.linearized = new_state, key[0]
        c = self.class_of[i]
        if c >= 0:
            self.used[c] += 1
            self.placed_unknown += 1
        self.unlink(node)
        if self.return_node[i] != -1:
            self.unlink(self.return_node[i])
            self.remaining -= 1
        return True

    def pop(self) -> tuple[int, int]:
        """Undo the last linearization: (its call node, its op)."""
        call, j, self.state, self.rejected, self.phase = self.stack.pop()
        c = self.class_of[j]
        if c >= 0:
            self.used[c] -= 1
            self.placed_unknown -= 1
        self.linearized ^= self.bit(j)
        if self.return_node[j] != -1:
            self.relink(self.return_node[j])
            self.remaining += 1
        self.relink(call)
        return call, j

    def take_read_only(self) -> bool:
        """In a configuration not seen before: linearize the first pending read-only op the
        model accepts, else branch over the others from the head; False if that fails.

        Taking such an op loses nothing: in any linearization from here it could be moved to
        the front (every op it must follow is linearized already, and it changes no state). So
        it is taken without branching, and if that fails, this configuration fails.
        """
        nxt, is_return, op_at, passive = self.nxt, self.is_return, self.op_at, self.passive
        node = nxt[0]
        while not is_return[node]:
            i = op_at[node]
            if passive[i]:
                ok, new_state = self.model.step(self.state, self.ops[i])
                if ok:
                    # one leading to a configuration that failed already fails this one too
                    return self.try_push(node, i, new_state)
                self.rejected.append(i)
            node = nxt[node]
        self.phase = 0
        return self.branch(nxt[0])

    def branch(self, node: int) -> bool:
        """Linearize the next pending op from `node` on that the model accepts and that leads
        somewhere new, the OK ops before the UNKNOWN ones (which can always wait); False when
        none is left. Read-only ops were tried when the configuration was fresh."""
        nxt, is_return, op_at, passive = self.nxt, self.is_return, self.op_at, self.passive
        unknown, ops, step, state = self.unknown, self.ops, self.model.step, self.state
        while True:
            i = op_at[node]
            if is_return[node]:
                if self.phase == 1:
                    self.note_stuck(i)
                    return False
                node, self.phase = nxt[0], 1
                continue
            if not passive[i] and unknown[i] == (self.phase == 1):
                ok, new_state = step(state, ops[i])
                if not ok:
                    self.rejected.append(i)
                elif self.try_push(node, i, new_state):
                    return True
            node = nxt[node]

    def note_stuck(self, blocked: int) -> None:
        """Op `blocked` returned and cannot be linearized here: keep this configuration as
        the explanation if it is the deepest so far."""
        score = (len(self.stack) - self.placed_unknown, -self.placed_unknown)
        if score > self.best_score:
            self.best_score = score
            self.best = (
                [entry[1] for entry in self.stack],
                blocked,
                list(self.rejected),
                self.state,
            )

    def backtrack(self) -> int:
        """Undo the last choice, and the read-only ones before it (a read-only choice was the
        only one tried); the call node of the op undone, or -1 when nothing is left."""
        while self.stack:
            call, j = self.pop()
            if not self.passive[j]:
                return call
        return -1


@dataclass
class _Search:
    """Wing & Gong / Lowe's search over one key's operations.

    A configuration is the set of operations linearized so far plus the model state; each is
    explored at most once (`seen`). Two refinements keep the search small:

    - Read-only operations the model accepts are linearized first, without branching.
    - UNKNOWN operations with equal kind and input are interchangeable (a model's step depends
      on nothing else of an UNKNOWN op, and all of them linearized so far were called before
      any pending one returns), so the memo key counts them per (kind, input) instead of
      naming them: linearizing the k-th of a class sets the bit of the class's k-th member.
    """

    ops: Sequence[Operation]
    model: Model
    deadline: float | None
    clock: Callable[[], float]

    def run(self) -> tuple[str, list[int], int | None, list[int], Any]:
        """("ok" | "violation" | "timeout", linearized op indexes (the whole linearization when
        ok, else the deepest prefix found), blocked op, rejected ops, state after the prefix)."""
        walk = _Walk(self.ops, self.model)
        steps = 0
        node = 0
        fresh = True  # a configuration not seen before: look for a read-only op first
        while walk.remaining:
            steps += 1
            if (
                self.deadline is not None
                and steps % _CHECK_CLOCK_EVERY == 0
                and self.clock() > self.deadline
            ):
                return ("timeout", *walk.best)
            fresh = walk.take_read_only() if fresh else walk.branch(node)
            if not fresh:
                call = walk.backtrack()
                if call == -1:
                    return ("violation", *walk.best)
                node = walk.nxt[call]
        return "ok", [entry[1] for entry in walk.stack], None, [], walk.state


def _explain(
    key: str,
    ops: Sequence[Operation],
    verdict: str,
    prefix: list[int],
    blocked: int | None,
    rejected: list[int],
    state: Any,
) -> str:
    if verdict == "timeout":
        return (
            f"  {key!r}: TIMED OUT, no verdict ({len(ops)} ops). "
            f"Deepest linearizable prefix so far: {len(prefix)} ops."
        )
    lines = [
        f"  {key!r}: NOT LINEARIZABLE ({len(ops)} ops). The longest linearizable prefix has "
        f"{len(prefix)} ops and ends in state {state!r}:"
    ]
    if len(prefix) > _SHOW_PREFIX:
        lines.append(f"      ... {len(prefix) - _SHOW_PREFIX} earlier ops")
    start = max(0, len(prefix) - _SHOW_PREFIX)
    for n, i in enumerate(prefix[start:], start=start + 1):
        lines.append(f"      {n:>4}. {ops[i]}")
    if blocked is not None:
        lines.append(f"    then this op returned and could not be placed: {ops[blocked]}")
    others = [i for i in rejected if i != blocked]
    if blocked in rejected:
        lines.append(f"    (the model rejects it in state {state!r})")
    if others:
        lines.append(f"    other pending ops the model rejects in state {state!r}:")
        lines.extend(f"      - {ops[i]}" for i in others)
    return "\n".join(lines)


def _check_key(
    key: str,
    ops: list[Operation],
    model: Model,
    deadline: float | None,
    clock: Callable[[], float],
) -> KeyResult:
    read_only: Callable[[Operation], bool] | None = getattr(model, "read_only", None)
    kept = [
        op
        for op in ops
        if op.outcome is Outcome.OK
        or (op.outcome is Outcome.UNKNOWN and not (read_only is not None and read_only(op)))
    ]
    dropped = len(ops) - len(kept)
    if deadline is not None and clock() > deadline:
        return KeyResult(
            key,
            ok=False,
            ops=len(kept),
            dropped=dropped,
            timed_out=True,
            explanation=f"  {key!r}: TIMED OUT before it was checked ({len(kept)} ops).",
        )
    canonicalize: Callable[[Sequence[Operation]], list[Operation]] | None = getattr(
        model, "canonicalize", None
    )
    searched = kept if canonicalize is None else canonicalize(kept)
    if len(searched) != len(kept):
        raise ValueError(f"{type(model).__name__}.canonicalize must keep every operation")
    verdict, prefix, blocked, rejected, state = _Search(searched, model, deadline, clock).run()
    linearization = tuple(kept[i] for i in prefix)
    if canonicalize is not None:  # the state in terms of the operations as recorded
        state = _replay(model, linearization, state)
    if verdict == "ok":
        return KeyResult(key, True, len(kept), dropped, prefix=linearization, state=state)
    unplaced = [i for i in [blocked, *rejected] if i is not None]
    unplaced = list(dict.fromkeys(unplaced))
    return KeyResult(
        key,
        ok=False,
        ops=len(kept),
        dropped=dropped,
        timed_out=verdict == "timeout",
        prefix=linearization,
        unplaced=tuple(kept[i] for i in unplaced) if verdict == "violation" else (),
        state=state,
        explanation=_explain(key, kept, verdict, prefix, blocked, rejected, state),
    )


def _replay(model: Model, ops: Iterable[Operation], fallback: Hashable) -> Hashable:
    state = model.init()
    for op in ops:
        ok, state = model.step(state, op)
        if not ok:
            return fallback
    return state


def _by_key(history: Iterable[Operation]) -> dict[str, list[Operation]]:
    keys: dict[str, list[Operation]] = {}
    for op in history:
        keys.setdefault(op.key, []).append(op)
    return {key: keys[key] for key in sorted(keys)}


def check(
    history: Iterable[Operation],
    model_for_key: Model | Callable[[str], Model],
    *,
    timeout_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Check that `history` is linearizable, key by key.

    `model_for_key` is one model instance used for every key, or a function from key to model
    (not a model class). Keys are
    checked in sorted order; `timeout_s` bounds the whole check (read through `clock`): keys the
    check did not finish are reported as timed out, never as ok.
    """
    deadline = None if timeout_s is None else clock() + timeout_s
    per_key: dict[str, KeyResult] = {}
    for key, ops in _by_key(history).items():
        model = model_for_key if isinstance(model_for_key, Model) else model_for_key(key)
        per_key[key] = _check_key(key, ops, model, deadline, clock)
    return CheckResult(per_key)


# ---- durability ----------------------------------------------------------------------------


def _auto_model(ops: Sequence[Operation], initial: str | None = None) -> Model:
    """The model a key's operation kinds call for: sequential for create/children, counter for
    add, else register (`initial` is a register's initial value or a counter's, as text)."""
    kinds = {op.kind for op in ops}
    if kinds & {"create", "children"}:
        return SequentialCreateModel()
    if "add" in kinds:
        return CounterModel(int(initial) if initial is not None else 0)
    return RegisterModel(initial)


def lost_writes(
    history: Iterable[Operation],
    final_reads: Mapping[str, Any],
    model_for_key: Model | Callable[[str], Model] | None = None,
) -> list[Operation]:
    """Acknowledged (OK) writes whose effect is missing from the final state.

    `final_reads` maps each key to the output of a read made after the system healed (for a
    register ``(value, version)`` or None; for a sequential parent the children, or None). The
    model of a key (by default chosen from its operation kinds: create/children -> sequential,
    write/cas/read -> register) decides what "missing" means, through its ``lost_writes(ops,
    final)`` method; keys whose model has none (`CounterModel`) are skipped. A key with
    acknowledged writes but no final read is an error, not a pass. Returned in history order.
    """
    ops_list = list(history)
    by_key = _by_key(ops_list)
    found: set[int] = set()
    for key, ops in by_key.items():
        if model_for_key is None:
            model = _auto_model(ops)
        elif isinstance(model_for_key, Model):
            model = model_for_key
        else:
            model = model_for_key(key)
        method: Callable[[Sequence[Operation], Any], list[Operation]] | None = getattr(
            model, "lost_writes", None
        )
        if method is None:
            continue
        if key not in final_reads:
            if any(op.outcome is Outcome.OK and not _read_only(model, op) for op in ops):
                raise ValueError(f"no final read of key {key!r}, which has acknowledged writes")
            continue
        found.update(id(op) for op in method(ops, final_reads[key]))
    return [op for op in ops_list if id(op) in found]


def _read_only(model: Model, op: Operation) -> bool:
    read_only: Callable[[Operation], bool] | None = getattr(model, "read_only", None)
    return read_only is not None and read_only(op)


# ---- JSON lines ----------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple | list):
        return [_encode(item) for item in value]
    if isinstance(value, frozenset | set):
        items = [_encode(item) for item in value]
        return {"$set": sorted(items, key=lambda item: json.dumps(item, sort_keys=True))}
    raise TypeError(f"cannot store {type(value).__name__} in a history: {value!r}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode(item) for item in value)
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"])
        if set(value) == {"$set"}:
            return frozenset(_decode(item) for item in value["$set"])
        if set(value) == {"$float"}:
            return float(value["$float"])
        raise ValueError(f"unknown value in a history: {value!r}")
    return value


def _to_record(op: Operation) -> dict[str, Any]:
    return {
        "process": op.process,
        "key": op.key,
        "kind": op.kind,
        "input": _encode(op.input),
        "output": _encode(op.output),
        "call": op.call,
        "return": None if math.isinf(op.ret) else op.ret,
        "outcome": op.outcome.value,
    }


def _from_record(record: Mapping[str, Any]) -> Operation:
    process = record.get("process", 0)
    if "worker" in record:  # zkpy.testing.workload: a worker task inside a client process
        process = f"{process}.{record['worker']}"
    ret = record.get("return")
    return Operation(
        process=process,
        key=str(record["key"]),
        kind=str(record["kind"]),
        input=_decode(record.get("input")),
        output=_decode(record.get("output")),
        call=float(record["call"]),
        ret=math.inf if ret is None else float(ret),
        outcome=Outcome(record.get("outcome", "ok")),
    )


def dump_history(ops: Iterable[Operation], path: str | Path) -> None:
    """Write `ops` as JSON lines: process, key, kind, input, output, call, return (null for
    +infinity), outcome ("ok" | "fail" | "unknown"). Lists and tuples are JSON arrays; bytes,
    sets and non-finite floats are tagged objects ``{"$bytes": base64}``, ``{"$set": [...]}``,
    ``{"$float": "inf"}``."""
    with open(path, "w", encoding="utf-8") as out:
        for op in ops:
            out.write(json.dumps(_to_record(op), sort_keys=True) + "\n")


def load_history(path: str | Path) -> list[Operation]:
    """Read a history written by `dump_history` (or by the chaos workload). Blank lines and
    records without a ``call`` time (watch events, annotations) are skipped; arrays become
    tuples."""
    ops: list[Operation] = []
    with open(path, encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if isinstance(record, dict) and "call" in record and "key" in record:
                    ops.append(_from_record(record))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: bad history record: {err}") from err
    return ops


# ---- command line --------------------------------------------------------------------------

EXIT_OK, EXIT_VIOLATION, EXIT_TIMEOUT = 0, 1, 3


def _model_choice(name: str, initial: str | None) -> Model | Callable[[str], Model]:
    if name == "register":
        return RegisterModel(initial)
    if name == "sequential":
        return SequentialCreateModel()
    if name == "counter":
        return CounterModel(int(initial) if initial is not None else 0)
    raise ValueError(name)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m zkpy.testing.linearizability`: check history files; 0 when linearizable."""
    parser = argparse.ArgumentParser(
        prog="python -m zkpy.testing.linearizability",
        description="Check a recorded JSON-lines history for linearizability, key by key.",
    )
    parser.add_argument("history", type=Path)
    parser.add_argument(
        "--model",
        choices=["auto", "register", "sequential", "counter"],
        default="auto",
        help="auto: per key, sequential for create/children, counter for add, else register",
    )
    parser.add_argument(
        "--initial",
        default=None,
        help="the initial value of every register (default: missing) or counter (default 0)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds; default none")
    args = parser.parse_args(argv)
    try:
        history = load_history(args.history)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    chosen: Model | Callable[[str], Model]
    try:
        if args.model == "auto":
            by_key = _by_key(history)
            models = {key: _auto_model(ops, args.initial) for key, ops in by_key.items()}
            chosen = models.__getitem__
        else:
            chosen = _model_choice(args.model, args.initial)
        result = check(history, chosen, timeout_s=args.timeout)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.report())
    if result.violations:
        return EXIT_VIOLATION
    return EXIT_TIMEOUT if result.timed_out else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
