"""The linearizability checker (zkpy.testing.linearizability): hand-made histories that are and
are not linearizable, per-key verdicts, giving up, generated histories (valid by construction,
then corrupted), the search against brute force on small random histories, size, durability
(lost writes), the JSON-lines format and the command line."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.testing.linearizability import (
    CheckResult,
    CounterModel,
    Model,
    Operation,
    Outcome,
    RegisterModel,
    SequentialCreateModel,
    check,
    dump_history,
    load_history,
    lost_writes,
    main,
)

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN
INF = math.inf


def write(
    p: int, value: str, version: Any, call: float, ret: float, outcome: Outcome = OK, key: str = "k"
) -> Operation:
    return Operation(p, key, "write", value, version, call, ret, outcome)


def read(p: int, output: Any, call: float, ret: float, key: str = "k") -> Operation:
    return Operation(p, key, "read", None, output, call, ret)


def cas(
    p: int,
    expected: int,
    value: str,
    output: Any,
    call: float,
    ret: float,
    outcome: Outcome = OK,
    key: str = "k",
) -> Operation:
    return Operation(p, key, "cas", (expected, value), output, call, ret, outcome)


def create(
    p: int, name: str | None, call: float, ret: float, outcome: Outcome = OK, key: str = "/q"
) -> Operation:
    return Operation(p, key, "create", None, name, call, ret, outcome)


def children(p: int, names: Iterable[str], call: float, ret: float, key: str = "/q") -> Operation:
    return Operation(p, key, "children", None, tuple(names), call, ret)


def node(counter: int) -> str:
    return f"n-{counter:010d}"


def only_violation(result: CheckResult, key: str = "k") -> str:
    """Assert `key` is the one violation (not a timeout) and return its explanation."""
    assert not result.ok
    assert result.violations == (key,)
    assert result.timed_out == ()
    explanation = result.per_key[key].explanation
    assert "NOT LINEARIZABLE" in explanation
    assert explanation in result.report()
    return explanation


# ---- linearizable histories ----------------------------------------------------------------


def test_sequential_writes_and_reads() -> None:
    history = [
        read(1, None, 0, 1),
        write(1, "a", 0, 2, 3),
        read(2, ("a", 0), 4, 5),
        cas(1, 0, "b", 1, 6, 7),
        read(2, ("b", 1), 8, 9),
    ]
    result = check(history, RegisterModel())
    assert result.ok
    assert result.violations == ()
    assert result.timed_out == ()
    assert result.per_key["k"].prefix == tuple(history)
    assert result.per_key["k"].state == ("b", 1)


def test_overlapping_writes_and_reads_in_the_one_order_that_works() -> None:
    write_a = write(1, "a", 1, 0, 10)  # called first, but took effect second
    write_b = write(2, "b", 0, 0, 10)
    saw_b = read(3, ("b", 0), 1, 2)
    saw_a = read(3, ("a", 1), 3, 4)
    saw_a_later = read(4, ("a", 1), 11, 12)
    result = check([write_a, write_b, saw_b, saw_a, saw_a_later], RegisterModel())
    assert result.ok
    assert result.per_key["k"].prefix == (write_b, saw_b, write_a, saw_a, saw_a_later)


def test_reads_concurrent_with_a_write_may_see_either_side() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        write(1, "b", 1, 2, 10),
        read(2, ("a", 0), 3, 4),
        read(3, ("b", 1), 3, 5),
        read(2, ("b", 1), 5, 6),
        read(4, ("b", 1), 11, 12),
    ]
    assert check(history, RegisterModel()).ok


def test_unknown_write_that_took_effect() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        write(2, "b", None, 2, INF, UNKNOWN),  # e.g. ConnectionLoss
        read(3, ("b", 1), 5, 6),
    ]
    result = check(history, RegisterModel())
    assert result.ok
    assert [op.input for op in result.per_key["k"].prefix] == ["a", "b", None]


def test_unknown_write_that_did_not_take_effect() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        write(2, "b", "ConnectionLossError", 2, 3, UNKNOWN),  # the return time becomes +inf
        read(3, ("a", 0), 5, 6),
    ]
    assert history[1].ret == INF
    result = check(history, RegisterModel())
    assert result.ok
    assert len(result.per_key["k"].prefix) == 2  # the unknown write left out


def test_unknown_write_that_took_effect_long_after_its_client_gave_up() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        write(2, "b", None, 2, INF, UNKNOWN),
        read(3, ("a", 0), 5, 6),
        read(3, ("a", 0), 7, 8),
        read(3, ("b", 1), 9, 10),
    ]
    assert check(history, RegisterModel()).ok


def test_unknown_cas_that_could_not_have_matched_is_left_out() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        write(1, "b", 1, 2, 3),
        cas(2, 0, "c", None, 4, INF, UNKNOWN),
        read(3, ("b", 1), 5, 6),
        write(1, "d", 2, 7, 8),
        read(3, ("d", 2), 9, 10),
    ]
    assert check(history, RegisterModel()).ok


def test_failed_operations_are_dropped_and_observed_bad_versions_are_checked() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        cas(2, 7, "x", "BadVersionError", 2, 3, FAIL),  # dropped: it did not take effect
        cas(2, 5, "y", None, 2, 3),  # an OK cas answered BadVersion: version was not 5
        read(3, ("a", 0), 4, 5),
        read(3, None, 6, 7, key="other"),  # a read of some other key
        Operation(3, "f", "read", None, ("z", 9), 6, 7, FAIL),
    ]
    result = check(history, RegisterModel())
    assert result.ok
    assert (result.per_key["k"].ops, result.per_key["k"].dropped) == (3, 1)
    assert (result.per_key["f"].ops, result.per_key["f"].dropped) == (0, 1)
    bad = [write(1, "a", 0, 0, 1), cas(2, 0, "y", None, 2, 3)]  # "BadVersion" but it matched
    assert only_violation(check(bad, RegisterModel()))


def test_unknown_reads_are_dropped() -> None:
    history = [write(1, "a", 0, 0, 1), Operation(2, "k", "read", None, None, 2, 3, UNKNOWN)]
    result = check(history, RegisterModel())
    assert result.ok
    assert result.per_key["k"].dropped == 1


def test_write_outputs_may_be_version_and_zxid_or_unrecorded() -> None:
    history = [
        write(1, "a", (0, 4294967297), 0, 1),
        write(1, "b", None, 2, 3),
        cas(2, 1, "c", (2, 4294967299), 4, 5),
        read(3, ("c", 2), 6, 7),
    ]
    assert check(history, RegisterModel()).ok
    history[2] = cas(2, 1, "c", (3, 4294967299), 4, 5)
    assert only_violation(check(history, RegisterModel()))


def test_concurrent_sequential_creates_and_children() -> None:
    history = [
        create(1, node(2), 0, 10),  # called first, numbered second
        create(2, "/q/" + node(1), 1, 10),  # a full path works as well as a name
        create(3, node(5), 11, 12),
        children(4, [node(1), node(2), node(5)], 13, 14),
    ]
    result = check(history, SequentialCreateModel())
    assert result.ok
    assert [op.process for op in result.per_key["/q"].prefix] == [2, 1, 3, 4]


def test_unknown_creates_are_resolved_by_a_children_read() -> None:
    history = [
        create(1, node(1), 0, 1),
        create(2, None, 2, INF, UNKNOWN),  # took effect: n-3, between n-1 and n-7
        create(3, None, 2, INF, UNKNOWN),  # did not
        create(4, node(7), 5, 6),
        children(5, [node(1), node(3), node(7)], 8, 9),
        create(4, node(8), 10, 11),
        children(5, [node(1), node(3), node(7), node(8)], 12, 13),
    ]
    assert check(history, SequentialCreateModel()).ok
    # It may also have come after n-7 ...
    late = [*history[:4], children(5, [node(1), node(7), node(9)], 8, 9)]
    assert check(late, SequentialCreateModel()).ok
    # ... but then a create that completes later cannot get n-8,
    only_violation(check([*late, create(4, node(8), 10, 11)], SequentialCreateModel()), "/q")
    # and it was called after n-1 completed, so it cannot be n-0.
    early = [*history[:4], children(5, [node(0), node(1), node(7)], 8, 9)]
    only_violation(check(early, SequentialCreateModel()), "/q")


def test_counter_model() -> None:
    add = [Operation(1, "c", "add", 2, 2, 0, 1), Operation(2, "c", "add", 3, None, 0, 1)]
    ok = [*add, Operation(3, "c", "read", None, 5, 2, 3)]
    assert check(ok, CounterModel()).ok
    bad = [*add, Operation(3, "c", "read", None, 3, 2, 3)]
    assert only_violation(check(bad, CounterModel()), "c")


# ---- histories that are not linearizable ---------------------------------------------------


def test_stale_read_after_a_completed_write() -> None:
    history = [write(1, "a", 0, 0, 1), write(1, "b", 1, 2, 3), read(2, ("a", 0), 4, 5)]
    result = check(history, RegisterModel())
    explanation = only_violation(result)
    key = result.per_key["k"]
    assert key.prefix == tuple(history[:2])
    assert key.state == ("b", 1)
    assert key.unplaced[0] == history[2]
    assert "('a', 0)" in explanation
    assert "('b', 1)" in explanation
    assert "could not be placed" in explanation


def test_two_reads_observe_concurrent_writes_in_opposite_orders() -> None:
    history = [
        write(1, "a", None, 0, 10),  # versions not recorded
        write(2, "b", None, 0, 10),
        read(3, ("a", 0), 1, 2),  # process 3 sees a, then b
        read(3, ("b", 1), 3, 4),
        read(4, ("b", 0), 1, 2),  # process 4 sees b, then a
        read(4, ("a", 1), 3, 4),
    ]
    explanation = only_violation(check(history, RegisterModel()))
    assert "read" in explanation
    # Each pair alone is fine.
    assert check(history[:4], RegisterModel()).ok
    assert check([*history[:2], *history[4:]], RegisterModel()).ok


def test_read_of_a_value_never_written() -> None:
    history = [write(1, "a", 0, 0, 10), read(2, ("ghost", 0), 1, 2)]
    result = check(history, RegisterModel())
    only_violation(result)
    assert history[1] in result.per_key["k"].unplaced


def test_cas_succeeding_on_a_superseded_version() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        write(2, "b", 1, 2, 3),  # version 0 is gone
        cas(3, 0, "c", 2, 4, 5),  # ... yet a cas expecting it succeeded
    ]
    result = check(history, RegisterModel())
    only_violation(result)
    assert result.per_key["k"].unplaced[0] == history[2]
    assert result.per_key["k"].state == ("b", 1)


def test_lost_acknowledged_write() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        write(1, "b", 1, 2, 3),  # acknowledged ...
        read(2, ("a", 0), 10, 11),  # ... and gone after the system healed
    ]
    only_violation(check(history, RegisterModel()))
    assert lost_writes(history[:2], {"k": ("a", 0)}) == [history[1]]


def test_sequential_create_smaller_counter_after_a_larger_one_completed() -> None:
    history = [create(1, node(5), 0, 1), create(2, node(3), 2, 3)]
    result = check(history, SequentialCreateModel())
    explanation = only_violation(result, "/q")
    assert result.per_key["/q"].unplaced[0] == history[1]
    assert node(3) in explanation
    # Concurrent, the two creates may have happened in either order.
    assert check([create(1, node(5), 0, 3), create(2, node(3), 1, 2)], SequentialCreateModel()).ok


def test_sequential_create_duplicate_counter_and_missing_child() -> None:
    dup = [create(1, node(4), 0, 5), Operation(2, "/q", "create", None, "m-0000000004", 0, 5)]
    only_violation(check(dup, SequentialCreateModel()), "/q")
    missing = [create(1, node(1), 0, 1), create(1, node(2), 2, 3), children(2, [node(2)], 4, 5)]
    only_violation(check(missing, SequentialCreateModel()), "/q")


def test_the_explanation_names_the_longest_prefix_and_the_stuck_operation() -> None:
    history = [write(1, f"v{i}", i, 2 * i, 2 * i + 1) for i in range(12)]
    history.append(read(2, ("v3", 3), 30, 31))
    result = check(history, RegisterModel())
    explanation = only_violation(result)
    assert len(result.per_key["k"].prefix) == 12
    assert "12 ops" in explanation
    assert "earlier ops" in explanation  # long prefixes are cut
    assert "v11" in explanation
    assert "('v3', 3)" in explanation


def test_the_explanation_leaves_out_unknown_operations_it_does_not_need() -> None:
    history = [
        write(1, "a", 0, 0, 1),
        write(2, "u1", None, 0.5, INF, UNKNOWN),
        write(3, "u2", None, 0.5, INF, UNKNOWN),
        write(1, "b", None, 2, 3),
        read(2, ("a", 0), 4, 5),
    ]
    result = check(history, RegisterModel())
    only_violation(result)
    assert result.per_key["k"].prefix == (history[0], history[3])
    assert result.per_key["k"].state == ("b", 1)


def test_verdicts_are_deterministic_and_do_not_depend_on_listing_order() -> None:
    history = execute_register(random_steps(11, 300, 3, 20, 0.1), 3)
    n, stale_read = make_stale(history)
    history[n] = stale_read
    first = check(history, RegisterModel())
    assert first.violations == (stale_read.key,)
    assert check(history, RegisterModel()) == first
    shuffled = list(history)
    random.Random(3).shuffle(shuffled)
    assert check(shuffled, RegisterModel()).violations == first.violations


# ---- per key -------------------------------------------------------------------------------


def test_a_violation_is_reported_for_its_key_only() -> None:
    history: list[Operation] = []
    for n, key in enumerate(["k1", "k2", "k3"]):
        history += [write(n, "a", 0, 0, 1, key=key), write(n, "b", 1, 2, 3, key=key)]
        history.append(read(n, ("a" if key == "k2" else "b", 0 if key == "k2" else 1), 4, 5, key))
    result = check(history, RegisterModel())
    explanation = only_violation(result, "k2")
    assert result.per_key["k1"].ok
    assert result.per_key["k3"].ok
    assert result.per_key["k2"].ops == 3
    assert "'k2'" in explanation
    assert "'k1'" not in explanation
    assert "k1" in result.report()


def test_model_per_key() -> None:
    history = [
        write(1, "a", 0, 0, 1, key="reg"),
        create(1, node(1), 0, 1, key="/seq"),
        create(2, node(2), 2, 3, key="/seq"),
    ]
    models: dict[str, Model] = {"reg": RegisterModel(), "/seq": SequentialCreateModel()}
    assert check(history, models.__getitem__).ok


# ---- giving up -----------------------------------------------------------------------------


def hard_history(n: int = 18) -> list[Operation]:
    """n concurrent writes with unrecorded versions, then a read nobody could have seen: the
    search must try every subset of the writes before it can say no."""
    history = [write(i, f"v{i}", None, 0, 100) for i in range(n)]
    history.append(read(99, ("ghost", 0), 200, 201))
    return history


def test_a_check_that_gives_up_says_so() -> None:
    ticks = itertools.count()
    history = [*hard_history(), write(1, "a", 0, 0, 1, key="later")]
    result = check(history, RegisterModel(), timeout_s=5, clock=lambda: float(next(ticks)))
    assert not result.ok
    assert result.timed_out == ("k", "later")  # the deadline passed while "k" was searched
    assert result.violations == ()
    assert result.per_key["k"].timed_out
    assert not result.per_key["k"].ok
    assert "TIMED OUT" in result.report()


def test_without_a_timeout_the_hard_history_is_rejected() -> None:
    only_violation(check(hard_history(10), RegisterModel()))


# ---- generated histories -------------------------------------------------------------------

REGISTER_KINDS = ["read", "read", "write", "write", "cas", "cas_bad", "cas_fail"]
FATES = ["ok", "ok", "ok", "ok", "unknown_applied", "unknown_lost"]
Step = tuple[str, int, float, float, str]


def execute_register(steps: Iterable[Step], keys: int) -> list[Operation]:
    """Run `steps` one after another against real registers, then give each operation a
    [call, return] window around its moment (step i happens at 2 i + 1): the history is
    linearizable by construction. Ends with a completed read of every key."""
    state: dict[str, tuple[str | None, int]] = {f"k{n}": (None, -1) for n in range(keys)}
    history: list[Operation] = []
    i = 0
    for i, (kind, key_index, before, after, fate) in enumerate(steps):
        key = f"k{key_index % keys}"
        at = 2 * i + 1
        value, version = state[key]
        applies = fate != "unknown_lost"
        outcome = OK if fate == "ok" else UNKNOWN
        if kind == "cas" and value is None:
            kind = "write"
        if kind == "read":
            output: Any = None if value is None else (value, version)
            history.append(Operation(i % 5, key, "read", None, output, at - before, at + after))
            continue
        if kind in ("cas_bad", "cas_fail"):  # expected version wrong: no effect
            op_input: Any = (version + 3, f"x{i}")
            output = None if kind == "cas_bad" else "BadVersionError"
            outcome = FAIL if kind == "cas_fail" else outcome
            kind = "cas"
        else:
            new_value = f"v{i}"
            op_input = new_value if kind == "write" else (version, new_value)
            output = version + 1 if outcome is OK else None
            if applies:
                state[key] = (new_value, version + 1)
        history.append(
            Operation(i % 5, key, kind, op_input, output, at - before, at + after, outcome)
        )
    end = 2 * i + 100
    for key, (value, version) in state.items():
        output = None if value is None else (value, version)
        history.append(Operation("final", key, "read", None, output, end, end + 1))
    return history


register_steps = st.lists(
    st.tuples(
        st.sampled_from(REGISTER_KINDS),
        st.integers(0, 2),
        st.floats(0, 7, allow_nan=False),
        st.floats(0, 7, allow_nan=False),
        st.sampled_from(FATES),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(steps=register_steps, keys=st.integers(1, 3))
def test_generated_histories_are_linearizable(steps: list[Step], keys: int) -> None:
    history = execute_register(steps, keys)
    result = check(history, RegisterModel(), timeout_s=60)
    assert result.ok, result.report()


@settings(max_examples=150, deadline=None)
@given(steps=register_steps, keys=st.integers(1, 3), pick=st.integers(0, 10_000))
def test_a_read_of_a_value_never_written_is_rejected(
    steps: list[Step], keys: int, pick: int
) -> None:
    history = execute_register(steps, keys)
    reads = [n for n, op in enumerate(history) if op.kind == "read" and op.outcome is OK]
    victim = history[reads[pick % len(reads)]]
    version = victim.output[1] if victim.output is not None else 0
    history[reads[pick % len(reads)]] = dataclasses.replace(
        victim, output=("never-written", version)
    )
    result = check(history, RegisterModel(), timeout_s=60)
    assert result.violations == (victim.key,), result.report()
    assert result.timed_out == ()


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["create", "create", "children"]),
            st.integers(1, 3),  # the counter's step: sequence numbers have gaps
            st.floats(0, 7, allow_nan=False),
            st.floats(0, 7, allow_nan=False),
            st.sampled_from(FATES),
        ),
        max_size=25,
    )
)
def test_generated_sequential_create_histories_are_linearizable(
    steps: list[tuple[str, int, float, float, str]],
) -> None:
    created: list[str] = []
    counter = 0
    history: list[Operation] = []
    for i, (kind, gap, before, after, fate) in enumerate(steps):
        at = 2 * i + 1
        if kind == "children":
            history.append(children(i % 4, created, at - before, at + after))
            continue
        counter += gap
        if fate == "ok":
            created.append(node(counter))
            history.append(create(i % 4, node(counter), at - before, at + after))
        else:
            if fate == "unknown_applied":
                created.append(node(counter))
            history.append(create(i % 4, None, at - before, INF, UNKNOWN))
    history.append(children(9, created, 2 * len(steps) + 10, 2 * len(steps) + 11))
    result = check(history, SequentialCreateModel(), timeout_s=60)
    assert result.ok, result.report()


# ---- the search against brute force, on small random histories ----------------------------


def brute_force(history: list[Operation], legal: Any) -> bool:
    """Is there an order of the OK operations plus some of the UNKNOWN ones (FAIL ones dropped)
    that respects real time and that `legal(sequence)` accepts? Tries them all."""
    required = [op for op in history if op.outcome is OK]
    optional = [op for op in history if op.outcome is UNKNOWN]
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations([*required, *chosen]):
                in_time = all(
                    not later.ret < earlier.call
                    for n, earlier in enumerate(order)
                    for later in order[n + 1 :]
                )
                if in_time and legal(order):
                    return True
    return False


def legal_register(order: Iterable[Operation]) -> bool:
    value: str | None = None
    version = -1
    for op in order:
        known = op.outcome is OK
        if op.kind == "read":
            if known and op.output != (None if value is None else (value, version)):
                return False
        elif op.kind == "write":
            value, version = op.input, version + 1
            if known and op.output != version:
                return False
        else:
            expected, new_value = op.input
            if known and op.output is None:  # observed BadVersion
                if value is not None and version == expected:
                    return False
                continue
            if value is None or version != expected:
                return False
            value, version = new_value, version + 1
            if known and op.output != version:
                return False
    return True


def legal_creates(order: tuple[Operation, ...]) -> bool:
    """Unknown creates get every possible counter; everything is checked concretely."""
    unknown = [n for n, op in enumerate(order) if op.kind == "create" and op.outcome is UNKNOWN]
    for counters in itertools.product(range(MAX_COUNTER + 2), repeat=len(unknown)):
        assigned = dict(zip(unknown, counters, strict=True))
        names: set[str] = set()
        last = -1
        for n, op in enumerate(order):
            if op.kind == "create":
                counter = assigned[n] if n in assigned else int(op.output[-10:])
                if counter <= last:
                    break
                last = counter
                names.add(node(counter))
            elif op.outcome is OK and set(op.output) != names:
                break
        else:
            return True
    return False


MAX_COUNTER = 4
times = st.tuples(st.integers(0, 8), st.integers(0, 4)).map(lambda t: (t[0], t[0] + t[1]))
outcomes = st.sampled_from([OK, OK, OK, UNKNOWN, FAIL])


@st.composite
def small_register_op(draw: st.DrawFn) -> Operation:
    """Random versions and outputs: some histories are linearizable, most are not."""
    kind = draw(st.sampled_from(["read", "write", "cas"]))
    value = draw(st.sampled_from(["a", "b"]))
    version = draw(st.integers(0, 2))
    call, ret = draw(times)
    outcome = draw(outcomes)
    if kind == "read":
        output = draw(st.sampled_from([None, (value, version)]))
        return Operation(0, "k", "read", None, output, call, ret, outcome)
    if kind == "write":
        return Operation(0, "k", "write", value, version, call, ret, outcome)
    expected = draw(st.integers(0, 2))
    observed = draw(st.sampled_from([version, None]))  # None: an observed BadVersion
    return Operation(0, "k", "cas", (expected, value), observed, call, ret, outcome)


@settings(max_examples=500, deadline=None)
@given(history=st.lists(small_register_op(), max_size=6))
def test_register_verdicts_agree_with_brute_force(history: list[Operation]) -> None:
    expected = brute_force([op for op in history if op.outcome is not FAIL], legal_register)
    assert check(history, RegisterModel()).ok == expected


small_create_ops = st.builds(
    lambda kind, counter, seen, t, outcome: (
        create(0, node(counter), t[0], t[1], outcome)
        if kind == "create"
        else children(0, sorted(node(c) for c in seen), t[0], t[1])
    ),
    st.sampled_from(["create", "create", "children"]),
    st.integers(0, MAX_COUNTER),
    st.sets(st.integers(0, MAX_COUNTER), max_size=3),
    times,
    outcomes,
)


@settings(max_examples=300, deadline=None)
@given(history=st.lists(small_create_ops, max_size=6))
def test_sequential_create_verdicts_agree_with_brute_force(history: list[Operation]) -> None:
    expected = brute_force([op for op in history if op.outcome is not FAIL], legal_creates)
    assert check(history, SequentialCreateModel()).ok == expected


def random_steps(seed: int, count: int, keys: int, width: float, unknown: float) -> list[Step]:
    """`count` steps on `keys` keys; calls and returns up to `width` from the op's moment (ops
    on one key are 2 * `keys` apart on average); a fraction `unknown` of UNKNOWN outcome."""
    rng = random.Random(seed)
    return [
        (
            rng.choice(REGISTER_KINDS),
            rng.randrange(keys),
            rng.uniform(0, width),
            rng.uniform(0, width),
            rng.choice(["unknown_applied", "unknown_lost"]) if rng.random() < unknown else "ok",
        )
        for _ in range(count)
    ]


def test_two_thousand_operations_on_twenty_keys() -> None:
    # About 9 other ops on the same key overlap each op.
    history = execute_register(random_steps(20240601, 2000, 20, 150, 0.03), 20)
    result = check(history, RegisterModel(), timeout_s=120)
    assert result.ok, result.report()
    assert len(result.per_key) == 20
    assert sum(r.ops + r.dropped for r in result.per_key.values()) == len(history)
    # The same history with one stale read is caught, on that key only.
    n, stale_read = make_stale(history)
    history[n] = stale_read
    stale = check(history, RegisterModel(), timeout_s=120)
    assert stale.violations == (stale_read.key,), stale.report()


def test_many_unknown_outcomes() -> None:
    # One write in five may or may not have happened; ~30 ops on a key overlap each op.
    history = execute_register(random_steps(5, 1000, 10, 300, 0.2), 10)
    assert sum(op.outcome is UNKNOWN for op in history) > 100
    result = check(history, RegisterModel(), timeout_s=120)
    assert result.ok, result.report()
    n, stale_read = make_stale(history)
    history[n] = stale_read
    stale = check(history, RegisterModel(), timeout_s=120)
    assert stale.violations == (stale_read.key,), stale.report()


def make_stale(history: list[Operation]) -> tuple[int, Operation]:
    """The last read that can be made stale, made so: it returns an acknowledged write that
    another acknowledged write had superseded before the read was called."""
    acked = [op for op in history if op.kind == "write" and op.outcome is OK]
    for n in reversed(range(len(history))):
        victim = history[n]
        if victim.kind != "read" or victim.process == "final":
            continue
        done = sorted((w for w in acked if w.key == victim.key and w.ret < victim.call),
                      key=lambda w: w.output)  # fmt: skip
        if len(done) >= 2:
            return n, dataclasses.replace(victim, output=(done[0].input, done[0].output))
    raise AssertionError("no read to make stale")


# ---- durability ----------------------------------------------------------------------------


def test_lost_writes_of_a_register() -> None:
    a = write(1, "a", 0, 0, 1)
    b = write(1, "b", 1, 2, 3)
    c = cas(2, 1, "c", 2, 4, 5)
    unknown = write(3, "u", None, 4, INF, UNKNOWN)
    failed = cas(2, 0, "f", "BadVersionError", 4, 5, FAIL)
    history = [a, b, c, unknown, failed]
    assert lost_writes(history, {"k": ("c", 2)}) == []
    assert lost_writes(history, {"k": ("u", 3)}) == []  # the unknown write came later
    assert lost_writes(history, {"k": ("b", 1)}) == [c]
    assert lost_writes(history, {"k": ("x", 2)}) == [c]  # version 2 holds another value
    assert lost_writes(history, {"k": None}) == [a, b, c]


def test_lost_writes_without_recorded_versions() -> None:
    a = write(1, "a", None, 0, 1)
    b = write(1, "b", None, 2, 3)
    assert lost_writes([a, b], {"k": ("b", 7)}) == []
    assert lost_writes([a, b], {"k": ("a", 7)}) == [b]  # b was the last write: it must show
    concurrent = write(2, "c", None, 2.5, 3.5)
    assert lost_writes([a, b, concurrent], {"k": ("c", 7)}) == []


def test_lost_sequential_creates_and_missing_final_reads() -> None:
    history = [
        create(1, node(1), 0, 1),
        create(2, node(2), 0, 1),
        create(3, None, 0, INF, UNKNOWN),
        write(1, "a", 0, 0, 1),
    ]
    finals = {"/q": [node(2), node(3)], "k": ("a", 0)}
    assert lost_writes(history, finals) == [history[0]]
    with pytest.raises(ValueError, match="no final read"):
        lost_writes(history, {"/q": []})
    models: dict[str, Model] = {"/q": SequentialCreateModel(), "k": RegisterModel()}
    assert lost_writes(history, finals, models.__getitem__) == [history[0]]


# ---- history files and the command line ----------------------------------------------------


def test_history_round_trip(tmp_path: Path) -> None:
    history = [
        write(1, "a", 0, 0.5, 1.25),
        Operation("p2", "k", "write", b"\x00bytes", None, 2, INF, UNKNOWN),
        cas(3, 0, "c", "BadVersionError", 3, 4, FAIL),
        read(1, ("a", 0), 5, 6),
        children(1, frozenset({node(1), node(2)}), 7, 8),
        create(1, node(3), 9, 10),
    ]
    path = tmp_path / "history.jsonl"
    dump_history(history, path)
    lines = path.read_text().splitlines()
    assert len(lines) == len(history)
    assert json.loads(lines[1])["return"] is None
    assert load_history(path) == history


def test_load_workload_records(tmp_path: Path) -> None:
    records = [
        {"kind": "watch-start", "time": 0.5, "zxid": 3},
        {"worker": 0, "key": "k0", "call": 1.0, "kind": "write", "input": "0.0.1",
         "output": [1, 4294967299], "outcome": "ok", "return": 1.5, "process": 0},
        {"worker": 1, "key": "k0", "call": 1.1, "kind": "read", "input": None,
         "output": ["0.0.1", 1], "outcome": "ok", "return": 2.0, "process": 0},
        {"worker": 1, "key": "k0", "call": 2.1, "kind": "write", "input": "0.1.2",
         "output": "ConnectionLossError", "outcome": "unknown", "return": 2.5, "process": 0},
        {"kind": "session-lost", "time": 3.0, "error": "gone"},
    ]  # fmt: skip
    path = tmp_path / "workload.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    history = load_history(path)
    assert [op.process for op in history] == ["0.0", "0.1", "0.1"]
    assert history[1].output == ("0.0.1", 1)
    assert history[2].ret == INF
    assert check(history, RegisterModel("")).ok


def test_bad_history_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"key": "k", "call": 1, "kind": "read", "outcome": "maybe", "return": 2}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_history(path)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    dump_history([write(1, "a", 0, 0, 1), read(2, ("a", 0), 2, 3), create(1, node(1), 0, 1)], good)
    assert main([str(good)]) == 0
    assert "linearizable" in capsys.readouterr().out
    assert main([str(good), "--model", "register"]) == 2  # a register has no create
    assert "does not know the operation kind 'create'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    dump_history(hard_history(8), bad)
    assert main([str(bad), "--model", "register"]) == 1
    assert "NOT LINEARIZABLE" in capsys.readouterr().out


def test_python_dash_m(tmp_path: Path) -> None:
    path = tmp_path / "stale.jsonl"
    dump_history([write(1, "a", 0, 0, 1), read(2, None, 2, 3)], path)
    done = subprocess.run(
        [sys.executable, "-m", "zkpy.testing.linearizability", str(path), "--model", "register"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "NOT LINEARIZABLE" in done.stdout
    assert "'k'" in done.stdout
